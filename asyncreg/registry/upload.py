"""Blob uploads: the distribution spec's POST-then-PUT, with a chunked fallback.

One attempt (`upload_once`) is two requests: ``POST /v2/<name>/blobs/uploads/``
opens a session (distribution-spec end-4a), then one streaming ``PUT
<location>?digest=...`` with a known ``Content-Length`` sends the whole blob
(end-6; the source stream is consumed once, never buffered whole). In
chunked mode (a host configured for it, or after a registry refused the
monolithic form with 405/413/501) the body goes as ``PATCH`` chunks of bounded
size (end-5; at least the registry's ``OCI-Chunk-Min-Length``), each sent to
the newest ``Location``, then a closing ``PUT``. A failed session is cancelled
with ``DELETE``, using the newest
``Location``.

Retrying is not done here: the caller's `Budget` covers every attempt of a
blob (see `budget.run_attempts`), and the requests made here spend from it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from urllib.parse import urlencode, urljoin

import aiohttp
import anyio

from ..budget import Budget
from ..errors import AsyncregError, DigestMismatchError, Interrupted, RegistryError
from ..manifest import Descriptor
from ..store import BlobSource, BlobStream
from ..tally import Tally, note
from .endpoint import Endpoint

__all__ = ["Upload", "refused_digest", "upload_once"]


class Upload:
    """One upload session of one blob to one repository."""

    def __init__(self, ep: Endpoint, desc: Descriptor, location: str, min_chunk: int) -> None:
        self.ep = ep
        self.desc = desc
        self.location = location
        self.min_chunk = min_chunk
        self.what = f"upload {desc.digest} to {ep.name}"

    @classmethod
    async def start(cls, ep: Endpoint, desc: Descriptor, budget: Budget | None = None) -> Upload:
        """``POST`` a new upload session and remember its ``Location``.

        The POST is shielded from cancellation: a job cancelled while it is in
        flight still learns the session's location, so the caller's cleanup
        can DELETE it instead of leaving it open on the registry.
        """
        with anyio.CancelScope(shield=True):
            resp = await ep.transport.request(
                "POST",
                ep.host,
                f"/v2/{ep.name}/blobs/uploads/",
                scopes=ep.push_scopes,
                headers={"Content-Length": "0"},
                data=b"",
                ok=(202,),
                what=f"start upload of {desc.digest} to {ep.name}",
                budget=budget,
            )
            async with resp:
                location = _location(resp.headers.get("Location"), resp.url.human_repr())
                min_chunk = _int(resp.headers.get("OCI-Chunk-Min-Length"))
        return cls(ep, desc, location, min_chunk)

    def _url(self, **params: str) -> str:
        sep = "&" if "?" in self.location else "?"
        return self.location + (sep + urlencode(params) if params else "")

    async def put_monolithic(self, stream: BlobStream) -> None:
        """One streaming ``PUT`` of the whole blob (end-6); never replayed here.

        When reading the source failed (a download that gave up, a digest
        mismatch) aiohttp reports only that it "can not write request body":
        the source's own error is raised instead, since it is what happened.
        """
        body = _Body(stream)
        try:
            resp = await self._put_body(body)
        except AsyncregError:
            if body.failure is not None:
                raise body.failure from None
            raise
        resp.release()

    async def _put_body(self, body: _Body) -> aiohttp.ClientResponse:
        return await self.ep.transport.request(
            "PUT",
            self.ep.host,
            self._url(digest=str(self.desc.digest)),
            scopes=self.ep.push_scopes,
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Length": str(self.desc.size),
            },
            data=body.chunks(),
            ok=(201, 204),
            what=self.what,
        )

    async def put_chunked(
        self,
        stream: BlobStream,
        chunk_size: int,
        budget: Budget | None = None,
        *,
        stop: Callable[[], bool] = lambda: False,
    ) -> None:
        """``PATCH`` bounded chunks (end-5), then the closing ``PUT`` (end-6).

        ``stop`` is asked at every chunk boundary: when it says so (the job is
        being interrupted) the upload ends there, and the caller DELETEs the
        session with its newest ``Location``, which a registry can honour.
        """
        size = max(chunk_size, self.min_chunk)
        offset = 0
        buf = bytearray()

        async def flush() -> None:
            nonlocal offset
            if stop():
                raise Interrupted(f"{self.what}: stopped at byte {offset}, the job is stopping")
            data = bytes(buf)
            buf.clear()
            resp = await self.ep.transport.request(
                "PATCH",
                self.ep.host,
                self.location,
                scopes=self.ep.push_scopes,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(len(data)),
                    "Content-Range": f"{offset}-{offset + len(data) - 1}",
                },
                data=data,
                ok=(202,),
                what=self.what,
                budget=budget,
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
        resp = await self.ep.transport.request(
            "PUT",
            self.ep.host,
            self._url(digest=str(self.desc.digest)),
            scopes=self.ep.push_scopes,
            headers={"Content-Length": "0"},
            data=b"",
            ok=(201, 204),
            what=self.what,
            budget=budget,
        )
        resp.release()

    async def cancel(self) -> bool:
        """``DELETE`` the session (end-11's cancel) so the registry can drop partial data.

        Best effort: False (and counted as unclean) when the registry would
        not cancel it, as distribution answers 404 for a session whose
        monolithic PUT broke off; it purges such sessions itself, later.
        """
        try:
            resp = await self.ep.transport.request(
                "DELETE",
                self.ep.host,
                self.location,
                scopes=self.ep.push_scopes,
                ok=(200, 202, 204, 404),
                what=f"cancel {self.what}",
            )
            resp.release()
            cleaned = resp.status != 404
        except AsyncregError:
            cleaned = False
        if not cleaned:
            note(Tally.UNCLEAN, self.location)
        return cleaned


def refused_digest(
    ep: Endpoint, desc: Descriptor, err: RegistryError
) -> DigestMismatchError | None:
    """The integrity error for a registry that refused the bytes sent, or None."""
    if "DIGEST_INVALID" in err.codes or "SIZE_INVALID" in err.codes:
        return DigestMismatchError(
            f"{ep.name}: the registry refused {desc.digest}: the bytes sent do not"
            f" match the digest or size ({', '.join(err.codes)})",
            expected=str(desc.digest),
        )
    return None


async def upload_once(
    ep: Endpoint,
    desc: Descriptor,
    source: BlobSource,
    *,
    budget: Budget,
    chunked: bool,
) -> None:
    """One attempt: open a session, send ``source``'s bytes, or DELETE the session."""
    upload: Upload | None = await Upload.start(ep, desc, budget)
    stream: BlobStream | None = None
    try:
        assert upload is not None
        stream = await source()
        if chunked:
            limits = ep.transport.limits
            await upload.put_chunked(stream, limits.upload_chunk_size, budget, stop=budget.stopping)
        else:
            await upload.put_monolithic(stream)
        upload = None  # accepted: nothing to cancel
    except RegistryError as exc:
        refused = refused_digest(ep, desc, exc)
        if refused is None:
            raise
        raise refused from exc
    finally:
        with anyio.CancelScope(shield=True):
            if upload is not None:
                await upload.cancel()
            if stream is not None:
                await stream.aclose()


class _Body:
    """A request body read from a blob stream, remembering why the stream failed."""

    def __init__(self, stream: BlobStream) -> None:
        self._stream = stream
        self.failure: AsyncregError | None = None

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._stream:
                yield chunk
        except AsyncregError as exc:
            self.failure = exc
            raise


def _location(value: str | None, base: str) -> str:
    if not value:
        raise RegistryError(f"registry gave no Location for the upload ({base})")
    return urljoin(base, value)


def _int(value: str | None) -> int:
    try:
        return max(0, int(value or 0))
    except ValueError:
        return 0
