"""The OCI distribution protocol over aiohttp: transport, auth, uploads, `RegistryRepo`."""
