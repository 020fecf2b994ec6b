"""A registry blob body as a verified, resumable stream of chunks.

The stream counts every byte against the declared size and refuses one byte
more; when asked it also hashes (a registry target hashes again on receipt, so
a registry-to-registry copy can leave the digest check to it). A connection
that breaks mid-body (or a body that ends short) is resumed with ``Range:
bytes=OFFSET-`` at the exact offset, each resume spending from the blob's
`Budget` (a resume after progress costs less than one without); a server that
ignores ``Range`` and sends the whole body again has its first OFFSET bytes
skipped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp

from ..budget import Budget
from ..digest import Digest, Verifier
from ..errors import RegistryError, TransportError
from .http import iter_body

__all__ = ["RegistryBlobStream"]

#: Re-requests the blob from byte ``offset`` (0 = whole blob), returning the response.
Reopen = Callable[[int], Awaitable[aiohttp.ClientResponse]]


class RegistryBlobStream:
    """Iterate once for the blob's chunks; `aclose` releases the connection."""

    def __init__(
        self,
        resp: aiohttp.ClientResponse,
        digest: Digest,
        size: int,
        reopen: Reopen,
        *,
        verify: bool,
        budget: Budget,
        what: str,
    ) -> None:
        self.size = size
        self._resp: aiohttp.ClientResponse | None = resp
        # One checker for every store's stream: counts always, hashes with ``verify``.
        self._verifier = Verifier(digest, size, what=what, hashing=verify)
        self._reopen = reopen
        self._budget = budget
        self._what = what
        self._offset = 0
        self.resumes = 0

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        try:
            skip = 0
            failed_at = 0  # offset of the last break: a resume past it made progress
            while True:
                resp = self._resp
                assert resp is not None
                try:
                    async for chunk in iter_body(resp, self._what):
                        if skip:
                            if len(chunk) <= skip:
                                skip -= len(chunk)
                                continue
                            chunk = chunk[skip:]
                            skip = 0
                        self._account(chunk)
                        yield chunk
                except TransportError as exc:
                    broke: TransportError = exc
                else:
                    if self.size < 0 or self._offset >= self.size:
                        break
                    broke = TransportError(
                        f"{self._what}: body ended after {self._offset} of {self.size} bytes"
                    )
                skip = await self._resume(broke, progressed=self._offset > failed_at)
                failed_at = self._offset
                self.resumes += 1
            self._verifier.finish()
        finally:
            await self.aclose()

    def _account(self, chunk: bytes) -> None:
        self._verifier.update(chunk)  # refuses a byte past the declared size
        self._offset += len(chunk)

    async def _resume(self, broke: TransportError, *, progressed: bool) -> int:
        """Spend from the budget, re-open at the offset; return leading bytes to skip."""
        if self._resp is not None:
            self._resp.release()
            self._resp = None
        await self._budget.spend(broke, progressed=progressed)
        resp = await self._reopen(self._offset)
        self._resp = resp
        if resp.status == 206:
            start = _content_range_start(resp.headers.get("Content-Range", ""))
            if start != self._offset:
                raise RegistryError(
                    f"{self._what}: resumed at byte {start}, asked for {self._offset}"
                )
            return 0
        return self._offset  # 200: the server ignored Range and sent everything

    async def aclose(self) -> None:
        """Release the connection (idempotent)."""
        if self._resp is not None:
            self._resp.release()
            self._resp = None


def _content_range_start(value: str) -> int:
    """First byte of ``Content-Range: bytes START-END/TOTAL``; -1 when malformed."""
    unit, _, rest = value.partition(" ")
    if unit.strip().lower() != "bytes":
        return -1
    first = rest.split("-", 1)[0].strip()
    return int(first) if first.isdigit() else -1
