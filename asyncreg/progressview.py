"""Show a job's progress on stderr: live bars on a terminal, plain lines otherwise.

stdout is reserved for results, so a pipeline like
``asyncreg copy A B | tee digest`` stays clean. The terminal view redraws a
few lines in place (aggregate bytes, rate, ETA, and the largest active blobs)
at most ten times a second; the plain view prints one line per finished,
skipped, mounted or failed item.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

import anyio

from .engine.progress import Event, EventKind, Progress

__all__ = ["PlainView", "TerminalView", "human_bytes"]


def human_bytes(n: float) -> str:
    """``1536`` -> ``1.5 KiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class PlainView:
    """One line per lifecycle event (not per byte) on ``stream``."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._out = stream or sys.stderr

    def __call__(self, event: Event) -> None:
        if event.kind in (EventKind.BYTES, EventKind.QUEUED, EventKind.STARTED):
            return
        size = f" ({human_bytes(event.size)})" if event.size else ""
        line = f"{event.kind.value:<8} {event.what:<8} {event.digest[:19]}{size} -> {event.target}"
        if event.error:
            line += f": {event.error}"
        print(line, file=self._out, flush=True)


class TerminalView:
    """Redraws aggregate and per-blob bars in place on a TTY."""

    def __init__(self, progress: Progress, stream: TextIO | None = None, width: int = 30) -> None:
        self._progress = progress
        self._out = stream or sys.stderr
        self._width = width
        self._active: dict[str, list[int]] = {}  # digest -> [done, size]
        self._lines = 0
        progress.subscribe(self._on_event)

    def _on_event(self, event: Event) -> None:
        if event.what != "blob":
            return
        if event.kind is EventKind.STARTED:
            self._active[event.digest] = [0, event.size]
        elif event.kind is EventKind.BYTES:
            entry = self._active.get(event.digest)
            if entry is not None:
                entry[0] += event.amount
        elif event.kind in (EventKind.DONE, EventKind.FAILED):
            self._active.pop(event.digest, None)

    def _bar(self, done: int, total: int) -> str:
        frac = min(1.0, done / total) if total > 0 else 1.0
        full = int(frac * self._width)
        return "[" + "#" * full + "-" * (self._width - full) + f"] {frac * 100:5.1f}%"

    def render(self) -> None:
        """Draw the current state once."""
        s = self._progress.statistics()
        rate = s.bytes_moved / s.elapsed if s.elapsed > 0 else 0.0
        left = max(0, s.bytes_expected - s.bytes_moved)
        eta = f"{left / rate:5.1f}s" if rate > 0 and left else "  -  "
        lines = [
            f"{self._bar(s.bytes_moved, s.bytes_expected)} {human_bytes(s.bytes_moved)}"
            f" / {human_bytes(s.bytes_expected)}  {human_bytes(rate)}/s  ETA {eta}",
            f"blobs: {s.blobs_moved} moved, {s.blobs_skipped} skipped, {s.blobs_mounted} mounted;"
            f" manifests: {s.manifests_pushed} pushed; active: {len(self._active)}",
        ]
        biggest = sorted(self._active.items(), key=lambda kv: -kv[1][1])[:4]
        for digest, (done, size) in biggest:
            lines.append(f"  {digest[7:19]} {self._bar(done, size)} {human_bytes(size)}")
        out = self._out
        if self._lines:
            out.write(f"\x1b[{self._lines}F")
        for line in lines:
            out.write("\x1b[2K" + line + "\n")
        for _ in range(self._lines - len(lines)):
            out.write("\x1b[2K\n")
        extra = max(0, self._lines - len(lines))
        if extra:
            out.write(f"\x1b[{extra}F")
        out.flush()
        self._lines = len(lines)

    async def run(self, interval: float = 0.1) -> None:
        """Redraw until cancelled."""
        last = 0.0
        while True:
            now = time.monotonic()
            if now - last >= interval:
                self.render()
                last = now
            await anyio.sleep(interval)
