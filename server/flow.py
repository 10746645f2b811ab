"""The per-connection queues of a session: its send queue and rate limit.

A node holds one of each for every connection, idle ones included, so
both keep as little as they can.
"""

from __future__ import annotations

import asyncio
import collections
import time


class TokenBucket:
    """Messages per second with a burst allowance (a leaky token bucket)."""

    __slots__ = ("_stamp", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = time.monotonic()

    def take(self) -> bool:
        """Spend one token if there is one; False if the rate is exceeded."""
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class SendQueue:
    """A bounded FIFO of frames with one consumer, lighter than asyncio.Queue.

    A node holds one per connection, idle ones included: this one keeps a
    single deque and makes its consumer's wake-up future only while the
    consumer waits, where :class:`asyncio.Queue` keeps three deques.
    """

    __slots__ = ("_frames", "_limit", "_waiter")

    def __init__(self, limit: int) -> None:
        self._frames: collections.deque[bytes] = collections.deque()
        self._limit = limit
        self._waiter: asyncio.Future[None] | None = None

    def empty(self) -> bool:
        """True if no frame waits."""
        return not self._frames

    def put_nowait(self, frame: bytes) -> None:
        """Queue ``frame``; :class:`asyncio.QueueFull` if the queue is full."""
        if len(self._frames) >= self._limit:
            raise asyncio.QueueFull
        self._frames.append(frame)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def get_nowait(self) -> bytes:
        """The oldest frame; the queue must not be empty."""
        return self._frames.popleft()

    async def get(self) -> bytes:
        """The oldest frame, once there is one."""
        while not self._frames:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._frames.popleft()
