"""The offset between this machine's clock and the server's, NTP style.

Quiz questions and exams carry absolute server times (``opens_at``,
``closes_at``), so a client needs the server's clock, not its own. A
``ping`` carries the client's time and its ``pong`` the server's; assuming
the request and the reply took equally long, the server read its clock
half a round trip after the ping left (RFC 5905 §8 does the same with four
timestamps; a WebSocket server only gives us one).

The sample with the shortest round trip is kept: the longer a round trip,
the more room for the two directions to differ, and the error of the
estimate is at most half the round trip.

:class:`ServerClock` gives the client these as methods: measure the offset,
read the server's clock, and sleep until a server time (how a client shows
a question at its ``opens_at``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Final

from .errors import ClientError
from .protocol import Pong

logger = logging.getLogger(__name__)

#: The most times :meth:`ServerClock.wait_until` sleeps: once, plus a few
#: more if the wall clock was stepped while it slept.
MAX_WAKES: Final = 8


def wall_ms() -> float:
    """This machine's wall clock, in milliseconds since the Unix epoch."""
    return time.time_ns() / 1_000_000


@dataclass(frozen=True, slots=True)
class ClockSample:
    """One ping and its pong.

    ``sent_ms`` is the wall clock when the ping left, ``rtt_ms`` the round
    trip measured on the monotonic clock (so a wall clock step during the
    exchange cannot make it negative), ``server_ms`` the pong's server time.
    """

    sent_ms: float
    rtt_ms: float
    server_ms: int

    @property
    def offset_ms(self) -> float:
        """Server time minus client time at the moment the server answered."""
        return self.server_ms - (self.sent_ms + self.rtt_ms / 2)


@dataclass(frozen=True, slots=True)
class ClockOffset:
    """How far the server's clock is ahead of this one, and how sure we are.

    ``offset_ms`` is added to the local wall clock to get the server's;
    ``rtt_ms`` is the round trip of the sample it came from, and twice the
    bound on its error. ``samples`` is how many pings were measured.
    """

    offset_ms: float
    rtt_ms: float
    samples: int = 1

    @property
    def error_ms(self) -> float:
        """The most the offset can be wrong by, if the network was symmetric."""
        return self.rtt_ms / 2

    def server_now(self, local_ms: float | None = None) -> float:
        """The server's clock in milliseconds, at ``local_ms`` or now."""
        return (wall_ms() if local_ms is None else local_ms) + self.offset_ms


def estimate(samples: Iterable[ClockSample]) -> ClockOffset:
    """The offset from the sample with the smallest round trip."""
    collected = list(samples)
    if not collected:
        raise ValueError("estimate needs at least one clock sample")
    best = min(collected, key=lambda sample: sample.rtt_ms)
    return ClockOffset(best.offset_ms, best.rtt_ms, len(collected))


async def measure(
    ping: Callable[[float], Awaitable[int]], samples: int = 5, spacing: float = 0.1
) -> ClockOffset:
    """Ping ``samples`` times, ``spacing`` seconds apart, and :func:`estimate`.

    ``ping`` sends one ping stamped with the wall clock time it is given and
    returns the server time of its pong. Spacing the pings keeps one burst
    of network delay from spoiling every sample.
    """
    if samples < 1:
        raise ValueError(f"samples must be positive, got {samples}")
    collected: list[ClockSample] = []
    for index in range(samples):
        if index:
            await asyncio.sleep(spacing)
        sent = wall_ms()
        start = time.perf_counter()
        server_ms = await ping(sent)
        rtt = (time.perf_counter() - start) * 1000
        collected.append(ClockSample(sent, rtt, server_ms))
    return estimate(collected)


class ServerClock:
    """The server's clock as the client knows it; mixed into the client.

    Before the first :meth:`measure_clock` the offset is the rough estimate
    from ``hello``, which is off by the network's one-way delay.
    """

    _clock: ClockOffset | None = None
    _hello_offset_ms: float | None = None

    async def ping(self, *, timeout: float | None = None) -> Pong:  # noqa: ASYNC109
        """Ask for the server's time once (the client implements this)."""
        raise NotImplementedError

    @property
    def clock(self) -> ClockOffset | None:
        """The last :meth:`measure_clock` result, if any."""
        return self._clock

    async def measure_clock(
        self,
        samples: int = 5,
        *,
        spacing: float = 0.1,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> ClockOffset:
        """Estimate the server's clock offset from ``samples`` pings.

        The result is kept for :meth:`server_now`; see :func:`measure` for
        the method.
        """

        async def ping(sent_ms: float) -> int:
            # The pong's client_time is informational: measure() keeps the
            # send time and the round trip itself.
            return (await self.ping(timeout=timeout)).server_time

        self._clock = clock = await measure(ping, samples, spacing)
        logger.debug(
            "clock offset %.1f ms (round trip %.1f ms)", clock.offset_ms, clock.rtt_ms
        )
        return clock

    def server_now(self) -> float:
        """The server's clock now, in milliseconds.

        Uses the last :meth:`measure_clock`; before the first one, the rough
        estimate from ``hello``, which is off by the network's one-way delay.
        """
        if self._clock is not None:
            return self._clock.server_now()
        if self._hello_offset_ms is not None:
            return wall_ms() + self._hello_offset_ms
        raise ClientError("no clock estimate: the client never connected")

    async def wait_until(self, server_time_ms: float) -> None:
        """Sleep until the server's clock reads ``server_time_ms``.

        Measure the clock once after connecting (:meth:`measure_clock`) for
        this to be right within half a round trip. Returns at once for a
        time already past; raises :class:`ClientError` if the client never
        connected.
        """
        for _ in range(MAX_WAKES):
            left = server_time_ms - self.server_now()
            if left <= 0:
                return
            await asyncio.sleep(left / 1000)
