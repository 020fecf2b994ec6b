"""The blob pipeline: one policy for every blob, whichever mover carries its bytes.

Every operation (copy, export, import from a file or from stdin, mirror)
moves blobs through `BlobPipeline`, in this order:

1. HEAD the target: a blob already there is skipped;
2. a cross-repository mount from any repo of the target's registry known to
   hold the blob (any refusal falls through to an upload);
3. single-flight per (target host, digest): a blob bound for two repos of one
   registry is uploaded once and mounted into the other;
4. the transfer, holding one global slot and one slot on each host until the
   last byte is acknowledged, under one `Budget` for every retry, resume and
   restart of this blob, with the chunked fallback of `budget.run_attempts`;
5. in each attempt, the movers in order: the target's own way of taking the
   bytes from this source without a Python stream (`store.BlobRelay`: splice,
   sendfile, the worker-thread fetch), else the aiohttp stream. A mover that
   cannot do a case steps aside before writing anything.

The movers only move bytes and report how many; the policy (what is
retried, how long to wait, when to give up, how a refusal falls back, what is
counted) is here and in `budget`, once. Bytes are counted once per blob: a
restarted attempt reports only bytes beyond what earlier attempts reached.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from ..budget import Budget, run_attempts
from ..digest import Digest
from ..manifest import Descriptor
from ..store import BlobRelay, BlobStream, Repo
from .job import Job
from .progress import Event, EventKind, reason

__all__ = ["BlobPipeline"]


class _Meter:
    """Counts a blob's bytes once across attempts (a high-water mark)."""

    def __init__(self, emit: Callable[[Event], None], digest: str, target: str) -> None:
        self._emit = emit
        self._digest = digest
        self._target = target
        self._high = 0
        self._pos = 0

    def restart(self) -> None:
        """A new attempt starts from byte 0."""
        self._pos = 0

    def add(self, n: int) -> None:
        """``n`` more bytes reached the target in this attempt."""
        self._pos += n
        if self._pos > self._high:
            self._emit(
                Event(
                    EventKind.BYTES,
                    "blob",
                    self._digest,
                    self._target,
                    amount=self._pos - self._high,
                )
            )
            self._high = self._pos


class _MeteredStream:
    """Passes a blob stream through, telling the meter about each chunk."""

    def __init__(self, inner: BlobStream, meter: _Meter) -> None:
        self._inner = inner
        self.size = inner.size
        self._meter = meter

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        add = self._meter.add
        async for chunk in self._inner:
            add(len(chunk))
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class BlobPipeline:
    """Moves blobs from ``src`` to ``dst`` within ``job`` (one per `Copier`)."""

    def __init__(self, job: Job, src: Repo, dst: Repo, emit: Callable[[Event], None]) -> None:
        self.job = job
        self.src = src
        self.dst = dst
        self._emit = emit

    async def blob(self, desc: Descriptor) -> None:
        """Make ``desc`` present in the target, moving it at most once per job."""
        self._emit(Event(EventKind.QUEUED, "blob", str(desc.digest), self.dst.key, size=desc.size))
        await self.job.blobs.do(f"{self.dst.key}@{desc.digest}", lambda: self._place(desc))

    async def _place(self, desc: Descriptor) -> None:
        digest = str(desc.digest)
        async with self.job.slots.hold(self.dst.host):
            present = await self.dst.blob_head(desc.digest)
        if present is not None:
            self.job.holds(self.dst, desc.digest)
            self._emit(Event(EventKind.SKIPPED, "blob", digest, self.dst.key, size=desc.size))
            return
        if await self._try_mounts(desc):
            return
        _, ran = await self.job.uploads.do(
            f"{self.dst.host}@{desc.digest}", lambda: self._transfer(desc)
        )
        if ran:
            return
        # Another copy of this job put the blob into a sibling repo: mount from there.
        if not await self._try_mounts(desc):
            await self._transfer(desc)

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

    def _mount_sources(self, digest: Digest) -> list[Repo]:
        out: list[Repo] = []
        if self.src.host == self.dst.host:
            out.append(self.src)
        for repo in self.job.holders.get((self.dst.host, digest), []):
            if repo.key not in (self.dst.key, *(r.key for r in out)):
                out.append(repo)
        return out

    async def _transfer(self, desc: Descriptor) -> None:
        """Move the bytes: slots held throughout, one budget for every attempt."""
        digest = str(desc.digest)
        target = self.dst.key
        job = self.job
        job.check_running()
        meter = _Meter(self._emit, digest, target)
        budget = Budget(job.retry, stopping=job.is_stopping)
        verify = not self.dst.verifies_blobs

        async def source() -> BlobStream:
            inner = await self.src.blob_open(desc, verify=verify, budget=budget)
            return _MeteredStream(inner, meter)

        async def attempt(chunked: bool) -> None:
            meter.restart()
            if not chunked and isinstance(self.dst, BlobRelay):
                # False means nothing was written: stream it instead.
                if await self.dst.relay_blob(desc, self.src, meter.add, budget):
                    return
                meter.restart()
            await self.dst.blob_put(desc, source, budget=budget, chunked=chunked)

        async with job.slots.hold(self.src.host, self.dst.host):
            job.check_running()  # the job may have been told to stop while we waited
            self._emit(Event(EventKind.STARTED, "blob", digest, target, size=desc.size))
            try:
                await run_attempts(budget, attempt)
            except BaseException as exc:
                self._emit(Event(EventKind.FAILED, "blob", digest, target, error=reason(exc)))
                raise
        job.holds(self.dst, desc.digest)
        self._emit(Event(EventKind.DONE, "blob", digest, target, size=desc.size))
