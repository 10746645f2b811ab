"""The single writer of one room, on the node that owns it.

Commands for a room are decided one at a time, in arrival order. A command
that causes events appends them to the store, then applies them to the
state, then publishes them: nothing is published or acknowledged before the
store holds it, so an acknowledged event survives the loss of this node.

Answers are the exception to one-at-a-time storage, because a quiz brings
thousands within a second: they are decided in order, but stored in groups
(a group commit), each group in one store call while the next one gathers.
An answer is acknowledged once its group is stored. If a group cannot be
stored, the writer is marked broken and the hub drops it; the next command
rebuilds the room from what the store really holds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client_sdk.protocol import (
    AnswerResult,
    AnswerTally,
    CloseCode,
    Departure,
    ExamNotice,
    LeaveReason,
    LessonView,
    Member,
    MemberJoined,
    MemberLeft,
    RoomEvent,
)

from .audit import LogEntry
from .errors import BackendError, Refused
from .exam_room import AUDIT, CHECKPOINTS, key_for
from .exam_setup import EXAM, ExamSetup
from .lesson import AnswerRecord, Lesson
from .plan import LessonPlan
from .room import Decision, JoinRoom, LeaveRoom, Room, RoomCommand, Tick
from .store import Store
from .wire import AppendReply, ExamReply, JoinReply, RefusedReply, Reply

logger = logging.getLogger(__name__)

event_encoder = msgspec.msgpack.Encoder()
event_decoder = msgspec.msgpack.Decoder(RoomEvent)
record_decoder = msgspec.msgpack.Decoder(AnswerRecord)
plan_decoder = msgspec.msgpack.Decoder(LessonPlan)
setup_decoder = msgspec.msgpack.Decoder(ExamSetup)
entry_decoder = msgspec.msgpack.Decoder(LogEntry)

#: Collection of a room's answers in the store, and the document kind of a
#: lesson's plan.
ANSWERS = "answers"
LESSON = "lesson"
#: Shortest time between two tallies sent to the teachers of one room.
TALLY_INTERVAL = 0.25
#: From this many members (present or gone away) on, arrivals and
#: departures are gathered into one presence event per window: each event
#: goes to every member, so one per arrival costs the square of the room's
#: size.
PRESENCE_BATCH_FROM = 50
PRESENCE_WINDOW = 0.25

Publish = Callable[[str, str, int, bytes], None]


@dataclass(frozen=True, slots=True)
class Notice:
    """A message for some members of a room only; not part of its history.

    ``user`` names the one person it is for; otherwise it is for the room's
    staff (teachers, co-teachers, proctors, admins). ``close`` asks their
    connections to close with that code instead of receiving a message.
    """

    room: str
    message: AnswerTally | AnswerResult | ExamNotice | None
    user: str | None = None
    close: int | None = None


Notify = Callable[[Notice], None]


async def load_room(store: Store, room_id: str) -> Room:
    """A room as its stored history and records make it, for reading.

    The writer starts from this; a report reads it without being the writer.
    """
    head = await store.open_room(room_id)
    frames = await store.read(room_id, head.epoch, 0, head.offset)
    document = await store.load_document(LESSON, room_id)
    lesson = None
    if document is not None:
        lesson = Lesson(room_id, plan_decoder.decode(document))
    exam_document = await store.load_document(EXAM, room_id)
    exam = None if exam_document is None else setup_decoder.decode(exam_document)
    room = Room(room_id, head.epoch, lesson=lesson, exam=exam)
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
    if room.exam is not None:
        entries = await store.load_records(room_id, AUDIT)
        for key in sorted(entries):
            room.exam.replay(entry_decoder.decode(entries[key]))
    if lesson is not None:
        records = await store.load_records(room_id, ANSWERS)
        for data in records.values():
            lesson.record(record_decoder.decode(data))
    return room


class RoomWriter:
    """Owns a :class:`Room` and is the only code that writes its history.

    ``publish`` is called with the room, epoch, offset and MessagePack frame
    of each stored event, in offset order; ``notify`` with each :class:`Notice`.
    Neither may block.
    """

    def __init__(
        self,
        room: Room,
        store: Store,
        publish: Publish,
        notify: Notify,
        clock: Callable[[], int],
        audit_key: Ed25519PrivateKey | None = None,
    ) -> None:
        self.room = room
        self.lock = asyncio.Lock()
        #: Set when a store write failed: the state may be ahead of the store.
        self.broken = False
        self._store = store
        self._publish = publish
        self._notify = notify
        self._clock = clock
        self._audit_key = audit_key
        self._used = time.monotonic()
        self._pending: list[AnswerRecord] = []
        self._group: asyncio.Future[None] | None = None
        self._unstored: dict[tuple[int, str], asyncio.Future[None]] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._timer: asyncio.Task[None] | None = None
        self._armed: int | None = None
        self._tally: asyncio.Task[None] | None = None
        self._tally_sent = 0.0
        self._arrivals: dict[str, tuple[Member, bool]] = {}
        self._departures: dict[str, LeaveReason] = {}
        self._presence: asyncio.Task[None] | None = None

    @classmethod
    async def rebuild(
        cls,
        room_id: str,
        store: Store,
        publish: Publish,
        notify: Notify,
        clock: Callable[[], int],
        present: Sequence[JoinRoom] = (),
        audit_key: Ed25519PrivateKey | None = None,
    ) -> RoomWriter:
        """Load a room from the store and mark members nobody holds as gone.

        ``present`` are the connections this node holds in the room: they
        are in it still, whatever the history says.
        """
        room = await load_room(store, room_id)
        writer = cls(room, store, publish, notify, clock, audit_key)
        for join in present:
            try:
                await writer._commit(room.decide(join, clock()))
            except Refused:
                logger.info("room %s: %s may not rejoin", room_id, join.member.user)
        await writer._commit(room.decide_ghosts(clock()))
        writer._arm()
        logger.info(
            "room %s: writer ready at epoch %s offset %d%s",
            room_id,
            room.epoch,
            room.offset,
            " (lesson)" if room.lesson else "",
        )
        return writer

    def idle_for(self) -> float:
        """Seconds since the last command."""
        return time.monotonic() - self._used

    def lesson_view(self) -> LessonView | None:
        """The lesson snapshot for a joining client, if this room is a lesson."""
        lesson, turns = self.room.lesson, self.room.turns
        if lesson is None:
            return None
        view = lesson.view()
        if turns is None:
            return view
        return msgspec.structs.replace(
            view, policy=turns.policy, queue=turns.queue(), floor=turns.floor
        )

    async def close(self) -> None:
        """Stop the deadline timer and the tally; let queued answers store."""
        for task in (self._timer, self._tally, self._presence):
            if task is not None:
                task.cancel()
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)

    async def handle(self, command: RoomCommand, now: int) -> Reply:
        """Apply ``command``; the reply tells the caller what happened."""
        async with self.lock:
            self._used = time.monotonic()
            try:
                decision = self.room.decide(command, now)
            except Refused as refused:
                return RefusedReply(refused.code, refused.message, refused.field)

            if decision.record is not None:
                waiter = self._take_answer(decision)
            else:
                if self._batchable(command, decision):
                    self._gather_presence(decision)
                    reply = AppendReply()
                else:
                    reply = await self._commit(decision)
                    self._after(decision)
                if decision.reply is not None:
                    return ExamReply(decision.reply)
                if isinstance(command, JoinRoom):
                    return JoinReply(
                        self.room.epoch,
                        self.room.offset,
                        self.room.encoded_roster(command.json),
                        self.lesson_view(),
                    )
                return reply

        # Outside the lock: other answers are decided while this one's group
        # is being stored.
        if waiter is not None:
            await waiter
        self._schedule_tally()
        return AppendReply(duplicate=decision.duplicate)

    def _batchable(self, command: RoomCommand, decision: Decision) -> bool:
        # Those who went away count too: after a failover or a drain the
        # rebuilt room has marked everyone away, and all of them come back
        # within seconds.
        return (
            isinstance(command, JoinRoom | LeaveRoom)
            and len(self.room.members) + len(self.room.away) >= PRESENCE_BATCH_FROM
            and all(isinstance(e, MemberJoined | MemberLeft) for e in decision.events)
            and not decision.audit
        )

    def _gather_presence(self, decision: Decision) -> None:
        self.room.note_presence(decision)
        for event in decision.events:
            if isinstance(event, MemberJoined):
                self._departures.pop(event.member.user, None)
                self._arrivals[event.member.user] = (event.member, event.returned)
            # Someone who came and went within one window was never
            # announced; the roster of later joiners shows them as away.
            elif (
                isinstance(event, MemberLeft)
                and self._arrivals.pop(event.user, None) is None
            ):
                self._departures[event.user] = event.reason
        if self._presence is None or self._presence.done():
            self._presence = asyncio.create_task(self._flush_presence())

    async def _flush_presence(self) -> None:
        await asyncio.sleep(PRESENCE_WINDOW)
        async with self.lock:
            arrivals, self._arrivals = self._arrivals, {}
            departures, self._departures = self._departures, {}
            if not arrivals and not departures:
                return
            event = self.room.presence_event(
                joined=[member for member, _ in arrivals.values()],
                left=[Departure(user, reason) for user, reason in departures.items()],
                returned=[user for user, (_, back) in arrivals.items() if back],
                now=self._clock(),
            )
            try:
                await self._commit(Decision(events=[event]))
            except BackendError:
                # Presence is rebuilt from connections after a failure: the
                # next command finds the writer broken and rebuilds the room.
                logger.warning("room %s: presence batch not stored", self.room.id)
                self.broken = True

    def _take_answer(self, decision: Decision) -> asyncio.Future[None] | None:
        record = decision.record
        if record is None:
            return None
        key = (record.number, record.user)
        if decision.duplicate:
            return self._unstored.get(key)

        # The answer joins the state before it is stored, so that the next
        # answer is decided against it; a failed store breaks the writer.
        self.room.apply(decision)
        if self._group is None:
            self._group = asyncio.get_running_loop().create_future()
        self._pending.append(record)
        self._unstored[key] = self._group
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return self._group

    async def _flush(self) -> None:
        while self._pending:
            group, self._group = self._group, None
            batch, self._pending = self._pending, []
            if group is None:
                return
            try:
                await self._store.save_records(
                    self.room.id,
                    ANSWERS,
                    [(f"{r.number}:{r.user}", event_encoder.encode(r)) for r in batch],
                )
            except BackendError as exc:
                logger.error("room %s: %d answers not stored", self.room.id, len(batch))
                self.broken = True
                group.set_exception(exc)
                if self._group is not None:
                    self._group.set_exception(exc)
                return
            group.set_result(None)
            for record in batch:
                key = (record.number, record.user)
                if self._unstored.get(key) is group:
                    del self._unstored[key]

    async def _commit(self, decision: Decision) -> AppendReply:
        if decision.audit:
            await self._store_audit(decision.audit)
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
            self._publish(self.room.id, self.room.epoch, first + index, frame)
        return AppendReply(first)

    def _after(self, decision: Decision) -> None:
        for user, notice in decision.notices:
            self._notify(Notice(self.room.id, notice, user=user))
        for user, result in decision.results:
            self._notify(Notice(self.room.id, result, user=user))
        if decision.remove is not None:
            self._notify(
                Notice(
                    self.room.id,
                    None,
                    user=decision.remove,
                    close=CloseCode.REMOVED.value,
                )
            )
        if decision.events:
            self._schedule_tally()
        self._arm()

    async def _store_audit(self, entries: list[LogEntry]) -> None:
        # The log is the exam's state: it is stored before any event, reply
        # or notice of the command, and a failure here breaks the writer.
        await self._store.save_records(
            self.room.id,
            AUDIT,
            [(key_for(e.seq), event_encoder.encode(e)) for e in entries],
        )
        desk = self.room.exam
        if desk is None or self._audit_key is None or not desk.checkpoint_due():
            return
        point = desk.chain.checkpoint(self._audit_key, self._clock())
        await self._store.save_records(
            self.room.id,
            CHECKPOINTS,
            [(key_for(point.seq), event_encoder.encode(point))],
        )

    def _arm(self) -> None:
        due = self.room.due()
        if due == self._armed:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._armed = due
        if due is not None:
            self._timer = asyncio.create_task(self._wake(due))

    async def _wake(self, due: int) -> None:
        await asyncio.sleep(max(due - self._clock(), 0) / 1000)
        self._armed = None
        self._timer = None
        try:
            await self.handle(Tick(), self._clock())
        except BackendError:
            # The next command rebuilds the room and re-arms the deadline.
            logger.warning("room %s: deadline could not be stored", self.room.id)
            self.broken = True

    def _schedule_tally(self) -> None:
        if self.room.lesson is None or self.room.lesson.asked is None:
            return
        if self._tally is not None and not self._tally.done():
            return
        self._tally = asyncio.create_task(self._send_tally())

    async def _send_tally(self) -> None:
        # At most a few tallies a second, whatever the rate of answers: the
        # teacher's chart needs no more, and each goes to every teacher.
        wait = self._tally_sent + TALLY_INTERVAL - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        self._tally_sent = time.monotonic()
        tally = self.room.tally()
        if tally is not None:
            self._notify(Notice(self.room.id, tally))
