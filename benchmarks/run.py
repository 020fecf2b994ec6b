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

W1-TLS is W1 between two registries that serve HTTPS, each with a
certificate from its own throw-away CA (trustme). Both tools are given the
CAs and verify them: asyncreg with ``--ca-file HOST=PEM`` per registry,
skopeo with ``--src-cert-dir``/``--dest-cert-dir`` (a directory holding the
CA as ``ca.crt``) and ``--src-tls-verify=true``/``--dest-tls-verify=true``.
Before the timed runs, each tool is run once with the two CAs swapped and
must fail: a tool that copied anyway would not be verifying certificates.

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
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncreg
from asyncreg.testkit.registry import RegistryOptions, RegistryProcess, require_tools

from .archive import run_archive_workload
from .measure import Measurement, client_env, run_measured
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


@dataclass(frozen=True)
class Trust:
    """The CA of each TLS registry, as each tool wants it."""

    #: PEM file of registry A's CA, and of B's (asyncreg ``--ca-file HOST=PEM``).
    src_ca: str
    dst_ca: str
    #: A directory holding A's CA as ``ca.crt``, and one for B's (skopeo ``--*-cert-dir``).
    src_cert_dir: str
    dst_cert_dir: str

    def swapped(self) -> Trust:
        """Each registry's CA given for the other: verification must then fail."""
        return Trust(self.dst_ca, self.src_ca, self.dst_cert_dir, self.src_cert_dir)


#: How the report shows the CA files and directories.
SHOWN_TRUST = Trust("CA_A", "CA_B", "CERTS_A", "CERTS_B")

ArgvFactory = Callable[[Workload, str, str, Trust | None], list[str]]


def asyncreg_argv(
    workload: Workload, src_host: str, dst_host: str, trust: Trust | None = None
) -> list[str]:
    """The asyncreg command copying ``workload`` from ``src_host`` to ``dst_host``.

    With ``trust``, both hosts are spoken to over TLS, each verified against its CA.
    """
    ref = f"{workload.repo}:{workload.tag}"
    argv = [
        sys.executable,
        "-m",
        "asyncreg",
        "copy",
        f"{src_host}/{ref}",
        f"{dst_host}/{ref}",
        "--progress",
        "none",
    ]
    if trust is not None:
        argv += [
            "--ca-file",
            f"{src_host}={trust.src_ca}",
            "--ca-file",
            f"{dst_host}={trust.dst_ca}",
        ]
    return argv


def skopeo_argv(
    workload: Workload, src_host: str, dst_host: str, trust: Trust | None = None
) -> list[str]:
    """The skopeo command doing the same copy (``--all`` for an index).

    Without ``trust`` it speaks plain HTTP (``--*-tls-verify=false``); with it,
    HTTPS verified against each registry's CA directory.
    """
    ref = f"{workload.repo}:{workload.tag}"
    argv = ["skopeo", "--insecure-policy", "copy"]
    if trust is None:
        argv += ["--src-tls-verify=false", "--dest-tls-verify=false"]
    else:
        argv += [
            "--src-tls-verify=true",
            f"--src-cert-dir={trust.src_cert_dir}",
            "--dest-tls-verify=true",
            f"--dest-cert-dir={trust.dst_cert_dir}",
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
    workload: Workload,
    source: RegistryProcess,
    dest: RegistryProcess,
    expected: str,
    trust: Trust | None,
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
            argv=tuple(ARGV[tool](workload, source.host, dest.host, trust)),
            prepare=dest.reset,
            check=checker(tool),
        )
        for tool in TOOLS
    ]


def _trust(tmp: Path, source: RegistryProcess, dest: RegistryProcess) -> Trust:
    """Copy each registry's CA into its own directory as ``ca.crt`` (skopeo's layout)."""
    dirs: list[Path] = []
    for name, registry in (("a", source), ("b", dest)):
        ca = registry.ca_pem
        if ca is None:
            raise RuntimeError(f"registry {registry.host} does not serve TLS")
        cert_dir = tmp / f"certs-{name}"
        cert_dir.mkdir()
        shutil.copyfile(ca, cert_dir / "ca.crt")
        dirs.append(cert_dir)
    return Trust(
        src_ca=str(dirs[0] / "ca.crt"),
        dst_ca=str(dirs[1] / "ca.crt"),
        src_cert_dir=str(dirs[0]),
        dst_cert_dir=str(dirs[1]),
    )


def _check_verification(
    workload: Workload,
    source: RegistryProcess,
    dest: RegistryProcess,
    trust: Trust,
    timeout: float,
) -> str:
    """Run each tool once with the CAs swapped: it must fail on the certificate.

    A tool that copies although it was handed the wrong CA for both registries
    does not verify certificates, and its timings would not be those of a
    verified TLS copy: that is a setup error (`RuntimeError`), as is a failure
    whose message does not mention the certificate. Returns a note for the report.
    """
    wrong = trust.swapped()
    outcomes: list[str] = []
    for tool in TOOLS:
        argv = ARGV[tool](workload, source.host, dest.host, wrong)
        m = run_measured(argv, timeout=timeout, env=client_env(), cwd=REPO_ROOT)
        if m.exit_code == 0:
            raise RuntimeError(f"{tool} copied with the CAs swapped: it does not verify TLS")
        if "certificate" not in m.stderr:
            raise RuntimeError(
                f"{tool} with the CAs swapped failed, but not on the certificate: {m.failure()}"
            )
        tail = (m.stderr.strip().splitlines() or ["(no message)"])[-1]
        reason = ("..." + tail[-157:] if len(tail) > 160 else tail).replace("`", "'")
        reason = reason.replace("|", "/")
        log(f"{workload.name}: {tool} with the CAs swapped failed, as it must: {reason}")
        outcomes.append(f"{tool} in {m.wall_s:.1f} s (`{reason}`)")
    return "with the two CAs swapped (untimed), each tool refused: " + "; ".join(outcomes)


def run_copy_workload(
    workload: Workload, runs: int, scale: float, timeout: float
) -> WorkloadResult:
    """Prepare, measure and clean up one copy workload; setup errors end up in the result."""
    result = WorkloadResult(workload=workload, scale=scale)
    tmp = Path(tempfile.mkdtemp(prefix=f"asyncreg-bench-{workload.name.lower()}-"))
    options = RegistryOptions(tls=workload.tls)
    source = RegistryProcess(options)
    dest = RegistryProcess(options)
    try:
        source.start()
        dest.start()
        trust = _trust(tmp, source, dest) if workload.tls else None
        built = seed_source(workload, scale, tmp / "layout", source)
        result.expected_digest = built.digest
        result.bytes_moved = built.blob_bytes
        result.blob_count = len(built.blobs)
        shown_trust = SHOWN_TRUST if trust is not None else None
        result.commands = {
            tool: shown(ARGV[tool](workload, "A", "B", shown_trust)) for tool in TOOLS
        }
        if trust is not None:
            result.notes.append(
                "A and B serve HTTPS, each with a certificate from its own throw-away CA;"
                " CA_A/CA_B are the CAs' PEM files, CERTS_A/CERTS_B directories holding"
                " them as ca.crt"
            )
            result.notes.append(_check_verification(workload, source, dest, trust, timeout))
        specs = _copy_specs(workload, source, dest, built.digest, trust)
        Session(result, specs, timeout, client_env(), servers=(source, dest)).run(runs)
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
        default="W1,W1-TLS,W3,W4",
        help="comma-separated: W1 (copy), W1-TLS (W1 between TLS registries, verified),"
        " W3 (export and import via a tar), W4 (copy of an index); default: all four",
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
