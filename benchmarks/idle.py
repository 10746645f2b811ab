"""Benchmark of idle connections: the server's memory for each one.

For each server in turn (one node of lophoc, the ``websockets`` peer, the
Socket.IO peer; see ``_deploy.py``), ``--clients`` clients connect and join
one room, a batch of ``--batch`` at a time with a pause between batches,
the way a school's classes arrive rather than all in the same millisecond.
Once the room is full and quiet, the benchmark waits ``--settle`` seconds
and reads the server's resident memory (``VmRSS`` in ``/proc``) again; the
growth over the memory it had before the first client, divided by the
clients connected, is the memory per idle connection. Each connection is
idle afterwards: lophoc and the peers send only their keepalives.

Run from the repository root::

    .venv/bin/python benchmarks/idle.py
    .venv/bin/python benchmarks/idle.py --clients 500 --servers lophoc,peer

The table is printed and written to ``benchmarks/results/idle.json``.
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

from _deploy import Deployment, start_deployment, stop_deployment
from _load import (
    Workers,
    cpu_seconds,
    raise_open_files_limit,
    run_on_uvloop,
    save_report,
    start_workers,
    stop_workers,
    until_still,
)
from _options import add_servers, check_counts, check_servers
from _wire import LOPHOC
from fanout import HOST, ROOM, TEACHER, mint_tokens

from client_sdk.protocol import MSGPACK_SUBPROTOCOL

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "idle.json"
SERVERS = ("lophoc", "peer", "socketio")
#: How long the frame count must stay still for the room to count as quiet.
QUIET = 1.0
QUIET_TIMEOUT = 120.0


def rss_bytes(pid: int) -> int:
    """The resident memory of process ``pid``, from /proc."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def open_files(pid: int) -> int:
    """How many descriptors process ``pid`` has open."""
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


async def quiet(workers: Workers) -> bool:
    """Wait until no frame has arrived for a while; False if that never came."""
    return await until_still(workers.received, QUIET, QUIET_TIMEOUT, 0.1)


async def fill(
    deployment: Deployment, workers: Workers, tokens: list[str], batch: int
) -> tuple[int, list[str]]:
    """Connect and join everyone, ``batch`` at a time; the count and errors."""
    subprotocol = MSGPACK_SUBPROTOCOL if deployment.dialect == LOPHOC else None
    errors: list[str] = []
    count = 0
    for start in range(0, len(tokens), batch):
        count, failed = await workers.connect(
            deployment.ports,
            ROOM,
            tokens[start : start + batch],
            subprotocol,
            deployment.dialect,
            HOST,
        )
        errors.extend(failed)
        # Let the server finish what the batch's joins started (lophoc tells
        # the room about its new members) before the next batch comes.
        await quiet(workers)
    return count, errors


async def measure(name: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """One server: its memory before and after the room fills."""
    secret = secrets.token_urlsafe(36)
    tokens, _ = mint_tokens(secret, args.clients)
    deployment = await start_deployment(name, args.clients, secret, workdir, TEACHER)
    workers = start_workers(args.workers)
    try:
        pid = deployment.pid
        # The server has started its loop and imported what it serves with;
        # the first connection would otherwise pay for lazy imports.
        await asyncio.sleep(args.settle)
        before = rss_bytes(pid)
        cpu_before = cpu_seconds(pid)
        started = time.monotonic()
        connected, errors = await fill(deployment, workers, tokens, args.batch)
        filled = time.monotonic() - started
        settled = await quiet(workers)
        await asyncio.sleep(args.settle)
        after = rss_bytes(pid)
        result: dict[str, Any] = {
            "server": name,
            "connected": connected,
            "errors": errors[:5],
            "settled": settled,
            "fill_seconds": round(filled, 1),
            "server_cpu_seconds_to_fill": round(cpu_seconds(pid) - cpu_before, 2),
            "rss_before_mb": round(before / 2**20, 1),
            "rss_after_mb": round(after / 2**20, 1),
            "open_files": open_files(pid),
            "bytes_per_connection": round((after - before) / connected)
            if connected
            else None,
        }
    finally:
        await stop_workers(workers)
        await stop_deployment(deployment)
    per = result["bytes_per_connection"]
    print(
        f"{name}: {connected} connected in {filled:.1f} s, RSS "
        f"{result['rss_before_mb']} -> {result['rss_after_mb']} MB, "
        f"{(per or 0) / 1024:.1f} KiB per connection",
        flush=True,
    )
    return result


def ratios(results: list[dict[str, Any]]) -> dict[str, float | None]:
    """lophoc's memory per connection over each peer's."""
    by_name = {result["server"]: result for result in results}
    ours = by_name.get("lophoc", {}).get("bytes_per_connection")
    found: dict[str, float | None] = {}
    for other in ("peer", "socketio"):
        theirs = by_name.get(other, {}).get("bytes_per_connection")
        if ours is not None and theirs:
            found[f"lophoc/{other} bytes per connection"] = round(ours / theirs, 3)
    return found


def print_table(report: dict[str, Any]) -> None:
    """The results as a table on standard output."""
    print()
    print(
        f"{report['clients']} idle clients joined to one room, "
        f"{report['batch']} at a time; {report['machine']['cpus']} CPUs"
    )
    header = (
        f"{'server':<10} {'connected':>9} {'RSS before':>10} {'RSS after':>9} "
        f"{'KiB/conn':>8} {'fds':>6} {'fill s':>6} {'cpu s':>6}"
    )
    print(header)
    print("-" * len(header))
    for result in report["results"]:
        per = result["bytes_per_connection"]
        print(
            f"{result['server']:<10} {result['connected']:>9} "
            f"{result['rss_before_mb']:>8.1f}MB {result['rss_after_mb']:>7.1f}MB "
            f"{(per or 0) / 1024:>8.1f} {result['open_files']:>6} "
            f"{result['fill_seconds']:>6.1f} "
            f"{result['server_cpu_seconds_to_fill']:>6.1f}"
        )
    print("RSS of the server process; KiB/conn: (after - before) / connected")
    for key, value in report["ratios"].items():
        print(f"{key:<40} {'n/a' if value is None else f'{value:.2f}'}")
    for result in report["results"]:
        if result["connected"] < report["clients"] or not result["settled"]:
            print(
                f"WARNING: {result['server']}: {result['connected']} of "
                f"{report['clients']} connected (errors: {result['errors'][:2]}), "
                f"settled: {result['settled']}"
            )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=5000, help="idle clients")
    parser.add_argument(
        "--batch", type=int, default=250, help="clients connecting at a time"
    )
    parser.add_argument("--workers", type=int, default=2, help="client processes")
    parser.add_argument(
        "--settle",
        type=float,
        default=3.0,
        help="seconds waited before each memory reading",
    )
    add_servers(parser, SERVERS)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    check_servers(parser, args, SERVERS)
    check_counts(parser, args, ("clients", "batch", "workers"))
    return args


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure each server in turn, one at a time."""
    workdir = Path(tempfile.mkdtemp(prefix="lophoc-idle-"))
    try:
        results = [await measure(name, args, workdir) for name in args.servers]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "benchmark": "idle",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count() or 1,
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "clients": args.clients,
        "batch": args.batch,
        "results": results,
        "ratios": ratios(results),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table and write the JSON report."""
    args = parse_args(argv)
    limit = raise_open_files_limit()
    # Each client holds a descriptor in a worker and one at the server.
    if limit < args.clients + 1000:
        print(
            f"the open files limit is {limit}: too low for {args.clients} clients",
            file=sys.stderr,
        )
        return 2
    report = run_on_uvloop(run(args))
    print_table(report)
    save_report(report, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
