"""W3: an image through a tar file, asyncreg against skopeo, in three legs timed apart.

1. export (``W3 export``): registry A to a tar file.
   asyncreg ``export A/REPO:TAG FILE`` against ``skopeo copy`` to
   ``docker-archive:FILE:REPO:TAG`` and to ``oci-archive:FILE:TAG``. The output
   directory is emptied before every run (a stale file would change what the
   tools do: skopeo refuses to add to an existing docker-archive) and again
   after the run is checked. asyncreg's tar must hold an ``index.json`` that
   lists exactly the source digest (read with `tarfile`, which seeks over the
   blobs without reading them) and asyncreg must print that digest; skopeo's
   tars only have to exist and be non-empty.
2. import (``W3 import``): an OCI archive into an empty registry B. The input
   is written once, untimed, by asyncreg's export and checked as above; then
   asyncreg ``import FILE B/REPO:TAG`` against ``skopeo copy
   oci-archive:FILE:TAG docker://B/REPO:TAG``. B is wiped before every run and
   must hold the source digest after it (``HEAD``).
3. import of skopeo's tar (``W3 import of skopeo's oci-archive``): the same,
   with an input written once by skopeo's ``oci-archive:`` export (its
   ``index.json`` must list the source digest too, or the leg is not measured).

Disk: an image-sized tar costs about the image (1 GiB at scale 1), so the
layout is deleted once A holds the image, each leg's input is written just
before the leg and deleted after it, and an export's output does not outlive
its run. The peak is about three images: A's storage, one tar, and B's storage
or, during skopeo's oci-archive export, the OCI directory it builds before
tarring it. Clients get ``TMPDIR`` inside the benchmark's temporary directory,
so whatever a killed client leaves behind is removed with it.
"""

from __future__ import annotations

import json
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from asyncreg.testkit.registry import RegistryProcess
from asyncreg.testkit.skopeo import copy_command

from .measure import Measurement, client_env, run_measured
from .report import (
    BASELINE,
    GIB,
    SKOPEO_DOCKER_ARCHIVE,
    SKOPEO_OCI_ARCHIVE,
    SUBJECT,
    TOOLS,
    WorkloadResult,
)
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
from .workloads import LEG_EXPORT, LEG_IMPORT, LEG_IMPORT_SKOPEO_TAR, MIB, Workload

__all__ = [
    "EXPORT_TOOLS",
    "check_tar_index",
    "export_argv",
    "import_argv",
    "run_archive_workload",
    "tar_index_digests",
]

#: The export leg's tools, in table order; both skopeo transports are baselines.
EXPORT_TOOLS = (SUBJECT, SKOPEO_DOCKER_ARCHIVE, SKOPEO_OCI_ARCHIVE)

#: An index.json bigger than this is not the small file an export writes.
_INDEX_LIMIT = 4 * MIB


def export_argv(workload: Workload, tool: str, src_host: str, file: str) -> list[str]:
    """The command of ``tool`` writing the workload's image in ``src_host`` to ``file``."""
    ref = f"{workload.repo}:{workload.tag}"
    src = f"{src_host}/{ref}"
    if tool == SUBJECT:
        return [sys.executable, "-m", "asyncreg", "export", src, file, "--progress", "none"]
    if tool == SKOPEO_DOCKER_ARCHIVE:
        return copy_command(f"docker://{src}", f"docker-archive:{file}:{ref}")
    if tool == SKOPEO_OCI_ARCHIVE:
        return copy_command(f"docker://{src}", f"oci-archive:{file}:{workload.tag}")
    raise ValueError(f"no export command for {tool!r}")


def import_argv(workload: Workload, tool: str, file: str, dst_host: str) -> list[str]:
    """The command of ``tool`` pushing the OCI archive ``file`` to ``dst_host``."""
    dst = f"{dst_host}/{workload.repo}:{workload.tag}"
    if tool == SUBJECT:
        return [sys.executable, "-m", "asyncreg", "import", file, dst, "--progress", "none"]
    if tool == BASELINE:
        return copy_command(f"oci-archive:{file}:{workload.tag}", f"docker://{dst}")
    raise ValueError(f"no import command for {tool!r}")


def tar_index_digests(path: Path) -> list[str]:
    """The manifest digests that the ``index.json`` inside the tar at ``path`` lists.

    Only member headers are read on the way to ``index.json``: on a regular
    file `tarfile` seeks over member data, so the blobs are never read.
    Raises `ValueError` when there is no usable ``index.json``, `OSError` or
    `tarfile.TarError` when the file is not a readable tar.
    """
    with tarfile.open(path, mode="r:") as tar:
        for member in tar:
            name = member.name
            while name.startswith("./"):
                name = name[2:]
            if name != "index.json":
                continue
            if not member.isfile():
                raise ValueError("index.json is not a regular file")
            if member.size > _INDEX_LIMIT:
                raise ValueError(f"index.json has {member.size} bytes")
            handle = tar.extractfile(member)
            if handle is None:
                raise ValueError("index.json cannot be read")
            with handle:
                doc = json.loads(handle.read())
            entries = doc.get("manifests") if isinstance(doc, dict) else None
            if not isinstance(entries, list):
                raise ValueError("index.json has no manifests list")
            return [str(e.get("digest")) if isinstance(e, dict) else repr(e) for e in entries]
    raise ValueError("no index.json in the tar")


def check_tar_index(path: Path, expected: str) -> str | None:
    """Why the tar at ``path`` is not an OCI archive of exactly ``expected``, or None."""
    try:
        digests = tar_index_digests(path)
    except (OSError, tarfile.TarError, ValueError) as exc:
        return f"cannot read index.json of {path.name}: {exc}"
    if digests != [expected]:
        return f"index.json of {path.name} lists {digests or 'nothing'}, expected [{expected}]"
    return None


def _check_nonempty(path: Path) -> str | None:
    try:
        size = path.stat().st_size
    except OSError as exc:
        return f"no output file: {exc}"
    return None if size > 0 else f"{path.name} is empty"


def _size_text(size: int) -> str:
    return f"{size} bytes ({size / GIB:.3f} GiB)"


def _empty_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)


class _ArchiveLab:
    """The registries, directories and client environment of one W3 session."""

    def __init__(
        self,
        workload: Workload,
        source: RegistryProcess,
        dest: RegistryProcess,
        tmp: Path,
        expected: str,
        timeout: float,
    ) -> None:
        self.workload = workload
        self.source = source
        self.dest = dest
        self.expected = expected
        self.timeout = timeout
        self.out_dir = tmp / "export"
        self.in_dir = tmp / "input"
        scratch = tmp / "scratch"
        scratch.mkdir()
        self.env = client_env()
        self.env["TMPDIR"] = str(scratch)

    def _export_check(
        self, tool: str, out: Path, sizes: dict[str, int]
    ) -> Callable[[Measurement], str | None]:
        def check(m: Measurement) -> str | None:
            if tool == SUBJECT:
                error = check_printed_digest(tool, m.stdout, self.expected) or check_tar_index(
                    out, self.expected
                )
            else:
                error = _check_nonempty(out)
            if error is None:
                sizes[tool] = out.stat().st_size
            return error

        return check

    def export_leg(self, result: WorkloadResult, runs: int) -> None:
        """Time the three exports of A's image into a tar."""
        out = self.out_dir / "image.tar"
        sizes: dict[str, int] = {}
        specs = [
            ToolSpec(
                name=tool,
                argv=tuple(export_argv(self.workload, tool, self.source.host, str(out))),
                prepare=lambda: _empty_dir(self.out_dir),
                check=self._export_check(tool, out, sizes),
                cleanup=lambda: shutil.rmtree(self.out_dir, ignore_errors=True),
            )
            for tool in result.tools
        ]
        result.commands = {
            tool: shown(export_argv(self.workload, tool, "A", "FILE")) for tool in result.tools
        }
        result.notes.append(
            "output directory emptied before every export and after its check; asyncreg's"
            " tar must list exactly the source digest in index.json, skopeo's tars must be"
            " non-empty"
        )
        Session(result, specs, self.timeout, self.env, servers=(self.source, self.dest)).run(runs)
        if sizes:
            result.notes.append(
                "tar sizes: " + "; ".join(f"{t} {_size_text(n)}" for t, n in sizes.items())
            )

    def _make_input(self, maker: str) -> Path:
        """Write the image to a tar with ``maker``'s export, untimed, and check it."""
        _empty_dir(self.in_dir)
        path = self.in_dir / "image.tar"
        argv = export_argv(self.workload, maker, self.source.host, str(path))
        log(f"{self.workload.name}: writing the import input with {maker} (untimed)")
        m = run_measured(argv, timeout=self.timeout, env=self.env, cwd=REPO_ROOT)
        error = m.failure() or check_printed_digest(maker, m.stdout, self.expected)
        error = error or check_tar_index(path, self.expected)
        if error is not None:
            raise RuntimeError(f"the input tar written by {maker} is unusable: {error}")
        return path

    def _import_check(self, tool: str) -> Callable[[Measurement], str | None]:
        def check(m: Measurement) -> str | None:
            return check_registry(self.dest, self.workload, self.expected) or (
                check_printed_digest(tool, m.stdout, self.expected)
            )

        return check

    def import_leg(self, result: WorkloadResult, runs: int, maker: str) -> None:
        """Time both imports of one OCI archive (written by ``maker``) into a wiped B."""
        try:
            path = self._make_input(maker)
            specs = [
                ToolSpec(
                    name=tool,
                    argv=tuple(import_argv(self.workload, tool, str(path), self.dest.host)),
                    prepare=self.dest.reset,
                    check=self._import_check(tool),
                )
                for tool in result.tools
            ]
            result.commands = {
                tool: shown(import_argv(self.workload, tool, "FILE", "B")) for tool in result.tools
            }
            made_by = shown(export_argv(self.workload, maker, "A", "FILE"))
            result.notes.append(
                f"input FILE: {_size_text(path.stat().st_size)}, written once (untimed)"
                f" by `{made_by}`; registry B wiped before every import"
            )
            Session(result, specs, self.timeout, self.env, servers=(self.source, self.dest)).run(
                runs
            )
        finally:
            shutil.rmtree(self.in_dir, ignore_errors=True)


def _guarded(result: WorkloadResult, leg: Callable[[], None]) -> None:
    """Run one leg; an exception outside the runs makes it "not measured", not a crash."""
    try:
        leg()
    except Exception as exc:
        log(f"{result.title}: aborted: {exc}")
        result.setup_error = f"{type(exc).__name__}: {exc}"


def run_archive_workload(
    workload: Workload, runs: int, scale: float, timeout: float
) -> list[WorkloadResult]:
    """Prepare, measure and clean up W3: one result per leg, setup errors included."""
    results = [
        WorkloadResult(
            workload=workload,
            scale=scale,
            leg=LEG_EXPORT,
            tools=EXPORT_TOOLS,
            baselines=(SKOPEO_DOCKER_ARCHIVE, SKOPEO_OCI_ARCHIVE),
        ),
        WorkloadResult(workload=workload, scale=scale, leg=LEG_IMPORT, tools=TOOLS),
        WorkloadResult(workload=workload, scale=scale, leg=LEG_IMPORT_SKOPEO_TAR, tools=TOOLS),
    ]
    export, imported, imported_skopeo_tar = results
    tmp = Path(tempfile.mkdtemp(prefix=f"asyncreg-bench-{workload.name.lower()}-"))
    source = RegistryProcess()
    dest = RegistryProcess()
    try:
        try:
            source.start()
            dest.start()
            layout = tmp / "layout"
            built = seed_source(workload, scale, layout, source)
            # Registry A holds the image now: free the disk for the tars.
            shutil.rmtree(layout)
            lab = _ArchiveLab(workload, source, dest, tmp, built.digest, timeout)
        except Exception as exc:
            log(f"{workload.name}: aborted: {exc}")
            for result in results:
                result.setup_error = f"{type(exc).__name__}: {exc}"
            return results
        for result in results:
            result.expected_digest = built.digest
            result.bytes_moved = built.blob_bytes
            result.blob_count = len(built.blobs)
        _guarded(export, lambda: lab.export_leg(export, runs))
        _guarded(imported, lambda: lab.import_leg(imported, runs, maker=SUBJECT))
        _guarded(
            imported_skopeo_tar,
            lambda: lab.import_leg(imported_skopeo_tar, runs, maker=SKOPEO_OCI_ARCHIVE),
        )
    finally:
        dest.stop()
        source.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return results
