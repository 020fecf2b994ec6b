"""Choose default limits by measurement: W1 copied with several concurrency settings.

``python -m benchmarks.sweep [--scale S] [--runs N]`` copies W1 (8 layers) from
registry A to a freshly wiped registry B with ``asyncreg copy`` at each
``--concurrency`` / ``--per-host`` setting, with the zero-copy relay and
without it, and prints the median wall time, CPU seconds per GiB and peak
RSS of each. The defaults in `asyncreg.config.Limits` come from this table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from asyncreg.testkit.registry import RegistryProcess
from asyncreg.testkit.skopeo import push_layout

from .measure import client_env, head_digest, run_measured
from .workloads import parse_workloads

GIB = 1024**3


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sweep and print a markdown table."""
    p = argparse.ArgumentParser(prog="benchmarks.sweep")
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--levels", default="1,2,4,8,16")
    args = p.parse_args(argv)
    [w1] = parse_workloads("W1")
    levels = [int(x) for x in args.levels.split(",")]
    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="asyncreg-sweep-") as tmp:
        layout = Path(tmp) / "layout"
        built = w1.build(layout, args.scale)
        with RegistryProcess() as a, RegistryProcess() as b:
            push_layout(layout, w1.tag, a.host, w1.repo)
            for zero_copy in (True, False):
                for level in levels:
                    walls, cpus, rss = [], [], []
                    for _ in range(args.runs):
                        b.reset()
                        argv_ = [
                            sys.executable,
                            "-m",
                            "asyncreg",
                            "copy",
                            f"{a.host}/{w1.repo}:{w1.tag}",
                            f"{b.host}/{w1.repo}:{w1.tag}",
                            "--progress",
                            "none",
                            "--concurrency",
                            str(level),
                            "--per-host",
                            str(level),
                        ]
                        if not zero_copy:
                            argv_.append("--no-zero-copy")
                        m = run_measured(argv_, env=client_env(), timeout=600)
                        if m.exit_code != 0:
                            print(m.stderr, file=sys.stderr)
                            return 1
                        got = head_digest(b.url, w1.repo, w1.tag)
                        if got != built.digest:
                            print(f"wrong digest {got}", file=sys.stderr)
                            return 1
                        walls.append(m.wall_s)
                        cpus.append(m.cpu_s / (built.blob_bytes / GIB))
                        rss.append(m.max_rss_kib / 1024)
                    rows.append(
                        f"| {'splice' if zero_copy else 'stream'} | {level} |"
                        f" {statistics.median(walls):.2f} | {statistics.median(cpus):.2f} |"
                        f" {max(rss):.0f} |"
                    )
                    print(rows[-1], file=sys.stderr, flush=True)
    print(f"W1 at scale {args.scale}, {args.runs} runs each (median wall, CPU per GiB moved)\n")
    print("| path | concurrency = per-host | wall s | CPU s/GiB | peak RSS MiB |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
