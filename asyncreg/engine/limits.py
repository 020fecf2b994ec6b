"""Concurrency slots shared by a whole job: one global limit and one per host.

A registry-to-registry blob copy holds a slot on its source host, its target
host and the global limit for as long as bytes flow (until the response body
is closed). Slots are always taken in one order (global first, then hosts
sorted by name), so two transfers wanting the same hosts can never deadlock.
A task waiting for its children holds no slot.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import anyio

from ..config import Limits

__all__ = ["SlotStatistics", "Slots"]


@dataclass(frozen=True, slots=True)
class SlotStatistics:
    """How many slots are in use, globally and per host."""

    in_flight: int
    per_host: Mapping[str, int]


class Slots:
    """The limiters of one job (or of one client, shared by its jobs)."""

    def __init__(self, limits: Limits, per_host: Mapping[str, int] | None = None) -> None:
        self._global = anyio.CapacityLimiter(limits.transfers)
        self._default = limits.per_host
        self._overrides = dict(per_host or {})
        self._hosts: dict[str, anyio.CapacityLimiter] = {}

    def _host(self, host: str) -> anyio.CapacityLimiter:
        limiter = self._hosts.get(host)
        if limiter is None:
            limiter = anyio.CapacityLimiter(self._overrides.get(host, self._default))
            self._hosts[host] = limiter
        return limiter

    @asynccontextmanager
    async def hold(self, *hosts: str) -> AsyncIterator[None]:
        """Hold the global slot and one slot on each distinct host."""
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(self._global)
            for host in sorted(set(hosts)):
                await stack.enter_async_context(self._host(host))
            yield

    def statistics(self) -> SlotStatistics:
        """A snapshot of slot use."""
        return SlotStatistics(
            in_flight=int(self._global.borrowed_tokens),
            per_host={h: int(lim.borrowed_tokens) for h, lim in self._hosts.items()},
        )
