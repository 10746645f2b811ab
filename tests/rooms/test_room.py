"""The room state machine, without any I/O."""

from __future__ import annotations

import pytest

from client_sdk.protocol import (
    BroadcastEvent,
    ErrorCode,
    LeaveReason,
    Member,
    MemberJoined,
    MemberLeft,
    Role,
    RoomEvent,
)
from rooms.errors import Refused
from rooms.room import JoinRoom, LeaveRoom, Room, RoomCommand, SendBroadcast

NOW = 1_800_000_000_000


def member(
    user: str, role: Role = Role.STUDENT, school: str = "A", cls: str = "6A"
) -> Member:
    return Member(user=user, name=user.upper(), role=role, school=school, class_=cls)


def run(room: Room, command: RoomCommand) -> list[RoomEvent]:
    decision = room.decide(command, NOW)
    room.apply(decision)
    return decision.events


def test_first_connection_joins_and_last_one_leaves() -> None:
    """A member with two connections joins once and leaves with the last one."""
    room = Room("r", "e1")
    alice = member("alice")

    first = run(room, JoinRoom(alice, "s1"))
    second = run(room, JoinRoom(alice, "s2"))
    after_one = run(room, LeaveRoom("alice", "s1", LeaveReason.LEFT))
    after_both = run(room, LeaveRoom("alice", "s2", LeaveReason.DISCONNECTED))

    assert [type(e) for e in first] == [MemberJoined]
    assert second == []
    assert after_one == []
    assert [type(e) for e in after_both] == [MemberLeft]
    (left,) = after_both
    assert isinstance(left, MemberLeft)
    assert left.reason is LeaveReason.DISCONNECTED
    assert room.members == {}


def test_offsets_are_contiguous_and_carry_the_epoch() -> None:
    """Each event takes the next offset of the room and its epoch."""
    room = Room("r", "e1", offset=41)
    events = run(room, JoinRoom(member("a"), "s1"))
    events += run(room, JoinRoom(member("b"), "s2"))
    events += run(room, LeaveRoom("a", "s1", LeaveReason.LEFT))

    assert [e.offset for e in events] == [42, 43, 44]
    assert {e.epoch for e in events} == {"e1"}
    assert room.offset == 44


def test_decide_changes_nothing_until_applied() -> None:
    """A decision whose events never reached the store leaves the room as it was."""
    room = Room("r", "e1")
    room.decide(JoinRoom(member("a"), "s1"), NOW)

    assert room.members == {}
    assert room.offset == 0


def test_roster_groups_by_school_then_class() -> None:
    """The roster lists schools, then classes, then members, each sorted."""
    room = Room("r", "e1")
    for user, school, cls in [
        ("d", "B", "7A"),
        ("c", "A", "6B"),
        ("b", "A", "6A"),
        ("a", "A", "6A"),
    ]:
        run(room, JoinRoom(member(user, school=school, cls=cls), f"s-{user}"))

    roster = room.roster()

    assert [s.school for s in roster] == ["A", "B"]
    assert [c.class_ for c in roster[0].classes] == ["6A", "6B"]
    assert [m.user for m in roster[0].classes[0].members] == ["a", "b"]
    assert roster[1].classes[0].members[0].user == "d"


@pytest.mark.parametrize("role", [Role.STUDENT, Role.CLASSROOM])
def test_only_speaking_roles_may_broadcast(role: Role) -> None:
    """Students and classroom devices are refused a room-wide broadcast."""
    room = Room("r", "e1")
    sender = member("s", role=role)
    run(room, JoinRoom(sender, "s1"))

    with pytest.raises(Refused) as refused:
        room.decide(SendBroadcast(sender, "c1", "t", b"x"), NOW)

    assert refused.value.code is ErrorCode.FORBIDDEN
    assert refused.value.field == "room"


def test_broadcast_needs_membership_and_is_keyed_for_dedupe() -> None:
    """A teacher must be present to broadcast; the event keys on user and id."""
    room = Room("r", "e1")
    teacher = member("t", role=Role.TEACHER)

    with pytest.raises(Refused) as refused:
        room.decide(SendBroadcast(teacher, "c1", "t", b"x"), NOW)
    assert refused.value.code is ErrorCode.NOT_JOINED

    run(room, JoinRoom(teacher, "s1"))
    decision = room.decide(SendBroadcast(teacher, "c1", "topic", b"\x00\xff"), NOW)

    (event,) = decision.events
    assert isinstance(event, BroadcastEvent)
    assert event.body == b"\x00\xff"
    assert event.sender == teacher
    assert decision.dedupe_key == "t:c1"


def test_replaying_history_rebuilds_the_same_members() -> None:
    """Folding a room's events into a new room gives the same roster."""
    room = Room("r", "e1")
    history = run(room, JoinRoom(member("a"), "s1"))
    history += run(room, JoinRoom(member("b", school="B"), "s2"))
    history += run(room, LeaveRoom("a", "s1", LeaveReason.LEFT))

    rebuilt = Room("r", "e1")
    for event in history:
        rebuilt.replay(event)

    assert rebuilt.roster() == room.roster()
    assert rebuilt.offset == room.offset


def test_rebuilt_room_marks_members_without_connections_gone() -> None:
    """After a rebuild, members nobody holds a connection for are disconnected."""
    room = Room("r", "e1")
    history = run(room, JoinRoom(member("a"), "s1"))
    history += run(room, JoinRoom(member("b"), "s2"))
    rebuilt = Room("r", "e1")
    for event in history:
        rebuilt.replay(event)

    ghosts = rebuilt.decide_ghosts(NOW)

    left = [e for e in ghosts.events if isinstance(e, MemberLeft)]
    assert left == ghosts.events
    assert [(e.user, e.reason) for e in left] == [
        ("a", LeaveReason.DISCONNECTED),
        ("b", LeaveReason.DISCONNECTED),
    ]
    assert [e.offset for e in ghosts.events] == [3, 4]
