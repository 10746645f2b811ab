"""Fan-out between nodes over Redis pub/sub: one Redis channel per channel name.

One subscriber connection per broker carries every subscription; a single
reader task reads it and calls the handlers. Commands (``PUBLISH``, ``PING``)
use other pooled connections, since a subscribed connection accepts only
subscription commands.

The broker reconnects by itself. redis-py can reconnect a connection on its
own too, but then nobody learns that messages were lost in between, so the
subscriber's client is built without retries and every failure surfaces
here: the reader drops the subscriber connection, reconnects with capped
exponential backoff, subscribes every channel again and, once Redis has
confirmed them all, runs the handlers given to :meth:`Broker.on_reconnect`
so callers can fetch what they missed from the store.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter, deque
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from .backends import mask_url
from .broker import Broker, Handler
from .errors import BackendError, ConfigError
from .redis_pool import command_client

logger = logging.getLogger(__name__)

#: Connection failures that mean "reconnect", as opposed to bugs.
_LOST = (RedisError, OSError, BackendError)


class RedisBroker(Broker):
    """A :class:`Broker` on Redis pub/sub, shared by every node of a deployment.

    ``subscribe_timeout`` bounds the wait for Redis to confirm a subscription;
    ``backoff_base`` and ``backoff_cap`` shape the delays between reconnection
    attempts; after ``keepalive`` seconds without traffic the reader sends a
    PING, and gives the connection up if nothing came back after as long again.
    """

    def __init__(
        self,
        url: str,
        *,
        subscribe_timeout: float = 10.0,
        backoff_base: float = 0.05,
        backoff_cap: float = 5.0,
        keepalive: float = 15.0,
    ) -> None:
        super().__init__()
        self._where = mask_url(url)
        # PUBLISH may go out twice when a connection drops before its reply:
        # feeds drop duplicates by offset.
        try:
            self._redis: Redis = command_client(url)
            self._subscriber: Redis = Redis.from_url(url, retry=Retry(NoBackoff(), 0))
        except ValueError as exc:
            raise ConfigError("bad Redis URL", self._where) from exc
        self._subscribe_timeout = subscribe_timeout
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._keepalive = keepalive

        self._handlers: dict[bytes, list[Handler]] = {}
        # The subscriber connection in use, or None while reconnecting.
        self._pubsub: PubSub | None = None
        # A connection a SUBSCRIBE or UNSUBSCRIBE failed on.
        self._broken: PubSub | None = None
        # Channels Redis confirmed on this connection, with no UNSUBSCRIBE since.
        self._active: set[bytes] = set()
        # UNSUBSCRIBEs sent and not yet confirmed, per channel.
        self._leaving: Counter[bytes] = Counter()
        # One future per SUBSCRIBE sent on this connection, in sending order:
        # Redis confirms them in that order.
        self._confirmations: dict[bytes, deque[asyncio.Future[None]]] = {}
        # Waiters whose SUBSCRIBE was lost with a connection; the next
        # confirmation of their channel, on a new connection, releases them.
        self._orphans: dict[bytes, list[asyncio.Future[None]]] = {}

        self._reader: asyncio.Task[None] | None = None
        self._resync: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        """Open the subscriber connection and start the reader task.

        Raises :class:`BackendError` when Redis cannot be reached.
        """
        pubsub = self._subscriber.pubsub()
        try:
            await _open(pubsub)
        except _LOST as exc:
            await _close_quietly(pubsub)
            raise BackendError(f"cannot reach Redis at {self._where}") from exc
        self._pubsub = pubsub
        self._reader = asyncio.create_task(
            self._read_forever(pubsub), name="lophoc-redis-broker"
        )
        logger.info("redis broker: connected to %s", self._where)

    async def close(self) -> None:
        """Stop the reader task and close every connection."""
        for task in (self._reader, self._resync):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._reader = self._resync = None

        closed = BackendError("the broker was closed")
        waiting = [f for queue in self._confirmations.values() for f in queue]
        waiting += [f for futures in self._orphans.values() for f in futures]
        for future in waiting:
            if not future.done():
                future.set_exception(closed)
        self._confirmations.clear()
        self._orphans.clear()

        if self._pubsub is not None:
            await _close_quietly(self._pubsub)
            self._pubsub = None
        await self._subscriber.aclose()
        await self._redis.aclose()

    async def ping(self) -> None:
        """Raise :class:`BackendError` unless Redis answers PING."""
        try:
            await self._redis.ping()
        except _LOST as exc:
            raise BackendError(f"Redis at {self._where} does not answer") from exc

    async def publish(self, channel: str, data: bytes) -> None:
        """Send ``data`` to every subscriber of ``channel``, on every node."""
        try:
            await self._redis.publish(channel, data)
        except _LOST as exc:
            raise BackendError(
                f"cannot publish on {channel!r} to Redis at {self._where}"
            ) from exc

    async def subscribe(self, channel: str, handler: Handler) -> None:
        """Call ``handler`` with each message published on ``channel``.

        Returns once Redis confirmed the subscription; raises
        :class:`BackendError` if that takes longer than ``subscribe_timeout``
        (the handler is then not subscribed).
        """
        if self._reader is None:
            raise BackendError("the Redis broker is not connected")
        key = channel.encode()
        self._handlers.setdefault(key, []).append(handler)
        if key in self._active:
            return

        confirmed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        pubsub = self._pubsub
        if pubsub is None:
            # The reader is reconnecting and will subscribe this channel too.
            self._orphans.setdefault(key, []).append(confirmed)
        else:
            self._confirmations.setdefault(key, deque()).append(confirmed)
            await self._send(pubsub, "SUBSCRIBE", key)

        try:
            async with asyncio.timeout(self._subscribe_timeout):
                await confirmed
        except asyncio.CancelledError:
            # A caller that gave up must not keep receiving.
            await self.unsubscribe(channel, handler)
            raise
        except TimeoutError as exc:
            await self.unsubscribe(channel, handler)
            raise BackendError(
                f"Redis at {self._where} did not confirm the subscription to "
                f"{channel!r} within {self._subscribe_timeout} s"
            ) from exc

    async def unsubscribe(self, channel: str, handler: Handler) -> None:
        """Remove one subscription of ``handler`` to ``channel``, if it has one.

        A handler subscribed twice is called twice per message, until it is
        unsubscribed as many times.
        """
        key = channel.encode()
        handlers = self._handlers.get(key, [])
        # Equality, not identity: a bound method is a new object each time
        # it is looked up.
        if handler not in handlers:
            return
        handlers.remove(handler)
        if handlers:
            return

        del self._handlers[key]
        self._active.discard(key)
        pubsub = self._pubsub
        if pubsub is not None:
            self._leaving[key] += 1
            await self._send(pubsub, "UNSUBSCRIBE", key)

    async def _send(self, pubsub: PubSub, command: str, key: bytes) -> None:
        try:
            if command == "SUBSCRIBE":
                await pubsub.subscribe(key)
            else:
                await pubsub.unsubscribe(key)
        except _LOST as exc:
            # The reader is on the same broken connection: flag it so that it
            # reconnects and resubscribes from the handler table.
            self._broken = pubsub
            logger.debug("redis broker: %s %r failed: %s", command, key, exc)
        if pubsub is not self._pubsub:
            # The reader dropped this connection while the command was on its
            # way, and redis-py may have opened a new one to send it: close
            # that too, or it would fill up with unread messages.
            await _close_quietly(pubsub)

    async def _read_forever(self, pubsub: PubSub) -> None:
        current: PubSub | None = pubsub
        attempt = 0
        while True:
            if current is None:
                attempt += 1
                await asyncio.sleep(self._backoff(attempt))
                try:
                    current = await self._resubscribe()
                except _LOST as exc:
                    logger.debug(
                        "redis broker: reconnection attempt %d failed: %s",
                        attempt,
                        exc,
                    )
                    continue
                except Exception:
                    # Whatever it is, a dead reader would silently stop every
                    # delivery on this node: keep trying.
                    logger.exception(
                        "redis broker: reconnection attempt %d failed", attempt
                    )
                    continue
                logger.info(
                    "redis broker: reconnected to %s after %d attempts, "
                    "resubscribing %d channels",
                    self._where,
                    attempt,
                    len(self._handlers),
                )
                attempt = 0

            try:
                await self._listen(current)
            except _LOST as exc:
                logger.warning(
                    "redis broker: lost the connection to %s (%s), reconnecting",
                    self._where,
                    exc,
                )
            except Exception:
                logger.exception("redis broker: the reader failed, reconnecting")
            await self._discard(current)
            current = None

    async def _listen(self, pubsub: PubSub) -> None:
        pinged = False
        while True:
            message = await pubsub.get_message(timeout=self._keepalive)
            if self._broken is pubsub:
                raise BackendError("a command on the subscriber connection failed")
            if message is not None:
                pinged = False
                self._on_message(message)
            elif pinged:
                raise BackendError(f"no answer to PING within {self._keepalive} s")
            else:
                # A half-open TCP connection never reports an error by itself.
                await pubsub.ping()
                pinged = True

    def _on_message(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        key = message["channel"]
        if kind == "message":
            for handler in tuple(self._handlers.get(key, ())):
                try:
                    handler(message["data"])
                except Exception:
                    logger.exception("redis broker: a handler of %r failed", key)
        elif kind == "subscribe":
            self._confirmed(key)
        elif kind == "unsubscribe":
            self._leaving[key] -= 1
            if self._leaving[key] <= 0:
                del self._leaving[key]

    def _confirmed(self, key: bytes) -> None:
        queue = self._confirmations.get(key)
        waiting = [queue.popleft()] if queue else []
        if queue is not None and not queue:
            del self._confirmations[key]
        waiting += self._orphans.pop(key, [])
        for future in waiting:
            if not future.done():
                future.set_result(None)

        # A confirmation followed by a pending UNSUBSCRIBE is already stale.
        if key in self._handlers and not self._leaving[key]:
            self._active.add(key)

    async def _resubscribe(self) -> PubSub:
        pubsub = self._subscriber.pubsub()
        try:
            await _open(pubsub)
        except BaseException:
            await _close_quietly(pubsub)
            raise
        self._pubsub = pubsub

        resubscribed: list[asyncio.Future[None]] = []
        loop = asyncio.get_running_loop()
        for key in self._handlers:
            confirmed: asyncio.Future[None] = loop.create_future()
            self._confirmations.setdefault(key, deque()).append(confirmed)
            resubscribed.append(confirmed)
        if self._handlers:
            try:
                await pubsub.subscribe(*self._handlers)
            except BaseException:
                await self._discard(pubsub)
                raise
        self._resync = asyncio.create_task(
            self._after_reconnect(resubscribed), name="lophoc-redis-broker-resync"
        )
        return pubsub

    async def _after_reconnect(self, resubscribed: list[asyncio.Future[None]]) -> None:
        # Handlers repair from the store what was lost while disconnected;
        # they must start after the subscriptions are back, or anything
        # published between their repair and the subscription is lost too.
        if resubscribed:
            await asyncio.wait(resubscribed)
        for handler in list(self._reconnect_handlers):
            try:
                await handler()
            except Exception:
                logger.exception("redis broker: a reconnect handler failed")

    async def _discard(self, pubsub: PubSub) -> None:
        self._pubsub = None
        self._broken = None
        self._active.clear()
        self._leaving.clear()
        for key, queue in self._confirmations.items():
            self._orphans.setdefault(key, []).extend(queue)
        self._confirmations.clear()
        for key in [key for key in self._orphans if key not in self._handlers]:
            for future in self._orphans.pop(key):
                if not future.done():
                    future.set_result(None)

        # Its handlers run again after the next resubscription.
        if self._resync is not None:
            self._resync.cancel()
            await asyncio.gather(self._resync, return_exceptions=True)
            self._resync = None
        await _close_quietly(pubsub)

    def _backoff(self, attempt: int) -> float:
        ceiling = min(
            self._backoff_cap, self._backoff_base * 2.0 ** min(attempt - 1, 30)
        )
        # Half of it random: nodes that lost Redis together come back spread out.
        return ceiling / 2 + random.uniform(0, ceiling / 2)


# redis-py leaves these two PubSub methods unannotated.


async def _open(pubsub: PubSub) -> None:
    await pubsub.connect()  # type: ignore[no-untyped-call]


async def _close_quietly(pubsub: PubSub) -> None:
    try:
        await pubsub.aclose()
    except _LOST as exc:
        logger.debug("redis broker: closing a subscriber connection: %s", exc)
