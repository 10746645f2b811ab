"""The teacher page's camera reaches the classes over real WebRTC."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from playwright.async_api import Page, expect

from client_sdk.video import VideoPeer
from tests.media.peer import eventually

from .conftest import CAMERA_COLOUR, Api, Crowd, Pages, ServerProcess, student_page

pytestmark = pytest.mark.timeout(120)


async def test_teacher_camera_is_decoded_by_a_classroom_device(
    server: ServerProcess, pages: Pages, api: Api, crowd: Crowd, lesson: dict[str, Any]
) -> None:
    """The host page's fake camera is decoded by a device and shown to a student."""
    device_class = lesson["classes"][1]
    device = await crowd.enter(
        "device", server, device_class["classroom"]["token"], lesson["id"]
    )
    # The device publishes its own camera too, which the host's page shows.
    viewer = VideoPeer(
        device.client, lesson["id"], camera=(200, 40, 40), video_slots=1, fps=10
    )
    await viewer.start()
    try:
        teacher = await pages.open(f"/web/teacher.html#token={lesson['host']['token']}")
        await expect(teacher.locator("#roster")).to_contain_text(lesson["host"]["name"])
        student = await student_page(pages, api, lesson["classes"][0]["code"], "Lâm Vy")
        # Nothing is sent before the camera is turned on.
        await asyncio.sleep(2)
        assert viewer.seen.received == 0, viewer.seen.describe()

        await teacher.click("#camera")
        await expect(teacher.locator("#camera")).to_have_attribute(
            "aria-pressed", "true"
        )
        await eventually(
            lambda: viewer.seen.sees(CAMERA_COLOUR),
            8.0,
            f"the teacher's camera at the device: {viewer.seen.describe()}",
        )
        picture = viewer.seen.pictures()[-1]
        assert (picture.width, picture.height) == (320, 240)

        # The host's page plays the device's camera.
        await teacher.wait_for_function(
            "() => [...document.querySelectorAll('#videos video')]"
            ".some((video) => !video.hidden && video.videoWidth === 320)"
        )

        # A student's page plays the same picture.
        shown = student.locator("#videos video:not([hidden])")
        await expect(shown).to_have_count(1)
        await student.wait_for_function(
            "() => document.querySelector('#videos video:not([hidden])')"
            "?.videoWidth === 320"
        )
    finally:
        await viewer.close()


#: How long a picture may take to show on a busy machine, in ms.
PICTURE_MS = 20_000
#: Kept by the student's page: every peer connection it makes, to read
#: what arrives on it.
KEEP_PEERS = """
window.peers = [];
const Original = window.RTCPeerConnection;
window.RTCPeerConnection = class extends Original {
  constructor(...args) { super(...args); window.peers.push(this); }
};
"""
#: The video packets the page's newest peer connection received so far.
VIDEO_PACKETS = """async () => {
  let packets = 0;
  for (const report of (await window.peers.at(-1).getStats()).values()) {
    if (report.type === "inbound-rtp" && report.kind === "video") {
      packets += report.packetsReceived;
    }
  }
  return packets;
}"""
#: Whether the page's newest peer connection is up.
CONNECTED = "() => window.peers.at(-1)?.connectionState === 'connected'"
#: Whether the page plays the host's camera.
SHOWS_CAMERA = (
    "() => document.querySelector('#videos video:not([hidden])')?.videoWidth === 320"
)


async def watching_student(pages: Pages, lesson: dict[str, Any], name: str) -> Page:
    """A student who joined with a class code, their media connection up."""
    student = await pages.open(f"/web/#code={lesson['classes'][0]['code']}")
    await student.context.add_init_script(KEEP_PEERS)
    await student.fill("#name", name)
    await student.click("#join")
    await student.wait_for_url("**/web/student.html")
    await student.wait_for_function(CONNECTED, timeout=PICTURE_MS)
    return student


async def watching_the_host(pages: Pages, lesson: dict[str, Any], name: str) -> Page:
    """A student's page playing the host's camera, which the host turned on."""
    teacher = await pages.open(f"/web/teacher.html#token={lesson['host']['token']}")
    await expect(teacher.locator("#roster")).to_contain_text(lesson["host"]["name"])
    student = await watching_student(pages, lesson, name)
    await teacher.click("#camera")
    await student.wait_for_function(SHOWS_CAMERA, timeout=PICTURE_MS)
    return student


async def no_video_arrives(student: Page) -> int:
    """Assert the student's newest connection receives no more video packets."""
    # Packets in flight may still land; after that, none.
    await asyncio.sleep(1.0)
    stopped: int = await student.evaluate(VIDEO_PACKETS)
    await asyncio.sleep(2.5)
    assert await student.evaluate(VIDEO_PACKETS) == stopped, "video went on"
    return stopped


async def video_back_on(student: Page, stopped: int) -> None:
    """Turn video back on; the packets and then the picture return."""
    button = student.locator("#audio-only")
    await button.click()
    await expect(button).to_have_attribute("aria-pressed", "false")
    await expect(student.locator("body")).to_have_attribute("data-video", "high")
    await expect(student.locator("#videos")).to_be_visible()
    await student.wait_for_function(
        f"async () => (await ({VIDEO_PACKETS})()) > {stopped + 20}",
        timeout=PICTURE_MS,
    )
    await student.wait_for_function(SHOWS_CAMERA, timeout=PICTURE_MS)


async def test_student_turns_video_off_on_a_weak_link_and_back_on(
    server: ServerProcess, pages: Pages, lesson: dict[str, Any]
) -> None:
    """Audio only stops the host's pictures reaching a student; back on, they return."""
    student = await watching_the_host(pages, lesson, "Lâm Vy")

    button = student.locator("#audio-only")
    await button.click()
    await expect(button).to_have_attribute("aria-pressed", "true")
    await expect(student.locator("body")).to_have_attribute("data-video", "off")
    await expect(button).to_have_text("Bật lại hình")
    await expect(student.locator("#videos")).to_be_hidden()
    stopped = await no_video_arrives(student)
    await video_back_on(student, stopped)


async def test_audio_only_holds_across_a_restart_of_the_node(
    server: ServerProcess, pages: Pages, lesson: dict[str, Any]
) -> None:
    """After a reconnect the page asks for audio only again on its new connection."""
    student = await watching_the_host(pages, lesson, "Đỗ Hà")
    await student.click("#audio-only")
    await expect(student.locator("body")).to_have_attribute("data-video", "off")

    server.stop()
    await expect(student.locator("#banner")).to_be_visible()
    server.start()
    await expect(student.locator("#banner")).to_be_hidden(timeout=PICTURE_MS)
    await student.wait_for_function(
        f"() => window.peers.length > 1 && ({CONNECTED})()", timeout=PICTURE_MS
    )
    # The host's camera is back: a student who did not turn video off sees it.
    other = await watching_student(pages, lesson, "Vũ Nam")
    await other.wait_for_function(SHOWS_CAMERA, timeout=PICTURE_MS)

    await expect(student.locator("#audio-only")).to_have_attribute(
        "aria-pressed", "true"
    )
    stopped = await no_video_arrives(student)
    await video_back_on(student, stopped)
