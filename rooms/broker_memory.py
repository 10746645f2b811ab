"""The in-process broker, for a single node: channels are dictionary entries.

Publishing only queues the message; one dispatcher task hands queued messages
to handlers in publish order, so a publisher never runs handler code and a
slow handler delays deliveries but not publishers.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from .broker import Broker, Handler
from .errors import BackendError

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class _Subscription:
    handler: Handler
    #: Sequence number of the last message published before it started.
    since: int


class MemoryBroker(Broker):
    """A :class:`Broker` whose subscribers all live in this process.

    Like Redis pub/sub, a handler never gets a message published before it
    subscribed, even one still queued then, nor one dispatched after it
    unsubscribed.
    """

    def __init__(self) -> None:
        super().__init__()
        self._subscriptions: dict[str, list[_Subscription]] = {}
        self._queue: asyncio.Queue[tuple[int, str, bytes]] = asyncio.Queue()
        self._published = 0
        self._dispatcher: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        """Start the dispatcher task."""
        if self._dispatcher is None:
            self._dispatcher = asyncio.create_task(
                self._dispatch(), name="lophoc-memory-broker"
            )

    async def close(self) -> None:
        """Stop the dispatcher; messages still queued are dropped."""
        dispatcher, self._dispatcher = self._dispatcher, None
        if dispatcher is not None:
            dispatcher.cancel()
            await asyncio.gather(dispatcher, return_exceptions=True)

    async def ping(self) -> None:
        """Raise :class:`BackendError` unless the dispatcher runs."""
        self._running()

    async def publish(self, channel: str, data: bytes) -> None:
        """Queue ``data`` for the subscribers of ``channel``; never waits."""
        self._running()
        self._published += 1
        self._queue.put_nowait((self._published, channel, data))

    async def subscribe(self, channel: str, handler: Handler) -> None:
        """Call ``handler`` with each message published on ``channel`` from now."""
        self._subscriptions.setdefault(channel, []).append(
            _Subscription(handler, self._published)
        )

    async def unsubscribe(self, channel: str, handler: Handler) -> None:
        """Remove one subscription of ``handler`` to ``channel``, if it has one.

        A handler subscribed twice is called twice per message, until it is
        unsubscribed as many times.
        """
        subscriptions = self._subscriptions.get(channel, [])
        for index, subscription in enumerate(subscriptions):
            # Equality, not identity: a bound method is a new object each
            # time it is looked up.
            if subscription.handler == handler:
                del subscriptions[index]
                break
        if not subscriptions:
            self._subscriptions.pop(channel, None)

    def _running(self) -> None:
        if self._dispatcher is None:
            raise BackendError("memory broker is not connected")

    async def _dispatch(self) -> None:
        while True:
            sequence, channel, data = await self._queue.get()
            for subscription in tuple(self._subscriptions.get(channel, ())):
                if subscription.since >= sequence:
                    continue
                try:
                    subscription.handler(data)
                except Exception:
                    logger.exception("broker: a handler of %s failed", channel)
