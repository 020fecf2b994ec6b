"""Import from a stream (stdin), read once, spilling only what must wait.

A tar on stdin cannot be indexed and read back by byte range. For an OCI
layout tar that does not matter: a blob is named by its digest and sized by
its tar header, so it can go to the target registry the moment it passes
(the registry verifies it), whatever the manifests turn out to be. Only the
small documents are kept in memory: ``index.json`` and every blob that
parses as a manifest (each capped at the manifest size limit). When the
stream ends, the kept manifests form an in-memory source repo and the
ordinary copy engine pushes them, children first, finding every blob
already in place.

A tar whose first file is not part of an OCI layout (a legacy ``docker
save``, whose layers must be compressed with their config at hand) is
re-written member by member into a temporary file instead, and imported from
there like any other file.
"""

from __future__ import annotations

import tarfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import anyio
import anyio.from_thread

from ..archive.tarindex import normalise_name
from ..budget import Budget
from ..config import MIB
from ..digest import ALGORITHMS, Digest, Verifier, digest_in
from ..errors import ArchiveError, HostilePathError, InputError, NotFoundError
from ..manifest import Descriptor, Manifest
from ..store import BlobSource, BlobStream, Repo

__all__ = ["StreamedImages", "StreamedRepo", "read_stream"]

_CHUNK = MIB
_OCI_NAMES = ("oci-layout", "index.json")


@dataclass
class StreamedImages:
    """What an OCI stream held: its index, its manifests, and which blobs went ahead."""

    index: Manifest | None = None
    manifests: dict[Digest, Manifest] = field(default_factory=dict)
    sent: dict[Digest, int] = field(default_factory=dict)


class _MemberStream:
    """One tar member's bytes, read from the worker thread that walks the tar."""

    def __init__(self, f: IO[bytes], size: int) -> None:
        self.size = size
        self._f = f
        self._opened = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        left = self.size
        while left:
            data = await anyio.to_thread.run_sync(self._f.read, min(_CHUNK, left))
            if not data:
                raise ArchiveError("the stream ended inside a tar member")
            left -= len(data)
            yield data

    async def aclose(self) -> None:
        return None


def _blob_digest(name: str) -> Digest | None:
    parts = name.split("/")
    if len(parts) == 3 and parts[0] == "blobs" and parts[1] in ALGORITHMS:
        try:
            return Digest(parts[1], parts[2])
        except InputError as exc:
            raise ArchiveError(f"tar entry {name!r} is not named by a valid digest") from exc
    return None


def read_stream(
    stream: IO[bytes],
    target: Repo,
    spool: Path,
    *,
    max_manifest: int,
) -> StreamedImages | None:
    """Walk the tar on ``stream`` (in a worker thread); None when it was spooled to ``spool``.

    Blobs of an OCI layout are uploaded to ``target`` as they pass (small
    ones that parse as manifests are kept instead). Call from
    ``anyio.to_thread.run_sync``.
    """
    found = StreamedImages()
    try:
        tar = tarfile.open(fileobj=stream, mode="r|*")  # noqa: SIM115
    except tarfile.TarError as exc:
        raise ArchiveError(f"not a (gzip-compressed) tar stream: {exc}") from exc
    with tar:
        oci: bool | None = None
        writer: tarfile.TarFile | None = None
        try:
            for member in tar:
                name = normalise_name(member.name)
                if oci is None and member.isfile():
                    oci = name in _OCI_NAMES or name.startswith("blobs/")
                    if not oci:
                        writer = tarfile.open(spool, "w")  # noqa: SIM115
                if writer is not None or oci is None:
                    if oci is None:
                        # Directories before the first file: replay them if we spool.
                        continue
                    assert writer is not None
                    f = tar.extractfile(member) if member.isfile() else None
                    writer.addfile(member, f)
                    continue
                _take(tar, member, name, found, target, max_manifest)
        except tarfile.TarError as exc:
            raise ArchiveError(f"malformed tar stream: {exc}") from exc
        finally:
            if writer is not None:
                writer.close()
    if oci is False:
        return None
    if found.index is None:
        raise ArchiveError("the stream is not an OCI layout: no index.json")
    return found


def _take(
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    name: str,
    found: StreamedImages,
    target: Repo,
    max_manifest: int,
) -> None:
    if member.isdir():
        return
    if not member.isfile():
        raise HostilePathError(
            f"tar entry {member.name!r} is a link or special file; a layout read from a"
            " stream may hold regular files only (pass the tar as a file instead)"
        )
    f = tar.extractfile(member)
    assert f is not None
    if name == "index.json":
        if found.index is not None:
            raise ArchiveError("the stream holds index.json twice")
        raw = f.read(max_manifest + 1)
        try:
            found.index = Manifest.parse(raw, max_size=max_manifest)
        except InputError as exc:
            raise ArchiveError(f"index.json: {exc}") from exc
        return
    digest = _blob_digest(name)
    if digest is None:
        return  # oci-layout, manifest.json, repositories: not needed
    size = member.size
    if size <= max_manifest:
        data = f.read(size)
        verifier = Verifier(digest, size, what=f"tar entry {name}")
        verifier.update(data)
        verifier.finish()
        try:
            found.manifests[digest] = Manifest.parse(data, digest=digest, max_size=max_manifest)
            return
        except InputError:
            pass  # a config or a small layer: send it on
        anyio.from_thread.run(_send, target, digest, len(data), lambda: _Bytes(data), found)
        return
    anyio.from_thread.run(_send, target, digest, size, lambda: _MemberStream(f, size), found)


async def _send(
    target: Repo,
    digest: Digest,
    size: int,
    make: Callable[[], BlobStream],
    found: StreamedImages,
) -> None:
    """Upload one blob of the stream unless the target has it (then the walker skips it)."""
    desc = Descriptor("application/octet-stream", digest, size)
    if await target.blob_head(digest) is None:
        await target.blob_put(desc, _once(make))
    found.sent[digest] = size


class _Bytes:
    def __init__(self, data: bytes) -> None:
        self.size = len(data)
        self._data = data

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        yield self._data

    async def aclose(self) -> None:
        return None


def _once(make: Callable[[], BlobStream]) -> BlobSource:
    """A source that can be opened once: a stream read from stdin cannot be replayed."""
    opened = False

    async def source() -> BlobStream:
        nonlocal opened
        if opened:
            raise ArchiveError(
                "an upload from a stream failed after it started and cannot be replayed;"
                " save the tar to a file and import the file"
            )
        opened = True
        return make()

    return source


class StreamedRepo:
    """The kept manifests of a stream as a read-only source repo."""

    wants_manifest_first = False
    verifies_blobs = False

    def __init__(self, found: StreamedImages) -> None:
        self._found = found
        self._by_name: dict[str, Descriptor] = {}
        assert found.index is not None
        for entry in found.index.manifests:
            for key in ("io.containerd.image.name", "org.opencontainers.image.ref.name"):
                name = entry.annotations.get(key)
                if name:
                    self._by_name.setdefault(name, entry)

    @property
    def key(self) -> str:
        return "stream:stdin"

    @property
    def host(self) -> str:
        return self.key

    async def images(self) -> list[tuple[str | None, Descriptor]]:
        """Every entry of the stream's index.json with its name."""
        assert self._found.index is not None
        out: list[tuple[str | None, Descriptor]] = []
        for entry in self._found.index.manifests:
            name = entry.annotations.get("io.containerd.image.name") or entry.annotations.get(
                "org.opencontainers.image.ref.name"
            )
            out.append((name, entry))
        return out

    async def manifest_head(self, reference: str | Digest) -> Descriptor | None:
        digest = digest_in(reference)
        if digest is None:
            entry = self._by_name.get(str(reference))
            if entry is None:
                entry = next(
                    (e for n, e in self._by_name.items() if n.rsplit(":", 1)[-1] == reference),
                    None,
                )
            return entry
        manifest = self._found.manifests.get(digest)
        return None if manifest is None else manifest.descriptor()

    async def manifest_get(self, reference: str | Digest) -> Manifest:
        desc = await self.manifest_head(reference)
        manifest = None if desc is None else self._found.manifests.get(desc.digest)
        if manifest is None:
            raise NotFoundError(f"the stream holds no manifest {reference}", status=404)
        return manifest

    async def manifest_put(
        self, manifest: Manifest, tag: str | None = None, *, child: bool = False
    ) -> None:
        raise ArchiveError("a stream is read-only")

    async def blob_head(self, digest: Digest) -> int | None:
        return self._found.sent.get(digest)

    async def blob_open(
        self, desc: Descriptor, *, verify: bool = True, budget: Budget | None = None
    ) -> BlobStream:
        raise NotFoundError(
            f"blob {desc.digest} is not in the stream (it went to the target if it was)",
            status=404,
        )

    async def blob_put(
        self,
        desc: Descriptor,
        source: BlobSource,
        *,
        budget: Budget | None = None,
        chunked: bool = False,
    ) -> None:
        raise ArchiveError("a stream is read-only")

    async def mount_blob(self, desc: Descriptor, source: object) -> bool:
        return False

    async def tags(self) -> list[str]:
        return list(self._by_name)

    async def referrers(self, digest: Digest) -> list[Descriptor]:
        return []
