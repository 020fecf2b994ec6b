"""Manifests and descriptors: the documents that name everything else by digest.

A manifest is identified by the digest of its *exact bytes*, so `Manifest`
keeps the bytes it was given and never re-serialises them; the parsed views
(config, layers, child manifests, subject) are read-only and exist only to
decide what to copy next. Parsing is strict where laxness has caused
security bugs: the declared media type must agree with the document (the
CVE-2021-41190 class of "one document, two meanings"), a document cannot be
both an index and an image, the bytes must hash to the digest they were
fetched by, and the size is capped before JSON parsing. Docker schema1 is
recognised only to be refused with advice. Every failure is a `ManifestError`
(or a `DigestMismatchError`); nothing from the JSON parser leaks.

`build_index` and `build_image` produce new documents as compact JSON with
the OCI Go structs' field order, then parse them back through the same
checks. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

import orjson

from . import mediatypes as mt
from .digest import Digest
from .errors import (
    DigestFormatError,
    DigestMismatchError,
    ManifestError,
    PlatformError,
    UnsupportedManifestError,
)
from .platform import Platform, _json_kind

__all__ = ["DEFAULT_MAX_SIZE", "Descriptor", "Manifest", "build_image", "build_index"]

# The distribution spec asks registries to accept manifests of at least 4 MiB;
# twice that leaves room without letting a hostile server hand us gigabytes.
DEFAULT_MAX_SIZE: Final = 8 * 1024 * 1024
# Go's int64, the type every registry and runtime uses for a blob size.
_MAX_BLOB_SIZE: Final = 2**63 - 1
_EMPTY_MAP: Final[Mapping[str, str]] = MappingProxyType({})
# Content types that say "some JSON", not which manifest format: registries and
# static file servers send these, and they must not override the document.
_GENERIC_TYPES: Final = frozenset(
    {"", "application/json", "text/plain", "application/octet-stream", "binary/octet-stream"}
)
_SCHEMA1_ADVICE: Final = (
    "Docker schema1 manifests are deprecated and not supported; convert the image to"
    " Docker schema2 or OCI first (e.g. pull and re-push it with a current Docker)"
)


def _freeze_map(value: Mapping[str, str] | None) -> Mapping[str, str]:
    if not value:
        return _EMPTY_MAP
    return MappingProxyType(dict(value))


@dataclass(frozen=True, slots=True)
class Descriptor:
    """An OCI content descriptor: what a blob or manifest is, by media type, digest and size.

    ``annotations`` is a read-only mapping; it takes part in equality but not
    in the hash, so descriptors can be used in sets and as dict keys.
    """

    media_type: str
    digest: Digest
    size: int
    urls: tuple[str, ...] = ()
    annotations: Mapping[str, str] = field(default_factory=lambda: _EMPTY_MAP, hash=False)
    platform: Platform | None = None
    artifact_type: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.digest, str):
            object.__setattr__(self, "digest", _parse_digest(self.digest, "descriptor"))
        if not isinstance(self.digest, Digest):
            raise ManifestError(f"descriptor digest must be a Digest, got {self.digest!r}")
        if (
            isinstance(self.size, bool)
            or not isinstance(self.size, int)
            or not 0 <= self.size <= _MAX_BLOB_SIZE
        ):
            raise ManifestError(f"descriptor size must be a non-negative integer: {self.size!r}")
        if not isinstance(self.urls, tuple):
            object.__setattr__(self, "urls", tuple(self.urls))
        # Always copy: a caller's dict (or a proxy over one) must not change us later.
        object.__setattr__(self, "annotations", _freeze_map(self.annotations))

    @classmethod
    def from_json(cls, obj: object) -> Descriptor:
        """Read a descriptor object strictly; `ManifestError` says which field is wrong.

        ``mediaType`` must be a string, ``digest`` a valid digest and ``size``
        a non-negative integer (not a boolean or float). Optional fields may be
        absent or null; unknown fields are ignored.
        """
        return _descriptor(obj, "descriptor")

    def to_json(self) -> dict[str, object]:
        """The OCI descriptor object, in the Go struct's field order, omitting empties."""
        out: dict[str, object] = {
            "mediaType": self.media_type,
            "digest": str(self.digest),
            "size": self.size,
        }
        if self.urls:
            out["urls"] = list(self.urls)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform is not None:
            out["platform"] = self.platform.to_json()
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        return out


class Manifest:
    """An image manifest or index: the exact bytes, their digest, and read-only parsed views.

    Construct with `Manifest.parse` (or `build_index` / `build_image`). The
    digest is computed over `raw` and never over a re-serialisation.
    """

    __slots__ = (
        "_annotations",
        "_artifact_type",
        "_config",
        "_digest",
        "_layers",
        "_manifests",
        "_media_type",
        "_raw",
        "_subject",
    )

    def __init__(
        self,
        raw: bytes,
        media_type: str | None = None,
        *,
        digest: Digest | str | None = None,
        max_size: int = DEFAULT_MAX_SIZE,
    ) -> None:
        if isinstance(raw, bytearray | memoryview):
            raw = bytes(raw)
        if not isinstance(raw, bytes):
            raise ManifestError(f"manifest must be bytes, got {type(raw).__name__}")
        if len(raw) > max_size:
            raise ManifestError(
                f"manifest is {len(raw)} bytes, larger than the {max_size}-byte limit"
                " (raise max_size if this registry really serves manifests this large)"
            )
        if digest is None:
            self._digest = Digest.of(raw)
        else:
            expected = Digest.parse(digest)
            actual = Digest.of(raw, expected.algorithm)
            if actual != expected:
                raise DigestMismatchError(
                    f"manifest content hashes to {actual}, not the expected {expected}",
                    expected=str(expected),
                    actual=str(actual),
                )
            self._digest = expected
        self._raw = raw

        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ManifestError(f"manifest is not valid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise ManifestError(f"manifest must be a JSON object, got {_json_kind(doc)}")

        self._media_type = _resolve_media_type(doc, media_type)
        if mt.is_index(self._media_type):
            manifests = _descriptor_list(doc, "manifests")
            self._manifests = manifests
            self._config: Descriptor | None = None
            self._layers: tuple[Descriptor, ...] = ()
        else:
            self._manifests = ()
            if doc.get("config") is None:
                raise ManifestError("image manifest has no config descriptor")
            self._config = _descriptor(doc["config"], "config")
            self._layers = _descriptor_list(doc, "layers")
        subject = doc.get("subject")
        self._subject = None if subject is None else _descriptor(subject, "subject")
        self._annotations = _annotations(doc.get("annotations"), "annotations")
        self._artifact_type = _optional_str(doc, "artifactType", "artifactType")

    @classmethod
    def parse(
        cls,
        raw: bytes,
        media_type: str | None = None,
        *,
        digest: Digest | str | None = None,
        max_size: int = DEFAULT_MAX_SIZE,
    ) -> Manifest:
        """Parse and check a manifest.

        ``media_type`` is what the transport said (a Content-Type header or the
        referring descriptor's mediaType); parameters are ignored, and generic
        types such as ``application/json`` count as unknown. ``digest``, when
        given, is what the bytes must hash to (its algorithm is used).

        Raises `ManifestError` for malformed, ambiguous or oversized documents,
        `UnsupportedManifestError` for Docker schema1 and unknown formats, and
        `DigestMismatchError` when the bytes do not match ``digest``.
        """
        return cls(raw, media_type, digest=digest, max_size=max_size)

    # --- identity -------------------------------------------------------------

    @property
    def raw(self) -> bytes:
        """The exact bytes, as fetched or built."""
        return self._raw

    @property
    def media_type(self) -> str:
        """The manifest's media type (from the document, the caller, or inferred)."""
        return self._media_type

    @property
    def digest(self) -> Digest:
        """The digest of `raw` (sha256, or the algorithm of the expected digest)."""
        return self._digest

    @property
    def size(self) -> int:
        """``len(raw)``."""
        return len(self._raw)

    def descriptor(
        self,
        platform: Platform | None = None,
        annotations: Mapping[str, str] | None = None,
        *,
        artifact_type: str | None = None,
    ) -> Descriptor:
        """A descriptor pointing at this manifest.

        ``artifact_type`` defaults to the manifest's own ``artifactType`` field
        (see `effective_artifact_type` for the referrers API's rule).
        """
        return Descriptor(
            self._media_type,
            self._digest,
            len(self._raw),
            annotations=_freeze_map(annotations),
            platform=platform,
            artifact_type=self._artifact_type if artifact_type is None else artifact_type,
        )

    # --- views ----------------------------------------------------------------

    @property
    def is_index(self) -> bool:
        """An OCI index or Docker manifest list."""
        return mt.is_index(self._media_type)

    @property
    def is_image(self) -> bool:
        """An OCI image manifest or Docker schema2 manifest."""
        return mt.is_image_manifest(self._media_type)

    @property
    def config(self) -> Descriptor | None:
        """The config descriptor of an image; None for an index."""
        return self._config

    @property
    def layers(self) -> tuple[Descriptor, ...]:
        """The layers of an image, base first; empty for an index."""
        return self._layers

    @property
    def manifests(self) -> tuple[Descriptor, ...]:
        """The children of an index; empty for an image."""
        return self._manifests

    @property
    def subject(self) -> Descriptor | None:
        """The manifest this one refers to (OCI 1.1 referrers), if any."""
        return self._subject

    @property
    def annotations(self) -> Mapping[str, str]:
        """The document's annotations (read-only)."""
        return self._annotations

    @property
    def artifact_type(self) -> str:
        """The document's ``artifactType`` field, or ``""``."""
        return self._artifact_type

    @property
    def effective_artifact_type(self) -> str:
        """``artifactType``, else the config's media type: the referrers API's rule."""
        if self._artifact_type:
            return self._artifact_type
        return self._config.media_type if self._config is not None else ""

    def blobs(self) -> tuple[Descriptor, ...]:
        """The config (if any) followed by the layers, in document order."""
        if self._config is None:
            return self._layers
        return (self._config, *self._layers)

    def references(self) -> tuple[Descriptor, ...]:
        """What must exist before this manifest is pushed.

        Child manifests for an index, config and layers for an image. The
        subject is not included: registries accept a manifest whose subject
        is missing, and referrers are usually pushed after their subject.
        """
        return self._manifests if self.is_index else self.blobs()

    # --- dunder ---------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Manifest):
            return NotImplemented
        return self._raw == other._raw and self._media_type == other._media_type

    def __hash__(self) -> int:
        return hash(self._digest)

    def __repr__(self) -> str:
        return f"Manifest(media_type={self._media_type!r}, digest={str(self._digest)!r})"


# --- builders -------------------------------------------------------------------


def build_index(
    descriptors: Sequence[Descriptor],
    *,
    media_type: str = mt.OCI_INDEX,
    annotations: Mapping[str, str] | None = None,
    artifact_type: str = "",
    subject: Descriptor | None = None,
) -> Manifest:
    """A new index (or Docker manifest list) over ``descriptors``, as compact JSON.

    Field order follows the OCI Go structs so that the same content gives the
    same bytes (and digest) every time.
    """
    if not mt.is_index(media_type):
        raise ManifestError(f"build_index needs an index media type, got {media_type!r}")
    media_type = mt.base(media_type)
    doc: dict[str, object] = {"schemaVersion": 2, "mediaType": media_type}
    if artifact_type:
        doc["artifactType"] = artifact_type
    doc["manifests"] = [d.to_json() for d in descriptors]
    _add_tail(doc, subject, annotations)
    return Manifest.parse(orjson.dumps(doc), media_type)


def build_image(
    config: Descriptor,
    layers: Sequence[Descriptor],
    *,
    media_type: str = mt.OCI_MANIFEST,
    annotations: Mapping[str, str] | None = None,
    artifact_type: str = "",
    subject: Descriptor | None = None,
) -> Manifest:
    """A new image manifest (OCI or Docker schema2) over ``config`` and ``layers``."""
    if not mt.is_image_manifest(media_type):
        raise ManifestError(f"build_image needs an image manifest media type, got {media_type!r}")
    media_type = mt.base(media_type)
    doc: dict[str, object] = {"schemaVersion": 2, "mediaType": media_type}
    if artifact_type:
        doc["artifactType"] = artifact_type
    doc["config"] = config.to_json()
    doc["layers"] = [d.to_json() for d in layers]
    _add_tail(doc, subject, annotations)
    return Manifest.parse(orjson.dumps(doc), media_type)


def _add_tail(
    doc: dict[str, object], subject: Descriptor | None, annotations: Mapping[str, str] | None
) -> None:
    if subject is not None:
        doc["subject"] = subject.to_json()
    if annotations:
        doc["annotations"] = dict(annotations)


# --- parsing helpers --------------------------------------------------------------


def _resolve_media_type(doc: dict[str, object], given: str | None) -> str:
    """Decide the manifest's media type and check the document has that shape."""
    declared = doc.get("mediaType")
    if declared == "":
        declared = None  # what Go's omitempty would have left out
    if declared is not None and not isinstance(declared, str):
        raise ManifestError(f"manifest mediaType must be a string, got {_json_kind(declared)}")
    hint = mt.base(given) if isinstance(given, str) else ""
    if hint in _GENERIC_TYPES:
        hint = ""

    version = doc.get("schemaVersion")
    is_int = isinstance(version, int) and not isinstance(version, bool)
    if (is_int and version == 1) or mt.is_schema1(hint) or mt.is_schema1(declared or ""):
        raise UnsupportedManifestError(_SCHEMA1_ADVICE)

    if declared is not None and hint and hint != declared:
        raise ManifestError(
            f"manifest declares mediaType {declared!r} but was served or referenced as"
            f" {hint!r}; refusing the ambiguous document"
        )
    has_index_fields = "manifests" in doc
    has_image_fields = "layers" in doc or "config" in doc
    if "manifests" in doc and "layers" in doc:
        raise ManifestError("manifest has both 'manifests' and 'layers'; refusing the ambiguity")

    media_type = declared or hint
    if not media_type:
        if has_index_fields and not has_image_fields:
            media_type = mt.OCI_INDEX
        elif has_image_fields and not has_index_fields:
            media_type = mt.OCI_MANIFEST
        else:
            raise ManifestError(
                "cannot tell the manifest type: no mediaType field, no usable Content-Type,"
                " and neither 'manifests' nor 'config'/'layers'"
            )
    if not mt.is_manifest(media_type) or media_type != mt.base(media_type):
        raise UnsupportedManifestError(
            f"unsupported manifest media type {media_type[:200]!r}; expected one of"
            f" {', '.join(mt.MANIFEST_ACCEPT)}"
        )
    if mt.is_index(media_type) and has_image_fields:
        raise ManifestError(f"{media_type} document must not have 'config' or 'layers'")
    if mt.is_image_manifest(media_type) and has_index_fields:
        raise ManifestError(f"{media_type} document must not have 'manifests'")

    if not is_int or version != 2:
        raise ManifestError(f"manifest schemaVersion must be 2, got {version!r:.100}")
    return media_type


def _parse_digest(value: object, where: str) -> Digest:
    try:
        return Digest.parse(value)
    except DigestFormatError as exc:
        raise ManifestError(f"{where}.digest: {exc}") from None


def _descriptor(obj: object, where: str) -> Descriptor:
    if not isinstance(obj, dict):
        raise ManifestError(f"{where} must be a JSON object, got {_json_kind(obj)}")
    media_type = obj.get("mediaType")
    if not isinstance(media_type, str) or not media_type:
        raise ManifestError(
            f"{where}.mediaType must be a non-empty string, got {_json_kind(media_type)}"
        )
    digest = _parse_digest(obj.get("digest"), where)
    size = obj.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= _MAX_BLOB_SIZE:
        raise ManifestError(f"{where}.size must be a non-negative integer, got {size!r:.100}")
    urls = obj.get("urls")
    if urls is None:
        urls = []
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise ManifestError(f"{where}.urls must be an array of strings")
    platform_obj = obj.get("platform")
    platform = None
    if platform_obj is not None:
        try:
            platform = Platform.from_json(platform_obj)
        except PlatformError as exc:
            raise ManifestError(f"{where}: {exc}") from None
    return Descriptor(
        media_type,
        digest,
        size,
        urls=tuple(urls),
        annotations=_annotations(obj.get("annotations"), f"{where}.annotations"),
        platform=platform,
        artifact_type=_optional_str(obj, "artifactType", f"{where}.artifactType"),
    )


def _descriptor_list(doc: dict[str, object], key: str) -> tuple[Descriptor, ...]:
    # Absent or null is read as empty: Go encodes a nil slice as null, and some
    # tools in the wild write exactly that for manifests with no layers.
    items = doc.get(key)
    if items is None:
        return ()
    if not isinstance(items, list):
        raise ManifestError(f"{key} must be an array, got {_json_kind(items)}")
    return tuple(_descriptor(item, f"{key}[{i}]") for i, item in enumerate(items))


def _annotations(value: object, where: str) -> Mapping[str, str]:
    if value is None:
        return _EMPTY_MAP
    if not isinstance(value, dict):
        raise ManifestError(f"{where} must be an object of strings, got {_json_kind(value)}")
    for k, v in value.items():
        if not isinstance(v, str):
            raise ManifestError(f"{where}[{k!r:.100}] must be a string, got {_json_kind(v)}")
    return MappingProxyType(value) if value else _EMPTY_MAP


def _optional_str(obj: dict[str, object], key: str, where: str) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ManifestError(f"{where} must be a string, got {_json_kind(value)}")
    return value
