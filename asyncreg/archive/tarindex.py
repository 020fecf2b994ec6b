"""An index of a tar's members: names to byte ranges, built from headers alone.

Why an index instead of extraction: an image tar holds blobs that are only
ever streamed somewhere else, so writing them to disk first would double the
I/O and open the classic extraction holes. `index_tar` makes one pass over
the headers (the stdlib `tarfile` parser, in a worker thread, on a seekable
file; data is skipped by seeking) and records, for each member, where its
data starts and how long it is. Reads are then ranges of the original file
(`TarIndex.open_range`), so a member can never be anything but bytes inside
the archive.

Entries are still judged as an extractor would have to, because an archive
that carries them is either broken or hostile, and saying so beats silently
skipping them. `HostilePathError` (naming the entry) for:

- absolute names and names with a ``..`` component;
- character and block devices and FIFOs;
- symbolic links that are absolute or whose target, resolved against the
  link's directory, leaves the archive root; hard links (whose target is an
  archive-root path) likewise; links to a member the archive lacks; link
  loops and chains longer than `MAX_LINK_DEPTH`.

Links that stay inside resolve to the regular file they reach: legacy
``docker save`` and skopeo's ``docker-archive:`` write
``<id>/layer.tar -> ../<hex>.tar``.

`ArchiveError` for what is malformed rather than hostile: a truncated member
or header, garbage after the last header, sparse and unknown entry types,
more than one ``oci-layout`` / ``index.json`` / ``manifest.json``, and two
``blobs/...`` entries of one name with different sizes (two members of one
name with equal sizes are tolerated; the blob's digest decides which bytes
are right when they are read).

Gzip-compressed tars (magic ``1f 8b``, ``docker save | gzip``) are accepted,
and zstd-compressed ones when the optional ``zstandard`` package is installed:
they are first decompressed to a temporary file next to the other work files
(streaming, 1 MiB at a time, `zlib` in a worker thread, concatenated gzip
members allowed), and that file is indexed; `TarIndex.aclose` deletes it.
"""

from __future__ import annotations

import contextlib
import os
import tarfile
import tempfile
import threading
import zlib
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final, Literal

import anyio
import anyio.to_thread

from ..digest import Verifier
from ..errors import ArchiveError, HostilePathError, SizeMismatchError

__all__ = [
    "CHUNK_SIZE",
    "MAX_LINK_DEPTH",
    "FileRange",
    "TarEntry",
    "TarIndex",
    "absolute",
    "index_tar",
    "inflate",
    "normalise_name",
    "read_chunks",
]

#: Bytes per read of a member (and per step of the gzip decompressor).
CHUNK_SIZE: Final = 1024 * 1024
#: Links followed from one entry before the chain counts as hostile.
MAX_LINK_DEPTH: Final = 8
#: Members an image tar holds exactly once; a second copy makes the archive ambiguous.
UNIQUE_NAMES: Final = frozenset({"oci-layout", "index.json", "manifest.json"})

_GZIP_MAGIC: Final = b"\x1f\x8b"
_ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"
_DEVICE_KINDS: Final = {
    tarfile.CHRTYPE: "character device",
    tarfile.BLKTYPE: "block device",
    tarfile.FIFOTYPE: "FIFO",
}

EntryKind = Literal["file", "dir"]
_RawKind = Literal["file", "dir", "symlink", "hardlink"]


@dataclass(frozen=True, slots=True)
class TarEntry:
    """One member, links already resolved: where its bytes are in the indexed file.

    ``name`` is the normalised member name; ``target`` the name of the
    regular member whose bytes these are (``name`` itself unless the member
    is a link). Directories have ``kind == "dir"`` and no data.
    """

    name: str
    offset: int
    size: int
    kind: EntryKind
    target: str


@dataclass(slots=True)
class _Raw:
    """A member as its header describes it, before links are followed."""

    name: str
    kind: _RawKind
    offset: int
    size: int
    link: str = ""  # normalised archive path a link points at
    link_text: str = ""  # the link target as written, for messages


def normalise_name(name: str) -> str:
    """``name`` without ``./`` prefixes, empty or ``.`` components and trailing slashes.

    Raises `HostilePathError` for an absolute name or one with a ``..``
    component. The archive root normalises to ``""``.
    """
    if name.startswith("/"):
        raise HostilePathError(f"tar entry {name!r} has an absolute path; refusing the archive")
    parts: list[str] = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            raise HostilePathError(f"tar entry {name!r} has a '..' component; refusing the archive")
        parts.append(part)
    return "/".join(parts)


def _link_path(entry: str, text: str, *, symbolic: bool) -> str:
    """The archive path a link points at; `HostilePathError` when it leaves the archive.

    A symbolic link's target is relative to the link's directory; a hard
    link's target is a member name, relative to the archive root.
    """
    kind = "symbolic link" if symbolic else "hard link"
    if not text:
        raise HostilePathError(f"{kind} {entry!r} has an empty target; refusing the archive")
    if text.startswith("/"):
        raise HostilePathError(
            f"{kind} {entry!r} points at the absolute path {text!r}, outside the archive;"
            " refusing the archive"
        )
    parts = entry.split("/")[:-1] if symbolic else []
    for part in text.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise HostilePathError(
                    f"{kind} {entry!r} -> {text!r} leaves the archive root; refusing the archive"
                )
            parts.pop()
        else:
            parts.append(part)
    return "/".join(parts)


def _classify(info: tarfile.TarInfo, file_size: int) -> _Raw | None:
    """Turn a tarfile header into a `_Raw`; None for the archive root itself."""
    name = normalise_name(info.name)
    device = _DEVICE_KINDS.get(info.type)
    if device is not None:
        raise HostilePathError(f"tar entry {info.name!r} is a {device}; refusing the archive")
    if info.sparse is not None or info.type == tarfile.GNUTYPE_SPARSE:
        raise ArchiveError(f"tar entry {info.name!r} is a sparse file, which image tars never use")
    if info.isdir():
        return _Raw(name, "dir", info.offset_data, 0) if name else None
    if not name:
        raise ArchiveError(f"tar entry {info.name!r} has an empty name")
    if info.issym() or info.islnk():
        symbolic = info.issym()
        link = _link_path(name, info.linkname, symbolic=symbolic)
        kind: _RawKind = "symlink" if symbolic else "hardlink"
        return _Raw(name, kind, 0, 0, link, info.linkname)
    if info.isreg():
        end = info.offset_data + info.size
        if end > file_size:
            raise ArchiveError(
                f"tar entry {info.name!r} is truncated: it declares {info.size} bytes but the"
                f" archive ends {end - file_size} bytes early"
            )
        return _Raw(name, "file", info.offset_data, info.size)
    raise ArchiveError(f"tar entry {info.name!r} has unsupported type {info.type!r}")


def _check_tail(f: BinaryIO, end: int, file_size: int) -> None:
    """After the last header only zero blocks may follow; anything else is a broken header."""
    if end > file_size:
        raise ArchiveError(f"tar archive is truncated: it ends at byte {file_size} of {end}")
    f.seek(end)
    pos = end
    while True:
        block = f.read(CHUNK_SIZE)
        if not block:
            return
        if block.count(0) != len(block):
            raise ArchiveError(
                f"tar archive is truncated or corrupt: unreadable header at byte {pos}"
            )
        pos += len(block)


def _scan(path: Path) -> dict[str, _Raw]:
    """One pass over the headers of the tar at ``path`` (runs in a worker thread)."""
    file_size = path.stat().st_size
    raws: dict[str, _Raw] = {}
    blob_twins: list[tuple[_Raw, _Raw]] = []
    with open(path, "rb") as f:
        try:
            archive = tarfile.open(fileobj=f, mode="r:")  # noqa: SIM115 - closed below
        except (tarfile.TarError, EOFError, ValueError) as exc:
            raise ArchiveError(f"{path} is not a readable tar archive: {exc}") from None
        try:
            while True:
                try:
                    info = archive.next()
                except (tarfile.TarError, EOFError, ValueError) as exc:
                    raise ArchiveError(f"{path}: truncated or corrupt tar: {exc}") from None
                if info is None:
                    break
                # Keep memory flat on archives with many members (typeshed omits the attribute).
                archive.members.clear()  # type: ignore[attr-defined]
                raw = _classify(info, file_size)
                if raw is None:
                    continue
                old = raws.get(raw.name)
                if old is not None:
                    if old.kind == "dir" and raw.kind == "dir":
                        continue
                    if raw.name in UNIQUE_NAMES:
                        raise ArchiveError(
                            f"tar archive has more than one {raw.name!r} entry; refusing the"
                            " ambiguous archive"
                        )
                    if raw.name.startswith("blobs/"):
                        blob_twins.append((old, raw))
                        continue  # keep the first; sizes are compared once links resolve
                raws[raw.name] = raw  # tar semantics: a later member replaces an earlier one
            end = archive.offset
        finally:
            archive.close()
        _check_tail(f, end, file_size)
    resolved = {name: _follow(raw, raws) for name, raw in raws.items()}
    for first, second in blob_twins:
        a, b = resolved[first.name], _follow(second, raws)
        if a.size != b.size or a.kind != b.kind:
            raise ArchiveError(
                f"tar archive has two {first.name!r} entries of different sizes"
                f" ({a.size} and {b.size} bytes); refusing the ambiguous archive"
            )
    return resolved


def _follow(raw: _Raw, raws: dict[str, _Raw]) -> _Raw:
    """The regular file or directory ``raw`` leads to, following links."""
    chain = [raw.name]
    current = raw
    for _ in range(MAX_LINK_DEPTH + 1):
        if current.kind in ("file", "dir"):
            return current
        nxt = raws.get(current.link)
        if nxt is None:
            raise HostilePathError(
                f"link {raw.name!r} -> {current.link_text!r} points at {current.link!r},"
                " which is not in the archive; refusing the archive"
            )
        if nxt.name in chain:
            loop = " -> ".join([*chain, nxt.name])
            raise HostilePathError(f"link {raw.name!r} loops ({loop}); refusing the archive")
        chain.append(nxt.name)
        current = nxt
    raise HostilePathError(
        f"link {raw.name!r} starts a chain of more than {MAX_LINK_DEPTH} links;"
        " refusing the archive"
    )


def _entries(raws: dict[str, _Raw]) -> dict[str, TarEntry]:
    return {
        name: TarEntry(name, raw.offset, raw.size, "dir" if raw.kind == "dir" else "file", raw.name)
        for name, raw in raws.items()
    }


# --- gzip ------------------------------------------------------------------------------


def _sniff(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(4)


def read_chunks(
    f: BinaryIO,
    offset: int,
    size: int,
    *,
    what: str,
    cancel: threading.Event | None = None,
) -> Iterator[bytes]:
    """``size`` bytes of ``f`` from ``offset`` in `CHUNK_SIZE` pieces (blocking; for threads).

    Raises `ArchiveError` when the file ends early or ``cancel`` is set.
    """
    fd = f.fileno()
    pos = offset
    remaining = size
    while remaining > 0:
        if cancel is not None and cancel.is_set():
            raise ArchiveError(f"{what}: cancelled (the archive was closed)")
        chunk = os.pread(fd, min(CHUNK_SIZE, remaining), pos)
        if not chunk:
            raise ArchiveError(f"{what}: the archive ends {remaining} bytes early")
        pos += len(chunk)
        remaining -= len(chunk)
        yield chunk


def inflate(chunks: Iterable[bytes], *, what: str) -> Iterator[bytes]:
    """Decompress gzip data arriving as ``chunks``; yield at most `CHUNK_SIZE` bytes at a time.

    Memory stays bounded whatever the compression ratio. Concatenated gzip
    members are one stream (``cat a.gz b.gz`` is valid gzip). `ArchiveError`
    for corrupt or truncated data.
    """
    source = iter(chunks)
    inflater = zlib.decompressobj(wbits=31)
    fed = False  # the current gzip member has seen input
    pending = b""
    try:
        while True:
            if inflater.unconsumed_tail:
                data = inflater.unconsumed_tail
            elif pending:
                data, pending = pending, b""
            else:
                data = next(source, b"")
                if not data:
                    break
            fed = True
            out = inflater.decompress(data, CHUNK_SIZE)
            if out:
                yield out
            if inflater.eof:
                pending = inflater.unused_data
                inflater = zlib.decompressobj(wbits=31)
                fed = False
        rest = inflater.flush()
    except zlib.error as exc:
        raise ArchiveError(f"{what}: corrupt gzip data: {exc}") from None
    if rest:
        yield rest
    if fed and not inflater.eof:
        raise ArchiveError(f"{what}: gzip data is truncated")


def _require_zstandard(source: Path) -> None:
    try:
        import zstandard  # noqa: F401
    except ImportError:
        raise ArchiveError(
            f"{source} is zstd-compressed: install the optional 'zstandard' package"
            " (pip install 'asyncreg[zstd]') or decompress it first (zstd -d)"
        ) from None


def _unzstd(src: Path, dst: Path, max_size: int | None, cancel: threading.Event) -> None:
    """Decompress the zstd file ``src`` into ``dst``, 1 MiB at a time (worker thread)."""
    import zstandard

    total = 0
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        reader = zstandard.ZstdDecompressor().stream_reader(fin, read_across_frames=True)
        try:
            while not cancel.is_set():
                out = reader.read(CHUNK_SIZE)
                if not out:
                    break
                total += len(out)
                if max_size is not None and total > max_size:
                    raise ArchiveError(
                        f"{src}: decompresses to more than the {max_size}-byte limit"
                    )
                fout.write(out)
        except zstandard.ZstdError as exc:
            raise ArchiveError(f"{src}: corrupt zstd data: {exc}") from None


def _gunzip(src: Path, dst: Path, max_size: int | None, cancel: threading.Event) -> None:
    """Decompress the gzip file ``src`` into ``dst``, 1 MiB at a time (worker thread)."""
    total = 0
    what = str(src)
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        size = os.fstat(fin.fileno()).st_size
        for out in inflate(read_chunks(fin, 0, size, what=what, cancel=cancel), what=what):
            total += len(out)
            if max_size is not None and total > max_size:
                raise ArchiveError(f"{src}: decompresses to more than the {max_size}-byte limit")
            fout.write(out)


# --- reading -----------------------------------------------------------------------------


class FileRange:
    """An async stream of ``size`` bytes of a file from ``offset``, read in worker threads.

    Each read is an ``os.pread`` of at most `CHUNK_SIZE` bytes on the
    stream's own file handle, so many streams of one archive run in parallel
    without sharing a file position. With a `Verifier` every chunk is hashed
    and counted, and the end checks digest and size; without one only the
    size is checked (`SizeMismatchError` when the file ends early). Iterate
    once; `aclose` is idempotent.
    """

    def __init__(
        self,
        path: Path,
        offset: int,
        size: int,
        *,
        verifier: Verifier | None = None,
        what: str = "",
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        self.size = size
        self._path = path
        self._offset = offset
        self._verifier = verifier
        self._what = what or f"{path}@{offset}"
        self._chunk_size = chunk_size
        self._file: BinaryIO | None = None
        self._gen: AsyncGenerator[bytes, None] | None = None
        self._closed = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        if self._gen is not None or self._closed:
            raise ArchiveError(f"{self._what}: a blob stream can be read only once")
        self._gen = self._chunks()
        return self._gen

    async def _chunks(self) -> AsyncGenerator[bytes, None]:
        try:
            self._file = await anyio.to_thread.run_sync(_open_binary, self._path)
            fd = self._file.fileno()
            pos = self._offset
            remaining = self.size
            while remaining > 0:
                want = min(self._chunk_size, remaining)
                chunk = await anyio.to_thread.run_sync(os.pread, fd, want, pos)
                if not chunk:
                    break
                pos += len(chunk)
                remaining -= len(chunk)
                if self._verifier is not None:
                    self._verifier.update(chunk)
                yield chunk
            if self._verifier is not None:
                self._verifier.finish()
            elif remaining:
                raise SizeMismatchError(
                    f"{self._what}: stream ended after {self.size - remaining} of"
                    f" {self.size} bytes",
                    expected=self.size,
                    actual=self.size - remaining,
                )
        finally:
            self._close_file()

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    async def aclose(self) -> None:
        """Stop reading and close the file (idempotent)."""
        self._closed = True
        gen, self._gen = self._gen, None
        if gen is not None:
            await gen.aclose()
        self._close_file()


def _open_binary(path: Path) -> BinaryIO:
    return open(path, "rb")


def _read_range(path: Path, offset: int, size: int) -> bytes:
    with open(path, "rb") as f:
        data = os.pread(f.fileno(), size, offset)
    return data


class TarIndex:
    """The members of one tar by normalised name; reads are ranges of `path`.

    ``source`` is the file the caller named; ``path`` the uncompressed tar
    actually indexed (a temporary file when ``source`` is gzip-compressed,
    deleted by `aclose`).
    """

    def __init__(
        self, source: Path, path: Path, entries: dict[str, TarEntry], *, temporary: bool
    ) -> None:
        self.source = source
        self.path = path
        self.compressed = temporary
        self._entries = entries
        self._temporary = temporary

    def get(self, name: str) -> TarEntry | None:
        """The entry named ``name`` (any spelling that normalises to it), or None."""
        try:
            key = normalise_name(name)
        except HostilePathError:
            return None
        return self._entries.get(key)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        """Every member name, in archive order (links included, the root excluded)."""
        return list(self._entries)

    def files(self) -> Iterator[TarEntry]:
        """Every entry that reads as bytes (regular files and links to them)."""
        return (e for e in self._entries.values() if e.kind == "file")

    def open_range(
        self, entry: TarEntry, *, verifier: Verifier | None = None, what: str = ""
    ) -> FileRange:
        """An async stream of the member's data, in chunks (see `FileRange`)."""
        if entry.kind != "file":
            raise ArchiveError(f"tar entry {entry.name!r} is a directory, not a file")
        return FileRange(
            self.path, entry.offset, entry.size, verifier=verifier, what=what or entry.name
        )

    async def read(self, entry: TarEntry, limit: int) -> bytes:
        """The whole member, refused with `ArchiveError` when larger than ``limit`` bytes."""
        if entry.kind != "file":
            raise ArchiveError(f"tar entry {entry.name!r} is a directory, not a file")
        if entry.size > limit:
            raise ArchiveError(
                f"tar entry {entry.name!r} is {entry.size} bytes, larger than the"
                f" {limit}-byte limit for it"
            )
        data = await anyio.to_thread.run_sync(_read_range, self.path, entry.offset, entry.size)
        if len(data) != entry.size:
            raise ArchiveError(f"tar entry {entry.name!r}: archive changed or shrank while read")
        return data

    async def aclose(self) -> None:
        """Delete the temporary decompressed copy, if one was made (idempotent)."""
        if self._temporary:
            self._temporary = False
            await anyio.to_thread.run_sync(_unlink_quiet, self.path)


def _unlink_quiet(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def absolute(path: str | os.PathLike[str]) -> Path:
    """``path`` made absolute without resolving links (the name the caller used)."""
    return Path(os.path.abspath(path))


async def _scan_async(path: Path) -> dict[str, _Raw]:
    try:
        return await anyio.to_thread.run_sync(_scan, path)
    except OSError as exc:
        raise ArchiveError(f"cannot read archive {path}: {exc.strerror or exc}") from None


async def index_tar(
    path: str | os.PathLike[str],
    *,
    tmp_dir: str | os.PathLike[str] | None = None,
    max_unpacked_size: int | None = None,
) -> TarIndex:
    """Index the tar at ``path`` (plain or gzip-compressed); nothing is extracted.

    A gzip-compressed tar is first decompressed into a temporary file in
    ``tmp_dir`` (the system default when None), at most
    ``max_unpacked_size`` bytes when given. Raises `HostilePathError` or
    `ArchiveError` as the module docstring lists; an unreadable file raises
    `ArchiveError` too.
    """
    source = absolute(path)
    try:
        magic = await anyio.to_thread.run_sync(_sniff, source)
    except OSError as exc:
        raise ArchiveError(f"cannot read archive {source}: {exc.strerror or exc}") from None
    zstd = magic.startswith(_ZSTD_MAGIC)
    if zstd:
        _require_zstandard(source)
    if not zstd and not magic.startswith(_GZIP_MAGIC):
        raws = await _scan_async(source)
        return TarIndex(source, source, _entries(raws), temporary=False)

    fd, name = tempfile.mkstemp(prefix="asyncreg-untar-", suffix=".tar", dir=tmp_dir)
    os.close(fd)
    plain = Path(name)
    cancel = threading.Event()
    try:
        try:
            # Abandoned on cancellation; the event then stops the thread at its next chunk.
            await anyio.to_thread.run_sync(
                _unzstd if zstd else _gunzip,
                source,
                plain,
                max_unpacked_size,
                cancel,
                abandon_on_cancel=True,
            )
        except OSError as exc:
            raise ArchiveError(f"cannot decompress {source}: {exc.strerror or exc}") from None
        raws = await _scan_async(plain)
    except BaseException:
        cancel.set()
        _unlink_quiet(plain)
        raise
    return TarIndex(source, plain, _entries(raws), temporary=True)
