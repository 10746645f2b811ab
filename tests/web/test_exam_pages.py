"""The exam page of a student and the proctor's page, in Chromium."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import expect

from tests.exams.conftest import ExamApi, exam_file

from .conftest import Pages, ServerProcess

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def exams(server: ServerProcess) -> AsyncIterator[ExamApi]:
    """The exam HTTP API of the module's server."""
    client = ExamApi(server)
    yield client
    await client.close()


async def test_student_sits_the_exam_while_the_proctor_watches(
    pages: Pages, exams: ExamApi
) -> None:
    """Sealed until opens_at, saved answers, a signal, a warning and the hand-in."""
    room = f"exam-{secrets.token_hex(3)}"
    tokens = await exams.tokens(exam_file(room, 2, opens_in_ms=4000))

    proctor = await pages.open(f"/web/proctor.html#token={tokens['p-1']}")
    seat = proctor.locator("#seats tr[data-user='s-0']")
    await expect(seat).to_contain_text("Student 0")

    student = await pages.open(f"/web/exam.html#token={tokens['s-0']}")
    await expect(student.locator("#exam-status")).to_contain_text("Bài thi mở sau")
    await expect(student.locator("fieldset.item")).to_have_count(0)

    await expect(student.locator("fieldset.item")).to_have_count(6)
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

    await proctor.fill("#message", "Không sao chép")
    await seat.locator("button", has_text="Nhắc nhở").click()
    await expect(student.locator("#warning")).to_contain_text("Không sao chép")

    await student.click("#submit")
    await expect(student.locator("#exam-status")).to_have_text("Em đã nộp bài.")
    await expect(seat).to_have_attribute("data-state", "submitted")
    await expect(
        student.locator("fieldset[data-item='q1'] input").first
    ).to_be_disabled()
