"""Counting retries, rate limits and fallbacks for whichever copy caused them.

The transport and the byte movers notice retries deep below the copy that
asked for the bytes, and one transport serves many copies at once. A context
variable carries the current copy's counter down the call chain (anyio tasks
inherit their parent's context), so a retry is counted for the copy whose
task sent the request, without threading a counter through every call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from enum import StrEnum

__all__ = ["Tally", "counting", "note"]


class Tally(StrEnum):
    """What is counted."""

    RETRY = "retry"  # a request, resume or transfer tried again
    RATE_LIMITED = "rate_limited"  # a 429 answer
    FALLBACK = "fallback"  # a monolithic upload refused, sent in chunks instead
    UNCLEAN = "unclean"  # an upload session the registry would not cancel


Sink = Callable[[Tally, str], None]
_sink: ContextVar[Sink | None] = ContextVar("asyncreg_tally", default=None)


def note(kind: Tally, detail: str = "") -> None:
    """Count ``kind`` for the copy this task works for (nothing outside a copy)."""
    sink = _sink.get()
    if sink is not None:
        sink(kind, detail)


@contextmanager
def counting(sink: Sink) -> Iterator[None]:
    """Send what tasks started inside this block count to ``sink``."""
    token = _sink.set(sink)
    try:
        yield
    finally:
        _sink.reset(token)
