"""One exception tree for everything asyncreg raises.

Callers catch by *what went wrong*, not by which library noticed it, so every
foreign exception (aiohttp, OSError from a socket, tarfile, orjson) is
translated at one boundary and never escapes. The tree::

    AsyncregError                       root: catch this to catch everything
    +-- InputError (ValueError)         the caller or a document gave bad input
    |   +-- ReferenceError_             a malformed image reference
    |   +-- DigestFormatError           a malformed digest string
    |   +-- PlatformError               a malformed platform string
    |   +-- ManifestError               a malformed or refused manifest
    |   |   +-- UnsupportedManifestError    e.g. Docker schema1
    |   +-- ArchiveError                a malformed tar or layout
    |   +-- ConfigError                 bad options or configuration
    |   +-- DestinationError            an output path that cannot be written safely
    +-- IntegrityError                  bytes are not what they claim to be
    |   +-- DigestMismatchError         content hashes to another digest
    |   +-- SizeMismatchError           content is shorter or longer than declared
    |   +-- HostilePathError            a tar entry tries to escape or is a device
    +-- RegistryError                   the registry answered, and it was a "no"
    |   +-- AuthError                   401/403, or no usable credentials
    |   +-- NotFoundError               404, MANIFEST_UNKNOWN, BLOB_UNKNOWN, ...
    |   +-- RateLimitError              429 TOOMANYREQUESTS
    +-- TransportError (OSError)        no usable answer: connection, TLS, protocol
    |   +-- TransportTimeout (TimeoutError)   connect or read-stall timeout
    +-- CopyError                       a job failed; wraps the per-item causes
    +-- LoopError                       an index that reaches itself
    +-- Interrupted                     the job was asked to stop (Ctrl-C, SIGTERM)

`RegistryError.retryable` and `TransportError.retryable` tell the retry layer
whether replaying the same request could succeed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "ArchiveError",
    "AsyncregError",
    "AuthError",
    "ConfigError",
    "CopyError",
    "DestinationError",
    "DigestFormatError",
    "DigestMismatchError",
    "HostilePathError",
    "InputError",
    "Interrupted",
    "IntegrityError",
    "LoopError",
    "ManifestError",
    "NotFoundError",
    "PlatformError",
    "RateLimitError",
    "ReferenceError_",
    "RegistryError",
    "RegistryErrorDetail",
    "SizeMismatchError",
    "TransportError",
    "TransportTimeout",
    "UnsupportedManifestError",
]


class AsyncregError(Exception):
    """Root of every exception asyncreg raises on purpose."""

    def amend(self, context: str) -> None:
        """Add what the layer that gave up knows ("gave up after 5 tries") to the message.

        The error keeps its type as it travels up (callers catch by what went
        wrong); only its one-line message grows.
        """
        first = str(self.args[0]) if self.args else ""
        self.args = (f"{first} ({context})", *self.args[1:])


# --- bad input -------------------------------------------------------------


class InputError(AsyncregError, ValueError):
    """The input (an argument, a document, a file) is malformed.

    Also a `ValueError`, so code that validates with ``except ValueError``
    keeps working.
    """


class ReferenceError_(InputError):
    """A reference such as ``registry:5000/repo:tag`` could not be parsed."""


class DigestFormatError(InputError):
    """A digest string is not ``algorithm:hex`` with a known algorithm and length."""


class PlatformError(InputError):
    """A platform string is not ``os/arch[/variant][:os.version]``."""


class ManifestError(InputError):
    """A manifest is malformed, ambiguous, too large or of the wrong type."""


class UnsupportedManifestError(ManifestError):
    """A manifest format asyncreg recognises but refuses (Docker schema1)."""


class ArchiveError(InputError):
    """A tar archive or OCI layout is malformed (missing index, bad entry)."""


class ConfigError(InputError):
    """Options, limits, credentials or a configuration file are invalid."""


class DestinationError(InputError):
    """An output path asyncreg will not write: a directory, a dangling symlink, a missing
    directory, a block device; see `asyncreg.destination`."""


# --- integrity --------------------------------------------------------------


class IntegrityError(AsyncregError):
    """Content does not match what it claims to be; never retried silently."""


class DigestMismatchError(IntegrityError):
    """Bytes hash to a digest other than the expected one."""

    def __init__(self, message: str, *, expected: str = "", actual: str = "") -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual


class SizeMismatchError(IntegrityError):
    """A stream is shorter or longer than its declared size."""

    def __init__(self, message: str, *, expected: int = -1, actual: int = -1) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual


class HostilePathError(IntegrityError):
    """A tar entry has an absolute path, ``..``, an escaping link or is a device."""


# --- registry answers -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RegistryErrorDetail:
    """One entry of the distribution spec's ``errors[]`` body."""

    code: str
    message: str = ""
    detail: object = None


_RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class RegistryError(AsyncregError):
    """The registry answered with an error status (and maybe an ``errors[]`` body)."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        errors: Sequence[RegistryErrorDetail] = (),
        method: str = "",
        url: str = "",
        retry_after: float | None = None,
        replayable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.errors: tuple[RegistryErrorDetail, ...] = tuple(errors)
        self.method = method
        self.url = url
        #: Seconds the registry asked us to wait (``Retry-After``), if it said.
        self.retry_after = retry_after
        self._replayable = replayable

    @property
    def codes(self) -> tuple[str, ...]:
        """The registry's error codes, e.g. ``("MANIFEST_UNKNOWN",)``."""
        return tuple(e.code for e in self.errors)

    @property
    def retryable(self) -> bool:
        """True for answers that may change on replay: 408, 429 and 5xx.

        ``replayable`` given to the constructor overrides the status rule (a
        401 whose token was refreshed mid-stream: re-open and try again).
        """
        if self._replayable is not None:
            return self._replayable
        return self.status in _RETRYABLE_STATUS or (self.status >= 500 and self.status != 501)


class AuthError(RegistryError):
    """Authentication or authorisation failed (401, 403, token refused)."""


class NotFoundError(RegistryError):
    """The manifest, blob, repository or upload does not exist (404)."""


class RateLimitError(RegistryError):
    """The registry asked us to slow down (429 TOOMANYREQUESTS); see ``retry_after``."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 429,
        errors: Sequence[RegistryErrorDetail] = (),
        method: str = "",
        url: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(
            message, status=status, errors=errors, method=method, url=url, retry_after=retry_after
        )


# --- transport --------------------------------------------------------------


class TransportError(AsyncregError, OSError):
    """No usable HTTP answer: refused or reset connection, TLS failure, bad framing.

    ``retryable`` is False for failures a replay cannot change (a certificate
    that does not verify, a redirect we refuse to follow).
    """

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class TransportTimeout(TransportError, TimeoutError):
    """Connecting took too long, or a response stalled with no bytes for too long."""


# --- jobs -------------------------------------------------------------------


class LoopError(AsyncregError):
    """A manifest graph references itself (an index that reaches itself)."""


class Interrupted(AsyncregError):
    """The job was asked to stop: nothing new was started, and what was in flight ended.

    Uploads already sending their one PUT were allowed to finish (a registry
    cannot cancel those), chunked ones stopped at a chunk boundary and were
    cancelled; ``unclean`` lists what could not be cleaned up.
    """

    def __init__(self, message: str, *, unclean: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.unclean: tuple[str, ...] = tuple(unclean)


class CopyError(AsyncregError):
    """A copy, export, import or mirror job failed.

    ``errors`` holds the underlying causes, most useful first; the message is a
    one-line summary fit for a CLI's stderr.
    """

    def __init__(self, message: str, errors: Sequence[BaseException] = ()) -> None:
        super().__init__(message)
        self.errors: tuple[BaseException, ...] = tuple(errors)
