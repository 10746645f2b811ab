"""Checking, pooling and printing the answers benchmark's measurements.

The rounds of one server are pooled here into one result (latencies merged
before taking quantiles, CPU seconds over wall seconds), compared with the
lesson report lophoc wrote, checked for what would make the numbers
mislead, and printed as the table ``answers.py`` shows.
"""

from __future__ import annotations

import argparse
import array
import collections
from dataclasses import dataclass
from typing import Any

from _report import SATURATED_SHARE, quantile, quantile_curve, ratio

#: Where lophoc's own functions live, to pick them out of py-spy's inclusive
#: list, whose top is the event loop and uvicorn frames every sample shares.
LOPHOC_PACKAGES = ("server/", "rooms/", "client_sdk/")
#: Sends later than this (ms, p99) mean the generator could not keep time.
LATE_SEND_MS = 10.0


# Pooling the rounds and checking the store ---------------------------------


@dataclass
class Burst:
    """One round: a question opened, every student answering it."""

    number: int
    #: What each worker saw, from ``Pool.burst`` in ``_answers_clients``.
    reports: list[dict[str, Any]]
    #: CPU seconds of each process from the first send to the last reply.
    cpu: dict[str, float]
    seconds: float
    #: When answers started to go out, ``time.time_ns``.
    start_ns: int
    profile: dict[str, Any] | None = None


def measure(bursts: list[Burst], args: argparse.Namespace) -> dict[str, Any]:
    """Outcomes, latencies, throughput and CPU of the rounds, pooled."""
    latencies: array.array[int] = array.array("q")
    resend_latencies: array.array[int] = array.array("q")
    lateness: array.array[int] = array.array("q")
    errors: collections.Counter[str] = collections.Counter()
    resend_errors: collections.Counter[str] = collections.Counter()
    sent = resent = unanswered = 0
    busy = 0.0
    rounds = []
    for burst in bursts:
        mine: array.array[int] = array.array("q")
        first_sent = last_acked = 0
        # The slowest ack of the answers sent in each tenth of the spread:
        # a stall of the server shows as one bad tenth, a queue as a ramp.
        tenths = [0] * 10
        for report in burst.reports:
            for index, sent_ns in enumerate(report["sent_ns"]):
                error = report["errors"][index]
                if error:
                    errors[error] += 1
                if not sent_ns:
                    continue
                sent += 1
                lateness.append(sent_ns - report["scheduled_ns"][index])
                first_sent = min(first_sent or sent_ns, sent_ns)
                acked_ns = report["acked_ns"][index]
                if acked_ns:
                    mine.append(acked_ns - sent_ns)
                    last_acked = max(last_acked, acked_ns)
                    tenth = (sent_ns - burst.start_ns) * 10 // int(args.spread * 1e9)
                    tenth = min(9, max(0, tenth))
                    tenths[tenth] = max(tenths[tenth], acked_ns - sent_ns)
                elif not error:
                    unanswered += 1
                if report["resent_ns"][index]:
                    resent += 1
                    again = report["resend_acked_ns"][index]
                    if again:
                        resend_latencies.append(again - report["resent_ns"][index])
                    elif report["resend_errors"][index]:
                        resend_errors[report["resend_errors"][index]] += 1
        seconds = (last_acked - first_sent) / 1e9 if mine else 0.0
        busy += seconds
        ordered = sorted(mine)
        rounds.append(
            {
                "question": burst.number,
                "started_at": round(burst.start_ns / 1e9, 3),
                "acked": len(mine),
                "answers_per_s": round(len(mine) / seconds, 1) if seconds else 0.0,
                "p50_ms": round(quantile(ordered, 0.50), 3),
                "p99_ms": round(quantile(ordered, 0.99), 3),
                "max_ms_by_tenth": [round(value / 1e6, 1) for value in tenths],
            }
        )
        latencies.extend(mine)

    ordered = sorted(latencies)
    late = sorted(lateness)
    cpu: dict[str, float] = collections.defaultdict(float)
    for burst in bursts:
        for key, value in burst.cpu.items():
            cpu[key] += value
    reports = bursts[0].reports if bursts else []
    return {
        "sent": sent,
        "acked": len(latencies),
        "errors": dict(errors),
        "unanswered": unanswered,
        "answer_frame_bytes": max(
            (report["answer_frame_bytes"] for report in reports), default=0
        ),
        "answers_per_s": round(len(latencies) / busy, 1) if busy else 0.0,
        "offered_per_s": round(sent / len(bursts) / args.spread, 1) if bursts else 0.0,
        "p50_ms": round(quantile(ordered, 0.50), 3),
        "p90_ms": round(quantile(ordered, 0.90), 3),
        "p99_ms": round(quantile(ordered, 0.99), 3),
        "max_ms": round(quantile(ordered, 1.0), 3),
        "latency_curve_ms": quantile_curve(ordered),
        "send_late_p50_ms": round(quantile(late, 0.50), 3),
        "send_late_p99_ms": round(quantile(late, 0.99), 3),
        "resent": resent,
        "resend_acked": len(resend_latencies),
        "resend_errors": dict(resend_errors),
        "resend_p50_ms": round(quantile(sorted(resend_latencies), 0.50), 3),
        "rounds": rounds,
        "cpu_seconds": {key: round(value, 3) for key, value in cpu.items()},
        "cpu_wall_seconds": round(sum(burst.seconds for burst in bursts), 3),
    }


def verify(report: dict[str, Any], bursts: list[Burst]) -> dict[str, Any]:
    """Compare the lesson report with what each student sent and was told."""
    stored: dict[tuple[str, int], list[Any]] = {}
    for student in report["students"]:
        for answer in student["answers"]:
            key = (student["user"], answer["number"])
            stored.setdefault(key, []).append(answer["value"])
    once = missing = repeated = wrong = refused_but_stored = 0
    for burst in bursts:
        for worker in burst.reports:
            for index, user in enumerate(worker["users"]):
                values = stored.pop((user, burst.number), [])
                if not worker["acked_ns"][index]:
                    refused_but_stored += bool(values)
                elif len(values) == 1 and values[0] == worker["values"][index]:
                    once += 1
                elif not values:
                    missing += 1
                elif len(values) > 1:
                    repeated += 1
                else:
                    wrong += 1
    numbers = {burst.number for burst in bursts}
    return {
        "once": once,
        "missing": missing,
        "more_than_once": repeated,
        "wrong_value": wrong,
        "stored_without_ack": refused_but_stored,
        # Answers nobody here sent: another student's, or another question's.
        "unexpected": len(stored),
        "question_answered": {
            str(q["number"]): q["answered"]
            for q in report["questions"]
            if q["number"] in numbers
        },
    }


# Reporting -----------------------------------------------------------------


def shares(result: dict[str, Any]) -> dict[str, float]:
    """CPU cores busy on average during the burst, by process group."""
    used = result["cpu_seconds"]
    wall = result["cpu_wall_seconds"] or 1e-9
    clients = sum(v for k, v in used.items() if k.startswith("worker"))
    ours = used["server"] + used["store"] + clients + used["orchestrator"]
    return {
        "server": round(used["server"] / wall, 3),
        "store": round(used["store"] / wall, 3),
        "clients": round((clients + used["orchestrator"]) / wall, 3),
        "busiest_worker": round(
            max((v for k, v in used.items() if k.startswith("worker")), default=0.0)
            / wall,
            3,
        ),
        "others": round(max(0.0, used["machine"] - ours) / wall, 3),
        "machine": round(used["machine"] / wall, 3),
        "steal": round(used["steal"] / wall, 3),
    }


def all_stored_once(result: dict[str, Any]) -> bool | None:
    """Whether every answer due was acked, resends too, and stored exactly once.

    ``None`` for the echo server, which stores nothing.
    """
    stored = result.get("stored")
    if stored is None:
        return None
    due = result["students"] * len(result["rounds"])
    return (
        result["acked"] == due
        and result["resend_acked"] == result["resent"]
        and stored["once"] == due
        and not any(
            stored[key]
            for key in (
                "missing",
                "more_than_once",
                "wrong_value",
                "stored_without_ack",
                "unexpected",
            )
        )
    )


def warnings_for(result: dict[str, Any], students: int, cores: int) -> list[str]:
    """What makes a row's numbers less than they seem."""
    name = result["server"]
    found = []
    if result["students"] < students:
        found.append(f"{name}: only {result['students']} of {students} joined")
    if not result["join_settled"]:
        found.append(f"{name}: the join storm had not settled before the bursts")
    due = result["students"] * len(result["rounds"])
    if result["acked"] < due:
        found.append(
            f"{name}: {due - result['acked']} of {due} answers not acknowledged "
            f"(errors {result['errors'] or 'none'}, "
            f"{result['unanswered']} no reply in time)"
        )
    if result["resend_acked"] < result["resent"]:
        found.append(
            f"{name}: {result['resent'] - result['resend_acked']} resent answers "
            f"not acknowledged (errors {result['resend_errors'] or 'none'})"
        )
    if result["exactly_once"] is False:
        found.append(f"{name}: the report disagrees with the acks: {result['stored']}")
    cpu = result["cpu_cores"]
    if cpu["busiest_worker"] > SATURATED_SHARE:
        found.append(
            f"{name}: a client worker was busy {cpu['busiest_worker']:.0%} of the "
            "burst; the load generator may be the limit"
        )
    if result["send_late_p99_ms"] > LATE_SEND_MS:
        found.append(
            f"{name}: sends were up to {result['send_late_p99_ms']:.1f} ms late "
            "(p99); the load generator could not keep its schedule"
        )
    if cpu["machine"] > cores * SATURATED_SHARE:
        found.append(
            f"{name}: the {cores} cores were {cpu['machine'] / cores:.0%} busy "
            "during the burst; server and clients competed for CPU"
        )
    if cpu["others"] > 0.25 or cpu["steal"] > 0.1:
        found.append(
            f"{name}: other programs used {cpu['others']:.2f} cores and the "
            f"hypervisor stole {cpu['steal']:.2f}; numbers are noisy"
        )
    return found


def ratios(results: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Each lophoc row over the echo row: p50, p99, answers per second, CPU."""
    echo = next((r for r in results if r["server"] == "echo"), None)
    found: dict[str, dict[str, float | None]] = {}
    if echo is None:
        return found
    for result in results:
        if result is echo:
            continue
        found[result["server"]] = {
            "p50": ratio(result["p50_ms"], echo["p50_ms"]),
            "p99": ratio(result["p99_ms"], echo["p99_ms"]),
            "answers_per_s": ratio(result["answers_per_s"], echo["answers_per_s"]),
            "cpu_per_answer": ratio(
                result["server_us_per_answer"], echo["server_us_per_answer"]
            ),
        }
    return found


def print_table(report: dict[str, Any]) -> None:
    """The results as a table on standard output."""
    print()
    print(
        f"{report['students']} students answer one question within "
        f"{report['spread']:g} s, {report['rounds']} round(s) pooled "
        f"({report['resend']:.0%} resend their answer); {report['workers']} "
        f"client workers, {report['machine']['cpus']} CPUs"
    )
    header = (
        f"{'server':<15} {'acked':>11} {'stored 1x':>9} {'answers/s':>9} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'us/answer':>9} "
        f"{'server':>6} {'clients':>7} {'others':>6} {'fill s':>6}"
    )
    print(header)
    print("-" * len(header))
    for result in report["results"]:
        stored = result.get("stored")
        cpu = result["cpu_cores"]
        print(
            f"{result['server']:<15} "
            f"{result['acked']:>5}/{result['students'] * report['rounds']:<5} "
            f"{stored['once'] if stored else '-':>9} "
            f"{result['answers_per_s']:>9,.0f} {result['p50_ms']:>7.2f} "
            f"{result['p99_ms']:>7.2f} {result['max_ms']:>7.1f} "
            f"{result['server_us_per_answer']:>9.0f} "
            f"{cpu['server'] + cpu['store']:>6.2f} {cpu['clients']:>7.2f} "
            f"{cpu['others']:>6.2f} {result['fill_seconds']:>6.1f}"
        )
    print(
        "acked: answers acknowledged / answers due (students x rounds); "
        "stored 1x: answers found exactly once, with the value sent, in the "
        "lesson report; "
        "us/answer: server (+ redis) CPU per answer; server, clients, others: "
        "CPU cores busy during the burst; fill s: connecting the room and "
        "its join storm"
    )
    print()
    for name, values in report["ratios"].items():
        shown = ", ".join(
            f"{key} {'n/a' if value is None else f'{value:.2f}'}"
            for key, value in values.items()
        )
        print(f"{name}/echo: {shown}")
    for result in report["results"]:
        by_round = ", ".join(
            f"{r['p50_ms']:.1f}/{r['p99_ms']:.1f}" for r in result["rounds"]
        )
        print(
            f"{result['server']}: p50/p99 ms by round {by_round}; resent "
            f"{result['resent']}, acked again {result['resend_acked']} (p50 "
            f"{result['resend_p50_ms']:.2f} ms); sends late p99 "
            f"{result['send_late_p99_ms']:.2f} ms; answer frame "
            f"{result['answer_frame_bytes']} B"
        )
        stored = result.get("stored")
        if stored is not None:
            answered = ", ".join(
                f"q{number} {count}"
                for number, count in stored["question_answered"].items()
            )
            verdict = "yes" if result["exactly_once"] else "NO"
            print(
                f"{result['server']}: every answer acknowledged and stored "
                f"exactly once, resends included: {verdict}; report answered "
                f"{answered}; "
                f"{stored['missing']} missing, {stored['more_than_once']} more "
                f"than once, {stored['wrong_value']} wrong value, "
                f"{stored['stored_without_ack']} stored though refused, "
                f"{stored['unexpected']} unexpected"
            )
    for warning in report["warnings"]:
        print(f"WARNING: {warning}")
    for result in report["results"]:
        profile = result.get("profile")
        if not profile:
            continue
        print()
        print(
            f"py-spy, {result['server']} during its first burst "
            f"({profile['samples']} samples), self time by package:"
        )
        for name, share in profile["self_by_package"][:8]:
            print(f"  {share:6.1%}  {name}")
        print("self time by function:")
        for name, share in profile["self"][:10]:
            print(f"  {share:6.1%}  {name}")
        print("inclusive time, lophoc functions:")
        for name, share in profile["inclusive"]:
            if name.rpartition(" (")[2].startswith(LOPHOC_PACKAGES):
                print(f"  {share:6.1%}  {name}")
