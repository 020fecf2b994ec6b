"""The copy task graph: manifests discovered as they are fetched, children first.

`Job` (`engine.job`) is what several copies share (slots, single-flight
tables, progress, the retry policy), so a mirror of a thousand images is one
graph with one set of limits. `Copier` copies one source repo to one target
repo inside a job:

- a manifest node fetches its manifest (by digest, so a moving tag cannot
  change under us), starts one task per child (child manifests, config,
  layers) in an anyio task group, and pushes its own bytes only after the
  group finished: a target never holds a manifest whose content is missing;
  a target that ``wants_manifest_first`` gets it before its children; a
  manifest larger than the target takes (`store.PushCap`) is refused first;
- a blob node goes to the `BlobPipeline` (`engine.pipeline`): HEAD, mount,
  single-flight upload, slots, one attempt budget, the movers;
- retries, 429s and fallbacks noticed below (transport, movers) are counted
  for this copy through `tally`;
- an index that reaches itself raises `LoopError` instead of recursing forever.
No slot is held while a node waits for its children, so recursion cannot
starve the limits.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import anyio

from ..digest import Digest
from ..errors import DigestMismatchError, LoopError, ManifestError, NotFoundError
from ..manifest import Descriptor, Manifest, build_index
from ..options import CopyOptions, CopyResult
from ..platform import Platform
from ..store import PushCap, Repo
from ..tally import Tally, counting
from .job import Job
from .pipeline import BlobPipeline
from .progress import Event, EventKind, Progress, reason

__all__ = ["Copier"]

_TALLY_EVENTS = {
    Tally.RETRY: EventKind.RETRIED,
    Tally.RATE_LIMITED: EventKind.RATE_LIMITED,
    Tally.FALLBACK: EventKind.FALLBACK,
    Tally.UNCLEAN: EventKind.UNCLEAN,
}


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
        self._blobs = BlobPipeline(job, src, dst, self._emit)
        self._expect: Digest | None = None

    def _emit(self, event: Event) -> None:
        """Count ``event`` for this copy's result and pass it to the job."""
        self._local.emit(event)
        self.job.progress.emit(event)

    def _tally(self, kind: Tally, detail: str) -> None:
        """A retry, 429, fallback or unclean session noticed below us, as an event."""
        self._emit(Event(_TALLY_EVENTS[kind], "request", "", self.dst.key, error=detail))

    # --- entry point ------------------------------------------------------

    async def copy(
        self, src_reference: str | Digest, dst_tag: str | None, *, expect: Digest | None = None
    ) -> CopyResult:
        """Copy the image named by ``src_reference`` to ``dst`` (tagged ``dst_tag``).

        ``expect`` is a digest the destination named: the manifest pushed must
        have it, checked before anything moves.
        """
        self._expect = expect
        with counting(self._tally):
            return await self._copy(src_reference, dst_tag)

    async def blob(self, desc: Descriptor) -> None:
        """Move one blob ahead of its manifest (a stream passing by), counted for this copy."""
        with counting(self._tally):
            await self._blobs.blob(desc)

    async def _copy(self, src_reference: str | Digest, dst_tag: str | None) -> CopyResult:
        started = time.monotonic()
        async with self.job.slots.hold(self.src.host):
            desc = await self.src.manifest_head(src_reference)
        if desc is None:
            raise NotFoundError(f"{self.src.key}:{src_reference}: manifest not found", status=404)
        if self.options.platform is not None:
            desc = await self._resolve_platform(desc, Platform.parse(self.options.platform))
        if not self.options.filter_index:
            self._check_expected(desc.digest)
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
            retries=after.retries,
            rate_limited=after.rate_limited,
            fallbacks=after.fallbacks,
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
        self._check_cap(to_push)
        if top:
            self._check_expected(to_push.digest)
        if self.dst.wants_manifest_first:
            await self._put(to_push, tag, top=top)
        if not self._same_repo:
            lineage = (*ancestors, desc.digest)
            async with anyio.create_task_group() as tg:
                for child in self._children(manifest):
                    if manifest.is_index:
                        tg.start_soon(self._child_manifest, child, lineage)
                    else:
                        tg.start_soon(self._blobs.blob, child)
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

    def _check_expected(self, digest: Digest) -> None:
        """A destination that names a digest gets that digest, or nothing."""
        if self._expect is not None and digest != self._expect:
            raise DigestMismatchError(
                f"{self.dst.key}@{self._expect}: the destination names {self._expect} but the"
                f" image copied is {digest}; nothing was copied",
                expected=str(self._expect),
                actual=str(digest),
            )

    def _check_cap(self, manifest: Manifest) -> None:
        """Refuse a manifest the target cannot take before any of its content moves."""
        if isinstance(self.dst, PushCap) and manifest.size > self.dst.max_manifest_push:
            raise ManifestError(
                f"manifest {manifest.digest} is {manifest.size} bytes; {self.dst.key} accepts"
                f" at most {self.dst.max_manifest_push} (nothing was copied for it)"
            )

    async def _put(self, manifest: Manifest, tag: str | None, *, top: bool) -> None:
        digest = str(manifest.digest)
        self.job.check_running()
        async with self.job.slots.hold(self.dst.host):
            self._emit(
                Event(EventKind.STARTED, "manifest", digest, self.dst.key, size=manifest.size)
            )
            try:
                await self.dst.manifest_put(manifest, tag, child=not top or self.options.child)
            except BaseException as exc:
                self._emit(
                    Event(EventKind.FAILED, "manifest", digest, self.dst.key, error=reason(exc))
                )
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
