"""The exception tree, retry classification and the drawn tree in the docstring."""

from __future__ import annotations

import re

import pytest

from asyncreg import errors
from asyncreg.errors import (
    ArchiveError,
    AsyncregError,
    AuthError,
    ConfigError,
    CopyError,
    DigestFormatError,
    DigestMismatchError,
    HostilePathError,
    InputError,
    IntegrityError,
    LoopError,
    ManifestError,
    NotFoundError,
    PlatformError,
    RateLimitError,
    ReferenceError_,
    RegistryError,
    RegistryErrorDetail,
    SizeMismatchError,
    TransportError,
    TransportTimeout,
    UnsupportedManifestError,
)


def _exception_classes() -> dict[str, type[BaseException]]:
    return {
        name: obj
        for name, obj in vars(errors).items()
        if isinstance(obj, type)
        and issubclass(obj, BaseException)
        and obj.__module__ == errors.__name__
    }


# --- the tree ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (InputError, ValueError),
        (TransportError, OSError),
        (TransportTimeout, TimeoutError),
        (TransportTimeout, OSError),
    ],
)
def test_builtin_bases(cls: type[BaseException], builtin: type[BaseException]) -> None:
    assert issubclass(cls, builtin)


@pytest.mark.parametrize("name", sorted(_exception_classes()))
def test_everything_is_an_asyncreg_error(name: str) -> None:
    assert issubclass(_exception_classes()[name], AsyncregError)


@pytest.mark.parametrize(
    ("cls", "parent"),
    [
        (ReferenceError_, InputError),
        (DigestFormatError, InputError),
        (PlatformError, InputError),
        (ManifestError, InputError),
        (UnsupportedManifestError, ManifestError),
        (ArchiveError, InputError),
        (ConfigError, InputError),
        (DigestMismatchError, IntegrityError),
        (SizeMismatchError, IntegrityError),
        (HostilePathError, IntegrityError),
        (AuthError, RegistryError),
        (NotFoundError, RegistryError),
        (RateLimitError, RegistryError),
    ],
)
def test_subclasses(cls: type[BaseException], parent: type[BaseException]) -> None:
    assert issubclass(cls, parent)


@pytest.mark.parametrize(
    "cls", [IntegrityError, RegistryError, CopyError, LoopError], ids=lambda c: c.__name__
)
def test_not_value_or_os_errors(cls: type[BaseException]) -> None:
    assert not issubclass(cls, ValueError | OSError)


def test_integrity_error_is_not_input_error() -> None:
    # Bad bytes must not be caught by code that handles bad arguments.
    assert not issubclass(DigestMismatchError, ValueError)


def test_every_class_is_exported() -> None:
    assert set(_exception_classes()) <= set(errors.__all__)


# --- the drawn tree in the module docstring ------------------------------------------

_LINE = re.compile(r"(?P<prefix>[ |+-]*)(?P<name>[A-Za-z_]\w*)(?:\s+\((?P<extra>[^)]*)\))?")


def _drawn_tree() -> dict[str, tuple[str | None, list[str]]]:
    """Name -> (drawn parent, builtins drawn in parentheses), read from the docstring."""
    doc = errors.__doc__
    assert doc is not None
    lines = doc.split("The tree::", 1)[1].splitlines()
    while lines and not lines[0].strip():
        lines.pop(0)
    block = []
    for line in lines:
        if not line.strip():
            break
        block.append(line)
    assert block, "no tree drawn after 'The tree::'"
    out: dict[str, tuple[str | None, list[str]]] = {}
    stack: list[tuple[int, str]] = []  # (column, name)
    for line in block:
        m = _LINE.match(line)
        assert m is not None, line
        column = m.start("name")
        name = m.group("name")
        while stack and stack[-1][0] >= column:
            stack.pop()
        parent = stack[-1][1] if stack else None
        extras = [e.strip() for e in (m.group("extra") or "").split(",") if e.strip()]
        assert name not in out, f"{name} drawn twice"
        out[name] = (parent, extras)
        stack.append((column, name))
    return out


def test_docstring_draws_every_exception_class() -> None:
    assert set(_drawn_tree()) == set(_exception_classes())


def test_docstring_tree_matches_the_classes() -> None:
    classes = _exception_classes()
    tree = _drawn_tree()
    roots = [name for name, (parent, _) in tree.items() if parent is None]
    assert roots == ["AsyncregError"]
    for name, (parent, extras) in tree.items():
        cls = classes[name]
        if parent is not None:
            assert classes[parent] in cls.__bases__, f"{name} is drawn under {parent}"
        for extra in extras:
            assert extra in {b.__name__ for b in cls.__bases__}, f"{name} drawn with ({extra})"


def test_docstring_parser_sees_nesting() -> None:
    tree = _drawn_tree()
    assert tree["UnsupportedManifestError"][0] == "ManifestError"
    assert tree["InputError"] == ("AsyncregError", ["ValueError"])
    assert tree["TransportTimeout"] == ("TransportError", ["TimeoutError"])


# --- registry answers --------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        (0, False),
        (400, False),
        (401, False),
        (403, False),
        (404, False),
        (405, False),
        (408, True),
        (409, False),
        (413, False),
        (416, False),
        (429, True),
        (500, True),
        (501, False),
        (502, True),
        (503, True),
        (504, True),
        (507, True),
    ],
)
def test_registry_error_retryable(status: int, retryable: bool) -> None:
    assert RegistryError("x", status=status).retryable is retryable


def test_subclass_retryable() -> None:
    assert AuthError("denied", status=401).retryable is False
    assert NotFoundError("gone", status=404).retryable is False
    limited = RateLimitError("slow down", retry_after=2.5)
    assert limited.status == 429
    assert limited.retryable is True
    assert limited.retry_after == 2.5


def test_transport_errors_are_retryable() -> None:
    assert TransportError("reset").retryable is True
    assert TransportTimeout("stalled").retryable is True


def test_codes() -> None:
    details = [
        RegistryErrorDetail("MANIFEST_UNKNOWN", "manifest unknown"),
        RegistryErrorDetail("NAME_UNKNOWN", detail={"name": "x"}),
    ]
    err = RegistryError("no", status=404, errors=details, method="GET", url="http://r/v2/")
    assert err.codes == ("MANIFEST_UNKNOWN", "NAME_UNKNOWN")
    details.clear()  # the error keeps its own copy
    assert err.codes == ("MANIFEST_UNKNOWN", "NAME_UNKNOWN")
    assert (err.method, err.url, str(err)) == ("GET", "http://r/v2/", "no")
    assert RegistryError("no").codes == ()


def test_mismatch_errors_carry_expected_and_actual() -> None:
    digest = DigestMismatchError("bad", expected="sha256:a", actual="sha256:b")
    assert (digest.expected, digest.actual) == ("sha256:a", "sha256:b")
    size = SizeMismatchError("short", expected=10, actual=3)
    assert (size.expected, size.actual) == (10, 3)


def test_copy_error_keeps_causes() -> None:
    causes = [NotFoundError("a"), TransportError("b")]
    err = CopyError("copy failed", causes)
    assert err.errors == tuple(causes)
    assert str(err) == "copy failed"
    assert CopyError("x").errors == ()
