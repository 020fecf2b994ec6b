"""Read a blob from a plain-HTTP registry straight into a file, in a worker thread.

Exporting to a tar means every byte is received, hashed and written. Done
through aiohttp that is a Python-level loop per chunk on the event loop's
thread; done here it is ``recv_into`` a reused buffer, ``sha256`` and
``pwrite`` at the entry's offset, all in C with the GIL released, in a worker
thread per blob, so several blobs are received and hashed in parallel and the
event loop stays free. The GET itself is a `RawBlobSource` (exact framing,
registry auth, ``Range`` resume); anything it cannot do exactly makes
`open_direct` answer None and the caller streams the blob the ordinary way.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

import anyio

from ..budget import Budget
from ..config import MIB
from ..digest import Verifier
from ..errors import TransportError, TransportTimeout
from ..manifest import Descriptor
from .endpoint import Endpoint
from .rawhttp import RawBlobSource, StepAside

__all__ = ["DirectFetch", "open_direct"]

_BUFFER = MIB
_STEP = 8 * MIB  # bytes per worker-thread call: progress and cancellation points


async def open_direct(ep: Endpoint, desc: Descriptor, budget: Budget) -> DirectFetch | None:
    """An opened raw GET of ``desc``, or None when only the ordinary path can do it.

    An error answer (a 503, a 429) is raised for the caller's retry policy,
    after the host was paused if the answer asked for it.
    """
    t = ep.transport
    if not (t.limits.zero_copy and ep.plain_http and hasattr(os, "pwrite")):
        return None
    if desc.size == 0:
        return None
    source = RawBlobSource(ep, desc, budget)
    try:
        await source.open(0)
    except StepAside:
        source.close()
        return None
    return DirectFetch(source, desc)


class DirectFetch:
    """One blob's bytes, ready to be written at an offset of a file."""

    def __init__(self, source: RawBlobSource, desc: Descriptor) -> None:
        self._source = source
        self._desc = desc

    async def write_to(
        self, fd: int, at: int, verifier: Verifier, on_bytes: Callable[[int], None]
    ) -> None:
        """Write the whole blob at ``at``; ``verifier`` checks size and digest.

        A connection that breaks is resumed at the exact offset, spending
        from the blob's budget like every other path.
        """
        size = self._desc.size
        buf = bytearray(_BUFFER)
        done = 0
        failed_at = 0
        source = self._source
        try:
            while done < size:
                sock = source.sock
                assert sock is not None
                sock.settimeout(source.stall)
                n = await anyio.to_thread.run_sync(
                    _copy_some, sock, buf, fd, at + done, min(_STEP, size - done), verifier
                )
                if n:
                    done += n
                    on_bytes(n)
                    continue
                broke = TransportError(f"{source.what}: source closed at byte {done} of {size}")
                await source.resume(done, broke, progressed=done > failed_at)
                failed_at = done
            verifier.finish()
        finally:
            source.close()

    def close(self) -> None:
        """Drop the connection without reading."""
        self._source.close()


def _copy_some(
    sock: socket.socket, buf: bytearray, fd: int, pos: int, limit: int, verifier: Verifier
) -> int:
    """Receive up to ``limit`` bytes, hash and write them at ``pos``; 0 when the socket ended."""
    view = memoryview(buf)
    moved = 0
    while moved < limit:
        try:
            n = sock.recv_into(view, min(len(buf), limit - moved))
        except TimeoutError as exc:
            raise TransportTimeout(f"blob receive stalled at byte {pos + moved}") from exc
        except OSError:
            return moved  # broken connection: the caller resumes at the exact offset
        if n == 0:
            return moved
        chunk = view[:n]
        verifier.update(chunk)
        os.pwrite(fd, chunk, pos + moved)
        moved += n
    return moved
