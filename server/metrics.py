"""Prometheus metrics of a node, served at ``/metrics``.

Hot paths (a frame in, a frame out) only add to plain integers on
:class:`Stats`; a collector turns them into Prometheus samples when the
endpoint is scraped. A ``prometheus_client.Counter`` per frame would take a
lock for every frame of every member of a room.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(slots=True)
class Stats:
    """Running totals of one node, updated without locks on the event loop."""

    connections: int = 0
    connections_total: int = 0
    messages_in: Counter[str] = field(default_factory=Counter)
    frames_out: int = 0
    #: Of those, the round-trip probes the node sends on its own.
    probes_out: int = 0
    #: Frames that waited in a send queue: the client's socket pushed back.
    frames_waited: int = 0
    send_queue_drops: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    refusals: Counter[int] = field(default_factory=Counter)
    closes: Counter[int] = field(default_factory=Counter)
    #: Garbage collections by generation, and the loop's time in them.
    gc_pauses: Counter[int] = field(default_factory=Counter)
    gc_pause_seconds: defaultdict[int, float] = field(
        default_factory=lambda: defaultdict(float)
    )
    gc_longest_pause: float = 0.0
    #: Collections run by the node in a quiet moment (server/collector.py).
    gc_quiet_collections: int = 0


class _StatsCollector(Collector):
    def __init__(self, stats: Stats, rooms: Callable[[], tuple[int, int]]) -> None:
        self._stats = stats
        self._rooms = rooms

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        stats = self._stats
        yield GaugeMetricFamily(
            "lophoc_connections", "Open WebSocket connections", stats.connections
        )
        yield CounterMetricFamily(
            "lophoc_connections_accepted",
            "WebSocket connections accepted",
            stats.connections_total,
        )
        owned, followed = self._rooms()
        rooms = GaugeMetricFamily("lophoc_rooms", "Rooms on this node", labels=["kind"])
        rooms.add_metric(["owned"], owned)
        rooms.add_metric(["followed"], followed)
        yield rooms
        incoming = CounterMetricFamily(
            "lophoc_messages_in", "Client messages received", labels=["type"]
        )
        for kind, count in sorted(stats.messages_in.items()):
            incoming.add_metric([kind], count)
        yield incoming
        yield CounterMetricFamily(
            "lophoc_messages_out", "Frames sent to clients", stats.frames_out
        )
        yield CounterMetricFamily(
            "lophoc_frames_waited",
            "Frames that waited in a send queue while a client read slowly",
            stats.frames_waited,
        )
        yield CounterMetricFamily(
            "lophoc_send_queue_drops",
            "Connections closed because their send queue was full",
            stats.send_queue_drops,
        )
        errors = CounterMetricFamily(
            "lophoc_errors", "Error frames sent, by code", labels=["code"]
        )
        for code, count in sorted(stats.errors.items()):
            errors.add_metric([code], count)
        yield errors
        refusals = CounterMetricFamily(
            "lophoc_handshake_refusals",
            "Connections refused at the handshake, by close code",
            labels=["code"],
        )
        for close_code, count in sorted(stats.refusals.items()):
            refusals.add_metric([str(close_code)], count)
        yield refusals
        closes = CounterMetricFamily(
            "lophoc_server_closes",
            "Connections closed by the server, by close code",
            labels=["code"],
        )
        for close_code, count in sorted(stats.closes.items()):
            closes.add_metric([str(close_code)], count)
        yield closes
        pauses = CounterMetricFamily(
            "lophoc_gc_pauses",
            "Garbage collections, by generation",
            labels=["generation"],
        )
        paused = CounterMetricFamily(
            "lophoc_gc_pause_seconds",
            "Seconds the event loop stood still for garbage collections",
            labels=["generation"],
        )
        for generation, count in sorted(stats.gc_pauses.items()):
            pauses.add_metric([str(generation)], count)
            paused.add_metric([str(generation)], stats.gc_pause_seconds[generation])
        yield pauses
        yield paused
        yield GaugeMetricFamily(
            "lophoc_gc_longest_pause_seconds",
            "The longest garbage collection since the node started",
            stats.gc_longest_pause,
        )
        yield CounterMetricFamily(
            "lophoc_gc_quiet_collections",
            "Collections the node ran in a quiet moment, ahead of a burst",
            stats.gc_quiet_collections,
        )


def registry_for(
    stats: Stats, rooms: Callable[[], tuple[int, int]]
) -> CollectorRegistry:
    """A registry of its own per app, so two apps in one process do not mix."""
    registry = CollectorRegistry()
    registry.register(_StatsCollector(stats, rooms))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The registry in the Prometheus text exposition format."""
    return generate_latest(registry)
