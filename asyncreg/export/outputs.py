"""Where the bytes of a tar being written go: two strategies, one interface.

A tar entry is a header, ``size`` bytes, and padding to 512, so an entry's
extent is known the moment its size is. That gives two ways to let blobs
arrive concurrently:

- `PositionalOutput` (a regular file, uncompressed): each entry reserves its
  extent at the current end of the file and is written there with ``pwrite``
  as its bytes arrive, concurrently with every other entry. Nothing waits,
  nothing is spooled; memory is one batch per entry in flight. Hashing runs in
  the same worker thread as the write (hashlib releases the GIL), so blobs are
  verified in parallel.
- `SequentialOutput` (stdout, or a gzip-compressed tar): one entry at a time.
  The first blob to arrive streams straight through; blobs that arrive while
  the writer is busy wait in memory up to a shared budget and in temporary
  files beyond it.

Both verify every entry's digest and size before it counts as written; a
mismatch fails the export, and the caller removes the partial file.
"""

from __future__ import annotations

import os
import tempfile
import zlib
from collections.abc import AsyncIterable, Awaitable, Callable
from typing import BinaryIO, Protocol

import anyio

from ..config import MIB
from ..digest import Verifier
from .tarformat import END, dir_header, file_header, padding

__all__ = ["Output", "PositionalOutput", "SequentialOutput"]

_BATCH = MIB


class Output(Protocol):
    """Receives tar entries; `finish` ends the archive."""

    async def entry(
        self, name: str, size: int, chunks: AsyncIterable[bytes], verifier: Verifier
    ) -> None: ...

    async def raw(self, data: bytes) -> None: ...

    async def finish(self) -> None: ...


class PositionalOutput:
    """Entries written concurrently at reserved offsets of a seekable file."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._end = 0

    def _reserve(self, n: int) -> int:
        at = self._end
        self._end += n
        return at

    async def raw(self, data: bytes) -> None:
        """Append bytes that need no verification (directory headers)."""
        await anyio.to_thread.run_sync(os.pwrite, self._fd, data, self._reserve(len(data)))

    async def entry(
        self, name: str, size: int, chunks: AsyncIterable[bytes], verifier: Verifier
    ) -> None:
        """Reserve the entry's extent now; fill it as bytes arrive."""
        header = file_header(name, size)
        pad = padding(size)
        at = self._reserve(len(header) + size + len(pad))
        fd = self._fd
        pos = at + len(header)

        def write(parts: list[bytes], where: int) -> None:
            data = b"".join(parts) if len(parts) > 1 else parts[0]
            verifier.hash_only(data)
            os.pwrite(fd, data, where)

        batch: list[bytes] = []
        pending = 0
        async for chunk in chunks:
            verifier.account(len(chunk))
            batch.append(chunk)
            pending += len(chunk)
            if pending >= _BATCH:
                parts, batch = batch, []
                await anyio.to_thread.run_sync(write, parts, pos)
                pos += pending
                pending = 0
        if batch:
            await anyio.to_thread.run_sync(write, batch, pos)
        verifier.finish()
        await anyio.to_thread.run_sync(os.pwrite, fd, header, at)
        if pad:
            await anyio.to_thread.run_sync(os.pwrite, fd, pad, at + len(header) + size)

    async def fill(
        self,
        name: str,
        size: int,
        writer: Callable[[int, int, Verifier], Awaitable[None]],
        verifier: Verifier,
    ) -> None:
        """Reserve the entry and let ``writer(fd, offset, verifier)`` write its bytes."""
        header = file_header(name, size)
        pad = padding(size)
        at = self._reserve(len(header) + size + len(pad))
        await writer(self._fd, at + len(header), verifier)
        await anyio.to_thread.run_sync(os.pwrite, self._fd, header, at)
        if pad:
            await anyio.to_thread.run_sync(os.pwrite, self._fd, pad, at + len(header) + size)

    async def finish(self) -> None:
        """Append the end-of-archive blocks."""
        await self.raw(END)


class SequentialOutput:
    """One entry at a time to a stream, spooling blobs that must wait."""

    def __init__(self, fileobj: BinaryIO, *, compression: str | None, memory_budget: int) -> None:
        self._f = fileobj
        self._z = _compressor(compression)
        self._lock = anyio.Lock()
        self._budget = memory_budget
        self._pending: list[bytes] = []
        self._pending_size = 0

    def _write_sync(self, parts: list[bytes]) -> None:
        data = b"".join(parts)
        if self._z is not None:
            data = self._z.compress(data)
        self._f.write(data)

    async def _write(self, data: bytes) -> None:
        self._pending.append(data)
        self._pending_size += len(data)
        if self._pending_size >= 4 * _BATCH:
            await self._flush()

    async def _flush(self) -> None:
        if self._pending:
            parts, self._pending, self._pending_size = self._pending, [], 0
            await anyio.to_thread.run_sync(self._write_sync, parts)

    async def raw(self, data: bytes) -> None:
        """Write bytes that need no verification."""
        async with self._lock:
            await self._write(data)

    async def _entry_locked(
        self, name: str, size: int, chunks: AsyncIterable[bytes], verifier: Verifier
    ) -> None:
        await self._write(file_header(name, size))
        async for chunk in chunks:
            verifier.update(chunk)
            await self._write(chunk)
        verifier.finish()
        await self._write(padding(size))

    async def entry(
        self, name: str, size: int, chunks: AsyncIterable[bytes], verifier: Verifier
    ) -> None:
        """Stream now when the writer is free, else spool and write when it is."""
        if not self._lock.locked():
            async with self._lock:
                await self._entry_locked(name, size, chunks, verifier)
            return
        spool = _Spool(self)
        try:
            async for chunk in chunks:
                await spool.add(chunk)
            async with self._lock:
                await self._entry_locked(name, size, spool.replay(), verifier)
        finally:
            await spool.close()

    async def finish(self) -> None:
        """End the archive (and the gzip stream) and flush."""
        async with self._lock:
            await self._write(END)
            await self._flush()

            def end() -> None:
                if self._z is not None:
                    self._f.write(self._z.flush())
                self._f.flush()

            await anyio.to_thread.run_sync(end)


class _Compressor(Protocol):
    def compress(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


def _compressor(compression: str | None) -> _Compressor | None:
    """A streaming compressor for the whole tar: gzip (zlib) or zstd (optional package)."""
    if compression is None:
        return None
    if compression == "gzip":
        return zlib.compressobj(6, zlib.DEFLATED, 31)
    import zstandard  # the caller checked that it is installed

    return zstandard.ZstdCompressor(level=3).compressobj()


class _Spool:
    """A blob waiting for the writer: memory within the shared budget, then a temp file."""

    def __init__(self, owner: SequentialOutput) -> None:
        self._owner = owner
        self._chunks: list[bytes] = []
        self._memory = 0
        self._file: tempfile._TemporaryFileWrapper[bytes] | None = None

    async def add(self, chunk: bytes) -> None:
        owner = self._owner
        if self._file is None and len(chunk) <= owner._budget:
            owner._budget -= len(chunk)
            self._chunks.append(chunk)
            self._memory += len(chunk)
            return
        if self._file is None:
            self._file = await anyio.to_thread.run_sync(
                lambda: tempfile.NamedTemporaryFile(prefix="asyncreg-spool-")  # noqa: SIM115
            )
        await anyio.to_thread.run_sync(self._file.write, chunk)

    async def replay(self) -> AsyncIterable[bytes]:
        for chunk in self._chunks:
            yield chunk
        if self._file is not None:
            f = self._file
            await anyio.to_thread.run_sync(f.seek, 0)
            while True:
                data = await anyio.to_thread.run_sync(f.read, _BATCH)
                if not data:
                    break
                yield data

    async def close(self) -> None:
        self._owner._budget += self._memory
        self._chunks.clear()
        self._memory = 0
        if self._file is not None:
            await anyio.to_thread.run_sync(self._file.close)
            self._file = None


def dirs(algorithm: str) -> bytes:
    """Directory entries ``blobs/`` and ``blobs/<alg>/``."""
    return dir_header("blobs/") + dir_header(f"blobs/{algorithm}/")
