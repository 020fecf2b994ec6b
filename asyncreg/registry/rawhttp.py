"""Just enough HTTP/1.1 on a raw socket to read one registry blob.

The fast paths (the ``splice`` relay, the threaded fetch into a tar) need the
blob's bytes on a socket they own: one ``GET`` with ``Connection: close``, a
known ``Content-Length``, no transfer or content encoding. `RawBlobSource`
opens that GET with the registry's own auth header, reads the response head
exactly (so the socket is left at the first body byte), refuses with
`StepAside` anything it cannot handle exactly (a redirect, a 401, chunked
framing, a size that does not match), and reopens at a byte offset with
``Range`` when a transfer breaks.

These sockets obey the same rules as the aiohttp transport: nothing is sent
to a host while it is paused, every error answer goes through
`Transport.note_answer` (so a 429 here pauses the host for every task) and
becomes the same `RegistryError` the transport would raise, and a resume
spends from the blob's `Budget`.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import anyio
from multidict import CIMultiDict

from ..budget import Budget
from ..errors import AsyncregError, RegistryError, TransportError, TransportTimeout
from ..manifest import Descriptor
from .answers import error_from_answer
from .endpoint import Endpoint
from .http import USER_AGENT

__all__ = [
    "Head",
    "answer_error",
    "blob_request",
    "check_blob_head",
    "is_error",
    "resume_at",
    "HEAD_LIMIT",
    "RawBlobSource",
    "StepAside",
    "connect",
    "parse_head",
    "read_head",
    "read_small_body",
    "request_bytes",
    "send_all",
    "wait_socket",
]

HEAD_LIMIT = 64 * 1024


class StepAside(Exception):
    """The relay cannot do this transfer exactly; use the streaming path."""


@dataclass(frozen=True, slots=True)
class Head:
    status: int
    headers: CIMultiDict[str]


async def wait_socket(sock: socket.socket, *, write: bool, stall: float, what: str) -> None:
    try:
        with anyio.fail_after(stall):
            if write:
                await anyio.wait_writable(sock)
            else:
                await anyio.wait_readable(sock)
    except TimeoutError as exc:
        raise TransportTimeout(f"{what}: no progress for {stall:.0f}s") from exc


async def connect(host: str, stall: float, what: str) -> socket.socket:
    parts = urlsplit(f"//{host}")
    name, port = parts.hostname or "", parts.port or 80
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(name, port, type=socket.SOCK_STREAM)
        family, kind, proto, _, addr = infos[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise TransportError(f"{what}: cannot resolve {host}: {exc}") from exc
    sock.setblocking(False)
    try:
        with anyio.fail_after(stall):
            await loop.sock_connect(sock, addr)
    except TimeoutError as exc:
        sock.close()
        raise TransportTimeout(f"{what}: connecting to {host} timed out") from exc
    except OSError as exc:
        sock.close()
        raise TransportError(f"{what}: connection to {host} failed: {exc}") from exc
    return sock


async def send_all(sock: socket.socket, data: bytes, stall: float, what: str) -> None:
    view = memoryview(data)
    while view:
        try:
            n = sock.send(view)
        except BlockingIOError:
            await wait_socket(sock, write=True, stall=stall, what=what)
            continue
        except OSError as exc:
            raise TransportError(f"{what}: send failed: {exc}") from exc
        view = view[n:]


async def read_head(sock: socket.socket, stall: float, what: str) -> Head:
    """Read a response head exactly (peek, then consume up to the blank line)."""
    got = b""
    while True:
        try:
            peek = sock.recv(HEAD_LIMIT, socket.MSG_PEEK)
        except BlockingIOError:
            await wait_socket(sock, write=False, stall=stall, what=what)
            continue
        except OSError as exc:
            raise TransportError(f"{what}: receive failed: {exc}") from exc
        if not peek:
            raise TransportError(f"{what}: connection closed before a response")
        end = (got + peek).find(b"\r\n\r\n")
        if end >= 0:
            got += sock.recv(end + 4 - len(got))
            break
        got += sock.recv(len(peek))
        if len(got) > HEAD_LIMIT:
            raise TransportError(f"{what}: response head larger than {HEAD_LIMIT} bytes")
    return parse_head(got, what)


def parse_head(got: bytes, what: str) -> Head:
    """A response head (status line and header fields, RFC 9112 section 2.1) as a `Head`."""
    lines = got.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split(" ", 2)[1])
    except (IndexError, ValueError) as exc:
        raise TransportError(f"{what}: malformed status line {lines[0][:100]!r}") from exc
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines[1:]:
        if ":" in line:
            key, _, value = line.partition(":")
            headers.add(key.strip(), value.strip())
    return Head(status, headers)


async def read_small_body(sock: socket.socket, head: Head, stall: float, what: str) -> bytes:
    length = int(head.headers.get("content-length", "0") or 0)
    body = b""
    while len(body) < min(length, HEAD_LIMIT):
        try:
            chunk = sock.recv(min(length, HEAD_LIMIT) - len(body))
        except BlockingIOError:
            await wait_socket(sock, write=False, stall=stall, what=what)
            continue
        except OSError:
            break
        if not chunk:
            break
        body += chunk
    return body


def request_bytes(method: str, url: str, host: str, headers: dict[str, str]) -> bytes:
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", f"User-Agent: {USER_AGENT}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines += ["Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1")


async def blob_request(ep: Endpoint, desc: Descriptor, offset: int) -> tuple[str, dict[str, str]]:
    """URL and headers of a raw blob GET (distribution-spec end-2), ``Range`` from ``offset``."""
    t = ep.transport
    await t.ping(ep.host)
    headers = {"Accept-Encoding": "identity"}
    auth = await t.auth.header(ep.host, ep.pull_scopes)
    if auth:
        headers["Authorization"] = auth
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return ep.url(f"/v2/{ep.name}/blobs/{desc.digest}"), headers


def is_error(head: Head) -> bool:
    """An error answer the transport would raise (a 401 is left to the aiohttp path's auth)."""
    return head.status >= 400 and head.status != 401


def answer_error(
    ep: Endpoint, head: Head, body: bytes, method: str, url: str, what: str
) -> RegistryError:
    """The registry's error for ``head``, after the host was paused if it asked for that."""
    ep.transport.note_answer(ep.host, head.status, head.headers)
    return error_from_answer(head.status, head.headers, body, method=method, url=url, what=what)


def check_blob_head(head: Head, desc: Descriptor, offset: int, *, ranged_only: bool) -> None:
    """`StepAside` unless the answer is the blob from ``offset`` in plain framing.

    ``ranged_only``: a 200 to a ranged request (the whole blob again) is refused
    too, for readers that cannot skip bytes cheaply.
    """
    h = head.headers
    plain = h.get("transfer-encoding") is None and h.get("content-encoding", "identity") in (
        "identity",
        "",
    )
    if ranged_only and offset and head.status != 206:
        raise StepAside(f"source ignored Range (answered {head.status})")
    want = desc.size - offset if head.status == 206 else desc.size
    if head.status not in (200, 206) or not plain or h.get("content-length") != str(want):
        raise StepAside(f"source answered {head.status}")


async def resume_at(
    budget: Budget,
    reopen: Callable[[int], Awaitable[None]],
    offset: int,
    broke: AsyncregError,
    progressed: bool,
    what: str,
) -> None:
    """Spend from ``budget`` for ``broke``, then ``reopen(offset)``, until it opens.

    A source that will no longer serve the raw GET in the middle of a transfer
    (a redirect or a challenge now) cannot hand over to another path with
    bytes already sent: that is a failure of this try.
    """
    while True:
        await budget.spend(broke, progressed=progressed)
        try:
            await reopen(offset)
            return
        except StepAside as exc:
            raise TransportError(f"{what}: resume refused ({exc})") from exc
        except AsyncregError as exc:
            broke, progressed = exc, False


class RawBlobSource:
    """The source blob's GET, reopened with ``Range`` when it breaks."""

    def __init__(self, ep: Endpoint, desc: Descriptor, budget: Budget) -> None:
        self.ep = ep
        self.desc = desc
        self.budget = budget
        self.stall = ep.transport.limits.timeouts.read_stall
        self.what = f"blob {ep.name}@{desc.digest}"
        self.sock: socket.socket | None = None

    async def open(self, offset: int) -> None:
        """Connect and read the head; position the socket at byte ``offset`` of the body.

        `StepAside` for what only the aiohttp path can do (a redirect, a 401
        challenge, other framing); the registry's error for an error answer.
        """
        self.close()
        ep = self.ep
        await ep.transport.pauses.wait(ep.host)
        url, headers = await blob_request(ep, self.desc, offset)
        sock = await connect(ep.host, self.stall, self.what)
        self.sock = sock
        await send_all(sock, request_bytes("GET", url, ep.host, headers), self.stall, self.what)
        head = await read_head(sock, self.stall, self.what)
        if is_error(head):
            body = await read_small_body(sock, head, self.stall, self.what)
            self.close()
            raise answer_error(ep, head, body, "GET", url, self.what)
        check_blob_head(head, self.desc, offset, ranged_only=False)
        if head.status == 200 and offset:
            await self._discard(offset)

    async def resume(self, offset: int, broke: AsyncregError, *, progressed: bool) -> None:
        """Spend from the budget for ``broke``, then re-open at ``offset`` (until it opens).

        A source that will no longer serve the raw GET in the middle of a
        transfer (a redirect or a challenge now) cannot hand over to another
        path with bytes already sent: that is a final failure of this try.
        """
        await resume_at(self.budget, self.open, offset, broke, progressed, self.what)

    async def _discard(self, n: int) -> None:
        sock = self.sock
        assert sock is not None
        while n:
            try:
                chunk = sock.recv(min(n, 1024 * 1024))
            except BlockingIOError:
                await wait_socket(sock, write=False, stall=self.stall, what=self.what)
                continue
            if not chunk:
                raise TransportError(f"{self.what}: source closed while skipping to the offset")
            n -= len(chunk)

    def close(self) -> None:
        """Close the socket (idempotent)."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
