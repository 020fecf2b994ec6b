"""The ``index.json`` and ``manifest.json`` of an export tar, pure.

One tar serves two readers: an OCI layout reader reads ``index.json`` (every
exported image, whole indexes included, named with
``org.opencontainers.image.ref.name`` = the tag and ``io.containerd.image.name``
= the full reference, as containerd and Docker 25+ do), and ``docker load``
reads ``manifest.json`` (one entry per image: config path, repo tags, layer
paths). ``docker load`` knows nothing of indexes, so for an index its
``manifest.json`` entry is the image of one platform, while ``index.json``
keeps the whole index.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import orjson

from ..digest import Digest
from ..manifest import Descriptor, Manifest, build_index
from ..platform import Platform

__all__ = ["ExportedImage", "blob_name", "build_docker_manifest", "build_oci_index"]

CONTAINERD_NAME = "io.containerd.image.name"
REF_NAME = "org.opencontainers.image.ref.name"


@dataclass(frozen=True, slots=True)
class ExportedImage:
    """One named image of the tar: its full name and the descriptor it points at."""

    name: str  # "registry/repo:tag"
    tag: str
    descriptor: Descriptor


def blob_name(digest: Digest) -> str:
    """``blobs/<alg>/<hex>``."""
    return f"blobs/{digest.algorithm}/{digest.hex}"


def build_oci_index(images: Sequence[ExportedImage]) -> bytes:
    """``index.json``: one entry per exported image, annotated with its names."""
    entries = []
    for image in images:
        d = image.descriptor
        annotations = dict(d.annotations)
        annotations[CONTAINERD_NAME] = image.name
        annotations[REF_NAME] = image.tag
        entries.append(
            Descriptor(
                d.media_type,
                d.digest,
                d.size,
                annotations=annotations,
                platform=d.platform,
                artifact_type=d.artifact_type,
            )
        )
    return build_index(entries).raw


def pick_platform_image(index: Manifest, platform: Platform) -> Descriptor | None:
    """The entry of ``index`` for ``platform`` (None when it has none)."""
    for child in index.manifests:
        if child.platform is not None and platform.matches(child.platform):
            return child
    return None


def build_docker_manifest(
    images: Sequence[ExportedImage],
    manifests: Mapping[Digest, Manifest],
    platform: Platform,
) -> bytes:
    """``manifest.json`` for ``docker load``: images (index entries resolved by platform).

    Images whose manifest or platform is not in the tar, and artifacts with no
    layers, are left out: ``docker load`` could not use them anyway.
    """
    out: list[dict[str, object]] = []
    by_config: dict[Digest, dict[str, object]] = {}
    for image in images:
        manifest = manifests.get(image.descriptor.digest)
        if manifest is not None and manifest.is_index:
            child = pick_platform_image(manifest, platform)
            manifest = manifests.get(child.digest) if child is not None else None
        if manifest is None or manifest.config is None or not manifest.layers:
            continue
        existing = by_config.get(manifest.config.digest)
        if existing is not None:
            tags = existing["RepoTags"]
            assert isinstance(tags, list)
            tags.append(image.name)
            continue
        entry: dict[str, object] = {
            "Config": blob_name(manifest.config.digest),
            "RepoTags": [image.name],
            "Layers": [blob_name(layer.digest) for layer in manifest.layers],
        }
        by_config[manifest.config.digest] = entry
        out.append(entry)
    return orjson.dumps(out)
