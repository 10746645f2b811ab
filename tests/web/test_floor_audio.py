"""A student's page publishes its microphone when given the floor, and only then."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from playwright.async_api import expect

from client_sdk import AudioPeer
from client_sdk.protocol import FloorGranted, HandQueue, Role
from server import auth
from tests.lessons.conftest import SECRET

from .conftest import MIC_TONE_HZ, Api, Crowd, Pages, ServerProcess, student_page

pytestmark = pytest.mark.timeout(120)


async def test_floor_holder_page_is_heard_by_a_python_listener(
    server: ServerProcess, pages: Pages, api: Api, crowd: Crowd, lesson: dict[str, Any]
) -> None:
    """Granting the floor makes the page send its microphone; revoking stops it."""
    host_token = lesson["host"]["token"]
    host = await crowd.enter("host", server, host_token, lesson["id"])
    ear_token = auth.mint(
        SECRET,
        user="s-ear",
        name="Listener",
        role=Role.STUDENT,
        rooms=[lesson["id"]],
        school=lesson["classes"][1]["school"],
        class_=lesson["classes"][1]["class"],
    )
    ear = await crowd.enter("ear", server, ear_token, lesson["id"])
    listener = AudioPeer(ear.client, lesson["id"], slots=2)
    await listener.start()

    student = await student_page(pages, api, lesson["classes"][0]["code"], "Lý Hùng")
    await student.click("#hand")
    queue = await host.wait(HandQueue, lambda event: len(event.queue) == 1)
    speaker = queue.queue[0].user
    # The page's media connection is up before the floor is given.
    await asyncio.sleep(3)
    before = time.monotonic()
    assert listener.frames(since=before - 2) == [], "heard someone before the floor"

    await host.client.grant_floor(lesson["id"], speaker, seconds=60)
    await host.wait(FloorGranted)
    await expect(student.locator("body")).to_have_attribute("data-speaking", "true")
    await expect(student.locator("#floor")).to_contain_text("Đến lượt em nói")

    heard = None
    for _ in range(40):
        await asyncio.sleep(0.25)
        now = time.monotonic()
        heard = listener.dominant_frequency(now - 1.0, now)
        if heard is not None and abs(heard - MIC_TONE_HZ) <= 15:
            break
    assert heard is not None, "heard nothing from the floor holder"
    assert abs(heard - MIC_TONE_HZ) <= 15, heard

    await host.client.revoke_floor(lesson["id"])
    await expect(student.locator("body")).to_have_attribute("data-speaking", "false")
    await asyncio.sleep(1.5)
    quiet_from = time.monotonic()
    await asyncio.sleep(1.5)
    assert listener.frames(since=quiet_from) == [], "heard the student after revoke"
    await listener.close()
