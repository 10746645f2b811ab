"""What the pages' security rests on: headers, no inline script, a closed /sdk/."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.async_api import expect

from server.web import RENDERED, STATIC

from .conftest import Pages, ServerProcess

PAGES = ["/web/", *(f"/web/{name}" for name in RENDERED)]


@pytest.mark.parametrize("path", [*PAGES, "/web/page.js", "/sdk/lophoc.js"])
def test_pages_and_scripts_carry_a_strict_content_security_policy(
    server: ServerProcess, path: str
) -> None:
    """Every page and script comes with a CSP that allows no inline script."""
    response = httpx.get(server.http_url + path)
    assert response.status_code == 200
    policy = response.headers["content-security-policy"]
    directives = dict(
        part.strip().split(" ", 1) for part in policy.split(";") if " " in part
    )
    assert directives["script-src"] == "'self'"
    assert directives["default-src"] == "'none'"
    assert directives["frame-ancestors"] == "'none'"
    assert response.headers["x-content-type-options"] == "nosniff"


def test_no_page_holds_an_inline_script_or_handler() -> None:
    """Scripts are files: no <script> body and no on...= attribute in any page."""
    for name, html in RENDERED.items():
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), name
        assert not re.search(r"\son[a-z]+\s*=", html), name
        assert "style=" not in html, name
        assert "$" not in html, f"{name}: a placeholder of the shell is left"


@pytest.mark.parametrize("path", ["/web/_shell.html", "/web/student.html/x"])
def test_page_files_are_served_only_in_their_shell(
    server: ServerProcess, path: str
) -> None:
    """The shell and the pages' own files are never sent as they lie on disk."""
    assert httpx.get(server.http_url + path).status_code == 404


@pytest.mark.parametrize(
    "path", ["/sdk/codec.py", "/sdk/protocol/core.py", "/sdk/%2e%2e/server/app.py"]
)
def test_sdk_serves_its_modules_and_nothing_else(
    server: ServerProcess, path: str
) -> None:
    """Only the .js modules of client_sdk are served, never its Python source."""
    assert httpx.get(server.http_url + path).status_code == 404


async def test_csp_blocks_an_injected_inline_script(pages: Pages) -> None:
    """Script injected into a page does not run: the policy refuses it."""
    page = await pages.open("/web/")
    await page.evaluate(
        """() => {
            const script = document.createElement("script");
            script.textContent = "document.body.dataset.pwned = 'yes'";
            document.body.append(script);
        }"""
    )
    await expect(page.locator("body")).not_to_have_attribute("data-pwned", "yes")
    assert await page.evaluate("document.body.dataset.pwned") is None


async def test_websocket_refuses_a_page_of_another_origin(
    server: ServerProcess, pages: Pages, lesson: dict[str, object]
) -> None:
    """A page of another origin is closed with 4006; the node's own page connects."""
    host = lesson["host"]
    assert isinstance(host, dict)
    script = """async ([url, token, room]) => {
        const socket = new WebSocket(
            `${url}?room=${room}&token=${token}`, ["lophoc.v1.json"]);
        return await new Promise((resolve) => {
            setTimeout(() => resolve("no answer"), 5000);
            socket.onmessage = (m) => {
                resolve(JSON.parse(m.data).type);
                socket.close();
            };
            socket.onclose = (e) => resolve(e.code);
        });
    }"""
    arguments = [f"ws://127.0.0.1:{server.port}/ws", host["token"], lesson["id"]]
    own = await pages.open("/web/")
    assert await own.evaluate(script, arguments) == "hello"

    # Another origin on this machine (a browser keeps public sites from
    # loopback addresses by itself), with no policy to stop the attempt.
    foreign = await pages.open("/web/")
    await foreign.route(
        "http://localhost:9/**",
        lambda route: route.fulfill(content_type="text/html", body="<p>other</p>"),
    )
    await foreign.goto("http://localhost:9/")
    assert await foreign.evaluate(script, arguments) == 4006


def test_both_languages_have_every_string() -> None:
    """The English table has exactly the keys of the Vietnamese one."""
    keys = {}
    for name in ("lang_vi.js", "lang_en.js"):
        text = (STATIC / name).read_text()
        keys[name] = set(re.findall(r'^\s+"([\w.-]+)":', text, re.MULTILINE))
    assert len(keys["lang_vi.js"]) > 100
    assert keys["lang_vi.js"] == keys["lang_en.js"]


def test_every_string_a_page_names_is_in_the_tables() -> None:
    """No page shows a bare key: every t("...") and data-i18n key exists."""
    known = set(
        re.findall(r'^\s+"([\w.-]+)":', (STATIC / "lang_vi.js").read_text(), re.M)
    )
    used: set[str] = set()
    for html in RENDERED.values():
        used |= set(re.findall(r'data-i18n="([\w.-]+)"', html))
    for path in STATIC.glob("*.js"):
        used |= set(re.findall(r'\bt\("([\w.-]+)"', path.read_text()))
        used |= set(re.findall(r'\bsay\([^,()]+, "([\w.-]+)"', path.read_text()))
        used |= set(re.findall(r'i18n: "([\w.-]+)"', path.read_text()))
    assert used - known == set()
