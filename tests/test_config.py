"""Limits, timeouts, retry policy and per-host settings."""

from __future__ import annotations

from typing import Any

import pytest

from asyncreg.config import HostConfig, Limits, RetryPolicy, Timeouts, is_loopback_host
from asyncreg.errors import ConfigError, InputError


def test_defaults_are_valid() -> None:
    limits = Limits()
    assert limits.transfers >= 1
    assert limits.per_host >= 1
    assert isinstance(limits.timeouts, Timeouts)
    assert isinstance(limits.retry, RetryPolicy)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"connect": 0},
        {"connect": -1.0},
        {"read_stall": 0.0},
        {"token": -0.5},
    ],
)
def test_timeouts_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        Timeouts(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"attempts": 0},
        {"attempts": -3},
        {"backoff_base": -0.1},
        {"backoff_cap": -1.0},
        {"retry_after_cap": -1.0},
    ],
)
def test_retry_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        RetryPolicy(**kwargs)


def test_retry_edges_accepted() -> None:
    policy = RetryPolicy(attempts=1, backoff_base=0, backoff_cap=0, retry_after_cap=0)
    assert policy.attempts == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"transfers": 0},
        {"per_host": 0},
        {"per_host": -1},
        {"chunk_size": 4095},
        {"max_manifest_size": 1023},
        {"max_manifest_push": 1023},
        {"upload_chunk_size": 64 * 1024 - 1},
    ],
)
def test_limits_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        Limits(**kwargs)


def test_limits_edges_accepted() -> None:
    limits = Limits(
        transfers=1,
        per_host=1,
        chunk_size=4096,
        max_manifest_size=1024,
        max_manifest_push=1024,
        upload_chunk_size=64 * 1024,
    )
    assert limits.chunk_size == 4096


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="transfers") as info:
        Limits(transfers=0)
    assert isinstance(info.value, InputError)


def test_values_are_frozen() -> None:
    limits = Limits()
    with pytest.raises(AttributeError):
        limits.transfers = 3  # type: ignore[misc]


# --- HostConfig.use_http ------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "host", "plain"),
    [
        (HostConfig(), "localhost:5000", True),
        (HostConfig(), "127.0.0.1:5000", True),
        (HostConfig(), "[::1]:5000", True),
        (HostConfig(), "registry.example.com", False),
        (HostConfig(), "registry.example.com:5000", False),
        (HostConfig(), "10.0.0.7:5000", False),
        (HostConfig(plain_http=True), "registry.example.com", True),
        (HostConfig(plain_http=False), "localhost:5000", False),
        (HostConfig(plain_http=True, ca_file="/ca.pem"), "localhost:5000", True),
        (HostConfig(plain_http=True, tls_verify=False), "example.com", True),
        (HostConfig(ca_file="/ca.pem"), "localhost:5000", False),
        (HostConfig(client_cert="/c.pem", client_key="/k.pem"), "127.0.0.1:5000", False),
        (HostConfig(tls_verify=False), "localhost:5000", False),
        (HostConfig(tls_verify=False), "registry.example.com", False),
        (HostConfig(per_host=2, chunked_upload=True), "localhost", True),
    ],
)
def test_use_http(config: HostConfig, host: str, plain: bool) -> None:
    assert config.use_http(host) is plain


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("localhost:5000", True),
        ("LocalHost:443", True),
        ("127.0.0.1", True),
        ("127.0.0.1:5000", True),
        ("127.9.8.7:80", True),
        ("::1", True),
        ("[::1]", True),
        ("[::1]:5000", True),
        ("0.0.0.0", False),
        ("10.0.0.1:5000", False),
        ("128.0.0.1", False),
        ("[::2]:5000", False),
        ("[2001:db8::1]:443", False),
        ("2001:db8::1", False),
        ("example.com", False),
        ("localhost.example.com", False),
        ("mylocalhost:5000", False),
        ("", False),
    ],
)
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback
