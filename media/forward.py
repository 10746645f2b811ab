"""Forwarding Opus as it arrived: the inbound tap and the outbound slot track.

aiortc decodes every RTP stream it receives and re-encodes every track it
sends. Neither is needed to forward a speaker to a listener: the Opus packets
a client sent can be sent on to another client as they are. Two pieces make
that happen:

- :class:`InboundAudio` takes a participant's RTP packets before aiortc's
  receiver queues them for decoding, and hands each Opus payload to the
  listeners' slots and, when one is attached, to the speaker's worker.
- :class:`ForwardTrack` is the track on one of a listener's audio slots. Its
  ``recv`` returns :class:`av.packet.Packet` objects rather than frames, and
  aiortc's ``RTCRtpSender._next_encoded_frame`` passes a packet to the
  encoder's ``pack`` (which only reads its bytes and timestamp) instead of
  ``encode``. The sender then gives it its own sequence number, SSRC and
  timestamp origin, so each listener sees one continuous RTP stream while the
  slot's source changes.

The W3C way to reach encoded frames, WebRTC Encoded Transform
(https://w3c.github.io/webrtc-encoded-transform/), is not implemented by
aiortc 1.16; the tap replaces the receiver's ``_handle_rtp_packet`` on that
one instance, the method aiortc's DTLS transport calls with each routed RTP
packet (``RTCDtlsTransport._handle_rtp_data``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from aiortc import RTCRtpReceiver
from aiortc.rtp import RtpPacket
from av.packet import Packet
from av.stream import Stream

from .opus import CLOCK_RATE, TIME_BASE, OpusPacket, TimestampLine
from .slot import Inbound, SlotTrack

logger = logging.getLogger(__name__)

#: Packets waiting in one slot; the sender reads them as fast as they come,
#: so a full queue means the listener's transport is not up yet.
SLOT_QUEUE = 16

#: A packet older than this when the sender asks for it is dropped rather
#: than sent late: a listener would only hear it as added delay.
STALE_AFTER = 0.2

#: A timestamp this far from what the wall clock allows (one second) is not
#: the same timeline any more: the slot starts a new one.
_RESYNC_SAMPLES = CLOCK_RATE


class InboundAudio(Inbound["ForwardTrack"]):
    """One participant's microphone, as the Opus packets their client sends.

    Packets with another payload type than the negotiated Opus one are
    dropped. Nothing here decodes: a participant nobody listens to and
    nobody records costs aiortc's SRTP and RTP parsing, and a counter here.

    aiortc's own handler is not called, so its receiver decodes nothing and
    keeps no inbound statistics for this stream (``getStats`` and the RTCP
    receiver reports sent back to the client lack it). That matters once
    clients adapt their bitrate to the server's reports; aiortc does not
    send transport-wide feedback for audio either.
    """

    def __init__(
        self, participant: str, receiver: RTCRtpReceiver, payload_type: int
    ) -> None:
        super().__init__(participant)
        self.payload_type = payload_type
        #: Where decoded work goes (the speaker's worker), when anything needs it.
        self.sink: Callable[[OpusPacket], None] | None = None
        self._line = TimestampLine()
        # An instance attribute shadows the method for this receiver only.
        setattr(receiver, "_handle_rtp_packet", self._handle_rtp_packet)  # noqa: B010

    async def _handle_rtp_packet(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        if packet.payload_type != self.payload_type or not packet.payload:
            self.dropped += 1
            return
        self.received += 1
        # Placed even when unused, so the unwrapping never misses a wrap.
        timestamp = self._line.place(packet.ssrc, packet.timestamp)
        if not self.outlets and self.sink is None:
            return
        opus = OpusPacket(
            payload=packet.payload,
            timestamp=timestamp,
            generation=self._line.generation,
            arrival=time.monotonic(),
        )
        for outlet in self.outlets:
            outlet.push(opus, self)
        if self.sink is not None:
            self.sink(opus)


class ForwardTrack(SlotTrack[InboundAudio, tuple[OpusPacket, InboundAudio]]):
    """The audio a listener hears on one slot: one speaker's packets at a time.

    :meth:`assign` switches the source at once; packets of the previous
    source still queued are dropped, so a speaker taken off stops being
    heard within one packet. Timestamps are rewritten onto one line per slot
    (:meth:`_restamp`), which keeps the listener's jitter buffer from seeing
    a jump when the source changes.
    """

    kind = "audio"

    def __init__(self, listener: str, slot: int) -> None:
        super().__init__(SLOT_QUEUE)
        self.listener = listener
        self.slot = slot
        # The timeline of what this slot sent: source and stream of the last
        # packet, the offset from its timestamps to ours, and where the next
        # packet would start.
        self._last_source: InboundAudio | None = None
        self._last_generation = -1
        self._offset = 0
        self._out: int | None = None
        self._next = 0
        self._sent_at = 0.0

    def push(self, packet: OpusPacket, source: InboundAudio) -> None:
        """Queue a packet of ``source``; the oldest goes if the queue is full."""
        if self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait((packet, source))

    async def recv(self) -> Packet[Stream]:
        """The next packet to send, restamped onto this slot's timeline."""
        while True:
            packet, source = await self._take()
            if time.monotonic() - packet.arrival > STALE_AFTER:
                continue
            pts = self._restamp(packet, source)
            if pts is None:
                continue
            return self._packet(packet.payload, pts, TIME_BASE)

    def _restamp(self, packet: OpusPacket, source: InboundAudio) -> int | None:
        """This slot's timestamp for ``packet``, or None to drop it.

        Within one source stream the source's own spacing is kept, pauses of
        discontinuous transmission included. A new source (or a new stream
        of the same one) starts where the last packet ended, or later if
        that much wall-clock time has passed, so the listener's jitter
        buffer sees neither overlap nor a jump (RFC 3550 section 5.1 asks
        timestamps to follow the sampling instant).
        """
        last = self._out
        if (
            last is None
            or source is not self._last_source
            or packet.generation != self._last_generation
        ):
            self._resync(packet, source)
            return self._place(packet)

        pts = packet.timestamp + self._offset
        waited = (packet.arrival - self._sent_at) * CLOCK_RATE
        if pts <= last and last - pts < _RESYNC_SAMPLES:
            # A late or repeated packet: its place was already passed.
            return None
        if pts <= last or pts - last - waited > _RESYNC_SAMPLES:
            # The source's clock went back, or ran ahead of the wall clock.
            self._resync(packet, source)
        return self._place(packet)

    def _resync(self, packet: OpusPacket, source: InboundAudio) -> None:
        if self._out is None:
            start = 0
        else:
            waited = round((packet.arrival - self._sent_at) * CLOCK_RATE)
            start = max(self._next, self._out + waited)
        self._offset = start - packet.timestamp
        self._last_source = source
        self._last_generation = packet.generation
        logger.debug(
            "slot %s/%d now on %s at %d",
            self.listener,
            self.slot,
            source.participant,
            start,
        )

    def _place(self, packet: OpusPacket) -> int:
        pts = packet.timestamp + self._offset
        self._out = pts
        self._next = pts + packet.samples
        self._sent_at = packet.arrival
        return pts
