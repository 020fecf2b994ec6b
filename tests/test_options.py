"""CopyOptions validation and keyword-only construction."""

from __future__ import annotations

from typing import Any

import pytest

from asyncreg.digest import Digest
from asyncreg.errors import ConfigError, PlatformError
from asyncreg.options import CopyOptions, CopyResult
from asyncreg.platform import Platform


def test_defaults() -> None:
    options = CopyOptions()
    assert options.fast is True
    assert options.force_recursive is False
    assert options.platforms == ()
    assert options.platform is None
    assert options.wanted_platforms() == ()


def test_wanted_platforms_are_parsed() -> None:
    options = CopyOptions(platforms=("linux/amd64", "linux/arm/v7"))
    assert options.wanted_platforms() == (
        Platform("linux", "amd64"),
        Platform("linux", "arm", "v7"),
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"platforms": ("linux",)},
        {"platforms": ("linux/amd64", "")},
        {"platforms": ("linux/amd64/v1/extra",)},
        {"platforms": "linux/amd64"},  # a bare string is not a tuple of platforms
        {"platform": "amd64"},
        {"platform": ""},
        {"platform": "linux/amd 64"},
        {"platform": "linux/amd64:"},
    ],
)
def test_bad_platform_strings(kwargs: dict[str, Any]) -> None:
    with pytest.raises(PlatformError):
        CopyOptions(**kwargs)


def test_platform_and_platforms_conflict() -> None:
    with pytest.raises(ConfigError, match="either platform"):
        CopyOptions(platform="linux/amd64", platforms=("linux/arm64",))


def test_filter_index_needs_platforms() -> None:
    with pytest.raises(ConfigError, match="filter_index"):
        CopyOptions(filter_index=True)
    assert CopyOptions(filter_index=True, platforms=("linux/amd64",)).filter_index


def test_single_platform_accepted() -> None:
    assert CopyOptions(platform="windows/amd64:10.0.17763").platform == "windows/amd64:10.0.17763"


def test_options_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        CopyOptions(True)  # type: ignore[call-arg]


def test_result_is_keyword_only() -> None:
    digest = Digest.of(b"x")
    with pytest.raises(TypeError):
        CopyResult("src", "dst", digest, "application/json")  # type: ignore[call-arg]
    result = CopyResult(source="src", target="dst", digest=digest, media_type="m")
    assert (result.skipped, result.blobs_moved, result.platforms) == (False, 0, ())


def test_options_are_frozen() -> None:
    options = CopyOptions()
    with pytest.raises(AttributeError):
        options.fast = False  # type: ignore[misc]
