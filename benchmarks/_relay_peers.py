"""The clients of the relay benchmark: one speaker, and listeners that count.

Each client process holds aiortc peers driven over a pipe by the
orchestrator (:mod:`_relay_trial`). The speaker sends a tone; a listener
does not decode what it hears. Decoding would cost the clients about as much
CPU per listener as forwarding costs the server, and on a small machine the
clients share the server's cores: instead, each listener takes its RTP
packets where aiortc's receiver would queue them for its decoder (the same
tap as :class:`media.forward.InboundAudio`) and only counts them.

The added latency is read from marks in the audio itself, so it holds for a
path that re-encodes as well as for one that forwards the packets as they
are: the tone falls silent for :data:`MARK_FRAMES` frames every
:data:`MARK_EVERY` frames. The speaker decodes its own packets as they leave
and notes when the first silent one went out; a *probe* listener decodes what
it receives and notes when the first silent one arrived. Both read
``time.monotonic`` (CLOCK_MONOTONIC, one clock for every process of a Linux
machine). A path that re-encodes delays the audio within the packets too (the
codec's look-ahead, once more per encode); the first silent packet a listener
hears then leaves the server a frame later, and that shows in the latency as
it would in a listener's ear.
"""

from __future__ import annotations

import array
import asyncio
import fractions
import math
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
from _load import receive
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RtpPacket
from av import CodecContext
from av.audio.frame import AudioFrame
from av.packet import Packet

RATE = 48_000
FRAME = 960  # 20 ms
FRAMES_PER_SECOND = RATE // FRAME

#: A mark every half second, silent for 4, 5, then 6 frames: a listener
#: tells the marks apart by the length of the silence it hears, so latencies
#: up to three periods (1.5 s) are matched to the right mark; a mark that
#: cannot be matched is counted, not guessed.
MARK_EVERY = 25
#: At least two silent frames, so that one decoded frame is fully silent
#: after two encodes, each delaying the audio by Opus's look-ahead (312
#: samples at 48 kHz). A frame partly silent is not counted as silent, so the
#: run heard is one frame shorter than the run sent, on every path.
MARK_LENGTHS = (4, 5, 6)
MARK_PERIOD = MARK_EVERY / FRAMES_PER_SECOND

#: RMS (full scale 1.0) under which a decoded frame is silent; the tone's is
#: 0.21, and a frame holding even the 312 samples of look-ahead is at 0.12.
SILENT = 0.01
#: Tone frames in a row before a silent frame starts a mark.
LOUD_RUN = 5


class MarkedTone(MediaStreamTrack):
    """A microphone playing a 440 Hz tone with a silent mark every half second."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        #: Set to start talking; until then the sender waits for a frame.
        self.talking = asyncio.Event()
        self._sent = 0
        self._start: float | None = None
        n = np.arange(MARK_EVERY * FRAME * len(MARK_LENGTHS))
        wave = 0.3 * np.sin(2 * math.pi * 440 * n / RATE)
        for i, length in enumerate(MARK_LENGTHS):
            wave[i * MARK_EVERY * FRAME :][: length * FRAME] = 0.0
        self._cycle = (wave * 32767).astype(np.int16)

    async def recv(self) -> AudioFrame:
        """The next 20 ms, when it is due by the wall clock."""
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            await self.talking.wait()
            self._start = time.monotonic()
        index = self._sent // FRAME
        due = self._start + index / FRAMES_PER_SECOND
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        at = index % (MARK_EVERY * len(MARK_LENGTHS)) * FRAME
        pcm = self._cycle[at : at + FRAME].reshape(1, -1)
        frame = AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self._sent
        frame.time_base = fractions.Fraction(1, RATE)
        self._sent += FRAME
        return frame


class MarkReader:
    """Decodes Opus payloads in order and notes the marks in them.

    :attr:`marks` holds, for each mark, when its first silent payload was
    read and how many silent payloads it had.
    """

    def __init__(self) -> None:
        self.marks: list[tuple[float, int]] = []
        self._decoder = CodecContext.create("libopus", "r")
        self._decoder.format = "s16"
        self._decoder.layout = "mono"
        self._decoder.sample_rate = RATE
        self._loud = 0
        self._mark: float | None = None
        self._silent = 0

    def read(self, payload: bytes, at: float) -> None:
        """Decode the next payload, which was sent or received ``at``."""
        frames = self._decoder.decode(Packet(payload))
        if not frames:
            return
        pcm = np.concatenate([f.to_ndarray().ravel() for f in frames])
        rms = float(np.sqrt(np.mean((pcm.astype(np.float32) / 32768) ** 2)))
        if rms < SILENT:
            if self._mark is None and self._loud >= LOUD_RUN:
                self._mark, self._silent = at, 0
            self._silent += 1
            self._loud = 0
            return
        if self._mark is not None:
            self.marks.append((self._mark, self._silent))
            self._mark = None
        self._loud += 1


class Speaker:
    """The speaker's browser: sends the marked tone, notes each mark leaving."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.packets = 0
        #: When each RTP packet left (RTCP excluded).
        self.sent_at = array.array("d")
        self.reader = MarkReader()
        self.tone = MarkedTone()

    async def offer(self) -> str:
        """The SDP offer: one sending audio m-line."""
        self.pc.addTransceiver(self.tone, direction="sendonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def accept(self, answer: str) -> None:
        """Apply the answer, then tap the sender's transport."""
        await self.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        transport = self.pc.getTransceivers()[0].sender.transport
        send: Callable[[bytes], Any] = transport._send_rtp

        async def sending(data: bytes) -> None:
            # RTCP goes the same way; RTP payload types are 96 and up here.
            if len(data) > 12 and data[1] & 0x7F >= 96:
                now = time.monotonic()
                self.packets += 1
                self.sent_at.append(now)
                self.reader.read(RtpPacket.parse(data).payload, now)
            await send(data)

        # An instance attribute shadows the method for this transport only.
        setattr(transport, "_send_rtp", sending)  # noqa: B010


class Listener:
    """A listener's browser: one receiving slot, its packets counted.

    A *probe* also decodes its packets and notes when each mark arrived.
    """

    def __init__(self, probe: bool) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.packets = 0
        # RTP sequence numbers missing between received packets: loss on the
        # way (loopback drops when a socket's buffer overflows). Packets the
        # server never sent leave no gap; the packet count shows those.
        self.gaps = 0
        self.reader = MarkReader() if probe else None
        self._last_sequence: int | None = None

    async def offer(self) -> str:
        """The SDP offer: one receiving audio m-line, tapped."""
        transceiver = self.pc.addTransceiver("audio", direction="recvonly")
        setattr(transceiver.receiver, "_handle_rtp_packet", self._packet)  # noqa: B010
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def accept(self, answer: str) -> None:
        """Apply the answer."""
        await self.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))

    async def _packet(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        arrived = time.monotonic()
        self.packets += 1
        if self._last_sequence is not None:
            self.gaps += max(
                0, (packet.sequence_number - self._last_sequence - 1) % 65536
            )
        self._last_sequence = packet.sequence_number
        if self.reader is not None:
            self.reader.read(packet.payload, arrived)


Peer = Speaker | Listener


async def connected(pcs: list[RTCPeerConnection], within: float) -> None:
    """Wait until every connection is up; fails after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        states = [pc.connectionState for pc in pcs]
        if any(state in ("failed", "closed") for state in states):
            raise ConnectionError(f"{states.count('failed')} connections failed")
        if all(state == "connected" for state in states):
            return
        if time.monotonic() > deadline:
            late = len(states) - states.count("connected")
            raise TimeoutError(f"{late} of {len(pcs)} not connected in {within} s")
        await asyncio.sleep(0.05)


# The client process -----------------------------------------------------------


def serve(conn: Connection) -> None:
    """Child process: hold peers and do what the orchestrator asks."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve(conn))
    else:
        uvloop.run(_serve(conn))


async def _serve(conn: Connection) -> None:
    peers: dict[str, Peer] = {}
    while True:
        command, *args = await receive(conn)
        try:
            reply = await _do(peers, command, *args)
        except Exception as exc:
            conn.send(("error", "".join(traceback.format_exception(exc))))
        else:
            conn.send(("ok", reply))
        if command == "exit":
            return


async def _do(peers: dict[str, Peer], command: str, *args: Any) -> Any:
    if command == "offer":
        # args: the speaker's name or None, the listeners' names, the probes'.
        speaker, listeners, probes = args
        if speaker is not None:
            peers[speaker] = Speaker()
        for name in listeners:
            peers[name] = Listener(name in probes)
        return {name: await peer.offer() for name, peer in peers.items()}
    if command == "accept":
        answers, within = args
        for name, answer in answers.items():
            await peers[name].accept(answer)
        await connected([peer.pc for peer in peers.values()], within)
        return len(peers)
    if command == "talk":
        for peer in peers.values():
            if isinstance(peer, Speaker):
                peer.tone.talking.set()
        return None
    if command == "count":
        packets = sum(peer.packets for peer in peers.values())
        gaps = sum(p.gaps for p in peers.values() if isinstance(p, Listener))
        return {
            "at": time.monotonic(),
            "cpu": time.process_time(),
            "packets": packets,
            "gaps": gaps,
        }
    if command == "sent":
        since, until = args
        return [
            at
            for peer in peers.values()
            if isinstance(peer, Speaker)
            for at in peer.sent_at
            if since <= at < until
        ]
    if command == "marks":
        return {
            name: peer.reader.marks
            for name, peer in peers.items()
            if peer.reader is not None
        }
    if command in ("leave", "exit"):
        await asyncio.gather(*(peer.pc.close() for peer in peers.values()))
        peers.clear()
        return None
    raise ValueError(f"unknown command {command!r}")
