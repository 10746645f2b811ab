"""A client-side aiortc peer with video, signaled by hand, for the media tests.

:class:`CameraPeer` is to video what :class:`tests.media.peer.TonePeer` is to
audio: it publishes the SDK's :class:`client_sdk.video.PatternTrack` (one
colour) as a camera and, if asked, a screen, and keeps what its video slots
show in the SDK's :class:`client_sdk.video.PictureLog`, so a test can drive
a :class:`media.relay.MediaRoom` with no server around it. Its video m-lines
are the SDK's own (:class:`client_sdk.video.VideoLines`).
"""

from __future__ import annotations

from aiortc import MediaStreamTrack, RTCPeerConnection

from client_sdk.video import Colour, VideoLines
from media.ice import rtc_configuration
from tests.media.peer import HandSignaled

#: Small pictures at a low rate: a noisy 2-core machine encodes and decodes
#: several of them at once.
SIZE = (160, 120)
FPS = 10


class CameraPeer(HandSignaled):
    """A participant's browser: a pattern camera and screen, ``slots`` viewers."""

    def __init__(
        self,
        name: str,
        camera: Colour | None = None,
        screen: Colour | None = None,
        *,
        slots: int = 0,
    ) -> None:
        super().__init__(name, RTCPeerConnection(rtc_configuration(())))
        self._lines = VideoLines(camera, screen, slots, SIZE, FPS)
        self.publishing = self._lines.publishing
        self.seen = self._lines.seen

    async def offer(self) -> str:
        """The SDP offer: the published tracks, then the video slots."""
        self._lines.add_to(self.pc)
        self.pc.on("track", self._on_track)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def close(self) -> None:
        """Close the connection, stop the patterns, wait for the watchers."""
        await super().close()
        self._lines.stop()

    def _on_track(self, track: MediaStreamTrack) -> None:
        watching = self._lines.watch(track)
        if watching is not None:
            self._spawn(watching)
