"""A client-side aiortc peer with video, signaled by hand, for the media tests.

:class:`CameraPeer` is to video what :class:`tests.media.peer.TonePeer` is to
audio: it publishes the SDK's :class:`client_sdk.video.PatternTrack` (one
colour) as a camera and, if asked, a screen, and keeps what its video slots
show in the SDK's :class:`client_sdk.video.PictureLog`, so a test can drive
a :class:`media.relay.MediaRoom` with no server around it. Its video m-lines
are the SDK's own (:class:`client_sdk.video.VideoLines`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpSender
from aiortc.rtp import RtpPacket

from client_sdk.video import Colour, VideoLines
from media.ice import rtc_configuration
from tests.media.peer import HandSignaled

#: Small pictures at a low rate: a noisy 2-core machine encodes and decodes
#: several of them at once.
SIZE = (160, 120)
FPS = 10


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
