"""Live video of a lesson from Python: a WebRTC peer for tests, bots and load.

A :class:`VideoPeer` is an :class:`~client_sdk.audio.AudioPeer` that also
publishes video and receives it, in the same ``media_offer``: the server
keeps one media connection per person and room. It publishes a camera
and, for the host, a screen, each a generated picture of one known colour
(:class:`PatternTrack`), and receives ``video_slots`` video tracks: the
server fills each with a track this participant may see (the host's camera
and screen, the class on stage, and for teachers every linked class).

What arrives is decoded by aiortc and kept in a :class:`PictureLog` as
:class:`ReceivedPicture`: the colour at the picture's centre, its size and
its arrival time. Nothing here needs numpy.

Example::

    async with Client(url, token, room) as client:
        await client.join(room)
        async with VideoPeer(client, room, camera=(255, 0, 0), video_slots=2) as peer:
            await asyncio.sleep(5)
            print(peer.seen.received, peer.seen.sees((30, 30, 220)))
"""

from __future__ import annotations

import asyncio
import collections
import fractions
import logging
import time
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, Final

from aiortc import (
    MediaStreamTrack,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpTransceiver,
)
from av.video.frame import VideoFrame

from .audio import AudioPeer
from .client import Client
from .holes import mend_holes
from .protocol import (
    Ack,
    VideoChangeReason,
    VideoLayer,
    VideoQuality,
    VideoQualityAnswer,
    VideoQualityChanged,
)
from .tracks import Pacer, frames_of

logger = logging.getLogger(__name__)

#: An RGB colour, each channel 0 to 255.
Colour = tuple[int, int, int]

#: The RTP video clock (RFC 7741 section 4.1).
VIDEO_RATE: Final = 90_000
#: Pictures kept per video slot.
KEEP_PICTURES: Final = 300


def _to_yuv(colour: Colour) -> tuple[int, int, int]:
    """BT.601 limited range, as VP8 and H.264 carry it."""
    r, g, b = colour
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    return _channels(y, u, v)


def _to_rgb(y: int, u: int, v: int) -> Colour:
    c, d, e = y - 16, u - 128, v - 128
    r = 1.164 * c + 1.596 * e
    g = 1.164 * c - 0.392 * d - 0.813 * e
    b = 1.164 * c + 2.017 * d
    return _channels(r, g, b)


def _channels(a: float, b: float, c: float) -> Colour:
    """Three channel values rounded and clamped to 0..255."""
    return _channel(a), _channel(b), _channel(c)


def _channel(value: float) -> int:
    return max(0, min(255, round(value)))


class PatternTrack(MediaStreamTrack):
    """A camera that shows one colour, paced by the monotonic clock.

    Frames are yuv420p, ``width`` by ``height``, ``fps`` a second; each
    carries its number as ``frame.pts`` divided by the frame duration, so a
    receiver can count what it missed.
    """

    kind = "video"

    def __init__(
        self, colour: Colour, width: int = 320, height: int = 240, fps: int = 15
    ) -> None:
        if any(not 0 <= c <= 255 for c in colour) or len(colour) != 3:
            raise ValueError(f"colour must be three values in [0, 255]: {colour}")
        if width < 16 or height < 16 or width % 2 or height % 2:
            raise ValueError(f"size must be even and at least 16: {width}x{height}")
        if not 1 <= fps <= 60:
            raise ValueError(f"fps must be in [1, 60]: {fps}")
        super().__init__()
        self.colour = colour
        self.width = width
        self.height = height
        self.fps = fps
        self.sent = 0
        self._pacer = Pacer()
        template = VideoFrame(width, height, "yuv420p")
        self._planes = [
            bytes([value]) * plane.buffer_size
            for value, plane in zip(_to_yuv(colour), template.planes, strict=True)
        ]

    async def recv(self) -> VideoFrame:
        """The next picture, once it is due."""
        await self._pacer.wait(self, self.sent / self.fps)
        frame = self.picture(self.sent)
        self.sent += 1
        return frame

    def picture(self, number: int) -> VideoFrame:
        """Picture ``number`` of the pattern, stamped for its place in time."""
        frame = VideoFrame(self.width, self.height, "yuv420p")
        for plane, data in zip(frame.planes, self._planes, strict=True):
            plane.update(data)
        frame.pts = number * (VIDEO_RATE // self.fps)
        frame.time_base = fractions.Fraction(1, VIDEO_RATE)
        return frame


@dataclass(frozen=True, slots=True)
class ReceivedPicture:
    """A decoded picture of one video slot: when, how large, what colour."""

    at: float
    slot: int
    width: int
    height: int
    #: The RGB colour at the picture's centre.
    colour: Colour

    def near(self, colour: Colour, tolerance: int = 24) -> bool:
        """Whether this picture's colour is within ``tolerance`` of ``colour``."""
        return all(
            abs(a - b) <= tolerance for a, b in zip(self.colour, colour, strict=True)
        )


def centre_colour(frame: VideoFrame) -> Colour:
    """The RGB colour of a yuv420p picture's centre pixel."""
    if frame.format.name != "yuv420p":
        frame = frame.reformat(format="yuv420p")
    x, y = frame.width // 2, frame.height // 2
    luma = memoryview(frame.planes[0])[y * frame.planes[0].line_size + x]
    cb = memoryview(frame.planes[1])[(y // 2) * frame.planes[1].line_size + x // 2]
    cr = memoryview(frame.planes[2])[(y // 2) * frame.planes[2].line_size + x // 2]
    return _to_rgb(luma, cb, cr)


class PictureLog:
    """What each of ``slots`` video slots showed: the last pictures, decoded.

    :meth:`watch` reads one received track until it ends; the readers
    answer what arrived when. Each slot keeps its last ``keep`` pictures.
    """

    def __init__(self, slots: int, keep: int = KEEP_PICTURES) -> None:
        self.slots = slots
        self.received = 0
        self._pictures = [
            collections.deque[ReceivedPicture](maxlen=keep) for _ in range(slots)
        ]
        self._first: list[float | None] = [None] * slots

    async def watch(self, track: MediaStreamTrack, slot: int) -> None:
        """Keep the pictures of ``track`` as ``slot``'s until the track ends."""
        async for frame in frames_of(track, VideoFrame):
            at = time.monotonic()
            self.received += 1
            if self._first[slot] is None:
                self._first[slot] = at
            picture = ReceivedPicture(
                at, slot, frame.width, frame.height, centre_colour(frame)
            )
            self._pictures[slot].append(picture)

    def pictures(
        self, slot: int | None = None, since: float = 0.0
    ) -> list[ReceivedPicture]:
        """Kept pictures of ``slot`` (of all if None) that arrived since ``since``."""
        slots = range(self.slots) if slot is None else [slot]
        found = [p for i in slots for p in self._pictures[i] if p.at >= since]
        return sorted(found, key=lambda picture: picture.at)

    def first_at(self, slot: int) -> float | None:
        """When the first picture of ``slot`` was decoded, if one was."""
        return self._first[slot]

    def sees(self, colour: Colour, since: float = 0.0, tolerance: int = 24) -> bool:
        """Whether a picture of ``colour`` arrived on any slot since ``since``."""
        return any(p.near(colour, tolerance) for p in self.pictures(since=since))

    def first_seen(self, colour: Colour, tolerance: int = 24) -> float | None:
        """When a picture of ``colour`` first arrived among those kept."""
        return next((p.at for p in self.pictures() if p.near(colour, tolerance)), None)

    def describe(self, since: float = 0.0) -> str:
        """A short account of the pictures since ``since``, for messages."""
        counts = collections.Counter(
            (p.slot, p.colour) for p in self.pictures(since=since)
        )
        return ", ".join(f"slot {s}: {c} x{n}" for (s, c), n in sorted(counts.items()))


class VideoLines:
    """A peer's video m-lines: the patterns it publishes, the slots it shows.

    ``camera`` and ``screen`` are the colours to publish (None publishes
    nothing); ``seen`` keeps what the ``slots`` receiving lines show.
    """

    def __init__(
        self,
        camera: Colour | None,
        screen: Colour | None,
        slots: int,
        size: tuple[int, int],
        fps: int,
    ) -> None:
        if screen is not None and camera is None:
            raise ValueError("a screen needs a camera")
        if slots < 0:
            raise ValueError(f"video slots must not be negative, got {slots}")
        self.publishing = [
            PatternTrack(colour, *size, fps=fps)
            for colour in (camera, screen)
            if colour is not None
        ]
        self.seen = PictureLog(slots)
        self._receivers: list[RTCRtpTransceiver] = []

    def add_to(self, pc: RTCPeerConnection) -> None:
        """Add the video m-lines to the offer ``pc`` is about to make."""
        self._receivers = add_video_lines(pc, self.publishing, self.seen.slots)

    def watch(self, track: MediaStreamTrack) -> Coroutine[Any, Any, None] | None:
        """What keeps a received track's pictures; None if no slot receives it."""
        slot = next(
            (i for i, t in enumerate(self._receivers) if t.receiver.track is track),
            None,
        )
        if slot is None:
            return None
        return self._watch(track, slot, self._receivers[slot].receiver)

    async def _watch(
        self, track: MediaStreamTrack, slot: int, receiver: RTCRtpReceiver
    ) -> None:
        # A packet lost twice would otherwise hold the picture up for long.
        mending = asyncio.create_task(mend_holes(receiver))
        try:
            await self.seen.watch(track, slot)
        finally:
            mending.cancel()
            await asyncio.gather(mending, return_exceptions=True)

    def stop(self) -> None:
        """Stop the published patterns."""
        for track in self.publishing:
            track.stop()


class VideoPeer(AudioPeer):
    """One participant's audio and video in ``room``, signaled through ``client``.

    ``camera`` and ``screen`` are the colours to publish (None publishes
    nothing); a screen needs a camera, as the server reads the first video
    m-line that sends as the camera. The server forwards what the
    participant's role and the lesson allow, whatever is published here.
    ``seen`` keeps what the ``video_slots`` received. Audio options are
    :class:`~client_sdk.audio.AudioPeer`'s; ``slots`` defaults to one, so the
    host is heard.
    """

    def __init__(
        self,
        client: Client,
        room: str,
        *,
        camera: Colour | None = None,
        screen: Colour | None = None,
        video_slots: int = 0,
        size: tuple[int, int] = (320, 240),
        fps: int = 15,
        **audio: Any,
    ) -> None:
        lines = VideoLines(camera, screen, video_slots, size, fps)
        audio.setdefault("slots", 1)
        super().__init__(client, room, **audio)
        self.video_slots = video_slots
        self.publishing = lines.publishing
        self.seen = lines.seen
        #: The last change the server made to this peer's video on its own
        #: (a weak link), as :meth:`take_notice` was given it; None: none.
        self.video_change: VideoQualityChanged | None = None
        self._lines = lines

    def __repr__(self) -> str:
        return (
            f"<VideoPeer room={self.room} slots={self.slots} "
            f"video_slots={self.video_slots} {self.state}>"
        )

    async def set_quality(self, quality: VideoLayer) -> VideoQualityAnswer:
        """Ask for ``quality`` on this connection's video slots.

        The answer says what the server forwards: ``low`` is the lower
        simulcast layer of publishers that send layers (a browser camera),
        and ``high`` back where they send one (aiortc peers); ``off`` stops
        video and leaves the link to audio until ``high`` is asked again.
        """
        command = VideoQuality(id="", room=self.room, quality=quality)
        return await self.client.request(command)

    def take_notice(self, notice: object) -> bool:
        """Keep a ``video_quality_changed`` of this peer's room; False for others.

        The server lowers a viewer's video when its link loses packets and
        raises it again once the link is clean; hand each notice of the
        client's event stream here, and :attr:`video_change` says whether
        the video is reduced (``forwarded`` below ``requested``) and why.
        """
        if not isinstance(notice, VideoQualityChanged) or notice.room != self.room:
            return False
        self.video_change = notice
        logger.info(
            "room %s: the server %s video to %s (%s)",
            self.room,
            "raised" if notice.reason is VideoChangeReason.RECOVERED else "lowered",
            notice.forwarded,
            notice.reason,
        )
        return True

    @property
    def video_reduced(self) -> bool:
        """Whether the server sends less video than asked for a weak link."""
        change = self.video_change
        rank = {VideoLayer.OFF: 0, VideoLayer.LOW: 1, VideoLayer.HIGH: 2}
        return change is not None and rank[change.forwarded] < rank[change.requested]

    async def close(self) -> Ack | None:
        """Close as :meth:`AudioPeer.close` does, and stop the patterns."""
        left = await super().close()
        self._lines.stop()
        return left

    def _add_video(self, pc: RTCPeerConnection) -> None:
        self._lines.add_to(pc)

    def _on_video(self, track: MediaStreamTrack) -> None:
        watching = self._lines.watch(track)
        if watching is None:
            logger.debug("room %s: ignored a video track", self.room)
            return
        self._tasks.append(asyncio.create_task(watching))


def add_video_lines(
    pc: RTCPeerConnection, publishing: Iterable[MediaStreamTrack], slots: int
) -> list[RTCRtpTransceiver]:
    """Add the video m-lines of an offer; returns the receiving ones.

    The relay's layout (media/relay.py): the first video m-line that sends
    is the camera, the second the screen; each that receives is a slot.
    """
    for track in publishing:
        pc.addTransceiver(track, direction="sendonly")
    return [pc.addTransceiver("video", direction="recvonly") for _ in range(slots)]
