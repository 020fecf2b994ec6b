"""`validate`: re-read an image from any `Repo` and check every digest and size.

Tests (and cautious operators) use it after a copy, export or import: it walks
the manifest graph from a tag or digest, fetches every manifest by digest,
streams every blob with full verification (digest and size, whatever the
store would otherwise skip), and reports what it checked. Any mismatch or
missing piece raises the store's typed error.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..digest import Digest
from ..errors import NotFoundError
from ..manifest import Descriptor
from ..store import Repo

__all__ = ["Validation", "validate"]


@dataclass
class Validation:
    """What `validate` checked."""

    digest: Digest | None = None
    manifests: list[Digest] = field(default_factory=list)
    blobs: list[Digest] = field(default_factory=list)
    bytes: int = 0


async def validate(repo: Repo, reference: str | Digest, *, external: bool = False) -> Validation:
    """Check the image ``reference`` of ``repo`` completely; return what was checked.

    Layers with ``urls`` (foreign layers) are checked only with ``external``.
    """
    top = await repo.manifest_head(reference)
    if top is None:
        raise NotFoundError(f"{repo.key}:{reference}: manifest not found", status=404)
    out = Validation(digest=top.digest)
    seen: set[Digest] = set()
    await _walk(repo, top, out, seen, external)
    return out


async def _walk(
    repo: Repo, desc: Descriptor, out: Validation, seen: set[Digest], external: bool
) -> None:
    if desc.digest in seen:
        return
    seen.add(desc.digest)
    manifest = await repo.manifest_get(desc.digest)
    out.manifests.append(manifest.digest)
    if manifest.is_index:
        for child in manifest.manifests:
            await _walk(repo, child, out, seen, external)
        return
    for blob in manifest.blobs():
        if blob.urls and not external:
            continue
        if blob.digest in seen:
            continue
        seen.add(blob.digest)
        stream = await repo.blob_open(blob, verify=True)
        try:
            async for chunk in stream:
                out.bytes += len(chunk)
        finally:
            await stream.aclose()
        out.blobs.append(blob.digest)
