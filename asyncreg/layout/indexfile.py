"""``index.json`` of an OCI layout: read, and update atomically under a lock.

Two copies into one layout (two tasks, or two processes) must not lose each
other's entries, which a read-modify-write without a lock does. Updates take
an in-process lock and an exclusive ``fcntl.flock`` on the layout directory
(taken in a worker thread, so the event loop never blocks), re-read the file,
apply the change, write a temporary file and ``os.replace`` it: readers see the
old index or the new one, never half of one.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio

from ..destination import TEMP_PREFIX, file_mode, sweep_stale
from ..errors import ArchiveError
from ..manifest import Descriptor, Manifest, build_index
from ..mediatypes import OCI_INDEX

__all__ = ["LAYOUT_VERSION", "REF_NAME", "read_index", "update_index"]

LAYOUT_VERSION = '{"imageLayoutVersion":"1.0.0"}'
REF_NAME = "org.opencontainers.image.ref.name"
_locks: dict[str, anyio.Lock] = {}


def read_index(root: Path) -> Manifest:
    """The layout's ``index.json`` (an empty index when the file does not exist)."""
    path = root / "index.json"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return build_index([])
    except OSError as exc:
        raise ArchiveError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        index = Manifest.parse(raw, OCI_INDEX)
    except ValueError as exc:
        raise ArchiveError(f"{path}: not a valid OCI index: {exc}") from exc
    if not index.is_index:
        raise ArchiveError(f"{path}: not an OCI index")
    return index


@contextmanager
def _file_lock(root: Path) -> Iterator[None]:
    # The lock is taken on the layout directory itself, so no lock file is left in
    # the layout (image-layout lists oci-layout, index.json and blobs/ only).
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    """Temp file beside ``path`` (named for this process), fsync, ordinary mode, rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{TEMP_PREFIX}{os.getpid()}-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _update_sync(root: Path, change: Callable[[list[Descriptor]], list[Descriptor] | None]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    sweep_stale(str(root))
    layout = root / "oci-layout"
    if not layout.exists():
        _write_atomic(layout, LAYOUT_VERSION.encode())
    with _file_lock(root):
        current = read_index(root)
        entries = change(list(current.manifests))
        if entries is None:
            return
        index = build_index(entries, annotations=current.annotations or None)
        _write_atomic(root / "index.json", index.raw)


async def update_index(
    root: Path, change: Callable[[list[Descriptor]], list[Descriptor] | None]
) -> None:
    """Apply ``change`` to the entries of ``index.json`` (None from it: no write)."""
    key = str(root)  # callers pass absolute paths
    lock = _locks.setdefault(key, anyio.Lock())
    async with lock:
        await anyio.to_thread.run_sync(_update_sync, root, change)


def entry_name(desc: Descriptor) -> str | None:
    """The ``org.opencontainers.image.ref.name`` of an index entry."""
    return desc.annotations.get(REF_NAME)
