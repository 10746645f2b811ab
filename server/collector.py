"""When the node collects its garbage: in quiet moments, not in a burst.

CPython runs its cyclic garbage collector when the count of container
objects made, less those freed, passes a threshold. That count says little
about the collector's work, which grows with the young objects still alive.
When a room of thousands fills up, every connection leaves a few dozen
objects that live as long as it does (its tasks, timers, queues), while
the join storm frees about as much as it makes: the count stays low, the
young generation grows to tens of thousands of objects, and the collection
that finally walks them comes in the next burst of work, often the first
quiz question's answers, stopping the event loop for 20 to 80 ms while
every ack waits.

:class:`QuietCollector` pays that debt when the node is quiet. Every
:data:`TICK` seconds it looks at how much the node did (connections
accepted, client messages received, frames sent); when that was little for
the number of connections open, and the young generations hold at least
:data:`MIN_YOUNG` objects, it collects them at once, so a burst that comes
later finds little to walk, then gives the heap's free pages back to the
system (server/memory.py). A full collection, when CPython's own rule
would soon ask for one, is run in a quiet moment too. CPython's thresholds
stay as they are: under steady load the collector runs as before.

It also measures every collection's pause, which ``/metrics`` reports by
generation, so an operator can see what the collector costs the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from typing import Any

from client_sdk.protocol import ProbeReply

from .memory import trim
from .metrics import Stats

logger = logging.getLogger(__name__)

#: Seconds between two looks at the node's activity.
TICK = 0.25
#: At most this much activity in a tick (connections accepted, messages
#: in, frames out) counts as quiet, and one more for every
#: :data:`CONNECTIONS_PER_QUIET_UNIT` connections open. The node's own
#: round-trip probes and their replies are not activity: a class sitting
#: still is quiet, a quiz question's answers are not.
QUIET_FLOOR = 20
CONNECTIONS_PER_QUIET_UNIT = 20
#: How :attr:`Stats.messages_in` names a client's answer to a probe.
PROBE_REPLY = ProbeReply.__name__.lower()
#: Young objects worth a collection of their own: walking fewer costs a
#: few milliseconds at most, and CPython's thresholds take care of them.
MIN_YOUNG = 10_000
#: Growth of the oldest generation at which CPython collects it in full.
OLD_GROWTH = 1.25


def quiet_limit(connections: int) -> int:
    """The most activity in one tick that still leaves the node quiet."""
    return QUIET_FLOOR + connections // CONNECTIONS_PER_QUIET_UNIT


def activity(stats: Stats) -> int:
    """A running total of what the node did; only its growth matters."""
    asked = stats.messages_in.total() - stats.messages_in[PROBE_REPLY]
    return stats.connections_total + asked + stats.frames_out - stats.probes_out


class QuietCollector:
    """Collects the young generations when the node is quiet; times every pause."""

    def __init__(self, stats: Stats, *, tick: float = TICK) -> None:
        self._stats = stats
        self._tick = tick
        self._task: asyncio.Task[None] | None = None
        self._started: float | None = None
        #: Objects in the oldest generation after its last full collection,
        #: measured at the first quiet moment after it.
        self._old: int | None = None

    def start(self) -> None:
        """Start watching; collections are timed from now on."""
        if self._task is None:
            gc.callbacks.append(self._time_pause)
            self._task = asyncio.create_task(self._run(), name="quiet-collector")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        gc.callbacks.remove(self._time_pause)

    def step(self, busy: int) -> int | None:
        """One tick in which the node did ``busy``: the generation collected, if any.

        Young generations of fewer than :data:`MIN_YOUNG` objects are left
        to CPython. The oldest generation is collected with them on CPython's
        own terms, once its next collection of the middle generation would
        consider the oldest and the oldest has grown by a quarter since its
        last full collection; that full collection would otherwise come in
        a burst.
        """
        if busy > quiet_limit(self._stats.connections):
            return None
        young = len(gc.get_objects(0)) + len(gc.get_objects(1))
        if young < MIN_YOUNG:
            return None
        generation = 1
        if gc.get_count()[2] >= gc.get_threshold()[2]:
            old = len(gc.get_objects(2))
            if self._old is None:
                self._old = old
            elif old > self._old * OLD_GROWTH:
                generation = 2
        gc.collect(generation)
        # What the collection and the burst before it freed, the heap gives
        # back (a millisecond or less).
        trim()
        self._stats.gc_quiet_collections += 1
        return generation

    async def _run(self) -> None:
        last = activity(self._stats)
        while True:
            await asyncio.sleep(self._tick)
            now = activity(self._stats)
            try:
                self.step(now - last)
            except Exception:
                logger.exception("quiet collection failed")
            last = activity(self._stats)

    def _time_pause(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        if self._started is None:
            return
        pause = time.perf_counter() - self._started
        self._started = None
        generation = info["generation"]
        stats = self._stats
        stats.gc_pauses[generation] += 1
        stats.gc_pause_seconds[generation] += pause
        stats.gc_longest_pause = max(stats.gc_longest_pause, pause)
        if generation == 2:
            self._old = None
