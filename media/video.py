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
- A browser may send its camera as two or three layers of different sizes
  (simulcast, :mod:`media.simulcast`); each layer then yields frames of its
  own, and each viewer's slot forwards one layer: the lowest for a viewer
  who asked for ``low``, the highest otherwise. A slot changes layer only
  at a keyframe of the new layer, so the picture never breaks.
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
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from aiortc import RTCRtpCodecParameters, RTCRtpReceiver, RTCRtpSender
from aiortc.jitterbuffer import JitterFrame
from av.packet import Packet
from av.stream import Stream

from client_sdk.holes import mend_holes
from client_sdk.protocol import VideoLayer

from .simulcast import LayerDemux
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

#: The encodings a publisher without simulcast sends of one track (aiortc
#: clients, browsers that offer no ``a=simulcast``). A simulcast publisher's
#: count is :attr:`InboundVideo.layers`.
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
    #: Which of the publisher's layers it belongs to, 0 the lowest.
    layer: int = 0


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
        self._source: Hashable = None
        self._offset = 0
        self._last: int | None = None
        self._last_arrival = 0.0

    def place(self, source: Hashable, timestamp: int, arrival: float) -> int | None:
        """This slot's timestamp for a frame, or None for a frame to drop.

        ``source`` names the frame's clock: a published track, or one layer
        of it, since a publisher's layers are separate RTP streams.
        """
        last = self._last
        if last is not None and source == self._source:
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
    """One published video track (a camera or a screen) of one participant.

    ``rids`` are the simulcast layers its m-line was answered with, lowest
    first (:func:`media.simulcast.read_simulcast`); with fewer than two the
    track is one stream, as aiortc and most clients send.
    """

    def __init__(
        self,
        participant: str,
        kind: VideoKind,
        receiver: RTCRtpReceiver,
        rids: tuple[str, ...] = (),
    ) -> None:
        super().__init__(participant)
        self.kind = kind
        self.keyframes = 0
        self.keyframe_requests = 0
        self._receiver = receiver
        self._asked_at: dict[int | None, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Name-mangled attribute of RTCRtpReceiver, read by receive() when it
        # starts the decoder thread and by _handle_rtp_packet for each frame.
        tap = _FrameTap(self._frame)
        setattr(receiver, "_RTCRtpReceiver__decoder_queue", tap)  # noqa: B010
        self._demux = (
            LayerDemux(receiver, rids, self._layer_frame) if len(rids) > 1 else None
        )
        # A packet lost with its retransmission would hold up every viewer's
        # picture until hundreds more had come: ask again, then give it up.
        mending = asyncio.get_running_loop().create_task(
            mend_holes(receiver, None if self._demux is None else self._demux.streams)
        )
        self._tasks.add(mending)
        mending.add_done_callback(self._tasks.discard)

    def __repr__(self) -> str:
        return f"<InboundVideo {self.participant}/{self.kind}>"

    @property
    def simulcast(self) -> bool:
        """Whether the publisher was answered with simulcast layers."""
        return self._demux is not None

    @property
    def layers(self) -> int:
        """The layers the publisher sends now (1 without simulcast).

        Before the first frame, the layers negotiated.
        """
        if self._demux is None:
            return LAYERS
        return len(self._demux.live()) or len(self._demux.layers)

    def pick(self, wanted: VideoLayer) -> int:
        """The layer a slot asking for ``wanted`` forwards now.

        The lowest layer being sent for ``low``, the highest for ``high``:
        a browser pauses its upper layers while its bandwidth estimate is
        low, and the slot then shows the best layer there is.
        """
        if self._demux is None:
            return 0
        live = self._demux.live()
        if not live:
            return 0 if wanted is VideoLayer.LOW else len(self._demux.layers) - 1
        return live[0] if wanted is VideoLayer.LOW else live[-1]

    def request_keyframe(self, layer: int | None = None) -> None:
        """Ask for a keyframe of ``layer`` (None: every stream), once a gap."""
        now = time.monotonic()
        if now - self._asked_at.get(layer, -KEYFRAME_REQUEST_GAP) < (
            KEYFRAME_REQUEST_GAP
        ):
            return
        streams = self._media_streams(layer)
        if not streams:
            # Nothing received yet: the first frame a client sends is a
            # keyframe anyway.
            return
        self._asked_at[layer] = now
        self.keyframe_requests += 1
        loop = asyncio.get_running_loop()
        for ssrc in streams:
            task = loop.create_task(self._receiver._send_rtcp_pli(ssrc))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _media_streams(self, layer: int | None = None) -> list[int]:
        """The SSRCs the publisher sent on lately, its retransmissions left out.

        With simulcast, the SSRC of ``layer``, or of every layer seen. Else
        aiortc lists every SSRC it received, the RTX stream's too (RFC 4588),
        in the order first heard, and a browser may probe the bandwidth with
        RTX padding before its first frame: a PLI naming that SSRC goes
        unanswered. The SSRCs of RTX streams the offer paired with a media
        stream are left out; an unpaired one is asked too, in vain.
        """
        if self._demux is not None:
            if layer is None:
                found = [self._demux.ssrc(i) for i in range(len(self._demux.layers))]
            else:
                found = [self._demux.ssrc(layer)]
            return [ssrc for ssrc in found if ssrc is not None]
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

    def _layer_frame(self, layer: int, payload_type: int, frame: JitterFrame) -> None:
        # Name-mangled attribute of RTCRtpReceiver: payload type to codec.
        name = "_RTCRtpReceiver__codecs"
        codecs: dict[int, RTCRtpCodecParameters] = getattr(self._receiver, name)
        codec = codecs.get(payload_type)
        self._frame(codec.name if codec else "", frame.data, frame.timestamp, layer)

    def _frame(
        self, codec_name: str, data: bytes, timestamp: int, layer: int = 0
    ) -> None:
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
        frame = EncodedVideo(data, timestamp, codec, keyframe, time.monotonic(), layer)
        for outlet in list(self.outlets):
            outlet.push(frame, self)


def forwarded_layer(requested: VideoLayer, layers: int = LAYERS) -> VideoLayer:
    """What a slot forwards when a viewer asks for ``requested`` of ``layers``.

    With one layer a slot has two honest choices: all of it or none. ``low``
    gets all of it, and the viewer is told so.
    """
    if requested is VideoLayer.OFF:
        return VideoLayer.OFF
    if requested is VideoLayer.LOW and layers > 1:
        return VideoLayer.LOW
    return VideoLayer.HIGH


def slots_layers(slots: Sequence[VideoForwardTrack]) -> int:
    """The most layers a publisher shown on ``slots`` sends (1: no simulcast)."""
    return max(
        (slot.source.layers for slot in slots if slot.source is not None),
        default=LAYERS,
    )


def slots_forward(slots: Sequence[VideoForwardTrack], wanted: VideoLayer) -> VideoLayer:
    """What a viewer's ``slots``, all asked for ``wanted``, forward.

    ``low`` when at least one of them shows a publisher's lower layer, else
    as :func:`forwarded_layer` says for one layer.
    """
    shown = {slot.layer for slot in slots}
    if VideoLayer.LOW in shown:
        return VideoLayer.LOW
    # The slots share one request, so the others all show the same.
    return shown.pop() if shown else forwarded_layer(wanted)


class VideoForwardTrack(SlotTrack[InboundVideo, tuple[EncodedVideo, InboundVideo]]):
    """The video a viewer sees on one slot: one published track at a time.

    ``codec`` is what this slot's m-line negotiated; frames of another codec
    cannot be repacketized for it and are dropped. Of a simulcast track the
    slot forwards one layer, the one :meth:`InboundVideo.pick` names for
    what the viewer asked; when that changes, the slot goes on with the
    layer it has until a keyframe of the new one arrives (asked for at once).
    """

    kind = "video"

    def __init__(self, viewer: str, slot: int, codec: VideoCodec) -> None:
        super().__init__(SLOT_QUEUE)
        self.viewer = viewer
        self.slot = slot
        self.codec = codec
        self.skipped = 0
        #: Changes of layer made at a keyframe of the new layer.
        self.switches = 0
        self._asked = VideoLayer.HIGH
        # The source's layer being forwarded; None until a keyframe.
        self._stream: int | None = None
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
        source = self._source
        if source is None:
            return
        if self._stream is not None:
            source.request_keyframe(self._stream if source.simulcast else None)
        else:
            self._ask_key(source)

    def assign(self, source: InboundVideo | None) -> None:
        """Forward ``source`` from its next keyframe on (None: nothing)."""
        if not self._switch(source):
            return
        self._stream = None
        if (
            source is not None
            and self.readyState == "live"
            and self._asked is not VideoLayer.OFF
        ):
            self._ask_key(source)

    @property
    def layer(self) -> VideoLayer:
        """What this slot forwards: ``high``, ``low`` (a lower layer) or ``off``."""
        return forwarded_layer(self._asked, self._layers())

    def set_layer(self, requested: VideoLayer) -> VideoLayer:
        """Forward what the viewer asked for, as far as it exists; returns that.

        Between ``low`` and ``high`` the slot keeps its layer until the new
        one's keyframe; from ``off`` it waits for a keyframe as a new slot.
        """
        before, self._asked = self._asked, requested
        source = self._source
        if requested is VideoLayer.OFF:
            self._drain()
            self._stream = None
        elif before is VideoLayer.OFF:
            self._stream = None
            if source is not None:
                self._ask_key(source)
        elif source is not None and source.pick(requested) != source.pick(before):
            self._ask_key(source)
        return self.layer

    def push(self, frame: EncodedVideo, source: InboundVideo) -> None:
        """Queue a frame of ``source``; a full queue restarts at a keyframe."""
        if self._asked is VideoLayer.OFF:
            return
        if frame.codec is not self.codec:
            self.skipped += 1
            return
        target = source.pick(self._asked)
        if frame.layer == target and frame.keyframe and self._stream != target:
            if self._stream is not None:
                self.switches += 1
            self._stream = target
        elif frame.layer != self._stream:
            if frame.layer != target:
                return
            if self._stream is None:
                self._wait_for_key(source)
            else:
                # The layer it has goes on until this one's keyframe.
                self._ask_key(source)
            return
        elif frame.layer != target:
            # Still on the layer it had: the wanted one's keyframe is due.
            self._ask_key(source)
        if self._queue.full():
            # Every queued frame depends on the one before: dropping one
            # breaks the picture until the next keyframe.
            self._drain()
            if not frame.keyframe:
                self._wait_for_key(source)
                return
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
            clock = (source, frame.layer)
            pts = self._timeline.place(clock, frame.timestamp, frame.arrival)
            if pts is None:
                continue
            return self._packet(frame.data, pts, TIME_BASE)

    def _layers(self) -> int:
        return self._source.layers if self._source is not None else LAYERS

    def _wait_for_key(self, source: InboundVideo) -> None:
        """Drop frames until a keyframe; ask for one if the sender is reading."""
        self._stream = None
        self.skipped += 1
        if self._reading or time.monotonic() - self._read_at < PULL_WINDOW:
            self._ask_key(source)

    def _ask_key(self, source: InboundVideo) -> None:
        """Ask for a keyframe of the layer this slot wants of ``source``."""
        source.request_keyframe(source.pick(self._asked) if source.simulcast else None)
