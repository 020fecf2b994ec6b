"""Progress: counters, listeners and the bounded event stream."""

from __future__ import annotations

import anyio
import pytest

from asyncreg.engine.progress import Event, EventKind, Progress

pytestmark = pytest.mark.anyio

BLOB = "sha256:" + "b" * 64
MANIFEST = "sha256:" + "a" * 64
TARGET = "registry:example.com/repo"


def ev(kind: EventKind, what: str = "blob", *, size: int = 0, amount: int = 0) -> Event:
    digest = BLOB if what == "blob" else MANIFEST
    return Event(kind, what, digest, TARGET, size=size, amount=amount)


def test_counters_from_events() -> None:
    progress = Progress()
    for event in [
        ev(EventKind.QUEUED, size=100),
        ev(EventKind.STARTED, size=100),
        ev(EventKind.BYTES, amount=40),
        ev(EventKind.RETRIED, size=100),
        ev(EventKind.BYTES, amount=60),
        ev(EventKind.DONE, size=100),
        ev(EventKind.STARTED, size=7),
        ev(EventKind.FAILED),
        ev(EventKind.SKIPPED, size=5),
        ev(EventKind.SKIPPED, size=5),
        ev(EventKind.MOUNTED, size=9),
        ev(EventKind.STARTED, "manifest", size=300),
        ev(EventKind.DONE, "manifest", size=300),
        ev(EventKind.SKIPPED, "manifest"),
        ev(EventKind.STARTED, size=11),
    ]:
        progress.emit(event)
    stats = progress.statistics()
    assert stats.bytes_moved == 100
    assert stats.bytes_expected == 100 + 7 + 11  # manifests do not count
    assert stats.blobs_moved == 1
    assert stats.blobs_skipped == 2
    assert stats.blobs_mounted == 1
    assert stats.manifests_pushed == 1
    assert stats.manifests_skipped == 1
    assert stats.retries == 1
    assert stats.failures == 1
    assert stats.in_flight == 1  # the last blob started and has not finished
    assert stats.elapsed >= 0


def test_fresh_statistics_are_zero() -> None:
    stats = Progress().statistics()
    assert (stats.bytes_moved, stats.blobs_moved, stats.in_flight, stats.failures) == (0, 0, 0, 0)


def test_failure_never_makes_in_flight_negative() -> None:
    progress = Progress()
    progress.emit(ev(EventKind.FAILED))
    progress.emit(ev(EventKind.FAILED, "manifest"))
    stats = progress.statistics()
    assert stats.in_flight == 0
    assert stats.failures == 2


def test_listeners_get_every_event_in_order() -> None:
    progress = Progress()
    first: list[Event] = []
    second: list[EventKind] = []
    progress.emit(ev(EventKind.QUEUED))  # before subscribing: not delivered
    progress.subscribe(first.append)
    progress.subscribe(lambda e: second.append(e.kind))
    events = [ev(EventKind.STARTED, size=3), ev(EventKind.BYTES, amount=3), ev(EventKind.DONE)]
    for event in events:
        progress.emit(event)
    assert first == events
    assert second == [EventKind.STARTED, EventKind.BYTES, EventKind.DONE]


async def test_event_stream_receives_lifecycle_events() -> None:
    progress = Progress()
    stream = progress.events()
    events = [
        ev(EventKind.STARTED, size=10),
        ev(EventKind.BYTES, amount=10),
        ev(EventKind.DONE, size=10),
        ev(EventKind.STARTED, "manifest", size=2),
        ev(EventKind.FAILED, "manifest"),
    ]
    received: list[Event] = []

    async def consume() -> None:
        async with stream:
            async for event in stream:
                received.append(event)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            for event in events:
                progress.emit(event)
                await anyio.wait_all_tasks_blocked()
            progress.close()
    assert received == events


async def test_two_streams_each_get_everything() -> None:
    progress = Progress()
    a = progress.events()
    b = progress.events()
    progress.emit(ev(EventKind.STARTED))
    progress.emit(ev(EventKind.DONE))
    progress.close()
    with anyio.fail_after(10):
        got_a = [e.kind async for e in a]
        got_b = [e.kind async for e in b]
    assert got_a == got_b == [EventKind.STARTED, EventKind.DONE]


async def test_full_stream_drops_byte_events_without_blocking() -> None:
    progress = Progress()
    heard: list[Event] = []
    progress.subscribe(heard.append)
    stream = progress.events(buffer=2)
    progress.emit(ev(EventKind.STARTED, size=50))
    for _ in range(5):
        progress.emit(ev(EventKind.BYTES, amount=10))  # returns although nobody reads
    assert len(heard) == 6
    assert progress.statistics().bytes_moved == 50  # counted even when not delivered

    first = stream.receive_nowait()
    second = stream.receive_nowait()
    assert first.kind is EventKind.STARTED
    assert second.kind is EventKind.BYTES
    with pytest.raises(anyio.WouldBlock):
        stream.receive_nowait()  # the other byte events were dropped

    progress.emit(ev(EventKind.DONE, size=50))  # room again: delivered
    assert stream.receive_nowait().kind is EventKind.DONE
    progress.close()
    stream.close()


async def test_close_ends_streams_and_later_events_are_harmless() -> None:
    progress = Progress()
    stream = progress.events()
    progress.emit(ev(EventKind.STARTED))
    progress.close()
    progress.emit(ev(EventKind.DONE))  # after close: no stream, no error
    assert progress.statistics().blobs_moved == 1
    with anyio.fail_after(10):
        kinds = [e.kind async for e in stream]
    assert kinds == [EventKind.STARTED]


async def test_consumer_closing_its_stream_does_not_break_emit() -> None:
    progress = Progress()
    gone = progress.events()
    kept = progress.events()
    gone.close()
    progress.emit(ev(EventKind.STARTED))
    progress.emit(ev(EventKind.BYTES, amount=1))
    progress.close()
    with anyio.fail_after(10):
        kinds = [e.kind async for e in kept]
    assert kinds == [EventKind.STARTED, EventKind.BYTES]
