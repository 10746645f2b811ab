"""A client-side aiortc peer with video, signaled by hand, for the media tests.

:class:`CameraPeer` is to video what :class:`tests.media.peer.TonePeer` is to
audio: it publishes the SDK's :class:`client_sdk.video.PatternTrack` (one
colour) as a camera and, if asked, a screen, and keeps what its video slots
show in the SDK's :class:`client_sdk.video.PictureLog`, so a test can drive
a :class:`media.relay.MediaRoom` with no server around it.
"""

from __future__ import annotations

import asyncio

from aiortc import (
    MediaStreamTrack,
    RTCPeerConnection,
    RTCRtpTransceiver,
)

from client_sdk.video import Colour, PatternTrack, PictureLog, add_video_lines
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
        self.publishing = [
            PatternTrack(colour, *SIZE, fps=FPS)
            for colour in (camera, screen)
            if colour is not None
        ]
        self.seen = PictureLog(slots)
        self._receivers: list[RTCRtpTransceiver] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def offer(self) -> str:
        """The SDP offer: the published tracks, then the video slots."""
        self._receivers = add_video_lines(self.pc, self.publishing, self.seen.slots)
        self.pc.on("track", self._on_track)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def close(self) -> None:
        """Close the connection and wait for the watching tasks."""
        await self.pc.close()
        for track in self.publishing:
            track.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _on_track(self, track: MediaStreamTrack) -> None:
        slot = next(
            (i for i, t in enumerate(self._receivers) if t.receiver.track is track),
            None,
        )
        if slot is not None:
            task = asyncio.create_task(self.seen.watch(track, slot))
            self._tasks.add(task)
