"""Hostile and broken tars, built by hand with tarfile: each is refused with the right
typed error, the message names the entry, and nothing is ever extracted.

Every archive starts as a valid (empty) OCI layout, so the only thing wrong
with it is the entry under test.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from asyncreg import mediatypes as mt
from asyncreg.archive.reader import TarRepo
from asyncreg.archive.tarindex import MAX_LINK_DEPTH, index_tar
from asyncreg.digest import Digest
from asyncreg.errors import (
    ArchiveError,
    DigestMismatchError,
    HostilePathError,
    SizeMismatchError,
)
from asyncreg.manifest import Descriptor

pytestmark = pytest.mark.anyio

LAYOUT = orjson.dumps({"imageLayoutVersion": "1.0.0"})
EMPTY_INDEX = orjson.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []})

Member = tuple[tarfile.TarInfo, bytes | None]


def file(name: str, data: bytes = b"data") -> Member:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def special(name: str, kind: bytes, linkname: str = "") -> Member:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, None


def symlink(name: str, target: str) -> Member:
    return special(name, tarfile.SYMTYPE, target)


def hardlink(name: str, target: str) -> Member:
    return special(name, tarfile.LNKTYPE, target)


def layout_members(index: bytes = EMPTY_INDEX) -> list[Member]:
    return [file("oci-layout", LAYOUT), file("index.json", index)]


def write_tar(path: Path, members: list[Member]) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``tmp_path`` as the current directory; afterwards it must hold only the tar and work/."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "work").mkdir()
    yield tmp_path
    left = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    assert left == ["evil.tar", "work"], f"something was extracted or left behind: {left}"


CASES: dict[str, tuple[Callable[[], list[Member]], type[Exception], str]] = {
    "absolute path": (
        lambda: [*layout_members(), file("/etc/cron.d/evil")],
        HostilePathError,
        "/etc/cron.d/evil",
    ),
    "dot-dot": (lambda: [*layout_members(), file("../x")], HostilePathError, "../x"),
    "dot-dot inside": (
        lambda: [*layout_members(), file("blobs/../../x")],
        HostilePathError,
        "blobs/../../x",
    ),
    "symlink to /etc/passwd": (
        lambda: [*layout_members(), symlink("passwd", "/etc/passwd")],
        HostilePathError,
        "/etc/passwd",
    ),
    "symlink to ../../x": (
        lambda: [*layout_members(), symlink("a/link", "../../x")],
        HostilePathError,
        "a/link",
    ),
    "hard link outside": (
        lambda: [*layout_members(), hardlink("hard", "../outside")],
        HostilePathError,
        "hard",
    ),
    "hard link absolute": (
        lambda: [*layout_members(), hardlink("hard", "/etc/shadow")],
        HostilePathError,
        "/etc/shadow",
    ),
    "link loop": (
        lambda: [*layout_members(), symlink("a", "b"), symlink("b", "a")],
        HostilePathError,
        "loops",
    ),
    "link to a missing member": (
        lambda: [*layout_members(), symlink("dangling", "nowhere")],
        HostilePathError,
        "dangling",
    ),
    "long link chain": (
        lambda: [
            *layout_members(),
            file("l0"),
            *(symlink(f"l{i}", f"l{i - 1}") for i in range(1, MAX_LINK_DEPTH + 3)),
        ],
        HostilePathError,
        "chain",
    ),
    "char device": (
        lambda: [*layout_members(), special("dev/null", tarfile.CHRTYPE)],
        HostilePathError,
        "dev/null",
    ),
    "block device": (
        lambda: [*layout_members(), special("dev/sda", tarfile.BLKTYPE)],
        HostilePathError,
        "dev/sda",
    ),
    "fifo": (
        lambda: [*layout_members(), special("pipe", tarfile.FIFOTYPE)],
        HostilePathError,
        "pipe",
    ),
    "duplicate index.json": (
        lambda: [*layout_members(), file("./index.json", EMPTY_INDEX)],
        ArchiveError,
        "index.json",
    ),
    "duplicate manifest.json": (
        lambda: [file("manifest.json", b"[]"), file("manifest.json", b"[]")],
        ArchiveError,
        "manifest.json",
    ),
    "duplicate blob of another size": (
        lambda: [
            *layout_members(),
            file("blobs/sha256/" + "a" * 64, b"one"),
            file("blobs/sha256/" + "a" * 64, b"other"),
        ],
        ArchiveError,
        "blobs/sha256/" + "a" * 64,
    ),
    "blob not named by a digest": (
        lambda: [*layout_members(), file("blobs/sha256/nothex")],
        ArchiveError,
        "blobs/sha256/nothex",
    ),
    "blob of an unknown algorithm": (
        lambda: [*layout_members(), file("blobs/md5/" + "a" * 32)],
        ArchiveError,
        "blobs/md5/",
    ),
    "blob too deep": (
        lambda: [*layout_members(), file("blobs/sha256/x/" + "a" * 64)],
        ArchiveError,
        "blobs/sha256/x/",
    ),
    "neither format": (lambda: [file("hello.txt")], ArchiveError, "neither"),
    "index.json without oci-layout": (
        lambda: [file("index.json", EMPTY_INDEX)],
        ArchiveError,
        "oci-layout",
    ),
    "bad layout version": (
        lambda: [file("oci-layout", b'{"imageLayoutVersion":"2.0.0"}'), file("index.json")],
        ArchiveError,
        "2.0.0",
    ),
    "index.json is not an index": (
        lambda: layout_members(b'{"schemaVersion":2,"config":{}}'),
        ArchiveError,
        "index.json",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_hostile_or_malformed_archive_is_refused(workspace: Path, case: str) -> None:
    build, error, needle = CASES[case]
    archive = write_tar(workspace / "evil.tar", build())
    with pytest.raises(error) as caught:
        await TarRepo.open(archive, tmp_dir=workspace / "work")
    assert needle in str(caught.value)


async def test_duplicate_blob_of_equal_size_is_tolerated(workspace: Path) -> None:
    name = "blobs/sha256/" + hashlib.sha256(b"same").hexdigest()
    archive = write_tar(
        workspace / "evil.tar", [*layout_members(), file(name, b"same"), file(name, b"same")]
    )
    async with TarRepo(archive, tmp_dir=workspace / "work") as repo:
        assert await repo.blob_head(Digest("sha256", name.rsplit("/", 1)[1])) == 4


def _image_archive(path: Path, *, lie_about: str) -> tuple[Path, Descriptor, Descriptor]:
    """A one-image layout tar whose layer (or manifest) bytes do not match their name."""
    layer = b"real layer bytes"
    wrong_layer = b"evil layer bytes"  # same length
    layer_desc = Descriptor(mt.OCI_LAYER, Digest.of(layer), len(layer))
    config = b"{}"
    config_desc = Descriptor(mt.OCI_CONFIG, Digest.of(config), len(config))
    manifest = orjson.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": config_desc.to_json(),
            "layers": [layer_desc.to_json()],
        }
    )
    manifest_desc = Descriptor(mt.OCI_MANIFEST, Digest.of(manifest), len(manifest))
    stored_manifest = manifest
    if lie_about == "manifest":
        stored_manifest = manifest.replace(b'"schemaVersion":2', b'"schemaVersion":2 ')[:-1]
        assert len(stored_manifest) == len(manifest)
    index = orjson.dumps(
        {
            "schemaVersion": 2,
            "manifests": [{**manifest_desc.to_json(), "annotations": {"x": "y"}}],
        }
    )
    index = index.replace(b'"x":"y"', b'"org.opencontainers.image.ref.name":"v1"')
    members = [
        *layout_members(index),
        file(f"blobs/sha256/{config_desc.digest.hex}", config),
        file(
            f"blobs/sha256/{layer_desc.digest.hex}",
            wrong_layer if lie_about == "layer" else layer,
        ),
        file(f"blobs/sha256/{manifest_desc.digest.hex}", stored_manifest),
    ]
    return write_tar(path, members), manifest_desc, layer_desc


async def test_blob_bytes_not_matching_its_name(workspace: Path) -> None:
    archive, _, layer = _image_archive(workspace / "evil.tar", lie_about="layer")
    async with TarRepo(archive, tmp_dir=workspace / "work") as repo:
        assert await repo.manifest_head("v1") is not None  # opening is fine ...
        stream = await repo.blob_open(layer, verify=True)
        with pytest.raises(DigestMismatchError, match=str(layer.digest)) as caught:
            async for _ in stream:
                pass
        await stream.aclose()
        assert caught.value.expected == str(layer.digest)
        # ... without verification only the size is checked, and it is right.
        stream = await repo.blob_open(layer, verify=False)
        assert b"".join([c async for c in stream]) == b"evil layer bytes"
        await stream.aclose()


async def test_manifest_bytes_not_matching_its_name(workspace: Path) -> None:
    archive, manifest, _ = _image_archive(workspace / "evil.tar", lie_about="manifest")
    async with TarRepo(archive, tmp_dir=workspace / "work") as repo:
        with pytest.raises(DigestMismatchError):
            await repo.manifest_get("v1")
        with pytest.raises(DigestMismatchError):
            await repo.manifest_get(manifest.digest)


async def test_index_size_disagreeing_with_the_blob(workspace: Path) -> None:
    archive, manifest, _ = _image_archive(workspace / "evil.tar", lie_about="nothing")
    raw = archive.read_bytes()
    old = f'"size":{manifest.size}'.encode()
    new = f'"size":{manifest.size + 1:0{len(str(manifest.size))}d}'.encode()
    assert len(old) == len(new)
    assert raw.count(old) == 1
    archive.write_bytes(raw.replace(old, new))
    async with TarRepo(archive, tmp_dir=workspace / "work") as repo:
        with pytest.raises(SizeMismatchError):
            await repo.manifest_get("v1")


def _offsets(archive: Path) -> dict[str, tuple[int, int]]:
    """Member name -> (header offset, data offset), as tarfile reads them."""
    with tarfile.open(archive) as tar:
        return {m.name: (m.offset, m.offset_data) for m in tar.getmembers()}


@pytest.mark.parametrize(
    ("where", "needle"),
    [
        ("layer data", "is truncated"),  # the error names the blob entry, checked below
        ("last header", "truncated or corrupt"),
        ("first header", "not a readable tar"),
        ("empty", "not a readable tar"),
        ("not a tar", "not a readable tar"),
    ],
)
async def test_truncated_or_corrupt_tar(workspace: Path, where: str, needle: str) -> None:
    archive, _, layer = _image_archive(workspace / "evil.tar", lie_about="nothing")
    data = archive.read_bytes()
    offsets = _offsets(archive)
    layer_name = f"blobs/sha256/{layer.digest.hex}"
    last_header = max(header for header, _ in offsets.values())
    cut = {
        "layer data": data[: offsets[layer_name][1] + 5],
        "last header": data[: last_header + 100],
        "first header": data[:100],
        "empty": b"",
        "not a tar": b"x" * 4096,
    }[where]
    archive.write_bytes(cut)
    with pytest.raises(ArchiveError, match=needle) as caught:
        await TarRepo.open(archive, tmp_dir=workspace / "work")
    if where == "layer data":
        assert layer_name in str(caught.value)


async def test_garbage_after_the_last_member(workspace: Path) -> None:
    archive, _, _ = _image_archive(workspace / "evil.tar", lie_about="nothing")
    data = archive.read_bytes()
    stripped = data.rstrip(b"\0")
    padded = stripped + b"\0" * (-len(stripped) % 512)
    archive.write_bytes(padded + b"\x01" * 512 + b"\0" * 1024)
    with pytest.raises(ArchiveError, match="corrupt"):
        await TarRepo.open(archive, tmp_dir=workspace / "work")


async def test_truncated_gzip_tar(workspace: Path) -> None:
    archive, _, _ = _image_archive(workspace / "evil.tar", lie_about="nothing")
    packed = gzip.compress(archive.read_bytes())
    archive.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(ArchiveError, match="gzip"):
        await TarRepo.open(archive, tmp_dir=workspace / "work")


async def test_corrupt_zstd_tar(workspace: Path) -> None:
    archive = workspace / "evil.tar"
    archive.write_bytes(b"\x28\xb5\x2f\xfd" + b"\0" * 100)
    with pytest.raises(ArchiveError, match="zstd"):
        await TarRepo.open(archive, tmp_dir=workspace / "work")


async def test_hostile_gzip_tar_leaves_nothing_behind(workspace: Path) -> None:
    plain = write_tar(workspace / "evil.tar", [*layout_members(), symlink("x", "/etc/passwd")])
    plain.write_bytes(gzip.compress(plain.read_bytes()))
    with pytest.raises(HostilePathError, match="/etc/passwd"):
        await index_tar(plain, tmp_dir=workspace / "work")
    with pytest.raises(HostilePathError, match="/etc/passwd"):
        await TarRepo.open(plain, tmp_dir=workspace / "work")


async def test_unpacked_size_limit(workspace: Path) -> None:
    members = [*layout_members(), file("blobs/sha256/" + "b" * 64, b"\0" * 200_000)]
    plain = write_tar(workspace / "evil.tar", members)
    plain.write_bytes(gzip.compress(plain.read_bytes()))
    with pytest.raises(ArchiveError, match="limit"):
        await TarRepo.open(plain, tmp_dir=workspace / "work", max_unpacked_size=100_000)
