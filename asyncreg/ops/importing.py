"""Import: copy the image(s) of a tar out of a `TarRepo` into a target repo.

Which images: the only one, one chosen by name, or every named one (each
keeping its tag). A tar read from stdin is first spooled to a temporary file
once, because the reader indexes headers and then reads blobs by byte range.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio

from ..archive.reader import TarRepo
from ..digest import Digest
from ..engine.copy import Copier, Job
from ..engine.failures import most_useful
from ..errors import ConfigError, NotFoundError
from ..options import CopyOptions, CopyResult
from ..store import Repo

__all__ = ["import_images", "select_images", "tag_of", "tar_source"]


def tag_of(name: str | None) -> str | None:
    """The tag part of ``host/repo:tag`` (or of a bare tag); None for digests."""
    if not name:
        return None
    last = name.rsplit("/", 1)[-1]
    if "@" in last:
        return None
    return last.rsplit(":", 1)[1] if ":" in last else last


@asynccontextmanager
async def tar_source(src: str | Path) -> AsyncIterator[Path]:
    """The tar as a file: stdin is spooled to a temporary file once (it must be seekable)."""
    if str(src) != "-":
        yield Path(src)
        return
    tmp = await anyio.to_thread.run_sync(
        lambda: tempfile.NamedTemporaryFile(prefix="asyncreg-stdin-", suffix=".tar")  # noqa: SIM115
    )
    try:

        def spool() -> None:
            shutil.copyfileobj(sys.stdin.buffer, tmp, 1024 * 1024)
            tmp.flush()

        await anyio.to_thread.run_sync(spool)
        yield Path(tmp.name)
    finally:
        await anyio.to_thread.run_sync(tmp.close)


async def select_images(
    tar: TarRepo, src: object, *, name: str | None, all_images: bool
) -> list[tuple[str | None, Digest]]:
    """The (name, digest) pairs to import; refuses an ambiguous choice."""
    images = await tar.images()
    if name is not None:
        desc = await tar.manifest_head(name)
        if desc is None:
            names = ", ".join(n for n, _ in images if n) or "none"
            raise NotFoundError(f"{src}: no image named {name!r} (has: {names})")
        return [(name, desc.digest)]
    if all_images:
        return [(n, d.digest) for n, d in images if n is not None]
    distinct = {d.digest for _, d in images}
    if len(distinct) != 1:
        names = ", ".join(n for n, _ in images if n) or "unnamed images"
        raise ConfigError(
            f"{src} holds {len(distinct)} images ({names}): choose one by name"
            " or import all of them"
        )
    return [(images[0][0], images[0][1].digest)]


async def import_images(
    job: Job,
    tar: TarRepo,
    target: Repo,
    todo: list[tuple[str | None, Digest]],
    *,
    tag: str | None,
    keep_names: bool,
    options: CopyOptions,
) -> list[CopyResult]:
    """Copy each selected image to ``target``, concurrently, as one job."""
    results: list[CopyResult] = []

    async def one(image_name: str | None, digest: Digest) -> None:
        dst_tag = tag
        if keep_names or dst_tag is None:
            dst_tag = tag_of(image_name) or dst_tag or "latest"
        results.append(await Copier(job, tar, target, options).copy(digest, dst_tag))

    try:
        async with anyio.create_task_group() as tg:
            for image_name, digest in todo:
                tg.start_soon(one, image_name, digest)
    except BaseExceptionGroup as group:
        raise most_useful(group) from group
    return results
