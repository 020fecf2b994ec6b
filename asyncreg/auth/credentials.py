"""Where credentials come from: explicit values, docker's config.json, helpers.

Users already log in with ``docker login``; asyncreg reads the same places the
docker CLI does so no second login is needed:

1. ``credHelpers`` in ``config.json``: ``{host: NAME}`` runs
   ``docker-credential-NAME get`` for that host only;
2. ``credsStore``: one helper for every other host;
3. ``auths``: credentials stored inline (base64 ``auth``, or ``username`` /
   ``password``, ``identitytoken``, ``registrytoken``). Docker consults this
   only without a helper; asyncreg also falls back to it when the helper has
   nothing, which costs nothing and rescues configs that mix both.

A credential helper speaks a tiny protocol: the server URL on stdin, a JSON
object ``{"ServerURL", "Username", "Secret"}`` on stdout, or exit status 1
with ``credentials not found in native keychain`` when it has nothing.

Secrets never appear in a `repr` or an exception message: those end up in
logs and CI output.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol, runtime_checkable

from ..errors import ConfigError

__all__ = [
    "ANONYMOUS",
    "DEFAULT_HELPER_TIMEOUT",
    "DOCKER_HUB",
    "DOCKER_HUB_SERVER_URL",
    "ChainCredentials",
    "Credential",
    "CredentialProvider",
    "DockerConfigCredentials",
    "StaticCredentials",
    "default_config_path",
    "default_credentials",
    "helper_server_url",
    "normalize_host",
    "run_credential_helper",
]

# The canonical key for Docker Hub, whatever alias the caller used.
DOCKER_HUB: Final = "docker.io"
# The name docker login stores Hub credentials under (also in helpers).
DOCKER_HUB_SERVER_URL: Final = "https://index.docker.io/v1/"
_HUB_ALIASES: Final = frozenset(
    {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
)
# Helper names become part of an executable name; refuse anything path-like.
_HELPER_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
# The docker-credential-helpers library's standard "nothing stored" message.
_NOT_FOUND: Final = "credentials not found"
# Helpers signal "this Secret is an identity token" with this username.
_TOKEN_USERNAME: Final = "<token>"
DEFAULT_HELPER_TIMEOUT: Final = 10.0
# How long to wait for a killed helper to exit.
_REAP_TIME: Final = 2.0


@dataclass(frozen=True, repr=False)
class Credential:
    """What to authenticate with; all empty means anonymous.

    ``identity_token`` is docker's ``identitytoken``: an OAuth2 refresh token
    to exchange at the token endpoint instead of a password.
    ``registry_token`` is a bearer token to send to the registry as is.
    """

    username: str = ""
    password: str = ""
    identity_token: str = ""
    registry_token: str = ""

    @property
    def is_anonymous(self) -> bool:
        """True if there is nothing to authenticate with."""
        return not (self.username or self.password or self.identity_token or self.registry_token)

    def __repr__(self) -> str:
        # Show which secrets are present, never their values.
        def mark(value: str) -> str:
            return "'***'" if value else "''"

        return (
            f"Credential(username={self.username!r}, password={mark(self.password)},"
            f" identity_token={mark(self.identity_token)},"
            f" registry_token={mark(self.registry_token)})"
        )

    __str__ = __repr__


ANONYMOUS: Final = Credential()


@runtime_checkable
class CredentialProvider(Protocol):
    """Anything that can produce a `Credential` for a registry host."""

    async def get(self, host: str) -> Credential:
        """Credentials for ``host``; anonymous (not an error) when there are none."""
        ...


def normalize_host(server: str) -> str:
    """Reduce a registry host, URL or docker config key to one comparable key.

    Strips the scheme and any path, lowercases, and maps Docker Hub's many
    names (``docker.io``, ``index.docker.io``, ``registry-1.docker.io``,
    ``https://index.docker.io/v1/``) to ``docker.io``. Ports are kept:
    ``host:5000`` and ``host`` may be different registries.
    """
    text = server.strip().lower()
    for prefix in ("https://", "http://"):
        if text.startswith(prefix):
            text = text[len(prefix) :]
            break
    text = text.split("/", 1)[0]
    return DOCKER_HUB if text in _HUB_ALIASES else text


def helper_server_url(host: str) -> str:
    """The server name docker passes to a credential helper for ``host``.

    Docker stores Hub credentials under its historical v1 URL and every other
    registry under its bare host, and helpers look entries up verbatim.
    """
    key = normalize_host(host)
    return DOCKER_HUB_SERVER_URL if key == DOCKER_HUB else key


def default_config_path() -> Path:
    """``$DOCKER_CONFIG/config.json`` if set, else ``~/.docker/config.json``."""
    base = os.environ.get("DOCKER_CONFIG")
    directory = Path(base) if base else Path.home() / ".docker"
    return directory / "config.json"


class StaticCredentials:
    """A fixed mapping of host to `Credential`, e.g. from command-line options.

    Keys are normalised with `normalize_host`; two keys naming the same host
    with different credentials are refused rather than picked between.
    """

    def __init__(self, credentials: Mapping[str, Credential] | None = None) -> None:
        self._by_host: dict[str, Credential] = {}
        for host, cred in (credentials or {}).items():
            key = normalize_host(host)
            if key in self._by_host and self._by_host[key] != cred:
                raise ConfigError(f"conflicting credentials given for registry {key!r}")
            self._by_host[key] = cred

    async def get(self, host: str) -> Credential:
        return self._by_host.get(normalize_host(host), ANONYMOUS)


class ChainCredentials:
    """Ask providers in order; the first non-anonymous answer wins."""

    def __init__(self, *providers: CredentialProvider) -> None:
        self.providers: tuple[CredentialProvider, ...] = providers

    async def get(self, host: str) -> Credential:
        for provider in self.providers:
            cred = await provider.get(host)
            if not cred.is_anonymous:
                return cred
        return ANONYMOUS


@dataclass(frozen=True)
class _DockerConfig:
    auths: dict[str, Credential] = field(default_factory=dict)
    cred_helpers: dict[str, str] = field(default_factory=dict)
    creds_store: str = ""


class DockerConfigCredentials:
    """Credentials the way the docker CLI finds them (see the module docstring).

    The file is read once, on first use; a missing file means anonymous. Helper
    answers are cached per host for the provider's lifetime (helpers can be
    slow, e.g. cloud ones that make network calls); `forget` drops one.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        helper_timeout: float = DEFAULT_HELPER_TIMEOUT,
    ) -> None:
        self.path = Path(path) if path is not None else default_config_path()
        self.helper_timeout = helper_timeout
        self._config: _DockerConfig | None = None
        self._cache: dict[str, Credential] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(self, host: str) -> Credential:
        key = normalize_host(host)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        # One lookup per host at a time, so a burst of concurrent requests
        # to one registry runs its helper once.
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            cached = self._cache.get(key)
            if cached is None:
                cached = await self._lookup(key)
                self._cache[key] = cached
        return cached

    def forget(self, host: str) -> None:
        """Drop the cached answer for ``host``, e.g. after the registry refused it."""
        self._cache.pop(normalize_host(host), None)

    async def _lookup(self, key: str) -> Credential:
        if self._config is None:
            self._config = await asyncio.to_thread(_load_config, self.path)
        config = self._config
        helper = config.cred_helpers.get(key) or config.creds_store
        if helper:
            cred = await run_credential_helper(helper, key, time_limit=self.helper_timeout)
            if not cred.is_anonymous:
                return cred
        return config.auths.get(key, ANONYMOUS)


def default_credentials(
    explicit: Mapping[str, Credential] | None = None,
) -> CredentialProvider:
    """Explicit credentials first, then docker's config and helpers, else anonymous."""
    docker = DockerConfigCredentials()
    if not explicit:
        return ChainCredentials(docker)
    return ChainCredentials(StaticCredentials(explicit), docker)


# --- config.json --------------------------------------------------------------


def _load_config(path: Path) -> _DockerConfig:
    """Read and validate a docker config file; missing means empty."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return _DockerConfig()
    except OSError as exc:
        raise ConfigError(f"cannot read docker config {str(path)!r}: {exc.strerror}") from None
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        # The message of a JSONDecodeError holds a position, never file content.
        raise ConfigError(f"malformed docker config {str(path)!r}: {exc}") from None
    return _parse_config(data, str(path))


def _parse_config(data: object, where: str) -> _DockerConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"malformed docker config {where!r}: top level is not an object")
    auths_raw = _field(data, "auths", {})
    if not isinstance(auths_raw, dict):
        raise ConfigError(f"malformed docker config {where!r}: 'auths' is not an object")
    auths: dict[str, Credential] = {}
    for server, entry in auths_raw.items():
        cred = _parse_auth_entry(entry, where, server)
        key = normalize_host(server)
        # Several spellings of one host: keep the first that holds anything,
        # since docker writes empty {} entries next to helper-stored ones.
        if key not in auths or (auths[key].is_anonymous and not cred.is_anonymous):
            auths[key] = cred
    helpers_raw = _field(data, "credHelpers", {})
    if not isinstance(helpers_raw, dict):
        raise ConfigError(f"malformed docker config {where!r}: 'credHelpers' is not an object")
    helpers: dict[str, str] = {}
    for server, name in helpers_raw.items():
        helpers[normalize_host(server)] = _helper_name(name, where, f"credHelpers[{server!r}]")
    store = _helper_name(_field(data, "credsStore", ""), where, "credsStore")
    return _DockerConfig(auths, helpers, store)


def _field(obj: dict[str, object], key: str, default: object) -> object:
    """``obj[key]``, with JSON ``null`` read as absent (docker writes some)."""
    value = obj.get(key)
    return default if value is None else value


def _helper_name(name: object, where: str, field_name: str) -> str:
    if not isinstance(name, str) or (name and not _HELPER_NAME.match(name)):
        raise ConfigError(
            f"malformed docker config {where!r}: {field_name} is not a credential helper name"
        )
    return name


def _parse_auth_entry(entry: object, where: str, server: str) -> Credential:
    def bad(what: str) -> ConfigError:
        return ConfigError(f"malformed docker config {where!r}: auths[{server!r}] {what}")

    if not isinstance(entry, dict):
        raise bad("is not an object")
    fields: dict[str, str] = {}
    for name in ("auth", "username", "password", "identitytoken", "registrytoken"):
        value = _field(entry, name, "")
        if not isinstance(value, str):
            raise bad(f"has a non-string {name!r}")
        fields[name] = value
    username, password = fields["username"], fields["password"]
    if fields["auth"]:
        # Like docker, an "auth" blob overrides separate username/password.
        username, password = _decode_auth(fields["auth"], bad)
    return Credential(
        username=username,
        password=password,
        identity_token=fields["identitytoken"],
        registry_token=fields["registrytoken"],
    )


def _decode_auth(blob: str, bad: Callable[[str], ConfigError]) -> tuple[str, str]:
    """Decode base64 ``user:password``; the password may itself contain ``:``."""
    text = blob.strip()
    text += "=" * (-len(text) % 4)  # tolerate stripped padding
    try:
        decoded = base64.b64decode(text, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise bad("has an 'auth' value that is not base64 of UTF-8 text") from None
    username, sep, password = decoded.partition(":")
    if not sep:
        raise bad("has an 'auth' value without 'username:password'")
    return username, password


# --- credential helpers ---------------------------------------------------------


async def run_credential_helper(
    name: str, host: str, *, time_limit: float = DEFAULT_HELPER_TIMEOUT
) -> Credential:
    """Run ``docker-credential-NAME get`` for ``host`` and parse its answer.

    A failing exit whose output says "credentials not found" (the standard
    message, normally with status 1; any non-zero status is accepted since
    helpers differ) gives an anonymous `Credential`. Anything else that is not
    a valid answer raises `ConfigError` naming the helper and server, quoting
    a failing helper's message but never output that could hold the secret.
    """
    program = f"docker-credential-{name}"
    server = helper_server_url(host)

    def fail(what: str) -> ConfigError:
        return ConfigError(f"credential helper {program!r} failed for {server!r}: {what}")

    try:
        proc = await asyncio.create_subprocess_exec(
            program,
            "get",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except FileNotFoundError:
        raise ConfigError(f"credential helper {program!r} not found on PATH") from None
    except OSError as exc:
        raise fail(f"cannot start it: {exc.strerror}") from None
    try:
        # A hung helper (say, waiting for a keychain prompt) must not hang us.
        async with asyncio.timeout(time_limit):
            out, err = await proc.communicate(server.encode())
    except TimeoutError:
        raise fail(f"no answer within {time_limit:g} s") from None
    finally:
        if proc.returncode is None:
            await _reap(proc)
    if proc.returncode != 0:
        message = (out + b"\n" + err).decode("utf-8", "replace")
        if _NOT_FOUND in message.lower():
            return ANONYMOUS
        return_code = proc.returncode
        raise fail(f"exit status {return_code}{_describe_failure(message)}")
    return _parse_helper_answer(out, fail)


async def _reap(proc: asyncio.subprocess.Process) -> None:
    """Kill a helper we gave up on and wait briefly for it to go away.

    The wait is bounded because asyncio also waits for the pipes to close,
    and a grandchild the helper spawned may hold them open after the kill.
    """
    try:
        proc.kill()
    except ProcessLookupError:
        return
    try:
        async with asyncio.timeout(_REAP_TIME):
            await proc.wait()
    except TimeoutError:
        pass


def _describe_failure(message: str) -> str:
    """A short, secret-free excerpt of a failing helper's output.

    On failure a helper prints an error message, which helps the user; but if
    the output looks like a credential answer it is withheld entirely.
    """
    if "secret" in message.lower():
        return ""
    line = next((ln.strip() for ln in message.splitlines() if ln.strip()), "")
    if not line:
        return ""
    return f": {line[:200]}"


def _parse_helper_answer(out: bytes, fail: Callable[[str], ConfigError]) -> Credential:
    try:
        data = json.loads(out)
    except (ValueError, UnicodeDecodeError):
        raise fail("its output is not JSON") from None
    if not isinstance(data, dict):
        raise fail("its output is not a JSON object")
    username = data.get("Username") or ""
    secret = data.get("Secret") or ""
    if not isinstance(username, str) or not isinstance(secret, str):
        raise fail("its Username or Secret is not a string")
    if username == _TOKEN_USERNAME:
        return Credential(identity_token=secret)
    return Credential(username=username, password=secret)
