"""The copy engine between two in-memory repos: loops are refused, children go first.

`MemRepo` trusts whatever it is told: a manifest is stored under the digest
the test chooses, not the digest of its bytes. That is how a (lying) store
can serve an index that "contains itself", which a content-addressed store
never could, and which the engine must refuse rather than recurse into.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import anyio.lowlevel
import pytest

from asyncreg.budget import Budget
from asyncreg.config import Limits
from asyncreg.digest import Digest
from asyncreg.engine.copy import Copier
from asyncreg.engine.job import Job
from asyncreg.engine.limits import Slots
from asyncreg.errors import LoopError
from asyncreg.manifest import Descriptor, Manifest, build_image, build_index
from asyncreg.mediatypes import OCI_CONFIG, OCI_INDEX, OCI_LAYER
from asyncreg.options import CopyOptions
from asyncreg.platform import Platform
from asyncreg.store import BlobSource, Repo

pytestmark = pytest.mark.anyio


class Runaway(Exception):
    """A walk fetched far more manifests than the graph holds."""


class MemStream:
    def __init__(self, data: bytes) -> None:
        self.size = len(data)
        self._data = data

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self._data), 7):
            await anyio.lowlevel.checkpoint()
            yield self._data[start : start + 7]

    async def aclose(self) -> None:
        pass


class MemRepo:
    """A `Repo` in a few dicts; records the order of puts."""

    wants_manifest_first = False
    verifies_blobs = False

    def __init__(self, name: str) -> None:
        self._name = name
        self.manifests: dict[Digest, Manifest] = {}
        self.tag_map: dict[str, Digest] = {}
        self.blobs: dict[Digest, bytes] = {}
        self.referrer_map: dict[Digest, list[Descriptor]] = {}
        self.log: list[tuple[str, Digest]] = []
        self.fetch_budget = 1000  # a runaway guard, not a limit any test expects to reach

    @property
    def key(self) -> str:
        return f"mem:{self._name}"

    @property
    def host(self) -> str:
        return self._name

    # --- seeding (test side) ---

    def add_manifest(self, manifest: Manifest, digest: Digest | None = None) -> Descriptor:
        """Store ``manifest`` under ``digest`` (its own by default, any digest if asked)."""
        at = digest or manifest.digest
        self.manifests[at] = manifest
        return self._descriptor(at)

    def add_blob(self, data: bytes, media_type: str) -> Descriptor:
        digest = Digest.of(data)
        self.blobs[digest] = data
        return Descriptor(media_type, digest, len(data))

    def _descriptor(self, digest: Digest) -> Descriptor:
        manifest = self.manifests[digest]
        return Descriptor(manifest.media_type, digest, manifest.size)

    def _resolve(self, reference: str | Digest) -> Digest | None:
        if isinstance(reference, Digest):
            return reference
        return self.tag_map.get(reference)

    # --- the Repo protocol ---

    async def manifest_head(self, reference: str | Digest) -> Descriptor | None:
        await anyio.lowlevel.checkpoint()
        digest = self._resolve(reference)
        if digest is None or digest not in self.manifests:
            return None
        return self._descriptor(digest)

    async def manifest_get(self, reference: str | Digest) -> Manifest:
        await anyio.lowlevel.checkpoint()
        self.fetch_budget -= 1
        if self.fetch_budget < 0:
            raise Runaway(f"{self.key}: too many manifest fetches")
        digest = self._resolve(reference)
        assert digest is not None, reference
        return self.manifests[digest]

    async def manifest_put(
        self, manifest: Manifest, tag: str | None = None, *, child: bool = False
    ) -> None:
        await anyio.lowlevel.checkpoint()
        self.log.append(("manifest", manifest.digest))
        self.manifests[manifest.digest] = manifest
        if tag is not None:
            self.tag_map[tag] = manifest.digest

    async def blob_head(self, digest: Digest) -> int | None:
        await anyio.lowlevel.checkpoint()
        data = self.blobs.get(digest)
        return None if data is None else len(data)

    async def blob_open(
        self, desc: Descriptor, *, verify: bool = True, budget: Budget | None = None
    ) -> MemStream:
        await anyio.lowlevel.checkpoint()
        return MemStream(self.blobs[desc.digest])

    async def blob_put(
        self,
        desc: Descriptor,
        source: BlobSource,
        *,
        budget: Budget | None = None,
        chunked: bool = False,
    ) -> None:
        stream = await source()
        chunks = [chunk async for chunk in stream]
        await stream.aclose()
        self.log.append(("blob", desc.digest))
        self.blobs[desc.digest] = b"".join(chunks)

    async def mount_blob(self, desc: Descriptor, source: object) -> bool:
        return False

    async def tags(self) -> list[str]:
        return sorted(self.tag_map)

    async def referrers(self, digest: Digest) -> list[Descriptor]:
        return list(self.referrer_map.get(digest, []))


def _copier(src: MemRepo, dst: MemRepo, options: CopyOptions | None = None) -> Copier:
    return Copier(Job(Slots(Limits())), src, dst, options or CopyOptions())


async def _expect_loop(copier: Copier) -> None:
    caught = False
    with anyio.fail_after(10):  # a hang guard only
        try:
            await copier.copy("tag", "tag")
        except* LoopError:
            caught = True
    assert caught, "copy finished instead of refusing the loop"


def _fake_digest(name: str) -> Digest:
    return Digest.of(f"not a manifest: {name}".encode())


def _index_of(*children: Digest) -> Manifest:
    return build_index([Descriptor(OCI_INDEX, d, 100) for d in children])


def test_mem_repo_is_a_repo() -> None:
    assert isinstance(MemRepo("x"), Repo)


# --- loops ----------------------------------------------------------------------


async def test_index_that_contains_itself() -> None:
    src, dst = MemRepo("src"), MemRepo("dst")
    me = _fake_digest("self")
    src.add_manifest(_index_of(me), me)
    src.tag_map["tag"] = me
    await _expect_loop(_copier(src, dst))
    assert dst.log == []


async def test_two_indexes_that_contain_each_other() -> None:
    src, dst = MemRepo("src"), MemRepo("dst")
    a, b = _fake_digest("a"), _fake_digest("b")
    src.add_manifest(_index_of(b), a)
    src.add_manifest(_index_of(a), b)
    src.tag_map["tag"] = a
    await _expect_loop(_copier(src, dst))
    assert dst.log == []


async def test_loop_below_the_top() -> None:
    src, dst = MemRepo("src"), MemRepo("dst")
    a, b, c = _fake_digest("a"), _fake_digest("b"), _fake_digest("c")
    top = src.add_manifest(_index_of(a))
    src.add_manifest(_index_of(b), a)
    src.add_manifest(_index_of(c), b)
    src.add_manifest(_index_of(a), c)
    src.tag_map["tag"] = top.digest
    await _expect_loop(_copier(src, dst))


async def test_loop_entered_from_two_sides_at_once() -> None:
    # top -> a, top -> b, a -> b, b -> a: two tasks walk into the cycle from
    # different ends, each waiting on the other's single-flight call.
    src, dst = MemRepo("src"), MemRepo("dst")
    a, b = _fake_digest("a"), _fake_digest("b")
    top = src.add_manifest(_index_of(a, b))
    src.add_manifest(_index_of(b), a)
    src.add_manifest(_index_of(a), b)
    src.tag_map["tag"] = top.digest
    await _expect_loop(_copier(src, dst))


async def test_referrer_that_is_its_own_subject() -> None:
    src, dst = MemRepo("src"), MemRepo("dst")
    desc = src.add_manifest(_index_of())
    src.referrer_map[desc.digest] = [desc]
    src.tag_map["tag"] = desc.digest
    await _expect_loop(_copier(src, dst, CopyOptions(referrers=True)))


# --- a normal graph -------------------------------------------------------------


def _image(repo: MemRepo, name: str, shared: Descriptor) -> Manifest:
    config = repo.add_blob(f'{{"name":"{name}"}}'.encode(), OCI_CONFIG)
    layer = repo.add_blob(f"layer of {name}".encode() * 5, OCI_LAYER)
    image = build_image(config, [shared, layer])
    repo.add_manifest(image)
    return image


def _graph(src: MemRepo) -> Manifest:
    shared = src.add_blob(b"a base layer shared by every image" * 3, OCI_LAYER)
    amd64 = _image(src, "amd64", shared)
    arm64 = _image(src, "arm64", shared)
    s390x = _image(src, "s390x", shared)
    nested = build_index(
        [
            s390x.descriptor(Platform("linux", "s390x")),
            amd64.descriptor(Platform("linux", "amd64")),
        ]
    )
    src.add_manifest(nested)
    top = build_index(
        [
            amd64.descriptor(Platform("linux", "amd64")),
            arm64.descriptor(Platform("linux", "arm64")),
            nested.descriptor(),
        ]
    )
    src.add_manifest(top)
    src.tag_map["tag"] = top.digest
    return top


async def test_index_copies_children_before_parents() -> None:
    src, dst = MemRepo("src"), MemRepo("dst")
    top = _graph(src)
    with anyio.fail_after(10):
        result = await _copier(src, dst).copy("tag", "tag")

    assert result.digest == top.digest
    assert dst.tag_map == {"tag": top.digest}
    assert dst.manifests == src.manifests
    assert dst.blobs == src.blobs
    puts = [digest for _, digest in dst.log]
    assert len(puts) == len(set(puts)), "something was put twice"
    assert len(puts) == len(src.manifests) + len(src.blobs)
    position = {digest: i for i, digest in enumerate(puts)}
    for kind, digest in dst.log:
        if kind != "manifest":
            continue
        for ref in dst.manifests[digest].references():
            assert position[ref.digest] < position[digest], f"{ref.digest} after {digest}"
    assert dst.log[-1] == ("manifest", top.digest)
    assert result.manifests_pushed == len(src.manifests)
    assert result.blobs_moved == len(src.blobs)
    assert result.bytes_moved == sum(len(b) for b in src.blobs.values())


async def test_second_copy_is_skipped() -> None:
    src, dst = MemRepo("src"), MemRepo("dst")
    top = _graph(src)
    job = Job(Slots(Limits()))
    with anyio.fail_after(10):
        await Copier(job, src, dst, CopyOptions()).copy("tag", "tag")
        before = list(dst.log)
        again = await Copier(job, src, dst, CopyOptions()).copy("tag", "tag")
    assert again.skipped
    assert again.digest == top.digest
    assert dst.log == before


# --- digest tags that point at each other -------------------------------------------


def _signed_pair(src: MemRepo) -> tuple[Manifest, Manifest]:
    """Two images whose ``<alg>-<hex>.sig`` tags point at each other (tags are mutable)."""
    shared = src.add_blob(b"base", OCI_LAYER)
    x = _image(src, "x", shared)
    s = _image(src, "s", shared)
    src.tag_map["tag"] = x.digest
    src.tag_map[f"{x.digest.tag_form}.sig"] = s.digest
    src.tag_map[f"{s.digest.tag_form}.sig"] = x.digest
    src.fetch_budget = 50
    return x, s


async def test_digest_tags_pointing_at_each_other() -> None:
    src, dst = MemRepo("src"), MemRepo("dst")
    x, s = _signed_pair(src)
    with anyio.fail_after(10):
        await _copier(src, dst, CopyOptions(digest_tags=True)).copy("tag", "tag")
    assert dst.tag_map == {
        "tag": x.digest,
        f"{x.digest.tag_form}.sig": s.digest,
        f"{s.digest.tag_form}.sig": x.digest,
    }


async def test_digest_tags_pointing_at_each_other_with_force_recursive() -> None:
    src, dst = MemRepo("src"), MemRepo("dst")
    x, s = _signed_pair(src)
    options = CopyOptions(digest_tags=True, force_recursive=True)
    with anyio.fail_after(10):
        try:
            await _copier(src, dst, options).copy("tag", "tag")
        except* Runaway:
            pytest.fail("the copy walked the two tags round and round")
    # Each tag is followed once; the one pointing back at the image being copied
    # is set after that image is complete.
    assert dst.tag_map == {
        "tag": x.digest,
        f"{x.digest.tag_form}.sig": s.digest,
        f"{s.digest.tag_form}.sig": x.digest,
    }
