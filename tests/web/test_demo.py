"""``lophoc serve --demo``: printed links open pages already signed in."""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Page, expect

from .conftest import Pages, ServerProcess, screenshot

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A node started the way ``./dev serve`` starts it."""
    process = ServerProcess(tmp_path_factory.mktemp("demo-server"), ["--demo"])
    process.start()
    yield process
    process.stop()


def printed_links(server: ServerProcess) -> dict[str, str]:
    """The demo's links by the line above each: ``host: Cô Lan`` and so on."""
    lines = server.log_path.read_text().splitlines()
    return {
        lines[i - 1].strip(): line.strip()
        for i, line in enumerate(lines)
        if re.match(r"\s+http://\S+#(token|code)=", line)
    }


async def open_printed(pages: Pages, url: str) -> Page:
    """The page of a printed link; its token rides in the fragment only."""
    split = urlsplit(url)
    assert split.query == "", "a token in a query string reaches server logs"
    return await pages.open(
        split.path + "#" + split.fragment, base=f"http://{split.netloc}"
    )


async def test_every_demo_link_opens_its_page_signed_in(
    demo_server: ServerProcess, pages: Pages
) -> None:
    """Host, co-teacher and students land on their pages, connected, as themselves."""
    links = printed_links(demo_server)
    who = sorted(links)
    assert [w.split(":")[0] for w in who] == [
        "co-teacher",
        "exam",
        "exam",
        "exam",
        "host",
        "join page, class code of THCS Ba Đình 8A",
        "proctor",
        "student",
        "student",
        "student",
    ]

    for name, url in links.items():
        if name.startswith(("join page", "exam", "proctor")):
            continue
        page = await open_printed(pages, url)
        person = name.split(": ", 1)[1].split(" (")[0]
        await expect(page.locator("#me")).to_have_text(person)
        await expect(page.locator("#roster li", has_text=person)).to_be_visible()
        await expect(page.locator("#banner")).to_be_hidden()
        assert "#" not in page.url, "the token stays in the address bar"
        expected = (
            "teacher.html"
            if name.startswith(("host", "co-teacher"))
            else "student.html"
        )
        assert page.url.endswith(expected)


async def test_demo_join_link_fills_in_the_class_code(
    demo_server: ServerProcess, pages: Pages
) -> None:
    """The join link carries the class code; a name is all a student adds."""
    links = printed_links(demo_server)
    url = next(url for name, url in links.items() if name.startswith("join page"))
    split = urlsplit(url)
    code = split.fragment.removeprefix("code=")
    page = await pages.open(
        split.path + "#" + split.fragment, base=f"http://{split.netloc}"
    )
    await expect(page.locator("#code")).to_have_value(code)
    await page.fill("#name", "Khách")
    await screenshot(page, "join")
    await page.click("#join")
    await page.wait_for_url("**/web/student.html")
    await expect(page.locator("#roster")).to_contain_text("THCS Ba Đình")
    await expect(page.locator("#roster li", has_text="Khách")).to_be_visible()


async def test_demo_exam_links_open_the_sealed_exam_and_the_proctors_seats(
    demo_server: ServerProcess, pages: Pages
) -> None:
    """Each candidate sees the sealed exam as themselves; the proctor, every seat."""
    log = demo_server.log_path.read_text()
    assert "Demo exam room" in log
    links = printed_links(demo_server)
    sitting = {n: u for n, u in links.items() if n.startswith("exam: ")}
    proctors = [u for n, u in links.items() if n.startswith("proctor: ")]
    assert len(sitting) == 3
    assert len(proctors) == 1

    for name, url in sitting.items():
        page = await open_printed(pages, url)
        person = name.split(": ", 1)[1].split(" (")[0]
        await expect(page.locator("#me")).to_have_text(person)
        await expect(page.locator("#exam-status")).to_contain_text("Bài thi mở sau")
        await expect(page.locator("fieldset.item")).to_have_count(0)
        await expect(page.locator("#banner")).to_be_hidden()
        assert page.url.endswith("/web/exam.html"), "the token left the address bar"

    page = await open_printed(pages, proctors[0])
    await expect(page.locator("#me")).to_have_text("Cô Thu")
    seats = page.locator("#seats tr[data-user]")
    await expect(seats).to_have_count(3)
    for name in sitting:
        person = name.split(": ", 1)[1].split(" (")[0]
        await expect(page.locator("#seats")).to_contain_text(person)
    await expect(page.locator("#banner")).to_be_hidden()
    assert page.url.endswith("/web/proctor.html"), "the token left the address bar"
