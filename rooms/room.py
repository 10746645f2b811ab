"""The room state machine: presence and room-wide broadcast.

A :class:`Room` does no I/O. Its single writer asks it to :meth:`Room.decide`
a command, which checks the command against the current state and returns
the events it causes without changing anything; once the store holds those
events the writer calls :meth:`Room.apply` with them. Replaying a room's
history through :meth:`Room.apply` rebuilds the same state on another node.

Presence is by person, not by connection: a student with two tabs open is one
member, who leaves when their last connection does. A room remembers who has
left, why and when, so the roster shows who dropped out and who came back.

A room created for a lesson also holds a :class:`rooms.lesson.Lesson`, to
which it hands the lesson's commands.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import msgspec

from client_sdk.protocol import (
    Answer,
    AnswerResult,
    AnswerTally,
    AskQuestion,
    AwayMember,
    BroadcastEvent,
    CloseQuestion,
    Departure,
    DrillEnded,
    DrillStarted,
    EndLesson,
    ErrorCode,
    ExamNotice,
    FloorGranted,
    FloorReleased,
    GrantFloor,
    HandQueue,
    LeaveReason,
    LowerHand,
    Member,
    MemberJoined,
    MemberLeft,
    Mute,
    MuteChanged,
    PresenceChanged,
    RaiseHand,
    RemoveMember,
    Reveal,
    RevokeFloor,
    Role,
    RoomEvent,
    SchoolRoster,
    SetQueuePolicy,
    SetStage,
    StartDrill,
    StepActivity,
    StopDrill,
    TurnCommand,
)

from .audit import LogEntry
from .errors import Refused
from .exam_room import ExamAction, ExamDesk, ExamOutcome, ExamReplyMessage
from .exam_setup import ExamSetup
from .lesson import AnswerRecord, HostAction, Lesson
from .roster import Roster
from .turns import Turns

#: Command and event classes of turns, for dispatch with ``isinstance``.
TURN_COMMANDS = (
    RaiseHand,
    LowerHand,
    SetQueuePolicy,
    GrantFloor,
    RevokeFloor,
    StartDrill,
    StopDrill,
    Mute,
)
TURN_EVENTS = (
    HandQueue,
    FloorGranted,
    FloorReleased,
    DrillStarted,
    DrillEnded,
    MuteChanged,
)
HOST_ACTIONS = (StepActivity, AskQuestion, CloseQuestion, Reveal, EndLesson, SetStage)

#: Roles that take one of a room's seats.
SEATED_ROLES = frozenset({Role.STUDENT, Role.CLASSROOM})
#: Roles that may send a broadcast to a whole room.
BROADCAST_ROLES = frozenset({Role.TEACHER, Role.CO_TEACHER, Role.PROCTOR, Role.ADMIN})


class JoinRoom(msgspec.Struct, tag=True, frozen=True):
    """A connection of ``member`` enters the room."""

    member: Member
    session: str
    #: The connection's network address, for the proctors of an exam.
    address: str = ""
    #: The connection speaks JSON: the reply's roster comes as JSON.
    json: bool = False
    #: The connection never closed: a writer rebuilt elsewhere marked its
    #: member gone, and it joins again. An exam logs no reconnection.
    again: bool = False


class LeaveRoom(msgspec.Struct, tag=True, frozen=True):
    """A connection of ``user`` leaves the room, by choice or by dropping."""

    user: str
    session: str
    reason: LeaveReason


class SendBroadcast(msgspec.Struct, tag=True, frozen=True):
    """``sender`` sends ``body`` under ``topic`` to the whole room."""

    sender: Member
    command_id: str
    topic: str
    body: bytes


class LessonAction(msgspec.Struct, tag=True, frozen=True):
    """A lesson command from ``actor``, as received by their node.

    ``received_at`` is the receiving node's clock, so an answer forwarded to
    another node is timed from when its student sent it, and
    ``round_trip_ms`` is that connection's measured round trip.
    """

    actor: Member
    command: HostAction | Answer | RemoveMember | TurnCommand
    received_at: int
    round_trip_ms: int = 0


class Tick(msgspec.Struct, tag=True, frozen=True):
    """A deadline of the room has come (a question's closing time)."""


RoomCommand = JoinRoom | LeaveRoom | SendBroadcast | LessonAction | ExamAction | Tick


@dataclass(slots=True)
class Decision:
    """What a command does: events to append, and connection bookkeeping.

    ``attach`` and ``detach`` change which connections a present member has;
    they are not events, as they mean nothing to the other members, and are
    applied together with the events once the store has them.
    """

    events: list[RoomEvent] = field(default_factory=list)
    attach: tuple[str, str] | None = None
    detach: list[tuple[str, str]] = field(default_factory=list)
    dedupe_key: str | None = None
    #: An answer to store before it is acknowledged.
    record: AnswerRecord | None = None
    #: The command was applied before; nothing new is stored.
    duplicate: bool = False
    #: Results sent to each student after a reveal.
    results: list[tuple[str, AnswerResult]] = field(default_factory=list)
    #: Connections of this user are closed (they were removed).
    remove: str | None = None
    #: Exam log entries to store before anything else, notices to send
    #: after (to one user, or to the staff for ``None``), and a reply.
    audit: list[LogEntry] = field(default_factory=list)
    notices: list[tuple[str | None, ExamNotice]] = field(default_factory=list)
    reply: ExamReplyMessage | None = None


class Room:
    """The state of one room as its single writer sees it."""

    def __init__(
        self,
        room_id: str,
        epoch: str,
        offset: int = 0,
        lesson: Lesson | None = None,
        exam: ExamSetup | None = None,
    ) -> None:
        self.id = room_id
        self.epoch = epoch
        self.offset = offset
        self.lesson = lesson
        self.turns = Turns() if lesson is not None else None
        self.members: dict[str, Member] = {}
        self.sessions: dict[str, set[str]] = {}
        self.away: dict[str, AwayMember] = {}
        #: ``members`` and ``away`` grouped and sorted, kept as they change.
        self._roster = Roster()
        self.removed: set[str] = set()
        self.exam = ExamDesk(exam, self.sessions) if exam is not None else None
        #: Students and classroom devices that may be present at once.
        self.seats = lesson.plan.seats if lesson is not None else None

    def decide(self, command: RoomCommand, now: int) -> Decision:
        """The events ``command`` causes; raises :class:`Refused` if none may."""
        if self.exam is not None:
            return self._decide_exam(self.exam, command, now)
        if isinstance(command, ExamAction):
            raise Refused(ErrorCode.INVALID, "this room is not an exam", "room")
        if isinstance(command, JoinRoom):
            return self._decide_join(command, now)
        if isinstance(command, LeaveRoom):
            return self._decide_leave(command, now)
        if isinstance(command, SendBroadcast):
            return self._decide_broadcast(command, now)
        if isinstance(command, Tick):
            if self.lesson is None or self.turns is None:
                return Decision()
            events: list[RoomEvent] = [*self.lesson.tick(now).events]
            events += self.turns.tick(now, self.members)
            return Decision(events=self._number(events, now))
        return self._decide_lesson(command, now)

    def due(self) -> int | None:
        """The server time at which the writer must send a :class:`Tick`."""
        if self.exam is not None:
            return self.exam.due()
        if self.lesson is None or self.turns is None:
            return None
        times = [t for t in (self.lesson.due(), self.turns.due()) if t is not None]
        return min(times, default=None)

    def _decide_exam(self, desk: ExamDesk, command: RoomCommand, now: int) -> Decision:
        # An exam changes its desk as it decides (its log entries are its
        # state); the writer stores them first, and rebuilds on a failure.
        if isinstance(command, ExamAction):
            # A recording the node stores as its student leaves still counts.
            if command.actor.user not in self.members and command.recording is None:
                raise Refused(ErrorCode.NOT_JOINED, "join the room first", "room")
            return _merge(Decision(), desk.command(command, now))
        if isinstance(command, Tick):
            return _merge(Decision(), desk.tick(now))
        if isinstance(command, JoinRoom):
            if not desk.may_enter(command.member):
                raise Refused(
                    ErrorCode.FORBIDDEN, "you are not on this exam's roster", "room"
                )
            user = command.member.user
            before = len(self.sessions.get(user, ()))
            away = self.away.get(user)
            decision = self._decide_join(command, now)
            was_away = (
                away is not None
                and away.reason is LeaveReason.DISCONNECTED
                and not command.again
            )
            outcome = desk.joined(
                command.member, before, was_away, command.address, now
            )
            return _merge(decision, outcome)
        if isinstance(command, LeaveRoom):
            held = self.sessions.get(command.user, set()) - {command.session}
            decision = self._decide_leave(command, now)
            dropped = command.reason is LeaveReason.DISCONNECTED
            return _merge(decision, desk.left(command.user, len(held), dropped, now))
        raise Refused(ErrorCode.INVALID, "an exam room takes no such command", "type")

    def present_students(self) -> int:
        """Students and classroom devices present now."""
        return sum(1 for m in self.members.values() if m.role in SEATED_ROLES)

    def tally(self) -> AnswerTally | None:
        """The teachers' running tally of the open question, if any."""
        if self.lesson is None:
            return None
        tally = self.lesson.tally(self.present_students())
        return msgspec.structs.replace(tally, room=self.id) if tally else None

    def _number(self, events: Sequence[RoomEvent], now: int) -> list[RoomEvent]:
        numbered: list[RoomEvent] = []
        for index, event in enumerate(events):
            changed: RoomEvent = msgspec.structs.replace(
                event,
                room=self.id,
                offset=self.offset + 1 + index,
                epoch=self.epoch,
                at=getattr(event, "at", 0) or now,
            )
            numbered.append(changed)
        return numbered

    def _decide_lesson(self, action: LessonAction, now: int) -> Decision:
        command = action.command
        if isinstance(command, RemoveMember):
            return self._decide_remove(action.actor, command, now)
        lesson = self.lesson
        if lesson is None:
            raise Refused(ErrorCode.INVALID, "this room is not a lesson", "room")
        if action.actor.user not in self.members:
            raise Refused(ErrorCode.NOT_JOINED, "join the room first", "room")
        if isinstance(command, Answer):
            outcome = lesson.decide_answer(
                action.actor, command, action.received_at, action.round_trip_ms
            )
            return Decision(record=outcome.record, duplicate=outcome.duplicate)
        if isinstance(command, TURN_COMMANDS) and self.turns is not None:
            turn_events = self.turns.decide(
                action.actor,
                command,
                now,
                self.members,
                lesson.is_host(action.actor),
                lesson.may_moderate,
            )
            return Decision(events=self._number(turn_events, now))
        if not isinstance(command, HOST_ACTIONS):
            raise Refused(ErrorCode.UNKNOWN_TYPE, "not a lesson command", "type")
        outcome = lesson.decide_host(action.actor, command, now)
        results = [
            (user, msgspec.structs.replace(result, room=self.id))
            for user, result in outcome.results
        ]
        return Decision(events=self._number(outcome.events, now), results=results)

    def _decide_remove(
        self, actor: Member, command: RemoveMember, now: int
    ) -> Decision:
        target = self.members.get(command.user)
        if target is None:
            away = self.away.get(command.user)
            target = away.member if away else None
        if target is None:
            raise Refused(ErrorCode.INVALID, "no such member in this room", "user")
        allowed = (
            self.lesson.may_moderate(actor, target)
            if self.lesson is not None
            else actor.role in (Role.TEACHER, Role.ADMIN)
        )
        if not allowed or target.user == actor.user:
            raise Refused(
                ErrorCode.FORBIDDEN,
                "you may not remove this member",
                "user",
            )
        if target.user in self.removed:
            return Decision(remove=target.user)
        event = MemberLeft(
            room=self.id,
            offset=self.offset + 1,
            epoch=self.epoch,
            at=now,
            user=target.user,
            reason=LeaveReason.REMOVED,
        )
        detach = [(target.user, s) for s in self.sessions.get(target.user, set())]
        events: list[RoomEvent] = [event]
        if self.turns is not None:
            events += self.turns.on_departure(target.user, now)
        return Decision(
            events=self._number(events, now), detach=detach, remove=target.user
        )

    def apply(self, decision: Decision) -> None:
        """Make ``decision`` part of the state, once the store holds its events."""
        for user, session in decision.detach:
            held = self.sessions.get(user)
            if held is not None:
                held.discard(session)
        if decision.attach is not None:
            user, session = decision.attach
            self.sessions.setdefault(user, set()).add(session)
        for event in decision.events:
            self.replay(event)
        if decision.record is not None and self.lesson is not None:
            self.lesson.record(decision.record)

    def replay(self, event: RoomEvent) -> None:
        """Fold one stored event into the state (used to rebuild a room)."""
        if isinstance(event, MemberJoined):
            self._arrive(event.member)
        elif isinstance(event, MemberLeft):
            self._depart(event.user, event.reason, event.at)
        elif isinstance(event, PresenceChanged):
            for member in event.joined:
                self._arrive(member)
            for departure in event.left:
                self._depart(departure.user, departure.reason, event.at)
        elif isinstance(event, TURN_EVENTS):
            if self.turns is not None:
                self.turns.replay(event)
        elif self.lesson is not None:
            self.lesson.replay(event)
        self.offset = event.offset

    def note_presence(self, decision: Decision) -> None:
        """Apply a join or leave now, its event to be stored in a batch later.

        Only for presence: who is here changes at once for the writer's
        decisions, and the batch's :class:`PresenceChanged` tells the others.
        """
        for user, session in decision.detach:
            self.sessions.get(user, set()).discard(session)
        if decision.attach is not None:
            user, session = decision.attach
            self.sessions.setdefault(user, set()).add(session)
        for event in decision.events:
            if isinstance(event, MemberJoined):
                self._arrive(event.member)
            elif isinstance(event, MemberLeft):
                self._depart(event.user, event.reason, event.at)

    def presence_event(
        self, joined: list[Member], left: list[Departure], returned: list[str], now: int
    ) -> PresenceChanged:
        """The next event of the room, gathering arrivals and departures."""
        return PresenceChanged(
            room=self.id,
            offset=self.offset + 1,
            epoch=self.epoch,
            at=now,
            joined=joined,
            left=left,
            returned=returned,
        )

    def _arrive(self, member: Member) -> None:
        self.members[member.user] = member
        self.sessions.setdefault(member.user, set())
        self.away.pop(member.user, None)
        self._roster.place(member.user, member, None)

    def _depart(self, user: str, reason: LeaveReason, at: int) -> None:
        member = self.members.pop(user, None)
        self.sessions.pop(user, None)
        if member is None and reason is LeaveReason.REMOVED and user in self.away:
            # Removing someone who had dropped out already: the roster and
            # the report must say they were removed, not that they dropped.
            member = self.away[user].member
        if member is not None:
            self.away[user] = AwayMember(member, reason, at)
        self._roster.place(user, None, self.away.get(user))
        if reason is LeaveReason.REMOVED:
            self.removed.add(user)

    def decide_ghosts(self, now: int) -> Decision:
        """Members left by a rebuild with no connection known to this writer.

        A writer that rebuilds a room from history knows nobody's connections:
        the node that held them may be gone. Their members are marked
        disconnected; a member still connected elsewhere joins again through
        their client's automatic rejoin.
        """
        decision = Decision()
        for user in sorted(self.members):
            if self.sessions.get(user):
                continue
            decision.events.append(
                MemberLeft(
                    room=self.id,
                    offset=self.offset + 1 + len(decision.events),
                    epoch=self.epoch,
                    at=now,
                    user=user,
                    reason=LeaveReason.DISCONNECTED,
                )
            )
        return decision

    def roster(self) -> list[SchoolRoster]:
        """Members grouped by school then class, sorted by name.

        Each class lists who is present and who has gone away (left,
        dropped or removed), so a teacher sees who is missing.
        """
        return self._roster.snapshot()

    def encoded_roster(self, json: bool = False) -> bytes:
        """:meth:`roster` as MessagePack (or JSON), re-encoding changed classes."""
        return self._roster.encoded(json)

    def _decide_join(self, command: JoinRoom, now: int) -> Decision:
        member = command.member
        if member.user in self.removed:
            raise Refused(
                ErrorCode.FORBIDDEN, "a teacher removed you from this room", "room"
            )
        # The room's single writer counts the seats, so the limit holds
        # whichever node the joins come through. Staff never take a seat.
        if (
            self.seats is not None
            and member.role in SEATED_ROLES
            and member.user not in self.members
            and self.present_students() >= self.seats
        ):
            raise Refused(
                ErrorCode.ROOM_FULL, f"all {self.seats} seats are taken", "room"
            )
        decision = Decision(attach=(member.user, command.session))
        if self.members.get(member.user) != member:
            decision.events.append(
                MemberJoined(
                    room=self.id,
                    offset=self.offset + 1,
                    epoch=self.epoch,
                    at=now,
                    member=member,
                    returned=member.user in self.away,
                )
            )
        return decision

    def _decide_leave(self, command: LeaveRoom, now: int) -> Decision:
        user = command.user
        decision = Decision(detach=[(user, command.session)])
        held = self.sessions.get(user, set())
        if user in self.members and not (held - {command.session}):
            decision.events.append(
                MemberLeft(
                    room=self.id,
                    offset=self.offset + 1,
                    epoch=self.epoch,
                    at=now,
                    user=user,
                    reason=command.reason,
                )
            )
            if self.turns is not None:
                turn_events = self.turns.on_departure(user, now)
                decision.events = self._number([*decision.events, *turn_events], now)
        return decision

    def _decide_broadcast(self, command: SendBroadcast, now: int) -> Decision:
        sender = command.sender
        if sender.role not in BROADCAST_ROLES:
            raise Refused(
                ErrorCode.FORBIDDEN,
                f"role {sender.role.value!r} may not broadcast to the room",
                "room",
            )
        if sender.user not in self.members:
            raise Refused(ErrorCode.NOT_JOINED, "join the room first", "room")
        event = BroadcastEvent(
            room=self.id,
            offset=self.offset + 1,
            epoch=self.epoch,
            at=now,
            sender=sender,
            topic=command.topic,
            body=command.body,
        )
        key = f"{sender.user}:{command.command_id}"
        return Decision(events=[event], dedupe_key=key)


def _merge(decision: Decision, outcome: ExamOutcome) -> Decision:
    decision.audit = outcome.entries
    decision.notices = outcome.notices
    decision.reply = outcome.reply
    decision.duplicate = outcome.duplicate
    return decision
