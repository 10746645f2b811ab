"""The pages across a lost connection: a banner, and nothing typed is lost."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import Locator, Page, expect

from client_sdk import Client

from .conftest import Api, Pages, ServerProcess, student_page

pytestmark = pytest.mark.timeout(120)


async def typing_an_answer(
    server: ServerProcess, pages: Pages, api: Api, lesson: dict[str, Any], name: str
) -> tuple[Page, Locator]:
    """A student's page on the text question the host asked, and its field."""
    room = lesson["id"]
    async with Client(server.ws_url, lesson["host"]["token"], room) as host:
        await host.join(room)
        await host.step(room, 1)
        student = await student_page(pages, api, lesson["classes"][0]["code"], name)
        await host.ask(room, 3)
    text = student.locator("#text-answer")
    await text.wait_for(state="visible")
    return student, text


def stored_answers(report: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """The answers the lesson report holds for the student called ``name``."""
    return [
        answer
        for person in report["students"]
        if person["name"] == name
        for answer in person["answers"]
    ]


async def test_banner_shows_while_the_node_is_down_and_the_typed_answer_survives(
    server: ServerProcess, pages: Pages, api: Api, lesson: dict[str, Any]
) -> None:
    """A restart of the node shows the banner; the draft is kept and then stored."""
    student, text = await typing_an_answer(server, pages, api, lesson, "Trịnh Mai")
    await text.fill("coff")
    await text.press_sequentially("ee")

    server.stop()
    banner = student.locator("#banner")
    await expect(banner).to_be_visible()
    await expect(banner).to_contain_text("Đang kết nối lại")
    await expect(text).to_have_value("coffee")

    server.start()
    await expect(banner).to_be_hidden(timeout=20_000)
    await expect(text).to_have_value("coffee")
    await expect(text).to_be_enabled()

    await student.click("#answers button[type=submit]")
    await expect(student.locator("#answer-status")).to_have_text("Đã gửi câu trả lời.")
    response = await api.report(lesson["id"], lesson["host"]["token"])
    answers = stored_answers(response.json(), "Trịnh Mai")
    assert [(a["number"], a["value"], a["right"]) for a in answers] == [
        (4, "coffee", True)
    ]


async def test_answer_sent_while_offline_is_delivered_after_the_reconnect(
    server: ServerProcess, pages: Pages, api: Api, lesson: dict[str, Any]
) -> None:
    """An answer sent during the outage waits, then is stored once on return."""
    student, text = await typing_an_answer(server, pages, api, lesson, "Quách Sơn")
    await text.fill("Coffee")

    server.stop()
    await expect(student.locator("#banner")).to_be_visible()
    await student.click("#answers button[type=submit]")
    await expect(student.locator("#answer-status")).to_have_text("Đang gửi…")

    server.start()
    await expect(student.locator("#answer-status")).to_have_text(
        "Đã gửi câu trả lời.", timeout=25_000
    )
    response = await api.report(lesson["id"], lesson["host"]["token"])
    answers = stored_answers(response.json(), "Quách Sơn")
    assert [(a["number"], a["value"]) for a in answers] == [(4, "Coffee")]
