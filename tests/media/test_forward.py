"""The inbound tap and the slot track, driven packet by packet."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RtpPacket

from media.forward import ForwardTrack, InboundAudio
from media.opus import SILENCE_20MS, OpusPacket

pytestmark = pytest.mark.timeout(10)


@pytest_asyncio.fixture
async def sources() -> AsyncIterator[tuple[InboundAudio, InboundAudio]]:
    """Two taps on the receivers of a real (unconnected) peer connection."""
    pc = RTCPeerConnection()
    first = InboundAudio("A", pc.addTransceiver("audio").receiver, 111)
    second = InboundAudio("D", pc.addTransceiver("audio").receiver, 111)
    yield first, second
    await pc.close()


def _packet(timestamp: int, arrival: float, generation: int = 0) -> OpusPacket:
    return OpusPacket(SILENCE_20MS, timestamp, generation, arrival)


async def _next_pts(track: ForwardTrack) -> int | None:
    async with asyncio.timeout(1):
        packet = await track.recv()
    return packet.pts


async def test_one_source_keeps_its_spacing(
    sources: tuple[InboundAudio, InboundAudio],
) -> None:
    """Within one stream the slot keeps the source's spacing, pauses included."""
    a, _ = sources
    track = ForwardTrack("B", 0)
    track.assign(a)
    now = time.monotonic()
    for ts in (50_000, 50_960, 51_920):
        track.push(_packet(ts, now), a)
    # 100 ms of discontinuous transmission after the third packet.
    track.push(_packet(51_920 + 960 + 4_800, now + 0.1), a)
    assert [await _next_pts(track) for _ in range(4)] == [0, 960, 1920, 7_680]


async def test_switching_source_continues_the_timeline(
    sources: tuple[InboundAudio, InboundAudio],
) -> None:
    """A new source starts after the last packet plus the wall-clock pause."""
    a, d = sources
    track = ForwardTrack("B", 0)
    track.assign(a)
    now = time.monotonic()
    track.push(_packet(7_000, now - 0.1), a)
    assert await _next_pts(track) == 0

    track.assign(d)
    track.push(_packet(3_000_000_000, now), d)
    track.push(_packet(3_000_000_960, now), d)

    assert await _next_pts(track) == 4_800
    assert await _next_pts(track) == 5_760


async def test_late_stale_and_jumping_packets(
    sources: tuple[InboundAudio, InboundAudio],
) -> None:
    """Late repeats and stale packets are dropped; a clock jump is resynchronised."""
    a, _ = sources
    track = ForwardTrack("B", 0)
    track.assign(a)
    now = time.monotonic()
    track.push(_packet(10_000, now), a)
    track.push(_packet(10_000, now), a)  # repeated
    track.push(_packet(10_960, now - 1.0), a)  # waited too long somewhere
    track.push(_packet(10_000 + 10 * 48_000, now), a)  # ten seconds ahead
    track.push(_packet(10_000 + 10 * 48_000 + 960, now, generation=1), a)

    assert await _next_pts(track) == 0
    assert await _next_pts(track) == 960
    assert await _next_pts(track) == 1_920


async def test_assign_flushes_and_stop_ends_recv(
    sources: tuple[InboundAudio, InboundAudio],
) -> None:
    """Switching away drops queued packets; stop wakes a waiting recv."""
    a, d = sources
    track = ForwardTrack("B", 0)
    track.assign(a)
    track.push(_packet(0, time.monotonic()), a)
    track.assign(d)
    assert track not in a.outlets
    assert track in d.outlets

    waiting = asyncio.create_task(track.recv())
    await asyncio.sleep(0.01)
    track.stop()

    with pytest.raises(MediaStreamError):
        await waiting
    assert track not in d.outlets
    with pytest.raises(MediaStreamError):
        await track.recv()


async def test_tap_forwards_opus_only(
    sources: tuple[InboundAudio, InboundAudio],
) -> None:
    """The tap passes Opus payloads to outlets and sink, and drops other types."""
    a, _ = sources
    track = ForwardTrack("B", 0)
    track.assign(a)
    sunk: list[OpusPacket] = []
    a.sink = sunk.append
    opus = RtpPacket(payload_type=111, sequence_number=1, timestamp=5, ssrc=9)
    opus.payload = SILENCE_20MS
    other = RtpPacket(payload_type=0, sequence_number=2, timestamp=6, ssrc=9)
    other.payload = b"\x00" * 160
    empty = RtpPacket(payload_type=111, sequence_number=3, timestamp=7, ssrc=9)

    for packet in (opus, other, empty):
        await a._handle_rtp_packet(packet, 0)

    assert a.received == 1
    assert a.dropped == 2
    assert [p.payload for p in sunk] == [SILENCE_20MS]
    assert await _next_pts(track) == 0
    track.stop()
