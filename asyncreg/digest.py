"""Content digests and the verifier every byte stream passes through.

A digest is ``algorithm:encoded`` (OCI image spec, "Digests"). asyncreg accepts
the two registered algorithms, ``sha256`` (64 lowercase hex) and ``sha512``
(128 lowercase hex), and nothing looser: a digest is a name that content is
stored under, so an ambiguous spelling (upper case hex, short hex) is refused
rather than normalised.

`Verifier` hashes and counts bytes as they pass and refuses to go past the
declared size, so a lying server cannot make us read (or store) more than it
promised. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Final

from .errors import DigestFormatError, DigestMismatchError, SizeMismatchError

__all__ = ["ALGORITHMS", "Digest", "Verifier", "compute", "digest_in"]

# Hex lengths of the algorithms the OCI image spec registers.
ALGORITHMS: Final[dict[str, int]] = {"sha256": 64, "sha512": 128}
_HEX = re.compile(r"[0-9a-f]+\Z")


@dataclass(frozen=True, slots=True, order=True)
class Digest:
    """A validated ``algorithm:hex`` digest; `str()` gives it back unchanged."""

    algorithm: str
    hex: str

    def __post_init__(self) -> None:
        want = ALGORITHMS.get(self.algorithm)
        if want is None:
            raise DigestFormatError(
                f"unsupported digest algorithm {self.algorithm!r}: use sha256 or sha512"
            )
        if len(self.hex) != want or not _HEX.match(self.hex):
            raise DigestFormatError(
                f"invalid {self.algorithm} digest: expected {want} lowercase hex characters,"
                f" got {self.hex[:140]!r}"
            )

    @classmethod
    def parse(cls, text: object) -> Digest:
        """Parse ``algorithm:hex``; raise `DigestFormatError` naming what is wrong."""
        if isinstance(text, Digest):
            return text
        if not isinstance(text, str):
            raise DigestFormatError(f"digest must be a string, got {type(text).__name__}")
        alg, sep, hexpart = text.partition(":")
        if not sep:
            raise DigestFormatError(f"invalid digest {text[:140]!r}: expected 'algorithm:hex'")
        return cls(alg, hexpart)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        """The digest of ``data``."""
        return compute(data, algorithm)

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    @property
    def tag_form(self) -> str:
        """``sha256-<hex>``: the tag name of the referrers tag schema and cosign."""
        return f"{self.algorithm}-{self.hex}"

    def new_hasher(self) -> hashlib._Hash:
        """A fresh hash object of this digest's algorithm."""
        return hashlib.new(self.algorithm)


def compute(data: bytes, algorithm: str = "sha256") -> Digest:
    """Hash ``data`` with ``algorithm`` and return its `Digest`."""
    if algorithm not in ALGORITHMS:
        raise DigestFormatError(f"unsupported digest algorithm {algorithm!r}")
    return Digest(algorithm, hashlib.new(algorithm, data).hexdigest())


def digest_in(reference: str | Digest) -> Digest | None:
    """The digest a manifest reference names (``alg:hex`` or ``name@alg:hex``), or None.

    Stores take a tag or a digest in one argument; this tells them apart. A
    reference that looks like a digest but is malformed is an error, not a tag.
    """
    if isinstance(reference, Digest):
        return reference
    text = reference.rpartition("@")[2] if "@" in reference else reference
    algorithm, sep, _ = text.partition(":")
    if sep and algorithm in ALGORITHMS:
        return Digest.parse(text)
    if "@" in reference:
        raise DigestFormatError(f"invalid digest in reference {reference[:200]!r}")
    return None


class Verifier:
    """Hashes and counts a stream; refuses overruns; checks digest and size at the end.

    ``size`` may be -1 when unknown (then only the digest is checked).
    `update` raises `SizeMismatchError` the moment more bytes arrive than
    declared, before they are handed on; `finish` raises on a short stream or
    a digest mismatch. ``what`` names the content in messages (a blob, a ref).
    """

    __slots__ = ("_hasher", "count", "expected", "hashing", "size", "what")

    def __init__(
        self, expected: Digest, size: int = -1, *, what: str = "", hashing: bool = True
    ) -> None:
        self.expected = expected
        self.size = size
        self.count = 0
        self.what = what or str(expected)
        #: False: count only (the sink hashes on receipt, a registry or our own
        #: writers), so a byte is never hashed twice; the size is checked either way.
        self.hashing = hashing
        self._hasher = expected.new_hasher()

    def update(self, chunk: bytes | bytearray | memoryview) -> None:
        """Account for ``chunk``; raise if it takes the stream past its size."""
        self.account(len(chunk))
        if self.hashing:
            self._hasher.update(chunk)

    def account(self, n: int) -> None:
        """Count ``n`` more bytes without hashing them (yet); refuse an overrun.

        With `hash_only` this splits `update` in two, so a writer can count on
        the event loop and hash in a worker thread, in order.
        """
        if self.size >= 0 and self.count + n > self.size:
            raise SizeMismatchError(
                f"{self.what}: more than the declared {self.size} bytes were sent",
                expected=self.size,
                actual=self.count + n,
            )
        self.count += n

    def hash_only(self, data: bytes | bytearray | memoryview) -> None:
        """Hash bytes already counted with `account` (thread-safe in sequence)."""
        if self.hashing:
            self._hasher.update(data)

    @property
    def remaining(self) -> int:
        """Bytes still expected, or -1 when the size is unknown."""
        return -1 if self.size < 0 else self.size - self.count

    def actual(self) -> Digest:
        """The digest of the bytes seen so far."""
        return Digest(self.expected.algorithm, self._hasher.copy().hexdigest())

    def finish(self) -> None:
        """Raise unless exactly ``size`` bytes hashing to ``expected`` were seen."""
        if self.size >= 0 and self.count != self.size:
            raise SizeMismatchError(
                f"{self.what}: stream ended after {self.count} of {self.size} bytes",
                expected=self.size,
                actual=self.count,
            )
        if not self.hashing:
            return
        got = self.actual()
        if got != self.expected:
            raise DigestMismatchError(
                f"{self.what}: content hashes to {got}, not {self.expected}",
                expected=str(self.expected),
                actual=str(got),
            )
