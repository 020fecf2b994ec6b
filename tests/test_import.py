"""Import through Client and the CLI: our tars, skopeo's tars, stdin, several images."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from asyncreg import Client, Digest
from asyncreg.errors import ConfigError, HostilePathError
from asyncreg.testkit.builder import ImageBuilder, ImageSpec
from asyncreg.testkit.registry import RegistryProcess
from asyncreg.testkit.skopeo import push_layout, skopeo_copy, skopeo_inspect_raw
from asyncreg.testkit.validate import validate
from tests.fixtures import Seeder

pytestmark = pytest.mark.anyio

SPEC = ImageSpec(layers=2, layer_size=128 * 1024, shared_layers=1)


async def test_round_trip_registry_tar_registry_keeps_digests(
    seeded: Seeder, tmp_path: Path, registry_b: RegistryProcess, repo_name: str
) -> None:
    index, multi = seeded(SPEC, tag="multi", platforms=["linux/amd64", "linux/arm64"])
    image, one = seeded(ImageSpec(layers=2, layer_size=64 * 1024), tag="one")
    tar = tmp_path / "both.tar"
    async with Client() as client:
        await client.export([multi, one], tar)
        with pytest.raises(ConfigError):
            await client.import_(tar, f"{registry_b.host}/{repo_name}")
        results = await client.import_(tar, f"{registry_b.host}/{repo_name}", all_images=True)
        assert sorted(str(r.digest) for r in results) == sorted([index.digest, image.digest])
        target = client.repo(f"{registry_b.host}/{repo_name}")
        assert str((await validate(target, "multi")).digest) == index.digest
        assert str((await validate(target, "one")).digest) == image.digest


async def test_import_skopeo_archives(
    builder: ImageBuilder, tmp_path: Path, registry: RegistryProcess, repo_name: str
) -> None:
    built = builder.index("idx", ["linux/amd64", "linux/arm64"], SPEC)
    single = builder.image("single", ImageSpec(layers=2, layer_size=64 * 1024))
    oci_tar, docker_tar = tmp_path / "oci.tar", tmp_path / "docker.tar"
    skopeo_copy(f"oci:{builder.root}:idx", f"oci-archive:{oci_tar}:idx", "--all")
    skopeo_copy(f"oci:{builder.root}:single", f"docker-archive:{docker_tar}:example/app:v2")
    async with Client() as client:
        [oci] = await client.import_(oci_tar, f"{registry.host}/{repo_name}:idx")
        assert str(oci.digest) == built.digest
        [docker] = await client.import_(docker_tar, f"{registry.host}/{repo_name}-d")
        repo = client.repo(f"{registry.host}/{repo_name}-d")
        checked = await validate(repo, "v2")
        assert checked.digest == docker.digest
        manifest = await repo.manifest_get("v2")
    # skopeo's docker-archive stores layers uncompressed; we gzip them on the way, so the
    # layer digests are new but the config (and with it every diff_id) is the original.
    assert manifest.config is not None
    assert single.config is not None
    assert str(manifest.config.digest) == single.config.digest
    assert len(manifest.layers) == len(single.layers)
    assert all(d.media_type.endswith("tar.gzip") for d in manifest.layers)


def test_cli_import_from_stdin(
    seeded: Seeder, tmp_path: Path, registry_b: RegistryProcess, repo_name: str
) -> None:
    built, src = seeded(ImageSpec(layers=2, layer_size=64 * 1024))
    tar = tmp_path / "x.tar"
    run = [sys.executable, "-m", "asyncreg"]
    exported = subprocess.run(
        [*run, "export", src, str(tar), "--progress", "none"],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert exported.returncode == 0, exported.stderr
    with tar.open("rb") as stdin:
        proc = subprocess.run(
            [*run, "import", "-", f"{registry_b.host}/{repo_name}:in", "--progress", "none"],
            stdin=stdin,
            capture_output=True,
            timeout=120,
            check=False,
        )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().split()[0] == built.digest


def _layout_tar_with_escaping_link(builder: ImageBuilder, tmp_path: Path) -> Path:
    """A good layout tar plus a symlink that leads out of the archive."""
    import tarfile

    builder.image("ok", ImageSpec(layers=1, layer_size=1024))
    tar = tmp_path / "evil.tar"
    with tarfile.open(tar, "w") as out:
        out.add(builder.root, arcname=".")
        link = tarfile.TarInfo("blobs/sha256/escape")
        link.type = tarfile.SYMTYPE
        link.linkname = "../../../etc/passwd"
        out.addfile(link)
    return tar


async def test_hostile_tar_tags_nothing(
    tmp_path: Path, builder: ImageBuilder, registry: RegistryProcess, repo_name: str
) -> None:

    tar = _layout_tar_with_escaping_link(builder, tmp_path)
    async with Client() as client:
        with pytest.raises(HostilePathError, match="escape"):
            await client.import_(tar, f"{registry.host}/{repo_name}:ok")
        assert await client.repo(f"{registry.host}/{repo_name}").manifest_head("ok") is None


@pytest.mark.parametrize("zero_copy", [True, False])
async def test_import_of_a_lying_blob_tags_nothing(
    tmp_path: Path,
    builder: ImageBuilder,
    registry: RegistryProcess,
    repo_name: str,
    zero_copy: bool,
) -> None:
    """A blob whose bytes do not match its name is refused, whichever path sends it."""
    import tarfile

    from asyncreg import Limits
    from asyncreg.errors import DigestMismatchError
    from asyncreg.testkit.proxy import FaultProxy

    built = builder.image("ok", ImageSpec(layers=1, layer_size=256 * 1024))
    layer = builder.root / "blobs" / "sha256" / built.layers[0].hex
    data = bytearray(layer.read_bytes())
    data[-100] ^= 0xFF
    layer.write_bytes(bytes(data))
    tar = tmp_path / "lying.tar"
    with tarfile.open(tar, "w") as out:
        out.add(builder.root, arcname=".")
    async with FaultProxy(registry.url) as proxy:
        async with Client(limits=Limits(zero_copy=zero_copy)) as client:
            with pytest.raises(DigestMismatchError):
                await client.import_(tar, f"{proxy.host}/{repo_name}:ok")
            assert await client.repo(f"{registry.host}/{repo_name}").manifest_head("ok") is None
        sent_raw = [
            r
            for r in proxy.requests
            if r.method == "PUT" and r.headers.get("Connection") == "close"
        ]
        assert bool(sent_raw) == zero_copy  # sendfile from the tar, or a Python stream


def _import_stdin(data: bytes, ref: str, *extra: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "asyncreg", "import", "-", ref, "--progress", "plain", *extra],
        input=data,
        capture_output=True,
        timeout=120,
        check=False,
    )


def test_stdin_oci_tar_streams_blobs_straight_to_the_registry(
    builder: ImageBuilder, tmp_path: Path, registry: RegistryProcess, repo_name: str
) -> None:
    """An OCI tar on stdin is read once; gzip too; blobs are uploaded as they pass."""
    import gzip
    import tarfile

    built = builder.index("idx", ["linux/amd64", "linux/arm64"], SPEC)
    tar = tmp_path / "idx.tar"
    with tarfile.open(tar, "w") as out:
        out.add(builder.root, arcname=".")
    for data, tag in ((tar.read_bytes(), "plain"), (gzip.compress(tar.read_bytes()), "gz")):
        proc = _import_stdin(data, f"{registry.host}/{repo_name}:{tag}", "--name", "idx")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.decode().split()[0] == built.digest
    leftovers = list(Path(tempfile.gettempdir()).glob("asyncreg-stdin-*"))
    assert leftovers == []


def test_stdin_docker_archive_is_spooled_and_imported(
    builder: ImageBuilder, tmp_path: Path, registry: RegistryProcess, repo_name: str
) -> None:
    builder.image("single", ImageSpec(layers=2, layer_size=64 * 1024))
    docker_tar = tmp_path / "docker.tar"
    skopeo_copy(f"oci:{builder.root}:single", f"docker-archive:{docker_tar}:example/app:v3")
    proc = _import_stdin(docker_tar.read_bytes(), f"{registry.host}/{repo_name}")
    assert proc.returncode == 0, proc.stderr
    raw = skopeo_inspect_raw(f"docker://{registry.host}/{repo_name}:v3")
    assert str(Digest.of(raw)) == proc.stdout.decode().split()[0]


def test_stdin_layout_with_a_link_is_refused_and_tags_nothing(
    builder: ImageBuilder, tmp_path: Path, registry: RegistryProcess, repo_name: str
) -> None:

    tar = _layout_tar_with_escaping_link(builder, tmp_path)
    proc = _import_stdin(tar.read_bytes(), f"{registry.host}/{repo_name}:ok")
    assert proc.returncode == 1
    assert b"escape" in proc.stderr
    head = subprocess.run(
        [
            "skopeo",
            "inspect",
            "--raw",
            "--tls-verify=false",
            f"docker://{registry.host}/{repo_name}:ok",
        ],
        capture_output=True,
        check=False,
    )
    assert head.returncode != 0  # never tagged


async def test_import_all_refuses_two_images_on_one_tag(
    builder: ImageBuilder, registry: RegistryProcess, tmp_path: Path, repo_name: str
) -> None:
    for name, label in (("a", "first"), ("b", "second")):
        builder.image("1", ImageSpec(layers=1, layer_size=4096, labels={"i": label}))
        push_layout(builder.root, "1", registry.host, f"{repo_name}-{name}")
    tar = tmp_path / "two.tar"
    async with Client() as client:
        await client.export(
            [f"{registry.host}/{repo_name}-a:1", f"{registry.host}/{repo_name}-b:1"], tar
        )
        with pytest.raises(ConfigError, match="would both be tagged '1'"):
            await client.import_(tar, f"{registry.host}/{repo_name}-all", all_images=True)
        target = client.repo(f"{registry.host}/{repo_name}-all")
        assert await target.manifest_head("1") is None
