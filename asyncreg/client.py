"""`Client`: the entry point of the Python API.

One client owns one HTTP transport (one connection pool, one token cache)
and one set of limits. ``await client.copy(src, dst)`` runs a single job;
``copy_many`` runs many copies as one job sharing slots and single-flight
tables, fail-fast or keep-going.

Use it as an async context manager so connections are closed::

    async with Client() as client:
        result = await client.copy("localhost:5000/app:1", "localhost:5001/app:1")
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

import anyio

from .auth.credentials import Credential, CredentialProvider, default_credentials
from .config import HostConfig, Limits
from .engine.copy import Copier
from .engine.failures import most_useful
from .engine.job import Job
from .engine.limits import Slots
from .engine.progress import Event, Progress
from .errors import AsyncregError
from .options import CopyOptions, CopyResult
from .platform import Platform
from .reference import LayoutReference, Reference, parse_location
from .registry.http import Transport
from .registry.repo import RegistryRepo
from .store import Repo

# The file stores (layout, tar reader and writer) are imported where they are
# used: a registry-to-registry copy, the common case, does not pay for them.

__all__ = ["Client", "CopyOutcome"]

Location = str | Reference | LayoutReference


@dataclass(frozen=True, slots=True)
class CopyOutcome:
    """One item of `Client.copy_many` in keep-going mode: a result or an error."""

    source: str
    target: str
    result: CopyResult | None = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        """True when the copy succeeded."""
        return self.error is None


class Client:
    """Moves images between registries (and, as they land, layouts and tars)."""

    def __init__(
        self,
        *,
        limits: Limits | None = None,
        hosts: Mapping[str, HostConfig] | None = None,
        credentials: Mapping[str, Credential] | CredentialProvider | None = None,
    ) -> None:
        self.limits = limits or Limits()
        self._hosts = dict(hosts or {})
        if credentials is None or isinstance(credentials, Mapping):
            provider = default_credentials(credentials)
        else:
            provider = credentials
        self.transport = Transport(self.limits, provider, self._hosts)
        per_host = {h: c.per_host for h, c in self._hosts.items() if c.per_host}
        self._slots = Slots(self.limits, per_host)
        self._jobs: weakref.WeakSet[Job] = weakref.WeakSet()
        self._stopping = False

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close connections."""
        await self.transport.aclose()

    def stop(self) -> None:
        """Stop gracefully: no transfer starts from now on, those in flight end.

        Blobs already sending their one PUT finish (a registry cannot cancel a
        monolithic upload that broke off); chunked uploads stop at the next
        chunk boundary and their sessions are DELETEd; nothing is retried.
        Each running call then raises `Interrupted`. Cancel the calls'
        tasks to abandon what is in flight instead.
        """
        self._stopping = True
        for job in list(self._jobs):
            job.stop()

    @property
    def stopping(self) -> bool:
        """Whether `stop` was called."""
        return self._stopping

    # --- stores -----------------------------------------------------------

    def repo(self, location: Location) -> Repo:
        """The `Repo` a reference lives in."""
        ref = parse_location(location) if isinstance(location, str) else location
        if isinstance(ref, Reference):
            return RegistryRepo(self.transport, ref)
        from .layout.store import LayoutRepo

        return LayoutRepo(ref.path, max_manifest_size=self.limits.max_manifest_size)

    async def catalog(self, host: str, *, page_size: int | None = None) -> list[str]:
        """Every repository name the registry ``host`` lists (paged ``/v2/_catalog``).

        ``page_size`` asks for pages of that many names (``?n=``); the pages
        are followed through their ``Link`` headers either way.
        """
        from .auth.scope import Scope
        from .registry.paging import paged_list

        scope = Scope("registry", "catalog", frozenset({"*"}))
        return await paged_list(
            self.transport,
            host,
            "/v2/_catalog" + (f"?n={page_size}" if page_size else ""),
            "repositories",
            (scope,),
            f"catalog of {host}",
        )

    # --- copy -------------------------------------------------------------

    async def copy(
        self,
        src: Location,
        dst: Location,
        options: CopyOptions | None = None,
        *,
        on_event: Callable[[Event], None] | None = None,
        progress: Progress | None = None,
    ) -> CopyResult:
        """Copy one image (or index, with everything under it) from ``src`` to ``dst``.

        Raises the most useful underlying error (not a cancellation) on failure;
        nothing is tagged at the target unless everything it references is there.
        """
        job = self._job(progress, on_event)
        try:
            return await self._copy_one(job, src, dst, options or CopyOptions())
        except BaseExceptionGroup as group:
            raise most_useful(group) from group

    async def copy_many(
        self,
        pairs: Iterable[tuple[Location, Location] | tuple[Location, Location, CopyOptions]],
        options: CopyOptions | None = None,
        *,
        keep_going: bool = False,
        on_event: Callable[[Event], None] | None = None,
        progress: Progress | None = None,
    ) -> list[CopyOutcome]:
        """Copy many images as one job sharing limits and single-flight tables.

        A pair may carry its own `CopyOptions` as a third element; the others
        use ``options``. Fail-fast (default) cancels everything at the first
        failure and raises it; ``keep_going`` finishes every other copy and
        reports each outcome, in the order given.
        """
        job = self._job(progress, on_event)
        default = options or CopyOptions()
        items = [(p[0], p[1], p[2] if len(p) == 3 else default) for p in pairs]
        outcomes: list[CopyOutcome | None] = [None] * len(items)

        async def one(i: int, src: Location, dst: Location, opts: CopyOptions) -> None:
            try:
                result = await self._copy_one(job, src, dst, opts)
            except (AsyncregError, BaseExceptionGroup, OSError) as exc:
                if not keep_going:
                    raise
                err = most_useful(exc) if isinstance(exc, BaseExceptionGroup) else exc
                outcomes[i] = CopyOutcome(str(src), str(dst), error=err)
                return
            outcomes[i] = CopyOutcome(str(src), str(dst), result=result)

        try:
            async with anyio.create_task_group() as tg:
                for i, (src, dst, opts) in enumerate(items):
                    tg.start_soon(one, i, src, dst, opts)
        except BaseExceptionGroup as group:
            raise most_useful(group) from group
        return [o for o in outcomes if o is not None]

    async def export(
        self,
        refs: Sequence[Location],
        dest: str | Path,
        *,
        platform: str | None = None,
        compression: Literal["gzip", "zstd"] | None = None,
        options: CopyOptions | None = None,
        on_event: Callable[[Event], None] | None = None,
        progress: Progress | None = None,
    ) -> list[CopyResult]:
        """Write ``refs`` into one tar at ``dest`` (``"-"``: stdout).

        The tar is an OCI layout (every image, indexes whole) and ``docker
        load``-able (``manifest.json`` holds the ``platform`` image of each
        index; default: this machine's platform). Blobs shared by several
        images are stored once. The file appears under ``dest`` only when
        complete.
        """
        from .export.tarwriter import TarWriterRepo
        from .ops.exporting import export_images

        writer = TarWriterRepo(
            dest,
            platform=Platform.parse(platform) if platform else None,
            compression=compression,
            memory_budget=self.limits.spool_memory,
        )
        job = self._job(progress, on_event)
        return await export_images(job, self.repo, writer, refs, options or CopyOptions())

    async def import_(
        self,
        src: str | Path,
        dst: Location,
        *,
        name: str | None = None,
        all_images: bool = False,
        compress: bool = True,
        options: CopyOptions | None = None,
        on_event: Callable[[Event], None] | None = None,
        progress: Progress | None = None,
    ) -> list[CopyResult]:
        """Push the image(s) of the tar ``src`` (``"-"``: stdin) to the repository ``dst``.

        Accepts OCI layout tars (ours, skopeo's ``oci-archive``, Docker 25+
        ``docker save``) and legacy ``docker save`` tars, gzip-compressed or
        not. A tar with one image needs no ``name``; otherwise pick one by
        ``name`` (a tag or full name), or import every named image with
        ``all_images`` (each keeps its tag). Legacy layers are gzip-compressed
        in worker threads unless ``compress=False``. Content is pushed before the
        manifests that reference it; a hostile or malformed tar is refused
        before anything is tagged.
        """
        from .ops.importing import import_images, import_stream, open_source, select_images

        dst_ref = parse_location(dst) if isinstance(dst, str) else dst
        job = self._job(progress, on_event)
        target = self.repo(dst_ref)
        opts = options or CopyOptions()
        if str(src) == "-":
            return await import_stream(
                job,
                target,
                name=name,
                all_images=all_images,
                tag=dst_ref.tag,
                compress=compress,
                max_manifest=self.limits.max_manifest_push,
                options=opts,
            )
        async with open_source(src, compress=compress) as tar:
            todo = await select_images(tar, src, name=name, all_images=all_images)
            return await import_images(
                job, tar, target, todo, tag=dst_ref.tag, keep_names=all_images, options=opts
            )

    def _job(self, progress: Progress | None, on_event: Callable[[Event], None] | None) -> Job:
        job = Job(self._slots, progress or Progress(), retry=self.limits.retry)
        job.stopping = self._stopping
        self._jobs.add(job)
        if on_event is not None:
            job.progress.subscribe(on_event)
        return job

    async def _copy_one(
        self, job: Job, src: Location, dst: Location, options: CopyOptions
    ) -> CopyResult:
        src_ref = parse_location(src) if isinstance(src, str) else src
        dst_ref = parse_location(dst) if isinstance(dst, str) else dst
        src_repo, dst_repo = self.repo(src_ref), self.repo(dst_ref)
        src_reference = src_ref.reference
        dst_tag = dst_ref.tag
        if dst_tag is None and dst_ref.digest is None:
            dst_tag = src_ref.tag or ("latest" if src_ref.digest is None else None)
        copier = Copier(job, src_repo, dst_repo, options)
        return await copier.copy(src_reference, dst_tag, expect=dst_ref.digest)
