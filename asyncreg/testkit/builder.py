"""Build random, seed-deterministic images as OCI image layout directories.

Tests and benchmarks need images of chosen shape (layer count and size,
shared layers, platforms, Docker or OCI media types, artifacts with a
``subject``) with real digests, written where skopeo and asyncreg can read
them: an OCI layout (``oci-layout``, ``index.json``, ``blobs/sha256/<hex>``).

Why the layers look the way they do:

- skopeo gzip-compresses any layer that does not start with a compression
  magic number, which would change digests between what the builder wrote and
  what lands in the registry. So every layer is a real gzip stream around a
  real tar (one file of random bytes). The gzip uses deflate level 0 (stored
  blocks): no CPU spent compressing random data, and the blob size stays
  within a few bytes per 64 KiB of the requested size.
- Layers are written streaming, in 1 MiB chunks, hashing as they go (both the
  compressed digest and the uncompressed ``diff_id``), so a 512 MiB layer
  never sits in memory.
- Everything derives from ``seed`` and the order of calls, so the same
  program produces the same digests on every run and machine.

JSON is written here with orjson (sorted keys, compact) rather than through
``asyncreg.manifest``, so the test kit never shares a bug with the code under
test.
"""

from __future__ import annotations

import hashlib
import os
import random
import tarfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Literal

import orjson

__all__ = [
    "BuiltImage",
    "Descriptor",
    "ImageBuilder",
    "ImageSpec",
    "LayerSpec",
    "Media",
    "MT_DOCKER_CONFIG",
    "MT_DOCKER_LAYER",
    "MT_DOCKER_LIST",
    "MT_DOCKER_MANIFEST",
    "MT_OCI_CONFIG",
    "MT_OCI_EMPTY",
    "MT_OCI_INDEX",
    "MT_OCI_LAYER",
    "MT_OCI_MANIFEST",
    "REF_NAME",
]

Media = Literal["oci", "docker"]

MT_OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
MT_OCI_CONFIG: Final = "application/vnd.oci.image.config.v1+json"
MT_OCI_LAYER: Final = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_OCI_EMPTY: Final = "application/vnd.oci.empty.v1+json"
MT_DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_DOCKER_CONFIG: Final = "application/vnd.docker.container.image.v1+json"
MT_DOCKER_LAYER: Final = "application/vnd.docker.image.rootfs.diff.tar.gzip"
#: The index.json annotation that names a tag in an OCI layout.
REF_NAME: Final = "org.opencontainers.image.ref.name"

_KIB = 1024
_CHUNK = 1024 * 1024
_EMPTY_JSON = b"{}"
# A fixed timestamp: "created" must not make builds differ from run to run.
_CREATED = "2024-01-01T00:00:00Z"


def _dumps(obj: Any) -> bytes:
    """Canonical JSON for everything the builder writes: sorted keys, compact."""
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


def _platform_json(platform: str) -> dict[str, str]:
    """``os/arch[/variant]`` as an OCI platform object."""
    parts = platform.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"platform must be os/arch[/variant], got {platform!r}")
    out = {"os": parts[0], "architecture": parts[1]}
    if len(parts) == 3:
        out["variant"] = parts[2]
    return out


@dataclass(frozen=True)
class Descriptor:
    """A content descriptor: what a manifest says about a blob or a child manifest."""

    media_type: str
    digest: str
    size: int
    platform: str | None = None
    annotations: Mapping[str, str] | None = None
    artifact_type: str | None = None

    @property
    def hex(self) -> str:
        """The hex part of the digest: the blob's file name in a layout."""
        return self.digest.partition(":")[2]

    def to_json(self) -> dict[str, Any]:
        """The descriptor as it appears in manifest JSON."""
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.platform is not None:
            out["platform"] = _platform_json(self.platform)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.artifact_type is not None:
            out["artifactType"] = self.artifact_type
        return out


@dataclass(frozen=True)
class LayerSpec:
    """One layer: ``size`` bytes of random file content inside tar and gzip.

    Shared layers are keyed by their position among the shared layers and
    their size, so every image of one `ImageBuilder` that asks for shared
    layer ``i`` of the same size gets the very same blob.
    """

    size: int = 64 * _KIB
    shared: bool = False


@dataclass(frozen=True)
class ImageSpec:
    """The shape of an image.

    ``layers`` layers of ``layer_size`` bytes each, of which the first
    ``shared_layers`` are shared with the other images of the same builder
    (for an index: between its children). ``layer_specs``, when given,
    replaces those three with an explicit list (mixed sizes). ``media`` picks
    OCI or Docker schema 2 media types; ``annotations`` go into OCI
    manifests (Docker schema 2 has none); ``labels`` go into the config.
    """

    layers: int = 2
    layer_size: int = 64 * _KIB
    shared_layers: int = 0
    platform: str = "linux/amd64"
    media: Media = "oci"
    annotations: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    layer_specs: tuple[LayerSpec, ...] = ()

    def resolved_layers(self) -> tuple[LayerSpec, ...]:
        """The layer list this spec describes."""
        if self.layer_specs:
            return self.layer_specs
        if not 0 <= self.shared_layers <= self.layers:
            raise ValueError(
                f"shared_layers must be between 0 and layers ({self.layers}),"
                f" got {self.shared_layers}"
            )
        return tuple(
            LayerSpec(size=self.layer_size, shared=i < self.shared_layers)
            for i in range(self.layers)
        )


@dataclass(frozen=True)
class BuiltImage:
    """What the builder wrote: a manifest (image, index or artifact) and its blobs.

    ``blobs`` lists the non-manifest blobs the manifest needs, config first:
    for an index the union over its children. ``children`` holds the child
    images of an index, ``subject`` the descriptor an artifact refers to.
    """

    digest: str
    manifest: bytes
    media_type: str
    blobs: tuple[Descriptor, ...]
    tag: str | None = None
    platform: str | None = None
    config: Descriptor | None = None
    layers: tuple[Descriptor, ...] = ()
    diff_ids: tuple[str, ...] = ()
    children: tuple[BuiltImage, ...] = ()
    artifact_type: str | None = None
    subject: Descriptor | None = None

    @property
    def size(self) -> int:
        """Length of the manifest bytes."""
        return len(self.manifest)

    @property
    def hex(self) -> str:
        """The hex part of `digest`."""
        return self.digest.partition(":")[2]

    @property
    def is_index(self) -> bool:
        """True for an OCI index or a Docker manifest list."""
        return self.media_type in (MT_OCI_INDEX, MT_DOCKER_LIST)

    def descriptor(self) -> Descriptor:
        """A descriptor pointing at this manifest (as an index or subject would)."""
        return Descriptor(
            self.media_type,
            self.digest,
            self.size,
            platform=self.platform,
            artifact_type=self.artifact_type,
        )

    def manifests(self) -> Iterator[BuiltImage]:
        """This manifest, then its children (depth first)."""
        yield self
        for child in self.children:
            yield from child.manifests()

    @property
    def blob_bytes(self) -> int:
        """Total size of the blobs (config and layers) this manifest needs."""
        return sum(b.size for b in self.blobs)


class ImageBuilder:
    """Writes images into the OCI layout at ``root`` (created when missing).

    The same ``seed`` and the same sequence of calls produce the same digests.
    An existing layout is extended: its ``index.json`` entries are kept, and
    an entry with the same tag is replaced.
    """

    def __init__(self, root: Path, seed: int = 0) -> None:
        self.root = Path(root)
        self.seed = seed
        self._counter = 0
        self._shared: dict[tuple[int, int], tuple[Descriptor, str]] = {}
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        layout_file = self.root / "oci-layout"
        if not layout_file.exists():
            layout_file.write_bytes(_dumps({"imageLayoutVersion": "1.0.0"}))
        index_file = self.root / "index.json"
        self._index: list[dict[str, Any]] = []
        if index_file.exists():
            self._index = list(orjson.loads(index_file.read_bytes()).get("manifests", []))
        else:
            self._write_index()

    @property
    def blob_dir(self) -> Path:
        """``ROOT/blobs/sha256``."""
        return self.root / "blobs" / "sha256"

    def blob_path(self, digest: str) -> Path:
        """Where the blob with ``digest`` lives in the layout."""
        algorithm, _, hexpart = digest.partition(":")
        return self.root / "blobs" / algorithm / hexpart

    # --- public builders -----------------------------------------------------------

    def image(self, tag: str | None, spec: ImageSpec | None = None) -> BuiltImage:
        """Write config, layers and manifest of one image; tag it in index.json if ``tag``."""
        built = self._image(spec or ImageSpec())
        if tag is not None:
            built = replace(built, tag=tag)
            self._tag(tag, built)
        return built

    def index(
        self,
        tag: str,
        platforms: Sequence[str],
        spec: ImageSpec | None = None,
        media: Media = "oci",
    ) -> BuiltImage:
        """Write a multi-platform index (or Docker manifest list) and its child images.

        The children share ``spec.shared_layers`` layers; their other layers are
        their own. Only the index is tagged.
        """
        spec = spec or ImageSpec()
        if not platforms:
            raise ValueError("an index needs at least one platform")
        children = tuple(
            self._image(replace(spec, platform=p, media=media), platform=p) for p in platforms
        )
        doc: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": MT_DOCKER_LIST if media == "docker" else MT_OCI_INDEX,
            "manifests": [c.descriptor().to_json() for c in children],
        }
        if media == "oci" and spec.annotations:
            doc["annotations"] = dict(spec.annotations)
        blobs: dict[str, Descriptor] = {}
        for child in children:
            for blob in child.blobs:
                blobs.setdefault(blob.digest, blob)
        data = _dumps(doc)
        digest = self._write_blob(data)
        built = BuiltImage(
            digest=digest,
            manifest=data,
            media_type=doc["mediaType"],
            blobs=tuple(blobs.values()),
            tag=tag,
            children=children,
        )
        self._tag(tag, built)
        return built

    def artifact(
        self,
        tag: str | None,
        subject: BuiltImage,
        artifact_type: str = "application/vnd.example.signature",
    ) -> BuiltImage:
        """Write an OCI 1.1 artifact manifest that refers to ``subject``.

        Empty config (``application/vnd.oci.empty.v1+json``, the two bytes
        ``{}``), one small JSON layer, ``artifactType`` and ``subject`` set: the
        shape cosign signatures and SBOM attachments have.
        """
        self._counter += 1
        empty = Descriptor(MT_OCI_EMPTY, self._write_blob(_EMPTY_JSON), len(_EMPTY_JSON))
        note = {"seed": self.seed, "n": self._counter, "subject": subject.digest}
        payload = _dumps({**note, "type": artifact_type})
        layer = Descriptor(
            "application/vnd.example.payload.v1+json", self._write_blob(payload), len(payload)
        )
        subject_desc = Descriptor(subject.media_type, subject.digest, subject.size)
        doc = {
            "schemaVersion": 2,
            "mediaType": MT_OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": empty.to_json(),
            "layers": [layer.to_json()],
            "subject": subject_desc.to_json(),
            "annotations": {"org.opencontainers.image.created": _CREATED},
        }
        data = _dumps(doc)
        built = BuiltImage(
            digest=self._write_blob(data),
            manifest=data,
            media_type=MT_OCI_MANIFEST,
            blobs=(empty, layer),
            tag=tag,
            config=empty,
            layers=(layer,),
            artifact_type=artifact_type,
            subject=subject_desc,
        )
        if tag is not None:
            self._tag(tag, built)
        return built

    # --- internals ------------------------------------------------------------------

    def _image(self, spec: ImageSpec, platform: str | None = None) -> BuiltImage:
        self._counter += 1
        docker = spec.media == "docker"
        layer_type = MT_DOCKER_LAYER if docker else MT_OCI_LAYER
        layers: list[Descriptor] = []
        diff_ids: list[str] = []
        shared_pos = 0
        for layer_spec in spec.resolved_layers():
            if layer_spec.shared:
                key = (shared_pos, layer_spec.size)
                shared_pos += 1
                if key not in self._shared:
                    self._shared[key] = self._write_layer(
                        f"shared:{key[0]}:{key[1]}", layer_spec.size
                    )
                desc, diff_id = self._shared[key]
            else:
                self._counter += 1
                desc, diff_id = self._write_layer(f"layer:{self._counter}", layer_spec.size)
            layers.append(replace(desc, media_type=layer_type))
            diff_ids.append(diff_id)

        plat = _platform_json(spec.platform)
        labels = {"org.example.testkit.image": f"{self.seed}-{self._counter}", **spec.labels}
        config_doc = {
            **plat,
            "created": _CREATED,
            "config": {"Labels": labels},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created": _CREATED, "created_by": "asyncreg testkit"} for _ in layers],
        }
        config_data = _dumps(config_doc)
        config = Descriptor(
            MT_DOCKER_CONFIG if docker else MT_OCI_CONFIG,
            self._write_blob(config_data),
            len(config_data),
        )
        doc: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": MT_DOCKER_MANIFEST if docker else MT_OCI_MANIFEST,
            "config": config.to_json(),
            "layers": [d.to_json() for d in layers],
        }
        if not docker and spec.annotations:
            doc["annotations"] = dict(spec.annotations)
        data = _dumps(doc)
        return BuiltImage(
            digest=self._write_blob(data),
            manifest=data,
            media_type=doc["mediaType"],
            blobs=(config, *layers),
            platform=platform,
            config=config,
            layers=tuple(layers),
            diff_ids=tuple(diff_ids),
        )

    def _write_blob(self, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        path = self.blob_path(digest)
        if not path.exists():
            tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return digest

    def _write_layer(self, key: str, size: int) -> tuple[Descriptor, str]:
        """Stream tar(one random file) through gzip level 0 into the layout.

        Returns the layer descriptor (OCI media type; callers swap it for
        Docker) and the ``diff_id`` (digest of the uncompressed tar).
        """
        if size < 0:
            raise ValueError(f"layer size must be >= 0, got {size}")
        rng = random.Random(f"asyncreg-testkit:{self.seed}:{key}")
        info = tarfile.TarInfo(name=f"data/{key.replace(':', '-')}.bin")
        info.size = size
        info.mode = 0o644
        info.mtime = 0
        header = info.tobuf(format=tarfile.PAX_FORMAT)

        compressor = zlib.compressobj(0, zlib.DEFLATED, 31)
        digest = hashlib.sha256()
        diff = hashlib.sha256()
        written = 0
        tmp = self.blob_dir / f".tmp-layer-{os.getpid()}-{self._counter}"
        with open(tmp, "wb") as out:

            def emit(raw: bytes) -> None:
                nonlocal written
                diff.update(raw)
                packed = compressor.compress(raw)
                if packed:
                    digest.update(packed)
                    out.write(packed)
                    written += len(packed)

            emit(header)
            remaining = size
            while remaining:
                chunk = rng.randbytes(min(_CHUNK, remaining))
                emit(chunk)
                remaining -= len(chunk)
            # Pad the file to a 512-byte block, then the two zero blocks that end a tar.
            emit(b"\0" * (-size % tarfile.BLOCKSIZE) + b"\0" * (2 * tarfile.BLOCKSIZE))
            tail = compressor.flush()
            digest.update(tail)
            out.write(tail)
            written += len(tail)
        final = "sha256:" + digest.hexdigest()
        os.replace(tmp, self.blob_path(final))
        return Descriptor(MT_OCI_LAYER, final, written), "sha256:" + diff.hexdigest()

    def _tag(self, tag: str, built: BuiltImage) -> None:
        entry = built.descriptor().to_json()
        entry.pop("platform", None)
        entry["annotations"] = {REF_NAME: tag}
        kept = [e for e in self._index if e.get("annotations", {}).get(REF_NAME) != tag]
        self._index = [*kept, entry]
        self._write_index()

    def _write_index(self) -> None:
        doc = {"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": self._index}
        tmp = self.root / ".index.json.tmp"
        tmp.write_bytes(_dumps(doc))
        os.replace(tmp, self.root / "index.json")
