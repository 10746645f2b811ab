"""A real headless Chromium on the pages of a real ``lophoc serve`` process.

The browser is Debian's ``chromium`` package (``./dev test`` installs it),
driven through Playwright's Python API with ``executable_path``: nothing is
downloaded. Its fake media devices give the pages a microphone; a WAV file
makes that microphone play a known tone, which a Python SDK listener then
recognizes on the other side of the server's relay.
"""

from __future__ import annotations

import math
import secrets
import shutil
import struct
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright

from server import demo
from tests.lessons.conftest import Api, Crowd, ServerProcess

#: The tone the fake microphone plays, in Hz.
MIC_TONE_HZ = 660.0
#: How long a test waits for something to show on a page, in ms.
SHOW_MS = 10_000

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test here ``browser``."""
    for item in items:
        if "tests/web/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.browser)


def write_tone(path: Path, frequency: float, seconds: float = 30.0) -> Path:
    """A mono 48 kHz 16-bit WAV of a sine tone, for the fake microphone."""
    rate = 48_000
    count = int(rate * seconds)
    frames = b"".join(
        struct.pack("<h", int(12_000 * math.sin(2 * math.pi * frequency * i / rate)))
        for i in range(count)
    )
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(frames)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A node on the embedded backends, serving the pages."""
    process = ServerProcess(tmp_path_factory.mktemp("web-server"))
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def tone_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The WAV file the fake microphone plays."""
    return write_tone(tmp_path_factory.mktemp("tone") / "tone.wav", MIC_TONE_HZ)


@pytest.fixture
async def browser(tone_file: Path) -> AsyncIterator[Browser]:
    """Headless Chromium with a fake microphone playing :data:`MIC_TONE_HZ`."""
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (./dev test installs it with apt)")
    async with async_playwright() as driver:
        launched = await driver.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={tone_file}",
                "--autoplay-policy=no-user-gesture-required",
                # Lets a test page of another origin reach the node on
                # loopback, so that the node's own Origin check is what
                # refuses it (test_security.py).
                "--disable-features=LocalNetworkAccessChecks",
            ],
        )
        try:
            yield launched
        finally:
            await launched.close()


class Pages:
    """Opens pages, each in its own browser context (its own tab storage)."""

    def __init__(self, browser: Browser, server: ServerProcess) -> None:
        self.browser = browser
        self.server = server
        self.errors: list[str] = []

    async def open(self, path: str, *, base: str | None = None) -> Page:
        """A new page at ``path`` of the server (or of ``base``)."""
        context = await self.browser.new_context(
            permissions=["microphone"], viewport={"width": 1100, "height": 900}
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


@pytest.fixture
async def api(server: ServerProcess) -> AsyncIterator[Api]:
    """The HTTP API of the module's server."""
    client = Api(server)
    yield client
    await client.close()


@pytest.fixture
async def crowd() -> AsyncIterator[Crowd]:
    """Python SDK clients of this test, closed at the end."""
    people = Crowd()
    try:
        yield people
    finally:
        await people.close()


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


async def student_page(pages: Pages, api: Api, code: str, name: str) -> Page:
    """A student who joined on the join page with ``code`` and ``name``."""
    page = await pages.open(f"/web/#code={code}")
    await page.fill("#name", name)
    await page.click("#join")
    await page.wait_for_url("**/web/student.html")
    await page.locator("#roster li", has_text=name).wait_for()
    return page
