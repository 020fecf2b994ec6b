"""The `Repo` protocol: what every place an image can live answers.

A registry repository, an OCI layout directory, a tar being written and a tar
being read all answer the same small async interface, so copy, export and
import are one operation between two repos. Optional abilities are flags
(``wants_manifest_first``, ``verifies_blobs``), a method that may answer
"no" (`Repo.mount_blob` returns False when it cannot mount), or small
protocols of their own: `BlobRelay` (a target that moves a blob without a
Python stream), `DirectSource` (a source that writes a blob into a file from a
worker thread), `FileBlobSource` (a source whose blobs lie in a local file).

Blob bodies move as `BlobSource`: a callable that opens a fresh async stream
of chunks. A sink that must retry re-opens the source instead of replaying a
consumed stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol, runtime_checkable

from .budget import Budget
from .digest import Digest, Verifier
from .manifest import Descriptor, Manifest

__all__ = [
    "BlobRelay",
    "BlobSource",
    "BlobStream",
    "DirectFetch",
    "DirectSource",
    "FileBlobSource",
    "PushCap",
    "Repo",
]


class BlobStream(Protocol):
    """An open blob body: iterate it for chunks, then it is closed."""

    size: int

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


#: Opens a fresh stream of a blob's bytes, starting at byte 0.
BlobSource = Callable[[], Awaitable[BlobStream]]


@runtime_checkable
class Repo(Protocol):
    """One repository of one store (registry repo, layout dir, tar)."""

    @property
    def key(self) -> str:
        """Identity of the repository, e.g. ``registry:host:5000/a/b``; used for single-flight."""
        ...

    @property
    def host(self) -> str:
        """The limit bucket this repo's transfers count against (registry host, or a path)."""
        ...

    #: The sink must receive a manifest before the blobs it references (a streaming tar).
    wants_manifest_first: bool
    #: The sink verifies blob digests itself (a registry does), so hashing here is redundant.
    verifies_blobs: bool

    async def manifest_head(self, reference: str | Digest) -> Descriptor | None:
        """Descriptor of a tag or digest, or None when absent."""
        ...

    async def manifest_get(self, reference: str | Digest) -> Manifest:
        """The manifest, raw bytes verified against a digest reference."""
        ...

    async def manifest_put(
        self, manifest: Manifest, tag: str | None = None, *, child: bool = False
    ) -> None:
        """Store the manifest's raw bytes, tagged when ``tag`` is given.

        ``child`` marks a manifest reached through a parent (an index entry, a
        referrer): a layout records only top-level manifests in its index.
        """
        ...

    async def blob_head(self, digest: Digest) -> int | None:
        """Size of the blob, or None when absent."""
        ...

    async def blob_open(
        self, desc: Descriptor, *, verify: bool = True, budget: Budget | None = None
    ) -> BlobStream:
        """Open the blob for reading; the stream checks size (and digest with ``verify``).

        Requests and resumes spend from ``budget`` (the blob's, when the engine
        moves it), or from budgets of their own.
        """
        ...

    async def blob_put(
        self,
        desc: Descriptor,
        source: BlobSource,
        *,
        budget: Budget | None = None,
        chunked: bool = False,
    ) -> None:
        """Store the blob, reading it from ``source``.

        With a ``budget`` this is one attempt (the engine retries, re-opening
        the source); without one the store retries on its own. ``chunked``
        asks a registry for PATCH chunks instead of one PUT.
        """
        ...

    async def mount_blob(self, desc: Descriptor, source: object) -> bool:
        """Make the blob available by reference to ``source`` without moving bytes."""
        ...

    async def tags(self) -> list[str]:
        """Every tag of the repository."""
        ...

    async def referrers(self, digest: Digest) -> list[Descriptor]:
        """Descriptors of the manifests whose ``subject`` is ``digest``."""
        ...


@runtime_checkable
class BlobRelay(Protocol):
    """Optional ability: move a blob from a source repo without passing through Python."""

    async def relay_blob(
        self,
        desc: Descriptor,
        source: object,
        on_bytes: Callable[[int], None],
        budget: Budget,
    ) -> bool:
        """Move ``desc`` from ``source`` (one attempt, spending from ``budget``).

        False means nothing was written and the caller should stream the blob;
        an exception is a failure of this attempt, for the caller's policy.
        """
        ...


class DirectFetch(Protocol):
    """A blob opened for writing straight into a file (see `DirectSource`)."""

    async def write_to(
        self, fd: int, at: int, verifier: Verifier, on_bytes: Callable[[int], None]
    ) -> None:
        """Write the blob at offset ``at`` of ``fd``; ``verifier`` checks it on the way."""
        ...

    def close(self) -> None:
        """Give the opened blob back unread."""
        ...


@runtime_checkable
class DirectSource(Protocol):
    """Optional ability: hand a blob's bytes to a file writer without a Python stream."""

    async def open_direct(self, desc: Descriptor, budget: Budget) -> DirectFetch | None:
        """Open ``desc`` for `DirectFetch.write_to`, or None when only streaming works."""
        ...


@runtime_checkable
class FileBlobSource(Protocol):
    """Optional ability: say where a blob's bytes lie in a local file (layouts, tars)."""

    async def blob_file(self, desc: Descriptor) -> tuple[str, int] | None:
        """``(path, offset)`` of the blob's ``desc.size`` bytes, or None."""
        ...


@runtime_checkable
class PushCap(Protocol):
    """Optional ability: the largest manifest this store accepts (a registry's cap).

    The engine checks it before moving any of a manifest's content, so a
    manifest that would be refused costs no upload.
    """

    @property
    def max_manifest_push(self) -> int:
        """Bytes."""
        ...
