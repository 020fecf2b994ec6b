"""Run one client as a subprocess and measure it; check what landed in the registry.

The numbers come from the kernel, not from the tools: wall time is
``time.perf_counter`` around the child's whole life (start-up included), CPU
time and peak RSS come from the ``rusage`` that ``wait4`` returns for that
child (``ru_maxrss`` is in KiB on Linux).

Waiting happens in two steps so a timeout can never signal a recycled PID:
``waitid(..., WNOWAIT)`` blocks until the child has exited but leaves it a
zombie (its PID stays reserved), a timer thread may kill its process group
meanwhile, and only after that timer is stopped does ``wait4`` reap the child
and hand over its rusage.
"""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO

__all__ = [
    "MANIFEST_ACCEPT",
    "Measurement",
    "client_env",
    "head_digest",
    "process_cpu_s",
    "run_measured",
]

#: How much of a failed child's stdout/stderr is kept for the report.
_KEEP_CHARS = 2000

#: Every manifest type a workload can have at the top, so the registry serves it as stored.
MANIFEST_ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)

_PROXY_VARS = frozenset({"http_proxy", "https_proxy", "all_proxy", "no_proxy"})


@dataclass(frozen=True)
class Measurement:
    """One finished (or killed) client process."""

    argv: tuple[str, ...]
    wall_s: float
    user_s: float
    sys_s: float
    max_rss_kib: int
    #: Exit code; negative for a signal (as in `subprocess`); None when killed on timeout.
    exit_code: int | None
    stdout: str
    stderr: str

    @property
    def cpu_s(self) -> float:
        """User plus system CPU seconds of the client."""
        return self.user_s + self.sys_s

    @property
    def max_rss_mib(self) -> float:
        """Peak resident set size in MiB."""
        return self.max_rss_kib / 1024

    @property
    def timed_out(self) -> bool:
        """True when the process was killed because it ran past its timeout."""
        return self.exit_code is None

    def failure(self) -> str | None:
        """Why the process did not succeed (with the end of its stderr), or None."""
        if self.exit_code == 0:
            return None
        if self.exit_code is None:
            what = f"timed out after {self.wall_s:.1f} s"
        elif self.exit_code < 0:
            what = f"killed by signal {-self.exit_code}"
        else:
            what = f"exited with status {self.exit_code}"
        tail = self.stderr.strip().splitlines()[-3:]
        return what + (": " + " | ".join(tail) if tail else "")


def process_cpu_s(pid: int) -> float | None:
    """User plus system CPU seconds ``pid`` has used so far (``/proc/PID/stat``), or None.

    Used for the registries, which are not our children until they exit, so
    ``wait4`` cannot tell: the difference between two readings is the CPU a
    server spent in between. None when the process is gone or not readable.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # Field 2 (comm) is in parentheses and may hold spaces: split after its closing one.
    fields = stat[stat.rindex(b")") + 2 :].split()
    # Fields 14 and 15 (utime, stime) are fields 12 and 13 after comm, in clock ticks.
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def client_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for clients: the caller's, without proxy settings.

    Every address the benchmark uses is on loopback; a proxy variable left in
    the environment could route a client through another machine and measure
    that instead.
    """
    source = os.environ if base is None else base
    return {k: v for k, v in source.items() if k.lower() not in _PROXY_VARS}


def _read_tail(handle: IO[bytes]) -> str:
    handle.seek(0)
    text = handle.read().decode(errors="replace")
    return text if len(text) <= _KEEP_CHARS else text[-_KEEP_CHARS:]


def _kill_group(pid: int, fired: threading.Event) -> None:
    """Timer callback: SIGKILL the child's process group (the child is not reaped yet)."""
    fired.set()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def run_measured(
    argv: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> Measurement:
    """Run ``argv`` to completion and return its wall time, CPU time and peak RSS.

    stdout and stderr go to temporary files (a full pipe would stall the
    client and count as its time). The child runs in its own session, so a
    Ctrl-C reaches only the harness, which then kills and reaps the child
    before re-raising. After ``timeout`` seconds the child's process group is
    killed and the measurement has ``exit_code`` None.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        fired = threading.Event()
        start = time.perf_counter()
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=None if env is None else dict(env),
            cwd=cwd,
            start_new_session=True,
        )
        timer = threading.Timer(timeout, _kill_group, (proc.pid, fired))
        reaped = False
        try:
            timer.start()
            os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
            end = time.perf_counter()
            timer.cancel()
            timer.join()
            _, status, usage = os.wait4(proc.pid, 0)
            reaped = True
        finally:
            if not reaped:
                # Interrupted (Ctrl-C) while waiting: the child must not outlive the harness.
                timer.cancel()
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(proc.pid, 0)
                proc.returncode = -signal.SIGKILL
        code = os.waitstatus_to_exitcode(status)
        # Tell the Popen object the child is gone, so it never waits for (or signals) the PID.
        proc.returncode = code
        killed = fired.is_set() and code == -signal.SIGKILL
        return Measurement(
            argv=tuple(argv),
            wall_s=end - start,
            user_s=usage.ru_utime,
            sys_s=usage.ru_stime,
            max_rss_kib=usage.ru_maxrss,
            exit_code=None if killed else code,
            stdout=_read_tail(out),
            stderr=_read_tail(err),
        )


def head_digest(
    registry_url: str,
    repo: str,
    reference: str,
    timeout: float = 30.0,
    context: ssl.SSLContext | None = None,
) -> str:
    """``Docker-Content-Digest`` of ``HEAD /v2/REPO/manifests/REF``; "" when the registry has none.

    ``context`` is the TLS context for an ``https://`` registry (one that
    trusts its CA: `RegistryProcess.ssl_context`). Any other HTTP or
    connection error propagates: a registry that cannot answer is a broken
    lab, not a failed run.
    """
    request = urllib.request.Request(
        f"{registry_url}/v2/{repo}/manifests/{reference}",
        method="HEAD",
        headers={"Accept": MANIFEST_ACCEPT},
    )
    # No proxy handler: loopback requests go straight to the registry whatever the environment says.
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(request, timeout=timeout) as response:
            return str(response.headers.get("Docker-Content-Digest", ""))
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return ""
        raise
