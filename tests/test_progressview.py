"""The progress views: plain lines for logs, redrawn bars for a terminal."""

from __future__ import annotations

import io

from asyncreg.engine.progress import Event, EventKind, Progress
from asyncreg.progressview import PlainView, TerminalView, human_bytes


def test_human_bytes() -> None:
    assert human_bytes(512) == "512 B"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(3 * 1024**3) == "3.0 GiB"


def test_plain_view_prints_lifecycle_events_only() -> None:
    out = io.StringIO()
    view = PlainView(out)
    view(Event(EventKind.STARTED, "blob", "sha256:" + "a" * 64, "t", size=10))
    view(Event(EventKind.BYTES, "blob", "sha256:" + "a" * 64, "t", amount=10))
    view(Event(EventKind.DONE, "blob", "sha256:" + "a" * 64, "t", size=2048))
    view(Event(EventKind.FAILED, "manifest", "sha256:" + "b" * 64, "t", error="boom"))
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("done")
    assert "2.0 KiB" in lines[0]
    assert lines[1].endswith(": boom")


def test_terminal_view_draws_and_redraws_in_place() -> None:
    progress = Progress()
    out = io.StringIO()
    view = TerminalView(progress, out, width=10)
    digest = "sha256:" + "c" * 64
    progress.emit(Event(EventKind.STARTED, "blob", digest, "t", size=1000))
    progress.emit(Event(EventKind.BYTES, "blob", digest, "t", amount=500))
    view.render()
    first = out.getvalue()
    assert "[#####-----]  50.0%" in first
    assert "active: 1" in first
    progress.emit(Event(EventKind.BYTES, "blob", digest, "t", amount=500))
    progress.emit(Event(EventKind.DONE, "blob", digest, "t", size=1000))
    view.render()
    second = out.getvalue()[len(first) :]
    assert second.startswith("\x1b[3F")  # cursor back up over the three lines drawn before
    assert "[##########] 100.0%" in second
    assert "1 moved" in second
