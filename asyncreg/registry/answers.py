"""Turn a registry's error answer into asyncreg's typed exceptions, pure.

The distribution spec ("Error Codes") answers failures with a JSON body
``{"errors": [{"code": "...", "message": "...", "detail": ...}]}``. The codes
say more than the status (``MANIFEST_UNKNOWN`` vs ``NAME_UNKNOWN`` are both
404), so they are kept on the exception; the status picks its class.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from ..errors import (
    AuthError,
    NotFoundError,
    RateLimitError,
    RegistryError,
    RegistryErrorDetail,
)
from .retry import parse_retry_after

__all__ = ["error_from_answer", "parse_error_body"]


def parse_error_body(body: bytes) -> tuple[RegistryErrorDetail, ...]:
    """The ``errors[]`` entries of a body; empty when it is not that shape."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ()
    if not isinstance(doc, dict):
        return ()
    entries = doc.get("errors")
    if not isinstance(entries, list):
        return ()
    out = []
    for entry in entries:
        if isinstance(entry, dict) and isinstance(entry.get("code"), str):
            message = entry.get("message")
            out.append(
                RegistryErrorDetail(
                    code=entry["code"],
                    message=message if isinstance(message, str) else "",
                    detail=entry.get("detail"),
                )
            )
    return tuple(out)


def error_from_answer(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    method: str,
    url: str,
    what: str = "",
) -> RegistryError:
    """The exception for a failed answer; ``what`` names the object asked for."""
    details = parse_error_body(body)
    codes = ", ".join(d.code for d in details)
    first = next((d.message for d in details if d.message), "")
    subject = what or url
    message = f"{method} {subject}: registry answered {status}"
    if codes:
        message += f" {codes}"
    if first:
        message += f" ({first})"
    if status in (401, 403):
        hint = " - check credentials for this registry" if status == 401 else " - access denied"
        return AuthError(message + hint, status=status, errors=details, method=method, url=url)
    if status == 404:
        return NotFoundError(message, status=status, errors=details, method=method, url=url)
    retry_after = parse_retry_after(headers.get("Retry-After"))
    if status == 429:
        return RateLimitError(
            message, status=429, errors=details, method=method, url=url, retry_after=retry_after
        )
    return RegistryError(
        message, status=status, errors=details, method=method, url=url, retry_after=retry_after
    )
