"""A lost video packet asked for again, and given up on in time.

aiortc's video receiver asks for a lost packet (a NACK, RFC 4585 section
6.2.1) once, when a later packet shows the gap, and asks again only when
a new gap opens. Its jitter buffer hands on no frame until every packet
from the oldest it holds has come. So if the retransmission is lost too
and the link is clean from then on, nothing asks again, and the picture
stands still until 512 more packets have come (51 s of a small picture at
10 frames a second), when the buffer drops the hole by itself. This
happens on a weak link whose video the server turns off and back on: the
hole left when it went off is still there when it comes back. At the
server, one such hole in a publisher's stream would hold up every viewer.

A browser asks again while the packet may still come and, once it is too
late, drops what waits on it and asks for a keyframe. :func:`mend_holes`
does the same beside one aiortc receiver (each video slot of the SDK's
peers, each published video track at the relay, whose simulcast layers
have a buffer each): while a packet awaited is missing and later ones
have come, it asks again every :data:`ASK_AGAIN` seconds, and after
:data:`GIVE_UP` seconds drops the frames that wait (as aiortc would drop
them, sooner) and sends a picture loss indication (RFC 4585 section
6.3.1), so the sender's next keyframe starts the picture again.

It reads the receiver's jitter buffer and NACK generator, which aiortc
keeps private (aiortc 1.16); nothing else in aiortc needs to change.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from aiortc import RTCRtpReceiver
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtcrtpreceiver import NackGenerator

logger = logging.getLogger(__name__)

#: Seconds between two requests for the same missing packets.
ASK_AGAIN: Final = 0.2
#: Seconds a hole may hold the picture up before the frames waiting on it
#: are dropped and a keyframe asked for. A retransmission that has not come
#: by then is unlikely to: senders keep their packets for about that long
#: (aiortc's last 128, a second or more of video).
GIVE_UP: Final = 1.0

_SEQ_MOD: Final = 1 << 16


def waiting_on(buffer: JitterBuffer, highest: int | None) -> int | None:
    """The first sequence number missing from the buffer before ``highest``.

    ``highest`` is the highest sequence number received. The buffer hands
    on a frame once the next frame's first packet has come and nothing is
    missing before it, so a packet missing with later ones come holds up
    the picture; with nothing after it, the buffer waits for the next
    packet as it always does.
    """
    origin = buffer._origin
    if origin is None or highest is None:
        return None
    after = (highest - origin) % _SEQ_MOD
    if after >= buffer.capacity:
        return None
    for offset in range(after):
        seq = (origin + offset) % _SEQ_MOD
        if buffer._packets[seq % buffer.capacity] is None:
            return seq
    return None


def drop_hole(buffer: JitterBuffer, hole: int, highest: int) -> list[int]:
    """Drop what the buffer holds up to the frame after ``hole``.

    Everything from the oldest packet to the hole goes, then the packets
    after it until a frame starts, as the frame the hole is in may lack its
    start, never past ``highest``, the highest sequence number received;
    returns the sequence numbers dropped. The frames after may refer to
    those dropped: the decoder shows them as best it can until the keyframe
    asked for comes.
    """
    dropped: list[int] = []
    size = buffer.capacity
    timestamp = None
    origin = buffer._origin
    if origin is None:
        return dropped
    for _ in range((highest - origin) % _SEQ_MOD + 1):
        packet = buffer._packets[origin % size]
        if packet is not None and (origin - hole) % _SEQ_MOD < size:
            if timestamp is None:
                timestamp = packet.timestamp
            elif packet.timestamp != timestamp:
                break
        dropped.append(origin)
        buffer.remove(1)
        origin = (origin + 1) % _SEQ_MOD
    return dropped


def _media_ssrc(buffer: JitterBuffer) -> int | None:
    """The SSRC of the media stream whose packets the buffer holds."""
    return next((p.ssrc for p in buffer._packets if p is not None), None)


@dataclass(slots=True)
class Stream:
    """One RTP stream's jitter buffer and NACK generator, as aiortc keeps them.

    ``ssrc`` is the stream's media SSRC where known; else it is read from
    the packets in the buffer.
    """

    buffer: JitterBuffer
    nacks: NackGenerator
    ssrc: int | None = None


def receiver_streams(receiver: RTCRtpReceiver) -> list[Stream]:
    """The one stream an aiortc video receiver rebuilds frames of (none for audio)."""
    private = "_RTCRtpReceiver__"
    nacks = getattr(receiver, f"{private}nack_generator")
    if not isinstance(nacks, NackGenerator):
        # Audio (aiortc asks for no audio retransmission), or buffers
        # replaced per stream, which the caller names itself.
        return []
    return [Stream(getattr(receiver, f"{private}jitter_buffer"), nacks)]


@dataclass(slots=True)
class _Hole:
    """A hole one buffer waits on, and since when."""

    seq: int
    since: float


async def mend_holes(
    receiver: RTCRtpReceiver,
    streams: Callable[[], Iterable[Stream]] | None = None,
    tick: float = ASK_AGAIN,
) -> None:
    """Ask again for, then give up on, the packets ``receiver`` waits for.

    ``streams`` lists the streams to watch each time (by default the
    receiver's own). Runs until cancelled or until the receiver's track
    ends.
    """
    if streams is None:
        own = receiver_streams(receiver)
        if not own:
            return
        streams = lambda: own  # noqa: E731
    holes: dict[int, _Hole] = {}
    while True:
        await asyncio.sleep(tick)
        # aiortc makes the track when the remote description comes.
        track = receiver.track
        if track is not None and track.readyState != "live":
            return
        now = time.monotonic()
        watched = set()
        for stream in streams():
            key = id(stream.buffer)
            watched.add(key)
            waiting = waiting_on(stream.buffer, stream.nacks.max_seq)
            hole = holes.get(key)
            if waiting is None:
                holes.pop(key, None)
            elif hole is None or hole.seq != waiting:
                # A new hole: aiortc asked for it when it opened.
                holes[key] = _Hole(waiting, now)
            elif await _mend(receiver, stream, hole, now):
                del holes[key]
        for key in holes.keys() - watched:
            del holes[key]


async def _mend(
    receiver: RTCRtpReceiver, stream: Stream, hole: _Hole, now: float
) -> bool:
    """Ask again for what ``stream`` misses, or give the hole up; True if given up."""
    ssrc = stream.ssrc if stream.ssrc is not None else _media_ssrc(stream.buffer)
    highest = stream.nacks.max_seq
    if ssrc is None or highest is None:
        return False
    if now - hole.since < GIVE_UP:
        missing = sorted(stream.nacks.missing)
        if missing:
            await receiver._send_rtcp_nack(ssrc, missing)
        return False
    for seq in drop_hole(stream.buffer, hole.seq, highest):
        stream.nacks.missing.discard(seq)
    logger.debug("gave up on packet %d of stream %d: keyframe asked", hole.seq, ssrc)
    await receiver._send_rtcp_pli(ssrc)
    return True
