"""Results of a benchmark session and their markdown report.

Only successful runs (exit status 0 *and* the expected digest in registry B)
count towards the figures; a failed run is listed with its reason instead of
a number. Medians are used for wall and CPU time because single runs on a
shared 2-core machine vary by 15-20 %; peak RSS is the maximum, because a
memory ceiling is about the worst run.

A result covers one leg of one workload: the copy of W1 or W4, or the export
or an import of W3. Each leg has its own tools (W3's export compares asyncreg
with two skopeo transports) and one or more baselines that asyncreg's median
wall time is divided by.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .measure import Measurement
from .workloads import LEG_EXPORT, LEG_IMPORT, LEG_IMPORT_SKOPEO_TAR, Workload

__all__ = [
    "BASELINE",
    "SUBJECT",
    "TARGETS",
    "TOOLS",
    "RunRecord",
    "Target",
    "ToolStats",
    "WorkloadResult",
    "render_report",
]

GIB = 1024**3

#: The tool under test: every ratio is its median wall over a baseline's.
SUBJECT = "asyncreg"
#: The tools of a registry-to-registry copy, in the order the tables list them.
TOOLS = (SUBJECT, "skopeo")
#: The baseline of a copy (other legs name theirs in `WorkloadResult.baselines`).
BASELINE = "skopeo"


@dataclass(frozen=True)
class RunRecord:
    """One invocation of one tool: its measurement, and why it failed (None if it did not)."""

    run: int
    tool: str
    #: Place of the tool in its run's order: 0 when it ran first.
    position: int
    measurement: Measurement | None
    error: str | None = None
    #: CPU seconds the registries (A and B together) spent during the run, when measured.
    server_cpu_s: float | None = None

    @property
    def ok(self) -> bool:
        """True when the tool succeeded and its output checked out (digest in B, tar)."""
        return self.error is None and self.measurement is not None


@dataclass
class WorkloadResult:
    """Everything measured for one leg of one workload."""

    workload: Workload
    scale: float
    #: Which part of the workload: "" for a copy, `LEG_EXPORT` or an import leg for W3.
    leg: str = ""
    #: The tools compared, in the order the tables list them (and the first run runs them).
    tools: tuple[str, ...] = TOOLS
    #: The tools asyncreg's median wall time is divided by, one ratio each.
    baselines: tuple[str, ...] = (BASELINE,)
    bytes_moved: int = 0
    blob_count: int = 0
    expected_digest: str = ""
    #: tool name -> the command line, with ``A``/``B``/``FILE`` standing for registries and tars.
    commands: dict[str, str] = field(default_factory=dict)
    #: Extra facts for the report (procedure of the leg, sizes of the tars written or read).
    notes: list[str] = field(default_factory=list)
    warmups: list[RunRecord] = field(default_factory=list)
    runs: list[RunRecord] = field(default_factory=list)
    #: Set when the leg could not be prepared (build, registries, seeding, input tar).
    setup_error: str | None = None

    @property
    def title(self) -> str:
        """``W1``, or ``W3 export``: the workload name and the leg."""
        return f"{self.workload.name} {self.leg}" if self.leg else self.workload.name

    def records(self, tool: str) -> list[RunRecord]:
        """The timed runs of ``tool``, in order."""
        return [r for r in self.runs if r.tool == tool]

    def stats(self, tool: str) -> ToolStats:
        """Summary figures of the successful timed runs of ``tool``."""
        ok = [r for r in self.records(tool) if r.ok and r.measurement is not None]
        return ToolStats(
            tool=tool,
            attempted=len(self.records(tool)),
            measurements=[r.measurement for r in ok if r.measurement is not None],
            bytes_moved=self.bytes_moved,
            server_cpu=[r.server_cpu_s for r in ok if r.server_cpu_s is not None],
        )

    @property
    def server_cpu_measured(self) -> bool:
        """True when some timed run measured the registries' CPU."""
        return any(r.server_cpu_s is not None for r in self.runs)

    def wall_ratio(self, baseline: str | None = None) -> float | None:
        """asyncreg median wall over that of ``baseline`` (default: the first); None if no data."""
        mine = self.stats(SUBJECT).median_wall
        base = self.stats(baseline or self.baselines[0]).median_wall
        if mine is None or base is None or base <= 0:
            return None
        return mine / base

    @property
    def failures(self) -> list[RunRecord]:
        """Warm-ups and timed runs that failed."""
        return [r for r in (*self.warmups, *self.runs) if not r.ok]


@dataclass(frozen=True)
class ToolStats:
    """Median wall, throughput, CPU per GiB and peak RSS of one tool on one workload."""

    tool: str
    attempted: int
    measurements: Sequence[Measurement]
    bytes_moved: int
    #: Registry CPU seconds (A+B) of the successful runs that measured it.
    server_cpu: Sequence[float] = ()

    @property
    def ok_count(self) -> int:
        """Successful timed runs."""
        return len(self.measurements)

    @property
    def median_server_cpu(self) -> float | None:
        """Median CPU seconds the registries spent per run."""
        return statistics.median(self.server_cpu) if self.server_cpu else None

    @property
    def median_wall(self) -> float | None:
        """Median wall seconds."""
        if not self.measurements:
            return None
        return statistics.median(m.wall_s for m in self.measurements)

    @property
    def mb_per_s(self) -> float | None:
        """Bytes moved / median wall / 1e6."""
        wall = self.median_wall
        if wall is None or wall <= 0:
            return None
        return self.bytes_moved / wall / 1e6

    @property
    def cpu_per_gib(self) -> float | None:
        """Median of (user + sys CPU seconds) per GiB moved."""
        if not self.measurements or self.bytes_moved <= 0:
            return None
        gib = self.bytes_moved / GIB
        return statistics.median(m.cpu_s / gib for m in self.measurements)

    @property
    def peak_rss_mib(self) -> float | None:
        """Largest peak RSS over the runs, in MiB."""
        if not self.measurements:
            return None
        return max(m.max_rss_mib for m in self.measurements)


@dataclass(frozen=True)
class Target:
    """A goal from the issue: ``metric(result) <= limit`` on one leg of one workload."""

    workload: str
    what: str
    limit: float
    unit: str
    metric: Callable[[WorkloadResult], float | None]
    #: Scales the issue states the target for.
    scales: tuple[float, ...] = (1.0,)
    #: The leg of the workload ("" for a copy), as in `WorkloadResult.leg`.
    leg: str = ""

    @property
    def title(self) -> str:
        """The workload and leg, as `WorkloadResult.title` spells them."""
        return f"{self.workload} {self.leg}" if self.leg else self.workload


def _asyncreg_rss(result: WorkloadResult) -> float | None:
    return result.stats(SUBJECT).peak_rss_mib


def _wall_ratio(result: WorkloadResult) -> float | None:
    return result.wall_ratio()


#: W3's tools: asyncreg's export is timed against two skopeo transports, its import against one.
SKOPEO_DOCKER_ARCHIVE = "skopeo docker-archive"
SKOPEO_OCI_ARCHIVE = "skopeo oci-archive"


TARGETS: tuple[Target, ...] = (
    Target("W1", "wall ratio asyncreg/skopeo (medians)", 0.8, "", lambda r: r.wall_ratio()),
    Target(
        "W1",
        "asyncreg client CPU per GiB (median)",
        1.0,
        " s/GiB",
        lambda r: r.stats("asyncreg").cpu_per_gib,
    ),
    Target(
        "W1",
        "asyncreg peak RSS (max)",
        120.0,
        " MiB",
        lambda r: r.stats("asyncreg").peak_rss_mib,
        scales=(1.0, 4.0),
    ),
    Target(
        "W3",
        f"wall ratio asyncreg/{SKOPEO_DOCKER_ARCHIVE} (medians)",
        0.5,
        "",
        lambda r: r.wall_ratio(SKOPEO_DOCKER_ARCHIVE),
        leg=LEG_EXPORT,
    ),
    Target(
        "W3",
        f"wall ratio asyncreg/{SKOPEO_OCI_ARCHIVE} (medians)",
        0.25,
        "",
        lambda r: r.wall_ratio(SKOPEO_OCI_ARCHIVE),
        leg=LEG_EXPORT,
    ),
    Target("W3", "asyncreg peak RSS (max)", 150.0, " MiB", _asyncreg_rss, leg=LEG_EXPORT),
    *(
        target
        for leg in (LEG_IMPORT, LEG_IMPORT_SKOPEO_TAR)
        for target in (
            Target("W3", "wall ratio asyncreg/skopeo (medians)", 0.8, "", _wall_ratio, leg=leg),
            Target("W3", "asyncreg peak RSS (max)", 150.0, " MiB", _asyncreg_rss, leg=leg),
        )
    ),
    Target("W4", "wall ratio asyncreg/skopeo (medians)", 0.8, "", lambda r: r.wall_ratio()),
    Target(
        "W4",
        "asyncreg client CPU per GiB (median)",
        1.0,
        " s/GiB",
        lambda r: r.stats("asyncreg").cpu_per_gib,
    ),
)


def _num(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _run_cell(record: RunRecord | None, attr: str, digits: int) -> str:
    if record is None:
        return ""
    if record.measurement is None:
        return "skipped"
    if not record.ok:
        return "FAIL"
    value: float = getattr(record.measurement, attr)
    return f"{value:.{digits}f}"


def _server_cell(record: RunRecord | None) -> str:
    if record is None or record.server_cpu_s is None:
        return ""
    return _num(record.server_cpu_s) if record.ok else "FAIL"


def _ratio_cell(result: WorkloadResult, tool: str, baseline: str) -> str:
    if tool == baseline:
        return "1.00 (baseline)"
    if tool == SUBJECT:
        return _num(result.wall_ratio(baseline))
    return ""


def _workload_section(result: WorkloadResult) -> list[str]:
    w = result.workload
    lines = [f"## {result.title}: {w.describe(result.scale)}", ""]
    if result.setup_error is not None:
        lines += [f"**Not measured**: {result.setup_error}", ""]
        return lines
    lines += [
        f"- bytes moved: {result.bytes_moved} ({result.bytes_moved / GIB:.3f} GiB,"
        f" {result.blob_count} blobs: configs and layers)",
        f"- expected top digest: `{result.expected_digest}`",
    ]
    for tool in result.tools:
        if tool in result.commands:
            lines.append(f"- {tool}: `{result.commands[tool]}`")
    lines += [f"- {note}" for note in result.notes]
    lines.append("")

    servers = result.server_cpu_measured
    ratio_header = "".join(f" wall ratio vs {b} |" for b in result.baselines)
    server_header = " registry CPU s A+B (median) |" if servers else ""
    lines += [
        "| tool | runs ok | median wall s | MB/s | CPU s/GiB (median) | peak RSS MiB (max) |"
        + server_header
        + ratio_header,
        "|---|---|---|---|---|---|" + ("---|" if servers else "") + "---|" * len(result.baselines),
    ]
    for tool in result.tools:
        st = result.stats(tool)
        ratios = "".join(f" {_ratio_cell(result, tool, b)} |" for b in result.baselines)
        server_cell = f" {_num(st.median_server_cpu)} |" if servers else ""
        lines.append(
            f"| {tool} | {st.ok_count}/{st.attempted} | {_num(st.median_wall)}"
            f" | {_num(st.mb_per_s, 0)} | {_num(st.cpu_per_gib)} | {_num(st.peak_rss_mib, 1)} |"
            + server_cell
            + ratios
        )
    lines.append("")

    by_run: dict[int, dict[str, RunRecord]] = {}
    for record in result.runs:
        by_run.setdefault(record.run, {})[record.tool] = record
    header = ["run", "first"]
    header += [f"{t} wall s" for t in result.tools]
    header += [f"{t} CPU s" for t in result.tools]
    header += [f"{t} RSS MiB" for t in result.tools]
    if servers:
        header += [f"{t} registry CPU s" for t in result.tools]
    what = ", registry A+B CPU" if servers else ""
    lines += [
        f"Every timed run (wall clock, client CPU user+sys, client peak RSS{what}):",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for run, records in sorted(by_run.items()):
        first = next((r.tool for r in records.values() if r.position == 0), "")
        cells = [str(run), first]
        cells += [_run_cell(records.get(t), "wall_s", 2) for t in result.tools]
        cells += [_run_cell(records.get(t), "cpu_s", 2) for t in result.tools]
        cells += [_run_cell(records.get(t), "max_rss_mib", 1) for t in result.tools]
        if servers:
            cells += [_server_cell(records.get(t)) for t in result.tools]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")

    if result.failures:
        lines += ["Failures (not counted in the figures):", ""]
        for record in result.failures:
            label = "warm-up" if record.run == 0 else f"run {record.run}"
            lines.append(f"- {label} {record.tool}: {record.error}")
        lines.append("")
    return lines


def _targets_section(results: Sequence[WorkloadResult], scale: float) -> list[str]:
    by_title = {r.title: r for r in results}
    lines = [
        "## Targets from the issue",
        "",
        "| workload | target | issue | measured | status |",
        "|---|---|---|---|---|",
    ]
    notes: set[str] = set()
    for target in TARGETS:
        result = by_title.get(target.title)
        value = None
        if result is not None and result.setup_error is None:
            value = target.metric(result)
        if result is None:
            status = "not run"
        elif value is None:
            status = "no data"
        else:
            status = "met" if value <= target.limit else "**missed**"
        if result is not None and scale not in target.scales:
            wanted = " and ".join(f"{s:g}" for s in target.scales)
            status += f" (scale {scale:g}; target is for scale {wanted})"
            notes.add("scale")
        measured = "n/a" if value is None else f"{value:.2f}{target.unit}"
        lines.append(
            f"| {target.title} | {target.what} | ≤ {target.limit:g}{target.unit}"
            f" | {measured} | {status} |"
        )
    lines.append("")
    if "scale" in notes:
        lines += [
            "Targets are stated for full-size layers: at another scale, start-up costs"
            " weigh differently and the figures are only a smoke test.",
            "",
        ]
    return lines


def render_report(
    header: Sequence[tuple[str, str]], results: Sequence[WorkloadResult], scale: float
) -> str:
    """The markdown report: header facts, one section per workload, then the targets."""
    lines = ["# asyncreg benchmark", ""]
    lines += [f"- {key}: {value}" for key, value in header]
    lines.append("")
    for result in results:
        lines += _workload_section(result)
    lines += _targets_section(results, scale)
    return "\n".join(lines).rstrip() + "\n"
