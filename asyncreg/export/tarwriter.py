"""`TarWriterRepo`: a tar being written, as the target `Repo` of an export.

An export is a copy into this repo. Blobs are fetched concurrently by the
engine but a tar is sequential, so exactly one entry is written at a time:
the first blob to arrive streams straight into the tar; blobs that arrive
while the writer is busy are buffered — in memory up to a shared budget,
in temporary files beyond it — and written when the writer is free. Peak
memory is thus the budget plus chunk buffers, whatever the image size.

Every blob is verified (digest and size) on its way in, every blob name is
written once however many images share it, and the archive is framed as an
OCI layout (``oci-layout``, ``index.json``, ``blobs/<alg>/<hex>``) plus the
``manifest.json`` that ``docker load`` reads. Writing to a file goes to a
temporary name next to it and is renamed only when complete; a failed export
leaves nothing under the final name.
"""

from __future__ import annotations

import os
import sys
import tempfile
import zlib
from collections.abc import AsyncIterable
from pathlib import Path
from typing import BinaryIO, Literal

import anyio

from ..config import MIB
from ..digest import Digest, Verifier
from ..errors import ConfigError, NotFoundError
from ..manifest import Descriptor, Manifest
from ..platform import Platform
from ..store import BlobSource, BlobStream
from .dockerjson import ExportedImage, blob_name, build_docker_manifest, build_oci_index
from .tarformat import END, dir_header, file_header, padding

__all__ = ["TarWriterRepo"]

Compression = Literal["gzip"] | None
_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
_WRITE_BATCH = 4 * MIB


class _Sink:
    """The output file (or stdout), written from a worker thread, optionally gzipped."""

    def __init__(self, fileobj: BinaryIO, compression: Compression) -> None:
        self._f = fileobj
        self._z = zlib.compressobj(6, zlib.DEFLATED, 31) if compression == "gzip" else None
        self._pending: list[bytes] = []
        self._pending_size = 0
        self.written = 0

    def _write_sync(self, parts: list[bytes]) -> None:
        data = b"".join(parts)
        if self._z is not None:
            data = self._z.compress(data)
        self._f.write(data)

    async def write(self, data: bytes) -> None:
        """Queue ``data``; flush to the file in batches (fewer thread hops)."""
        self.written += len(data)
        self._pending.append(data)
        self._pending_size += len(data)
        if self._pending_size >= _WRITE_BATCH:
            await self.flush()

    async def flush(self) -> None:
        """Write what is queued."""
        if self._pending:
            parts, self._pending, self._pending_size = self._pending, [], 0
            await anyio.to_thread.run_sync(self._write_sync, parts)

    async def finish(self) -> None:
        """Flush, end the compressed stream, and flush the file."""
        await self.flush()

        def end() -> None:
            if self._z is not None:
                self._f.write(self._z.flush())
            self._f.flush()

        await anyio.to_thread.run_sync(end)


class _Spool:
    """A blob waiting for the writer: memory up to its share of the budget, then a file."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.memory = 0
        self.file: tempfile._TemporaryFileWrapper[bytes] | None = None

    async def add(self, chunk: bytes, budget: _Budget) -> None:
        if self.file is None and budget.take(len(chunk)):
            self.chunks.append(chunk)
            self.memory += len(chunk)
            return
        if self.file is None:
            self.file = await anyio.to_thread.run_sync(
                lambda: tempfile.NamedTemporaryFile(prefix="asyncreg-spool-")  # noqa: SIM115
            )
        f = self.file
        await anyio.to_thread.run_sync(f.write, chunk)

    async def replay(self) -> AsyncIterable[bytes]:
        for chunk in self.chunks:
            yield chunk
        if self.file is not None:
            f = self.file
            await anyio.to_thread.run_sync(f.seek, 0)
            while True:
                data = await anyio.to_thread.run_sync(f.read, MIB)
                if not data:
                    break
                yield data

    async def close(self, budget: _Budget) -> None:
        budget.give(self.memory)
        self.chunks.clear()
        self.memory = 0
        if self.file is not None:
            await anyio.to_thread.run_sync(self.file.close)
            self.file = None


class _Budget:
    """Bytes of waiting blobs that may sit in memory, shared by all spools."""

    def __init__(self, limit: int) -> None:
        self.free = limit

    def take(self, n: int) -> bool:
        if n <= self.free:
            self.free -= n
            return True
        return False

    def give(self, n: int) -> None:
        self.free += n


class TarWriterRepo:
    """Write-only repo that frames what it receives as an OCI layout + docker tar."""

    wants_manifest_first = False
    verifies_blobs = True  # it hashes every byte it writes

    def __init__(
        self,
        dest: str | Path,
        *,
        platform: Platform | None = None,
        compression: Compression = None,
        memory_budget: int = 64 * MIB,
    ) -> None:
        if compression not in (None, "gzip"):
            raise ConfigError(f"unsupported tar compression {compression!r}: use gzip or none")
        self.dest = str(dest)
        self.platform = platform or Platform.host()
        self._compression = compression
        self._budget = _Budget(memory_budget)
        self._lock = anyio.Lock()
        self._written: dict[Digest, int] = {}
        self._manifests: dict[Digest, Manifest] = {}
        self._images: list[ExportedImage] = []
        self._sink: _Sink | None = None
        self._file: BinaryIO | None = None
        self._tmp: str | None = None
        self._dirs_written = False

    @property
    def key(self) -> str:
        """``tar:DEST``."""
        return f"tar:{self.dest}"

    @property
    def host(self) -> str:
        """A limit bucket of its own."""
        return self.key

    # --- lifecycle --------------------------------------------------------

    async def open(self) -> None:
        """Create the temporary output (or take stdout for ``-``)."""
        if self.dest == "-":
            self._file = sys.stdout.buffer
        else:
            fd, self._tmp = await anyio.to_thread.run_sync(
                lambda: tempfile.mkstemp(
                    dir=os.path.dirname(os.path.abspath(self.dest)), prefix=".asyncreg-export-"
                )
            )
            self._file = os.fdopen(fd, "wb")
        self._sink = _Sink(self._file, self._compression)
        await self._entry_bytes("oci-layout", _LAYOUT)

    async def commit(self) -> None:
        """Write ``index.json`` and ``manifest.json``, end the tar, move it into place."""
        assert self._sink is not None
        assert self._file is not None
        async with self._lock:
            await self._entry_bytes("index.json", build_oci_index(self._images))
            docker = build_docker_manifest(self._images, self._manifests, self.platform)
            await self._entry_bytes("manifest.json", docker)
            await self._sink.write(END)
            await self._sink.finish()
        if self._tmp is not None:
            await anyio.to_thread.run_sync(self._file.close)
            await anyio.to_thread.run_sync(os.replace, self._tmp, self.dest)
            self._tmp = None

    async def abort(self) -> None:
        """Drop the partial output."""
        if self._tmp is not None and self._file is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._file.close)
                await anyio.Path(self._tmp).unlink(missing_ok=True)
            self._tmp = None

    def name(self, full: str, tag: str) -> str:
        """Encode an image name for `manifest_put`'s ``tag`` (see `Client.export`)."""
        return f"{full}\0{tag}"

    # --- writing ----------------------------------------------------------

    async def _entry_bytes(self, name: str, data: bytes) -> None:
        assert self._sink is not None
        await self._sink.write(file_header(name, len(data)))
        await self._sink.write(data)
        await self._sink.write(padding(len(data)))

    async def _blob_dirs(self, digest: Digest) -> None:
        if not self._dirs_written:
            assert self._sink is not None
            await self._sink.write(dir_header("blobs/"))
            await self._sink.write(dir_header(f"blobs/{digest.algorithm}/"))
            self._dirs_written = True

    async def _entry_stream(self, desc: Descriptor, chunks: AsyncIterable[bytes]) -> None:
        assert self._sink is not None
        await self._blob_dirs(desc.digest)
        await self._sink.write(file_header(blob_name(desc.digest), desc.size))
        verifier = Verifier(desc.digest, desc.size, what=f"blob {desc.digest}")
        async for chunk in chunks:
            verifier.update(chunk)
            await self._sink.write(chunk)
        verifier.finish()
        await self._sink.write(padding(desc.size))
        self._written[desc.digest] = desc.size

    # --- Repo: manifests ----------------------------------------------------

    async def manifest_head(self, reference: str | Digest) -> Descriptor | None:
        """Only what this tar already holds."""
        if isinstance(reference, Digest) and reference in self._manifests:
            return self._manifests[reference].descriptor()
        return None

    async def manifest_get(self, reference: str | Digest) -> Manifest:
        """Manifests written so far (the engine reads referrer indexes back)."""
        if isinstance(reference, Digest) and reference in self._manifests:
            return self._manifests[reference]
        raise NotFoundError(f"{self.key}: manifest {reference} not in the tar", status=404)

    async def manifest_put(
        self, manifest: Manifest, tag: str | None = None, *, child: bool = False
    ) -> None:
        """Write the manifest blob (once) and name it in ``index.json`` when tagged."""
        async with self._lock:
            if manifest.digest not in self._written:

                async def one() -> AsyncIterable[bytes]:
                    yield manifest.raw

                await self._entry_stream(manifest.descriptor(), one())
            self._manifests[manifest.digest] = manifest
        if tag is not None:
            full, _, short = tag.partition("\0")
            self._images.append(ExportedImage(full, short or full, manifest.descriptor()))

    # --- Repo: blobs ------------------------------------------------------

    async def blob_head(self, digest: Digest) -> int | None:
        """Size of a blob already in the tar."""
        return self._written.get(digest)

    async def blob_open(self, desc: Descriptor, *, verify: bool = True) -> BlobStream:
        """A tar being written cannot be read back."""
        raise NotFoundError(f"{self.key}: a tar being written is not readable", status=404)

    async def blob_put(self, desc: Descriptor, source: BlobSource) -> None:
        """Stream the blob into the tar now, or spool it until the writer is free."""
        if desc.digest in self._written:
            return
        stream = await source()
        spool: _Spool | None = None
        try:
            if not self._lock.locked():
                async with self._lock:
                    if desc.digest not in self._written:
                        await self._entry_stream(desc, stream)
                return
            spool = _Spool()
            async for chunk in stream:
                await spool.add(chunk, self._budget)
            async with self._lock:
                if desc.digest not in self._written:
                    await self._entry_stream(desc, spool.replay())
        finally:
            await stream.aclose()
            if spool is not None:
                await spool.close(self._budget)

    async def mount_blob(self, desc: Descriptor, source: object) -> bool:
        """Tars do not mount."""
        return False

    async def tags(self) -> list[str]:
        """Names written so far."""
        return [i.tag for i in self._images]

    async def referrers(self, digest: Digest) -> list[Descriptor]:
        """Referrers written so far (those whose subject is ``digest``)."""
        return [
            m.descriptor(artifact_type=m.effective_artifact_type)
            for m in self._manifests.values()
            if m.subject is not None and m.subject.digest == digest
        ]
