"""The zero-copy relay (``splice``) between plain-HTTP registries, and its fallbacks.

Every case runs against the real registry; the proxy shows which path moved
the bytes: the relay sends ``Connection: close`` on its raw GET and PUT, the
aiohttp path does not.
"""

from __future__ import annotations

import pytest

from asyncreg import Client, Credential, Digest, HostConfig, Limits
from asyncreg.errors import DigestMismatchError
from asyncreg.testkit.builder import ImageSpec
from asyncreg.testkit.proxy import Corrupt, DropBodyAfter, FaultProxy, IgnoreRange, Rule
from asyncreg.testkit.registry import RegistryProcess
from asyncreg.testkit.tokenauth import TokenAuthProxy
from asyncreg.testkit.validate import validate
from tests.fixtures import Seeder

pytestmark = pytest.mark.anyio

SPEC = ImageSpec(layers=2, layer_size=512 * 1024)


def _relayed(proxy: FaultProxy, method: str) -> int:
    return sum(
        1
        for r in proxy.requests
        if r.method == method and "/blobs/" in r.path and r.headers.get("Connection") == "close"
    )


@pytest.mark.parametrize("zero_copy", [True, False])
async def test_relay_is_used_between_plain_http_registries(
    seeded: Seeder,
    registry: RegistryProcess,
    registry_b: RegistryProcess,
    repo_name: str,
    zero_copy: bool,
) -> None:
    built, src = seeded(SPEC)
    async with FaultProxy(registry.url) as sp, FaultProxy(registry_b.url) as dp:
        dst = f"{dp.host}/{repo_name}:v1"
        async with Client(limits=Limits(zero_copy=zero_copy)) as client:
            result = await client.copy(src.replace(registry.host, sp.host), dst)
            await validate(client.repo(dst), "v1")
        expected = len(built.blobs) if zero_copy else 0
        assert _relayed(sp, "GET") == expected
        assert _relayed(dp, "PUT") == expected
    assert result.bytes_moved == built.blob_bytes


async def test_relay_resumes_when_the_server_ignores_range(
    seeded: Seeder, registry: RegistryProcess, registry_b: RegistryProcess, repo_name: str
) -> None:
    built, src = seeded(SPEC)
    layer = built.layers[0]
    async with FaultProxy(registry.url) as sp:
        sp.add_rule(Rule(DropBodyAfter(100_000), method="GET", path=layer.hex, times=1))
        sp.add_rule(Rule(IgnoreRange(), method="GET", path=layer.hex))
        async with Client() as client:
            result = await client.copy(
                src.replace(registry.host, sp.host), f"{registry_b.host}/{repo_name}:v1"
            )
            await validate(client.repo(f"{registry_b.host}/{repo_name}"), "v1")
        gets = [r for r in sp.requests if r.method == "GET" and layer.hex in r.path]
        assert [r.headers.get("Range") for r in gets] == [None, "bytes=100000-"]
    assert str(result.digest) == built.digest


async def test_relay_of_corrupt_bytes_is_refused_by_the_target(
    seeded: Seeder, registry: RegistryProcess, registry_b: RegistryProcess, repo_name: str
) -> None:
    built, src = seeded(SPEC)
    async with FaultProxy(registry.url) as sp:
        sp.add_rule(Rule(Corrupt(4242), method="GET", path=built.layers[1].hex))
        async with Client() as client:
            with pytest.raises(DigestMismatchError):
                await client.copy(
                    src.replace(registry.host, sp.host), f"{registry_b.host}/{repo_name}:v1"
                )
            repo = client.repo(f"{registry_b.host}/{repo_name}")
            assert await repo.manifest_head("v1") is None
            assert await repo.blob_head(Digest.parse(built.layers[1].digest)) is None


async def test_relay_steps_aside_for_chunked_hosts(
    seeded: Seeder, registry_b: RegistryProcess, repo_name: str
) -> None:
    built, src = seeded(SPEC)
    async with FaultProxy(registry_b.url) as dp:
        hosts = {dp.host: HostConfig(chunked_upload=True)}
        async with Client(hosts=hosts) as client:
            result = await client.copy(src, f"{dp.host}/{repo_name}:v1")
        assert _relayed(dp, "PUT") == 0
        assert dp.count("PATCH") >= len(built.blobs)
    assert str(result.digest) == built.digest


async def test_relay_carries_bearer_tokens(
    seeded: Seeder, registry_b: RegistryProcess, repo_name: str
) -> None:
    built, src = seeded(SPEC)
    async with (
        TokenAuthProxy(registry_b.url, users={"alice": "pw"}) as auth,
        FaultProxy(auth.url) as dp,
    ):
        creds = {dp.host: Credential(username="alice", password="pw")}
        async with Client(credentials=creds) as client:
            result = await client.copy(src, f"{dp.host}/{repo_name}:v1")
            await validate(client.repo(f"{dp.host}/{repo_name}"), "v1")
        assert _relayed(dp, "PUT") == len(built.blobs)
        relayed = [r for r in auth.requests if r.method == "PUT" and "/blobs/" in r.path]
        assert relayed
        assert all(r.outcome == "forwarded" for r in relayed)
    assert str(result.digest) == built.digest


async def test_relay_that_breaks_resumes_in_place_and_counts_bytes_once(
    seeded: Seeder, registry: RegistryProcess, registry_b: RegistryProcess, repo_name: str
) -> None:
    from asyncreg import RetryPolicy

    built, src = seeded(SPEC)
    layer = built.layers[0]
    async with FaultProxy(registry.url) as sp:
        # The relay's GET and its first resume both break; each resume continues
        # the same spliced PUT at the exact offset, spending from one budget.
        sp.add_rule(Rule(DropBodyAfter(100_000), method="GET", path=layer.hex, times=2))
        limits = Limits(retry=RetryPolicy(resume_attempts=1, backoff_base=0.01))
        async with Client(limits=limits) as client:
            result = await client.copy(
                src.replace(registry.host, sp.host), f"{registry_b.host}/{repo_name}:v1"
            )
            await validate(client.repo(f"{registry_b.host}/{repo_name}"), "v1")
        gets = [r for r in sp.requests if r.method == "GET" and layer.hex in r.path]
        assert [r.headers.get("Connection") for r in gets] == ["close"] * 3
        assert [r.headers.get("Range") for r in gets] == [None, "bytes=100000-", "bytes=200000-"]
        assert result.retries == 2
    assert result.bytes_moved == built.blob_bytes
