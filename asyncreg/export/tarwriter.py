"""`TarWriterRepo`: a tar being written, as the target `Repo` of an export.

An export is a copy into this repo. The engine fetches blobs concurrently;
how they reach the tar is the output's business (see `outputs`): written in
place at reserved offsets of a file, or one at a time to a stream with the
waiting ones spooled. Either way memory is bounded by configuration, never
by the image.

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
from collections.abc import AsyncIterable, AsyncIterator, Callable
from pathlib import Path
from typing import BinaryIO, Literal

import anyio

from ..budget import Budget
from ..config import MIB
from ..destination import TEMP_PREFIX, Destination, Mode, decide, file_mode, sweep_stale
from ..digest import Digest, Verifier
from ..errors import ConfigError, DestinationError, NotFoundError
from ..manifest import Descriptor, Manifest
from ..platform import Platform
from ..store import BlobSource, BlobStream, DirectSource
from .dockerjson import ExportedImage, blob_name, build_docker_manifest, build_oci_index
from .outputs import Output, PositionalOutput, SequentialOutput, dirs

__all__ = ["TarWriterRepo"]

Compression = Literal["gzip", "zstd"] | None
_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'


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
        if compression not in (None, "gzip", "zstd"):
            raise ConfigError(f"unsupported tar compression {compression!r}: use gzip or zstd")
        if compression == "zstd":
            try:
                import zstandard  # noqa: F401
            except ImportError:
                raise ConfigError(
                    "zstd compression needs the optional 'zstandard' package:"
                    " pip install 'asyncreg[zstd]'"
                ) from None
        self.dest = str(dest)
        self.platform = platform or Platform.host()
        self._compression = compression
        self._memory_budget = memory_budget
        self._written: dict[Digest, int] = {}
        self._claimed: set[Digest] = set()
        self._manifests: dict[Digest, Manifest] = {}
        self._images: list[ExportedImage] = []
        self._out: Output | None = None
        self._file: BinaryIO | None = None
        self._tmp: str | None = None
        self._where: Destination | None = None
        self._owned = False  # we opened _file (not stdout), so we close it

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
        """Create the temporary output, or open the stream (stdout, a FIFO, a device).

        The destination is checked first (`destination.decide`): a regular file
        or new name is written atomically next to it, anything else that can be
        written is written in order, and the rest is refused before any work.
        """
        where = decide(self.dest)
        self._where = where
        if where.mode is Mode.STREAM:
            if where.path == "-":
                self._file = sys.stdout.buffer
            else:
                self._file = await anyio.to_thread.run_sync(_open_stream, where.path)
                self._owned = True
        else:
            fd, self._tmp = await anyio.to_thread.run_sync(_temp_beside, where.directory)
            self._file = os.fdopen(fd, "wb")
            self._owned = True
        if self._tmp is not None and self._compression is None:
            self._out = PositionalOutput(self._file.fileno())
        else:
            self._out = SequentialOutput(
                self._file, compression=self._compression, memory_budget=self._memory_budget
            )
        await self._bytes_entry("oci-layout", _LAYOUT)
        await self._out.raw(dirs("sha256"))

    async def commit(self) -> None:
        """Write ``index.json`` and ``manifest.json``, end the tar, move it into place."""
        assert self._out is not None
        assert self._file is not None
        await self._bytes_entry("index.json", build_oci_index(self._images))
        docker = build_docker_manifest(self._images, self._manifests, self.platform)
        await self._bytes_entry("manifest.json", docker)
        await self._out.finish()
        if self._tmp is not None:
            assert self._where is not None
            await anyio.to_thread.run_sync(_finish_atomic, self._file, self._tmp, self._where.path)
            self._tmp = None
        elif self._owned:
            await anyio.to_thread.run_sync(self._file.close)

    async def abort(self) -> None:
        """Drop the partial output (a stream just ends where it got to)."""
        with anyio.CancelScope(shield=True):
            if self._tmp is not None and self._file is not None:
                await anyio.to_thread.run_sync(self._file.close)
                await anyio.Path(self._tmp).unlink(missing_ok=True)
                self._tmp = None
            elif self._owned and self._file is not None:
                await anyio.to_thread.run_sync(self._file.close)

    def name(self, full: str, tag: str) -> str:
        """Encode an image name for `manifest_put`'s ``tag`` (see `Client.export`)."""
        return f"{full}\0{tag}"

    # --- writing ----------------------------------------------------------

    async def _bytes_entry(self, name: str, data: bytes) -> None:
        assert self._out is not None
        verifier = Verifier(Digest.of(data), len(data), what=name)
        await self._out.entry(name, len(data), _one(data), verifier)

    async def _blob_entry(self, desc: Descriptor, chunks: AsyncIterable[bytes]) -> None:
        """Write one blob entry, once per digest however many images share it."""
        assert self._out is not None
        if desc.digest in self._claimed:
            return
        self._claimed.add(desc.digest)
        verifier = Verifier(desc.digest, desc.size, what=f"blob {desc.digest}")
        try:
            await self._out.entry(blob_name(desc.digest), desc.size, chunks, verifier)
        except BaseException:
            self._claimed.discard(desc.digest)
            raise
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
        await self._blob_entry(manifest.descriptor(), _one(manifest.raw))
        self._manifests[manifest.digest] = manifest
        if tag is not None:
            full, _, short = tag.partition("\0")
            self._images.append(ExportedImage(full, short or full, manifest.descriptor()))

    # --- Repo: blobs ------------------------------------------------------

    async def blob_head(self, digest: Digest) -> int | None:
        """Size of a blob already in the tar."""
        return self._written.get(digest)

    async def blob_open(
        self, desc: Descriptor, *, verify: bool = True, budget: Budget | None = None
    ) -> BlobStream:
        """A tar being written cannot be read back."""
        raise NotFoundError(f"{self.key}: a tar being written is not readable", status=404)

    async def blob_put(
        self,
        desc: Descriptor,
        source: BlobSource,
        *,
        budget: Budget | None = None,
        chunked: bool = False,
    ) -> None:
        """Write the blob into the tar as its bytes arrive (verified on the way)."""
        if desc.digest in self._claimed:
            return
        stream = await source()
        try:
            await self._blob_entry(desc, stream)
        finally:
            await stream.aclose()

    async def relay_blob(
        self,
        desc: Descriptor,
        source: object,
        on_bytes: Callable[[int], None],
        budget: Budget,
    ) -> bool:
        """Let a source that can (a plain-HTTP registry) write the blob into its extent.

        The source receives, hashes and writes in a worker thread; False
        (nothing reserved, nothing written) when the output is a stream or the
        source can only stream.
        """
        if not isinstance(self._out, PositionalOutput) or not isinstance(source, DirectSource):
            return False
        if desc.digest in self._claimed:
            return True
        fetch = await source.open_direct(desc, budget)
        if fetch is None:
            return False
        if desc.digest in self._claimed:  # another task wrote it meanwhile
            fetch.close()
            return True
        self._claimed.add(desc.digest)
        verifier = Verifier(desc.digest, desc.size, what=f"blob {desc.digest}")
        try:
            await self._out.fill(
                blob_name(desc.digest),
                desc.size,
                lambda fd, at, v: fetch.write_to(fd, at, v, on_bytes),
                verifier,
            )
        except BaseException:
            self._claimed.discard(desc.digest)
            raise
        self._written[desc.digest] = desc.size
        return True

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


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _temp_beside(directory: str) -> tuple[int, str]:
    """A temporary file next to the destination, after removing dead runs' leftovers."""
    sweep_stale(directory)
    try:
        return tempfile.mkstemp(dir=directory, prefix=f"{TEMP_PREFIX}{os.getpid()}-")
    except OSError as exc:
        raise DestinationError(
            f"{directory}: cannot create a file there: {exc.strerror or exc}"
        ) from exc


def _open_stream(path: str) -> BinaryIO:
    try:
        return open(path, "wb")
    except OSError as exc:
        raise DestinationError(f"{path}: cannot be opened for writing: {exc.strerror}") from exc


def _finish_atomic(f: BinaryIO, tmp: str, final: str) -> None:
    """fsync, give the file an ordinary mode, rename it into place."""
    f.flush()
    os.fsync(f.fileno())
    os.fchmod(f.fileno(), file_mode())
    f.close()
    os.replace(tmp, final)
