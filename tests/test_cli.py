"""The command line as a user runs it: a subprocess, stdout for results only."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import anyio
import orjson

from asyncreg.testkit.builder import ImageSpec
from asyncreg.testkit.proxy import FaultProxy, Rule, Throttle
from asyncreg.testkit.registry import RegistryProcess
from tests.fixtures import Seeder


def _run(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "asyncreg", *args], capture_output=True, timeout=120, check=False
    )


def test_copy_prints_digest_only_on_stdout(
    seeded: Seeder, registry_b: RegistryProcess, repo_name: str
) -> None:
    built, src = seeded(ImageSpec(layers=2, layer_size=32 * 1024))
    proc = _run("copy", src, f"{registry_b.host}/{repo_name}:cli", "--progress", "plain")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().strip() == built.digest
    assert b"done" in proc.stderr
    again = _run("copy", src, f"{registry_b.host}/{repo_name}:cli", "--json", "--progress", "none")
    assert again.returncode == 0
    doc = orjson.loads(again.stdout)
    assert doc["skipped"] is True
    assert doc["digest"] == built.digest


def test_failure_exits_1_with_one_line(registry: RegistryProcess, repo_name: str) -> None:
    proc = _run("copy", f"{registry.host}/{repo_name}:absent", f"{registry.host}/x:y")
    assert proc.returncode == 1
    assert proc.stdout == b""
    lines = proc.stderr.decode().strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("asyncreg: ")
    assert "not found" in lines[0]


def test_bad_reference_is_a_one_line_error() -> None:
    proc = _run("copy", "UPPER/Case:x", "localhost:1/x:y")
    assert proc.returncode == 1
    assert b"lowercase" in proc.stderr


def test_usage_error_exits_2() -> None:
    assert _run("copy").returncode == 2


def test_export_to_stdout_is_a_tar(seeded: Seeder, tmp_path: Path, repo_name: str) -> None:
    built, src = seeded(ImageSpec(layers=2, layer_size=32 * 1024))
    proc = _run("export", src, "-", "--progress", "none")
    assert proc.returncode == 0, proc.stderr
    with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
        names = tar.getnames()
    assert "index.json" in names
    assert "manifest.json" in names
    assert f"blobs/sha256/{built.hex}" in names


def test_tags_lists_tags(seeded: Seeder, registry: RegistryProcess, repo_name: str) -> None:
    seeded(ImageSpec(layers=1, layer_size=1024), tag="a")
    seeded(ImageSpec(layers=1, layer_size=2048), tag="b")
    proc = _run("tags", f"{registry.host}/{repo_name}")
    assert proc.returncode == 0
    assert sorted(proc.stdout.decode().split()) == ["a", "b"]


def _one_line_error(proc: subprocess.CompletedProcess[bytes]) -> str:
    err = proc.stderr.decode()
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_a_missing_ca_file_is_one_line(tmp_path: Path) -> None:
    proc = _run("tags", "127.0.0.1:1/x", "--ca-file", f"127.0.0.1:1={tmp_path / 'no.pem'}")
    assert proc.returncode == 1
    assert "is not a readable file" in _one_line_error(proc)


def test_a_mirror_report_that_cannot_be_written_is_refused_before_work(
    registry: RegistryProcess, tmp_path: Path
) -> None:
    config = tmp_path / "m.toml"
    config.write_text(
        f'[[sync]]\nsource = "{registry.host}/none"\ntarget = "{registry.host}/none2"\n'
    )
    proc = _run("mirror", str(config), "--report", str(tmp_path / "missing" / "r.json"))
    assert proc.returncode == 1
    assert "does not exist" in _one_line_error(proc)


def test_sigterm_drains_and_exits_143(
    seeded: Seeder, registry_b: RegistryProcess, repo_name: str
) -> None:
    _, src = seeded(ImageSpec(layers=3, layer_size=256 * 1024))

    async def run() -> tuple[int, str]:
        async with FaultProxy(registry_b.url) as dp:
            dp.add_rule(Rule(Throttle(256 * 1024), method="PUT", path="/blobs/uploads/"))
            cmd = [sys.executable, "-m", "asyncreg", "copy", src, f"{dp.host}/{repo_name}:v1"]
            proc = await anyio.open_process(
                [*cmd, "--per-host", "1", "--progress", "none", "--grace", "5"],
                stderr=subprocess.PIPE,
            )
            with anyio.fail_after(30):
                while not any(r.method == "PUT" for r in dp.requests):  # noqa: ASYNC110
                    await anyio.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            assert proc.stderr is not None
            err = b""
            with anyio.fail_after(30):
                async for chunk in proc.stderr:
                    err += chunk
                await proc.wait()
            assert proc.returncode is not None
            return proc.returncode, err.decode()

    code, err = anyio.run(run)
    assert code == 143, err
    assert "for at most 5 s" in err
    assert "Traceback" not in err
