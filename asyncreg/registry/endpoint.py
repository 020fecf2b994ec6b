"""`Endpoint`: the small value the upload, relay and fetch helpers work on.

They need a transport, a host, a repository name and its token scopes, not a
whole `RegistryRepo`; taking this value instead keeps them below the repo
(the repo imports them, they never import it back).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..auth.scope import Scope

if TYPE_CHECKING:
    from .http import Transport

__all__ = ["Endpoint"]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One repository of one registry, as the byte movers see it."""

    transport: Transport
    host: str
    name: str

    @property
    def pull_scopes(self) -> tuple[Scope, ...]:
        """Token scopes for reading the repository."""
        return (Scope("repository", self.name, frozenset({"pull"})),)

    @property
    def push_scopes(self) -> tuple[Scope, ...]:
        """Token scopes for writing the repository."""
        return (Scope("repository", self.name, frozenset({"pull", "push"})),)

    @property
    def chunked(self) -> bool:
        """Whether the host is configured to receive uploads as PATCH chunks."""
        return self.transport.host_config(self.host).chunked_upload

    @property
    def plain_http(self) -> bool:
        """Whether the host is spoken to over plain HTTP (only then can raw sockets serve)."""
        return self.transport.plain_http(self.host)

    def url(self, path_or_url: str) -> str:
        """An absolute URL for a path on this host (absolute URLs are kept)."""
        if path_or_url.startswith(("http://", "https://")):
            return path_or_url
        return self.transport.base_url(self.host) + path_or_url
