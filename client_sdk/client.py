"""The asyncio Python client of a lophoc node.

A :class:`Client` opens one WebSocket (``lophoc.v1.msgpack`` or
``lophoc.v1.json``), sends commands and waits for their replies, and yields
the events of the rooms it joined, each exactly once and in offset order.
When the connection drops, or the server asks for a resync, it reconnects
by itself with exponential backoff, joins its rooms again from the last
offset it saw, and sends unanswered commands again under the same id, which
the server applies once.

It is also the driver of the integration tests and the load benchmarks, so
it speaks only the documented protocol (docs/protocol.md) and imports
nothing of the server.

Example::

    async with Client("ws://localhost:8765/ws", token, "demo") as client:
        await client.join("demo")
        async for event in client.events():
            ...
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import secrets
from collections.abc import AsyncIterator, Coroutine
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit, urlunsplit

from .backoff import Backoff
from .clock import ServerClock, wall_ms
from .codec import client_codec
from .cursor import JoinOutcome, RoomCursor, Verdict
from .errors import (
    ClientClosed,
    ClientError,
    CommandError,
    ConnectFailed,
    ConnectionLost,
    ConnectionRefused,
    ProtocolViolation,
)
from .events import (
    ClientEvent,
    ConnectionState,
    Disconnected,
    EventStream,
    Reconnected,
    RejoinFailed,
    Resumed,
    Resynced,
    RoomNotice,
)
from .exam import ExamCommands
from .lesson import LessonCommands
from .link import (
    ABNORMAL_CLOSURE,
    MOVED_CODES,
    RECONNECT_CODES,
    REFUSAL_CODES,
    FrameHook,
    Link,
    LinkLost,
    LinkOptions,
    open_link,
)
from .protocol import (
    MSGPACK_SUBPROTOCOL,
    Ack,
    Broadcast,
    Error,
    ErrorCode,
    Event,
    Hello,
    Join,
    Joined,
    Leave,
    Ping,
    Pong,
    Probe,
    ProbeReply,
    RoomEvent,
    ServerMessage,
)
from .requests import RETRYABLE_ERRORS, Reply, Requester
from .turns import TurnCommands

logger = logging.getLogger(__name__)


class Client(LessonCommands, TurnCommands, ExamCommands, ServerClock, Requester):
    """A connection to a lophoc node that survives network drops.

    ``url`` is the WebSocket endpoint (``ws://host:port/ws``); ``room`` and
    ``token`` are added to its query string for the handshake. With
    ``reconnect`` the client reconnects after a lost connection following
    ``backoff``. ``request_timeout`` and ``retries`` are the defaults of
    every command: each attempt waits that long for a reply, then sends the
    command again with the same id. ``on_frame``, for debugging and tests,
    is called with every frame received, undecoded; it must not block.

    In a lesson room the client answers the server's round-trip probes by
    itself; the lesson commands are methods (see
    :class:`~client_sdk.lesson.LessonCommands`), and so are the server's
    clock and waiting for a server time (see
    :class:`~client_sdk.clock.ServerClock`).

    Events are kept until the application reads them, without bound: a
    client that joins rooms must read :meth:`events`, or its memory grows
    with every event of those rooms. (A bound would have to drop events or
    stop reading the socket, and the server already disconnects a client
    whose send queue fills up.)
    """

    def __init__(
        self,
        url: str,
        token: str,
        room: str,
        *,
        subprotocol: str = MSGPACK_SUBPROTOCOL,
        reconnect: bool = True,
        backoff: Backoff | None = None,
        request_timeout: float = 10.0,
        retries: int = 3,
        open_timeout: float = 10.0,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        max_frame_bytes: int = 4 * 2**20,
        proxy: str | Literal[True] | None = True,
        on_frame: FrameHook | None = None,
    ) -> None:
        if retries < 0:
            raise ValueError(f"retries must not be negative, got {retries}")
        if request_timeout <= 0:
            raise ValueError(f"request_timeout must be positive, got {request_timeout}")
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss"):
            raise ValueError(f"url must start with ws:// or wss://, got {url!r}")
        query = urlencode({"room": room, "token": token})
        if parts.query:
            query = f"{parts.query}&{query}"
        client_codec(subprotocol)  # fail here on an unknown subprotocol
        #: The endpoint without the query, which holds the token: safe to log.
        self.url = urlunsplit(parts._replace(query="", fragment=""))
        self.room = room
        self.subprotocol = subprotocol
        self.reconnect = reconnect
        self.backoff = backoff or Backoff()
        self.request_timeout = request_timeout
        self.retries = retries
        self._options = LinkOptions(
            url=urlunsplit(parts._replace(query=query, fragment="")),
            safe_url=self.url,
            subprotocol=subprotocol,
            open_timeout=open_timeout,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            max_frame_bytes=max_frame_bytes,
            proxy=proxy,
            on_frame=on_frame,
        )

        self._state = ConnectionState.IDLE
        self._link: Link | None = None
        self._latest: Link | None = None
        self._ready = asyncio.Event()
        self._failure: ClientError | None = None
        self._closing = False
        self._rooms: dict[str, RoomCursor] = {}
        self._events = EventStream()
        self._ids = itertools.count(1)
        # Ids must be unique across all of a user's devices, not only this
        # client (docs/protocol.md, deduplication): 64 random bits.
        self._id_prefix = secrets.token_hex(8)
        self._supervisor: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[tuple[int, str]] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"<Client {self.url} room={self.room} {self._state.value}>"

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # State -------------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        """Where the connection stands now."""
        return self._state

    @property
    def hello(self) -> Hello | None:
        """The ``hello`` of the current connection, if one is open."""
        return self._link.hello if self._link is not None else None

    @property
    def rooms(self) -> dict[str, tuple[str | None, int | None]]:
        """Each followed room with the epoch and last offset seen in it."""
        return {name: (c.epoch, c.offset) for name, c in self._rooms.items()}

    # Lifecycle ---------------------------------------------------------------

    async def connect(self) -> Hello:
        """Open the connection and return the server's ``hello``.

        Makes one attempt: raises :class:`ConnectionRefused` when the server
        refuses the handshake (bad token, wrong room) and
        :class:`ConnectFailed` when it cannot be reached. Once connected,
        lost connections are restored in the background.
        """
        if self._state is not ConnectionState.IDLE:
            raise ClientError(f"connect() called on a {self._state.value} client")
        self._state = ConnectionState.CONNECTING
        try:
            link = await open_link(self._options)
        except BaseException:
            self._state = ConnectionState.IDLE
            raise
        self._set_ready(link)
        self._supervisor = asyncio.create_task(self._supervise(link))
        return link.hello

    async def close(self, reason: str = "") -> None:
        """Close the connection and stop every task of the client."""
        if self._closing:
            return
        self._closing = True
        link, self._link = self._link, None
        self._ready.clear()
        if link is not None:
            await link.close(reason)
        tasks = [t for t in (self._supervisor, self._reader, *self._tasks) if t]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._finish(self._failure or ClientClosed())
        logger.info("client of %s closed", self.url)

    def _finish(self, failure: ClientError) -> None:
        self._failure = failure
        self._state = ConnectionState.CLOSED
        self._link = None
        # Wakes every command waiting for a connection, which then raises.
        self._ready.set()
        self._events.end(failure)

    def _set_ready(self, link: Link) -> None:
        self._link = link
        self._hello_offset_ms = link.hello_offset_ms
        self._state = ConnectionState.OPEN
        self._ready.set()

    # Keeping the connection --------------------------------------------------

    async def _supervise(self, link: Link) -> None:
        try:
            await self._keep(link)
        finally:
            # When close() cancels a reconnect, the new link is not in
            # self._link yet and close() cannot see it; the old link has
            # ended already, so aborting the latest is always safe.
            if self._latest is not None:
                self._latest.ws.transport.abort()

    async def _keep(self, link: Link) -> None:
        attempts = 0
        rejoin = False
        while True:
            self._latest = link
            self._reader = asyncio.create_task(
                link.read(functools.partial(self._on_message, link))
            )
            if rejoin and await self._rejoin(link):
                attempts = 0
                self._set_ready(link)
            try:
                code, reason = await self._reader
            except Exception:
                # Whatever broke the reader, the link is unusable: treat it
                # as a dropped connection rather than stop reconnecting.
                logger.exception("the reader failed")
                await link.close("client error", abandon=True)
                code, reason = ABNORMAL_CLOSURE, "client error"
            self._ready.clear()
            self._link = None
            for cursor in self._rooms.values():
                cursor.syncing = True
            if self._closing:
                return
            again = self.reconnect and (link.abandoned or code in RECONNECT_CODES)
            # A node that shuts down in good order is no fault of the network.
            moved = again and not link.abandoned and code in MOVED_CODES
            logger.log(
                logging.INFO if moved else logging.WARNING,
                "connection closed with %d (%s)%s",
                code,
                reason or "no reason",
                "; reconnecting" if again else "",
            )
            self._events.put(Disconnected(code, reason, again))
            if not again:
                refused = not link.abandoned and code in REFUSAL_CODES
                self._finish(
                    ConnectionRefused(code, reason)
                    if refused
                    else ConnectionLost(code, reason)
                )
                return
            self._state = ConnectionState.RECONNECTING
            try:
                link, attempts = await self._reopen(code, reason, attempts)
            except ClientError as exc:
                logger.error("giving up reconnecting: %s", exc)
                self._finish(exc)
                return
            self._events.put(Reconnected(link.hello, attempts))
            rejoin = True

    async def _reopen(self, code: int, reason: str, attempts: int) -> tuple[Link, int]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        while True:
            delay = self.backoff.delay(attempts)
            if not self.backoff.allows(attempts, loop.time() - started + delay):
                raise ConnectionLost(code, reason, attempts)
            await asyncio.sleep(delay)
            attempts += 1
            try:
                return await open_link(self._options), attempts
            except ConnectionRefused as exc:
                if exc.code in REFUSAL_CODES:
                    raise
                code, reason = exc.code, exc.reason
                logger.warning("reconnect attempt %d refused: %s", attempts, exc)
            except (ConnectFailed, ProtocolViolation) as exc:
                logger.warning("reconnect attempt %d failed: %s", attempts, exc)

    async def _rejoin(self, link: Link) -> bool:
        rooms = [cursor.room for cursor in self._rooms.values() if cursor.joined]
        results = await asyncio.gather(
            *(self._rejoin_room(link, room) for room in rooms), return_exceptions=True
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        if not failed:
            return True
        if not all(isinstance(r, LinkLost) for r in failed):
            logger.warning(
                "rejoining %d rooms failed: %r; starting over", len(rooms), failed[0]
            )
            await link.close("rejoin failed", abandon=True)
        return False

    async def _rejoin_room(self, link: Link, room: str) -> None:
        cursor = self._rooms.get(room)
        if cursor is None:
            return
        last_offset, epoch = cursor.resume_point
        command = Join(
            id=self.next_id(), room=room, last_offset=last_offset, epoch=epoch
        )
        try:
            await self._exchange(link, command, self.request_timeout)
        except CommandError as exc:
            if exc.code in RETRYABLE_ERRORS:
                raise
            logger.error("room %s: rejoin refused: %s", room, exc)
            self._rooms.pop(room, None)
            self._events.put(RejoinFailed(room, exc))

    async def _resync(self, link: Link, room: str) -> None:
        try:
            await self._rejoin_room(link, room)
        except (LinkLost, ClientClosed):
            # The reconnect joins the room again from its last offset.
            pass
        except (ClientError, TimeoutError):
            logger.warning("room %s: resync failed; reconnecting", room)
            await link.close("resync failed", abandon=True)

    # Receiving ---------------------------------------------------------------

    def _on_message(self, link: Link, message: ServerMessage) -> None:
        if isinstance(message, Event):
            self._on_event(link, message)
        elif isinstance(message, Joined):
            self._on_joined(message)
            link.resolve(message.id, message)
        elif isinstance(message, Reply) and message.id is not None:
            # An exam_state without an id is a notice, not a reply.
            if not link.resolve(message.id, message):
                logger.debug("reply to %s came after its command gave up", message.id)
        elif isinstance(message, Error):
            if message.id is None or not link.resolve(message.id, message):
                logger.warning(
                    "error from the server: %s %s", message.code, message.message
                )
        elif isinstance(message, Probe):
            # The server times the round trip from this reply, and a quiz
            # credits half of it to every answer: reply before anything else.
            self._spawn(self._answer_probe(link, message))
        elif isinstance(message, RoomNotice):
            self._on_notice(message)
        else:
            logger.warning("unexpected %s frame", type(message).__name__)

    async def _answer_probe(self, link: Link, probe: Probe) -> None:
        # Not request(): the server never answers a probe_reply.
        reply = ProbeReply(id=f"probe-{probe.nonce}", nonce=probe.nonce)
        try:
            await link.send(reply)
        except (LinkLost, ClientError):
            logger.debug("probe %s not answered: the link is gone", probe.nonce)

    def _on_notice(self, notice: RoomNotice) -> None:
        # Notices have no offset: they go straight to the stream, in the
        # order they arrived, for the rooms the client follows.
        if notice.room not in self._rooms:
            logger.debug("dropped a notice of room %s, not joined", notice.room)
            return
        self._events.put(notice)

    def _on_joined(self, joined: Joined) -> None:
        cursor = self._rooms.get(joined.room)
        if cursor is None:
            return
        outcome = cursor.on_joined(joined)
        if outcome is JoinOutcome.RESUMED:
            logger.info("room %s: resumed after offset %s", joined.room, cursor.offset)
            self._events.put(Resumed(joined.room, joined))
        elif outcome is JoinOutcome.RESET:
            logger.warning(
                "room %s: history lost; now epoch %s", joined.room, joined.epoch
            )
            self._events.put(Resynced(joined.room, joined))

    def _on_event(self, link: Link, event: RoomEvent) -> None:
        cursor = self._rooms.get(event.room)
        if cursor is None:
            logger.debug("dropped an event of room %s, which is not joined", event.room)
            return
        verdict = cursor.check(event)
        if verdict is Verdict.DELIVER:
            self._events.put(event)
        elif verdict is Verdict.GAP:
            # The server sends every offset in order, so this is a bug
            # somewhere; joining again from the last offset repairs it.
            logger.warning(
                "room %s: expected offset %s of epoch %s, got %d of %s; rejoining",
                event.room,
                None if cursor.offset is None else cursor.offset + 1,
                cursor.epoch,
                event.offset,
                event.epoch,
            )
            cursor.syncing = True
            self._spawn(self._resync(link, event.room))
        else:
            logger.debug("room %s: dropped offset %d", event.room, event.offset)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # Events ------------------------------------------------------------------

    async def next_event(self, timeout: float | None = None) -> ClientEvent:  # noqa: ASYNC109
        """The next item of the event stream.

        Raises :class:`TimeoutError` after ``timeout`` seconds, and once the
        client is closed and the stream drained, :class:`ClientClosed` (closed
        by the application) or the error that ended the connection.
        """
        return await self._events.get(timeout)

    def events(self) -> AsyncIterator[ClientEvent]:
        """Room events and connection changes, until the client is closed.

        Ends quietly after :meth:`close`; raises the error that ended the
        connection if it was lost for good.
        """
        return aiter(self._events)

    # Commands ----------------------------------------------------------------

    def _track_join(self, command: Join) -> None:
        cursor = self._rooms.get(command.room)
        if cursor is None:
            cursor = RoomCursor(command.room, command.epoch, command.last_offset)
            self._rooms[command.room] = cursor
        cursor.syncing = True

    async def join(
        self,
        room: str,
        *,
        last_offset: int | None = None,
        epoch: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
        retries: int | None = None,
    ) -> Joined:
        """Enter ``room``; its events then appear in :meth:`events`.

        Without ``last_offset`` and ``epoch``, a room the client followed
        before resumes from the last offset it saw. A join that asked to
        resume also yields a :class:`Resumed` or :class:`Resynced`.
        """
        cursor = self._rooms.get(room)
        if last_offset is None and epoch is None and cursor is not None:
            last_offset, epoch = cursor.resume_point
        elif cursor is not None:
            cursor.epoch, cursor.offset = epoch, last_offset
        command = Join(
            id=self.next_id(), room=room, last_offset=last_offset, epoch=epoch
        )
        try:
            return await self.request(command, timeout=timeout, retries=retries)
        except BaseException:
            cursor = self._rooms.get(room)
            if cursor is not None:
                if cursor.joined:
                    cursor.syncing = False
                else:
                    del self._rooms[room]
            raise

    async def leave(
        self,
        room: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
        retries: int | None = None,
    ) -> Ack:
        """Leave ``room``; the client stops following it at once.

        Leaving a room the client was in succeeds even when the connection
        dropped meanwhile and the new one was never in the room.
        """
        cursor = self._rooms.pop(room, None)
        command = Leave(id=self.next_id(), room=room)
        try:
            return await self.request(command, timeout=timeout, retries=retries)
        except BaseException as exc:
            if cursor is None:
                raise
            if isinstance(exc, CommandError) and exc.code is ErrorCode.NOT_JOINED:
                # The server forgot the room with the old connection, and
                # the new one never joined it: what leaving asked for.
                return Ack(id=command.id, room=room)
            self._rooms.setdefault(room, cursor)
            raise

    async def broadcast(
        self,
        room: str,
        topic: str,
        body: bytes = b"",
        *,
        id: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
        retries: int | None = None,
    ) -> Ack:
        """Send ``body`` to everyone in ``room``; the ack holds its offset."""
        command = Broadcast(id=id or self.next_id(), room=room, topic=topic, body=body)
        return await self.request(command, timeout=timeout, retries=retries)

    async def ping(self, *, timeout: float | None = None) -> Pong:  # noqa: ASYNC109
        """Ask for the server's time once."""
        command = Ping(id=self.next_id(), client_time=int(wall_ms()))
        return await self.request(command, timeout=timeout)
