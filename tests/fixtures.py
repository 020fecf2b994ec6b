"""Pytest fixtures for real registries, image builders and seeding.

``tests/conftest.py`` star-imports this module, so every test can ask for
these by name. Registries are session-scoped because starting one costs a
tenth of a second and a fresh one per test buys nothing: tests stay apart by
using their own repository (`repo_name`). The variants (auth, TLS, second
registry) are separate session fixtures so they only start when a test in
the run asks for them.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

import pytest

from asyncreg.testkit.builder import BuiltImage, ImageBuilder, ImageSpec, Media
from asyncreg.testkit.registry import RegistryOptions, RegistryProcess
from asyncreg.testkit.skopeo import push_layout

__all__ = [
    "Seeder",
    "auth_registry",
    "builder",
    "registry",
    "registry_b",
    "repo_name",
    "seeded",
    "tls_registry",
]

# Repository names handed out this session, so two tests with the same name in
# different modules still get different repositories on the shared registry.
_USED_REPO_NAMES: set[str] = set()


def _start(options: RegistryOptions) -> Iterator[RegistryProcess]:
    with RegistryProcess(options) as reg:
        yield reg


@pytest.fixture(scope="session")
def registry() -> Iterator[RegistryProcess]:
    """The main plain-HTTP registry, deletes enabled, shared by the session."""
    yield from _start(RegistryOptions(delete=True))


@pytest.fixture(scope="session")
def registry_b() -> Iterator[RegistryProcess]:
    """A second registry: the destination of registry-to-registry copies."""
    yield from _start(RegistryOptions(delete=True))


@pytest.fixture(scope="session")
def auth_registry() -> Iterator[RegistryProcess]:
    """A registry with htpasswd basic auth: user ``alice``, random password.

    Read the credentials from ``.username`` / ``.password``.
    """
    yield from _start(RegistryOptions(htpasswd=("alice", secrets.token_urlsafe(12))))


@pytest.fixture(scope="session")
def tls_registry() -> Iterator[RegistryProcess]:
    """An HTTPS registry whose certificate a throw-away CA signed (``.ca_pem``)."""
    yield from _start(RegistryOptions(tls=True))


@pytest.fixture
def repo_name(request: pytest.FixtureRequest) -> str:
    """A repository name unique to this test, readable in registry logs.

    Derived from the test's node name (lower case, runs of other characters
    turned into ``-``) because repository path components only allow
    ``[a-z0-9]`` with single separators.
    """
    base = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:80].strip("-") or "test"
    name = f"t/{base}"
    n = 1
    while name in _USED_REPO_NAMES:
        n += 1
        name = f"t/{base}-{n}"
    _USED_REPO_NAMES.add(name)
    return name


@pytest.fixture
def builder(tmp_path: Path) -> ImageBuilder:
    """An `ImageBuilder` (seed 0) writing the OCI layout ``tmp_path / "layout"``."""
    return ImageBuilder(tmp_path / "layout", seed=0)


class Seeder(Protocol):
    """The `seeded` fixture's function: build, push with skopeo, return (image, ref)."""

    def __call__(
        self,
        spec: ImageSpec | None = None,
        *,
        tag: str = "latest",
        platforms: Sequence[str] = (),
        media: Media = "oci",
        repo: str | None = None,
    ) -> tuple[BuiltImage, str]: ...


@pytest.fixture
def seeded(builder: ImageBuilder, registry: RegistryProcess, repo_name: str) -> Seeder:
    """A function that builds an image (or an index when ``platforms`` is given),
    pushes it to `registry` with skopeo and returns ``(built, "HOST/REPO:TAG")``.

    ``media`` applies to an index and its children; for a single image set
    ``spec.media``. The repository defaults to this test's `repo_name`.
    """

    def seed(
        spec: ImageSpec | None = None,
        *,
        tag: str = "latest",
        platforms: Sequence[str] = (),
        media: Media = "oci",
        repo: str | None = None,
    ) -> tuple[BuiltImage, str]:
        if platforms:
            built = builder.index(tag, platforms, spec, media=media)
        else:
            built = builder.image(tag, spec)
        ref = push_layout(builder.root, tag, registry.host, repo or repo_name)
        return built, ref

    return seed
