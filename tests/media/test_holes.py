"""A video packet lost twice: asked for again, then given up on in time.

At an SDK viewer for a loss on its own link, at the relay for a loss on a
publisher's link, one stream or one simulcast layer.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time

import pytest
from aiortc import RTCDtlsTransport
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import RtpPacket, is_rtcp

from client_sdk.holes import GIVE_UP, drop_hole, waiting_on
from media.relay import MediaRoom
from media.video import VideoKind
from tests.media.conftest import Joined
from tests.media.peer import eventually
from tests.media.video_peer import (
    SIZE,
    CameraPeer,
    SimulcastCameraPeer,
    drop_arriving,
)

pytestmark = pytest.mark.timeout(60)

RED = (220, 30, 30)
#: The RTP video clock ticks of one frame at 10 frames a second.
TICK = 9_000


def buffered(
    count: int, missing: set[int], per_frame: int = 2, start: int = 0
) -> tuple[JitterBuffer, list[int], int]:
    """An aiortc video jitter buffer given ``count`` packets but ``missing``.

    Packets are numbered from ``start``, ``per_frame`` to a frame; returns
    the buffer, the frames (by number) it handed on, and the highest
    sequence number given.
    """
    buffer = JitterBuffer(capacity=512, is_video=True)
    frames = []
    highest = start
    for index in range(count):
        if index in missing:
            continue
        highest = (start + index) % 65536
        packet = RtpPacket(sequence_number=highest, timestamp=index // per_frame * TICK)
        packet._data = b"x"  # type: ignore[attr-defined]
        _, frame = buffer.add(packet)
        if frame is not None:
            frames.append(frame.timestamp // TICK)
    return buffer, frames, highest


def test_a_hole_holds_the_frame_before_it_and_all_after() -> None:
    """aiortc hands on no frame past a missing packet; the hole is found."""
    buffer, frames, highest = buffered(40, {10})
    # Frame 4 (packets 8 and 9) is whole but waits for frame 5's start.
    assert frames == [0, 1, 2, 3]
    assert waiting_on(buffer, highest) == 10
    # The last packet missing, with nothing after it: no hole yet.
    buffer, frames, highest = buffered(40, {39})
    assert waiting_on(buffer, highest) is None
    assert frames[-1] == 18


@pytest.mark.parametrize("start", [0, 65_530])
def test_dropping_a_hole_lets_the_next_whole_frame_through(start: int) -> None:
    """Up to the hole and the rest of its frame go; the frames after come out."""
    buffer, _, highest = buffered(40, {10}, start=start)
    hole = waiting_on(buffer, highest)
    assert hole == (start + 10) % 65536
    dropped = drop_hole(buffer, hole, highest)
    assert dropped == [(start + n) % 65536 for n in (8, 9, 10, 11)]
    assert waiting_on(buffer, highest) is None
    packet = RtpPacket(sequence_number=(start + 40) % 65536, timestamp=20 * TICK)
    packet._data = b"x"  # type: ignore[attr-defined]
    _, frame = buffer.add(packet)
    assert frame is not None
    assert frame.timestamp == 6 * TICK


def test_a_hole_in_the_last_frame_drops_no_more_than_was_received() -> None:
    """With nothing after the hole's frame, the buffer stops at what came."""
    buffer, _, highest = buffered(40, {38})
    hole = waiting_on(buffer, highest)
    assert hole == 38
    assert drop_hole(buffer, hole, highest) == [36, 37, 38, 39]
    assert buffer._origin == 40


class LostTwice:
    """A link that loses one video packet and its retransmissions.

    Armed, it drops the next media packet to pass and the first
    ``retransmissions`` RTX packets (RFC 4588) carrying it again. It sits
    on a viewer's transport where packets arrive, or on a publisher's where
    they leave.
    """

    def __init__(self, sdp: str) -> None:
        """``sdp`` negotiated the RTX payload types (RFC 4588) to tell apart."""
        self.lost: int | None = None
        self.retransmissions_lost = 0
        self._retransmissions = 0
        self._armed = False
        self._ssrc: int | None = None
        self._rtx_types = {int(t) for t in re.findall(r"a=rtpmap:(\d+) rtx/", sdp)}
        assert self._rtx_types, "no retransmission stream negotiated"

    def on_arrival(self, transport: RTCDtlsTransport) -> None:
        """Lose packets as they arrive at ``transport``, decrypted."""
        drop_arriving(transport, self._drops)

    def on_departure(self, transport: RTCDtlsTransport) -> None:
        """Lose packets as they leave ``transport``, before encryption."""
        send = transport._send_rtp

        async def sent(data: bytes) -> None:
            if is_rtcp(data) or not self._drops(data):
                await send(data)

        setattr(transport, "_send_rtp", sent)  # noqa: B010

    def arm(self, retransmissions: int, ssrc: int | None = None) -> None:
        """Lose the next media packet (of ``ssrc``, if given) and its resends."""
        self._retransmissions = retransmissions
        self._ssrc = ssrc
        self._armed = True

    def _drops(self, data: bytes) -> bool:
        packet = RtpPacket.parse(data)
        if packet.payload_type in self._rtx_types:
            original = int.from_bytes(packet.payload[:2], "big")
            if original == self.lost and (
                self.retransmissions_lost < self._retransmissions
            ):
                self.retransmissions_lost += 1
                return True
            return False
        if self._armed and packet.payload and self._ssrc in (None, packet.ssrc):
            self._armed = False
            self.lost = packet.sequence_number
            return True
        return False


async def watching(
    room: MediaRoom, joined: Joined, weak: str
) -> tuple[CameraPeer, CameraPeer, LostTwice]:
    """A red host and a viewer; the ``weak`` one's link can lose a packet twice."""
    host = await joined(CameraPeer("host", RED))
    viewer = await joined(CameraPeer("viewer", slots=1))
    room.set_video({"viewer": [("host", VideoKind.CAMERA)]})
    await eventually(lambda: viewer.seen.sees(RED), 8.0, "the host's camera")
    peer = host if weak == "host" else viewer
    link = LostTwice(peer.pc.remoteDescription.sdp)
    transport = peer.pc.getTransceivers()[0].sender.transport
    if weak == "host":
        link.on_departure(transport)
    else:
        link.on_arrival(transport)
    return host, viewer, link


def longest_wait(
    viewer: CameraPeer, since: float, until: float, size: tuple[int, int] | None = None
) -> float:
    """The longest time without a picture (of ``size``) in a span."""
    pictures = viewer.seen.pictures(since=since)
    if size is not None:
        pictures = [p for p in pictures if (p.width, p.height) == size]
    times = [since, *(p.at for p in pictures), until]
    return max(b - a for a, b in itertools.pairwise(times))


@pytest.mark.parametrize("weak", ["viewer", "host"])
async def test_a_packet_whose_retransmission_is_lost_is_asked_for_again(
    room: MediaRoom, joined: Joined, weak: str
) -> None:
    """The picture goes on within a fraction of a second, with no keyframe.

    On the viewer's link the SDK asks the server again; on the host's, the
    server asks the host again.
    """
    host, viewer, link = await watching(room, joined, weak)
    await asyncio.sleep(1.0)
    asked = host.keyframe_requests
    start = time.monotonic()
    link.arm(retransmissions=1)
    await eventually(lambda: link.retransmissions_lost == 1, 3.0, "a NACK answered")
    await asyncio.sleep(3.0)
    # aiortc alone would wait for 512 packets (51 s at 10 frames a second).
    assert longest_wait(viewer, start, time.monotonic()) < 1.0
    assert viewer.seen.sees(RED, since=time.monotonic() - 0.5)
    assert host.keyframe_requests == asked


@pytest.mark.parametrize("weak", ["viewer", "host"])
async def test_a_packet_that_never_comes_is_given_up_for_a_keyframe(
    room: MediaRoom, joined: Joined, weak: str
) -> None:
    """What waits on it is dropped and a keyframe asked for of the host."""
    host, viewer, link = await watching(room, joined, weak)
    await asyncio.sleep(1.0)
    asked = host.keyframe_requests
    start = time.monotonic()
    link.arm(retransmissions=1_000)
    await asyncio.sleep(GIVE_UP + 3.0)
    assert link.retransmissions_lost >= 2
    assert host.keyframe_requests > asked
    assert longest_wait(viewer, start, time.monotonic()) < GIVE_UP + 1.0
    assert viewer.seen.sees(RED, since=time.monotonic() - 0.5)


async def test_a_simulcast_layer_whose_retransmission_is_lost_is_asked_again(
    room: MediaRoom, joined: Joined
) -> None:
    """The server asks again for a packet of the layer a viewer watches."""
    host = await joined(SimulcastCameraPeer("host", RED, None))
    viewer = await joined(CameraPeer("viewer", slots=1))
    room.set_video({"viewer": [("host", VideoKind.CAMERA)]})
    start = time.monotonic()

    def full() -> bool:
        pictures = viewer.seen.pictures(since=start)
        return any((p.width, p.height) == SIZE for p in pictures)

    await eventually(full, 8.0, "the full layer")
    link = LostTwice(host.pc.localDescription.sdp)
    camera = host.pc.getTransceivers()[0].sender
    link.on_departure(camera.transport)
    await asyncio.sleep(1.0)
    start = time.monotonic()
    link.arm(retransmissions=1, ssrc=camera._ssrc)
    await eventually(lambda: link.retransmissions_lost == 1, 3.0, "a NACK answered")
    await asyncio.sleep(3.0)
    # Without it the viewer would get the other layer, as if this one stopped.
    assert longest_wait(viewer, start, time.monotonic(), SIZE) < 1.0
