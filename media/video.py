"""Forwarding video as it arrived: the inbound tap and the outbound slot track.

Video goes the way audio does (:mod:`media.forward`): what a publisher's
client encoded is sent on to each viewer as it is, never decoded and
encoded again per viewer. It differs in two ways.

- A video frame spans several RTP packets, and a viewer can only start
  decoding at a keyframe. :class:`InboundVideo` keeps aiortc's receiver
  doing what it does well (NACK and RTX retransmissions, the receiver
  reports, REMB estimates sent back to the publisher, the jitter buffer
  that puts a frame's packets together) and takes each whole encoded
  frame where aiortc would hand it to its decoder thread. It replaces the
  receiver's decoder queue with a :class:`_FrameTap`, whose ``put`` routes
  frames to the viewers' slots at once; the decoder thread, which reads the
  same queue, then only ever sees the ``None`` that stops it.
- A viewer that joins, or whose slot changes source, drops frames until a
  keyframe arrives, and asks the publisher for one (RTCP PLI, RFC 4585
  section 6.3.1). A viewer's own PLI or FIR (RFC 5104 section 4.3.1) reaches
  aiortc's sender as ``_send_keyframe``, which :class:`VideoForwardTrack`
  replaces on that sender so the request goes on to the publisher. A cached
  keyframe is not replayed: without the frames that followed it, it shows
  a stale picture, and a publisher answers a PLI within a frame or two.

:class:`VideoForwardTrack` returns :class:`av.packet.Packet` objects;
aiortc's sender passes them to the codec's ``pack`` (VP8 or H.264
packetization) instead of its encoder, exactly as for Opus.
"""

from __future__ import annotations

import asyncio
import enum
import fractions
import logging
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiortc import RTCRtpReceiver, RTCRtpSender
from av.packet import Packet
from av.stream import Stream

from client_sdk.protocol import VideoLayer

from .slot import Inbound, SlotTrack

logger = logging.getLogger(__name__)

#: RTP video clock (RFC 7741 section 4.1, RFC 6184 section 8.2.1).
CLOCK_RATE = 90_000
TIME_BASE = fractions.Fraction(1, CLOCK_RATE)

#: Frames waiting in one viewer's slot. At 30 frames a second this is a
#: quarter second; more would only be shown late.
SLOT_QUEUE = 8

#: A frame older than this when the sender asks for it is not sent: the
#: viewer would see it late, and the frames after it depend on it, so the
#: slot waits for the next keyframe instead.
STALE_AFTER = 0.5

#: The least time between two keyframe requests sent to one publisher: every
#: viewer arriving at once asks, and one keyframe answers them all.
KEYFRAME_REQUEST_GAP = 0.25

#: A slot whose sender read from it this recently counts as being read.
PULL_WINDOW = 1.0

#: The encodings a publisher sends of one track. The relay's answer
#: negotiates no simulcast (aiortc reads neither ``a=simulcast`` nor
#: ``a=rid``, RFC 8853), so a browser sends a single encoding, as aiortc
#: always does, and there is no lower layer to pick for a weak link.
LAYERS = 1

#: A timestamp gap this large (two seconds) means the source restarted.
_RESYNC_TICKS = 2 * CLOCK_RATE

#: The spacing assumed for the first frame after a source change: 30 fps.
_FRAME_TICKS = CLOCK_RATE // 30


class VideoKind(enum.StrEnum):
    """What a published video track shows."""

    CAMERA = "camera"
    SCREEN = "screen"


class VideoCodec(enum.StrEnum):
    """The video codecs forwarded, as aiortc names them."""

    VP8 = "VP8"
    H264 = "H264"


@dataclass(frozen=True, slots=True)
class EncodedVideo:
    """One whole encoded frame of a publisher, as it arrived."""

    data: bytes
    #: The publisher's timestamp, 90 kHz, unwrapped by aiortc from 0.
    timestamp: int
    codec: VideoCodec
    keyframe: bool
    arrival: float


def is_keyframe(codec: VideoCodec, data: bytes) -> bool:
    """Whether an encoded frame can be decoded on its own.

    VP8: bit 0 of the frame tag is 0 for a key frame (RFC 6386 section
    9.1). H.264: the access unit holds an IDR slice, NAL unit type 5
    (ITU-T H.264 table 7-1); aiortc depayloads to Annex B, start codes
    between units.
    """
    if codec is VideoCodec.VP8:
        return len(data) >= 3 and not data[0] & 0x01
    start = 0
    while True:
        found = data.find(b"\x00\x00\x01", start)
        if found < 0 or found + 3 >= len(data):
            return False
        if data[found + 3] & 0x1F == 5:
            return True
        start = found + 3


class VideoTimeline:
    """One slot's outgoing timestamps, continuous while the source changes.

    Within one source the source's own spacing is kept. A new source, or a
    source whose clock jumped, continues from the last timestamp sent plus
    the wall-clock time since (at least one frame), so a viewer's jitter
    buffer sees neither a step back nor a leap.
    """

    def __init__(self) -> None:
        self._source: object = None
        self._offset = 0
        self._last: int | None = None
        self._last_arrival = 0.0

    def place(self, source: object, timestamp: int, arrival: float) -> int | None:
        """This slot's timestamp for a frame, or None for a frame to drop."""
        last = self._last
        if last is not None and source is self._source:
            pts = timestamp + self._offset
            if pts <= last and last - pts < _RESYNC_TICKS:
                # A repeated or late frame: its place was already passed.
                return None
            if pts - last < _RESYNC_TICKS and pts > last:
                self._last, self._last_arrival = pts, arrival
                return pts
        start = 0
        if last is not None:
            waited = round((arrival - self._last_arrival) * CLOCK_RATE)
            start = last + max(_FRAME_TICKS, waited)
        self._source = source
        self._offset = start - timestamp
        self._last, self._last_arrival = start, arrival
        return start


class _FrameTap(queue.Queue[Any]):
    """The receiver's decoder queue, turned into a hand-off to viewers.

    aiortc puts ``(codec, JitterFrame)`` here from the event loop, once per
    whole frame, and ``None`` when the receiver stops; only ``None`` goes on
    to the decoder thread, which then ends.
    """

    def __init__(self, deliver: Callable[[str, bytes, int], None]) -> None:
        super().__init__()
        self._deliver = deliver

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is None:
            super().put(None, block, timeout)
            return
        codec, frame = item
        self._deliver(codec.name, frame.data, frame.timestamp)


class InboundVideo(Inbound["VideoForwardTrack"]):
    """One published video track (a camera or a screen) of one participant."""

    def __init__(
        self, participant: str, kind: VideoKind, receiver: RTCRtpReceiver
    ) -> None:
        super().__init__(participant)
        self.kind = kind
        self.keyframes = 0
        self.keyframe_requests = 0
        self._receiver = receiver
        self._asked_at = -KEYFRAME_REQUEST_GAP
        self._tasks: set[asyncio.Task[None]] = set()
        # Name-mangled attribute of RTCRtpReceiver, read by receive() when it
        # starts the decoder thread and by _handle_rtp_packet for each frame.
        tap = _FrameTap(self._frame)
        setattr(receiver, "_RTCRtpReceiver__decoder_queue", tap)  # noqa: B010

    def __repr__(self) -> str:
        return f"<InboundVideo {self.participant}/{self.kind}>"

    def request_keyframe(self) -> None:
        """Ask the publisher for a keyframe, at most once per request gap."""
        now = time.monotonic()
        if now - self._asked_at < KEYFRAME_REQUEST_GAP:
            return
        streams = self._media_streams()
        if not streams:
            # Nothing received yet: the first frame a client sends is a
            # keyframe anyway.
            return
        self._asked_at = now
        self.keyframe_requests += 1
        loop = asyncio.get_running_loop()
        for ssrc in streams:
            task = loop.create_task(self._receiver._send_rtcp_pli(ssrc))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _media_streams(self) -> list[int]:
        """The SSRCs the publisher sent on lately, its retransmissions left out.

        aiortc lists every SSRC it received, the RTX stream's too (RFC 4588),
        in the order first heard, and a browser may probe the bandwidth with
        RTX padding before its first frame: a PLI naming that SSRC goes
        unanswered. The SSRCs of RTX streams the offer paired with a media
        stream are left out; an unpaired one is asked too, in vain.
        """
        # Name-mangled attribute of RTCRtpReceiver: RTX SSRC to media SSRC.
        rtx: dict[int, int] = getattr(self._receiver, "_RTCRtpReceiver__rtx_ssrc", {})
        return [
            source.source
            for source in self._receiver.getSynchronizationSources()
            if source.source not in rtx
        ]

    def close(self) -> None:
        """Stop feeding viewers and cancel keyframe requests in flight."""
        for outlet in list(self.outlets):
            outlet.assign(None)
        for task in self._tasks:
            task.cancel()

    def _frame(self, codec_name: str, data: bytes, timestamp: int) -> None:
        try:
            codec = VideoCodec(codec_name)
        except ValueError:
            self.dropped += 1
            return
        if not data:
            self.dropped += 1
            return
        keyframe = is_keyframe(codec, data)
        self.received += 1
        self.keyframes += keyframe
        if not self.outlets:
            return
        frame = EncodedVideo(data, timestamp, codec, keyframe, time.monotonic())
        for outlet in list(self.outlets):
            outlet.push(frame, self)


def forwarded_layer(requested: VideoLayer) -> VideoLayer:
    """What a slot forwards when a viewer asks for ``requested``.

    With one layer a slot has two honest choices: all of it or none. ``low``
    gets all of it, and the viewer is told so.
    """
    return VideoLayer.OFF if requested is VideoLayer.OFF else VideoLayer.HIGH


class VideoForwardTrack(SlotTrack[InboundVideo, tuple[EncodedVideo, InboundVideo]]):
    """The video a viewer sees on one slot: one published track at a time.

    ``codec`` is what this slot's m-line negotiated; frames of another codec
    cannot be repacketized for it and are dropped.
    """

    kind = "video"

    def __init__(self, viewer: str, slot: int, codec: VideoCodec) -> None:
        super().__init__(SLOT_QUEUE)
        self.viewer = viewer
        self.slot = slot
        self.codec = codec
        self.skipped = 0
        self._awaiting_key = True
        self._layer = VideoLayer.HIGH
        self._timeline = VideoTimeline()
        # Whether aiortc's sender is reading this slot: it is not before the
        # viewer's connection is up, nor after it failed, and a slot nobody
        # reads must not keep asking the publisher for keyframes.
        self._reading = False
        self._read_at = -PULL_WINDOW

    def bind(self, sender: RTCRtpSender) -> None:
        """Send this slot's viewer's keyframe requests on to the publisher."""
        # An instance attribute shadows the method for this sender only;
        # aiortc calls it on each PLI or FIR the viewer sends.
        setattr(sender, "_send_keyframe", self.request_keyframe)  # noqa: B010

    def request_keyframe(self) -> None:
        """The viewer lost the picture: ask the current source for a keyframe."""
        if self._source is not None:
            self._source.request_keyframe()

    def assign(self, source: InboundVideo | None) -> None:
        """Forward ``source`` from its next keyframe on (None: nothing)."""
        if not self._switch(source):
            return
        self._awaiting_key = True
        if self.readyState == "live" and self._layer is not VideoLayer.OFF:
            self.request_keyframe()

    @property
    def layer(self) -> VideoLayer:
        """What this slot forwards: ``high`` (all there is) or ``off``."""
        return self._layer

    def set_layer(self, requested: VideoLayer) -> VideoLayer:
        """Forward what the viewer asked for, as far as it exists; returns that."""
        layer = forwarded_layer(requested)
        if layer is self._layer:
            return layer
        self._layer = layer
        if layer is VideoLayer.OFF:
            self._drain()
        self._awaiting_key = True
        if layer is not VideoLayer.OFF:
            self.request_keyframe()
        return layer

    def push(self, frame: EncodedVideo, source: InboundVideo) -> None:
        """Queue a frame of ``source``; a full queue restarts at a keyframe."""
        if self._layer is VideoLayer.OFF:
            return
        if frame.codec is not self.codec:
            self.skipped += 1
            return
        if self._awaiting_key and not frame.keyframe:
            self._wait_for_key(source)
            return
        if self._queue.full():
            # Every queued frame depends on the one before: dropping one
            # breaks the picture until the next keyframe.
            self._drain()
            if not frame.keyframe:
                self._wait_for_key(source)
                return
        self._awaiting_key = False
        self._queue.put_nowait((frame, source))

    async def recv(self) -> Packet[Stream]:
        """The next frame to send, restamped onto this slot's timeline."""
        while True:
            self._reading = True
            try:
                frame, source = await self._take()
            finally:
                self._reading = False
                self._read_at = time.monotonic()
            if source is not self._source:
                self.skipped += 1
                continue
            if time.monotonic() - frame.arrival > STALE_AFTER:
                self._drain()
                self._wait_for_key(source)
                continue
            pts = self._timeline.place(source, frame.timestamp, frame.arrival)
            if pts is None:
                continue
            return self._packet(frame.data, pts, TIME_BASE)

    def _wait_for_key(self, source: InboundVideo) -> None:
        """Drop frames until a keyframe; ask for one if the sender is reading."""
        self._awaiting_key = True
        self.skipped += 1
        if self._reading or time.monotonic() - self._read_at < PULL_WINDOW:
            source.request_keyframe()
