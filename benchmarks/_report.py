"""Pooling, checking and printing the fan-out benchmark's measurements.

A phase runs once per round against each server; its runs are pooled here
into one result (frames over seconds, latencies merged before taking
quantiles, CPU seconds over wall seconds), checked for what would make the
numbers mislead, and printed as the table ``fanout.py`` shows.
"""

from __future__ import annotations

import array
import collections
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from _load import PHASES

#: A process busy for more than this share of a phase was likely the limit.
SATURATED_SHARE = 0.9


@dataclass
class PhaseRun:
    """One run of one phase against one server, before pooling."""

    phase: str
    messages: int
    frames: int
    #: From the first publish to the last frame received.
    seconds: float
    #: From the first publish to the end of the drain, for CPU shares.
    wall: float
    latencies: array.array[int]
    counts: list[int]
    closed: collections.Counter[int]
    stalled: bool
    drained: bool
    cpu: dict[str, float]


def cpu_shares(used: dict[str, float], wall: float) -> dict[str, float]:
    """Cores busy on average over ``wall``, and what no process of ours took."""
    shares = {name: seconds / wall for name, seconds in used.items()}
    ours = sum(
        share
        for name, share in shares.items()
        if name in ("server", "publisher") or name.startswith("worker")
    )
    # Interrupt time counts too: the kernel charges part of the loopback
    # work to the processes and part to no one, so only the sum of both
    # compares with what the processes were charged.
    shares["others"] = max(0.0, shares["machine"] + shares["interrupts"] - ours)
    return {name: round(share, 3) for name, share in shares.items()}


def quantile(ordered: Sequence[int], share: float) -> float:
    """The nearest-rank quantile of sorted ``ordered``, in milliseconds."""
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))
    return ordered[index] / 1e6


#: The shares at which a latency distribution is kept for plotting: every
#: percent, then the tail.
CURVE_SHARES = (*(n / 100 for n in range(1, 100)), 0.995, 0.999, 1.0)


def quantile_curve(ordered: Sequence[int]) -> list[list[float]]:
    """(share, milliseconds) pairs of sorted ``ordered``, for a plot."""
    if not ordered:
        return []
    return [[share, round(quantile(ordered, share), 3)] for share in CURVE_SHARES]


def pool(runs: list[PhaseRun], receivers: int) -> dict[str, Any]:
    """The runs of one phase against one server, as one result."""
    messages = sum(run.messages for run in runs)
    frames = sum(run.frames for run in runs)
    seconds = sum(run.seconds for run in runs)
    wall = sum(run.wall for run in runs)
    ordered = sorted(itertools.chain.from_iterable(run.latencies for run in runs))
    used: dict[str, float] = collections.defaultdict(float)
    for run in runs:
        for name, value in run.cpu.items():
            used[name] += value
    closed: collections.Counter[int] = collections.Counter()
    for run in runs:
        closed.update(run.closed)
    expected = sum(run.messages * receivers for run in runs)
    return {
        "messages": messages,
        "seconds": round(seconds, 3),
        "messages_per_s": round(messages / seconds, 1) if seconds else 0.0,
        "frames": frames,
        "frames_per_s": round(frames / seconds, 1) if seconds else 0.0,
        "frames_per_s_by_round": [round(run.frames / run.seconds, 1) for run in runs],
        # Less sensitive to other programs than throughput: what each
        # delivered frame cost the server, whoever else used the machine.
        "server_cpu_us_per_frame": round(used["server"] / frames * 1e6, 2)
        if frames
        else None,
        "p50_ms": round(quantile(ordered, 0.50), 3),
        "p99_ms": round(quantile(ordered, 0.99), 3),
        "max_ms": round(quantile(ordered, 1.0), 3),
        "latency_curve_ms": quantile_curve(ordered),
        "expected_frames": expected,
        "lost_frames": expected - frames,
        "receivers_incomplete": max(
            sum(1 for count in run.counts if count != run.messages) for run in runs
        ),
        "receivers_closed": {str(code): count for code, count in closed.items()},
        "stalled": any(run.stalled for run in runs),
        "drained": all(run.drained for run in runs),
        "cpu_cores": cpu_shares(used, wall),
    }


def warnings_for(result: dict[str, Any], cores: int, rate: float) -> list[str]:
    """What makes a server's numbers less than they seem."""
    name = result["server"]
    found = []
    if result["join_errors"]:
        found.append(f"{name}: {len(result['join_errors'])}+ receivers failed to join")
    if not result["join_settled"]:
        found.append(f"{name}: the join storm had not settled when measuring began")
    for phase, data in result["phases"].items():
        shares = data["cpu_cores"]
        saturated = [
            worker
            for worker, share in shares.items()
            if worker.startswith("worker") and share > SATURATED_SHARE
        ]
        if saturated:
            found.append(
                f"{name} {phase}: client {', '.join(saturated)} busy over "
                f"{SATURATED_SHARE:.0%} of the time; the load generator may be "
                "the limit"
            )
        busy = shares["machine"] + shares["interrupts"]
        if busy > cores * SATURATED_SHARE:
            found.append(
                f"{name} {phase}: the {cores} cores were {busy / cores:.0%} busy "
                f"(server {shares['server']:.2f}, others {shares['others']:.2f} "
                "cores); server and clients competed for CPU"
            )
        if shares["others"] > 0.25 or shares["steal"] > 0.1:
            found.append(
                f"{name} {phase}: {shares['others']:.2f} cores went to other "
                "programs or unattributed kernel work, and the hypervisor stole "
                f"{shares['steal']:.2f}; numbers are noisy"
            )
        if data["lost_frames"]:
            found.append(
                f"{name} {phase}: {data['lost_frames']} frames not delivered "
                f"({data['receivers_incomplete']} receivers incomplete; closed: "
                f"{data['receivers_closed'] or 'none'})"
            )
        if data["stalled"] or not data["drained"]:
            found.append(f"{name} {phase}: delivery stalled or did not drain in time")
        if phase == "fixed_rate" and data["messages_per_s"] < 0.95 * rate:
            found.append(
                f"{name} {phase}: delivered {data['messages_per_s']:.1f} of the "
                f"{rate:g} messages/s offered; its latencies are mostly queueing"
            )
    if result["publisher_errors"]:
        found.append(f"{name}: the publisher got errors {result['publisher_errors']}")
    if result["acks"] < result["published"]:
        found.append(
            f"{name}: {result['published']} messages published but only "
            f"{result['acks']} acknowledged"
        )
    return found


def ratio(ours: float, theirs: float) -> float | None:
    """``ours / theirs``, or None when undefined."""
    if not theirs or math.isnan(ours) or math.isnan(theirs):
        return None
    return round(ours / theirs, 3)


#: The pairs compared, (ours, theirs), when both ran.
PAIRS = (
    ("lophoc", "peer"),
    ("lophoc", "socketio"),
    ("lophoc-2", "lophoc"),
    ("lophoc-2", "peer"),
    ("lophoc-2", "socketio-2"),
    ("socketio-2", "socketio"),
)


def ratios(results: list[dict[str, Any]]) -> dict[str, float | None]:
    """Each pair's numbers, ours over theirs, for the phases both ran.

    Keys read ``ours/theirs phase measure``.
    """
    by_name = {result["server"]: result for result in results}
    found: dict[str, float | None] = {}
    for name, other in PAIRS:
        if name not in by_name or other not in by_name:
            continue
        for phase in PHASES[1:]:
            ours = by_name[name]["phases"].get(phase)
            theirs = by_name[other]["phases"].get(phase)
            if ours is None or theirs is None:
                continue
            key = f"{name}/{other} {phase}"
            if phase == "saturation":
                found[f"{key} frames/s"] = ratio(
                    ours["frames_per_s"], theirs["frames_per_s"]
                )
            found[f"{key} server us/frame"] = ratio(
                ours["server_cpu_us_per_frame"] or math.nan,
                theirs["server_cpu_us_per_frame"] or math.nan,
            )
            found[f"{key} p50"] = ratio(ours["p50_ms"], theirs["p50_ms"])
            found[f"{key} p99"] = ratio(ours["p99_ms"], theirs["p99_ms"])
    return found


def print_table(report: dict[str, Any]) -> None:
    """The results as a table on standard output."""
    print()
    print(
        f"one room, {report['clients']} receivers + 1 publisher; "
        f"{report['workers']} client workers per server, "
        f"{report['machine']['cpus']} CPUs, {report['rounds']} round(s) of "
        f"{report['duration']:g} s per phase"
    )
    header = (
        f"{'phase':<18} {'server':<10} {'msgs/s':>7} {'frames/s':>9} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'lost':>5} "
        f"{'us/frame':>8} {'server':>6} {'clients':>7} {'others':>6}"
    )
    print(header)
    print("-" * len(header))
    for phase in PHASES[1:]:
        for result in report["results"]:
            data = result["phases"].get(phase)
            if data is None:
                continue
            cores = data["cpu_cores"]
            clients = sum(
                share
                for name, share in cores.items()
                if name == "publisher" or name.startswith("worker")
            )
            if phase == "saturation":
                label = f"saturation w={report['window']}"
            else:
                label = f"fixed {report['rate']:g} msg/s"
            print(
                f"{label:<18} {result['server']:<10} "
                f"{data['messages_per_s']:>7,.1f} "
                f"{data['frames_per_s']:>9,.0f} {data['p50_ms']:>7.1f} "
                f"{data['p99_ms']:>7.1f} {data['max_ms']:>7.1f} "
                f"{data['lost_frames']:>5} "
                f"{data['server_cpu_us_per_frame'] or float('nan'):>8.1f} "
                f"{cores['server']:>6.2f} "
                f"{clients:>7.2f} {cores['others']:>6.2f}"
            )
    print(
        "us/frame: server CPU per delivered frame; server, clients: CPU cores "
        "busy on average; others: the rest of the machine's busy cores (other "
        "programs, kernel work charged to no process)"
    )
    print()
    for key, value in report["ratios"].items():
        shown = "n/a" if value is None else f"{value:.2f}"
        print(f"{key:<48} {shown}")
    for result in report["results"]:
        by_round = ", ".join(
            f"{value:,.0f}"
            for value in result["phases"]["saturation"]["frames_per_s_by_round"]
        )
        print(
            f"{result['server']}: event frame {result['event_frame_bytes']} B "
            f"(body {report['body_size']} B), command frame "
            f"{result['command_frame_bytes']} B; room filled in "
            f"{result['join_seconds']:.1f} s; saturation frames/s by round: "
            f"{by_round}"
        )
    for warning in report["warnings"]:
        print(f"WARNING: {warning}")
    profile = report.get("profile")
    if profile:
        print()
        print(
            f"py-spy, lophoc server during saturation ({profile['samples']} samples),"
            " top self time by package:"
        )
        for name, share in profile["self_by_package"][:10]:
            print(f"  {share:6.1%}  {name}")
        print("top self time by function:")
        for name, share in profile["self"][:12]:
            print(f"  {share:6.1%}  {name}")
