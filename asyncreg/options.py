"""Options and results of copy jobs, as frozen values (keywords only)."""

from __future__ import annotations

from dataclasses import dataclass

from .digest import Digest
from .errors import ConfigError
from .platform import Platform

__all__ = ["CopyOptions", "CopyResult"]


@dataclass(frozen=True, slots=True, kw_only=True)
class CopyOptions:
    """What a copy moves, after regclient's ImageCopy options.

    - ``force_recursive``: walk and repair every child even when the target
      already holds the top digest.
    - ``fast``: trust a matching top digest and skip (default); with
      ``fast=False`` a matching top manifest is still walked, HEAD-checking every
      child and blob without moving what is present.
    - ``platforms``: copy only these entries of an index but push the original
      index, as regclient does. The index then names children the target does
      not hold; registries that validate indexes refuse it. Use
      ``filter_index=True`` to push a new index of just these platforms
      instead (new digest, accepted everywhere).
    - ``platform``: resolve an index to the one image for this platform; the
      target tag points at that image manifest.
    - ``include_external``: also copy layers that carry ``urls`` (foreign or
      non-distributable layers); skipped by default, like regclient.
    - ``referrers``: copy every manifest whose ``subject`` is a copied manifest
      (referrers API or ``sha256-<hex>`` tag fallback, on both sides).
    - ``digest_tags``: copy ``<alg>-<hex>*`` tags (cosign's signatures,
      attestations) of each copied manifest.
    - ``child``: the copied manifest is a child: a layout target records it
      without a name in ``index.json``.
    """

    force_recursive: bool = False
    fast: bool = True
    platforms: tuple[str, ...] = ()
    filter_index: bool = False
    platform: str | None = None
    include_external: bool = False
    referrers: bool = False
    digest_tags: bool = False
    child: bool = False

    def __post_init__(self) -> None:
        for text in self.platforms:
            Platform.parse(text)
        if self.platform is not None:
            Platform.parse(self.platform)
            if self.platforms:
                raise ConfigError("use either platform (one image) or platforms (index entries)")
        if self.filter_index and not self.platforms:
            raise ConfigError("filter_index needs platforms to filter by")

    def wanted_platforms(self) -> tuple[Platform, ...]:
        """``platforms`` parsed."""
        return tuple(Platform.parse(p) for p in self.platforms)


@dataclass(frozen=True, slots=True, kw_only=True)
class CopyResult:
    """What one copy did. ``digest`` is what the target tag now points at."""

    source: str
    target: str
    digest: Digest
    media_type: str
    platforms: tuple[str, ...] = ()
    skipped: bool = False
    blobs_moved: int = 0
    blobs_skipped: int = 0
    blobs_mounted: int = 0
    manifests_pushed: int = 0
    #: Each blob's bytes once, however many attempts it took.
    bytes_moved: int = 0
    #: Requests, resumes and transfers tried again; 429 answers; uploads sent in
    #: chunks after a registry refused one PUT.
    retries: int = 0
    rate_limited: int = 0
    fallbacks: int = 0
    duration: float = 0.0
