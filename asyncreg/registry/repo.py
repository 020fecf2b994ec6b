"""`RegistryRepo`: one repository of one registry, as a `Repo`.

Manifests are fetched with an ``Accept`` that lists every OCI and Docker
manifest and index type (so an index is never refused or down-converted),
kept as exact bytes, verified against the digest asked for and against
``Docker-Content-Digest`` when the registry sends it, and pushed back
unchanged with their own media type.

Referrers: the OCI referrers API when the registry has it; otherwise the tag
schema fallback (``sha256-<hex>`` tags holding an index of referrers), which
this class also maintains when it pushes a manifest with a ``subject`` to a
registry that did not answer with ``OCI-Subject``.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlencode

import aiohttp
import anyio

from .. import mediatypes as mt
from ..auth.scope import Scope
from ..budget import Budget, run_attempts
from ..digest import Digest
from ..errors import (
    AuthError,
    DigestMismatchError,
    ManifestError,
    NotFoundError,
    RegistryError,
)
from ..manifest import Descriptor, Manifest
from ..reference import Reference
from ..referrers import fallback_add, fallback_list
from ..store import BlobSource, BlobStream, FileBlobSource
from .blobstream import RegistryBlobStream
from .endpoint import Endpoint
from .fetch import DirectFetch, open_direct
from .http import Transport, read_limited
from .paging import paged_list
from .rawhttp import StepAside
from .relay import relay_blob, send_file_blob
from .tlsrelay import tls_relay_blob
from .upload import Upload, upload_once

__all__ = ["RegistryRepo"]

ACCEPT = ", ".join(mt.MANIFEST_ACCEPT)


class RegistryRepo:
    """A registry repository spoken to over the distribution API."""

    wants_manifest_first = False
    verifies_blobs = True

    def __init__(self, transport: Transport, ref: Reference) -> None:
        self.transport = transport
        self.ref = ref
        self.name = ref.repository
        self._host = ref.api_host
        self.endpoint = Endpoint(transport, self._host, self.name)
        self.pull_scopes: tuple[Scope, ...] = self.endpoint.pull_scopes
        self.push_scopes: tuple[Scope, ...] = self.endpoint.push_scopes
        self._referrers_api: bool | None = None
        self._fallback_locks: dict[str, anyio.Lock] = {}

    @property
    def key(self) -> str:
        """``registry:HOST/NAME``."""
        return f"registry:{self.ref.registry}/{self.name}"

    @property
    def host(self) -> str:
        """The host name and port requests go to."""
        return self._host

    @property
    def chunked_uploads(self) -> bool:
        """Whether this host is configured to receive uploads in chunks."""
        return self.endpoint.chunked

    @property
    def max_manifest_push(self) -> int:
        """The largest manifest this registry is sent (distribution refuses over 4 MiB)."""
        return self.transport.limits.max_manifest_push

    def _limits_manifest(self) -> int:
        return self.transport.limits.max_manifest_size

    # --- manifests --------------------------------------------------------

    async def manifest_head(self, reference: str | Digest) -> Descriptor | None:
        """HEAD the manifest; None when the registry says 404."""
        ref = str(reference)
        resp = await self.transport.request(
            "HEAD",
            self._host,
            f"/v2/{self.name}/manifests/{ref}",
            scopes=self.pull_scopes,
            headers={"Accept": ACCEPT},
            ok=(200, 404),
            what=f"manifest {self.name}:{ref}",
        )
        async with resp:
            if resp.status == 404:
                return None
            header_digest = resp.headers.get("Docker-Content-Digest")
            media_type = mt.base(resp.headers.get("Content-Type", ""))
            size = resp.content_length
        if header_digest is None or size is None or not mt.is_manifest(media_type):
            # Some registries omit the digest on HEAD: fall back to a GET.
            try:
                return (await self.manifest_get(reference)).descriptor()
            except NotFoundError:
                return None
        digest = Digest.parse(header_digest)
        if isinstance(reference, Digest) and digest != reference:
            raise DigestMismatchError(
                f"manifest {self.name}@{reference}: registry reports digest {digest}",
                expected=str(reference),
                actual=str(digest),
            )
        return Descriptor(media_type, digest, size)

    async def manifest_get(self, reference: str | Digest) -> Manifest:
        """GET the manifest's exact bytes, verified."""
        ref = str(reference)
        what = f"manifest {self.name}:{ref}"
        resp = await self.transport.request(
            "GET",
            self._host,
            f"/v2/{self.name}/manifests/{ref}",
            scopes=self.pull_scopes,
            headers={"Accept": ACCEPT},
            what=what,
        )
        async with resp:
            raw = await read_limited(resp, self._limits_manifest(), what)
            content_type = resp.headers.get("Content-Type")
            header_digest = resp.headers.get("Docker-Content-Digest")
        expected = reference if isinstance(reference, Digest) else None
        manifest = Manifest.parse(
            raw, content_type, digest=expected, max_size=self._limits_manifest()
        )
        if header_digest is not None:
            try:
                claimed = Digest.parse(header_digest)
            except ValueError:
                claimed = None
            if (
                claimed is not None
                and claimed.algorithm == manifest.digest.algorithm
                and claimed != manifest.digest
            ):
                raise DigestMismatchError(
                    f"{what}: body hashes to {manifest.digest} but the registry says {claimed}",
                    expected=str(claimed),
                    actual=str(manifest.digest),
                )
        return manifest

    async def manifest_put(
        self, manifest: Manifest, tag: str | None = None, *, child: bool = False
    ) -> None:
        """PUT the raw bytes by tag (or by digest), maintaining the referrers fallback."""
        del child  # a registry keeps every manifest the same way
        cap = self.transport.limits.max_manifest_push
        if manifest.size > cap:
            raise ManifestError(
                f"manifest {manifest.digest} is {manifest.size} bytes; registries accept"
                f" at most {cap}"
            )
        ref = tag or str(manifest.digest)
        resp = await self.transport.request(
            "PUT",
            self._host,
            f"/v2/{self.name}/manifests/{ref}",
            scopes=self.push_scopes,
            headers={"Content-Type": manifest.media_type},
            data=manifest.raw,
            ok=(200, 201, 202, 204),
            what=f"push manifest {self.name}:{ref}",
        )
        async with resp:
            header_digest = resp.headers.get("Docker-Content-Digest")
            oci_subject = resp.headers.get("OCI-Subject")
        if header_digest is not None and header_digest != str(manifest.digest):
            raise DigestMismatchError(
                f"push manifest {self.name}:{ref}: registry stored {header_digest},"
                f" sent {manifest.digest}",
                expected=str(manifest.digest),
                actual=header_digest,
            )
        if manifest.subject is not None and oci_subject is None:
            await self._add_to_fallback(manifest)

    async def manifest_delete(self, digest: Digest) -> None:
        """DELETE a manifest by digest (the registry must have deletes enabled)."""
        resp = await self.transport.request(
            "DELETE",
            self._host,
            f"/v2/{self.name}/manifests/{digest}",
            scopes=(Scope("repository", self.name, frozenset({"delete", "pull", "push"})),),
            ok=(200, 202, 204),
            what=f"delete manifest {self.name}@{digest}",
        )
        resp.release()

    # --- blobs ------------------------------------------------------------

    async def blob_head(self, digest: Digest) -> int | None:
        """Size of the blob in this repository, or None."""
        resp = await self.transport.request(
            "HEAD",
            self._host,
            f"/v2/{self.name}/blobs/{digest}",
            scopes=self.pull_scopes,
            ok=(200, 404),
            what=f"blob {self.name}@{digest}",
        )
        async with resp:
            if resp.status == 404:
                return None
            return resp.content_length if resp.content_length is not None else -1

    async def blob_open(
        self, desc: Descriptor, *, verify: bool = True, budget: Budget | None = None
    ) -> BlobStream:
        """GET the blob as a size-checked (and, with ``verify``, hash-checked) stream.

        The GET and every resume after a broken connection spend from
        ``budget`` (distribution-spec end-2; resumes use ``Range``).
        """
        what = f"blob {self.name}@{desc.digest}"
        path = f"/v2/{self.name}/blobs/{desc.digest}"
        spend = budget if budget is not None else Budget(self.transport.limits.retry)

        async def reopen(offset: int) -> aiohttp.ClientResponse:
            headers = {"Range": f"bytes={offset}-"} if offset else {}
            return await self.transport.request(
                "GET",
                self._host,
                path,
                scopes=self.pull_scopes,
                headers=headers,
                ok=(200, 206),
                what=what,
                budget=spend,
            )

        resp = await reopen(0)
        length = resp.content_length
        if length is not None and length != desc.size:
            resp.release()
            raise RegistryError(
                f"{what}: registry announces {length} bytes, the descriptor says {desc.size}"
            )
        return RegistryBlobStream(
            resp, desc.digest, desc.size, reopen, verify=verify, budget=spend, what=what
        )

    async def blob_put(
        self,
        desc: Descriptor,
        source: BlobSource,
        *,
        budget: Budget | None = None,
        chunked: bool = False,
    ) -> None:
        """Upload the blob from ``source`` (POST then streaming PUT, or PATCH chunks).

        With a ``budget``, one attempt; without, attempts until the policy gives
        up, falling back to chunks when the registry refuses one PUT.
        """
        chunked = chunked or self.chunked_uploads
        if budget is not None:
            await upload_once(self.endpoint, desc, source, budget=budget, chunked=chunked)
            return
        own = Budget(self.transport.limits.retry)

        async def attempt(chunks: bool) -> None:
            await upload_once(self.endpoint, desc, source, budget=own, chunked=chunks)

        await run_attempts(own, attempt, chunked=chunked)

    async def relay_blob(
        self,
        desc: Descriptor,
        source: object,
        on_bytes: Callable[[int], None],
        budget: Budget,
    ) -> bool:
        """Move the blob without passing it through the event loop.

        Between plain-HTTP registries with ``splice``, from a file (a layout or
        tar) to a plain-HTTP registry with ``sendfile`` (see `relay`), and
        between registries where either speaks TLS in a worker thread (see
        `tlsrelay`). False, having uploaded
        nothing, when that cannot be done exactly; the caller then streams it.
        Any other failure is this attempt's, raised for the caller's policy.
        """
        if not self.transport.limits.zero_copy:
            return False
        try:
            if isinstance(source, RegistryRepo):
                if source.endpoint.plain_http and self.endpoint.plain_http:
                    await relay_blob(self.endpoint, source.endpoint, desc, on_bytes, budget)
                else:
                    await tls_relay_blob(self.endpoint, source.endpoint, desc, on_bytes, budget)
            elif isinstance(source, FileBlobSource):
                where = await source.blob_file(desc)
                if where is None:
                    return False
                await send_file_blob(self.endpoint, where[0], where[1], desc, on_bytes, budget)
            else:
                return False
        except StepAside:
            return False
        return True

    async def open_direct(self, desc: Descriptor, budget: Budget) -> DirectFetch | None:
        """Open the blob for a file writer's worker thread (plain HTTP only), or None."""
        return await open_direct(self.endpoint, desc, budget)

    async def mount_blob(self, desc: Descriptor, source: object) -> bool:
        """Cross-repository mount from another repository of the same registry.

        distribution-spec end-11: ``POST ...?mount=<digest>&from=<repo>`` answers
        201 when mounted. Any refusal is an ordinary "no", and the blob is
        uploaded instead: a 202 (an upload session we DELETE at once), and also
        401/403 (a token without ``pull`` on the other repository, which
        registries answer with ``insufficient_scope``) and 404.
        """
        if not isinstance(source, RegistryRepo) or source.host != self._host:
            return False
        if source.name == self.name:
            return False
        scopes = (*source.pull_scopes, *self.push_scopes)
        query = urlencode({"mount": str(desc.digest), "from": source.name})
        try:
            resp = await self.transport.request(
                "POST",
                self._host,
                f"/v2/{self.name}/blobs/uploads/?{query}",
                scopes=scopes,
                headers={"Content-Length": "0"},
                data=b"",
                ok=(201, 202),
                what=f"mount {desc.digest} from {source.name} into {self.name}",
            )
        except (AuthError, NotFoundError):
            return False
        async with resp:
            mounted = resp.status == 201
            location = resp.headers.get("Location")
        if not mounted and location:
            await Upload(self.endpoint, desc, self.endpoint.url(location), 0).cancel()
        return mounted

    # --- tags and referrers ------------------------------------------------

    async def tags(self) -> list[str]:
        """All tags, following ``Link`` pages (with loop and size guards)."""
        return await paged_list(
            self.transport,
            self._host,
            f"/v2/{self.name}/tags/list",
            "tags",
            self.pull_scopes,
            f"tag list of {self.name}",
        )

    async def referrers(self, digest: Digest) -> list[Descriptor]:
        """Manifests whose subject is ``digest``: referrers API, else the tag fallback."""
        if self._referrers_api is not False:
            resp = await self.transport.request(
                "GET",
                self._host,
                f"/v2/{self.name}/referrers/{digest}",
                scopes=self.pull_scopes,
                headers={"Accept": mt.OCI_INDEX},
                ok=(200, 404),
                what=f"referrers of {self.name}@{digest}",
            )
            async with resp:
                if resp.status == 200 and mt.base(resp.headers.get("Content-Type", "")) == (
                    mt.OCI_INDEX
                ):
                    self._referrers_api = True
                    raw = await read_limited(resp, self._limits_manifest(), "referrers")
                    return list(Manifest.parse(raw, mt.OCI_INDEX).manifests)
            self._referrers_api = False
        return await fallback_list(self, digest)

    async def _add_to_fallback(self, manifest: Manifest) -> None:
        """Add ``manifest`` to its subject's ``sha256-<hex>`` fallback index."""
        assert manifest.subject is not None
        tag = manifest.subject.digest.tag_form
        lock = self._fallback_locks.setdefault(tag, anyio.Lock())
        async with lock:
            await fallback_add(self, manifest)
