"""SingleFlight: one run per key, waiters share it, failures are not remembered."""

from __future__ import annotations

import anyio
import pytest

from asyncreg.engine.singleflight import SingleFlight

pytestmark = pytest.mark.anyio


class Boom(Exception):
    pass


async def test_one_run_for_many_concurrent_askers() -> None:
    flight: SingleFlight[int] = SingleFlight()
    release = anyio.Event()
    calls = 0
    results: list[tuple[int, bool]] = []

    async def work() -> int:
        nonlocal calls
        calls += 1
        await release.wait()
        return 42

    async def ask() -> None:
        results.append(await flight.do("k", work))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(ask)
            await anyio.wait_all_tasks_blocked()
            assert calls == 1
            assert not flight.finished("k")
            release.set()

    assert calls == 1
    assert len(results) == 20
    assert all(value == 42 for value, _ in results)
    assert sum(ran for _, ran in results) == 1
    assert flight.finished("k")


async def test_second_asker_gets_ran_false() -> None:
    flight: SingleFlight[str] = SingleFlight()
    calls = 0

    async def work() -> str:
        nonlocal calls
        calls += 1
        return "v"

    assert await flight.do("k", work) == ("v", True)
    assert await flight.do("k", work) == ("v", False)
    assert calls == 1


async def test_keys_are_independent() -> None:
    flight: SingleFlight[str] = SingleFlight()

    async def a() -> str:
        return "a"

    async def b() -> str:
        return "b"

    assert await flight.do(("dst", "a"), a) == ("a", True)
    assert await flight.do(("dst", "b"), b) == ("b", True)
    assert flight.finished(("dst", "a"))
    assert not flight.finished(("dst", "c"))


async def test_failure_goes_to_first_asker_and_waiter_retries() -> None:
    flight: SingleFlight[str] = SingleFlight()
    release = anyio.Event()
    calls: list[str] = []
    outcomes: dict[str, object] = {}

    async def failing() -> str:
        calls.append("failing")
        await release.wait()
        raise Boom("flaky")

    async def working() -> str:
        calls.append("working")
        return "ok"

    async def first() -> None:
        try:
            await flight.do("k", failing)
        except Boom as exc:
            outcomes["first"] = exc

    async def second() -> None:
        outcomes["second"] = await flight.do("k", working)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(second)
            await anyio.wait_all_tasks_blocked()
            assert calls == ["failing"]  # the second asker is waiting, not running
            release.set()

    assert isinstance(outcomes["first"], Boom)
    assert outcomes["second"] == ("ok", True)
    assert calls == ["failing", "working"]
    assert flight.finished("k")


async def test_failure_does_not_poison_the_key() -> None:
    flight: SingleFlight[int] = SingleFlight()
    attempts = 0

    async def flaky() -> int:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise Boom("first try fails")
        return attempts

    with pytest.raises(Boom):
        await flight.do("k", flaky)
    assert not flight.finished("k")
    assert await flight.do("k", flaky) == (2, True)
    assert flight.finished("k")
    assert await flight.do("k", flaky) == (2, False)
    assert attempts == 2


async def test_cancelled_first_asker_releases_the_key() -> None:
    flight: SingleFlight[str] = SingleFlight()
    never = anyio.Event()
    outcomes: list[tuple[str, bool]] = []

    async def hangs() -> str:
        await never.wait()
        return "never"

    async def works() -> str:
        return "second"

    async def waiter() -> None:
        outcomes.append(await flight.do("k", works))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            with anyio.CancelScope() as scope:
                tg.start_soon(waiter)  # starts after the first asker below is parked

                async def cancel_soon() -> None:
                    await anyio.wait_all_tasks_blocked()
                    scope.cancel()

                tg.start_soon(cancel_soon)
                await flight.do("k", hangs)
    assert scope.cancelled_caught
    assert outcomes == [("second", True)]
    assert flight.finished("k")
