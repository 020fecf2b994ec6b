"""Image references: where an image lives, in a registry or in an OCI layout.

Every job starts from strings a person typed, so the grammar has to agree with
what ``docker pull`` accepts, or the same words would name different images in
two tools. `Reference` follows the distribution project's reference grammar
and Docker's normalisation: a first component is a registry host only when it
looks like one ("." or ":" in it, or ``localhost``); otherwise the name is on
Docker Hub, and a one-component Hub name lives under ``library/``. Parsing
normalises (``alpine`` -> ``docker.io/library/alpine``) so that two spellings
of one image compare equal, and `str` gives the canonical form back, which
parses to the same value.

The default tag is *not* filled in: a reference without a tag or digest keeps
``tag=None``, so callers can tell "latest by default" from "latest by
request"; only `Reference.reference` (the path segment sent to the registry)
falls back to ``latest``.

`LayoutReference` names an image in an OCI layout directory,
``ocidir://PATH[:TAG][@DIGEST]``, split the way regclient splits it, and
`parse_location` picks one of the two. Every refusal is a `ReferenceError_`
(an `InputError`, so also a `ValueError`) that says what is wrong. Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from dataclasses import dataclass
from typing import Final

from .digest import Digest
from .errors import DigestFormatError, ReferenceError_

__all__ = [
    "DOCKER_HUB",
    "DOCKER_HUB_API",
    "LAYOUT_SCHEME",
    "NAME_MAX",
    "LayoutReference",
    "Reference",
    "parse_location",
]

DOCKER_HUB: Final = "docker.io"  # how Docker Hub is spelled in a canonical reference
DOCKER_HUB_API: Final = "registry-1.docker.io"  # where Docker Hub's registry API answers
_HUB_ALIASES: Final = frozenset({DOCKER_HUB, "index.docker.io", DOCKER_HUB_API})
NAME_MAX: Final = 255  # NameTotalLengthMax: registry + "/" + repository
LAYOUT_SCHEME: Final = "ocidir://"

# Grammar (distribution reference.go); Go's \w is ASCII, so spelled out here:
#   tag              := /[\w][\w.-]{0,127}/
#   path-component   := alpha-numeric [separator alpha-numeric]*
#   alpha-numeric    := /[a-z0-9]+/      separator := /[_.]|__|[-]+/
#   domain-component := /([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])/
#   host             := domain-name | IPv4address | "[" IPv6address "]"
#   domain           := host [":" port-number]
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_DOMAIN_COMPONENT = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")
_IPV6_CHARS = re.compile(r"[0-9A-Fa-f:]+")
_PORT = re.compile(r"[0-9]{1,5}")  # bounded, so int() never sees a huge string
_IMAGE_ID = re.compile(r"[a-f0-9]{64}")  # docker refuses these as names
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_SCHEMELESS = frozenset({"docker", "registry", "http", "https"})
_LAYOUT_LIKE = frozenset({"ocidir", "oci", "oci-layout", "oci-dir", "dir"})


def _show(text: str) -> str:
    """``repr`` of ``text``, cut short so a hostile input cannot flood a log."""
    return repr(text if len(text) <= 100 else text[:100] + "...")


def _is_host_like(component: str) -> bool:
    # Docker's splitDockerDomain test (minus its uppercase rule, see Reference).
    return (
        "." in component
        or ":" in component
        or component.startswith("[")
        or component.lower() == "localhost"
    )


def _normalise_registry(text: str) -> str:
    """Validate ``host[:port]`` and return it lowercased, aliases folded, port canonical."""
    port: str | None
    if text.startswith("["):
        inner, bracket, rest = text[1:].partition("]")
        try:  # the grammar's character set first: no zone ("%eth0"), no dotted IPv4 tail
            if not bracket or not _IPV6_CHARS.fullmatch(inner):
                raise ValueError(inner)
            host = f"[{ipaddress.IPv6Address(inner).compressed}]"
        except ValueError as exc:
            raise ReferenceError_(f"invalid IPv6 registry address {_show(text)}") from exc
        if rest and not rest.startswith(":"):
            raise ReferenceError_(f"invalid registry {_show(text)}: expected ':PORT' after ']'")
        port = rest[1:] if rest else None
    else:
        host, sep, port_text = text.partition(":")
        port = port_text if sep else None
        if ":" in port_text:
            raise ReferenceError_(
                f"invalid registry {_show(text)}: too many ':' (write IPv6 addresses in [])"
            )
        for component in host.split("."):
            if not component:
                raise ReferenceError_(f"invalid registry {_show(text)}: empty host component")
            if not _DOMAIN_COMPONENT.fullmatch(component):
                raise ReferenceError_(
                    f"invalid registry host {_show(host)}: components are letters, digits"
                    " and inner '-'"
                )
        host = host.lower()
        if port is None and host in _HUB_ALIASES:
            host = DOCKER_HUB
    if port is None:
        return host
    if not _PORT.fullmatch(port) or not 0 < int(port) <= 65535:
        raise ReferenceError_(
            f"invalid port {_show(port)} in registry {_show(text)}: expected 1 to 65535"
        )
    return f"{host}:{int(port)}"


def _check_repository(repository: str) -> None:
    if not repository:
        raise ReferenceError_("empty repository name")
    if any("A" <= c <= "Z" for c in repository):
        raise ReferenceError_(f"repository name must be lowercase: {_show(repository)}")
    for component in repository.split("/"):
        if not component:
            raise ReferenceError_(f"empty path component in repository {_show(repository)}")
        if not _PATH_COMPONENT.fullmatch(component):
            raise ReferenceError_(
                f"invalid path component {_show(component)} in repository {_show(repository)}:"
                " expected lowercase letters and digits separated by '.', '_', '__' or '-'"
            )


def _check_tag_and_digest(tag: str | None, digest: Digest | None) -> None:
    if tag is not None and not _TAG.fullmatch(tag):
        why = "empty tag" if not tag else f"invalid tag {_show(tag)}"
        raise ReferenceError_(
            f"{why}: a tag is 1 to 128 letters, digits, '_', '.' or '-', not starting"
            " with '.' or '-'"
        )
    if digest is not None and not isinstance(digest, Digest):
        raise ReferenceError_(f"digest must be a Digest, got {type(digest).__name__}")


def _parse_digest(text: str | Digest) -> Digest:
    try:
        return Digest.parse(text)
    except DigestFormatError as exc:
        raise ReferenceError_(f"invalid digest {_show(str(text))}: {exc}") from exc


def _suffix(tag: str | None, digest: Digest | None) -> str:
    return (f":{tag}" if tag is not None else "") + (f"@{digest}" if digest is not None else "")


def _manifest_reference(tag: str | None, digest: Digest | None) -> str:
    # A digest pins more precisely than a tag; with neither, registries mean "latest".
    if digest is not None:
        return str(digest)
    return tag if tag is not None else "latest"


def _refuse_scheme(text: str) -> None:
    """Turn ``docker://x`` and friends into a message that says what to type."""
    match = _SCHEME.match(text)
    if match is None:
        return
    scheme, rest = match.group(1).lower(), text[match.end() :]
    if scheme in _SCHEMELESS and rest:
        hint = f"registry references take no scheme: drop it and write {_show(rest)}"
    elif scheme in _LAYOUT_LIKE and rest:
        hint = f"for an OCI layout directory write {_show(LAYOUT_SCHEME + rest)}"
    else:
        hint = f"use {LAYOUT_SCHEME}PATH for an OCI layout, or a plain registry reference"
    raise ReferenceError_(f"unsupported scheme {scheme + '://'!r} in {_show(text)}: {hint}")


@dataclass(frozen=True, slots=True)
class Reference:
    """An image in a registry: ``registry/repository[:tag][@digest]``.

    Constructing one directly normalises and validates like `parse` does. A
    registry must look like a host, or `str` would not parse back to it.
    Unlike Docker, an uppercase first component (``Foo/bar``) is read as a
    Docker Hub repository and refused as not lowercase, not taken as a host.
    """

    registry: str
    repository: str
    tag: str | None = None
    digest: Digest | None = None

    def __post_init__(self) -> None:
        registry = _normalise_registry(self.registry)
        if not _is_host_like(registry):
            raise ReferenceError_(
                f"registry {_show(registry)} must contain '.' or ':' or be 'localhost',"
                " or it would read as part of a Docker Hub repository"
            )
        repository = self.repository
        if registry == DOCKER_HUB and repository and "/" not in repository:
            repository = f"library/{repository}"  # Docker Hub's official images
        _check_repository(repository)
        if len(registry) + 1 + len(repository) > NAME_MAX:
            raise ReferenceError_(
                f"repository name must not be more than {NAME_MAX} characters"
                f" (got {len(registry) + 1 + len(repository)})"
            )
        _check_tag_and_digest(self.tag, self.digest)
        object.__setattr__(self, "registry", registry)
        object.__setattr__(self, "repository", repository)

    @classmethod
    def parse(cls, text: str) -> Reference:
        """Parse ``[registry/]repository[:tag][@digest]`` with Docker's normalisation."""
        if not isinstance(text, str):
            raise ReferenceError_(f"reference must be a string, got {type(text).__name__}")
        if not text:
            raise ReferenceError_("empty image reference")
        if any(c.isspace() for c in text):
            raise ReferenceError_(f"invalid image reference {_show(text)}: contains whitespace")
        _refuse_scheme(text)
        if _IMAGE_ID.fullmatch(text):
            raise ReferenceError_(
                f"invalid image reference {_show(text)}: a 64-character hex string is an"
                " image ID, not a repository name"
            )
        try:
            name, at, digest_text = text.partition("@")
            digest = _parse_digest(digest_text) if at else None
            # The tag is after the last ":" that follows the last "/": a ":"
            # before a "/" can only be a registry port.
            colon, slash = name.rfind(":"), name.rfind("/")
            tag = name[colon + 1 :] if colon > slash else None
            name = name[:colon] if colon > slash else name
            first, sep, rest = name.partition("/")
            if sep and _is_host_like(first):
                return cls(first, rest, tag, digest)
            return cls(DOCKER_HUB, name, tag, digest)
        except ReferenceError_ as exc:
            raise ReferenceError_(f"invalid image reference {_show(text)}: {exc}") from exc

    def __str__(self) -> str:
        return f"{self.registry}/{self.repository}{_suffix(self.tag, self.digest)}"

    def familiar(self) -> str:
        """The short form Docker prints (``alpine:3``, ``user/app``), for messages."""
        name = f"{self.registry}/{self.repository}"
        # Keep "docker.io/" when the first component would read as a host.
        if self.registry == DOCKER_HUB and not _is_host_like(self.repository.split("/")[0]):
            name = self.repository
            if name.startswith("library/") and name.count("/") == 1:
                name = name[len("library/") :]
        return name + _suffix(self.tag, self.digest)

    @property
    def api_host(self) -> str:
        """The ``host[:port]`` to connect to (Docker Hub's API has its own host)."""
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def is_loopback(self) -> bool:
        """True for ``localhost``, 127.0.0.0/8 and ``[::1]``, on any port."""
        if self.registry.startswith("["):
            return self.registry.startswith("[::1]")  # normalised, so spelled this way
        host = self.registry.partition(":")[0]
        if host == "localhost":
            return True
        try:
            return ipaddress.IPv4Address(host).is_loopback
        except ValueError:
            return False

    def with_tag(self, tag: str) -> Reference:
        """This repository at ``tag`` (validated); any digest is dropped."""
        return dataclasses.replace(self, tag=tag, digest=None)

    def with_digest(self, digest: Digest | str) -> Reference:
        """This repository at ``digest``; the result has ``tag=None``."""
        return dataclasses.replace(self, tag=None, digest=_parse_digest(digest))

    @property
    def reference(self) -> str:
        """The ``<reference>`` of ``/v2/<name>/manifests/<reference>``."""
        return _manifest_reference(self.tag, self.digest)

    def same_repository(self, other: object) -> bool:
        """True if ``other`` is a `Reference` to the same registry and repository."""
        return (
            isinstance(other, Reference)
            and other.registry == self.registry
            and other.repository == self.repository
        )

    def same_registry(self, other: object) -> bool:
        """True if ``other`` is a `Reference` on the same registry (host and port)."""
        return isinstance(other, Reference) and other.registry == self.registry


@dataclass(frozen=True, slots=True)
class LayoutReference:
    """An image in an OCI layout directory: ``ocidir://PATH[:TAG][@DIGEST]``.

    As in regclient, the digest follows the last "@" and the tag the last ":"
    when they come after the last "/", so ``ocidir://C:/x:1`` is path
    ``C:/x``, tag ``1``. For `str` to round-trip, the last path segment
    therefore may not contain ":" or "@".
    """

    path: str
    tag: str | None = None
    digest: Digest | None = None

    def __post_init__(self) -> None:
        if not self.path:
            raise ReferenceError_("empty OCI layout path")
        if any(ord(c) < 32 or ord(c) == 127 for c in self.path):
            raise ReferenceError_(f"OCI layout path {_show(self.path)} has control characters")
        last = self.path.rpartition("/")[2]
        if ":" in last or "@" in last:
            raise ReferenceError_(
                f"OCI layout path {_show(self.path)}: the last path segment may not contain"
                " ':' or '@' (they would read as a tag or digest)"
            )
        _check_tag_and_digest(self.tag, self.digest)

    @classmethod
    def parse(cls, text: str) -> LayoutReference:
        """Parse ``ocidir://PATH[:TAG][@DIGEST]``."""
        if not isinstance(text, str) or not text.startswith(LAYOUT_SCHEME):
            raise ReferenceError_(f"OCI layout reference must start with {LAYOUT_SCHEME!r}")
        rest = text[len(LAYOUT_SCHEME) :]
        try:
            slash = rest.rfind("/")
            at = rest.rfind("@")
            digest = _parse_digest(rest[at + 1 :]) if at > slash else None
            rest = rest[:at] if at > slash else rest
            colon = rest.rfind(":")
            tag = rest[colon + 1 :] if colon > slash else None
            return cls(rest[:colon] if colon > slash else rest, tag, digest)
        except ReferenceError_ as exc:
            raise ReferenceError_(f"invalid OCI layout reference {_show(text)}: {exc}") from exc

    def __str__(self) -> str:
        return f"{LAYOUT_SCHEME}{self.path}{_suffix(self.tag, self.digest)}"

    def with_tag(self, tag: str) -> LayoutReference:
        """This layout at ``tag`` (validated); any digest is dropped."""
        return dataclasses.replace(self, tag=tag, digest=None)

    def with_digest(self, digest: Digest | str) -> LayoutReference:
        """This layout at ``digest``; the result has ``tag=None``."""
        return dataclasses.replace(self, tag=None, digest=_parse_digest(digest))

    @property
    def reference(self) -> str:
        """The digest if set, else the tag, else ``latest``."""
        return _manifest_reference(self.tag, self.digest)


def parse_location(text: str) -> Reference | LayoutReference:
    """Parse where an image lives: ``ocidir://...`` is a layout, anything else a registry."""
    if isinstance(text, str) and text.startswith(LAYOUT_SCHEME):
        return LayoutReference.parse(text)
    return Reference.parse(text)
