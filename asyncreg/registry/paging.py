"""Paginated string lists: tag lists and the catalog, following ``Link`` headers.

Both answer ``{"<key>": [...]}`` a page at a time with ``Link: <next>;
rel="next"`` (distribution spec, "Listing Tags" and the catalog extension).
A registry that loops (a page linking to one already read) or never ends is
cut off with a `RegistryError` instead of being followed forever.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from ..auth.scope import Scope
from ..errors import RegistryError
from .http import Transport, read_limited
from .link import next_link

__all__ = ["MAX_ITEMS", "MAX_PAGES", "paged_list"]

MAX_PAGES = 10_000
MAX_ITEMS = 1_000_000
_PAGE_LIMIT = 64 * 1024 * 1024


async def paged_list(
    transport: Transport,
    host: str,
    path: str,
    key: str,
    scopes: Sequence[Scope],
    what: str,
) -> list[str]:
    """Every string of ``key`` across all pages starting at ``path``."""
    base = transport.base_url(host)
    url: str | None = base + path
    seen: set[str] = set()
    out: list[str] = []
    while url is not None:
        if url in seen:
            raise RegistryError(f"{what}: pagination loops at {url}")
        seen.add(url)
        if len(seen) > MAX_PAGES:
            raise RegistryError(f"{what}: more than {MAX_PAGES} pages")
        resp = await transport.request("GET", host, url, scopes=scopes, what=what)
        async with resp:
            body = await read_limited(resp, _PAGE_LIMIT, what)
            links = resp.headers.getall("Link", [])
        out.extend(_items(body, key, what))
        if len(out) > MAX_ITEMS:
            raise RegistryError(f"{what}: more than {MAX_ITEMS} entries")
        url = next_link(links, url)
    return out


def _items(body: bytes, key: str, what: str) -> list[str]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RegistryError(f"{what}: answer is not JSON") from exc
    items = doc.get(key) if isinstance(doc, dict) else None
    if items is None:
        return []
    if not isinstance(items, list) or not all(isinstance(t, str) for t in items):
        raise RegistryError(f"{what}: malformed {key!r} field")
    return list(items)
