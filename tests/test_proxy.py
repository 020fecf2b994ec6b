"""Tests of the fault-injecting proxy, the token-auth proxy and the header-log server.

These test-kit pieces decide whether the rest of the suite tests anything:
a proxy that silently buffers, retries or alters bodies would make resume,
retry and memory tests pass for the wrong reason. So each one is checked here
against a real distribution registry with plain aiohttp requests, without
going through asyncreg's own client.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path

import aiohttp
import orjson
import pytest
from yarl import URL

from asyncreg.testkit.headerlog import HeaderLogServer
from asyncreg.testkit.proxy import (
    Corrupt,
    Delay,
    Drop,
    DropBodyAfter,
    FaultProxy,
    IgnoreRange,
    LieLength,
    LoopbackTLS,
    Rewrite,
    Rule,
    Status,
    Throttle,
)
from asyncreg.testkit.registry import RegistryOptions, RegistryProcess
from asyncreg.testkit.tokenauth import TokenAuthProxy, parse_scope

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024


# --- fixtures and helpers ------------------------------------------------------------


@pytest.fixture(scope="module")
def upstream() -> Iterator[RegistryProcess]:
    """A real registry of this module's own, so its tests depend on no shared state."""
    with RegistryProcess(RegistryOptions(delete=True)) as reg:
        yield reg


@pytest.fixture
async def proxy(upstream: RegistryProcess) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(upstream.url) as p:
        yield p


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def new_repo() -> str:
    return f"proxytest/r{uuid.uuid4().hex[:12]}"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def push_blob(
    http: aiohttp.ClientSession,
    base: str,
    repo: str,
    data: bytes,
    headers: Mapping[str, str] | None = None,
) -> str:
    """Monolithic upload in two steps (POST, PUT ?digest=); returns the digest."""
    digest = sha256(data)
    hdrs = dict(headers or {})
    async with http.post(f"{base}/v2/{repo}/blobs/uploads/", headers=hdrs) as resp:
        assert resp.status == 202, await resp.text()
        location = resp.headers["Location"]
    assert location.startswith(base + "/"), location
    put_headers = {**hdrs, "Content-Type": "application/octet-stream"}
    url = URL(location).update_query(digest=digest)
    async with http.put(url, data=data, headers=put_headers) as resp:
        assert resp.status == 201, await resp.text()
        assert resp.headers["Docker-Content-Digest"] == digest
    return digest


async def push_manifest(http: aiohttp.ClientSession, base: str, repo: str, tag: str) -> str:
    """An OCI image manifest (one config blob, no layers) tagged ``tag``; returns its digest."""
    config = orjson.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"}})
    config_digest = await push_blob(http, base, repo, config)
    manifest = orjson.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(config),
            },
            "layers": [],
        }
    )
    async with http.put(
        f"{base}/v2/{repo}/manifests/{tag}",
        data=manifest,
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    ) as resp:
        assert resp.status == 201, await resp.text()
    return sha256(manifest)


async def read_until_error(resp: aiohttp.ClientResponse) -> tuple[bytes, BaseException | None]:
    """Everything the body delivered before it ended, and the error it ended with (if any)."""
    got = bytearray()
    try:
        while chunk := await resp.content.readany():
            got += chunk
    except aiohttp.ClientPayloadError as exc:
        return bytes(got), exc
    return bytes(got), None


def parse_challenge(value: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="x",service="y"`` as ``("bearer", {"realm": "x", "service": "y"})``."""
    scheme, _, rest = value.partition(" ")
    return scheme.lower(), dict(re.findall(r'(\w+)="([^"]*)"', rest))


def rss_bytes() -> int:
    """Resident set size of this process, from /proc/self/statm (pages, second field)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRss:
    """Samples RSS every few milliseconds while active; ``growth`` is peak minus start."""

    def __init__(self) -> None:
        self.start = 0
        self.peak = 0
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, rss_bytes())
            await asyncio.sleep(0.005)

    async def __aenter__(self) -> PeakRss:
        self.start = self.peak = rss_bytes()
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self.peak = max(self.peak, rss_bytes())

    @property
    def growth(self) -> int:
        return self.peak - self.start


# --- transparent forwarding -------------------------------------------------------------


async def test_push_and_pull_through_proxy(proxy: FaultProxy, http: aiohttp.ClientSession) -> None:
    repo = new_repo()
    data = os.urandom(300_000)
    digest = await push_blob(http, proxy.url, repo, data, headers={"X-Probe": "push"})

    async with http.get(f"{proxy.url}/v2/{repo}/blobs/{digest}") as resp:
        assert resp.status == 200
        assert await resp.read() == data
        assert resp.headers["Docker-Content-Digest"] == digest
    async with http.head(f"{proxy.url}/v2/{repo}/blobs/{digest}") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Length"] == str(len(data))
        assert await resp.read() == b""

    assert [r.method for r in proxy.requests] == ["POST", "PUT", "GET", "HEAD"]
    assert [r.status for r in proxy.requests] == [202, 201, 200, 200]
    assert proxy.requests[0].headers["X-Probe"] == "push"
    assert proxy.requests[1].query["digest"] == digest
    assert proxy.count("PUT", r"/blobs/uploads/") == 1
    assert proxy.count(path_regex=re.escape(digest)) == 2
    assert proxy.count() == 4


async def test_location_points_at_proxy(
    proxy: FaultProxy, upstream: RegistryProcess, http: aiohttp.ClientSession
) -> None:
    async with http.post(f"{proxy.url}/v2/{new_repo()}/blobs/uploads/") as resp:
        assert resp.status == 202
        location = resp.headers["Location"]
    assert location.startswith(proxy.url + "/v2/")
    assert upstream.host not in location


async def test_unreachable_upstream_gives_502(http: aiohttp.ClientSession) -> None:
    async with FaultProxy("http://127.0.0.1:1") as proxy, http.get(f"{proxy.url}/v2/") as resp:
        assert resp.status == 502
    assert proxy.requests[0].status == 502


# --- actions --------------------------------------------------------------------------------


async def test_status_then_success_after_times(
    proxy: FaultProxy, http: aiohttp.ClientSession
) -> None:
    repo = new_repo()
    data = b"hello"
    digest = await push_blob(http, proxy.url, repo, data)
    rule = proxy.add_rule(
        Rule(Status(429, headers={"Retry-After": "1"}), method="GET", path=r"/blobs/", times=2)
    )
    statuses = []
    for _ in range(3):
        async with http.get(f"{proxy.url}/v2/{repo}/blobs/{digest}") as resp:
            statuses.append(resp.status)
            if resp.status == 429:
                assert resp.headers["Retry-After"] == "1"
            else:
                assert await resp.read() == data
    assert statuses == [429, 429, 200]
    assert (rule.matched, rule.applied, rule.exhausted) == (3, 2, True)
    assert proxy.count("GET", "/blobs/") == 3
    assert [r.actions for r in proxy.requests[-3:]] == [("Status",), ("Status",), ()]


async def test_after_skips_first_matches(proxy: FaultProxy, http: aiohttp.ClientSession) -> None:
    repo = new_repo()
    digest = await push_blob(http, proxy.url, repo, b"after")
    proxy.add_rule(Rule(Status(503, body=b"busy"), method="HEAD", after=1, times=1))
    statuses = []
    for _ in range(3):
        async with http.head(f"{proxy.url}/v2/{repo}/blobs/{digest}") as resp:
            statuses.append(resp.status)
    assert statuses == [200, 503, 200]


async def test_rules_only_match_their_method_and_path(
    proxy: FaultProxy, http: aiohttp.ClientSession
) -> None:
    proxy.add_rule(Rule(Status(500), method="PUT", path=r"/manifests/"))
    digest = await push_blob(http, proxy.url, new_repo(), b"unaffected")
    assert digest == sha256(b"unaffected")
    async with http.put(f"{proxy.url}/v2/{new_repo()}/manifests/latest", data=b"{}") as resp:
        assert resp.status == 500


async def test_drop_closes_without_answer(proxy: FaultProxy, http: aiohttp.ClientSession) -> None:
    repo = new_repo()
    digest = await push_blob(http, proxy.url, repo, b"drop")
    url = f"{proxy.url}/v2/{repo}/blobs/{digest}"
    proxy.reset_log()

    # aiohttp retries an idempotent request once when the server disconnects,
    # so one Drop is invisible to the caller; two make the request fail.
    proxy.add_rule(Rule(Drop(), method="GET", times=1))
    async with http.get(url) as resp:
        assert await resp.read() == b"drop"
    assert proxy.count("GET") == 2
    assert [r.status for r in proxy.requests] == [None, 200]

    proxy.clear_rules()
    proxy.add_rule(Rule(Drop(), method="GET", times=2))
    with pytest.raises(aiohttp.ServerDisconnectedError):
        async with http.get(url) as resp:
            await resp.read()
    async with http.get(url) as resp:
        assert resp.status == 200


async def test_faults_on_uploads(proxy: FaultProxy, http: aiohttp.ClientSession) -> None:
    """A refused or cut upload leaves the session usable: the retry goes through."""
    repo = new_repo()
    data = os.urandom(MiB // 2)
    proxy.add_rule(Rule(Status(503), method="PUT", times=1))
    # Two drops: aiohttp silently resends an idempotent PUT once after a disconnect.
    proxy.add_rule(Rule(Drop(), method="PUT", after=1, times=2))
    async with http.post(f"{proxy.url}/v2/{repo}/blobs/uploads/") as resp:
        url = URL(resp.headers["Location"]).update_query(digest=sha256(data))
    async with http.put(url, data=data) as resp:
        assert resp.status == 503
    with pytest.raises(aiohttp.ClientConnectionError):
        async with http.put(url, data=data) as resp:
            await resp.read()
    async with http.put(url, data=data) as resp:
        assert resp.status == 201
    assert [r.status for r in proxy.requests] == [202, 503, None, None, 201]


async def test_drop_body_after_gives_short_body(
    proxy: FaultProxy, http: aiohttp.ClientSession
) -> None:
    repo = new_repo()
    data = os.urandom(500_000)
    digest = await push_blob(http, proxy.url, repo, data)
    proxy.add_rule(Rule(DropBodyAfter(100_000), method="GET", times=2))
    url = f"{proxy.url}/v2/{repo}/blobs/{digest}"

    async with http.get(url) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Length"] == str(len(data))
        got, error = await read_until_error(resp)
    assert isinstance(error, aiohttp.ClientPayloadError)
    assert got == data[:100_000]

    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.get(url) as resp:
            await resp.read()

    async with http.get(url) as resp:
        assert await resp.read() == data


async def test_drop_body_after_zero_sends_headers_only(
    proxy: FaultProxy, http: aiohttp.ClientSession
) -> None:
    repo = new_repo()
    digest = await push_blob(http, proxy.url, repo, b"x" * 1000)
    proxy.add_rule(Rule(DropBodyAfter(0)))
    async with http.get(f"{proxy.url}/v2/{repo}/blobs/{digest}") as resp:
        assert resp.status == 200
        got, error = await read_until_error(resp)
    assert (got, type(error)) == (b"", aiohttp.ClientPayloadError)


async def test_corrupt_flips_one_byte(proxy: FaultProxy, http: aiohttp.ClientSession) -> None:
    repo = new_repo()
    data = os.urandom(200_000)
    digest = await push_blob(http, proxy.url, repo, data)
    proxy.add_rule(Rule(Corrupt(150_000), method="GET", times=1))
    async with http.get(f"{proxy.url}/v2/{repo}/blobs/{digest}") as resp:
        got = await resp.read()
    assert len(got) == len(data)
    assert [i for i in range(len(data)) if got[i] != data[i]] == [150_000]
    assert got[150_000] == data[150_000] ^ 0xFF
    assert sha256(got) != digest


async def test_lie_length_announces_more_than_it_sends(
    proxy: FaultProxy, http: aiohttp.ClientSession
) -> None:
    repo = new_repo()
    data = os.urandom(50_000)
    digest = await push_blob(http, proxy.url, repo, data)
    proxy.add_rule(Rule(LieLength(1234), method="GET"))
    async with http.get(f"{proxy.url}/v2/{repo}/blobs/{digest}") as resp:
        assert resp.headers["Content-Length"] == str(len(data) + 1234)
        got, error = await read_until_error(resp)
    assert isinstance(error, aiohttp.ClientPayloadError)
    assert got == data


async def test_delay_waits(proxy: FaultProxy, http: aiohttp.ClientSession) -> None:
    proxy.add_rule(Rule(Delay(0.5), path=r"^/v2/$"))
    start = time.monotonic()
    async with http.get(f"{proxy.url}/v2/") as resp:
        assert resp.status == 200
    assert time.monotonic() - start >= 0.45


async def test_throttle_slows_download(proxy: FaultProxy, http: aiohttp.ClientSession) -> None:
    repo = new_repo()
    data = os.urandom(200_000)
    digest = await push_blob(http, proxy.url, repo, data)
    proxy.add_rule(Rule(Throttle(100_000), method="GET"))
    start = time.monotonic()
    async with http.get(f"{proxy.url}/v2/{repo}/blobs/{digest}") as resp:
        assert await resp.read() == data
    # 2 s at the nominal rate; only a generous lower bound is asserted.
    assert time.monotonic() - start > 1.0


async def test_throttle_slows_upload(proxy: FaultProxy, http: aiohttp.ClientSession) -> None:
    proxy.add_rule(Rule(Throttle(100_000), method="PUT"))
    data = os.urandom(150_000)
    start = time.monotonic()
    digest = await push_blob(http, proxy.url, new_repo(), data)
    assert digest == sha256(data)
    assert time.monotonic() - start > 0.7


async def test_ignore_range_returns_whole_body(
    proxy: FaultProxy, http: aiohttp.ClientSession
) -> None:
    repo = new_repo()
    data = os.urandom(10_000)
    digest = await push_blob(http, proxy.url, repo, data)
    url = f"{proxy.url}/v2/{repo}/blobs/{digest}"
    ranged = {"Range": "bytes=100-199"}
    async with http.get(url, headers=ranged) as resp:
        assert resp.status == 206
        assert await resp.read() == data[100:200]
    proxy.add_rule(Rule(IgnoreRange()))
    async with http.get(url, headers=ranged) as resp:
        assert resp.status == 200
        assert await resp.read() == data
    # The log shows what the client sent, Range included.
    assert proxy.requests[-1].headers["Range"] == "bytes=100-199"


async def test_rewrite_body_and_headers(proxy: FaultProxy, http: aiohttp.ClientSession) -> None:
    repo = new_repo()
    for tag in ("a", "b", "c"):
        await push_manifest(http, proxy.url, repo, tag)

    def first_page(body: bytes) -> bytes:
        doc = orjson.loads(body)
        doc["tags"] = sorted(doc["tags"])[:1]
        return orjson.dumps(doc)

    link = f'</v2/{repo}/tags/list?n=1&last=a>; rel="next"'
    proxy.add_rule(Rule(Rewrite(first_page, headers={"Link": link}), path="/tags/list", times=1))
    async with http.get(f"{proxy.url}/v2/{repo}/tags/list") as resp:
        body = await resp.read()
        assert resp.headers["Link"] == link
        assert resp.headers["Content-Length"] == str(len(body))
    assert orjson.loads(body) == {"name": repo, "tags": ["a"]}

    proxy.add_rule(Rule(Rewrite(headers={"Docker-Content-Digest": None, "Link": "<broken"})))
    # distribution 2.8 answers 404 for an OCI manifest unless the client accepts OCI.
    oci = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    async with http.get(f"{proxy.url}/v2/{repo}/manifests/b", headers=oci) as resp:
        assert resp.status == 200
        assert "Docker-Content-Digest" not in resp.headers
        assert resp.headers["Link"] == "<broken"
        assert orjson.loads(await resp.read())["schemaVersion"] == 2


async def test_actions_combine(proxy: FaultProxy, http: aiohttp.ClientSession) -> None:
    repo = new_repo()
    data = os.urandom(20_000)
    digest = await push_blob(http, proxy.url, repo, data)
    proxy.add_rule(Rule(Corrupt(0), method="GET"))
    proxy.add_rule(Rule(DropBodyAfter(5_000), method="GET"))
    async with http.get(f"{proxy.url}/v2/{repo}/blobs/{digest}") as resp:
        got, error = await read_until_error(resp)
    assert isinstance(error, aiohttp.ClientPayloadError)
    assert got == bytes([data[0] ^ 0xFF]) + data[1:5_000]
    assert proxy.requests[-1].actions == ("Corrupt", "DropBodyAfter")


async def test_clear_rules_and_reset_log(proxy: FaultProxy, http: aiohttp.ClientSession) -> None:
    proxy.add_rule(Rule(Status(500)))
    async with http.get(f"{proxy.url}/v2/") as resp:
        assert resp.status == 500
    proxy.clear_rules()
    async with http.get(f"{proxy.url}/v2/") as resp:
        assert resp.status == 200
    assert proxy.count("GET", r"^/v2/$") == 2
    proxy.reset_log()
    assert proxy.count() == 0


# --- streaming and memory -----------------------------------------------------------------


async def test_big_upload_and_download_stream_through(
    proxy: FaultProxy, http: aiohttp.ClientSession
) -> None:
    """64 MiB up and down through the proxy must not make this process grow by anything near that.

    The proxy runs in this process, so if it (or the test's own client)
    buffered the body, RSS would grow by 64 MiB.
    """
    size = 64 * MiB
    block = MiB
    hasher = hashlib.sha256()
    for i in range(size // block):
        hasher.update(i.to_bytes(8, "big") * (block // 8))
    digest = "sha256:" + hasher.hexdigest()

    async def body() -> AsyncIterator[bytes]:
        for i in range(size // block):
            yield i.to_bytes(8, "big") * (block // 8)

    repo = new_repo()
    async with http.post(f"{proxy.url}/v2/{repo}/blobs/uploads/") as resp:
        location = resp.headers["Location"]
    async with (
        PeakRss() as up,
        http.put(
            URL(location).update_query(digest=digest),
            data=body(),
            headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"},
        ) as resp,
    ):
        assert resp.status == 201, await resp.text()
    assert proxy.requests[-1].headers["Content-Length"] == str(size)
    assert up.growth < 24 * MiB, f"RSS grew by {up.growth / MiB:.1f} MiB during upload"

    async with PeakRss() as down:
        check = hashlib.sha256()
        received = 0
        async with http.get(f"{proxy.url}/v2/{repo}/blobs/{digest}") as resp:
            async for chunk in resp.content.iter_chunked(256 * 1024):
                check.update(chunk)
                received += len(chunk)
    assert received == size
    assert "sha256:" + check.hexdigest() == digest
    assert down.growth < 24 * MiB, f"RSS grew by {down.growth / MiB:.1f} MiB during download"


# --- token auth ------------------------------------------------------------------------------


async def fetch_token(
    http: aiohttp.ClientSession,
    auth: TokenAuthProxy,
    *scopes: str,
    user: tuple[str, str] | None = None,
) -> tuple[int, dict[str, object]]:
    query = [("service", auth.service), *(("scope", s) for s in scopes)]
    headers = {}
    if user is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(user).encode()).decode()
    async with http.get(auth.realm, params=query, headers=headers) as resp:
        return resp.status, orjson.loads(await resp.read())


def bearer(token: object) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_token_challenge_fetch_and_access(
    upstream: RegistryProcess, http: aiohttp.ClientSession
) -> None:
    repo = new_repo()
    async with (
        FaultProxy(upstream.url) as inner,
        TokenAuthProxy(inner.url, users={"alice": "s3cret"}) as auth,
    ):
        async with http.get(f"{auth.url}/v2/") as resp:
            assert resp.status == 401
            scheme, params = parse_challenge(resp.headers["WWW-Authenticate"])
        assert scheme == "bearer"
        assert params == {"realm": f"{auth.url}/token", "service": "asyncreg-test"}

        async with http.post(f"{auth.url}/v2/{repo}/blobs/uploads/") as resp:
            assert resp.status == 401
            _, params = parse_challenge(resp.headers["WWW-Authenticate"])
            errors = orjson.loads(await resp.read())["errors"]
        assert params["scope"] == f"repository:{repo}:pull,push"
        assert errors[0]["code"] == "UNAUTHORIZED"
        assert parse_scope(params["scope"]) == ("repository", repo, frozenset({"pull", "push"}))

        status, body = await fetch_token(http, auth, params["scope"], user=("alice", "s3cret"))
        assert status == 200
        assert body["token"] == body["access_token"]
        assert body["expires_in"] == 60
        assert "issued_at" in body
        token = body["token"]

        data = os.urandom(70_000)
        digest = await push_blob(http, auth.url, repo, data, headers=bearer(token))
        async with http.get(f"{auth.url}/v2/{repo}/blobs/{digest}", headers=bearer(token)) as r:
            assert await r.read() == data

        async with http.get(f"{auth.url}/v2/{repo}/tags/list") as resp:
            assert resp.status == 401
            _, params = parse_challenge(resp.headers["WWW-Authenticate"])
        assert params["scope"] == f"repository:{repo}:pull"

        # The registry behind never sees the bearer token.
        assert inner.count() == 3
        assert all("Authorization" not in r.headers for r in inner.requests)
        assert auth.token_requests[0].had_basic
        assert auth.token_requests[0].user == "alice"
        assert [r.outcome for r in auth.requests] == [
            "missing",
            "missing",
            "forwarded",
            "forwarded",
            "forwarded",
            "missing",
        ]
        assert auth.requests[2].authorization == f"Bearer {token}"


async def test_token_with_pull_only_cannot_push(
    upstream: RegistryProcess, http: aiohttp.ClientSession
) -> None:
    repo = new_repo()
    async with TokenAuthProxy(upstream.url, users={"bob": "pw"}) as auth:
        _, body = await fetch_token(http, auth, f"repository:{repo}:pull", user=("bob", "pw"))
        async with http.post(
            f"{auth.url}/v2/{repo}/blobs/uploads/", headers=bearer(body["token"])
        ) as resp:
            assert resp.status == 401
            _, params = parse_challenge(resp.headers["WWW-Authenticate"])
        assert params["error"] == "insufficient_scope"
        assert params["scope"] == f"repository:{repo}:pull,push"


async def test_token_refused_for_bad_credentials(
    upstream: RegistryProcess, http: aiohttp.ClientSession
) -> None:
    scope = "repository:x/y:pull"
    async with TokenAuthProxy(upstream.url, users={"alice": "right"}) as auth:
        assert (await fetch_token(http, auth, scope, user=("alice", "wrong")))[0] == 401
        assert (await fetch_token(http, auth, scope, user=("mallory", "right")))[0] == 401
        assert (await fetch_token(http, auth, scope))[0] == 401  # anonymous not allowed
        assert [r.had_basic for r in auth.token_requests] == [True, True, False]
        assert all(r.user is None and r.status == 401 for r in auth.token_requests)
        assert auth.tokens == {}


async def test_expired_token_gets_invalid_token(
    upstream: RegistryProcess, http: aiohttp.ClientSession
) -> None:
    async with TokenAuthProxy(upstream.url, users={"alice": "pw"}, token_ttl=1) as auth:
        _, body = await fetch_token(http, auth, user=("alice", "pw"))
        assert body["expires_in"] == 1
        async with http.get(f"{auth.url}/v2/", headers=bearer(body["token"])) as resp:
            assert resp.status == 200
        await asyncio.sleep(1.2)
        async with http.get(f"{auth.url}/v2/", headers=bearer(body["token"])) as resp:
            assert resp.status == 401
            _, params = parse_challenge(resp.headers["WWW-Authenticate"])
        assert params["error"] == "invalid_token"
        async with http.get(f"{auth.url}/v2/", headers=bearer("made-up")) as resp:
            assert resp.status == 401
        assert auth.requests[-1].outcome == "invalid_token"


async def test_authorize_hook_catalog_and_expire_all(
    upstream: RegistryProcess, http: aiohttp.ClientSession
) -> None:
    def read_only(user: str | None, kind: str, name: str, wanted: frozenset[str]) -> set[str]:
        return set(wanted) if user == "admin" else set(wanted) & {"pull"}

    repo = new_repo()
    users = {"admin": "a", "reader": "r"}
    async with TokenAuthProxy(upstream.url, users=users, authorize=read_only) as auth:
        _, body = await fetch_token(
            http, auth, f"repository:{repo}:pull,push", user=("reader", "r")
        )
        assert body["scope"] == f"repository:{repo}:pull"
        async with http.get(f"{auth.url}/v2/_catalog", headers=bearer(body["token"])) as resp:
            assert resp.status == 401
            _, params = parse_challenge(resp.headers["WWW-Authenticate"])
        assert params["scope"] == "registry:catalog:*"

        _, body = await fetch_token(http, auth, "registry:catalog:*", user=("admin", "a"))
        async with http.get(f"{auth.url}/v2/_catalog", headers=bearer(body["token"])) as resp:
            assert resp.status == 200
            assert "repositories" in orjson.loads(await resp.read())
        auth.expire_all()
        async with http.get(f"{auth.url}/v2/_catalog", headers=bearer(body["token"])) as resp:
            assert resp.status == 401
        assert auth.requests[-1].outcome == "invalid_token"


async def test_post_token_with_refresh(
    upstream: RegistryProcess, http: aiohttp.ClientSession
) -> None:
    repo = new_repo()
    scope = f"repository:{repo}:pull,push"
    async with TokenAuthProxy(upstream.url, users={"alice": "pw"}) as auth:
        form = {
            "grant_type": "password",
            "username": "alice",
            "password": "pw",
            "service": auth.service,
            "scope": scope,
            "client_id": "asyncreg",
            "access_type": "offline",
        }
        async with http.post(auth.realm, data=form) as resp:
            assert resp.status == 200
            first = orjson.loads(await resp.read())
        assert first["refresh_token"]
        assert first["access_token"]
        assert first["scope"] == scope

        bad = {**form, "password": "nope"}
        async with http.post(auth.realm, data=bad) as resp:
            assert resp.status == 401

        refresh = {
            "grant_type": "refresh_token",
            "refresh_token": first["refresh_token"],
            "service": auth.service,
            "scope": scope,
        }
        async with http.post(auth.realm, data=refresh) as resp:
            assert resp.status == 200
            second = orjson.loads(await resp.read())
        assert second["access_token"] != first["access_token"]
        await push_blob(http, auth.url, repo, b"refreshed", headers=bearer(second["access_token"]))
        assert auth.token_requests[0].form is not None
        assert auth.token_requests[0].form["grant_type"] == "password"
        assert [r.user for r in auth.token_requests] == ["alice", None, "alice"]


async def test_anonymous_pull(upstream: RegistryProcess, http: aiohttp.ClientSession) -> None:
    repo = new_repo()
    digest = await push_blob(http, upstream.url, repo, b"public")
    async with TokenAuthProxy(upstream.url, allow_anonymous_pull=True) as auth:
        status, body = await fetch_token(http, auth, f"repository:{repo}:pull,push")
        assert status == 200
        assert body["scope"] == f"repository:{repo}:pull"
        headers = bearer(body["token"])
        async with http.get(f"{auth.url}/v2/{repo}/blobs/{digest}", headers=headers) as resp:
            assert await resp.read() == b"public"
        async with http.post(f"{auth.url}/v2/{repo}/blobs/uploads/", headers=headers) as resp:
            assert resp.status == 401


async def test_mount_needs_pull_on_source(
    upstream: RegistryProcess, http: aiohttp.ClientSession
) -> None:
    source, target = new_repo(), new_repo()
    async with TokenAuthProxy(upstream.url, users={"alice": "pw"}) as auth:
        creds = ("alice", "pw")
        _, body = await fetch_token(http, auth, f"repository:{source}:pull,push", user=creds)
        digest = await push_blob(http, auth.url, source, b"mount me", headers=bearer(body["token"]))

        mount = f"{auth.url}/v2/{target}/blobs/uploads/?mount={digest}&from={source}"
        _, body = await fetch_token(http, auth, f"repository:{target}:pull,push", user=creds)
        async with http.post(mount, headers=bearer(body["token"])) as resp:
            assert resp.status == 202  # an ordinary upload start, not a mount
        assert auth.requests[-1].mount_stripped

        _, body = await fetch_token(
            http, auth, f"repository:{target}:pull,push", f"repository:{source}:pull", user=creds
        )
        async with http.post(mount, headers=bearer(body["token"])) as resp:
            assert resp.status == 201
            assert resp.headers["Docker-Content-Digest"] == digest
        assert not auth.requests[-1].mount_stripped


# --- header log server ------------------------------------------------------------------------


async def test_header_log_serves_and_records(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    (tmp_path / "blobs" / "ab").mkdir(parents=True)
    (tmp_path / "blobs" / "ab" / "data").write_bytes(b"0123456789")
    (tmp_path.parent / "secret.txt").write_bytes(b"outside")
    async with HeaderLogServer(tmp_path) as server:
        assert server.url.startswith("http://127.0.0.2:")
        url = f"{server.url}/blobs/ab/data"
        async with http.get(url, headers={"X-Probe": "1", "Authorization": "Bearer t"}) as resp:
            assert resp.status == 200
            assert await resp.read() == b"0123456789"
        async with http.head(url) as resp:
            assert resp.headers["Content-Length"] == "10"
        async with http.get(url, headers={"Range": "bytes=2-4"}) as resp:
            assert resp.status == 206
            assert await resp.read() == b"234"
        async with http.get(f"{server.url}/blobs/nope") as resp:
            assert resp.status == 404
        async with http.put(url, data=b"x") as resp:
            assert resp.status == 405

        # Raw request: an HTTP client would normalise the dot segments away.
        reader, writer = await asyncio.open_connection("127.0.0.2", server.port)
        writer.write(b"GET /../secret.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await writer.drain()
        answer = await reader.read()
        writer.close()
        await writer.wait_closed()
        assert answer.startswith(b"HTTP/1.1 403") or answer.startswith(b"HTTP/1.1 404")
        assert b"outside" not in answer

        first = server.requests[0]
        assert (first.method, first.path, first.status) == ("GET", "/blobs/ab/data", 200)
        assert first.headers["X-Probe"] == "1"
        assert first.headers["Authorization"] == "Bearer t"
        assert [r.status for r in server.requests] == [200, 200, 206, 404, 405, 403]
        assert server.count("HEAD") == 1


async def test_blob_redirect_to_other_origin(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    """distribution's redirect middleware sends blob GETs to the header-log server's origin."""
    async with HeaderLogServer(tmp_path) as storage:
        with RegistryProcess(RegistryOptions(redirect_baseurl=storage.url)) as reg:
            storage.root = reg.storage_dir
            repo = new_repo()
            data = os.urandom(5_000)
            digest = await push_blob(http, reg.url, repo, data)
            blob = f"{reg.url}/v2/{repo}/blobs/{digest}"
            async with http.get(blob, allow_redirects=False) as resp:
                assert resp.status == 307
                assert resp.headers["Location"].startswith(storage.url + "/docker/registry/v2/")
            async with http.get(blob, headers={"X-Probe": "redirected"}) as resp:
                assert resp.status == 200
                assert await resp.read() == data
    assert storage.requests[-1].headers["X-Probe"] == "redirected"
    assert storage.requests[-1].path.endswith("/data")


# --- timestamps and TLS ------------------------------------------------------------------------


async def test_requests_record_arrival_and_answer_times(
    proxy: FaultProxy, http: aiohttp.ClientSession
) -> None:
    proxy.add_rule(Rule(Delay(0.3), path=r"^/v2/$", times=1))
    proxy.add_rule(Rule(Status(429, {"Retry-After": "1"}), path=r"^/v2/$", after=1, times=1))
    before = time.monotonic()
    for _ in range(3):
        async with http.get(f"{proxy.url}/v2/") as resp:
            await resp.read()
    after = time.monotonic()
    delayed, limited, plain = proxy.requests
    assert [r.status for r in proxy.requests] == [200, 429, 200]
    for r in proxy.requests:
        assert r.answered_at is not None
        assert before <= r.at <= r.answered_at <= after
    assert delayed.answered_at is not None
    assert delayed.answered_at - delayed.at >= 0.25  # answered after the Delay
    assert limited.answered_at is not None
    assert delayed.answered_at <= limited.at <= limited.answered_at <= plain.at


async def test_dropped_request_has_no_answer_time(
    proxy: FaultProxy, http: aiohttp.ClientSession
) -> None:
    proxy.add_rule(Rule(Drop(), path=r"^/v2/$", times=2))
    with pytest.raises(aiohttp.ClientConnectionError):
        async with http.get(f"{proxy.url}/v2/") as resp:
            await resp.read()
    assert [(r.status, r.answered_at) for r in proxy.requests] == [(None, None), (None, None)]


async def test_tls_proxy_in_front_of_a_tls_registry(
    tls_registry: RegistryProcess, tmp_path: Path
) -> None:
    tls = LoopbackTLS()
    ca_file = tls.write_ca(tmp_path / "proxy-ca.pem")
    assert ca_file.read_bytes() == tls.ca_pem
    assert tls_registry.ca_pem is not None
    async with (
        FaultProxy(
            tls_registry.url,
            ssl_context=tls.server_context(),
            upstream_ca_file=tls_registry.ca_pem,
        ) as proxy,
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ssl.create_default_context(cafile=str(ca_file)))
        ) as http,
    ):
        assert proxy.url == f"https://{proxy.host}"
        repo = new_repo()
        data = os.urandom(300_000)
        # push_blob checks that Location was rewritten to the (https) proxy origin.
        digest = await push_blob(http, proxy.url, repo, data)
        proxy.add_rule(Rule(Status(503), method="GET", times=1))
        proxy.add_rule(Rule(DropBodyAfter(1000), method="GET", after=1, times=1))
        url = f"{proxy.url}/v2/{repo}/blobs/{digest}"
        async with http.get(url) as resp:
            assert resp.status == 503
        with pytest.raises(aiohttp.ClientPayloadError):
            async with http.get(url) as resp:
                await resp.read()
        async with http.get(url) as resp:
            assert await resp.read() == data
        assert [r.status for r in proxy.requests] == [202, 201, 503, 200, 200]

        # A client that does not trust the proxy's CA does not get through.
        async with aiohttp.ClientSession() as untrusting:
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                async with untrusting.get(f"{proxy.url}/v2/"):
                    pass


async def test_tls_upstream_is_verified(tls_registry: RegistryProcess) -> None:
    """Without the registry's CA the proxy refuses the upstream (502), it does not skip checks."""
    tls = LoopbackTLS()
    async with (
        FaultProxy(tls_registry.url, ssl_context=tls.server_context()) as proxy,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls.client_context())) as http,
        http.get(f"{proxy.url}/v2/") as resp,
    ):
        assert resp.status == 502
        assert "certificate" in (await resp.text()).lower()
