"""A node's feed of one room: its events in offset order, to local listeners.

Every node with members of a room subscribes to the room's broker channel and
hands each event to its own connections. Pub/sub gives no delivery guarantee,
so the feed checks offsets: a duplicate is dropped, and a gap is filled from
the store before anything after it is delivered. Each event is decoded once
per node, however many members it has there.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

import msgspec

from client_sdk.protocol import (
    AnyNotice,
    Departure,
    LeaveReason,
    Member,
    MemberLeft,
    PresenceChanged,
    RoomEvent,
)

from .store import Store
from .wire import NoticeFrame

logger = logging.getLogger(__name__)


class _Header(msgspec.Struct):
    room: str
    offset: int
    epoch: str


class _Kind(msgspec.Struct):
    type: str = ""


_header_decoder = msgspec.msgpack.Decoder(_Header)
_kind_decoder = msgspec.msgpack.Decoder(_Kind)
#: Room events that may say someone's connection is gone.
_DEPARTURES = frozenset({"member_left", "presence"})
_event_decoder = msgspec.msgpack.Decoder(RoomEvent)
_notice_decoder = msgspec.msgpack.Decoder(AnyNotice)
_envelope_decoder = msgspec.msgpack.Decoder(NoticeFrame)
_json_encoder = msgspec.json.Encoder()


class EncodedEvent:
    """One room event as MessagePack, and as JSON made on first request.

    The JSON form is built once per node and shared by every JSON listener.
    """

    __slots__ = ("_json", "msgpack", "offset", "room")

    def __init__(self, room: str, offset: int, frame: bytes) -> None:
        self.room = room
        self.offset = offset
        self.msgpack = frame
        self._json: bytes | None = None

    @property
    def json(self) -> bytes:
        """The same event encoded for the JSON subprotocol."""
        if self._json is None:
            self._json = _json_encoder.encode(_event_decoder.decode(self.msgpack))
        return self._json

    def decode(self) -> RoomEvent:
        """The typed event."""
        event: RoomEvent = _event_decoder.decode(self.msgpack)
        return event


class EncodedNotice:
    """A notice for some members of a room, decoded once per node.

    ``user`` names the one person it is for, otherwise it is for the room's
    staff; with ``close`` set their connections close with that code.
    """

    __slots__ = ("_json", "close", "msgpack", "user")

    def __init__(self, frame: NoticeFrame) -> None:
        self.msgpack = frame.frame
        self.user = frame.user
        self.close = frame.close
        self._json: bytes | None = None

    @property
    def json(self) -> bytes:
        """The notice encoded for the JSON subprotocol."""
        if self._json is None:
            self._json = _json_encoder.encode(
                _notice_decoder.decode(self.msgpack or b"\xc0")
            )
        return self._json


class Listener(Protocol):
    """A local connection that receives a room's events."""

    def deliver(self, event: EncodedEvent) -> None:
        """Take one event; called in offset order, must not block."""

    def reset(self, room: str) -> None:
        """The feed lost events it cannot recover; the listener must resync."""

    def notice(self, notice: EncodedNotice) -> None:
        """A notice of the room; the listener checks whether it is its own."""

    def membership(self, room: str) -> tuple[Member, str] | None:
        """Who this listener is in ``room`` and its connection id, if joined.

        A writer rebuilt on this node asks, so that connections which never
        dropped stay in the room.
        """

    def forgotten(self, room: str) -> None:
        """The room says this listener's member's connection is gone; it is not.

        A writer rebuilt on another node did not know this connection; the
        listener joins again. Called while delivering: must not block.
        """


class RoomFeed:
    """Orders and repairs one room's events for this node's listeners."""

    def __init__(self, room: str, store: Store) -> None:
        self.room = room
        self.listeners: set[Listener] = set()
        self._store = store
        self._epoch: str | None = None
        self._last: int | None = None
        self._pending: dict[int, bytes] = {}
        self._repair: asyncio.Task[None] | None = None

    @property
    def last(self) -> int | None:
        """The offset of the last event delivered, once the baseline is set."""
        return self._last

    def start(self, epoch: str, offset: int) -> None:
        """Set the baseline: events up to ``offset`` are known to everyone."""
        self._epoch = epoch
        self._last = offset
        self._drain()

    def receive(self, frame: bytes) -> None:
        """Broker handler: one event frame as published by the room's writer."""
        try:
            header = _header_decoder.decode(frame)
        except msgspec.MsgspecError:
            logger.error("room %s: dropped an undecodable event frame", self.room)
            return
        self.offer(header.epoch, header.offset, frame)

    def receive_notice(self, frame: bytes) -> None:
        """Broker handler: a notice published by the room's writer."""
        try:
            notice = EncodedNotice(_envelope_decoder.decode(frame))
        except msgspec.MsgspecError:
            logger.error("room %s: dropped an undecodable notice", self.room)
            return
        for listener in tuple(self.listeners):
            listener.notice(notice)

    def offer(self, epoch: str, offset: int, frame: bytes) -> None:
        """Take an event from the broker or from the local writer."""
        if self._last is None:
            self._pending[offset] = frame
            return
        if epoch != self._epoch:
            logger.warning(
                "room %s: epoch changed from %s to %s", self.room, self._epoch, epoch
            )
            self._reset(epoch, offset - 1)
        if offset <= self._last:
            return
        self._pending[offset] = frame
        self._drain()

    async def close(self) -> None:
        """Stop a repair in progress."""
        if self._repair is not None:
            self._repair.cancel()
            await asyncio.gather(self._repair, return_exceptions=True)

    def _drain(self) -> None:
        if self._last is None:
            return
        for offset in sorted(o for o in self._pending if o <= self._last):
            del self._pending[offset]
        while (self._last + 1) in self._pending:
            self._last += 1
            self._deliver(self._last, self._pending.pop(self._last))
        if self._pending and self._repair is None:
            self._repair = asyncio.create_task(self._fill_gap())

    def _deliver(self, offset: int, frame: bytes) -> None:
        event = EncodedEvent(self.room, offset, frame)
        for listener in tuple(self.listeners):
            listener.deliver(event)
        if self.listeners and _kind_decoder.decode(frame).type in _DEPARTURES:
            self._still_here(event.decode())

    def _still_here(self, event: RoomEvent) -> None:
        """Tell listeners the room marked gone while they are connected."""
        if isinstance(event, MemberLeft):
            left = [Departure(event.user, event.reason)]
        elif isinstance(event, PresenceChanged):
            left = event.left
        else:
            return
        gone = {d.user for d in left if d.reason is LeaveReason.DISCONNECTED}
        if not gone:
            return
        for listener in tuple(self.listeners):
            held = listener.membership(self.room)
            if held is not None and held[0].user in gone:
                listener.forgotten(self.room)

    async def _fill_gap(self) -> None:
        try:
            # A short wait lets a late pub/sub message arrive by itself,
            # which is the common case when two nodes publish close together.
            await asyncio.sleep(0.05)
            while self._pending and self._last is not None and self._epoch:
                upto = min(self._pending) - 1
                if upto <= self._last:
                    self._drain_ready()
                    continue
                frames = await self._store.read(
                    self.room, self._epoch, self._last, upto
                )
                if frames is None:
                    logger.warning(
                        "room %s: cannot repair offsets %d..%d",
                        self.room,
                        self._last + 1,
                        upto,
                    )
                    self._reset(self._epoch, upto)
                    continue
                logger.info(
                    "room %s: repaired %d missed events from the store",
                    self.room,
                    len(frames),
                )
                for frame in frames:
                    self._pending.setdefault(self._last + 1, frame)
                    self._drain_ready()
                self._drain_ready()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("room %s: gap repair failed", self.room)
            self._reset(self._epoch or "", max(self._pending, default=1) - 1)
        finally:
            self._repair = None
        if self._pending:
            self._drain()

    def _drain_ready(self) -> None:
        if self._last is None:
            return
        while (self._last + 1) in self._pending:
            self._last += 1
            self._deliver(self._last, self._pending.pop(self._last))

    def _reset(self, epoch: str, offset: int) -> None:
        self._epoch = epoch
        self._last = offset
        for listener in tuple(self.listeners):
            listener.reset(self.room)
