"""The exam page of a student and the proctor's page, in Chromium."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
from playwright.async_api import Page, expect

from tests.exams.conftest import ExamApi, exam_file
from tests.lessons.conftest import admin_token, bearer

from .conftest import Pages, ServerProcess, screenshot

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def exams(server: ServerProcess) -> AsyncIterator[ExamApi]:
    """The exam HTTP API of the module's server."""
    client = ExamApi(server)
    yield client
    await client.close()


async def new_exam(
    exams: ExamApi, students: int, **options: Any
) -> tuple[str, dict[str, str]]:
    """A fresh exam room of ``students`` students: its id, everyone's token."""
    room = f"exam-{secrets.token_hex(3)}"
    return room, await exams.tokens(exam_file(room, students, **options))


async def signed_in(pages: Pages, tokens: dict[str, str], user: str) -> Page:
    """The page of ``user``: the proctor's view for a proctor, else the exam."""
    page = "proctor" if user.startswith("p-") else "exam"
    return await pages.open(f"/web/{page}.html#token={tokens[user]}")


async def sitting(pages: Pages, exams: ExamApi) -> tuple[str, dict[str, str], Page]:
    """An open exam of one student: its id, the tokens, s-0's page with the paper."""
    room, tokens = await new_exam(exams, 1)
    student = await signed_in(pages, tokens, "s-0")
    await expect(student.locator("fieldset.item")).to_have_count(6)
    return room, tokens, student


async def test_student_sits_the_exam_while_the_proctor_watches(
    pages: Pages, exams: ExamApi
) -> None:
    """Sealed until opens_at, saved answers, a signal, a warning and the hand-in."""
    _, tokens = await new_exam(exams, 2, opens_in_ms=8000)

    proctor = await signed_in(pages, tokens, "p-1")
    seat = proctor.locator("#seats tr[data-user='s-0']")
    await expect(seat).to_contain_text("Student 0")

    student = await signed_in(pages, tokens, "s-0")
    await expect(student.locator("#exam-status")).to_contain_text("Bài thi mở sau")
    await expect(student.locator("fieldset.item")).to_have_count(0)

    # The paper arrives at opens_at, up to 8 s after the page opened.
    await expect(student.locator("fieldset.item")).to_have_count(6, timeout=15_000)
    await expect(student.locator("#exam-status")).to_contain_text("Còn")
    await student.locator("fieldset[data-item='q1'] input[type=radio]").first.check()
    await expect(student.locator("#saved-q1")).to_have_text("Đã lưu")
    text = student.locator("fieldset[data-item='q3'] input")
    await text.fill("cold")
    await text.press("Tab")
    await expect(student.locator("#saved-q3")).to_have_text("Đã lưu")
    await expect(seat.locator(".seat-state")).to_contain_text("2/6")

    await student.evaluate("document.dispatchEvent(new Event('copy'))")
    incident = proctor.locator("#incidents li[data-kind='copy'][data-user='s-0']")
    await expect(incident).to_have_count(1)
    await screenshot(student, "exam")
    await screenshot(proctor, "proctor")

    await proctor.fill("#message", "Không sao chép")
    await seat.locator("button", has_text="Nhắc nhở").click()
    await expect(student.locator("#warning")).to_contain_text("Không sao chép")

    await student.click("#submit")
    await expect(student.locator("#exam-status")).to_have_text("Em đã nộp bài.")
    await expect(seat).to_have_attribute("data-state", "submitted")
    await expect(
        student.locator("fieldset[data-item='q1'] input").first
    ).to_be_disabled()


async def test_leaving_fullscreen_or_hiding_the_page_is_an_incident(
    pages: Pages, exams: ExamApi
) -> None:
    """The proctor's page highlights fullscreen_left and page_hidden as they happen."""
    _, tokens, student = await sitting(pages, exams)
    proctor = await signed_in(pages, tokens, "p-1")
    seat = proctor.locator("#seats tr[data-user='s-0']")
    await expect(seat).to_have_attribute("data-state", "running")

    await student.click("#fullscreen")
    await student.wait_for_function("() => document.fullscreenElement !== null")
    await expect(student.locator("#fullscreen")).to_be_hidden()
    await student.evaluate("document.exitFullscreen()")
    left = proctor.locator("#incidents li[data-kind='fullscreen_left']")
    await expect(left).to_have_attribute("data-user", "s-0")
    await expect(left).to_have_class(re.compile(r"\bincident\b"))
    await expect(student.locator("#fullscreen")).to_be_visible()

    # Headless Chromium shows every page at once: neither another tab in
    # front nor a minimized window hides one. The document reports what a
    # hidden tab reports, with the event the browser would send.
    await student.evaluate(
        """() => {
            Object.defineProperty(document, "visibilityState", { value: "hidden" });
            document.dispatchEvent(new Event("visibilitychange"));
        }"""
    )
    hidden = proctor.locator("#incidents li[data-kind='page_hidden']")
    await expect(hidden).to_have_attribute("data-user", "s-0")
    # The fake microphone's steady tone may add a voice_on_silent_item.
    await expect(seat.locator(".seat-incidents")).to_have_text(re.compile(r"^[23]$"))
    await expect(seat.locator(".seat-incidents")).to_have_class(re.compile("alert"))


async def test_a_speaking_item_is_answered_by_voice_from_the_page(
    pages: Pages, exams: ExamApi
) -> None:
    """The page records its microphone for q6; results hold it for an examiner."""
    room, _, student = await sitting(pages, exams)
    item = student.locator("fieldset[data-item='q6']")
    speak = item.locator("button.speak")
    await expect(speak).to_have_text("Bắt đầu nói")

    await speak.click()
    await expect(item.locator(".status")).to_have_text("Đang ghi âm…")
    await expect(speak).to_have_attribute("aria-pressed", "true")
    # The fake microphone plays its tone into the recording meanwhile.
    await asyncio.sleep(2)
    await speak.click()
    await expect(item.locator(".status")).to_have_text("Đã lưu bài nói")
    await expect(speak).to_have_attribute("aria-pressed", "false")

    results = (await exams.results(room)).json()
    (seat,) = results["students"]
    q6 = next(i for i in seat["items"] if i["item"] == "q6")
    assert q6["status"] == "awaiting examiner"
    assert q6["recording"].endswith(".ogg")
    listed = await exams.http.get(
        f"/api/exams/{room}/recordings", headers=bearer(admin_token())
    )
    (recording,) = listed.json()
    assert recording["file"] == q6["recording"]
    # The tone was heard for most of the two seconds.
    assert recording["voiced_seconds"] >= 1.0, recording
