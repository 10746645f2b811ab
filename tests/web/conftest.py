"""A real headless Chromium on the pages of a real ``lophoc serve`` process.

The browser is Debian's ``chromium`` package (``./dev test`` installs it),
driven through Playwright's Python API with ``executable_path``: nothing is
downloaded. Its fake media devices give the pages a microphone and a camera:
a WAV file makes that microphone play a known tone, and a Y4M file makes
that camera show one known colour, which Python SDK peers then recognize on
the other side of the server's relay.

The server, its HTTP API and the SDK clients are the lesson tests' fixtures.
:func:`screenshot` keeps a picture of a page in each language in
build/screenshots (the run's artifacts), or in the folder that
``LOPHOC_SCREENSHOTS`` names: ``LOPHOC_SCREENSHOTS=docs/screenshots``
refreshes the pictures the README shows.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from server import demo
from tests.helpers import write_tone
from tests.lessons.conftest import Api, Crowd, ServerProcess, api, crowd, server

__all__ = ["Api", "Crowd", "ServerProcess", "api", "crowd", "server"]

#: The tone the fake microphone plays, in Hz.
MIC_TONE_HZ = 660.0
#: The colour the fake camera shows, RGB.
CAMERA_COLOUR = (40, 90, 200)
REPO = Path(__file__).resolve().parents[2]
#: Where :func:`screenshot` keeps its pictures (relative to the repository).
SCREENSHOTS = REPO / os.environ.get("LOPHOC_SCREENSHOTS", "build/screenshots")
#: A page's size in CSS pixels: a laptop or projector, and a phone.
DESK = (1100, 900)
PHONE = (390, 844)
#: How long a test waits for something to show on a page, in ms.
SHOW_MS = 10_000

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test here ``browser``."""
    for item in items:
        if "tests/web/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="module")
def tone_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The WAV file the fake microphone plays."""
    return write_tone(tmp_path_factory.mktemp("tone") / "tone.wav", MIC_TONE_HZ)


def write_picture(path: Path, colour: tuple[int, int, int], frames: int = 5) -> Path:
    """A 320x240 Y4M video of one colour, for the fake camera (which loops it)."""
    width, height = 320, 240
    r, g, b = colour
    # BT.601 limited range, what a camera's I420 carries.
    luma = round(16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255)
    cb = round(128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255)
    cr = round(128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255)
    quarter = width * height // 4
    frame = b"FRAME\n" + bytes([luma]) * (width * height)
    frame += bytes([cb]) * quarter + bytes([cr]) * quarter
    header = f"YUV4MPEG2 W{width} H{height} F15:1 Ip A1:1 C420jpeg\n".encode()
    path.write_bytes(header + frame * frames)
    return path


@pytest.fixture(scope="module")
def picture_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Y4M file the fake camera shows."""
    return write_picture(
        tmp_path_factory.mktemp("camera") / "camera.y4m", CAMERA_COLOUR
    )


@contextlib.asynccontextmanager
async def chromium(*args: str) -> AsyncIterator[Browser]:
    """Headless Chromium with fake media devices, and ``args`` besides."""
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (./dev test installs it with apt)")
    async with async_playwright() as driver:
        launched = await driver.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                "--autoplay-policy=no-user-gesture-required",
                *args,
            ],
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def browser(tone_file: Path, picture_file: Path) -> AsyncIterator[Browser]:
    """Headless Chromium with a fake microphone and camera (see the module doc)."""
    async with chromium(
        f"--use-file-for-fake-audio-capture={tone_file}",
        f"--use-file-for-fake-video-capture={picture_file}",
        # Lets a test page of another origin reach the node on loopback, so
        # that the node's own Origin check is what refuses it
        # (test_security.py).
        "--disable-features=LocalNetworkAccessChecks",
    ) as launched:
        yield launched


class Pages:
    """Opens pages, each in its own browser context (its own tab storage)."""

    def __init__(self, browser: Browser, server: ServerProcess) -> None:
        self.browser = browser
        self.server = server
        self.errors: list[str] = []

    async def open(
        self, path: str, *, base: str | None = None, size: tuple[int, int] = DESK
    ) -> Page:
        """A new page at ``path`` of the server (or of ``base``), ``size`` in CSS px."""
        width, height = size
        context = await self.browser.new_context(
            permissions=["microphone", "camera"],
            viewport={"width": width, "height": height},
        )
        page = await context.new_page()
        page.set_default_timeout(SHOW_MS)
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        await page.goto((base or self.server.http_url) + path)
        return page


@pytest.fixture
async def pages(browser: Browser, server: ServerProcess) -> AsyncIterator[Pages]:
    """Pages of the module's server; the test fails on a script error."""
    opened = Pages(browser, server)
    yield opened
    assert opened.errors == [], f"script errors on the pages: {opened.errors}"


def lesson_file(extra_questions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The demo lesson under a fresh id, its quiz extended by ``extra_questions``."""
    lesson = demo.plan(f"web-{secrets.token_hex(3)}")
    activities: list[dict[str, Any]] = lesson["activities"]  # type: ignore[assignment]
    activities[1]["questions"].extend(extra_questions or [])
    return lesson


@pytest.fixture
async def lesson(api: Api) -> dict[str, Any]:
    """A created lesson: its id, host token, co-teacher tokens and class codes."""
    text_question = {
        "kind": "short_text",
        "prompt": "'Cà phê' in English?",
        "answer": ["coffee"],
        "seconds": 300,
    }
    response = await api.create(lesson_file([text_question]))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def student_page(
    pages: Pages, api: Api, code: str, name: str, size: tuple[int, int] = DESK
) -> Page:
    """A student who joined on the join page with ``code`` and ``name``."""
    page = await pages.open(f"/web/#code={code}", size=size)
    await page.fill("#name", name)
    await page.click("#join")
    await page.wait_for_url("**/web/student.html")
    await page.locator("#roster li", has_text=name).wait_for()
    return page


async def screenshot(page: Page, name: str, top: str | None = None) -> None:
    """Keep ``page`` as ``name``-vi.png and -en.png in :data:`SCREENSHOTS`.

    The picture is the viewport, scrolled so that the element ``top`` (a
    selector) starts it, when given. The page is in Vietnamese when called;
    it switches to English for the second picture and back, so the test goes
    on as it was.
    """
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    html = page.locator("html")
    for language, after in (("vi", "en"), ("en", "vi")):
        await expect(html).to_have_attribute("lang", language)
        if top is not None:
            await page.locator(top).evaluate("element => element.scrollIntoView()")
        await page.screenshot(path=SCREENSHOTS / f"{name}-{language}.png")
        await page.click("#lang")
        await expect(html).to_have_attribute("lang", after)
