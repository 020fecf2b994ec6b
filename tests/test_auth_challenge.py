"""Tests for asyncreg.auth.challenge: RFC 7235 WWW-Authenticate parsing."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncreg.auth.challenge import Challenge, parse_www_authenticate
from asyncreg.errors import AuthError

TCHAR = "!#$%&'*+-.^_`|~" + string.digits + string.ascii_letters
TOKEN68 = "-._~+/" + string.digits + string.ascii_letters


# --- a formatter for round trips ------------------------------------------------


def quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_challenge(ch: Challenge, *, bare_tokens: bool = True, sep: str = ", ") -> str:
    """Format a challenge the way a server might (tokens bare or quoted)."""
    if ch.token68:
        return f"{ch.scheme} {ch.token68}"
    if not ch.params:
        return ch.scheme
    parts = []
    for key, value in ch.params.items():
        bare = bare_tokens and value and all(c in TCHAR for c in value)
        parts.append(f"{key}={value if bare else quote(value)}")
    return f"{ch.scheme} {sep.join(parts)}"


# --- examples -------------------------------------------------------------------


def test_docker_hub_bearer() -> None:
    header = (
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/alpine:pull,push"'
    )
    (ch,) = parse_www_authenticate(header)
    assert ch.scheme == "bearer"
    assert ch.realm == "https://auth.docker.io/token"
    assert ch.service == "registry.docker.io"
    assert ch.scope == "repository:library/alpine:pull,push"
    assert ch.error is None


def test_basic_realm() -> None:
    (ch,) = parse_www_authenticate('Basic realm="Registry Realm"')
    assert ch == Challenge("basic", {"realm": "Registry Realm"})


def test_case_insensitive_scheme_and_keys_values_keep_case() -> None:
    (ch,) = parse_www_authenticate('BEARER Realm="HTTPS://X/Token", SERVICE=Reg')
    assert ch.scheme == "bearer"
    assert dict(ch.params) == {"realm": "HTTPS://X/Token", "service": "Reg"}


def test_error_param() -> None:
    header = 'Bearer realm="r",error="insufficient_scope",scope="repository:a:push"'
    (ch,) = parse_www_authenticate(header)
    assert ch.error == "insufficient_scope"


def test_several_challenges_in_one_header() -> None:
    header = 'Basic realm="a", Bearer realm="b", service="s" , Newauth'
    chs = parse_www_authenticate(header)
    assert chs == (
        Challenge("basic", {"realm": "a"}),
        Challenge("bearer", {"realm": "b", "service": "s"}),
        Challenge("newauth"),
    )


def test_several_headers() -> None:
    chs = parse_www_authenticate(['Basic realm="a"', 'Bearer realm="b",scope="x:y:z"'])
    assert [c.scheme for c in chs] == ["basic", "bearer"]
    assert chs[1].scope == "x:y:z"


def test_empty_sequence() -> None:
    assert parse_www_authenticate([]) == ()


def test_token68() -> None:
    chs = parse_www_authenticate("Basic dXNlcjpwYXNz==, Negotiate abc/+._~-")
    assert chs == (
        Challenge("basic", token68="dXNlcjpwYXNz=="),
        Challenge("negotiate", token68="abc/+._~-"),
    )


def test_token68_versus_param() -> None:
    # 'k=' alone is a token68; 'k=v' is a parameter.
    assert parse_www_authenticate("X k=") == (Challenge("x", token68="k="),)
    assert parse_www_authenticate("X k=v") == (Challenge("x", {"k": "v"}),)


def test_quoted_escapes_and_commas() -> None:
    header = r'Bearer realm="a\"b\\c", scope="repository:a:pull,push repository:b:pull"'
    (ch,) = parse_www_authenticate(header)
    assert ch.realm == 'a"b\\c'
    assert ch.scope == "repository:a:pull,push repository:b:pull"


def test_whitespace_tolerance() -> None:
    header = ' \t, Bearer \t realm = "r" ,  service\t=\ts ,, ,  Basic  '
    assert parse_www_authenticate(header) == (
        Challenge("bearer", {"realm": "r", "service": "s"}),
        Challenge("basic"),
    )


def test_unquoted_url_value_is_accepted() -> None:
    (ch,) = parse_www_authenticate("Bearer realm=https://auth.example/token?a=b,service=reg")
    assert ch.realm == "https://auth.example/token?a=b"
    assert ch.service == "reg"


def test_empty_quoted_value() -> None:
    (ch,) = parse_www_authenticate('Bearer realm="", scope=""')
    assert ch.realm == ""
    assert ch.scope == ""


def test_challenge_is_hashable_and_immutable() -> None:
    a = Challenge("Bearer", {"Realm": "r"})
    b = parse_www_authenticate('bearer realm="r"')[0]
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b}) == 1
    with pytest.raises(TypeError):
        a.params["realm"] = "x"  # type: ignore[index]


@pytest.mark.parametrize(
    ("header", "fragment"),
    [
        ('Bearer realm="unterminated', "unterminated quoted string"),
        ('Bearer realm="ends in backslash\\', "unterminated quoted string"),
        ('Bearer ="x"', "'=' without a parameter name"),
        ('Bearer realm="r", ="x"', "'=' without a parameter name"),
        ('realm="x"', "missing auth scheme"),
        ('="x"', "'=' without"),
        ("", "no challenge"),
        (" , ,", "no challenge"),
        ("Bearer realm=", None),  # a token68 ending in padding
        ("Bearer realm=,service=s", "missing auth scheme"),
        ("Bearer realm=x, service=", "missing parameter value"),
        ("Bearer realm=x, service=, scope=y", "missing parameter value"),
        ('Bearer realm="a" garbage', "unexpected"),
        ('Bearer realm="a"garbage', "unexpected"),
        ("Bearer realm=a b", "unexpected"),
        ('Bearer realm="a", realm="b"', "given twice"),
        ('Bearer realm="a", REALM="b"', "given twice"),
        ("Bearer @@@", "expected a parameter name"),
        ("Bearer realm", None),  # a token68; fine
        ("\u00e9t\u00e9 realm=x", "expected an auth scheme"),
        ('Bearer realm="a\x00b"', "control character"),
        ('Bearer realm="a\nb"', "control character"),
        ('"quoted"', "expected an auth scheme"),
        ("Basic abc==, def", None),
        ("Basic abc== def", "unexpected ' '"),
    ],
)
def test_malformed(header: str, fragment: str | None) -> None:
    if fragment is None:
        parse_www_authenticate(header)
        return
    with pytest.raises(AuthError, match="malformed WWW-Authenticate header") as info:
        parse_www_authenticate(header)
    assert fragment in str(info.value)
    assert info.value.status == 401


def test_error_quotes_truncated_header() -> None:
    header = 'Bearer realm="' + "x" * 5000
    with pytest.raises(AuthError) as info:
        parse_www_authenticate(header)
    message = str(info.value)
    assert "Bearer realm=" in message
    assert len(message) < 400


def test_non_string_value_is_refused() -> None:
    with pytest.raises(AuthError):
        parse_www_authenticate([b"Basic"])  # type: ignore[list-item]


# --- properties ------------------------------------------------------------------

HEADERISH = st.text(alphabet=TCHAR[:20] + ' \t,="\\=é\x00', max_size=60)


@settings(max_examples=500)
@given(st.one_of(st.text(max_size=80), HEADERISH))
def test_arbitrary_text_raises_only_asyncreg_errors(text: str) -> None:
    # Stricter than "only AsyncregError subclasses": the one error is AuthError.
    # Anything else (IndexError, ...) escapes and fails the test.
    try:
        result = parse_www_authenticate(text)
    except AuthError:
        return
    assert all(isinstance(c, Challenge) for c in result)


tokens = st.text(alphabet=TCHAR, min_size=1, max_size=10)
# qdtext plus anything escapable: no control characters except tab.
values = st.text(
    alphabet=st.characters(
        exclude_categories=["Cs"],
        exclude_characters="".join(map(chr, [*range(0x20), 0x7F])).replace("\t", ""),
    ),
    max_size=20,
)
token68s = st.builds(
    lambda body, pad: body + "=" * pad,
    st.text(alphabet=TOKEN68, min_size=1, max_size=12),
    st.integers(0, 2),
)


@st.composite
def challenges(draw: st.DrawFn) -> Challenge:
    scheme = draw(tokens)
    kind = draw(st.sampled_from(["bare", "token68", "params"]))
    if kind == "bare":
        return Challenge(scheme)
    if kind == "token68":
        return Challenge(scheme, token68=draw(token68s))
    keys = draw(st.lists(tokens, min_size=1, max_size=4, unique_by=str.lower))
    return Challenge(scheme, {k: draw(values) for k in keys})


@settings(max_examples=300)
@given(
    st.lists(challenges(), min_size=1, max_size=5),
    st.booleans(),
    st.sampled_from([", ", ",", " , ", "\t,\t"]),
    st.integers(1, 3),
)
def test_round_trip(chs: list[Challenge], bare_tokens: bool, sep: str, n_headers: int) -> None:
    formatted = [format_challenge(c, bare_tokens=bare_tokens, sep=sep) for c in chs]
    # Spread the challenges over up to n_headers header lines.
    size = -(-len(formatted) // n_headers)
    headers = [sep.join(formatted[i : i + size]) for i in range(0, len(formatted), size)]
    assert parse_www_authenticate(headers) == tuple(chs)
    assert parse_www_authenticate(sep.join(formatted)) == tuple(chs)
