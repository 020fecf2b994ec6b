"""The media types asyncreg understands, and questions asked about them.

Every decision about a document or blob (is it an index to walk, a manifest
to copy, a foreign layer to skip, a format to refuse) starts from its media
type, so the strings live here once and the rest of the code asks the
predicates below instead of comparing strings by hand. The predicates apply
`base` first, so a Content-Type header such as
``application/vnd.oci.image.manifest.v1+json; charset=utf-8`` answers the
same as the bare type. Pure: no I/O.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "DOCKER_CONFIG",
    "DOCKER_FOREIGN_LAYER",
    "DOCKER_LAYER",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "DOCKER_PLUGIN_CONFIG",
    "DOCKER_SCHEMA1",
    "DOCKER_SCHEMA1_SIGNED",
    "MANIFEST_ACCEPT",
    "OCI_ARTIFACT_MANIFEST",
    "OCI_CONFIG",
    "OCI_EMPTY",
    "OCI_INDEX",
    "OCI_LAYER",
    "OCI_LAYER_GZIP",
    "OCI_LAYER_NONDIST",
    "OCI_LAYER_NONDIST_GZIP",
    "OCI_LAYER_NONDIST_ZSTD",
    "OCI_LAYER_ZSTD",
    "OCI_MANIFEST",
    "base",
    "is_docker",
    "is_foreign_layer",
    "is_image_manifest",
    "is_index",
    "is_manifest",
    "is_schema1",
]

# --- OCI image spec -----------------------------------------------------------

OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG: Final = "application/vnd.oci.image.config.v1+json"
OCI_LAYER: Final = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP: Final = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD: Final = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_EMPTY: Final = "application/vnd.oci.empty.v1+json"
# Deprecated by the spec, still found in the wild (Windows base images).
OCI_LAYER_NONDIST: Final = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_NONDIST_GZIP: Final = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_LAYER_NONDIST_ZSTD: Final = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
# Proposed during the 1.1 release candidates and then removed; refused by name.
OCI_ARTIFACT_MANIFEST: Final = "application/vnd.oci.artifact.manifest.v1+json"

# --- Docker -------------------------------------------------------------------

DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG: Final = "application/vnd.docker.container.image.v1+json"
DOCKER_PLUGIN_CONFIG: Final = "application/vnd.docker.plugin.v1+json"
DOCKER_LAYER: Final = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN_LAYER: Final = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER_SCHEMA1: Final = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED: Final = "application/vnd.docker.distribution.manifest.v1+prettyjws"

# The Accept header for manifest requests: the four formats asyncreg can copy.
# Schema1 is deliberately absent so that registries able to convert do so.
MANIFEST_ACCEPT: Final[tuple[str, ...]] = (
    OCI_INDEX,
    OCI_MANIFEST,
    DOCKER_MANIFEST_LIST,
    DOCKER_MANIFEST,
)

_INDEXES: Final = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
_IMAGES: Final = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
_SCHEMA1: Final = frozenset({DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED})
_FOREIGN: Final = frozenset(
    {DOCKER_FOREIGN_LAYER, OCI_LAYER_NONDIST, OCI_LAYER_NONDIST_GZIP, OCI_LAYER_NONDIST_ZSTD}
)


def base(mt: str) -> str:
    """``mt`` without parameters (``; charset=...``) or surrounding space, lowercased.

    Media types are case-insensitive (RFC 6838), while the parameters say
    nothing about which document format this is.
    """
    return mt.partition(";")[0].strip().lower()


def is_index(mt: str) -> bool:
    """An OCI image index or a Docker manifest list."""
    return base(mt) in _INDEXES


def is_image_manifest(mt: str) -> bool:
    """An OCI image manifest or a Docker v2 schema2 manifest."""
    return base(mt) in _IMAGES


def is_manifest(mt: str) -> bool:
    """Any manifest asyncreg can copy: an index or an image manifest."""
    mt = base(mt)
    return mt in _INDEXES or mt in _IMAGES


def is_schema1(mt: str) -> bool:
    """A deprecated Docker v2 schema1 manifest (signed or not)."""
    return base(mt) in _SCHEMA1


def is_foreign_layer(mt: str) -> bool:
    """A layer that may be withheld from registries (Docker foreign, OCI nondistributable)."""
    return base(mt) in _FOREIGN


def is_docker(mt: str) -> bool:
    """A Docker-specific (``application/vnd.docker.*``) media type."""
    return base(mt).startswith("application/vnd.docker.")
