"""Registry authentication: which ``Authorization`` header a request carries.

The registry says how it wants to be spoken to in its ``WWW-Authenticate``
challenge (on ``/v2/`` or on any 401). Basic sends credentials with every
request; Bearer trades them at the challenge's realm for a short-lived token
scoped to repositories and actions (the docker token spec). Tokens are cached
per host and scope set until shortly before they expire, and a 401 carrying
``error="invalid_token"`` (or a scope we do not hold) fetches a new one.

Safety rules enforced here:
- credentials are only ever sent to the registry's own origin and its token
  realm; never to a host a redirect leads to (see `http`);
- a token realm must be https unless the registry itself is plain HTTP, must
  not carry userinfo, and token requests never follow redirects;
- Basic credentials never travel over plain HTTP to a non-loopback host unless
  that host is explicitly configured plain HTTP.
"""

from __future__ import annotations

import base64
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

import aiohttp
import anyio
import orjson

from ..auth.challenge import Challenge, parse_www_authenticate
from ..auth.credentials import Credential, CredentialProvider
from ..auth.scope import Scope, TokenCache, merge_scopes
from ..config import Timeouts, is_loopback_host
from ..errors import AuthError, TransportError, TransportTimeout

__all__ = ["Authenticator", "HostAuthState"]

_USER_AGENT_CLIENT_ID = "asyncreg"
_TOKEN_BODY_LIMIT = 1024 * 1024


@dataclass(slots=True)
class HostAuthState:
    """What we learned of one host: its challenge (None = no auth needed)."""

    challenge: Challenge | None = None
    pinged: bool = False


class Authenticator:
    """Picks and refreshes the ``Authorization`` header for each request to a host."""

    def __init__(
        self,
        session: Callable[[], aiohttp.ClientSession],
        credentials: CredentialProvider,
        timeouts: Timeouts,
        *,
        plain_http: Callable[[str], bool],
        explicit_plain_http: Callable[[str], bool],
        ssl_for: Callable[[str], ssl.SSLContext | bool] | None = None,
    ) -> None:
        self._session = session
        self._credentials = credentials
        self._timeouts = timeouts
        self._plain_http = plain_http
        self._explicit_plain_http = explicit_plain_http
        self._ssl_for = ssl_for
        self._hosts: dict[str, HostAuthState] = {}
        self._tokens = TokenCache()
        self._fetch_locks: dict[tuple[str, str], anyio.Lock] = {}
        # The newest token fetched for each (host, scopes) key.
        self._latest: dict[tuple[str, str], str] = {}
        self.token_fetches = 0

    def state(self, host: str) -> HostAuthState:
        """The mutable auth state of ``host``."""
        st = self._hosts.get(host)
        if st is None:
            st = self._hosts[host] = HostAuthState()
        return st

    def learn(self, host: str, www_authenticate: Sequence[str]) -> Challenge | None:
        """Record the challenge of a 401 answer; return the one we will use."""
        challenges = parse_www_authenticate(list(www_authenticate))
        chosen = _pick(challenges)
        st = self.state(host)
        st.challenge = chosen
        st.pinged = True
        return chosen

    async def header(self, host: str, scopes: Sequence[Scope]) -> str | None:
        """The header for a request, from what is known and cached; None for anonymous."""
        challenge = self.state(host).challenge
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            return await self._basic(host)
        if challenge.scheme == "bearer":
            wanted = self._scopes(challenge, scopes)
            token = self._tokens.get(host, wanted)
            if token is None:
                token = await self._fetch_token(host, challenge, wanted)
            return None if token is None else f"Bearer {token}"
        return None

    async def refresh(
        self, host: str, scopes: Sequence[Scope], www_authenticate: Sequence[str], sent: str | None
    ) -> str | None:
        """After a 401: a new header worth one more try, or None when retrying cannot help."""
        challenge = self.learn(host, www_authenticate)
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            header = await self._basic(host)
            return header if header != sent else None
        if challenge.scheme != "bearer":
            return None
        refused = None
        if sent is not None and sent.startswith("Bearer "):
            refused = sent[len("Bearer ") :]
            self._tokens.invalidate(host, refused)
        wanted = self._scopes(challenge, scopes)
        token = await self._fetch_token(host, challenge, wanted, force=True, refused=refused)
        if token is None:
            return None
        header = f"Bearer {token}"
        return header if header != sent else None

    # --- internals --------------------------------------------------------

    @staticmethod
    def _scopes(challenge: Challenge, scopes: Sequence[Scope]) -> tuple[Scope, ...]:
        extra: list[Scope] = []
        for text in (challenge.scope or "").split():
            try:
                extra.append(Scope.parse(text))
            except ValueError:
                continue
        return merge_scopes([*scopes, *extra])

    async def _basic(self, host: str) -> str | None:
        cred = await self._credentials.get(host)
        if not cred.username:
            raise AuthError(
                f"{host} asks for Basic authentication and no credentials are configured for it",
                status=401,
            )
        if (
            self._plain_http(host)
            and not is_loopback_host(host)
            and not self._explicit_plain_http(host)
        ):
            raise AuthError(
                f"refusing to send Basic credentials to {host} over plain HTTP", status=401
            )
        raw = f"{cred.username}:{cred.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")

    async def _fetch_token(
        self,
        host: str,
        challenge: Challenge,
        scopes: tuple[Scope, ...],
        *,
        force: bool = False,
        refused: str | None = None,
    ) -> str | None:
        """A token for ``scopes``: the cached one, else a new one from the realm.

        ``force`` (after a 401) skips the cache, except for a token that another
        request fetched for the same scopes after ``refused`` was handed out: many
        requests refused at once then share one new token instead of each fetching.
        """
        key = (host, " ".join(str(s) for s in scopes))
        lock = self._fetch_locks.get(key)
        if lock is None:
            lock = self._fetch_locks[key] = anyio.Lock()
        async with lock:
            cached = self._tokens.get(host, scopes)
            renewed = cached is not None and cached != refused and cached == self._latest.get(key)
            if cached is not None and (not force or renewed):
                return cached
            cred = await self._credentials.get(host)
            if cred.registry_token:
                return cred.registry_token
            token, expires_in = await self._request_token(host, challenge, scopes, cred)
            self._tokens.put(host, scopes, token, expires_in)
            self._latest[key] = token
            return token

    def _check_realm(self, host: str, realm: str) -> str:
        parts = urlsplit(realm)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise AuthError(
                f"{host}: token realm {realm[:200]!r} is not an http(s) URL", status=401
            )
        if parts.username is not None or parts.password is not None:
            raise AuthError(f"{host}: token realm must not contain credentials", status=401)
        if parts.scheme == "http" and not self._plain_http(host):
            raise AuthError(
                f"{host}: refusing plain-HTTP token realm {realm[:200]!r} for an HTTPS registry",
                status=401,
            )
        return realm

    def _realm_ssl(self, host: str, realm: str) -> ssl.SSLContext | bool:
        """TLS settings for the token request.

        The registry's own (its CA, or no verification) when the realm is on the
        registry's host name, so a private-CA registry serving its own realm works;
        aiohttp's default verification for any other host.
        """
        parts = urlsplit(realm)
        same_host = parts.hostname == urlsplit(f"//{host}").hostname
        if self._ssl_for is None or parts.scheme != "https" or not same_host:
            return True
        return True if self._plain_http(host) else self._ssl_for(host)

    async def _request_token(
        self, host: str, challenge: Challenge, scopes: tuple[Scope, ...], cred: Credential
    ) -> tuple[str, float | None]:
        realm = self._check_realm(host, challenge.realm or "")
        ssl_opt = self._realm_ssl(host, realm)
        service = challenge.service
        scope_strs = [str(s) for s in scopes]
        headers = {"Accept": "application/json"}
        timeout = aiohttp.ClientTimeout(
            total=self._timeouts.token, sock_connect=self._timeouts.connect
        )
        self.token_fetches += 1
        try:
            if cred.identity_token:
                form: dict[str, str] = {
                    "grant_type": "refresh_token",
                    "refresh_token": cred.identity_token,
                    "client_id": _USER_AGENT_CLIENT_ID,
                }
                if service:
                    form["service"] = service
                if scope_strs:
                    form["scope"] = " ".join(scope_strs)
                ctx = self._session().post(
                    realm,
                    data=form,
                    headers=headers,
                    allow_redirects=False,
                    timeout=timeout,
                    ssl=ssl_opt,
                )
            else:
                query: list[tuple[str, str]] = []
                if service:
                    query.append(("service", service))
                query.extend(("scope", s) for s in scope_strs)
                if cred.username:
                    raw = f"{cred.username}:{cred.password}".encode()
                    headers["Authorization"] = "Basic " + base64.b64encode(raw).decode("ascii")
                    query.append(("account", cred.username))
                url = realm + ("&" if "?" in realm else "?") + urlencode(query) if query else realm
                ctx = self._session().get(
                    url, headers=headers, allow_redirects=False, timeout=timeout, ssl=ssl_opt
                )
            async with ctx as resp:
                body = b""
                # read(n) returns what has arrived so far, not n bytes: read to the end.
                while len(body) < _TOKEN_BODY_LIMIT:
                    chunk = await resp.content.read(_TOKEN_BODY_LIMIT - len(body))
                    if not chunk:
                        break
                    body += chunk
                status = resp.status
        except TimeoutError as exc:
            raise TransportTimeout(f"{host}: token request to {realm} timed out") from exc
        except aiohttp.ClientError as exc:
            raise TransportError(f"{host}: token request to {realm} failed: {exc}") from exc
        if status in (401, 403):
            raise AuthError(
                f"{host}: the token server refused the credentials (HTTP {status})", status=status
            )
        if status != 200:
            raise AuthError(f"{host}: token server answered HTTP {status}", status=status)
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise AuthError(f"{host}: token server answered with invalid JSON", status=401) from exc
        if not isinstance(doc, dict):
            raise AuthError(f"{host}: token server answer is not a JSON object", status=401)
        token = doc.get("token") or doc.get("access_token")
        if not isinstance(token, str) or not token:
            raise AuthError(f"{host}: token server answer has no token", status=401)
        expires = doc.get("expires_in")
        expires_in = float(expires) if isinstance(expires, int | float) and expires > 0 else None
        # ``issued_at`` is the server's wall clock: the cache times tokens by our
        # own clock from the request instead, so clock skew cannot matter.
        return token, expires_in


def _pick(challenges: Sequence[Challenge]) -> Challenge | None:
    """Prefer Bearer (scoped, short-lived) over Basic; ignore schemes we do not speak."""
    for scheme in ("bearer", "basic"):
        for c in challenges:
            if c.scheme == scheme:
                return c
    return None
