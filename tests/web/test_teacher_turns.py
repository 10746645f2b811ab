"""The teacher page runs a speaking turn, then plays it back and gives the report."""

from __future__ import annotations

import asyncio
import csv
import io
from typing import Any

import pytest
from playwright.async_api import expect

from .conftest import Api, Pages, student_page

pytestmark = pytest.mark.timeout(120)


async def test_teacher_grants_a_timed_turn_and_plays_its_recording(
    pages: Pages, api: Api, lesson: dict[str, Any]
) -> None:
    """Policy, grant with a length, revoke, recording playback and the CSV report."""
    teacher = await pages.open(f"/web/teacher.html#token={lesson['host']['token']}")
    await expect(teacher.locator("#roster")).to_contain_text(lesson["host"]["name"])
    student = await student_page(pages, api, lesson["classes"][0]["code"], "Mai Chi")

    await teacher.select_option("#policy", "round_robin")
    await student.click("#hand")
    entry = teacher.locator("#queue li", has_text="Mai Chi")
    await expect(entry).to_be_visible()
    await expect(teacher.locator("#policy")).to_have_value("round_robin")
    # The student's media connection is up before the floor is given.
    await asyncio.sleep(3)

    await teacher.fill("#seconds", "45")
    await entry.locator("button", has_text="Cho nói").click()
    await expect(student.locator("body")).to_have_attribute("data-speaking", "true")
    floor = teacher.locator("#floor")
    await expect(floor).to_contain_text("Mai Chi")
    await expect(floor).to_contain_text("còn 4")
    await expect(entry).to_have_count(0)
    await asyncio.sleep(2)

    await teacher.click("#revoke")
    await expect(student.locator("body")).to_have_attribute("data-speaking", "false")
    await expect(floor).to_have_text("Chưa ai được nói.")

    await teacher.click("#recordings-load")
    recording = teacher.locator("#recordings li")
    await expect(recording).to_have_count(1)
    await recording.locator("button").click()
    await expect(teacher.locator("#player")).to_be_visible()
    # The turn lasted about two seconds: so does what the player plays.
    await teacher.wait_for_function(
        "() => { const d = document.getElementById('player').duration;"
        " return d >= 1.5 && d < 20; }"
    )

    async with teacher.expect_download() as started:
        await teacher.click("#report")
    download = await started.value
    path = await download.path()
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig"))))
    assert any("Mai Chi" in row for row in rows), rows[:3]
