"""Recording one participant's speaking turn or spoken answer to its own file.

A recording is an Ogg Opus file (RFC 7845) holding the Opus packets the
participant's client sent, muxed as they are: no decoding and no
re-encoding, so the file keeps the quality the listeners heard and costs
next to no CPU. Who, when and which prompt go into the file's comment
header (RFC 7845 section 5.2) and into a JSON file beside it, which is what
the rest of lophoc reads.

The file's timeline follows the wall clock from start to stop: silence
before the first packet, in the gaps the sender left (lost packets,
discontinuous transmission) and after the last packet is filled with Opus
silence packets, because an Ogg Opus stream cannot skip time. A turn of
30 seconds gives a file of 30 seconds, whatever the network did.

:class:`OggOpusWriter` does blocking file I/O and runs on the participant's
worker thread (:mod:`media.worker`), never on the event loop.
"""

from __future__ import annotations

import datetime
import enum
import logging
import pathlib
from collections.abc import Mapping

import av
import msgspec
from av.container import OutputContainer
from av.packet import Packet
from av.stream import Stream

from .errors import RecordingError
from .opus import CLOCK_RATE, SAMPLES_20MS, SILENCE_20MS, TIME_BASE, OpusPacket

logger = logging.getLogger(__name__)

#: A gap longer than the wall clock allows by this much means the sender's
#: timestamps jumped; the packet is placed by its arrival time instead.
_JUMP_SAMPLES = CLOCK_RATE


class RecordingKind(enum.StrEnum):
    """What a recording is of."""

    TURN = "turn"
    ANSWER = "answer"


class RecordingInfo(msgspec.Struct, frozen=True, kw_only=True):
    """Who, when and what of one finished recording; also its JSON sidecar."""

    room: str
    participant: str
    kind: RecordingKind
    prompt: str | None
    path: str
    started_at: datetime.datetime
    ended_at: datetime.datetime
    #: Length of the file's audio.
    seconds: float
    #: Speech in it, by the worker's voice-activity meter.
    voiced_seconds: float
    #: Opus packets of the participant written, and silence packets added.
    packets: int
    filled: int


def sidecar_path(path: pathlib.Path) -> pathlib.Path:
    """Where the JSON metadata of the recording at ``path`` is written."""
    return path.with_suffix(".json")


class OggOpusWriter:
    """Writes one participant's Opus packets into an Ogg Opus file.

    ``started`` is the ``time.monotonic()`` of the start of the turn; the
    file's position of each packet is taken from its RTP timestamp, anchored
    to the wall clock at the first packet of each stream.
    """

    def __init__(
        self,
        path: pathlib.Path,
        *,
        room: str,
        participant: str,
        kind: RecordingKind,
        prompt: str | None,
        started: float,
        started_at: datetime.datetime,
    ) -> None:
        self.path = path
        self.room = room
        self.participant = participant
        self.kind = kind
        self.prompt = prompt
        self.started = started
        self.started_at = started_at
        self.packets = 0
        self.filled = 0
        self.dropped = 0
        self._container: OutputContainer | None = None
        self._stream: Stream | None = None
        self._cursor = 0
        self._origin = 0
        self._generation: int | None = None

    def tags(self) -> Mapping[str, str]:
        """The Vorbis comments of the file (RFC 7845 section 5.2)."""
        tags = {
            "TITLE": self.prompt or self.kind.value,
            "ARTIST": self.participant,
            "DATE": self.started_at.isoformat(),
            "LOPHOC_ROOM": self.room,
            "LOPHOC_PARTICIPANT": self.participant,
            "LOPHOC_KIND": self.kind.value,
        }
        if self.prompt is not None:
            tags["LOPHOC_PROMPT"] = self.prompt
        return tags

    def open(self) -> None:
        """Create the file; raises :class:`RecordingError` if it cannot."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            container = av.open(str(self.path), "w", format="ogg")
        except (OSError, av.FFmpegError) as exc:
            raise RecordingError("cannot create recording", str(self.path)) from exc
        # The stream is declared as libopus so that libavformat writes an
        # OpusHead for it; the encoder itself never sees a sample.
        stream = container.add_stream("libopus", rate=CLOCK_RATE, layout="mono")
        stream.metadata.update(self.tags())
        self._container = container
        self._stream = stream

    def write(self, packet: OpusPacket) -> None:
        """Place one packet on the file's timeline, filling any gap before it."""
        now = round((packet.arrival - self.started) * CLOCK_RATE)
        if packet.generation != self._generation:
            self._anchor(packet, now)
        position = packet.timestamp + self._origin
        if position - self._cursor > max(now - self._cursor, 0) + _JUMP_SAMPLES:
            self._anchor(packet, now)
            position = packet.timestamp + self._origin
        if position < self._cursor - packet.samples // 2:
            # Its place is already written: a late or repeated packet.
            self.dropped += 1
            return
        self._fill(position)
        self._mux(packet.payload, packet.samples)
        self.packets += 1

    def close(self, ended: float) -> float:
        """Pad to the turn's length, finish the file; returns its seconds."""
        if self._container is None:
            return 0.0
        self._fill(round((ended - self.started) * CLOCK_RATE))
        container, self._container = self._container, None
        try:
            container.close()
        except (OSError, av.FFmpegError) as exc:
            raise RecordingError("cannot finish recording", str(self.path)) from exc
        return self._cursor / CLOCK_RATE

    def info(
        self, ended_at: datetime.datetime, seconds: float, voiced_seconds: float
    ) -> RecordingInfo:
        """The metadata of the finished recording."""
        return RecordingInfo(
            room=self.room,
            participant=self.participant,
            kind=self.kind,
            prompt=self.prompt,
            path=str(self.path),
            started_at=self.started_at,
            ended_at=ended_at,
            seconds=round(seconds, 3),
            voiced_seconds=round(voiced_seconds, 3),
            packets=self.packets,
            filled=self.filled,
        )

    def write_sidecar(self, info: RecordingInfo) -> None:
        """Write ``info`` as JSON beside the recording."""
        try:
            sidecar_path(self.path).write_bytes(msgspec.json.encode(info) + b"\n")
        except OSError as exc:
            raise RecordingError("cannot write recording metadata", info.path) from exc

    def _anchor(self, packet: OpusPacket, now: int) -> None:
        # A new stream starts where the wall clock says it arrived, but never
        # over what is already written.
        self._origin = max(self._cursor, now) - packet.timestamp
        self._generation = packet.generation

    def _fill(self, position: int) -> None:
        while position - self._cursor >= SAMPLES_20MS:
            self._mux(SILENCE_20MS, SAMPLES_20MS)
            self.filled += 1

    def _mux(self, payload: bytes, samples: int) -> None:
        if self._container is None or self._stream is None:
            raise RecordingError("recording is not open", str(self.path))
        out = Packet(payload)
        out.pts = out.dts = self._cursor
        out.duration = samples
        out.time_base = TIME_BASE
        out.stream = self._stream
        try:
            self._container.mux(out)
        except (OSError, av.FFmpegError) as exc:
            raise RecordingError("cannot write recording", str(self.path)) from exc
        self._cursor += samples
