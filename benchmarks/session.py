"""Run the tools of one leg of a workload: warm-ups, alternating timed runs, checks.

A leg (W1's copy, W3's export, one of W3's imports) is a list of `ToolSpec`:
the command of each tool, what to do before every run of it (wipe registry
B, delete the output tar), how to check what it produced, and what to delete
afterwards. `Session` runs them all the same way: one untimed warm-up per
tool, then timed runs in which every tool runs once, in an order rotated by
one place per run, so that each tool is first, second, ... equally often.
A run whose process fails or whose output does not check out is recorded
with its reason and counts as a failure, not as a number.

When `Session` is given the registries, it also reads their CPU time
(``/proc/PID/stat``) after ``prepare`` (which may restart B) and right after
the client exits: on two cores the registries, not the client, are the
ceiling of a copy, so what a tool makes them spend matters as much as its own
CPU.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from asyncreg.testkit.builder import BuiltImage
from asyncreg.testkit.registry import RegistryProcess
from asyncreg.testkit.skopeo import push_layout

from .measure import Measurement, head_digest, process_cpu_s, run_measured
from .report import SUBJECT, RunRecord, WorkloadResult
from .workloads import Workload

__all__ = [
    "REPO_ROOT",
    "Session",
    "ToolSpec",
    "check_printed_digest",
    "check_registry",
    "log",
    "seed_source",
    "shown",
]

REPO_ROOT = Path(__file__).resolve().parent.parent


def log(message: str) -> None:
    """A progress line on stderr."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def shown(argv: Sequence[str]) -> str:
    """A command line for the report, with the interpreter path shortened."""
    parts = list(argv)
    if parts and parts[0] == sys.executable:
        parts[0] = "python"
    return " ".join(parts)


def _nothing() -> None:
    return None


@dataclass(frozen=True)
class ToolSpec:
    """One tool of a leg: its command and what surrounds every run of it."""

    name: str
    argv: tuple[str, ...]
    #: Before every run (untimed): wipe registry B, or delete the output tar.
    prepare: Callable[[], None]
    #: After a run that exited 0 (untimed): why its output is wrong, or None.
    check: Callable[[Measurement], str | None]
    #: After every run, checked or not (untimed): delete what it wrote.
    cleanup: Callable[[], None] = _nothing


def check_printed_digest(tool: str, stdout: str, expected: str) -> str | None:
    """asyncreg prints the digest it copied, exported or imported as its first line."""
    if tool != SUBJECT:
        return None
    printed = stdout.strip().splitlines()[:1]
    if printed != [expected]:
        return f"asyncreg printed {printed[0] if printed else 'nothing'!r}, expected {expected}"
    return None


def check_registry(registry: RegistryProcess, workload: Workload, expected: str) -> str | None:
    """Why ``registry`` does not hold ``expected`` at the workload's tag, or None."""
    try:
        got = head_digest(registry.url, workload.repo, workload.tag, context=registry.ssl_context())
    except OSError as exc:
        return f"could not HEAD the tag in B: {exc}"
    if got != expected:
        return f"B holds {got or 'nothing'} at {workload.repo}:{workload.tag}, expected {expected}"
    return None


def seed_source(
    workload: Workload, scale: float, layout: Path, source: RegistryProcess
) -> BuiltImage:
    """Build the workload as an OCI layout at ``layout`` and push it to ``source`` unchanged."""
    log(f"{workload.name}: building {workload.describe(scale)} in {layout}")
    built = workload.build(layout, scale)
    log(f"{workload.name}: seeding registry A ({source.host}) with skopeo")
    push_layout(layout, workload.tag, source.host, workload.repo, all=True)
    seeded = head_digest(source.url, workload.repo, workload.tag, context=source.ssl_context())
    if seeded != built.digest:
        raise RuntimeError(f"registry A holds {seeded or 'nothing'}, expected {built.digest}")
    return built


class Session:
    """Runs the tools of one leg and records every run in ``result``."""

    def __init__(
        self,
        result: WorkloadResult,
        specs: Sequence[ToolSpec],
        timeout: float,
        env: Mapping[str, str],
        servers: Sequence[RegistryProcess] = (),
    ) -> None:
        names = tuple(spec.name for spec in specs)
        if names != result.tools:
            raise ValueError(f"tools {names} do not match the result's {result.tools}")
        self.result = result
        self.specs = tuple(specs)
        self.timeout = timeout
        self.env = env
        self.servers = tuple(servers)

    def _server_cpu(self) -> list[float] | None:
        """CPU seconds so far of each registry; None without registries or if one is gone."""
        readings: list[float] = []
        for server in self.servers:
            reading = process_cpu_s(server.pid) if server.running else None
            if reading is None:
                return None
            readings.append(reading)
        return readings or None

    def once(self, spec: ToolSpec, run: int, position: int) -> RunRecord:
        """Prepare, run ``spec`` once, check, clean up; a failure is recorded, never raised."""
        spec.prepare()
        server_cpu: float | None = None
        try:
            before = self._server_cpu()
            m = run_measured(spec.argv, timeout=self.timeout, env=self.env, cwd=REPO_ROOT)
            after = self._server_cpu()
            if before is not None and after is not None:
                server_cpu = sum(b - a for a, b in zip(before, after, strict=True))
            error = m.failure()
            if error is None:
                error = spec.check(m)
        finally:
            spec.cleanup()
        label = "warm-up" if run == 0 else f"run {run}"
        if error is None:
            servers = "" if server_cpu is None else f", registries {server_cpu:.2f} CPU s"
            log(
                f"{self.result.title} {label} {spec.name}: {m.wall_s:.2f} s wall,"
                f" {m.cpu_s:.2f} CPU s, {m.max_rss_mib:.1f} MiB peak RSS{servers}"
            )
        else:
            log(f"{self.result.title} {label} {spec.name}: FAILED: {error}")
        return RunRecord(
            run=run,
            tool=spec.name,
            position=position,
            measurement=m,
            error=error,
            server_cpu_s=server_cpu,
        )

    def run(self, runs: int) -> None:
        """One warm-up per tool, then ``runs`` timed runs in rotating order."""
        broken: set[str] = set()
        for position, spec in enumerate(self.specs):
            record = self.once(spec, run=0, position=position)
            self.result.warmups.append(record)
            if not record.ok:
                broken.add(spec.name)
        for run in range(1, runs + 1):
            shift = (run - 1) % len(self.specs)
            order = self.specs[shift:] + self.specs[:shift]
            for position, spec in enumerate(order):
                if spec.name in broken:
                    # Its warm-up failed: timing it again would only burn the time budget.
                    self.result.runs.append(
                        RunRecord(run, spec.name, position, None, "skipped: its warm-up failed")
                    )
                    continue
                self.result.runs.append(self.once(spec, run, position))
