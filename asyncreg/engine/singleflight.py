"""Run each keyed piece of work once per job; later askers wait for the first.

Keys are (target, digest): a blob shared by twenty images is moved once. A
failure is not remembered: the key is released and the next asker tries
again, so one flaky request does not poison every image that shares a layer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

import anyio

__all__ = ["SingleFlight"]

T = TypeVar("T")


class _Call(Generic[T]):
    __slots__ = ("done", "error", "result")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.result: T | None = None
        self.error: BaseException | None = None


class SingleFlight(Generic[T]):
    """A table of in-flight and finished calls, by key."""

    def __init__(self) -> None:
        self._calls: dict[Hashable, _Call[T]] = {}

    def finished(self, key: Hashable) -> bool:
        """True when ``key`` already completed successfully."""
        call = self._calls.get(key)
        return call is not None and call.done.is_set() and call.error is None

    async def do(self, key: Hashable, fn: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """Run ``fn`` once for ``key``; return (result, True if this call ran it)."""
        while True:
            call = self._calls.get(key)
            if call is None:
                call = self._calls[key] = _Call()
                try:
                    result = await fn()
                except BaseException as exc:
                    call.error = exc
                    del self._calls[key]
                    call.done.set()
                    raise
                call.result = result
                call.done.set()
                return result, True
            await call.done.wait()
            if call.error is None:
                return call.result, False  # type: ignore[return-value]
            # The first asker failed: loop and try ourselves.
