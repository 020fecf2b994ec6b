"""``python -m benchmarks.run``: time asyncreg against skopeo, registry to registry.

For each workload:

1. build it once as an OCI layout in a temporary directory;
2. start two ``docker-registry`` processes on loopback, A and B, and push
   the workload to A with skopeo (``--preserve-digests``), once;
3. one untimed warm-up copy per tool, then ``--runs`` timed runs; in every
   run each tool copies A to B once, in alternating order (asyncreg first in
   odd runs, skopeo first in even ones). B is wiped before every copy, so
   each copy moves every blob;
4. after every copy, ``HEAD`` the tag in B: a copy that did not leave the
   expected digest there is a failure, not a number.

Each copy is a subprocess: wall time around its whole life, user+sys CPU and
peak RSS from its ``wait4`` rusage. The markdown report goes to ``--out``
and to stdout; progress goes to stderr. Exit status: 0 when every copy
succeeded, 1 when some failed, 2 for a usage error or a missing tool.
Targets from the issue are shown but do not change the exit status.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import asyncreg
from asyncreg.testkit.registry import RegistryProcess, require_tools
from asyncreg.testkit.skopeo import push_layout

from .measure import client_env, head_digest, run_measured
from .report import TOOLS, RunRecord, WorkloadResult, render_report
from .workloads import Workload, parse_workloads

__all__ = ["main"]

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "latest.md"
#: Seconds one copy may take before it is killed and counted as a failure.
DEFAULT_TIMEOUT = 600.0

ArgvFactory = Callable[[Workload, str, str], list[str]]


def asyncreg_argv(workload: Workload, src_host: str, dst_host: str) -> list[str]:
    """The asyncreg command copying ``workload`` from ``src_host`` to ``dst_host``."""
    ref = f"{workload.repo}:{workload.tag}"
    return [
        sys.executable,
        "-m",
        "asyncreg",
        "copy",
        f"{src_host}/{ref}",
        f"{dst_host}/{ref}",
        "--progress",
        "none",
    ]


def skopeo_argv(workload: Workload, src_host: str, dst_host: str) -> list[str]:
    """The skopeo command doing the same copy (``--all`` for an index)."""
    ref = f"{workload.repo}:{workload.tag}"
    argv = [
        "skopeo",
        "--insecure-policy",
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
    ]
    if workload.is_index:
        argv.append("--all")
    return [*argv, f"docker://{src_host}/{ref}", f"docker://{dst_host}/{ref}"]


ARGV: dict[str, ArgvFactory] = {"asyncreg": asyncreg_argv, "skopeo": skopeo_argv}


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _shown(argv: Sequence[str]) -> str:
    """A command line for the report, with the interpreter path shortened."""
    parts = list(argv)
    if parts and parts[0] == sys.executable:
        parts[0] = "python"
    return " ".join(parts)


def _tool_version(argv: Sequence[str]) -> str:
    try:
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    text = (proc.stdout or proc.stderr).strip()
    return text.splitlines()[0] if text else f"unknown (exit status {proc.returncode})"


def _loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def _nproc() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 0


def _verify(
    tool: str, record_out: str, workload: Workload, registry: RegistryProcess, expected: str
) -> str | None:
    """Why the copy into ``registry`` is wrong, or None when it holds ``expected``."""
    try:
        got = head_digest(registry.url, workload.repo, workload.tag)
    except OSError as exc:
        return f"could not HEAD the tag in B: {exc}"
    if got != expected:
        return f"B holds {got or 'nothing'} at {workload.repo}:{workload.tag}, expected {expected}"
    if tool == "asyncreg":
        printed = record_out.strip().splitlines()[:1]
        if printed != [expected]:
            return f"asyncreg printed {printed[0] if printed else 'nothing'!r}, expected {expected}"
    return None


class Session:
    """Runs the copies of one workload against a started pair of registries."""

    def __init__(
        self,
        workload: Workload,
        source: RegistryProcess,
        dest: RegistryProcess,
        result: WorkloadResult,
        timeout: float,
    ) -> None:
        self.workload = workload
        self.source = source
        self.dest = dest
        self.result = result
        self.timeout = timeout
        self.env = client_env()

    def copy(self, tool: str, run: int, position: int) -> RunRecord:
        """Wipe B, run ``tool`` once, check B; a failure is recorded, never raised."""
        self.dest.reset()
        argv = ARGV[tool](self.workload, self.source.host, self.dest.host)
        m = run_measured(argv, timeout=self.timeout, env=self.env, cwd=REPO_ROOT)
        error = m.failure()
        if error is None:
            error = _verify(tool, m.stdout, self.workload, self.dest, self.result.expected_digest)
        label = "warm-up" if run == 0 else f"run {run}"
        if error is None:
            _log(
                f"{self.workload.name} {label} {tool}: {m.wall_s:.2f} s wall,"
                f" {m.cpu_s:.2f} CPU s, {m.max_rss_mib:.1f} MiB peak RSS"
            )
        else:
            _log(f"{self.workload.name} {label} {tool}: FAILED: {error}")
        return RunRecord(run=run, tool=tool, position=position, measurement=m, error=error)

    def run(self, runs: int) -> None:
        """One warm-up per tool, then ``runs`` alternating timed runs."""
        broken: set[str] = set()
        for tool in TOOLS:
            record = self.copy(tool, run=0, position=TOOLS.index(tool))
            self.result.warmups.append(record)
            if not record.ok:
                broken.add(tool)
        for run in range(1, runs + 1):
            order = TOOLS if run % 2 == 1 else tuple(reversed(TOOLS))
            for position, tool in enumerate(order):
                if tool in broken:
                    # Its warm-up failed: timing it again would only burn the time budget.
                    self.result.runs.append(
                        RunRecord(run, tool, position, None, "skipped: its warm-up failed")
                    )
                    continue
                self.result.runs.append(self.copy(tool, run, position))


def run_workload(workload: Workload, runs: int, scale: float, timeout: float) -> WorkloadResult:
    """Prepare, measure and clean up one workload; setup errors end up in the result."""
    result = WorkloadResult(workload=workload, scale=scale)
    tmp = Path(tempfile.mkdtemp(prefix=f"asyncreg-bench-{workload.name.lower()}-"))
    source = RegistryProcess()
    dest = RegistryProcess()
    try:
        layout = tmp / "layout"
        _log(f"{workload.name}: building {workload.describe(scale)} in {layout}")
        built = workload.build(layout, scale)
        result.expected_digest = built.digest
        result.bytes_moved = built.blob_bytes
        result.blob_count = len(built.blobs)
        source.start()
        dest.start()
        _log(f"{workload.name}: seeding registry A ({source.host}) with skopeo")
        push_layout(layout, workload.tag, source.host, workload.repo, all=True)
        seeded = head_digest(source.url, workload.repo, workload.tag)
        if seeded != built.digest:
            raise RuntimeError(f"registry A holds {seeded or 'nothing'}, expected {built.digest}")
        result.commands = {tool: _shown(ARGV[tool](workload, "A", "B")) for tool in TOOLS}
        Session(workload, source, dest, result, timeout).run(runs)
    except Exception as exc:
        _log(f"{workload.name}: aborted: {exc}")
        result.setup_error = f"{type(exc).__name__}: {exc}"
    finally:
        dest.stop()
        source.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="Time asyncreg against skopeo copying between two loopback registries.",
    )
    p.add_argument("--workloads", default="W1,W4", help="comma-separated: W1, W4 (default: both)")
    p.add_argument("--runs", type=_positive_int, default=5, help="timed runs per tool (default 5)")
    p.add_argument(
        "--scale",
        type=_positive_float,
        default=1.0,
        help="layer size factor: 4 for the 4x-larger-layers memory check, 0.05 for a smoke run",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="markdown report file (default benchmarks/results/latest.md)",
    )
    p.add_argument(
        "--timeout",
        type=_positive_float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds one copy may take (default {DEFAULT_TIMEOUT:g})",
    )
    return p


def _header(args: argparse.Namespace, started: datetime, load_start: str) -> list[tuple[str, str]]:
    return [
        ("date", started.strftime("%Y-%m-%d %H:%M:%S UTC")),
        (
            "host",
            f"nproc {_nproc()}, {platform.system()} {platform.release()},"
            f" Python {platform.python_version()}",
        ),
        ("asyncreg", f"{asyncreg.__version__} (`python -m asyncreg`)"),
        ("skopeo", _tool_version(["skopeo", "--version"])),
        ("registry", _tool_version(["docker-registry", "--version"])),
        (
            "procedure",
            f"{args.runs} timed run(s) per tool after one warm-up each, order alternating"
            f" per run; registry B wiped before every copy; layer scale {args.scale:g}",
        ),
        ("load average (1/5/15 min)", f"{load_start} at start, {_loadavg()} at end"),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        workloads = parse_workloads(args.workloads)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        require_tools("docker-registry", "skopeo")
    except RuntimeError as exc:
        print(f"benchmarks: {exc}", file=sys.stderr)
        return 2

    started = datetime.now(UTC)
    load_start = _loadavg()
    results: list[WorkloadResult] = []
    try:
        for workload in workloads:
            results.append(run_workload(workload, args.runs, args.scale, args.timeout))
    except KeyboardInterrupt:
        _log("interrupted; registries stopped and temporary files removed")
        return 130

    report = render_report(_header(args, started, load_start), results, args.scale)
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    sys.stdout.write(report)
    _log(f"report written to {out}")
    ok = all(r.setup_error is None and not r.failures for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
