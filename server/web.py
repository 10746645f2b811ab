"""The browser pages a node serves, and the JavaScript SDK they use.

``/web/`` holds the pages (server/static: join, student, teacher), ``/sdk/``
the ES modules of client_sdk (``lophoc.js``, ``lophoc_media.js``). Every
response carries a Content-Security-Policy that allows scripts only from
the node itself and no inline script at all, so a name or a question text
that slipped past escaping still cannot run. Pages take their token from
the URL fragment, which browsers never send to a server, and keep it in
the tab's session storage.
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATIC = Path(__file__).resolve().parent / "static"
SDK = Path(__file__).resolve().parents[1] / "client_sdk"

#: Scripts, styles and connections only to this node; media also from
#: ``blob:``, where recordings fetched with a token are played from, and
#: from ``https:``, where an exam's listening items may live (media cannot
#: run script).
#: ``connect-src 'self'`` covers the node's own ``ws:``/``wss:`` address
#: (CSP level 3, section 6.7.2.5).
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "media-src 'self' blob: https:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    # Page URLs carry no token, but a fragment-less referrer still names the
    # lesson page; nothing outside the node needs it.
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"microphone=(self), camera=(), geolocation=()"),
    # A page and its script must change together after an upgrade.
    (b"cache-control", b"no-cache"),
)


class SecureFiles:
    """Static files with the security headers on every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in SECURITY_HEADERS}
                headers = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name.lower() not in names
                ]
                message["headers"] = [*headers, *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class SdkFiles(StaticFiles):
    """The ES modules of client_sdk, and nothing else of that folder."""

    def lookup_path(self, path: str) -> tuple[str, os.stat_result | None]:
        if not path.endswith(".js") or os.sep in path:
            return "", None
        return super().lookup_path(path)


async def to_pages(request: Request) -> Response:
    """``/web`` without its slash: the join page."""
    return RedirectResponse("/web/", status_code=308)


routes: list[BaseRoute] = [
    Route("/web", to_pages),
    Mount("/web", app=SecureFiles(StaticFiles(directory=STATIC, html=True))),
    Mount("/sdk", app=SecureFiles(SdkFiles(directory=SDK))),
]
