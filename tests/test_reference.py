"""Tests for asyncreg.reference: grammar tables, normalisation and round-trip properties."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from asyncreg.digest import Digest
from asyncreg.errors import DigestFormatError, InputError, ReferenceError_
from asyncreg.reference import LayoutReference, Reference, parse_location

D256 = "sha256:" + "a" * 64
D512 = "sha512:" + "0123456789abcdef" * 8
DIG = Digest.parse(D256)


# --- valid registry references ------------------------------------------------

VALID = [
    # text, registry, repository, tag, digest, canonical str(), familiar()
    ("alpine", "docker.io", "library/alpine", None, None,
     "docker.io/library/alpine", "alpine"),
    ("alpine:3", "docker.io", "library/alpine", "3", None,
     "docker.io/library/alpine:3", "alpine:3"),
    ("library/alpine:3.19", "docker.io", "library/alpine", "3.19", None,
     "docker.io/library/alpine:3.19", "alpine:3.19"),
    ("docker.io/alpine", "docker.io", "library/alpine", None, None,
     "docker.io/library/alpine", "alpine"),
    ("index.docker.io/alpine", "docker.io", "library/alpine", None, None,
     "docker.io/library/alpine", "alpine"),
    ("registry-1.docker.io/user/app:v1", "docker.io", "user/app", "v1", None,
     "docker.io/user/app:v1", "user/app:v1"),
    ("Docker.IO/user/app", "docker.io", "user/app", None, None,
     "docker.io/user/app", "user/app"),
    ("user/app", "docker.io", "user/app", None, None, "docker.io/user/app", "user/app"),
    ("library/a/b", "docker.io", "library/a/b", None, None,
     "docker.io/library/a/b", "library/a/b"),
    ("docker.io/localhost/app", "docker.io", "localhost/app", None, None,
     "docker.io/localhost/app", "docker.io/localhost/app"),
    ("docker.io/a.b/c", "docker.io", "a.b/c", None, None,
     "docker.io/a.b/c", "docker.io/a.b/c"),
    ("localhost/app", "localhost", "app", None, None, "localhost/app", "localhost/app"),
    ("localhost:5000/a/b", "localhost:5000", "a/b", None, None,
     "localhost:5000/a/b", "localhost:5000/a/b"),
    ("host.example", "docker.io", "library/host.example", None, None,
     "docker.io/library/host.example", "host.example"),
    ("localhost:5000", "docker.io", "library/localhost", "5000", None,
     "docker.io/library/localhost:5000", "localhost:5000"),
    ("127.0.0.1:5000/repo:tag", "127.0.0.1:5000", "repo", "tag", None,
     "127.0.0.1:5000/repo:tag", "127.0.0.1:5000/repo:tag"),
    ("[::1]:5000/repo", "[::1]:5000", "repo", None, None,
     "[::1]:5000/repo", "[::1]:5000/repo"),
    ("[::1]/repo:1", "[::1]", "repo", "1", None, "[::1]/repo:1", "[::1]/repo:1"),
    ("[0:0:0:0:0:0:0:1]:443/r", "[::1]:443", "r", None, None, "[::1]:443/r", "[::1]:443/r"),
    ("[FE80::1]/r", "[fe80::1]", "r", None, None, "[fe80::1]/r", "[fe80::1]/r"),
    ("host.example:08080/r", "host.example:8080", "r", None, None,
     "host.example:8080/r", "host.example:8080/r"),
    ("Reg.Example.COM/team/app", "reg.example.com", "team/app", None, None,
     "reg.example.com/team/app", "reg.example.com/team/app"),
    ("my-reg.example/a.b/c_d/e__f/g--h/i-j", "my-reg.example", "a.b/c_d/e__f/g--h/i-j",
     None, None, "my-reg.example/a.b/c_d/e__f/g--h/i-j", "my-reg.example/a.b/c_d/e__f/g--h/i-j"),
    ("host.example/a/b/c/d/e:t", "host.example", "a/b/c/d/e", "t", None,
     "host.example/a/b/c/d/e:t", "host.example/a/b/c/d/e:t"),
    (f"alpine@{D256}", "docker.io", "library/alpine", None, DIG,
     f"docker.io/library/alpine@{D256}", f"alpine@{D256}"),
    (f"alpine:3@{D256}", "docker.io", "library/alpine", "3", DIG,
     f"docker.io/library/alpine:3@{D256}", f"alpine:3@{D256}"),
    (f"localhost:5000/a/b@{D256}", "localhost:5000", "a/b", None, DIG,
     f"localhost:5000/a/b@{D256}", f"localhost:5000/a/b@{D256}"),
    (f"host.example/repo:tag@{D512}", "host.example", "repo", "tag", Digest.parse(D512),
     f"host.example/repo:tag@{D512}", f"host.example/repo:tag@{D512}"),
    ("a:_Tag.With-Upper_", "docker.io", "library/a", "_Tag.With-Upper_", None,
     "docker.io/library/a:_Tag.With-Upper_", "a:_Tag.With-Upper_"),
    ("a:" + "t" * 128, "docker.io", "library/a", "t" * 128, None,
     "docker.io/library/a:" + "t" * 128, "a:" + "t" * 128),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest", "canonical", "familiar"), VALID
)
def test_parse_valid(
    text: str,
    registry: str,
    repository: str,
    tag: str | None,
    digest: Digest | None,
    canonical: str,
    familiar: str,
) -> None:
    ref = Reference.parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (
        registry,
        repository,
        tag,
        digest,
    )
    assert str(ref) == canonical
    assert ref.familiar() == familiar
    assert Reference.parse(canonical) == ref
    assert Reference.parse(familiar) == ref
    assert parse_location(text) == ref


def test_longest_name_is_accepted_and_one_more_is_not() -> None:
    repo = "a" * (255 - len("host.example/"))
    assert Reference.parse(f"host.example/{repo}").repository == repo
    with pytest.raises(ReferenceError_, match="more than 255"):
        Reference.parse(f"host.example/{repo}a")
    # The library/ prefix counts: docker.io/library/ is 18 characters.
    with pytest.raises(ReferenceError_, match="more than 255"):
        Reference.parse("a" * (255 - 17))


# --- invalid registry references ----------------------------------------------

INVALID = [
    ("", "empty"),
    (" alpine", "whitespace"),
    ("alpine :3", "whitespace"),
    ("alpine\n", "whitespace"),
    ("alp\tine", "whitespace"),
    ("Alpine", "lowercase"),
    ("user/App", "lowercase"),
    ("Foo/bar", "lowercase"),
    ("host.example/Repo:tag", "lowercase"),
    ("a//b", "empty path component"),
    ("/a", "empty path component"),
    ("a/", "empty path component"),
    ("host.example/", "empty repository"),
    ("a-", "invalid path component"),
    ("-a", "invalid path component"),
    ("a..b", "invalid path component"),
    ("a___b", "invalid path component"),
    ("a._b", "invalid path component"),
    ("a!b", "invalid path component"),
    ("caf\u00e9", "invalid path component"),
    ("alpine:", "empty tag"),
    ("alpine:.3", "invalid tag"),
    ("alpine:-3", "invalid tag"),
    ("alpine:a/b", "invalid port"),
    ("alpine:t!", "invalid tag"),
    ("alpine:" + "t" * 129, "invalid tag"),
    ("alpine@", "invalid digest"),
    ("alpine@sha256:abc", "invalid digest"),
    ("alpine@sha256:" + "A" * 64, "invalid digest"),
    ("alpine@md5:" + "a" * 32, "invalid digest"),
    (f"alpine@{D256}@{D256}", "invalid digest"),
    ("alpine@latest", "invalid digest"),
    ("host.example:0/r", "invalid port"),
    ("host.example:65536/r", "invalid port"),
    ("host.example:/r", "invalid port"),
    ("host.example:http/r", "invalid port"),
    ("host.example:" + "9" * 5000 + "/r", "invalid port"),
    ("host..example/r", "empty host component"),
    (".example/r", "empty host component"),
    ("host-.example/r", "invalid registry host"),
    ("my_host.example/r", "invalid registry host"),
    ("::1/r", "too many ':'"),
    ("[::1/r", "IPv6"),
    ("[::g]/r", "IPv6"),
    ("[1:2:3]/r", "IPv6"),
    ("[fe80::1%25eth0]/r", "IPv6"),
    ("[::1]x/r", "expected ':PORT'"),
    ("[::1]:99999/r", "invalid port"),
    ("a" * 64, "image ID"),
    ("docker://alpine", "drop it"),
    ("https://repo", "drop it"),
    ("oci-layout://dir", "ocidir://dir"),
    ("ftp://x", "unsupported scheme"),
]


@pytest.mark.parametrize(("text", "message"), INVALID)
def test_parse_invalid(text: str, message: str) -> None:
    with pytest.raises(ReferenceError_, match=message) as info:
        Reference.parse(text)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, InputError)
    with pytest.raises(ReferenceError_):
        parse_location(text)


def test_bad_digest_chains_the_digest_error() -> None:
    with pytest.raises(ReferenceError_) as info:
        Reference.parse("alpine@sha256:abc")
    causes = []
    exc: BaseException | None = info.value
    while exc is not None:
        causes.append(exc)
        exc = exc.__cause__
    assert any(isinstance(c, DigestFormatError) for c in causes)


def test_parse_refuses_non_strings() -> None:
    with pytest.raises(ReferenceError_):
        Reference.parse(b"alpine")  # type: ignore[arg-type]
    with pytest.raises(ReferenceError_):
        parse_location(None)  # type: ignore[arg-type]


# --- construction, properties, helpers ----------------------------------------


def test_constructor_normalises_and_validates() -> None:
    assert Reference("index.docker.io", "alpine") == Reference.parse("alpine")
    assert Reference("LOCALHOST:05000", "a").registry == "localhost:5000"
    with pytest.raises(ReferenceError_, match="must contain"):
        Reference("myhost", "a")
    with pytest.raises(ReferenceError_, match="lowercase"):
        Reference("host.example", "A")
    with pytest.raises(ReferenceError_, match="digest must be a Digest"):
        Reference("host.example", "a", digest=D256)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "api_host", "loopback"),
    [
        ("alpine", "registry-1.docker.io", False),
        ("index.docker.io/a/b", "registry-1.docker.io", False),
        ("docker.io:443/a", "docker.io:443", False),
        ("localhost/a", "localhost", True),
        ("localhost:5000/a", "localhost:5000", True),
        ("127.0.0.1/a", "127.0.0.1", True),
        ("127.8.9.10:5000/a", "127.8.9.10:5000", True),
        ("[::1]/a", "[::1]", True),
        ("[::1]:5000/a", "[::1]:5000", True),
        ("[::2]:5000/a", "[::2]:5000", False),
        ("128.0.0.1/a", "128.0.0.1", False),
        ("localhost.example/a", "localhost.example", False),
        ("ghcr.io/a/b", "ghcr.io", False),
    ],
)
def test_api_host_and_loopback(text: str, api_host: str, loopback: bool) -> None:
    ref = Reference.parse(text)
    assert ref.api_host == api_host
    assert ref.is_loopback is loopback


def test_with_tag_with_digest_and_reference() -> None:
    ref = Reference.parse(f"host.example/r:1@{D256}")
    assert ref.reference == D256
    tagged = ref.with_tag("2")
    assert (tagged.tag, tagged.digest, tagged.reference) == ("2", None, "2")
    pinned = tagged.with_digest(D512)
    assert (pinned.tag, str(pinned.digest), pinned.reference) == (None, D512, D512)
    assert tagged.with_digest(DIG).digest == DIG
    assert Reference.parse("host.example/r").reference == "latest"
    assert Reference.parse("host.example/r").tag is None
    with pytest.raises(ReferenceError_, match="invalid tag"):
        ref.with_tag("bad tag")
    with pytest.raises(ReferenceError_, match="invalid digest"):
        ref.with_digest("sha256:short")


def test_same_repository_and_registry() -> None:
    a = Reference.parse("alpine:3")
    assert a.same_repository(Reference.parse(f"docker.io/library/alpine@{D256}"))
    assert a.same_registry(Reference.parse("user/app"))
    assert not a.same_repository(Reference.parse("user/app"))
    assert not a.same_registry(Reference.parse("localhost/alpine"))
    assert not a.same_repository("docker.io/library/alpine")
    assert not a.same_registry(LayoutReference("dir"))


# --- OCI layout references ---------------------------------------------------

LAYOUT_VALID = [
    ("ocidir://dir", "dir", None, None),
    ("ocidir://dir:v1", "dir", "v1", None),
    (f"ocidir://dir@{D256}", "dir", None, DIG),
    (f"ocidir://dir:v1@{D256}", "dir", "v1", DIG),
    ("ocidir://./out/layout:latest", "./out/layout", "latest", None),
    ("ocidir://../up/x", "../up/x", None, None),
    ("ocidir:///abs/path/layout:1.0", "/abs/path/layout", "1.0", None),
    (f"ocidir:///abs/path@{D512}", "/abs/path", None, Digest.parse(D512)),
    ("ocidir://host:5000/dir:tag", "host:5000/dir", "tag", None),
    ("ocidir://C:/images/x:1", "C:/images/x", "1", None),
    ("ocidir://a@b/dir", "a@b/dir", None, None),
    ("ocidir://my images/x:Tag_1", "my images/x", "Tag_1", None),
    ("ocidir://dir/:t", "dir/", "t", None),
]


@pytest.mark.parametrize(("text", "path", "tag", "digest"), LAYOUT_VALID)
def test_layout_parse_valid(text: str, path: str, tag: str | None, digest: Digest | None) -> None:
    ref = LayoutReference.parse(text)
    assert (ref.path, ref.tag, ref.digest) == (path, tag, digest)
    assert str(ref) == text
    assert parse_location(text) == ref


LAYOUT_INVALID = [
    ("ocidir://", "empty"),
    ("ocidir://:tag", "empty"),
    (f"ocidir://@{D256}", "empty"),
    ("ocidir://dir:", "empty tag"),
    ("ocidir://dir:a:b", "last path segment"),
    ("ocidir://dir:bad!", "invalid tag"),
    ("ocidir://dir@sha256:abc", "invalid digest"),
    ("ocidir://dir@", "invalid digest"),
    ("ocidir://dir\x00x", "control"),
    ("ocidir://C:\\images\\x", "invalid tag"),
    ("dir:tag", "must start with"),
]


@pytest.mark.parametrize(("text", "message"), LAYOUT_INVALID)
def test_layout_parse_invalid(text: str, message: str) -> None:
    with pytest.raises(ReferenceError_, match=message):
        LayoutReference.parse(text)


def test_layout_helpers() -> None:
    ref = LayoutReference.parse("ocidir://out:v1")
    assert ref.reference == "v1"
    assert LayoutReference("out").reference == "latest"
    pinned = ref.with_digest(D256)
    assert (pinned.tag, pinned.reference, str(pinned)) == (None, D256, f"ocidir://out@{D256}")
    assert pinned.with_tag("v2") == LayoutReference("out", "v2")
    with pytest.raises(ReferenceError_):
        ref.with_tag("")
    with pytest.raises(ReferenceError_, match="last path segment"):
        LayoutReference("dir:tag")


def test_parse_location_dispatch() -> None:
    assert isinstance(parse_location("ocidir://x"), LayoutReference)
    assert isinstance(parse_location("x"), Reference)
    with pytest.raises(ReferenceError_, match="drop it and write 'alpine:3'"):
        parse_location("docker://alpine:3")
    with pytest.raises(ReferenceError_, match="ocidir://x"):
        parse_location("OCIDIR://x")


# --- properties ----------------------------------------------------------------

_alnum = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=6)
_sep = st.sampled_from([".", "_", "__", "-", "--", "---"])
_path_component = st.builds(
    lambda first, rest: first + "".join(s + a for s, a in rest),
    _alnum,
    st.lists(st.tuples(_sep, _alnum), max_size=3),
)
_repository = st.lists(_path_component, min_size=1, max_size=4).map("/".join)
_label = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,8}[A-Za-z0-9])?", fullmatch=True)
_port = st.integers(1, 65535).map(str)
_host = st.one_of(
    st.sampled_from(["docker.io", "index.docker.io", "localhost", "[::1]", "127.0.0.1"]),
    st.lists(_label, min_size=2, max_size=4).map(".".join),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
)
_registry = st.one_of(st.none(), _host, st.builds(lambda h, p: f"{h}:{p}", _host, _port))
_tag = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)
_digest = st.one_of(
    st.text("0123456789abcdef", min_size=64, max_size=64).map(lambda h: Digest("sha256", h)),
    st.text("0123456789abcdef", min_size=128, max_size=128).map(lambda h: Digest("sha512", h)),
)


@given(_registry, _repository, st.none() | _tag, st.none() | _digest)
def test_round_trip_generated(
    registry: str | None, repository: str, tag: str | None, digest: Digest | None
) -> None:
    first, slash, _ = repository.partition("/")
    # Without a registry, a first component with a "." would read as a host.
    assume(registry or not slash or "." not in first)
    text = (f"{registry}/" if registry else "") + repository
    text += (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
    ref = Reference.parse(text)
    assert ref.repository in (repository, f"library/{repository}")
    assert ref.tag == tag
    assert ref.digest == digest
    assert Reference.parse(str(ref)) == ref
    assert Reference.parse(ref.familiar()) == ref
    assert str(Reference.parse(str(ref))) == str(ref)


_segment = st.text(
    st.characters(min_codepoint=32, max_codepoint=0x2FF, blacklist_characters="/\x7f"),
    min_size=1,
    max_size=8,
)
_layout_path = st.builds(
    lambda lead, segs, last: lead + "/".join([*segs, last]),
    st.sampled_from(["", "/", "./", "../"]),
    st.lists(_segment, max_size=3),
    _segment.filter(lambda s: ":" not in s and "@" not in s),
)


@given(_layout_path, st.none() | _tag, st.none() | _digest)
def test_layout_round_trip(path: str, tag: str | None, digest: Digest | None) -> None:
    ref = LayoutReference(path, tag, digest)
    assert LayoutReference.parse(str(ref)) == ref
    assert parse_location(str(ref)) == ref


_reference_alphabet = st.sampled_from(
    [*"abcAZ09:/@.-_[]%", "sha256:", "a" * 64, "localhost", "ocidir://", "docker://"]
)


@given(st.one_of(st.text(), st.lists(_reference_alphabet).map("".join)))
def test_arbitrary_text_raises_only_input_errors(text: str) -> None:
    for parse in (Reference.parse, parse_location):
        try:
            ref = parse(text)
        except InputError:
            continue
        assert type(ref).parse(str(ref)) == ref  # whatever parses, round-trips
