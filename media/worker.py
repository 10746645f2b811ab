"""The one thread per decoded participant: voice activity and recording.

A participant gets a :class:`SpeakerWorker` while something needs more than
forwarding: while they are a speaker (for the voice-activity figure) or
while they are recorded. The worker decodes each of their Opus packets once,
feeds the :class:`~media.activity.VoiceMeter`, and writes the packets to the
open recording. All of that is CPU or disk work, so it runs on the worker's
own thread; the event loop only puts packets on its queue.
"""

from __future__ import annotations

import array
import asyncio
import datetime
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import av
from av.audio.codeccontext import AudioCodecContext
from av.codec.context import CodecContext
from av.packet import Packet

from .activity import VoiceActivity, VoiceMeter
from .errors import MediaError, RecordingError
from .opus import CLOCK_RATE, TIME_BASE, OpusPacket
from .recorder import OggOpusWriter, RecordingInfo

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Packets waiting for the thread; past this (five seconds of audio) the
#: thread is not keeping up and new packets are dropped, not queued.
BACKLOG = 250

#: How long stopping waits for the thread to finish its queue.
JOIN_TIMEOUT = 10.0


@dataclass(slots=True)
class _Call(Generic[T]):
    """Work for the thread whose result the event loop awaits."""

    work: Callable[[], T]
    future: asyncio.Future[T]


def _settle(
    future: asyncio.Future[Any], result: Any, error: BaseException | None
) -> None:
    # The awaiting caller may have been cancelled meanwhile.
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _opus_decoder() -> AudioCodecContext:
    """A libopus decoder to 48 kHz mono, signed 16-bit."""
    decoder = CodecContext.create("libopus", "r")
    if not isinstance(decoder, AudioCodecContext):  # pragma: no cover
        raise MediaError("libopus is not an audio decoder here", decoder)
    decoder.format = "s16"
    decoder.layout = "mono"
    decoder.sample_rate = CLOCK_RATE
    return decoder


class SpeakerWorker:
    """Decodes one participant's packets on a thread of its own.

    Create it on the event loop, :meth:`start` it, :meth:`feed` it from the
    loop, and always :meth:`stop` it: stopping finishes an open recording.
    """

    def __init__(self, participant: str) -> None:
        self.participant = participant
        self.dropped = 0
        self.undecodable = 0
        self._loop = asyncio.get_running_loop()
        self._queue: queue.SimpleQueue[OpusPacket | _Call[Any] | None] = (
            queue.SimpleQueue()
        )
        self._meter = VoiceMeter(participant)
        # Made here so that a PyAV without libopus fails the caller, not
        # the thread.
        self._decoder = _opus_decoder()
        self._recording: OggOpusWriter | None = None
        self._voiced_at_start = 0
        self._thread = threading.Thread(
            target=self._run, name=f"media-{participant}", daemon=True
        )
        self._stopped = False

    @property
    def activity(self) -> VoiceActivity:
        """The latest voice-activity figures."""
        return self._meter.activity

    @property
    def recording(self) -> bool:
        """Whether a recording is open."""
        return self._recording is not None

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def feed(self, packet: OpusPacket) -> None:
        """Queue a packet; never blocks, drops when the thread falls behind."""
        if self._stopped:
            return
        if self._queue.qsize() >= BACKLOG:
            self.dropped += 1
            if self.dropped % BACKLOG == 1:
                logger.warning(
                    "worker %s is behind: %d packets dropped",
                    self.participant,
                    self.dropped,
                )
            return
        self._queue.put(packet)

    async def begin_recording(self, writer: OggOpusWriter) -> None:
        """Open ``writer``'s file and send the following packets to it."""
        await self._call(lambda: self._begin(writer))

    async def end_recording(self) -> RecordingInfo:
        """Finish the open recording once the packets before now are written."""
        ended = time.monotonic()
        ended_at = datetime.datetime.now(datetime.UTC)
        return await self._call(lambda: self._end(ended, ended_at))

    async def stop(self) -> RecordingInfo | None:
        """Finish an open recording, then end the thread.

        Returns the interrupted recording's metadata, if one was open.
        """
        if self._stopped:
            return None
        info: RecordingInfo | None = None
        if self._recording is not None:
            try:
                info = await self.end_recording()
            except RecordingError:
                logger.exception("recording of %s lost", self.participant)
        self._stopped = True
        self._queue.put(None)
        await asyncio.to_thread(self._thread.join, JOIN_TIMEOUT)
        if self._thread.is_alive():
            logger.error("worker %s did not stop", self.participant)
        return info

    async def _call(self, work: Callable[[], T]) -> T:
        if self._stopped:
            raise MediaError("worker stopped", self.participant)
        future: asyncio.Future[T] = self._loop.create_future()
        self._queue.put(_Call(work, future))
        return await future

    # On the worker thread ---------------------------------------------------

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                break
            if isinstance(item, OpusPacket):
                try:
                    self._decode(item)
                    self._write(item)
                except Exception:
                    # A bug, not bad input (_decode and _write handle that): keep the
                    # thread, or every later call would wait for it forever.
                    logger.exception("worker %s failed on a packet", self.participant)
                continue
            try:
                result = item.work()
            except Exception as exc:
                self._loop.call_soon_threadsafe(_settle, item.future, None, exc)
            else:
                self._loop.call_soon_threadsafe(_settle, item.future, result, None)
        if self._recording is not None:
            logger.error("worker %s ended with a recording open", self.participant)

    def _decode(self, packet: OpusPacket) -> None:
        encoded = Packet(packet.payload)
        encoded.pts = packet.timestamp
        encoded.time_base = TIME_BASE
        try:
            frames = self._decoder.decode(encoded)
        except av.FFmpegError:
            # A corrupt packet; libopus conceals it on the next one.
            self.undecodable += 1
            return
        for frame in frames:
            samples = array.array("h", bytes(frame.planes[0]))
            self._meter.add(samples[: frame.samples])

    def _write(self, packet: OpusPacket) -> None:
        writer = self._recording
        if writer is None:
            return
        try:
            writer.write(packet)
        except RecordingError:
            # The disk is full or gone; keep decoding, end() reports it.
            logger.exception("recording of %s failed", self.participant)
            self._recording = None

    def _begin(self, writer: OggOpusWriter) -> None:
        if self._recording is not None:
            raise RecordingError("already recording", self.participant)
        writer.open()
        self._recording = writer
        self._voiced_at_start = self._meter.voiced_samples

    def _end(self, ended: float, ended_at: datetime.datetime) -> RecordingInfo:
        writer, self._recording = self._recording, None
        if writer is None:
            raise RecordingError("not recording", self.participant)
        seconds = writer.close(ended)
        voiced = (self._meter.voiced_samples - self._voiced_at_start) / CLOCK_RATE
        info = writer.info(ended_at, seconds, voiced)
        writer.write_sidecar(info)
        logger.info(
            "recorded %s: %.1f s, %d packets, %d filled",
            self.participant,
            info.seconds,
            info.packets,
            info.filled,
        )
        return info
