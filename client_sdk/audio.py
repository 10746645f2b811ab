"""Live audio of a lesson from Python: a WebRTC peer for tests, bots and load.

An :class:`AudioPeer` does what a participant's browser does with the lesson's
audio (see :mod:`client_sdk.protocol.media`): it offers a microphone and some
receiving slots in ``media_offer`` over the client's own WebSocket, applies
the server's answer, and keeps what each slot hears with its arrival time. The
microphone plays a generated sine tone, an audio file, or nothing.

The peer needs aiortc and PyAV, which lophoc depends on anyway. numpy is only
needed by the analysis helpers (:meth:`AudioPeer.audio`,
:meth:`AudioPeer.dominant_frequency`, :meth:`ReceivedFrame.samples`), which
import it when called; everything else, raw PCM included, works without it.

Example::

    async with Client(url, token, room) as client:
        await client.join(room)
        async with AudioPeer(client, room, tone_hz=440) as peer:
            await asyncio.sleep(5)
            print(peer.frames_received, peer.dominant_frequency(time.monotonic() - 1))
"""

from __future__ import annotations

import array
import asyncio
import collections
import fractions
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Final

import av
from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc import exceptions as rtc_errors
from aiortc.contrib.media import MediaPlayer
from av.audio.frame import AudioFrame
from av.audio.resampler import AudioResampler

from .client import Client
from .errors import ClientError, ProtocolViolation
from .protocol import Ack, IceServerInfo, MediaLeave, MediaOffer
from .tracks import Pacer, frames_of

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

logger = logging.getLogger(__name__)

#: Opus runs at 48 kHz (RFC 7587 section 4.1); everything here does too.
RATE: Final = 48_000
#: Samples of one generated frame: 20 ms, the ptime browsers use for Opus.
FRAME: Final = 960
#: Below this level a window counts as silence and has no dominant frequency.
SILENCE_DBFS: Final = -60.0
#: The least audio a frequency is read from: 50 ms, a 20 Hz resolution.
MIN_ANALYSIS_SECONDS: Final = 0.05

# What aiortc raises for an SDP it cannot apply; its parser checks with
# ``assert`` too.
_SDP_ERRORS = (
    ValueError,
    AssertionError,
    IndexError,
    KeyError,
    rtc_errors.InternalError,
    rtc_errors.InvalidAccessError,
    rtc_errors.InvalidStateError,
)


class AudioPeerError(ClientError):
    """The audio peer could not be set up or connected; keeps the failing value."""

    def __init__(self, message: str, value: object = None) -> None:
        super().__init__(message)
        self.message = message
        self.value = value

    def __str__(self) -> str:
        return self.message if self.value is None else f"{self.message}: {self.value!r}"


class ToneTrack(MediaStreamTrack):
    """A microphone that plays a sine tone, paced by the monotonic clock.

    Samples are 16-bit mono at 48 kHz, ``amplitude`` of full scale (0 sends
    digital silence). A tone of a whole number of hertz repeats every second,
    so that second is computed once and sliced; any other frequency is
    computed frame by frame, which costs about a percent of a core per track
    in CPython.
    """

    kind = "audio"

    def __init__(self, frequency: float, amplitude: float = 0.3) -> None:
        if not 0 < frequency < RATE / 2:
            raise ValueError(f"frequency must be in (0, {RATE // 2}) Hz: {frequency}")
        if not 0 <= amplitude <= 1:
            raise ValueError(f"amplitude must be in [0, 1]: {amplitude}")
        super().__init__()
        self.frequency = frequency
        self.amplitude = amplitude
        self._sent = 0
        self._pacer = Pacer()
        whole = float(frequency).is_integer()
        self._second = self._render(0, RATE) if whole else None

    async def recv(self) -> AudioFrame:
        """The next 20 ms of the tone, once they are due."""
        await self._pacer.wait(self, self._sent / RATE)
        frame = AudioFrame(format="s16", layout="mono", samples=FRAME)
        frame.planes[0].update(self._pcm(self._sent))
        frame.sample_rate = RATE
        frame.pts = self._sent
        frame.time_base = fractions.Fraction(1, RATE)
        self._sent += FRAME
        return frame

    def _pcm(self, start: int) -> bytes:
        if self._second is None:
            return self._render(start, FRAME)
        # Byte offsets of 16-bit samples; RATE is a multiple of FRAME, so a
        # frame never wraps around the end of the second.
        offset = (start % RATE) * 2
        return self._second[offset : offset + FRAME * 2]

    def _render(self, start: int, count: int) -> bytes:
        step = 2 * math.pi * self.frequency / RATE
        scale = self.amplitude * 32767
        samples = array.array(
            "h", [int(scale * math.sin(step * n)) for n in range(start, start + count)]
        )
        return samples.tobytes()


@dataclass(frozen=True, slots=True)
class ReceivedFrame:
    """One decoded frame a slot heard, as 16-bit mono PCM in native byte order.

    ``at`` is its arrival, as :func:`time.monotonic`, after aiortc's jitter
    buffer and decoder: the moment a browser would have played it.
    """

    at: float
    slot: int
    pcm: bytes
    sample_rate: int = RATE

    @property
    def sample_count(self) -> int:
        """How many samples the frame holds."""
        return len(self.pcm) // 2

    @property
    def duration(self) -> float:
        """The frame's length in seconds."""
        return self.sample_count / self.sample_rate

    def samples(self) -> NDArray[np.float32]:
        """The samples as floats in [-1, 1) (needs numpy)."""
        return _float_samples(self.pcm)


class AudioPeer:
    """One participant's audio in ``room``, signaled through ``client``.

    It publishes a sine tone of ``tone_hz``, the audio of ``file`` (anything
    FFmpeg reads, played once at its own pace), or nothing, and receives
    ``slots`` speakers: the server fills each slot with a teacher or the floor
    holder, never this participant. ``client`` must be connected and joined
    to ``room``; the ICE servers come from its ``hello``. Give the file as
    audio only: aiortc's player decodes a video stream too, and queues its
    frames unread.

    Each slot keeps the last ``keep_seconds`` of what it heard (0 keeps
    nothing and only counts frames, for load tests). :meth:`start` is bounded
    by ``connect_timeout`` seconds; :meth:`close` sends ``media_leave``.
    aiortc gathers all its ICE candidates before offering, so the peer trickles
    none.
    """

    def __init__(
        self,
        client: Client,
        room: str,
        *,
        tone_hz: float | None = None,
        file: str | Path | None = None,
        slots: int = 1,
        amplitude: float = 0.3,
        keep_seconds: float = 60.0,
        connect_timeout: float = 15.0,
    ) -> None:
        if tone_hz is not None and file is not None:
            raise ValueError("give tone_hz or file, not both")
        if slots < 0:
            raise ValueError(f"slots must not be negative, got {slots}")
        if slots == 0 and tone_hz is None and file is None:
            raise ValueError("a peer with no slots must send a tone or a file")
        if keep_seconds < 0:
            raise ValueError(f"keep_seconds must not be negative, got {keep_seconds}")
        if connect_timeout <= 0:
            raise ValueError(f"connect_timeout must be positive, got {connect_timeout}")
        self.client = client
        self.room = room
        self.slots = slots
        self.file = None if file is None else Path(file)
        self.connect_timeout = connect_timeout
        # Checked here, before anything is negotiated.
        self._tone = None if tone_hz is None else ToneTrack(tone_hz, amplitude)
        self._player: MediaPlayer | None = None
        self._pc: RTCPeerConnection | None = None
        self._receivers: list[RTCRtpTransceiver] = []
        self._changed = asyncio.Event()
        self._offered = False
        self._closed = False
        self._left: Ack | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._keep = round(keep_seconds * RATE)
        self._heard = [collections.deque[ReceivedFrame]() for _ in range(slots)]
        self._kept = [0] * slots
        self._frames_received = 0

    def __repr__(self) -> str:
        return f"<AudioPeer room={self.room} slots={self.slots} {self.state}>"

    async def __aenter__(self) -> AudioPeer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # State -------------------------------------------------------------------

    @property
    def state(self) -> str:
        """The connection state (W3C ``RTCPeerConnectionState``), "new" before start."""
        return "new" if self._pc is None else self._pc.connectionState

    @property
    def frames_received(self) -> int:
        """Decoded frames received on all slots, kept or not."""
        return self._frames_received

    # Lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Offer over the client's socket, apply the answer, wait until connected.

        Raises :class:`AudioPeerError` when the file cannot be played, or the
        connection fails or is not up within ``connect_timeout`` seconds, and
        :class:`~client_sdk.CommandError` when the server refuses the offer.
        On any failure the peer is closed, ``media_leave`` included.
        """
        if self._pc is not None or self._closed:
            raise AudioPeerError("start() may be called once", self.room)
        hello = self.client.hello
        if hello is None:
            raise AudioPeerError("the client is not connected", self.client.url)
        self._pc = RTCPeerConnection(_configuration(hello.ice_servers))
        try:
            async with asyncio.timeout(self.connect_timeout):
                await self._negotiate(self._pc)
                await self._connected(self._pc)
        except ClientError:
            # CommandTimeout is a TimeoutError too: keep it from the next
            # clause, whose message would blame the connection.
            await self.close()
            raise
        except TimeoutError as exc:
            await self.close()
            raise AudioPeerError(
                f"media not connected within {self.connect_timeout} s", self.room
            ) from exc
        except BaseException:
            await self.close()
            raise
        logger.info(
            "room %s: audio connected with %d slots%s",
            self.room,
            self.slots,
            "" if self._source() is None else " and a microphone",
        )

    async def close(self) -> Ack | None:
        """Leave the room's media, close the connection and stop every task.

        Returns the server's acknowledgement of ``media_leave``, or None when
        no offer was sent or the leave could not be delivered (a closed or
        lost client, or no reply within two of the client's request
        timeouts): the connection is closed either way. Calling it again
        returns the first call's result.
        """
        if self._closed:
            return self._left
        self._closed = True
        if self._offered:
            try:
                self._left = await self.client.request(
                    MediaLeave(id="", room=self.room), retries=1
                )
            except ClientError as exc:
                logger.warning("room %s: media_leave not delivered: %s", self.room, exc)
        if self._pc is not None:
            await self._pc.close()
        source = self._source()
        if source is not None:
            # A file's track joins its decoding thread here, which takes at
            # most one of that thread's 0.1 s naps.
            source.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        logger.info(
            "room %s: audio closed after %d frames", self.room, self._frames_received
        )
        return self._left

    # What was heard ----------------------------------------------------------

    def frames(
        self, slot: int | None = None, since: float = 0.0, until: float | None = None
    ) -> list[ReceivedFrame]:
        """Kept frames of ``slot`` (of all if None) that arrived in [since, until)."""
        end = math.inf if until is None else until
        slots = range(self.slots) if slot is None else [self._check_slot(slot)]
        found = [
            frame
            for index in slots
            for frame in self._heard[index]
            if since <= frame.at < end
        ]
        if slot is None:
            found.sort(key=lambda frame: frame.at)
        return found

    def last_arrival(self, slot: int | None = None) -> float | None:
        """When the last kept frame of ``slot`` (of any slot if None) arrived."""
        slots = range(self.slots) if slot is None else [self._check_slot(slot)]
        times = [self._heard[index][-1].at for index in slots if self._heard[index]]
        return max(times, default=None)

    def audio(
        self, slot: int | None = None, since: float = 0.0, until: float | None = None
    ) -> NDArray[np.float32]:
        """Samples ``slot`` heard in [since, until), floats in [-1, 1) (needs numpy).

        Without ``slot``, those of the slot with the most energy in the
        window. Frames are joined end to end: gaps where nothing arrived
        are left out, not filled with silence.
        """
        if slot is not None:
            return _float_samples(_joined(self.frames(slot, since, until)))
        best = _float_samples(b"")
        for index in range(self.slots):
            samples = _float_samples(_joined(self.frames(index, since, until)))
            if float((samples**2).sum()) > float((best**2).sum()):
                best = samples
        return best

    def dominant_frequency(
        self, since: float, until: float | None = None, *, slot: int | None = None
    ) -> float | None:
        """The loudest frequency heard in [since, until), in Hz (needs numpy).

        Read from :meth:`audio` of ``slot`` (the loudest slot if None) with a
        Hann window and a parabola through the peak's neighbours, which
        makes it finer than one FFT bin. None when less than 50 ms of audio
        arrived or it was quieter than -60 dBFS. The FFT runs in the calling
        thread: keep windows to a few seconds inside an event loop.
        """
        return _peak_frequency(self.audio(slot, since, until))

    # Internals ---------------------------------------------------------------

    def _source(self) -> MediaStreamTrack | None:
        if self._tone is not None:
            return self._tone
        return None if self._player is None else self._player.audio

    def _check_slot(self, slot: int) -> int:
        if not 0 <= slot < self.slots:
            raise IndexError(f"slot {slot} of a peer with {self.slots} slots")
        return slot

    async def _negotiate(self, pc: RTCPeerConnection) -> None:
        if self.file is not None:
            self._player = await _open_player(self.file)
        # Registered before the offer: aiortc starts connecting as soon as
        # both descriptions are set, and no state change may be missed.
        pc.on("connectionstatechange", self._changed.set)
        pc.on("track", self._on_track)

        # The relay's layout (media/relay.py): the first audio m-line that
        # sends is the microphone, every audio m-line that receives a slot.
        source = self._source()
        transceivers = []
        if source is not None:
            direction = "sendrecv" if self.slots else "sendonly"
            transceivers.append(pc.addTransceiver(source, direction=direction))
        while len(transceivers) < self.slots:
            transceivers.append(pc.addTransceiver("audio", direction="recvonly"))
        self._receivers = transceivers[: self.slots]
        self._add_video(pc)
        await pc.setLocalDescription(await pc.createOffer())

        self._offered = True
        answer = await self.client.request(
            MediaOffer(id="", room=self.room, sdp=pc.localDescription.sdp)
        )
        try:
            await pc.setRemoteDescription(RTCSessionDescription(answer.sdp, "answer"))
        except _SDP_ERRORS as exc:
            raise ProtocolViolation(
                f"the server's SDP answer to {answer.id!r} cannot be applied: {exc}"
            ) from exc

    async def _connected(self, pc: RTCPeerConnection) -> None:
        # Bounded by start()'s timeout; each state change wakes it once.
        while pc.connectionState != "connected":
            if pc.connectionState in ("failed", "closed"):
                raise AudioPeerError(
                    "media connection " + pc.connectionState, self.room
                )
            self._changed.clear()
            await self._changed.wait()

    def _add_video(self, pc: RTCPeerConnection) -> None:
        """Add video m-lines after the audio ones; audio alone adds none."""

    def _on_video(self, track: MediaStreamTrack) -> None:
        """A video track of the server's answer; audio alone ignores it."""
        logger.debug("room %s: ignored a video track", self.room)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "video":
            self._on_video(track)
            return
        slot = next(
            (i for i, t in enumerate(self._receivers) if t.receiver.track is track),
            None,
        )
        if slot is None or track.kind != "audio":
            logger.debug("room %s: ignored a %s track", self.room, track.kind)
            return
        self._tasks.append(asyncio.create_task(self._listen(track, slot)))

    async def _listen(self, track: MediaStreamTrack, slot: int) -> None:
        # Opus decodes to stereo; one channel is what a slot carries.
        mono = AudioResampler(format="s16", layout="mono", rate=RATE)
        # Ends with the track, when either side closes the connection.
        async for frame in frames_of(track, AudioFrame):
            self._frames_received += 1
            if not self._keep:
                continue
            at = time.monotonic()
            for out in mono.resample(frame):
                # Planes are padded for SIMD: only the samples' bytes count.
                pcm = bytes(out.planes[0])[: out.samples * 2]
                self._store(ReceivedFrame(at, slot, pcm, out.sample_rate))

    def _store(self, frame: ReceivedFrame) -> None:
        heard = self._heard[frame.slot]
        heard.append(frame)
        self._kept[frame.slot] += frame.sample_count
        while self._kept[frame.slot] > self._keep:
            self._kept[frame.slot] -= heard.popleft().sample_count


def _configuration(servers: Iterable[IceServerInfo]) -> RTCConfiguration:
    # The list is given even when empty: with None, aiortc would ask
    # Google's public STUN server, which a school's network may not allow.
    # One transport for every m-line: under aiortc's "balanced" policy a
    # second video m-line after an audio one keeps a transport that BUNDLE
    # discards, and never sends (see media/ice.py).
    return RTCConfiguration(
        bundlePolicy=RTCBundlePolicy.MAX_BUNDLE,
        iceServers=[
            RTCIceServer(
                urls=list(server.urls),
                username=server.username,
                credential=server.credential,
            )
            for server in servers
        ],
    )


async def _open_player(path: Path) -> MediaPlayer:
    # FFmpeg probes the file when it opens: disk I/O, kept off the loop.
    try:
        player = await asyncio.to_thread(MediaPlayer, str(path))
    except (OSError, av.FFmpegError) as exc:
        raise AudioPeerError(f"cannot play audio file: {exc}", str(path)) from exc
    if player.audio is None:
        if player.video is not None:
            # Stopping a track that never played closes the file.
            player.video.stop()
        raise AudioPeerError("the file has no audio stream", str(path))
    return player


def _joined(frames: Iterable[ReceivedFrame]) -> bytes:
    return b"".join(frame.pcm for frame in frames)


def _float_samples(pcm: bytes) -> NDArray[np.float32]:
    try:
        import numpy as np
    except ImportError as exc:
        raise ImportError(
            "AudioPeer's analysis helpers need numpy (pip install numpy); "
            "frames() and ReceivedFrame.pcm work without it"
        ) from exc
    return np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / np.float32(32768)


def _peak_frequency(samples: NDArray[np.float32], rate: int = RATE) -> float | None:
    import numpy as np

    if samples.size < rate * MIN_ANALYSIS_SECONDS:
        return None
    rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))
    if rms == 0 or 20 * math.log10(rms) < SILENCE_DBFS:
        return None
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    spectrum[0] = 0.0
    index = int(np.argmax(spectrum))
    shift = 0.0
    if 0 < index < spectrum.size - 1:
        # Quadratic interpolation of the log magnitude around the peak bin
        # (J. O. Smith, "Spectral Audio Signal Processing", section 5.7).
        below, peak, above = np.log(spectrum[index - 1 : index + 2] + 1e-12)
        curve = below - 2 * peak + above
        if curve < 0:
            shift = float(0.5 * (below - above) / curve)
    return (index + shift) * rate / samples.size
