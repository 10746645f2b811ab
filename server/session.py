"""One client connection: decode, authorize, rate-limit, and a send queue.

A session reads frames one at a time and answers each command before it
reads the next, so a client's commands apply in the order it sent them.
Everything it sends (replies and room events) is written to the socket at
once while the socket takes it (:mod:`server.transport`), and otherwise
waits in one bounded queue drained by its own task: a client that reads
too slowly fills its queue and is disconnected, and never holds up a room's
other members.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
from starlette.websockets import WebSocket

from client_sdk.codec import Codec, FrameError
from client_sdk.protocol import (
    PROTOCOL_VERSION,
    Ack,
    Broadcast,
    ClientMessage,
    CloseCode,
    Error,
    ErrorCode,
    ExamCommand,
    Hello,
    Join,
    Leave,
    LeaveReason,
    LessonCommand,
    LessonSnapshot,
    Limits,
    MediaAnswer,
    MediaCandidate,
    MediaLeave,
    MediaOffer,
    Member,
    Ping,
    Pong,
    Probe,
    ProbeReply,
    Role,
    TurnCommand,
    VideoQuality,
    VideoQualityAnswer,
)
from media.errors import MediaError, RoomClosed
from rooms.errors import BackendError, Refused
from rooms.feed import EncodedEvent, EncodedNotice
from rooms.hub import Hub
from rooms.room import JoinRoom, LeaveRoom, LessonAction, RoomCommand, SendBroadcast
from rooms.wire import AppendReply, JoinReply, RefusedReply, Reply

from .auth import Claims
from .exam_session import exam_command
from .flow import SendQueue, TokenBucket
from .media_hub import MediaHub
from .metrics import Stats
from .settings import Settings
from .transport import FrameProtocol, Framer, frame_protocol

logger = logging.getLogger(__name__)

R = TypeVar("R")

BAD_FRAME_WINDOW = 10.0
PROBE_INTERVAL = 15.0
STAFF_ROLES = frozenset({Role.TEACHER, Role.CO_TEACHER, Role.PROCTOR, Role.ADMIN})
RATE_STRIKE_RESET = 1.0
CLOSE_TIMEOUT = 2.0
#: Refusals after which a join may still have reached the room's writer.
UNSURE_ERRORS = frozenset({ErrorCode.UNAVAILABLE, ErrorCode.INTERNAL})


class JoinedFrame(msgspec.Struct, tag_field="type", omit_defaults=True, tag="joined"):
    """:class:`Joined` with its roster encoded already, as the room made it.

    The same frame on the wire: the roster's bytes are embedded as they
    are, so a join costs the copy of the roster, not its encoding.
    """

    id: str
    room: str
    epoch: str
    offset: int
    recovered: bool
    roster: msgspec.Raw | None = None


@dataclass(slots=True)
class _Membership:
    """A joined room as this connection sees it."""

    room: str
    #: False while the join is being answered: events wait in ``held``.
    live: bool = False
    last: int = 0
    held: list[EncodedEvent] = field(default_factory=list)


class Session:
    """Serves one accepted WebSocket until it closes."""

    __slots__ = (
        "_asgi_send",
        "_bad_frames",
        "_bucket",
        "_busy",
        "_closer",
        "_closing",
        "_codec",
        "_drainer",
        "_draining",
        "_framer",
        "_hub",
        "_idle",
        "_last_strike",
        "_media",
        "_media_rooms",
        "_member",
        "_out",
        "_probe_sent",
        "_prober",
        "_queue",
        "_reader",
        "_rejoining",
        "_rooms",
        "_rtts",
        "_sender",
        "_settings",
        "_stats",
        "_strikes",
        "_unsure",
        "_ws",
        "claims",
        "id",
    )

    def __init__(
        self,
        websocket: WebSocket,
        claims: Claims,
        codec: Codec[ClientMessage],
        hub: Hub,
        settings: Settings,
        stats: Stats,
        asgi_send: Callable[[MutableMapping[str, Any]], Awaitable[None]] | None = None,
        media: MediaHub | None = None,
        framer: Framer | None = None,
    ) -> None:
        self.id = secrets.token_hex(6)
        self._asgi_send = asgi_send or websocket.send
        #: The connection's protocol when it takes whole frames directly
        #: (see :mod:`server.transport`); None sends through ASGI.
        self._out = frame_protocol(websocket.scope)
        self._framer = framer or Framer()
        self._media = media
        self._media_rooms: set[str] = set()
        self.claims = claims
        self._ws = websocket
        self._codec = codec
        self._hub = hub
        self._settings = settings
        self._stats = stats
        self._member = claims.member()
        self._rooms: dict[str, _Membership] = {}
        #: Rooms whose join failed in a way that may have reached the writer
        #: (a rebuilt writer counts this connection's pending joins present):
        #: the connection's end leaves them too.
        self._unsure: set[str] = set()
        self._queue = SendQueue(settings.send_queue)
        #: Drains the queue; made on the first frame that must wait when the
        #: session writes directly, which an idle or quick client never has.
        self._sender: asyncio.Task[None] | None = None
        if self._out is not None:
            self._out.forget_handshake()
        self._bucket = TokenBucket(settings.messages_per_second, settings.burst)
        self._strikes = 0
        self._last_strike = 0.0
        # Made when first needed: most connections never use them.
        self._bad_frames: collections.deque[float] | None = None
        self._closing = False
        self._reader: asyncio.Task[None] | None = None
        #: The next round-trip probe, and the one waiting for its answer.
        self._prober: asyncio.TimerHandle | None = None
        self._probe_sent: tuple[str, float] | None = None
        self._rtts: collections.deque[int] | None = None
        self._closer: asyncio.Task[None] | None = None
        #: Joins sent again for rooms that marked this connection gone.
        self._rejoining: dict[str, asyncio.Task[None]] = {}
        self._draining = False
        self._drainer: asyncio.Task[None] | None = None
        #: A command is being served; ``_idle`` exists only while a drain
        #: waits for that command's end.
        self._busy = False
        self._idle: asyncio.Event | None = None

    def __repr__(self) -> str:
        return f"<Session {self.id} user={self.claims.user} role={self.claims.role}>"

    # Lifecycle -------------------------------------------------------------

    async def run(self) -> None:
        """Greet the client, then serve its commands until it goes away."""
        if self._out is None:
            self._sender = asyncio.create_task(self._asgi_send_loop())
            # Through plain ASGI the reader is a task of its own, which
            # _close cancels: not every server ends ``receive`` on a close.
            self._reader = asyncio.create_task(self._read_loop())
        self._send(self._hello())
        try:
            if self._reader is None:
                # The protocol ends ``receive`` with a disconnect once the
                # close frame is sent or the socket is dropped (_close).
                await self._read_loop()
            else:
                await asyncio.wait({self._reader})
        finally:
            if self._prober is not None:
                self._prober.cancel()
            tasks = [t for t in (self._sender, self._drainer) if t]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._closer is not None:
                await asyncio.gather(self._closer, return_exceptions=True)
            await self._leave_all()

    def _hello(self) -> Hello:
        settings = self._settings
        return Hello(
            protocol=PROTOCOL_VERSION,
            session=self.id,
            node=self._hub.node,
            user=self.claims.user,
            name=self.claims.name,
            role=self.claims.role,
            rooms=list(self.claims.rooms),
            server_time=self._hub.clock(),
            limits=Limits(
                max_frame_bytes=settings.max_frame_bytes,
                messages_per_second=settings.messages_per_second,
                burst=settings.burst,
                send_queue=settings.send_queue,
                ping_interval_ms=int(settings.ping_interval * 1000),
                ping_timeout_ms=int(settings.ping_timeout * 1000),
                max_bad_frames=settings.max_bad_frames,
                bad_frame_window_ms=int(BAD_FRAME_WINDOW * 1000),
            ),
            ice_servers=self._media.ice_info() if self._media else [],
        )

    async def _read_loop(self) -> None:
        receive = self._ws.receive
        while True:
            message = await receive()
            kind = message["type"]
            if kind == "websocket.disconnect":
                return
            if kind != "websocket.receive":
                continue
            self._busy = True
            try:
                await self._on_frame(message)
            finally:
                self._busy = False
                if self._idle is not None:
                    self._idle.set()

    async def _send_loop(self, out: FrameProtocol) -> None:
        # Frames wait in the queue only while the socket cannot take them
        # (see _enqueue); this task writes them once it can again.
        queue = self._queue
        framer = self._framer
        binary = self._codec.binary
        stats = self._stats
        while True:
            await queue.wait()
            # The queue stays non-empty until its frames are written, so no
            # frame arriving meanwhile can overtake them (see _enqueue).
            while not queue.empty():
                await out.wait_writable()
                if not out.open_for_frames():
                    return
                out.write_frame(framer.frame(queue.get_nowait(), binary))
                stats.frames_out += 1

    async def _asgi_send_loop(self) -> None:
        # Frames go straight to the ASGI server's send callable: Starlette's
        # wrapper re-checks the connection state for every frame, which costs
        # more than the send itself when one event fans out to a whole room.
        send = self._asgi_send
        binary = self._codec.binary
        stats = self._stats
        queue = self._queue
        while True:
            frame = await queue.get()
            while True:
                if binary:
                    await send({"type": "websocket.send", "bytes": frame})
                else:
                    await send({"type": "websocket.send", "text": frame.decode()})
                stats.frames_out += 1
                # Drain what is already queued before sleeping on the queue
                # again: one wake-up then serves a burst of events.
                if queue.empty():
                    break
                frame = queue.get_nowait()

    def close_soon(self, code: CloseCode, reason: str) -> None:
        """Close the connection with ``code``; safe to call from a callback."""
        if self._closing:
            return
        self._closing = True
        self._stats.closes[code.value] += 1
        logger.info("session %s: closing with %d (%s)", self.id, code.value, reason)
        self._closer = asyncio.create_task(self._close(code, reason))

    def drain(self, code: CloseCode, reason: str) -> None:
        """Close with ``code`` once the command under way is answered.

        Commands that arrive meanwhile are not served: the client sends them
        again, under the same ids, on its next connection.
        """
        if self._draining or self._closing:
            return
        self._draining = True
        self._drainer = asyncio.create_task(self._close_when_idle(code, reason))

    async def _close_when_idle(self, code: CloseCode, reason: str) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                if self._busy:
                    self._idle = asyncio.Event()
                    await self._idle.wait()
                # The last reply must leave before the close frame does.
                for _ in range(int(CLOSE_TIMEOUT / 0.01)):
                    if self._queue.empty():
                        break
                    await asyncio.sleep(0.01)
        self.close_soon(code, reason)

    async def _close(self, code: CloseCode, reason: str) -> None:
        try:
            await asyncio.wait_for(self._ws.close(code.value, reason), CLOSE_TIMEOUT)
        except Exception:
            logger.debug("session %s: close handshake did not finish", self.id)
            # A client that stopped reading never takes the close frame. The
            # connection's protocol can drop its socket, and what the kernel
            # queued for it, at once; through plain ASGI, which cannot abort
            # a socket, it lingers until the client reads again or goes away.
            if self._out is not None:
                self._out.abort()
        if self._reader is not None:
            self._reader.cancel()

    async def _leave_all(self) -> None:
        rooms = list(self._rooms)
        self._rooms.clear()
        # A join sent again must reach the room before this connection's
        # leave does, or the room would keep a connection that is gone.
        if self._rejoining:
            await asyncio.gather(*self._rejoining.values(), return_exceptions=True)
        unsure = [room for room in self._unsure if room not in rooms]
        self._unsure.clear()
        if self._media is not None:
            for room in list(self._media_rooms):
                try:
                    await self._media.leave(room, self.claims.user, self.id)
                except MediaError:
                    logger.warning("session %s: media of %s not closed", self.id, room)
            self._media_rooms.clear()
        for room in rooms:
            await self._hub.unlisten(room, self)
        rooms += unsure
        results = await asyncio.gather(
            *(
                self._hub.submit(
                    room,
                    LeaveRoom(self.claims.user, self.id, LeaveReason.DISCONNECTED),
                )
                for room in rooms
            ),
            return_exceptions=True,
        )
        for room, result in zip(rooms, results, strict=True):
            if isinstance(result, BaseException):
                logger.warning(
                    "session %s: leave of room %s failed: %r", self.id, room, result
                )

    # Sending ---------------------------------------------------------------

    def _send(self, message: object) -> None:
        self._enqueue(self._codec.encode(message))

    def _enqueue(self, frame: bytes) -> None:
        if self._closing:
            return
        out = self._out
        if out is not None:
            if self._queue.empty() and out.open_for_frames():
                # The common case: written now, in the loop that fans an
                # event out to the room, with the frame the room shares.
                out.write_frame(self._framer.frame(frame, self._codec.binary))
                self._stats.frames_out += 1
                return
            self._stats.frames_waited += 1
            if self._sender is None:
                self._sender = asyncio.create_task(self._send_loop(out))
        try:
            self._queue.put_nowait(frame)
        except asyncio.QueueFull:
            self._stats.send_queue_drops += 1
            self.close_soon(CloseCode.SEND_QUEUE_FULL, "send queue full")

    def _error(
        self,
        code: ErrorCode,
        message: str,
        command_id: str | None = None,
        field: str | None = None,
    ) -> None:
        self._stats.errors[code.value] += 1
        self._send(Error(code=code, message=message, id=command_id, field=field))

    def notice(self, notice: EncodedNotice) -> None:
        """A notice of a joined room: taken if it is for this connection."""
        if notice.user is not None:
            if notice.user != self.claims.user:
                return
        elif self.claims.role not in STAFF_ROLES:
            return
        if notice.close is not None:
            self.close_soon(CloseCode(notice.close), "removed by a teacher")
        elif notice.msgpack is not None:
            self._enqueue(notice.msgpack if self._codec.binary else notice.json)

    def membership(self, room: str) -> tuple[Member, str] | None:
        """This connection's member and id in ``room``, if it joined it."""
        return (self._member, self.id) if room in self._rooms else None

    def forgotten(self, room: str) -> None:
        """``room`` marked this connection's member gone: join it again.

        A room's writer rebuilt on another node knows only that node's
        connections and marks the other members gone, though their
        connections are open; this one says it is still here.
        """
        if self._closing or room not in self._rooms or room in self._rejoining:
            return
        self._rejoining[room] = asyncio.create_task(self._join_again_soon(room))

    async def _join_again_soon(self, room: str) -> None:
        try:
            await self._join_again(room)
        except Exception as exc:
            # The next command in the room joins again (see _in_room).
            logger.warning(
                "session %s: could not join %s again: %r", self.id, room, exc
            )
        finally:
            self._rejoining.pop(room, None)

    async def _join_again(self, room: str) -> bool:
        """Join ``room`` again as this connection; whether the room let it."""
        reply = await self._hub.submit(room, self._join_command(again=True))
        if not isinstance(reply, JoinReply):
            logger.warning(
                "session %s: not let into %s again: %r", self.id, room, reply
            )
            return False
        logger.info("session %s: joined %s again after a rebuild", self.id, room)
        return True

    def deliver(self, event: EncodedEvent) -> None:
        """A room event from the hub, in offset order."""
        membership = self._rooms.get(event.room)
        if membership is None:
            return
        if not membership.live:
            membership.held.append(event)
            return
        if event.offset <= membership.last:
            return
        membership.last = event.offset
        self._enqueue(event.msgpack if self._codec.binary else event.json)

    def reset(self, room: str) -> None:
        """The hub lost events of ``room``: make the client resync."""
        if room in self._rooms:
            self.close_soon(CloseCode.RESYNC, f"events of room {room} were lost")

    # Receiving -------------------------------------------------------------

    async def _on_frame(self, message: MutableMapping[str, Any]) -> None:
        if self._draining:
            return
        frame = message.get("bytes")
        if frame is None:
            text = message.get("text") or ""
            if self._codec.binary:
                self._bad_frame(
                    FrameError(
                        ErrorCode.MALFORMED,
                        "this subprotocol takes MessagePack in binary frames",
                    )
                )
                return
            frame = text.encode()
        try:
            command = self._codec.decode(frame)
        except FrameError as exc:
            self._bad_frame(exc, self._codec.command_id(frame))
            return

        self._stats.messages_in[type(command).__name__.lower()] += 1
        if not self._admit(command.id):
            return
        try:
            await self._dispatch(command)
        except Refused as refused:
            self._error(refused.code, refused.message, command.id, refused.field)
        except Exception:
            logger.exception("session %s: command %s failed", self.id, command.id)
            self._error(ErrorCode.INTERNAL, "internal error; retry", command.id)

    def _bad_frame(self, exc: FrameError, command_id: str | None = None) -> None:
        self._stats.messages_in["undecodable"] += 1
        self._error(exc.code, exc.message, command_id, exc.field)
        now = time.monotonic()
        if self._bad_frames is None:
            self._bad_frames = collections.deque()
        bad = self._bad_frames
        bad.append(now)
        while bad and bad[0] < now - BAD_FRAME_WINDOW:
            bad.popleft()
        if len(bad) > self._settings.max_bad_frames:
            self.close_soon(CloseCode.TOO_MANY_ERRORS, "too many undecodable frames")

    def _admit(self, command_id: str) -> bool:
        if self._bucket.take():
            return True
        now = time.monotonic()
        if now - self._last_strike > RATE_STRIKE_RESET:
            self._strikes = 0
        self._strikes += 1
        self._last_strike = now
        if self._strikes > self._settings.burst:
            self.close_soon(CloseCode.RATE_LIMIT_EXCEEDED, "rate limit exceeded")
        else:
            self._error(
                ErrorCode.RATE_LIMITED,
                f"more than {self._settings.messages_per_second:g} messages per "
                "second; slow down and retry",
                command_id,
            )
        return False

    async def _dispatch(self, command: ClientMessage) -> None:
        if isinstance(command, Ping):
            self._send(
                Pong(
                    id=command.id,
                    client_time=command.client_time,
                    server_time=self._hub.clock(),
                )
            )
        elif isinstance(command, Join):
            await self._join(command)
        elif isinstance(command, Leave):
            await self._leave(command)
        elif isinstance(command, Broadcast):
            await self._broadcast(command)
        elif isinstance(command, ProbeReply):
            self._probe_answered(command)
        elif isinstance(command, ExamCommand):
            joined = command.room in self._rooms
            reply = await self._in_room(
                command.room,
                lambda: exam_command(
                    self._hub, self._member, joined, command, self._media
                ),
            )
            self._send(reply)
        elif isinstance(
            command, MediaOffer | MediaCandidate | MediaLeave | VideoQuality
        ):
            await self._media_command(command)
        else:
            await self._lesson(command)

    async def _lesson(self, command: LessonCommand | TurnCommand) -> None:
        room = command.room
        if room not in self._rooms:
            raise Refused(ErrorCode.NOT_JOINED, f"not in room {room!r}", "room")
        action = LessonAction(
            actor=self._member,
            command=command,
            received_at=self._hub.clock(),
            round_trip_ms=self._round_trip(),
        )
        appended = await self._in_room(
            room, lambda: self._submit(room, action, AppendReply, command.id)
        )
        self._send(Ack(id=command.id, room=room, offset=appended.offset))

    async def _media_command(
        self, command: MediaOffer | MediaCandidate | MediaLeave | VideoQuality
    ) -> None:
        room = command.room
        if room not in self._rooms:
            raise Refused(ErrorCode.NOT_JOINED, f"not in room {room!r}", "room")
        if self._media is None:
            raise Refused(ErrorCode.UNAVAILABLE, "this node serves no media")
        user = self.claims.user
        try:
            if isinstance(command, MediaOffer):
                answer = await self._media.offer(
                    room, user, self.id, command.sdp, notify=self._send
                )
                self._media_rooms.add(room)
                self._send(MediaAnswer(id=command.id, room=room, sdp=answer))
                return
            if isinstance(command, VideoQuality):
                forwarded, layers = self._media.video_quality(
                    room, user, command.quality
                )
                self._send(
                    VideoQualityAnswer(
                        id=command.id,
                        room=room,
                        requested=command.quality,
                        forwarded=forwarded,
                        layers=layers,
                    )
                )
                return
            if isinstance(command, MediaCandidate):
                await self._media.candidate(
                    room,
                    user,
                    command.candidate,
                    command.sdp_mid,
                    command.sdp_mline_index,
                )
            else:
                self._media_rooms.discard(room)
                await self._media.leave(room, user, self.id)
        except RoomClosed as exc:
            raise Refused(ErrorCode.UNAVAILABLE, "the room's media is closing") from exc
        except BackendError as exc:
            raise Refused(ErrorCode.UNAVAILABLE, "store unreachable") from exc
        except MediaError as exc:
            field = {MediaOffer: "sdp", MediaCandidate: "candidate"}.get(type(command))
            raise Refused(ErrorCode.INVALID, str(exc), field) from exc
        self._send(Ack(id=command.id, room=room))

    # Round trip --------------------------------------------------------------

    def _probe(self, sent: int) -> None:
        # The server measures each connection's round trip itself, so that a
        # quiz can credit a slow link without trusting what a client claims.
        # The first few come a second apart so a student has a measure
        # before the first question; a client that never answers gets no
        # credit and only the slow probes after that. A timer rather than a
        # task per connection: a lesson keeps thousands of them.
        if self._closing:
            return
        nonce = secrets.token_hex(4)
        # A probe not answered by now is forgotten.
        self._probe_sent = (nonce, time.monotonic())
        self._send(Probe(nonce=nonce, server_time=self._hub.clock()))
        self._stats.probes_out += 1
        delay = PROBE_INTERVAL if sent >= 3 else 1.0
        loop = asyncio.get_running_loop()
        self._prober = loop.call_later(delay, self._probe, sent + 1)

    def _probe_answered(self, reply: ProbeReply) -> None:
        if self._probe_sent is None or self._probe_sent[0] != reply.nonce:
            return
        sent = self._probe_sent[1]
        self._probe_sent = None
        if self._rtts is None:
            self._rtts = collections.deque(maxlen=5)
        self._rtts.append(int((time.monotonic() - sent) * 1000))

    def _round_trip(self) -> int:
        """The median of the last few measured round trips, in milliseconds."""
        if not self._rtts:
            return 0
        return int(statistics.median(self._rtts))

    async def _join(self, command: Join) -> None:
        room = command.room
        if not self.claims.may_enter(room):
            raise Refused(
                ErrorCode.FORBIDDEN, f"the token does not open room {room!r}", "room"
            )
        if room in self._rooms:
            await self._hub.unlisten(room, self)

        # Listen first, holding events back: whatever the writer appends
        # after the join's snapshot then reaches this connection exactly once.
        membership = _Membership(room)
        self._rooms[room] = membership
        try:
            await self._hub.listen(room, self)
            joined = await self._submit(
                room, self._join_command(), JoinReply, command.id
            )
        except BaseException as exc:
            self._rooms.pop(room, None)
            await self._hub.unlisten(room, self)
            if not isinstance(exc, Refused) or exc.code in UNSURE_ERRORS:
                self._unsure.add(room)
            raise
        self._unsure.discard(room)

        missed = None
        if (
            command.last_offset is not None
            and command.epoch == joined.epoch
            and command.last_offset <= joined.offset
        ):
            try:
                missed = await self._hub.history(
                    room, joined.epoch, command.last_offset, joined.offset
                )
            except BackendError:
                # The member is in the room already; a fresh snapshot is
                # the answer that needs no history.
                logger.warning("session %s: history of %s unreadable", self.id, room)
        self._send(
            JoinedFrame(
                id=command.id,
                room=room,
                epoch=joined.epoch,
                offset=joined.offset,
                recovered=missed is not None,
                roster=None if missed is not None else msgspec.Raw(joined.roster),
            )
        )
        if missed is None and joined.lesson is not None:
            self._send(LessonSnapshot(room=room, lesson=joined.lesson))
        binary = self._codec.binary
        for event in missed or ():
            self._enqueue(event.msgpack if binary else event.json)
        membership.last = joined.offset
        membership.live = True
        held, membership.held = membership.held, []
        for event in held:
            self.deliver(event)
        if joined.lesson is not None and self._prober is None:
            self._probe(0)

    async def _leave(self, command: Leave) -> None:
        room = command.room
        if room not in self._rooms:
            raise Refused(ErrorCode.NOT_JOINED, f"not in room {room!r}", "room")
        # The room hears of the leave before this connection forgets the
        # room: if the writer cannot be reached, a retry or the disconnect
        # clean-up still leaves it.
        leave = LeaveRoom(self.claims.user, self.id, LeaveReason.LEFT)
        appended = await self._submit(room, leave, AppendReply, command.id)
        if self._rooms.pop(room, None) is not None:
            await self._hub.unlisten(room, self)
        if self._media is not None and room in self._media_rooms:
            self._media_rooms.discard(room)
            try:
                await self._media.leave(room, self.claims.user, self.id)
            except MediaError:
                logger.warning("session %s: media of %s not closed", self.id, room)
        self._send(Ack(id=command.id, room=room, offset=appended.offset))

    async def _broadcast(self, command: Broadcast) -> None:
        room = command.room
        if room not in self._rooms:
            raise Refused(ErrorCode.NOT_JOINED, f"not in room {room!r}", "room")
        send = SendBroadcast(
            sender=self._member,
            command_id=command.id,
            topic=command.topic,
            body=command.body,
        )
        appended = await self._in_room(
            room, lambda: self._submit(room, send, AppendReply, command.id)
        )
        self._send(Ack(id=command.id, room=room, offset=appended.offset))

    async def _submit(
        self, room: str, command: RoomCommand, kind: type[R], command_id: str
    ) -> R:
        return self._expect(await self._hub.submit(room, command), kind, command_id)

    async def _in_room(self, room: str, attempt: Callable[[], Awaitable[R]]) -> R:
        """``attempt`` a command in ``room``, joining again if the room forgot us.

        A room's writer rebuilt on another node (its node restarted or
        failed) knows only that node's connections, and marks the other
        members gone though their connections are open. The first command
        of such a member is refused as not joined: the connection joins
        again, as itself, and the command is tried once more.
        """
        try:
            return await attempt()
        except Refused as refused:
            if refused.code is not ErrorCode.NOT_JOINED or room not in self._rooms:
                raise
            if not await self._join_again(room):
                raise refused from None
        return await attempt()

    def _join_command(self, *, again: bool = False) -> JoinRoom:
        return JoinRoom(
            member=self._member,
            session=self.id,
            address=self._ws.client.host if self._ws.client else "",
            json=not self._codec.binary,
            again=again,
        )

    def _expect(self, reply: Reply, kind: type[R], command_id: str) -> R:
        if isinstance(reply, RefusedReply):
            raise Refused(reply.code, reply.message, reply.field)
        if not isinstance(reply, kind):
            logger.error(
                "session %s: command %s got %s", self.id, command_id, type(reply)
            )
            raise Refused(ErrorCode.INTERNAL, "unexpected reply from the room")
        return reply
