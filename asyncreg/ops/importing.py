"""Import: copy the image(s) of a tar out of a `TarRepo` into a target repo.

Which images: the only one, one chosen by name, or every named one (each
keeping its tag). A tar file is indexed once and read by byte range; a tar on
stdin is read once (see `streamimport`).
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Protocol

import anyio

from ..archive.reader import TarRepo
from ..digest import Digest
from ..engine.copy import Copier
from ..engine.failures import most_useful
from ..engine.job import Job
from ..errors import ConfigError, NotFoundError
from ..manifest import Descriptor
from ..options import CopyOptions, CopyResult
from ..store import Repo
from .streamimport import StreamedRepo, read_stream

__all__ = ["ImageSource", "import_images", "open_source", "select_images", "tag_of"]


def tag_of(name: str | None) -> str | None:
    """The tag part of ``host/repo:tag`` (or of a bare tag); None for digests."""
    if not name:
        return None
    last = name.rsplit("/", 1)[-1]
    if "@" in last:
        return None
    return last.rsplit(":", 1)[1] if ":" in last else last


@asynccontextmanager
async def open_source(
    src: str | Path, target: Repo, *, compress: bool, max_manifest: int
) -> AsyncIterator[ImageSource]:
    """The tar as a source repo: a file is indexed; stdin (``-``) is read once.

    From stdin an OCI layout is read once and its blobs go to ``target`` as
    they pass, nothing spilled (see `streamimport`); any other tar is
    re-written to a temporary file and indexed like a file.
    """
    if str(src) != "-":
        async with await TarRepo.open(Path(src), compress=compress) as tar:
            yield tar
        return
    with tempfile.TemporaryDirectory(prefix="asyncreg-stdin-") as work:
        spool = Path(work) / "stream.tar"
        found = await anyio.to_thread.run_sync(
            lambda: read_stream(sys.stdin.buffer, target, spool, max_manifest=max_manifest)
        )
        if found is not None:
            yield StreamedRepo(found)
            return
        async with await TarRepo.open(spool, compress=compress) as tar:
            yield tar


class ImageSource(Repo, Protocol):
    """A source that can list the named images it holds (a tar, a stream)."""

    async def images(self) -> list[tuple[str | None, Descriptor]]: ...


async def select_images(
    tar: ImageSource, src: object, *, name: str | None, all_images: bool
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
    tar: Repo,
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
