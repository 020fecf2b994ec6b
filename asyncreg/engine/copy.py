"""The copy task graph: manifests discovered as they are fetched, children first.

`Job` is what several copies share (slots, single-flight tables, progress),
so a mirror of a thousand images is one graph with one set of limits.
`Copier` copies one source repo to one target repo inside a job:

- a manifest node fetches its manifest (by digest, so a moving tag cannot
  change under us), starts one task per child (child manifests, config,
  layers) in an anyio task group, and pushes its own bytes only after the
  group finished: a target never holds a manifest whose content is missing;
  a target that ``wants_manifest_first`` gets it before its children;
- a blob node is single-flight per (target, digest); it HEADs the target,
  tries a cross-repository mount from any repo of the same registry known to
  hold it, uploads once per (target host, digest), and otherwise moves the
  bytes holding one slot on each host: through the target's kernel or
  worker-thread path when it has one (`store.BlobRelay`), else as a stream;
- an index that reaches itself raises `LoopError` instead of recursing forever.
No slot is held while a node waits for its children, so recursion cannot
starve the limits.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field

import anyio

from ..digest import Digest
from ..errors import LoopError, NotFoundError
from ..manifest import Descriptor, Manifest, build_index
from ..options import CopyOptions, CopyResult
from ..platform import Platform
from ..store import BlobRelay, BlobStream, Repo
from .limits import Slots
from .progress import Event, EventKind, Progress
from .singleflight import SingleFlight

__all__ = ["Copier", "Job"]


@dataclass
class Job:
    """State shared by every copy of one job."""

    slots: Slots
    progress: Progress = field(default_factory=Progress)
    blobs: SingleFlight[None] = field(default_factory=SingleFlight)
    manifests: SingleFlight[None] = field(default_factory=SingleFlight)
    #: Uploads by (target host, digest): a blob going to two repos of one
    #: registry is uploaded once and mounted into the other.
    uploads: SingleFlight[None] = field(default_factory=SingleFlight)
    #: (host, digest) -> repos known to hold the blob, for cross-repository mounts.
    holders: dict[tuple[str, Digest], list[Repo]] = field(default_factory=dict)
    #: Manifest references walked so far, by `manifests` key: parent -> children.
    #: Two tasks entering a loop at different manifests would each wait for the
    #: other's single-flight call forever; `refer` sees the loop close instead.
    references: dict[str, set[str]] = field(default_factory=dict)

    def refer(self, parent: str, child: str) -> bool:
        """Record that ``parent`` references ``child``; False if ``child`` reaches ``parent``."""
        seen: set[str] = set()
        todo = [child]
        while todo:
            node = todo.pop()
            if node == parent:
                return False
            if node not in seen:
                seen.add(node)
                todo.extend(self.references.get(node, ()))
        self.references.setdefault(parent, set()).add(child)
        return True

    def holds(self, repo: Repo, digest: Digest) -> None:
        """Record that ``repo`` now holds ``digest``."""
        known = self.holders.setdefault((repo.host, digest), [])
        if all(r.key != repo.key for r in known):
            known.append(repo)


class _CountingStream:
    """Passes a blob stream through, reporting bytes as progress events."""

    def __init__(
        self, inner: BlobStream, emit: Callable[[Event], None], digest: str, target: str
    ) -> None:
        self._inner = inner
        self.size = inner.size
        self._emit = emit
        self._digest = digest
        self._target = target

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        emit = self._emit
        async for chunk in self._inner:
            emit(Event(EventKind.BYTES, "blob", self._digest, self._target, amount=len(chunk)))
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class Copier:
    """Copies manifests and blobs from ``src`` to ``dst`` within ``job``."""

    def __init__(self, job: Job, src: Repo, dst: Repo, options: CopyOptions) -> None:
        self.job = job
        self.src = src
        self.dst = dst
        self.options = options
        self._same_repo = src.key == dst.key
        self._wanted = options.wanted_platforms()
        self._src_tags: list[str] | None = None
        self._tags_seen: set[str] = set()
        self._deferred_tags: list[tuple[str, Descriptor]] = []
        self._tags_lock = anyio.Lock()
        self._local = Progress()

    def _emit(self, event: Event) -> None:
        """Count ``event`` for this copy's result and pass it to the job."""
        self._local.emit(event)
        self.job.progress.emit(event)

    # --- entry point ------------------------------------------------------

    async def copy(self, src_reference: str | Digest, dst_tag: str | None) -> CopyResult:
        """Copy the image named by ``src_reference`` to ``dst`` (tagged ``dst_tag``)."""
        started = time.monotonic()
        async with self.job.slots.hold(self.src.host):
            desc = await self.src.manifest_head(src_reference)
        if desc is None:
            raise NotFoundError(f"{self.src.key}:{src_reference}: manifest not found", status=404)
        if self.options.platform is not None:
            desc = await self._resolve_platform(desc, Platform.parse(self.options.platform))
        skipped = False
        target_digest = desc.digest
        if not self.options.force_recursive and not self.dst.wants_manifest_first:
            async with self.job.slots.hold(self.dst.host):
                current = await self.dst.manifest_head(dst_tag or desc.digest)
            if current is not None and current.digest == desc.digest and self.options.fast:
                skipped = True
                self._emit(Event(EventKind.SKIPPED, "manifest", str(desc.digest), self.dst.key))
                await self._extras(desc.digest, ())
        if not skipped:
            target_digest = await self._manifest(desc, dst_tag, (), top=True)
        for tag, tagged in self._deferred_tags:
            async with self.job.slots.hold(self.src.host):
                manifest = await self.src.manifest_get(tagged.digest)
            await self._put(manifest, tag, top=False)
        after = self._local.statistics()
        return CopyResult(
            source=f"{self.src.key}:{src_reference}",
            target=f"{self.dst.key}:{dst_tag or desc.digest}",
            digest=target_digest,
            media_type=desc.media_type,
            platforms=tuple(self.options.platforms),
            skipped=skipped,
            blobs_moved=after.blobs_moved,
            blobs_skipped=after.blobs_skipped,
            blobs_mounted=after.blobs_mounted,
            manifests_pushed=after.manifests_pushed,
            bytes_moved=after.bytes_moved,
            duration=time.monotonic() - started,
        )

    async def _resolve_platform(self, desc: Descriptor, want: Platform) -> Descriptor:
        async with self.job.slots.hold(self.src.host):
            top = await self.src.manifest_get(desc.digest)
        if not top.is_index:
            return desc
        for child in top.manifests:
            if child.platform is not None and want.matches(child.platform):
                return child
        available = ", ".join(str(c.platform) for c in top.manifests if c.platform) or "none"
        raise NotFoundError(
            f"{self.src.key}@{desc.digest}: no image for platform {want} (available: {available})",
            status=404,
        )

    # --- manifests --------------------------------------------------------

    async def _manifest(
        self, desc: Descriptor, tag: str | None, ancestors: tuple[Digest, ...], *, top: bool
    ) -> Digest:
        """Copy one manifest and everything under it; return the digest pushed."""
        if desc.digest in ancestors:
            raise LoopError(f"{self.src.key}@{desc.digest}: index references itself")
        if ancestors and not self.job.refer(
            f"{self.dst.key}@{ancestors[-1]}", f"{self.dst.key}@{desc.digest}"
        ):
            raise LoopError(f"{self.src.key}@{desc.digest}: index reaches itself")
        if tag is not None or top:
            return await self._manifest_once(desc, tag, ancestors, top=top)
        key = f"{self.dst.key}@{desc.digest}"

        async def run() -> None:
            await self._manifest_once(desc, None, ancestors, top=False)

        await self.job.manifests.do(key, run)
        return desc.digest

    async def _manifest_once(
        self, desc: Descriptor, tag: str | None, ancestors: tuple[Digest, ...], *, top: bool
    ) -> Digest:
        opts = self.options
        if not top and not opts.force_recursive and not self.dst.wants_manifest_first:
            async with self.job.slots.hold(self.dst.host):
                present = await self.dst.manifest_head(tag or desc.digest)
            if present is not None and present.digest == desc.digest:
                self._emit(Event(EventKind.SKIPPED, "manifest", str(desc.digest), self.dst.key))
                await self._extras(desc.digest, ancestors)
                return desc.digest
        async with self.job.slots.hold(self.src.host):
            manifest = await self.src.manifest_get(desc.digest)
        to_push = manifest
        if top and opts.filter_index and manifest.is_index:
            to_push = build_index(
                [c for c in manifest.manifests if self._platform_wanted(c)],
                media_type=manifest.media_type,
                annotations=manifest.annotations or None,
            )
        if self.dst.wants_manifest_first:
            await self._put(to_push, tag, top=top)
        if not self._same_repo:
            lineage = (*ancestors, desc.digest)
            async with anyio.create_task_group() as tg:
                for child in self._children(manifest):
                    if manifest.is_index:
                        tg.start_soon(self._child_manifest, child, lineage)
                    else:
                        tg.start_soon(self._blob, child)
        if not self.dst.wants_manifest_first:
            await self._put(to_push, tag, top=top)
        await self._extras(to_push.digest, ancestors)
        if to_push is not manifest:
            await self._extras(manifest.digest, ancestors)
        return to_push.digest

    async def _child_manifest(self, desc: Descriptor, lineage: tuple[Digest, ...]) -> None:
        await self._manifest(desc, None, lineage, top=False)

    def _children(self, manifest: Manifest) -> Iterable[Descriptor]:
        if manifest.is_index:
            return [c for c in manifest.manifests if self._platform_wanted(c)]
        out = []
        for blob in manifest.blobs():
            if blob.urls and not self.options.include_external:
                continue
            out.append(blob)
        return out

    def _platform_wanted(self, desc: Descriptor) -> bool:
        if not self._wanted:
            return True
        if desc.platform is None:
            return False
        return any(w.matches(desc.platform) for w in self._wanted)

    async def _put(self, manifest: Manifest, tag: str | None, *, top: bool) -> None:
        digest = str(manifest.digest)
        self._emit(Event(EventKind.STARTED, "manifest", digest, self.dst.key, size=manifest.size))
        try:
            async with self.job.slots.hold(self.dst.host):
                await self.dst.manifest_put(manifest, tag, child=not top or self.options.child)
        except BaseException as exc:
            self._emit(Event(EventKind.FAILED, "manifest", digest, self.dst.key, error=str(exc)))
            raise
        self._emit(Event(EventKind.DONE, "manifest", digest, self.dst.key, size=manifest.size))

    # --- referrers and digest tags ------------------------------------------

    async def _extras(self, digest: Digest, ancestors: tuple[Digest, ...]) -> None:
        """Copy referrers and digest tags of ``digest`` when the options ask for them."""
        opts = self.options
        if not (opts.referrers or opts.digest_tags) or self._same_repo:
            return
        lineage = (*ancestors, digest)
        async with anyio.create_task_group() as tg:
            if opts.referrers:
                async with self.job.slots.hold(self.src.host):
                    found = await self.src.referrers(digest)
                for ref in found:
                    tg.start_soon(self._child_manifest, ref, lineage)
            if opts.digest_tags:
                prefix = digest.tag_form
                for tag in await self._source_tags():
                    if not tag.startswith(prefix):
                        continue
                    if opts.referrers and tag == prefix:
                        continue  # the referrers fallback index: maintained by the target
                    tg.start_soon(self._digest_tag, tag, lineage)

    async def _digest_tag(self, tag: str, lineage: tuple[Digest, ...]) -> None:
        # Tags can point anywhere, even back into the walk (two signatures that
        # sign each other): each tag is followed once per copy, and a tag whose
        # manifest is still being copied above us is set once the copy is done.
        if tag in self._tags_seen:
            return
        self._tags_seen.add(tag)
        async with self.job.slots.hold(self.src.host):
            desc = await self.src.manifest_head(tag)
        if desc is None:
            return
        if desc.digest in lineage:
            self._deferred_tags.append((tag, desc))
            return
        async with self.job.slots.hold(self.dst.host):
            present = await self.dst.manifest_head(tag)
        if (
            present is not None
            and present.digest == desc.digest
            and not self.options.force_recursive
        ):
            return
        await self._manifest_once(desc, tag, lineage, top=False)

    async def _source_tags(self) -> list[str]:
        async with self._tags_lock:
            if self._src_tags is None:
                async with self.job.slots.hold(self.src.host):
                    self._src_tags = await self.src.tags()
            return self._src_tags

    # --- blobs ------------------------------------------------------------

    async def _blob(self, desc: Descriptor) -> None:
        self._emit(Event(EventKind.QUEUED, "blob", str(desc.digest), self.dst.key, size=desc.size))
        await self.job.blobs.do(f"{self.dst.key}@{desc.digest}", lambda: self._move_blob(desc))

    async def _move_blob(self, desc: Descriptor) -> None:
        digest = str(desc.digest)
        target = self.dst.key
        async with self.job.slots.hold(self.dst.host):
            present = await self.dst.blob_head(desc.digest)
        if present is not None:
            self.job.holds(self.dst, desc.digest)
            self._emit(Event(EventKind.SKIPPED, "blob", digest, target, size=desc.size))
            return
        if await self._try_mounts(desc):
            return
        _, ran = await self.job.uploads.do(
            f"{self.dst.host}@{desc.digest}", lambda: self._upload(desc)
        )
        if ran:
            return
        # Another copy of this job put the blob into a sibling repo: mount from there.
        if not await self._try_mounts(desc):
            await self._upload(desc)

    async def _try_mounts(self, desc: Descriptor) -> bool:
        for candidate in self._mount_sources(desc.digest):
            async with self.job.slots.hold(self.dst.host):
                mounted = await self.dst.mount_blob(desc, candidate)
            if mounted:
                self.job.holds(self.dst, desc.digest)
                self._emit(
                    Event(EventKind.MOUNTED, "blob", str(desc.digest), self.dst.key, size=desc.size)
                )
                return True
        return False

    async def _upload(self, desc: Descriptor) -> None:
        digest = str(desc.digest)
        target = self.dst.key
        opens = 0
        verify = not self.dst.verifies_blobs

        async def source() -> BlobStream:
            nonlocal opens
            opens += 1
            if opens > 1:
                self._emit(Event(EventKind.RETRIED, "blob", digest, target, size=desc.size))
            inner = await self.src.blob_open(desc, verify=verify)
            return _CountingStream(inner, self._emit, digest, target)

        relayed_bytes = 0

        def on_bytes(n: int) -> None:
            nonlocal relayed_bytes
            relayed_bytes += n
            self._emit(Event(EventKind.BYTES, "blob", digest, target, amount=n))

        self._emit(Event(EventKind.STARTED, "blob", digest, target, size=desc.size))
        try:
            async with self.job.slots.hold(self.src.host, self.dst.host):
                relayed = False
                if isinstance(self.dst, BlobRelay):
                    # False means nothing was written: stream it instead.
                    relayed = await self.dst.relay_blob(desc, self.src, on_bytes)
                    if not relayed and relayed_bytes:
                        # A relay that broke off and stepped aside: take its bytes back
                        # out of the counters, the streaming path sends them all again.
                        self._emit(
                            Event(EventKind.BYTES, "blob", digest, target, amount=-relayed_bytes)
                        )
                if not relayed:
                    await self.dst.blob_put(desc, source)
        except BaseException as exc:
            self._emit(Event(EventKind.FAILED, "blob", digest, target, error=str(exc)))
            raise
        self.job.holds(self.dst, desc.digest)
        self._emit(Event(EventKind.DONE, "blob", digest, target, size=desc.size))

    def _mount_sources(self, digest: Digest) -> list[Repo]:
        out: list[Repo] = []
        if self.src.host == self.dst.host:
            out.append(self.src)
        for repo in self.job.holders.get((self.dst.host, digest), []):
            if repo.key not in (self.dst.key, *(r.key for r in out)):
                out.append(repo)
        return out
