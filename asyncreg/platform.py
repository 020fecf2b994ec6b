"""Platforms: which os/architecture an image in an index is built for.

Users name platforms as short strings (``linux/arm64``), indexes describe them
as OCI platform objects, and the two spell the same machine in several ways
(``aarch64`` and ``arm64``, ``arm64`` with or without ``v8``). Selecting
images from an index must not depend on those spellings, so `Platform`
parses both forms and `Platform.matches` compares *normalised* values,
following the rules regclient and containerd use. Pure: no I/O (`Platform.host`
only asks the Python runtime which machine it runs on).
"""

from __future__ import annotations

import platform as _pyplatform
import re
import sys
from dataclasses import dataclass
from typing import Final

from .errors import PlatformError

__all__ = ["Platform"]

# One os/architecture/variant component: what real indexes use, and no
# separators, so that str() and parse() round-trip.
_PART: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
_OS_VERSION: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*\Z")
_FORMAT_HINT: Final = (
    "expected os/architecture[/variant][:os.version], e.g. linux/amd64, linux/arm64/v8, "
    "linux/arm/v7 or windows/amd64:10.0.17763.1234"
)

# platform.machine() spellings -> (architecture, variant).
_MACHINES: Final[dict[str, tuple[str, str]]] = {
    "x86_64": ("amd64", ""),
    "x86-64": ("amd64", ""),
    "amd64": ("amd64", ""),
    "i386": ("386", ""),
    "i486": ("386", ""),
    "i586": ("386", ""),
    "i686": ("386", ""),
    "x86": ("386", ""),
    "aarch64": ("arm64", "v8"),
    "arm64": ("arm64", "v8"),
    "aarch64_be": ("arm64", "v8"),
    "armv8l": ("arm", "v8"),
    "armv7l": ("arm", "v7"),
    "armv7": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "armv6": ("arm", "v6"),
    "armv5tel": ("arm", "v5"),
    "armv5l": ("arm", "v5"),
    "mips64el": ("mips64le", ""),
    "mipsel": ("mipsle", ""),
    "loongarch64": ("loong64", ""),
}


@dataclass(frozen=True, slots=True)
class Platform:
    """An OCI platform; ``str()`` gives the ``os/arch[/variant][:os.version]`` form."""

    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""
    os_features: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.os_features, tuple):
            object.__setattr__(self, "os_features", tuple(self.os_features))

    # --- construction -------------------------------------------------------

    @classmethod
    def parse(cls, text: str) -> Platform:
        """Parse ``os/architecture[/variant][:os.version]``, e.g. ``linux/arm/v7``.

        Raises `PlatformError` saying which part is wrong and what is expected.
        """
        if not isinstance(text, str):
            raise PlatformError(f"platform must be a string, got {type(text).__name__}")
        shown = text[:100]
        spec = text.strip()
        if not spec:
            raise PlatformError(f"empty platform: {_FORMAT_HINT}")
        main, colon, os_version = spec.partition(":")
        if colon and not _OS_VERSION.match(os_version):
            raise PlatformError(
                f"invalid platform {shown!r}: os.version after ':' must be non-empty letters,"
                f" digits, '.', '_', '+' or '-'; {_FORMAT_HINT}"
            )
        parts = main.split("/")
        if len(parts) < 2:
            raise PlatformError(f"invalid platform {shown!r}: missing architecture; {_FORMAT_HINT}")
        if len(parts) > 3:
            raise PlatformError(f"invalid platform {shown!r}: too many '/'; {_FORMAT_HINT}")
        names = ("os", "architecture", "variant")
        for name, part in zip(names, parts, strict=False):
            if not _PART.match(part):
                what = "is empty" if not part else "may hold only letters, digits, '.', '_', '-'"
                raise PlatformError(f"invalid platform {shown!r}: {name} {what}; {_FORMAT_HINT}")
        return cls(
            os=parts[0],
            architecture=parts[1],
            variant=parts[2] if len(parts) == 3 else "",
            os_version=os_version,
        )

    @classmethod
    def from_json(cls, obj: object) -> Platform:
        """Read an OCI platform object (``os``, ``architecture``, ``variant``, ...).

        ``os`` and ``architecture`` are required non-empty strings; the
        optional fields may be absent or null. Unknown fields are ignored.
        """
        if not isinstance(obj, dict):
            raise PlatformError(f"platform must be a JSON object, got {_json_kind(obj)}")
        os_ = obj.get("os")
        arch = obj.get("architecture")
        if not isinstance(os_, str) or not os_:
            raise PlatformError(f"platform.os must be a non-empty string, got {_json_kind(os_)}")
        if not isinstance(arch, str) or not arch:
            raise PlatformError(
                f"platform.architecture must be a non-empty string, got {_json_kind(arch)}"
            )
        variant = _optional_str(obj, "variant")
        os_version = _optional_str(obj, "os.version")
        features = obj.get("os.features")
        if features is None:
            features = []
        if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
            raise PlatformError("platform.os.features must be an array of strings")
        return cls(os_, arch, variant, os_version, tuple(features))

    @classmethod
    def host(cls) -> Platform:
        """The machine this process runs on, normalised (e.g. ``linux/arm64/v8``)."""
        system = _pyplatform.system().lower()
        if not system:
            system = sys.platform
        os_ = {"win32": "windows", "cygwin": "windows", "macos": "darwin"}.get(system, system)
        if os_.startswith("linux"):
            os_ = "linux"
        machine = _pyplatform.machine().lower()
        arch, variant = _MACHINES.get(machine, (machine or "unknown", ""))
        return cls(os_, arch, variant).normalized()

    # --- output -------------------------------------------------------------

    def to_json(self) -> dict[str, object]:
        """The OCI platform object, omitting empty optional fields."""
        out: dict[str, object] = {"architecture": self.architecture, "os": self.os}
        if self.os_version:
            out["os.version"] = self.os_version
        if self.os_features:
            out["os.features"] = list(self.os_features)
        if self.variant:
            out["variant"] = self.variant
        return out

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        if self.variant:
            text += f"/{self.variant}"
        if self.os_version:
            text += f":{self.os_version}"
        return text

    # --- comparison ---------------------------------------------------------

    def normalized(self) -> Platform:
        """The canonical spelling of the same platform.

        Lowercases; ``aarch64`` -> ``arm64`` with default variant ``v8``;
        ``x86_64`` -> ``amd64`` (variant ``v1`` dropped); ``armhf`` ->
        ``arm/v7``; ``armel`` -> ``arm/v6``; ``arm`` defaults to ``v7`` and bare
        digit variants gain a ``v``; ``i386`` -> ``386``; ``macos`` -> ``darwin``.
        """
        os_ = self.os.lower()
        if os_ == "macos":
            os_ = "darwin"
        arch = self.architecture.lower()
        variant = self.variant.lower()
        if arch in ("i386", "386"):
            arch = "386"
        elif arch in ("x86_64", "x86-64", "amd64"):
            arch = "amd64"
            if variant == "v1":
                variant = ""
        elif arch in ("aarch64", "arm64"):
            arch = "arm64"
            if variant in ("", "8", "v8"):
                variant = "v8"
        elif arch == "armhf":
            arch, variant = "arm", "v7"
        elif arch == "armel":
            arch, variant = "arm", "v6"
        elif arch == "arm":
            if variant == "":
                variant = "v7"
            elif variant in ("5", "6", "7", "8"):
                variant = "v" + variant
        return Platform(os_, arch, variant, self.os_version, self.os_features)

    def matches(self, other: Platform) -> bool:
        """Whether ``other`` satisfies this (wanted) platform.

        os, architecture and variant must be equal after `normalized`;
        ``os.version`` is compared only when both sides set it, so an empty
        one (the usual case off Windows) matches any. ``os.features`` are
        not compared.
        """
        a, b = self.normalized(), other.normalized()
        if (a.os, a.architecture, a.variant) != (b.os, b.architecture, b.variant):
            return False
        return not (a.os_version and b.os_version and a.os_version != b.os_version)


def _optional_str(obj: dict[str, object], key: str) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise PlatformError(f"platform.{key} must be a string, got {_json_kind(value)}")
    return value


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "an empty string" if not value else "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
