"""`TarRepo` over real archives: test-kit layouts tarred here, skopeo's oci-archive and
docker-archive tars, hand-made ``docker save`` tars, and imports into a real registry.

Archives come from tools other than the reader (tarfile, skopeo, the test
kit's builder), and every image read back is walked by `validate`, which
re-hashes each blob, so a reader bug cannot hide behind a writer bug.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

import anyio
import orjson
import pytest

from asyncreg import Client, Digest
from asyncreg import mediatypes as mt
from asyncreg.archive.dockersave import DOCKER_LAYER_TAR
from asyncreg.archive.reader import CONTAINERD_NAME, REF_NAME, TarRepo
from asyncreg.archive.tarindex import index_tar, inflate, normalise_name
from asyncreg.engine.copy import Copier
from asyncreg.engine.job import Job
from asyncreg.engine.limits import Slots
from asyncreg.errors import (
    ArchiveError,
    DigestMismatchError,
    HostilePathError,
    NotFoundError,
    SizeMismatchError,
)
from asyncreg.manifest import Descriptor
from asyncreg.options import CopyOptions
from asyncreg.store import BlobStream, Repo
from asyncreg.testkit.builder import BuiltImage, ImageBuilder, ImageSpec
from asyncreg.testkit.registry import RegistryProcess
from asyncreg.testkit.skopeo import skopeo_copy
from asyncreg.testkit.validate import validate

pytestmark = pytest.mark.anyio

SMALL = ImageSpec(layers=2, layer_size=48 * 1024)


# --- archive makers ------------------------------------------------------------------------


def tar_layout(root: Path, out: Path, *, extra: dict[str, bytes] | None = None) -> Path:
    """Tar the OCI layout at ``root`` (names relative to it, sorted), plus ``extra`` files."""
    with tarfile.open(out, "w") as tar:
        for path in sorted(root.rglob("*")):
            tar.add(path, arcname=path.relative_to(root).as_posix(), recursive=False)
        for name, data in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out


def gunzip(data: bytes) -> bytes:
    return b"".join(inflate([data], what="test"))


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def add_symlink(tar: tarfile.TarFile, name: str, target: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    tar.addfile(info)


def docker_save_tar(
    builder: ImageBuilder,
    images: Sequence[tuple[Sequence[str], BuiltImage]],
    out: Path,
    *,
    corrupt_layer: int | None = None,
) -> Path:
    """A legacy ``docker save`` tar of builder images, made by hand.

    Layers are stored uncompressed as ``<diff hex>.tar`` and listed through
    ``<n>/layer.tar -> ../<diff hex>.tar`` symlinks, as docker save and skopeo
    write them; configs as ``<config hex>.json``. ``corrupt_layer`` flips a
    byte of that layer (its size stays the same).
    """
    entries = []
    written: set[str] = set()
    with tarfile.open(out, "w") as tar:
        for tags, built in images:
            assert built.config is not None
            config = builder.blob_path(built.config.digest).read_bytes()
            config_name = f"{built.config.hex}.json"
            if config_name not in written:
                add_bytes(tar, config_name, config)
                written.add(config_name)
            layer_paths = []
            for i, layer in enumerate(built.layers):
                plain = gunzip(builder.blob_path(layer.digest).read_bytes())
                if corrupt_layer == i:
                    plain = plain[:600] + bytes([plain[600] ^ 0xFF]) + plain[601:]
                diff_hex = built.diff_ids[i].partition(":")[2]
                file_name = f"{diff_hex}.tar"
                link = f"{hashlib.sha256(f'{diff_hex}{i}'.encode()).hexdigest()}/layer.tar"
                if file_name not in written:
                    add_bytes(tar, file_name, plain)
                    written.add(file_name)
                if link not in written:
                    add_symlink(tar, link, f"../{file_name}")
                    written.add(link)
                layer_paths.append(link)
            entries.append({"Config": config_name, "RepoTags": list(tags), "Layers": layer_paths})
        add_bytes(tar, "manifest.json", orjson.dumps(entries))
    return out


async def read_all(repo: Repo, desc: Descriptor, *, verify: bool = True) -> bytes:
    stream = await repo.blob_open(desc, verify=verify)
    try:
        return b"".join([chunk async for chunk in stream])
    finally:
        await stream.aclose()


def only_files(path: Path) -> list[str]:
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*"))


# --- OCI layout tars ---------------------------------------------------------------------------


async def test_layout_tar_serves_tags_manifests_and_blobs(
    builder: ImageBuilder, tmp_path: Path
) -> None:
    image = builder.image("v1", SMALL)
    index = builder.index("multi", ["linux/amd64", "linux/arm64"], SMALL)
    archive = tar_layout(builder.root, tmp_path / "layout.tar")
    work = tmp_path / "work"
    work.mkdir()

    async with await TarRepo.open(archive, tmp_dir=work) as repo:
        assert isinstance(repo, Repo)
        assert repo.key == repo.host == f"tar:{archive}"
        assert repo.format == "oci"
        assert not repo.wants_manifest_first
        assert not repo.verifies_blobs
        assert await repo.tags() == ["v1", "multi"]

        head = await repo.manifest_head("v1")
        assert head is not None
        assert str(head.digest) == image.digest
        assert head.media_type == mt.OCI_MANIFEST
        assert head.size == image.size
        manifest = await repo.manifest_get("v1")
        assert manifest.raw == image.manifest
        for blob in image.blobs:
            assert await repo.blob_head(Digest.parse(blob.digest)) == blob.size
            desc = Descriptor(blob.media_type, Digest.parse(blob.digest), blob.size)
            data = await read_all(repo, desc)
            assert "sha256:" + hashlib.sha256(data).hexdigest() == blob.digest
            assert await read_all(repo, desc, verify=False) == data

        # A child of the index is found by digest, with its media type.
        child = index.children[1]
        by_digest = await repo.manifest_head(Digest.parse(child.digest))
        assert by_digest is not None
        assert by_digest.media_type == mt.OCI_MANIFEST
        assert (await repo.manifest_get(child.digest)).raw == child.manifest
        # A config is a blob, not a manifest.
        assert image.config is not None
        assert await repo.manifest_head(image.config.digest) is None

        checked = await validate(repo, "multi")
        assert str(checked.digest) == index.digest
        assert len(checked.manifests) == 3
        assert {str(b) for b in checked.blobs} == {b.digest for b in index.blobs}
        assert (await validate(repo, "v1")).digest == head.digest

        assert await repo.manifest_head("nope") is None
        assert await repo.manifest_head("sha256:" + "0" * 64) is None
        with pytest.raises(NotFoundError):
            await repo.manifest_get("nope")
        assert await repo.blob_head(Digest("sha256", "0" * 64)) is None
        with pytest.raises(NotFoundError):
            await repo.blob_open(Descriptor(mt.OCI_LAYER, Digest("sha256", "0" * 64), 1))
        images = await repo.images()
        assert [(n, str(d.digest)) for n, d in images] == [
            ("v1", image.digest),
            ("multi", index.digest),
        ]
        assert images[0][1].annotations[REF_NAME] == "v1"
        assert await repo.referrers(Digest.parse(image.digest)) == []

        with pytest.raises(ArchiveError, match="read-only"):
            await repo.manifest_put(manifest, "x")
        with pytest.raises(ArchiveError, match="read-only"):
            await repo.blob_put(head, _no_source)
        assert await repo.mount_blob(head, repo) is False
    assert only_files(work) == [], "temporary files left behind"
    with pytest.raises(ArchiveError, match="closed"):
        await repo.manifest_head("v1")


async def _no_source() -> BlobStream:
    raise AssertionError("never called")


async def test_wrong_declared_size_is_refused(builder: ImageBuilder, tmp_path: Path) -> None:
    image = builder.image("v1", SMALL)
    archive = tar_layout(builder.root, tmp_path / "layout.tar")
    blob = image.layers[0]
    async with TarRepo(archive) as repo:
        with pytest.raises(SizeMismatchError):
            await repo.blob_open(Descriptor(blob.media_type, Digest.parse(blob.digest), 10))


async def test_lazy_load_and_open_errors_surface(builder: ImageBuilder, tmp_path: Path) -> None:
    builder.image("v1", SMALL)
    archive = tar_layout(builder.root, tmp_path / "layout.tar")
    repo = TarRepo(archive)  # no I/O yet
    try:
        head = await repo.manifest_head("v1")  # loads on first use
        assert head is not None
    finally:
        await repo.aclose()
    with pytest.raises(ArchiveError, match="not a readable tar"):
        await TarRepo.open(tmp_path / "layout" / "index.json")
    with pytest.raises(ArchiveError, match="cannot read"):
        await TarRepo.open(tmp_path / "missing.tar")


async def test_gzip_compressed_tar_is_accepted(builder: ImageBuilder, tmp_path: Path) -> None:
    image = builder.image("v1", SMALL)
    plain = tar_layout(builder.root, tmp_path / "layout.tar")
    packed = tmp_path / "layout.tar.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes(), compresslevel=1))
    work = tmp_path / "work"
    work.mkdir()
    async with await TarRepo.open(packed, tmp_dir=work) as repo:
        assert len(only_files(work)) == 2, "expected the work dir and the decompressed tar"
        checked = await validate(repo, "v1")
        assert str(checked.digest) == image.digest
    assert only_files(work) == []


async def test_docker25_style_tar_prefers_the_oci_index(
    builder: ImageBuilder, tmp_path: Path
) -> None:
    image = builder.image("v1", SMALL)
    assert image.config is not None
    legacy = [
        {
            "Config": f"blobs/sha256/{image.config.hex}",
            "RepoTags": ["docker.io/library/app:v1"],
            "Layers": [f"blobs/sha256/{d.hex}" for d in image.layers],
        }
    ]
    # Docker 25+ annotates index.json entries with both names.
    index_path = builder.root / "index.json"
    doc = orjson.loads(index_path.read_bytes())
    doc["manifests"][0]["annotations"][CONTAINERD_NAME] = "docker.io/library/app:v1"
    index_path.write_bytes(orjson.dumps(doc))
    archive = tar_layout(
        builder.root, tmp_path / "d25.tar", extra={"manifest.json": orjson.dumps(legacy)}
    )
    async with TarRepo(archive) as repo:
        assert repo.format == "oci"
        for name in ("v1", "app:v1", "docker.io/library/app:v1", "app@" + image.digest):
            head = await repo.manifest_head(name)
            assert head is not None, name
            assert str(head.digest) == image.digest
        assert await repo.manifest_head("other:v1") is None
        assert [n for n, _ in await repo.images()] == ["docker.io/library/app:v1"]
        assert sorted(await repo.tags()) == ["docker.io/library/app:v1", "v1"]


async def test_referrers_fallback_tag(builder: ImageBuilder, tmp_path: Path) -> None:
    image = builder.image("v1", SMALL)
    sig = builder.artifact(None, image)
    fallback = orjson.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_INDEX,
            "manifests": [
                {
                    "mediaType": mt.OCI_MANIFEST,
                    "digest": sig.digest,
                    "size": sig.size,
                    "artifactType": sig.artifact_type,
                }
            ],
        }
    )
    fallback_digest = "sha256:" + hashlib.sha256(fallback).hexdigest()
    builder.blob_path(fallback_digest).write_bytes(fallback)
    index_path = builder.root / "index.json"
    doc = orjson.loads(index_path.read_bytes())
    tag = Digest.parse(image.digest).tag_form
    doc["manifests"].append(
        {
            "mediaType": mt.OCI_INDEX,
            "digest": fallback_digest,
            "size": len(fallback),
            "annotations": {REF_NAME: tag},
        }
    )
    index_path.write_bytes(orjson.dumps(doc))
    archive = tar_layout(builder.root, tmp_path / "refs.tar")
    async with TarRepo(archive) as repo:
        found = await repo.referrers(Digest.parse(image.digest))
        assert [str(d.digest) for d in found] == [sig.digest]
        assert found[0].artifact_type == sig.artifact_type
        assert await repo.referrers(Digest.parse(sig.digest)) == []
        # The artifact itself is a manifest found by digest only.
        head = await repo.manifest_head(sig.digest)
        assert head is not None
        assert head.media_type == mt.OCI_MANIFEST


# --- skopeo-made archives ----------------------------------------------------------------------


async def test_skopeo_oci_archive_single_image(builder: ImageBuilder, tmp_path: Path) -> None:
    image = builder.image("v1", SMALL)
    archive = tmp_path / "oci.tar"
    skopeo_copy(f"oci:{builder.root}:v1", f"oci-archive:{archive}:v1", "--preserve-digests")
    async with TarRepo(archive) as repo:
        head = await repo.manifest_head("v1")
        assert head is not None
        assert str(head.digest) == image.digest
        checked = await validate(repo, "v1")
        assert {str(b) for b in checked.blobs} == {b.digest for b in image.blobs}


async def test_skopeo_oci_archive_index(builder: ImageBuilder, tmp_path: Path) -> None:
    spec = ImageSpec(layers=2, layer_size=32 * 1024, shared_layers=1)
    index = builder.index("multi", ["linux/amd64", "linux/arm64", "linux/arm/v7"], spec)
    archive = tmp_path / "oci-all.tar"
    skopeo_copy(
        f"oci:{builder.root}:multi", f"oci-archive:{archive}:multi", "--all", "--preserve-digests"
    )
    async with TarRepo(archive) as repo:
        checked = await validate(repo, "multi")
        assert str(checked.digest) == index.digest
        assert {str(m) for m in checked.manifests} == {m.digest for m in index.manifests()}
        assert {str(b) for b in checked.blobs} == {b.digest for b in index.blobs}


@pytest.mark.parametrize("compress", [True, False])
async def test_skopeo_docker_archive(builder: ImageBuilder, tmp_path: Path, compress: bool) -> None:
    image = builder.image("v1", ImageSpec(layers=3, layer_size=40 * 1024))
    archive = tmp_path / "docker.tar"
    skopeo_copy(f"oci:{builder.root}:v1", f"docker-archive:{archive}:example.com/team/app:v1")
    with tarfile.open(archive) as tar:
        assert any(m.issym() for m in tar.getmembers()), "skopeo wrote no symlinks this time"
    work = tmp_path / "work"
    work.mkdir()
    async with TarRepo(archive, compress=compress, tmp_dir=work) as repo:
        assert repo.format == "docker-save"
        for name in ("v1", "example.com/team/app:v1"):
            head = await repo.manifest_head(name)
            assert head is not None
            assert head.media_type == mt.DOCKER_MANIFEST
        assert await repo.manifest_head("app:v1") is None  # docker.io/library/app is another
        manifest = await repo.manifest_get("v1")
        assert manifest.media_type == mt.DOCKER_MANIFEST
        assert manifest.config is not None
        assert image.config is not None
        assert str(manifest.config.digest) == image.config.digest
        assert manifest.config.media_type == mt.DOCKER_CONFIG
        assert len(manifest.layers) == 3
        for layer, diff_id in zip(manifest.layers, image.diff_ids, strict=True):
            data = await read_all(repo, layer)
            if compress:
                assert layer.media_type == mt.DOCKER_LAYER
                data = gunzip(data)
            else:
                assert layer.media_type == DOCKER_LAYER_TAR
                assert str(layer.digest) == diff_id
            assert "sha256:" + hashlib.sha256(data).hexdigest() == diff_id
        checked = await validate(repo, "example.com/team/app:v1")
        assert checked.digest == manifest.digest
        # The synthetic manifest is also served by its digest, and is stable.
        again = await repo.manifest_head(manifest.digest)
        assert again is not None
        assert again.digest == manifest.digest
        assert await repo.images() == [("example.com/team/app:v1", manifest.descriptor())]
        if compress:
            assert len(list(work.rglob("layer-*.tar.gz"))) == 3
    assert only_files(work) == []


# --- hand-made docker save tars ----------------------------------------------------------------


async def test_docker_save_names_and_ambiguity(builder: ImageBuilder, tmp_path: Path) -> None:
    a = builder.image(None, ImageSpec(layers=2, layer_size=16 * 1024, shared_layers=1))
    b = builder.image(None, ImageSpec(layers=2, layer_size=16 * 1024, shared_layers=1))
    c = builder.image(None, ImageSpec(layers=1, layer_size=8 * 1024))
    archive = docker_save_tar(
        builder,
        [(["a:latest", "a:1.0"], a), (["localhost:5000/b:latest"], b), ([], c)],
        tmp_path / "save.tar",
    )
    async with TarRepo(archive) as repo:
        assert await repo.tags() == ["a:latest", "a:1.0", "localhost:5000/b:latest"]
        with pytest.raises(ArchiveError, match="names 2 different images"):
            await repo.manifest_head("latest")
        head_a = await repo.manifest_head("a:latest")
        assert head_a is not None
        for name in ("1.0", "a", "docker.io/library/a:1.0", "a:1.0"):
            found = await repo.manifest_head(name)
            assert found is not None, name
            assert found.digest == head_a.digest
        head_b = await repo.manifest_head("localhost:5000/b")
        assert head_b is not None
        assert head_b.digest != head_a.digest
        assert await repo.manifest_head("b:latest") is None
        images = await repo.images()
        assert [n for n, _ in images] == ["a:latest", "a:1.0", "localhost:5000/b:latest", None]
        assert images[0][1] == images[1][1]
        unnamed = images[3][1]
        checked = await validate(repo, unnamed.digest)
        assert c.config is not None
        assert {str(x) for x in checked.blobs} >= {c.config.digest}


async def test_docker_save_compresses_each_layer_once(
    builder: ImageBuilder, tmp_path: Path
) -> None:
    spec = ImageSpec(layers=3, layer_size=64 * 1024, shared_layers=2)
    a = builder.image(None, spec)
    b = builder.image(None, spec)
    archive = docker_save_tar(builder, [(["a:1"], a), (["b:1"], b)], tmp_path / "save.tar")
    work = tmp_path / "work"
    work.mkdir()
    async with TarRepo(archive, tmp_dir=work, threads=2) as repo:
        heads: list[Descriptor | None] = [None] * 8

        async def ask(i: int) -> None:
            heads[i] = await repo.manifest_head("a:1" if i % 2 else "b:1")

        async with anyio.create_task_group() as tg:
            for i in range(8):
                tg.start_soon(ask, i)
        assert len({h.digest for h in heads if h is not None}) == 2
        # 2 shared layers + 1 own layer per image = 4 distinct layers, each packed once.
        assert len(list(work.rglob("layer-*.tar.gz"))) == 4
        for name in ("a:1", "b:1"):
            await validate(repo, name)


async def test_docker_save_layer_not_matching_diff_id(
    builder: ImageBuilder, tmp_path: Path
) -> None:
    image = builder.image(None, SMALL)
    archive = docker_save_tar(builder, [(["x:1"], image)], tmp_path / "bad.tar", corrupt_layer=1)
    for compress in (True, False):
        async with TarRepo(archive, compress=compress) as repo:
            with pytest.raises(DigestMismatchError, match=r"rootfs\.diff_ids\[1\]") as err:
                await repo.manifest_head("x:1")
            assert "layer.tar" in str(err.value)


async def test_docker_save_config_not_matching_its_name(
    builder: ImageBuilder, tmp_path: Path
) -> None:
    image = builder.image(None, SMALL)
    assert image.config is not None
    archive = tmp_path / "cfg.tar"
    config = builder.blob_path(image.config.digest).read_bytes()
    with tarfile.open(archive, "w") as tar:
        add_bytes(tar, f"{image.config.hex}.json", config.replace(b"amd64", b"arm64"))
        entry = {"Config": f"{image.config.hex}.json", "RepoTags": ["x:1"], "Layers": []}
        add_bytes(tar, "manifest.json", orjson.dumps([entry]))
    with pytest.raises(DigestMismatchError, match=image.config.hex):
        await TarRepo.open(archive)


@pytest.mark.parametrize(
    ("layers", "error", "match"),
    [
        (["../escape.tar"], HostilePathError, "escape.tar"),
        (["missing.tar"], ArchiveError, "missing.tar"),
    ],
)
async def test_docker_save_bad_layer_paths(
    builder: ImageBuilder, tmp_path: Path, layers: list[str], error: type[Exception], match: str
) -> None:
    image = builder.image(None, ImageSpec(layers=1, layer_size=1024))
    assert image.config is not None
    archive = tmp_path / "paths.tar"
    with tarfile.open(archive, "w") as tar:
        add_bytes(
            tar,
            f"{image.config.hex}.json",
            builder.blob_path(image.config.digest).read_bytes(),
        )
        entry = {"Config": f"{image.config.hex}.json", "RepoTags": ["x:1"], "Layers": layers}
        add_bytes(tar, "manifest.json", orjson.dumps([entry]))
    with pytest.raises(error, match=match):
        await TarRepo.open(archive)


async def test_compression_does_not_stall_the_event_loop(
    builder: ImageBuilder, tmp_path: Path
) -> None:
    image = builder.image(None, ImageSpec(layers=2, layer_size=12 * 1024 * 1024))
    archive = docker_save_tar(builder, [(["big:1"], image)], tmp_path / "big.tar")
    gaps: list[float] = []
    done = anyio.Event()

    async def ticker() -> None:
        last = time.monotonic()
        while not done.is_set():
            await anyio.sleep(0.005)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    async with TarRepo(archive) as repo, anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        started = time.monotonic()
        await repo.manifest_head("big:1")
        elapsed = time.monotonic() - started
        done.set()
    assert elapsed > 0.05, "compression was too quick to tell anything"
    assert max(gaps) < max(0.1, elapsed / 3), f"loop stalled {max(gaps):.3f}s of {elapsed:.3f}s"


# --- tarindex ----------------------------------------------------------------------------------


def test_normalise_name() -> None:
    assert normalise_name("./a//b/./c/") == "a/b/c"
    assert normalise_name("././") == ""
    with pytest.raises(HostilePathError, match="/abs"):
        normalise_name("/abs")
    with pytest.raises(HostilePathError, match=r"a/\.\./b"):
        normalise_name("a/../b")


async def test_index_resolves_links_inside_the_archive(tmp_path: Path) -> None:
    archive = tmp_path / "links.tar"
    with tarfile.open(archive, "w") as tar:
        add_bytes(tar, "./data/real.tar", b"x" * 3000)
        add_symlink(tar, "./id/layer.tar", "../data/real.tar")
        add_symlink(tar, "second", "id/layer.tar")
        hard = tarfile.TarInfo("hard")
        hard.type = tarfile.LNKTYPE
        hard.linkname = "data/real.tar"
        tar.addfile(hard)
    index = await index_tar(archive)
    real = index.get("data/real.tar")
    assert real is not None
    for name in ("id/layer.tar", "./second", "hard"):
        entry = index.get(name)
        assert entry is not None
        assert (entry.offset, entry.size, entry.target) == (real.offset, 3000, "data/real.tar")
    assert index.get("data") is None  # no directory member was written
    assert index.get("../x") is None
    stream = index.open_range(real)
    chunks = [c async for c in stream]
    await stream.aclose()
    assert b"".join(chunks) == b"x" * 3000
    assert not index.compressed


async def test_multi_member_gzip_tar(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        add_bytes(tar, "a", os.urandom(5000))
    raw = buf.getvalue()
    archive = tmp_path / "multi.tar.gz"
    archive.write_bytes(gzip.compress(raw[:1000]) + gzip.compress(raw[1000:]))
    index = await index_tar(archive, tmp_dir=tmp_path)
    try:
        assert index.compressed
        entry = index.get("a")
        assert entry is not None
        assert await index.read(entry, 10_000) == raw[512:5512]
    finally:
        await index.aclose()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["multi.tar.gz"]


def test_inflate_is_bounded_and_strict() -> None:
    data = zlib.compress(b"\0" * (8 * 1024 * 1024), wbits=31)
    pieces = list(inflate([data[i : i + 100] for i in range(0, len(data), 100)], what="t"))
    assert sum(map(len, pieces)) == 8 * 1024 * 1024
    assert max(map(len, pieces)) <= 1024 * 1024
    with pytest.raises(ArchiveError, match="truncated"):
        list(inflate([data[:-10]], what="t"))
    with pytest.raises(ArchiveError, match="corrupt"):
        list(inflate([data + b"garbage!"], what="t"))


# --- import into a real registry ------------------------------------------------------------


async def _import(
    archive: Path,
    reference: str,
    registry: RegistryProcess,
    repo_name: str,
    *,
    compress: bool = True,
) -> Digest:
    async with Client() as client, TarRepo(archive, compress=compress) as source:
        target = client.repo(f"{registry.host}/{repo_name}")
        job = Job(Slots(client.limits))
        result = await Copier(job, source, target, CopyOptions()).copy(reference, "imported")
        checked = await validate(target, "imported")
        assert checked.digest == result.digest
        assert checked.blobs
        return result.digest


async def test_import_oci_tar_into_registry_keeps_digest(
    builder: ImageBuilder, tmp_path: Path, registry: RegistryProcess, repo_name: str
) -> None:
    index = builder.index("multi", ["linux/amd64", "linux/arm64"], SMALL)
    archive = tmp_path / "oci.tar"
    skopeo_copy(
        f"oci:{builder.root}:multi", f"oci-archive:{archive}:multi", "--all", "--preserve-digests"
    )
    digest = await _import(archive, "multi", registry, repo_name)
    assert str(digest) == index.digest


async def test_import_docker_archive_into_registry(
    builder: ImageBuilder, tmp_path: Path, registry: RegistryProcess, repo_name: str
) -> None:
    builder.image("v1", ImageSpec(layers=3, layer_size=64 * 1024))
    archive = tmp_path / "docker.tar"
    skopeo_copy(f"oci:{builder.root}:v1", f"docker-archive:{archive}:app:v1")
    async with TarRepo(archive) as repo:
        expected = await repo.manifest_head("app:v1")
    assert expected is not None
    digest = await _import(archive, "app:v1", registry, repo_name)
    # Compression is deterministic, so a second reader builds the same manifest.
    assert digest == expected.digest


async def test_import_uncompressed_docker_layers(
    builder: ImageBuilder, tmp_path: Path, registry: RegistryProcess, repo_name: str
) -> None:
    image = builder.image(None, SMALL)
    archive = docker_save_tar(builder, [(["plain:1"], image)], tmp_path / "save.tar")
    await _import(archive, "plain:1", registry, repo_name, compress=False)
