"""Export: copy one or more images into a `TarWriterRepo` as one job.

Each image is a copy whose target is the tar writer; they run concurrently
in one task group so blobs shared between images are fetched and stored
once. The tar is committed (indexes written, file renamed into place) only
when every copy succeeded; otherwise the partial file is removed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import anyio

from ..engine.copy import Copier
from ..engine.failures import most_useful
from ..engine.job import Job
from ..export.tarwriter import TarWriterRepo
from ..options import CopyOptions, CopyResult
from ..reference import LayoutReference, Reference, parse_location
from ..store import Repo

__all__ = ["export_images", "image_name"]


def image_name(ref: Reference | LayoutReference, tag: str) -> str:
    """The name an image gets in the tar: ``registry/repo:tag`` (``@digest`` for digests)."""
    if isinstance(ref, Reference):
        base = f"{ref.registry}/{ref.repository}"
    else:
        base = Path(ref.path).name or "image"
    return f"{base}@{tag}" if ":" in tag else f"{base}:{tag}"


async def export_images(
    job: Job,
    repo_of: Callable[[Reference | LayoutReference], Repo],
    writer: TarWriterRepo,
    refs: Sequence[str | Reference | LayoutReference],
    options: CopyOptions,
) -> list[CopyResult]:
    """Copy every ref into ``writer`` and commit the tar; abort it on any failure."""
    await writer.open()
    results: list[CopyResult] = []

    async def one(location: str | Reference | LayoutReference) -> None:
        ref = parse_location(location) if isinstance(location, str) else location
        tag = ref.tag or (str(ref.digest) if ref.digest else "latest")
        copier = Copier(job, repo_of(ref), writer, options)
        results.append(await copier.copy(ref.reference, writer.name(image_name(ref, tag), tag)))

    try:
        async with anyio.create_task_group() as tg:
            for location in refs:
                tg.start_soon(one, location)
        await writer.commit()
    except BaseExceptionGroup as group:
        await writer.abort()
        raise most_useful(group) from group
    except BaseException:
        await writer.abort()
        raise
    return results
