"""H.264 as browsers without VP8 send it: forwarded as it came, decoded by viewers.

The relay answers VP8 where an m-line offers it and H.264 (packetization
mode 1) otherwise; a slot forwards only the codec its own m-line
negotiated. These peers offer H.264 alone, as such a browser would.
"""

from __future__ import annotations

from aiortc import RTCRtpCodecCapability, RTCRtpSender, RTCSessionDescription

from media.relay import MediaRoom
from media.video import VideoKind
from tests.media.conftest import Joined
from tests.media.peer import eventually
from tests.media.video_peer import CameraPeer

GREEN = (30, 200, 60)
CAMERA = VideoKind.CAMERA


class H264Peer(CameraPeer):
    """A camera peer whose video m-lines offer H.264 in packetization mode 1."""

    async def offer(self) -> str:
        make_offer = self.pc.createOffer

        async def h264_offer() -> RTCSessionDescription:
            # The SDK has added its video m-lines by now: narrow each to H.264.
            for transceiver in self.pc.getTransceivers():
                if transceiver.kind == "video":
                    transceiver.setCodecPreferences(_h264())
            return await make_offer()

        self.pc.createOffer = h264_offer  # type: ignore[method-assign]
        return await super().offer()


def _h264() -> list[RTCRtpCodecCapability]:
    return [
        codec
        for codec in RTCRtpSender.getCapabilities("video").codecs
        if codec.mimeType.lower() == "video/rtx"
        or (
            codec.mimeType.lower() == "video/h264"
            and str(codec.parameters.get("packetization-mode")) == "1"
        )
    ]


def _video_codecs(sdp: str) -> set[str]:
    """The codec names of the video m-lines of ``sdp``, RTX aside."""
    names: set[str] = set()
    for section in sdp.split("m=")[1:]:
        if section.startswith("video"):
            for line in section.splitlines():
                if line.startswith("a=rtpmap:"):
                    names.add(line.split()[1].split("/")[0].upper())
    return names - {"RTX"}


async def test_an_h264_camera_reaches_an_h264_viewer(
    room: MediaRoom, joined: Joined
) -> None:
    """The host's H.264 pattern is decoded by a viewer whose slot took H.264."""
    host = await joined(H264Peer("host", GREEN))
    viewer = await joined(H264Peer("viewer", slots=1))
    for peer in (host, viewer):
        assert _video_codecs(peer.pc.remoteDescription.sdp) == {"H264"}
    room.set_video({"viewer": [("host", CAMERA)]})
    await eventually(
        lambda: viewer.seen.sees(GREEN), 10.0, f"green; saw {viewer.seen.describe()}"
    )
    camera = room.published("host")[CAMERA]
    assert camera.keyframes > 0
    assert room.forwarding_video("viewer") == (("host", CAMERA),)
