"""Platform parsing, JSON, normalisation and matching."""

from __future__ import annotations

import platform as pyplatform

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asyncreg.errors import InputError, PlatformError
from asyncreg.platform import Platform

# --- parse ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("linux/amd64", Platform("linux", "amd64")),
        ("linux/arm64/v8", Platform("linux", "arm64", "v8")),
        ("linux/arm/v7", Platform("linux", "arm", "v7")),
        ("linux/ppc64le", Platform("linux", "ppc64le")),
        ("linux/x86_64", Platform("linux", "x86_64")),
        (
            "windows/amd64:10.0.17763.1234",
            Platform("windows", "amd64", os_version="10.0.17763.1234"),
        ),
        ("linux/arm/v7:5.10", Platform("linux", "arm", "v7", "5.10")),
        ("  linux/amd64\n", Platform("linux", "amd64")),
        ("unknown/unknown", Platform("unknown", "unknown")),
    ],
)
def test_parse_valid(text: str, expected: Platform) -> None:
    assert Platform.parse(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty platform"),
        ("   ", "empty platform"),
        ("linux", "missing architecture"),
        ("amd64", "missing architecture"),
        ("linux/", "architecture is empty"),
        ("/amd64", "os is empty"),
        ("linux/arm/", "variant is empty"),
        ("linux/arm/v7/extra", "too many '/'"),
        ("linux//amd64", "architecture is empty"),
        ("linux/amd 64", "architecture may hold only"),
        ("linux/amd64:", "os.version"),
        ("windows/amd64:10.0:1", "os.version"),
        ("lin@ux/amd64", "os may hold only"),
        ("linux/amd64/v1\x00", "variant may hold only"),
        ("linüx/amd64", "os may hold only"),
    ],
)
def test_parse_invalid(text: str, fragment: str) -> None:
    with pytest.raises(PlatformError) as info:
        Platform.parse(text)
    message = str(info.value)
    assert fragment in message
    assert "linux/amd64" in message  # every message shows a valid example


def test_parse_rejects_non_string() -> None:
    with pytest.raises(PlatformError):
        Platform.parse(42)  # type: ignore[arg-type]


def test_platform_error_is_value_error() -> None:
    with pytest.raises(ValueError, match="missing architecture"):
        Platform.parse("linux")
    assert issubclass(PlatformError, InputError)


@pytest.mark.parametrize(
    "text",
    ["linux/amd64", "linux/arm64/v8", "linux/arm/v7", "windows/amd64:10.0.17763.1234"],
)
def test_str_round_trip(text: str) -> None:
    assert str(Platform.parse(text)) == text


_part = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,15}\Z")
_version = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._+-]{0,15}\Z")


@given(
    os_=_part,
    arch=_part,
    variant=st.one_of(st.just(""), _part),
    os_version=st.one_of(st.just(""), _version),
)
def test_parse_str_round_trip_generated(os_: str, arch: str, variant: str, os_version: str) -> None:
    p = Platform(os_, arch, variant, os_version)
    assert Platform.parse(str(p)) == p


@given(st.text())
def test_parse_arbitrary_text_raises_only_platform_error(text: str) -> None:
    try:
        p = Platform.parse(text)
    except PlatformError:
        return
    assert Platform.parse(str(p)) == p


# --- JSON -----------------------------------------------------------------------


def test_from_json_full() -> None:
    obj = {
        "architecture": "amd64",
        "os": "windows",
        "os.version": "10.0.17763.1234",
        "os.features": ["win32k"],
        "variant": "",
        "features": ["ignored"],
    }
    p = Platform.from_json(obj)
    assert p == Platform("windows", "amd64", "", "10.0.17763.1234", ("win32k",))
    assert p.to_json() == {
        "architecture": "amd64",
        "os": "windows",
        "os.version": "10.0.17763.1234",
        "os.features": ["win32k"],
    }


def test_from_json_minimal_and_nulls() -> None:
    p = Platform.from_json(
        {"architecture": "arm", "os": "linux", "variant": None, "os.version": None}
    )
    assert p == Platform("linux", "arm")
    assert p.to_json() == {"architecture": "arm", "os": "linux"}


def test_to_json_from_json_round_trip() -> None:
    p = Platform("linux", "arm", "v7", "5.10", ("a", "b"))
    assert Platform.from_json(p.to_json()) == p
    assert list(p.to_json()) == ["architecture", "os", "os.version", "os.features", "variant"]


@pytest.mark.parametrize(
    "obj",
    [
        None,
        "linux/amd64",
        ["linux", "amd64"],
        {},
        {"os": "linux"},
        {"architecture": "amd64"},
        {"os": "", "architecture": "amd64"},
        {"os": "linux", "architecture": ""},
        {"os": 1, "architecture": "amd64"},
        {"os": "linux", "architecture": True},
        {"os": "linux", "architecture": "arm", "variant": 7},
        {"os": "linux", "architecture": "amd64", "os.version": 10},
        {"os": "linux", "architecture": "amd64", "os.features": "win32k"},
        {"os": "linux", "architecture": "amd64", "os.features": [1]},
    ],
)
def test_from_json_invalid(obj: object) -> None:
    with pytest.raises(PlatformError):
        Platform.from_json(obj)


def test_os_features_list_is_frozen_to_tuple() -> None:
    p = Platform("windows", "amd64", os_features=["a"])  # type: ignore[arg-type]
    assert p.os_features == ("a",)
    assert hash(p) == hash(Platform("windows", "amd64", os_features=("a",)))


# --- normalisation and matching -------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("linux/amd64", "linux/amd64"),
        ("linux/x86_64", "linux/amd64"),
        ("linux/x86-64", "linux/amd64"),
        ("linux/amd64/v1", "linux/amd64"),
        ("linux/amd64/v3", "linux/amd64/v3"),
        ("linux/aarch64", "linux/arm64/v8"),
        ("linux/arm64", "linux/arm64/v8"),
        ("linux/arm64/8", "linux/arm64/v8"),
        ("linux/arm64/v9", "linux/arm64/v9"),
        ("linux/arm", "linux/arm/v7"),
        ("linux/arm/7", "linux/arm/v7"),
        ("linux/arm/6", "linux/arm/v6"),
        ("linux/arm/v5", "linux/arm/v5"),
        ("linux/armhf", "linux/arm/v7"),
        ("linux/armel", "linux/arm/v6"),
        ("linux/i386", "linux/386"),
        ("linux/386", "linux/386"),
        ("Linux/AMD64", "linux/amd64"),
        ("macos/arm64", "darwin/arm64/v8"),
        ("windows/amd64:10.0.17763.1234", "windows/amd64:10.0.17763.1234"),
        ("linux/s390x", "linux/s390x"),
    ],
)
def test_normalized(given: str, expected: str) -> None:
    normal = Platform.parse(given).normalized()
    assert str(normal) == expected
    assert normal.normalized() == normal  # idempotent


@pytest.mark.parametrize(
    ("wanted", "candidate", "expected"),
    [
        ("linux/amd64", "linux/amd64", True),
        ("linux/amd64", "linux/x86_64", True),
        ("linux/amd64", "linux/amd64/v1", True),
        ("linux/amd64", "linux/amd64/v2", False),
        ("linux/arm64", "linux/arm64/v8", True),
        ("linux/arm64/v8", "linux/aarch64", True),
        ("linux/arm64", "linux/arm64/v9", False),
        ("linux/arm/v7", "linux/arm", True),
        ("linux/arm/v7", "linux/armhf", True),
        ("linux/arm/v6", "linux/armel", True),
        ("linux/arm/v6", "linux/arm/v7", False),
        ("linux/arm", "linux/arm/v6", False),
        ("linux/amd64", "linux/arm64", False),
        ("linux/amd64", "windows/amd64", False),
        ("linux/386", "linux/i386", True),
        # os.version: empty on either side matches any; both set must be equal.
        ("windows/amd64", "windows/amd64:10.0.17763.1234", True),
        ("windows/amd64:10.0.17763.1234", "windows/amd64:10.0.17763.1234", True),
        ("windows/amd64:10.0.17763.1234", "windows/amd64:10.0.20348.1", False),
        ("windows/amd64:10.0.17763.1234", "windows/amd64", True),
        ("linux/amd64", "unknown/unknown", False),
    ],
)
def test_matches(wanted: str, candidate: str, expected: bool) -> None:
    assert Platform.parse(wanted).matches(Platform.parse(candidate)) is expected


def test_matches_ignores_os_features() -> None:
    a = Platform("windows", "amd64", os_features=("win32k",))
    assert a.matches(Platform("windows", "amd64"))


@pytest.mark.parametrize(
    ("system", "machine", "expected"),
    [
        ("Linux", "x86_64", "linux/amd64"),
        ("Linux", "aarch64", "linux/arm64/v8"),
        ("Linux", "armv7l", "linux/arm/v7"),
        ("Linux", "armv6l", "linux/arm/v6"),
        ("Linux", "i686", "linux/386"),
        ("Linux", "ppc64le", "linux/ppc64le"),
        ("Linux", "s390x", "linux/s390x"),
        ("Darwin", "arm64", "darwin/arm64/v8"),
        ("Windows", "AMD64", "windows/amd64"),
        ("FreeBSD", "amd64", "freebsd/amd64"),
    ],
)
def test_host_mapping(
    monkeypatch: pytest.MonkeyPatch, system: str, machine: str, expected: str
) -> None:
    monkeypatch.setattr(pyplatform, "system", lambda: system)
    monkeypatch.setattr(pyplatform, "machine", lambda: machine)
    assert str(Platform.host()) == expected


def test_host_is_normalised_and_matches_itself() -> None:
    host = Platform.host()
    assert host == host.normalized()
    assert host.matches(host)
    assert host.os
    assert host.architecture
