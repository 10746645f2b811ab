"""Simulcast from a publisher: the layers negotiated, then told apart.

A browser can send one camera as several encodings of different sizes
(simulcast, RFC 8853), each its own RTP stream with its own SSRC, named in
the offer by a restriction identifier (``a=rid``, RFC 8851) and carried on
the wire in the RTP stream id header extension (RFC 8852). aiortc reads
none of this: its SDP parser drops ``a=rid`` and ``a=simulcast``, its
answer never says ``a=simulcast:recv`` (so a browser falls back to one
encoding), and its receiver runs one jitter buffer and one NACK generator
over every SSRC of an m-line, which interleaved layers would garble.

This module adds what is missing, and only that:

- :func:`read_simulcast` reads the layers a publishing m-line offers, and
  :func:`accept_simulcast` writes the matching ``a=rid:<id> recv`` and
  ``a=simulcast:recv`` lines into aiortc's answer. The relay adds the two
  header extensions to the transceiver before aiortc writes the answer, so
  aiortc both negotiates them and parses them off each packet.
- :func:`route_by_mid` makes aiortc route a stream it has no SSRC for by
  its MID header extension, as BUNDLE (RFC 8843) says, before falling
  back on the payload type: a simulcast offer names no SSRCs, and a second
  publishing video m-line with the same payload types would otherwise get
  the layers' packets dropped as ambiguous.
- :class:`LayerDemux` sits inside one aiortc receiver. aiortc keeps what it
  does for the whole m-line (the bitrate estimate sent back as REMB, the
  receiver reports per SSRC, retransmissions unwrapped, payloads
  depacketized); the demux learns each SSRC's layer from the rid header
  extensions, and gives each layer aiortc's own jitter buffer, NACK
  generator and timestamp mapper, so that each layer yields whole frames
  of its own, and a lost packet is asked again of the stream it belongs to.
"""

from __future__ import annotations

import logging
import re
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCDtlsTransport, RTCRtpHeaderExtensionParameters, RTCRtpReceiver
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtcrtpreceiver import NackGenerator, TimestampMapper
from aiortc.rtp import RtpPacket

from client_sdk.holes import Stream

logger = logging.getLogger(__name__)

#: The RTP stream id and repaired RTP stream id header extensions (RFC 8852).
RID_URI = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
REPAIRED_RID_URI = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"

#: Layers taken from one publishing m-line; an offer's further rids are left
#: out of the answer, and the browser then does not send them.
MAX_LAYERS = 3

#: RFC 8851 section 10: rid-id = 1*(alpha-numeric / "-" / "_"), here at most
#: 16 characters, what a one-byte RTP header extension element can carry.
_RID = re.compile(r"[A-Za-z0-9_-]{1,16}")

#: aiortc's video jitter buffer, as its receiver makes it.
_JITTER_CAPACITY = 512

#: Frame arrival a layer may miss while another layer delivers, and still
#: count as sent (see :meth:`LayerDemux.live`).
LAYER_SILENT = 1.0


@dataclass(frozen=True, slots=True)
class SimulcastOffer:
    """The layers one m-line of an offer sends, lowest first."""

    #: The rids, in the order of the offer's ``a=simulcast:send`` list.
    rids: tuple[str, ...]
    #: The rid header extensions with the offer's ids, for the answer.
    extensions: tuple[RTCRtpHeaderExtensionParameters, ...]
    #: The rids the offer marks paused (``~``); the answer keeps them so.
    paused: frozenset[str] = frozenset()


def read_simulcast(offer: str) -> list[SimulcastOffer | None]:
    """The simulcast layers of each m-line of ``offer``, None where there are none.

    An m-line sends layers when it has ``a=simulcast:send`` naming rids that
    it declares ``a=rid:<id> send``, and it offers the RTP stream id header
    extension (without it the layers' packets cannot be told apart). The
    first alternative of each stream is taken (RFC 8853 section 5.1: ``,``
    separates alternatives, ``;`` streams, ``~`` marks a paused stream,
    which is still a layer that may start later).

    A paused stream must stay paused in the answer: Chromium takes a
    ``recv`` list without ``~`` as a request to start the stream, even one
    its page turned off.
    """
    found: list[SimulcastOffer | None] = []
    for section in _sections(offer)[1:]:
        found.append(_section_layers(section))
    return found


def _sections(sdp: str) -> list[list[str]]:
    """The session part, then each media section, as lists of lines."""
    sections: list[list[str]] = [[]]
    for line in sdp.splitlines():
        if line.startswith("m="):
            sections.append([])
        sections[-1].append(line)
    return sections


def _section_layers(lines: list[str]) -> SimulcastOffer | None:
    sending: set[str] = set()
    listed: list[tuple[str, bool]] = []
    extensions: dict[str, RTCRtpHeaderExtensionParameters] = {}
    for line in lines:
        if line.startswith("a=rid:"):
            words = line[len("a=rid:") :].split()
            if len(words) >= 2 and words[1] == "send":
                sending.add(words[0])
        elif line.startswith("a=simulcast:"):
            listed = _simulcast_send(line[len("a=simulcast:") :])
        elif line.startswith("a=extmap:"):
            words = line[len("a=extmap:") :].split()
            if len(words) >= 2 and words[1] in (RID_URI, REPAIRED_RID_URI):
                number = words[0].split("/")[0]
                if number.isdigit():
                    extensions[words[1]] = RTCRtpHeaderExtensionParameters(
                        id=int(number), uri=words[1]
                    )
    paused: dict[str, bool] = {}
    for rid, pause in listed:
        paused.setdefault(rid, pause)
    usable = [rid for rid in paused if rid in sending and _RID.fullmatch(rid)]
    rids = tuple(usable[:MAX_LAYERS])
    if len(rids) < 2 or RID_URI not in extensions:
        return None
    return SimulcastOffer(
        rids,
        tuple(extensions.values()),
        frozenset(rid for rid in rids if paused[rid]),
    )


def _simulcast_send(value: str) -> list[tuple[str, bool]]:
    """The first alternative of each stream the value sends, and if it is paused."""
    words = value.split()
    for direction, streams in zip(words[::2], words[1::2], strict=False):
        if direction == "send":
            first = [stream.split(",")[0] for stream in streams.split(";") if stream]
            return [(rid.removeprefix("~"), rid.startswith("~")) for rid in first]
    return []


def accept_simulcast(answer: str, accepted: Mapping[int, SimulcastOffer]) -> str:
    """``answer`` with ``a=rid`` and ``a=simulcast:recv`` on the accepted m-lines.

    ``accepted`` maps an m-line's index to the layers the relay receives on
    it. aiortc cannot write these attributes itself (RFC 8853 section 5.3:
    the answerer reverses the direction and lists the rids it takes).
    """
    if not accepted:
        return answer
    sections = _sections(answer)
    for index, offer in accepted.items():
        lines = sections[index + 1]
        lines.extend(f"a=rid:{rid} recv" for rid in offer.rids)
        listed = [f"~{rid}" if rid in offer.paused else rid for rid in offer.rids]
        lines.append("a=simulcast:recv " + ";".join(listed))
    return "".join(line + "\r\n" for section in sections for line in section)


#: Routers already routing by MID.
_MID_ROUTERS: weakref.WeakSet[Any] = weakref.WeakSet()


def route_by_mid(transport: RTCDtlsTransport) -> None:
    """Let ``transport`` route packets of unknown SSRCs by their MID first.

    aiortc's router keeps each receiver's MID but routes by SSRC, then by
    payload type only when one receiver alone has it. The first packets
    of a browser's streams carry the MID extension; an SSRC bound by it
    keeps its receiver, as aiortc does for one bound by payload type.
    """
    router = transport._rtp_router
    if router in _MID_ROUTERS:
        return
    _MID_ROUTERS.add(router)
    route = router.route_rtp

    def routed(packet: RtpPacket) -> Any:
        mid = packet.extensions.mid
        if mid is not None and packet.ssrc not in router.ssrc_table:
            receiver = router.mid_table.get(mid)
            if receiver is not None:
                router.ssrc_table[packet.ssrc] = receiver
                return receiver
        return route(packet)

    setattr(router, "route_rtp", routed)  # noqa: B010


@dataclass(slots=True)
class _Layer:
    """One layer's RTP streams and the pieces of aiortc that rebuild its frames."""

    index: int
    rid: str
    ssrc: int | None = None
    jitter: JitterBuffer = field(
        default_factory=lambda: JitterBuffer(capacity=_JITTER_CAPACITY, is_video=True)
    )
    nack: NackGenerator = field(default_factory=NackGenerator)
    timestamps: TimestampMapper = field(default_factory=TimestampMapper)
    #: When this layer last gave a whole frame (monotonic seconds), or None.
    last_frame: float | None = None


#: Receives a layer's whole frame: its layer index, its payload type and the
#: frame, with a timestamp unwrapped from 0 per layer.
FrameSink = Callable[[int, int, JitterFrame], None]


class LayerDemux:
    """Tells the layers of one simulcast m-line apart inside aiortc's receiver.

    It takes three places of the receiver (name-mangled attributes of
    :class:`aiortc.RTCRtpReceiver`, 1.16): the packet handler, wrapped to
    learn which SSRC carries which layer before aiortc sees the packet; the
    jitter buffer, which it replaces with one per layer and which hands
    whole frames to ``sink`` instead of back to aiortc (aiortc's single
    timestamp mapper would take each switch between layers for a clock
    wrap); and the NACK generator, replaced by one per SSRC, so the missing
    sequence numbers aiortc asks for are those of the packet's own stream.
    """

    def __init__(
        self, receiver: RTCRtpReceiver, rids: tuple[str, ...], sink: FrameSink
    ) -> None:
        self.layers = tuple(_Layer(index, rid) for index, rid in enumerate(rids))
        self._by_rid = {layer.rid: layer for layer in self.layers}
        self._by_ssrc: dict[int, _Layer] = {}
        self._repairs: dict[int, str] = {}
        self._sink = sink
        self._receiver = receiver
        #: Packets of SSRCs that no rid was seen for.
        self.unknown = 0
        # RTX SSRC to media SSRC: aiortc unwraps only retransmissions it
        # can place, and a simulcast offer names no SSRCs to fill it from.
        private = "_RTCRtpReceiver__"
        self._rtx: dict[int, int] = getattr(receiver, f"{private}rtx_ssrc")
        self._handle = receiver._handle_rtp_packet
        setattr(receiver, "_handle_rtp_packet", self._learn)  # noqa: B010
        setattr(receiver, f"{private}jitter_buffer", self)
        setattr(receiver, f"{private}nack_generator", _StreamNacks(self))

    def __repr__(self) -> str:
        rids = ",".join(f"{layer.rid}={layer.ssrc}" for layer in self.layers)
        return f"<LayerDemux {rids}>"

    def ssrc(self, index: int) -> int | None:
        """The media SSRC of layer ``index``, once its first packet came."""
        return self.layers[index].ssrc

    def live(self) -> list[int]:
        """The indexes of the layers being sent now, lowest first.

        A browser stops sending its upper layers when its bandwidth estimate
        falls, and starts them again later; a layer counts as sent while its
        last frame is no more than :data:`LAYER_SILENT` older than the
        newest frame of any layer, so a slow source (a still screen) is not
        taken for a stopped one.
        """
        arrivals = [
            layer.last_frame for layer in self.layers if layer.last_frame is not None
        ]
        if not arrivals:
            return []
        newest = max(arrivals)
        return [
            layer.index
            for layer in self.layers
            if layer.last_frame is not None
            and newest - layer.last_frame <= LAYER_SILENT
        ]

    async def _learn(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        """Note the layer an SSRC carries, then let aiortc handle the packet.

        Browsers write the rid extensions only on a stream's first packets,
        until the receiver reports on it, so the binding is kept.
        """
        extensions = packet.extensions
        if extensions.rtp_stream_id is not None:
            self._bind(packet.ssrc, extensions.rtp_stream_id)
        elif extensions.repaired_rtp_stream_id is not None:
            self._repairs[packet.ssrc] = extensions.repaired_rtp_stream_id
            self._bind_repair(packet.ssrc)
        await self._handle(packet, arrival_time_ms)

    def _bind(self, ssrc: int, rid: str) -> None:
        layer = self._by_rid.get(rid)
        if layer is None or layer.ssrc == ssrc:
            return
        if layer.ssrc is not None:
            # The publisher restarted the layer on a new SSRC.
            self._by_ssrc.pop(layer.ssrc, None)
            layer.jitter = JitterBuffer(capacity=_JITTER_CAPACITY, is_video=True)
            layer.timestamps = TimestampMapper()
            layer.nack = NackGenerator()
        layer.ssrc = ssrc
        self._by_ssrc[ssrc] = layer
        logger.debug("%r: layer %s on SSRC %d", self, rid, ssrc)
        for rtx in [rtx for rtx, repaired in self._repairs.items() if repaired == rid]:
            self._bind_repair(rtx)

    def _bind_repair(self, rtx: int) -> None:
        layer = self._by_rid.get(self._repairs[rtx])
        if layer is not None and layer.ssrc is not None:
            self._rtx[rtx] = layer.ssrc

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        """aiortc's jitter buffer call: put the packet in its layer's buffer.

        Returns aiortc's own answer for "ask for a keyframe" (the layer's
        buffer overflowed), which aiortc sends for this packet's SSRC, and
        never a frame: frames go to the sink, stamped on the layer's clock.
        """
        layer = self._by_ssrc.get(packet.ssrc)
        if layer is None:
            # A stream whose rid has not been seen: nothing to place it in.
            self.unknown += 1
            return False, None
        keyframe_needed, frame = layer.jitter.add(packet)
        if frame is not None:
            frame.timestamp = layer.timestamps.map(frame.timestamp)
            layer.last_frame = time.monotonic()
            self._sink(layer.index, packet.payload_type, frame)
        return keyframe_needed, None

    def streams(self) -> list[Stream]:
        """Each layer's buffer and NACK generator, once its first packet came."""
        return [
            Stream(layer.jitter, layer.nack, layer.ssrc)
            for layer in self.layers
            if layer.ssrc is not None
        ]

    def nacks(self, ssrc: int) -> NackGenerator | None:
        """The NACK generator of a layer's media SSRC; None for another SSRC."""
        layer = self._by_ssrc.get(ssrc)
        return layer.nack if layer is not None else None


class _StreamNacks:
    """aiortc's NACK generator call, kept per SSRC (see :class:`LayerDemux`)."""

    def __init__(self, demux: LayerDemux) -> None:
        self._demux = demux
        self.missing: set[int] = set()

    def add(self, packet: RtpPacket) -> bool:
        generator = self._demux.nacks(packet.ssrc)
        if generator is None:
            return False
        missed = generator.add(packet)
        self.missing = generator.missing
        return missed
