"""Run skopeo: the independent reference tool that seeds and reads back registries.

Tests seed registries with skopeo rather than with asyncreg so a bug in
asyncreg's push path cannot hide a bug in its pull path (and the other way
round), and so results can be compared with a well-known tool.

Every call adds:

- ``--insecure-policy``: skopeo refuses to run without a signature policy
  (``/etc/containers/policy.json``). Debian's skopeo package installs one
  that accepts anything, so the flag changes nothing there, but CI containers
  and hand-built skopeo often lack the file; the lab only talks to its own
  loopback registries, so a policy has nothing to protect.
- ``--src-tls-verify=false`` / ``--dest-tls-verify=false`` (``--tls-verify=false``
  for ``inspect``) for ``docker://`` references only: the flags do not exist
  for other transports, and the lab registries are plain HTTP or use a
  throw-away CA. Without them skopeo insists on HTTPS for any host but
  ``localhost``.

A failure raises `SkopeoError` carrying skopeo's stderr, because "exit
status 1" alone says nothing about which blob or manifest was refused.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from .registry import require_tools

__all__ = [
    "SkopeoError",
    "copy_command",
    "inspect_command",
    "push_layout",
    "skopeo_copy",
    "skopeo_copy_async",
    "skopeo_inspect_raw",
]

#: Seconds a skopeo call may take before it is killed; generous for 1 GiB images.
DEFAULT_TIMEOUT = 600.0


class SkopeoError(RuntimeError):
    """skopeo exited non-zero (or timed out); ``stderr`` holds its explanation."""

    def __init__(self, argv: Sequence[str], returncode: int | None, stderr: str) -> None:
        status = "timed out" if returncode is None else f"exited with status {returncode}"
        shown = " ".join(_redact(arg) for arg in argv)
        super().__init__(f"{shown} {status}:\n{stderr.strip()}")
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stderr = stderr


_CRED_FLAGS = ("--creds=", "--src-creds=", "--dest-creds=")


def _redact(arg: str) -> str:
    """Hide the password of a credentials flag: error messages end up in CI logs."""
    for flag in _CRED_FLAGS:
        if arg.startswith(flag):
            user = arg[len(flag) :].partition(":")[0]
            return f"{flag}{user}:***"
    return arg


def _is_docker(ref: str) -> bool:
    return ref.startswith("docker://")


def copy_command(src: str, dst: str, *extra: str) -> list[str]:
    """The argv of ``skopeo copy`` for ``src`` -> ``dst`` with the lab's flags added."""
    argv = ["skopeo", "--insecure-policy", "copy"]
    if _is_docker(src):
        argv.append("--src-tls-verify=false")
    if _is_docker(dst):
        argv.append("--dest-tls-verify=false")
    return [*argv, *extra, src, dst]


def inspect_command(ref: str, *extra: str) -> list[str]:
    """The argv of ``skopeo inspect --raw`` for ``ref`` with the lab's flags added."""
    argv = ["skopeo", "--insecure-policy", "inspect", "--raw"]
    if _is_docker(ref):
        argv.append("--tls-verify=false")
    return [*argv, *extra, ref]


def _run(argv: list[str], timeout: float) -> bytes:
    require_tools("skopeo")
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as err:
        stderr = err.stderr.decode(errors="replace") if err.stderr else ""
        raise SkopeoError(argv, None, stderr) from None
    if proc.returncode != 0:
        raise SkopeoError(argv, proc.returncode, proc.stderr.decode(errors="replace"))
    return proc.stdout


def skopeo_copy(src: str, dst: str, *extra: str, timeout: float = DEFAULT_TIMEOUT) -> None:
    """``skopeo copy [extra] src dst``; raises `SkopeoError` with stderr on failure.

    ``extra`` goes before the references: e.g. ``"--all"``,
    ``"--preserve-digests"``, ``"--dest-creds=alice:secret"``.
    """
    _run(copy_command(src, dst, *extra), timeout)


async def skopeo_copy_async(src: str, dst: str, *extra: str) -> None:
    """`skopeo_copy` without blocking the event loop (for tests that copy concurrently).

    Bound it with ``asyncio.timeout``: on cancellation the skopeo process is
    killed and reaped, so no orphan keeps writing to the registry after the
    test moved on.
    """
    require_tools("skopeo")
    argv = copy_command(src, dst, *extra)
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _, stderr = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        raise SkopeoError(argv, proc.returncode, stderr.decode(errors="replace"))


def skopeo_inspect_raw(ref: str, *extra: str, timeout: float = 120.0) -> bytes:
    """The manifest bytes exactly as the source serves them (``skopeo inspect --raw``)."""
    return _run(inspect_command(ref, *extra), timeout)


def push_layout(
    layout_dir: Path,
    tag: str,
    registry_host: str,
    repo: str,
    *,
    all: bool = True,
    dest_tag: str | None = None,
    creds: tuple[str, str] | None = None,
    extra: Sequence[str] = (),
) -> str:
    """Copy the image tagged ``tag`` in an OCI layout to ``HOST/REPO:TAG`` unchanged.

    Returns the destination reference (``HOST/REPO:TAG``, no transport).
    ``--preserve-digests`` makes skopeo fail rather than convert or recompress,
    so the registry holds exactly the bytes the builder wrote; ``--all`` copies
    every child of an index instead of only the one matching this machine.

    skopeo 1.9's ``oci:`` transport only finds index.json entries whose media
    type is an OCI manifest or index ("no descriptor found for reference"), so
    a Docker schema 2 manifest or manifest list is pushed through a ``dir:``
    view of the same blobs (hard links) instead.
    """
    layout_dir = Path(layout_dir)
    dst = f"{registry_host}/{repo}:{dest_tag or tag}"
    flags = ["--preserve-digests"]
    if all:
        flags.append("--all")
    if creds is not None:
        flags.append(f"--dest-creds={creds[0]}:{creds[1]}")
    entry = _find_tag(layout_dir, tag)
    if entry["mediaType"] in _OCI_TYPES:
        skopeo_copy(f"oci:{layout_dir}:{tag}", f"docker://{dst}", *flags, *extra)
        return dst
    with tempfile.TemporaryDirectory(prefix="asyncreg-dirview-") as tmp:
        view = Path(tmp) / "image"
        _write_dir_view(layout_dir, entry["digest"], view)
        skopeo_copy(f"dir:{view}", f"docker://{dst}", *flags, *extra)
    return dst


_OCI_TYPES = frozenset(
    {"application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json"}
)
_LIST_TYPES = frozenset(
    {
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    }
)


def _find_tag(layout_dir: Path, tag: str) -> dict[str, Any]:
    """The index.json entry annotated with ``tag``; `ValueError` names the tags there are."""
    index = orjson.loads((layout_dir / "index.json").read_bytes())
    entries: list[dict[str, Any]] = index.get("manifests", [])
    tags = []
    for entry in entries:
        name = entry.get("annotations", {}).get("org.opencontainers.image.ref.name")
        if name == tag:
            return entry
        tags.append(name)
    raise ValueError(f"tag {tag!r} not in {layout_dir}/index.json (tags: {tags})")


def _blob(layout_dir: Path, digest: str) -> Path:
    algorithm, _, hexpart = digest.partition(":")
    return layout_dir / "blobs" / algorithm / hexpart


def _link(src: Path, dst: Path) -> None:
    """Hard-link (no copy of big layers); copy when the link is refused (other device)."""
    if dst.exists():
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _write_dir_view(layout_dir: Path, digest: str, view: Path) -> None:
    """Lay out ``digest`` and everything it references as skopeo's ``dir:`` format 1.1.

    ``manifest.json`` is the top manifest, ``<hex>.manifest.json`` each child
    of a list, ``<hex>`` each config and layer blob.
    """
    view.mkdir(parents=True)
    (view / "version").write_text("Directory Transport Version: 1.1\n")
    top = _blob(layout_dir, digest).read_bytes()
    (view / "manifest.json").write_bytes(top)
    doc = orjson.loads(top)
    images: list[dict[str, Any]] = []
    if doc.get("mediaType") in _LIST_TYPES or "manifests" in doc:
        for child in doc.get("manifests", []):
            data = _blob(layout_dir, child["digest"]).read_bytes()
            (view / f"{child['digest'].partition(':')[2]}.manifest.json").write_bytes(data)
            images.append(orjson.loads(data))
    else:
        images.append(doc)
    for image in images:
        for desc in [image["config"], *image.get("layers", [])]:
            _link(_blob(layout_dir, desc["digest"]), view / desc["digest"].partition(":")[2])
