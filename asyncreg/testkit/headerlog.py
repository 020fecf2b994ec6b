"""A tiny file server on another loopback origin that records every request's headers.

Registries backed by object storage answer blob GETs with a redirect to a
signed URL on another host (S3, GCS, a CDN). A client following it must not
send the registry's ``Authorization`` header to that other origin (it would
leak the credential and S3 refuses the request) and must keep ``Range`` when
resuming. `HeaderLogServer` plays that other host: it serves files from a
directory (e.g. distribution's storage, with the ``redirect`` middleware
pointed at it) and keeps each request's method, path and headers for the
test to inspect. It listens on 127.0.0.2 by default so that it is a
different origin from the registry on 127.0.0.1 (the whole 127.0.0.0/8 is
loopback on Linux; binding needs no setup).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy

from asyncreg.testkit.proxy import LoopbackServer

__all__ = ["HeaderLogServer", "LoggedRequest"]


@dataclass
class LoggedRequest:
    """One request: ``status`` is filled in when the answer's headers are sent."""

    method: str
    path: str
    query: MultiDictProxy[str]
    headers: CIMultiDictProxy[str]
    status: int | None = None


_RECORD_KEY = web.RequestKey("headerlog_record", LoggedRequest)


def resolve_under(root: Path, url_path: str) -> Path | None:
    """The file ``url_path`` names under ``root``, or None if it escapes or is not a file.

    Any ``..`` segment is refused outright rather than normalised, and the
    resolved path (after symlinks) must still lie under ``root``.
    """
    parts = [p for p in url_path.split("/") if p not in ("", ".")]
    if any(p == ".." or "\\" in p or "\x00" in p for p in parts):
        return None
    base = root.resolve()
    candidate = base.joinpath(*parts).resolve()
    if not candidate.is_relative_to(base) or not candidate.is_file():
        return None
    return candidate


class HeaderLogServer(LoopbackServer):
    """Serves GET/HEAD for files under ``root`` by URL path; logs every request in ``requests``.

    Paths with ``..`` get 403, missing files 404, other methods 405. ``Range``
    and conditional requests work as with any static file server (aiohttp's
    `web.FileResponse`).
    """

    def __init__(self, root: Path, host: str = "127.0.0.2") -> None:
        super().__init__(host)
        self.root = Path(root)
        self.requests: list[LoggedRequest] = []

    def _make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        app.on_response_prepare.append(self._on_prepare)
        return app

    def count(self, method: str | None = None) -> int:
        """How many requests were logged (with ``method``, if given)."""
        return sum(1 for r in self.requests if method is None or r.method == method.upper())

    async def _on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        record = request.get(_RECORD_KEY)
        if record is not None:
            record.status = response.status

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        record = LoggedRequest(
            method=request.method,
            path=request.path,
            query=MultiDictProxy(MultiDict(request.query)),
            headers=CIMultiDictProxy(CIMultiDict(request.headers)),
        )
        self.requests.append(record)
        request[_RECORD_KEY] = record
        if request.method not in ("GET", "HEAD"):
            return web.Response(status=405, headers={"Allow": "GET, HEAD"})
        if ".." in request.path.split("/"):
            return web.Response(status=403, text="'..' is not allowed\n")
        path = resolve_under(self.root, request.path)
        if path is None:
            return web.Response(status=404, text="not found\n")
        return web.FileResponse(path)
