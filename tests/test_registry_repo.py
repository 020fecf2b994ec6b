"""`RegistryRepo` protocol round trips against a real distribution registry.

Every manifest kind asyncreg copies goes up with ``manifest_put`` and comes
back byte for byte with ``manifest_get`` / ``manifest_head``; blobs of every
awkward size go up with ``blob_put`` and come back verified; chunked uploads,
the chunked fallback, mounts, tag pagination, the referrers tag fallback and
deletes are exercised through a `FaultProxy` that counts the requests.

The small helpers at the top (an in-memory blob source, push and read
helpers) are shared by the other ``test_registry_*`` modules.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest

from asyncreg import Client, HostConfig, Limits
from asyncreg import mediatypes as mt
from asyncreg.digest import Digest
from asyncreg.errors import NotFoundError, RegistryError
from asyncreg.manifest import Descriptor, Manifest, build_image, build_index
from asyncreg.platform import Platform
from asyncreg.registry.repo import RegistryRepo
from asyncreg.store import BlobSource, BlobStream
from asyncreg.testkit.builder import ImageBuilder, ImageSpec
from asyncreg.testkit.headerlog import HeaderLogServer
from asyncreg.testkit.proxy import FaultProxy, Rewrite, Rule, Status, Throttle
from asyncreg.testkit.registry import RegistryProcess
from asyncreg.testkit.skopeo import push_layout

pytestmark = pytest.mark.anyio

KIB = 1024


# --- helpers shared by the test_registry_* modules ------------------------------------


class BytesStream:
    """A `BlobStream` over bytes held in memory, handed out in ``chunk``-sized pieces."""

    def __init__(self, data: bytes, chunk: int = 64 * KIB) -> None:
        self.size = len(data)
        self._data = data
        self._chunk = chunk
        self.closed = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self._data), self._chunk):
            yield self._data[start : start + self._chunk]

    async def aclose(self) -> None:
        self.closed = True


def source_of(data: bytes, opened: list[BytesStream] | None = None) -> BlobSource:
    """A `BlobSource` that opens a fresh `BytesStream` (recorded in ``opened``) each time."""

    async def open_stream() -> BlobStream:
        stream = BytesStream(data)
        if opened is not None:
            opened.append(stream)
        return stream

    return open_stream


def blob_descriptor(data: bytes, media_type: str = mt.OCI_LAYER_GZIP) -> Descriptor:
    return Descriptor(media_type, Digest.of(data), len(data))


def registry_repo(client: Client, location: str) -> RegistryRepo:
    repo = client.repo(location)
    assert isinstance(repo, RegistryRepo)
    return repo


async def push_blob(
    repo: RegistryRepo, data: bytes, media_type: str = mt.OCI_LAYER_GZIP
) -> Descriptor:
    desc = blob_descriptor(data, media_type)
    await repo.blob_put(desc, source_of(data))
    return desc


async def read_blob(repo: RegistryRepo, desc: Descriptor, *, verify: bool = True) -> bytes:
    stream = await repo.blob_open(desc, verify=verify)
    out = bytearray()
    async for chunk in stream:
        out += chunk
    return bytes(out)


def config_json(arch: str = "amd64") -> bytes:
    doc = {"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
    return orjson.dumps(doc)


async def push_image(
    repo: RegistryRepo,
    *,
    media_type: str = mt.OCI_MANIFEST,
    layers: int = 2,
    layer_size: int = 4 * KIB,
    arch: str = "amd64",
    tag: str | None = None,
) -> Manifest:
    """Upload a config and random layers, then push an image manifest over them."""
    docker = media_type == mt.DOCKER_MANIFEST
    config = await push_blob(repo, config_json(arch), mt.DOCKER_CONFIG if docker else mt.OCI_CONFIG)
    layer_type = mt.DOCKER_LAYER if docker else mt.OCI_LAYER_GZIP
    descs = [await push_blob(repo, os.urandom(layer_size), layer_type) for _ in range(layers)]
    image = build_image(config, descs, media_type=media_type)
    await repo.manifest_put(image, tag)
    return image


# --- blobs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size",
    [0, 1, 4095, 64 * KIB, 256 * KIB + 1, 1024 * KIB + 3],
    ids=["empty", "one", "odd", "64k", "chunk-plus-one", "1m-plus-3"],
)
async def test_blob_round_trip(registry: RegistryProcess, repo_name: str, size: int) -> None:
    data = os.urandom(size)
    async with Client() as client:
        repo = registry_repo(client, f"{registry.host}/{repo_name}")
        desc = blob_descriptor(data)
        assert await repo.blob_head(desc.digest) is None
        opened: list[BytesStream] = []
        await repo.blob_put(desc, source_of(data, opened))
        assert len(opened) == 1
        assert opened[0].closed
        assert await repo.blob_head(desc.digest) == size
        assert await read_blob(repo, desc) == data
        assert await read_blob(repo, desc, verify=False) == data


async def test_missing_blob_is_not_found(registry: RegistryProcess, repo_name: str) -> None:
    desc = blob_descriptor(os.urandom(100))
    async with Client() as client:
        repo = registry_repo(client, f"{registry.host}/{repo_name}")
        assert await repo.blob_head(desc.digest) is None
        with pytest.raises(NotFoundError) as info:
            await repo.blob_open(desc)
    assert info.value.status == 404


async def test_monolithic_upload_is_post_then_one_put(
    registry: RegistryProcess, repo_name: str
) -> None:
    data = os.urandom(300 * KIB)
    async with FaultProxy(registry.url) as proxy, Client() as client:
        repo = registry_repo(client, f"{proxy.host}/{repo_name}")
        proxy.reset_log()
        desc = await push_blob(repo, data)
        uploads = [r for r in proxy.requests if "/blobs/uploads/" in r.path]
        assert [r.method for r in uploads] == ["POST", "PUT"]
        assert uploads[1].query["digest"] == str(desc.digest)
        assert uploads[1].headers["Content-Length"] == str(len(data))
        assert uploads[1].status == 201
        assert await read_blob(repo, desc) == data


def _chunked_client(proxy: FaultProxy, *, chunked: bool) -> Client:
    return Client(
        limits=Limits(upload_chunk_size=64 * KIB),
        hosts={proxy.host: HostConfig(chunked_upload=chunked)},
    )


async def test_chunked_upload_sends_bounded_patches(
    registry: RegistryProcess, repo_name: str
) -> None:
    data = os.urandom(300 * KIB)
    async with FaultProxy(registry.url) as proxy, _chunked_client(proxy, chunked=True) as client:
        repo = registry_repo(client, f"{proxy.host}/{repo_name}")
        proxy.reset_log()
        desc = await push_blob(repo, data)
        patches = [r for r in proxy.requests if r.method == "PATCH"]
        puts = [r for r in proxy.requests if r.method == "PUT"]
        ranges = [r.headers["Content-Range"] for r in patches]
        assert ranges == [
            "0-65535",
            "65536-131071",
            "131072-196607",
            "196608-262143",
            "262144-307199",
        ]
        assert all(r.status == 202 for r in patches)
        assert len(puts) == 1
        assert puts[0].query["digest"] == str(desc.digest)
        assert puts[0].headers["Content-Length"] == "0"
        assert puts[0].status == 201
        assert await read_blob(repo, desc) == data


async def test_refused_monolithic_put_falls_back_to_chunks(
    registry: RegistryProcess, repo_name: str
) -> None:
    data = os.urandom(300 * KIB)
    async with FaultProxy(registry.url) as proxy, _chunked_client(proxy, chunked=False) as client:
        refuse = proxy.add_rule(Rule(Status(413), method="PUT", path="/blobs/uploads/", times=1))
        repo = registry_repo(client, f"{proxy.host}/{repo_name}")
        proxy.reset_log()
        desc = await push_blob(repo, data)
        assert refuse.applied == 1
        methods = [r.method for r in proxy.requests if "/blobs/uploads/" in r.path]
        assert methods == ["POST", "PUT", "DELETE", "POST"] + ["PATCH"] * 5 + ["PUT"]
        first_put, last_put = (r for r in proxy.requests if r.method == "PUT")
        assert first_put.status == 413
        assert "digest" in first_put.query
        assert last_put.status == 201
        assert last_put.query["digest"] == str(desc.digest)
        assert await read_blob(repo, desc) == data


async def test_empty_blob_chunked(registry: RegistryProcess, repo_name: str) -> None:
    async with FaultProxy(registry.url) as proxy, _chunked_client(proxy, chunked=True) as client:
        repo = registry_repo(client, f"{proxy.host}/{repo_name}")
        desc = await push_blob(repo, b"")
        assert proxy.count("PATCH") == 0
        assert await repo.blob_head(desc.digest) == 0
        assert await read_blob(repo, desc) == b""


# --- mounts ------------------------------------------------------------------------


async def test_mount_from_another_repo_of_the_same_registry(
    registry: RegistryProcess, repo_name: str
) -> None:
    data = os.urandom(50 * KIB)
    async with FaultProxy(registry.url) as proxy, Client() as client:
        source = registry_repo(client, f"{proxy.host}/{repo_name}-src")
        target = registry_repo(client, f"{proxy.host}/{repo_name}-dst")
        desc = await push_blob(source, data)
        proxy.reset_log()
        assert await target.mount_blob(desc, source) is True
        assert [(r.method, r.status) for r in proxy.requests if "/blobs/" in r.path] == [
            ("POST", 201)
        ]
        post = next(r for r in proxy.requests if r.method == "POST")
        assert post.path == f"/v2/{repo_name}-dst/blobs/uploads/"
        assert post.query["mount"] == str(desc.digest)
        assert post.query["from"] == f"{repo_name}-src"
        assert await target.blob_head(desc.digest) == len(data)
        assert await read_blob(target, desc) == data


async def test_refused_mount_returns_false_and_cancels_the_session(
    registry: RegistryProcess, repo_name: str
) -> None:
    data = os.urandom(10 * KIB)
    async with FaultProxy(registry.url) as proxy, Client() as client:
        holder = registry_repo(client, f"{proxy.host}/{repo_name}-holder")
        empty = registry_repo(client, f"{proxy.host}/{repo_name}-empty")
        target = registry_repo(client, f"{proxy.host}/{repo_name}-dst")
        desc = await push_blob(holder, data)
        proxy.reset_log()
        # `empty` does not hold the blob: distribution opens a plain upload (202) instead.
        assert await target.mount_blob(desc, empty) is False
        calls = [(r.method, r.status) for r in proxy.requests]
        assert calls == [("POST", 202), ("DELETE", 204)]
        post, delete = proxy.requests
        assert post.query["from"] == f"{repo_name}-empty"
        assert delete.path.startswith(f"/v2/{repo_name}-dst/blobs/uploads/")
        assert await target.blob_head(desc.digest) is None


async def test_mount_is_not_attempted_where_it_cannot_work(
    registry: RegistryProcess, registry_b: RegistryProcess, repo_name: str
) -> None:
    desc = blob_descriptor(b"x")
    async with FaultProxy(registry.url) as proxy, Client() as client:
        target = registry_repo(client, f"{proxy.host}/{repo_name}")
        other_host = registry_repo(client, f"{registry_b.host}/{repo_name}")
        assert await target.mount_blob(desc, other_host) is False
        assert await target.mount_blob(desc, target) is False
        assert await target.mount_blob(desc, object()) is False
        assert proxy.requests == []


# --- manifests ---------------------------------------------------------------------

KINDS = ["oci-image", "oci-index", "docker-image", "docker-list", "artifact"]


async def _build_kind(repo: RegistryRepo, kind: str) -> Manifest:
    """Push what ``kind`` references and return the (not yet pushed) manifest."""
    if kind in ("oci-image", "docker-image"):
        media = mt.OCI_MANIFEST if kind == "oci-image" else mt.DOCKER_MANIFEST
        docker = kind == "docker-image"
        config = await push_blob(repo, config_json(), mt.DOCKER_CONFIG if docker else mt.OCI_CONFIG)
        layer_type = mt.DOCKER_LAYER if docker else mt.OCI_LAYER_GZIP
        layers = [await push_blob(repo, os.urandom(3000), layer_type) for _ in range(2)]
        return build_image(
            config, layers, media_type=media, annotations={"kind": kind} if not docker else None
        )
    if kind in ("oci-index", "docker-list"):
        child_type = mt.OCI_MANIFEST if kind == "oci-index" else mt.DOCKER_MANIFEST
        children = []
        for arch in ("amd64", "arm64"):
            image = await push_image(repo, media_type=child_type, arch=arch, layers=1)
            children.append(image.descriptor(platform=Platform("linux", arch)))
        list_type = mt.OCI_INDEX if kind == "oci-index" else mt.DOCKER_MANIFEST_LIST
        return build_index(children, media_type=list_type)
    assert kind == "artifact"
    subject = await push_image(repo, layers=1)
    empty = await push_blob(repo, b"{}", mt.OCI_EMPTY)
    payload = await push_blob(repo, b'{"signed": true}', "application/vnd.example.payload+json")
    return build_image(
        empty,
        [payload],
        artifact_type="application/vnd.example.sig",
        subject=subject.descriptor(),
    )


@pytest.mark.parametrize("kind", KINDS)
async def test_manifest_round_trip(registry: RegistryProcess, repo_name: str, kind: str) -> None:
    async with FaultProxy(registry.url) as proxy, Client() as client:
        repo = registry_repo(client, f"{proxy.host}/{repo_name}")
        manifest = await _build_kind(repo, kind)
        assert await repo.manifest_head("v1") is None
        proxy.reset_log()
        await repo.manifest_put(manifest, "v1")
        put = next(r for r in proxy.requests if r.method == "PUT")
        assert put.path == f"/v2/{repo_name}/manifests/v1"
        assert put.headers["Content-Type"] == manifest.media_type
        assert put.status == 201

        for ref in ("v1", manifest.digest):
            got = await repo.manifest_get(ref)
            assert got.raw == manifest.raw
            assert got.media_type == manifest.media_type
            assert got.digest == manifest.digest
            head = await repo.manifest_head(ref)
            assert head == Descriptor(manifest.media_type, manifest.digest, manifest.size)
        # Pushing by digest (no tag) works too and changes nothing.
        await repo.manifest_put(manifest)
        assert (await repo.manifest_get(manifest.digest)).raw == manifest.raw
        gets = [r for r in proxy.requests if r.method == "GET" and "/manifests/" in r.path]
        assert gets
        for r in gets:
            accepted = {a.strip() for a in r.headers["Accept"].split(",")}
            assert set(mt.MANIFEST_ACCEPT) <= accepted


async def test_large_manifest_round_trip(registry: RegistryProcess, repo_name: str) -> None:
    """A manifest arrives in many reads; every one of them must be kept."""
    async with FaultProxy(registry.url) as proxy, Client() as client:
        repo = registry_repo(client, f"{proxy.host}/{repo_name}")
        config = await push_blob(repo, config_json(), mt.OCI_CONFIG)
        layer = await push_blob(repo, os.urandom(100))
        image = build_image(config, [layer], annotations={"pad": "x" * 1_500_000})
        await repo.manifest_put(image, "big")
        assert (await repo.manifest_get("big")).raw == image.raw
        # Slowly, in small pieces, too.
        proxy.add_rule(Rule(Throttle(8_000_000), method="GET", path="/manifests/"))
        assert (await repo.manifest_get(image.digest)).raw == image.raw


async def test_image_fields_survive_the_round_trip(
    registry: RegistryProcess, repo_name: str
) -> None:
    async with Client() as client:
        repo = registry_repo(client, f"{registry.host}/{repo_name}")
        image = await push_image(repo, layers=3, tag="v1")
        got = await repo.manifest_get("v1")
    assert got.is_image
    assert got.config == image.config
    assert got.layers == image.layers
    assert [d.size for d in got.blobs()] == [d.size for d in image.blobs()]


async def test_missing_manifest(registry: RegistryProcess, repo_name: str) -> None:
    async with Client() as client:
        repo = registry_repo(client, f"{registry.host}/{repo_name}")
        assert await repo.manifest_head("nope") is None
        with pytest.raises(NotFoundError) as info:
            await repo.manifest_get("nope")
    assert info.value.status == 404
    assert info.value.codes  # distribution names what is unknown (MANIFEST_/NAME_UNKNOWN)


async def test_manifest_referencing_missing_blobs_is_refused(
    registry: RegistryProcess, repo_name: str
) -> None:
    config = blob_descriptor(config_json(), mt.OCI_CONFIG)
    image = build_image(config, [blob_descriptor(os.urandom(10))])
    async with Client() as client:
        repo = registry_repo(client, f"{registry.host}/{repo_name}")
        with pytest.raises(RegistryError) as info:
            await repo.manifest_put(image, "v1")
        assert await repo.manifest_head("v1") is None
    assert info.value.status == 400
    assert "MANIFEST_BLOB_UNKNOWN" in info.value.codes


async def test_manifest_delete(registry: RegistryProcess, repo_name: str) -> None:
    async with FaultProxy(registry.url) as proxy, Client() as client:
        repo = registry_repo(client, f"{proxy.host}/{repo_name}")
        image = await push_image(repo, tag="v1")
        keep = await push_image(repo, tag="v2")
        proxy.reset_log()
        await repo.manifest_delete(image.digest)
        assert [(r.method, r.status) for r in proxy.requests] == [("DELETE", 202)]
        assert await repo.manifest_head(image.digest) is None
        assert await repo.manifest_head("v1") is None
        with pytest.raises(NotFoundError):
            await repo.manifest_get(image.digest)
        # The other image is untouched.
        head = await repo.manifest_head("v2")
        assert head is not None
        assert head.digest == keep.digest
        with pytest.raises(NotFoundError):
            await repo.manifest_delete(image.digest)


# --- tags --------------------------------------------------------------------------

TAGS = ["a", "b", "c", "d", "e"]


async def _tagged(client: Client, host: str, repo_name: str) -> RegistryRepo:
    repo = registry_repo(client, f"{host}/{repo_name}")
    image = await push_image(repo, layers=1, layer_size=100)
    for tag in TAGS:
        await repo.manifest_put(image, tag)
    return repo


def _page(name: str, tags: list[str]) -> Callable[[bytes], bytes]:
    def rewrite(_body: bytes) -> bytes:
        return orjson.dumps({"name": name, "tags": tags})

    return rewrite


def _tag_rule(fn: Callable[[bytes], bytes] | None, headers: dict[str, Any], n: int) -> Rule:
    """The ``n``-th (0-based) answer of the tag list is rewritten with ``fn`` and ``headers``."""
    return Rule(Rewrite(fn, headers), method="GET", path="/tags/list$", after=n, times=1)


async def test_tags_without_pagination(registry: RegistryProcess, repo_name: str) -> None:
    async with Client() as client:
        repo = await _tagged(client, registry.host, repo_name)
        assert sorted(await repo.tags()) == TAGS


async def test_tags_follow_link_pages(registry: RegistryProcess, repo_name: str) -> None:
    async with FaultProxy(registry.url) as proxy, Client() as client:
        repo = await _tagged(client, proxy.host, repo_name)
        path = f"/v2/{repo_name}/tags/list"
        proxy.add_rule(
            _tag_rule(_page(repo_name, ["a", "b"]), {"Link": f'<{path}?n=2&last=b>; rel="next"'}, 0)
        )
        absolute = f"{proxy.url}{path}?n=2&last=d"
        proxy.add_rule(
            _tag_rule(_page(repo_name, ["c", "d"]), {"Link": f"<{absolute}>; rel=next"}, 1)
        )
        proxy.add_rule(_tag_rule(_page(repo_name, ["e"]), {}, 2))
        proxy.reset_log()
        assert await repo.tags() == TAGS
        pages = [r for r in proxy.requests if r.path == path]
        assert [r.query_string for r in pages] == ["", "n=2&last=b", "n=2&last=d"]


async def test_long_tag_list(registry: RegistryProcess, repo_name: str) -> None:
    many = [f"tag-{i:06d}" for i in range(30_000)]
    async with FaultProxy(registry.url) as proxy, Client() as client:
        repo = await _tagged(client, proxy.host, repo_name)
        proxy.add_rule(_tag_rule(_page(repo_name, many), {}, 0))
        assert await repo.tags() == many


@pytest.mark.parametrize(("loop_at", "requests"), [(0, 1), (1, 2)])
async def test_tag_pagination_loop_is_an_error(
    registry: RegistryProcess, repo_name: str, loop_at: int, requests: int
) -> None:
    async with FaultProxy(registry.url) as proxy, Client() as client:
        repo = await _tagged(client, proxy.host, repo_name)
        path = f"/v2/{repo_name}/tags/list"
        # Page 0 links to page 1 (unless it links to itself); page 1 links to itself.
        first = path if loop_at == 0 else f"{path}?last=b"
        proxy.add_rule(
            _tag_rule(_page(repo_name, ["a", "b"]), {"Link": f'<{first}>; rel="next"'}, 0)
        )
        proxy.add_rule(
            Rule(
                Rewrite(_page(repo_name, ["c"]), {"Link": f'<{path}?last=b>; rel="next"'}),
                method="GET",
                path="/tags/list$",
                after=1,
            )
        )
        proxy.reset_log()
        with pytest.raises(RegistryError, match="loops"):
            await repo.tags()
        assert proxy.count("GET", "/tags/list$") == requests


@pytest.mark.parametrize(
    "link",
    ['</v2/x/tags/list?last=b; rel="next"', '</v2/x/tags/list?last=b>; rel="next" junk'],
)
async def test_malformed_tag_link_is_an_error(
    registry: RegistryProcess, repo_name: str, link: str
) -> None:
    async with FaultProxy(registry.url) as proxy, Client() as client:
        repo = await _tagged(client, proxy.host, repo_name)
        proxy.add_rule(_tag_rule(None, {"Link": link}, 0))
        proxy.reset_log()
        with pytest.raises(RegistryError, match="malformed Link"):
            await repo.tags()
        assert proxy.count("GET", "/tags/list$") == 1


async def test_tag_link_to_another_origin_is_not_followed(
    registry: RegistryProcess, repo_name: str, tmp_path: Any
) -> None:
    async with (
        HeaderLogServer(tmp_path) as elsewhere,
        FaultProxy(registry.url) as proxy,
        Client() as client,
    ):
        repo = await _tagged(client, proxy.host, repo_name)
        link = f'<{elsewhere.url}/v2/{repo_name}/tags/list?last=b>; rel="next"'
        proxy.add_rule(_tag_rule(None, {"Link": link}, 0))
        with pytest.raises(RegistryError, match="another origin"):
            await repo.tags()
    assert elsewhere.requests == []


# --- referrers ---------------------------------------------------------------------


def _artifact(empty: Descriptor, payload: Descriptor, subject: Manifest, kind: str) -> Manifest:
    return build_image(
        empty,
        [payload],
        artifact_type=f"application/vnd.example.{kind}",
        subject=subject.descriptor(),
        annotations={"org.example.kind": kind},
    )


async def test_referrers_through_the_tag_fallback(
    registry: RegistryProcess, repo_name: str
) -> None:
    async with FaultProxy(registry.url) as proxy, Client() as client:
        repo = registry_repo(client, f"{proxy.host}/{repo_name}")
        subject = await push_image(repo, layers=1, tag="app")
        empty = await push_blob(repo, b"{}", mt.OCI_EMPTY)
        payload = await push_blob(repo, b'{"n": 1}', "application/vnd.example.payload+json")
        sig = _artifact(empty, payload, subject, "sig")
        sbom = _artifact(empty, payload, subject, "sbom")

        assert await repo.referrers(subject.digest) == []
        await repo.manifest_put(sig)
        await repo.manifest_put(sbom)
        await repo.manifest_put(sig)  # again: listed once

        found = await registry_repo(client, f"{proxy.host}/{repo_name}").referrers(subject.digest)
        assert [d.digest for d in found] == [sig.digest, sbom.digest]
        assert [d.artifact_type for d in found] == [
            "application/vnd.example.sig",
            "application/vnd.example.sbom",
        ]
        assert [d.media_type for d in found] == [mt.OCI_MANIFEST, mt.OCI_MANIFEST]
        assert found[0].annotations == {"org.example.kind": "sig"}

        index = await repo.manifest_get(subject.digest.tag_form)
        assert index.media_type == mt.OCI_INDEX
        assert [d.digest for d in index.manifests] == [sig.digest, sbom.digest]
        # distribution has no referrers API; one repo object asks for it only once.
        assert proxy.count("GET", "/referrers/") == 2  # one per RegistryRepo object


async def test_referrers_of_an_unreferenced_manifest(
    registry: RegistryProcess, repo_name: str
) -> None:
    async with Client() as client:
        repo = registry_repo(client, f"{registry.host}/{repo_name}")
        image = await push_image(repo, layers=1)
        assert await repo.referrers(image.digest) == []
        # A tag that looks like the fallback but holds an image is not a referrers list.
        await repo.manifest_put(image, image.digest.tag_form)
        assert await repo.referrers(image.digest) == []


async def test_catalog_follows_link_pages_of_the_real_registry(
    registry_b: RegistryProcess, builder: ImageBuilder
) -> None:
    builder.image("c", ImageSpec(layers=1, layer_size=1024))
    names = [f"catalog-test/r{i}" for i in range(5)]
    for name in names:
        push_layout(builder.root, "c", registry_b.host, name)
    async with Client() as client:
        everything = await client.catalog(registry_b.host)
        async with FaultProxy(registry_b.url) as proxy:
            paged = await client.catalog(proxy.host, page_size=2)
            pages = proxy.count("GET", "/v2/_catalog")
    assert set(names) <= set(everything)
    assert paged == everything
    assert pages >= 3
