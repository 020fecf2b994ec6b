"""Stopping a job gracefully: in-flight PUTs finish, chunked sessions end and are DELETEd.

distribution cannot cancel an upload whose one PUT broke off (the DELETE is
answered 404 and the session stays), so `Client.stop` lets such PUTs finish
and starts nothing new; a chunked upload stops at its next chunk boundary and
its session is DELETEd with the newest ``Location``, which distribution frees.
Both the zero-copy and the streaming path are covered for the monolithic case.
"""

from __future__ import annotations

import signal
import subprocess
import sys

import anyio
import pytest

from asyncreg import Client, HostConfig, Limits
from asyncreg.engine.progress import Event, EventKind, Progress
from asyncreg.errors import Interrupted
from asyncreg.testkit.builder import ImageSpec
from asyncreg.testkit.proxy import FaultProxy, Rule, Throttle
from asyncreg.testkit.registry import RegistryProcess
from tests.fixtures import Seeder

pytestmark = pytest.mark.anyio

KIB = 1024
SPEC = ImageSpec(layers=4, layer_size=256 * KIB)


def _answered(proxy: FaultProxy, method: str, status: int, path: str = "/blobs/uploads/") -> int:
    return sum(
        1 for r in proxy.requests if r.method == method and path in r.path and r.status == status
    )


@pytest.mark.parametrize("zero_copy", [True, False], ids=["splice", "stream"])
async def test_stop_lets_the_puts_in_flight_finish_and_starts_nothing_new(
    seeded: Seeder,
    registry: RegistryProcess,
    registry_b: RegistryProcess,
    repo_name: str,
    zero_copy: bool,
) -> None:
    built, src = seeded(SPEC)
    async with FaultProxy(registry_b.url) as dp:
        # Slow uploads, one at a time: the stop comes while the first PUT is sending.
        dp.add_rule(Rule(Throttle(512 * KIB), method="PUT", path="/blobs/uploads/"))
        limits = Limits(per_host=1, zero_copy=zero_copy)
        async with Client(limits=limits) as client:

            def on_event(event: Event) -> None:
                if event.kind is EventKind.STARTED and event.what == "blob":
                    client.stop()

            with pytest.raises(Interrupted):
                await client.copy(src, f"{dp.host}/{repo_name}:v1", on_event=on_event)
            # The PUT in flight was allowed to finish; no other upload was opened;
            # nothing was tagged (the manifest's children are not all there).
            assert _answered(dp, "PUT", 201) == 1
            assert sum(1 for r in dp.requests if r.method == "POST") == 1
            assert sum(1 for r in dp.requests if "/manifests/" in r.path and r.method == "PUT") == 0
            assert await client.repo(f"{registry_b.host}/{repo_name}").manifest_head("v1") is None
    assert len(built.blobs) > 1


async def test_stop_ends_a_chunked_upload_at_a_boundary_and_deletes_its_session(
    seeded: Seeder, registry: RegistryProcess, registry_b: RegistryProcess, repo_name: str
) -> None:
    built, src = seeded(ImageSpec(layers=1, layer_size=1024 * KIB))
    layer = built.layers[0]
    async with FaultProxy(registry_b.url) as dp:
        dp.add_rule(Rule(Throttle(1024 * KIB), method="PATCH"))
        hosts = {dp.host: HostConfig(plain_http=True, chunked_upload=True)}
        limits = Limits(per_host=1, upload_chunk_size=64 * KIB)
        async with Client(limits=limits, hosts=hosts) as client:
            patched = anyio.Event()

            def on_event(event: Event) -> None:
                if event.kind is EventKind.BYTES and layer.hex in event.digest:
                    patched.set()

            async def stop_soon() -> None:
                await patched.wait()
                client.stop()

            async with anyio.create_task_group() as tg:
                tg.start_soon(stop_soon)
                with pytest.raises(Interrupted):
                    await client.copy(src, f"{dp.host}/{repo_name}:v1", on_event=on_event)
                tg.cancel_scope.cancel()
        patches = [
            r
            for r in dp.requests
            if r.method == "PATCH" and r.headers.get("Content-Length") == str(64 * KIB)
        ]
        deletes = [r for r in dp.requests if r.method == "DELETE"]
        assert patches, "the upload never started"
        # 1 MiB in 64 KiB chunks is 16 PATCHes: the stop ended it early.
        assert len(patches) < 16
        # The session was DELETEd with the newest Location, and the registry freed it.
        assert [r.status for r in deletes] == [204]
        # Only the small config blob was completed (before the stop).
        assert _answered(dp, "PUT", 201) == 1


def test_cli_first_interrupt_drains_and_exits_130(
    seeded: Seeder, registry: RegistryProcess, registry_b: RegistryProcess, repo_name: str
) -> None:
    """SIGINT once: the CLI says what it waits for, finishes the PUT in flight, exits 130."""
    built, src = seeded(SPEC)

    async def run() -> tuple[int, str, int]:
        async with FaultProxy(registry_b.url) as dp:
            dp.add_rule(Rule(Throttle(256 * KIB), method="PUT", path="/blobs/uploads/"))
            proc = await anyio.open_process(
                [
                    sys.executable,
                    "-m",
                    "asyncreg",
                    "copy",
                    src,
                    f"{dp.host}/{repo_name}:v1",
                    "--per-host",
                    "1",
                    "--progress",
                    "plain",
                ],
                stderr=subprocess.PIPE,
            )
            # Wait until a PUT is in flight, then interrupt once.
            with anyio.fail_after(30):
                while not any(r.method == "PUT" for r in dp.requests):  # noqa: ASYNC110
                    await anyio.sleep(0.05)
            proc.send_signal(signal.SIGINT)
            with anyio.fail_after(30):
                await proc.wait()
            assert proc.stderr is not None
            err = (await proc.stderr.receive()).decode() if proc.returncode is not None else ""
            # Drain the rest of stderr.
            try:
                while True:
                    err += (await proc.stderr.receive()).decode()
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                pass
            assert proc.returncode is not None
            return proc.returncode, err, _answered(dp, "PUT", 201)

    code, err, finished = anyio.run(run)
    assert code == 130, err
    assert "no new transfer starts" in err
    # What was sending finished (a small config may have finished before it); the
    # rest never started.
    assert 1 <= finished < len(built.blobs)
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("asyncreg: interrupted")


@pytest.mark.parametrize("zero_copy", [True, False], ids=["splice", "stream"])
async def test_abandoned_put_is_reported_as_an_unclean_session(
    seeded: Seeder,
    registry: RegistryProcess,
    registry_b: RegistryProcess,
    repo_name: str,
    zero_copy: bool,
) -> None:
    """Cancelling mid-PUT: the DELETE distribution cannot honour is counted, not hidden."""
    _, src = seeded(ImageSpec(layers=1, layer_size=1024 * KIB))
    async with FaultProxy(registry_b.url) as dp:
        dp.add_rule(Rule(Throttle(256 * KIB), method="PUT", path="/blobs/uploads/"))
        progress = Progress()
        failed: list[str] = []
        progress.subscribe(lambda e: failed.append(e.error) if e.kind is EventKind.FAILED else None)
        async with Client(limits=Limits(per_host=1, zero_copy=zero_copy)) as client:
            with anyio.move_on_after(1.5):
                await client.copy(src, f"{dp.host}/{repo_name}:v1", progress=progress)
        # What a user reads about the abandoned blob: "cancelled", not a cancel scope's repr.
        assert failed
        assert set(failed) == {"cancelled"}
        deletes = [r.status for r in dp.requests if r.method == "DELETE"]
    assert 404 in deletes
    assert progress.statistics().unclean == deletes.count(404)
