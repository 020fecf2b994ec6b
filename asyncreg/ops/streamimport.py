"""Import from a stream (stdin), read once, through the same blob pipeline as a copy.

A tar on stdin cannot be indexed and read back by byte range. For an OCI
layout tar that does not matter: a blob is named by its digest and sized by
its tar header, so it can go to the target while it passes. What must not
happen is uploading blobs no imported image uses, so each blob that passes is
judged against what the stream has shown so far (`_Needs`):

- it belongs to a selected image (``index.json`` and the manifests on the
  way from it are known): it goes to the target now, through the job's
  `BlobPipeline` (slots, single-flight, progress, the attempt budget);
- no selected image can use it (every manifest of the selection is known):
  it is skipped;
- undecided (``index.json`` or a manifest has not passed yet): when every
  image of the stream is wanted (no ``name``), it goes now; when one image
  is picked by name it waits on disk in a spool file until the end.

Manifests (blobs small enough to parse as one) are kept in memory. When the
stream ends, `StreamedRepo` serves the kept manifests, the spooled blobs (as
files, so sendfile can move them) and answers for the blobs already sent, and
the ordinary copy pushes the selected images, children first.

A stream blob can be read once: a transfer that fails after its bytes began
to flow cannot be replayed (the error says to import the tar as a file).

A tar whose first file is not part of an OCI layout (a legacy ``docker
save``, whose layers must be compressed with their config at hand) is
re-written member by member into a temporary file instead, and imported from
there like any other file.
"""

from __future__ import annotations

import tarfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import anyio
import anyio.from_thread

from ..archive.tarindex import FileRange, normalise_name
from ..budget import Budget
from ..config import MIB
from ..digest import ALGORITHMS, Digest, Verifier, digest_in
from ..errors import ArchiveError, HostilePathError, InputError, NotFoundError
from ..manifest import Descriptor, Manifest
from ..store import BlobSource, BlobStream

__all__ = ["StreamedImages", "StreamedRepo", "Wanted", "read_stream"]

_CHUNK = MIB
_OCI_NAMES = ("oci-layout", "index.json")
_NAME_KEYS = ("io.containerd.image.name", "org.opencontainers.image.ref.name")

#: Uploads one passing blob through the pipeline; called from the walker's thread.
Send = Callable[[Descriptor, Callable[[], BlobStream]], None]


@dataclass(frozen=True, slots=True)
class Wanted:
    """Which images of the stream the import takes: one by ``name``, or every one."""

    name: str | None = None


@dataclass
class StreamedImages:
    """What an OCI stream held: its index, manifests, and where each blob went."""

    index: Manifest | None = None
    manifests: dict[Digest, Manifest] = field(default_factory=dict)
    #: Blobs handed to the pipeline while they passed.
    sent: dict[Digest, int] = field(default_factory=dict)
    #: Blobs kept in the spool file until the end: digest -> (offset, size).
    spooled: dict[Digest, tuple[int, int]] = field(default_factory=dict)

    def entries(self) -> list[tuple[str | None, Descriptor]]:
        """Every entry of index.json with its name (None without one)."""
        if self.index is None:
            return []
        out: list[tuple[str | None, Descriptor]] = []
        for entry in self.index.manifests:
            name = next(
                (entry.annotations[k] for k in _NAME_KEYS if entry.annotations.get(k)), None
            )
            out.append((name, entry))
        return out

    def lookup(self, reference: str) -> Descriptor | None:
        """The entry named ``reference`` (a full name, or just its tag)."""
        entries = [(n, e) for n, e in self.entries() if n is not None]
        exact = next((e for n, e in entries if n == reference), None)
        if exact is not None:
            return exact
        return next((e for n, e in entries if n.rsplit(":", 1)[-1] == reference), None)


class _Needs:
    """Decides, from what has passed so far, whether a blob is needed by the selection."""

    def __init__(self, found: StreamedImages, wanted: Wanted) -> None:
        self._found = found
        self._wanted = wanted

    def _roots(self) -> list[Digest] | None:
        if self._found.index is None:
            return None
        if self._wanted.name is not None:
            entry = self._found.lookup(self._wanted.name)
            return [] if entry is None else [entry.digest]
        return [e.digest for _, e in self._found.entries()]

    def decide(self, digest: Digest) -> bool | None:
        """True: a selected image uses it; False: none can; None: not known yet."""
        roots = self._roots()
        if roots is None:
            return None
        needed: set[Digest] = set()
        complete = True
        todo = list(roots)
        seen: set[Digest] = set()
        while todo:
            d = todo.pop()
            if d in seen:
                continue
            seen.add(d)
            manifest = self._found.manifests.get(d)
            if manifest is None:
                complete = False
                continue
            for child in manifest.manifests:
                todo.append(child.digest)
            needed.update(b.digest for b in manifest.blobs())
        if digest in needed:
            return True
        return False if complete else None


class _MemberStream:
    """One tar member's bytes, read from the worker thread that walks the tar."""

    def __init__(self, f: IO[bytes], size: int) -> None:
        self.size = size
        self._f = f

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


class _BytesStream:
    def __init__(self, data: bytes) -> None:
        self.size = len(data)
        self._data = data

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        yield self._data

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
    spool: Path,
    send: Send,
    *,
    wanted: Wanted,
    max_manifest: int,
    found: StreamedImages,
) -> bool:
    """Walk the tar on ``stream`` (in a worker thread) into ``found``.

    False when the tar is not an OCI layout: it was re-written to ``spool``
    as a whole, for a file import. Call from ``anyio.to_thread.run_sync``.
    """
    try:
        tar = tarfile.open(fileobj=stream, mode="r|*")  # noqa: SIM115
    except tarfile.TarError as exc:
        raise ArchiveError(f"not a (gzip-compressed) tar stream: {exc}") from exc
    needs = _Needs(found, wanted)
    with tar, open(spool, "wb") as spill:
        oci: bool | None = None
        writer: tarfile.TarFile | None = None
        try:
            for member in tar:
                name = normalise_name(member.name)
                if oci is None and member.isfile():
                    oci = name in _OCI_NAMES or name.startswith("blobs/")
                    if not oci:
                        writer = tarfile.open(fileobj=spill, mode="w")  # noqa: SIM115
                if writer is not None or oci is None:
                    if oci is None:
                        # Directories before the first file: replay them if we spool.
                        continue
                    assert writer is not None
                    f = tar.extractfile(member) if member.isfile() else None
                    writer.addfile(member, f)
                    continue
                _take(tar, member, name, found, needs, wanted, spill, send, max_manifest)
        except tarfile.TarError as exc:
            raise ArchiveError(f"malformed tar stream: {exc}") from exc
        finally:
            if writer is not None:
                writer.close()
    if oci is False:
        return False
    if found.index is None:
        raise ArchiveError("the stream is not an OCI layout: no index.json")
    return True


def _take(
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    name: str,
    found: StreamedImages,
    needs: _Needs,
    wanted: Wanted,
    spill: IO[bytes],
    send: Send,
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
    desc = Descriptor("application/octet-stream", digest, size)
    data: bytes | None = None
    if size <= max_manifest:
        data = f.read(size)
        verifier = Verifier(digest, size, what=f"tar entry {name}")
        verifier.update(data)
        verifier.finish()
        try:
            found.manifests[digest] = Manifest.parse(data, digest=digest, max_size=max_manifest)
            return  # pushed by the copy at the end, after its children
        except InputError:
            pass  # a config or a small layer
    decision = needs.decide(digest)
    if decision is False:
        return  # no selected image uses it: not uploaded
    if decision is None and wanted.name is not None:
        found.spooled[digest] = (spill.tell(), size)
        if data is not None:
            spill.write(data)
        else:
            _copy_member(f, spill, size)
        return
    kept = data
    send(
        desc, (lambda: _BytesStream(kept)) if kept is not None else (lambda: _MemberStream(f, size))
    )
    found.sent[digest] = size


def _copy_member(f: IO[bytes], out: IO[bytes], size: int) -> None:
    left = size
    while left:
        chunk = f.read(min(_CHUNK, left))
        if not chunk:
            raise ArchiveError("the stream ended inside a tar member")
        out.write(chunk)
        left -= len(chunk)


class StreamedRepo:
    """The stream as a read-only source repo, while it is read and after.

    While the walker is inside a blob, that blob can be opened once
    (`passing`); afterwards the kept manifests, the spooled blobs and the
    names of ``index.json`` are served.
    """

    wants_manifest_first = False
    verifies_blobs = False

    def __init__(self, found: StreamedImages, spool: Path) -> None:
        self.found = found
        self._spool = spool
        self._passing: dict[Digest, Callable[[], BlobStream]] = {}
        self._opened: set[Digest] = set()

    @property
    def key(self) -> str:
        return "stream:stdin"

    @property
    def host(self) -> str:
        return self.key

    async def send_passing(
        self,
        desc: Descriptor,
        make: Callable[[], BlobStream],
        upload: Callable[[], Awaitable[None]],
    ) -> None:
        """Offer the blob passing now for one open, while ``upload`` runs."""
        self._passing[desc.digest] = make
        try:
            await upload()
        finally:
            self._passing.pop(desc.digest, None)

    async def images(self) -> list[tuple[str | None, Descriptor]]:
        """Every entry of the stream's index.json with its name."""
        return self.found.entries()

    async def manifest_head(self, reference: str | Digest) -> Descriptor | None:
        digest = digest_in(reference)
        if digest is None:
            return self.found.lookup(str(reference))
        manifest = self.found.manifests.get(digest)
        return None if manifest is None else manifest.descriptor()

    async def manifest_get(self, reference: str | Digest) -> Manifest:
        desc = await self.manifest_head(reference)
        manifest = None if desc is None else self.found.manifests.get(desc.digest)
        if manifest is None:
            raise NotFoundError(f"the stream holds no manifest {reference}", status=404)
        return manifest

    async def manifest_put(
        self, manifest: Manifest, tag: str | None = None, *, child: bool = False
    ) -> None:
        raise ArchiveError("a stream is read-only")

    async def blob_head(self, digest: Digest) -> int | None:
        found = self.found
        if digest in found.sent:
            return found.sent[digest]
        if digest in found.spooled:
            return found.spooled[digest][1]
        manifest = found.manifests.get(digest)
        return None if manifest is None else manifest.size

    async def blob_open(
        self, desc: Descriptor, *, verify: bool = True, budget: Budget | None = None
    ) -> BlobStream:
        make = self._passing.get(desc.digest)
        if make is not None:
            # The walker is inside this blob. A small one held in memory can be sent
            # again; a large one flows from the tar once (a stream does not rewind).
            if desc.digest in self._opened:
                raise _not_again(desc.digest)
            stream = make()
            if isinstance(stream, _MemberStream):
                self._opened.add(desc.digest)
            return stream
        manifest = self.found.manifests.get(desc.digest)
        if manifest is not None:
            return _BytesStream(manifest.raw)
        if desc.digest in self.found.spooled:
            offset, size = self.found.spooled[desc.digest]
            checker = Verifier(desc.digest, size, what=f"blob {desc.digest}", hashing=verify)
            return FileRange(self._spool, offset, size, verifier=checker)
        if desc.digest in self.found.sent:
            raise _not_again(desc.digest)
        raise NotFoundError(f"blob {desc.digest} is not in the stream", status=404)

    async def blob_file(self, desc: Descriptor) -> tuple[str, int] | None:
        """Where a spooled blob lies (for sendfile); None for the others."""
        where = self.found.spooled.get(desc.digest)
        return None if where is None else (str(self._spool), where[0])

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
        return [n for n, _ in self.found.entries() if n is not None]

    async def referrers(self, digest: Digest) -> list[Descriptor]:
        return []


def _not_again(digest: Digest) -> ArchiveError:
    return ArchiveError(
        f"blob {digest} of the stream failed after its bytes began to flow and cannot be"
        " read again; save the tar to a file and import the file"
    )
