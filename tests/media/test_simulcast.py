"""Simulcast: an offer's layers read and answered, its streams rebuilt apart."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator

import av
import pytest
import pytest_asyncio
from aiortc import (
    RTCPeerConnection,
    RTCRtpCodecParameters,
    RTCRtpHeaderExtensionParameters,
    RTCRtpReceiver,
)
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpparameters import RTCRtpReceiveParameters
from aiortc.rtcrtpreceiver import RemoteStreamTrack
from aiortc.rtp import RtpPacket

from client_sdk.protocol import VideoLayer
from client_sdk.video import PatternTrack
from media.simulcast import (
    REPAIRED_RID_URI,
    RID_URI,
    LayerDemux,
    accept_simulcast,
    read_simulcast,
)
from media.video import InboundVideo, VideoCodec, VideoForwardTrack, VideoKind

pytestmark = pytest.mark.timeout(30)

#: The video m-line of an offer Chromium 156 made for a camera sent as two
#: layers (``sendEncodings`` ``l`` at a quarter size and ``h``), codecs cut.
CHROMIUM_OFFER = """v=0\r
o=- 1113246022314318113 2 IN IP4 127.0.0.1\r
s=-\r
t=0 0\r
a=group:BUNDLE 0 1\r
a=extmap-allow-mixed\r
a=msid-semantic: WMS\r
m=audio 9 UDP/TLS/RTP/SAVPF 111\r
c=IN IP4 0.0.0.0\r
a=mid:0\r
a=sendrecv\r
a=rtpmap:111 opus/48000/2\r
m=video 9 UDP/TLS/RTP/SAVPF 96 97\r
c=IN IP4 0.0.0.0\r
a=mid:1\r
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r
a=extmap:9 urn:ietf:params:rtp-hdrext:sdes:mid\r
a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r
a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id\r
a=sendonly\r
a=rtcp-mux\r
a=rtpmap:96 VP8/90000\r
a=rtpmap:97 rtx/90000\r
a=fmtp:97 apt=96\r
a=rid:l send\r
a=rid:h send\r
a=simulcast:send l;h\r
"""

VP8, RTX = 96, 97
LOW_SSRC, HIGH_SSRC, HIGH_RTX_SSRC = 1111, 2222, 3333


def test_an_offers_layers_are_read_and_answered() -> None:
    """Chromium's rids and rid extensions are read; the answer receives them."""
    layers = read_simulcast(CHROMIUM_OFFER)
    assert layers[0] is None
    video = layers[1]
    assert video is not None
    assert video.rids == ("l", "h")
    assert {(e.id, e.uri) for e in video.extensions} == {
        (10, RID_URI),
        (11, REPAIRED_RID_URI),
    }

    answer = accept_simulcast(
        CHROMIUM_OFFER.replace("sendonly", "recvonly"), {1: video}
    )
    audio, camera = answer.split("m=video")
    assert "a=rid" not in audio
    assert camera.endswith("a=rid:l recv\r\na=rid:h recv\r\na=simulcast:recv l;h\r\n")

    # A layer the page turned off stays off: Chromium would start it again.
    paused = read_simulcast(CHROMIUM_OFFER.replace("send l;h", "send ~l;h"))[1]
    assert paused is not None
    assert paused.paused == {"l"}
    answer = accept_simulcast(CHROMIUM_OFFER, {1: paused})
    assert answer.endswith("a=simulcast:recv ~l;h\r\n")


@pytest.mark.parametrize(
    ("change", "rids"),
    [
        # Alternatives: the first is taken; a paused stream is still a layer.
        (("a=simulcast:send l;h", "a=simulcast:send l,x;~h"), ("l", "h")),
        # A rid the m-line does not declare sending is no layer of it.
        (("a=rid:h send", "a=rid:h recv"), None),
        # Without the rid header extension the layers cannot be told apart.
        (("a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n", ""), None),
        # One layer is no simulcast.
        (("a=simulcast:send l;h", "a=simulcast:send h"), None),
        (("a=simulcast:send l;h", "a=simulcast:recv l;h"), None),
    ],
)
def test_an_offer_without_usable_layers_is_answered_as_one_stream(
    change: tuple[str, str], rids: tuple[str, ...] | None
) -> None:
    """A partial simulcast offer keeps its sound layers, or is one stream."""
    layers = read_simulcast(CHROMIUM_OFFER.replace(*change))
    assert (layers[1].rids if layers[1] else None) == rids


def vp8(count: int, width: int, height: int) -> list[bytes]:
    """``count`` frames of a real VP8 stream of one size: a keyframe, then deltas."""
    encoder = av.CodecContext.create("libvpx", "w")
    encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
    encoder.options = {"deadline": "realtime", "lag-in-frames": "0"}
    track = PatternTrack((220, 30, 30), width, height)
    frames = []
    for n in range(count):
        frames += [bytes(packet) for packet in encoder.encode(track.picture(n))]
    return frames


def rtp(
    ssrc: int, seq: int, timestamp: int, frame: bytes, rid: str | None = None
) -> RtpPacket:
    """A one-packet VP8 frame (RFC 7741 payload descriptor, start of partition)."""
    packet = RtpPacket(
        payload_type=VP8,
        sequence_number=seq,
        timestamp=timestamp,
        ssrc=ssrc,
        payload=b"\x10" + frame,
    )
    packet.extensions.rtp_stream_id = rid
    return packet


def retransmission(original: RtpPacket, seq: int, rid: str) -> RtpPacket:
    """``original`` sent again on the RTX stream (RFC 4588 section 4)."""
    packet = RtpPacket(
        payload_type=RTX,
        sequence_number=seq,
        timestamp=original.timestamp,
        ssrc=HIGH_RTX_SSRC,
        payload=struct.pack("!H", original.sequence_number) + original.payload,
    )
    packet.extensions.repaired_rtp_stream_id = rid
    return packet


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[RTCRtpReceiver]:
    """A real aiortc video receiver of an unconnected peer connection."""
    pc = RTCPeerConnection()
    yield pc.addTransceiver("video", direction="recvonly").receiver
    await pc.close()


async def receive(receiver: RTCRtpReceiver) -> None:
    """Start ``receiver`` as aiortc does once a VP8 m-line with RTX is answered."""
    # What the peer connection gives a receiver when it reads the offer.
    receiver._track = RemoteStreamTrack(kind="video")
    await receiver.receive(
        RTCRtpReceiveParameters(
            codecs=[
                RTCRtpCodecParameters("video/VP8", 90_000, payloadType=VP8),
                RTCRtpCodecParameters(
                    "video/rtx", 90_000, payloadType=RTX, parameters={"apt": VP8}
                ),
            ],
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(10, RID_URI),
                RTCRtpHeaderExtensionParameters(11, REPAIRED_RID_URI),
            ],
        )
    )


async def test_layers_are_rebuilt_apart_and_a_lost_packet_comes_back_on_rtx(
    receiver: RTCRtpReceiver,
) -> None:
    """Interleaved layers give whole frames each; a loss is NACKed on its own stream."""
    got: list[tuple[int, bytes, int]] = []

    def sink(layer: int, payload_type: int, frame: JitterFrame) -> None:
        assert payload_type == VP8
        got.append((layer, frame.data, frame.timestamp))

    demux = LayerDemux(receiver, ("l", "h"), sink)
    await receive(receiver)
    low, high = vp8(6, 32, 24), vp8(6, 64, 48)
    sent: list[RtpPacket] = []
    for n in range(6):
        # The layers' sequence numbers and clocks start far apart.
        sent.append(rtp(LOW_SSRC, 100 + n, 5000 + 3000 * n, low[n], "l"))
        sent.append(rtp(HIGH_SSRC, 60_000 + n, 900_000 + 3000 * n, high[n], "h"))
    lost = sent.pop(5)  # the high layer's third frame
    for packet in sent:
        await receiver._handle_rtp_packet(packet, arrival_time_ms=0)

    # A frame comes out when the next one starts: five of the low layer;
    # of the high one only the first, as the second waits for the lost
    # third to end it.
    assert [(layer, data) for layer, data, _ in got if layer == 0] == [
        (0, frame) for frame in low[:5]
    ]
    assert [data for layer, data, _ in got if layer == 1] == high[:1]
    assert [ts for layer, _, ts in got if layer == 0] == [0, 3000, 6000, 9000, 12000]
    low_nacks, high_nacks = demux.nacks(LOW_SSRC), demux.nacks(HIGH_SSRC)
    assert high_nacks is not None
    assert high_nacks.missing == {60_002}
    assert low_nacks is not None
    assert low_nacks.missing == set()

    await receiver._handle_rtp_packet(retransmission(lost, 7, "h"), arrival_time_ms=0)
    # aiortc's jitter buffer gives one frame per packet added.
    assert [data for layer, data, _ in got if layer == 1] == high[:2]
    assert high_nacks.missing == set()
    assert demux.unknown == 0


async def test_a_slot_changes_layer_only_at_the_new_layers_keyframe(
    receiver: RTCRtpReceiver,
) -> None:
    """``low`` and back: the old layer goes on until the new one's keyframe."""
    source = InboundVideo("host", VideoKind.CAMERA, receiver, ("l", "h"))
    await receive(receiver)
    slot = VideoForwardTrack("viewer", 0, VideoCodec.VP8)
    slot.assign(source)
    low, high = vp8(8, 32, 24), vp8(8, 64, 48)
    low_key, high_key = low[0], high[0]
    seq = {LOW_SSRC: 0, HIGH_SSRC: 0}

    async def send(ssrc: int, frame: bytes) -> None:
        seq[ssrc] += 1
        rid = "l" if ssrc == LOW_SSRC else "h"
        packet = rtp(ssrc, seq[ssrc], 3000 * seq[ssrc], frame, rid)
        await receiver._handle_rtp_packet(packet, arrival_time_ms=0)

    async def queued() -> list[bytes]:
        out = []
        while not slot._queue.empty():
            out.append(bytes(await slot.recv()))
        return out

    async def step(low_frame: bytes, high_frame: bytes) -> None:
        # Each layer's frame comes out of its jitter buffer when the next
        # one starts, so a frame sent here is forwarded one step later.
        await send(HIGH_SSRC, high_frame)
        await send(LOW_SSRC, low_frame)

    await step(low_key, high_key)
    await step(low[1], high[1])
    assert await queued() == [high_key]
    assert source.layers == 2
    assert slot.layer is VideoLayer.HIGH

    asked = source.keyframe_requests
    assert slot.set_layer(VideoLayer.LOW) is VideoLayer.LOW
    assert source.keyframe_requests == asked + 1
    await step(low[2], high[2])
    # No keyframe of the low layer yet: the high layer goes on.
    assert await queued() == [high[1]]
    await step(low_key, high[3])
    await step(low[3], high[4])
    assert await queued() == [high[2], high[3], low_key]
    await step(low[4], high[5])
    assert await queued() == [low[3]]
    assert slot.switches == 1

    assert slot.set_layer(VideoLayer.HIGH) is VideoLayer.HIGH
    await step(low[5], high_key)
    await step(low[6], high[6])
    assert await queued() == [low[4], high_key]
    assert slot.switches == 2
    slot.stop()
