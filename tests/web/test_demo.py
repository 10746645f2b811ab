"""``lophoc serve --demo``: printed links open pages already signed in."""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from playwright.async_api import expect

from .conftest import Pages, ServerProcess

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


async def test_every_demo_link_opens_its_page_signed_in(
    demo_server: ServerProcess, pages: Pages
) -> None:
    """Host, co-teacher and students land on their pages, connected, as themselves."""
    links = printed_links(demo_server)
    who = sorted(links)
    assert [w.split(":")[0] for w in who] == [
        "co-teacher",
        "host",
        "join page, class code of THCS Ba Đình 8A",
        "student",
        "student",
        "student",
    ]

    for name, url in links.items():
        if name.startswith("join page"):
            continue
        split = urlsplit(url)
        assert split.query == "", "a token in a query string reaches server logs"
        page = await pages.open(
            split.path + "#" + split.fragment, base=f"http://{split.netloc}"
        )
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
    await page.click("#join")
    await page.wait_for_url("**/web/student.html")
    await expect(page.locator("#roster")).to_contain_text("THCS Ba Đình")
    await expect(page.locator("#roster li", has_text="Khách")).to_be_visible()
