"""A client-side aiortc peer for the media tests and the relay benchmark.

:class:`TonePeer` plays the part of a participant's browser: it offers a
microphone that plays a sine tone (or nothing) and a number of receiving
slots, and keeps every frame it hears with its arrival time, so a test can
ask "what was the loudest frequency heard between t0 and t1". Its tone is the
SDK's :class:`client_sdk.audio.ToneTrack`. Unlike the SDK's ``AudioPeer`` it
signals by hand, so tests can drive a :class:`media.relay.MediaRoom` with no
server around it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpreceiver import RemoteStreamTrack
from aiortc.rtcrtptransceiver import RTCRtpTransceiver
from av.audio.frame import AudioFrame

from client_sdk.audio import RATE, ToneTrack
from media.relay import MediaRoom

__all__ = [
    "RATE",
    "HandSignaled",
    "Heard",
    "Peak",
    "TonePeer",
    "ToneTrack",
    "band_share",
    "eventually",
    "peak",
]


async def eventually(
    condition: Callable[[], bool], within: float, what: str, step: float = 0.02
) -> None:
    """Poll ``condition`` every ``step`` s; TimeoutError after ``within`` s."""
    deadline = time.monotonic() + within
    for _ in range(math.ceil(within / step) + 1):
        if condition():
            return
        if time.monotonic() >= deadline:
            break
        await asyncio.sleep(step)
    raise TimeoutError(f"not {what} within {within} s")


@dataclass(frozen=True)
class Heard:
    """One decoded frame a peer received: when, on which slot, the samples."""

    at: float
    slot: int
    samples: np.ndarray


@dataclass(frozen=True)
class Peak:
    """The loudest frequency of some audio, its level and how much audio."""

    frequency: float
    level_dbfs: float
    seconds: float


def peak(samples: np.ndarray, rate: int = RATE) -> Peak | None:
    """The dominant frequency of mono float samples (numpy FFT, Hann window)."""
    if samples.size < rate // 20:
        return None
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    spectrum[0] = 0.0
    index = int(np.argmax(spectrum))
    rms = float(np.sqrt(np.mean(samples**2)))
    level = 20 * math.log10(rms) if rms > 0 else -200.0
    return Peak(index * rate / samples.size, level, samples.size / rate)


def band_share(samples: np.ndarray, frequency: float, rate: int = RATE) -> float:
    """Share of the signal's energy within 20 Hz of ``frequency``."""
    if samples.size == 0:
        return 0.0
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size))) ** 2
    freqs = np.fft.rfftfreq(samples.size, 1 / rate)
    total = float(spectrum.sum())
    if total == 0:
        return 0.0
    return float(spectrum[np.abs(freqs - frequency) <= 20].sum()) / total


class HandSignaled:
    """A client peer connection whose offer and answer a test carries by hand."""

    def __init__(self, name: str, pc: RTCPeerConnection) -> None:
        self.name = name
        self.pc = pc
        self._tasks: set[asyncio.Task[None]] = set()

    async def offer(self) -> str:
        """The SDP offer of this peer's m-lines."""
        raise NotImplementedError

    async def join(self, room: MediaRoom, within: float = 10.0) -> None:
        """Offer to ``room``, apply its answer and wait until connected."""
        await self.accept(await room.answer(self.name, await self.offer()))
        await self.connected(within)

    async def close(self) -> None:
        """Close the connection and wait for the receiving tasks."""
        await self.pc.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, receiving: Coroutine[Any, Any, None]) -> None:
        self._tasks.add(asyncio.create_task(receiving))

    async def accept(self, answer: str) -> None:
        """Apply the server's answer."""
        await self.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))

    async def connected(self, within: float = 10.0) -> None:
        """Wait until the connection is up; fails after ``within`` seconds."""

        def up() -> bool:
            if self.pc.connectionState in ("failed", "closed"):
                raise ConnectionError(f"{self.name}: {self.pc.connectionState}")
            return self.pc.connectionState == "connected"

        await eventually(up, within, f"{self.name} connected")


class TonePeer(HandSignaled):
    """A participant's browser: a tone microphone and ``slots`` receivers."""

    def __init__(
        self,
        name: str,
        frequency: float | None,
        *,
        slots: int = 1,
        amplitude: float = 0.3,
        keep: bool = True,
    ) -> None:
        super().__init__(name, RTCPeerConnection(RTCConfiguration(iceServers=[])))
        self.frequency = frequency
        self.slots = slots
        self.heard: list[Heard] = []
        self.frames = 0
        self._amplitude = amplitude
        # The benchmark only counts frames; tests keep them to analyse.
        self._keep = keep
        self._slot_of: dict[RTCRtpTransceiver, int] = {}

    async def offer(self) -> str:
        """The SDP offer: microphone first, then the receiving slots."""
        if self.frequency is not None:
            tone = ToneTrack(self.frequency, self._amplitude)
            direction = "sendrecv" if self.slots else "sendonly"
            first = self.pc.addTransceiver(tone, direction=direction)
        else:
            first = self.pc.addTransceiver("audio", direction="recvonly")
        transceivers = [first]
        for _ in range(self.slots - 1):
            transceivers.append(self.pc.addTransceiver("audio", direction="recvonly"))
        self._slot_of = {t: i for i, t in enumerate(transceivers)}
        self._add_lines()
        self.pc.on("track", self._on_track)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    def _add_lines(self) -> None:
        """Add further m-lines after the audio ones; none here."""

    def audio(self, since: float, until: float | None = None) -> np.ndarray:
        """The loudest slot's samples heard between ``since`` and ``until``."""
        end = math.inf if until is None else until
        best = np.zeros(0)
        for slot in range(self.slots):
            chunks = [
                h.samples for h in self.heard if h.slot == slot and since <= h.at < end
            ]
            if chunks:
                joined = np.concatenate(chunks)
                if float(np.sum(joined**2)) > float(np.sum(best**2)):
                    best = joined
        return best

    def last_heard(self, predicate: Callable[[np.ndarray], bool]) -> float | None:
        """Arrival time of the last frame whose samples satisfy ``predicate``."""
        for heard in reversed(self.heard):
            if predicate(heard.samples):
                return heard.at
        return None

    def _on_track(self, track: MediaStreamTrack) -> None:
        slot = next(
            (i for t, i in self._slot_of.items() if t.receiver.track is track), 0
        )
        self._spawn(self._listen(track, slot))

    async def _listen(self, track: MediaStreamTrack, slot: int) -> None:
        if not isinstance(track, RemoteStreamTrack):
            return
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self.frames += 1
            if not self._keep or not isinstance(frame, AudioFrame):
                continue
            pcm = frame.to_ndarray().astype(np.float32) / 32768
            channels = len(frame.layout.channels)
            mono = pcm.reshape(-1, channels).mean(axis=1)
            self.heard.append(Heard(time.monotonic(), slot, mono))
