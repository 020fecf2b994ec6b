"""asyncreg: move container images between registries, tars and OCI layouts, concurrently."""
