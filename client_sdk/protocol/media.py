"""Protocol v1, media signaling: WebRTC offers and answers over the socket.

A client that speaks or listens in a lesson sends an SDP offer (RFC 8866,
JSEP of RFC 8829) in ``media_offer`` and gets the server's answer in
``media_answer``; the answer holds all of the server's ICE candidates, so
only the client trickles its own (``media_candidate``). The ICE servers to
use (STUN, and TURN for school networks) come in ``hello.ice_servers``.

The server decides who is heard: teachers always, a student only while
holding the floor. Each audio m-line of the offer that receives is a slot
carrying one speaker; offer two to hear the host and the floor holder at
once.

Video rides the same connection. ``video_quality`` asks for less video on
a weak link: the lower simulcast layer of publishers that send layers; the
answer says what the viewer gets, so a viewer of one-layer publishers is
not told of a switch that did not happen. The server also lowers a
viewer's video by itself when the viewer's link loses packets, to keep its
audio whole, and raises it again once the link is clean, never above what
the viewer asked for; ``video_quality_changed`` tells the viewer so.
"""

from __future__ import annotations

import enum
from typing import Annotated

import msgspec

from .core import Command, RoomId

#: An SDP fits in a frame; this bound keeps a bad one from being parsed long.
Sdp = Annotated[str, msgspec.Meta(min_length=1, max_length=60_000)]


class MediaOffer(Command, tag="media_offer"):
    """Open (or replace) this person's media connection in ``room``."""

    room: RoomId
    sdp: Sdp


class MediaCandidate(Command, tag="media_candidate"):
    """A trickled ICE candidate of the client; empty ends its candidates."""

    room: RoomId
    candidate: Annotated[str, msgspec.Meta(max_length=1000)] | None = None
    sdp_mid: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    sdp_mline_index: Annotated[int, msgspec.Meta(ge=0, le=64)] | None = None


class MediaLeave(Command, tag="media_leave"):
    """Close this person's media connection in ``room``."""

    room: RoomId


class MediaAnswer(msgspec.Struct, tag_field="type", tag="media_answer"):
    """Reply to :class:`MediaOffer`: the server's SDP answer."""

    id: str
    room: str
    sdp: str


class VideoLayer(enum.StrEnum):
    """How much video a viewer asks for, or is sent."""

    #: Everything the publisher sends.
    HIGH = "high"
    #: A lower simulcast layer, where the publisher sends one.
    LOW = "low"
    #: No video at all: the link is left to audio.
    OFF = "off"


class VideoQuality(Command, tag="video_quality"):
    """Ask for ``quality`` on this person's video slots in ``room``.

    It holds for the current media connection; a new ``media_offer``
    starts at ``high`` again.
    """

    room: RoomId
    quality: VideoLayer


class VideoQualityAnswer(msgspec.Struct, tag_field="type", tag="video_quality_answer"):
    """Reply to :class:`VideoQuality`: what the viewer's slots carry now."""

    id: str
    room: str
    requested: VideoLayer
    #: What is forwarded: ``high`` for a ``low`` asked of one-layer publishers.
    forwarded: VideoLayer
    #: The most layers a publisher shown on the slots sends; 1: no lower one.
    layers: int


class VideoChangeReason(enum.StrEnum):
    """Why the server changed a viewer's video without being asked."""

    #: The viewer's link lost packets: less video, so audio gets through.
    LOSS = "loss"
    #: The link has been clean for a while: more video again.
    RECOVERED = "recovered"


class VideoQualityChanged(
    msgspec.Struct, tag_field="type", tag="video_quality_changed"
):
    """Notice: the server changed what this viewer's video slots carry.

    Sent only to the connection that holds the media, when a step the server
    took on its own changed ``forwarded``; a page can show "video reduced
    for a weak connection" while ``forwarded`` is below ``requested``.
    """

    room: str
    #: What the viewer last asked for (``high`` if it never asked).
    requested: VideoLayer
    #: What the slots carry from now on; never above ``requested``.
    forwarded: VideoLayer
    reason: VideoChangeReason
    #: The share of packets the link lost (0 to 1) in the reports that
    #: decided it.
    loss: float


MediaCommand = MediaOffer | MediaCandidate | MediaLeave | VideoQuality
