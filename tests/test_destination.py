"""Output destinations: never renamed over what is not a regular file; nothing left behind."""

from __future__ import annotations

import hashlib
import os
import socket
import stat
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import anyio
import pytest

from asyncreg.destination import TEMP_PREFIX, Mode, decide, file_mode, sweep_stale
from asyncreg.errors import DestinationError
from asyncreg.testkit.builder import ImageBuilder, ImageSpec
from asyncreg.testkit.proxy import FaultProxy, Rule, Throttle
from asyncreg.testkit.registry import RegistryProcess
from tests.fixtures import Seeder


def test_new_names_and_regular_files_are_written_atomically(tmp_path: Path) -> None:
    new = tmp_path / "new.tar"
    assert decide(str(new)).mode is Mode.ATOMIC
    new.write_bytes(b"x")
    assert decide(str(new)).mode is Mode.ATOMIC


def test_a_symlink_to_a_regular_file_writes_the_file(tmp_path: Path) -> None:
    real = tmp_path / "real.tar"
    real.write_bytes(b"x")
    link = tmp_path / "link.tar"
    link.symlink_to(real)
    where = decide(str(link))
    assert where.mode is Mode.ATOMIC
    assert where.path == str(real)


@pytest.mark.parametrize("kind", ["fifo", "chardev", "stdout"])
def test_streams_are_written_in_order_never_renamed(tmp_path: Path, kind: str) -> None:
    if kind == "fifo":
        path = str(tmp_path / "fifo")
        os.mkfifo(path)
    else:
        path = "/dev/null" if kind == "chardev" else "-"
    assert decide(path).mode is Mode.STREAM


@pytest.mark.parametrize(
    ("make", "says"),
    [
        ("dir", "is a directory"),
        ("missing-parent", "does not exist"),
        ("dangling", "which does not exist"),
        ("link-to-dir", "not a regular file"),
        ("socket", "is a socket"),
    ],
)
def test_refused_destinations_say_why(tmp_path: Path, make: str, says: str) -> None:
    path = tmp_path / "out"
    if make == "dir":
        path.mkdir()
    elif make == "missing-parent":
        path = tmp_path / "nowhere" / "out.tar"
    elif make == "dangling":
        path.symlink_to(tmp_path / "gone")
    elif make == "link-to-dir":
        (tmp_path / "d").mkdir()
        path.symlink_to(tmp_path / "d")
    else:
        path = tmp_path / "s"
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        sock.close()
    with pytest.raises(DestinationError, match=says):
        decide(str(path))


def test_file_mode_follows_the_umask() -> None:
    old = os.umask(0o027)
    try:
        assert file_mode() == 0o640
    finally:
        os.umask(old)


def test_sweep_removes_only_dead_runs_leftovers(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"{TEMP_PREFIX}{dead.pid}-abc"
    mine = tmp_path / f"{TEMP_PREFIX}{os.getpid()}-def"
    other = tmp_path / "unrelated.tar"
    for p in (stale, mine, other):
        p.write_bytes(b"x")
    sweep_stale(str(tmp_path))
    assert not stale.exists()
    assert mine.exists()
    assert other.exists()


def _export(ref: str, dest: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "asyncreg", "export", ref, dest, "--progress", "none"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def ref(tmp_path: Path) -> str:
    ImageBuilder(tmp_path / "lay").image("v1", ImageSpec(layers=1, layer_size=4096))
    return f"ocidir://{tmp_path / 'lay'}:v1"


def test_export_to_a_device_keeps_the_device(ref: str) -> None:
    proc = _export(ref, "/dev/null")
    assert proc.returncode == 0, proc.stderr
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_export_to_a_full_device_is_one_line(ref: str) -> None:
    proc = _export(ref, "/dev/full")
    assert proc.returncode == 1
    assert proc.stderr.strip() == "asyncreg: No space left on device"
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_export_through_a_symlink_keeps_the_link(ref: str, tmp_path: Path) -> None:
    real = tmp_path / "real.tar"
    real.write_bytes(b"old")
    link = tmp_path / "link.tar"
    link.symlink_to(real)
    proc = _export(ref, str(link))
    assert proc.returncode == 0, proc.stderr
    assert link.is_symlink()
    assert real.read_bytes()[:10] != b"old"
    assert stat.S_IMODE(real.stat().st_mode) == file_mode()


def test_export_into_a_fifo_streams_to_its_reader(ref: str, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    proc = _export(ref, str(fifo))
    reader.join(timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert got
    assert b"oci-layout" in got[0][:1024]


def test_export_leaves_an_ordinary_file_and_sweeps_dead_leftovers(ref: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = out / f"{TEMP_PREFIX}{dead.pid}-killed"
    stale.write_bytes(b"half a tar")
    proc = _export(ref, str(out / "x.tar"))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["x.tar"]
    assert stat.S_IMODE((out / "x.tar").stat().st_mode) == file_mode()


@pytest.mark.parametrize("dest", ["adir", "missing/x.tar"])
def test_refused_exports_are_one_line(ref: str, tmp_path: Path, dest: str) -> None:
    (tmp_path / "adir").mkdir()
    proc = _export(ref, str(tmp_path / dest))
    assert proc.returncode == 1
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr


def test_sigkill_mid_export_then_a_rerun_leaves_a_whole_tar_and_no_temp_file(
    seeded: Seeder, registry: RegistryProcess, tmp_path: Path
) -> None:
    _, src = seeded(ImageSpec(layers=2, layer_size=512 * 1024))
    out = tmp_path / "out"
    out.mkdir()
    dest = out / "image.tar"

    async def kill_mid_export() -> None:
        async with FaultProxy(registry.url) as sp:
            sp.add_rule(Rule(Throttle(128 * 1024), method="GET", path="/blobs/"))
            cmd = [sys.executable, "-m", "asyncreg", "export", src.replace(registry.host, sp.host)]
            proc = await anyio.open_process([*cmd, str(dest), "--progress", "none"])
            with anyio.fail_after(30):
                while not any(p.name.startswith(TEMP_PREFIX) for p in out.iterdir()):  # noqa: ASYNC110
                    await anyio.sleep(0.05)
                await anyio.sleep(0.3)  # some bytes are in the temp file now
            proc.kill()
            await proc.wait()

    anyio.run(kill_mid_export)
    assert not dest.exists()
    assert [p.name for p in out.iterdir() if p.name.startswith(TEMP_PREFIX)]
    proc = _export(src, str(dest))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["image.tar"]
    with tarfile.open(dest) as tar:
        for member in tar.getmembers():
            if member.name.startswith("blobs/sha256/") and member.isfile():
                f = tar.extractfile(member)
                assert f is not None
                assert hashlib.sha256(f.read()).hexdigest() == member.name.rsplit("/", 1)[1]
