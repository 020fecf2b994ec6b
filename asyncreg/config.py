"""Limits, timeouts, retry policy and per-host settings, as frozen values.

Everything that changes how asyncreg talks to the outside world is a plain,
immutable value, so a job's behaviour is decided up front and can be shared
between tasks without locks. Defaults are chosen to be safe (TLS verified,
bounded retries, bounded reads) and fast on a small machine.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Final

from .errors import ConfigError

__all__ = [
    "MIB",
    "HostConfig",
    "Limits",
    "RetryPolicy",
    "Timeouts",
    "is_loopback_host",
]

MIB: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Timeouts:
    """How long to wait before a connection or a silent response counts as failed.

    ``read_stall`` is not a total time limit: a 10 GiB layer may take minutes,
    but a server that sends *no byte at all* for that long is dead, and a hang
    is worse than an error.
    """

    connect: float = 15.0
    read_stall: float = 60.0
    token: float = 30.0

    def __post_init__(self) -> None:
        for name in ("connect", "read_stall", "token"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"Timeouts.{name} must be positive")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded exponential backoff with full jitter, honouring ``Retry-After``.

    ``attempts`` counts the first try: 5 means one try and four retries. For
    a blob the budget covers every request, resume and restart of it (see
    `asyncreg.budget.Budget`): it gives up after ``attempts`` failed tries
    that made no progress, or ``attempts + resume_attempts`` failed tries in
    all (a download that breaks after some bytes made progress).
    ``retry_after_cap`` stops a server from parking us for an hour.
    """

    attempts: int = 5
    backoff_base: float = 0.2
    backoff_cap: float = 10.0
    retry_after_cap: float = 60.0
    resume_attempts: int = 5

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigError("RetryPolicy.attempts must be at least 1")
        if self.backoff_base < 0 or self.backoff_cap < 0 or self.retry_after_cap < 0:
            raise ConfigError("RetryPolicy delays must not be negative")


@dataclass(frozen=True, slots=True)
class Limits:
    """Concurrency and memory bounds shared by a whole job.

    ``transfers`` bounds blob and manifest transfers in flight across every
    image and registry of a job; ``per_host`` bounds them per registry host (a
    registry-to-registry blob copy holds one slot on each side). ``chunk_size``
    is the unit bytes move in, so peak memory is about
    ``transfers * chunk_size`` plus buffers, whatever the layer sizes are.
    The defaults come from ``python -m benchmarks.sweep`` (W1, 8 x 128 MiB,
    two local registries): 8 transfers per host was the fastest setting, 2
    about 20 % slower, 16 no better; the receiving registry is the bottleneck.
    """

    transfers: int = 16
    per_host: int = 8
    chunk_size: int = 256 * 1024
    max_manifest_size: int = 8 * MIB
    max_manifest_push: int = 4 * MIB
    upload_chunk_size: int = 16 * MIB
    spool_memory: int = 64 * MIB
    zero_copy: bool = True
    timeouts: Timeouts = field(default_factory=Timeouts)
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        if self.transfers < 1 or self.per_host < 1:
            raise ConfigError("Limits.transfers and Limits.per_host must be at least 1")
        if self.chunk_size < 4096:
            raise ConfigError("Limits.chunk_size must be at least 4096 bytes")
        if self.max_manifest_size < 1024 or self.max_manifest_push < 1024:
            raise ConfigError("manifest size caps must be at least 1024 bytes")
        if self.upload_chunk_size < 64 * 1024:
            raise ConfigError("Limits.upload_chunk_size must be at least 64 KiB")


def is_loopback_host(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ``[::1]``, with or without a port."""
    name = host
    if name.startswith("["):
        name = name[1 : name.find("]")] if "]" in name else name[1:]
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class HostConfig:
    """How to reach one registry host.

    ``plain_http`` and ``tls_verify`` are separate on purpose: "talk HTTP" and
    "talk HTTPS but trust anyone" are different risks. ``plain_http=None``
    means the default: plain HTTP for loopback hosts, TLS for everything else
    (and TLS for any host given TLS settings: a CA file, a client certificate,
    or ``tls_verify=False``).
    ``chunked_upload`` sends blobs as PATCH chunks, for registries (or proxies
    in front of them) that cap request bodies.
    """

    plain_http: bool | None = None
    tls_verify: bool = True
    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    per_host: int | None = None
    chunked_upload: bool = False

    def use_http(self, host: str) -> bool:
        """Whether to speak plain HTTP to ``host``."""
        if self.plain_http is not None:
            return self.plain_http
        if self.ca_file or self.client_cert or not self.tls_verify:
            return False  # TLS settings were given: the host speaks TLS
        return is_loopback_host(host)
