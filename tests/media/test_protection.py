"""A viewer's audio protected on a weak link: its video steps down and back."""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial

import pytest

from client_sdk.protocol import VideoChangeReason, VideoLayer, VideoQualityChanged
from media.protection import (
    CLEAN_FOR,
    MAX_CLEAN_FOR,
    QUIET_WINDOW,
    WINDOW,
    LossGuard,
    Step,
)
from media.relay import MediaRoom
from media.video import VideoKind
from tests.media.conftest import Joined, hears
from tests.media.peer import eventually
from tests.media.video_peer import (
    LOW_SIZE,
    SIZE,
    SimulcastCameraPeer,
    SoundAndPicturePeer,
)

pytestmark = pytest.mark.timeout(90)
logger = logging.getLogger(__name__)

HIGH, LOW, OFF = VideoLayer.HIGH, VideoLayer.LOW, VideoLayer.OFF
RED = (220, 30, 30)
TONE = 440.0


class Link:
    """Report blocks of two streams (audio and video) as a viewer would send."""

    def __init__(self, guard: LossGuard) -> None:
        self.guard = guard
        self.now = 0.0
        self._sent = {1: 0, 2: 0}
        self._lost = {1: 0, 2: 0}

    def second(self, lost_share: float, packets: int = 50) -> None:
        """One second of ``packets`` a stream, ``lost_share`` of them lost."""
        self.now += 1.0
        blocks = []
        for ssrc in (1, 2):
            self._sent[ssrc] += packets
            self._lost[ssrc] += round(packets * lost_share)
            blocks.append((ssrc, self._sent[ssrc] % 65536, self._lost[ssrc]))
        self.guard.reports(blocks, self.now)

    def run(
        self,
        seconds: int,
        lost_share: float,
        requested: VideoLayer = HIGH,
        layers: int = 2,
    ) -> list[tuple[float, Step]]:
        """Seconds of reports, deciding after each; the steps taken, timed."""
        steps = []
        for _ in range(seconds):
            self.second(lost_share)
            step = self.guard.decide(requested, layers, self.now)
            if step is not None:
                steps.append((self.now, step))
        return steps


def levels(steps: list[tuple[float, Step]]) -> list[VideoLayer]:
    """The levels stepped to, in order."""
    return [step.level for _, step in steps]


def test_loss_steps_video_down_a_level_at_a_time_and_clean_steps_it_up() -> None:
    """Two lossy windows: high to low, low to off; 10 s clean: off to low to high."""
    link = Link(LossGuard(0.0))
    assert link.run(5, 0.0) == []

    down = link.run(5, 0.2)
    assert levels(down) == [LOW, OFF]
    # Two lossy windows each, a step resetting the count.
    assert [at for at, _ in down] == [7.0, 9.0]
    assert down[0][1].reason is VideoChangeReason.LOSS
    assert down[0][1].loss == pytest.approx(0.2)

    # Loss that stays does nothing more: video is already off.
    assert link.run(5, 0.2) == []
    up = link.run(25, 0.0)
    assert levels(up) == [LOW, HIGH]
    assert [at for at, _ in up] == [15.0 + CLEAN_FOR, 15.0 + 2 * CLEAN_FOR]
    assert all(step.reason is VideoChangeReason.RECOVERED for _, step in up)
    assert link.guard.cap is HIGH


def test_brief_or_light_loss_changes_nothing_but_delays_the_way_back() -> None:
    """One lossy window steps nothing; 5 % loss is not clean and not lossy."""
    link = Link(LossGuard(0.0))
    link.run(1, 0.0)
    assert link.run(1, 0.3) == []
    assert link.run(1, 0.0) == []
    assert link.run(1, 0.3) == []
    assert link.run(30, 0.05) == []
    assert link.guard.cap is HIGH

    assert levels(link.run(2, 0.2)) == [LOW]
    # A window of 5 % loss restarts the clean time.
    assert link.run(6, 0.0) == []
    assert link.run(1, 0.05) == []
    steps = link.run(int(CLEAN_FOR), 0.0)
    assert [at for at, _ in steps] == [link.now]


def test_the_viewers_request_is_a_ceiling() -> None:
    """A viewer on ``low`` goes to off on loss and comes back to low, not high."""
    link = Link(LossGuard(0.0))
    link.run(1, 0.0, LOW)
    assert levels(link.run(2, 0.2, LOW)) == [OFF]
    assert levels(link.run(int(CLEAN_FOR), 0.0, LOW)) == [LOW]
    # Up to the request is all the way: nothing is held back any more.
    assert link.guard.cap is HIGH
    assert link.guard.limit(HIGH) is HIGH
    # A viewer who turned video off is never stepped.
    assert link.run(5, 0.3, OFF) == []


def test_one_layer_goes_from_all_to_none_and_back() -> None:
    """Publishers of one layer: loss turns video off, clean turns it on again."""
    link = Link(LossGuard(0.0))
    link.run(1, 0.0, layers=1)
    assert levels(link.run(2, 0.2, layers=1)) == [OFF]
    assert levels(link.run(int(CLEAN_FOR), 0.0, layers=1)) == [HIGH]


def test_a_step_up_that_brings_loss_back_waits_longer_next_time() -> None:
    """Loss right after a step up doubles the clean time asked for the next."""
    link = Link(LossGuard(0.0))
    link.run(1, 0.0, layers=1)
    link.run(2, 0.2, layers=1)
    link.run(int(CLEAN_FOR), 0.0, layers=1)
    assert levels(link.run(2, 0.2, layers=1)) == [OFF]
    assert link.run(int(CLEAN_FOR), 0.0, layers=1) == []
    assert levels(link.run(int(CLEAN_FOR), 0.0, layers=1)) == [HIGH]

    for _ in range(6):
        # Loss again right after each step up.
        link.run(2, 0.2, layers=1)
        while not link.run(1, 0.0, layers=1):
            pass
    # Never longer than the most; a step up that held brings it back down.
    assert link.guard._clean_for == MAX_CLEAN_FOR
    link.run(int(MAX_CLEAN_FOR), 0.0, layers=1)
    link.run(2, 0.2, layers=1)
    assert link.guard._clean_for == CLEAN_FOR


def test_few_packets_are_not_judged_and_sequence_numbers_wrap() -> None:
    """A quiet window is not lossy; aiortc's 16-bit highest sequence wraps."""
    guard = LossGuard(0.0)
    guard.reports([(7, 65_530, 0)], 0.0)
    # 4 packets, 2 lost: too few to say 50 %.
    guard.reports([(7, 65_534, 2)], 1.0)
    guard.reports([(7, 65_534, 2)], 2.0)
    assert guard.decide(HIGH, 2, 2.0) is None
    # Across the wrap: 40 packets, 8 of them lost, twice.
    guard.reports([(7, 38, 10)], 3.0)
    guard.reports([(7, 78, 18)], 4.0)
    assert guard.loss == pytest.approx(0.2)
    step = guard.decide(HIGH, 2, 4.0)
    assert step is not None
    assert step.level is LOW


def test_a_report_on_a_quiet_stream_alone_joins_the_next_window() -> None:
    """Reports of a few video packets between audio reports keep a loss run."""
    audio, video = 1, 2
    guard = LossGuard(0.0)
    guard.reports([(audio, 0, 0), (video, 0, 0)], 0.0)
    # A second of audio, a fifth of it lost: one lossy window.
    guard.reports([(audio, 50, 10)], 1.0)
    assert guard.decide(HIGH, 1, 1.0) is None
    # A second later, a report on six video packets alone: too few to judge,
    # and no reason to forget the lossy window before it.
    guard.reports([(video, 6, 1)], 2.0)
    assert guard.decide(HIGH, 1, 2.0) is None
    # Half a second on, the audio report closes the window both are in.
    guard.reports([(audio, 75, 15)], 2.5)
    step = guard.decide(HIGH, 1, 2.5)
    assert step is not None
    assert step.level is OFF
    assert step.loss == pytest.approx(6 / 31)


def test_a_quiet_link_closes_its_windows_and_steps_up_only_if_nothing_is_lost() -> None:
    """Video off and nobody speaking: a few packets a second still say enough."""
    guard = LossGuard(0.0)
    link = Link(guard)
    link.run(1, 0.0, layers=1)
    assert levels(link.run(2, 0.2, layers=1)) == [OFF]
    stepped = link.now
    # Two packets a second, one lost now and then: never clean, never up.
    highest, lost = link._sent[1], link._lost[1]
    for second in range(1, int(3 * CLEAN_FOR)):
        highest += 2
        lost += second % 4 == 0
        guard.reports([(1, highest, lost)], stepped + second)
        assert guard.decide(HIGH, 1, stepped + second) is None
    # The same with nothing lost: clean, and up after the clean time.
    quiet = stepped + 3 * CLEAN_FOR
    steps = []
    for second in range(int(2 * CLEAN_FOR)):
        highest += 2
        guard.reports([(1, highest, lost)], quiet + second)
        step = guard.decide(HIGH, 1, quiet + second)
        if step is not None:
            steps.append((quiet + second, step))
    assert levels(steps) == [HIGH]
    # The clean time counts from the last window that lost: a quiet window
    # closes at most QUIET_WINDOW after it opened.
    assert steps[0][0] - quiet <= CLEAN_FOR + QUIET_WINDOW


#: Share of the RTP packets the weak viewer's link drops.
LOSS = 0.2


async def test_a_lossy_viewer_loses_video_keeps_audio_and_gets_video_back(
    room: MediaRoom, joined: Joined
) -> None:
    """Only the lossy viewer steps down, within seconds, hears on, and comes back."""
    notices: dict[str, list[VideoQualityChanged]] = {"weak": [], "steady": []}

    async def viewer(name: str) -> SoundAndPicturePeer:
        peer = SoundAndPicturePeer(name, None, video_slots=1)
        offer = await peer.offer()
        await peer.accept(await room.answer(name, offer, notify=notices[name].append))
        await peer.connected()
        return peer

    await joined(SoundAndPicturePeer("host", TONE, RED, slots=0))
    weak, steady = await viewer("weak"), await viewer("steady")
    joined_also = [weak, steady]
    try:
        await room.set_speakers(["host"])
        room.set_video({name: [("host", VideoKind.CAMERA)] for name in notices})
        for peer in joined_also:
            await eventually(partial(peer.seen.sees, RED), 8.0, "the camera")
            await hears(peer, TONE)

        weak.lose(LOSS)
        started = time.monotonic()
        await eventually(
            lambda: room.video_quality("weak") is OFF,
            8.0,
            "the weak viewer's video off",
        )
        stepped_down = time.monotonic() - started
        assert notices["weak"] == [
            VideoQualityChanged(
                room="room-1",
                requested=HIGH,
                forwarded=OFF,
                reason=VideoChangeReason.LOSS,
                loss=notices["weak"][0].loss,
            )
        ]
        assert notices["weak"][0].loss > 0.1

        # While its link stays lossy: no pictures, but the tone all along.
        off = time.monotonic() + 0.5
        for _ in range(3):
            await asyncio.sleep(1.0)
            await hears(weak, TONE, within=1.0)
        assert not weak.seen.pictures(since=off), weak.seen.describe(off)
        assert weak.dropped > 0.1 * weak.arrived
        assert room.video_quality("steady") is HIGH
        assert steady.seen.sees(RED, since=off)

        weak.lose(0.0)
        clean = time.monotonic()
        await eventually(
            lambda: room.video_quality("weak") is HIGH,
            CLEAN_FOR + 5.0,
            "the weak viewer's video back",
        )
        stepped_up = time.monotonic() - clean
        await eventually(
            lambda: weak.seen.sees(RED, since=clean), 3.0, "pictures again"
        )
        assert [n.forwarded for n in notices["weak"]] == [OFF, HIGH]
        assert notices["weak"][1].reason is VideoChangeReason.RECOVERED
        # The clean time counts from the end of the last window that lost,
        # which may close a little before the loss stopped.
        assert stepped_up >= CLEAN_FOR - 1.5 * WINDOW
        assert notices["steady"] == []
        assert room.video_quality("steady") is HIGH
        logger.info(
            "stepped down after %.1f s, up after %.1f s", stepped_down, stepped_up
        )
    finally:
        await room.close()
        await asyncio.gather(*(peer.close() for peer in joined_also))


async def test_a_lossy_viewer_of_two_layers_steps_down_twice_and_up_twice(
    room: MediaRoom, joined: Joined
) -> None:
    """Simulcast: high to low to off while loss goes on, then low and high again."""
    notices: list[VideoQualityChanged] = []
    await joined(SimulcastCameraPeer("host", RED, TONE))
    weak = SoundAndPicturePeer("weak", None, video_slots=1)
    await weak.accept(
        await room.answer("weak", await weak.offer(), notify=notices.append)
    )
    await weak.connected()
    steady = await joined(SoundAndPicturePeer("steady", None, video_slots=1))
    try:
        await room.set_speakers(["host"])
        room.set_video(
            {name: [("host", VideoKind.CAMERA)] for name in ("weak", "steady")}
        )

        def sized(
            peer: SoundAndPicturePeer, size: tuple[int, int], since: float
        ) -> bool:
            return any(
                (p.width, p.height) == size for p in peer.seen.pictures(since=since)
            )

        start = time.monotonic()
        for peer in (weak, steady):
            await eventually(partial(sized, peer, SIZE, start), 8.0, "the full layer")
        assert room.video_layers("weak") == 2

        weak.lose(LOSS)
        lossy = time.monotonic()
        await eventually(lambda: room.video_quality("weak") is LOW, 8.0, "low")
        at_low = time.monotonic() - lossy
        await eventually(lambda: room.video_quality("weak") is OFF, 8.0, "off")
        at_off = time.monotonic() - lossy
        await hears(weak, TONE, within=1.0)

        weak.lose(0.0)
        clean = time.monotonic()
        await eventually(
            lambda: room.video_quality("weak") is LOW, CLEAN_FOR + 5.0, "low again"
        )
        back_low = time.monotonic() - clean
        await eventually(lambda: sized(weak, LOW_SIZE, clean), 3.0, "the small layer")
        await eventually(
            lambda: room.video_quality("weak") is HIGH, CLEAN_FOR + 5.0, "high again"
        )
        back_high = time.monotonic() - clean
        full = time.monotonic()
        await eventually(lambda: sized(weak, SIZE, full), 3.0, "the full layer again")

        assert [(n.forwarded, n.reason) for n in notices] == [
            (LOW, VideoChangeReason.LOSS),
            (OFF, VideoChangeReason.LOSS),
            (LOW, VideoChangeReason.RECOVERED),
            (HIGH, VideoChangeReason.RECOVERED),
        ]
        assert room.video_quality("steady") is HIGH
        assert sized(steady, SIZE, full - 1.0)
        logger.info(
            "two layers: low after %.1f s, off after %.1f s of loss; "
            "low after %.1f s, high after %.1f s clean",
            at_low,
            at_off,
            back_low,
            back_high,
        )
    finally:
        await room.close()
        await weak.close()


async def test_a_viewers_request_holds_while_its_link_is_protected(
    room: MediaRoom, joined: Joined
) -> None:
    """Asking for ``high`` on a lossy link is answered with what it really gets."""
    await joined(SoundAndPicturePeer("host", TONE, RED, slots=0))
    weak = await joined(SoundAndPicturePeer("weak", None, video_slots=1))
    room.set_video({"weak": [("host", VideoKind.CAMERA)]})
    await eventually(lambda: weak.seen.sees(RED), 8.0, "the camera")
    weak.lose(LOSS)
    await eventually(lambda: room.video_quality("weak") is OFF, 8.0, "video off")
    assert room.set_video_quality("weak", HIGH) is OFF
    assert room.set_video_quality("weak", LOW) is OFF
    protection = room.video_protection("weak")
    assert protection is not None
    assert protection.guard.steps_down == 1
