"""Benchmark of one room's fan-out on one node: lophoc against plain websockets.

One room holds ``--clients`` receivers (students) and one publisher (the
teacher). The publisher broadcasts tagged messages; every receiver gets each
one as a ``broadcast`` event frame. The same run measures, with the same
clients on the same machine:

* lophoc, as a real ``lophoc serve`` process (memory broker and store, the
  rate limit lifted so the publisher is never refused);
* the peer, ``_peer.py``: a ``websockets.asyncio.server.serve`` server that
  sends the same frame to every connection with
  ``websockets.asyncio.server.broadcast()``. It does no authorization,
  storage, ordering or per-connection queueing, which makes it the ceiling
  for a Python server on this machine.

Both rooms are filled first (lophoc's join storm, one ``member_joined`` to
every member for every join, takes a while and is reported), each server is
warmed up, then the phases run ``--rounds`` times with the servers taking
turns, each run lasting ``--duration`` seconds:

``saturation``
    The publisher keeps ``--window`` messages in flight, where a message
    stops being in flight when *every* receiver has it (the workers publish
    that through shared memory). The server always has work queued, so the
    delivered frames per second is its fan-out capacity; latencies here
    include the queueing the window causes.
``fixed_rate``
    The publisher sends ``--rate`` messages per second on a schedule,
    whatever happens. At a rate both servers sustain, the latencies compare
    the servers at equal load.

Reported per phase, pooled over the rounds: messages and frames delivered
per second (frames summed over receivers), p50, p99 and max
publish-to-receive latency over every delivered frame (send time in the
message body, ``time.time_ns`` on both sides), frames lost, and the CPU
cores used by the server, the clients and other programs on the machine,
read from ``/proc``. The receivers run in ``--workers`` processes per server
with a lean client (``_wsclient.py``); on a machine with few cores they
compete with the server for CPU, and a warning says so when a worker was
busy over 90% of a phase, the machine was near full, or other programs took
a noticeable share. ``--profile`` samples the lophoc server with py-spy
during its first saturation run and prints where its CPU went.

Run from the repository root::

    .venv/bin/python benchmarks/fanout.py
    .venv/bin/python benchmarks/fanout.py --clients 1000 --duration 4 --rounds 1

The table is printed and written to ``benchmarks/results/fanout.json``.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import collections
import importlib.metadata
import os
import platform
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import uvicorn
from _deploy import SERVERS, Deployment, start_deployment, stop_deployment
from _load import (
    BODY,
    FIXED_RATE,
    PHASES,
    SATURATION,
    WARMUP,
    Publisher,
    Workers,
    cpu_seconds,
    machine_cpu,
    raise_open_files_limit,
    run_on_uvloop,
    save_report,
    start_workers,
    stop_workers,
    until_still,
)
from _options import add_servers, check_counts, check_servers
from _profile import start_profile, summarize_profile
from _report import PhaseRun, pool, print_table, ratios, warnings_for
from _wire import LOPHOC
from websockets.version import version as websockets_version

from client_sdk.protocol import MSGPACK_SUBPROTOCOL, Member, Role
from server.auth import mint

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "fanout.json"
HOST = "127.0.0.1"
ROOM = "bench-room"
TEACHER = Member(
    user="t0000",
    name="Teacher Nguyen",
    role=Role.TEACHER,
    school="school-0001",
    class_="10A",
)

#: How long the frame count must stay still for the join storm (one
#: ``member_joined`` to every member for every join) to count as over.
SETTLE_QUIET = 0.5
SETTLE_TIMEOUT = 120.0
#: A window phase gives up when no message completes for this long.
STALL_TIMEOUT = 5.0


# CPU ----------------------------------------------------------------------


def cpu_snapshot(server: Deployment, workers: Workers) -> dict[str, float]:
    """CPU seconds so far of the server, each worker, this process, the machine.

    The server's are those of all its nodes and their redis-server.
    """
    snapshot = {
        "server": sum(cpu_seconds(pid) for pid in server.pids),
        "publisher": cpu_seconds(os.getpid()),
    }
    for slot, process in enumerate(workers.processes):
        if process.pid is not None:
            snapshot[f"worker{slot}"] = cpu_seconds(process.pid)
    snapshot.update(machine_cpu())
    return snapshot


# Phases -------------------------------------------------------------------


async def run_window(
    publisher: Publisher, workers: Workers, phase: int, window: int, seconds: float
) -> tuple[int, bool]:
    """Publish with ``window`` messages in flight; returns the count and a stall."""
    sent = 0
    deadline = time.monotonic() + seconds
    progress_at = time.monotonic()
    last_done = workers.completed()
    while (now := time.monotonic()) < deadline:
        workers.expect_progress()
        done = workers.completed()
        if done != last_done:
            last_done, progress_at = done, now
        elif now - progress_at > STALL_TIMEOUT:
            return sent, True
        while publisher.sequence - done < window:
            publisher.publish(phase)
            sent += 1
        await workers.progress(min(deadline - now, STALL_TIMEOUT))
    return sent, False


async def run_rate(
    publisher: Publisher, phase: int, rate: float, seconds: float
) -> int:
    """Publish ``rate`` messages a second on a fixed schedule; returns the count."""
    interval = 1.0 / rate
    started = time.monotonic()
    count = max(1, int(rate * seconds))
    for index in range(count):
        # Late sends are not skipped: the offered load stays what was asked,
        # and a server that falls behind shows it in its latencies.
        delay = started + index * interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        publisher.publish(phase)
    return count


async def drain(workers: Workers, last: int, seconds: float) -> bool:
    """Wait until every receiver has message ``last``; False after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        workers.expect_progress()
        if workers.completed() >= last:
            return True
        if time.monotonic() > deadline:
            return False
        await workers.progress(deadline - time.monotonic())


async def run_phase(
    phase: int, target: Target, args: argparse.Namespace, seconds: float
) -> PhaseRun:
    """Run one phase against ``target`` and merge what its workers saw."""
    workers, publisher = target.workers, target.publisher
    started_ns, started = time.time_ns(), time.monotonic()
    before = cpu_snapshot(target.server, workers)
    stalled = False
    if phase == FIXED_RATE:
        sent = await run_rate(publisher, phase, args.rate, seconds)
    else:
        sent, stalled = await run_window(
            publisher, workers, phase, args.window, seconds
        )
    drained = await drain(workers, publisher.sequence, max(5.0, seconds))
    wall = time.monotonic() - started
    after = cpu_snapshot(target.server, workers)

    reports = [reply[1] for reply in await workers.ask(("report", phase))]
    latencies: array.array[int] = array.array("q")
    counts: list[int] = []
    closed: collections.Counter[int] = collections.Counter()
    for report in reports:
        latencies.frombytes(report["latencies_ns"])
        counts.extend(report["counts"])
        closed.update(report["closed"])
    last_ns = max(report["last_ns"] for report in reports)
    # The workers count from zero for each phase, so the next run of this
    # phase must not see this one's frames again.
    await workers.ask(("reset", phase))
    return PhaseRun(
        phase=PHASES[phase],
        messages=sent,
        frames=sum(report["frames"] for report in reports),
        seconds=max(1e-9, (last_ns - started_ns) / 1e9),
        wall=wall,
        latencies=latencies,
        counts=counts,
        closed=closed,
        stalled=stalled,
        drained=drained,
        cpu={name: after[name] - before[name] for name in after},
    )


# Targets ------------------------------------------------------------------


@dataclass
class Target:
    """One server under test with its room full of clients."""

    name: str
    server: Deployment
    workers: Workers
    publisher: Publisher
    receivers: int = 0
    join_errors: list[str] = field(default_factory=list)
    join_seconds: float = 0.0
    settled: bool = False
    runs: dict[str, list[PhaseRun]] = field(default_factory=dict)


async def open_target(
    name: str,
    args: argparse.Namespace,
    secret: str,
    workdir: Path,
    tokens: list[str],
    teacher: str,
) -> Target:
    """Start ``name``, connect the publisher and the receivers, let joins settle."""
    print(f"{name}: starting the server", flush=True)
    server = await start_deployment(name, args.clients, secret, workdir, TEACHER)
    workers = start_workers(args.workers)
    publisher = Publisher(ROOM, args.body_size, server.dialect)
    target = Target(name, server, workers, publisher)
    subprotocol = MSGPACK_SUBPROTOCOL if server.dialect == LOPHOC else None
    try:
        await target.publisher.open(HOST, server.ports[0], teacher)
        started = time.monotonic()
        target.receivers, target.join_errors = await workers.connect(
            server.ports, ROOM, tokens, subprotocol, server.dialect, HOST
        )
        joined = time.monotonic() - started
        target.settled = await until_still(
            workers.received, SETTLE_QUIET, SETTLE_TIMEOUT
        )
        target.join_seconds = time.monotonic() - started
        print(
            f"{name}: {target.receivers} of {args.clients} receivers joined in "
            f"{joined:.1f} s, join storm over after {target.join_seconds:.1f} s "
            f"({workers.received():,} frames)",
            flush=True,
        )
        if target.join_errors:
            print(f"{name}: join errors: {target.join_errors[:3]}", flush=True)
        if not target.receivers:
            raise RuntimeError(f"{name}: no receiver could join")
        await run_phase(WARMUP, target, args, args.warmup)
    except BaseException:
        await close_target(target)
        raise
    return target


async def close_target(target: Target) -> None:
    """Disconnect everyone and stop the server."""
    if target.publisher.client is not None:
        target.publisher.client.abort()
    await stop_workers(target.workers)
    await stop_deployment(target.server)


# Main ---------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=1000, help="receivers")
    parser.add_argument(
        "--duration", type=float, default=8.0, help="seconds of each phase run"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=10.0,
        help="messages per second of the fixed-rate phase (0 skips it)",
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="client worker processes per server"
    )
    parser.add_argument(
        "--window",
        type=int,
        default=4,
        help="messages in flight (not yet at every receiver) at saturation",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="times each phase runs per server, servers alternating",
    )
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="seconds of warm-up per server"
    )
    parser.add_argument(
        "--body-size", type=int, default=100, help="bytes of each broadcast body"
    )
    add_servers(parser, SERVERS, ("lophoc", "peer", "socketio"))
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample the lophoc server with py-spy during its first saturation run",
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    check_servers(parser, args, SERVERS)
    check_counts(parser, args, ("clients", "workers", "window", "rounds"))
    if args.duration <= 0:
        parser.error(f"--duration must be positive, got {args.duration}")
    if args.body_size < BODY.size:
        parser.error(f"--body-size must be at least {BODY.size}")
    return args


def mint_tokens(secret: str, clients: int) -> tuple[list[str], str]:
    """A join token for each receiver, and the publisher's."""
    students = [
        mint(
            secret,
            user=f"s{index:04d}",
            role=Role.STUDENT,
            rooms=[ROOM],
            name=f"Student {index:04d}",
            school=TEACHER.school,
            class_=f"{TEACHER.class_}{index % 4}",
        )
        for index in range(clients)
    ]
    teacher = mint(
        secret,
        user=TEACHER.user,
        role=TEACHER.role,
        rooms=[ROOM],
        name=TEACHER.name,
        school=TEACHER.school,
        class_=TEACHER.class_,
    )
    return students, teacher


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Fill each server's room, run the phases alternating servers, report."""
    secret = secrets.token_urlsafe(36)
    tokens, teacher = mint_tokens(secret, args.clients)
    workdir = Path(tempfile.mkdtemp(prefix="lophoc-fanout-"))
    profile_path = args.output.with_name("fanout-lophoc-profile.txt")
    profile: dict[str, Any] | None = None
    targets: list[Target] = []
    try:
        # Every room is filled before anything is measured, and the servers
        # then take turns, so a neighbour's load on a shared machine falls
        # on both rather than on whichever ran second.
        for name in args.servers:
            targets.append(
                await open_target(name, args, secret, workdir, tokens, teacher)
            )
        phases = [SATURATION] + ([FIXED_RATE] if args.rate > 0 else [])
        for round_index in range(args.rounds):
            order = targets if round_index % 2 == 0 else targets[::-1]
            for phase in phases:
                for target in order:
                    profiler = None
                    if (
                        args.profile
                        and target.name == "lophoc"
                        and phase == SATURATION
                        and round_index == 0
                    ):
                        profiler = await start_profile(
                            target.server.pid, args.duration, profile_path
                        )
                    run_ = await run_phase(phase, target, args, args.duration)
                    if profiler is not None:
                        await profiler.wait()
                        if profile_path.exists():
                            profile = summarize_profile(profile_path)
                    target.runs.setdefault(run_.phase, []).append(run_)
                    print(
                        f"round {round_index + 1} {target.name} {run_.phase}: "
                        f"{run_.frames / run_.seconds:,.0f} frames/s",
                        flush=True,
                    )
    finally:
        for target in targets:
            await close_target(target)
        shutil.rmtree(workdir, ignore_errors=True)

    results = [
        {
            "server": target.name,
            "receivers": target.receivers,
            "join_errors": target.join_errors,
            "join_settled": target.settled,
            "join_seconds": round(target.join_seconds, 2),
            "event_frame_bytes": target.publisher.event_bytes,
            "command_frame_bytes": target.publisher.command_bytes,
            "published": target.publisher.sequence,
            "acks": target.publisher.acks,
            "publisher_errors": dict(target.publisher.errors),
            "phases": {
                phase: pool(runs, target.receivers)
                for phase, runs in target.runs.items()
            },
        }
        for target in targets
    ]
    cores = os.cpu_count() or 1
    report: dict[str, Any] = {
        "benchmark": "fanout",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": cores,
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "versions": {
            "websockets": websockets_version,
            "uvicorn": uvicorn.__version__,
            "msgspec": msgspec.__version__,
            "python-socketio": importlib.metadata.version("python-socketio"),
        },
        "clients": args.clients,
        "workers": args.workers,
        "duration": args.duration,
        "rounds": args.rounds,
        "warmup": args.warmup,
        "rate": args.rate,
        "window": args.window,
        "body_size": args.body_size,
        "results": results,
        "ratios": ratios(results),
        "warnings": [
            warning
            for result in results
            for warning in warnings_for(result, cores, args.rate)
        ],
    }
    if profile is not None:
        report["profile"] = {"file": str(profile_path), **profile}
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table and write the JSON report."""
    args = parse_args(argv)
    raise_open_files_limit()
    report = run_on_uvloop(run(args))
    print_table(report)
    save_report(report, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
