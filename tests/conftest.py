"""Shared pytest fixtures: async backend selection.

Registry, proxy and builder fixtures live in ``tests/fixtures.py`` and are
re-exported here so every test module can use them.
"""

from __future__ import annotations

import pytest

from tests.fixtures import *  # noqa: F403 - re-export the shared fixtures


@pytest.fixture
def anyio_backend() -> str:
    """asyncreg targets asyncio (aiohttp needs it)."""
    return "asyncio"
