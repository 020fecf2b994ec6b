"""The referrers tag schema (OCI distribution spec, "Referrers Tag Schema").

A store without a referrers API keeps, for each subject, an index tagged
``<alg>-<hex>`` (``sha256-<hex>``) that lists the manifests whose ``subject``
is that digest. Registries without the API (distribution 2.8) and OCI layouts
both use it, through any `Repo`: read the index, add the new descriptor
(with its ``artifactType`` and annotations, as the spec asks), push it back.
Updates of one subject are serialised by the caller's lock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .digest import Digest
from .errors import NotFoundError
from .manifest import Descriptor, Manifest, build_index

if TYPE_CHECKING:
    from .store import Repo

__all__ = ["fallback_add", "fallback_list"]


async def fallback_index(repo: Repo, subject: Digest) -> Manifest | None:
    """The fallback index of ``subject``, or None."""
    try:
        index = await repo.manifest_get(subject.tag_form)
    except NotFoundError:
        return None
    return index if index.is_index else None


async def fallback_list(repo: Repo, subject: Digest) -> list[Descriptor]:
    """Descriptors of the referrers of ``subject`` per the tag schema."""
    index = await fallback_index(repo, subject)
    return [] if index is None else list(index.manifests)


async def fallback_add(repo: Repo, manifest: Manifest) -> None:
    """Add ``manifest`` to the fallback index of its subject (idempotent)."""
    subject = manifest.subject
    if subject is None:
        return
    current = await fallback_index(repo, subject.digest)
    entries = current.manifests if current is not None else ()
    if any(d.digest == manifest.digest for d in entries):
        return
    desc = manifest.descriptor(
        annotations=manifest.annotations or None,
        artifact_type=manifest.effective_artifact_type,
    )
    await repo.manifest_put(build_index([*entries, desc]), subject.digest.tag_form)
