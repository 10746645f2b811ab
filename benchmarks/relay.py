"""Benchmark of speaker forwarding: Opus pass-through against decode and re-encode.

One speaker plays a tone; ``--listeners`` listeners hear it. The server side
runs in this process and is measured; the clients (aiortc peers, one per
participant, from ``tests/media/peer.py``) run in a child process, so their
decoding does not count against the server. Two servers, in turn:

``passthrough``
    :class:`media.relay.MediaRoom`: the speaker's Opus packets go to every
    listener as they came (``ForwardTrack`` hands aiortc ``av.Packet``
    objects), and the speaker is decoded once, on a worker thread, for the
    voice-activity figure.
``reencode``
    The usual aiortc SFU: the speaker's track is decoded once by aiortc's
    receiver and shared with :class:`aiortc.contrib.media.MediaRelay`; each
    listener's sender re-encodes it to Opus (libopus on the default
    executor) and computes its RFC 6464 audio level in Python.

After every client is connected and ``--warmup`` seconds have passed, the
server's CPU time (``time.process_time``: every thread of this process) is
read over ``--duration`` seconds, with the frames the listeners decoded in
that window. Printed: CPU cores used, CPU milliseconds per listener per
second of audio, frames per listener per second (50 means every 20 ms frame
arrived, and a row under 45 is marked as fallen behind), and the ratio
reencode/passthrough of CPU per listener, for each room size both servers
kept up with and for one added listener (the slope between the smallest and
the largest of those sizes).

Run from the repository root (the clients need the ``test`` extra's numpy)::

    .venv/bin/python benchmarks/relay.py
    .venv/bin/python benchmarks/relay.py --listeners 2 8 16 --duration 10

The table is also written to ``benchmarks/results/relay.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import platform
import sys
import time
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaRelay

# The client peers live with the media tests; the repository root makes
# ``tests`` importable when this file is run as a script.
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from media.relay import MediaRoom  # noqa: E402
from tests.media.peer import TonePeer, eventually  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "relay.json"
SPEAKER = "speaker"
KEEPS_UP = 45.0


class Server(Protocol):
    """What both servers under test offer the benchmark."""

    async def answer(self, name: str, offer: str) -> str: ...
    async def start(self) -> None: ...
    async def close(self) -> None: ...


class Passthrough:
    """lophoc's media room, forwarding the speaker as encoded Opus."""

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
    """aiortc's MediaRelay: decode the speaker once, encode per listener."""

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
                raise RuntimeError("the speaker must join first")
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


async def receive(conn: Connection, within: float) -> Any:
    """The next message on ``conn``; TimeoutError if none comes in ``within`` s.

    Either process may die without a word (an exception in the child, a
    ^C in the parent); a bounded wait turns that into an error.
    """
    loop = asyncio.get_running_loop()
    if not await loop.run_in_executor(None, conn.poll, within):
        raise TimeoutError(f"no message from the other process in {within} s")
    return conn.recv()


# The client process -----------------------------------------------------------


def clients(conn: Connection, listeners: int) -> None:
    """Child process: the speaker and the listeners, driven over ``conn``."""
    asyncio.run(_clients(conn, listeners))


async def _clients(conn: Connection, listeners: int) -> None:
    speaker = TonePeer(SPEAKER, 440, slots=0, keep=False)
    peers = [speaker] + [
        TonePeer(f"l{i}", None, slots=1, keep=False) for i in range(listeners)
    ]
    offers = [(peer.name, await peer.offer()) for peer in peers]
    conn.send(offers)
    answers: dict[str, str] = await receive(conn, 60)
    for peer in peers:
        await peer.accept(answers[peer.name])
    await asyncio.gather(*(peer.connected(within=30) for peer in peers))
    conn.send("connected")
    for _ in range(100):
        command = await receive(conn, 300)
        if command == "count":
            conn.send((sum(peer.frames for peer in peers[1:]), time.process_time()))
        else:
            break
    await asyncio.gather(*(peer.close() for peer in peers))
    conn.send("closed")


# The measuring side -----------------------------------------------------------


async def measure(
    server: Server, listeners: int, warmup: float, duration: float
) -> dict[str, Any]:
    """Run one server with one client process; return its figures."""
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    child = context.Process(target=clients, args=(theirs, listeners))
    child.start()
    try:
        offers: list[tuple[str, str]] = await receive(ours, 60)
        answers = {name: await server.answer(name, offer) for name, offer in offers}
        ours.send(answers)
        if await receive(ours, 60) != "connected":
            raise RuntimeError("clients did not connect")
        await server.start()
        await asyncio.sleep(warmup)

        ours.send("count")
        frames_before, child_before = await receive(ours, 10)
        cpu_before, wall_before = time.process_time(), time.monotonic()
        await asyncio.sleep(duration)
        cpu = time.process_time() - cpu_before
        wall = time.monotonic() - wall_before
        ours.send("count")
        frames_after, child_after = await receive(ours, 10)
    finally:
        if child.is_alive():
            ours.send("close")
        await server.close()
        try:
            await eventually(lambda: not child.is_alive(), 10, "clients exited", 0.1)
        finally:
            if child.is_alive():
                child.kill()
            child.join(1)

    frames = frames_after - frames_before
    return {
        "listeners": listeners,
        "server_cores": round(cpu / wall, 3),
        "cpu_ms_per_listener_second": round(1000 * cpu / wall / listeners, 3),
        "frames_per_listener_second": round(frames / wall / listeners, 1),
        "client_cores": round((child_after - child_before) / wall, 3),
        # 50 frames a second is every 20 ms frame; under 45, frames were lost.
        "keeps_up": frames / wall / listeners >= KEEPS_UP,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Both servers for each listener count, alternating."""
    rows: list[dict[str, Any]] = []
    for listeners in args.listeners:
        for name, make in (("passthrough", Passthrough), ("reencode", Reencode)):
            server: Server = make()
            row = await measure(server, listeners, args.warmup, args.duration)
            row["server"] = name
            rows.append(row)
            print(_format(row), flush=True)
    # CPU figures of a server that fell behind are capped by what it managed
    # to send: only room sizes where both servers kept up are compared.
    both = [
        n
        for n in args.listeners
        if all(r["keeps_up"] for r in rows if r["listeners"] == n)
    ]
    ratios: dict[str, float] = {}
    for listeners in both:
        by = {r["server"]: r for r in rows if r["listeners"] == listeners}
        base = by["passthrough"]["cpu_ms_per_listener_second"]
        ratios[str(listeners)] = round(
            by["reencode"]["cpu_ms_per_listener_second"] / base, 1
        )
    # The per-listener figures carry each server's fixed cost (the speaker's
    # connection and decoder) spread over the listeners; the slope between
    # the smallest and largest room both kept up with is the cost of one
    # more listener.
    marginal: dict[str, float] = {}
    if len(both) >= 2:
        low, high = min(both), max(both)
        for name in ("passthrough", "reencode"):
            at = {r["listeners"]: r for r in rows if r["server"] == name}
            slope = (at[high]["server_cores"] - at[low]["server_cores"]) / (high - low)
            marginal[name] = round(1000 * slope, 3)
        if marginal["passthrough"] > 0:
            ratios["marginal"] = round(
                marginal["reencode"] / marginal["passthrough"], 1
            )
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": platform.platform(),
        "python": platform.python_version(),
        "warmup": args.warmup,
        "duration": args.duration,
        "rows": rows,
        "marginal_cpu_ms_per_listener_second": marginal,
        "reencode_over_passthrough_cpu_per_listener": ratios,
    }


def _format(row: dict[str, Any]) -> str:
    return (
        f"{row['server']:<12} {row['listeners']:>5} listeners  "
        f"server {row['server_cores']:.3f} cores  "
        f"{row['cpu_ms_per_listener_second']:7.2f} ms CPU/listener/s  "
        f"{row['frames_per_listener_second']:5.1f} frames/listener/s  "
        f"(clients {row['client_cores']:.2f} cores)"
        + ("" if row["keeps_up"] else "  FELL BEHIND")
    )


def main() -> None:
    """Parse the flags, run, print the ratios and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listeners", type=int, nargs="+", default=[2, 6, 12])
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=8.0)
    args = parser.parse_args()
    result = asyncio.run(run(args))
    for key, ratio in result["reencode_over_passthrough_cpu_per_listener"].items():
        where = "one more listener" if key == "marginal" else f"{key} listeners"
        print(f"{where}: re-encoding costs {ratio}x the CPU of pass-through")
    for name, ms in result["marginal_cpu_ms_per_listener_second"].items():
        print(f"{name}: {ms} ms CPU per second for each added listener")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
