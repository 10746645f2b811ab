"""The room state machine: presence and room-wide broadcast.

A :class:`Room` does no I/O. Its single writer asks it to :meth:`Room.decide`
a command, which checks the command against the current state and returns
the events it causes without changing anything; once the store holds those
events the writer calls :meth:`Room.apply` with them. Replaying a room's
history through :meth:`Room.apply` rebuilds the same state on another node.

Presence is by person, not by connection: a student with two tabs open is one
member, who leaves when their last connection does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import msgspec

from client_sdk.protocol import (
    BroadcastEvent,
    ClassRoster,
    ErrorCode,
    LeaveReason,
    Member,
    MemberJoined,
    MemberLeft,
    Role,
    RoomEvent,
    SchoolRoster,
)

from .errors import Refused

#: Roles that may send a broadcast to a whole room.
BROADCAST_ROLES = frozenset({Role.TEACHER, Role.CO_TEACHER, Role.PROCTOR, Role.ADMIN})


class JoinRoom(msgspec.Struct, tag=True, frozen=True):
    """A connection of ``member`` enters the room."""

    member: Member
    session: str


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


RoomCommand = JoinRoom | LeaveRoom | SendBroadcast


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


class Room:
    """The state of one room as its single writer sees it."""

    def __init__(self, room_id: str, epoch: str, offset: int = 0) -> None:
        self.id = room_id
        self.epoch = epoch
        self.offset = offset
        self.members: dict[str, Member] = {}
        self.sessions: dict[str, set[str]] = {}

    def decide(self, command: RoomCommand, now: int) -> Decision:
        """The events ``command`` causes; raises :class:`Refused` if none may."""
        if isinstance(command, JoinRoom):
            return self._decide_join(command, now)
        if isinstance(command, LeaveRoom):
            return self._decide_leave(command, now)
        return self._decide_broadcast(command, now)

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

    def replay(self, event: RoomEvent) -> None:
        """Fold one stored event into the state (used to rebuild a room)."""
        if isinstance(event, MemberJoined):
            self.members[event.member.user] = event.member
            self.sessions.setdefault(event.member.user, set())
        elif isinstance(event, MemberLeft):
            self.members.pop(event.user, None)
            self.sessions.pop(event.user, None)
        self.offset = event.offset

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
        """Present members grouped by school then class, sorted by name."""
        return group_roster(self.members.values())

    def _decide_join(self, command: JoinRoom, now: int) -> Decision:
        member = command.member
        decision = Decision(attach=(member.user, command.session))
        if self.members.get(member.user) != member:
            decision.events.append(
                MemberJoined(
                    room=self.id,
                    offset=self.offset + 1,
                    epoch=self.epoch,
                    at=now,
                    member=member,
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


def group_roster(members: Iterable[Member]) -> list[SchoolRoster]:
    """Group ``members`` by school and class, each level sorted."""
    schools: dict[str, dict[str, list[Member]]] = {}
    for member in members:
        schools.setdefault(member.school, {}).setdefault(member.class_, []).append(
            member
        )
    return [
        SchoolRoster(
            school=school,
            classes=[
                ClassRoster(
                    class_=name,
                    members=sorted(people, key=lambda m: (m.name, m.user)),
                )
                for name, people in sorted(classes.items())
            ],
        )
        for school, classes in sorted(schools.items())
    ]
