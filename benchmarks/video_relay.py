"""Benchmark of video pass-through: viewers per core for one 720p publisher.

The question: with the relay forwarding one publisher's 720p VP8 camera as
encoded frames (:mod:`media.video`, no decoding or encoding on the server),
how much of a core does each viewer cost the server, and so how many
viewers does one core hold?

Three processes:

- this one runs the server's :class:`media.relay.MediaRoom` and nothing
  else while it measures, so its CPU time (every thread:
  ``time.process_time``) is the relay's;
- a publisher (``--role publisher``) sends a loop of ``--seconds`` of 720p
  VP8, encoded once at start-up from a moving picture at ``--bitrate``
  (see :func:`encode_loop`), paced at
  30 frames a second through aiortc's sender as pre-encoded packets, so the
  publisher spends no CPU encoding while it is measured;
- a viewer process (``--role viewers``) holds the viewers, each an aiortc
  peer connection that counts whole frames where aiortc would decode them
  (the same tap the server uses), so a viewer costs SRTP, RTP and the
  jitter buffer but no decoding.

Signaling is JSON lines over the children's standard input and output. For
each count of viewers in ``--viewers``, a trial connects everyone, waits
until every peer is connected and then ``--warmup`` seconds, and measures
``--duration`` seconds: the server's CPU,
the frames the viewers received against those the publisher sent times the
viewers. A trial passes when the viewers lost under ``--loss-limit`` of the
frames. Reported per trial: server cores, cores per viewer, frames lost
(``lost``: of those the publisher sent times the viewers; ``lost in``: of
those the publisher sent, never whole at the relay, so a trial starved of
CPU by other processes shows where its frames went),
the viewer process's cores (when it was near a full core, the viewers, not
the server, limited the trial), and viewers per core as the trial's
viewers divided by the server's cores. The figure is an extrapolation from
the measured slope: on a 2-core machine the viewers' own processes run out
of CPU long before the server does. A least-squares line through the
passing trials splits the server's CPU into what the publisher costs and
what each viewer adds; the viewers one core holds are read from it.

Run from the repository root::

    .venv/bin/python benchmarks/video_relay.py              # about a minute
    .venv/bin/python benchmarks/video_relay.py --viewers 4 8 --duration 3

The table is printed and written to ``benchmarks/results/video_relay.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import av
from aiortc import (
    MediaStreamTrack,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from av.packet import Packet
from av.stream import Stream
from av.video.frame import VideoFrame

from client_sdk.tracks import Pacer
from media.ice import rtc_configuration
from media.relay import MediaRoom, PeerState
from media.video import InboundVideo, VideoKind

WIDTH, HEIGHT, FPS = 1280, 720, 30
TIME_BASE = fractions.Fraction(1, 90_000)
RESULTS = Path(__file__).parent / "results" / "video_relay.json"


# Publisher -----------------------------------------------------------------


def encode_loop(seconds: float, bitrate: int) -> list[bytes]:
    """VP8 frames of a moving picture: a keyframe, then deltas, at ``bitrate``.

    The picture is a diagonal gradient that slides a little each frame, with
    a box of fresh noise in the middle, so the encoder spends its bitrate on
    every frame as it would on a camera, and the keyframe has the size of a
    camera's (tens of kilobytes), not that of a whole frame of noise.
    """
    encoder = av.CodecContext.create("libvpx", "w")
    encoder.width, encoder.height, encoder.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    encoder.bit_rate = bitrate
    encoder.gop_size = 10_000
    encoder.options = {
        "deadline": "realtime",
        "cpu-used": "8",
        "lag-in-frames": "0",
        "minrate": str(bitrate),
        "maxrate": str(bitrate),
    }
    count = round(seconds * FPS)
    chroma = bytes([128]) * (WIDTH * HEIGHT // 4)
    ramp = bytes((i // 5) % 256 for i in range(WIDTH + HEIGHT + 4 * count))
    box_w, box_h = WIDTH // 5, HEIGHT // 5
    left, top = (WIDTH - box_w) // 2, (HEIGHT - box_h) // 2
    frames: list[bytes] = []
    for n in range(count):
        noise = os.urandom(box_w * box_h)
        rows = []
        for y in range(HEIGHT):
            row = ramp[y + 4 * n : y + 4 * n + WIDTH]
            if top <= y < top + box_h:
                start = (y - top) * box_w
                row = row[:left] + noise[start : start + box_w] + row[left + box_w :]
            rows.append(row)
        picture = VideoFrame(WIDTH, HEIGHT, "yuv420p")
        picture.planes[0].update(b"".join(rows))
        picture.planes[1].update(chroma)
        picture.planes[2].update(chroma)
        picture.pts = n
        picture.time_base = fractions.Fraction(1, FPS)
        frames += [bytes(packet) for packet in encoder.encode(picture)]
    return frames


class LoopTrack(MediaStreamTrack):
    """Pre-encoded frames, looped, paced at 30 a second.

    A keyframe request starts the loop again, at its keyframe: a camera's
    encoder answers a PLI the same way, and without it a viewer that lost a
    packet would wait for the loop to come round.
    """

    kind = "video"

    def __init__(self, frames: list[bytes]) -> None:
        super().__init__()
        self.frames = frames
        self.sent = 0
        self.keyframes_asked = 0
        self._pacer = Pacer()
        self._loop_start = 0
        self._asked = False

    def bind(self, sender: RTCRtpSender) -> None:
        """Answer the keyframe requests ``sender`` receives."""
        # aiortc's sender calls this on each PLI or FIR; the instance
        # attribute shadows its method for this sender only.
        setattr(sender, "_send_keyframe", self.restart)  # noqa: B010

    def restart(self) -> None:
        """Make the next frame the loop's keyframe."""
        self.keyframes_asked += 1
        self._asked = True

    async def recv(self) -> Packet[Stream]:
        """The next frame of the loop, once it is due."""
        await self._pacer.wait(self, self.sent / FPS)
        if self._asked:
            self._asked = False
            self._loop_start = self.sent
        index = (self.sent - self._loop_start) % len(self.frames)
        packet = Packet(self.frames[index])
        packet.pts = self.sent * (90_000 // FPS)
        packet.time_base = TIME_BASE
        self.sent += 1
        return packet


# Children: signaling over stdin and stdout --------------------------------


async def _lines() -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    return reader


def _say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def _offer(
    pc: RTCPeerConnection, name: str, reader: asyncio.StreamReader
) -> None:
    await pc.setLocalDescription(await pc.createOffer())
    _say({"offer": name, "sdp": pc.localDescription.sdp})
    answer = json.loads(await reader.readline())
    await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))


async def child(role: str, viewers: int, seconds: float, bitrate: int) -> None:
    """A publisher or a viewer process: offer, then answer count requests."""
    reader = await _lines()
    peers: list[RTCPeerConnection] = []
    taps: list[InboundVideo] = []
    track: LoopTrack | None = None
    if role == "publisher":
        frames = encode_loop(seconds, bitrate)
        track = LoopTrack(frames)
        pc = RTCPeerConnection(rtc_configuration(()))
        track.bind(pc.addTransceiver(track, direction="sendonly").sender)
        peers.append(pc)
        await _offer(pc, "publisher", reader)
    else:
        for n in range(viewers):
            pc = RTCPeerConnection(rtc_configuration(()))
            receiver = pc.addTransceiver("video", direction="recvonly").receiver
            taps.append(InboundVideo(f"v{n}", VideoKind.CAMERA, receiver))
            peers.append(pc)
            await _offer(pc, f"v{n}", reader)
    _say({"ready": role})
    while line := await reader.readline():
        if json.loads(line).get("stop"):
            break
        _say(
            {
                "sent": track.sent if track else 0,
                "received": sum(tap.received for tap in taps),
                "cpu": time.process_time(),
            }
        )
    await asyncio.gather(*(pc.close() for pc in peers))


# The server and the trials -------------------------------------------------


class Child:
    """A child process, spoken to in JSON lines."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), 60)
        if not line:
            raise RuntimeError("a child process ended early")
        message: dict[str, Any] = json.loads(line)
        return message

    def write(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(message) + "\n").encode())

    async def count(self) -> dict[str, Any]:
        self.write({"count": True})
        return await self.read()

    async def close(self) -> None:
        self.write({"stop": True})
        try:
            await asyncio.wait_for(self.process.wait(), 10)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


async def spawn(role: str, args: argparse.Namespace, viewers: int = 1) -> Child:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--role",
        role,
        "--viewers",
        str(viewers),
        "--seconds",
        str(args.seconds),
        "--bitrate",
        str(args.bitrate),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    return Child(process)


async def connect(room: MediaRoom, child: Child) -> None:
    """Answer every offer of ``child`` until it says it is ready."""
    for _ in range(10_000):
        message = await child.read()
        if "ready" in message:
            return
        answer = await room.answer(message["offer"], message["sdp"])
        child.write({"sdp": answer})
    raise RuntimeError("too many offers")


async def connected(room: MediaRoom, names: Sequence[str], within: float) -> None:
    """Wait until every peer of ``names`` is connected, at most ``within`` s.

    On a loaded machine a few dozen DTLS handshakes take seconds; a trial
    that measured before they ended would count their frames as lost.
    """
    deadline = time.monotonic() + within
    for _ in range(round(within * 10) + 1):
        waiting = [n for n in names if room.state(n) is not PeerState.CONNECTED]
        if not waiting:
            return
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    raise RuntimeError(f"not connected within {within:g} s: {', '.join(waiting)}")


def relay_counts(camera: InboundVideo) -> tuple[int, int, int]:
    """Frames the relay received, frames its slots sent, keyframes it asked for."""
    sent = sum(slot.sent for slot in camera.outlets)
    return camera.received, sent, camera.keyframe_requests


async def trial(viewers: int, args: argparse.Namespace) -> dict[str, Any]:
    """One publisher, ``viewers`` viewers: the server's CPU and the frames lost."""
    room = MediaRoom("bench")
    publisher = await spawn("publisher", args)
    audience = await spawn("viewers", args, viewers)
    try:
        await connect(room, publisher)
        await connect(room, audience)
        names = [f"v{n}" for n in range(viewers)]
        await connected(room, ["publisher", *names], within=60.0)
        room.set_video({name: [("publisher", VideoKind.CAMERA)] for name in names})
        await asyncio.sleep(args.warmup)

        camera = room.published("publisher")[VideoKind.CAMERA]
        sent0, seen0 = await publisher.count(), await audience.count()
        relay0 = relay_counts(camera)
        cpu0, wall0 = time.process_time(), time.monotonic()
        await asyncio.sleep(args.duration)
        cpu1, wall1 = time.process_time(), time.monotonic()
        relay1 = relay_counts(camera)
        sent1, seen1 = await publisher.count(), await audience.count()
    finally:
        await room.close()
        await asyncio.gather(publisher.close(), audience.close())

    wall = wall1 - wall0
    published = sent1["sent"] - sent0["sent"]
    expected = published * viewers
    received = seen1["received"] - seen0["received"]
    server = (cpu1 - cpu0) / wall
    lost = 1 - received / expected if expected else 1.0
    return {
        "viewers": viewers,
        "server_cores": round(server, 3),
        "cores_per_viewer": round(server / viewers, 4),
        "viewers_per_core": round(viewers / server, 1) if server else None,
        "frames_expected": expected,
        "frames_received": received,
        "lost": round(max(lost, 0.0), 4),
        # Where frames went missing: on the way in (publisher to relay), or
        # in the relay's slots and on the way out.
        "relay_in_lost": round(max(1 - (relay1[0] - relay0[0]) / published, 0.0), 4)
        if published
        else 1.0,
        "server_received": relay1[0] - relay0[0],
        "server_sent": relay1[1] - relay0[1],
        "server_keyframe_requests": relay1[2] - relay0[2],
        "viewer_process_cores": round((seen1["cpu"] - seen0["cpu"]) / wall, 3),
        "passed": lost < args.loss_limit,
    }


def report(rows: Sequence[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"video pass-through, one 720p VP8 publisher at {args.bitrate // 1000} kbps, "
        f"{os.cpu_count()} CPUs (load {os.getloadavg()[0]:.1f}), "
        f"{args.duration:g} s per trial",
        f"{'viewers':>7} {'server':>7} {'per viewer':>10} {'viewers/core':>12} "
        f"{'lost':>6} {'lost in':>8} {'viewer proc':>11}  verdict",
    ]
    cpus = os.cpu_count() or 1
    for row in rows:
        verdict = "ok" if row["passed"] else "lost frames"
        if row["viewer_process_cores"] > 0.9:
            verdict += " (viewer process saturated)"
        elif row["server_cores"] + row["viewer_process_cores"] > 0.7 * cpus:
            verdict += " (machine near saturation)"
        lines.append(
            f"{row['viewers']:>7} {row['server_cores']:>7.2f} "
            f"{row['cores_per_viewer']:>10.4f} {row['viewers_per_core'] or 0:>12.1f} "
            f"{row['lost']:>6.1%} {row['relay_in_lost']:>8.1%} "
            f"{row['viewer_process_cores']:>11.2f}  {verdict}"
        )
    fit = slope(rows)
    if fit is not None:
        base, per_viewer = fit
        lines.append(
            f"line through the passing trials: {base:.3f} cores for the publisher "
            f"and {per_viewer:.4f} per viewer, so about "
            f"{(1 - base) / per_viewer:.0f} viewers per core (extrapolated)"
        )
    return "\n".join(lines)


def slope(rows: Sequence[dict[str, Any]]) -> tuple[float, float] | None:
    """Least squares line of server cores against viewers, over passing trials."""
    points = [(r["viewers"], r["server_cores"]) for r in rows if r["passed"]]
    if len({x for x, _ in points}) < 2:
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    per_viewer = sum((x - mean_x) * (y - mean_y) for x, y in points) / spread
    if per_viewer <= 0:
        return None
    return mean_y - per_viewer * mean_x, per_viewer


async def main(args: argparse.Namespace) -> None:
    rows = []
    for viewers in args.viewers:
        rows.append(await trial(viewers, args))
        print(report(rows[-1:], args).splitlines()[-1], flush=True)
    print(report(rows, args))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                },
                "settings": {
                    "bitrate": args.bitrate,
                    "duration": args.duration,
                    "warmup": args.warmup,
                    "loss_limit": args.loss_limit,
                },
                "trials": rows,
                "fit": dict(zip(("base_cores", "cores_per_viewer"), fit, strict=True))
                if (fit := slope(rows))
                else None,
            },
            indent=2,
        )
    )


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--viewers", type=int, nargs="+", default=[5, 10, 20, 40])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--bitrate", type=int, default=1_500_000)
    parser.add_argument("--seconds", type=float, default=2.0, help="loop length")
    parser.add_argument("--loss-limit", type=float, default=0.01)
    parser.add_argument("--role", choices=("server", "publisher", "viewers"))
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.warmup < 0 or any(v < 1 for v in args.viewers):
        parser.error("durations must be positive and viewers at least 1")
    return args


if __name__ == "__main__":
    options = parse()
    if options.role in ("publisher", "viewers"):
        asyncio.run(
            child(
                options.role,
                options.viewers[0],
                options.seconds,
                options.bitrate,
            )
        )
    else:
        asyncio.run(main(options))
