"""Blob uploads: the distribution spec's POST-then-PUT, with a chunked fallback.

The fast path is two requests: ``POST /v2/<name>/blobs/uploads/`` opens a
session, then one streaming ``PUT <location>?digest=...`` with a known
``Content-Length`` sends the whole blob (the source stream is consumed once,
never buffered whole). A registry that refuses the monolithic form (405, 413,
501), or a host configured for it, gets ``PATCH`` chunks of bounded size
(at least its ``OCI-Chunk-Min-Length``), each sent to the newest ``Location``,
then a closing ``PUT``. A failed session is cancelled with ``DELETE``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING
from urllib.parse import urlencode, urljoin

import anyio

from ..errors import AsyncregError, DigestMismatchError, RegistryError
from ..manifest import Descriptor
from ..store import BlobSource, BlobStream

if TYPE_CHECKING:
    from .repo import RegistryRepo

__all__ = ["REFUSED_MONOLITHIC", "Upload"]

#: Statuses with which a registry says "not like that": try chunked instead.
REFUSED_MONOLITHIC = frozenset({405, 413, 501})


class Upload:
    """One upload session of one blob to one repository."""

    def __init__(self, repo: RegistryRepo, desc: Descriptor, location: str, min_chunk: int) -> None:
        self.repo = repo
        self.desc = desc
        self.location = location
        self.min_chunk = min_chunk
        self.what = f"upload {desc.digest} to {repo.name}"

    @classmethod
    async def start(cls, repo: RegistryRepo, desc: Descriptor) -> Upload:
        """``POST`` a new upload session and remember its ``Location``.

        The POST is shielded from cancellation: a job cancelled while it is in
        flight still learns the session's location, so the caller's cleanup
        can DELETE it instead of leaving it open on the registry.
        """
        with anyio.CancelScope(shield=True):
            resp = await repo.transport.request(
                "POST",
                repo.host,
                f"/v2/{repo.name}/blobs/uploads/",
                scopes=repo.push_scopes,
                headers={"Content-Length": "0"},
                data=b"",
                ok=(202,),
                what=f"start upload of {desc.digest} to {repo.name}",
            )
            async with resp:
                location = _location(resp.headers.get("Location"), resp.url.human_repr())
                min_chunk = _int(resp.headers.get("OCI-Chunk-Min-Length"))
        return cls(repo, desc, location, min_chunk)

    def _url(self, **params: str) -> str:
        sep = "&" if "?" in self.location else "?"
        return self.location + (sep + urlencode(params) if params else "")

    async def put_monolithic(self, stream: BlobStream) -> None:
        """One streaming ``PUT`` of the whole blob."""
        resp = await self.repo.transport.request(
            "PUT",
            self.repo.host,
            self._url(digest=str(self.desc.digest)),
            scopes=self.repo.push_scopes,
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Length": str(self.desc.size),
            },
            data=_iterate(stream),
            ok=(201, 204),
            what=self.what,
        )
        resp.release()

    async def put_chunked(self, stream: BlobStream, chunk_size: int) -> None:
        """``PATCH`` bounded chunks, then the closing ``PUT``."""
        size = max(chunk_size, self.min_chunk)
        offset = 0
        buf = bytearray()

        async def flush() -> None:
            nonlocal offset
            data = bytes(buf)
            buf.clear()
            resp = await self.repo.transport.request(
                "PATCH",
                self.repo.host,
                self.location,
                scopes=self.repo.push_scopes,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(len(data)),
                    "Content-Range": f"{offset}-{offset + len(data) - 1}",
                },
                data=data,
                ok=(202,),
                what=self.what,
            )
            async with resp:
                self.location = _location(resp.headers.get("Location"), self.location)
            offset += len(data)

        async for chunk in stream:
            buf += chunk
            while len(buf) >= size:
                rest = bytes(buf[size:])
                del buf[size:]
                await flush()
                buf += rest
        if buf:
            await flush()
        resp = await self.repo.transport.request(
            "PUT",
            self.repo.host,
            self._url(digest=str(self.desc.digest)),
            scopes=self.repo.push_scopes,
            headers={"Content-Length": "0"},
            data=b"",
            ok=(201, 204),
            what=self.what,
        )
        resp.release()

    async def cancel(self) -> None:
        """Best-effort ``DELETE`` of the session so the registry can drop partial data."""
        try:
            resp = await self.repo.transport.request(
                "DELETE",
                self.repo.host,
                self.location,
                scopes=self.repo.push_scopes,
                ok=(200, 202, 204, 404),
                what=f"cancel {self.what}",
            )
            resp.release()
        except AsyncregError:
            pass


async def upload_blob(repo: RegistryRepo, desc: Descriptor, source: BlobSource) -> None:
    """Upload ``desc`` from ``source``, re-opening the source for each retry."""
    chunked = repo.chunked_uploads
    attempts = repo.transport.limits.retry.attempts
    last: AsyncregError | None = None
    for _ in range(attempts):
        upload = await Upload.start(repo, desc)
        stream: BlobStream | None = None
        try:
            stream = await source()
            if chunked:
                await upload.put_chunked(stream, repo.transport.limits.upload_chunk_size)
            else:
                await upload.put_monolithic(stream)
            return
        except RegistryError as exc:
            await upload.cancel()
            if "DIGEST_INVALID" in exc.codes or "SIZE_INVALID" in exc.codes:
                raise DigestMismatchError(
                    f"{repo.name}: the registry refused {desc.digest}: the bytes sent do not"
                    f" match the digest or size ({', '.join(exc.codes)})",
                    expected=str(desc.digest),
                ) from exc
            if exc.status in REFUSED_MONOLITHIC and not chunked:
                chunked = True
            elif not (exc.retryable or exc.status == 401):
                raise
            last = exc
        except AsyncregError as exc:
            await upload.cancel()
            if not getattr(exc, "retryable", False):
                raise
            last = exc
        except BaseException:
            # Cancelled (a sibling failed) or interrupted: drop the session anyway.
            with anyio.CancelScope(shield=True):
                await upload.cancel()
            raise
        finally:
            if stream is not None:
                with anyio.CancelScope(shield=True):
                    await stream.aclose()
    assert last is not None
    raise last


async def _iterate(stream: BlobStream) -> AsyncIterator[bytes]:
    async for chunk in stream:
        yield chunk


def _location(value: str | None, base: str) -> str:
    if not value:
        raise RegistryError(f"registry gave no Location for the upload ({base})")
    return urljoin(base, value)


def _int(value: str | None) -> int:
    try:
        return max(0, int(value or 0))
    except ValueError:
        return 0
