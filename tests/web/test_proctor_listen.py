"""A proctor's page listening in on a student's exam page, in Chromium.

The student's page keeps Chromium's fake microphone (a steady tone) on the
exam room's media for the whole attempt; the proctor's page opens a
receive-only connection on "listen". Its RTCPeerConnections are counted
from an init script, so the test reads the browser's own inbound-rtp
figures: packets and audio energy that grow while the proctor listens and
stop when they stop.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from playwright.async_api import Page, expect

from tests.exams.conftest import ExamApi

from .conftest import SHOW_MS, Pages
from .test_exam_pages import exams, new_exam

__all__ = ["exams"]

pytestmark = pytest.mark.timeout(60)

#: Keeps every RTCPeerConnection a page makes where the test can read it.
KEEP_PEERS = """
(() => {
  const Native = window.RTCPeerConnection;
  window.testPeers = [];
  window.RTCPeerConnection = class extends Native {
    constructor(...options) {
      super(...options);
      window.testPeers.push(this);
    }
  };
})();
"""

#: Inbound audio packets and energy over the page's open peer connections.
INBOUND = """
async () => {
  let packets = 0;
  let energy = 0;
  for (const pc of window.testPeers) {
    if (pc.connectionState === "closed") continue;
    for (const stat of (await pc.getStats()).values()) {
      if (stat.type === "inbound-rtp" && stat.kind === "audio") {
        packets += stat.packetsReceived ?? 0;
        energy += stat.totalAudioEnergy ?? 0;
      }
    }
  }
  return [packets, energy];
}
"""


async def watched_page(pages: Pages, path: str) -> Page:
    """A page of the server whose peer connections the test can read."""
    context = await pages.browser.new_context(permissions=["microphone"])
    await context.add_init_script(KEEP_PEERS)
    page = await context.new_page()
    page.set_default_timeout(SHOW_MS)
    page.on("pageerror", lambda error: pages.errors.append(str(error)))
    await page.goto(pages.server.http_url + path)
    return page


async def inbound(page: Page) -> tuple[int, float]:
    """The page's inbound audio packets and energy so far."""
    packets, energy = await page.evaluate(INBOUND)
    return int(packets), float(energy)


async def test_proctor_page_hears_the_student_page_until_it_stops(
    pages: Pages, exams: ExamApi
) -> None:
    """Listen plays the student's microphone on the proctor's page; stop ends it."""
    _, tokens = await new_exam(exams, 1)
    student = await pages.open(f"/web/exam.html#token={tokens['s-0']}")
    microphone = student.locator("#microphone")
    await expect(microphone).to_have_attribute("data-state", "on")
    await expect(microphone).to_contain_text("Micrô đang bật")

    proctor = await watched_page(pages, f"/web/proctor.html#token={tokens['p-1']}")
    seat = proctor.locator("#seats tr[data-user='s-0']")
    await expect(seat).to_have_attribute("data-state", "running")
    # The tone on a non-speaking item is voice the proctors are told about.
    voice = proctor.locator("#incidents li[data-kind='voice_on_silent_item']")
    await expect(voice.first).to_contain_text("có tiếng nói")

    await seat.locator("button.listen").click()
    await expect(seat).to_have_attribute("data-listening", "true")
    await expect(seat.locator("button.listen")).to_have_text("Dừng nghe")
    await expect(proctor.locator("#listening")).to_have_text("Đang nghe Student 0")

    # An Opus packet is 20 ms: 50 packets are a second of the student's tone.
    first = await inbound(proctor)
    heard = first
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        heard = await inbound(proctor)
        if heard[0] >= first[0] + 50 and heard[1] > first[1]:
            break
    assert heard[0] >= first[0] + 50, f"packets received: {first} then {heard}"
    assert heard[1] > first[1], f"no audio energy: {first} then {heard}"
    playing = "a => a.srcObject !== null && !a.paused"
    assert await proctor.locator("#ears audio").evaluate(playing)

    await seat.locator("button.listen").click()
    await expect(seat).to_have_attribute("data-listening", "false")
    await expect(proctor.locator("#listening")).to_be_hidden()
    await asyncio.sleep(1.0)
    stopped = await inbound(proctor)
    await asyncio.sleep(1.5)
    after = await inbound(proctor)
    assert after[0] <= stopped[0] + 2, f"still hearing: {stopped} then {after}"
    # The student's microphone stays on after the proctor stops listening.
    await expect(microphone).to_have_attribute("data-state", "on")
