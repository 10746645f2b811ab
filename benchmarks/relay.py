"""Benchmark of speaker forwarding: Opus pass-through against decode and re-encode.

The question, for one speaker and N listeners on one node: how many
listeners does each way of forwarding hold while the server stays under 80%
of one core and the listeners lose under 1% of the frames, and how much
latency does each add? Two servers, measured in turn by the same clients:

``passthrough``
    :class:`media.relay.MediaRoom`: the speaker's Opus packets go to every
    listener as they came; the speaker is decoded once, on a worker thread,
    for the voice-activity figure.
``reencode``
    The usual aiortc SFU: the speaker is decoded once and shared through
    :class:`aiortc.contrib.media.MediaRelay`; each listener's sender encodes
    it to Opus again.

For each path a search runs trials (:mod:`_relay_trial`), each with a fresh
server, the speaker in a client process of its own and the listeners in
``--listener-processes`` others (:mod:`_relay_peers`). A trial connects
everyone, waits ``--warmup`` seconds and measures ``--duration`` seconds:
the server's CPU (its process, every thread), the frames the listeners
received against those the speaker sent, and the latency of the marks the
speaker's tone carries, from the speaker's side to the first
``--probes`` listeners, which decode. A trial passes when the server used
under ``--cpu-limit`` cores, the listeners lost under ``--loss-limit`` of
the frames, and the frames were not late (see :func:`failures`).

The search starts at ``--latency-listeners`` listeners, whose trial lasts
``--latency-duration`` seconds and gives the latency reported, then grows at
most fourfold a step towards where the CPU per listener measured so far
says the limit is, and once one trial passed and a larger one failed,
narrows the gap: at the point where the server's CPU crosses the limit on
the line through the two trials around it, or halfway when the larger one
failed for lost frames. It stops when the gap is within 5% or after
``--trials`` trials. A trial that lost frames or fell behind under the CPU
limit while other programs kept more than a quarter of a core busy is run
again, at most ``--reruns`` times a path, and kept apart in the report.
Before each trial the benchmark waits, at most ``--quiet-wait`` seconds,
for other programs to leave the machine that idle.

The clients share the machine's cores with the server. A path whose
largest failing trial lost frames while the machine or a listener process
was saturated, with the server itself under the limit, was held back by its
clients: its figure is then a lower bound, printed with the count the
server's CPU per listener extrapolates to, labelled as such, and the ratio
of the two maxima is printed as a bound (``>=`` or ``<=``), or as an
estimate (``~``) when both are lower bounds, beside the ratio of the
extrapolated figures. The server's CPU is its own process's CPU time,
whatever else the machine runs.

Run from the repository root::

    .venv/bin/python benchmarks/relay.py                  # about 5 minutes
    .venv/bin/python benchmarks/relay.py --quick          # about 2 minutes

The table is printed and written to ``benchmarks/results/relay.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _load import run_on_uvloop, save_report
from _relay_trial import (
    PATHS,
    BenchmarkError,
    Clients,
    Trial,
    machine_busy,
    run_trial,
)

RESULTS = Path(__file__).resolve().parent / "results" / "relay.json"

#: A listener process busy more than this share of one core, or the machine
#: more than this share of all of them, is where the clients' limit is.
SATURATED = 0.9
MACHINE_SATURATED = 0.95
#: CPU cores of other programs (and of the kernel, charged to none) above
#: which the numbers are noisy enough to say so.
OTHERS_NOTICEABLE = 0.25
#: How a ratio of two maxima reads when one of them is a lower bound: a
#: larger pass-through figure could only raise it, a larger re-encoding one
#: only lower it. Of two lower bounds it is an estimate.
RATIO_SIGNS = {"at least": ">=", "at most": "<=", "both lower bounds": "~"}
#: Listeners per core that pass-through should reach over re-encoding.
TARGET_RATIO = 5
#: The search stops when the gap between passing and failing is this share.
PRECISION = 0.05
#: Growth targets this much past where the CPU per listener points, so that
#: the first trial over the limit is near it.
OVERSHOOT = 1.15


#: The numeric flags: name, type, default, meaning.
FLAGS: tuple[tuple[str, type, float, str], ...] = (
    ("--trials", int, 8, "trials per path at most"),
    ("--duration", float, 6.0, "seconds measured a trial"),
    ("--warmup", float, 1.5, "seconds before measuring"),
    ("--latency-listeners", int, 4, "listeners, first trial"),
    ("--latency-duration", float, 10.0, "its seconds"),
    ("--probes", int, 4, "listeners that decode, for marks"),
    ("--max-listeners", int, 320, "the search's ceiling"),
    ("--cpu-limit", float, 0.8, "server cores"),
    ("--loss-limit", float, 0.01, "share of frames lost"),
    ("--late-limit", float, 0.2, "median latency, seconds"),
    ("--quiet-wait", float, 5.0, "seconds, before a trial"),
    ("--reruns", int, 3, "noisy failed trials run again"),
    ("--listener-processes", int, 2, "client processes holding the listeners"),
)


def failures(trial: Trial, args: argparse.Namespace) -> list[str]:
    """The limits a trial broke: ``cpu``, ``lost``, ``behind``; none if it passed.

    ``behind`` is a server that lost nothing yet delivered late: the probes'
    median latency over ``--late-limit``, or more frames received than were
    due, which is a backlog being worked off. Either way packets waited in
    the server's socket buffer, where lophoc's relay cannot see their age to
    drop them.
    """
    broke = []
    if trial.server_cores >= args.cpu_limit:
        broke.append("cpu")
    if trial.loss >= args.loss_limit:
        broke.append("lost")
    median = quantile(trial.latencies, 0.5)
    if trial.surplus >= args.loss_limit or (
        median is not None and median > args.late_limit
    ):
        broke.append("behind")
    return broke


def kept_up(trial: Trial, args: argparse.Namespace) -> bool:
    """Whether the listeners got every frame in time, whatever the CPU used."""
    return not set(failures(trial, args)) & {"lost", "behind"}


@dataclass
class Search:
    """The trials of one path and what they say."""

    path: str
    args: argparse.Namespace
    trials: list[Trial] = field(default_factory=list)
    #: Failed trials run again because other programs were busy meanwhile.
    noisy: list[Trial] = field(default_factory=list)
    #: Why the search stopped.
    stopped: str = ""

    def passes(self, trial: Trial) -> bool:
        """Under the CPU limit, under the loss limit, and not behind."""
        return not failures(trial, self.args)

    def best(self) -> Trial | None:
        """The passing trial with the most listeners."""
        passed = [t for t in self.trials if self.passes(t)]
        return max(passed, key=lambda t: t.listeners, default=None)

    def first_failure_above(self) -> Trial | None:
        """The failing trial with the fewest listeners above the best."""
        best = self.best()
        floor = best.listeners if best else 0
        failed = [t for t in self.trials if not self.passes(t) and t.listeners > floor]
        return min(failed, key=lambda t: t.listeners, default=None)

    def line(self) -> tuple[float, float] | None:
        """Server cores against listeners, over the trials that kept up.

        A trial over the CPU limit still measures the CPU a listener costs
        if every frame went out; one that fell behind does not.
        """
        return fit([t for t in self.trials if kept_up(t, self.args)])


def fit(trials: Sequence[Trial]) -> tuple[float, float] | None:
    """Server cores = fixed + per_listener * N, least squares over ``trials``.

    With one trial the fixed part is taken as nil, which overstates the cost
    per listener and so understates the listeners a limit allows.
    """
    points = sorted({t.listeners: t.server_cores for t in trials}.items())
    if not points:
        return None
    if len(points) == 1:
        n, cores = points[0]
        return 0.0, cores / n
    mean_n = sum(n for n, _ in points) / len(points)
    mean_c = sum(c for _, c in points) / len(points)
    spread = sum((n - mean_n) ** 2 for n, _ in points)
    slope = sum((n - mean_n) * (c - mean_c) for n, c in points) / spread
    if slope <= 0:
        return 0.0, mean_c / mean_n
    return mean_c - slope * mean_n, slope


def at_limit(line: tuple[float, float], limit: float) -> float:
    """Listeners at which ``line`` (fixed, per listener) reaches ``limit``."""
    fixed, per_listener = line
    return (limit - fixed) / per_listener


def next_count(search: Search, args: argparse.Namespace) -> int | None:
    """How many listeners the next trial should have; None to stop."""
    best = search.best()
    over = search.first_failure_above()
    if best is None:
        # Even the first trial failed: look below it.
        smallest = min(t.listeners for t in search.trials)
        if smallest == 1:
            search.stopped = "failed with one listener"
            return None
        return smallest // 2
    if over is None:
        if best.listeners >= args.max_listeners:
            search.stopped = f"passed at --max-listeners {args.max_listeners}"
            return None
        line = search.line()
        target = best.listeners * 2
        if line is not None:
            target = math.ceil(OVERSHOOT * at_limit(line, args.cpu_limit))
        # At least a step the search would not stop at, at most fourfold.
        least = best.listeners + max(1, math.ceil(2 * PRECISION * best.listeners))
        ceiling: int = args.max_listeners
        return min(max(least, min(target, 4 * best.listeners)), ceiling)

    low, high = best.listeners, over.listeners
    if high - low <= max(1, math.ceil(PRECISION * low)):
        search.stopped = "converged"
        return None
    middle = (low + high) / 2
    if over.server_cores >= args.cpu_limit > best.server_cores:
        # The CPU grows almost in a line with the listeners: aim where the
        # line through the two trials crosses the limit, kept off the ends
        # so that a curve that bends still narrows the gap.
        share = (args.cpu_limit - best.server_cores) / (
            over.server_cores - best.server_cores
        )
        middle = low + share * (high - low)
    margin = max(1, (high - low) // 4)
    return round(min(max(middle, low + margin), high - margin))


async def wait_for_quiet(args: argparse.Namespace) -> float:
    """Wait until other programs leave the machine nearly idle; their cores.

    Between trials the benchmark's own processes are idle, so what keeps the
    machine busy then is other programs. Waits at most ``--quiet-wait``
    seconds, then goes on whatever they do.
    """
    deadline = time.monotonic() + args.quiet_wait
    while True:
        busy, idle = machine_busy()
        await asyncio.sleep(1.0)
        busy_after, idle_after = machine_busy()
        spent = busy_after - busy
        cores: float = args.cores * spent / (spent + idle_after - idle)
        if cores <= OTHERS_NOTICEABLE or time.monotonic() >= deadline:
            return cores


async def search_path(clients: Clients, path: str, args: argparse.Namespace) -> Search:
    """Run the trials of one path, printing each."""
    search = Search(path, args)
    listeners: int | None = args.latency_listeners
    while listeners is not None:
        if len(search.trials) >= args.trials:
            search.stopped = f"--trials {args.trials} reached"
            break
        first = not search.trials
        busy = await wait_for_quiet(args)
        if busy > OTHERS_NOTICEABLE:
            print(f"{'':<12}other programs use {busy:.2f} cores: going on", flush=True)
        trial = await run_trial(
            clients,
            path,
            listeners,
            probes=args.probes,
            warmup=args.warmup,
            duration=args.latency_duration if first else args.duration,
        )
        print(_trial_line(trial, args), flush=True)
        # On a shared machine another program's burst can starve the server
        # or the listeners for a moment: frames lost or late then say little
        # of the path, so the same trial runs again, a bounded number of
        # times. The server's own CPU time is its own, noisy or not.
        noisy = others(trial, args.cores) > OTHERS_NOTICEABLE
        broke = failures(trial, args)
        late = "cpu" not in broke and not kept_up(trial, args)
        if noisy and late and len(search.noisy) < args.reruns:
            search.noisy.append(trial)
            print(f"{'':<12}other programs were busy: running it again", flush=True)
            continue
        search.trials.append(trial)
        listeners = next_count(search, args)
    return search


def quantile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile by nearest rank; None without values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def held_back(trial: Trial, args: argparse.Namespace) -> str | None:
    """Why a failing trial says nothing of the server's limit, if it does not.

    That is when it lost frames or fell behind with the server under the
    CPU limit while a listener process, or the whole machine, was full: the
    server then waited for a core, or the listeners could not read what it
    sent.
    """
    if failures(trial, args) in ([], ["cpu"]) or "cpu" in failures(trial, args):
        return None
    if max(trial.listener_cores) > SATURATED:
        return (
            f"a listener process was busy {max(trial.listener_cores):.0%} of a"
            f" core at {trial.listeners} listeners"
        )
    if trial.machine_busy > MACHINE_SATURATED:
        return (
            f"the machine was {trial.machine_busy:.0%} busy at"
            f" {trial.listeners} listeners (clients"
            f" {trial.speaker_cores + sum(trial.listener_cores):.2f} cores, other"
            f" programs {others(trial, args.cores):.2f})"
        )
    return None


def others(trial: Trial, cores: int) -> float:
    """CPU cores busy in neither the server nor the clients."""
    ours = trial.server_cores + trial.speaker_cores + sum(trial.listener_cores)
    return max(0.0, trial.machine_busy * cores - ours)


def summarize(search: Search, args: argparse.Namespace) -> dict[str, Any]:
    """The path's figures for the table: the most listeners and the rest."""
    best = search.best()
    over = search.first_failure_above()
    line = search.line()
    first = search.trials[0]
    latencies = first.latencies

    # The server's limit was not reached when the search ran out of
    # listeners, or when what failed above the best was the clients.
    if best is None:
        bound = None
    elif over is None:
        bound = f"no trial failed ({search.stopped})"
    else:
        bound = held_back(over, args)
    # Where the largest passing trial's CPU per listener reaches the limit.
    # Its fixed part (the speaker's connection and decoder) counts as if it
    # grew with the listeners, which understates the figure a little, the
    # same way for both paths; the fitted line would not, but a few noisy
    # trials close together can tilt it far.
    extrapolated = None
    if bound is not None and best is not None and best.server_cores > 0:
        extrapolated = math.floor(args.cpu_limit * best.listeners / best.server_cores)

    return {
        "max_listeners": best.listeners if best else 0,
        "lower_bound_because": bound,
        "extrapolated_max_listeners": extrapolated,
        "server_cores_at_max": round(best.server_cores, 3) if best else None,
        "loss_at_max": round(best.loss, 4) if best else None,
        "cpu_ms_per_listener_second_at_max": (
            round(1000 * best.server_cores / best.listeners, 2) if best else None
        ),
        "fit_fixed_cores": round(line[0], 3) if line else None,
        "fit_cpu_ms_per_listener_second": round(1000 * line[1], 2) if line else None,
        "first_failure_listeners": over.listeners if over else None,
        "first_failure_broke": failures(over, args) if over else None,
        "latency_listeners": first.listeners,
        "latency_ms_p50": _ms(quantile(latencies, 0.5)),
        "latency_ms_p99": _ms(quantile(latencies, 0.99)),
        "latency_ms_max": _ms(max(latencies, default=None)),
        "latency_samples": len(latencies),
        "latency_trial_passed": search.passes(first),
        "latency_ms_p50_at_max": _ms(quantile(best.latencies, 0.5)) if best else None,
        "latency_ms_p99_at_max": _ms(quantile(best.latencies, 0.99)) if best else None,
        "search_stopped": search.stopped,
    }


def warnings(
    searches: Sequence[Search], summaries: dict[str, Any], args: argparse.Namespace
) -> list[str]:
    """What makes a figure of this run less than a measure of the server."""
    notes: list[str] = []
    for search in searches:
        for t in search.trials:
            where = f"{search.path} at {t.listeners} listeners"
            if t.machine_busy > MACHINE_SATURATED:
                notes.append(
                    f"{where}: the machine was {t.machine_busy:.0%} busy, the"
                    " clients competed with the server for CPU"
                )
            elif max(t.listener_cores) > SATURATED:
                notes.append(
                    f"{where}: a listener process was busy"
                    f" {max(t.listener_cores):.0%} of a core"
                )
            if others(t, args.cores) > OTHERS_NOTICEABLE:
                notes.append(
                    f"{where}: other programs used {others(t, args.cores):.2f} cores"
                )
            if t.speaker_rate < 48:
                notes.append(
                    f"{where}: the speaker sent {t.speaker_rate:.1f} frames/s, not 50"
                )
            if t.unmatched_marks:
                notes.append(
                    f"{where}: {t.unmatched_marks} marks heard matched none sent"
                    " (latency over 1.5 s)"
                )
        summary = summaries[search.path]
        if summary["lower_bound_because"]:
            notes.append(
                f"{search.path}: the server did not reach {args.cpu_limit} cores"
                f" before frames were lost, because"
                f" {summary['lower_bound_because']}: its"
                f" {summary['max_listeners']} listeners are a lower bound, limited"
                " by the client processes or other programs sharing the machine,"
                " not by the server. Its CPU per"
                " listener extrapolates to"
                f" {summary['extrapolated_max_listeners']} listeners at"
                f" {args.cpu_limit} cores (extrapolated, not measured)"
            )
        if not summary["latency_trial_passed"]:
            notes.append(
                f"{search.path}: the latency trial at"
                f" {summary['latency_listeners']} listeners was already over"
                " the limits; its latency is that of an overloaded server"
            )
    return notes


def compare(summaries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The ratio of the paths' maxima, what kind of figure it is, the target."""
    found: dict[str, Any] = {
        "ratio_max_listeners": None,
        "ratio_is": None,
        "ratio_extrapolated_max_listeners": None,
        "target_ratio": TARGET_RATIO,
        "target_met": None,
    }
    if set(summaries) != set(PATHS):
        return found
    p, r = summaries["passthrough"], summaries["reencode"]
    bounds = (bool(p["lower_bound_because"]), bool(r["lower_bound_because"]))
    # Of two lower bounds the ratio is only an estimate: printed with a
    # tilde, beside the ratio of the extrapolated maxima.
    kind = {
        (False, False): "measured",
        (True, False): "at least",
        (False, True): "at most",
        (True, True): "both lower bounds",
    }[bounds]
    if r["max_listeners"]:
        found["ratio_is"] = kind
        found["ratio_max_listeners"] = round(p["max_listeners"] / r["max_listeners"], 1)
    # Each path's own figure where it was measured, the extrapolated one
    # where the measure is a lower bound.
    ours = p["extrapolated_max_listeners"] or p["max_listeners"]
    theirs = r["extrapolated_max_listeners"] or r["max_listeners"]
    if kind != "measured" and theirs:
        found["ratio_extrapolated_max_listeners"] = round(ours / theirs, 1)
    found["target_met"] = target_met(found)
    return found


def target_met(report: dict[str, Any]) -> bool | None:
    """Whether pass-through reaches the target ratio; None when unknown.

    A measured ratio or a lower bound on it decides; an upper bound or the
    estimate from two lower bounds leaves it to the ratio of the figures
    extrapolated from each path's CPU per listener.
    """
    ratio = report["ratio_max_listeners"]
    if report["ratio_is"] in ("measured", "at least") and ratio is not None:
        return bool(ratio >= TARGET_RATIO)
    extrapolated = report["ratio_extrapolated_max_listeners"]
    if extrapolated is not None:
        return bool(extrapolated >= TARGET_RATIO)
    return None


def print_table(report: dict[str, Any]) -> None:
    """The paths side by side with the ratio, then the warnings."""
    paths: dict[str, dict[str, Any]] = report["paths"]
    limits = report["limits"]
    n = next(iter(paths.values()))["latency_listeners"]
    samples = "/".join(str(s["latency_samples"]) for s in paths.values())
    # Label, key, format, ratio.
    rows: list[tuple[str, str, str, str]] = [
        (
            f"max listeners (< {limits['cpu_cores']} core,"
            f" < {limits['loss']:.0%} lost)",
            "max_listeners",
            "",
            _ratio(report["ratio_max_listeners"], report["ratio_is"]),
        ),
        (
            "  extrapolated from CPU/listener",
            "extrapolated_max_listeners",
            "d",
            _ratio(report["ratio_extrapolated_max_listeners"], "extrapolated"),
        ),
        ("server cores at max", "server_cores_at_max", ".3f", ""),
        ("CPU ms/listener/s at max", "cpu_ms_per_listener_second_at_max", ".1f", ""),
        ("  per added listener (fit)", "fit_cpu_ms_per_listener_second", ".1f", ""),
        (f"added latency p50 ms ({n} listeners)", "latency_ms_p50", ".1f", ""),
        (f"added latency p99 ms ({samples} marks)", "latency_ms_p99", ".1f", ""),
        ("  p50 ms at max listeners", "latency_ms_p50_at_max", ".1f", ""),
        ("  p99 ms at max listeners", "latency_ms_p99_at_max", ".1f", ""),
        ("smallest failing trial", "first_failure_listeners", "d", ""),
    ]
    width = max(len(row[0]) for row in rows)
    header = "".join(f" {name:>12}" for name in paths)
    print()
    print(f"{'':<{width}}{header} {'pass/re':>8}")
    print("-" * (width + 13 * len(paths) + 9))
    for label, key, spec, ratio in rows:
        cells = "".join(
            f" {_cell(summary, key, spec):>12}" for summary in paths.values()
        )
        print(f"{label:<{width}}{cells} {ratio:>8}")
    ratio = report["ratio_max_listeners"]
    if ratio is not None:
        met = {True: "met", False: "MISSED", None: "unknown"}[report["target_met"]]
        judged = ""
        if report["ratio_is"] not in ("measured", "at least"):
            extrapolated = _ratio(report["ratio_extrapolated_max_listeners"], "")
            judged = f" (judged on the extrapolated {extrapolated})"
        print(
            f"target: pass-through listeners per core >= {TARGET_RATIO}x"
            f" re-encoding: {_ratio(ratio, report['ratio_is'])}, {met}{judged}"
        )
    print()
    for note in report["warnings"]:
        print(f"warning: {note}")


def _cell(summary: dict[str, Any], key: str, spec: str) -> str:
    value = summary[key]
    if key == "max_listeners":
        return f"{'>=' if summary['lower_bound_because'] else ''}{value}"
    return "-" if value is None else format(value, spec)


def _ratio(value: float | None, kind: str) -> str:
    if value is None:
        return "-"
    return f"{RATIO_SIGNS.get(kind, '')}{value:.1f}x"


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(1000 * seconds, 1)


def _trial_line(trial: Trial, args: argparse.Namespace) -> str:
    latency = quantile(trial.latencies, 0.5)
    broke = failures(trial, args)
    shown = f"{1000 * latency:6.1f}" if latency is not None else "     -"
    return (
        f"{trial.path:<12}{trial.listeners:>5} listeners"
        f"  server {trial.server_cores:.3f} cores"
        f"  {1000 * trial.server_cores / trial.listeners:6.1f} ms/listener/s"
        f"  lost {trial.loss:6.2%}"
        f"  p50 {shown} ms"
        f"  listeners {'+'.join(f'{c:.2f}' for c in trial.listener_cores)} cores"
        f"  machine {trial.machine_busy:4.0%}"
        f" (others {others(trial, args.cores):.2f})"
        f"  {'FAIL ' + '+'.join(broke) if broke else 'pass'}"
    )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Search each path with the same client processes; build the report."""
    started = time.monotonic()
    clients = Clients(args.listener_processes)
    try:
        searches = [await search_path(clients, path, args) for path in args.paths]
    finally:
        await clients.close()
    summaries = {s.path: summarize(s, args) for s in searches}
    report: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": platform.platform(),
        "cores": args.cores,
        "python": platform.python_version(),
        "limits": {"cpu_cores": args.cpu_limit, "loss": args.loss_limit},
        "settings": {
            key: value
            for key, value in vars(args).items()
            if key not in ("output", "cores")
        },
        "paths": summaries,
        "trials": [t.as_json() for s in searches for t in s.trials],
        "noisy_trials_rerun": [t.as_json() for s in searches for t in s.noisy],
        "seconds": round(time.monotonic() - started),
    }
    report.update(compare(summaries))
    report["warnings"] = warnings(searches, summaries, args)
    return report


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The flags; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag, kind, default, meaning in FLAGS:
        parser.add_argument(flag, type=kind, default=default, help=meaning)
    add = parser.add_argument
    add("--paths", nargs="+", choices=list(PATHS), default=list(PATHS))
    add("--output", type=Path, default=RESULTS)
    add(
        "--quick",
        action="store_true",
        help="5 trials a path of 3 s, 2 s of quiet at most: about 2 minutes",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.trials, args.duration, args.latency_duration = 5, 3.0, 4.0
        args.quiet_wait, args.reruns = 2.0, 1
    args.cores = len(os.sched_getaffinity(0))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table and write the JSON report."""
    args = parse_args(argv)
    try:
        report = run_on_uvloop(run(args))
    except BenchmarkError as exc:
        print(f"relay benchmark failed: {exc}", file=sys.stderr)
        return 1
    print_table(report)
    save_report(report, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
