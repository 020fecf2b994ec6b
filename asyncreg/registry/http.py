"""One HTTP transport per client: auth, redirects, retries and error translation.

Every request to a registry goes through `Transport.request`, which layers,
in this order:

1. the host's scheme and TLS settings (`HostConfig`): plain HTTP and "skip TLS
   verification" are separate choices; loopback defaults to plain HTTP;
2. authentication (`Authenticator`): the ``Authorization`` header is attached
   only while the URL is on the registry's own origin;
3. redirects, followed here (at most 10) rather than by aiohttp, so that a
   redirect to object storage never carries our credentials and an
   https-to-http downgrade is refused;
4. retries of replayable requests on connection errors, 408, 429 and 5xx,
   spending from the caller's `Budget` (one per blob, so retries never nest)
   or a fresh one per request; a 429, or a 503 with ``Retry-After``, pauses
   the whole host (`HostPauses`), and nothing is sent to a paused host;
5. translation: aiohttp exceptions become `TransportError` /
   `TransportTimeout`, error answers become `RegistryError` subclasses. No
   aiohttp exception leaves this module or `body`.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterable, AsyncIterator, Collection, Mapping, Sequence
from urllib.parse import urljoin, urlsplit

import aiohttp
import anyio

from ..auth.credentials import CredentialProvider
from ..auth.scope import Scope
from ..budget import Budget, HostPauses
from ..config import HostConfig, Limits
from ..errors import (
    AsyncregError,
    AuthError,
    RegistryError,
    TransportError,
    TransportTimeout,
)
from ..tally import Tally, note
from .answers import error_from_answer
from .authn import Authenticator
from .retry import parse_retry_after

__all__ = ["USER_AGENT", "Body", "Transport", "iter_body", "origin", "read_limited", "translate"]

USER_AGENT = "asyncreg/0.1"
MAX_REDIRECTS = 10
_ERROR_BODY_LIMIT = 64 * 1024

#: A request body: bytes can be replayed, a stream cannot.
Body = bytes | AsyncIterable[bytes] | None


def translate(exc: BaseException, what: str) -> AsyncregError:
    """Map an aiohttp / socket exception to asyncreg's tree (one boundary)."""
    if isinstance(exc, AsyncregError):
        return exc
    if isinstance(exc, TimeoutError):
        return TransportTimeout(f"{what}: timed out ({exc.__class__.__name__})")
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | ssl.SSLCertVerificationError):
        return TransportError(
            f"{what}: TLS certificate verification failed: {exc}", retryable=False
        )
    if isinstance(exc, aiohttp.ClientSSLError | ssl.SSLError):
        return TransportError(f"{what}: TLS error: {exc}", retryable=False)
    if isinstance(exc, aiohttp.InvalidURL):
        return TransportError(f"{what}: invalid URL {exc}", retryable=False)
    detail = str(exc) or exc.__class__.__name__
    return TransportError(f"{what}: connection failed: {detail}")


async def read_limited(resp: aiohttp.ClientResponse, limit: int, what: str) -> bytes:
    """Read a whole body, refusing (before reading it all) one larger than ``limit``."""
    length = resp.content_length
    if length is not None and length > limit:
        raise RegistryError(f"{what}: body of {length} bytes exceeds the {limit}-byte cap")
    data = bytearray()
    try:
        # read(n) returns what has arrived (up to n bytes), not n bytes: loop to the end.
        while len(data) <= limit:
            chunk = await resp.content.read(limit + 1 - len(data))
            if not chunk:
                break
            data += chunk
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise translate(exc, what) from exc
    if len(data) > limit:
        raise RegistryError(f"{what}: body exceeds the {limit}-byte cap")
    return bytes(data)


async def iter_body(resp: aiohttp.ClientResponse, what: str) -> AsyncIterator[bytes]:
    """Yield body chunks as they arrive, translating failures."""
    try:
        async for chunk in resp.content.iter_any():
            yield chunk
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise translate(exc, what) from exc


def origin(url: str) -> tuple[str, str]:
    """``(scheme, host:port)`` of a URL: what credentials are confined to."""
    parts = urlsplit(url)
    return parts.scheme, parts.netloc.lower()


class Transport:
    """The shared HTTP client of an asyncreg `Client`: one aiohttp session, many hosts."""

    def __init__(
        self,
        limits: Limits,
        credentials: CredentialProvider,
        hosts: Mapping[str, HostConfig] | None = None,
        *,
        user_agent: str = USER_AGENT,
    ) -> None:
        self.limits = limits
        self._hosts = dict(hosts or {})
        self._default_host = HostConfig()
        self._user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None
        self._ssl: dict[str, ssl.SSLContext | bool] = {}
        self.pauses = HostPauses(limits.retry.retry_after_cap)
        self._ping_locks: dict[str, anyio.Lock] = {}
        self.retries = 0
        self.auth = Authenticator(
            self._get_session,
            credentials,
            limits.timeouts,
            plain_http=self.plain_http,
            explicit_plain_http=lambda h: self.host_config(h).plain_http is True,
            ssl_for=self._ssl_for,
        )

    # --- configuration ----------------------------------------------------

    def host_config(self, host: str) -> HostConfig:
        """Settings for ``host`` (exact ``host:port`` first, then the bare host name)."""
        cfg = self._hosts.get(host)
        if cfg is None and ":" in host and not host.endswith("]"):
            cfg = self._hosts.get(host.rsplit(":", 1)[0])
        return cfg or self._default_host

    def plain_http(self, host: str) -> bool:
        """Whether ``host`` is spoken to over plain HTTP."""
        return self.host_config(host).use_http(host)

    def base_url(self, host: str) -> str:
        """``http://host`` or ``https://host``."""
        return ("http://" if self.plain_http(host) else "https://") + host

    def _ssl_for(self, host: str) -> ssl.SSLContext | bool:
        if self.plain_http(host):
            return False
        ctx = self._ssl.get(host)
        if ctx is not None:
            return ctx
        cfg = self.host_config(host)
        if not cfg.tls_verify:
            made: ssl.SSLContext | bool = False
        else:
            context = ssl.create_default_context(cafile=cfg.ca_file)
            if cfg.client_cert:
                context.load_cert_chain(cfg.client_cert, cfg.client_key)
            made = context
        self._ssl[host] = made
        return made

    def tls_context(self, host: str) -> ssl.SSLContext | None:
        """An SSL context for a socket of our own to ``host`` (None: plain HTTP).

        The same trust as the aiohttp session's: the host's CA file and client
        certificate, or, where the host is configured ``tls_verify=False``, none.
        """
        if self.plain_http(host):
            return None
        made = self._ssl_for(host)
        if isinstance(made, ssl.SSLContext):
            return made
        unverified = ssl.create_default_context()
        unverified.check_hostname = False
        unverified.verify_mode = ssl.CERT_NONE
        return unverified

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
            timeout = aiohttp.ClientTimeout(
                total=None,
                sock_connect=self.limits.timeouts.connect,
                sock_read=self.limits.timeouts.read_stall,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=timeout,
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                headers={"User-Agent": self._user_agent},
            )
        return self._session

    async def aclose(self) -> None:
        """Close the session and its connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- requests ---------------------------------------------------------

    async def ping(self, host: str) -> None:
        """``GET /v2/`` once per host to learn its auth challenge before real work."""
        state = self.auth.state(host)
        if state.pinged:
            return
        lock = self._ping_locks.setdefault(host, anyio.Lock())
        async with lock:
            if state.pinged:
                return
            url = self.base_url(host) + "/v2/"
            budget = Budget(self.limits.retry)
            while True:
                await self.pauses.wait(host)
                try:
                    resp = await self._send("GET", host, url, {}, None, None, what=f"ping {host}")
                    break
                except TransportError as exc:
                    # The first request of a job gets the same retries as any other.
                    await budget.spend(exc)
                    self.retries += 1
            async with resp:
                # Only the challenge matters here: any other answer (even an error)
                # is left for the real request to report with its own context.
                if resp.status == 401:
                    self.auth.learn(host, resp.headers.getall("WWW-Authenticate", []))
            state.pinged = True

    async def request(
        self,
        method: str,
        host: str,
        url: str,
        *,
        scopes: Sequence[Scope] = (),
        headers: Mapping[str, str] | None = None,
        data: Body = None,
        ok: Collection[int] = (200,),
        what: str = "",
        follow_redirects: bool | None = None,
        budget: Budget | None = None,
    ) -> aiohttp.ClientResponse:
        """Send a request and return the response for a status in ``ok``.

        ``url`` is absolute or a path on ``host``. The caller owns the returned
        response and must release it (``async with resp:``). A streaming body
        is never replayed: any failure with one raises, and the caller re-opens
        its source. Retries spend from ``budget`` (a blob's, shared with every
        other request and resume of that blob) or from a budget of their own.
        """
        what = what or f"{method} {url}"
        await self.ping(host)
        origin_url = self.base_url(host)
        if not url.startswith(("http://", "https://")):
            url = origin_url + url
        replayable = data is None or isinstance(data, bytes)
        if follow_redirects is None:
            follow_redirects = method in ("GET", "HEAD")
        if budget is None:
            budget = Budget(self.limits.retry)
        reauthed = False
        while True:
            await self.pauses.wait(host)
            auth = await self.auth.header(host, scopes)
            try:
                resp = await self._send_following(
                    method, host, url, headers or {}, data, auth, what, follow_redirects
                )
            except TransportError as exc:
                if not replayable:
                    raise  # a consumed stream: the caller re-opens its source
                await budget.spend(exc)
                self.retries += 1
                continue
            status = resp.status
            if status in ok:
                return resp
            # Only the registry's own 401 says how to authenticate to it: a challenge from
            # where a redirect led (object storage, a CDN) must never be learned, or the
            # registry's credentials would go to that host's realm.
            if status == 401 and not reauthed and origin(str(resp.url)) == origin(origin_url):
                reauthed = True
                challenge = resp.headers.getall("WWW-Authenticate", [])
                new = await self.auth.refresh(host, scopes, challenge, auth) if challenge else None
                if new is not None:
                    resp.release()
                    if replayable:
                        continue
                    raise AuthError(
                        f"{what}: token expired during a streaming request; re-open and retry",
                        status=401,
                        method=method,
                        url=url,
                        replayable=True,
                    )
            body = b""
            try:
                if method != "HEAD":
                    body = await read_limited(resp, _ERROR_BODY_LIMIT, what)
            except AsyncregError:
                body = b""
            finally:
                resp.release()
            self.note_answer(host, status, resp.headers)
            err = error_from_answer(status, resp.headers, body, method=method, url=url, what=what)
            if not replayable:
                raise err
            await budget.spend(err)
            self.retries += 1

    def note_answer(self, host: str, status: int, headers: Mapping[str, str]) -> None:
        """Pause ``host`` when an answer asks for it; every byte path reports answers here.

        RFC 6585 section 4: a 429 "MAY include a Retry-After header indicating
        how long to wait"; without one we wait a second. RFC 9110 section
        10.2.3: a 503 with ``Retry-After`` says when the service is back.
        """
        retry_after = parse_retry_after(headers.get("Retry-After"))
        if status == 429:
            note(Tally.RATE_LIMITED)
            self.pauses.pause(host, 1.0 if retry_after is None else retry_after)
        elif status == 503 and retry_after is not None:
            self.pauses.pause(host, retry_after)

    async def _send_following(
        self,
        method: str,
        host: str,
        url: str,
        headers: Mapping[str, str],
        data: Body,
        auth: str | None,
        what: str,
        follow: bool,
    ) -> aiohttp.ClientResponse:
        registry_origin = origin(self.base_url(host))
        for _ in range(MAX_REDIRECTS + 1):
            same_origin = origin(url) == registry_origin
            resp = await self._send(
                method, host, url, headers, data, auth if same_origin else None, what=what
            )
            if not follow or resp.status not in (301, 302, 303, 307, 308):
                return resp
            location = resp.headers.get("Location")
            resp.release()
            if not location:
                raise RegistryError(f"{what}: redirect without a Location header")
            target = urljoin(url, location)
            if urlsplit(url).scheme == "https" and urlsplit(target).scheme != "https":
                raise TransportError(
                    f"{what}: refusing redirect from https to {target[:200]!r}", retryable=False
                )
            if urlsplit(target).scheme not in ("http", "https"):
                raise TransportError(
                    f"{what}: refusing redirect to {target[:200]!r}", retryable=False
                )
            url = target
        raise TransportError(f"{what}: more than {MAX_REDIRECTS} redirects", retryable=False)

    async def _send(
        self,
        method: str,
        host: str,
        url: str,
        headers: Mapping[str, str],
        data: Body,
        auth: str | None,
        *,
        what: str,
    ) -> aiohttp.ClientResponse:
        hdrs = dict(headers)
        if auth is not None:
            hdrs["Authorization"] = auth
        target_host = urlsplit(url).netloc
        ssl_opt = self._ssl_for(target_host) if url.startswith("https://") else False
        if url.startswith("https://") and target_host != host:
            ssl_opt = True  # foreign origin (e.g. blob storage): default verification
        try:
            return await self._get_session().request(
                method, url, headers=hdrs, data=data, allow_redirects=False, ssl=ssl_opt
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise translate(exc, what) from exc
