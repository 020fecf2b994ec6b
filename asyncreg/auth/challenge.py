"""Parse ``WWW-Authenticate`` headers (RFC 7235, section 4.1).

A registry answers an unauthenticated request with ``401`` and one or more
challenges, e.g.::

    WWW-Authenticate: Bearer realm="https://auth.example/token",
        service="registry.example",scope="repository:team/app:pull,push"

The challenge is the only place that tells us where the token server is and
which scope to ask for, so it is parsed strictly: a header we cannot read with
certainty raises `AuthError` rather than being half-understood, because a
mis-split ``scope`` (it contains commas) would silently ask for the wrong
permissions.

Grammar implemented (RFC 7235 with the RFC 7230 list rule)::

    WWW-Authenticate = 1#challenge
    challenge        = auth-scheme [ 1*SP ( token68 / #auth-param ) ]
    auth-param       = token BWS "=" BWS ( token / quoted-string )
    token68          = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="

One leniency: an unquoted parameter value may contain any visible character
except ``,`` and ``"`` (some servers send ``realm=https://host/token`` without
quotes); it still has to be followed by a comma or the end of the header.

Pure: no I/O.
"""

from __future__ import annotations

import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from ..errors import AuthError

__all__ = ["Challenge", "parse_www_authenticate"]

# RFC 7230 section 3.2.6: characters allowed in a token.
_TCHAR: Final = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)
# RFC 7235 section 2.1: characters allowed in token68 before the '=' padding.
_TOKEN68: Final = frozenset("-._~+/0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_OWS: Final = " \t"
# How much of a bad header to quote in an error message.
_QUOTE_LIMIT: Final = 200


@dataclass(frozen=True)
class Challenge:
    """One challenge: an auth scheme plus its parameters (or a token68).

    ``scheme`` and parameter names are case-insensitive in HTTP, so both are
    stored lowercased; parameter *values* keep their case. ``params`` is a
    read-only mapping so a `Challenge` can be hashed and shared.
    """

    scheme: str
    params: Mapping[str, str] = field(default_factory=dict)
    token68: str = ""

    def __post_init__(self) -> None:
        # Normalise here rather than in the parser so hand-built challenges
        # (tests, callers) compare equal to parsed ones.
        object.__setattr__(self, "scheme", self.scheme.lower())
        frozen = types.MappingProxyType({k.lower(): v for k, v in self.params.items()})
        object.__setattr__(self, "params", frozen)

    def __hash__(self) -> int:
        return hash((self.scheme, frozenset(self.params.items()), self.token68))

    @property
    def realm(self) -> str | None:
        """Where to authenticate: the token endpoint URL for ``bearer``."""
        return self.params.get("realm")

    @property
    def service(self) -> str | None:
        """The ``service`` to name in the token request (docker token spec)."""
        return self.params.get("service")

    @property
    def scope(self) -> str | None:
        """Space-separated scopes the registry says the request needs."""
        return self.params.get("scope")

    @property
    def error(self) -> str | None:
        """RFC 6750 error code, e.g. ``insufficient_scope`` or ``invalid_token``."""
        return self.params.get("error")


def parse_www_authenticate(values: str | Sequence[str]) -> tuple[Challenge, ...]:
    """Parse one header value or several, returning every challenge in order.

    Accepting a sequence matters because HTTP allows the same challenge list
    to be split across several ``WWW-Authenticate`` lines; ``[]`` gives ``()``.
    Raises `AuthError` (status 401) for anything not matching the grammar,
    including a header value that holds no challenge at all.
    """
    if isinstance(values, str):
        values = (values,)
    out: list[Challenge] = []
    for value in values:
        if not isinstance(value, str):
            raise AuthError(
                f"WWW-Authenticate value must be a string, got {type(value).__name__}",
                status=401,
            )
        out.extend(_Parser(value).parse())
    return tuple(out)


class _Parser:
    """A cursor over one header value; each method consumes what it names."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    # --- primitives ---------------------------------------------------------

    def fail(self, what: str) -> AuthError:
        shown = self.text if len(self.text) <= _QUOTE_LIMIT else self.text[:_QUOTE_LIMIT] + "..."
        return AuthError(
            f"malformed WWW-Authenticate header {shown!r}: {what} at offset {self.pos}",
            status=401,
        )

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_ows(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in _OWS:
            self.pos += 1

    def skip_separators(self) -> None:
        """Skip commas and whitespace: the list rule allows empty elements."""
        while self.pos < len(self.text) and self.text[self.pos] in _OWS + ",":
            self.pos += 1

    def token(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in _TCHAR:
            self.pos += 1
        return self.text[start : self.pos]

    def at_element_end(self) -> bool:
        """True if only whitespace remains before a comma or the end."""
        save = self.pos
        self.skip_ows()
        done = self.at_end() or self.peek() == ","
        self.pos = save
        return done

    # --- grammar ------------------------------------------------------------

    def parse(self) -> list[Challenge]:
        challenges: list[Challenge] = []
        self.skip_separators()
        while not self.at_end():
            challenges.append(self.challenge())
            self.skip_ows()
            if not self.at_end():
                if self.peek() != ",":
                    raise self.fail(f"unexpected {self.peek()!r}")
                self.skip_separators()
        if not challenges:
            raise self.fail("no challenge")
        return challenges

    def challenge(self) -> Challenge:
        scheme = self.token()
        if not scheme:
            if self.peek() == "=":
                raise self.fail("'=' without a parameter name or auth scheme")
            raise self.fail(f"expected an auth scheme, found {self.peek()!r}")
        if self.at_element_end():
            return Challenge(scheme)
        if self.peek() not in _OWS:
            # e.g. 'realm="x"' with no scheme in front of it.
            raise self.fail(f"missing auth scheme (found {self.peek()!r} after {scheme!r})")
        self.skip_ows()
        token68 = self.try_token68()
        if token68:
            return Challenge(scheme, token68=token68)
        return Challenge(scheme, self.params())

    def try_token68(self) -> str:
        """Consume a token68 if one stands alone here, else consume nothing."""
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in _TOKEN68:
            self.pos += 1
        if self.pos == start:
            return ""
        while self.pos < len(self.text) and self.text[self.pos] == "=":
            self.pos += 1
        if self.at_element_end():
            return self.text[start : self.pos]
        self.pos = start
        return ""

    def params(self) -> dict[str, str]:
        params: dict[str, str] = {}
        while True:
            key_at = self.pos
            key = self.token()
            if not key:
                if self.peek() == "=":
                    raise self.fail("'=' without a parameter name")
                raise self.fail(f"expected a parameter name, found {self.peek()!r}")
            self.skip_ows()
            if self.peek() != "=":
                self.pos = key_at
                raise self.fail(f"expected '=' after parameter name {key!r}")
            self.pos += 1
            self.skip_ows()
            value = self.value()
            lowered = key.lower()
            if lowered in params:
                # Two realms (say) would leave us guessing which one to trust.
                raise self.fail(f"parameter {key!r} given twice")
            params[lowered] = value
            if not self.at_element_end():
                raise self.fail(f"unexpected {self.peek()!r} after parameter {key!r}")
            if not self.next_is_param():
                return params

    def next_is_param(self) -> bool:
        """After a parameter: does the list continue with another parameter?

        A comma may separate two parameters of one challenge or two challenges;
        the element after it is a parameter only if its token is followed by
        ``=``. The cursor is left before the next element either way.
        """
        self.skip_ows()
        if self.at_end():
            return False
        save = self.pos
        self.skip_separators()
        if self.at_end():
            return False
        probe = self.pos
        name = self.token()
        self.skip_ows()
        if name and self.peek() == "=":
            self.pos = probe
            return True
        if not name and self.peek() == "=":
            raise self.fail("'=' without a parameter name")
        self.pos = save
        return False

    def value(self) -> str:
        if self.peek() == '"':
            return self.quoted_string()
        start = self.pos
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch in _OWS or ch in ',"\\' or ord(ch) < 0x21 or ord(ch) == 0x7F:
                break
            self.pos += 1
        if self.pos == start:
            raise self.fail("missing parameter value")
        return self.text[start : self.pos]

    def quoted_string(self) -> str:
        opened = self.pos
        self.pos += 1  # the opening quote
        chars: list[str] = []
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch == '"':
                self.pos += 1
                return "".join(chars)
            if ch == "\\":
                self.pos += 1
                if self.at_end():
                    break
                ch = self.text[self.pos]
            if _is_ctl(ch):
                raise self.fail(f"control character {ch!r} in quoted string")
            chars.append(ch)
            self.pos += 1
        self.pos = opened
        raise self.fail("unterminated quoted string")


def _is_ctl(ch: str) -> bool:
    """Control characters are never valid in a quoted string (tab excepted)."""
    code = ord(ch)
    return (code < 0x20 and ch != "\t") or code == 0x7F
