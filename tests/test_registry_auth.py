"""Authentication, TLS and redirect confinement against real registries.

Basic auth is distribution's own htpasswd; bearer auth is `TokenAuthProxy`
(a token realm plus an auth-enforcing proxy) in front of a real registry;
TLS uses registries (and, for the realm rules, a TLS front for the token
proxy) with certificates from throw-away CAs; redirects come from
distribution's ``redirect`` storage middleware pointing at a
`HeaderLogServer` on 127.0.0.2, which records what a client sent it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
import trustme

from asyncreg import Client, Credential, HostConfig, Limits
from asyncreg.errors import AuthError, RegistryError, TransportError
from asyncreg.manifest import Descriptor
from asyncreg.testkit.headerlog import HeaderLogServer
from asyncreg.testkit.proxy import Delay, FaultProxy, Rule, Status, Throttle
from asyncreg.testkit.registry import RegistryOptions, RegistryProcess
from asyncreg.testkit.tokenauth import TokenAuthProxy
from tests.test_registry_repo import (
    blob_descriptor,
    push_blob,
    push_image,
    read_blob,
    registry_repo,
    source_of,
)

pytestmark = pytest.mark.anyio

KIB = 1024


def _creds(host: str, user: str, password: str) -> dict[str, Credential]:
    return {host: Credential(username=user, password=password)}


# --- basic auth ----------------------------------------------------------------------


async def test_basic_auth_with_the_right_credentials(
    auth_registry: RegistryProcess, repo_name: str
) -> None:
    assert auth_registry.username is not None
    assert auth_registry.password is not None
    async with FaultProxy(auth_registry.url) as proxy:
        creds = _creds(proxy.host, auth_registry.username, auth_registry.password)
        async with Client(credentials=creds) as client:
            repo = registry_repo(client, f"{proxy.host}/{repo_name}")
            image = await push_image(repo, tag="v1")
            got = await repo.manifest_get("v1")
            assert got.raw == image.raw
            layer = image.layers[0]
            assert len(await read_blob(repo, layer)) == layer.size
    # One unauthenticated ping learns the challenge; everything after it carries Basic.
    first, *rest = proxy.requests
    assert (first.path, first.status) == ("/v2/", 401)
    assert "Authorization" not in first.headers
    assert rest
    assert all(r.headers.get("Authorization", "").startswith("Basic ") for r in rest)
    assert all(r.status != 401 for r in rest)


async def test_basic_auth_without_credentials(
    auth_registry: RegistryProcess, repo_name: str
) -> None:
    async with FaultProxy(auth_registry.url) as proxy, Client() as client:
        repo = registry_repo(client, f"{proxy.host}/{repo_name}")
        with pytest.raises(AuthError) as info:
            await repo.manifest_head("v1")
    assert info.value.status == 401
    assert "no credentials" in str(info.value)
    assert [r.path for r in proxy.requests] == ["/v2/"]


async def test_basic_auth_with_a_wrong_password(
    auth_registry: RegistryProcess, repo_name: str
) -> None:
    assert auth_registry.username is not None
    async with FaultProxy(auth_registry.url) as proxy:
        creds = _creds(proxy.host, auth_registry.username, "wrong-" + secrets.token_hex(4))
        async with Client(credentials=creds) as client:
            repo = registry_repo(client, f"{proxy.host}/{repo_name}")
            with pytest.raises(AuthError) as info:
                await repo.manifest_get("v1")
            assert client.transport.retries == 0
    assert info.value.status == 401
    # The ping, then one try: the same refused credentials are not sent again.
    assert [(r.path, r.status) for r in proxy.requests] == [
        ("/v2/", 401),
        (f"/v2/{repo_name}/manifests/v1", 401),
    ]


# --- TLS -----------------------------------------------------------------------------


async def test_tls_with_the_registry_ca(tls_registry: RegistryProcess, repo_name: str) -> None:
    hosts = {tls_registry.host: HostConfig(plain_http=False, ca_file=str(tls_registry.ca_pem))}
    async with Client(hosts=hosts) as client:
        assert client.transport.base_url(tls_registry.host) == tls_registry.url
        repo = registry_repo(client, f"{tls_registry.host}/{repo_name}")
        image = await push_image(repo, tag="v1")
        assert (await repo.manifest_get("v1")).raw == image.raw
        assert len(await read_blob(repo, image.layers[0])) == image.layers[0].size


async def test_tls_without_the_ca_fails_at_once(
    tls_registry: RegistryProcess, repo_name: str
) -> None:
    hosts = {tls_registry.host: HostConfig(plain_http=False)}
    async with Client(hosts=hosts) as client:
        repo = registry_repo(client, f"{tls_registry.host}/{repo_name}")
        with pytest.raises(TransportError, match="certificate") as info:
            await repo.manifest_head("v1")
        assert client.transport.retries == 0
    assert info.value.retryable is False


async def test_tls_without_verification(tls_registry: RegistryProcess, repo_name: str) -> None:
    hosts = {tls_registry.host: HostConfig(plain_http=False, tls_verify=False)}
    async with Client(hosts=hosts) as client:
        repo = registry_repo(client, f"{tls_registry.host}/{repo_name}")
        image = await push_image(repo, tag="v1")
        assert (await repo.manifest_get("v1")).raw == image.raw


async def test_plain_http_to_a_tls_registry_fails(
    tls_registry: RegistryProcess, repo_name: str
) -> None:
    hosts = {tls_registry.host: HostConfig(plain_http=True)}
    async with Client(hosts=hosts) as client:
        repo = registry_repo(client, f"{tls_registry.host}/{repo_name}")
        with pytest.raises((RegistryError, TransportError)) as info:
            await repo.manifest_get("v1")
        assert client.transport.retries == 0
    # Go's TLS server answers a plain-HTTP request with 400 and closes.
    if isinstance(info.value, RegistryError):
        assert info.value.status == 400


# --- bearer tokens -----------------------------------------------------------------


async def test_bearer_push_and_pull_reuse_tokens(registry: RegistryProcess, repo_name: str) -> None:
    async with (
        TokenAuthProxy(registry.url, users={"alice": "pw"}) as auth,
        Client(credentials=_creds(auth.host, "alice", "pw")) as client,
    ):
        repo = registry_repo(client, f"{auth.host}/{repo_name}")
        image = await push_image(repo, layers=3, tag="v1")
        assert (await repo.manifest_get("v1")).raw == image.raw
        for layer in image.layers:
            assert len(await read_blob(repo, layer)) == layer.size
        assert await repo.tags() == ["v1"]
        assert client.transport.auth.token_fetches == len(auth.token_requests)
    forwarded = [r for r in auth.requests if r.outcome == "forwarded"]
    assert len(forwarded) >= 12
    assert 1 <= len(auth.token_requests) <= 2  # far fewer tokens than requests
    assert all(t.user == "alice" and t.status == 200 for t in auth.token_requests)
    assert f"repository:{repo_name}:pull,push" in auth.token_requests[0].scopes
    # Only the ping went without a token.
    assert [r.path for r in auth.requests if r.outcome != "forwarded"] == ["/v2/"]


async def test_bearer_wrong_password(registry: RegistryProcess, repo_name: str) -> None:
    async with (
        TokenAuthProxy(registry.url, users={"alice": "pw"}) as auth,
        Client(credentials=_creds(auth.host, "alice", "nope")) as client,
    ):
        repo = registry_repo(client, f"{auth.host}/{repo_name}")
        with pytest.raises(AuthError) as info:
            await repo.manifest_get("v1")
        assert client.transport.retries == 0
    assert info.value.status == 401
    assert [t.status for t in auth.token_requests] == [401]
    assert [r.outcome for r in auth.requests] == ["missing"]  # just the ping


async def test_bearer_anonymous_pull(registry: RegistryProcess, repo_name: str) -> None:
    async with TokenAuthProxy(
        registry.url, users={"alice": "pw"}, allow_anonymous_pull=True
    ) as auth:
        async with Client(credentials=_creds(auth.host, "alice", "pw")) as client:
            image = await push_image(registry_repo(client, f"{auth.host}/{repo_name}"), tag="v1")
        pushed_tokens = len(auth.token_requests)
        async with Client() as client:
            repo = registry_repo(client, f"{auth.host}/{repo_name}")
            assert (await repo.manifest_get("v1")).raw == image.raw
            assert len(await read_blob(repo, image.layers[0])) == image.layers[0].size
            with pytest.raises(AuthError):
                await push_blob(repo, b"anonymous may not push")
    anonymous = auth.token_requests[pushed_tokens:]
    assert anonymous
    assert all(not t.had_basic and t.user is None for t in anonymous)
    assert any(r.outcome == "insufficient_scope" for r in auth.requests)


async def test_bearer_no_anonymous_pull_unless_allowed(
    registry: RegistryProcess, repo_name: str
) -> None:
    async with TokenAuthProxy(registry.url, users={"alice": "pw"}) as auth, Client() as client:
        repo = registry_repo(client, f"{auth.host}/{repo_name}")
        with pytest.raises(AuthError):
            await repo.manifest_get("v1")
    assert [t.status for t in auth.token_requests] == [401]


async def test_token_expiring_before_a_streaming_put_restarts_the_upload(
    registry: RegistryProcess, repo_name: str
) -> None:
    """The token is valid when the PUT leaves, expired when it reaches the registry."""
    data = os.urandom(20 * KIB)
    async with (
        TokenAuthProxy(registry.url, users={"alice": "pw"}, token_ttl=1) as auth,
        FaultProxy(auth.url) as front,
    ):
        # The PUT reaches the token proxy only after every token issued so far has expired.
        front.add_rule(Rule(Delay(1.5), method="PUT", path="/blobs/uploads/", times=1))
        async with Client(credentials=_creds(front.host, "alice", "pw")) as client:
            repo = registry_repo(client, f"{front.host}/{repo_name}")
            desc = await push_blob(repo, data)
            assert await read_blob(repo, desc) == data
    puts = [r for r in auth.requests if r.method == "PUT"]
    assert [r.outcome for r in puts] == ["invalid_token", "forwarded"]
    assert puts[-1].status == 201
    assert len(auth.token_requests) >= 2


async def test_throttled_chunked_upload_spans_token_expiry(
    registry: RegistryProcess, repo_name: str
) -> None:
    """Five throttled PATCHes take 1.5 s at least; tokens live 1 s: the client must renew."""
    data = os.urandom(320 * KIB)
    async with (
        TokenAuthProxy(registry.url, users={"alice": "pw"}, token_ttl=1) as auth,
        FaultProxy(auth.url) as front,
    ):
        front.add_rule(Rule(Throttle(160 * KIB), method="PATCH"))
        client = Client(
            limits=Limits(upload_chunk_size=64 * KIB),
            hosts={front.host: HostConfig(chunked_upload=True)},
            credentials=_creds(front.host, "alice", "pw"),
        )
        async with client:
            repo = registry_repo(client, f"{front.host}/{repo_name}")
            desc = await push_blob(repo, data)
            assert await read_blob(repo, desc) == data
    assert front.count("PATCH") == 5
    assert len(auth.token_requests) >= 2
    patches = [r for r in auth.requests if r.method == "PATCH" and r.outcome == "forwarded"]
    assert len(patches) == 5
    assert {r.status for r in patches} == {202}
    # A refused PATCH (if any) was replayed with a fresh token, never given up on.
    assert all(r.outcome in ("forwarded", "invalid_token", "missing") for r in auth.requests)


async def test_expired_token_is_renewed_on_401(registry: RegistryProcess, repo_name: str) -> None:
    async with (
        TokenAuthProxy(registry.url, users={"alice": "pw"}) as auth,
        Client(credentials=_creds(auth.host, "alice", "pw")) as client,
    ):
        repo = registry_repo(client, f"{auth.host}/{repo_name}")
        image = await push_image(repo, tag="v1")
        before = len(auth.token_requests)
        auth.expire_all()  # the client still believes its cached token is good
        assert (await repo.manifest_get("v1")).raw == image.raw
    assert len(auth.token_requests) == before + 1
    last_two = [r.outcome for r in auth.requests[-2:]]
    assert last_two == ["invalid_token", "forwarded"]


async def test_requests_refused_together_share_one_new_token(
    registry: RegistryProcess, repo_name: str
) -> None:
    async with (
        TokenAuthProxy(registry.url, users={"alice": "pw"}) as auth,
        Client(credentials=_creds(auth.host, "alice", "pw")) as client,
    ):
        repo = registry_repo(client, f"{auth.host}/{repo_name}")
        image = await push_image(repo, layers=6)
        before = len(auth.token_requests)
        auth.expire_all()
        sizes: list[int] = []

        async def read(layer: Descriptor) -> None:
            sizes.append(len(await read_blob(repo, layer)))

        async with anyio.create_task_group() as tg:
            for layer in image.layers:
                tg.start_soon(read, layer)
    assert sorted(sizes) == sorted(d.size for d in image.layers)
    assert len(auth.token_requests) == before + 1
    assert sum(r.outcome == "invalid_token" for r in auth.requests) >= 1


# --- token realm rules ---------------------------------------------------------------


class _RealmProxy(TokenAuthProxy):
    """A `TokenAuthProxy` whose challenges name ``realm_override`` as the realm."""

    realm_override: str | None = None

    @property
    def realm(self) -> str:
        return self.realm_override or super().realm


@pytest.fixture(scope="module")
def tls_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(tls_ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "front-ca.pem"
    tls_ca.cert_pem.write_to_path(str(path))
    return str(path)


@contextlib.asynccontextmanager
async def _tls_front(ca: trustme.CA, target_port: int) -> AsyncIterator[str]:
    """A TLS terminator on 127.0.0.1 passing bytes to ``target_port``; yields ``HOST:PORT``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    writers: list[asyncio.StreamWriter] = []

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(64 * KIB):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
        writers.extend((writer, up_writer))
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        for writer in writers:  # ends the pipes: their readers see the end of the stream
            writer.close()
        await server.wait_closed()


@pytest.mark.parametrize("verify", ["ca-file", "no-verify"])
async def test_https_registry_with_https_realm_on_its_own_host(
    registry: RegistryProcess, repo_name: str, tls_ca: trustme.CA, ca_file: str, verify: str
) -> None:
    """A private-CA registry serving its own realm: the token request uses the host's TLS
    settings (Harbor, for one, has its realm on the registry's host)."""
    async with Client() as pusher:
        image = await push_image(registry_repo(pusher, f"{registry.host}/{repo_name}"), tag="v1")
    async with (
        _RealmProxy(registry.url, users={"alice": "pw"}) as auth,
        _tls_front(tls_ca, auth.port) as front,
    ):
        auth.realm_override = f"https://{front}{auth.realm_path}"
        if verify == "ca-file":
            config = HostConfig(plain_http=False, ca_file=ca_file)
        else:
            config = HostConfig(plain_http=False, tls_verify=False)
        hosts = {front: config}
        async with Client(hosts=hosts, credentials=_creds(front, "alice", "pw")) as client:
            repo = registry_repo(client, f"{front}/{repo_name}")
            assert (await repo.manifest_get("v1")).raw == image.raw
    assert [t.status for t in auth.token_requests] == [200]


async def test_plain_http_realm_for_an_https_registry_is_refused(
    registry: RegistryProcess, repo_name: str, tls_ca: trustme.CA, ca_file: str
) -> None:
    async with (
        _RealmProxy(registry.url, users={"alice": "pw"}) as auth,
        _tls_front(tls_ca, auth.port) as front,
    ):
        # The challenge names the token proxy's own plain-HTTP realm.
        assert auth.realm.startswith("http://")
        hosts = {front: HostConfig(plain_http=False, ca_file=ca_file)}
        async with Client(hosts=hosts, credentials=_creds(front, "alice", "pw")) as client:
            repo = registry_repo(client, f"{front}/{repo_name}")
            with pytest.raises(AuthError, match="plain-HTTP token realm"):
                await repo.manifest_get("v1")
    assert auth.token_requests == []  # the password never went over plain HTTP
    assert [r.path for r in auth.requests] == ["/v2/"]


async def test_token_answer_arriving_in_pieces(registry: RegistryProcess, repo_name: str) -> None:
    async with (
        _RealmProxy(registry.url, users={"alice": "pw"}) as auth,
        FaultProxy(auth.url) as slow_realm,
    ):
        # The realm is reached through a proxy that trickles the answer in 100-byte pieces.
        slow_realm.add_rule(Rule(Throttle(1000), path="^/token$"))
        auth.realm_override = f"{slow_realm.url}{auth.realm_path}"
        async with Client(credentials=_creds(auth.host, "alice", "pw")) as client:
            repo = registry_repo(client, f"{auth.host}/{repo_name}")
            image = await push_image(repo, layers=1, tag="v1")
            assert (await repo.manifest_get("v1")).raw == image.raw
    assert slow_realm.count("GET", "^/token$") == 1
    assert [t.status for t in auth.token_requests] == [200]


@pytest.mark.parametrize("userinfo", ["alice:pw@", "alice@", ":x@"])
async def test_realm_with_userinfo_is_refused(
    registry: RegistryProcess, repo_name: str, userinfo: str
) -> None:
    async with _RealmProxy(registry.url, users={"alice": "pw"}) as auth:
        auth.realm_override = f"http://{userinfo}{auth.host}{auth.realm_path}"
        async with Client(credentials=_creds(auth.host, "alice", "pw")) as client:
            repo = registry_repo(client, f"{auth.host}/{repo_name}")
            with pytest.raises(AuthError, match="must not contain credentials"):
                await repo.manifest_get("v1")
    assert auth.token_requests == []


@pytest.mark.parametrize("realm", ["ftp://127.0.0.1/token", "/token", ""])
async def test_realm_that_is_not_an_http_url_is_refused(
    registry: RegistryProcess, repo_name: str, realm: str
) -> None:
    async with _RealmProxy(registry.url, users={"alice": "pw"}) as auth:
        auth.realm_override = realm or " "
        async with Client(credentials=_creds(auth.host, "alice", "pw")) as client:
            repo = registry_repo(client, f"{auth.host}/{repo_name}")
            with pytest.raises(AuthError, match="not an http"):
                await repo.manifest_get("v1")
    assert auth.token_requests == []


# --- redirect confinement ---------------------------------------------------------------


@contextlib.asynccontextmanager
async def _redirecting(
    root: Path, *, htpasswd: tuple[str, str] | None = None, tls: bool = False
) -> AsyncIterator[tuple[RegistryProcess, HeaderLogServer]]:
    """A registry whose blob GETs redirect to a `HeaderLogServer` on 127.0.0.2.

    The server starts first (the registry needs its address) and serves the
    registry's storage root once the registry has one.
    """
    async with HeaderLogServer(root) as storage:
        options = RegistryOptions(htpasswd=htpasswd, tls=tls, redirect_baseurl=storage.url)
        with RegistryProcess(options) as reg:
            storage.root = reg.storage_dir
            yield reg, storage


async def test_redirect_drops_basic_credentials(repo_name: str, tmp_path: Path) -> None:
    user, password = "bob", secrets.token_urlsafe(8)
    data = os.urandom(200 * KIB)
    async with (
        _redirecting(tmp_path, htpasswd=(user, password)) as (reg, storage),
        Client(credentials=_creds(reg.host, user, password)) as client,
    ):
        repo = registry_repo(client, f"{reg.host}/{repo_name}")
        desc = await push_blob(repo, data)
        assert storage.requests == []  # uploads are not redirected
        assert await read_blob(repo, desc) == data
        assert await repo.blob_head(desc.digest) == len(data)
    assert storage.count("GET") >= 1
    assert all(r.status in (200, 206) for r in storage.requests)
    assert all(r.path.endswith(f"/{desc.digest.hex}/data") for r in storage.requests)
    assert [r for r in storage.requests if "Authorization" in r.headers] == []


async def test_redirect_drops_bearer_tokens(repo_name: str, tmp_path: Path) -> None:
    data = os.urandom(100 * KIB)
    async with (
        _redirecting(tmp_path) as (reg, storage),
        TokenAuthProxy(reg.url, users={"alice": "pw"}) as auth,
        Client(credentials=_creds(auth.host, "alice", "pw")) as client,
    ):
        repo = registry_repo(client, f"{auth.host}/{repo_name}")
        desc = await push_blob(repo, data)
        assert await read_blob(repo, desc) == data
    blob_gets = [r for r in auth.requests if r.method == "GET" and "/blobs/sha256:" in r.path]
    assert blob_gets
    assert all((r.authorization or "").startswith("Bearer ") for r in blob_gets)
    assert all(r.status == 307 for r in blob_gets)
    assert storage.count("GET") == len(blob_gets)
    assert [r for r in storage.requests if "Authorization" in r.headers] == []


async def test_challenge_from_the_redirect_target_is_not_learned(
    repo_name: str, tmp_path: Path
) -> None:
    """Storage answering 401 with its own realm must not get the registry's credentials."""
    user, password = "carol", secrets.token_urlsafe(8)
    data = os.urandom(5 * KIB)
    async with HeaderLogServer(tmp_path) as storage, FaultProxy(storage.url) as front:
        # The redirect target (another origin) asks for a token at a realm of its own.
        lure = f'Bearer realm="{storage.url}/token",service="storage"'
        options = RegistryOptions(htpasswd=(user, password), redirect_baseurl=front.url)
        with RegistryProcess(options) as reg:
            storage.root = reg.storage_dir
            async with Client(credentials=_creds(reg.host, user, password)) as client:
                repo = registry_repo(client, f"{reg.host}/{repo_name}")
                desc = await push_blob(repo, data)
                front.add_rule(Rule(Status(401, {"WWW-Authenticate": lure}), times=1))
                with pytest.raises(AuthError):
                    await read_blob(repo, desc)
                # The registry's own auth is intact: the next read works.
                assert await read_blob(repo, desc) == data
    assert [r.status for r in front.requests] == [401, 200]
    assert storage.count("GET") == 1
    assert [r.path for r in storage.requests if r.path == "/token"] == []
    assert [r for r in storage.requests if "Authorization" in r.headers] == []


async def test_https_to_http_redirect_is_refused(repo_name: str, tmp_path: Path) -> None:
    data = os.urandom(10 * KIB)
    async with _redirecting(tmp_path, tls=True) as (reg, storage):
        hosts = {reg.host: HostConfig(plain_http=False, ca_file=str(reg.ca_pem))}
        async with Client(hosts=hosts) as client:
            repo = registry_repo(client, f"{reg.host}/{repo_name}")
            desc = blob_descriptor(data)
            await repo.blob_put(desc, source_of(data))
            with pytest.raises(TransportError, match="refusing redirect from https"):
                await repo.blob_open(desc)
            # A refused redirect is a decision, not a glitch: it is not retried.
            assert client.transport.retries == 0
    assert storage.requests == []
