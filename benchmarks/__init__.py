"""Benchmarks: asyncreg against skopeo on real loopback registries.

``make bench`` (``.venv/bin/python -m benchmarks.run``) builds each workload
once, pushes it to a source registry with skopeo, then times alternating
copies by asyncreg and skopeo into a destination registry that is wiped
before every copy. W3 goes through a tar file instead: exports from the
source registry (against skopeo's ``docker-archive:`` and ``oci-archive:``)
and imports into the wiped destination (see `benchmarks.archive`). See
`benchmarks.run` for the options.
"""
