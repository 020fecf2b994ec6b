"""One attempt budget per blob, and the host pauses every request waits for.

Retries used to nest: a request retried five times inside an upload retried
five times inside a resume loop. Now one `Budget` covers everything done for
one blob (or one plain request): each failed try, resume or restart spends
from it, whichever layer noticed the failure. A try that moved bytes before
it failed made progress and costs less: the budget gives up after
``RetryPolicy.attempts`` failures without progress, or after ``attempts +
resume_attempts`` failures in all, so a blob that keeps failing costs a
bounded number of requests and, since every delay is capped, a bounded time.

`HostPauses` is the other half: a ``429`` (or a ``503`` with ``Retry-After``)
pauses the whole host, and every way of sending a request (the aiohttp
transport, the raw sockets of splice, sendfile and the worker-thread fetch)
waits for the pause before it sends anything to that host.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio

from .config import RetryPolicy
from .errors import AsyncregError
from .registry.retry import is_retryable, refuses_monolithic, retry_after_of, retry_delay
from .tally import Tally, note

__all__ = ["Budget", "HostPauses", "run_attempts"]


class HostPauses:
    """Until when each host asked not to be sent anything."""

    def __init__(self, cap: float) -> None:
        self._cap = cap
        self._until: dict[str, float] = {}

    def pause(self, host: str, seconds: float) -> None:
        """Send nothing to ``host`` for ``seconds`` (capped), from any task."""
        until = time.monotonic() + min(max(seconds, 0.0), self._cap)
        if until > self._until.get(host, 0.0):
            self._until[host] = until

    def remaining(self, host: str) -> float:
        """Seconds ``host`` stays paused (0 when it is not)."""
        return max(0.0, self._until.get(host, 0.0) - time.monotonic())

    async def wait(self, host: str) -> None:
        """Return once ``host`` is not paused (a pause set meanwhile is waited for too)."""
        while (delay := self.remaining(host)) > 0:  # noqa: ASYNC110 - a deadline, not an event
            await anyio.sleep(delay)


class Budget:
    """The failed tries one transfer may still make before it gives up.

    `spend` is called with every failure on the way; it re-raises the failure
    when it is final (see `registry.retry.is_retryable`) or the budget is
    used up, and otherwise sleeps the backoff (full jitter, at least the
    ``Retry-After`` the server asked for) and returns: the caller tries again.
    """

    def __init__(
        self, policy: RetryPolicy, *, stopping: Callable[[], bool] = lambda: False
    ) -> None:
        self.policy = policy
        #: True once the job is stopping: nothing is retried, chunked uploads end.
        self.stopping = stopping
        self.failures = 0
        self.stalled = 0
        self._started = time.monotonic()

    @property
    def exhausted(self) -> bool:
        """True when one more failure would be one too many."""
        p = self.policy
        return self.stalled >= p.attempts or self.failures >= p.attempts + p.resume_attempts

    async def spend(self, exc: AsyncregError, *, progressed: bool = False) -> None:
        """Account for ``exc``; raise it when it is final, else wait and return."""
        if not is_retryable(exc):
            raise exc
        self.failures += 1
        if not progressed:
            self.stalled += 1
        if self.stopping():
            exc.amend("not retried: the job is stopping")
            raise exc
        if self.exhausted:
            elapsed = time.monotonic() - self._started
            exc.amend(f"gave up after {self.failures} failed tries in {elapsed:.1f} s")
            raise exc
        # Not exhausted, so fewer than ``attempts`` stalled tries: a delay is due.
        delay = retry_delay(self.policy, max(1, self.stalled), retry_after=retry_after_of(exc))
        note(Tally.RETRY)
        await anyio.sleep(delay or 0.0)


async def run_attempts(
    budget: Budget, attempt: Callable[[bool], Awaitable[None]], *, chunked: bool = False
) -> None:
    """Run ``attempt(chunked)`` until it succeeds, a failure is final, or the budget is spent.

    A registry that refuses a monolithic upload PUT (405, 413, 501) gets
    chunks from then on, on every path: that switch is a fallback, counted as
    one, and costs nothing from the budget.
    """
    while True:
        try:
            await attempt(chunked)
            return
        except AsyncregError as exc:
            if refuses_monolithic(exc) and not chunked:
                chunked = True
                note(Tally.FALLBACK)
                continue
            await budget.spend(exc)
