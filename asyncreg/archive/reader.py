"""`TarRepo`: an image tar as a read-only `Repo`, so an import is an ordinary copy.

Import is a copy whose source is a tar: the copy engine asks this repo for
manifests and blobs exactly as it would ask a registry, and gets the same
guarantees (digests checked, sizes capped, typed errors). The tar is indexed
once (`tarindex.index_tar`: headers only, hostile entries refused, nothing
extracted) and every read is a range of the archive file.

Two formats, told apart by their members:

- an OCI image layout in a tar (``oci-layout``, ``index.json``,
  ``blobs/<alg>/<hex>``): asyncreg's own export, skopeo's ``oci-archive:``,
  crane's, and Docker 25+ ``docker save`` (which also carries a
  ``manifest.json``; the OCI index is preferred because it holds the real
  manifests, not a legacy summary). Manifests and blobs are served as stored;
  every blob member must be named by a valid digest;
- a legacy ``docker save`` / skopeo ``docker-archive:`` tar (only
  ``manifest.json``): `dockersave.DockerSave` builds Docker schema2 manifests
  for it, compressing layers lazily.

Names: a tag matches an index.json entry's ``org.opencontainers.image.ref.name``
or ``io.containerd.image.name`` (also in Docker's short spellings:
``x:tag`` for ``docker.io/library/x:tag``), or a ``RepoTags`` entry of a docker
save (by tag alone, or by full ``name:tag``). A reference matching several
different images raises `ArchiveError` rather than guessing. A digest matches
any manifest in the archive.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Final, Literal

import anyio
import anyio.to_thread
import orjson

from ..budget import Budget
from ..digest import Digest, Verifier, digest_in
from ..errors import (
    ArchiveError,
    DigestFormatError,
    InputError,
    ManifestError,
    NotFoundError,
    SizeMismatchError,
    UnsupportedManifestError,
)
from ..manifest import DEFAULT_MAX_SIZE, Descriptor, Manifest
from ..reference import Reference
from ..store import BlobSource, BlobStream, Repo
from .dockersave import DockerSave, SavedImage
from .tarindex import FileRange, TarEntry, TarIndex, absolute, index_tar

__all__ = ["CONTAINERD_NAME", "REF_NAME", "TarRepo"]

#: The index.json annotation that holds a tag in an OCI layout.
REF_NAME: Final = "org.opencontainers.image.ref.name"
#: The annotation containerd and Docker 25+ add with the full image name.
CONTAINERD_NAME: Final = "io.containerd.image.name"

_MAX_LAYOUT_FILE: Final = 64 * 1024
_TAG: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")

ArchiveFormat = Literal["oci", "docker-save"]


@dataclass(frozen=True, slots=True)
class _Top:
    """A named (or unnamed) top-level image: an index.json entry or a manifest.json entry."""

    names: tuple[str, ...]
    desc: Descriptor | None = None  # OCI layout
    image: SavedImage | None = None  # docker save

    @property
    def identity(self) -> object:
        return self.desc.digest if self.desc is not None else self.image

    @property
    def display(self) -> str:
        if self.names:
            return self.names[0]
        return str(self.desc.digest) if self.desc is not None else "an unnamed image"


class TarRepo:
    """A tar of images, readable as a `Repo`; writes raise ``ArchiveError("read-only")``.

    Construct cheaply and let the first call (or ``async with``) index the
    tar, or use `TarRepo.open`, which indexes before returning::

        async with await TarRepo.open("images.tar") as src:
            for name, desc in await src.images():
                ...

    ``compress`` applies to legacy ``docker save`` tars only: gzip their
    layers (the default, as ``docker push`` would) or push them uncompressed.
    ``tmp_dir`` is where a gzip-compressed tar is decompressed and docker
    save layers are compressed (the system default when None); `aclose`
    removes everything made there. ``threads`` bounds the layer compressions
    running at once (default: the CPU count).
    """

    wants_manifest_first: bool = False
    verifies_blobs: bool = False

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        compress: bool = True,
        tmp_dir: str | os.PathLike[str] | None = None,
        max_manifest_size: int = DEFAULT_MAX_SIZE,
        max_unpacked_size: int | None = None,
        threads: int | None = None,
    ) -> None:
        self.path = absolute(path)
        self._key = f"tar:{self.path}"
        self._compress = compress
        self._tmp_dir = tmp_dir
        self._max_manifest = max_manifest_size
        self._max_unpacked = max_unpacked_size
        self._threads = threads
        self._lock = anyio.Lock()
        self._loaded = False
        self._closed = False
        self._work_dir: Path | None = None
        self._index: TarIndex | None = None
        self._docker: DockerSave | None = None
        self._tops: list[_Top] = []
        self._blobs: dict[Digest, TarEntry] = {}
        # Manifests by digest: descriptors seen in index.json or parsed indexes
        # (they carry the media type), and the parsed documents.
        self._known: dict[Digest, Descriptor] = {}
        self._parsed: dict[Digest, Manifest] = {}

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        compress: bool = True,
        tmp_dir: str | os.PathLike[str] | None = None,
        max_manifest_size: int = DEFAULT_MAX_SIZE,
        max_unpacked_size: int | None = None,
        threads: int | None = None,
    ) -> TarRepo:
        """A `TarRepo` over ``path``, already indexed (errors surface here)."""
        repo = cls(
            path,
            compress=compress,
            tmp_dir=tmp_dir,
            max_manifest_size=max_manifest_size,
            max_unpacked_size=max_unpacked_size,
            threads=threads,
        )
        await repo.load()
        return repo

    # --- identity -----------------------------------------------------------------------

    @property
    def key(self) -> str:
        """``tar:/absolute/path``."""
        return self._key

    @property
    def host(self) -> str:
        """Same as `key`: transfers from one tar share one limit bucket."""
        return self._key

    @property
    def format(self) -> ArchiveFormat:
        """``"oci"`` or ``"docker-save"`` (after loading)."""
        self._require()
        return "docker-save" if self._docker is not None else "oci"

    def __repr__(self) -> str:
        return f"TarRepo({str(self.path)!r})"

    # --- lifecycle ----------------------------------------------------------------------

    async def load(self) -> None:
        """Index the tar and read its index (idempotent; methods call it themselves).

        Raises `HostilePathError` or `ArchiveError` for an archive that is
        hostile, malformed or in neither format.
        """
        async with self._lock:
            if self._closed:
                raise ArchiveError(f"{self._key}: the archive was closed")
            if self._loaded:
                return
            try:
                await self._load()
            except BaseException:
                await self._cleanup()
                raise
            self._loaded = True

    async def _load(self) -> None:
        # Start clean: a failed earlier attempt may have filled some tables.
        self._index, self._docker = None, None
        self._tops, self._blobs, self._known, self._parsed = [], {}, {}, {}
        work = await anyio.to_thread.run_sync(_make_work_dir, self._tmp_dir)
        self._work_dir = work
        index = await index_tar(self.path, tmp_dir=work, max_unpacked_size=self._max_unpacked)
        self._index = index
        if "oci-layout" in index and "index.json" in index:
            await self._load_oci(index)
        elif "manifest.json" in index:
            docker = await DockerSave.load(
                index, work, compress=self._compress, threads=self._threads
            )
            self._docker = docker
            self._tops = [_Top(image.repo_tags, image=image) for image in docker.images]
        elif "index.json" in index:
            raise ArchiveError(
                f"{self.path}: has index.json but no oci-layout file, so it is not an OCI layout"
            )
        else:
            raise ArchiveError(
                f"{self.path}: neither an OCI layout tar (oci-layout, index.json) nor a"
                " docker save tar (manifest.json)"
            )

    async def _load_oci(self, index: TarIndex) -> None:
        layout_entry = index.get("oci-layout")
        assert layout_entry is not None
        layout_raw = await index.read(layout_entry, _MAX_LAYOUT_FILE)
        try:
            layout = orjson.loads(layout_raw)
        except orjson.JSONDecodeError as exc:
            raise ArchiveError(f"{self.path}: oci-layout is not valid JSON: {exc}") from None
        version = layout.get("imageLayoutVersion") if isinstance(layout, dict) else None
        if not isinstance(version, str) or not version.startswith("1."):
            raise ArchiveError(
                f"{self.path}: unsupported oci-layout imageLayoutVersion {version!r:.60}"
                " (expected 1.x)"
            )
        index_entry = index.get("index.json")
        assert index_entry is not None
        if index_entry.size > self._max_manifest:
            raise ArchiveError(
                f"{self.path}: index.json is {index_entry.size} bytes, larger than the"
                f" {self._max_manifest}-byte limit"
            )
        raw = await index.read(index_entry, self._max_manifest)
        try:
            top = Manifest.parse(raw, max_size=self._max_manifest)
        except ManifestError as exc:
            raise ArchiveError(f"{self.path}: index.json: {exc}") from None
        if not top.is_index:
            raise ArchiveError(f"{self.path}: index.json is a {top.media_type}, not an index")

        for entry in index.files():
            if not entry.name.startswith("blobs/"):
                continue
            parts = entry.name.split("/")
            if len(parts) != 3:
                raise ArchiveError(
                    f"{self.path}: tar entry {entry.name!r} is not blobs/<algorithm>/<hex>"
                )
            try:
                digest = Digest(parts[1], parts[2])
            except DigestFormatError as exc:
                raise ArchiveError(
                    f"{self.path}: tar entry {entry.name!r} is not named by a valid digest: {exc}"
                ) from None
            self._blobs[digest] = entry

        for desc in top.manifests:
            names = tuple(
                n
                for n in (desc.annotations.get(REF_NAME), desc.annotations.get(CONTAINERD_NAME))
                if n
            )
            self._tops.append(_Top(names, desc=desc))
            self._known.setdefault(desc.digest, desc)

    async def aclose(self) -> None:
        """Delete temporary files (decompressed tar, compressed layers); idempotent."""
        async with self._lock:
            self._closed = True
            await self._cleanup()

    async def _cleanup(self) -> None:
        if self._docker is not None:
            self._docker.close()
        if self._index is not None:
            await self._index.aclose()
        work, self._work_dir = self._work_dir, None
        if work is not None:
            await anyio.to_thread.run_sync(_remove_tree, work)

    async def __aenter__(self) -> TarRepo:
        await self.load()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _require(self) -> None:
        if self._closed:
            raise ArchiveError(f"{self._key}: the archive was closed")
        if not self._loaded:
            raise ArchiveError(f"{self._key}: not loaded yet (await load() first)")

    async def _ready(self) -> None:
        if not self._loaded or self._closed:
            await self.load()

    # --- what the archive holds -----------------------------------------------------------

    async def images(self) -> list[tuple[str | None, Descriptor]]:
        """Every top-level image as ``(name, descriptor)``, in archive order.

        OCI layout: one pair per index.json entry, named by its
        ``io.containerd.image.name`` (unique across a Docker save), else its
        ``org.opencontainers.image.ref.name``, else None; the descriptor is
        the entry as written (annotations, platform). Docker save: one pair per
        ``RepoTags`` entry (``(None, desc)`` for an untagged image), with the
        built schema2 manifest's descriptor, which compresses every layer
        first. Pass the name (or the digest) to `manifest_head` or a copy.
        """
        await self._ready()
        out: list[tuple[str | None, Descriptor]] = []
        if self._docker is not None:
            manifests = await self._docker.build_all()
            for image, manifest in zip(self._docker.images, manifests, strict=True):
                desc = manifest.descriptor()
                if not image.repo_tags:
                    out.append((None, desc))
                out.extend((tag, desc) for tag in image.repo_tags)
            return out
        for top in self._tops:
            assert top.desc is not None
            ann = top.desc.annotations
            out.append((ann.get(CONTAINERD_NAME) or ann.get(REF_NAME) or None, top.desc))
        return out

    async def tags(self) -> list[str]:
        """Every name the archive gives an image (ref names, containerd names, RepoTags)."""
        await self._ready()
        seen: dict[str, None] = {}
        for top in self._tops:
            for name in top.names:
                seen.setdefault(name, None)
        return list(seen)

    # --- manifests ------------------------------------------------------------------------

    async def manifest_head(self, reference: str | Digest) -> Descriptor | None:
        """Descriptor of a name or digest in the archive, or None when absent.

        Raises `ArchiveError` when a name matches several different images,
        or when index.json names a manifest the archive does not hold.
        """
        await self._ready()
        digest = digest_in(reference)
        if digest is not None:
            return await self._head_digest(digest)
        assert isinstance(reference, str)
        top = self._find(reference)
        if top is None:
            return None
        if top.image is not None:
            assert self._docker is not None
            return _plain(await self._docker.manifest(top.image))
        assert top.desc is not None
        desc = top.desc
        if desc.digest not in self._blobs:
            raise ArchiveError(
                f"{self._key}: index.json names {desc.digest} for {reference!r}, but the"
                f" archive has no blobs/{desc.digest.algorithm}/{desc.digest.hex} member"
            )
        return Descriptor(desc.media_type, desc.digest, desc.size)

    async def _head_digest(self, digest: Digest) -> Descriptor | None:
        if self._docker is not None:
            built = self._docker.built(digest)
            if built is None and not self._docker.matches(digest):
                await self._docker.build_all()  # a digest only a built manifest can have
                built = self._docker.built(digest)
            return None if built is None else _plain(built)
        entry = self._blobs.get(digest)
        if entry is None:
            return None
        known = self._known.get(digest)
        if known is not None:
            return Descriptor(known.media_type, digest, known.size)
        if entry.size > self._max_manifest:
            return None  # too large to be a manifest we would read
        assert self._index is not None
        raw = await self._index.read(entry, self._max_manifest)
        try:
            manifest = Manifest.parse(raw, digest=digest, max_size=self._max_manifest)
        except UnsupportedManifestError:
            raise
        except ManifestError:
            return None  # a config or layer, not a manifest
        self._remember(manifest)
        return _plain(manifest)

    async def manifest_get(self, reference: str | Digest) -> Manifest:
        """The manifest's exact bytes, checked against its digest and the size cap."""
        desc = await self.manifest_head(reference)
        if desc is None:
            raise NotFoundError(f"{self._key}: manifest {reference} not in the archive", status=404)
        if self._docker is not None:
            built = self._docker.built(desc.digest)
            assert built is not None
            return built
        cached = self._parsed.get(desc.digest)
        if cached is not None:
            return cached
        entry = self._blobs[desc.digest]
        if entry.size != desc.size:
            raise SizeMismatchError(
                f"{self._key}: manifest {desc.digest} is {entry.size} bytes in the archive,"
                f" but its descriptor says {desc.size}",
                expected=desc.size,
                actual=entry.size,
            )
        if entry.size > self._max_manifest:
            raise ManifestError(
                f"{self._key}: manifest {desc.digest} is {entry.size} bytes, larger than the"
                f" {self._max_manifest}-byte limit"
            )
        assert self._index is not None
        raw = await self._index.read(entry, self._max_manifest)
        manifest = Manifest.parse(
            raw, desc.media_type, digest=desc.digest, max_size=self._max_manifest
        )
        self._remember(manifest)
        return manifest

    def _remember(self, manifest: Manifest) -> None:
        self._parsed[manifest.digest] = manifest
        self._known.setdefault(manifest.digest, _plain(manifest))
        for child in manifest.manifests:
            self._known.setdefault(child.digest, child)

    def _find(self, reference: str) -> _Top | None:
        """The top-level image ``reference`` names: exactly, by tag, or by full name."""
        exact = [t for t in self._tops if reference in t.names]
        if exact:
            return self._one(reference, exact)
        if _TAG.fullmatch(reference):
            tagged = [t for t in self._tops if any(_tag_of(n) == reference for n in t.names)]
            if tagged:
                return self._one(reference, tagged)
        full = _full_name(reference)
        if full is None:
            return None
        named = [
            t
            for t in self._tops
            if any(not _TAG.fullmatch(n) and _full_name(n) == full for n in t.names)
        ]
        return self._one(reference, named) if named else None

    def _one(self, reference: str, candidates: list[_Top]) -> _Top:
        distinct: dict[object, _Top] = {}
        for top in candidates:
            distinct.setdefault(top.identity, top)
        if len(distinct) > 1:
            shown = ", ".join(t.display for t in distinct.values())
            raise ArchiveError(
                f"{self._key}: {reference!r} names {len(distinct)} different images ({shown});"
                " use a full name or a digest"
            )
        return candidates[0]

    async def referrers(self, digest: Digest) -> list[Descriptor]:
        """The referrers tag-schema index (tag ``sha256-<hex>``) of an OCI layout, else []."""
        await self._ready()
        if self._docker is not None:
            return []
        form = digest.tag_form
        for top in self._tops:
            if top.desc is not None and top.desc.annotations.get(REF_NAME) == form:
                manifest = await self.manifest_get(top.desc.digest)
                return list(manifest.manifests) if manifest.is_index else []
        return []

    # --- blobs ------------------------------------------------------------------------------

    async def blob_head(self, digest: Digest) -> int | None:
        """Size of the blob, or None (for docker save layers: once their image was built)."""
        await self._ready()
        if self._docker is not None:
            blob = self._docker.blob(digest)
            return None if blob is None else blob.size
        entry = self._blobs.get(digest)
        return None if entry is None else entry.size

    async def blob_open(
        self, desc: Descriptor, *, verify: bool = True, budget: Budget | None = None
    ) -> BlobStream:
        """A chunked stream of the blob: size always checked, digest too with ``verify``."""
        path, offset = await self.blob_file(desc)
        what = f"{self._key}: blob {desc.digest}"
        verifier = Verifier(desc.digest, desc.size, what=what, hashing=verify)
        return FileRange(Path(path), offset, desc.size, verifier=verifier, what=what)

    async def blob_file(self, desc: Descriptor) -> tuple[str, int]:
        """Where the blob's bytes are: the (decompressed) archive, or a packed layer file."""
        await self._ready()
        what = f"{self._key}: blob {desc.digest}"
        if self._docker is not None:
            blob = self._docker.blob(desc.digest)
            if blob is None:
                await self._docker.build_all()  # a layer of an image not built yet
                blob = self._docker.blob(desc.digest)
            if blob is None:
                raise NotFoundError(f"{what}: not in the archive", status=404)
            _check_size(what, blob.size, desc.size)
            return str(blob.path), blob.offset
        entry = self._blobs.get(desc.digest)
        if entry is None:
            raise NotFoundError(f"{what}: not in the archive", status=404)
        _check_size(what, entry.size, desc.size)
        if entry.kind != "file":
            raise ArchiveError(f"{what}: tar entry {entry.name!r} is not a file")
        assert self._index is not None
        return str(self._index.path), entry.offset

    # --- writes: refused ----------------------------------------------------------------------

    async def manifest_put(
        self, manifest: Manifest, tag: str | None = None, *, child: bool = False
    ) -> None:
        """Refused: an archive being read is read-only."""
        raise ArchiveError("read-only")

    async def blob_put(
        self,
        desc: Descriptor,
        source: BlobSource,
        *,
        budget: Budget | None = None,
        chunked: bool = False,
    ) -> None:
        """Refused: an archive being read is read-only."""
        raise ArchiveError("read-only")

    async def mount_blob(self, desc: Descriptor, source: object) -> bool:
        """Never mounts: answers False, the protocol's "no"."""
        return False


# --- helpers ------------------------------------------------------------------------------


def _make_work_dir(tmp_dir: str | os.PathLike[str] | None) -> Path:
    return Path(tempfile.mkdtemp(prefix="asyncreg-tar-", dir=tmp_dir))


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _plain(manifest: Manifest) -> Descriptor:
    """What a HEAD answers: media type, digest, size."""
    return Descriptor(manifest.media_type, manifest.digest, manifest.size)


def _check_size(what: str, actual: int, declared: int) -> None:
    if actual != declared:
        raise SizeMismatchError(
            f"{what}: the archive holds {actual} bytes, the descriptor says {declared}",
            expected=declared,
            actual=actual,
        )


def _full_name(name: str) -> str | None:
    """``registry/repository:tag`` with Docker's defaults, or None when not a reference."""
    try:
        ref = Reference.parse(name)
    except InputError:
        return None
    if ref.digest is not None and ref.tag is None:
        return f"{ref.registry}/{ref.repository}@{ref.digest}"
    return f"{ref.registry}/{ref.repository}:{ref.tag or 'latest'}"


def _tag_of(name: str) -> str | None:
    """The tag part of a name (the name itself when it is a bare tag)."""
    if _TAG.fullmatch(name):
        return name
    try:
        return Reference.parse(name).tag
    except InputError:
        return None


if TYPE_CHECKING:

    def _conforms(repo: TarRepo) -> Repo:
        return repo  # mypy checks TarRepo against the Repo protocol here
