"""OCI layout directories (``ocidir://``) as copy source and target, checked by skopeo."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import orjson
import pytest

from asyncreg import Client, CopyOptions, Digest
from asyncreg.destination import TEMP_PREFIX, file_mode
from asyncreg.errors import DigestMismatchError
from asyncreg.layout.store import LayoutRepo
from asyncreg.manifest import Descriptor
from asyncreg.testkit.builder import ImageBuilder, ImageSpec
from asyncreg.testkit.registry import RegistryProcess
from asyncreg.testkit.skopeo import push_layout, skopeo_copy, skopeo_inspect_raw
from asyncreg.testkit.validate import validate
from tests.fixtures import Seeder

pytestmark = pytest.mark.anyio

SMALL = ImageSpec(layers=2, layer_size=80 * 1024)


async def test_registry_to_layout_is_read_by_skopeo(
    seeded: Seeder, tmp_path: Path, registry_b: RegistryProcess, repo_name: str
) -> None:
    built, src = seeded(SMALL, platforms=["linux/amd64", "linux/arm64"])
    out = tmp_path / "out"
    async with Client() as client:
        result = await client.copy(src, f"ocidir://{out}:v1")
        await validate(client.repo(f"ocidir://{out}"), "v1")
    assert str(result.digest) == built.digest
    index = orjson.loads((out / "index.json").read_bytes())
    assert [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]] == [
        "v1"
    ]
    assert orjson.loads((out / "oci-layout").read_bytes())["imageLayoutVersion"] == "1.0.0"
    # skopeo, an independent reader, moves our layout into a registry unchanged.
    skopeo_copy(f"oci:{out}:v1", f"docker://{registry_b.host}/{repo_name}:v1", "--all")
    raw = skopeo_inspect_raw(f"docker://{registry_b.host}/{repo_name}:v1")
    assert str(Digest.of(raw)) == built.digest


async def test_skopeo_layout_to_registry(
    builder: ImageBuilder, tmp_path: Path, registry: RegistryProcess, repo_name: str
) -> None:
    built = builder.image("one", SMALL)
    theirs = tmp_path / "skopeo-layout"
    skopeo_copy(f"oci:{builder.root}:one", f"oci:{theirs}:one")
    dst = f"{registry.host}/{repo_name}:one"
    async with Client() as client:
        result = await client.copy(f"ocidir://{theirs}:one", dst)
        await validate(client.repo(dst), "one")
    assert str(result.digest) == built.digest


async def test_concurrent_copies_into_one_layout_keep_every_entry(
    builder: ImageBuilder, tmp_path: Path, registry: RegistryProcess, repo_name: str
) -> None:
    tags = [f"t{i}" for i in range(6)]
    for i, tag in enumerate(tags):
        builder.image(tag, ImageSpec(layers=1, layer_size=16 * 1024, labels={"n": str(i)}))
        push_layout(builder.root, tag, registry.host, repo_name)
    out = tmp_path / "shared"
    async with Client() as client, anyio.create_task_group() as tg:
        for tag in tags:
            tg.start_soon(
                client.copy, f"{registry.host}/{repo_name}:{tag}", f"ocidir://{out}:{tag}"
            )
    async with Client() as client:
        assert sorted(await client.repo(f"ocidir://{out}").tags()) == tags


async def test_layout_referrers_and_copy_back(
    builder: ImageBuilder, tmp_path: Path, registry: RegistryProcess, repo_name: str
) -> None:
    image = builder.image("app", SMALL)
    sig = builder.artifact("sig", image)
    out = tmp_path / "with-refs"
    async with Client() as client:
        layout = client.repo(f"ocidir://{builder.root}")
        # Re-put the artifact through asyncreg so the tag-schema index exists in the source.
        await layout.manifest_put(await layout.manifest_get("sig"), "sig")
        await client.copy(
            f"ocidir://{builder.root}:app", f"ocidir://{out}:app", CopyOptions(referrers=True)
        )
        found = await client.repo(f"ocidir://{out}").referrers(Digest.parse(image.digest))
        assert [str(d.digest) for d in found] == [sig.digest]
        dst = f"{registry.host}/{repo_name}:app"
        await client.copy(f"ocidir://{out}:app", dst, CopyOptions(referrers=True))
        remote = await client.repo(dst).referrers(Digest.parse(image.digest))
        assert [str(d.digest) for d in remote] == [sig.digest]


async def test_blob_with_wrong_bytes_never_gets_its_name(tmp_path: Path) -> None:
    repo = LayoutRepo(tmp_path / "layout")
    good = b"x" * 1000
    desc = Descriptor("application/octet-stream", Digest.of(good), len(good))

    class Stream:
        size = len(good)

        def __aiter__(self) -> AsyncIterator[bytes]:
            async def gen() -> AsyncIterator[bytes]:
                yield b"y" * 1000

            return gen()

        async def aclose(self) -> None:
            return None

    async def source() -> Stream:
        return Stream()

    with pytest.raises(DigestMismatchError):
        await repo.blob_put(desc, source)
    assert await repo.blob_head(desc.digest) is None
    assert list((tmp_path / "layout" / "blobs" / "sha256").iterdir()) == []


async def test_corrupt_source_leaves_no_blob_in_the_layout(
    seeded: Seeder, tmp_path: Path, registry: RegistryProcess, repo_name: str
) -> None:
    """Registry to layout writes blob files from worker threads; a bad byte names nothing."""
    from asyncreg.testkit.proxy import Corrupt, FaultProxy, Rule

    built, src = seeded(SMALL)
    layer = built.layers[0]
    out = tmp_path / "out"
    async with FaultProxy(registry.url) as proxy:
        proxy.add_rule(Rule(Corrupt(777), method="GET", path=layer.hex))
        async with Client() as client:
            with pytest.raises(DigestMismatchError):
                await client.copy(src.replace(registry.host, proxy.host), f"ocidir://{out}:v1")
            assert await client.repo(f"ocidir://{out}").manifest_head("v1") is None
    blobs = out / "blobs" / "sha256"
    assert not (blobs / layer.hex).exists()
    assert not [p for p in blobs.iterdir() if p.name.startswith(TEMP_PREFIX)]


async def test_a_layout_holds_only_its_own_files_with_ordinary_modes(
    builder: ImageBuilder, tmp_path: Path
) -> None:
    builder.image("v1", ImageSpec(layers=1, layer_size=4096))
    out = tmp_path / "out"
    old = os.umask(0o077)
    try:
        async with Client() as client:
            await client.copy(f"ocidir://{builder.root}:v1", f"ocidir://{out}:v1")
    finally:
        os.umask(old)
    # image-layout: oci-layout, index.json and blobs/, no lock file beside them.
    assert sorted(p.name for p in out.iterdir()) == ["blobs", "index.json", "oci-layout"]
    for name in ("index.json", "oci-layout"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o600  # umask 077


async def test_the_next_copy_sweeps_what_a_killed_run_left(
    builder: ImageBuilder, tmp_path: Path
) -> None:
    builder.image("v1", ImageSpec(layers=1, layer_size=4096))
    out = tmp_path / "out"
    blobs = out / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    pid = _dead_pid()
    for where in (out, blobs):
        (where / f"{TEMP_PREFIX}{pid}-0123").write_bytes(b"half a blob")
    async with Client() as client:
        await client.copy(f"ocidir://{builder.root}:v1", f"ocidir://{out}:v1")
    leftovers = [p for p in out.rglob("*") if p.name.startswith(TEMP_PREFIX)]
    assert leftovers == []
    assert stat.S_IMODE((out / "index.json").stat().st_mode) == file_mode()


def _dead_pid() -> int:
    """The PID of a process that has exited (a run that was killed)."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    return dead.pid
