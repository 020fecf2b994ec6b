"""Tar entry framing for a streaming writer, pure.

A tar written as a stream is: for each file, a header (ustar, with PAX
records when a name is long) then the bytes, padded with NULs to a multiple
of 512; at the end, two zero blocks. Headers here are deterministic (mtime 0,
uid/gid 0, mode 0644 / 0755), so the same content gives the same tar.
"""

from __future__ import annotations

import tarfile

__all__ = ["BLOCK", "END", "dir_header", "file_header", "padding"]

BLOCK = 512
END = b"\0" * (2 * BLOCK)


def file_header(name: str, size: int) -> bytes:
    """The header block(s) of a regular file entry."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = 0
    info.type = tarfile.REGTYPE
    return info.tobuf(format=tarfile.PAX_FORMAT)


def dir_header(name: str) -> bytes:
    """The header block of a directory entry (``name`` ends with ``/``)."""
    info = tarfile.TarInfo(name.rstrip("/"))
    info.mode = 0o755
    info.mtime = 0
    info.type = tarfile.DIRTYPE
    return info.tobuf(format=tarfile.PAX_FORMAT)


def padding(size: int) -> bytes:
    """NULs that bring an entry of ``size`` bytes to a block boundary."""
    rest = size % BLOCK
    return b"\0" * (BLOCK - rest) if rest else b""
