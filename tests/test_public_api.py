"""The public surface of the package: names, version, and what a pure import loads."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import asyncreg

ROOT = Path(__file__).resolve().parent.parent

PUBLIC = [
    "AsyncregError",
    "AuthError",
    "Client",
    "CopyError",
    "CopyOptions",
    "CopyOutcome",
    "CopyResult",
    "Credential",
    "Descriptor",
    "Digest",
    "DigestMismatchError",
    "Event",
    "EventKind",
    "HostConfig",
    "InputError",
    "IntegrityError",
    "LayoutReference",
    "Limits",
    "Manifest",
    "NotFoundError",
    "Platform",
    "Progress",
    "Reference",
    "RegistryError",
    "Repo",
    "RetryPolicy",
    "Statistics",
    "Timeouts",
    "TransportError",
    "parse_location",
]

PURE_MODULES = [
    "asyncreg.reference",
    "asyncreg.manifest",
    "asyncreg.digest",
    "asyncreg.platform",
    "asyncreg.mediatypes",
]


def test_all_is_pinned() -> None:
    assert asyncreg.__all__ == PUBLIC


def test_all_is_sorted_without_duplicates() -> None:
    assert asyncreg.__all__ == sorted(set(asyncreg.__all__))


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_name_resolves(name: str) -> None:
    assert getattr(asyncreg, name) is not None


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = asyncreg.no_such_name


def test_version_matches_pyproject() -> None:
    with (ROOT / "pyproject.toml").open("rb") as f:
        project = tomllib.load(f)["project"]
    assert asyncreg.__version__ == project["version"]


def _loaded_after(code: str) -> str:
    probe = f"import sys; {code}; print('aiohttp' in sys.modules, 'aiofiles' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout.strip()


def test_pure_modules_load_neither_aiohttp_nor_aiofiles() -> None:
    assert _loaded_after(f"import {', '.join(PURE_MODULES)}") == "False False"


def test_the_probe_sees_aiohttp_when_the_client_is_asked_for() -> None:
    # Guards the test above: the lazy `Client` does pull in the network layer.
    assert _loaded_after("import asyncreg; asyncreg.Client").startswith("True ")
