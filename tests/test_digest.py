"""Digest parsing and the streaming Verifier."""

from __future__ import annotations

import hashlib
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asyncreg.digest import ALGORITHMS, Digest, Verifier, compute
from asyncreg.errors import (
    DigestFormatError,
    DigestMismatchError,
    InputError,
    SizeMismatchError,
)

SHA256_HEX = hashlib.sha256(b"hello").hexdigest()
SHA512_HEX = hashlib.sha512(b"hello").hexdigest()

# --- parse / str ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "algorithm", "hexpart"),
    [
        (f"sha256:{SHA256_HEX}", "sha256", SHA256_HEX),
        (f"sha512:{SHA512_HEX}", "sha512", SHA512_HEX),
        ("sha256:" + "0" * 64, "sha256", "0" * 64),
    ],
)
def test_parse_round_trip(text: str, algorithm: str, hexpart: str) -> None:
    digest = Digest.parse(text)
    assert digest.algorithm == algorithm
    assert digest.hex == hexpart
    assert str(digest) == text
    assert Digest.parse(str(digest)) == digest


def test_parse_passes_a_digest_through() -> None:
    digest = Digest.parse(f"sha256:{SHA256_HEX}")
    assert Digest.parse(digest) is digest


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_of_matches_hashlib(algorithm: str) -> None:
    data = b"some bytes \x00\xff"
    digest = Digest.of(data, algorithm)
    assert digest == compute(data, algorithm)
    assert str(digest) == f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"
    assert len(digest.hex) == ALGORITHMS[algorithm]


def test_tag_form() -> None:
    assert Digest.parse(f"sha256:{SHA256_HEX}").tag_form == f"sha256-{SHA256_HEX}"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(f"sha256:{SHA256_HEX.upper()}", id="upper-hex"),
        pytest.param("sha256:" + "A" + SHA256_HEX[1:], id="one-upper-char"),
        pytest.param(f"sha256:{SHA256_HEX[:-1]}", id="short-sha256"),
        pytest.param(f"sha256:{SHA256_HEX}0", id="long-sha256"),
        pytest.param(f"sha512:{SHA256_HEX}", id="sha512-with-sha256-length"),
        pytest.param(f"sha256:{SHA512_HEX}", id="sha256-with-sha512-length"),
        pytest.param(f"sha256:{SHA256_HEX[:-1]}\n", id="trailing-newline"),
        pytest.param(f"sha256:{SHA256_HEX[:-1]}g", id="non-hex"),
        pytest.param(f"md5:{SHA256_HEX}", id="unknown-algorithm"),
        pytest.param(f"SHA256:{SHA256_HEX}", id="upper-algorithm"),
        pytest.param(f" sha256:{SHA256_HEX}", id="leading-space"),
        pytest.param(SHA256_HEX, id="missing-colon"),
        pytest.param(f"sha256-{SHA256_HEX}", id="tag-form"),
        pytest.param("sha256:", id="empty-hex"),
        pytest.param("", id="empty"),
        pytest.param(f"sha256:{SHA256_HEX}:x", id="second-colon"),
    ],
)
def test_parse_refuses(text: str) -> None:
    with pytest.raises(DigestFormatError):
        Digest.parse(text)


@pytest.mark.parametrize(
    "value",
    [None, 123, f"sha256:{SHA256_HEX}".encode(), [f"sha256:{SHA256_HEX}"]],
    ids=["none", "int", "bytes", "list"],
)
def test_parse_refuses_non_strings(value: object) -> None:
    with pytest.raises(DigestFormatError, match="must be a string"):
        Digest.parse(value)


def test_format_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unsupported digest algorithm") as info:
        Digest.parse(f"md5:{SHA256_HEX}")
    assert isinstance(info.value, InputError)
    assert isinstance(info.value, DigestFormatError)


def test_constructor_validates_too() -> None:
    with pytest.raises(DigestFormatError):
        Digest("sha256", SHA256_HEX.upper())
    with pytest.raises(DigestFormatError):
        compute(b"x", "md5")


@given(st.text())
def test_parse_arbitrary_text_raises_only_format_errors(text: str) -> None:
    try:
        digest = Digest.parse(text)
    except DigestFormatError:
        return
    assert str(digest) == text


@given(st.sampled_from(sorted(ALGORITHMS)), st.binary())
def test_parse_accepts_every_computed_digest(algorithm: str, data: bytes) -> None:
    digest = Digest.of(data, algorithm)
    assert Digest.parse(str(digest)) == digest


# --- Verifier ---------------------------------------------------------------------

DATA = b"0123456789" * 10  # 100 bytes


def test_verifier_accepts_exact_stream() -> None:
    verifier = Verifier(Digest.of(DATA), len(DATA))
    for start in range(0, len(DATA), 30):
        verifier.update(DATA[start : start + 30])
    assert verifier.count == len(DATA)
    assert verifier.remaining == 0
    verifier.finish()


def test_verifier_accepts_memoryview_and_bytearray() -> None:
    verifier = Verifier(Digest.of(DATA), len(DATA))
    verifier.update(memoryview(DATA)[:50])
    verifier.update(bytearray(DATA[50:]))
    verifier.finish()


def test_verifier_refuses_overrun_at_the_chunk_that_overruns() -> None:
    verifier = Verifier(Digest.of(DATA), len(DATA), what="blob x")
    verifier.update(DATA[:60])
    verifier.update(DATA[60:90])
    with pytest.raises(SizeMismatchError, match="blob x") as info:
        verifier.update(DATA[90:] + b"!")
    assert info.value.expected == len(DATA)
    assert info.value.actual == len(DATA) + 1
    # The refused chunk was neither counted nor hashed.
    assert verifier.count == 90
    assert verifier.remaining == 10
    assert verifier.actual() == Digest.of(DATA[:90])


def test_verifier_refuses_a_single_oversized_chunk() -> None:
    verifier = Verifier(Digest.of(b""), 0)
    with pytest.raises(SizeMismatchError):
        verifier.update(b"x")
    assert verifier.count == 0
    verifier.finish()  # still the exact (empty) stream


def test_verifier_refuses_short_stream_at_finish() -> None:
    verifier = Verifier(Digest.of(DATA), len(DATA))
    verifier.update(DATA[:-1])
    with pytest.raises(SizeMismatchError) as info:
        verifier.finish()
    assert info.value.expected == len(DATA)
    assert info.value.actual == len(DATA) - 1


def test_verifier_refuses_wrong_bytes() -> None:
    wrong = DATA[:-1] + b"X"
    verifier = Verifier(Digest.of(DATA), len(DATA))
    verifier.update(wrong)
    with pytest.raises(DigestMismatchError) as info:
        verifier.finish()
    assert info.value.expected == str(Digest.of(DATA))
    assert info.value.actual == str(Digest.of(wrong))


def test_verifier_sha512() -> None:
    good = Verifier(Digest.of(DATA, "sha512"), len(DATA))
    good.update(DATA)
    good.finish()
    bad = Verifier(Digest.of(DATA, "sha512"), len(DATA))
    bad.update(DATA[::-1])
    with pytest.raises(DigestMismatchError) as info:
        bad.finish()
    assert info.value.actual == str(Digest.of(DATA[::-1], "sha512"))


def test_verifier_unknown_size_checks_only_the_digest() -> None:
    verifier = Verifier(Digest.of(DATA))
    assert verifier.size == -1
    assert verifier.remaining == -1
    verifier.update(DATA)
    verifier.finish()

    longer = Verifier(Digest.of(DATA), -1)
    longer.update(DATA)
    longer.update(b"more")  # no size to overrun
    with pytest.raises(DigestMismatchError):
        longer.finish()


@given(st.binary(max_size=4096), st.lists(st.integers(min_value=0, max_value=4096)))
def test_verifier_accepts_any_chunking(data: bytes, cuts: list[int]) -> None:
    points = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    verifier = Verifier(Digest.of(data), len(data))
    for start, end in itertools.pairwise(points):
        verifier.update(data[start:end])
    assert verifier.count == len(data)
    verifier.finish()


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("latest", None),
        ("v1.2", None),
        ("sha256:" + "a" * 64, "sha256:" + "a" * 64),
        ("repo@sha256:" + "b" * 64, "sha256:" + "b" * 64),
        ("weird:tag", None),
    ],
)
def test_digest_in_tells_tags_from_digests(reference: str, expected: str | None) -> None:
    from asyncreg.digest import digest_in

    got = digest_in(reference)
    assert (str(got) if got else None) == expected


def test_digest_in_refuses_malformed_digests() -> None:
    from asyncreg.digest import digest_in

    with pytest.raises(DigestFormatError):
        digest_in("sha256:abc")
    with pytest.raises(DigestFormatError):
        digest_in("name@nothing")
