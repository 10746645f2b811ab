"""The student and teacher pages in a real Chromium against a real node."""

from __future__ import annotations

import time
from typing import Any

import pytest
from playwright.async_api import Page, expect

from client_sdk.protocol import QuestionOpened

from .conftest import (
    PHONE,
    Api,
    Crowd,
    Pages,
    ServerProcess,
    screenshot,
    student_page,
)

pytestmark = pytest.mark.timeout(120)


async def teacher_page(pages: Pages, lesson: dict[str, Any]) -> Page:
    """The host's page, signed in through the token in the fragment."""
    page = await pages.open(f"/web/teacher.html#token={lesson['host']['token']}")
    await page.locator("#roster li", has_text=lesson["host"]["name"]).wait_for()
    return page


async def test_student_joins_with_a_code_and_sees_the_current_activity(
    pages: Pages, api: Api, lesson: dict[str, Any]
) -> None:
    """A code and a name on the join page lead to the lesson and its activity."""
    teacher = await teacher_page(pages, lesson)
    await teacher.click("#next")
    await expect(teacher.locator("#activity-title")).to_have_text(
        "New words: food and drink"
    )

    code = lesson["classes"][2]["code"]
    student = await student_page(pages, api, code, "Phạm Dũng")

    await expect(student.locator("#activity-title")).to_have_text(
        "New words: food and drink"
    )
    await expect(student.locator("#me")).to_have_text("Phạm Dũng")
    school = lesson["classes"][2]["school"]
    await expect(student.locator("#roster .school h3").first).to_contain_text(
        lesson["classes"][0]["school"]
    )
    await expect(student.locator("#roster")).to_contain_text(school)
    await expect(teacher.locator("#roster")).to_contain_text("Phạm Dũng")
    assert "token" not in student.url
    await screenshot(student, "student-lesson")


async def test_question_shows_at_opens_at_and_the_chart_counts_the_answer(
    server: ServerProcess, pages: Pages, api: Api, crowd: Crowd, lesson: dict[str, Any]
) -> None:
    """The student sees the question from opens_at on; the teacher's bars count it."""
    listener = await crowd.enter(
        "listener",
        server,
        await api.student_token(lesson["classes"][1]["code"], "Listener"),
        lesson["id"],
    )
    teacher = await teacher_page(pages, lesson)
    student = await student_page(pages, api, lesson["classes"][0]["code"], "Hà My")
    await teacher.click("#next")
    await expect(teacher.locator("#activity-title")).to_have_text(
        "New words: food and drink"
    )
    await teacher.click("#next")
    await expect(teacher.locator("button.ask")).to_have_count(4)

    await teacher.click("button.ask >> nth=0")
    opened = await listener.wait(QuestionOpened)
    # The demo lesson leads by 1.5 s: the question is still hidden now.
    assert time.time() * 1000 < opened.opens_at
    await expect(student.locator("#question-body")).to_be_hidden()
    await expect(student.locator("#countdown")).to_contain_text("Câu hỏi 1")

    await student.locator("#prompt").wait_for(state="visible")
    shown_at = time.time() * 1000
    assert opened.opens_at - 300 <= shown_at <= opened.opens_at + 1500

    await student.click("#answers button.option >> nth=0")
    await expect(student.locator("#answer-status")).to_have_text("Đã gửi câu trả lời.")
    await screenshot(student, "student-quiz", top="#quiz-heading")
    chart = teacher.locator("#chart")
    await expect(chart.locator("[data-bar='option-0'] .bar-value")).to_have_text("1")
    await expect(chart.locator("[data-bar='option-1'] .bar-value")).to_have_text("0")
    school = lesson["classes"][0]["school"]
    await expect(
        chart.locator(f"[data-bar='school-{school}'] .bar-value")
    ).to_have_text("1")
    await expect(teacher.locator("#answered")).to_contain_text("1/")

    await teacher.click("#reveal")
    await expect(student.locator("#result")).to_contain_text("Chính xác")
    await expect(student.locator("table.board")).to_have_count(2)
    await expect(student.locator("table.board").first).to_contain_text("Hà My")
    await screenshot(student, "student-result", top="#quiz-heading")
    await screenshot(teacher, "teacher", top="#quiz-heading")


async def test_raised_hand_appears_in_the_teachers_queue(
    pages: Pages, api: Api, lesson: dict[str, Any]
) -> None:
    """Raise hand puts the student in the host's queue; lower hand takes them out."""
    teacher = await teacher_page(pages, lesson)
    student = await student_page(pages, api, lesson["classes"][1]["code"], "Đỗ Khoa")

    await student.click("#hand")
    await expect(student.locator("#hand")).to_have_attribute("aria-pressed", "true")
    entry = teacher.locator("#queue li", has_text="Đỗ Khoa")
    await expect(entry).to_contain_text(lesson["classes"][1]["school"])
    await expect(student.locator("#hand-state")).to_contain_text("thứ 1")

    # A co-teacher who opens the page now sees the same queue at once.
    co_teacher = lesson["classes"][1]["co_teacher"]
    late = await pages.open(f"/web/teacher.html#token={co_teacher['token']}")
    await expect(late.locator("#queue li", has_text="Đỗ Khoa")).to_be_visible()
    await expect(late.locator("#plan-controls")).to_be_hidden()
    await expect(late.locator("#readonly")).to_be_visible()

    await student.click("#hand")
    await expect(entry).to_have_count(0)
    await expect(student.locator("#hand")).to_have_attribute("aria-pressed", "false")


async def test_language_switch_changes_every_string_and_is_remembered(
    pages: Pages, api: Api, lesson: dict[str, Any]
) -> None:
    """English on demand, Vietnamese by default, and the choice survives a reload."""
    student = await student_page(pages, api, lesson["classes"][0]["code"], "Vũ Lan")
    await expect(student.locator("html")).to_have_attribute("lang", "vi")
    await expect(student.locator("#hand")).to_have_text("Giơ tay")
    title = await student.locator("#title").text_content()
    assert title
    assert title != "Lớp học trực tuyến"

    await student.click("#lang")
    await expect(student.locator("html")).to_have_attribute("lang", "en")
    await expect(student.locator("#hand")).to_have_text("Raise hand")
    await expect(student.locator("#title")).to_have_text(title)
    await expect(student.locator("#quiz-heading")).to_have_text("Question")
    await expect(student.locator("#lang")).to_have_text("Tiếng Việt")

    await student.reload()
    await expect(student.locator("#hand")).to_have_text("Raise hand")
    await student.click("#lang")
    await expect(student.locator("#mic-heading")).to_have_text("Kiểm tra micrô")


async def test_pages_work_from_the_keyboard(
    pages: Pages, api: Api, lesson: dict[str, Any]
) -> None:
    """Tab reaches the hand button and Enter raises the hand."""
    student = await student_page(pages, api, lesson["classes"][2]["code"], "Ngô Tú")
    for _ in range(12):
        await student.keyboard.press("Tab")
        focused = await student.evaluate("document.activeElement.id")
        if focused == "hand":
            break
    assert focused == "hand"
    await student.keyboard.press("Enter")
    await expect(student.locator("#hand")).to_have_attribute("aria-pressed", "true")


async def test_student_page_fits_a_phone(
    pages: Pages, api: Api, lesson: dict[str, Any]
) -> None:
    """On a phone's width nothing runs off the side and the hand button is reachable."""
    student = await student_page(
        pages, api, lesson["classes"][1]["code"], "Hồ Nam", size=PHONE
    )
    overflow = await student.evaluate(
        "() => document.documentElement.scrollWidth - window.innerWidth"
    )
    assert overflow <= 0, f"{overflow} px wider than the phone"
    hand = await student.locator("#hand").bounding_box()
    assert hand is not None
    assert hand["x"] >= 0
    assert hand["x"] + hand["width"] <= PHONE[0]
    await screenshot(student, "student-phone")
