"""Zero-copy blob relay between two plain-HTTP registries (Linux ``splice``).

Moving a blob registry to registry through Python costs two copies per byte
(kernel to user on receive, user to kernel on send) plus the interpreter's
per-chunk work: measured here, about 1.5 CPU-seconds per GiB, which on a
2-core machine competes with the receiving registry, the real bottleneck.
``splice(2)`` moves the bytes socket -> pipe -> socket inside the kernel: the
same blob costs about a tenth of that.

The relay speaks just enough HTTP/1.1 for one ``GET`` of the source blob and
one ``PUT`` of the upload (``Connection: close``, a known ``Content-Length``,
no transfer or content encoding) on raw non-blocking sockets. It is used only
when it can be exact: both hosts are plain HTTP (TLS cannot be spliced), the
source answers 200 with the declared size, and the upload ``Location`` stays on
the target's origin. Anything else (a redirect, a 401, chunked framing) makes
it step aside *before* the upload starts, and the caller takes the ordinary
streaming path. A source that breaks mid-body is resumed with ``Range`` at the
exact offset, as the streaming path does, spending from the same `Budget`.
The target registry verifies the digest of what it receives; the relay counts
bytes and never sends more or fewer than the declared size. An error answer
to the PUT (a 503, a 429, a 413) is raised as the `RegistryError` the
aiohttp path would raise, so the caller's policy (retry, pause, chunked
fallback) is the same on both.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable
from urllib.parse import urlencode

import anyio

from ..budget import Budget
from ..errors import AsyncregError, SizeMismatchError, TransportError
from ..manifest import Descriptor
from .endpoint import Endpoint
from .http import origin
from .rawhttp import (
    Head,
    RawBlobSource,
    StepAside,
    answer_error,
    connect,
    read_head,
    read_small_body,
    request_bytes,
    send_all,
    wait_socket,
)
from .upload import Upload, refused_digest

__all__ = ["SPLICE_AVAILABLE", "relay_blob", "send_file_blob"]

SPLICE_AVAILABLE = hasattr(os, "splice") and hasattr(os, "SPLICE_F_NONBLOCK")
_PIPE_SIZE = 1024 * 1024
_F_SETPIPE_SZ = 1031
_SENDFILE_STEP = 8 * 1024 * 1024
_EARLY_ANSWER_WAIT = 1.0


async def relay_blob(
    dst: Endpoint,
    src: Endpoint,
    desc: Descriptor,
    on_bytes: Callable[[int], None],
    budget: Budget,
) -> None:
    """Move ``desc`` from ``src`` to ``dst`` with ``splice``; raise `StepAside` to decline."""
    if not (SPLICE_AVAILABLE and src.plain_http):
        raise StepAside("not a plain-HTTP source on Linux")
    _check_target(dst, desc)
    source = RawBlobSource(src, desc, budget)
    await source.open(0)  # may step aside: nothing was uploaded yet
    pipe_r, pipe_w = os.pipe()
    try:
        try:
            import fcntl

            fcntl.fcntl(pipe_w, _F_SETPIPE_SZ, _PIPE_SIZE)
        except OSError:
            pass

        async def body(sink: socket.socket, what: str) -> None:
            await _pump(source, sink, pipe_r, pipe_w, desc.size, on_bytes, what)

        await _raw_put(dst, desc, body, budget)
    finally:
        source.close()
        os.close(pipe_r)
        os.close(pipe_w)


async def send_file_blob(
    dst: Endpoint,
    path: str,
    offset: int,
    desc: Descriptor,
    on_bytes: Callable[[int], None],
    budget: Budget,
) -> None:
    """Upload ``desc`` from bytes ``offset..offset+size`` of a file with ``sendfile``.

    For blobs that already sit in a file (an OCI layout, a tar being
    imported): the kernel sends them from the page cache, no copy through
    Python. The target registry verifies the digest.
    """
    _check_target(dst, desc)
    loop = asyncio.get_running_loop()
    f = await anyio.to_thread.run_sync(lambda: open(path, "rb"))  # noqa: SIM115
    try:

        async def body(sink: socket.socket, what: str) -> None:
            sent = 0
            while sent < desc.size:
                step = min(_SENDFILE_STEP, desc.size - sent)
                try:
                    n = await loop.sock_sendfile(sink, f, offset + sent, step, fallback=True)
                except OSError as exc:
                    raise TransportError(f"{what}: send failed: {exc}") from exc
                if n != step:
                    raise SizeMismatchError(
                        f"{what}: the file ended after {sent + n} of {desc.size} bytes",
                        expected=desc.size,
                        actual=sent + n,
                    )
                sent += n
                on_bytes(n)

        await _raw_put(dst, desc, body, budget)
    finally:
        await anyio.to_thread.run_sync(f.close)


def _check_target(dst: Endpoint, desc: Descriptor) -> None:
    if not dst.plain_http:
        raise StepAside("TLS target")
    if dst.chunked or desc.size == 0:
        raise StepAside("chunked upload or empty blob")


async def _raw_put(
    dst: Endpoint,
    desc: Descriptor,
    body: Callable[[socket.socket, str], Awaitable[None]],
    budget: Budget,
) -> None:
    """POST an upload session, then one raw ``PUT`` whose body ``body`` sends.

    The session is cancelled (DELETE) unless the registry accepted the blob.
    A refused digest becomes `DigestMismatchError`; any other error answer is
    the registry's error, for the caller's retry policy.
    """
    t = dst.transport
    stall = t.limits.timeouts.read_stall
    upload: Upload | None = await Upload.start(dst, desc, budget)
    sink: socket.socket | None = None
    try:
        assert upload is not None
        if origin(upload.location) != origin(t.base_url(dst.host)):
            raise StepAside("upload location on another origin")
        sep = "&" if "?" in upload.location else "?"
        url = upload.location + sep + urlencode({"digest": str(desc.digest)})
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Length": str(desc.size),
        }
        auth = await t.auth.header(dst.host, dst.push_scopes)
        if auth:
            headers["Authorization"] = auth
        what = f"upload {desc.digest} to {dst.name}"
        await t.pauses.wait(dst.host)
        sink = await connect(dst.host, stall, what)
        try:
            await send_all(sink, request_bytes("PUT", url, dst.host, headers), stall, what)
            await body(sink, what)
        except TransportError:
            # A registry (or a proxy) may answer before it has read the body (a 413,
            # a 429) and close: that answer, not the broken send, is what happened.
            early = await _early_answer(sink, what)
            if early is None:
                raise
            head = early
        else:
            head = await read_head(sink, stall, what)
        if head.status not in (201, 204):
            answer = await read_small_body(sink, head, stall, what)
            err = answer_error(dst, head, answer, "PUT", url, what)
            refused = refused_digest(dst, desc, err)
            if refused is not None:
                raise refused from err
            raise err
        upload = None  # accepted: nothing to cancel
    finally:
        if sink is not None:
            sink.close()
        if upload is not None:
            with anyio.CancelScope(shield=True):
                await upload.cancel()


async def _early_answer(sink: socket.socket, what: str) -> Head | None:
    """The response head already sent on a connection whose request broke, or None."""
    try:
        return await read_head(sink, _EARLY_ANSWER_WAIT, what)
    except AsyncregError:
        return None


async def _pump(
    source: RawBlobSource,
    sink: socket.socket,
    pipe_r: int,
    pipe_w: int,
    size: int,
    on_bytes: Callable[[int], None],
    what: str,
) -> None:
    """Splice exactly ``size`` bytes from the source socket to the sink socket."""
    flags = os.SPLICE_F_NONBLOCK | os.SPLICE_F_MOVE
    stall = source.stall
    moved = 0
    in_pipe = 0
    failed_at = 0
    while moved < size:
        if in_pipe == 0:
            sock = source.sock
            assert sock is not None
            try:
                n = os.splice(sock.fileno(), pipe_w, min(_PIPE_SIZE, size - moved), flags=flags)
            except BlockingIOError:
                await wait_socket(sock, write=False, stall=stall, what=source.what)
                continue
            except OSError:
                n = 0
            if n == 0:  # the source broke or closed early: resume at the exact offset
                broke = TransportError(f"{source.what}: source closed at byte {moved} of {size}")
                await source.resume(moved, broke, progressed=moved > failed_at)
                failed_at = moved
                continue
            in_pipe = n
        try:
            m = os.splice(pipe_r, sink.fileno(), in_pipe, flags=flags)
        except BlockingIOError:
            await wait_socket(sink, write=True, stall=stall, what=what)
            continue
        except OSError as exc:
            raise TransportError(f"{what}: target connection failed: {exc}") from exc
        in_pipe -= m
        moved += m
        on_bytes(m)
    if moved != size:
        raise SizeMismatchError(f"{what}: moved {moved} of {size} bytes", expected=size)
