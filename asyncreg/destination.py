"""Where an output file goes, decided before anything is written.

asyncreg often runs as root, where a careless rename can turn ``/dev/full``
into a regular file or replace a symlink instead of the file it names. So a
destination is looked at first (``lstat``, never following blindly) and
given one of two ways of being written:

- **atomic**: a new name or a regular file (also one reached through a
  symlink, whose target is what gets replaced, so the link stays) is written
  to a temporary file in the same directory, fsynced and renamed over it:
  readers see the old file or the whole new one, never half;
- **stream**: ``-`` (stdout), a FIFO or a character device is opened and
  written in order, as a shell redirect would; it is never renamed over.

Refused, with a message that says why: a directory, a dangling symlink or one
that leads to anything but a regular file, a block device, a socket, and a
name whose directory does not exist. Temporary files carry the writer's PID
(``.asyncreg-tmp-<pid>-...``), so a later run removes those a killed run left.
"""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from .errors import DestinationError

__all__ = ["TEMP_PREFIX", "Destination", "Mode", "decide", "file_mode", "sweep_stale"]

#: Prefix of every temporary file asyncreg writes next to a destination.
TEMP_PREFIX = ".asyncreg-tmp-"


class Mode(StrEnum):
    """How a destination is written."""

    ATOMIC = "atomic"
    STREAM = "stream"


@dataclass(frozen=True, slots=True)
class Destination:
    """A checked destination: how to write it and the path to write (links resolved)."""

    mode: Mode
    path: str  # "-" for stdout

    @property
    def directory(self) -> str:
        """Where an atomic write puts its temporary file."""
        return os.path.dirname(os.path.abspath(self.path))


def decide(path: str) -> Destination:
    """Look at ``path`` and say how it may be written; `DestinationError` if it may not."""
    if path == "-":
        return Destination(Mode.STREAM, "-")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise DestinationError(f"{path}: the directory {parent} does not exist") from None
        return Destination(Mode.ATOMIC, path)
    except OSError as exc:
        raise DestinationError(f"{path}: cannot be inspected: {exc.strerror or exc}") from exc
    if stat.S_ISLNK(st.st_mode):
        real = os.path.realpath(path)
        try:
            target = os.stat(real)
        except OSError:
            raise DestinationError(f"{path}: a symlink to {real}, which does not exist") from None
        if not stat.S_ISREG(target.st_mode):
            raise DestinationError(
                f"{path}: a symlink to {real}, which is not a regular file; name the file itself"
            )
        return Destination(Mode.ATOMIC, real)
    return _by_kind(path, st.st_mode)


def _by_kind(path: str, mode: int) -> Destination:
    if stat.S_ISREG(mode):
        return Destination(Mode.ATOMIC, path)
    if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
        return Destination(Mode.STREAM, path)
    if stat.S_ISDIR(mode):
        raise DestinationError(f"{path}: is a directory; name a file in it")
    kind = "block device" if stat.S_ISBLK(mode) else "socket" if stat.S_ISSOCK(mode) else "file"
    raise DestinationError(f"{path}: is a {kind}; asyncreg writes regular files, FIFOs and -")


def file_mode() -> int:
    """The mode a new file gets under the process umask (0644 under umask 022).

    ``mkstemp`` creates 0600; a finished output should look like any other
    file the user created (skopeo's outputs are 0644 too).
    """
    return 0o666 & ~_umask()


def _umask() -> int:
    # Linux reports it without changing it (changing it is process-wide, so racy).
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def sweep_stale(directory: str) -> None:
    """Remove temporary files of asyncreg runs that are no longer alive, in ``directory``."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if not name.startswith(TEMP_PREFIX):
            continue
        pid_text = name[len(TEMP_PREFIX) :].split("-", 1)[0]
        if not pid_text.isdigit() or _alive(int(pid_text)):
            continue
        with contextlib.suppress(OSError):
            Path(directory, name).unlink()


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
