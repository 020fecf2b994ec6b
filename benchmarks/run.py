"""``python -m benchmarks.run``: time asyncreg against skopeo, registry to registry and via tars.

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

W3 goes through a tar file instead, in legs timed apart (see
`benchmarks.archive`): export from A to a tar (asyncreg against skopeo's
``docker-archive:`` and ``oci-archive:``), then import of an OCI archive into
B (asyncreg against skopeo's ``oci-archive:`` source).

Each copy, export or import is a subprocess: wall time around its whole
life, user+sys CPU and peak RSS from its ``wait4`` rusage. The markdown report goes to ``--out``
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
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import asyncreg
from asyncreg.testkit.registry import RegistryProcess, require_tools

from .archive import run_archive_workload
from .measure import Measurement, client_env
from .report import TOOLS, WorkloadResult, render_report
from .session import (
    REPO_ROOT,
    Session,
    ToolSpec,
    check_printed_digest,
    check_registry,
    log,
    seed_source,
    shown,
)
from .workloads import Workload, parse_workloads

__all__ = ["main"]

DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "latest.md"
#: Seconds one copy (export, import) may take before it is killed and counted as a failure.
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


def _copy_specs(
    workload: Workload, source: RegistryProcess, dest: RegistryProcess, expected: str
) -> list[ToolSpec]:
    """Each tool copies A to B; B is wiped before and must hold ``expected`` after."""

    def checker(tool: str) -> Callable[[Measurement], str | None]:
        def check(m: Measurement) -> str | None:
            return check_registry(dest, workload, expected) or check_printed_digest(
                tool, m.stdout, expected
            )

        return check

    return [
        ToolSpec(
            name=tool,
            argv=tuple(ARGV[tool](workload, source.host, dest.host)),
            prepare=dest.reset,
            check=checker(tool),
        )
        for tool in TOOLS
    ]


def run_copy_workload(
    workload: Workload, runs: int, scale: float, timeout: float
) -> WorkloadResult:
    """Prepare, measure and clean up one copy workload; setup errors end up in the result."""
    result = WorkloadResult(workload=workload, scale=scale)
    tmp = Path(tempfile.mkdtemp(prefix=f"asyncreg-bench-{workload.name.lower()}-"))
    source = RegistryProcess()
    dest = RegistryProcess()
    try:
        source.start()
        dest.start()
        built = seed_source(workload, scale, tmp / "layout", source)
        result.expected_digest = built.digest
        result.bytes_moved = built.blob_bytes
        result.blob_count = len(built.blobs)
        result.commands = {tool: shown(ARGV[tool](workload, "A", "B")) for tool in TOOLS}
        specs = _copy_specs(workload, source, dest, built.digest)
        Session(result, specs, timeout, client_env()).run(runs)
    except Exception as exc:
        log(f"{workload.name}: aborted: {exc}")
        result.setup_error = f"{type(exc).__name__}: {exc}"
    finally:
        dest.stop()
        source.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def run_workload(
    workload: Workload, runs: int, scale: float, timeout: float
) -> list[WorkloadResult]:
    """The results of one workload: one for a copy, one per leg for an archive workload."""
    if workload.kind == "archive":
        return run_archive_workload(workload, runs, scale, timeout)
    return [run_copy_workload(workload, runs, scale, timeout)]


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
        description="Time asyncreg against skopeo between two loopback registries and tar files.",
    )
    p.add_argument(
        "--workloads",
        default="W1,W3,W4",
        help="comma-separated: W1 (copy), W3 (export and import via a tar), W4 (copy of an index);"
        " default: all three",
    )
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
            f"{args.runs} timed run(s) per tool after one warm-up each, order rotating"
            f" per run; registry B wiped before every copy and import, output tar deleted"
            f" before every export; layer scale {args.scale:g}",
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
            results.extend(run_workload(workload, args.runs, args.scale, args.timeout))
    except KeyboardInterrupt:
        log("interrupted; registries stopped and temporary files removed")
        return 130

    report = render_report(_header(args, started, load_start), results, args.scale)
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    sys.stdout.write(report)
    log(f"report written to {out}")
    ok = all(r.setup_error is None and not r.failures for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
