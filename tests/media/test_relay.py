"""Forwarding between real aiortc peers over loopback: who hears whom, and when."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender
from aiortc.sdp import SessionDescription

from media.errors import BadCandidate, BadOffer, RoomClosed, UnknownParticipant
from media.relay import MediaRoom, PeerState
from media.video import VideoKind
from tests.media.conftest import Join, hears, tone_of
from tests.media.peer import TonePeer, ToneTrack, band_share, eventually, peak

pytestmark = pytest.mark.timeout(60)


async def test_speaker_reaches_listeners_and_others_reach_nobody(
    room: MediaRoom, join: Join
) -> None:
    """A speaker's 440 Hz reaches B and C; D's 880 Hz reaches nobody."""
    a = await join("A", 440)
    b = await join("B", None)
    c = await join("C", None)
    d = await join("D", 880)
    await room.set_speakers(["A"])

    started = await hears(b, 440)
    await hears(c, 440)
    await hears(d, 440)
    await asyncio.sleep(1.0)

    for listener in (b, c, d):
        heard = listener.audio(started)
        found = peak(heard)
        assert found is not None
        assert abs(found.frequency - 440) <= 5
        assert band_share(heard, 880) < 0.01
    assert a.heard == []
    assert room.forwarding("B") == ("A",)
    assert room.forwarding("A") == (None,)


async def test_speaker_taken_off_stops_within_half_a_second(
    room: MediaRoom, join: Join
) -> None:
    """After set_speakers without A, A's tone stops reaching listeners in 500 ms."""
    await join("A", 440)
    b = await join("B", None)
    c = await join("C", None)
    await room.set_speakers(["A"])
    await hears(b, 440)
    await hears(c, 440)

    taken_off = time.monotonic()
    await room.set_speakers([])
    await asyncio.sleep(1.0)

    for listener in (b, c):
        last = listener.last_heard(tone_of(440))
        assert last is not None
        assert last - taken_off < 0.5
        assert peak(listener.audio(taken_off + 0.5)) is None
    assert room.forwarding("B") == (None,)


async def test_switching_speaker_switches_what_listeners_hear(
    room: MediaRoom, join: Join
) -> None:
    """Replacing A by D as speaker: B hears 880 Hz, no more 440, within 500 ms."""
    await join("A", 440)
    b = await join("B", None)
    await join("D", 880)
    await room.set_speakers(["A"])
    await hears(b, 440)

    switched = time.monotonic()
    await room.set_speakers(["D"])
    first_880 = await hears(b, 880, window=0.2)
    await asyncio.sleep(0.6)

    assert first_880 - switched < 0.5
    last_440 = b.last_heard(tone_of(440))
    assert last_440 is not None
    assert last_440 - switched < 0.5
    late = b.audio(switched + 0.5)
    assert band_share(late, 440) < 0.01
    assert room.forwarding("B") == ("D",)


async def test_listener_never_hears_itself(room: MediaRoom, join: Join) -> None:
    """Two speakers with one slot each hear each other, never themselves."""
    a = await join("A", 440)
    d = await join("D", 880)
    await room.set_speakers(["A", "D"])

    await hears(a, 880)
    await hears(d, 440)
    await asyncio.sleep(0.5)

    assert band_share(a.audio(0), 440) < 0.01
    assert band_share(d.audio(0), 880) < 0.01
    assert room.forwarding("A") == ("D",)
    assert room.forwarding("D") == ("A",)


async def test_slots_carry_speakers_in_order_and_keep_them(
    room: MediaRoom, join: Join
) -> None:
    """Two slots hear the first two speakers; a speaker keeps their slot."""
    await join("A", 440)
    b = await join("B", None, slots=2)
    await join("D", 880)
    await join("E", 660)

    await room.set_speakers(["A", "D", "E"])
    assert room.forwarding("B") == ("A", "D")
    await hears(b, 440)

    await room.set_speakers(["E", "D"])
    assert room.forwarding("B") == ("E", "D")
    await room.set_speakers(["D"])
    assert room.forwarding("B") == (None, "D")
    await hears(b, 880)


async def test_speaker_leaving_frees_the_slot(room: MediaRoom, join: Join) -> None:
    """A speaker who leaves is replaced by the next speaker on listeners' slots."""
    await join("A", 440)
    b = await join("B", None)
    await join("D", 880)
    await room.set_speakers(["A", "D"])
    assert room.forwarding("B") == ("A",)

    await room.remove("A")

    assert room.participants == ("B", "D")
    assert room.forwarding("B") == ("D",)
    await hears(b, 880)


async def test_voice_activity_of_speakers_only(room: MediaRoom, join: Join) -> None:
    """Speakers get a voice-activity figure: a tone speaks, silence does not."""
    await join("A", 440)
    await join("Q", 440, amplitude=0.0)
    await join("D", 880)
    await room.set_speakers(["A", "Q"])
    await asyncio.sleep(1.0)

    loud = room.activity("A")
    quiet = room.activity("Q")
    assert loud is not None
    assert quiet is not None
    assert loud.speaking
    assert loud.level_dbov > -25
    assert loud.voiced_seconds > 0.5
    assert not quiet.speaking
    assert quiet.voiced_seconds == 0
    assert quiet.heard_seconds > 0.5
    assert room.activity("D") is None


async def test_connection_states_reported(join: Join) -> None:
    """The state listener hears each participant's connection come up."""
    states: list[tuple[str, PeerState]] = []
    media = MediaRoom("room-2", on_state=lambda who, state: states.append((who, state)))
    peer = TonePeer("A", 440)
    try:
        await peer.accept(await media.answer("A", await peer.offer()))
        await peer.connected()
        await eventually(
            lambda: media.state("A") is PeerState.CONNECTED, 5, "server side up"
        )
    finally:
        await media.close()
        await peer.close()
    assert ("A", PeerState.CONNECTED) in states


async def test_offer_without_opus_or_known_video_refused(room: MediaRoom) -> None:
    """An offer that is not SDP, or has neither Opus nor VP8/H.264, is refused."""
    with pytest.raises(BadOffer):
        await room.answer("A", "hello")
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver("audio", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        only_pcm = pc.localDescription.sdp.replace("opus/48000/2", "L16/48000/2")
    finally:
        await pc.close()
    with pytest.raises(BadOffer, match=r"no Opus audio or VP8/H\.264 video"):
        await room.answer("A", only_pcm)
    assert room.participants == ()


async def test_video_lines_are_answered_per_role_in_the_offer(room: MediaRoom) -> None:
    """Camera and screen are received, a third sender is not; one codec per line."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver(ToneTrack(440), direction="sendrecv")
        for _ in range(3):
            pc.addTransceiver("video", direction="sendonly")
        pc.addTransceiver("video", direction="recvonly")
        h264_only = pc.addTransceiver("video", direction="recvonly")
        h264_only.setCodecPreferences(
            [
                c
                for c in RTCRtpSender.getCapabilities("video").codecs
                if c.mimeType in ("video/H264", "video/rtx")
            ]
        )
        await pc.setLocalDescription(await pc.createOffer())
        answer = await room.answer("A", pc.localDescription.sdp)
    finally:
        await pc.close()
    media = SessionDescription.parse(answer).media
    assert [(m.kind, m.direction) for m in media] == [
        ("audio", "sendrecv"),
        ("video", "recvonly"),
        ("video", "recvonly"),
        ("video", "inactive"),
        ("video", "sendonly"),
        ("video", "sendonly"),
    ]
    assert [c.mimeType for c in media[0].rtp.codecs] == ["audio/opus"]
    assert {c.mimeType for c in media[1].rtp.codecs} == {"video/VP8", "video/rtx"}
    assert {c.mimeType for c in media[5].rtp.codecs} == {"video/H264", "video/rtx"}
    assert set(room.published("A")) == {VideoKind.CAMERA, VideoKind.SCREEN}


async def test_candidates_and_unknown_participants(room: MediaRoom, join: Join) -> None:
    """Trickled candidates are parsed; unknown ids and junk raise media errors."""
    await join("A", 440)
    await room.add_candidate(
        "A",
        "candidate:1 1 udp 2122260223 127.0.0.1 40000 typ host",
        sdp_mid="0",
    )
    await room.add_candidate("A", None)
    with pytest.raises(BadCandidate):
        await room.add_candidate("A", "candidate:nonsense", sdp_mid="0")
    with pytest.raises(UnknownParticipant):
        await room.add_candidate("Z", None)
    with pytest.raises(UnknownParticipant):
        room.forwarding("Z")


async def test_offering_again_replaces_the_connection(
    room: MediaRoom, join: Join
) -> None:
    """A second offer from a participant replaces the first connection."""
    first = await join("A", 440)
    b = await join("B", None)
    await room.set_speakers(["A"])
    await hears(b, 440)

    second = await join("A", 660)

    await hears(b, 660)
    assert room.participants == ("B", "A")
    await eventually(
        lambda: first.pc.connectionState in ("closed", "failed", "disconnected"),
        5,
        "first connection down",
    )
    assert second.pc.connectionState == "connected"


async def test_closed_room_refuses(room: MediaRoom, join: Join) -> None:
    """After close, offers and speaker changes raise RoomClosed."""
    a = await join("A", 440)
    await room.close()
    await room.close()

    assert room.participants == ()
    late = TonePeer("B", None)
    try:
        with pytest.raises(RoomClosed):
            await room.answer("B", await late.offer())
    finally:
        await late.close()
    with pytest.raises(RoomClosed):
        await room.set_speakers(["A"])
    await eventually(lambda: a.pc.connectionState != "connected", 5, "connection down")
