"""Import: copy the image(s) of a tar out of a `TarRepo` into a target repo.

Which images: the only one, one chosen by name, or every named one (each
keeping its tag). A tar file is indexed once and read by byte range; a tar on
stdin is read once, its blobs going through the job's pipeline as they pass
(see `streamimport`).
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Protocol

import anyio

from ..archive.reader import TarRepo
from ..digest import Digest
from ..engine.copy import Copier
from ..engine.failures import most_useful
from ..engine.job import Job
from ..errors import ConfigError, NotFoundError
from ..manifest import Descriptor
from ..options import CopyOptions, CopyResult
from ..store import BlobStream, Repo
from .streamimport import StreamedImages, StreamedRepo, Wanted, read_stream

__all__ = [
    "ImageSource",
    "import_images",
    "import_stream",
    "open_source",
    "select_images",
    "tag_of",
]


def tag_of(name: str | None) -> str | None:
    """The tag part of ``host/repo:tag`` (or of a bare tag); None for digests."""
    if not name:
        return None
    last = name.rsplit("/", 1)[-1]
    if "@" in last:
        return None
    return last.rsplit(":", 1)[1] if ":" in last else last


@asynccontextmanager
async def open_source(src: str | Path, *, compress: bool) -> AsyncIterator[TarRepo]:
    """A tar file as a source repo, indexed once (stdin goes to `import_stream`)."""
    async with await TarRepo.open(Path(src), compress=compress) as tar:
        yield tar


async def import_stream(
    job: Job,
    target: Repo,
    *,
    name: str | None,
    all_images: bool,
    tag: str | None,
    compress: bool,
    max_manifest: int,
    options: CopyOptions,
    stream: IO[bytes] | None = None,
) -> list[CopyResult]:
    """Import from a stream (stdin by default), read once (see `streamimport`).

    The blobs of an OCI tar go through the job's pipeline as they pass (only
    those the selected images use); any other tar is spooled to a temporary
    file and imported from there.
    """
    with tempfile.TemporaryDirectory(prefix="asyncreg-stdin-") as work:
        spool = Path(work) / "stream.tar"
        found = StreamedImages()
        repo = StreamedRepo(found, spool)
        first = Copier(job, repo, target, options)

        def send(desc: Descriptor, make: Callable[[], BlobStream]) -> None:
            anyio.from_thread.run(repo.send_passing, desc, make, lambda: first.blob(desc))

        source = stream if stream is not None else sys.stdin.buffer
        is_oci = await anyio.to_thread.run_sync(
            lambda: read_stream(
                source, spool, send, wanted=Wanted(name), max_manifest=max_manifest, found=found
            )
        )
        if not is_oci:
            async with open_source(spool, compress=compress) as tar:
                todo = await select_images(tar, "-", name=name, all_images=all_images)
                return await import_images(
                    job, tar, target, todo, tag=tag, keep_names=all_images, options=options
                )
        todo = await select_images(repo, "-", name=name, all_images=all_images)
        return await import_images(
            job, repo, target, todo, tag=tag, keep_names=all_images, options=options, first=first
        )


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
    first: Copier | None = None,
) -> list[CopyResult]:
    """Copy each selected image to ``target``, concurrently, as one job.

    ``first`` (a copier that already moved blobs of the stream) copies the
    first image, so its result counts those blobs.
    """
    results: list[CopyResult] = []
    copiers = [
        first if i == 0 and first else Copier(job, tar, target, options) for i in range(len(todo))
    ]

    tags = _target_tags(todo, tag=tag, keep_names=keep_names)

    async def one(copier: Copier, digest: Digest, dst_tag: str) -> None:
        results.append(await copier.copy(digest, dst_tag))

    try:
        async with anyio.create_task_group() as tg:
            for copier, (_, digest), dst_tag in zip(copiers, todo, tags, strict=True):
                tg.start_soon(one, copier, digest, dst_tag)
    except BaseExceptionGroup as group:
        raise most_useful(group) from group
    return results


def _target_tags(
    todo: list[tuple[str | None, Digest]], *, tag: str | None, keep_names: bool
) -> list[str]:
    """The tag each image gets; two different images on one tag are refused, naming both.

    Without this, ``--all`` of ``localhost/a:1`` and ``localhost/b:1`` into one
    repository would push both to ``:1`` and silently keep only the last.
    """
    out: list[str] = []
    seen: dict[str, tuple[str | None, Digest]] = {}
    for image_name, digest in todo:
        dst_tag = tag
        if keep_names or dst_tag is None:
            dst_tag = tag_of(image_name) or dst_tag or "latest"
        before = seen.setdefault(dst_tag, (image_name, digest))
        if before[1] != digest:
            raise ConfigError(
                f"{before[0] or before[1]} and {image_name or digest} would both be tagged"
                f" {dst_tag!r} in the target; import them one at a time with --name"
            )
        out.append(dst_tag)
    return out
