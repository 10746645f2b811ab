"""A client-side aiortc peer with video, signaled by hand, for the media tests.

:class:`CameraPeer` is to video what :class:`tests.media.peer.TonePeer` is to
audio: it publishes the SDK's :class:`client_sdk.video.PatternTrack` (one
colour) as a camera and, if asked, a screen, and keeps what its video slots
show in the SDK's :class:`client_sdk.video.PictureLog`, so a test can drive
a :class:`media.relay.MediaRoom` with no server around it. Its video m-lines
are the SDK's own (:class:`client_sdk.video.VideoLines`).
:class:`SoundAndPicturePeer` has both a tone peer's audio and a camera
peer's video, and can lose some of the packets that reach it.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Callable
from typing import Any

from aiortc import (
    MediaStreamTrack,
    RTCDtlsTransport,
    RTCPeerConnection,
    RTCRtpHeaderExtensionParameters,
    RTCRtpParameters,
    RTCRtpSender,
    RTCRtpTransceiver,
)
from aiortc.rtp import HeaderExtensionsMap, RtpPacket, is_rtcp

from client_sdk.audio import ToneTrack
from client_sdk.video import Colour, PatternTrack, VideoLines
from media.ice import rtc_configuration
from media.simulcast import REPAIRED_RID_URI, RID_URI
from tests.media.peer import HandSignaled, TonePeer

#: Small pictures at a low rate: a noisy 2-core machine encodes and decodes
#: several of them at once.
SIZE = (160, 120)
FPS = 10
#: The quarter-size layer of a simulcast camera.
LOW_SIZE = (80, 60)


class HeldTrack(MediaStreamTrack):
    """A published track whose first frame waits until the test releases it."""

    kind = "video"

    def __init__(self, inner: MediaStreamTrack) -> None:
        super().__init__()
        self._inner = inner
        self.released = asyncio.Event()

    async def recv(self) -> Any:
        """The inner track's next frame, once released."""
        await self.released.wait()
        return await self._inner.recv()


class CameraPeer(HandSignaled):
    """A participant's browser: a pattern camera and screen, ``slots`` viewers."""

    def __init__(
        self,
        name: str,
        camera: Colour | None = None,
        screen: Colour | None = None,
        *,
        slots: int = 0,
        held: bool = False,
    ) -> None:
        super().__init__(name, RTCPeerConnection(rtc_configuration(())))
        self._lines = VideoLines(camera, screen, slots, SIZE, FPS)
        self.publishing = self._lines.publishing
        self.seen = self._lines.seen
        self._held = held
        #: PLIs and FIRs the server sent this peer's published tracks.
        self.keyframe_requests = 0

    async def offer(self) -> str:
        """The SDP offer: the published tracks, then the video slots."""
        self._lines.add_to(self.pc)
        for sender in self.pc.getSenders():
            if sender.track in self.publishing:
                self._count_keyframe_requests(sender)
                if self._held:
                    sender.replaceTrack(HeldTrack(sender.track))
        self.pc.on("track", self._on_track)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    def camera_sender(self) -> RTCRtpSender:
        """The sender of the published camera."""
        return next(s for s in self.pc.getSenders() if s.track is not None)

    def _count_keyframe_requests(self, sender: RTCRtpSender) -> None:
        encode_a_keyframe = sender._send_keyframe

        def asked() -> None:
            self.keyframe_requests += 1
            encode_a_keyframe()

        # aiortc calls this on each PLI or FIR routed to the sender.
        setattr(sender, "_send_keyframe", asked)  # noqa: B010

    def release(self) -> None:
        """Let a held camera send its first frame."""
        track = self.camera_sender().track
        assert isinstance(track, HeldTrack)
        track.released.set()

    async def send_rtx_padding(self) -> None:
        """One padding-only packet on the camera's RTX stream, as browsers probe."""
        sender = self.camera_sender()
        payload_type = getattr(sender, "_RTCRtpSender__rtx_payload_type")  # noqa: B009
        assert payload_type is not None
        packet = RtpPacket(payload_type=payload_type, ssrc=sender._rtx_ssrc)
        packet.padding_size = 32
        await sender.transport._send_rtp(packet.serialize())

    async def close(self) -> None:
        """Close the connection, stop the patterns, wait for the watchers."""
        await super().close()
        self._lines.stop()

    def _on_track(self, track: MediaStreamTrack) -> None:
        watching = self._lines.watch(track)
        if watching is not None:
            self._spawn(watching)


def drop_arriving(transport: RTCDtlsTransport, drops: Callable[[bytes], bool]) -> None:
    """Drop each RTP packet ``drops`` says, where ``transport`` decrypted it.

    No receiver sees a dropped packet: the receivers ask for
    retransmissions, count the losses in their reports, and the decoders get
    what is left, as on a lossy network. RTCP goes through.
    """
    handle = transport._handle_rtp_data

    async def arrived(data: bytes, arrival_time_ms: int) -> None:
        if not drops(data):
            await handle(data, arrival_time_ms)

    # aiortc's transport calls this for each RTP packet it decrypts.
    setattr(transport, "_handle_rtp_data", arrived)  # noqa: B010


class PacketLoss:
    """Makes a peer connection's link drop a share of the RTP packets it gets.

    Packets are dropped as :func:`drop_arriving` does. Seeded: the same
    packets are lost on every run.
    """

    def __init__(self, pc: RTCPeerConnection, seed: str) -> None:
        self._pc = pc
        #: RTP packets that reached the peer, and those it dropped.
        self.arrived = 0
        self.dropped = 0
        self._share = 0.0
        self._random = random.Random(seed)
        self._lossy: set[RTCDtlsTransport] = set()

    def lose(self, share: float) -> None:
        """Drop ``share`` of the RTP packets that arrive from now on (0: none)."""
        self._share = share
        for transceiver in self._pc.getTransceivers():
            transport = transceiver.receiver.transport
            if transport is not None and transport not in self._lossy:
                self._lossy.add(transport)
                drop_arriving(transport, self._drops)

    def _drops(self, data: bytes) -> bool:
        self.arrived += 1
        if self._random.random() < self._share:
            self.dropped += 1
            return True
        return False


class SoundAndPicturePeer(TonePeer):
    """A participant's browser with audio and video on one link.

    A tone microphone (or none) and ``slots`` audio slots as
    :class:`tests.media.peer.TonePeer`, a pattern camera (or none) and
    ``video_slots`` video slots as :class:`CameraPeer`, the audio m-lines
    first unless ``video_first``. :meth:`lose` makes its link drop a share
    of the RTP packets that reach it.
    """

    def __init__(
        self,
        name: str,
        frequency: float | None,
        camera: Colour | None = None,
        *,
        slots: int = 1,
        video_slots: int = 0,
        video_first: bool = False,
    ) -> None:
        super().__init__(name, frequency, slots=slots)
        self._video_first = video_first
        # Max-bundle, as a browser and the relay: aiortc's default bundle
        # policy gives an offer of audio and video two transports, and the
        # relay's answer bundles them onto one the client does not keep.
        self.pc = RTCPeerConnection(rtc_configuration(()))
        self._lines = VideoLines(camera, None, video_slots, SIZE, FPS)
        self.seen = self._lines.seen
        self.link = PacketLoss(self.pc, name)

    async def offer(self) -> str:
        """The SDP offer: audio m-lines then video, or video first if told."""
        if self._video_first:
            self._lines.add_to(self.pc)
        return await super().offer()

    def _add_lines(self) -> None:
        if not self._video_first:
            self._lines.add_to(self.pc)

    def lose(self, share: float) -> None:
        """Drop ``share`` of the RTP packets that arrive from now on (0: none)."""
        self.link.lose(share)

    @property
    def arrived(self) -> int:
        """RTP packets that reached the peer."""
        return self.link.arrived

    @property
    def dropped(self) -> int:
        """RTP packets the peer's link dropped."""
        return self.link.dropped

    async def close(self) -> None:
        """Close the connection, stop the pattern, wait for the listeners."""
        await super().close()
        self._lines.stop()

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind != "video":
            super()._on_track(track)
            return
        watching = self._lines.watch(track)
        if watching is not None:
            self._spawn(watching)


class SimulcastCameraPeer(HandSignaled):
    """A browser's camera sent as two simulcast layers, as Chromium sends it.

    aiortc sends one stream per m-line and knows neither ``a=rid`` nor
    ``a=simulcast``, so this peer does by hand what a browser's encoder
    does: its offer's camera m-line gains the rid lines and the RTP stream
    id header extensions (RFC 8851, 8852, 8853) and loses its SSRC lines,
    a second aiortc sender on the same transport sends the quarter-size
    layer (``l``, :data:`LOW_SIZE`) beside the transceiver's full one
    (``h``, :data:`SIZE`), and every packet of either leaves with its rid,
    a retransmission with its repaired rid.
    """

    #: The offer's ids of the two header extensions, unused by aiortc's own.
    RID_ID, REPAIRED_ID = 10, 11

    def __init__(self, name: str, camera: Colour, frequency: float | None) -> None:
        super().__init__(name, RTCPeerConnection(rtc_configuration(())))
        self._frequency = frequency
        self._high = PatternTrack(camera, *SIZE, fps=FPS)
        self._low = PatternTrack(camera, *LOW_SIZE, fps=FPS)
        self._low_sender: RTCRtpSender | None = None
        self._rids: dict[int, tuple[str | None, str | None]] = {}
        self._map = HeaderExtensionsMap()

    async def offer(self) -> str:
        """The offer a browser would make: microphone, then a camera of two layers."""
        if self._frequency is not None:
            self.pc.addTransceiver(ToneTrack(self._frequency), direction="sendonly")
        camera = self.pc.addTransceiver(self._high, direction="sendonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        sdp = self.pc.localDescription.sdp
        audio, video = sdp.split("m=video")
        lines = [
            line
            for line in ("m=video" + video).split("\r\n")
            if line and not line.startswith("a=ssrc")
        ]
        lines += [
            f"a=extmap:{self.RID_ID} {RID_URI}",
            f"a=extmap:{self.REPAIRED_ID} {REPAIRED_RID_URI}",
            "a=rid:l send",
            "a=rid:h send",
            "a=simulcast:send l;h",
        ]
        extensions = [
            RTCRtpHeaderExtensionParameters(id=int(number), uri=uri)
            for number, uri in re.findall(r"a=extmap:(\d+) (\S+)", video)
        ]
        extensions += [
            RTCRtpHeaderExtensionParameters(id=self.RID_ID, uri=RID_URI),
            RTCRtpHeaderExtensionParameters(id=self.REPAIRED_ID, uri=REPAIRED_RID_URI),
        ]
        self._map.configure(RTCRtpParameters(headerExtensions=extensions))
        self._tag(camera)
        return audio + "\r\n".join(lines) + "\r\n"

    async def connected(self, within: float = 10.0) -> None:
        """Wait until connected, then start the quarter-size layer beside the full."""
        await super().connected(within)
        camera = next(t for t in self.pc.getTransceivers() if t.kind == "video")
        transport = camera.sender.transport
        low = RTCRtpSender(self._low, transport)
        self._rids[low._ssrc] = ("l", None)
        self._rids[low._rtx_ssrc] = (None, "l")
        # The parameters aiortc gave the transceiver's own sender: the same
        # codecs, header extensions and MID.
        local_rtp = getattr(self.pc, "_RTCPeerConnection__localRtp")  # noqa: B009
        await low.send(local_rtp(camera))
        self._low_sender = low

    def _tag(self, camera: RTCRtpTransceiver) -> None:
        """Put each layer's rid on its packets where the transport sends them."""
        sender = camera.sender
        self._rids[sender._ssrc] = ("h", None)
        self._rids[sender._rtx_ssrc] = (None, "h")
        transport = sender.transport
        send = transport._send_rtp

        async def tagged(data: bytes) -> None:
            if not is_rtcp(data):
                packet = RtpPacket.parse(data, self._map)
                rid, repaired = self._rids.get(packet.ssrc, (None, None))
                if rid is not None or repaired is not None:
                    packet.extensions.rtp_stream_id = rid
                    packet.extensions.repaired_rtp_stream_id = repaired
                    data = packet.serialize(self._map)
            await send(data)

        # aiortc's senders call this with each packet before protecting it.
        setattr(transport, "_send_rtp", tagged)  # noqa: B010

    async def close(self) -> None:
        """Stop the second layer, close the connection, stop the patterns."""
        if self._low_sender is not None:
            await self._low_sender.stop()
        await super().close()
        self._high.stop()
        self._low.stop()
