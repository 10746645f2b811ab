"""Benchmark of a quiz burst: thousands of students answer one question at once.

``--students`` students (default 2,000) sit in one lesson room, linked from
several schools. The host opens a quiz question; every student answers it
once, at a moment drawn uniformly from the ``--spread`` seconds (default 1)
after the question's ``opens_at``, and waits for its ``ack``. About
``--resend`` of them (default 5%) send the same answer again, with the same
command id, as soon as the first ack arrives: a client that lost the ack
would do that, and the answer must still be stored once. The host then
closes the question and asks the next, ``--rounds`` times (default 3), and
the rounds are pooled.

Each row is one server, started as its own process, measured with the same
clients on the same machine:

``lophoc(sqlite)``
    ``lophoc serve`` with its default store, SQLite in the data directory
    with ``synchronous=FULL``: an ack means the answer is on disk.
``lophoc(redis)``
    the same with ``--store redis://``, on a redis-server started here
    without persistence (``--save "" --appendonly no``).
``lophoc(memory)`` (only when named in ``--servers``)
    the same with ``--store memory://``: answers are kept in the process
    only, so the difference to the rows above is what storing them costs.
``echo``
    a ``websockets.asyncio.server.serve`` server that sends every frame
    back. The clients send it the same join and answer frames, at the same
    moments, and take the echo of an answer as its ack. It stores and checks
    nothing: the floor for a Python WebSocket server on this machine.
``echo(uvicorn)`` (only when named in ``--servers``)
    the same echo as an ASGI application served the way lophoc is served:
    uvicorn with lophoc's frame protocol, each echo written straight to the
    connection as a session writes its acks. Between it and the echo is
    what the web server costs; between it and ``lophoc(memory)``, what
    lophoc's own work on an answer costs.

Reported per row: answers acknowledged, and for lophoc, stored exactly once
with the value sent (read back from the lesson report, as a teacher would);
answers per second from the first send to the last ack of each round;
p50, p99 and max send-to-ack latency; CPU seconds of the server (and
redis-server) per answer; CPU cores used by the server, the clients and
other programs during the bursts. Then the ratios lophoc/echo for p50, p99
and throughput. At 2,000 answers in one second the throughput is the
offered rate for any server that keeps up; the latencies and the CPU per
answer are what tell the servers apart.

The clients run in ``--workers`` processes with the lean client of
``_wsclient.py``, and answer lophoc's ``probe`` frames as a real client
does. Before the first round the room is filled ``--connect-batch``
students at a time and left to settle: each join reaches everyone already
there as a presence event, which costs more than a burst and is reported
apart. A warning is printed when a client worker was busy most of a burst,
sends were late, or the machine was full or shared: the clients and the
server share the cores, and the numbers are then a bound, not a measure.

The pieces: ``_answers_servers.py`` starts the servers (and redis-server)
and writes the lesson; ``_answers_clients.py`` holds the students, in their
worker processes, and the host; ``_answers_report.py`` pools the rounds,
checks them against the lesson report and prints the table. This module
reads the command line and runs each server's rounds in turn.

Run from the repository root::

    .venv/bin/python benchmarks/answers.py                  # about 1 minute
    .venv/bin/python benchmarks/answers.py --students 500 --servers echo
    .venv/bin/python benchmarks/answers.py --profile        # needs py-spy

The table is printed and written to ``benchmarks/results/answers.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import uvicorn
from _answers_clients import (
    ACK_TIMEOUT,
    JOIN_TIMEOUT,
    Host,
    Plan,
    Workers,
    start_workers,
    stop_workers,
)
from _answers_report import (
    Burst,
    all_stored_once,
    measure,
    print_table,
    ratios,
    shares,
    verify,
    warnings_for,
)
from _answers_servers import (
    ECHOES,
    LESSON_ID,
    ROOT,
    Server,
    http,
    lesson_file,
    start_server,
    student_tokens,
)
from _load import (
    cpu_seconds,
    machine_cpu,
    raise_open_files_limit,
    run_on_uvloop,
    save_report,
    until_still,
)
from _options import add_servers, check_counts, check_servers
from _profile import start_profile, summarize_profile
from websockets.version import version as websockets_version

from client_sdk.protocol import Role
from server.auth import mint

RESULTS = ROOT / "benchmarks" / "results" / "answers.json"
SERVERS = ("lophoc-sqlite", "lophoc-redis", "echo", "lophoc-memory", "echo-uvicorn")
#: Run unless ``--servers`` says otherwise: ``lophoc-memory`` stores nothing
#: that outlives the process and ``echo-uvicorn`` is lophoc's web server
#: alone; they are there to tell the store's and uvicorn's shares apart.
DEFAULT_SERVERS = SERVERS[:3]
LABELS = {
    "lophoc-sqlite": "lophoc(sqlite)",
    "lophoc-redis": "lophoc(redis)",
    "echo": "echo",
    "lophoc-memory": "lophoc(memory)",
    "echo-uvicorn": "echo(uvicorn)",
}

#: How long the received-frame count must stay still for the join storm
#: to count as over, and the most we wait for that.
SETTLE_QUIET = 0.5
SETTLE_TIMEOUT = 60.0
#: Answers sent this long after ``opens_at``: the server's clock and the
#: clients' are the same clock here, but a timer may fire a little early.
START_MARGIN_MS = 20
#: The echo server has no ``opens_at``; its burst starts this far ahead,
#: lophoc's default lead time, so the workers are as ready as for lophoc.
ECHO_LEAD_MS = 1500
#: How much longer than its own deadline a worker may take to report.
WORKER_GRACE = 30.0


# One server's run ----------------------------------------------------------


def cpu_snapshot(server: Server, workers: Workers) -> dict[str, float]:
    """CPU seconds so far of each process involved, and of the machine."""
    snapshot = {
        "server": cpu_seconds(server.pid),
        "store": cpu_seconds(server.redis_pid) if server.redis_pid else 0.0,
        "orchestrator": cpu_seconds(os.getpid()),
    }
    for slot, process in enumerate(workers.processes):
        if process.pid is not None:
            snapshot[f"worker{slot}"] = cpu_seconds(process.pid)
    snapshot.update(machine_cpu())
    return snapshot


async def fill(
    workers: Workers, port: int, people: list[tuple[str, str]], batch: int, lophoc: bool
) -> tuple[int, list[str]]:
    """Connect and join the students ``batch`` at a time, spread over workers."""
    joined = 0
    errors: list[str] = []
    count = len(workers.pipes)
    for first in range(0, len(people), batch):
        chunk = people[first : first + batch]
        async with asyncio.timeout(JOIN_TIMEOUT + WORKER_GRACE):
            replies = await workers.ask(
                [
                    ("connect", port, LESSON_ID, chunk[slot::count], lophoc)
                    for slot in range(count)
                ]
            )
        joined += sum(reply[1] for reply in replies)
        errors += [error for reply in replies for error in reply[2]]
    return joined, errors


async def settle(workers: Workers) -> bool:
    """Wait for the join storm to pass; False if it did not in time."""
    return await until_still(workers.frames, SETTLE_QUIET, SETTLE_TIMEOUT)


async def burst(
    server: Server, workers: Workers, host: Host, index: int, args: argparse.Namespace
) -> Burst:
    """Round ``index``: open a question and have every student answer it."""
    lophoc = server.name not in ECHOES
    if lophoc:
        opened = await host.ask(index)
        opens_at, number = opened.opens_at, opened.question.number
    else:
        opens_at, number = int(time.time() * 1000) + ECHO_LEAD_MS, index + 1
    start_ns = (opens_at + START_MARGIN_MS) * 1_000_000
    plan = Plan(args.seed, index, args.resend)
    workers.send(
        [("burst", start_ns, args.spread, LESSON_ID, number, plan)] * len(workers.pipes)
    )

    await asyncio.sleep(max(0.0, (start_ns - time.time_ns()) / 1e9))
    profiler = None
    profile_path = args.output.with_name(f"answers-{server.name}-profile.txt")
    if args.profile and lophoc and index == 0:
        profiler = await start_profile(server.pid, args.spread + 1.0, profile_path)
    before, started = cpu_snapshot(server, workers), time.monotonic()
    async with asyncio.timeout(args.spread + ACK_TIMEOUT + WORKER_GRACE):
        reports = [reply[1] for reply in await workers.collect()]
    after, seconds = cpu_snapshot(server, workers), time.monotonic() - started
    done = Burst(
        number,
        reports,
        {key: after[key] - before[key] for key in after},
        seconds,
        start_ns,
    )
    if profiler is not None:
        returncode = await profiler.wait()
        if not profile_path.exists():
            # py-spy may not be let to read another process's memory (ptrace
            # rules, containers): say so rather than print no profile.
            print(
                f"--profile: py-spy could not sample {LABELS[server.name]}"
                f" (exit code {returncode})",
                flush=True,
            )
        else:
            # Deep enough to reach lophoc's own functions under the
            # event loop and uvicorn frames that every sample shares.
            done.profile = {
                "file": str(profile_path),
                **summarize_profile(profile_path, top=60),
            }
    return done


async def run_server(
    name: str, args: argparse.Namespace, secret: str, workdir: Path
) -> dict[str, Any]:
    """Fill one server's room, run the burst, check the report; the result."""
    lophoc = name not in ECHOES
    print(f"{LABELS[name]}: starting", flush=True)
    server = await start_server(name, secret, workdir)
    workers = start_workers(args.workers)
    host = Host()
    result: dict[str, Any] = {"server": LABELS[name]}
    try:
        admin = mint(secret, user="bench-admin", role=Role.ADMIN, rooms=["x"])
        if lophoc:
            created = await asyncio.to_thread(
                http,
                "POST",
                server.port,
                "/api/lessons",
                admin,
                lesson_file(args.rounds).encode(),
            )
            await host.open(server.port, created["host"]["token"])
        people = student_tokens(secret, args.students)

        started = time.monotonic()
        frames_before = workers.frames()
        fill_before = cpu_snapshot(server, workers)
        joined, errors = await fill(
            workers, server.port, people, args.connect_batch, lophoc
        )
        connected = time.monotonic() - started
        settled = await settle(workers)
        fill_after = cpu_snapshot(server, workers)
        result.update(
            fill_cpu_seconds={
                key: round(fill_after[key] - fill_before[key], 2) for key in fill_after
            },
            students=joined,
            join_errors=errors,
            join_settled=settled,
            connect_seconds=round(connected, 2),
            fill_seconds=round(time.monotonic() - started, 2),
            fill_frames=workers.frames() - frames_before,
        )
        print(
            f"{LABELS[name]}: {joined} of {args.students} students joined in "
            f"{connected:.1f} s, room quiet after {result['fill_seconds']:.1f} s "
            f"({result['fill_frames']:,} frames to the students)",
            flush=True,
        )
        if errors:
            print(f"{LABELS[name]}: join errors: {errors[:3]}", flush=True)
        if not joined:
            raise RuntimeError(f"{name}: no student could join")

        bursts = [
            await burst(server, workers, host, index, args)
            for index in range(args.rounds)
        ]
        result.update(measure(bursts, args))
        profile = bursts[0].profile
        if profile is not None:
            result["profile"] = profile
        if lophoc:
            report = await asyncio.to_thread(
                http, "GET", server.port, f"/api/lessons/{LESSON_ID}/report", admin
            )
            result["stored"] = verify(report, bursts)
    finally:
        host.close()
        await stop_workers(workers)
        await server.stop()
        if server.stop_redis is not None:
            await server.stop_redis()
    return result


# Main ----------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--students", type=int, default=2000)
    parser.add_argument(
        "--spread", type=float, default=1.0, help="seconds over which answers come"
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="client worker processes"
    )
    parser.add_argument(
        "--resend",
        type=float,
        default=0.05,
        help="share of students who send their answer again after the ack",
    )
    parser.add_argument(
        "--connect-batch",
        type=int,
        default=200,
        help="students connecting and joining at a time",
    )
    add_servers(parser, SERVERS, DEFAULT_SERVERS)
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="questions asked in turn to the same room, results pooled",
    )
    parser.add_argument(
        "--seed", type=int, default=1, help="seed of who answers when and what"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample each lophoc server with py-spy during its burst",
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    check_servers(parser, args, SERVERS)
    check_counts(parser, args, ("students", "workers", "connect_batch", "rounds"))
    if args.spread <= 0:
        parser.error(f"--spread must be positive, got {args.spread}")
    if not 0 <= args.resend <= 1:
        parser.error(f"--resend must be between 0 and 1, got {args.resend}")
    return args


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run each server in turn and gather the report."""
    secret = secrets.token_urlsafe(36)
    workdir = Path(tempfile.mkdtemp(prefix="lophoc-answers-"))
    results = []
    try:
        # One server at a time: 2,000 idle lophoc connections still get
        # probes and pings, which would load the next server's burst.
        for name in args.servers:
            result = await run_server(name, args, secret, workdir)
            result["cpu_cores"] = shares(result)
            result["exactly_once"] = all_stored_once(result)
            result["server_us_per_answer"] = round(
                (result["cpu_seconds"]["server"] + result["cpu_seconds"]["store"])
                / max(1, result["acked"])
                * 1e6,
                1,
            )
            results.append(result)
            print(
                f"{result['server']}: {result['acked']} acked, p50 "
                f"{result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms",
                flush=True,
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    cores = os.cpu_count() or 1
    return {
        "benchmark": "answers",
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
        },
        "students": args.students,
        "spread": args.spread,
        "resend": args.resend,
        "workers": args.workers,
        "connect_batch": args.connect_batch,
        "rounds": args.rounds,
        "seed": args.seed,
        "results": results,
        "ratios": ratios(results),
        "warnings": [
            warning
            for result in results
            for warning in warnings_for(result, args.students, cores)
        ],
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table and write the JSON report.

    Exits with 1 when lophoc lost, refused or doubled an answer.
    """
    args = parse_args(argv)
    raise_open_files_limit()
    report = run_on_uvloop(run(args))
    print_table(report)
    save_report(report, args.output)
    failed = any(result["exactly_once"] is False for result in report["results"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
