"""Bad answers become typed errors: a real registry behind a fault-injecting proxy.

Each test breaks one thing on the way from distribution to the client
(a flipped byte, a cut connection, a lying header, an error storm, a stall)
and checks that asyncreg either recovers with correct bytes or raises the
exception that names what went wrong, after exactly the retries its policy
allows (counted at the proxy).
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator

import pytest

from asyncreg import Client, HostConfig, Limits, RetryPolicy, Timeouts
from asyncreg import mediatypes as mt
from asyncreg.errors import (
    AuthError,
    DigestMismatchError,
    ManifestError,
    RateLimitError,
    RegistryError,
    SizeMismatchError,
    TransportError,
    TransportTimeout,
    UnsupportedManifestError,
)
from asyncreg.manifest import Descriptor, Manifest
from asyncreg.registry.repo import RegistryRepo
from asyncreg.testkit.proxy import (
    Corrupt,
    Delay,
    Drop,
    DropBodyAfter,
    FaultProxy,
    IgnoreRange,
    LieLength,
    Rewrite,
    Rule,
    Status,
)
from asyncreg.testkit.registry import RegistryProcess, find_free_port
from tests.test_registry_repo import (
    BytesStream,
    blob_descriptor,
    push_blob,
    push_image,
    read_blob,
    registry_repo,
    source_of,
)

pytestmark = pytest.mark.anyio

KIB = 1024
#: Quick retries: the tests count attempts, they do not wait for backoff.
FAST = RetryPolicy(attempts=3, backoff_base=0.01, backoff_cap=0.05, resume_attempts=2)


def _client(proxy: FaultProxy, **limits: object) -> Client:
    return Client(limits=Limits(retry=FAST, **limits))  # type: ignore[arg-type]


async def _proxied(
    proxy: FaultProxy, client: Client, repo_name: str, *, blob_size: int = 0
) -> tuple[RegistryRepo, Manifest, Descriptor | None, bytes]:
    """Push an image (and a blob of ``blob_size`` random bytes) through a clean proxy."""
    repo = registry_repo(client, f"{proxy.host}/{repo_name}")
    image = await push_image(repo, layers=1, tag="v1")
    data = os.urandom(blob_size)
    desc = await push_blob(repo, data) if blob_size else None
    proxy.reset_log()
    client.transport.retries = 0
    return repo, image, desc, data


@pytest.fixture
async def proxy(registry: RegistryProcess) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(registry.url) as front:
        yield front


# --- blob bodies ---------------------------------------------------------------------


async def test_corrupted_blob_is_a_digest_mismatch(proxy: FaultProxy, repo_name: str) -> None:
    async with _client(proxy) as client:
        repo, _, desc, data = await _proxied(proxy, client, repo_name, blob_size=300 * KIB)
        assert desc is not None
        rule = proxy.add_rule(Rule(Corrupt(200_000), method="GET", path=desc.digest.hex))
        with pytest.raises(DigestMismatchError) as info:
            await read_blob(repo, desc)
        assert rule.applied == 1
        # Without verification the same bytes come through: only hashing can tell.
        unverified = await read_blob(repo, desc, verify=False)
    assert info.value.expected == str(desc.digest)
    assert info.value.actual != str(desc.digest)
    assert len(unverified) == len(data)
    assert unverified != data


async def test_truncated_blob_with_resumes_exhausted(proxy: FaultProxy, repo_name: str) -> None:
    async with _client(proxy) as client:
        repo, _, desc, _ = await _proxied(proxy, client, repo_name, blob_size=1024 * KIB)
        assert desc is not None
        proxy.add_rule(Rule(DropBodyAfter(100_000), method="GET", path=desc.digest.hex))
        with pytest.raises((TransportError, SizeMismatchError)):
            await read_blob(repo, desc)
    gets = [r for r in proxy.requests if r.method == "GET"]
    # Each break made progress, so the blob's budget allows FAST.attempts +
    # FAST.resume_attempts tries in all, each resumed at the exact offset reached.
    tries = FAST.attempts + FAST.resume_attempts
    assert [r.headers.get("Range") for r in gets] == [None] + [
        f"bytes={100_000 * i}-" for i in range(1, tries)
    ]


async def test_resume_after_a_cut_continues_at_the_offset(
    proxy: FaultProxy, repo_name: str
) -> None:
    async with _client(proxy) as client:
        repo, _, desc, data = await _proxied(proxy, client, repo_name, blob_size=700 * KIB)
        assert desc is not None
        proxy.add_rule(Rule(DropBodyAfter(250_000), method="GET", path=desc.digest.hex, times=1))
        stream = await repo.blob_open(desc)
        got = b"".join([chunk async for chunk in stream])
    assert got == data
    gets = [r for r in proxy.requests if r.method == "GET"]
    assert [(r.headers.get("Range"), r.status) for r in gets] == [
        (None, 200),
        ("bytes=250000-", 206),
    ]


async def test_resume_from_a_server_ignoring_range_restarts_cleanly(
    proxy: FaultProxy, repo_name: str
) -> None:
    async with _client(proxy) as client:
        repo, _, desc, data = await _proxied(proxy, client, repo_name, blob_size=700 * KIB)
        assert desc is not None
        proxy.add_rule(Rule(DropBodyAfter(250_000), method="GET", path=desc.digest.hex, times=1))
        proxy.add_rule(Rule(IgnoreRange(), method="GET", path=desc.digest.hex))
        stream = await repo.blob_open(desc)
        got = b"".join([chunk async for chunk in stream])
    assert got == data
    gets = [r for r in proxy.requests if r.method == "GET"]
    # The client asked for the tail; the server sent everything; the head was skipped.
    assert [(r.headers.get("Range"), r.status) for r in gets] == [
        (None, 200),
        ("bytes=250000-", 200),
    ]


async def test_lying_content_length_on_a_blob(proxy: FaultProxy, repo_name: str) -> None:
    async with _client(proxy) as client:
        repo, _, desc, _ = await _proxied(proxy, client, repo_name, blob_size=50 * KIB)
        assert desc is not None
        proxy.add_rule(Rule(LieLength(10), method="GET", path=desc.digest.hex))
        with pytest.raises(RegistryError, match="announces"):
            await read_blob(repo, desc)
        with pytest.raises(RegistryError, match="announces"):
            await read_blob(repo, desc, verify=False)


async def test_lying_content_length_on_a_manifest(proxy: FaultProxy, repo_name: str) -> None:
    async with _client(proxy) as client:
        repo, _, _, _ = await _proxied(proxy, client, repo_name)
        proxy.add_rule(Rule(LieLength(10), method="GET", path="/manifests/v1$"))
        with pytest.raises(TransportError):
            await repo.manifest_get("v1")


async def test_descriptor_size_disagreeing_with_the_registry(
    proxy: FaultProxy, repo_name: str
) -> None:
    async with _client(proxy) as client:
        repo, _, desc, _ = await _proxied(proxy, client, repo_name, blob_size=10 * KIB)
        assert desc is not None
        wrong = Descriptor(desc.media_type, desc.digest, desc.size + 1)
        with pytest.raises(RegistryError, match="announces"):
            await repo.blob_open(wrong)


async def test_read_stall_times_out(proxy: FaultProxy, repo_name: str) -> None:
    timeouts = Timeouts(read_stall=1.0)
    retry = RetryPolicy(attempts=2, backoff_base=0.01)
    async with Client(limits=Limits(timeouts=timeouts, retry=retry)) as client:
        repo, _, desc, _ = await _proxied(proxy, client, repo_name, blob_size=10 * KIB)
        assert desc is not None
        proxy.add_rule(Rule(Delay(5), method="GET", path=desc.digest.hex))
        with pytest.raises(TransportTimeout):
            await read_blob(repo, desc)
        assert client.transport.retries == 1
    assert proxy.count("GET", desc.digest.hex) == 2


# --- manifests -----------------------------------------------------------------------


async def test_oversized_manifest_is_refused(proxy: FaultProxy, repo_name: str) -> None:
    async with _client(proxy, max_manifest_size=2048) as client:
        repo, image, _, _ = await _proxied(proxy, client, repo_name)
        assert image.size < 2048
        assert (await repo.manifest_get("v1")).raw == image.raw  # fits as it is
        proxy.add_rule(
            Rule(Rewrite(lambda body: body + b" " * 4096), method="GET", path="/manifests/")
        )
        with pytest.raises((RegistryError, ManifestError), match=r"cap|limit"):
            await repo.manifest_get("v1")
        with pytest.raises((RegistryError, ManifestError), match=r"cap|limit"):
            await repo.manifest_get(image.digest)


async def test_manifest_too_large_to_push_is_refused_before_sending(
    proxy: FaultProxy, repo_name: str
) -> None:
    async with _client(proxy, max_manifest_push=1024) as client:
        repo = registry_repo(client, f"{proxy.host}/{repo_name}")
        big = Manifest.parse(
            b'{"schemaVersion":2,"mediaType":"%s","manifests":[],"annotations":{"pad":"%s"}}'
            % (mt.OCI_INDEX.encode(), b"x" * 2000)
        )
        with pytest.raises(ManifestError):
            await repo.manifest_put(big, "big")
    assert proxy.count("PUT") == 0


async def test_manifest_not_matching_its_digest(proxy: FaultProxy, repo_name: str) -> None:
    async with _client(proxy) as client:
        repo, image, _, _ = await _proxied(proxy, client, repo_name)
        # Still valid JSON, one byte longer: only the digest can tell.
        edit = Rewrite(lambda body: body.replace(b"{", b"{ ", 1))
        proxy.add_rule(Rule(edit, method="GET", path=f"/manifests/{image.digest}$"))
        with pytest.raises(DigestMismatchError) as info:
            await repo.manifest_get(image.digest)
    assert info.value.expected == str(image.digest)


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_wrong_docker_content_digest(proxy: FaultProxy, repo_name: str, method: str) -> None:
    wrong = "sha256:" + "0" * 64
    async with _client(proxy) as client:
        repo, image, _, _ = await _proxied(proxy, client, repo_name)
        edit = Rewrite(headers={"Docker-Content-Digest": wrong})
        proxy.add_rule(Rule(edit, method=method, path="/manifests/"))
        fetch = repo.manifest_get("v1") if method == "GET" else repo.manifest_head(image.digest)
        with pytest.raises(DigestMismatchError) as info:
            await fetch
    assert wrong in (info.value.expected, info.value.actual)


@pytest.mark.parametrize(
    ("body", "content_type", "error"),
    [
        (b"this is not json", mt.OCI_MANIFEST, ManifestError),
        (b"[1, 2, 3]", mt.OCI_MANIFEST, ManifestError),
        (b'{"schemaVersion": 1, "name": "x", "fsLayers": []}', mt.DOCKER_SCHEMA1, ManifestError),
        (b'{"schemaVersion": 2, "mediaType": "text/plain"}', "text/plain", ManifestError),
    ],
    ids=["not-json", "not-object", "schema1", "unknown-type"],
)
async def test_malformed_manifest_by_tag(
    proxy: FaultProxy, repo_name: str, body: bytes, content_type: str, error: type[Exception]
) -> None:
    async with _client(proxy) as client:
        repo, _, _, _ = await _proxied(proxy, client, repo_name)
        edit = Rewrite(
            lambda _: body, {"Content-Type": content_type, "Docker-Content-Digest": None}
        )
        proxy.add_rule(Rule(edit, method="GET", path="/manifests/v1$"))
        with pytest.raises(error):
            await repo.manifest_get("v1")
    if content_type == mt.DOCKER_SCHEMA1:
        assert issubclass(UnsupportedManifestError, error)


async def test_malformed_tag_list(proxy: FaultProxy, repo_name: str) -> None:
    async with _client(proxy) as client:
        repo, _, _, _ = await _proxied(proxy, client, repo_name)
        proxy.add_rule(Rule(Rewrite(lambda _: b"<html>"), method="GET", path="/tags/list$"))
        with pytest.raises(RegistryError, match="not JSON"):
            await repo.tags()
        proxy.clear_rules()
        proxy.add_rule(
            Rule(Rewrite(lambda _: b'{"tags": [1, 2]}'), method="GET", path="/tags/list$")
        )
        with pytest.raises(RegistryError, match="malformed"):
            await repo.tags()


# --- auth challenges -------------------------------------------------------------------


@pytest.mark.parametrize("where", ["^/v2/$", "/manifests/v1$"], ids=["ping", "request"])
async def test_malformed_www_authenticate(proxy: FaultProxy, repo_name: str, where: str) -> None:
    bad = Status(401, {"WWW-Authenticate": 'Bearer realm="unterminated'})
    async with _client(proxy) as client:
        proxy.add_rule(Rule(bad, path=where))
        repo = registry_repo(client, f"{proxy.host}/{repo_name}")
        with pytest.raises(AuthError):
            await repo.manifest_get("v1")
        assert client.transport.retries == 0
        assert client.transport.auth.token_fetches == 0
    assert proxy.count(path_regex=where) == 1


async def test_401_without_a_challenge(proxy: FaultProxy, repo_name: str) -> None:
    async with _client(proxy) as client:
        proxy.add_rule(Rule(Status(401), path="/manifests/"))
        repo = registry_repo(client, f"{proxy.host}/{repo_name}")
        with pytest.raises(AuthError) as info:
            await repo.manifest_get("v1")
    assert info.value.status == 401
    assert proxy.count(path_regex="/manifests/") == 1


# --- retries -------------------------------------------------------------------------


async def test_5xx_is_retried_then_succeeds(proxy: FaultProxy, repo_name: str) -> None:
    async with _client(proxy) as client:
        repo, image, _, _ = await _proxied(proxy, client, repo_name)
        proxy.add_rule(Rule(Status(503), method="GET", path="/manifests/v1$", times=2))
        assert (await repo.manifest_get("v1")).raw == image.raw
        assert client.transport.retries == 2
    assert [r.status for r in proxy.requests] == [503, 503, 200]


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
async def test_errors_forever_give_up_after_the_policy_attempts(
    proxy: FaultProxy, repo_name: str, status: int
) -> None:
    async with _client(proxy) as client:
        repo, _, _, _ = await _proxied(proxy, client, repo_name)
        proxy.add_rule(Rule(Status(status), method="GET", path="/manifests/v1$"))
        with pytest.raises(RegistryError) as info:
            await repo.manifest_get("v1")
        assert client.transport.retries == FAST.attempts - 1
    assert info.value.status == status
    assert proxy.count("GET", "/manifests/v1$") == FAST.attempts


@pytest.mark.parametrize("status", [400, 403, 405, 501])
async def test_final_answers_are_not_retried(
    proxy: FaultProxy, repo_name: str, status: int
) -> None:
    async with _client(proxy) as client:
        repo, _, _, _ = await _proxied(proxy, client, repo_name)
        proxy.add_rule(Rule(Status(status), method="GET", path="/manifests/v1$"))
        with pytest.raises(RegistryError) as info:
            await repo.manifest_get("v1")
        assert client.transport.retries == 0
    assert info.value.status == status
    assert proxy.count("GET", "/manifests/v1$") == 1


async def test_dropped_connections_are_retried(proxy: FaultProxy, repo_name: str) -> None:
    async with _client(proxy) as client:
        repo, image, _, _ = await _proxied(proxy, client, repo_name)
        proxy.add_rule(Rule(Drop(), method="GET", path="/manifests/v1$", times=2))
        assert (await repo.manifest_get("v1")).raw == image.raw
        # aiohttp itself resends an idempotent request once when a reused keep-alive
        # connection turns out closed (RFC 9112 9.3.1); the rest are asyncreg's retries.
        assert 1 <= client.transport.retries <= 2
    assert proxy.count("GET", "/manifests/v1$") == 3


async def test_first_request_of_a_host_is_retried_too(proxy: FaultProxy, repo_name: str) -> None:
    """The ``GET /v2/`` that learns the challenge gets the same retries as any request."""
    async with _client(proxy) as client:
        proxy.add_rule(Rule(Drop(), method="GET", path="^/v2/$", times=3))
        repo = registry_repo(client, f"{proxy.host}/{repo_name}")
        assert await repo.manifest_head("v1") is None
        assert client.transport.retries >= 1
    assert [r.status for r in proxy.requests if r.path == "/v2/"] == [None, None, None, 200]


async def test_connection_refused_gives_up_after_the_policy_attempts(repo_name: str) -> None:
    host = f"127.0.0.1:{find_free_port()}"  # nothing listens there
    async with Client(limits=Limits(retry=FAST)) as client:
        repo = registry_repo(client, f"{host}/{repo_name}")
        with pytest.raises(TransportError, match="connection failed"):
            await repo.manifest_head("v1")
        assert client.transport.retries == FAST.attempts - 1


async def test_429_retry_after_is_honoured(proxy: FaultProxy, repo_name: str) -> None:
    # No backoff of its own: any wait comes from Retry-After.
    policy = RetryPolicy(attempts=3, backoff_base=0.0, backoff_cap=0.0)
    async with Client(limits=Limits(retry=policy)) as client:
        repo, image, _, _ = await _proxied(proxy, client, repo_name)
        limited = Status(429, {"Retry-After": "1"})
        proxy.add_rule(Rule(limited, method="GET", path="/manifests/v1$", times=1))
        start = time.monotonic()
        assert (await repo.manifest_get("v1")).raw == image.raw
        waited = time.monotonic() - start
        assert client.transport.retries == 1
    assert [r.status for r in proxy.requests] == [429, 200]
    # A lower bound only (sleeping can take longer, never shorter): the server's 1 s held.
    assert waited >= 0.95


async def test_429_forever_is_a_rate_limit_error(proxy: FaultProxy, repo_name: str) -> None:
    async with _client(proxy) as client:
        repo, _, _, _ = await _proxied(proxy, client, repo_name)
        limited = Status(429, {"Retry-After": "0"}, b'{"errors":[{"code":"TOOMANYREQUESTS"}]}')
        proxy.add_rule(Rule(limited, method="GET", path="/manifests/v1$"))
        with pytest.raises(RateLimitError) as info:
            await repo.manifest_get("v1")
    assert info.value.codes == ("TOOMANYREQUESTS",)
    assert info.value.retry_after == 0.0
    assert proxy.count("GET", "/manifests/v1$") == FAST.attempts


# --- redirects -----------------------------------------------------------------------


async def test_redirect_loop_is_bounded(proxy: FaultProxy, repo_name: str) -> None:
    async with _client(proxy) as client:
        repo, _, desc, _ = await _proxied(proxy, client, repo_name, blob_size=KIB)
        assert desc is not None
        here = f"{proxy.url}/v2/{repo_name}/blobs/{desc.digest}"
        proxy.add_rule(Rule(Status(307, {"Location": here}), method="GET", path="/blobs/"))
        with pytest.raises(TransportError, match="redirects"):
            await read_blob(repo, desc)
        assert client.transport.retries == 0
    assert proxy.count("GET", "/blobs/") == 11  # the request and 10 redirects


@pytest.mark.parametrize("location", ["file:///etc/passwd", "ftp://127.0.0.1/blob"])
async def test_redirect_to_another_scheme_is_refused(
    proxy: FaultProxy, repo_name: str, location: str
) -> None:
    async with _client(proxy) as client:
        repo, _, desc, _ = await _proxied(proxy, client, repo_name, blob_size=KIB)
        assert desc is not None
        proxy.add_rule(Rule(Status(302, {"Location": location}), method="GET", path="/blobs/"))
        with pytest.raises(TransportError, match="refusing redirect"):
            await read_blob(repo, desc)
        assert client.transport.retries == 0


async def test_redirect_without_location(proxy: FaultProxy, repo_name: str) -> None:
    async with _client(proxy) as client:
        repo, _, desc, _ = await _proxied(proxy, client, repo_name, blob_size=KIB)
        assert desc is not None
        proxy.add_rule(Rule(Status(307), method="GET", path="/blobs/"))
        with pytest.raises(RegistryError, match="Location"):
            await read_blob(repo, desc)


# --- uploads -------------------------------------------------------------------------


async def test_upload_cut_off_reopens_the_source(proxy: FaultProxy, repo_name: str) -> None:
    data = os.urandom(200 * KIB)
    async with _client(proxy) as client:
        repo = registry_repo(client, f"{proxy.host}/{repo_name}")
        proxy.add_rule(Rule(Drop(), method="PUT", path="/blobs/uploads/", times=1))
        desc = blob_descriptor(data)
        opened: list[BytesStream] = []
        await repo.blob_put(desc, source_of(data, opened))
        assert await read_blob(repo, desc) == data
    assert len(opened) == 2  # never replayed: opened afresh
    assert all(s.closed for s in opened)
    assert proxy.count("POST", "/blobs/uploads/") == 2
    assert proxy.count("PUT", "/blobs/uploads/") == 2


async def test_upload_of_wrong_bytes_is_a_digest_mismatch(
    proxy: FaultProxy, repo_name: str
) -> None:
    data = os.urandom(20 * KIB)
    claimed = Descriptor(mt.OCI_LAYER_GZIP, blob_descriptor(b"other").digest, len(data))
    async with _client(proxy) as client:
        repo = registry_repo(client, f"{proxy.host}/{repo_name}")
        with pytest.raises(DigestMismatchError):
            await repo.blob_put(claimed, source_of(data))
        assert await repo.blob_head(claimed.digest) is None
    # Refused once: not retried, and the session was cancelled.
    assert proxy.count("PUT", "/blobs/uploads/") == 1
    assert proxy.count("DELETE", "/blobs/uploads/") == 1


async def test_upload_5xx_forever_gives_up(proxy: FaultProxy, repo_name: str) -> None:
    data = os.urandom(20 * KIB)
    async with _client(proxy) as client:
        repo = registry_repo(client, f"{proxy.host}/{repo_name}")
        proxy.add_rule(Rule(Status(500), method="PUT", path="/blobs/uploads/"))
        with pytest.raises(RegistryError) as info:
            await push_blob(repo, data)
    assert info.value.status == 500
    assert proxy.count("PUT", "/blobs/uploads/") == FAST.attempts


async def test_chunked_patch_5xx_is_replayed(proxy: FaultProxy, repo_name: str) -> None:
    data = os.urandom(200 * KIB)
    client = Client(
        limits=Limits(retry=FAST, upload_chunk_size=64 * KIB),
        hosts={proxy.host: HostConfig(chunked_upload=True)},
    )
    async with client:
        repo = registry_repo(client, f"{proxy.host}/{repo_name}")
        proxy.add_rule(Rule(Status(503), method="PATCH", after=1, times=1))
        desc = await push_blob(repo, data)
        assert await read_blob(repo, desc) == data
    patches = [r for r in proxy.requests if r.method == "PATCH"]
    # The refused chunk is sent again, same bytes, same range; the session goes on.
    assert [r.headers["Content-Range"] for r in patches] == [
        "0-65535",
        "65536-131071",
        "65536-131071",
        "131072-196607",
        "196608-204799",
    ]
    assert proxy.count("POST") == 1
