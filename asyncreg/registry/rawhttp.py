"""Just enough HTTP/1.1 on a raw socket to read one registry blob.

The fast paths (the ``splice`` relay, the threaded fetch into a tar) need the
blob's bytes on a socket they own: one ``GET`` with ``Connection: close``, a
known ``Content-Length``, no transfer or content encoding. `RawBlobSource`
opens that GET with the registry's own auth header, reads the response head
exactly (so the socket is left at the first body byte), refuses with
`StepAside` anything it cannot handle exactly (a redirect, a 401, chunked
framing, a size that does not match), and reopens at a byte offset with
``Range`` when a transfer breaks.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import anyio

from ..errors import (
    TransportError,
    TransportTimeout,
)
from ..manifest import Descriptor
from .http import USER_AGENT

if TYPE_CHECKING:
    from .repo import RegistryRepo

__all__ = [
    "RawBlobSource",
    "StepAside",
    "connect",
    "read_head",
    "read_small_body",
    "request_bytes",
    "send_all",
    "wait_socket",
]

_HEAD_LIMIT = 64 * 1024


class StepAside(Exception):
    """The relay cannot do this transfer exactly; use the streaming path."""


@dataclass(frozen=True, slots=True)
class _Head:
    status: int
    headers: dict[str, str]


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


async def read_head(sock: socket.socket, stall: float, what: str) -> _Head:
    """Read a response head exactly (peek, then consume up to the blank line)."""
    got = b""
    while True:
        try:
            peek = sock.recv(_HEAD_LIMIT, socket.MSG_PEEK)
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
        if len(got) > _HEAD_LIMIT:
            raise TransportError(f"{what}: response head larger than {_HEAD_LIMIT} bytes")
    lines = got.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split(" ", 2)[1])
    except (IndexError, ValueError) as exc:
        raise TransportError(f"{what}: malformed status line {lines[0][:100]!r}") from exc
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
    return _Head(status, headers)


async def read_small_body(sock: socket.socket, head: _Head, stall: float, what: str) -> bytes:
    length = int(head.headers.get("content-length", "0") or 0)
    body = b""
    while len(body) < min(length, _HEAD_LIMIT):
        try:
            chunk = sock.recv(min(length, _HEAD_LIMIT) - len(body))
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


class RawBlobSource:
    """The source blob's GET, reopened with ``Range`` when it breaks."""

    def __init__(self, repo: RegistryRepo, desc: Descriptor, stall: float) -> None:
        self.repo = repo
        self.desc = desc
        self.stall = stall
        self.what = f"blob {repo.name}@{desc.digest}"
        self.sock: socket.socket | None = None

    async def open(self, offset: int) -> None:
        """Connect and read the head; position the socket at byte ``offset`` of the body."""
        self.close()
        t = self.repo.transport
        await t.ping(self.repo.host)
        url = t.base_url(self.repo.host) + f"/v2/{self.repo.name}/blobs/{self.desc.digest}"
        headers = {"Accept-Encoding": "identity"}
        auth = await t.auth.header(self.repo.host, self.repo.pull_scopes)
        if auth:
            headers["Authorization"] = auth
        if offset:
            headers["Range"] = f"bytes={offset}-"
        sock = await connect(self.repo.host, self.stall, self.what)
        self.sock = sock
        await send_all(
            sock, request_bytes("GET", url, self.repo.host, headers), self.stall, self.what
        )
        head = await read_head(sock, self.stall, self.what)
        h = head.headers
        plain = h.get("transfer-encoding") is None and h.get("content-encoding", "identity") in (
            "identity",
            "",
        )
        want = self.desc.size - offset if head.status == 206 else self.desc.size
        if head.status not in (200, 206) or not plain or h.get("content-length") != str(want):
            raise StepAside(f"source answered {head.status}")
        if head.status == 200 and offset:
            await self._discard(offset)

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
        if self.sock is not None:
            self.sock.close()
            self.sock = None
