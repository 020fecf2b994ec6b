"""Legacy ``docker save`` tars as Docker schema2 images a registry accepts.

A legacy ``docker save`` (and skopeo's ``docker-archive:``) tar has no
registry manifest: ``manifest.json`` lists, per image, a ``Config`` file, its
``RepoTags`` and ``Layers``, the paths of *uncompressed* layer tars (often
symbolic links inside the archive). To push such an image we build the
manifest a registry would have served: a Docker schema2 manifest whose config
descriptor is the config file (its sha256, checked against the file name
when that name is a digest) and whose layers are

- by default (``compress=True``) each layer tar gzip-compressed (zlib level 1:
  fast, and real gzip, so registries and runtimes take it as the ordinary
  ``...rootfs.diff.tar.gzip``) into a temporary file, hashing while
  compressing;
- with ``compress=False`` the layer tar itself
  (``...rootfs.diff.tar``, digest = its sha256).

Either way the uncompressed bytes are hashed and must equal the config's
``rootfs.diff_ids[i]``: a layer whose bytes are not what the image says is a
`DigestMismatchError`, not an image quietly changed. A layer file that is
already gzip-compressed is used as it is, its ``diff_id`` checked through
decompression.

Why lazily and exactly once: compression costs CPU (about a second per
hundred MiB at level 1), so it happens only for images someone asks for, but
a manifest needs the digests of all its layers, so asking for an image's
manifest compresses all of its layers, in parallel worker threads bounded by
a limiter; the event loop only waits. Each layer is single-flight (shared
layers and links to one file are compressed once) and the results are kept,
so every later head or open sees the same digests the manifest names.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import anyio
import anyio.to_thread
import orjson

from .. import mediatypes as mt
from ..digest import Digest, Verifier
from ..engine.singleflight import SingleFlight
from ..errors import (
    ArchiveError,
    DigestFormatError,
    DigestMismatchError,
    HostilePathError,
)
from ..manifest import Descriptor, Manifest, build_image
from .tarindex import FileRange, TarEntry, TarIndex, inflate, normalise_name, read_chunks

__all__ = [
    "DOCKER_LAYER_TAR",
    "DockerSave",
    "SavedBlob",
    "SavedImage",
]

#: The uncompressed Docker layer media type (not in `mediatypes`: only imports produce it).
DOCKER_LAYER_TAR: Final = "application/vnd.docker.image.rootfs.diff.tar"
#: ``manifest.json`` of a save of thousands of images stays far below this.
MAX_MANIFEST_JSON: Final = 16 * 1024 * 1024
#: Image configs are a few KiB; long histories reach a few hundred.
MAX_CONFIG_SIZE: Final = 16 * 1024 * 1024
#: gzip level for layers: level 1 compresses ~5x faster than 6 and loses a few percent.
GZIP_LEVEL: Final = 1

_HEX64 = re.compile(r"[0-9a-f]{64}\Z")


@dataclass(frozen=True, slots=True)
class SavedImage:
    """One ``manifest.json`` entry, with its config read and checked."""

    position: int
    repo_tags: tuple[str, ...]
    config: Descriptor
    config_entry: TarEntry
    layer_paths: tuple[str, ...]
    layer_entries: tuple[TarEntry, ...]
    diff_ids: tuple[Digest, ...]

    @property
    def label(self) -> str:
        """How messages name the image: its first tag, or its manifest.json position."""
        return self.repo_tags[0] if self.repo_tags else f"manifest.json[{self.position}]"


@dataclass(frozen=True, slots=True)
class SavedBlob:
    """A blob the archive serves: ``size`` bytes of ``path`` from ``offset``."""

    digest: Digest
    media_type: str
    size: int
    path: Path
    offset: int

    def open(self, *, verifier: Verifier | None, what: str) -> FileRange:
        """A stream of the blob (hashed and checked when ``verifier`` is given)."""
        return FileRange(self.path, self.offset, self.size, verifier=verifier, what=what)


@dataclass(frozen=True, slots=True)
class _Packed:
    """What packing one layer file produced (in a worker thread)."""

    diff_id: Digest
    digest: Digest
    size: int
    media_type: str
    temp: Path | None  # the compressed copy; None: the tar member itself is the blob


class DockerSave:
    """The images of a legacy ``docker save`` tar; build with `DockerSave.load`."""

    def __init__(
        self,
        index: TarIndex,
        work_dir: Path,
        images: tuple[SavedImage, ...],
        *,
        compress: bool,
        threads: int,
    ) -> None:
        self.index = index
        self.images = images
        self.compress = compress
        self._work_dir = work_dir
        self._limiter = anyio.CapacityLimiter(max(1, threads))
        self._cancel = threading.Event()
        self._layers: SingleFlight[_Packed] = SingleFlight()
        self._manifests: SingleFlight[Manifest] = SingleFlight()
        self._by_digest: dict[Digest, Manifest] = {}
        self._blobs: dict[Digest, SavedBlob] = {}
        self._counter = 0
        for image in images:
            entry = image.config_entry
            self._blobs[image.config.digest] = SavedBlob(
                image.config.digest, mt.DOCKER_CONFIG, entry.size, index.path, entry.offset
            )

    @classmethod
    async def load(
        cls,
        index: TarIndex,
        work_dir: Path,
        *,
        compress: bool = True,
        threads: int | None = None,
    ) -> DockerSave:
        """Read ``manifest.json`` and every config; compress nothing yet.

        `ArchiveError` when ``manifest.json`` is malformed or names members the
        archive lacks, `DigestMismatchError` when a config file named by its
        digest has other content, `HostilePathError` for a path with ``..``.
        """
        entry = index.get("manifest.json")
        if entry is None:
            raise ArchiveError(f"{index.source}: no manifest.json; not a docker save tar")
        raw = await index.read(entry, MAX_MANIFEST_JSON)
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ArchiveError(f"{index.source}: manifest.json is not valid JSON: {exc}") from None
        if not isinstance(doc, list) or not doc:
            raise ArchiveError(f"{index.source}: manifest.json must be a non-empty JSON array")
        images = []
        for position, item in enumerate(doc):
            images.append(await _saved_image(index, position, item))
        return cls(
            index,
            work_dir,
            tuple(images),
            compress=compress,
            threads=threads or os.cpu_count() or 2,
        )

    # --- lookups ----------------------------------------------------------------------

    def built(self, digest: Digest) -> Manifest | None:
        """The manifest with ``digest`` if it was built already."""
        return self._by_digest.get(digest)

    def blob(self, digest: Digest) -> SavedBlob | None:
        """A config, or a layer of an image whose manifest was built."""
        return self._blobs.get(digest)

    def matches(self, digest: Digest) -> bool:
        """True when ``digest`` names a built manifest or a known blob."""
        return digest in self._by_digest or digest in self._blobs

    # --- building ---------------------------------------------------------------------

    async def manifest(self, image: SavedImage) -> Manifest:
        """The schema2 manifest of ``image``, built (and its layers packed) once."""
        manifest, _ = await self._manifests.do(image.position, lambda: self._build(image))
        return manifest

    async def build_all(self) -> list[Manifest]:
        """Every image's manifest, in ``manifest.json`` order."""
        out: list[Manifest | None] = [None] * len(self.images)

        async def one(i: int, image: SavedImage) -> None:
            out[i] = await self.manifest(image)

        async with anyio.create_task_group() as tg:
            for i, image in enumerate(self.images):
                tg.start_soon(one, i, image)
        return [m for m in out if m is not None]

    async def _build(self, image: SavedImage) -> Manifest:
        packed: list[_Packed | None] = [None] * len(image.layer_entries)

        async def one(i: int, entry: TarEntry, algorithm: str) -> None:
            packed[i] = await self._pack(entry, algorithm)

        async with anyio.create_task_group() as tg:
            for i, entry in enumerate(image.layer_entries):
                tg.start_soon(one, i, entry, image.diff_ids[i].algorithm)
        layers: list[Descriptor] = []
        for i, result in enumerate(packed):
            assert result is not None
            expected = image.diff_ids[i]
            if result.diff_id != expected:
                raise DigestMismatchError(
                    f"{self.index.source}: layer {image.layer_paths[i]!r} of {image.label}:"
                    f" its uncompressed bytes hash to {result.diff_id}, but the config's"
                    f" rootfs.diff_ids[{i}] is {expected}",
                    expected=str(expected),
                    actual=str(result.diff_id),
                )
            layers.append(Descriptor(result.media_type, result.digest, result.size))
        manifest = build_image(image.config, layers, media_type=mt.DOCKER_MANIFEST)
        self._by_digest[manifest.digest] = manifest
        return manifest

    async def _pack(self, entry: TarEntry, algorithm: str) -> _Packed:
        key = (entry.target, algorithm)

        async def run() -> _Packed:
            temp: Path | None = None
            if self.compress:
                self._counter += 1
                temp = self._work_dir / f"layer-{self._counter}.tar.gz"
            try:
                result = await anyio.to_thread.run_sync(
                    _pack_layer,
                    self.index.path,
                    entry,
                    temp,
                    algorithm,
                    self._cancel,
                    limiter=self._limiter,
                )
            except OSError as exc:
                raise ArchiveError(
                    f"{self.index.source}: cannot pack layer {entry.name!r}: {exc.strerror or exc}"
                ) from None
            path, offset = (
                (self.index.path, entry.offset) if result.temp is None else (result.temp, 0)
            )
            self._blobs.setdefault(
                result.digest,
                SavedBlob(result.digest, result.media_type, result.size, path, offset),
            )
            return result

        packed, _ = await self._layers.do(key, run)
        return packed

    def close(self) -> None:
        """Make running compressions stop at their next chunk (the work dir is going away)."""
        self._cancel.set()


# --- manifest.json ----------------------------------------------------------------------


async def _saved_image(index: TarIndex, position: int, item: object) -> SavedImage:
    where = f"{index.source}: manifest.json[{position}]"
    if not isinstance(item, dict):
        raise ArchiveError(f"{where} must be a JSON object")
    config_path = item.get("Config")
    if not isinstance(config_path, str) or not config_path:
        raise ArchiveError(f"{where}.Config must be a non-empty string")
    tags = item.get("RepoTags")
    if tags is None:
        tags = []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ArchiveError(f"{where}.RepoTags must be an array of strings")
    layer_paths = item.get("Layers")
    if layer_paths is None:
        layer_paths = []
    if not isinstance(layer_paths, list) or not all(isinstance(p, str) for p in layer_paths):
        raise ArchiveError(f"{where}.Layers must be an array of strings")

    config_entry = _member(index, config_path, f"{where}.Config")
    config_raw = await index.read(config_entry, MAX_CONFIG_SIZE)
    config_digest = Digest.of(config_raw)
    named = _named_digest(config_path)
    if named is not None and named != config_digest:
        raise DigestMismatchError(
            f"{index.source}: config {config_path!r} hashes to {config_digest}, not the"
            f" {named} its name says",
            expected=str(named),
            actual=str(config_digest),
        )
    diff_ids = _diff_ids(config_raw, f"{index.source}: config {config_path!r}")
    if len(diff_ids) != len(layer_paths):
        raise ArchiveError(
            f"{where} lists {len(layer_paths)} layers but its config has"
            f" {len(diff_ids)} rootfs.diff_ids"
        )
    layer_entries = tuple(
        _member(index, path, f"{where}.Layers[{i}]") for i, path in enumerate(layer_paths)
    )
    return SavedImage(
        position=position,
        repo_tags=tuple(tags),
        config=Descriptor(mt.DOCKER_CONFIG, config_digest, len(config_raw)),
        config_entry=config_entry,
        layer_paths=tuple(layer_paths),
        layer_entries=layer_entries,
        diff_ids=diff_ids,
    )


def _member(index: TarIndex, path: str, where: str) -> TarEntry:
    try:
        normalise_name(path)
    except HostilePathError as exc:
        raise HostilePathError(f"{where}: {exc}") from None
    entry = index.get(path)
    if entry is None:
        raise ArchiveError(f"{where} names {path!r}, which is not in the archive")
    if entry.kind != "file":
        raise ArchiveError(f"{where} names {path!r}, which is a directory")
    return entry


def _named_digest(path: str) -> Digest | None:
    """The digest a config's file name claims: ``<hex>.json`` or ``blobs/<alg>/<hex>``."""
    parts = normalise_name(path).split("/")
    stem = parts[-1].removesuffix(".json")
    if len(parts) == 3 and parts[0] == "blobs":
        try:
            return Digest(parts[1], stem)
        except DigestFormatError:
            return None
    return Digest("sha256", stem) if _HEX64.match(stem) else None


def _diff_ids(raw: bytes, where: str) -> tuple[Digest, ...]:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ArchiveError(f"{where} is not valid JSON: {exc}") from None
    rootfs = doc.get("rootfs") if isinstance(doc, dict) else None
    values = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if values is None:
        values = []
    if not isinstance(values, list):
        raise ArchiveError(f"{where}: rootfs.diff_ids must be an array")
    try:
        return tuple(Digest.parse(v) for v in values)
    except DigestFormatError as exc:
        raise ArchiveError(f"{where}: rootfs.diff_ids: {exc}") from None


# --- packing (worker threads) -------------------------------------------------------------


def _pack_layer(
    tar_path: Path,
    entry: TarEntry,
    temp: Path | None,
    diff_algorithm: str,
    cancel: threading.Event,
) -> _Packed:
    """Hash (and unless ``temp`` is None, gzip into ``temp``) one layer member."""
    what = f"{tar_path}: layer {entry.name!r}"
    diff = hashlib.new(diff_algorithm)
    blob = hashlib.sha256()
    with open(tar_path, "rb") as f:
        chunks = read_chunks(f, entry.offset, entry.size, what=what, cancel=cancel)
        head = os.pread(f.fileno(), 2, entry.offset)
        if head == b"\x1f\x8b":
            # Already gzip: the member is the blob; its diff_id is of the decompressed tar.
            def tee() -> Iterator[bytes]:
                for chunk in chunks:
                    blob.update(chunk)
                    yield chunk

            for out in inflate(tee(), what=what):
                diff.update(out)
            return _Packed(
                Digest(diff_algorithm, diff.hexdigest()),
                Digest("sha256", blob.hexdigest()),
                entry.size,
                mt.DOCKER_LAYER,
                None,
            )
        if temp is None:
            for chunk in chunks:
                diff.update(chunk)
                blob.update(chunk)
            return _Packed(
                Digest(diff_algorithm, diff.hexdigest()),
                Digest("sha256", blob.hexdigest()),
                entry.size,
                DOCKER_LAYER_TAR,
                None,
            )
        deflater = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
        written = 0
        with open(temp, "wb") as out_file:
            for chunk in chunks:
                diff.update(chunk)
                packed = deflater.compress(chunk)
                if packed:
                    blob.update(packed)
                    out_file.write(packed)
                    written += len(packed)
            tail = deflater.flush()
            blob.update(tail)
            out_file.write(tail)
            written += len(tail)
    return _Packed(
        Digest(diff_algorithm, diff.hexdigest()),
        Digest("sha256", blob.hexdigest()),
        written,
        mt.DOCKER_LAYER,
        temp,
    )
