"""One trial of the relay benchmark: a fresh server, one speaker, N listeners.

The two servers under test run in the orchestrator's process, so its CPU
time (``time.process_time``: every thread of it) is theirs; the orchestrator
itself only sleeps through the measurement. The clients run in child
processes that live for the whole benchmark (:class:`Clients`): the speaker
alone in one, so its pace does not suffer from the listeners' load, and the
listeners spread over the others. Each trial starts from a new server, so a
backlog left by an overloaded trial cannot carry over into the next.
"""

from __future__ import annotations

import array
import asyncio
import bisect
import contextlib
import multiprocessing
import os
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from _load import receive
from _relay_peers import MARK_LENGTHS, MARK_PERIOD
from _relay_peers import serve as serve_clients
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaRelay

from media.relay import MediaRoom

SPEAKER = "speaker"

#: Seconds to connect each listener, on top of a fixed allowance.
CONNECT_EACH = 0.1


class BenchmarkError(Exception):
    """A client process failed or did not answer; carries what it said."""


class Server(Protocol):
    """What both servers under test offer the benchmark."""

    async def answer(self, name: str, offer: str) -> str: ...
    async def start(self) -> None: ...
    async def close(self) -> None: ...


class Passthrough:
    """lophoc's media room, forwarding the speaker as encoded Opus.

    The speaker's Opus packets go to every listener as they came
    (``ForwardTrack`` hands aiortc ``av.Packet`` objects), and the speaker is
    decoded once, on a worker thread, for the voice-activity figure.
    """

    def __init__(self) -> None:
        self.room = MediaRoom("bench", ice_servers=())

    async def answer(self, name: str, offer: str) -> str:
        """The room's answer."""
        return await self.room.answer(name, offer)

    async def start(self) -> None:
        """Make the speaker heard."""
        await self.room.set_speakers([SPEAKER])

    async def close(self) -> None:
        """Close the room."""
        await self.room.close()


class Reencode:
    """The usual aiortc SFU: decode the speaker once, encode per listener.

    aiortc's receiver decodes the speaker's track, shared through
    :class:`aiortc.contrib.media.MediaRelay`; each listener's sender encodes
    it to Opus again (libopus on the default executor) and computes its RFC
    6464 audio level in Python.
    """

    def __init__(self) -> None:
        self.relay = MediaRelay()
        self.pcs: list[RTCPeerConnection] = []
        self.speaker: MediaStreamTrack | None = None

    async def answer(self, name: str, offer: str) -> str:
        """Answer the speaker by receiving, a listener by sending the relay."""
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pcs.append(pc)
        if name != SPEAKER:
            if self.speaker is None:
                raise BenchmarkError("the speaker must join first")
            pc.addTrack(self.relay.subscribe(self.speaker))
        await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        if name == SPEAKER:
            self.speaker = pc.getTransceivers()[0].receiver.track
        await pc.setLocalDescription(await pc.createAnswer())
        return pc.localDescription.sdp

    async def start(self) -> None:
        """Nothing to do: listeners were given the relay when they joined."""

    async def close(self) -> None:
        """Close every connection."""
        await asyncio.gather(*(pc.close() for pc in self.pcs))


PATHS: dict[str, Callable[[], Server]] = {
    "passthrough": Passthrough,
    "reencode": Reencode,
}


def machine_busy() -> tuple[float, float]:
    """CPU seconds the machine has been busy and idle so far, from /proc/stat."""
    with open("/proc/stat") as handle:
        ticks = [int(value) for value in handle.readline().split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = ticks
    hertz = os.sysconf("SC_CLK_TCK")
    busy = user + nice + system + irq + softirq + steal
    return busy / hertz, (idle + iowait) / hertz


class ClientProcess:
    """A child process holding client peers, and the pipe that drives it."""

    def __init__(self, name: str) -> None:
        context = multiprocessing.get_context("spawn")
        self.name = name
        self.conn, theirs = context.Pipe()
        self.process = context.Process(
            target=serve_clients, args=(theirs,), name=name, daemon=True
        )
        self.process.start()
        theirs.close()

    async def ask(self, within: float, command: str, *args: Any) -> Any:
        """Send a command; its reply, or BenchmarkError after ``within`` s."""
        try:
            self.conn.send((command, *args))
            status, reply = await asyncio.wait_for(receive(self.conn), within)
        except (TimeoutError, EOFError, OSError) as exc:
            raise BenchmarkError(f"{self.name}: no reply to {command}") from exc
        if status != "ok":
            raise BenchmarkError(f"{self.name}: {command} failed:\n{reply}")
        return reply

    def stop(self) -> None:
        """End the process if it has not exited by itself."""
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(1)


class Clients:
    """The speaker's process and the listeners' processes, for a whole run."""

    def __init__(self, listener_processes: int) -> None:
        self.speaker = ClientProcess("speaker")
        self.listeners = [
            ClientProcess(f"listeners-{i}") for i in range(listener_processes)
        ]

    @property
    def all(self) -> list[ClientProcess]:
        """Every client process, the speaker's first."""
        return [self.speaker, *self.listeners]

    async def close(self) -> None:
        """Ask every process to exit, then make sure it did."""
        for process in self.all:
            if process.process.is_alive():
                with contextlib.suppress(BenchmarkError):
                    await process.ask(10, "exit")
            process.stop()


@dataclass
class Trial:
    """What one trial measured over its window."""

    path: str
    listeners: int
    seconds: float
    #: CPU cores the server used (its process, every thread).
    server_cores: float
    speaker_cores: float
    listener_cores: list[float]
    #: Share of the whole machine's CPU time busy, every core counted.
    machine_busy: float
    #: Packets per second the speaker sent (50 when on time).
    speaker_rate: float
    #: Frames due at the listeners over their windows, and those received.
    expected: int
    received: int
    #: RTP sequence numbers missing at the listeners: loss on the way.
    gaps: int
    #: Seconds from a mark leaving the speaker to its arrival at a probe.
    latencies: list[float] = field(default_factory=list)
    unmatched_marks: int = 0
    connect_seconds: float = 0.0

    @property
    def loss(self) -> float:
        """Share of the expected frames the listeners did not receive."""
        if self.expected == 0:
            return 1.0
        return max(0.0, 1 - self.received / self.expected)

    @property
    def surplus(self) -> float:
        """Share of frames received beyond those due: a backlog worked off."""
        if self.expected == 0:
            return 0.0
        return max(0.0, self.received / self.expected - 1)

    def as_json(self) -> dict[str, Any]:
        """The trial as plain data, latencies in milliseconds."""
        return {
            "path": self.path,
            "listeners": self.listeners,
            "seconds": round(self.seconds, 2),
            "server_cores": round(self.server_cores, 3),
            "cpu_ms_per_listener_second": round(
                1000 * self.server_cores / self.listeners, 2
            ),
            "speaker_cores": round(self.speaker_cores, 3),
            "listener_cores": [round(c, 3) for c in self.listener_cores],
            "machine_busy": round(self.machine_busy, 3),
            "expected_frames": self.expected,
            "received_frames": self.received,
            "loss": round(self.loss, 4),
            "sequence_gaps": self.gaps,
            "speaker_packets_per_second": round(self.speaker_rate, 1),
            "latency_ms": [round(1000 * x, 2) for x in sorted(self.latencies)],
            "unmatched_marks": self.unmatched_marks,
            "connect_seconds": round(self.connect_seconds, 1),
        }


def match_marks(
    sent: list[tuple[float, int]],
    heard: Iterable[tuple[float, int]],
    since: float,
    until: float,
) -> tuple[list[float], int]:
    """Latencies of the marks heard in the window, and how many matched none.

    A mark heard is matched to the last mark of the same length sent before
    it, if that was less than one cycle of mark lengths earlier.
    """
    by_length: dict[int, list[float]] = {}
    for at, length in sent:
        by_length.setdefault(length, []).append(at)
    cycle = MARK_PERIOD * len(MARK_LENGTHS)
    latencies: list[float] = []
    unmatched = 0
    for at, length in heard:
        if not since <= at < until:
            continue
        times = by_length.get(length, [])
        index = bisect.bisect_right(times, at) - 1
        if index >= 0 and at - times[index] < cycle:
            latencies.append(at - times[index])
        else:
            unmatched += 1
    return latencies, unmatched


async def run_trial(
    clients: Clients,
    path: str,
    listeners: int,
    *,
    probes: int,
    warmup: float,
    duration: float,
) -> Trial:
    """Connect a fresh server to the speaker and ``listeners`` listeners; measure."""
    server = PATHS[path]()
    names = [f"l{i}" for i in range(listeners)]
    probe_names = set(names[:probes])
    shares = [names[i :: len(clients.listeners)] for i in range(len(clients.listeners))]
    within = 30 + CONNECT_EACH * listeners
    started = time.monotonic()
    try:
        offers = await clients.speaker.ask(60, "offer", SPEAKER, [], [])
        answer = await server.answer(SPEAKER, offers[SPEAKER])
        await clients.speaker.ask(within, "accept", {SPEAKER: answer}, within)

        offered = await asyncio.gather(
            *(
                process.ask(within, "offer", None, share, probe_names & set(share))
                for process, share in zip(clients.listeners, shares, strict=True)
            )
        )
        answered = await asyncio.gather(
            *(
                asyncio.gather(*(server.answer(n, o) for n, o in offers.items()))
                for offers in offered
            )
        )
        await asyncio.gather(
            *(
                process.ask(
                    within, "accept", dict(zip(offers, sdps, strict=True)), within
                )
                for process, offers, sdps in zip(
                    clients.listeners, offered, answered, strict=True
                )
            )
        )
        connect_seconds = time.monotonic() - started
        await server.start()
        # The speaker starts once everyone is connected: packets sent during
        # the handshakes would wait in the server's socket buffer, and a
        # server near its limit takes long to work such a backlog off.
        await clients.speaker.ask(10, "talk")
        await asyncio.sleep(warmup)

        before = await _counts(clients)
        await asyncio.sleep(duration)
        after = await _counts(clients)
        marks = (await clients.speaker.ask(10, "marks"))[SPEAKER]
        heard = [
            mark
            for process in clients.listeners
            for probe in (await process.ask(10, "marks")).values()
            for mark in probe
        ]
        latencies, unmatched = match_marks(marks, heard, before["at"], after["at"])
        # The frames due in a listener's window are those the speaker sent
        # one transit earlier; without that shift a frame in flight at either
        # edge would count as lost or as one too many for every listener at
        # once (0.3% at 6 s, against a 1% limit).
        transit = statistics.median(latencies) if latencies else 0.0
        sent = array.array(
            "d", await clients.speaker.ask(10, "sent", before["at"] - 5, after["at"])
        )
    finally:
        try:
            for process in clients.all:
                if process.process.is_alive():
                    await process.ask(within, "leave")
        finally:
            await server.close()

    seconds = after["at"] - before["at"]
    busy = after["busy"] - before["busy"]
    idle = after["idle"] - before["idle"]
    cores = [
        (a["cpu"] - b["cpu"]) / seconds
        for a, b in zip(after["clients"], before["clients"], strict=True)
    ]
    expected = received = gaps = 0
    for share, b, a in zip(
        shares, before["clients"][1:], after["clients"][1:], strict=True
    ):
        due = bisect.bisect_left(sent, a["at"] - transit) - bisect.bisect_left(
            sent, b["at"] - transit
        )
        expected += due * len(share)
        received += a["packets"] - b["packets"]
        gaps += a["gaps"] - b["gaps"]
    speaker = after["clients"][0]["packets"] - before["clients"][0]["packets"]
    return Trial(
        path=path,
        listeners=listeners,
        seconds=seconds,
        server_cores=(after["server"] - before["server"]) / seconds,
        speaker_cores=cores[0],
        listener_cores=cores[1:],
        machine_busy=busy / (busy + idle),
        speaker_rate=speaker / seconds,
        expected=expected,
        received=received,
        gaps=gaps,
        latencies=latencies,
        unmatched_marks=unmatched,
        connect_seconds=connect_seconds,
    )


async def _counts(clients: Clients) -> dict[str, Any]:
    """Counters of every process, read as close together as the pipes allow."""
    replies = await asyncio.gather(*(p.ask(10, "count") for p in clients.all))
    busy, idle = machine_busy()
    return {
        "at": time.monotonic(),
        "server": time.process_time(),
        "busy": busy,
        "idle": idle,
        "clients": replies,
    }
