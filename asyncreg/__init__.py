"""asyncreg: move container images between registries, tars and OCI layouts, concurrently.

The public surface is small on purpose; everything else is an implementation
module that may change.
"""

from typing import TYPE_CHECKING

from .auth.credentials import Credential
from .config import HostConfig, Limits, RetryPolicy, Timeouts
from .digest import Digest
from .engine.progress import Event, EventKind, Progress, Statistics
from .errors import (
    AsyncregError,
    AuthError,
    CopyError,
    DigestMismatchError,
    InputError,
    IntegrityError,
    NotFoundError,
    RegistryError,
    TransportError,
)
from .manifest import Descriptor, Manifest
from .options import CopyOptions, CopyResult
from .platform import Platform
from .reference import LayoutReference, Reference, parse_location
from .store import Repo

__all__ = [
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

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """Import the network layer on first use, so pure modules stay free of aiohttp."""
    if name in ("Client", "CopyOutcome"):
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module 'asyncreg' has no attribute {name!r}")


if TYPE_CHECKING:
    from .client import Client, CopyOutcome
