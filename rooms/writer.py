"""The single writer of one room, on the node that owns it.

Commands for a room are applied one at a time, in arrival order: decide,
append to the store, apply to the state, then publish. Nothing is published
or acknowledged before the store holds it, so an acknowledged event survives
the loss of this node.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import msgspec

from client_sdk.protocol import RoomEvent

from .errors import Refused
from .room import Decision, JoinRoom, Room, RoomCommand
from .store import Store
from .wire import AppendReply, JoinReply, RefusedReply, Reply

logger = logging.getLogger(__name__)

event_encoder = msgspec.msgpack.Encoder()
event_decoder = msgspec.msgpack.Decoder(RoomEvent)

Publish = Callable[[str, int, bytes], None]


class RoomWriter:
    """Owns a :class:`Room` and is the only code that appends to its history.

    ``publish`` is called with the room, offset and MessagePack frame of each
    stored event, in offset order; it must not block.
    """

    def __init__(self, room: Room, store: Store, publish: Publish) -> None:
        self.room = room
        self._store = store
        self._publish = publish
        self.lock = asyncio.Lock()
        self._used = time.monotonic()

    @classmethod
    async def rebuild(
        cls, room_id: str, store: Store, publish: Publish, now: int
    ) -> RoomWriter:
        """Load a room from the store and mark members nobody holds as gone."""
        head = await store.open_room(room_id)
        frames = await store.read(room_id, head.epoch, 0, head.offset)
        room = Room(room_id, head.epoch)
        if frames is None:
            # History was trimmed: older presence is unknown, so the room
            # starts empty at its current offset.
            logger.warning(
                "room %s: history trimmed, rebuilding from offset %d",
                room_id,
                head.offset,
            )
        else:
            for frame in frames:
                room.replay(event_decoder.decode(frame))
        room.offset = head.offset
        writer = cls(room, store, publish)
        await writer._commit(room.decide_ghosts(now))
        logger.info(
            "room %s: writer ready at epoch %s offset %d",
            room_id,
            room.epoch,
            room.offset,
        )
        return writer

    def idle_for(self) -> float:
        """Seconds since the last command."""
        return time.monotonic() - self._used

    async def handle(self, command: RoomCommand, now: int) -> Reply:
        """Apply ``command``; the reply tells the caller what happened."""
        async with self.lock:
            self._used = time.monotonic()
            try:
                decision = self.room.decide(command, now)
            except Refused as refused:
                return RefusedReply(refused.code, refused.message, refused.field)
            reply = await self._commit(decision)
            if isinstance(command, JoinRoom):
                return JoinReply(self.room.epoch, self.room.offset, self.room.roster())
            return reply

    async def _commit(self, decision: Decision) -> AppendReply:
        if not decision.events:
            self.room.apply(decision)
            return AppendReply()

        frames = [event_encoder.encode(event) for event in decision.events]
        first = self.room.offset + 1
        result = await self._store.append(
            self.room.id, self.room.epoch, first, frames, decision.dedupe_key
        )
        if result.duplicate:
            return AppendReply(result.offset, duplicate=True)

        self.room.apply(decision)
        for index, frame in enumerate(frames):
            self._publish(self.room.id, first + index, frame)
        return AppendReply(first)
