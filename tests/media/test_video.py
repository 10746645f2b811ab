"""Video pass-through: keyframes, slot timelines, who sees what, real peers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import av
import pytest
import pytest_asyncio
from aiortc import RTCPeerConnection

from client_sdk.protocol import LinkedClass, Member, Role, VideoLayer
from client_sdk.video import PatternTrack
from media.relay import MediaRoom
from media.video import (
    SLOT_QUEUE,
    InboundVideo,
    VideoCodec,
    VideoForwardTrack,
    VideoKind,
    VideoTimeline,
    is_keyframe,
)
from media.viewing import video_routes
from tests.media.conftest import Joined, hears
from tests.media.peer import eventually
from tests.media.video_peer import CameraPeer, SoundAndPicturePeer

pytestmark = pytest.mark.timeout(60)

RED = (220, 30, 30)
BLUE = (30, 30, 220)
GREEN = (30, 200, 30)
CAMERA, SCREEN = VideoKind.CAMERA, VideoKind.SCREEN


def vp8_frames(count: int) -> list[bytes]:
    """``count`` frames of a real VP8 stream: a keyframe, then deltas."""
    encoder = av.CodecContext.create("libvpx", "w")
    encoder.width, encoder.height, encoder.pix_fmt = 64, 48, "yuv420p"
    encoder.options = {"deadline": "realtime", "lag-in-frames": "0"}
    track = PatternTrack(RED, 64, 48)
    frames = []
    for n in range(count):
        picture = track.picture(n)
        frames += [bytes(packet) for packet in encoder.encode(picture)]
    return frames


def test_keyframes_are_told_from_the_codec_headers() -> None:
    """A VP8 stream starts with a keyframe; an H.264 IDR unit is one, a P slice not."""
    frames = vp8_frames(4)
    assert [is_keyframe(VideoCodec.VP8, f) for f in frames] == [
        True,
        False,
        False,
        False,
    ]
    sps_idr = b"\x00\x00\x00\x01\x67\x42\x00\x1f\x00\x00\x01\x65\x88\x84"
    p_slice = b"\x00\x00\x00\x01\x41\x9a\x00"
    assert is_keyframe(VideoCodec.H264, sps_idr)
    assert not is_keyframe(VideoCodec.H264, p_slice)
    assert not is_keyframe(VideoCodec.VP8, b"")


def test_timeline_keeps_spacing_and_continues_across_sources() -> None:
    """Within a source its spacing is kept; a new source follows on, never back."""
    timeline = VideoTimeline()
    a, b = object(), object()
    assert timeline.place(a, 1000, 10.0) == 0
    assert timeline.place(a, 4000, 10.033) == 3000
    assert timeline.place(a, 4000, 10.04) is None
    # b's clock is elsewhere; it starts where a's time has got to.
    placed = timeline.place(b, 9_000_000, 10.5)
    assert placed == 3000 + round(0.467 * 90_000)
    assert timeline.place(b, 9_003_000, 10.533) == placed + 3000
    # A jump of minutes in the same source is a restart, not a leap.
    after = timeline.place(b, 90_000_000, 10.6)
    assert after is not None
    assert 0 < after - placed - 3000 <= 90_000


@pytest_asyncio.fixture
async def inbound() -> AsyncIterator[Callable[[str], InboundVideo]]:
    """Publishers' inbound tracks on real (unconnected) aiortc receivers."""
    pc = RTCPeerConnection()

    def make(name: str) -> InboundVideo:
        return InboundVideo(name, CAMERA, pc.addTransceiver("video").receiver)

    yield make
    await pc.close()


async def test_slot_starts_at_a_keyframe_and_restarts_after_overflow(
    inbound: Callable[[str], InboundVideo],
) -> None:
    """Deltas before a keyframe are skipped; a full queue waits for the next key."""
    key, *deltas = vp8_frames(SLOT_QUEUE + 3)
    source = inbound("a")
    slot = VideoForwardTrack("viewer", 0, VideoCodec.VP8)
    slot.assign(source)

    source._frame("VP8", deltas[0], 0)
    assert slot.skipped == 1
    source._frame("VP8", key, 3000)
    source._frame("VP8", deltas[1], 6000)
    first, second = await slot.recv(), await slot.recv()
    assert (bytes(first), first.pts) == (key, 0)
    assert (bytes(second), second.pts) == (deltas[1], 3000)

    # Nobody reads: the queue fills, and then only a keyframe restarts it.
    for n, delta in enumerate(deltas[2:], start=3):
        source._frame("VP8", delta, n * 3000)
    source._frame("VP8", key, 99_000)
    restarted = await slot.recv()
    assert bytes(restarted) == key
    assert slot._queue.empty()

    # An H.264 frame cannot go out on a VP8 slot.
    source._frame("H264", b"\x00\x00\x00\x01\x65\x88", 102_000)
    assert slot._queue.empty()
    slot.stop()


async def test_a_slot_turned_off_forwards_nothing_then_restarts_at_a_keyframe(
    inbound: Callable[[str], InboundVideo],
) -> None:
    """``off`` drops every frame; ``high`` again waits for the next keyframe."""
    key, *deltas = vp8_frames(4)
    source = inbound("a")
    slot = VideoForwardTrack("viewer", 0, VideoCodec.VP8)
    slot.assign(source)
    source._frame("VP8", key, 0)

    assert slot.set_layer(VideoLayer.LOW) is VideoLayer.HIGH
    assert slot.set_layer(VideoLayer.OFF) is VideoLayer.OFF
    assert slot._queue.empty()
    source._frame("VP8", key, 3000)
    source._frame("VP8", deltas[0], 6000)
    assert slot._queue.empty()

    assert slot.set_layer(VideoLayer.HIGH) is VideoLayer.HIGH
    source._frame("VP8", deltas[1], 9000)
    assert slot._queue.empty()
    source._frame("VP8", key, 12_000)
    assert bytes(await slot.recv()) == key
    slot.stop()


def test_routes_follow_roles_and_the_stage() -> None:
    """Host to all; classes to teachers only; the stage class to all; no one else."""

    def member(user: str, role: Role, school: str = "A") -> Member:
        return Member(user=user, name=user, role=role, school=school, class_="7")

    people = [
        member("host", Role.TEACHER),
        member("co-b", Role.CO_TEACHER, "B"),
        member("dev-a", Role.CLASSROOM),
        member("dev-b", Role.CLASSROOM, "B"),
        member("kid-a", Role.STUDENT),
        member("kid-b", Role.STUDENT, "B"),
    ]
    members = {m.user: m for m in people}
    routes = video_routes(members, "host", None)
    host_tracks = [("host", CAMERA), ("host", SCREEN)]
    assert routes["kid-a"] == host_tracks
    assert routes["dev-b"] == host_tracks
    assert routes["co-b"] == [*host_tracks, ("dev-a", CAMERA), ("dev-b", CAMERA)]
    assert routes["host"] == [("dev-a", CAMERA), ("dev-b", CAMERA)]

    staged = video_routes(members, "host", LinkedClass(school="B", class_="7"))
    on_stage = [("dev-b", CAMERA), ("kid-b", CAMERA)]
    assert staged["kid-a"] == [*host_tracks, *on_stage]
    assert staged["dev-a"] == [*host_tracks, *on_stage]
    assert staged["kid-b"] == [*host_tracks, ("dev-b", CAMERA)]
    assert ("kid-a", CAMERA) not in {s for r in staged.values() for s in r}


Connect = Callable[..., Awaitable[CameraPeer]]


@pytest.fixture
def connect(joined: Joined) -> Connect:
    """Connects :class:`CameraPeer` objects to the room, signaling by hand."""

    async def make(
        name: str, *colours: tuple[int, int, int], slots: int = 0
    ) -> CameraPeer:
        return await joined(CameraPeer(name, *colours, slots=slots))

    return make


async def watching_host(room: MediaRoom, connect: Connect) -> CameraPeer:
    """A red host and a viewer with one slot, once the viewer sees red."""
    await connect("host", RED)
    viewer = await connect("viewer", slots=1)
    room.set_video({"viewer": [("host", CAMERA)]})
    await eventually(lambda: viewer.seen.sees(RED), 8.0, "the host's camera")
    return viewer


async def test_camera_and_screen_reach_a_viewer(
    room: MediaRoom, connect: Connect
) -> None:
    """A viewer with two slots decodes the host's camera and screen colours."""
    await connect("host", RED, BLUE)
    viewer = await connect("viewer", slots=2)
    room.set_video({"viewer": [("host", CAMERA), ("host", SCREEN)]})
    assert room.forwarding_video("viewer") == (("host", CAMERA), ("host", SCREEN))

    def both() -> bool:
        return viewer.seen.sees(RED) and viewer.seen.sees(BLUE)

    await eventually(both, 8.0, f"red and blue; saw {viewer.seen.describe()}")
    camera = room.published("host")[CAMERA]
    assert camera.received > 0
    assert camera.outlets


async def test_a_viewers_picture_loss_reaches_the_publisher(
    room: MediaRoom, connect: Connect
) -> None:
    """A viewer's RTCP PLI is passed on, and the publisher answers with a keyframe."""
    viewer = await watching_host(room, connect)
    camera = room.published("host")[CAMERA]
    await asyncio.sleep(0.5)
    asked, keyframes = camera.keyframe_requests, camera.keyframes

    receiver = viewer.pc.getTransceivers()[0].receiver
    [source] = receiver.getSynchronizationSources()
    await receiver._send_rtcp_pli(source.source)

    def answered() -> bool:
        return camera.keyframe_requests > asked and camera.keyframes > keyframes

    await eventually(answered, 3.0, "a keyframe after the viewer's PLI")


async def test_late_viewer_gets_a_picture_within_two_seconds(
    room: MediaRoom, connect: Connect
) -> None:
    """A viewer arriving mid-stream is sent a keyframe soon, asked of the publisher."""
    await connect("host", RED)
    early = await connect("early", slots=1)
    room.set_video({"early": [("host", CAMERA)], "late": [("host", CAMERA)]})
    await eventually(lambda: early.seen.sees(RED), 8.0, "red at the early viewer")
    camera = room.published("host")[CAMERA]
    await late_viewer_sees_red(connect, lambda: camera.keyframe_requests)


async def late_viewer_sees_red(connect: Connect, requests: Callable[[], int]) -> None:
    """A viewer "late" joining mid-stream decodes red within 2 s.

    ``requests`` counts keyframe requests; one more must have been made.
    """
    # aiortc's encoder makes keyframes only when asked: what follows is
    # all deltas, of no use to a newcomer without a keyframe request.
    await asyncio.sleep(1.5)
    asked = requests()

    late = await connect("late", slots=1)
    joined = time.monotonic()
    await eventually(lambda: late.seen.sees(RED), 2.0, "a picture at the late viewer")
    first = late.seen.first_at(0)
    assert first is not None
    assert first - joined < 2.0
    assert requests() > asked


async def test_a_publisher_heard_first_on_its_rtx_stream_answers_a_late_viewer(
    room: MediaRoom, joined: Joined, connect: Connect
) -> None:
    """Padding on the RTX stream before the first frame does not misdirect PLIs."""
    host = await joined(CameraPeer("host", RED, held=True))
    await host.send_rtx_padding()
    camera = room.published("host")[CAMERA]
    receiver = camera._receiver
    await eventually(
        lambda: bool(receiver.getSynchronizationSources()), 3.0, "the RTX padding"
    )
    host.release()
    early = await connect("early", slots=1)
    room.set_video({"early": [("host", CAMERA)], "late": [("host", CAMERA)]})
    await eventually(lambda: early.seen.sees(RED), 8.0, "red at the early viewer")
    # The PLI must reach the host's camera, not only leave the relay.
    await late_viewer_sees_red(connect, lambda: host.keyframe_requests)


async def test_video_is_forwarded_only_while_routed(
    room: MediaRoom, connect: Connect
) -> None:
    """A camera nobody is routed to is not forwarded; routing starts and stops it."""
    await connect("host", RED)
    await connect("student", GREEN)
    viewer = await connect("viewer", slots=2)
    room.set_video({"viewer": [("host", CAMERA)]})
    await eventually(lambda: viewer.seen.sees(RED), 8.0, "the host's camera")
    await asyncio.sleep(1.0)
    assert not viewer.seen.sees(GREEN), viewer.seen.describe()
    assert not room.published("student")[CAMERA].outlets

    room.set_video({"viewer": [("host", CAMERA), ("student", CAMERA)]})
    await eventually(lambda: viewer.seen.sees(GREEN), 5.0, "the student's camera")

    room.set_video({"viewer": [("host", CAMERA)]})
    stopped = time.monotonic() + 0.3
    await asyncio.sleep(1.2)
    assert not viewer.seen.sees(GREEN, since=stopped), viewer.seen.describe()
    assert viewer.seen.sees(RED, since=stopped)


async def test_a_viewer_turns_video_off_and_back_on(
    room: MediaRoom, connect: Connect
) -> None:
    """``off`` stops a viewer's pictures; ``high`` brings one back within 2 s."""
    viewer = await watching_host(room, connect)

    assert room.set_video_quality("viewer", VideoLayer.LOW) is VideoLayer.HIGH
    assert room.set_video_quality("viewer", VideoLayer.OFF) is VideoLayer.OFF
    stopped = time.monotonic() + 0.3
    await asyncio.sleep(1.2)
    assert not viewer.seen.pictures(since=stopped), viewer.seen.describe(stopped)
    assert room.forwarding_video("viewer") == (("host", CAMERA),)

    assert room.set_video_quality("viewer", VideoLayer.HIGH) is VideoLayer.HIGH
    back = time.monotonic()
    await eventually(
        lambda: viewer.seen.sees(RED, since=back), 2.0, "the picture back within 2 s"
    )


#: Rounds of the start-together test, and how long a viewer may wait in one
#: for the picture from the round's start (a slow viewer's: from connecting).
ROUNDS = 6
FIRST_PICTURE = 3.0
#: How long after the camera started a slow viewer's connection comes up.
SLOW_VIEWER = 1.2


async def sees_soon(
    viewer: CameraPeer, colour: tuple[int, int, int], since: float, what: str
) -> None:
    """Wait until ``viewer`` shows ``colour``, at most :data:`FIRST_PICTURE` s."""

    def shown() -> bool:
        return viewer.seen.sees(colour, since=since)

    try:
        await eventually(shown, FIRST_PICTURE, f"{what}: the camera at {viewer.name}")
    except TimeoutError as exc:
        pytest.fail(f"{exc}; saw {viewer.seen.describe(since)}")


async def test_viewers_see_a_camera_that_starts_while_they_connect(
    room: MediaRoom,
) -> None:
    """A camera and viewers negotiating at once: a picture within 3 s, each round."""
    viewers = ("stay", "again", *(f"new{n}" for n in range(ROUNDS)))
    room.set_video({viewer: [("host", CAMERA)] for viewer in viewers})
    peers: dict[str, CameraPeer] = {}
    closing: list[CameraPeer] = []

    def peer(name: str, *colours: tuple[int, int, int], slots: int = 0) -> CameraPeer:
        if name in peers:
            closing.append(peers[name])
        peers[name] = CameraPeer(name, *colours, slots=slots)
        return peers[name]

    async def offered(who: CameraPeer) -> str:
        return await room.answer(who.name, await who.offer())

    async def finish(who: CameraPeer, answer: str) -> None:
        await who.accept(answer)
        await who.connected()

    try:
        # The host is in the lesson's media before turning the camera on.
        await peer("host", slots=1).join(room)
        stay = peer("stay", slots=1)
        await stay.join(room)
        for n in range(ROUNDS):
            colour = (RED, BLUE, GREEN)[n % 3]
            host = peer("host", colour)
            viewer = peer("again" if n % 2 else f"new{n}", slots=1)
            started = time.monotonic()
            async with asyncio.timeout(15):
                if n % 4 == 3:
                    # A slow viewer: its connection comes up well after the
                    # camera's first keyframe went by.
                    answer = await offered(viewer)
                    await host.join(room)
                    await asyncio.sleep(SLOW_VIEWER)
                    started = time.monotonic()
                    await finish(viewer, answer)
                elif n % 4 == 0:
                    # Both offers at the same moment.
                    await asyncio.gather(host.join(room), viewer.join(room))
                elif n % 4 == 1:
                    # The camera starts while the viewer's connection is set up.
                    answer = await offered(viewer)
                    await asyncio.gather(host.join(room), finish(viewer, answer))
                else:
                    # The viewer joins while the camera's connection is set up.
                    answer = await offered(host)
                    await asyncio.gather(viewer.join(room), finish(host, answer))
                await asyncio.gather(
                    sees_soon(stay, colour, started, f"round {n}"),
                    sees_soon(viewer, colour, started, f"round {n}"),
                )
            await asyncio.gather(*(old.close() for old in closing))
            closing.clear()
    finally:
        await room.close()
        await asyncio.gather(*(p.close() for p in [*closing, *peers.values()]))


@pytest.mark.parametrize("host_first", ["audio", "video"])
@pytest.mark.parametrize("viewer_first", ["audio", "video"])
async def test_offers_with_video_or_audio_first_connect_and_carry_both(
    room: MediaRoom, joined: Joined, host_first: str, viewer_first: str
) -> None:
    """Whichever m-line an offer puts first, the host is seen and heard.

    Browsers order m-lines as the page added its tracks; with everything
    bundled onto one transport, the first m-line's is the one kept.
    """
    host = SoundAndPicturePeer(
        "host", 440.0, RED, slots=0, video_first=host_first == "video"
    )
    viewer = SoundAndPicturePeer(
        "viewer", None, video_slots=1, video_first=viewer_first == "video"
    )
    await joined(host)
    await joined(viewer)
    await room.set_speakers(["host"])
    room.set_video({"viewer": [("host", CAMERA)]})
    await eventually(lambda: viewer.seen.sees(RED), 8.0, "the host's camera")
    await hears(viewer, 440.0)
