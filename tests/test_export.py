"""Export to a tar that is an OCI layout and docker-loadable, checked by skopeo."""

from __future__ import annotations

import tarfile
from collections import Counter
from pathlib import Path
from typing import Literal

import orjson
import pytest

from asyncreg import Client, Digest, Limits
from asyncreg.errors import DigestMismatchError, NotFoundError, RegistryError
from asyncreg.testkit.builder import ImageSpec
from asyncreg.testkit.proxy import Corrupt, DropBodyAfter, FaultProxy, Rule, Status
from asyncreg.testkit.registry import RegistryProcess
from asyncreg.testkit.skopeo import skopeo_copy, skopeo_inspect_raw
from asyncreg.testkit.validate import validate
from tests.fixtures import Seeder

pytestmark = pytest.mark.anyio

SPEC = ImageSpec(layers=3, layer_size=200 * 1024, shared_layers=1)


async def test_export_index_and_image_read_by_skopeo_both_ways(
    seeded: Seeder,
    tmp_path: Path,
    registry: RegistryProcess,
    registry_b: RegistryProcess,
    repo_name: str,
) -> None:
    index, multi = seeded(SPEC, tag="multi", platforms=["linux/amd64", "linux/arm64"])
    image, one = seeded(ImageSpec(layers=2, layer_size=100 * 1024), tag="one")
    out = tmp_path / "images.tar"
    async with Client() as client:
        results = await client.export([multi, one], out, platform="linux/arm64")
    assert sorted(str(r.digest) for r in results) == sorted([index.digest, image.digest])
    with tarfile.open(out) as tar:
        names = tar.getnames()
        docker = orjson.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        oci = orjson.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
    assert names[0] == "oci-layout"
    blob_names = [n for n in names if n.startswith("blobs/sha256/")]
    assert len(blob_names) == len(set(blob_names)), "a shared blob was stored twice"
    expected = {b.digest for b in index.blobs} | {b.digest for b in image.blobs}
    expected |= {m.digest for m in index.manifests()} | {image.digest}
    assert {"sha256:" + n.rsplit("/", 1)[1] for n in blob_names} == expected
    assert {m["digest"] for m in oci["manifests"]} == {index.digest, image.digest}
    arm = next(c for c in index.children if c.platform == "linux/arm64")
    assert arm.config is not None
    assert image.config is not None
    assert Counter(e["Config"] for e in docker) == Counter(
        [
            f"blobs/sha256/{arm.config.digest.split(':')[1]}",
            f"blobs/sha256/{image.config.digest.split(':')[1]}",
        ]
    )
    # skopeo reads the tar as an OCI archive (whole index) ...
    skopeo_copy(
        f"oci-archive:{out}:multi", f"docker://{registry_b.host}/{repo_name}:multi", "--all"
    )
    raw = skopeo_inspect_raw(f"docker://{registry_b.host}/{repo_name}:multi")
    assert str(Digest.of(raw)) == index.digest
    # ... and as a docker archive (what docker load reads).
    name = one.split("/", 1)[1]
    skopeo_copy(
        f"docker-archive:{out}:{registry.host}/{name}",
        f"docker://{registry_b.host}/{repo_name}:one",
    )


async def test_failed_export_leaves_no_file(
    seeded: Seeder, tmp_path: Path, registry: RegistryProcess, repo_name: str
) -> None:
    _, src = seeded(SPEC)
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "never.tar"
    async with FaultProxy(registry.url) as proxy:
        proxy.add_rule(Rule(Status(500), method="GET", path="/blobs/", after=1))
        async with Client() as client:
            with pytest.raises(RegistryError):
                await client.export([src.replace(registry.host, proxy.host)], out)
    assert list((tmp_path / "out").iterdir()) == []


async def test_export_of_missing_image_is_not_found(
    registry: RegistryProcess, tmp_path: Path, repo_name: str
) -> None:
    async with Client() as client:
        with pytest.raises(NotFoundError):
            await client.export([f"{registry.host}/{repo_name}:absent"], tmp_path / "x.tar")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("compression", "magic"), [("gzip", b"\x1f\x8b"), ("zstd", b"\x28\xb5")])
async def test_compressed_export_spools_waiting_blobs_and_imports_back(
    seeded: Seeder,
    tmp_path: Path,
    registry_b: RegistryProcess,
    repo_name: str,
    compression: Literal["gzip", "zstd"],
    magic: bytes,
) -> None:
    """A compressed tar is written one entry at a time: blobs that must wait are spooled."""
    built, src = seeded(ImageSpec(layers=6, layer_size=300 * 1024))
    out = tmp_path / f"image.tar.{compression}"
    async with Client(limits=Limits(spool_memory=64 * 1024)) as client:
        await client.export([src], out, compression=compression)
        assert out.read_bytes()[:2] == magic
        [result] = await client.import_(out, f"{registry_b.host}/{repo_name}:back")
        checked = await validate(client.repo(f"{registry_b.host}/{repo_name}"), "back")
    assert str(result.digest) == built.digest
    assert len(checked.blobs) == len(built.blobs)


async def test_export_resumes_a_broken_source_and_refuses_corrupt_bytes(
    seeded: Seeder, tmp_path: Path, registry: RegistryProcess, repo_name: str
) -> None:
    """Blobs go from the socket into the tar in worker threads; faults still surface."""
    built, src = seeded(ImageSpec(layers=2, layer_size=600 * 1024))
    first, second = built.layers
    out = tmp_path / "out"
    out.mkdir()
    async with FaultProxy(registry.url) as proxy:
        via = src.replace(registry.host, proxy.host)
        proxy.add_rule(Rule(DropBodyAfter(200_000), method="GET", path=first.hex, times=1))
        async with Client() as client:
            await client.export([via], out / "ok.tar")
        gets = [r for r in proxy.requests if r.method == "GET" and first.hex in r.path]
        assert [r.headers.get("Range") for r in gets] == [None, "bytes=200000-"]
        with tarfile.open(out / "ok.tar") as tar:
            member = tar.extractfile(f"blobs/sha256/{first.hex}")
            assert member is not None
            assert str(Digest.of(member.read())) == first.digest
        proxy.add_rule(Rule(Corrupt(12345), method="GET", path=second.hex))
        async with Client() as client:
            with pytest.raises(DigestMismatchError):
                await client.export([via], out / "bad.tar")
    assert sorted(p.name for p in out.iterdir()) == ["ok.tar"]
