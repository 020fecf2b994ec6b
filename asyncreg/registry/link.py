"""The ``Link`` header of paginated tag lists and catalogs (RFC 8288), pure.

Distribution answers a page with ``Link: </v2/name/tags/list?n=10&last=x>;
rel="next"``. Only ``rel="next"`` matters to us; the target must stay on the
registry's own origin, so a relative reference or a same-origin absolute URL
is accepted and anything else is refused.
"""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit

from ..errors import RegistryError

__all__ = ["next_link"]

# RFC 8288: link-value = "<" URI-Reference ">" *( OWS ";" OWS link-param ), where
# link-param = token [ "=" ( token / quoted-string ) ]; a quoted string may hold "," and ";".
_TOKEN = r"[A-Za-z0-9!#$%&'*+\-.^_`|~]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_PARAM = re.compile(rf'\s*;\s*({_TOKEN})(?:\s*=\s*(?:"((?:[^"\\]|\\.)*)"|({_TOKEN})))?')
_LINK = re.compile(rf"\s*<([^>]*)>((?:\s*;\s*{_TOKEN}(?:\s*=\s*(?:{_QUOTED}|{_TOKEN}))?)*)")


def next_link(values: list[str], base_url: str) -> str | None:
    """The absolute URL of the ``rel="next"`` link, or None when this is the last page.

    Raises `RegistryError` for a malformed header or a link to another origin.
    """
    for value in values:
        pos = 0
        while pos < len(value):
            m = _LINK.match(value, pos)
            if m is None:
                raise RegistryError(f"malformed Link header from registry: {value[:200]!r}")
            target, params = m.group(1), m.group(2)
            pos = m.end()
            rest = value[pos:].lstrip()
            if rest and not rest.startswith(","):
                raise RegistryError(f"malformed Link header from registry: {value[:200]!r}")
            rels = {
                (p.group(2) if p.group(2) is not None else p.group(3) or "").lower()
                for p in _PARAM.finditer(params)
                if p.group(1).lower() == "rel"
            }
            if any("next" in r.split() for r in rels):
                url: str = urljoin(base_url, target)
                a, b = urlsplit(url), urlsplit(base_url)
                if (a.scheme, a.netloc) != (b.scheme, b.netloc):
                    raise RegistryError(f"Link header points to another origin: {url[:200]!r}")
                return url
            pos = len(value) - len(rest) + 1 if rest else len(value)
    return None
