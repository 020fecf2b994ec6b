"""Start and stop real registries (CNCF distribution 2.8) on loopback ports.

asyncreg is tested against a real registry rather than a mock because the
interesting bugs live in what a real server does: chunked upload state,
digest verification, redirects, auth challenges, TLS. Each `RegistryProcess`
is one ``docker-registry serve`` process with its own temporary directory
(config, storage, log, htpasswd and TLS files), so tests and benchmarks can
run several side by side and throw them away.

This module is used from plain scripts (benchmarks) as well as from pytest,
so it must not import pytest; a missing binary raises `RuntimeError` (a test
kit that silently skips would let a broken lab look green).

Facts about distribution 2.8 this module works around:

- it reads every ``REGISTRY_*`` environment variable as a configuration
  override, so those are stripped from the child's environment;
- YAML is a superset of JSON, so the configuration is written as JSON with
  orjson and no YAML library is needed;
- htpasswd auth checks the bcrypt hash on *every* request, so the hash uses
  the lowest cost bcrypt allows (4) to keep auth from dominating benchmarks.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import orjson

__all__ = [
    "RegistryOptions",
    "RegistryProcess",
    "find_free_port",
    "require_tools",
]

#: Seconds `RegistryProcess.start` waits for ``GET /v2/`` to answer.
START_TIMEOUT = 10.0
#: Seconds `RegistryProcess.stop` waits after SIGTERM before sending SIGKILL.
STOP_TIMEOUT = 5.0

# How to get each external tool, for the error message of `require_tools`.
_INSTALL_HINT = {
    "docker-registry": "docker-registry",
    "skopeo": "skopeo",
    "htpasswd": "apache2-utils",
}


def require_tools(*names: str) -> None:
    """Raise `RuntimeError` naming the first of ``names`` that is not on PATH.

    A missing tool is a broken lab, not a reason to skip: skipping would let a
    CI machine without the registry report success while testing nothing.
    """
    for name in names:
        if shutil.which(name) is None:
            package = _INSTALL_HINT.get(name, name)
            raise RuntimeError(
                f"{name} not found: run `make test` (it installs it) or `apt-get install {package}`"
            )


def find_free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago (bind to port 0, read it, close).

    There is a small race between closing and the registry binding the port;
    `RegistryProcess.start` retries on another port if it loses it.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class RegistryOptions:
    """What kind of registry to start.

    ``htpasswd`` is ``(user, password)`` for basic auth; ``tls`` serves HTTPS
    with a certificate from a throw-away trustme CA (`RegistryProcess.ca_pem`
    is the CA to trust); ``delete`` enables manifest and blob deletion (on by
    default because cleanup tests need it); ``redirect_baseurl`` enables the
    ``redirect`` storage middleware, which answers blob GETs with a 307 to
    ``SCHEME://HOST/docker/registry/v2/blobs/...`` (the blob's path under
    `RegistryProcess.storage_dir`; distribution 2.8 keeps only the scheme and
    host of the base URL and drops its path); ``host`` is the loopback address to listen
    on (127.0.0.2 counts as another origin than 127.0.0.1).
    """

    htpasswd: tuple[str, str] | None = None
    tls: bool = False
    delete: bool = True
    redirect_baseurl: str | None = None
    host: str = "127.0.0.1"


class RegistryProcess:
    """One running ``docker-registry`` with its own temporary directory.

    Use as a context manager, or call `start` and `stop` (both idempotent).
    `reset` wipes the storage and restarts on the same port, so benchmark runs
    do not see each other's blobs while clients keep the same address.
    """

    def __init__(self, options: RegistryOptions | None = None) -> None:
        self.options = options or RegistryOptions()
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: Path | None = None
        self._log_file: Any = None

    # --- addresses and files -------------------------------------------------

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``: the registry part of image references."""
        return f"{self.options.host}:{self.port}"

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` or ``https://HOST:PORT``, without a trailing slash."""
        scheme = "https" if self.options.tls else "http"
        return f"{scheme}://{self.host}"

    @property
    def pid(self) -> int:
        """PID of the registry process; raises if it is not running."""
        if self._proc is None:
            raise RuntimeError("registry is not running")
        return self._proc.pid

    @property
    def running(self) -> bool:
        """True while the process started by `start` has not exited."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def workdir(self) -> Path:
        """The temporary directory holding config, storage, log and secrets."""
        if self._tmp is None:
            raise RuntimeError("registry has not been started")
        return self._tmp

    @property
    def storage_dir(self) -> Path:
        """Filesystem storage root: blobs live under ``docker/registry/v2/blobs``."""
        return self.workdir / "storage"

    @property
    def log_path(self) -> Path:
        """The registry's stdout and stderr (log level ``warn``)."""
        return self.workdir / "registry.log"

    @property
    def config_path(self) -> Path:
        """The generated ``config.yml``."""
        return self.workdir / "config.yml"

    @property
    def ca_pem(self) -> Path | None:
        """PEM file of the CA that signed the server certificate, or None without TLS."""
        return self.workdir / "ca.pem" if self.options.tls else None

    @property
    def username(self) -> str | None:
        """Basic-auth user name, or None when auth is off."""
        return self.options.htpasswd[0] if self.options.htpasswd else None

    @property
    def password(self) -> str | None:
        """Basic-auth password, or None when auth is off."""
        return self.options.htpasswd[1] if self.options.htpasswd else None

    def ssl_context(self) -> ssl.SSLContext | None:
        """A client context trusting `ca_pem`, or None for a plain-HTTP registry."""
        if self.ca_pem is None:
            return None
        return ssl.create_default_context(cafile=str(self.ca_pem))

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the registry log (for error messages)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # --- lifecycle --------------------------------------------------------------

    def start(self) -> Self:
        """Write the configuration, start the process and wait until ``/v2/`` answers.

        Raises `RuntimeError` with the log tail if it does not answer within
        `START_TIMEOUT` seconds. When the free port found is taken before the
        registry binds it, tries again on another port.
        """
        if self.running:
            return self
        require_tools("docker-registry")
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="asyncreg-registry-"))
            try:
                self._write_secrets()
            except BaseException:
                self._remove_tmp()
                raise
        fixed_port = self.port != 0
        attempts = 1 if fixed_port else 3
        try:
            for attempt in range(1, attempts + 1):
                if not fixed_port:
                    self.port = find_free_port(self.options.host)
                self._write_config()
                self._spawn()
                if self._wait_ready():
                    return self
                status = self._proc.poll() if self._proc is not None else None
                self._terminate()
                tail = self.log_tail()
                if attempt == attempts or "address already in use" not in tail:
                    what = (
                        f"did not answer GET /v2/ within {START_TIMEOUT:g} s"
                        if status is None
                        else f"exited with status {status} before answering"
                    )
                    # The temporary directory goes away below: quote the log, not its path.
                    raise RuntimeError(f"docker-registry on {self.url} {what}; log tail:\n{tail}")
        except BaseException:
            self._terminate()
            self._remove_tmp()
            if not fixed_port:
                self.port = 0
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    def stop(self) -> None:
        """Terminate the process (SIGTERM, SIGKILL after 5 s) and remove its directory.

        Idempotent: a second call, or a call on a never-started registry, does nothing.
        """
        self._terminate()
        self._remove_tmp()

    def reset(self) -> None:
        """Stop, wipe the storage and start again on the same port with the same secrets."""
        self._terminate()
        if self._tmp is not None:
            shutil.rmtree(self.storage_dir, ignore_errors=True)
        self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<RegistryProcess {self.url} {state}>"

    # --- internals ---------------------------------------------------------------

    def _write_secrets(self) -> None:
        """Write the htpasswd file and TLS files once; `reset` keeps them."""
        opts = self.options
        if opts.htpasswd is not None:
            user, password = opts.htpasswd
            (self.workdir / "htpasswd").write_text(f"{user}:{_bcrypt_hash(password)}\n")
        if opts.tls:
            import trustme

            ca = trustme.CA()
            names = sorted({opts.host, "127.0.0.1", "localhost"})
            cert = ca.issue_cert(*names)
            ca.cert_pem.write_to_path(str(self.workdir / "ca.pem"))
            cert.private_key_pem.write_to_path(str(self.workdir / "key.pem"))
            chain = self.workdir / "cert.pem"
            chain.write_bytes(b"")
            for blob in cert.cert_chain_pems:
                blob.write_to_path(str(chain), append=True)

    def _config(self) -> dict[str, Any]:
        opts = self.options
        http: dict[str, Any] = {
            "addr": self.host,
            # A fixed secret silences a warning and keeps upload state valid across reset().
            "secret": self._http_secret(),
        }
        if opts.tls:
            http["tls"] = {
                "certificate": str(self.workdir / "cert.pem"),
                "key": str(self.workdir / "key.pem"),
            }
        storage: dict[str, Any] = {
            "filesystem": {"rootdirectory": str(self.storage_dir)},
            "delete": {"enabled": opts.delete},
            # The purger would delete uploads of long benchmark runs at random moments.
            "maintenance": {"uploadpurging": {"enabled": False}},
        }
        config: dict[str, Any] = {
            "version": "0.1",
            "log": {"level": "warn", "formatter": "text", "accesslog": {"disabled": True}},
            "storage": storage,
            "http": http,
            "health": {"storagedriver": {"enabled": False}},
        }
        if opts.htpasswd is not None:
            config["auth"] = {
                "htpasswd": {"realm": "asyncreg-testkit", "path": str(self.workdir / "htpasswd")}
            }
        if opts.redirect_baseurl is not None:
            config["middleware"] = {
                "storage": [{"name": "redirect", "options": {"baseurl": opts.redirect_baseurl}}]
            }
        return config

    def _http_secret(self) -> str:
        path = self.workdir / "http-secret"
        if not path.exists():
            path.write_text(secrets.token_hex(16))
        return path.read_text()

    def _write_config(self) -> None:
        self.config_path.write_bytes(
            orjson.dumps(self._config(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
        )

    def _spawn(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - outlives this call
        self._proc = subprocess.Popen(
            ["docker-registry", "serve", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.workdir,
            # Own process group: a Ctrl-C in the terminal must not kill the registry
            # before the test run has had a chance to stop it cleanly.
            start_new_session=True,
        )

    def _wait_ready(self) -> bool:
        """Poll ``GET /v2/`` until it answers 200 or 401; False on timeout or early exit."""
        deadline = time.monotonic() + START_TIMEOUT
        context = self.ssl_context()
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(
                    f"{self.url}/v2/", timeout=1.0, context=context
                ) as resp:
                    if resp.status == 200:
                        return True
            except urllib.error.HTTPError as err:
                if err.code == 401:
                    return True
            except (OSError, ssl.SSLError):
                pass
            time.sleep(0.02)
        return False

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def _remove_tmp(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


def _bcrypt_hash(password: str) -> str:
    """A bcrypt hash distribution accepts, at cost 4 (checked on every request)."""
    try:
        import bcrypt
    except ImportError:
        require_tools("htpasswd")
        out = subprocess.run(
            ["htpasswd", "-niBC", "4", "x"],
            input=password.encode(),
            capture_output=True,
            check=True,
        ).stdout.decode()
        return out.strip().partition(":")[2]
    hashed: bytes = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4))
    return hashed.decode()
