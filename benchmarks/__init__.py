"""Benchmarks: asyncreg against skopeo on real loopback registries.

``make bench`` (``.venv/bin/python -m benchmarks.run``) builds each workload
once, pushes it to a source registry with skopeo, then times alternating
copies by asyncreg and skopeo into a destination registry that is wiped
before every copy. See `benchmarks.run` for the options.
"""
