"""Table tests of the registry layer's pure helpers: no sockets, no registry.

`retry` decides how long to wait, `link` follows tag-list pages, `answers`
turns an error answer into a typed exception and `config.is_loopback_host`
decides what counts as this machine. Each table row is one case a registry
(or a hostile one) can produce.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import format_datetime

import orjson
import pytest

from asyncreg.config import RetryPolicy, is_loopback_host
from asyncreg.errors import AuthError, NotFoundError, RateLimitError, RegistryError
from asyncreg.registry.answers import error_from_answer, parse_error_body
from asyncreg.registry.link import next_link
from asyncreg.registry.retry import RETRYABLE_STATUS, backoff_delay, parse_retry_after, retry_delay

# A fixed "now" so HTTP dates give exact answers.
NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC).timestamp()


def _http_date(offset: float) -> str:
    return format_datetime(datetime.fromtimestamp(NOW + offset, tz=UTC), usegmt=True)


# --- retry.parse_retry_after ---------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0.0),
        ("1", 1.0),
        ("120", 120.0),
        (" 7 ", 7.0),
        ("86400", 86400.0),
        (_http_date(30), 30.0),
        (_http_date(3600), 3600.0),
        (_http_date(-30), 0.0),  # a date in the past means "now", never negative
        ("Wed, 01 May 2024 12:00:10 GMT", 10.0),
        (None, None),
        ("", None),
        ("   ", None),
        ("soon", None),
        ("1.5", None),
        ("-5", None),
        ("0x10", None),
        ("Wed, 32 May 2024 12:00:10 GMT", None),
        ("\x00", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    got = parse_retry_after(value, now=NOW)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


def test_parse_retry_after_uses_the_clock_by_default() -> None:
    far = format_datetime(datetime(2999, 1, 1, tzinfo=UTC), usegmt=True)
    got = parse_retry_after(far)
    assert got is not None
    assert got > 365 * 86400


# --- retry.retry_delay -------------------------------------------------------------


@pytest.mark.parametrize("attempt", [1, 2, 3, 4, 5, 6, 7, 8])
def test_backoff_stays_within_its_exponential_ceiling(attempt: int) -> None:
    policy = RetryPolicy(attempts=100, backoff_base=0.2, backoff_cap=3.0)
    ceiling = min(3.0, 0.2 * 2 ** (attempt - 1))
    rng = random.Random(attempt)
    delays = [retry_delay(policy, attempt, rng=rng) for _ in range(200)]
    assert all(d is not None and 0.0 <= d <= ceiling for d in delays)
    # Full jitter: the delays spread over the range rather than sitting at one value.
    spread = [d for d in delays if d is not None]
    assert max(spread) - min(spread) > ceiling / 4


@pytest.mark.parametrize(
    ("attempts", "attempt", "gives_up"),
    [
        (1, 1, True),
        (3, 1, False),
        (3, 2, False),
        (3, 3, True),
        (3, 4, True),
        (5, 4, False),
        (5, 5, True),
    ],
)
def test_retry_delay_gives_up_after_the_last_attempt(
    attempts: int, attempt: int, gives_up: bool
) -> None:
    policy = RetryPolicy(attempts=attempts)
    delay = retry_delay(policy, attempt, rng=random.Random(0))
    assert (delay is None) is gives_up


@pytest.mark.parametrize(
    ("retry_after", "cap", "low", "high"),
    [
        (5.0, 60.0, 5.0, 5.0),  # the server asks for longer than the backoff: it wins
        (500.0, 60.0, 60.0, 60.0),  # ... up to the cap
        (500.0, 0.5, 0.5, 0.5),
        (0.0, 60.0, 0.0, 0.1),  # shorter than the backoff: the backoff stays
    ],
)
def test_retry_after_raises_the_delay_up_to_the_cap(
    retry_after: float, cap: float, low: float, high: float
) -> None:
    policy = RetryPolicy(attempts=5, backoff_base=0.1, backoff_cap=0.1, retry_after_cap=cap)
    for seed in range(50):
        delay = retry_delay(policy, 1, retry_after=retry_after, rng=random.Random(seed))
        assert delay is not None
        assert low <= delay <= high


def test_zero_backoff_base_never_waits() -> None:
    policy = RetryPolicy(attempts=10, backoff_base=0.0, backoff_cap=10.0)
    assert {backoff_delay(policy, n, random.Random(n)) for n in range(1, 10)} == {0.0}


def test_retryable_statuses() -> None:
    assert {408, 429, 500, 502, 503, 504} == RETRYABLE_STATUS
    assert 501 not in RETRYABLE_STATUS
    assert 400 not in RETRYABLE_STATUS


# --- link.next_link ---------------------------------------------------------------

BASE = "http://127.0.0.1:5000/v2/app/tags/list"


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], None),
        (['</v2/app/tags/list?n=2&last=b>; rel="next"'], BASE + "?n=2&last=b"),
        (["</v2/app/tags/list?n=2&last=b>; rel=next"], BASE + "?n=2&last=b"),
        (['</v2/app/tags/list?last=b>; REL="Next"'], BASE + "?last=b"),
        (['<?last=c>; rel="next"'], BASE + "?last=c"),
        (['<http://127.0.0.1:5000/v2/app/tags/list?last=d>; rel="next"'], BASE + "?last=d"),
        (['<HTTP://127.0.0.1:5000/v2/app/tags/list?last=d>; rel="next"'], BASE + "?last=d"),
        (['</v2/app/tags/list?last=a>; rel="prev"'], None),
        (
            ['</v2/app/tags/list?last=a>; rel="prev", </v2/app/tags/list?last=e>; rel="next"'],
            BASE + "?last=e",
        ),
        (
            ['</v2/app/tags/list?last=a>; rel="prev"', '</v2/app/tags/list?last=f>; rel="next"'],
            BASE + "?last=f",
        ),
        (['</v2/app/tags/list?last=g>; title="x, y"; rel="prev next"'], BASE + "?last=g"),
        (['</v2/app/tags/list?last=h>; type="a"; rel="next"'], BASE + "?last=h"),
        (['</v2/app/tags/list?last=i>; title="a; rel=next"'], None),  # inside a quoted string
        (['</v2/app/tags/list?last=j>;rel="next";title="\\"q\\""'], BASE + "?last=j"),
        (['</v2/app/tags/list?last=k>; anchor; rel="next"'], BASE + "?last=k"),
    ],
)
def test_next_link(values: list[str], expected: str | None) -> None:
    assert next_link(values, BASE) == expected


@pytest.mark.parametrize(
    "value",
    [
        '<http://127.0.0.2:5000/v2/app/tags/list?last=b>; rel="next"',  # other host
        '<http://127.0.0.1:5001/v2/app/tags/list?last=b>; rel="next"',  # other port
        '<https://127.0.0.1:5000/v2/app/tags/list?last=b>; rel="next"',  # other scheme
        '<//evil.example/v2/app/tags/list>; rel="next"',  # scheme-relative
        '<ftp://127.0.0.1:5000/x>; rel="next"',
    ],
)
def test_next_link_to_another_origin_is_refused(value: str) -> None:
    with pytest.raises(RegistryError, match="another origin"):
        next_link([value], BASE)


@pytest.mark.parametrize(
    "value",
    [
        '/v2/app/tags/list?last=b; rel="next"',  # no angle brackets
        '</v2/app/tags/list?last=b; rel="next"',  # unterminated
        '</v2/app/tags/list?last=b>; rel="prev" junk',
        '</v2/app/tags/list?last=b>; rel="next" junk',
        '</v2/app/tags/list?last=b>; rel="next"; <http://127.0.0.2/x>',
        '</v2/app/tags/list?last=b>; rel="prev"; </x>; rel="next"',
        "garbage",
    ],
)
def test_malformed_link_is_refused(value: str) -> None:
    with pytest.raises(RegistryError, match="malformed Link"):
        next_link([value], BASE)


# --- answers.error_from_answer -----------------------------------------------------


def _errors(*codes: str) -> bytes:
    return orjson.dumps(
        {"errors": [{"code": c, "message": f"{c.lower()} happened", "detail": None} for c in codes]}
    )


@pytest.mark.parametrize(
    ("status", "cls", "retryable"),
    [
        (400, RegistryError, False),
        (401, AuthError, False),
        (403, AuthError, False),
        (404, NotFoundError, False),
        (405, RegistryError, False),
        (408, RegistryError, True),
        (409, RegistryError, False),
        (413, RegistryError, False),
        (416, RegistryError, False),
        (429, RateLimitError, True),
        (500, RegistryError, True),
        (501, RegistryError, False),
        (502, RegistryError, True),
        (503, RegistryError, True),
        (504, RegistryError, True),
        (507, RegistryError, True),
    ],
)
def test_status_picks_the_class(status: int, cls: type[RegistryError], retryable: bool) -> None:
    err = error_from_answer(status, {}, b"", method="GET", url="http://r/v2/x", what="thing")
    assert type(err) is cls
    assert err.status == status
    assert err.retryable is retryable
    assert err.method == "GET"
    assert err.url == "http://r/v2/x"
    assert f"registry answered {status}" in str(err)
    assert "thing" in str(err)


@pytest.mark.parametrize(
    ("status", "codes"),
    [
        (404, ("MANIFEST_UNKNOWN",)),
        (404, ("NAME_UNKNOWN", "BLOB_UNKNOWN")),
        (400, ("DIGEST_INVALID",)),
        (400, ("MANIFEST_BLOB_UNKNOWN", "MANIFEST_INVALID")),
        (401, ("UNAUTHORIZED",)),
        (429, ("TOOMANYREQUESTS",)),
        (500, ("UNKNOWN",)),
    ],
)
def test_codes_are_kept(status: int, codes: tuple[str, ...]) -> None:
    err = error_from_answer(status, {}, _errors(*codes), method="PUT", url="u")
    assert err.codes == codes
    assert [e.message for e in err.errors] == [f"{c.lower()} happened" for c in codes]
    assert ", ".join(codes) in str(err)
    assert f"({codes[0].lower()} happened)" in str(err)


def test_rate_limit_keeps_retry_after() -> None:
    err = error_from_answer(429, {"Retry-After": "17"}, b"", method="GET", url="u")
    assert isinstance(err, RateLimitError)
    assert err.retry_after == 17.0
    err = error_from_answer(429, {}, b"", method="GET", url="u")
    assert isinstance(err, RateLimitError)
    assert err.retry_after is None


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'{"errors": "nope"}',
        b'{"errors": [1, "x", {"message": "no code"}]}',
        b'{"errors": [{"code": 5}]}',
        b"<html>502 Bad Gateway</html>",
    ],
)
def test_bodies_without_codes_give_no_codes(body: bytes) -> None:
    assert parse_error_body(body) == ()
    err = error_from_answer(502, {}, body, method="GET", url="u")
    assert err.codes == ()
    assert type(err) is RegistryError


def test_partly_valid_error_list_keeps_the_valid_entries() -> None:
    body = b'{"errors": [{"code": "A", "message": 3}, "junk", {"code": "B", "message": "m"}]}'
    err = error_from_answer(400, {}, body, method="GET", url="u")
    assert err.codes == ("A", "B")
    assert [e.message for e in err.errors] == ["", "m"]


# --- config.is_loopback_host ---------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("LOCALHOST", True),
        ("localhost:5000", True),
        ("127.0.0.1", True),
        ("127.0.0.1:5000", True),
        ("127.0.0.2:80", True),
        ("127.255.255.254", True),
        ("[::1]", True),
        ("[::1]:5000", True),
        ("::1", True),
        ("0:0:0:0:0:0:0:1", True),
        ("128.0.0.1", False),
        ("126.255.255.255:5000", False),
        ("10.0.0.1:5000", False),
        ("192.168.1.1", False),
        ("0.0.0.0", False),
        ("[::2]:5000", False),
        ("[::ffff:10.0.0.1]", False),
        ("example.com", False),
        ("localhost.example.com", False),
        ("mylocalhost", False),
        ("127.0.0.1.nip.io", False),
        ("registry-1.docker.io", False),
        ("", False),
    ],
)
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback
