"""The room runtime of one node: who writes each room, and local fan-out.

Exactly one node writes a room at a time, holding a lease in the store. A
command for a room is applied by the local :class:`RoomWriter` when this node
holds the lease, or forwarded on the broker to the node that does. Every
node keeps one :class:`RoomFeed` per room with local listeners, subscribed to
the room's channel.

With the embedded backends the only node owns every room, and the broker
and store calls are in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import secrets
import time
from collections.abc import Callable, Coroutine
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client_sdk.protocol import ErrorCode

from .broker import Broker
from .errors import BackendError, Refused, StaleWriter
from .feed import EncodedEvent, Listener, RoomFeed
from .room import JoinRoom, RoomCommand
from .store import Store
from .wire import (
    AppendReply,
    JoinReply,
    NoticeFrame,
    NotOwner,
    RefusedReply,
    Reply,
    Request,
    Response,
    decoder,
    encoder,
)
from .writer import Notice, RoomWriter, event_encoder

logger = logging.getLogger(__name__)

ROOM_CHANNEL = "lophoc:room:{}"
NOTICE_CHANNEL = "lophoc:notice:{}"
NODE_CHANNEL = "lophoc:node:{}"
#: Longest wait between two looks at the lease of a room whose owner is silent.
LEASE_POLL_MAX = 0.5


def now_ms() -> int:
    """The server's wall clock in milliseconds since the Unix epoch."""
    return time.time_ns() // 1_000_000


class Hub:
    """Routes room commands to their writer and room events to listeners."""

    def __init__(
        self,
        broker: Broker,
        store: Store,
        *,
        node: str | None = None,
        lease_ms: int = 10_000,
        forward_timeout: float = 5.0,
        clock: Callable[[], int] = now_ms,
        audit_key: Ed25519PrivateKey | None = None,
    ) -> None:
        self.node = node or secrets.token_hex(4)
        self.broker = broker
        self.store = store
        self.clock = clock
        #: Signs the checkpoints of exam logs written by this node.
        self.audit_key = audit_key
        self._lease_ms = lease_ms
        self._forward_timeout = forward_timeout
        self._writers: dict[str, RoomWriter] = {}
        self._opening: dict[str, asyncio.Task[RoomWriter]] = {}
        self._owners: dict[str, tuple[str, float]] = {}
        self._feeds: dict[str, RoomFeed] = {}
        self._feed_locks: dict[str, asyncio.Lock] = {}
        self._waiting: dict[int, asyncio.Future[Reply]] = {}
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._renewer: asyncio.Task[None] | None = None
        self._outbox: asyncio.Queue[tuple[str, int, bytes] | None] = asyncio.Queue()
        self._sender: asyncio.Task[None] | None = None
        self._lease_looks: dict[str, asyncio.Task[str]] = {}
        #: Set by :meth:`hand_over`: this node claims no room any more.
        self.handed_over = False

    @property
    def rooms_owned(self) -> int:
        """How many rooms this node writes."""
        return len(self._writers)

    @property
    def rooms_followed(self) -> int:
        """How many rooms have listeners on this node."""
        return len(self._feeds)

    async def start(self) -> None:
        """Listen for forwarded commands and keep leases alive."""
        await self.broker.subscribe(NODE_CHANNEL.format(self.node), self._on_node)
        self.broker.on_reconnect(self._resync_feeds)
        self._renewer = asyncio.create_task(self._renew_leases())
        self._sender = asyncio.create_task(self._send_outbox())
        logger.info("node %s: hub started", self.node)

    async def close(self, drain_timeout: float = 2.0) -> None:
        """Publish what is queued, release leases, stop tasks and unsubscribe."""
        if self._sender is not None:
            # Let queued events reach the other nodes before leaving; they
            # are stored already, so a timeout here loses no data.
            self._outbox.put_nowait(None)
            try:
                await asyncio.wait_for(asyncio.shield(self._sender), drain_timeout)
            except TimeoutError:
                logger.warning("node %s: outbox not drained in time", self.node)
            self._sender.cancel()
            await asyncio.gather(self._sender, return_exceptions=True)
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for future in self._waiting.values():
            future.cancel()
        looks = list(self._lease_looks.values())
        for look in looks:
            look.cancel()
        await asyncio.gather(*looks, return_exceptions=True)
        for room in list(self._writers):
            try:
                await self.store.release(room, self.node)
            except BackendError:
                logger.warning("room %s: could not release the lease", room)
        for writer in self._writers.values():
            await writer.close()
        self._writers.clear()
        for feed in self._feeds.values():
            await feed.close()
        await self.broker.unsubscribe(NODE_CHANNEL.format(self.node), self._on_node)
        logger.info("node %s: hub stopped", self.node)

    async def hand_over(self) -> int:
        """Stop writing rooms, so that other nodes take them at once.

        Each room's writer finishes the command under way and stores the
        answers it holds; then its lease is released instead of left to
        lapse. From then on this node claims no room: commands forwarded to
        it are answered ``NotOwner``, which sends them to the next writer.
        Returns how many rooms were released.
        """
        self.handed_over = True
        released = 0
        for room, writer in list(self._writers.items()):
            self._writers.pop(room, None)
            async with writer.lock:
                # Only waits for the command being decided to finish.
                pass
            # A presence batch still gathering goes with the writer: the
            # next writer counts presence from the connections it holds.
            await writer.close()
            try:
                await self.store.release(room, self.node)
                released += 1
            except BackendError:
                logger.warning("room %s: could not release the lease", room)
        logger.info("node %s: handed over %d rooms", self.node, released)
        return released

    # Commands -------------------------------------------------------------

    async def submit(self, room: str, command: RoomCommand) -> Reply:
        """Apply ``command`` to ``room`` wherever its writer is.

        Raises :class:`Refused` with ``unavailable`` when the writer cannot
        be reached in time; the command may be sent again with the same id.
        """
        for _attempt in range(3):
            owner = await self._owner(room)
            if owner == self.node:
                reply = await self._apply_local(room, command)
            else:
                reply = await self._forward(owner, room, command)
            if not isinstance(reply, NotOwner):
                return reply
            self._owners.pop(room, None)
        raise Refused(ErrorCode.UNAVAILABLE, f"room {room!r} has no reachable writer")

    async def _owner(self, room: str) -> str:
        if room in self._writers:
            return self.node
        cached = self._owners.get(room)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        if self.handed_over:
            raise Refused(ErrorCode.UNAVAILABLE, "this node is shutting down; retry")
        try:
            owner = await self.store.claim(room, self.node, self._lease_ms)
        except BackendError as exc:
            raise Refused(ErrorCode.UNAVAILABLE, "store unreachable") from exc
        if owner != self.node:
            # Trust a remote lease for a fraction of its length, so a dead
            # owner is noticed soon after its lease runs out.
            self._owners[room] = (owner, time.monotonic() + self._lease_ms / 4000)
        return owner

    async def _apply_local(self, room: str, command: RoomCommand) -> Reply:
        writer = await self._writer(room)
        try:
            return await writer.handle(command, self.clock())
        except StaleWriter:
            logger.warning("room %s: another node wrote the room; giving it up", room)
            await self._drop(room, writer)
            return NotOwner()
        except BackendError as exc:
            # What the writer holds may now differ from the store: the next
            # command rebuilds the room from the store.
            await self._drop(room, writer)
            raise Refused(ErrorCode.UNAVAILABLE, "store unreachable") from exc

    async def _drop(self, room: str, writer: RoomWriter) -> None:
        if self._writers.get(room) is writer:
            del self._writers[room]
        await writer.close()

    async def _writer(self, room: str) -> RoomWriter:
        writer = self._writers.get(room)
        if writer is not None and writer.broken:
            await self._drop(room, writer)
            writer = None
        if writer is not None:
            return writer
        # Two commands arriving together for a room this node has just
        # claimed must share one rebuild, not race two writers.
        opening = self._opening.get(room)
        if opening is None:
            feed = self._feeds.get(room)
            present = [
                JoinRoom(member=held[0], session=held[1])
                for listener in (feed.listeners if feed else ())
                if (held := listener.membership(room)) is not None
            ]
            opening = asyncio.create_task(
                RoomWriter.rebuild(
                    room,
                    self.store,
                    self._publish,
                    self._notify,
                    self.clock,
                    present,
                    self.audit_key,
                )
            )
            self._opening[room] = opening
        try:
            writer = await asyncio.shield(opening)
        finally:
            if self._opening.get(room) is opening and opening.done():
                del self._opening[room]
        if self.handed_over:
            # The rebuild began before the hand-over: give the room up too.
            await writer.close()
            with contextlib.suppress(BackendError):
                await self.store.release(room, self.node)
            raise Refused(ErrorCode.UNAVAILABLE, "this node is shutting down; retry")
        self._writers[room] = writer
        return writer

    async def _forward(self, owner: str, room: str, command: RoomCommand) -> Reply:
        request_id = next(self._ids)
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        request = Request(request_id, self.node, room, command)
        try:
            await self.broker.publish(
                NODE_CHANNEL.format(owner), encoder.encode(request)
            )
            return await self._reply_or_new_owner(future, owner, room)
        except (TimeoutError, BackendError) as exc:
            self._owners.pop(room, None)
            raise Refused(
                ErrorCode.UNAVAILABLE, f"room {room!r}: owner {owner} did not answer"
            ) from exc
        finally:
            self._waiting.pop(request_id, None)

    async def _reply_or_new_owner(
        self, future: asyncio.Future[Reply], owner: str, room: str
    ) -> Reply:
        # A node killed outright never answers, but its lease lapses within
        # lease_ms. Looking at the lease while waiting sends the command to
        # the next writer (this node, if its claim wins) as soon as there is
        # one, instead of after the whole forward timeout. A node that
        # released its leases and left is noticed within half a second.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._forward_timeout
        interval = min(max(self._lease_ms / 4000, 0.05), LEASE_POLL_MAX)
        while (remaining := deadline - loop.time()) > 0:
            await asyncio.wait({future}, timeout=min(interval, remaining))
            if future.done():
                return future.result()
            if self.handed_over:
                continue
            try:
                current = await self._look_at_lease(room)
            except BackendError:
                continue
            if current != owner:
                logger.debug(
                    "room %s: owner %s silent, lease now held by %s",
                    room,
                    owner,
                    current,
                )
                return NotOwner()
        raise TimeoutError

    async def _look_at_lease(self, room: str) -> str:
        # Hundreds of commands may wait on one silent owner: a single claim
        # in flight per room answers all of them.
        look = self._lease_looks.get(room)
        if look is None:
            look = asyncio.create_task(
                self.store.claim(room, self.node, self._lease_ms)
            )
            self._lease_looks[room] = look
            look.add_done_callback(functools.partial(self._looked, room))
        return await asyncio.shield(look)

    def _looked(self, room: str, look: asyncio.Task[str]) -> None:
        if self._lease_looks.get(room) is look:
            del self._lease_looks[room]
        if not look.cancelled():
            # Read here too, for when every waiter has gone.
            look.exception()

    def _on_node(self, data: bytes) -> None:
        try:
            message = decoder.decode(data)
        except Exception:
            logger.error("node %s: dropped an undecodable node message", self.node)
            return
        if isinstance(message, Response):
            future = self._waiting.get(message.id)
            if future is not None and not future.done():
                future.set_result(message.reply)
            return
        self._spawn(self._serve(message))

    async def _serve(self, request: Request) -> None:
        reply: Reply
        if request.room not in self._writers:
            owner = await self._owner_or_none(request.room)
            if owner != self.node:
                reply = NotOwner()
                await self._respond(request, reply)
                return
        try:
            reply = await self._apply_local(request.room, request.command)
        except Refused as refused:
            reply = RefusedReply(refused.code, refused.message, refused.field)
        await self._respond(request, reply)

    async def _owner_or_none(self, room: str) -> str | None:
        try:
            return await self._owner(room)
        except Refused:
            return None

    async def _respond(self, request: Request, reply: Reply) -> None:
        response = Response(request.id, reply)
        try:
            await self.broker.publish(
                NODE_CHANNEL.format(request.reply_to), encoder.encode(response)
            )
        except BackendError:
            logger.warning("node %s: could not answer %s", self.node, request.reply_to)

    async def _renew_leases(self) -> None:
        while True:
            await asyncio.sleep(self._lease_ms / 3000)
            for room, writer in list(self._writers.items()):
                if writer.idle_for() > self._lease_ms * 3 / 1000:
                    await self._retire(room, writer)
                    continue
                try:
                    owner = await self.store.claim(room, self.node, self._lease_ms)
                except BackendError:
                    logger.warning("room %s: lease renewal failed", room)
                    continue
                if owner != self.node:
                    logger.warning("room %s: lease lost to node %s", room, owner)
                    await self._drop(room, writer)

    async def _retire(self, room: str, writer: RoomWriter) -> None:
        # An empty room that nobody used for a while gives up its lease, so
        # a node's leases do not grow with every room it ever wrote.
        async with writer.lock:
            if writer.room.members or writer.idle_for() <= self._lease_ms / 1000:
                return
            self._writers.pop(room, None)
        await writer.close()
        try:
            await self.store.release(room, self.node)
        except BackendError:
            logger.warning("room %s: could not release the lease", room)
        logger.info("room %s: idle, lease released", room)

    # Events ---------------------------------------------------------------

    def _publish(self, room: str, epoch: str, offset: int, frame: bytes) -> None:
        feed = self._feeds.get(room)
        if feed is not None:
            feed.offer(epoch, offset, frame)
        self._outbox.put_nowait((ROOM_CHANNEL.format(room), offset, frame))

    def _notify(self, notice: Notice) -> None:
        # Notices have no offset to drop a second copy by, so this node's
        # own listeners get them back from the broker like everyone else's.
        frame = None if notice.message is None else event_encoder.encode(notice.message)
        envelope = NoticeFrame(frame, notice.user, notice.close)
        self._outbox.put_nowait(
            (NOTICE_CHANNEL.format(notice.room), 0, encoder.encode(envelope))
        )

    async def _send_outbox(self) -> None:
        # One sender keeps a room's events in offset order on the broker,
        # which spares the other nodes a gap repair for every reordering.
        while True:
            item = await self._outbox.get()
            if item is None:
                return
            channel, offset, frame = item
            try:
                await self.broker.publish(channel, frame)
            except BackendError:
                # An event is stored: other nodes see the gap at the next
                # event, or resync when the broker connection comes back.
                logger.warning("%s: publish of offset %d failed", channel, offset)

    async def listen(self, room: str, listener: Listener) -> None:
        """Deliver the events of ``room`` to ``listener`` from now on."""
        lock = self._feed_locks.setdefault(room, asyncio.Lock())
        async with lock:
            feed = self._feeds.get(room)
            if feed is None:
                feed = RoomFeed(room, self.store)
                await self.broker.subscribe(ROOM_CHANNEL.format(room), feed.receive)
                await self.broker.subscribe(
                    NOTICE_CHANNEL.format(room), feed.receive_notice
                )
                try:
                    head = await self.store.open_room(room)
                except BackendError as exc:
                    await self.broker.unsubscribe(
                        ROOM_CHANNEL.format(room), feed.receive
                    )
                    await self.broker.unsubscribe(
                        NOTICE_CHANNEL.format(room), feed.receive_notice
                    )
                    raise Refused(ErrorCode.UNAVAILABLE, "store unreachable") from exc
                feed.start(head.epoch, head.offset)
                self._feeds[room] = feed
            feed.listeners.add(listener)

    async def unlisten(self, room: str, listener: Listener) -> None:
        """Stop delivering ``room`` to ``listener``."""
        lock = self._feed_locks.setdefault(room, asyncio.Lock())
        async with lock:
            feed = self._feeds.get(room)
            if feed is None:
                return
            feed.listeners.discard(listener)
            if feed.listeners:
                return
            del self._feeds[room]
            await feed.close()
            await self.broker.unsubscribe(ROOM_CHANNEL.format(room), feed.receive)
            await self.broker.unsubscribe(
                NOTICE_CHANNEL.format(room), feed.receive_notice
            )

    async def history(
        self, room: str, epoch: str, after: int, until: int
    ) -> list[EncodedEvent] | None:
        """Stored events ``after + 1`` to ``until``, or ``None`` if lost."""
        frames = await self.store.read(room, epoch, after, until)
        if frames is None:
            return None
        return [
            EncodedEvent(room, after + 1 + index, frame)
            for index, frame in enumerate(frames)
        ]

    async def _resync_feeds(self) -> None:
        # Messages published while the broker was away are lost; offering
        # the store's head makes each feed notice and fill its gap.
        for room, feed in list(self._feeds.items()):
            try:
                head = await self.store.open_room(room)
                frames = await self.store.read(
                    room, head.epoch, head.offset - 1, head.offset
                )
            except BackendError:
                logger.warning("room %s: resync after reconnect failed", room)
                continue
            if frames:
                feed.offer(head.epoch, head.offset, frames[0])

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


__all__ = ["AppendReply", "Hub", "JoinReply", "RefusedReply", "now_ms"]
