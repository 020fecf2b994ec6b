"""`LayoutRepo`: an OCI image layout directory (``ocidir://PATH``) as a `Repo`.

The layout is ``oci-layout``, ``index.json`` (tags are the
``org.opencontainers.image.ref.name`` annotations of its entries) and
``blobs/<alg>/<hex>``. Writes are atomic: a blob is streamed to a temporary
file in its final directory, hashed and counted on the way, and renamed to its
digest only when both match; ``index.json`` is replaced atomically under a
lock (see `indexfile`). So a reader never sees a blob name whose bytes are
wrong, nor an index entry whose manifest is not fully there.

Referrers use the tag schema (``sha256-<hex>`` entries), as a layout has no API.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiofiles
import anyio

from ..archive.tarindex import FileRange
from ..budget import Budget
from ..config import MIB
from ..destination import TEMP_PREFIX, sweep_stale
from ..digest import Digest, Verifier, digest_in
from ..errors import ManifestError, NotFoundError, SizeMismatchError
from ..manifest import Descriptor, Manifest
from ..referrers import fallback_add, fallback_list
from ..store import BlobSource, DirectSource
from .indexfile import REF_NAME, entry_name, read_index, update_index

__all__ = ["LayoutRepo"]

_CHUNK = MIB


class LayoutRepo:
    """An OCI layout directory, read and written in place."""

    wants_manifest_first = False
    verifies_blobs = True  # it hashes every byte it writes

    def __init__(self, path: str | Path, *, max_manifest_size: int = 8 * MIB) -> None:
        self.root = Path(os.path.abspath(path))
        self._max_manifest = max_manifest_size
        self._fallback_lock = anyio.Lock()
        self._swept: set[Path] = set()

    @property
    def key(self) -> str:
        """``ocidir:ABSOLUTE_PATH``."""
        return f"ocidir:{self.root}"

    @property
    def host(self) -> str:
        """Layouts count against a limit bucket of their own."""
        return self.key

    def blob_path(self, digest: Digest) -> Path:
        """Where the blob named ``digest`` lives."""
        return self.root / "blobs" / digest.algorithm / digest.hex

    # --- manifests --------------------------------------------------------

    async def manifest_head(self, reference: str | Digest) -> Descriptor | None:
        """Descriptor of a tag (from ``index.json``) or of a manifest blob by digest."""
        digest = digest_in(reference)
        if digest is None:
            for entry in (await anyio.to_thread.run_sync(read_index, self.root)).manifests:
                if entry_name(entry) == str(reference):
                    return entry
            return None
        if not await anyio.Path(self.blob_path(digest)).is_file():
            return None
        try:
            return (await self.manifest_get(digest)).descriptor()
        except NotFoundError:
            return None

    async def manifest_get(self, reference: str | Digest) -> Manifest:
        """The manifest's bytes from its blob, verified against its digest."""
        desc = None
        digest = digest_in(reference)
        if digest is None:
            desc = await self.manifest_head(reference)
            if desc is None:
                raise NotFoundError(f"{self.key}: no manifest tagged {reference!r}", status=404)
            digest = desc.digest
        path = self.blob_path(digest)
        try:
            async with aiofiles.open(path, "rb") as f:
                raw = await f.read(self._max_manifest + 1)
        except FileNotFoundError as exc:
            raise NotFoundError(f"{self.key}: manifest {digest} not found", status=404) from exc
        if len(raw) > self._max_manifest:
            raise ManifestError(f"{path}: manifest larger than {self._max_manifest} bytes")
        return Manifest.parse(
            raw,
            desc.media_type if desc is not None else None,
            digest=digest,
            max_size=self._max_manifest,
        )

    async def manifest_put(
        self, manifest: Manifest, tag: str | None = None, *, child: bool = False
    ) -> None:
        """Write the manifest blob, then record it in ``index.json`` (tagged or top-level)."""
        await self._write_bytes(manifest.digest, manifest.raw)
        if tag is not None or not child:
            entry = manifest.descriptor(annotations={REF_NAME: tag} if tag else None)

            def change(entries: list[Descriptor]) -> list[Descriptor] | None:
                if tag is None:
                    if any(e.digest == entry.digest and entry_name(e) is None for e in entries):
                        return None
                    return [*entries, entry]
                kept = [e for e in entries if entry_name(e) != tag]
                return [*kept, entry]

            await update_index(self.root, change)
        if manifest.subject is not None:
            async with self._fallback_lock:
                await fallback_add(self, manifest)

    # --- blobs ------------------------------------------------------------

    async def blob_head(self, digest: Digest) -> int | None:
        """Size of the blob file, or None."""
        try:
            return (await anyio.Path(self.blob_path(digest)).stat()).st_size
        except FileNotFoundError:
            return None

    async def blob_open(
        self, desc: Descriptor, *, verify: bool = True, budget: Budget | None = None
    ) -> FileRange:
        """Stream the blob file, checking its size (and digest with ``verify``)."""
        path = self.blob_path(desc.digest)
        if not await anyio.Path(path).is_file():
            raise NotFoundError(f"{self.key}: blob {desc.digest} not found", status=404)
        checker = Verifier(desc.digest, desc.size, what=f"blob {path}", hashing=verify)
        return FileRange(path, 0, desc.size, verifier=checker, what=f"blob {path}")

    async def blob_put(
        self,
        desc: Descriptor,
        source: BlobSource,
        *,
        budget: Budget | None = None,
        chunked: bool = False,
    ) -> None:
        """Stream into a temporary file, verify, then rename to the digest."""
        final = self.blob_path(desc.digest)
        if await anyio.Path(final).is_file():
            return
        stream = await source()
        try:
            await self._write_stream(final, desc, stream)
        finally:
            await stream.aclose()

    async def _write_stream(
        self, final: Path, desc: Descriptor, chunks: AsyncIterable[bytes]
    ) -> None:
        async def write(tmp: Path, verifier: Verifier) -> None:
            async with aiofiles.open(tmp, "wb") as f:
                async for chunk in chunks:
                    verifier.update(chunk)
                    await f.write(chunk)

        await self._atomic(final, desc, write)

    async def _atomic(
        self,
        final: Path,
        desc: Descriptor,
        write: Callable[[Path, Verifier], Awaitable[None]],
    ) -> None:
        """Write to a temporary name in the blob's directory; rename once verified."""
        await anyio.Path(final.parent).mkdir(parents=True, exist_ok=True)
        if final.parent not in self._swept:
            # Leftovers of a run that was killed mid-blob (their PID is gone).
            self._swept.add(final.parent)
            await anyio.to_thread.run_sync(sweep_stale, str(final.parent))
        tmp = final.parent / f"{TEMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex}"
        verifier = Verifier(desc.digest, desc.size, what=f"blob {desc.digest}")
        try:
            await write(tmp, verifier)
            verifier.finish()
            await anyio.to_thread.run_sync(os.replace, tmp, final)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await anyio.Path(tmp).unlink(missing_ok=True)
            raise

    async def relay_blob(
        self,
        desc: Descriptor,
        source: object,
        on_bytes: Callable[[int], None],
        budget: Budget,
    ) -> bool:
        """Let a source that can (a plain-HTTP registry) write the blob file directly.

        It receives, hashes and writes in a worker thread; the file still gets
        its digest name only once verified. False when the source can only stream.
        """
        if not isinstance(source, DirectSource):
            return False
        final = self.blob_path(desc.digest)
        if await anyio.Path(final).is_file():
            return True
        fetch = await source.open_direct(desc, budget)
        if fetch is None:
            return False

        async def write(tmp: Path, verifier: Verifier) -> None:
            fd = await anyio.to_thread.run_sync(
                lambda: os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            )
            try:
                await fetch.write_to(fd, 0, verifier, on_bytes)
            finally:
                await anyio.to_thread.run_sync(os.close, fd)

        await self._atomic(final, desc, write)
        return True

    async def _write_bytes(self, digest: Digest, data: bytes) -> None:
        final = self.blob_path(digest)
        if await anyio.Path(final).is_file():
            return
        desc = Descriptor("application/octet-stream", digest, len(data))

        async def one() -> AsyncIterator[bytes]:
            yield data

        await self._write_stream(final, desc, one())

    async def blob_file(self, desc: Descriptor) -> tuple[str, int] | None:
        """The blob file, for a target that can send it without reading it (``sendfile``)."""
        path = self.blob_path(desc.digest)
        size = await self.blob_head(desc.digest)
        if size is None:
            raise NotFoundError(f"{self.key}: blob {desc.digest} not found", status=404)
        if size != desc.size:
            raise SizeMismatchError(
                f"{path}: {size} bytes, the descriptor says {desc.size}",
                expected=desc.size,
                actual=size,
            )
        return str(path), 0

    async def mount_blob(self, desc: Descriptor, source: object) -> bool:
        """Layouts do not mount."""
        del desc, source
        return False

    # --- tags and referrers ------------------------------------------------

    async def tags(self) -> list[str]:
        """Names of the entries of ``index.json``."""
        index = await anyio.to_thread.run_sync(read_index, self.root)
        return [n for n in (entry_name(e) for e in index.manifests) if n is not None]

    async def referrers(self, digest: Digest) -> list[Descriptor]:
        """Referrers of ``digest`` per the tag schema."""
        return await fallback_list(self, digest)
