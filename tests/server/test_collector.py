"""The node's garbage collection in quiet moments, against CPython's own collector.

These run in the test process with the real :mod:`gc`: automatic
collections are switched off for each test, so that only the quiet
collector moves objects between generations, and back on afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from server.collector import MIN_YOUNG, PROBE_REPLY, QuietCollector, quiet_limit
from server.metrics import Stats

TICK = 0.02


class Kept:
    """A container the collector tracks, as a connection's objects are."""

    def __init__(self, n: int) -> None:
        self.n = n


def young() -> int:
    """Objects in the two younger generations."""
    return len(gc.get_objects(0)) + len(gc.get_objects(1))


@pytest.fixture
def manual_gc() -> Iterator[None]:
    """Only explicit collections while the test runs."""
    was_enabled, threshold = gc.isenabled(), gc.get_threshold()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        if was_enabled:
            gc.enable()


@contextlib.asynccontextmanager
async def watching(stats: Stats, tick: float = TICK) -> AsyncIterator[QuietCollector]:
    """A quiet collector watching ``stats``, stopped at the end."""
    collector = QuietCollector(stats, tick=tick)
    collector.start()
    try:
        yield collector
    finally:
        await collector.stop()


async def until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(TICK / 2)


async def test_a_quiet_node_walks_what_a_join_storm_left(manual_gc: None) -> None:
    """Young objects left by a fill are collected before anything asks for it."""
    stats = Stats(connections=500)
    kept = [Kept(n) for n in range(2 * MIN_YOUNG)]
    assert young() >= len(kept)
    async with watching(stats):
        await until(lambda: stats.gc_quiet_collections >= 1, 5.0, "no quiet collection")
        assert young() < MIN_YOUNG
        assert stats.gc_pauses[1] >= 1
        assert stats.gc_pause_seconds[1] > 0
        assert stats.gc_longest_pause >= stats.gc_pause_seconds[1] / stats.gc_pauses[1]
    assert len(kept) == 2 * MIN_YOUNG


def answers(stats: Stats, count: int) -> None:
    """``count`` answers in, and their acks out."""
    stats.messages_in["answer"] += count
    stats.frames_out += count


def probes(stats: Stats, count: int) -> None:
    """``count`` of the node's round-trip probes out, and their replies in."""
    stats.probes_out += count
    stats.frames_out += count
    stats.messages_in[PROBE_REPLY] += count


async def traffic(
    stats: Stats, send: Callable[[Stats, int], None], done: Callable[[], bool]
) -> None:
    """Three times what counts as quiet, every eighth of a tick, until ``done``."""
    # Even a loop so loaded that it runs this once a tick stays busy.
    count = 3 * quiet_limit(stats.connections)
    deadline = time.monotonic() + 5.0
    while not done():
        assert time.monotonic() < deadline, "the traffic did not end"
        send(stats, count)
        await asyncio.sleep(TICK / 8)


async def test_a_busy_node_is_left_to_cpython(manual_gc: None) -> None:
    """While answers flow nothing is collected; when they stop, the debt is paid."""
    stats = Stats(connections=1000)
    kept = [Kept(n) for n in range(2 * MIN_YOUNG)]
    async with watching(stats):
        ends = time.monotonic() + 20 * TICK
        await traffic(stats, answers, lambda: time.monotonic() > ends)
        assert stats.gc_quiet_collections == 0
        assert young() >= len(kept)
        await until(lambda: stats.gc_quiet_collections >= 1, 5.0, "never collected")
        assert young() < MIN_YOUNG


async def test_the_nodes_own_probes_are_not_activity(manual_gc: None) -> None:
    """A class sitting still, answering round-trip probes, counts as quiet."""
    stats = Stats(connections=1000)
    _kept = [Kept(n) for n in range(2 * MIN_YOUNG)]
    async with watching(stats):
        await traffic(stats, probes, lambda: stats.gc_quiet_collections > 0)


async def test_a_full_collection_comes_on_cpythons_terms(manual_gc: None) -> None:
    """The oldest generation is walked once it grew by a quarter, not before."""
    # CPython would consider the oldest generation at every collection of
    # the middle one; its growth decides.
    gc.set_threshold(700, 10, 0)
    stats = Stats()
    async with watching(stats, tick=3600.0) as collector:
        # Enough old objects that a young generation worth collecting twice
        # is still less than a quarter of them.
        ballast = [Kept(n) for n in range(12 * MIN_YOUNG)]
        gc.collect()
        old = len(gc.get_objects(2))
        first = [Kept(n) for n in range(MIN_YOUNG)]
        # The size after the last full collection is measured first.
        assert collector.step(0) == 1
        assert len(gc.get_objects(0)) < MIN_YOUNG
        second = [Kept(n) for n in range(MIN_YOUNG)]
        assert collector.step(0) == 1
        # Counted once they have moved up: the next quiet collection walks all.
        grown = [Kept(n) for n in range(old // 4)]
        assert collector.step(0) == 1
        after = [Kept(n) for n in range(MIN_YOUNG)]
        assert collector.step(0) == 2
        assert stats.gc_pauses[2] >= 1
        # Measured again after the full collection: no second one at once.
        more = [Kept(n) for n in range(MIN_YOUNG)]
        assert collector.step(0) == 1
        assert collector.step(0) is None
        assert stats.gc_quiet_collections == 5
    assert (
        len(ballast) + len(first) + len(second) + len(grown) + len(after) + len(more)
        > 0
    )
