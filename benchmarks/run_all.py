"""Every benchmark against its peers, and one table of the ratios.

Runs, each as its own process writing its JSON report to
``benchmarks/results/``:

``fanout``
    ``fanout.py`` on one node: lophoc, the ``websockets`` peer and the
    Socket.IO peer (``fanout.json``).
``fanout2``
    ``fanout.py`` across two nodes sharing a redis-server, receivers split
    over both, the publisher on the first: lophoc on two nodes beside
    lophoc on one, and Socket.IO on two nodes with its Redis manager
    (``fanout2.json``).
``redis``
    Redis's own ceiling for what the two-node rows ask of it:
    ``redis-benchmark`` sending ``PUBLISH`` of an event frame's size to a
    redis-server started here, with no subscriber and with two (one per
    node), as ``redis-cli`` processes (``redis.json``).
``answers``
    ``answers.py``: a quiz burst against a ``websockets`` echo server
    (``answers.json``).
``idle``
    ``idle.py``: memory per idle connection (``idle.json``).
``relay``
    ``relay.py``: the most listeners one speaker's audio reaches under 80%
    of a core, passed through against decoded and encoded again
    (``relay.json``).
``video``
    ``video_relay.py``: the viewers one core serves for one 720p camera
    forwarded as encoded frames (``video_relay.json``); it has no peer: the
    figure is read against the lesson sizes it must carry.

Then it prints one table, each ratio beside its target, and below it every
warning the benchmarks gave, those saying that a client worker or the
machine was saturated (the load generator was the bottleneck, and the
figure is a bound) first. It writes the table to ``run_all.json`` and draws
the latency distributions and the memory per connection as PNG files
beside it.

Run from the repository root::

    .venv/bin/python benchmarks/run_all.py                 # about 25 minutes
    .venv/bin/python benchmarks/run_all.py --quick         # small sizes, 6 min
    .venv/bin/python benchmarks/run_all.py --scenarios fanout,idle
    .venv/bin/python benchmarks/run_all.py --report-only   # table of the JSONs
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _answers_servers import HOST, start_redis, stop_process
from _plots import draw_plots

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
SCENARIOS = ("fanout", "fanout2", "redis", "answers", "idle", "relay", "video")
#: Reports whose warnings are printed under the table.
REPORTS = ("fanout", "fanout2", "answers", "idle", "relay")
#: Words of a warning that says the load generator, not the server, was
#: the limit.
SATURATION_WORDS = ("busy over", "% busy", "lower bound")
#: The size of lophoc's broadcast event frame in the fan-out benchmarks
#: (100-byte body), which is what a node publishes on Redis per message.
EVENT_BYTES = 273


def commands(args: argparse.Namespace) -> dict[str, list[str]]:
    """The command line of each benchmark run as a scenario."""
    python = sys.executable
    here = ROOT / "benchmarks"
    fanout = [
        "--clients",
        str(args.clients),
        "--duration",
        str(args.duration),
        "--rounds",
        str(args.rounds),
        "--rate",
        str(args.rate),
    ]
    return {
        "fanout": [
            python,
            str(here / "fanout.py"),
            *fanout,
            "--servers",
            "lophoc,peer,socketio",
            "--output",
            str(RESULTS / "fanout.json"),
        ],
        "fanout2": [
            python,
            str(here / "fanout.py"),
            *fanout,
            "--servers",
            "lophoc,lophoc-2,peer,socketio-2",
            "--output",
            str(RESULTS / "fanout2.json"),
        ],
        "answers": [
            python,
            str(here / "answers.py"),
            "--students",
            str(args.students),
            "--rounds",
            str(args.rounds + 1),
            # With the row that stores nothing and the echo through
            # uvicorn: what storage adds, and what the web server costs.
            "--servers",
            "lophoc-sqlite,lophoc-redis,lophoc-memory,echo-uvicorn,echo",
            "--output",
            str(RESULTS / "answers.json"),
        ],
        "idle": [
            python,
            str(here / "idle.py"),
            "--clients",
            str(args.idle_clients),
            "--output",
            str(RESULTS / "idle.json"),
        ],
        "relay": [
            python,
            str(here / "relay.py"),
            *(["--quick"] if args.quick else []),
            "--output",
            str(RESULTS / "relay.json"),
        ],
        # video_relay.py writes results/video_relay.json itself.
        "video": [
            python,
            str(here / "video_relay.py"),
            "--viewers",
            *(["4", "8", "16"] if args.quick else ["5", "10", "20", "40"]),
        ],
    }


async def redis_ceiling(requests: int) -> dict[str, Any]:
    """``redis-benchmark`` PUBLISH rates, with no subscriber and with two."""
    benchmark = shutil.which("redis-benchmark")
    cli = shutil.which("redis-cli")
    if benchmark is None or cli is None:
        raise RuntimeError("redis-benchmark and redis-cli must be on the PATH")
    workdir = Path(tempfile.mkdtemp(prefix="lophoc-redis-ceiling-"))
    redis, port = await start_redis(workdir)
    found: dict[str, Any] = {"payload_bytes": EVENT_BYTES, "requests": requests}
    try:
        for subscribers in (0, 2):
            listeners = [
                await asyncio.create_subprocess_exec(
                    cli,
                    "-h",
                    HOST,
                    "-p",
                    str(port),
                    "SUBSCRIBE",
                    "bench",
                    stdout=asyncio.subprocess.DEVNULL,
                )
                for _ in range(subscribers)
            ]
            await asyncio.sleep(0.5)
            # 50 clients, one command at a time each, as redis-benchmark's
            # default: a node's publisher waits for each PUBLISH's reply.
            run = await asyncio.create_subprocess_exec(
                benchmark,
                "-h",
                HOST,
                "-p",
                str(port),
                "-n",
                str(requests),
                "-c",
                "50",
                "--csv",
                "PUBLISH",
                "bench",
                "x" * EVENT_BYTES,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
            )
            output, _ = await run.communicate()
            for listener in listeners:
                await stop_process(listener)
            rows = list(csv.DictReader(io.StringIO(output.decode())))
            if not rows:
                raise RuntimeError(
                    f"redis-benchmark printed nothing usable: {output!r}"
                )
            found[f"publish_per_s_{subscribers}_subscribers"] = float(rows[0]["rps"])
            print(
                f"redis PUBLISH {EVENT_BYTES} B, {subscribers} subscribers: "
                f"{float(rows[0]['rps']):,.0f}/s",
                flush=True,
            )
    finally:
        await stop_process(redis)
        shutil.rmtree(workdir, ignore_errors=True)
    return found


def load(name: str) -> dict[str, Any] | None:
    """A benchmark's JSON report from results/, if it is there."""
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def phase(report: dict[str, Any] | None, server: str, name: str) -> dict[str, Any]:
    """One server's pooled results of one phase in a fan-out report."""
    for result in (report or {}).get("results", []):
        if result["server"] == server:
            found: dict[str, Any] = result["phases"].get(name, {})
            return found
    return {}


def row(
    scenario: str, measure: str, value: float | None, target: str, passed: bool | None
) -> dict[str, Any]:
    """One line of the summary."""
    return {
        "scenario": scenario,
        "measure": measure,
        "value": value,
        "target": target,
        "met": passed,
    }


def at_least(value: float | None, bound: float) -> bool | None:
    """``value >= bound``, or None when there is no value."""
    return None if value is None else value >= bound


def at_most(value: float | None, bound: float) -> bool | None:
    """``value <= bound``, or None when there is no value."""
    return None if value is None else value <= bound


def summary() -> list[dict[str, Any]]:
    """The ratios against the peers, from the reports in results/."""
    rows = []
    fanout = load("fanout")
    ratios = (fanout or {}).get("ratios", {})
    if fanout:
        for measure, key, bound, check in (
            ("frames/s at saturation", "lophoc/peer saturation frames/s", 0.8, 1),
            ("server CPU per frame", "lophoc/peer saturation server us/frame", 0, 0),
            ("p99 at a fixed rate", "lophoc/peer fixed_rate p99", 1.25, -1),
            ("p99 at saturation", "lophoc/peer saturation p99", 1.25, -1),
        ):
            value = ratios.get(key)
            target, met = "", None
            if check == 1:
                target, met = f">= {bound}", at_least(value, bound)
            elif check == -1:
                target, met = f"<= {bound}", at_most(value, bound)
            rows.append(
                row(
                    "fan-out, 1 node",
                    f"lophoc/websockets {measure}",
                    value,
                    target,
                    met,
                )
            )
        value = ratios.get("lophoc/socketio saturation frames/s")
        rows.append(
            row(
                "fan-out, 1 node",
                "lophoc/socketio frames/s at saturation",
                value,
                ">= 2",
                at_least(value, 2),
            )
        )
        value = ratios.get("lophoc/socketio fixed_rate p99")
        rows.append(
            row(
                "fan-out, 1 node",
                "lophoc/socketio p99 at a fixed rate",
                value,
                "",
                None,
            )
        )
    fanout2 = load("fanout2")
    ratios2 = (fanout2 or {}).get("ratios", {})
    if fanout2:
        value = ratios2.get("lophoc-2/lophoc saturation frames/s")
        rows.append(
            row(
                "fan-out, 2 nodes",
                "lophoc 2 nodes / 1 node frames/s",
                value,
                ">= 0.9",
                at_least(value, 0.9),
            )
        )
        for measure, key, bound, check in (
            ("frames/s at saturation", "lophoc-2/peer saturation frames/s", 0.8, 1),
            ("p99 at a fixed rate", "lophoc-2/peer fixed_rate p99", 1.25, -1),
        ):
            value = ratios2.get(key)
            rows.append(
                row(
                    "fan-out, 2 nodes",
                    f"lophoc 2 nodes / websockets 1 node {measure}",
                    value,
                    f">= {bound}" if check == 1 else f"<= {bound}",
                    at_least(value, bound) if check == 1 else at_most(value, bound),
                )
            )
        value = ratios2.get("lophoc-2/socketio-2 saturation frames/s")
        rows.append(
            row(
                "fan-out, 2 nodes",
                "lophoc/socketio frames/s, 2 nodes",
                value,
                ">= 2",
                at_least(value, 2),
            )
        )
        value = ratios2.get("lophoc-2/lophoc fixed_rate p99")
        rows.append(
            row(
                "fan-out, 2 nodes",
                "lophoc 2 nodes / 1 node p99 at a fixed rate",
                value,
                "",
                None,
            )
        )
    redis = load("redis")
    if redis and fanout2:
        messages = phase(fanout2, "lophoc-2", "saturation").get("messages_per_s")
        ceiling = redis.get("publish_per_s_2_subscribers")
        value = round(messages / ceiling, 4) if messages and ceiling else None
        rows.append(
            row(
                "fan-out, 2 nodes",
                "lophoc 2-node messages/s / redis PUBLISH/s (2 subscribers)",
                value,
                "",
                None,
            )
        )
    answers = load("answers")
    for name, found in (answers or {}).get("ratios", {}).items():
        value = found.get("p99")
        # A row that stores nothing only shows what storing costs the
        # others; the echo through uvicorn, what the web server costs.
        stores = name not in ("lophoc(memory)", "echo(uvicorn)")
        rows.append(
            row(
                "answer burst",
                f"{name}/echo p99",
                value,
                "<= 1.5" if stores else "",
                at_most(value, 1.5) if stores else None,
            )
        )
        value = found.get("cpu_per_answer")
        if value is not None:
            rows.append(
                row(
                    "answer burst",
                    f"{name}/echo server CPU per answer",
                    value,
                    "",
                    None,
                )
            )
    for result in (answers or {}).get("results", []):
        stored = result.get("stored")
        if stored is None:
            continue
        # Sent but not acknowledged and stored exactly once with its value.
        lost = result["sent"] - stored["once"]
        rows.append(
            row(
                "answer burst",
                f"{result['server']} answers lost (not stored exactly once)",
                lost,
                "0",
                bool(result["exactly_once"]),
            )
        )
    idle = load("idle")
    for key, value in (idle or {}).get("ratios", {}).items():
        limit = 1.2 if "peer" in key else None
        rows.append(
            row(
                "idle connections",
                key.replace("peer", "websockets"),
                value,
                f"<= {limit}" if limit else "",
                at_most(value, limit) if limit else None,
            )
        )
    relay = load("relay")
    if relay:
        value = relay.get("ratio_max_listeners")
        kind = relay.get("ratio_is")
        extrapolated = relay.get("ratio_extrapolated_max_listeners")
        # relay.py judges a bound or an estimate by the extrapolated ratio.
        met = relay.get("target_met", at_least(value, 5))
        rows.append(
            row(
                "speaking relay",
                "passthrough/reencode max listeners per core"
                + ("" if kind in (None, "measured") else f" ({kind})"),
                value,
                ">= 5",
                met if extrapolated is None else None,
            )
        )
        if extrapolated is not None:
            rows.append(
                row(
                    "speaking relay",
                    "  the same, extrapolated from CPU per listener",
                    extrapolated,
                    ">= 5",
                    met,
                )
            )
        paths = relay["paths"]
        if {"passthrough", "reencode"} <= set(paths):
            for quantile in ("p50", "p99"):
                ours = paths["passthrough"][f"latency_ms_{quantile}"]
                theirs = paths["reencode"][f"latency_ms_{quantile}"]
                rows.append(
                    row(
                        "speaking relay",
                        f"passthrough/reencode added latency {quantile}",
                        round(ours / theirs, 3) if ours and theirs else None,
                        "",
                        None,
                    )
                )
    video = load("video_relay")
    if video:
        fit = video.get("fit")
        per_core = (1 - fit["base_cores"]) / fit["cores_per_viewer"] if fit else None
        passing = [t for t in video["trials"] if t["passed"]]
        rows.append(
            row(
                "video relay",
                "viewers per core, one 720p camera, pass-through (fit)",
                round(per_core) if per_core else None,
                "",
                None,
            )
        )
        rows.append(
            row(
                "video relay",
                "  most viewers in a trial with < 1% frames lost",
                max((t["viewers"] for t in passing), default=None),
                "",
                None,
            )
        )
    return rows


def benchmark_warnings() -> tuple[list[str], int]:
    """The warnings saying that the clients or the machine were the limit.

    Also how many other warnings the reports hold (other programs' load,
    mostly), which their own tables print.
    """
    found = [
        f"{name}: {warning}"
        for name in REPORTS
        for warning in (load(name) or {}).get("warnings", [])
    ]
    saturated = [w for w in found if any(s in w for s in SATURATION_WORDS)]
    return saturated, len(found) - len(saturated)


def print_summary(rows: list[dict[str, Any]]) -> None:
    """The summary as a table."""
    print()
    header = f"{'scenario':<17} {'ratio':<64} {'value':>7} {'target':>7}  met"
    print(header)
    print("-" * len(header))
    for line in rows:
        value = "n/a" if line["value"] is None else f"{line['value']:.3g}"
        met = {True: "yes", False: "NO", None: ""}[line["met"]]
        print(
            f"{line['scenario']:<17} {line['measure']:<64} {value:>7} "
            f"{line['target']:>7}  {met}"
        )
    notes, others = benchmark_warnings()
    if notes:
        print()
    for note in notes:
        print(f"warning: {note}")
    if others:
        print(f"and {others} other warnings in the reports (noise from other load)")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated, run in this order: {', '.join(SCENARIOS)}",
    )
    parser.add_argument("--clients", type=int, default=2000, help="fan-out room size")
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--rate",
        type=float,
        default=5.0,
        help="fan-out messages/s of the fixed-rate phase (10,000 frames/s to"
        " 2,000 clients; fanout.py's own default of 10 is sized for 1,000)",
    )
    parser.add_argument("--students", type=int, default=2000)
    parser.add_argument("--idle-clients", type=int, default=5000)
    parser.add_argument("--publishes", type=int, default=200_000)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="200 clients, 2 s phases, one round, 1,000 idle: to try the harness",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: summarize and plot the JSON reports already there",
    )
    args = parser.parse_args(argv)
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if set(args.scenarios) - set(SCENARIOS):
        parser.error(f"--scenarios takes some of {', '.join(SCENARIOS)}")
    if args.quick:
        args.clients, args.duration, args.rounds = 200, 2.0, 1
        args.students, args.idle_clients, args.publishes = 300, 1000, 50_000
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the scenarios, then print and write the summary and the plots."""
    args = parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    failed = []
    if not args.report_only:
        lines = commands(args)
        for scenario in args.scenarios:
            print(f"\n=== {scenario} ===", flush=True)
            if scenario == "redis":
                found = asyncio.run(redis_ceiling(args.publishes))
                (RESULTS / "redis.json").write_text(json.dumps(found, indent=2) + "\n")
                continue
            # A scenario that fails leaves the others to run.
            if subprocess.run(lines[scenario], cwd=ROOT, check=False).returncode:
                failed.append(scenario)
    rows = summary()
    print_summary(rows)
    report = {
        "benchmark": "run_all",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "failed": failed,
        "summary": rows,
        "plots": [str(path) for path in draw_plots(RESULTS)],
    }
    (RESULTS / "run_all.json").write_text(json.dumps(report, indent=2) + "\n")
    for path in report["plots"]:
        print(f"plot: {path}")
    if failed:
        print(f"WARNING: these scenarios exited with an error: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
