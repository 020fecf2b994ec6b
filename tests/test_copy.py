"""Copy against real registries: every manifest kind, options, mounts, faults.

Source images are built by the test kit and pushed with skopeo (an
independent client); targets are read back with `validate`, which re-hashes
every blob. Faults and request counts come from a proxy in front of the
real target registry.
"""

from __future__ import annotations

import pytest

from asyncreg import Client, CopyOptions, Digest
from asyncreg.errors import DigestMismatchError, NotFoundError, RegistryError
from asyncreg.testkit.builder import ImageBuilder, ImageSpec
from asyncreg.testkit.proxy import Corrupt, DropBodyAfter, FaultProxy, Rule, Status
from asyncreg.testkit.registry import RegistryProcess
from asyncreg.testkit.skopeo import push_layout
from asyncreg.testkit.validate import validate
from tests.fixtures import Seeder

pytestmark = pytest.mark.anyio

SMALL = ImageSpec(layers=3, layer_size=96 * 1024)


async def _copy_and_check(src: str, dst: str, options: CopyOptions | None = None) -> None:
    async with Client() as client:
        result = await client.copy(src, dst, options)
        target = client.repo(dst)
        checked = await validate(target, dst.rsplit(":", 1)[1])
        assert checked.digest == result.digest
        assert checked.blobs, "validate walked no blobs"


@pytest.mark.parametrize("media", ["oci", "docker"])
async def test_copy_image_keeps_digest(
    seeded: Seeder, registry_b: RegistryProcess, repo_name: str, media: str
) -> None:
    built, src = seeded(ImageSpec(layers=3, layer_size=96 * 1024, media=media))  # type: ignore[arg-type]
    dst = f"{registry_b.host}/{repo_name}:copied"
    async with Client() as client:
        result = await client.copy(src, dst)
        assert str(result.digest) == built.digest
        assert result.blobs_moved == len(built.blobs)
        assert result.bytes_moved == built.blob_bytes
        checked = await validate(client.repo(dst), "copied")
    assert {str(d) for d in checked.blobs} == {b.digest for b in built.blobs}


@pytest.mark.parametrize("media", ["oci", "docker"])
async def test_copy_index_moves_shared_layers_once(
    seeded: Seeder,
    registry: RegistryProcess,
    registry_b: RegistryProcess,
    repo_name: str,
    media: str,
) -> None:
    spec = ImageSpec(layers=3, layer_size=64 * 1024, shared_layers=2)
    built, src = seeded(spec, platforms=["linux/amd64", "linux/arm64", "linux/arm/v7"], media=media)  # type: ignore[arg-type]
    unique = {b.digest for b in built.blobs}
    async with FaultProxy(registry_b.url) as proxy:
        dst = f"{proxy.host}/{repo_name}:multi"
        async with Client() as client:
            result = await client.copy(src, dst)
            assert str(result.digest) == built.digest
            checked = await validate(client.repo(dst), "multi")
        uploads = [r for r in proxy.requests if r.method == "PUT" and "/blobs/uploads/" in r.path]
        assert len(uploads) == len(unique), "a shared blob was uploaded more than once"
        assert sorted(r.query["digest"] for r in uploads) == sorted(unique)
    assert len(checked.manifests) == 4


async def test_second_copy_is_skipped_without_blob_requests(
    seeded: Seeder, registry_b: RegistryProcess, repo_name: str
) -> None:
    built, src = seeded(SMALL, platforms=["linux/amd64", "linux/arm64"])
    async with FaultProxy(registry_b.url) as proxy:
        dst = f"{proxy.host}/{repo_name}:v1"
        async with Client() as client:
            await client.copy(src, dst)
            proxy.reset_log()
            again = await client.copy(src, dst)
        assert again.skipped
        assert again.digest == Digest.parse(built.digest)
        assert proxy.count(path_regex="/blobs/") == 0
        assert proxy.count("PUT") == 0


async def test_force_recursive_repairs_but_moves_nothing_present(
    seeded: Seeder, registry_b: RegistryProcess, repo_name: str
) -> None:
    built, src = seeded(SMALL)
    dst = f"{registry_b.host}/{repo_name}:v1"
    async with Client() as client:
        await client.copy(src, dst)
        again = await client.copy(src, dst, CopyOptions(force_recursive=True))
    assert not again.skipped
    assert again.blobs_moved == 0
    assert again.blobs_skipped == len(built.blobs)


async def test_same_registry_other_repo_mounts(
    seeded: Seeder, registry: RegistryProcess, repo_name: str
) -> None:
    built, src = seeded(SMALL)
    async with FaultProxy(registry.url) as proxy:
        async with Client() as client:
            via = src.replace(registry.host, proxy.host)
            result = await client.copy(via, f"{proxy.host}/{repo_name}-mirror:v1")
        assert result.blobs_mounted == len(built.blobs)
        assert result.blobs_moved == 0
        assert proxy.count("PUT", "/blobs/uploads/") == 0
        assert proxy.count("POST", "/blobs/uploads/") == len(built.blobs)
        assert all("mount" in r.query for r in proxy.requests if r.method == "POST")


async def test_same_repo_retag_pushes_manifest_only(
    seeded: Seeder, registry: RegistryProcess, repo_name: str
) -> None:
    built, src = seeded(SMALL)
    async with FaultProxy(registry.url) as proxy:
        via = src.replace(registry.host, proxy.host)
        async with Client() as client:
            result = await client.copy(via, f"{proxy.host}/{repo_name}:retagged")
        assert str(result.digest) == built.digest
        assert proxy.count(path_regex="/blobs/") == 0
        assert proxy.count("PUT", "/manifests/retagged") == 1


async def test_platform_resolves_one_image(
    seeded: Seeder, registry_b: RegistryProcess, repo_name: str
) -> None:
    built, src = seeded(SMALL, platforms=["linux/amd64", "linux/arm64"])
    arm = next(c for c in built.children if c.platform == "linux/arm64")
    dst = f"{registry_b.host}/{repo_name}:arm"
    async with Client() as client:
        result = await client.copy(src, dst, CopyOptions(platform="linux/arm64/v8"))
        assert str(result.digest) == arm.digest
        head = await client.repo(dst).manifest_head("arm")
    assert head is not None
    assert str(head.digest) == arm.digest


async def test_filtered_index_is_new_and_complete(
    seeded: Seeder, registry_b: RegistryProcess, repo_name: str
) -> None:
    built, src = seeded(SMALL, platforms=["linux/amd64", "linux/arm64", "linux/s390x"])
    dst = f"{registry_b.host}/{repo_name}:filtered"
    options = CopyOptions(platforms=("linux/amd64", "linux/s390x"), filter_index=True)
    async with Client() as client:
        result = await client.copy(src, dst, options)
        assert str(result.digest) != built.digest
        index = await client.repo(dst).manifest_get("filtered")
        checked = await validate(client.repo(dst), "filtered")
    assert sorted(str(c.platform) for c in index.manifests) == ["linux/amd64", "linux/s390x"]
    assert len(checked.manifests) == 3


async def test_platforms_keeps_original_index_which_distribution_refuses(
    seeded: Seeder, registry_b: RegistryProcess, repo_name: str
) -> None:
    """regclient's behaviour: the original index is pushed; a validating registry says no."""
    _, src = seeded(SMALL, platforms=["linux/amd64", "linux/arm64"])
    dst = f"{registry_b.host}/{repo_name}:partial"
    async with Client() as client:
        with pytest.raises(RegistryError) as info:
            await client.copy(src, dst, CopyOptions(platforms=("linux/amd64",)))
        assert await client.repo(dst).manifest_head("partial") is None
    assert info.value.status == 400


async def test_referrers_follow_through_tag_fallback(
    builder: ImageBuilder, registry: RegistryProcess, registry_b: RegistryProcess, repo_name: str
) -> None:
    image = builder.image("app", SMALL)
    signature = builder.artifact("sig", image)
    push_layout(builder.root, "app", registry.host, repo_name)
    push_layout(builder.root, "sig", registry.host, repo_name)
    src, dst = f"{registry.host}/{repo_name}:app", f"{registry_b.host}/{repo_name}:app"
    async with Client() as client:
        # skopeo does not maintain the fallback tag: our own push of the artifact does.
        source = client.repo(src)
        assert await source.referrers(Digest.parse(image.digest)) == []
        await source.manifest_put(await source.manifest_get("sig"), "sig")
        found = await client.repo(src).referrers(Digest.parse(image.digest))
        assert [str(d.digest) for d in found] == [signature.digest]
        await client.copy(src, dst, CopyOptions(referrers=True))
        copied = await client.repo(dst).referrers(Digest.parse(image.digest))
        assert [str(d.digest) for d in copied] == [signature.digest]
        await validate(client.repo(dst), Digest.parse(signature.digest))


async def test_digest_tags_are_copied(
    builder: ImageBuilder, registry: RegistryProcess, registry_b: RegistryProcess, repo_name: str
) -> None:
    image = builder.image("app", SMALL)
    sig_tag = f"sha256-{image.hex}.sig"
    sig = builder.artifact(sig_tag, image)
    push_layout(builder.root, "app", registry.host, repo_name)
    push_layout(builder.root, sig_tag, registry.host, repo_name)
    async with Client() as client:
        await client.copy(
            f"{registry.host}/{repo_name}:app",
            f"{registry_b.host}/{repo_name}:app",
            CopyOptions(digest_tags=True),
        )
        head = await client.repo(f"{registry_b.host}/{repo_name}").manifest_head(sig_tag)
    assert head is not None
    assert str(head.digest) == sig.digest


async def test_failure_mid_copy_leaves_no_tag_and_no_parent(
    seeded: Seeder, registry_b: RegistryProcess, repo_name: str
) -> None:
    _, src = seeded(SMALL, platforms=["linux/amd64", "linux/arm64"])
    async with FaultProxy(registry_b.url) as proxy:
        proxy.add_rule(Rule(Status(500), method="PUT", path="/blobs/uploads/", after=2))
        dst = f"{proxy.host}/{repo_name}:broken"
        async with Client() as client:
            with pytest.raises(RegistryError) as info:
                await client.copy(src, dst)
            assert info.value.status == 500
        assert proxy.count("PUT", "/manifests/") <= 1  # at most a child whose blobs all landed
        assert not any(
            r.method == "PUT" and r.path.endswith("/manifests/broken") for r in proxy.requests
        )
    async with Client() as client:
        assert await client.repo(f"{registry_b.host}/{repo_name}").manifest_head("broken") is None


async def test_transient_errors_are_retried(
    seeded: Seeder, registry_b: RegistryProcess, repo_name: str
) -> None:
    built, src = seeded(SMALL)
    async with FaultProxy(registry_b.url) as proxy:
        proxy.add_rule(Rule(Status(503), method="POST", path="/blobs/uploads/", times=2))
        proxy.add_rule(Rule(Status(429, {"Retry-After": "0"}), method="HEAD", times=1))
        dst = f"{proxy.host}/{repo_name}:v1"
        async with Client() as client:
            result = await client.copy(src, dst)
            assert client.transport.retries >= 3
    assert str(result.digest) == built.digest


async def test_source_dropped_mid_blob_is_resumed(
    seeded: Seeder, registry: RegistryProcess, registry_b: RegistryProcess, repo_name: str
) -> None:
    built, src = seeded(ImageSpec(layers=1, layer_size=2 * 1024 * 1024))
    layer = built.layers[0]
    async with FaultProxy(registry.url) as proxy:
        proxy.add_rule(
            Rule(DropBodyAfter(300_000), method="GET", path=layer.digest.split(":")[1], times=1)
        )
        via = src.replace(registry.host, proxy.host)
        async with Client() as client:
            result = await client.copy(via, f"{registry_b.host}/{repo_name}:v1")
        gets = [r for r in proxy.requests if r.method == "GET" and layer.hex in r.path]
        assert len(gets) == 2
        assert gets[1].headers.get("Range") == "bytes=300000-"
    assert result.bytes_moved == built.blob_bytes


async def test_corrupted_source_blob_is_refused(
    seeded: Seeder, registry: RegistryProcess, registry_b: RegistryProcess, repo_name: str
) -> None:
    built, src = seeded(SMALL)
    layer = built.layers[1]
    async with FaultProxy(registry.url) as proxy:
        proxy.add_rule(Rule(Corrupt(1000), method="GET", path=layer.hex))
        via = src.replace(registry.host, proxy.host)
        async with Client() as client:
            with pytest.raises(DigestMismatchError):
                await client.copy(via, f"{registry_b.host}/{repo_name}:v1")
            repo = client.repo(f"{registry_b.host}/{repo_name}")
            assert await repo.manifest_head("v1") is None
            assert await repo.blob_head(Digest.parse(layer.digest)) is None


async def test_missing_source_is_not_found(registry: RegistryProcess, repo_name: str) -> None:
    async with Client() as client:
        with pytest.raises(NotFoundError):
            await client.copy(f"{registry.host}/{repo_name}:nope", f"{registry.host}/x:y")


async def test_copy_many_keep_going_reports_each(
    seeded: Seeder, registry: RegistryProcess, registry_b: RegistryProcess, repo_name: str
) -> None:
    built, src = seeded(SMALL)
    pairs = [
        (src, f"{registry_b.host}/{repo_name}:a"),
        (f"{registry.host}/{repo_name}:missing", f"{registry_b.host}/{repo_name}:b"),
        (src, f"{registry_b.host}/{repo_name}-2:c"),
    ]
    async with Client() as client:
        outcomes = await client.copy_many(pairs, keep_going=True)
    assert [o.ok for o in outcomes] == [True, False, True]
    assert isinstance(outcomes[1].error, NotFoundError)
    moved = sum(o.result.blobs_moved for o in outcomes if o.result)
    mounted = sum(o.result.blobs_mounted for o in outcomes if o.result)
    assert moved == len(built.blobs)  # moved once, then mounted into the second repo
    assert mounted == len(built.blobs)


@pytest.mark.parametrize("zero_copy", [True, False])
async def test_fail_fast_cancels_open_upload_sessions(
    seeded: Seeder, registry_b: RegistryProcess, repo_name: str, zero_copy: bool
) -> None:
    """One blob fails for good: uploads in flight are cancelled and their sessions DELETEd."""
    from asyncreg import Limits
    from asyncreg.testkit.proxy import Delay, Throttle

    _, src = seeded(ImageSpec(layers=2, layer_size=1024 * 1024, labels={"case": str(zero_copy)}))
    async with FaultProxy(registry_b.url) as proxy:
        proxy.add_rule(Rule(Throttle(256 * 1024), method="PUT", path="/blobs/uploads/"))
        # The third upload fails for good a second later, while the other two are sending.
        proxy.add_rule(Rule(Delay(1.0), method="POST", path="/blobs/uploads/", after=2))
        proxy.add_rule(Rule(Status(400), method="POST", path="/blobs/uploads/", after=2))
        async with Client(limits=Limits(zero_copy=zero_copy)) as client:
            with pytest.raises(RegistryError):
                await client.copy(src, f"{proxy.host}/{repo_name}:v1")
        started = proxy.count("POST", "/blobs/uploads/")
        deleted = proxy.count("DELETE", "/blobs/uploads/")
    assert started == 3
    assert deleted >= 1, "an upload that was in flight was left open"


@pytest.mark.parametrize("zero_copy", [True, False])
async def test_cancelled_while_opening_uploads_still_deletes_them(
    seeded: Seeder, registry_b: RegistryProcess, repo_name: str, zero_copy: bool
) -> None:
    """Upload sessions whose POST was in flight at the failure are DELETEd too."""
    from asyncreg import Limits
    from asyncreg.testkit.proxy import Delay

    _, src = seeded(
        ImageSpec(layers=2, layer_size=256 * 1024, labels={"case": f"posts-{zero_copy}"})
    )
    async with FaultProxy(registry_b.url) as proxy:
        # Two POSTs are slow to answer; the third fails for good at once.
        proxy.add_rule(Rule(Delay(1.0), method="POST", path="/blobs/uploads/", times=2))
        proxy.add_rule(Rule(Status(400), method="POST", path="/blobs/uploads/", after=2))
        async with Client(limits=Limits(zero_copy=zero_copy)) as client:
            with pytest.raises(RegistryError):
                await client.copy(src, f"{proxy.host}/{repo_name}:v1")
        assert proxy.count("POST", "/blobs/uploads/") == 3
        assert proxy.count("DELETE", "/blobs/uploads/") == 2


async def test_a_destination_digest_must_be_the_source_digest(
    seeded: Seeder, registry: RegistryProcess, repo_name: str
) -> None:
    built, src = seeded(ImageSpec(layers=1, layer_size=4096))
    wrong = Digest.of(b"not this image")
    async with Client() as client:
        with pytest.raises(DigestMismatchError, match="nothing was copied"):
            await client.copy(src, f"{registry.host}/{repo_name}-d@{wrong}")
        target = client.repo(f"{registry.host}/{repo_name}-d")
        assert await target.manifest_head(Digest.parse(built.digest)) is None
        # The right digest is accepted.
        result = await client.copy(src, f"{registry.host}/{repo_name}-d@{built.digest}")
    assert str(result.digest) == built.digest
