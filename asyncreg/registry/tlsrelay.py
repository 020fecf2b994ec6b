"""Registry to registry over TLS: the bytes move in a worker thread, never on the event loop.

TLS cannot be spliced, and through aiohttp every chunk of a TLS blob costs
Python work twice on the event loop's thread (asyncio's TLS layer decrypts
and encrypts in memory BIOs chunk by chunk, then the copy loop hands it on).
Here one GET and one PUT run on blocking sockets of our own (TLS where the
host speaks it, with the same trust as the transport: `Transport.tls_context`)
and a worker thread loops ``recv_into`` a reused buffer and ``sendall``, both
in C with the GIL released, so decrypting, encrypting and copying run beside
the event loop and beside each other.

The policy is the splice relay's, with the same pieces: the upload session
comes from `Upload.start`, host pauses are waited for before each connection,
error answers go through `Transport.note_answer` and become the registry's
errors, a source that breaks mid-body is resumed with ``Range`` at the exact
byte received (spending from the blob's `Budget`), and the relay steps aside
(`StepAside`) before anything is uploaded when it cannot do a case exactly: a
redirect or a challenge on the GET, other framing, chunked uploads, or two
plain-HTTP hosts (splice does those better).
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlencode, urlsplit

import anyio

from ..budget import Budget
from ..errors import AsyncregError, SizeMismatchError, TransportError, TransportTimeout
from ..manifest import Descriptor
from .endpoint import Endpoint
from .http import origin
from .rawhttp import (
    HEAD_LIMIT,
    Head,
    StepAside,
    answer_error,
    blob_request,
    check_blob_head,
    is_error,
    parse_head,
    request_bytes,
    resume_at,
)
from .upload import Upload, refused_digest

__all__ = ["tls_relay_blob"]

_T = TypeVar("_T")
_BUFFER = 1024 * 1024
_EARLY_ANSWER_WAIT = 1.0
_STEP = 8 * 1024 * 1024  # bytes per worker-thread call: progress and cancellation points


class _Conn:
    """A blocking socket (TLS or plain) read in worker threads, with its read-ahead."""

    def __init__(self, sock: socket.socket, what: str) -> None:
        self.sock = sock
        self.what = what
        #: Body bytes that arrived with the response head.
        self.pending = b""

    @classmethod
    async def open(cls, ep: Endpoint, what: str) -> _Conn:
        t = ep.transport
        stall = t.limits.timeouts.read_stall
        connect = t.limits.timeouts.connect
        ctx = t.tls_context(ep.host)
        parts = urlsplit(f"//{ep.host}")
        name, port = parts.hostname or "", parts.port or (443 if ctx else 80)
        await t.pauses.wait(ep.host)

        def dial() -> socket.socket:
            raw = socket.create_connection((name, port), timeout=connect)
            try:
                raw.settimeout(stall)
                return ctx.wrap_socket(raw, server_hostname=name) if ctx else raw
            except BaseException:
                raw.close()
                raise

        try:
            sock = await anyio.to_thread.run_sync(dial)
        except ssl.SSLCertVerificationError as exc:
            raise TransportError(
                f"{what}: TLS certificate verification failed: {exc}", retryable=False
            ) from exc
        except TimeoutError as exc:
            raise TransportTimeout(f"{what}: connecting to {ep.host} timed out") from exc
        except OSError as exc:
            raise TransportError(f"{what}: connection to {ep.host} failed: {exc}") from exc
        return cls(sock, what)

    async def send(self, data: bytes) -> None:
        await self._io(self.sock.sendall, data)

    async def head(self) -> Head:
        def read() -> tuple[bytes, bytes]:
            got = b""
            while b"\r\n\r\n" not in got:
                chunk = self.sock.recv(HEAD_LIMIT)
                if not chunk:
                    raise TransportError(f"{self.what}: connection closed before a response")
                got += chunk
                if len(got) > 2 * HEAD_LIMIT:
                    raise TransportError(f"{self.what}: response head too large")
            end = got.index(b"\r\n\r\n") + 4
            return got[:end], got[end:]

        raw, self.pending = await self._io(read)
        return parse_head(raw, self.what)

    async def small_body(self, head: Head) -> bytes:
        length = min(int(head.headers.get("content-length", "0") or 0), HEAD_LIMIT)

        def read() -> bytes:
            body = self.pending
            while len(body) < length:
                chunk = self.sock.recv(length - len(body))
                if not chunk:
                    break
                body += chunk
            return body[:length]

        try:
            return await self._io(read)
        except AsyncregError:
            return b""

    async def _io(self, fn: Callable[..., _T], *args: object) -> _T:
        try:
            return await anyio.to_thread.run_sync(fn, *args)
        except TimeoutError as exc:
            raise TransportTimeout(f"{self.what}: no progress for a read-stall timeout") from exc
        except OSError as exc:
            raise TransportError(f"{self.what}: connection failed: {exc}") from exc

    def close(self) -> None:
        self.sock.close()


class _Source:
    """The blob's GET on a connection of our own, re-opened with ``Range`` when it breaks."""

    def __init__(self, ep: Endpoint, desc: Descriptor, budget: Budget) -> None:
        self.ep = ep
        self.desc = desc
        self.budget = budget
        self.what = f"blob {ep.name}@{desc.digest}"
        self.conn: _Conn | None = None

    async def open(self, offset: int) -> None:
        self.close()
        url, headers = await blob_request(self.ep, self.desc, offset)
        conn = self.conn = await _Conn.open(self.ep, self.what)
        await conn.send(request_bytes("GET", url, self.ep.host, headers))
        head = await conn.head()
        if is_error(head):
            body = await conn.small_body(head)
            self.close()
            raise answer_error(self.ep, head, body, "GET", url, self.what)
        check_blob_head(head, self.desc, offset, ranged_only=True)

    async def resume(self, offset: int, broke: AsyncregError, *, progressed: bool) -> None:
        """Spend from the budget for ``broke``, then re-open at ``offset`` (until it opens)."""
        await resume_at(self.budget, self.open, offset, broke, progressed, self.what)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _pump(src: _Conn, dst: _Conn, buf: bytearray, limit: int) -> int:
    """Move up to ``limit`` body bytes from ``src`` to ``dst``; fewer when the source ended."""
    moved = 0
    if src.pending:
        first = src.pending[:limit]
        src.pending = src.pending[len(first) :]
        dst.sock.sendall(first)
        moved += len(first)
    view = memoryview(buf)
    while moved < limit:
        try:
            n = src.sock.recv_into(view, min(len(buf), limit - moved))
        except (OSError, ssl.SSLError) as exc:
            if isinstance(exc, TimeoutError):
                raise
            return moved  # broken source: the caller resumes at the exact offset
        if n == 0:
            return moved
        dst.sock.sendall(view[:n])
        moved += n
    return moved


async def tls_relay_blob(
    dst: Endpoint,
    src: Endpoint,
    desc: Descriptor,
    on_bytes: Callable[[int], None],
    budget: Budget,
) -> None:
    """Move ``desc`` from ``src`` to ``dst`` in a worker thread; `StepAside` to decline."""
    if src.plain_http and dst.plain_http:
        raise StepAside("two plain-HTTP hosts: splice does it")
    if dst.chunked or desc.size == 0:
        raise StepAside("chunked upload or empty blob")
    source = _Source(src, desc, budget)
    sink: _Conn | None = None
    upload: Upload | None = None
    try:
        await source.open(0)  # may step aside: nothing was uploaded yet
        upload = await Upload.start(dst, desc, budget)
        t = dst.transport
        if origin(upload.location) != origin(t.base_url(dst.host)):
            raise StepAside("upload location on another origin")
        sep = "&" if "?" in upload.location else "?"
        url = upload.location + sep + urlencode({"digest": str(desc.digest)})
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(desc.size)}
        auth = await t.auth.header(dst.host, dst.push_scopes)
        if auth:
            headers["Authorization"] = auth
        what = f"upload {desc.digest} to {dst.name}"
        sink = await _Conn.open(dst, what)
        await sink.send(request_bytes("PUT", url, dst.host, headers))
        buf = bytearray(_BUFFER)
        moved = failed_at = 0
        while moved < desc.size:
            conn = source.conn
            assert conn is not None
            try:
                n = await sink._io(_pump, conn, sink, buf, min(_STEP, desc.size - moved))
            except TransportError:
                # The target answered early (a 413, a 429) and closed: take its answer.
                early = await _early(sink)
                if early is None:
                    raise
                await _answer(dst, desc, sink, early, url)
                raise
            if n:
                moved += n
                on_bytes(n)
                continue
            broke = TransportError(f"{source.what}: source closed at byte {moved} of {desc.size}")
            await source.resume(moved, broke, progressed=moved > failed_at)
            failed_at = moved
        if moved != desc.size:
            raise SizeMismatchError(f"{what}: moved {moved} of {desc.size}", expected=desc.size)
        head = await sink.head()
        await _answer(dst, desc, sink, head, url)
        upload = None  # accepted: nothing to cancel
    finally:
        source.close()
        if sink is not None:
            sink.close()
        if upload is not None:
            with anyio.CancelScope(shield=True):
                await upload.cancel()


async def _early(sink: _Conn) -> Head | None:
    """The response head already sent on a connection whose request broke, or None."""
    try:
        sink.sock.settimeout(_EARLY_ANSWER_WAIT)
        return await sink.head()
    except (AsyncregError, OSError):
        return None


async def _answer(dst: Endpoint, desc: Descriptor, sink: _Conn, head: Head, url: str) -> None:
    """Return when the PUT was accepted; else raise the registry's error for it."""
    if head.status in (201, 204):
        return
    body = await sink.small_body(head)
    err = answer_error(dst, head, body, "PUT", url, sink.what)
    refused = refused_digest(dst, desc, err)
    if refused is not None:
        raise refused from err
    raise err
