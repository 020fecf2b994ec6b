"""Tests for asyncreg.auth.scope: docker token scopes and the token cache."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asyncreg.auth.scope import (
    DEFAULT_TOKEN_LIFETIME,
    Scope,
    TokenCache,
    covers,
    merge_scopes,
    mount,
    parse_scopes,
    pull,
    push,
    scope_key,
)
from asyncreg.errors import AuthError

# --- Scope ------------------------------------------------------------------------


def test_parse_and_str() -> None:
    s = Scope.parse("repository:library/alpine:push,pull")
    assert s == Scope("repository", "library/alpine", frozenset({"pull", "push"}))
    assert str(s) == "repository:library/alpine:pull,push"


def test_registry_catalog() -> None:
    s = Scope.parse("registry:catalog:*")
    assert (s.resource_type, s.name, s.actions) == ("registry", "catalog", frozenset({"*"}))
    assert str(s) == "registry:catalog:*"


def test_name_with_port_prefix() -> None:
    s = Scope.parse("repository:localhost:5000/team/app:pull")
    assert s.name == "localhost:5000/team/app"
    assert str(s) == "repository:localhost:5000/team/app:pull"


def test_resource_class() -> None:
    s = Scope.parse("repository(plugin):vieux/sshfs:pull")
    assert s.resource_type == "repository(plugin)"


def test_actions_coerced_to_frozenset() -> None:
    s = Scope("repository", "a", {"pull"})  # type: ignore[arg-type]
    assert isinstance(s.actions, frozenset)
    assert hash(s) == hash(pull("a"))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "repository",
        "repository:foo",
        "repository::pull",
        ":foo:pull",
        "repository:foo:",
        "repository:foo:pull,,push",
        "repository:foo:pull,",
        "repository:fo o:pull",
        "repository:foo:pu ll",
    ],
)
def test_parse_malformed(text: str) -> None:
    with pytest.raises(AuthError):
        Scope.parse(text)


def test_parse_scopes() -> None:
    assert parse_scopes(" repository:a:pull  repository:b:pull,push ") == (pull("a"), push("b"))
    assert parse_scopes("") == ()


def test_helpers() -> None:
    assert str(pull("a/b")) == "repository:a/b:pull"
    assert str(push("a/b")) == "repository:a/b:pull,push"
    assert mount("dst", "src") == (pull("src"), push("dst"))


def test_merge_scopes() -> None:
    merged = merge_scopes(
        [
            Scope.parse("repository:b:push"),
            pull("a"),
            Scope.parse("repository:b:pull"),
            Scope.parse("registry:catalog:*"),
            pull("a"),
        ]
    )
    assert [str(s) for s in merged] == [
        "registry:catalog:*",
        "repository:a:pull",
        "repository:b:pull,push",
    ]
    assert merge_scopes([]) == ()


def test_scope_key_is_canonical() -> None:
    a = scope_key([pull("x"), Scope.parse("repository:y:push"), pull("y")])
    b = scope_key([push("y"), pull("x"), pull("x")])
    assert a == b == "repository:x:pull repository:y:pull,push"


scopes = st.builds(
    Scope,
    st.sampled_from(["repository", "registry"]),
    st.sampled_from(["a", "b/c", "host:5000/d"]),
    st.frozensets(st.sampled_from(["pull", "push", "delete", "*"]), min_size=1),
)


@given(st.lists(scopes, max_size=6), st.randoms())
def test_scope_key_order_insensitive(items: list[Scope], rnd: random.Random) -> None:
    shuffled = list(items)
    rnd.shuffle(shuffled)
    assert scope_key(items) == scope_key(shuffled)
    assert merge_scopes(items) == merge_scopes(shuffled)
    assert covers(merge_scopes(items), items)
    for s in merge_scopes(items):
        assert Scope.parse(str(s)) == s


def test_covers() -> None:
    assert covers([push("a")], [pull("a")])
    assert covers([push("a")], [push("a")])
    assert not covers([pull("a")], [push("a")])
    # push alone does not imply pull
    assert not covers([Scope.parse("repository:a:push")], [pull("a")])
    # '*' covers everything on its resource, only there
    assert covers([Scope.parse("repository:a:*")], [push("a"), Scope.parse("repository:a:delete")])
    assert not covers([Scope.parse("repository:a:*")], [pull("b")])
    assert covers([Scope.parse("registry:catalog:*")], [Scope.parse("registry:catalog:*")])
    assert not covers([pull("a")], [Scope.parse("repository:a:*")])
    # split grants add up
    assert covers([pull("a"), Scope.parse("repository:a:push")], [push("a")])
    # different types never mix
    assert not covers([Scope.parse("registry:a:pull")], [pull("a")])
    assert covers([], [])
    assert covers([pull("a")], [])


# --- TokenCache ---------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_cache_default_lifetime(clock: FakeClock) -> None:
    cache = TokenCache(now=clock)
    cache.put("reg", [pull("a")], "t1")
    assert cache.get("reg", [pull("a")]) == "t1"
    # 60 s default lifetime, retired 6 s (a tenth) early
    clock.t += 53.9
    assert cache.get("reg", [pull("a")]) == "t1"
    clock.t += 0.2
    assert cache.get("reg", [pull("a")]) is None
    assert DEFAULT_TOKEN_LIFETIME == 60


def test_cache_long_lifetime_caps_margin(clock: FakeClock) -> None:
    cache = TokenCache(now=clock)
    cache.put("reg", [pull("a")], "t1", expires_in=3600)
    clock.t += 3569.9
    assert cache.get("reg", [pull("a")]) == "t1"
    clock.t += 0.2
    assert cache.get("reg", [pull("a")]) is None


@pytest.mark.parametrize("bad", [None, 0, -5, math.nan, math.inf])
def test_cache_bad_expires_in_means_default(clock: FakeClock, bad: float | None) -> None:
    cache = TokenCache(now=clock)
    cache.put("reg", [pull("a")], "t1", expires_in=bad)
    clock.t += 53
    assert cache.get("reg", [pull("a")]) == "t1"
    clock.t += 2
    assert cache.get("reg", [pull("a")]) is None


def test_cache_issued_at_counts_request_time(clock: FakeClock) -> None:
    cache = TokenCache(now=clock)
    sent = clock()
    clock.t += 50  # a slow token server
    cache.put("reg", [pull("a")], "t1", expires_in=60, issued_at=sent)
    clock.t += 3.9
    assert cache.get("reg", [pull("a")]) == "t1"
    clock.t += 0.2
    assert cache.get("reg", [pull("a")]) is None


def test_cache_keys_on_host_and_scopes(clock: FakeClock) -> None:
    cache = TokenCache(now=clock)
    cache.put("reg", [pull("a")], "ta")
    assert cache.get("REG", [pull("a")]) == "ta"
    assert cache.get("other", [pull("a")]) is None
    assert cache.get("reg", [pull("b")]) is None
    assert cache.get("reg", [push("a")]) is None


def test_cache_broader_token_serves_narrower_request(clock: FakeClock) -> None:
    cache = TokenCache(now=clock)
    cache.put("reg", [push("a"), pull("b")], "wide")
    assert cache.get("reg", [pull("a")]) == "wide"
    assert cache.get("reg", [pull("b"), pull("a")]) == "wide"
    assert cache.get("reg", [push("b")]) is None
    # scope order and duplicates do not matter for exact hits either
    assert cache.get("reg", [pull("b"), push("a"), pull("a")]) == "wide"


def test_cache_prefers_longest_lived_cover(clock: FakeClock) -> None:
    cache = TokenCache(now=clock)
    cache.put("reg", [push("a")], "short", expires_in=60)
    cache.put("reg", [Scope.parse("repository:a:*")], "long", expires_in=600)
    assert cache.get("reg", [pull("a")]) == "long"


def test_cache_replace_and_invalidate(clock: FakeClock) -> None:
    cache = TokenCache(now=clock)
    cache.put("reg", [pull("a")], "old")
    cache.put("reg", [pull("a")], "new")
    assert cache.get("reg", [pull("a")]) == "new"
    cache.put("reg", [push("b")], "new")
    cache.put("other", [pull("a")], "new")
    assert cache.invalidate("reg", "new") == 2
    assert cache.get("reg", [pull("a")]) is None
    assert cache.get("reg", [pull("b")]) is None
    assert cache.get("other", [pull("a")]) == "new"
    assert cache.invalidate("reg", "nothing") == 0
    cache.clear()
    assert len(cache) == 0


def test_cache_prunes_expired_and_bounds_size(clock: FakeClock) -> None:
    cache = TokenCache(now=clock, max_entries=3)
    cache.put("reg", [pull("a")], "a", expires_in=60)
    clock.t += 100
    cache.put("reg", [pull("b")], "b", expires_in=600)
    assert len(cache) == 1  # the expired one is gone
    cache.put("reg", [pull("c")], "c", expires_in=100)
    cache.put("reg", [pull("d")], "d", expires_in=700)
    cache.put("reg", [pull("e")], "e", expires_in=800)
    assert len(cache) == 3
    assert cache.get("reg", [pull("c")]) is None  # evicted: it would die first
    assert {cache.get("reg", [pull(n)]) for n in "bde"} == {"b", "d", "e"}


def test_cache_rejects_silly_size() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        TokenCache(max_entries=0)
