"""`make demo` is the README's first command: it must run end to end and verify itself."""

from __future__ import annotations

import subprocess
import sys


def test_demo_runs_end_to_end() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "asyncreg.demo"], capture_output=True, timeout=300, check=False
    )
    out = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert "first run: 3 images" in out
    assert "second run: 3 images" in out
    # the second run finds everything up to date, and every copied image re-hashes cleanly
    second = out.split("second run:", 1)[1]
    assert second.count("up to date") == 3
    assert out.count("verified ") == 3
    assert "demo done" in out
