"""A 720p browser camera reaches viewers as two simulcast layers.

The teacher page runs in a Chromium whose fake camera is its own moving
test pattern (no file), so it gives the 1280x720 the page asks for and the
page's media peer sends it as a full and a quarter-size layer. Two classroom
devices, real aiortc peers of the Python SDK, decode what the node forwards
them: one asks for ``high`` and one for ``low``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from playwright.async_api import Browser, expect

from client_sdk.protocol import VideoLayer
from client_sdk.video import PictureLog, VideoPeer
from media.relay import MediaRoom
from media.video import VideoKind
from tests.media.peer import eventually
from tests.media.video_peer import CameraPeer

from .conftest import Api, Crowd, Pages, ServerProcess, chromium

pytestmark = pytest.mark.timeout(180)

#: The camera's size, and its quarter-size layer's.
FULL = (1280, 720)
QUARTER = (320, 180)
#: How long the full layer may take to start: the browser sends it once its
#: bandwidth estimate, grown from the relay's REMB reports, can carry it.
FULL_LAYER_S = 60.0
#: How long a viewer's change of quality may take to show.
SWITCH_S = 3.0


@pytest.fixture
async def hd_browser() -> AsyncIterator[Browser]:
    """Headless Chromium whose fake camera gives whatever size is asked."""
    async with chromium() as launched:
        yield launched


@pytest.fixture
async def hd_pages(hd_browser: Browser, server: ServerProcess) -> AsyncIterator[Pages]:
    """Pages of the module's server in :func:`hd_browser`."""
    opened = Pages(hd_browser, server)
    yield opened
    assert opened.errors == [], f"script errors on the pages: {opened.errors}"


def widest(seen: PictureLog, since: float) -> int:
    """The largest width decoded since ``since`` (0 if none)."""
    return max((p.width for p in seen.pictures(since=since)), default=0)


def sizes(seen: PictureLog, since: float) -> set[tuple[int, int]]:
    """The picture sizes decoded since ``since``."""
    return {(p.width, p.height) for p in seen.pictures(since=since)}


async def shows(seen: PictureLog, size: tuple[int, int], within: float) -> float:
    """Wait until ``seen`` decodes pictures of ``size``; returns when it began."""
    began = time.monotonic()
    await eventually(
        lambda: size in sizes(seen, began), within, f"{size}: {sizes(seen, began)}"
    )
    return began


async def test_a_low_viewer_gets_the_quarter_layer_and_switches_at_keyframes(
    server: ServerProcess,
    hd_pages: Pages,
    api: Api,
    crowd: Crowd,
    lesson: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``low`` decodes the quarter layer, ``high`` the full one; both switch cleanly."""
    caplog.set_level(logging.WARNING, logger="aiortc.rtcrtpreceiver")
    viewers = []
    for index in (1, 2):
        device = await crowd.enter(
            f"device{index}",
            server,
            lesson["classes"][index]["classroom"]["token"],
            lesson["id"],
        )
        viewer = VideoPeer(device.client, lesson["id"], video_slots=1)
        await viewer.start()
        viewers.append(viewer)
    high, low = viewers
    try:
        answer = await low.set_quality(VideoLayer.LOW)
        # Nobody publishes yet: there is no lower layer to promise.
        assert answer.forwarded is VideoLayer.HIGH
        assert answer.layers == 1

        teacher = await hd_pages.open(
            f"/web/teacher.html#token={lesson['host']['token']}"
        )
        await expect(teacher.locator("#roster")).to_contain_text(lesson["host"]["name"])
        await teacher.click("#camera")
        await expect(teacher.locator("#camera")).to_have_attribute(
            "aria-pressed", "true"
        )

        await shows(low.seen, QUARTER, 15.0)
        await shows(high.seen, FULL, FULL_LAYER_S)
        # Both layers flow now; each viewer keeps to its own.
        both = time.monotonic()
        await eventually(
            lambda: (
                len(low.seen.pictures(since=both)) >= 20
                and len(high.seen.pictures(since=both)) >= 20
            ),
            10.0,
            "pictures at both viewers",
        )
        assert sizes(low.seen, both) == {QUARTER}
        assert sizes(high.seen, both) == {FULL}
        assert widest(low.seen, both) <= widest(high.seen, both) // 2

        # The high viewer asks for low, and back: each change shows within
        # 3 s, at a keyframe of the new layer, with nothing left undecoded.
        answer = await high.set_quality(VideoLayer.LOW)
        assert (answer.requested, answer.forwarded, answer.layers) == (
            VideoLayer.LOW,
            VideoLayer.LOW,
            2,
        )
        down = await shows(high.seen, QUARTER, SWITCH_S)
        await high.set_quality(VideoLayer.HIGH)
        up = await shows(high.seen, FULL, SWITCH_S)
        # Once switched, a viewer gets only the new layer's pictures.
        settled = time.monotonic()
        await eventually(
            lambda: len(high.seen.pictures(since=settled)) >= 10, 5.0, "more pictures"
        )
        assert sizes(high.seen, settled) == {FULL}
        assert QUARTER in sizes(high.seen, down)
        assert down < up
        assert sizes(low.seen, both) == {QUARTER}
    finally:
        for viewer in viewers:
            await viewer.close()
    failed = [
        r.getMessage() for r in caplog.records if "failed to decode" in r.getMessage()
    ]
    assert failed == [], failed


#: A page of its own (no CSP, no SDK) that publishes a 720p camera as two
#: layers and, on a second m-line, the same camera at 320x240 as a screen,
#: and signals by hand: the offer goes out, the answer comes back.
PUBLISH = """async () => {
  const camera = await navigator.mediaDevices.getUserMedia(
    { video: { width: 1280, height: 720 } });
  const screen = await navigator.mediaDevices.getUserMedia(
    { video: { width: 320, height: 240 } });
  const pc = new RTCPeerConnection();
  window.pc = pc;
  pc.addTransceiver(camera.getVideoTracks()[0], { direction: "sendonly",
    sendEncodings: [{ rid: "q", scaleResolutionDownBy: 4 }, { rid: "f" }] });
  pc.addTransceiver(screen.getVideoTracks()[0], { direction: "sendonly" });
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((resolve) => {
    const done = () => pc.iceGatheringState === "complete" && resolve();
    pc.onicegatheringstatechange = done;
    done();
  });
  return pc.localDescription.sdp;
}"""


async def test_a_simulcast_camera_and_a_screen_of_one_browser_both_reach_a_viewer(
    hd_browser: Browser,
) -> None:
    """Layers of a camera are told from a screen with the same payload types."""
    room = MediaRoom("simulcast")
    viewer = CameraPeer("viewer", slots=2)
    context = await hd_browser.new_context(permissions=["camera"])
    try:
        page = await context.new_page()
        await page.route(
            "http://localhost/",
            lambda route: route.fulfill(body="<html></html>", content_type="text/html"),
        )
        await page.goto("http://localhost/")
        answer = await room.answer("host", await page.evaluate(PUBLISH))
        assert "a=simulcast:recv q;f" in answer
        await page.evaluate(
            "(sdp) => window.pc.setRemoteDescription({ type: 'answer', sdp })", answer
        )
        await viewer.join(room)
        room.set_video(
            {"viewer": [("host", VideoKind.CAMERA), ("host", VideoKind.SCREEN)]}
        )
        room.set_video_quality("viewer", VideoLayer.LOW)

        def shown(slot: int) -> set[tuple[int, int]]:
            return {(p.width, p.height) for p in viewer.seen.pictures(slot)}

        await eventually(
            lambda: QUARTER in shown(0) and (320, 240) in shown(1),
            15.0,
            f"camera and screen at the viewer: {shown(0)}, {shown(1)}",
        )
        camera = room.published("host")[VideoKind.CAMERA]
        assert camera.simulcast
        # The browser's bandwidth estimate stays below what its full layer
        # needs here (each published m-line's receiver reports its own), so
        # the quarter layer is what there is, and the viewer is told so.
        assert room.video_layers("viewer") == camera.layers
    finally:
        await viewer.close()
        await room.close()
        await context.close()
