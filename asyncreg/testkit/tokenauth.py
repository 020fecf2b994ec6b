"""Bearer-token auth in front of a real registry, the way Docker Hub and most clouds do it.

distribution itself only offers htpasswd (Basic) auth, but the registries
asyncreg must work with answer ``401`` with a ``WWW-Authenticate: Bearer``
challenge, hand out short-lived tokens scoped to repositories and actions at
a separate realm, and refuse a token that lacks a scope. `TokenAuthProxy` is
both halves in one aiohttp server: the realm (``GET``/``POST /token``) and an
auth-enforcing reverse proxy for ``/v2/...`` that forwards allowed requests,
without the ``Authorization`` header, to the real registry behind it. It
records every token request and every proxied request with the
``Authorization`` header it carried, so tests can check that a client reuses
tokens, asks for the right scopes and re-authenticates when a token expires.

Tokens are random opaque strings kept in memory with their user, scopes and
expiry; nothing here is meant to be secure, only to behave like the real thing.
"""

from __future__ import annotations

import base64
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
import orjson
from aiohttp import web
from multidict import MultiDict, MultiDictProxy

from asyncreg.testkit.proxy import ForwardOptions, LoopbackServer, forward, upstream_session

__all__ = [
    "AuthorizeFn",
    "ProxiedRequest",
    "TokenAuthProxy",
    "TokenGrant",
    "TokenRequest",
    "parse_scope",
]

#: ``authorize(user, resource_type, name, requested_actions) -> granted actions``;
#: ``user`` is None for an anonymous request.
AuthorizeFn = Callable[[str | None, str, str, frozenset[str]], Iterable[str]]

_KNOWN_ACTIONS = frozenset({"pull", "push", "delete", "*"})
# The repository name is everything between /v2/ and the last known route suffix.
_REPO_ROUTE = re.compile(
    r"^/v2/(?P<name>.+?)/(?:manifests/[^/]+|blobs/uploads/?[^/]*|blobs/[^/]+"
    r"|tags/list|referrers/[^/]+)$"
)
_READ_METHODS = frozenset({"GET", "HEAD"})


@dataclass(frozen=True)
class TokenGrant:
    """What one issued token allows: ``access`` maps ``TYPE:NAME`` to the granted actions."""

    user: str | None
    access: Mapping[str, frozenset[str]]
    expires: float  # time.monotonic() deadline

    def allows(self, resource_type: str, name: str, actions: Iterable[str]) -> bool:
        """Whether every action in ``actions`` on the resource was granted (``*`` grants all)."""
        have = self.access.get(f"{resource_type}:{name}", frozenset())
        return "*" in have or frozenset(actions) <= have

    @property
    def expired(self) -> bool:
        """True from the deadline on (monotonic clock: immune to wall-clock jumps)."""
        return time.monotonic() >= self.expires


@dataclass
class TokenRequest:
    """One request to the realm. ``user`` is who was authenticated (None: anonymous or refused)."""

    method: str
    query: MultiDictProxy[str]
    form: MultiDictProxy[str] | None
    had_basic: bool
    scopes: tuple[str, ...] = ()
    user: str | None = None
    status: int = 0


@dataclass
class ProxiedRequest:
    """One ``/v2/`` request: the ``Authorization`` header it had and how it was judged.

    ``outcome`` is ``forwarded``, ``missing`` (no bearer token), ``invalid_token``
    (unknown or expired) or ``insufficient_scope``; ``mount_stripped`` tells a
    cross-repository mount that was turned into a plain upload start.
    """

    method: str
    path: str
    query: MultiDictProxy[str]
    authorization: str | None
    outcome: str = ""
    status: int | None = None
    mount_stripped: bool = False


def parse_scope(scope: str) -> tuple[str, str, frozenset[str]] | None:
    """``repository:NAME:pull,push`` as ``(type, name, actions)``; None when malformed.

    The name is what lies between the first and the last colon, so a name
    can never be confused with the action list.
    """
    resource_type, sep, rest = scope.partition(":")
    name, sep2, actions = rest.rpartition(":")
    if not sep or not sep2 or not resource_type or not name:
        return None
    return resource_type, name, frozenset(a for a in actions.split(",") if a)


def _ttl_number(ttl: float) -> int | float:
    """``expires_in`` as an integer when it is one: the token spec and most clients expect that."""
    return int(ttl) if float(ttl).is_integer() else ttl


def _json(status: int, payload: object, headers: Mapping[str, str] | None = None) -> web.Response:
    """A JSON answer; realm and registry errors are both JSON, as clients parse them."""
    return web.Response(
        status=status,
        body=orjson.dumps(payload),
        content_type="application/json",
        headers=headers,
    )


class TokenAuthProxy(LoopbackServer):
    """Token realm plus bearer-auth-enforcing proxy in front of the registry at ``upstream``.

    ``users`` maps user names to passwords accepted by the realm (Basic auth on
    ``GET``, ``grant_type=password`` on ``POST``). With ``allow_anonymous_pull``
    a ``GET`` without credentials gets a token with pull access only. Tokens
    live ``token_ttl`` seconds. By default an authenticated user is granted
    every known action asked for; ``authorize`` narrows that per user and
    repository (e.g. a read-only user).

    Scopes required: ``GET``/``HEAD`` need ``pull``, every other method needs
    ``pull,push``, ``/v2/_catalog`` needs ``registry:catalog:*``, and ``/v2/``
    any valid token. A ``POST`` mounting from a repository the token cannot
    pull is forwarded without ``mount``/``from``, so it starts a normal upload,
    as distribution does.
    """

    def __init__(
        self,
        upstream: str,
        *,
        users: Mapping[str, str] | None = None,
        token_ttl: float = 60.0,
        realm_path: str = "/token",
        service: str = "asyncreg-test",
        allow_anonymous_pull: bool = False,
        authorize: AuthorizeFn | None = None,
    ) -> None:
        super().__init__("127.0.0.1")
        self.upstream = upstream
        self.users: dict[str, str] = dict(users or {})
        self.token_ttl = token_ttl
        self.realm_path = realm_path
        self.service = service
        self.allow_anonymous_pull = allow_anonymous_pull
        self.authorize = authorize
        self.tokens: dict[str, TokenGrant] = {}
        self.refresh_tokens: dict[str, str] = {}
        self.token_requests: list[TokenRequest] = []
        self.requests: list[ProxiedRequest] = []
        self._session: aiohttp.ClientSession | None = None

    @property
    def realm(self) -> str:
        """The realm URL put in challenges."""
        return f"{self.url}{self.realm_path}"

    def expire_all(self) -> None:
        """Make every issued access token expired now (refresh tokens stay valid)."""
        now = time.monotonic()
        self.tokens = {
            t: TokenGrant(g.user, g.access, min(g.expires, now)) for t, g in self.tokens.items()
        }

    def challenge(self, scope: str | None = None, error: str | None = None) -> str:
        """The ``WWW-Authenticate`` value for ``scope`` (and ``error``, if any)."""
        parts = [f'realm="{self.realm}"', f'service="{self.service}"']
        if scope:
            parts.append(f'scope="{scope}"')
        if error:
            parts.append(f'error="{error}"')
        return "Bearer " + ",".join(parts)

    # --- lifecycle --------------------------------------------------------------------

    def _make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        return app

    async def _on_start(self) -> None:
        self._session = upstream_session()

    async def _on_stop(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        if request.path == self.realm_path:
            if request.method == "GET":
                return await self._token_get(request)
            if request.method == "POST":
                return await self._token_post(request)
            return web.Response(status=405)
        return await self._proxy(request)

    # --- the realm ----------------------------------------------------------------------

    def _grant(self, user: str | None, scopes: Iterable[str]) -> tuple[str, TokenGrant]:
        access: dict[str, frozenset[str]] = {}
        for scope in scopes:
            parsed = parse_scope(scope)
            if parsed is None:
                continue
            resource_type, name, wanted = parsed
            if self.authorize is not None:
                granted = frozenset(self.authorize(user, resource_type, name, wanted))
            elif user is None:
                granted = wanted & {"pull"}
            else:
                granted = wanted & _KNOWN_ACTIONS
            key = f"{resource_type}:{name}"
            access[key] = access.get(key, frozenset()) | (granted & wanted)
        grant = TokenGrant(user, access, time.monotonic() + self.token_ttl)
        token = secrets.token_urlsafe(24)
        self.tokens[token] = grant
        return token, grant

    def _token_body(self, token: str, grant: TokenGrant) -> dict[str, object]:
        scope = " ".join(
            f"{key}:{','.join(sorted(actions))}" for key, actions in grant.access.items() if actions
        )
        return {
            "token": token,
            "access_token": token,
            "expires_in": _ttl_number(self.token_ttl),
            "issued_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "scope": scope,
        }

    def _refresh_token(self, user: str) -> str:
        refresh = secrets.token_urlsafe(24)
        self.refresh_tokens[refresh] = user
        return refresh

    def _basic(self, request: web.BaseRequest) -> tuple[bool, str | None]:
        """``(had_basic, user)``: user is None when there were no or wrong credentials."""
        header = request.headers.get("Authorization", "")
        if not header.lower().startswith("basic "):
            return False, None
        try:
            decoded = base64.b64decode(header[len("basic ") :].strip(), validate=True)
            login, sep, password = decoded.decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return True, None
        if not sep or login not in self.users or self.users[login] != password:
            return True, None
        return True, login

    async def _token_get(self, request: web.Request) -> web.Response:
        had_basic, user = self._basic(request)
        scopes = tuple(s for v in request.query.getall("scope", []) for s in v.split())
        record = TokenRequest(
            method="GET",
            query=MultiDictProxy(MultiDict(request.query)),
            form=None,
            had_basic=had_basic,
            scopes=scopes,
            user=user,
        )
        self.token_requests.append(record)
        response = self._token_get_response(request, had_basic, user, scopes)
        record.status = response.status
        return response

    def _token_get_response(
        self, request: web.Request, had_basic: bool, user: str | None, scopes: tuple[str, ...]
    ) -> web.Response:
        service = request.query.get("service")
        if service is not None and service != self.service:
            return _json(400, {"details": f"unknown service {service!r}"})
        if had_basic and user is None:
            return _json(401, {"details": "incorrect username or password"})
        if not had_basic and not self.allow_anonymous_pull:
            return _json(401, {"details": "authentication required"})
        token, grant = self._grant(user, scopes)
        body = self._token_body(token, grant)
        if user is not None and request.query.get("offline_token", "").lower() == "true":
            body["refresh_token"] = self._refresh_token(user)
        return _json(200, body)

    async def _token_post(self, request: web.Request) -> web.Response:
        posted = await request.post()
        form: MultiDict[str] = MultiDict((k, v) for k, v in posted.items() if isinstance(v, str))
        scopes = tuple(s for v in form.getall("scope", []) for s in v.split())
        record = TokenRequest(
            method="POST",
            query=MultiDictProxy(MultiDict(request.query)),
            form=MultiDictProxy(form),
            had_basic=request.headers.get("Authorization", "").lower().startswith("basic "),
            scopes=scopes,
        )
        self.token_requests.append(record)
        response, record.user = self._token_post_response(form, scopes)
        record.status = response.status
        return response

    def _token_post_response(
        self, form: MultiDict[str], scopes: tuple[str, ...]
    ) -> tuple[web.Response, str | None]:
        service = form.get("service")
        if service is not None and service != self.service:
            return _json(400, {"error": "invalid_request", "details": "unknown service"}), None
        grant_type = form.get("grant_type", "")
        refresh: str | None = None
        if grant_type == "password":
            user = form.get("username", "")
            if user not in self.users or self.users[user] != form.get("password"):
                return _json(401, {"error": "invalid_grant"}), None
        elif grant_type == "refresh_token":
            refresh = form.get("refresh_token", "")
            known = self.refresh_tokens.get(refresh)
            if known is None:
                return _json(401, {"error": "invalid_grant"}), None
            user = known
        else:
            return _json(400, {"error": "unsupported_grant_type"}), None
        token, grant = self._grant(user, scopes)
        body = self._token_body(token, grant)
        del body["token"]  # the OAuth2 endpoint answers access_token only
        if form.get("access_type") == "offline":
            body["refresh_token"] = refresh or self._refresh_token(user)
        elif refresh is not None:
            body["refresh_token"] = refresh
        return _json(200, body), user

    # --- the proxy ----------------------------------------------------------------------

    @staticmethod
    def required_scope(method: str, path: str) -> tuple[str, str, frozenset[str]] | None:
        """``(type, name, actions)`` a request needs; None when any valid token will do."""
        if path == "/v2/_catalog":
            return "registry", "catalog", frozenset({"*"})
        m = _REPO_ROUTE.match(path)
        if m is None:
            return None
        actions = {"pull"} if method.upper() in _READ_METHODS else {"pull", "push"}
        return "repository", m.group("name"), frozenset(actions)

    def _refuse(
        self, record: ProxiedRequest, needed: tuple[str, str, frozenset[str]] | None, error: str
    ) -> web.Response:
        scope = None
        detail: list[dict[str, str]] = []
        if needed is not None:
            resource_type, name, actions = needed
            ordered = ",".join(a for a in ("pull", "push", "*") if a in actions)
            scope = f"{resource_type}:{name}:{ordered}"
            detail = [{"Type": resource_type, "Name": name, "Action": a} for a in sorted(actions)]
        record.outcome = error or "missing"
        record.status = 401
        error_body = {
            "code": "UNAUTHORIZED",
            "message": "authentication required",
            "detail": detail,
        }
        return _json(
            401,
            {"errors": [error_body]},
            headers={
                "WWW-Authenticate": self.challenge(scope, error or None),
                "Docker-Distribution-Api-Version": "registry/2.0",
            },
        )

    async def _proxy(self, request: web.Request) -> web.StreamResponse:
        authorization = request.headers.get("Authorization")
        record = ProxiedRequest(
            method=request.method,
            path=request.path,
            query=MultiDictProxy(MultiDict(request.query)),
            authorization=authorization,
        )
        self.requests.append(record)
        needed = self.required_scope(request.method, request.path)
        token = None
        if authorization is not None and authorization.lower().startswith("bearer "):
            token = authorization[len("bearer ") :].strip()
        if not token:
            return self._refuse(record, needed, "")
        grant = self.tokens.get(token)
        if grant is None or grant.expired:
            return self._refuse(record, needed, "invalid_token")
        if needed is not None and not grant.allows(*needed):
            return self._refuse(record, needed, "insufficient_scope")

        opts = ForwardOptions(drop_request_headers=("Authorization",))
        query = request.query
        mounting = request.method == "POST" and "mount" in query and "from" in query
        if mounting and not grant.allows("repository", query["from"], {"pull"}):
            opts.query = MultiDict((k, v) for k, v in query.items() if k not in ("mount", "from"))
            record.mount_stripped = True
        assert self._session is not None, "proxy not started"
        record.outcome = "forwarded"
        response = await forward(
            request, self._session, self.upstream, public_origin=self.url, options=opts
        )
        record.status = response.status
        return response
