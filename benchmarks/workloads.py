"""The benchmark workloads of the issue, built with the test kit's `ImageBuilder`.

- W1: one image of 8 x 128 MiB layers, registry A to registry B.
- W1-TLS: W1 between two registries that serve HTTPS, each with a
  certificate from its own throw-away CA, which both tools are given and
  verify (so neither the splice relay nor plain HTTP applies).
- W3: W1's image through a tar file, in two legs measured apart: export
  (registry A to a tar; skopeo writes a ``docker-archive:`` and an
  ``oci-archive:``) and import (an OCI archive into an empty registry B).
- W4: a 3-platform index, 3 x 16 MiB layers per platform, copied whole
  (``skopeo copy --all`` on the skopeo side).

``scale`` multiplies every layer size (``--scale 4`` gives the "4x larger
layers" memory check, ``--scale 0.05`` a quick smoke run). Layers are random
bytes in stored-deflate gzip around a real tar, so skopeo moves them
unchanged and digests stay the same at both ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from asyncreg.testkit.builder import BuiltImage, ImageBuilder, ImageSpec

__all__ = [
    "LEG_EXPORT",
    "LEG_IMPORT",
    "LEG_IMPORT_SKOPEO_TAR",
    "MIB",
    "WORKLOADS",
    "Workload",
    "parse_workloads",
]

MIB = 1024 * 1024

#: Smallest layer a scaled workload gets, so a tiny --scale still moves real tars.
_MIN_LAYER = 4096

#: The legs of an archive workload (W3), as they appear in the report and the targets.
LEG_EXPORT = "export"
LEG_IMPORT = "import"
LEG_IMPORT_SKOPEO_TAR = "import of skopeo's oci-archive"


@dataclass(frozen=True)
class Workload:
    """One shape of image to move from registry A to registry B.

    ``kind`` says how: ``copy`` registry to registry, ``archive`` through a
    tar file (export from A, then import into B).
    """

    name: str
    layers: int
    #: Layer size in bytes at scale 1.
    layer_size: int
    #: Platforms of an index; empty for a single image.
    platforms: tuple[str, ...] = ()
    repo: str = "bench/image"
    tag: str = "v1"
    seed: int = 1
    kind: Literal["copy", "archive"] = "copy"
    #: Both registries serve HTTPS (a throw-away CA each) and both tools verify it.
    tls: bool = False

    @property
    def is_index(self) -> bool:
        """True when the workload is a multi-platform index."""
        return bool(self.platforms)

    def layer_bytes(self, scale: float) -> int:
        """Layer size in bytes at ``scale``."""
        return max(_MIN_LAYER, round(self.layer_size * scale))

    def describe(self, scale: float) -> str:
        """A one-line description, e.g. ``one image, 8 x 128 MiB layers``."""
        size = _size_text(self.layer_bytes(scale))
        tls = ", HTTPS registries (verified)" if self.tls else ""
        if self.is_index:
            return (
                f"{len(self.platforms)}-platform index ({', '.join(self.platforms)}),"
                f" {self.layers} x {size} layers each{tls}"
            )
        return f"one image, {self.layers} x {size} layers{tls}"

    def build(self, layout: Path, scale: float) -> BuiltImage:
        """Write the workload into an OCI layout at ``layout``, tagged `tag`."""
        spec = ImageSpec(layers=self.layers, layer_size=self.layer_bytes(scale))
        builder = ImageBuilder(layout, seed=self.seed)
        if self.is_index:
            return builder.index(self.tag, self.platforms, spec)
        return builder.image(self.tag, spec)


def _size_text(size: int) -> str:
    if size >= MIB:
        return f"{size / MIB:g} MiB"
    return f"{size / 1024:.1f} KiB"


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload(name="W1", layers=8, layer_size=128 * MIB, repo="bench/w1"),
        # W1's image (same shape and seed, so the same blobs) between two TLS registries.
        Workload(name="W1-TLS", layers=8, layer_size=128 * MIB, repo="bench/w1", tls=True),
        # W1's image (same shape and seed, so the same blobs), moved through a tar.
        Workload(name="W3", layers=8, layer_size=128 * MIB, repo="bench/w3", kind="archive"),
        Workload(
            name="W4",
            layers=3,
            layer_size=16 * MIB,
            platforms=("linux/amd64", "linux/arm64", "linux/arm/v7"),
            repo="bench/w4",
        ),
    )
}


def parse_workloads(text: str) -> list[Workload]:
    """``"W1,W1-TLS,W3,W4"`` (any case, spaces allowed) to workloads.

    `ValueError` names unknown ones.
    """
    names = [part.strip().upper() for part in text.split(",") if part.strip()]
    if not names:
        raise ValueError("no workload given")
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        raise ValueError(
            f"unknown workload(s) {', '.join(unknown)}; known: {', '.join(sorted(WORKLOADS))}"
        )
    return [WORKLOADS[n] for n in dict.fromkeys(names)]
