"""The browser pages a node serves, and the JavaScript SDK they use.

``/web/`` holds the pages (join, student, teacher, exam, proctor) with their
scripts and style (server/static), ``/sdk/`` the ES modules of client_sdk
(``lophoc.js``, ``lophoc_media.js``). Each page file holds only what is its
own; :func:`render` puts it in the shell every page shares (``_shell.html``:
the head, the header with the language switch, the connection banner and
the notice line), once, when the module loads. Every
response carries a Content-Security-Policy that allows scripts only from
the node itself and no inline script at all, so a name or a question text
that slipped past escaping still cannot run. Pages take their token from
the URL fragment, which browsers never send to a server, and keep it in
the tab's session storage.
"""

from __future__ import annotations

import html
import os
import re
import string
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
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
    (b"permissions-policy", b"microphone=(self), camera=(self), geolocation=()"),
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


@dataclass(frozen=True, slots=True)
class PageSpec:
    """What a page puts in the shared shell."""

    #: The page's module in server/static.
    script: str
    #: The ``<body>`` class the style sheet keys on.
    kind: str
    #: The string (lang_vi.js) the header shows until the page names itself.
    heading: str


#: The pages by file name. The join page is also ``/web/``.
PAGES: dict[str, PageSpec] = {
    "index.html": PageSpec("join.js", "join", "app.title"),
    "student.html": PageSpec("student.js", "student", "app.title"),
    "teacher.html": PageSpec("teacher.js", "teacher", "app.title"),
    "exam.html": PageSpec("exam.js", "exam", "proctor.heading"),
    "proctor.html": PageSpec("proctor.js", "proctor", "proctor.heading"),
}


def vietnamese(key: str) -> str:
    """The Vietnamese string ``key`` of lang_vi.js, what a page shows first."""
    table = (STATIC / "lang_vi.js").read_text(encoding="utf-8")
    found = re.search(rf'^\s+"{re.escape(key)}": "([^"]*)",?$', table, re.MULTILINE)
    if found is None:
        raise KeyError(f"lang_vi.js has no string {key!r}")
    return found.group(1)


def render(name: str) -> str:
    """Page ``name`` in the shell: its own file, split at ``<main``.

    What the page file holds before its ``<main`` element goes into the
    header, before the language switch (the teacher's microphone and camera
    buttons); the rest follows the connection banner.
    """
    spec = PAGES[name]
    own = (STATIC / name).read_text(encoding="utf-8")
    tools, main = own.split("<main", 1)
    shell = string.Template((STATIC / "_shell.html").read_text(encoding="utf-8"))
    return shell.substitute(
        script=spec.script,
        kind=spec.kind,
        heading_key=spec.heading,
        heading=html.escape(vietnamese(spec.heading)),
        tools=tools.strip(),
        main="<main" + main.rstrip(),
    )


class PageFiles(StaticFiles):
    """The scripts and the style of the pages; pages come only rendered."""

    def lookup_path(self, path: str) -> tuple[str, os.stat_result | None]:
        if path.endswith(".html"):
            return "", None
        return super().lookup_path(path)


def page_route(path: str, body: str) -> Route:
    """A route answering ``GET path`` with the rendered page ``body``."""
    headers = {name.decode(): value.decode() for name, value in SECURITY_HEADERS}

    async def endpoint(request: Request) -> Response:
        return HTMLResponse(body, headers=headers)

    return Route(path, endpoint, methods=["GET", "HEAD"])


class SdkFiles(StaticFiles):
    """The ES modules of client_sdk, and nothing else of that folder."""

    def lookup_path(self, path: str) -> tuple[str, os.stat_result | None]:
        if not path.endswith(".js") or os.sep in path:
            return "", None
        return super().lookup_path(path)


async def to_pages(request: Request) -> Response:
    """``/web`` without its slash: the join page."""
    return RedirectResponse("/web/", status_code=308)


RENDERED = {name: render(name) for name in PAGES}

routes: list[BaseRoute] = [
    Route("/web", to_pages),
    page_route("/web/", RENDERED["index.html"]),
    *(page_route(f"/web/{name}", body) for name, body in RENDERED.items()),
    Mount("/web", app=SecureFiles(PageFiles(directory=STATIC))),
    Mount("/sdk", app=SecureFiles(SdkFiles(directory=SDK))),
]
