"""What an offer asks of the relay, m-line by m-line, read before answering.

A participant's offer says, per m-line, whether it sends or receives, and
which codecs: :func:`read_offer` turns that into a :class:`Plan` the relay
answers from (a microphone, audio slots to hear speakers on, published
camera or screen tracks with their simulcast layers, video slots), and
refuses an offer with nothing the relay can use.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from aiortc import RTCRtpCodecCapability, RTCRtpCodecParameters, RTCRtpSender
from aiortc import exceptions as rtc_errors
from aiortc import sdp as rtc_sdp

from .errors import BadOffer
from .simulcast import SimulcastOffer, read_simulcast
from .video import VideoCodec, VideoKind

# What aiortc raises for a description it cannot apply. Its SDP parser also
# checks with ``assert``, so AssertionError means "malformed" there.
SDP_ERRORS = (
    ValueError,
    AssertionError,
    IndexError,
    KeyError,
    rtc_errors.InternalError,
    rtc_errors.InvalidAccessError,
    rtc_errors.InvalidStateError,
    rtc_errors.OperationError,
)

#: Directions in which the offerer sends, and in which it receives (RFC 8866
#: section 6.7; without an attribute, sendrecv is assumed).
_SENDS = ("sendrecv", "sendonly", None)
_RECEIVES = ("sendrecv", "recvonly", None)

#: Video slots one participant may receive: the host's two tracks and the
#: classes of a large linked lesson. Further receiving video m-lines are
#: answered without sending, so an offer cannot make the server keep
#: hundreds of idle senders.
MAX_VIDEO_SLOTS = 16


@dataclass(frozen=True, slots=True)
class AudioLine:
    """One audio m-line of an offer, as the answer will treat it."""

    slot: bool
    microphone: bool
    opus: int | None


@dataclass(frozen=True, slots=True)
class VideoLine:
    """One video m-line of an offer: a published track, a slot, or neither."""

    slot: bool
    publishes: VideoKind | None
    codec: VideoCodec | None
    #: The m-line's index in the offer.
    index: int = 0
    #: Its simulcast layers, when it publishes and offers them.
    simulcast: SimulcastOffer | None = None


@dataclass(slots=True)
class Plan:
    audio: list[AudioLine] = field(default_factory=list)
    video: list[VideoLine] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)


def opus_capability() -> RTCRtpCodecCapability:
    for codec in RTCRtpSender.getCapabilities("audio").codecs:
        if codec.mimeType.lower() == "audio/opus":
            return codec
    raise BadOffer("this aiortc build has no Opus")  # pragma: no cover


def read_offer(offer: str) -> Plan:
    """Read what each m-line of ``offer`` asks for."""
    try:
        description = rtc_sdp.SessionDescription.parse(offer)
    except SDP_ERRORS as exc:
        raise BadOffer("offer is not valid SDP") from exc
    plan = Plan()
    microphone = False
    layers = read_simulcast(offer)
    for index, media in enumerate(description.media):
        plan.kinds.append(media.kind)
        if media.kind == "video":
            simulcast = layers[index] if index < len(layers) else None
            plan.video.append(_video_line(media, plan, index, simulcast))
            continue
        if media.kind != "audio":
            continue
        opus = next(
            (
                c.payloadType
                for c in media.rtp.codecs
                if c.mimeType.lower() == "audio/opus"
            ),
            None,
        )
        sends = media.direction in _SENDS and opus is not None and not microphone
        microphone = microphone or sends
        plan.audio.append(
            AudioLine(
                slot=media.direction in _RECEIVES and opus is not None,
                microphone=sends,
                opus=opus,
            )
        )
    if not any(line.slot or line.microphone for line in plan.audio) and not any(
        line.slot or line.publishes for line in plan.video
    ):
        raise BadOffer(
            "offer has no Opus audio or VP8/H.264 video to send or receive",
            plan.kinds,
        )
    return plan


def _video_line(
    media: rtc_sdp.MediaDescription,
    plan: Plan,
    index: int,
    simulcast: SimulcastOffer | None,
) -> VideoLine:
    """How the answer treats a video m-line, given the lines before it."""
    codec = _video_codec(media.rtp.codecs)
    publishes = None
    if media.direction in _SENDS and codec is not None:
        taken = {line.publishes for line in plan.video}
        publishes = next((kind for kind in VideoKind if kind not in taken), None)
    slots = sum(line.slot for line in plan.video)
    return VideoLine(
        slot=media.direction in _RECEIVES
        and codec is not None
        and slots < MAX_VIDEO_SLOTS,
        publishes=publishes,
        codec=codec,
        index=index,
        simulcast=simulcast if publishes is not None else None,
    )


def _video_codec(offered: Iterable[RTCRtpCodecParameters]) -> VideoCodec | None:
    """VP8 when the offer has it, else H.264 in packetization mode 1, else None."""
    names = {
        codec.mimeType.lower()
        for codec in offered
        if codec.mimeType.lower() != "video/h264"
        or str(codec.parameters.get("packetization-mode", "0")) == "1"
    }
    for choice in VideoCodec:
        if f"video/{choice.value.lower()}" in names:
            return choice
    return None


def video_capabilities(codec: VideoCodec) -> list[RTCRtpCodecCapability]:
    """aiortc's capabilities of ``codec``, with RTX for retransmissions."""
    wanted = f"video/{codec.value.lower()}"
    return [
        c
        for c in RTCRtpSender.getCapabilities("video").codecs
        if c.mimeType.lower() in (wanted, "video/rtx")
    ]


def transceiver_direction(send: bool, receive: bool) -> str:
    """The direction of the relay's transceiver for an m-line (RFC 8866)."""
    if send and receive:
        return "sendrecv"
    if send:
        return "sendonly"
    return "recvonly" if receive else "inactive"
