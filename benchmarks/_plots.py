"""PNG plots of the benchmarks' JSON reports, drawn with matplotlib.

Latency is drawn as a distribution rather than two percentiles: for each
server, the latency (log scale) reached by each share of the frames or
answers, from the ``latency_curve_ms`` points the reports keep (for the
relay, from the latencies of each path's first trial). Memory per idle
connection is a bar per server.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _load(results: Path, name: str) -> dict[str, Any] | None:
    path = results / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _curves(axes: Any, series: list[tuple[str, list[list[float]]]], title: str) -> None:
    for label, curve in series:
        if not curve:
            continue
        shares = [point[0] * 100 for point in curve]
        values = [max(point[1], 1e-3) for point in curve]
        axes.plot(values, shares, label=label, drawstyle="steps-post")
    axes.set_xscale("log")
    axes.set_xlabel("latency, ms (log scale)")
    axes.set_ylabel("% of deliveries at or under")
    axes.set_title(title, fontsize=10)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)


def _figure(columns: int, size: tuple[float, float]) -> tuple[Any, Any]:
    """A new figure of ``columns`` panes side by side, and its panes."""
    import matplotlib.pyplot as plt

    return plt.subplots(1, columns, figsize=size)


def _save(figure: Any, output: Path) -> Path:
    """Write ``figure`` as a PNG file and free it."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    figure.savefig(output, dpi=110)
    plt.close(figure)
    return output


def _fanout_plot(report: dict[str, Any], output: Path) -> Path:
    figure, panes = _figure(2, (11, 4.2))
    for axes, phase in zip(panes, ("saturation", "fixed_rate"), strict=True):
        series = [
            (
                result["server"],
                result["phases"].get(phase, {}).get("latency_curve_ms", []),
            )
            for result in report["results"]
        ]
        label = (
            f"saturation, {report['window']} in flight"
            if phase == "saturation"
            else f"fixed rate, {report['rate']:g} msg/s"
        )
        _curves(axes, series, f"{label}; {report['clients']} receivers")
    figure.suptitle("publish-to-receive latency of one room's fan-out")
    return _save(figure, output)


def _answers_plot(report: dict[str, Any], output: Path) -> Path:
    figure, axes = _figure(1, (6.5, 4.2))
    series = [
        (result["server"], result.get("latency_curve_ms", []))
        for result in report["results"]
    ]
    _curves(axes, series, f"send-to-ack latency, {report['students']} students")
    return _save(figure, output)


def _relay_plot(report: dict[str, Any], output: Path) -> Path:
    figure, axes = _figure(1, (6.5, 4.2))
    series = []
    for path in report["paths"]:
        first = next(t for t in report["trials"] if t["path"] == path)
        ordered = first["latency_ms"]
        curve = [[(i + 1) / len(ordered), value] for i, value in enumerate(ordered)]
        series.append((path, curve))
    listeners = next(iter(report["paths"].values()))["latency_listeners"]
    _curves(axes, series, f"speaker-to-listener latency, {listeners} listeners")
    return _save(figure, output)


def _idle_plot(report: dict[str, Any], output: Path) -> Path:
    figure, axes = _figure(1, (6, 3.6))
    names = [result["server"] for result in report["results"]]
    kib = [(result["bytes_per_connection"] or 0) / 1024 for result in report["results"]]
    bars = axes.bar(names, kib, color="#4c72b0")
    axes.bar_label(bars, fmt="%.1f")
    axes.set_ylabel("KiB of server RSS per connection")
    axes.set_title(f"{report['clients']} idle connections in one room", fontsize=10)
    return _save(figure, output)


def draw_plots(results: Path) -> list[Path]:
    """Draw every plot whose report is in ``results``; the files written."""
    import matplotlib

    matplotlib.use("Agg")
    written = []
    for name in ("fanout", "fanout2"):
        report = _load(results, name)
        if report is not None:
            written.append(_fanout_plot(report, results / f"{name}-latency.png"))
    answers = _load(results, "answers")
    if answers is not None:
        written.append(_answers_plot(answers, results / "answers-latency.png"))
    idle = _load(results, "idle")
    if idle is not None:
        written.append(_idle_plot(idle, results / "idle-memory.png"))
    relay = _load(results, "relay")
    if relay is not None and relay.get("trials"):
        written.append(_relay_plot(relay, results / "relay-latency.png"))
    return written
