"""What lophoc needs to know about Opus packets without decoding them.

Forwarding and recording handle Opus as the encoded packets a participant's
client sent: this module reads their durations from the table-of-contents
byte (RFC 6716 section 3.1), gives the tapped packet its shape, and turns the
32-bit RTP timestamps of one stream into a line that does not wrap.
"""

from __future__ import annotations

import fractions
from dataclasses import dataclass

#: The RTP clock of Opus is always 48 kHz, whatever the encoder's internal
#: bandwidth (RFC 7587 section 4.1).
CLOCK_RATE = 48_000
TIME_BASE = fractions.Fraction(1, CLOCK_RATE)

#: Browsers and aiortc packetize 20 ms of audio per RTP packet (``ptime``).
SAMPLES_20MS = 960

#: 20 ms of digital silence as libopus encodes it: TOC 0xF8 is configuration
#: 31 (CELT-only, fullband, 20 ms), mono, one frame (RFC 6716 section 3.1),
#: and 0xFFFE is the frame libopus emits for an all-zero input. Used to fill
#: the gaps of a recording, since an Ogg Opus stream cannot skip time
#: (RFC 7845 section 4.1: the granule position counts decoded samples).
SILENCE_20MS = b"\xf8\xff\xfe"

# Frame sizes in samples at 48 kHz, by configuration number (RFC 6716
# section 3.1, table 2): SILK 10/20/40/60 ms, hybrid 10/20 ms, CELT
# 2.5/5/10/20 ms.
_SILK = (480, 960, 1920, 2880)
_HYBRID = (480, 960)
_CELT = (120, 240, 480, 960)

#: A packet may hold at most 120 ms of audio (RFC 6716 section 3.2.5).
_MAX_SAMPLES = 5760


def frame_samples(toc: int) -> int:
    """Samples at 48 kHz in each frame of a packet with this TOC byte."""
    config = toc >> 3
    if config < 12:
        return _SILK[config % 4]
    if config < 16:
        return _HYBRID[config % 2]
    return _CELT[config % 4]


def packet_samples(payload: bytes) -> int | None:
    """Samples at 48 kHz a packet decodes to, or None if it is malformed.

    The frame count comes from the two low bits of the TOC byte: one frame
    (code 0), two (codes 1 and 2), or an explicit count in the next byte
    (code 3, RFC 6716 section 3.2.5).
    """
    if not payload:
        return None
    toc = payload[0]
    code = toc & 0x03
    if code == 0:
        frames = 1
    elif code in (1, 2):
        frames = 2
    elif len(payload) < 2:
        return None
    else:
        frames = payload[1] & 0x3F
    samples = frames * frame_samples(toc)
    if samples == 0 or samples > _MAX_SAMPLES:
        return None
    return samples


@dataclass(frozen=True, slots=True)
class OpusPacket:
    """One Opus packet as a participant's client sent it, shared read-only.

    ``timestamp`` is the RTP timestamp unwrapped into a line that only grows
    with the stream (48 kHz units); ``generation`` changes when the sender
    starts a new RTP stream (a new SSRC), across which timestamps mean
    nothing; ``arrival`` is ``time.monotonic()`` when it reached the server.
    """

    payload: bytes
    timestamp: int
    generation: int
    arrival: float

    @property
    def samples(self) -> int:
        """Duration in 48 kHz samples; 20 ms when the TOC is unreadable."""
        return packet_samples(self.payload) or SAMPLES_20MS


class TimestampLine:
    """Unwraps one RTP stream's 32-bit timestamps (RFC 3550 section 5.1).

    A timestamp is read as the step from the previous one taken modulo 2**32
    and signed, so a wrap is a small step forward and a reordered packet a
    small step back.
    """

    def __init__(self) -> None:
        self._ssrc: int | None = None
        self._last: int = 0
        self._line: int = 0
        self.generation = 0

    def place(self, ssrc: int, timestamp: int) -> int:
        """The unwrapped timestamp of a packet of ``ssrc``."""
        if ssrc != self._ssrc:
            # A new SSRC is a new stream with its own random timestamp origin
            # (RFC 3550 section 5.1); consumers resynchronise on generation.
            if self._ssrc is not None:
                self.generation += 1
            self._ssrc = ssrc
            self._last = timestamp
            return self._line
        step = (timestamp - self._last) & 0xFFFFFFFF
        if step >= 0x80000000:
            step -= 0x100000000
        self._last = timestamp
        self._line += step
        return self._line
