"""Rooms over the wire: presence, broadcast, retries, recovery and restarts."""

from __future__ import annotations

import secrets

import pytest

from client_sdk.protocol import (
    JSON_SUBPROTOCOL,
    MSGPACK_SUBPROTOCOL,
    Ack,
    Broadcast,
    BroadcastEvent,
    ClassRoster,
    Error,
    ErrorCode,
    Join,
    Joined,
    Leave,
    LeaveReason,
    MemberJoined,
    MemberLeft,
    Role,
    SchoolRoster,
)

from .conftest import (
    Connect,
    ServerFactory,
    ServerProcess,
    enter,
    member,
    unique,
)


@pytest.mark.parametrize("subprotocol", [MSGPACK_SUBPROTOCOL, JSON_SUBPROTOCOL])
async def test_join_gives_roster_grouped_by_school_and_class(
    connect: Connect, server: ServerProcess, subprotocol: str
) -> None:
    """The joined reply holds everyone present, by school, class, then name."""
    room = unique()
    people = [
        ("t1", Role.TEACHER, "THCS Lê Lợi", "9A", "Thầy Minh"),
        ("s3", Role.STUDENT, "THCS Lê Lợi", "9A", "Bình"),
        ("s1", Role.STUDENT, "THCS Lê Lợi", "9A", "An"),
        ("s2", Role.STUDENT, "THCS Lê Lợi", "9B", "Chi"),
        ("c1", Role.CLASSROOM, "THCS Hùng Vương", "7C", "Lớp 7C"),
        ("s4", Role.STUDENT, "THCS Hùng Vương", "7C", "Dũng"),
    ]
    for user, role, school, class_, name in people:
        _, joined = await enter(
            connect,
            server,
            room,
            user,
            role,
            school=school,
            class_=class_,
            name=name,
            subprotocol=subprotocol,
        )

    assert joined.recovered is False
    m = {
        user: member(user, role, school, cls, name)
        for user, role, school, cls, name in people
    }
    assert joined.roster == [
        SchoolRoster(
            school="THCS Hùng Vương",
            classes=[ClassRoster(class_="7C", members=[m["s4"], m["c1"]])],
        ),
        SchoolRoster(
            school="THCS Lê Lợi",
            classes=[
                ClassRoster(class_="9A", members=[m["s1"], m["s3"], m["t1"]]),
                ClassRoster(class_="9B", members=[m["s2"]]),
            ],
        ),
    ]


async def test_presence_events_have_contiguous_offsets_and_one_epoch(
    connect: Connect, server: ServerProcess
) -> None:
    """Others see joins and leaves in order; a leave and a drop differ in reason."""
    room = unique()
    teacher, first = await enter(connect, server, room, "t1", Role.TEACHER)
    alice, joined_a = await enter(connect, server, room, "alice")
    bob, joined_b = await enter(connect, server, room, "bob", school="THCS Kim Đồng")

    assert joined_a.offset == first.offset + 1
    assert joined_b.offset == first.offset + 2
    seen_by_teacher = await teacher.events(2)
    assert [type(e) for e in seen_by_teacher] == [MemberJoined, MemberJoined]
    assert [e.member for e in seen_by_teacher] == [
        member("alice"),
        member("bob", school="THCS Kim Đồng"),
    ]
    (seen_by_alice,) = await alice.events(1)
    assert seen_by_alice.offset == joined_b.offset

    ack = await alice.expect(Ack, Leave(id="l1", room=room))
    assert ack.offset == first.offset + 3
    await bob.close()

    left = await teacher.events(2)
    assert [(type(e), e.user, e.reason) for e in left] == [
        (MemberLeft, "alice", LeaveReason.LEFT),
        (MemberLeft, "bob", LeaveReason.DISCONNECTED),
    ]
    every = seen_by_teacher + left
    assert [e.offset for e in every] == list(range(first.offset + 1, first.offset + 5))
    assert {e.epoch for e in every} == {first.epoch}
    assert {e.room for e in every} == {room}
    assert await teacher.silence(0.3) == []


async def test_a_dropped_tcp_connection_leaves_as_disconnected(
    connect: Connect, server: ServerProcess
) -> None:
    """A client whose TCP connection vanishes is reported as disconnected."""
    room = unique()
    teacher, _ = await enter(connect, server, room, "t1", Role.TEACHER)
    student, _ = await enter(connect, server, room, "s1")
    await teacher.event()

    student.ws.transport.abort()
    left = await teacher.event()
    assert isinstance(left, MemberLeft)
    assert (left.user, left.reason) == ("s1", LeaveReason.DISCONNECTED)


async def test_two_connections_of_one_user_are_one_member(
    connect: Connect, server: ServerProcess
) -> None:
    """A second tab adds no member; the user leaves with their last connection."""
    room = unique()
    teacher, _ = await enter(connect, server, room, "t1", Role.TEACHER)
    tab1, joined1 = await enter(connect, server, room, "s1")
    tab2, joined2 = await enter(connect, server, room, "s1")

    assert joined2.offset == joined1.offset
    assert joined2.roster is not None
    users = [
        m.user
        for school in joined2.roster
        for cls in school.classes
        for m in cls.members
    ]
    assert sorted(users) == ["s1", "t1"]
    (arrived,) = await teacher.events(1)
    assert isinstance(arrived, MemberJoined)

    await tab1.close()
    assert await teacher.silence(0.5) == []

    await tab2.close()
    left = await teacher.event()
    assert isinstance(left, MemberLeft)
    assert (left.user, left.reason, left.offset) == (
        "s1",
        LeaveReason.DISCONNECTED,
        arrived.offset + 1,
    )


async def test_teacher_broadcast_reaches_everyone_in_both_subprotocols(
    connect: Connect, server: ServerProcess
) -> None:
    """A teacher's broadcast reaches every member, body bytes unchanged."""
    room = unique()
    teacher, _ = await enter(
        connect, server, room, "t1", Role.TEACHER, subprotocol=JSON_SUBPROTOCOL
    )
    packed, _ = await enter(connect, server, room, "s1")
    text, _ = await enter(connect, server, room, "s2", subprotocol=JSON_SUBPROTOCOL)
    for client in (teacher, packed):
        await client.silence(0.2)

    body = bytes(range(256)) + secrets.token_bytes(2000)
    ack = await teacher.expect(
        Ack, Broadcast(id="b1", room=room, topic="quiz.question", body=body)
    )
    assert ack.room == room
    assert ack.offset is not None

    for client in (teacher, packed, text):
        event = await client.event()
        assert isinstance(event, BroadcastEvent)
        assert event.body == body
        assert event.topic == "quiz.question"
        assert event.offset == ack.offset
        assert event.sender == member("t1", Role.TEACHER)


@pytest.mark.parametrize("role", [Role.STUDENT, Role.CLASSROOM])
async def test_students_and_classrooms_may_not_broadcast(
    connect: Connect, server: ServerProcess, role: Role
) -> None:
    """A broadcast from a student or classroom device is refused as forbidden."""
    room = unique()
    client, _ = await enter(connect, server, room, "u1", role)
    error = await client.expect(Error, Broadcast(id="b1", room=room, topic="x"))
    assert (error.code, error.field, error.id) == (ErrorCode.FORBIDDEN, "room", "b1")


async def test_broadcast_before_join_is_not_joined(
    connect: Connect, server: ServerProcess
) -> None:
    """A broadcast to a room the connection has not joined is not_joined."""
    room = unique()
    token = server.token("t1", Role.TEACHER, room)
    client = await connect(server, token, room)
    error = await client.expect(Error, Broadcast(id="b1", room=room, topic="x"))
    assert (error.code, error.field, error.id) == (ErrorCode.NOT_JOINED, "room", "b1")

    error = await client.expect(Error, Leave(id="l1", room=room))
    assert (error.code, error.field) == (ErrorCode.NOT_JOINED, "room")


async def test_join_of_a_room_outside_the_token_is_forbidden(
    connect: Connect, server: ServerProcess
) -> None:
    """Joining a room the token does not name is forbidden; another named one works."""
    room, other = unique(), unique()
    token = server.token("s1", Role.STUDENT, [room, other])
    client = await connect(server, token, room)

    error = await client.expect(Error, Join(id="j1", room=unique()))
    assert (error.code, error.field, error.id) == (ErrorCode.FORBIDDEN, "room", "j1")
    joined = await client.expect(Joined, Join(id="j2", room=other))
    assert joined.room == other


async def test_retried_broadcast_is_applied_once(
    connect: Connect, server: ServerProcess
) -> None:
    """A broadcast sent again with the same id gets the same offset, once."""
    room = unique()
    teacher, _ = await enter(connect, server, room, "t1", Role.TEACHER)
    student, _ = await enter(connect, server, room, "s1")
    await teacher.event()

    command = Broadcast(id="b-retry", room=room, topic="t", body=b"once")
    first = await teacher.expect(Ack, command)
    again = await teacher.expect(Ack, command)
    after = await teacher.expect(Ack, Broadcast(id="b-next", room=room, topic="t"))

    assert again.offset == first.offset
    assert after.offset == (first.offset or 0) + 1
    events = await student.events(2)
    assert [(e.offset, e.body) for e in events] == [
        (first.offset, b"once"),
        (after.offset, b""),
    ]
    assert await student.silence(0.3) == []


async def test_rejoin_with_offset_and_epoch_recovers_missed_events(
    connect: Connect, server: ServerProcess
) -> None:
    """A new connection resuming at its last offset gets exactly what it missed."""
    room = unique()
    teacher, _ = await enter(connect, server, room, "t1", Role.TEACHER)
    student, joined = await enter(connect, server, room, "s1")
    await teacher.event()
    last = joined.offset

    await student.close()
    gone = await teacher.event()
    assert isinstance(gone, MemberLeft)
    bodies = [f"question {n}".encode() for n in range(3)]
    for n, body in enumerate(bodies):
        await teacher.expect(
            Ack, Broadcast(id=f"b{n}", room=room, topic="q", body=body)
        )

    again, resumed = await enter(
        connect, server, room, "s1", last_offset=last, epoch=joined.epoch
    )
    assert resumed.recovered is True
    assert resumed.roster is None
    assert resumed.epoch == joined.epoch
    missed = await again.events(resumed.offset - last)
    assert [e.offset for e in missed] == list(range(last + 1, resumed.offset + 1))
    assert isinstance(missed[0], MemberLeft)
    assert [e.body for e in missed[1:4]] == bodies
    assert isinstance(missed[4], MemberJoined)
    assert missed[4].member.user == "s1"

    live = await teacher.expect(Ack, Broadcast(id="b-live", room=room, topic="q"))
    assert (await again.event()).offset == live.offset
    assert await again.silence(0.3) == []


@pytest.mark.parametrize("resume", ["wrong-epoch", "offset-ahead"])
async def test_rejoin_that_cannot_resume_gets_a_fresh_roster(
    connect: Connect, server: ServerProcess, resume: str
) -> None:
    """A wrong epoch or an offset from the future gives recovered false + roster."""
    room = unique()
    _, first = await enter(connect, server, room, "t1", Role.TEACHER)
    if resume == "wrong-epoch":
        offset, epoch = first.offset, first.epoch + "-old"
    else:
        offset, epoch = first.offset + 100, first.epoch

    client, joined = await enter(
        connect, server, room, "s1", last_offset=offset, epoch=epoch
    )
    assert joined.recovered is False
    assert joined.epoch == first.epoch
    assert joined.roster is not None
    assert {m.user for s in joined.roster for c in s.classes for m in c.members} == {
        "s1",
        "t1",
    }
    assert await client.silence(0.3) == []


async def crashed_room(
    connect: Connect, server_factory: ServerFactory
) -> tuple[ServerProcess, str, str, int]:
    """A room with two members on a node that was then killed and restarted.

    Returns the node, the room, its epoch and the offset of its last event
    before the crash.
    """
    node = server_factory()
    room = unique()
    teacher, _ = await enter(connect, node, room, "t1", Role.TEACHER)
    await enter(connect, node, room, "s1")
    await teacher.event()
    ack = await teacher.expect(Ack, Broadcast(id="b1", room=room, topic="q", body=b"1"))
    epoch = (await teacher.event()).epoch
    assert ack.offset is not None

    node.kill()
    node.start()
    return node, room, epoch, ack.offset


async def test_history_survives_a_server_crash(
    connect: Connect, server_factory: ServerFactory
) -> None:
    """After a crash, the first join resumes the same epoch; offsets continue."""
    node, room, epoch, last = await crashed_room(connect, server_factory)

    back, resumed = await enter(
        connect, node, room, "t1", Role.TEACHER, last_offset=last, epoch=epoch
    )
    assert resumed.epoch == epoch
    assert resumed.recovered is True
    missed = await back.events(resumed.offset - last)
    assert [e.offset for e in missed] == list(range(last + 1, resumed.offset + 1))
    # The member whose connection died with the node is marked gone; the one
    # rejoining is in the room all along, so it never appears to leave.
    ghosts = [(e.user, e.reason) for e in missed if isinstance(e, MemberLeft)]
    assert ghosts == [("s1", LeaveReason.DISCONNECTED)]

    after = await back.expect(Ack, Broadcast(id="b2", room=room, topic="q"))
    assert after.offset == resumed.offset + 1
    _, fresh = await enter(connect, node, room, "s2")
    assert fresh.epoch == epoch
    assert fresh.roster is not None
    assert {m.user for s in fresh.roster for c in s.classes for m in c.members} == {
        "s2",
        "t1",
    }
