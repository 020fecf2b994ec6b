"""Docker token scopes and a cache of bearer tokens keyed by them.

A bearer token is granted for a set of scopes such as
``repository:team/app:pull,push`` (docker token authentication spec,
"Requesting a Token"). Copying many images concurrently would fetch a token
per request unless tokens are shared, so this module gives scopes a canonical
form (`scope_key`) and answers "does this token already allow that?"
(`covers`). `TokenCache` keeps tokens until shortly before they expire.

Scope strings are ``TYPE:NAME:ACTIONS``. ``TYPE`` never contains ``:``;
``ACTIONS`` never does either, so the name is everything in between. Names
of repositories never contain ``:`` but other resources may (the spec allows a
``host:port/`` prefix), and splitting this way accepts both.

Pure: no I/O; the clock is injected so expiry can be tested without sleeping.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

from ..errors import AuthError

__all__ = [
    "DEFAULT_TOKEN_LIFETIME",
    "Scope",
    "TokenCache",
    "covers",
    "merge_scopes",
    "mount",
    "parse_scopes",
    "pull",
    "push",
    "scope_key",
]

# Docker token spec: "expires_in ... When omitted, this defaults to 60 seconds."
DEFAULT_TOKEN_LIFETIME: Final = 60.0
# Retire a token this much before it expires (capped at a tenth of its life)
# so a request started just before expiry does not arrive with a dead token.
_MAX_EARLY: Final = 30.0
_WHITESPACE: Final = frozenset(" \t\r\n\v\f")


def _bad(message: str) -> AuthError:
    # Scopes usually come from a registry's challenge, so a bad one is an
    # authentication failure from the caller's point of view.
    return AuthError(message, status=401)


@dataclass(frozen=True, order=True)
class Scope:
    """One resource and the actions wanted (or granted) on it.

    ``actions`` may be given as any iterable of strings; it is stored as a
    frozenset. Ordering compares type, then name, then actions by subset,
    which is a total order only among scopes with distinct ``(type, name)``,
    as `merge_scopes` output always is.
    """

    resource_type: str
    name: str
    actions: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        actions = frozenset(self.actions)
        object.__setattr__(self, "actions", actions)
        if not self.resource_type or ":" in self.resource_type:
            raise _bad(f"invalid scope resource type {self.resource_type!r}")
        if _WHITESPACE.intersection(self.resource_type):
            raise _bad(f"invalid scope resource type {self.resource_type!r}")
        if not self.name or _WHITESPACE.intersection(self.name):
            raise _bad(f"invalid scope resource name {self.name!r}")
        if not actions:
            raise _bad(f"scope for {self.name!r} has no actions")
        for action in actions:
            if not action or ":" in action or "," in action or _WHITESPACE.intersection(action):
                raise _bad(f"invalid scope action {action!r} for {self.name!r}")

    @classmethod
    def parse(cls, text: str) -> Scope:
        """Parse ``TYPE:NAME:ACTION[,ACTION...]``; raise `AuthError` if malformed."""
        rtype, sep1, rest = text.partition(":")
        name, sep2, actions = rest.rpartition(":")
        if not (sep1 and sep2):
            raise _bad(f"invalid scope {text[:200]!r}: expected 'type:name:actions'")
        parts = actions.split(",")
        if any(not a for a in parts):
            raise _bad(f"invalid scope {text[:200]!r}: empty action")
        return cls(rtype, name, frozenset(parts))

    def __str__(self) -> str:
        return f"{self.resource_type}:{self.name}:{','.join(sorted(self.actions))}"


def parse_scopes(text: str) -> tuple[Scope, ...]:
    """Parse a space-separated scope list, as in a challenge's ``scope`` parameter."""
    return tuple(Scope.parse(part) for part in text.split())


def pull(repo: str) -> Scope:
    """The scope needed to read manifests and blobs of ``repo``."""
    return Scope("repository", repo, frozenset({"pull"}))


def push(repo: str) -> Scope:
    """The scope needed to write ``repo``; includes pull because pushing checks
    for existing blobs with HEAD requests, which registries guard with pull."""
    return Scope("repository", repo, frozenset({"pull", "push"}))


def mount(target_repo: str, source_repo: str) -> tuple[Scope, Scope]:
    """Scopes for a cross-repository blob mount: pull on the source, push on the target.

    A registry silently falls back to a normal upload when the token lacks
    pull on the source, so asking for both up front is what makes mounts work.
    """
    return pull(source_repo), push(target_repo)


def merge_scopes(scopes: Iterable[Scope]) -> tuple[Scope, ...]:
    """Union the actions of scopes naming the same resource; sorted output.

    Order-insensitive on input, so equal scope *sets* produce equal tuples.
    """
    merged: dict[tuple[str, str], set[str]] = {}
    for s in scopes:
        merged.setdefault((s.resource_type, s.name), set()).update(s.actions)
    return tuple(
        Scope(rtype, name, frozenset(actions)) for (rtype, name), actions in sorted(merged.items())
    )


def scope_key(scopes: Iterable[Scope]) -> str:
    """Canonical string for a scope set: merged, sorted, space-separated.

    Doubles as the value of the ``scope`` parameters of a token request.
    """
    return " ".join(str(s) for s in merge_scopes(scopes))


def covers(granted: Iterable[Scope], wanted: Iterable[Scope]) -> bool:
    """True if the ``granted`` scopes allow every action in ``wanted``.

    ``*`` grants every action on its resource. No action implies another:
    ``push`` does not grant ``pull`` (a registry checks each separately).
    """
    have: dict[tuple[str, str], frozenset[str]] = {
        (s.resource_type, s.name): s.actions for s in merge_scopes(granted)
    }
    for w in wanted:
        actions = have.get((w.resource_type, w.name), frozenset())
        if "*" not in actions and not w.actions <= actions:
            return False
    return True


@dataclass
class _Entry:
    scopes: tuple[Scope, ...]
    token: str
    expires_at: float


class TokenCache:
    """Bearer tokens per registry host and scope set, dropped before they expire.

    ``host`` is any string the caller uses to tell token domains apart (a
    registry host, or host plus user when several identities are in play).
    A lookup first tries the exact scope set, then any live token whose scopes
    cover the wanted ones, so a ``pull,push`` token also serves a pull.

    The clock (``now``) must be monotonic and is in seconds; only its
    differences matter. Not thread-safe; meant for one event loop.
    """

    def __init__(
        self,
        *,
        now: Callable[[], float] = time.monotonic,
        max_entries: int = 1024,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._now = now
        self._max_entries = max_entries
        self._entries: dict[tuple[str, str], _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, host: str, scopes: Iterable[Scope]) -> str | None:
        """A live token for ``host`` allowing ``scopes``, or ``None``."""
        wanted = merge_scopes(scopes)
        host = host.lower()
        now = self._now()
        exact = self._entries.get((host, scope_key(wanted)))
        if exact is not None and now < exact.expires_at:
            return exact.token
        best: _Entry | None = None
        for (h, _), entry in self._entries.items():
            if h != host or now >= entry.expires_at or not covers(entry.scopes, wanted):
                continue
            if best is None or entry.expires_at > best.expires_at:
                best = entry
        return best.token if best is not None else None

    def put(
        self,
        host: str,
        scopes: Iterable[Scope],
        token: str,
        expires_in: float | None = None,
        issued_at: float | None = None,
    ) -> None:
        """Remember ``token`` for ``host`` and ``scopes``.

        ``expires_in`` is the token server's value in seconds; missing, zero,
        negative or non-finite means the spec's default of 60 s. ``issued_at``
        is a reading of this cache's clock taken when the token request was
        *sent* (default: now), so time spent on the wire counts against the
        token. The server's own ``issued_at`` is deliberately not used: it is
        wall-clock time on another machine and clock skew would corrupt it.
        """
        lifetime = DEFAULT_TOKEN_LIFETIME
        if expires_in is not None and math.isfinite(expires_in) and expires_in > 0:
            lifetime = float(expires_in)
        start = self._now() if issued_at is None else issued_at
        early = min(_MAX_EARLY, lifetime / 10)
        merged = merge_scopes(scopes)
        host = host.lower()
        self._prune()
        self._entries[(host, scope_key(merged))] = _Entry(merged, token, start + lifetime - early)
        while len(self._entries) > self._max_entries:
            # Evict the entry that would die soonest anyway.
            doomed = min(self._entries, key=lambda k: self._entries[k].expires_at)
            del self._entries[doomed]

    def invalidate(self, host: str, token: str) -> int:
        """Forget ``token`` for ``host`` everywhere (the registry refused it).

        Returns how many entries were dropped.
        """
        host = host.lower()
        doomed = [k for k, e in self._entries.items() if k[0] == host and e.token == token]
        for k in doomed:
            del self._entries[k]
        return len(doomed)

    def clear(self) -> None:
        """Forget every token."""
        self._entries.clear()

    def _prune(self) -> None:
        now = self._now()
        for k in [k for k, e in self._entries.items() if now >= e.expires_at]:
            del self._entries[k]
