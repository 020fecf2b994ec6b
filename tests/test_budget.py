"""The attempt budget and host pauses: the one retry policy every byte path spends from."""

from __future__ import annotations

import time

import anyio
import pytest

from asyncreg.budget import Budget, HostPauses, run_attempts
from asyncreg.config import RetryPolicy
from asyncreg.errors import (
    AsyncregError,
    DigestMismatchError,
    RateLimitError,
    RegistryError,
    TransportError,
)
from asyncreg.registry.retry import is_retryable, refuses_monolithic
from asyncreg.tally import Tally, counting

pytestmark = pytest.mark.anyio

QUICK = RetryPolicy(attempts=3, resume_attempts=2, backoff_base=0.0)


async def _spend_until_raised(budget: Budget, *, progressed: bool) -> int:
    """How many failures the budget let through before it re-raised one."""
    for spent in range(100):
        try:
            await budget.spend(TransportError("reset"), progressed=progressed)
        except AsyncregError:
            return spent
    raise AssertionError("the budget never gave up")


async def test_failures_without_progress_give_up_after_attempts() -> None:
    # The third failure is one too many: two retries follow the first try.
    assert await _spend_until_raised(Budget(QUICK), progressed=False) == QUICK.attempts - 1


async def test_failures_after_progress_get_resume_attempts_more() -> None:
    spent = await _spend_until_raised(Budget(QUICK), progressed=True)
    assert spent == QUICK.attempts + QUICK.resume_attempts - 1


async def test_the_error_that_gives_up_says_so_and_keeps_its_type() -> None:
    budget = Budget(RetryPolicy(attempts=1, backoff_base=0.0))
    err = RegistryError("GET x: registry answered 503", status=503)
    with pytest.raises(RegistryError) as info:
        await budget.spend(err)
    assert info.value.status == 503
    assert "gave up after 1 failed tries" in str(info.value)


async def test_final_errors_are_not_retried() -> None:
    budget = Budget(QUICK)
    with pytest.raises(DigestMismatchError):
        await budget.spend(DigestMismatchError("bad bytes"))
    assert budget.failures == 0


async def test_a_stopping_job_retries_nothing() -> None:
    budget = Budget(QUICK, stopping=lambda: True)
    with pytest.raises(TransportError) as info:
        await budget.spend(TransportError("reset"))
    assert "the job is stopping" in str(info.value)


async def test_retry_after_lengthens_the_wait() -> None:
    budget = Budget(RetryPolicy(attempts=3, backoff_base=0.0, retry_after_cap=0.3))
    started = time.monotonic()
    await budget.spend(RateLimitError("slow down", retry_after=10.0))
    # Capped at retry_after_cap, and at least that long.
    assert 0.3 <= time.monotonic() - started < 2.0


async def test_retries_are_counted_for_the_copy_that_made_them() -> None:
    seen: list[Tally] = []
    with counting(lambda kind, detail: seen.append(kind)):
        await Budget(QUICK).spend(TransportError("reset"))
    assert seen == [Tally.RETRY]


async def test_run_attempts_falls_back_to_chunks_once_without_spending() -> None:
    modes: list[bool] = []

    async def attempt(chunked: bool) -> None:
        modes.append(chunked)
        if not chunked:
            raise RegistryError("PUT: registry answered 413", status=413, method="PUT")

    budget = Budget(QUICK)
    seen: list[Tally] = []
    with counting(lambda kind, detail: seen.append(kind)):
        await run_attempts(budget, attempt)
    assert modes == [False, True]
    assert budget.failures == 0
    assert seen == [Tally.FALLBACK]


async def test_host_pause_holds_every_waiter_until_it_ends() -> None:
    pauses = HostPauses(cap=5.0)
    pauses.pause("h:1", 0.3)
    pauses.pause("h:1", 0.1)  # a shorter pause never shortens a longer one
    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(pauses.wait, "h:1")
    assert time.monotonic() - started >= 0.29
    assert pauses.remaining("other:2") == 0.0


@pytest.mark.parametrize(
    ("exc", "retryable"),
    [
        (TransportError("reset"), True),
        (TransportError("bad certificate", retryable=False), False),
        (RegistryError("x", status=503), True),
        (RegistryError("x", status=501), False),
        (RegistryError("x", status=400), False),
        (RegistryError("x", status=401, replayable=True), True),
        (RateLimitError("x"), True),
        (DigestMismatchError("x"), False),
        (ValueError("x"), False),
    ],
)
def test_one_rule_decides_what_is_retryable(exc: BaseException, retryable: bool) -> None:
    assert is_retryable(exc) is retryable


@pytest.mark.parametrize(
    ("status", "method", "refused"),
    [
        (413, "PUT", True),
        (405, "PUT", True),
        (501, "PUT", True),
        (413, "GET", False),
        (400, "PUT", False),
    ],
)
def test_monolithic_refusals(status: int, method: str, refused: bool) -> None:
    err = RegistryError("x", status=status, method=method)
    assert refuses_monolithic(err) is refused
