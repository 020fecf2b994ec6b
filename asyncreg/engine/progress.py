"""Progress of a job: a stream of events and a `statistics()` snapshot.

Events are small frozen values handed to listeners synchronously (a callback
must be quick; an async consumer uses `Progress.events`, a bounded memory
stream that drops byte events rather than stall a transfer when it is full).
Counters are updated whether or not anyone listens, so `statistics()` is
always available and costs nothing extra.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

__all__ = ["Event", "EventKind", "Progress", "Statistics", "reason"]


class EventKind(StrEnum):
    """What happened to a manifest or blob."""

    QUEUED = "queued"
    STARTED = "started"
    BYTES = "bytes"
    SKIPPED = "skipped"
    MOUNTED = "mounted"
    DONE = "done"
    RETRIED = "retried"
    RATE_LIMITED = "rate_limited"
    FALLBACK = "fallback"
    UNCLEAN = "unclean"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Event:
    """One progress event. ``kind`` of ``BYTES`` carries the chunk size in ``amount``."""

    kind: EventKind
    what: str  # "blob" or "manifest"
    digest: str
    target: str
    size: int = 0
    amount: int = 0
    error: str = ""


@dataclass(slots=True)
class Statistics:
    """A snapshot of a job's counters (`Progress.statistics` hands out copies)."""

    bytes_moved: int = 0
    blobs_moved: int = 0
    blobs_skipped: int = 0
    blobs_mounted: int = 0
    manifests_pushed: int = 0
    manifests_skipped: int = 0
    retries: int = 0
    rate_limited: int = 0
    fallbacks: int = 0
    #: Upload sessions the registry would not cancel (it purges them later).
    unclean: int = 0
    failures: int = 0
    #: Transfers holding a slot right now (not those waiting for one).
    in_flight: int = 0
    bytes_expected: int = 0
    elapsed: float = 0.0


Listener = Callable[[Event], None]


def reason(exc: BaseException) -> str:
    """What a FAILED event says: the error's message, or "cancelled" for a cancellation.

    A cancellation's own text is a cancel scope's repr, which means nothing to a user.
    """
    if not isinstance(exc, Exception):
        return "cancelled"
    return str(exc) or exc.__class__.__name__


class Progress:
    """Collects events of one job and fans them out to listeners."""

    def __init__(self) -> None:
        self._c = Statistics()
        self._started = time.monotonic()
        self._listeners: list[Listener] = []
        self._streams: list[MemoryObjectSendStream[Event]] = []

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener(event)`` for every event from now on."""
        self._listeners.append(listener)

    def events(self, buffer: int = 1024) -> MemoryObjectReceiveStream[Event]:
        """An async iterator of events; byte events are dropped when it falls behind."""
        send, receive = anyio.create_memory_object_stream[Event](buffer)
        self._streams.append(send)
        return receive

    def close(self) -> None:
        """End every event stream handed out by `events`."""
        for stream in self._streams:
            stream.close()
        self._streams.clear()

    def emit(self, event: Event) -> None:
        """Count ``event`` and hand it to listeners."""
        c = self._c
        kind = event.kind
        if kind is EventKind.BYTES:
            c.bytes_moved += event.amount
        elif kind is EventKind.STARTED:
            c.in_flight += 1
            if event.what == "blob":
                c.bytes_expected += event.size
        elif kind is EventKind.DONE:
            c.in_flight -= 1
            if event.what == "blob":
                c.blobs_moved += 1
            else:
                c.manifests_pushed += 1
        elif kind is EventKind.SKIPPED:
            if event.what == "blob":
                c.blobs_skipped += 1
            else:
                c.manifests_skipped += 1
        elif kind is EventKind.MOUNTED:
            c.blobs_mounted += 1
        elif kind is EventKind.RETRIED:
            c.retries += 1
        elif kind is EventKind.RATE_LIMITED:
            c.rate_limited += 1
        elif kind is EventKind.FALLBACK:
            c.fallbacks += 1
        elif kind is EventKind.UNCLEAN:
            c.unclean += 1
        elif kind is EventKind.FAILED:
            c.failures += 1
            c.in_flight = max(0, c.in_flight - 1)
        for listener in self._listeners:
            listener(event)
        for stream in self._streams:
            try:
                stream.send_nowait(event)
            except anyio.WouldBlock:
                if kind is not EventKind.BYTES:
                    # Lifecycle events matter more than byte ticks: make room is not
                    # possible on a memory stream, so the consumer just misses this one.
                    continue
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                continue

    def statistics(self) -> Statistics:
        """A consistent snapshot of the counters."""
        return replace(self._c, elapsed=time.monotonic() - self._started)

    def rate(self) -> float:
        """Average bytes per second so far."""
        s = self.statistics()
        return s.bytes_moved / s.elapsed if s.elapsed > 0 else math.nan
