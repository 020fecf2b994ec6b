"""A scriptable, fault-injecting HTTP reverse proxy to put in front of a real registry.

asyncreg has to survive registries and networks that misbehave: 503 storms,
429 with ``Retry-After``, connections cut in the middle of a blob, bodies that
do not hash to their digest, lying ``Content-Length`` headers, slow links,
servers that ignore ``Range``. Faking a registry to produce those would test
our *idea* of a registry, so the tests run a real one (CNCF distribution) and
put `FaultProxy` in front of it: every request is forwarded unchanged unless a
`Rule` says otherwise, and every request is logged so a test can assert how
many attempts, resumes or HEADs the client made.

Forwarding streams in both directions (an upload may be hundreds of MiB and a
test measuring memory must not see the proxy hold it), keeps status, headers
and byte-exact bodies (no decompression, no redirect following) and rewrites
``Location`` headers that point at the upstream so the client keeps talking to
the proxy (distribution answers upload requests with absolute URLs).

The forwarding code is the public function `forward`, shared with
`asyncreg.testkit.tokenauth`, and `LoopbackServer` is the common base of the
test servers (start on a free loopback port in the running event loop).

Everything runs in the caller's event loop: use the servers as async context
managers inside the test.

Either side may speak TLS: a server given an ``ssl_context`` serves HTTPS
(`LoopbackTLS` issues a throw-away CA and a loopback certificate for it), and
`FaultProxy` trusts the CA file ``upstream_ca_file`` when its upstream is an
HTTPS registry, so faults can be injected between a client and a TLS registry.
"""

from __future__ import annotations

import asyncio
import os
import re
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy
from yarl import URL

__all__ = [
    "CHUNK_SIZE",
    "HOP_BY_HOP_HEADERS",
    "Action",
    "Corrupt",
    "Delay",
    "Drop",
    "DropBodyAfter",
    "FaultProxy",
    "ForwardOptions",
    "IgnoreRange",
    "LieLength",
    "LoopbackServer",
    "LoopbackTLS",
    "RecordedRequest",
    "Rewrite",
    "Rule",
    "Status",
    "Throttle",
    "abort_connection",
    "forward",
    "upstream_session",
]

#: Bytes read from one side and written to the other at a time when streaming.
CHUNK_SIZE = 64 * 1024

#: Headers that describe one connection, not the message (RFC 9110 7.6.1): never forwarded.
HOP_BY_HOP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)

# Request headers the proxy sets itself: Host names the upstream; aiohttp's
# server already answered any ``Expect: 100-continue``.
_REQUEST_SKIP = HOP_BY_HOP_HEADERS | {"host", "expect"}
# Content-Length of a response is set explicitly, since rules may change the body.
_RESPONSE_SKIP = HOP_BY_HOP_HEADERS | {"content-length"}


# --- actions -----------------------------------------------------------------------


@dataclass(frozen=True)
class Status:
    """Answer with this status, headers and body without contacting the upstream.

    For 5xx storms, ``429`` with ``Retry-After``, spurious ``404`` and the like.
    """

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True)
class Drop:
    """Close the connection without sending any answer (a crashed or reset server)."""


@dataclass(frozen=True)
class DropBodyAfter:
    """Forward, send the headers and the first ``nbytes`` of the body, then cut the connection.

    The client sees a short body: ``ClientPayloadError`` in aiohttp. This is
    what resumable downloads and upload retries are tested with.
    """

    nbytes: int


@dataclass(frozen=True)
class Corrupt:
    """Flip (XOR 0xFF) the response body byte at ``offset``; the length stays right.

    Digest verification must catch this: nothing else about the answer is wrong.
    """

    offset: int


@dataclass(frozen=True)
class LieLength:
    """Announce a ``Content-Length`` ``extra`` bytes larger than the body, send it, then close.

    The client waits for bytes that never come and then sees the connection
    end: a short read that must not be taken for a complete blob.
    """

    extra: int


@dataclass(frozen=True)
class Delay:
    """Wait ``seconds`` before doing anything else (timeouts, ordering of concurrent requests)."""

    seconds: float


@dataclass(frozen=True)
class Throttle:
    """Stream the response body, and the request body of uploads, at ``bytes_per_second``.

    Makes transfers slow enough to observe progress, cancellation and read timeouts.
    """

    bytes_per_second: int

    def __post_init__(self) -> None:
        if self.bytes_per_second <= 0:
            raise ValueError("Throttle needs a positive bytes_per_second")


@dataclass(frozen=True)
class Rewrite:
    """Transform the response: ``fn`` gets the whole (buffered) body, ``headers`` override headers.

    A header mapped to None is removed. ``Content-Length`` follows the new body
    unless ``headers`` sets it. Used for paging a tag list, malformed ``Link``
    headers, oversized manifests, wrong ``Docker-Content-Digest`` and such.
    """

    fn: Callable[[bytes], bytes] | None = None
    headers: Mapping[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class IgnoreRange:
    """Strip ``Range`` (and ``If-Range``) from the request: the upstream answers 200 with all bytes.

    A client resuming a download must notice it got the whole body, not the tail.
    """


Action = (
    Status | Drop | DropBodyAfter | Corrupt | LieLength | Delay | Throttle | Rewrite | IgnoreRange
)


@dataclass(eq=False)
class Rule:
    """When to apply an `Action`: which requests, and which of the matching ones.

    A request matches when ``method`` (case-insensitive) equals its method and
    ``path`` (a regular expression, `re.search`) is found in its path; None
    matches anything. Of the matching requests, the first ``after`` are let
    through, then the action applies to the next ``times`` (None: all of them).
    ``matched`` and ``applied`` count what happened, for assertions.

    Every rule whose window is open applies to a request, in the order the
    rules were added, so faults combine (``Delay`` then ``Corrupt``); of
    `Status` and `Drop`, which end a request, the first wins.
    """

    action: Action
    _: KW_ONLY
    method: str | None = None
    path: str | None = None
    times: int | None = None
    after: int = 0
    matched: int = field(default=0, init=False)
    applied: int = field(default=0, init=False)

    def matches(self, method: str, path: str) -> bool:
        """Whether a request with this method and path is one this rule is about."""
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return self.path is None or re.search(self.path, path) is not None

    @property
    def exhausted(self) -> bool:
        """True once the rule has applied ``times`` times and never will again."""
        return self.times is not None and self.applied >= self.times

    def _take(self, method: str, path: str) -> bool:
        """Count a request; True when the action applies to it."""
        if not self.matches(method, path):
            return False
        self.matched += 1
        if self.matched <= self.after or self.exhausted:
            return False
        self.applied += 1
        return True


@dataclass
class RecordedRequest:
    """One request as the proxy saw it, and what it answered.

    ``status`` is the status line sent, None while none has been sent (in
    flight, or `Drop`); ``actions`` names the rule actions applied to it.
    ``at`` is `time.monotonic` when the request arrived, ``answered_at`` when
    its status line was about to be sent (None like ``status``), so tests can
    check what a client did while it was told to wait.
    """

    method: str
    path: str
    query: MultiDictProxy[str]
    query_string: str
    headers: CIMultiDictProxy[str]
    status: int | None = None
    actions: tuple[str, ...] = ()
    at: float = field(default_factory=time.monotonic)
    answered_at: float | None = None


_RECORD_KEY = web.RequestKey("asyncreg_fault_record", RecordedRequest)


# --- streaming, shared with tokenauth -------------------------------------------------


@dataclass
class ForwardOptions:
    """How `forward` alters one request and its answer (what the fault rules compile to).

    ``query`` replaces the query string; ``drop_request_headers`` are not sent
    upstream (e.g. ``Authorization``); the rest mirror the `Action` classes.
    """

    query: Mapping[str, str] | MultiDict[str] | None = None
    drop_request_headers: Iterable[str] = ()
    strip_range: bool = False
    request_bytes_per_second: int | None = None
    response_bytes_per_second: int | None = None
    corrupt_offsets: tuple[int, ...] = ()
    truncate_after: int | None = None
    extra_length: int = 0
    rewrites: tuple[Rewrite, ...] = ()


def upstream_session(ca_file: str | os.PathLike[str] | None = None) -> aiohttp.ClientSession:
    """A client session for forwarding: byte-exact, no cookies, no added headers, no timeout.

    No ``auto_decompress`` (bodies must reach the client as the registry sent
    them), no default ``Accept``/``User-Agent``/``Content-Type`` (the upstream
    must see the client's headers, not aiohttp's) and no total timeout (a
    throttled 64 MiB upload is allowed to take its time). ``ca_file`` is a PEM
    CA bundle to trust (verified TLS to an HTTPS upstream signed by a test CA);
    without it the system's trust store applies.
    """
    connector = (
        aiohttp.TCPConnector(limit=0)
        if ca_file is None
        else aiohttp.TCPConnector(limit=0, ssl=ssl.create_default_context(cafile=str(ca_file)))
    )
    return aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=10.0),
    )


def abort_connection(request: web.BaseRequest, response: web.StreamResponse | None = None) -> None:
    """Close the client connection now; bytes already written are still flushed.

    The response (if any) is marked not to be kept alive so aiohttp does not
    try to reuse the connection; whatever the handler returns afterwards fails
    to write, which aiohttp treats as a client disconnect and does not log.
    """
    if response is not None:
        response.force_close()
    request.protocol.force_close()


class _Pacer:
    """Sleeps so that the bytes accounted so far take ``bytes_per_second`` overall."""

    def __init__(self, bytes_per_second: int) -> None:
        self._rate = bytes_per_second
        self._start = time.monotonic()
        self._sent = 0

    @staticmethod
    def chunk_size(bytes_per_second: int) -> int:
        """About ten chunks a second, so a throttled stream flows rather than jumps."""
        return max(1, min(CHUNK_SIZE, bytes_per_second // 10))

    async def account(self, nbytes: int) -> None:
        self._sent += nbytes
        delay = self._start + self._sent / self._rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


async def _request_body(
    request: web.BaseRequest, bytes_per_second: int | None
) -> AsyncIterator[bytes]:
    """The client's request body as it arrives, optionally paced; never buffered whole."""
    if bytes_per_second is None:
        async for chunk in request.content.iter_chunked(CHUNK_SIZE):
            yield chunk
        return
    pacer = _Pacer(bytes_per_second)
    async for chunk in request.content.iter_chunked(_Pacer.chunk_size(bytes_per_second)):
        yield chunk
        await pacer.account(len(chunk))


def _target_url(
    upstream: URL, request: web.BaseRequest, query: Mapping[str, str] | MultiDict[str] | None
) -> URL:
    """The upstream URL for ``request``, keeping the path and query exactly as sent."""
    raw = f"{upstream}{request.rel_url.raw_path}"
    if query is None:
        qs = request.rel_url.raw_query_string
        return URL(f"{raw}?{qs}" if qs else raw, encoded=True)
    return URL(raw, encoded=True).with_query(list(query.items()))


def _rewrite_location(value: str, upstream: URL, public: URL) -> str:
    """Point an absolute ``Location`` at the upstream to the same path on ``public``."""
    try:
        loc = URL(value)
        if not loc.absolute or loc.origin() != upstream:
            return value
    except ValueError:
        return value
    rest = loc.raw_path
    if loc.raw_query_string:
        rest += "?" + loc.raw_query_string
    if loc.raw_fragment:
        rest += "#" + loc.raw_fragment
    return f"{public}{rest}"


def _flip(chunk: bytes, position: int, offsets: Iterable[int]) -> bytes:
    """XOR 0xFF the bytes of ``chunk`` (which starts at ``position``) at the given offsets."""
    hits = [o - position for o in offsets if position <= o < position + len(chunk)]
    if not hits:
        return chunk
    buf = bytearray(chunk)
    for i in hits:
        buf[i] ^= 0xFF
    return bytes(buf)


async def _pieces(body: bytes, size: int) -> AsyncIterator[bytes]:
    """A buffered body in ``size`` pieces, so it is paced and cut like a streamed one."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


async def forward(
    request: web.BaseRequest,
    session: aiohttp.ClientSession,
    upstream: str | URL,
    *,
    public_origin: str | URL | None = None,
    options: ForwardOptions | None = None,
) -> web.StreamResponse:
    """Forward ``request`` to the origin ``upstream`` and stream the answer back.

    Both bodies are streamed in `CHUNK_SIZE` pieces with back-pressure, so
    memory use does not grow with their size (only a `Rewrite` with a body
    function, or `LieLength` on an answer without ``Content-Length``, buffers
    the response). Hop-by-hop headers are dropped, everything else is kept, a
    ``Location`` on the upstream origin is moved to ``public_origin`` (default:
    the origin the client used). An unreachable upstream gives 502; an upstream
    that breaks off mid-body makes the client connection break off too.
    """
    opts = options or ForwardOptions()
    origin = URL(str(upstream)).origin()
    public = (
        URL(str(public_origin)).origin()
        if public_origin is not None
        else URL(f"{request.scheme}://{request.host}")
    )
    drop = {h.lower() for h in opts.drop_request_headers} | _REQUEST_SKIP
    if opts.strip_range:
        drop |= {"range", "if-range"}
    headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in drop)
    data = _request_body(request, opts.request_bytes_per_second) if request.body_exists else None
    try:
        upstream_resp = await session.request(
            request.method,
            _target_url(origin, request, opts.query),
            headers=headers,
            data=data,
            allow_redirects=False,
            auto_decompress=False,
        )
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return web.Response(status=502, text=f"upstream {origin} failed: {exc!r}\n")
    try:
        return await _relay(request, upstream_resp, origin, public, opts)
    finally:
        # Returns a fully read connection to the pool; closes one with unread bytes.
        upstream_resp.release()


async def _relay(
    request: web.BaseRequest,
    up: aiohttp.ClientResponse,
    origin: URL,
    public: URL,
    opts: ForwardOptions,
) -> web.StreamResponse:
    """Copy the upstream answer to the client, applying the response-side faults."""
    resp = web.StreamResponse(status=up.status, reason=up.reason)
    for name, value in up.headers.items():
        lower = name.lower()
        if lower in _RESPONSE_SKIP:
            continue
        if lower == "location":
            value = _rewrite_location(value, origin, public)
        resp.headers.add(name, value)

    is_head = request.method == "HEAD"
    body: bytes | None = None
    length = up.content_length
    fns = [r.fn for r in opts.rewrites if r.fn is not None]
    try:
        if not is_head and (fns or (opts.extra_length and length is None)):
            body = await up.read()
            for fn in fns:
                body = fn(body)
            length = len(body)
    except (aiohttp.ClientError, TimeoutError):
        abort_connection(request)
        return resp
    if length is not None:
        resp.content_length = length + opts.extra_length
    for rewrite in opts.rewrites:
        for name, override in rewrite.headers.items():
            if override is None:
                resp.headers.popall(name, None)
            else:
                resp.headers[name] = override
    if opts.extra_length or opts.truncate_after is not None:
        resp.force_close()

    try:
        await resp.prepare(request)
        if is_head:
            return resp
        rate = opts.response_bytes_per_second
        size = _Pacer.chunk_size(rate) if rate is not None else CHUNK_SIZE
        pacer = _Pacer(rate) if rate is not None else None
        chunks = _pieces(body, size) if body is not None else up.content.iter_chunked(size)
        position = 0
        cut = opts.truncate_after
        async for piece in chunks:
            chunk = _flip(piece, position, opts.corrupt_offsets)
            if cut is not None and position + len(chunk) >= cut:
                await resp.write(chunk[: cut - position])
                abort_connection(request, resp)
                return resp
            await resp.write(chunk)
            position += len(chunk)
            if pacer is not None:
                await pacer.account(len(chunk))
        if cut is not None:
            # The body was shorter than the cut: still end the connection abruptly.
            abort_connection(request, resp)
    except ConnectionError:
        # The client went away (aiohttp stays quiet about that); make sure the
        # connection is not kept waiting for the rest of a Content-Length.
        abort_connection(request, resp)
    except (aiohttp.ClientError, TimeoutError):
        # The upstream broke off mid-body: pass the breakage on rather than end cleanly.
        abort_connection(request, resp)
    return resp


# --- servers ---------------------------------------------------------------------------


class LoopbackTLS:
    """A throw-away CA (from ``trustme``) and a server certificate it signed.

    The certificate names the loopback addresses (``127.0.0.1``, ``127.0.0.2``
    and ``localhost`` unless ``names`` says otherwise). Give `server_context`
    to a `LoopbackServer` and `write_ca` (or `client_context`) to the client.
    """

    def __init__(self, names: Iterable[str] = ("127.0.0.1", "127.0.0.2", "localhost")) -> None:
        import trustme

        self._ca = trustme.CA()
        self._cert = self._ca.issue_cert(*names)

    @property
    def ca_pem(self) -> bytes:
        """The CA certificate, PEM."""
        return bytes(self._ca.cert_pem.bytes())

    def write_ca(self, path: str | os.PathLike[str]) -> Path:
        """Write the CA certificate (PEM) to ``path`` and return it, for ``ca_file=`` settings."""
        out = Path(path)
        out.write_bytes(self.ca_pem)
        return out

    def server_context(self) -> ssl.SSLContext:
        """A server-side context presenting the certificate."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._cert.configure_cert(context)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A client-side context trusting the CA (hostnames verified)."""
        context = ssl.create_default_context()
        self._ca.configure_trust(context)
        return context


class LoopbackServer:
    """An aiohttp application on a loopback address and a free port, in the running loop.

    Subclasses build the application in `_make_app`. Start with ``async with``
    (or `start`/`stop`); `url` and `host` are known once started. Handlers are
    cancelled when their client disconnects (a proxy must stop forwarding an
    upload the client gave up on), and shutdown waits at most a second for
    requests still in flight (a throttled transfer must not hold up a test).
    With an ``ssl_context`` the server speaks HTTPS and `url` says so.
    """

    def __init__(
        self, bind_host: str = "127.0.0.1", *, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.bind_host = bind_host
        self.ssl_context = ssl_context
        self._runner: web.AppRunner | None = None
        self._port = 0

    def _make_app(self) -> web.Application:
        raise NotImplementedError

    async def _on_start(self) -> None:
        """Hook run before the server accepts connections."""

    async def _on_stop(self) -> None:
        """Hook run after the server stopped."""

    @property
    def port(self) -> int:
        """The TCP port the server listens on."""
        if self._runner is None:
            raise RuntimeError(f"{type(self).__name__} is not running")
        return self._port

    @property
    def host(self) -> str:
        """``ADDRESS:PORT``: the registry part of an image reference."""
        return f"{self.bind_host}:{self.port}"

    @property
    def scheme(self) -> str:
        """``https`` when serving TLS, else ``http``."""
        return "https" if self.ssl_context is not None else "http"

    @property
    def url(self) -> str:
        """``http://ADDRESS:PORT`` (``https://`` with TLS) without a trailing slash."""
        return f"{self.scheme}://{self.host}"

    async def start(self) -> Self:
        """Start listening; idempotent."""
        if self._runner is not None:
            return self
        await self._on_start()
        runner = web.AppRunner(
            self._make_app(),
            access_log=None,
            auto_decompress=False,
            handler_cancellation=True,
            shutdown_timeout=1.0,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.bind_host, 0, ssl_context=self.ssl_context)
            await site.start()
            self._port = int(runner.addresses[0][1])
        except BaseException:
            await runner.cleanup()
            await self._on_stop()
            raise
        self._runner = runner
        return self

    async def stop(self) -> None:
        """Stop listening and close connections; idempotent."""
        runner, self._runner = self._runner, None
        if runner is not None:
            try:
                await runner.cleanup()
            finally:
                await self._on_stop()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class FaultProxy(LoopbackServer):
    """Reverse proxy on 127.0.0.1 in front of ``upstream`` that injects faults by `Rule`.

    Without rules it is transparent. ``requests`` logs every request in
    arrival order (added when the request arrives, ``status`` filled in when
    answered), so tests assert on retries and resumes with `count`.

    ``ssl_context`` makes the proxy itself serve HTTPS (see `LoopbackTLS`);
    ``upstream_ca_file`` is the CA to trust for an ``https://`` upstream (such
    as `RegistryProcess.ca_pem`).
    """

    def __init__(
        self,
        upstream: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        upstream_ca_file: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__("127.0.0.1", ssl_context=ssl_context)
        self.upstream = str(URL(upstream).origin())
        self.upstream_ca_file = upstream_ca_file
        self.requests: list[RecordedRequest] = []
        self.rules: list[Rule] = []
        self._session: aiohttp.ClientSession | None = None

    def add_rule(self, rule: Rule) -> Rule:
        """Append ``rule`` (it applies after those added before) and return it."""
        self.rules.append(rule)
        return rule

    def clear_rules(self) -> None:
        """Remove all rules: the proxy is transparent again."""
        self.rules.clear()

    def reset_log(self) -> None:
        """Forget the requests logged so far."""
        self.requests.clear()

    def count(self, method: str | None = None, path_regex: str | None = None) -> int:
        """How many logged requests have ``method`` and a path where ``path_regex`` is found."""
        pattern = re.compile(path_regex) if path_regex is not None else None
        return sum(
            1
            for r in self.requests
            if (method is None or r.method.upper() == method.upper())
            and (pattern is None or pattern.search(r.path))
        )

    def _make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        app.on_response_prepare.append(self._on_prepare)
        return app

    @staticmethod
    async def _on_prepare(request: web.Request, response: web.StreamResponse) -> None:
        # The status line is about to be sent: record it even if the client
        # then disconnects and the handler is cancelled mid-body.
        record = request.get(_RECORD_KEY)
        if record is not None:
            record.status = response.status
            record.answered_at = time.monotonic()

    async def _on_start(self) -> None:
        self._session = upstream_session(self.upstream_ca_file)

    async def _on_stop(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        arrived = time.monotonic()
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            query=MultiDictProxy(MultiDict(request.query)),
            query_string=request.query_string,
            headers=CIMultiDictProxy(CIMultiDict(request.headers)),
            at=arrived,
        )
        self.requests.append(record)
        request[_RECORD_KEY] = record
        actions = [r.action for r in list(self.rules) if r._take(request.method, request.path)]
        record.actions = tuple(type(a).__name__ for a in actions)

        opts = ForwardOptions()
        final: Status | Drop | None = None
        for action in actions:
            match action:
                case Delay(seconds=seconds):
                    await asyncio.sleep(seconds)
                case Status() | Drop():
                    final = final or action
                case DropBodyAfter(nbytes=nbytes):
                    cut = opts.truncate_after
                    opts.truncate_after = nbytes if cut is None else min(cut, nbytes)
                case Corrupt(offset=offset):
                    opts.corrupt_offsets += (offset,)
                case LieLength(extra=extra):
                    opts.extra_length += extra
                case Throttle(bytes_per_second=rate):
                    opts.request_bytes_per_second = rate
                    opts.response_bytes_per_second = rate
                case Rewrite():
                    opts.rewrites += (action,)
                case IgnoreRange():
                    opts.strip_range = True

        if isinstance(final, Status):
            return web.Response(status=final.status, headers=final.headers, body=final.body)
        if isinstance(final, Drop):
            del request[_RECORD_KEY]  # no status line goes out
            abort_connection(request)
            return web.Response()
        assert self._session is not None, "proxy not started"
        return await forward(
            request, self._session, self.upstream, public_origin=self.url, options=opts
        )
