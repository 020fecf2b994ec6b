"""Slots: the global and per-host concurrency limits of a job."""

from __future__ import annotations

from collections import Counter

import anyio
import pytest
from anyio.lowlevel import checkpoint

from asyncreg.config import Limits
from asyncreg.engine.limits import Slots

pytestmark = pytest.mark.anyio


class Tracker:
    """Counts holders now and the most ever seen, globally and per host."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        self.host_now: Counter[str] = Counter()
        self.host_peak: Counter[str] = Counter()

    def enter(self, hosts: tuple[str, ...]) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)
        for host in set(hosts):
            self.host_now[host] += 1
            self.host_peak[host] = max(self.host_peak[host], self.host_now[host])

    def leave(self, hosts: tuple[str, ...]) -> None:
        self.now -= 1
        for host in set(hosts):
            self.host_now[host] -= 1


async def _churn(slots: Slots, tracker: Tracker, hosts: tuple[str, ...], rounds: int) -> None:
    for _ in range(rounds):
        async with slots.hold(*hosts):
            tracker.enter(hosts)
            for _ in range(3):
                await checkpoint()
            tracker.leave(hosts)
        await checkpoint()


async def test_global_limit_is_never_exceeded() -> None:
    slots = Slots(Limits(transfers=3, per_host=100))
    tracker = Tracker()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for i in range(30):
                tg.start_soon(_churn, slots, tracker, (f"host{i % 7}",), 5)
    assert tracker.peak == 3  # reached, never passed
    assert tracker.now == 0


async def test_per_host_limit_is_never_exceeded() -> None:
    slots = Slots(Limits(transfers=50, per_host=2), per_host={"slow": 1})
    tracker = Tracker()
    choices = [("a",), ("b",), ("a", "b"), ("slow",), ("a", "slow"), ("b", "b")]
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for i in range(40):
                tg.start_soon(_churn, slots, tracker, choices[i % len(choices)], 5)
    assert tracker.host_peak["a"] == 2
    assert tracker.host_peak["b"] == 2
    assert tracker.host_peak["slow"] == 1
    assert tracker.peak <= 50


async def test_limits_reached_while_others_wait() -> None:
    slots = Slots(Limits(transfers=3, per_host=2))
    release = anyio.Event()
    holding = 0

    async def hold(host: str) -> None:
        nonlocal holding
        async with slots.hold(host):
            holding += 1
            await release.wait()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for host in ["a", "a", "b", "c", "d"]:
                tg.start_soon(hold, host)
            await anyio.wait_all_tasks_blocked()
            stats = slots.statistics()
            assert holding == 3
            assert stats.in_flight == 3
            assert dict(stats.per_host) == {"a": 2, "b": 1}
            release.set()
    assert slots.statistics().in_flight == 0


@pytest.mark.parametrize("transfers", [1, 2, 8])
async def test_crossed_host_pairs_do_not_deadlock(transfers: int) -> None:
    slots = Slots(Limits(transfers=transfers, per_host=1))
    tracker = Tracker()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for i in range(20):
                hosts = ("a", "b") if i % 2 == 0 else ("b", "a")
                tg.start_soon(_churn, slots, tracker, hosts, 5)
    assert tracker.host_peak["a"] == 1
    assert tracker.host_peak["b"] == 1
    assert tracker.now == 0


async def test_same_host_twice_takes_one_slot() -> None:
    slots = Slots(Limits(transfers=1, per_host=1))
    with anyio.fail_after(10):
        async with slots.hold("a", "a"):
            assert slots.statistics().per_host == {"a": 1}


async def test_statistics_reflect_holders() -> None:
    slots = Slots(Limits(transfers=4, per_host=4))
    assert slots.statistics().in_flight == 0
    assert dict(slots.statistics().per_host) == {}
    release = anyio.Event()

    async def hold(*hosts: str) -> None:
        async with slots.hold(*hosts):
            await release.wait()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(hold, "src", "dst")
            await anyio.wait_all_tasks_blocked()
            stats = slots.statistics()
            assert stats.in_flight == 1
            assert dict(stats.per_host) == {"src": 1, "dst": 1}
            tg.start_soon(hold, "dst")
            tg.start_soon(hold)
            await anyio.wait_all_tasks_blocked()
            stats = slots.statistics()
            assert stats.in_flight == 3
            assert dict(stats.per_host) == {"src": 1, "dst": 2}
            release.set()
    stats = slots.statistics()
    assert stats.in_flight == 0
    assert dict(stats.per_host) == {"src": 0, "dst": 0}


async def test_slots_are_released_on_error() -> None:
    slots = Slots(Limits(transfers=1, per_host=1))
    with pytest.raises(RuntimeError):
        async with slots.hold("a", "b"):
            raise RuntimeError("transfer failed")
    stats = slots.statistics()
    assert stats.in_flight == 0
    assert dict(stats.per_host) == {"a": 0, "b": 0}
