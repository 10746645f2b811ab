"""The per-connection queues of a session: its send queue and rate limit.

A node holds one of each for every connection, idle ones included, so
both keep as little as they can.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Generic, TypeVar

T = TypeVar("T")


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


class Mailbox(Generic[T]):
    """A FIFO with one consumer, lighter than :class:`asyncio.Queue`.

    A node holds a few per connection, idle ones included: this one holds a
    deque only while items wait, and its consumer's wake-up future only
    while the consumer waits, where :class:`asyncio.Queue` keeps three
    deques for as long as it lives.
    """

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: collections.deque[T] | None = None
        self._waiter: asyncio.Future[None] | None = None

    def empty(self) -> bool:
        """True if nothing waits."""
        return not self._items

    def put_nowait(self, item: T) -> None:
        """Queue ``item`` and wake the consumer."""
        items = self._items
        if items is None:
            items = self._items = collections.deque()
        items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def get_nowait(self) -> T:
        """The oldest item; the mailbox must not be empty."""
        items = self._items
        assert items is not None
        item = items.popleft()
        if not items:
            # An empty deque keeps a block of 64 slots; most connections
            # sit idle, so the next item makes a new one instead.
            self._items = None
        return item

    async def wait(self) -> None:
        """Until an item waits; the item stays queued."""
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def get(self) -> T:
        """The oldest item, once there is one."""
        await self.wait()
        return self.get_nowait()


class SendQueue(Mailbox[bytes]):
    """A session's frames waiting for its socket, at most ``limit`` of them."""

    __slots__ = ("_limit",)

    def __init__(self, limit: int) -> None:
        super().__init__()
        self._limit = limit

    def put_nowait(self, item: bytes) -> None:
        """Queue a frame; :class:`asyncio.QueueFull` if the queue is full."""
        if self._items is not None and len(self._items) >= self._limit:
            raise asyncio.QueueFull
        super().put_nowait(item)
