"""``make demo``: the main job end to end on two local registries it starts itself.

It starts two CNCF distribution registries on free loopback ports, builds
images with real gzip layers (a three-platform index whose children share
layers, a single image, and a signature-like artifact that refers to the
image), pushes them to the first registry with skopeo (an independent
client), then mirrors them to the second registry with asyncreg as one job,
with live progress, and re-runs the job to show that an up-to-date target
costs only HEAD requests. Finally it re-reads every copied image and checks
every digest, and stops the registries.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import anyio

from .client import Client
from .engine.progress import Progress
from .options import CopyOptions
from .progressview import PlainView, TerminalView, human_bytes
from .testkit.builder import ImageBuilder, ImageSpec
from .testkit.registry import RegistryProcess, require_tools
from .testkit.skopeo import push_layout
from .testkit.validate import validate


def _say(text: str) -> None:
    print(text, flush=True)


async def _mirror(pairs: list[tuple[str, str]], label: str) -> None:
    progress = Progress()
    view: TerminalView | None = None
    if sys.stderr.isatty():
        view = TerminalView(progress)
    else:
        progress.subscribe(PlainView())
    started = time.monotonic()
    async with Client() as client, anyio.create_task_group() as tg:
        if view is not None:
            tg.start_soon(view.run)
        outcomes = await client.copy_many(
            pairs, CopyOptions(referrers=True), keep_going=True, progress=progress
        )
        tg.cancel_scope.cancel()
    if view is not None:
        view.render()
    elapsed = time.monotonic() - started
    stats = progress.statistics()
    _say(f"\n{label}: {len(pairs)} images in {elapsed:.2f}s")
    for o in outcomes:
        if o.result is not None:
            r = o.result
            state = "up to date" if r.skipped else "copied"
            _say(
                f"  {o.target:<55} {state:<10} {str(r.digest)[:19]}  moved {r.blobs_moved},"
                f" skipped {r.blobs_skipped}, mounted {r.blobs_mounted}"
            )
        else:
            _say(f"  {o.target:<55} FAILED: {o.error}")
    _say(
        f"  total: {human_bytes(stats.bytes_moved)} moved, {stats.blobs_moved} blobs moved,"
        f" {stats.blobs_mounted} mounted, {stats.blobs_skipped} skipped,"
        f" {stats.manifests_pushed} manifests pushed"
    )
    if any(not o.ok for o in outcomes):
        raise SystemExit(1)


async def _check(pairs: list[tuple[str, str]]) -> None:
    async with Client() as client:
        for _, dst in pairs:
            repo, _, tag = dst.rpartition(":")
            v = await validate(client.repo(repo), tag)
            _say(
                f"  verified {dst}: {len(v.manifests)} manifests, {len(v.blobs)} blobs,"
                f" {human_bytes(v.bytes)} re-hashed"
            )


def main() -> None:
    """Run the demo."""
    require_tools("docker-registry", "skopeo")
    with tempfile.TemporaryDirectory(prefix="asyncreg-demo-") as tmp:
        layout = Path(tmp) / "layout"
        builder = ImageBuilder(layout, seed=7)
        _say("building images (real gzip layers) ...")
        spec = ImageSpec(layers=4, layer_size=4 * 1024 * 1024, shared_layers=2)
        builder.index("v1", ["linux/amd64", "linux/arm64", "linux/arm/v7"], spec)
        app = builder.image("app", ImageSpec(layers=3, layer_size=6 * 1024 * 1024))
        builder.artifact("app-sig", app, "application/vnd.example.signature")
        with RegistryProcess() as a, RegistryProcess() as b:
            _say(f"registry A at {a.url}, registry B at {b.url}")
            _say("seeding registry A with skopeo ...")
            push_layout(layout, "v1", a.host, "demo/web")
            push_layout(layout, "app", a.host, "demo/app")
            push_layout(layout, "app-sig", a.host, "demo/app")
            pairs = [
                (f"{a.host}/demo/web:v1", f"{b.host}/mirror/web:v1"),
                (f"{a.host}/demo/app:app", f"{b.host}/mirror/app:app"),
                (f"{a.host}/demo/web:v1", f"{b.host}/mirror/web-copy:v1"),
            ]

            async def run() -> None:
                # Our own push of the artifact maintains the referrers tag fallback on A.
                async with Client() as client:
                    src = client.repo(f"{a.host}/demo/app")
                    await src.manifest_put(await src.manifest_get("app-sig"), "app-sig")
                _say("\nmirroring A -> B with asyncreg (one job, shared limits) ...")
                await _mirror(pairs, "first run")
                _say("\nmirroring again (target up to date: HEAD requests only) ...")
                await _mirror(pairs, "second run")
                _say("\nre-reading every copied image from B and checking every digest ...")
                await _check(pairs)

            anyio.run(run)
        _say("\nregistries stopped. demo done.")


if __name__ == "__main__":
    main()
