"""Two server processes sharing one Redis: fan-out and forwarding between nodes."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from client_sdk.protocol import (
    JSON_SUBPROTOCOL,
    MSGPACK_SUBPROTOCOL,
    Ack,
    Broadcast,
    BroadcastEvent,
    ClassRoster,
    LeaveReason,
    MemberJoined,
    MemberLeft,
    PresenceChanged,
    Role,
    SchoolRoster,
)

from .conftest import Connect, ServerFactory, ServerProcess, enter, member, unique

pytestmark = pytest.mark.redis


@pytest.fixture
def nodes(
    server_factory: ServerFactory, redis_url: str
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Nodes A and B on the session's Redis, with the same token key."""
    backends = ["--broker", redis_url, "--store", redis_url]
    a = server_factory(args=[*backends, "--node", "node-a"])
    b = server_factory(args=[*backends, "--node", "node-b"])
    yield a, b
    # B first: its members' leaves on shutdown go to A, the rooms' writer.
    b.stop()
    a.stop()


def offsets(events: Sequence[Any]) -> list[int]:
    """The offsets of ``events``, in the order they arrived."""
    return [e.offset for e in events]


async def test_room_events_cross_nodes_and_stay_in_their_room(
    connect: Connect, nodes: tuple[ServerProcess, ServerProcess]
) -> None:
    """Broadcasts and presence reach the room's members on both nodes, only them."""
    a, b = nodes
    room, other = unique("lesson"), unique("lesson")

    teacher_a, first = await enter(connect, a, room, "t-a", Role.TEACHER)
    assert teacher_a.hello is not None
    assert teacher_a.hello.node == "node-a"
    student_b, joined_b = await enter(connect, b, room, "s-b")
    assert student_b.hello is not None
    assert student_b.hello.node == "node-b"
    outsider, _ = await enter(connect, b, other, "s-other")
    assert joined_b.epoch == first.epoch
    assert joined_b.offset == first.offset + 1

    # Presence of B's client is seen on A.
    arrived = await teacher_a.event()
    assert isinstance(arrived, MemberJoined)
    assert arrived.member.user == "s-b"
    seen_a: list[Any] = [arrived]
    seen_b: list[Any] = []

    ack = await teacher_a.expect(
        Ack, Broadcast(id="from-a", room=room, topic="q", body=b"\x00A\xff")
    )
    assert ack.offset == joined_b.offset + 1
    on_b = await student_b.event()
    assert isinstance(on_b, BroadcastEvent)
    assert (on_b.offset, on_b.body, on_b.epoch) == (
        ack.offset,
        b"\x00A\xff",
        first.epoch,
    )
    seen_a.append(await teacher_a.event())
    seen_b.append(on_b)
    assert await outsider.silence(1.0) == []

    # A teacher on B: its join and broadcast go to A, the room's writer.
    teacher_b, joined_tb = await enter(connect, b, room, "t-b", Role.TEACHER)
    assert joined_tb.offset == ack.offset + 1
    reply = await teacher_b.expect(
        Ack, Broadcast(id="from-b", room=room, topic="q", body=b"B")
    )
    assert reply.offset == joined_tb.offset + 1
    for client, seen in ((teacher_a, seen_a), (student_b, seen_b)):
        seen.extend(await client.events(2))
    assert [type(e) for e in seen_a[-2:]] == [MemberJoined, BroadcastEvent]
    assert seen_a[-1].body == b"B"
    assert (await teacher_b.event()).offset == reply.offset

    # A member on B leaving is seen on A too.
    await student_b.close()
    left = await teacher_a.event()
    assert isinstance(left, MemberLeft)
    assert (left.user, left.reason) == ("s-b", LeaveReason.DISCONNECTED)
    seen_a.append(left)

    assert offsets(seen_a) == list(range(first.offset + 1, first.offset + 6))
    assert offsets(seen_b) == list(range(ack.offset, ack.offset + 3))
    assert {e.epoch for e in seen_a + seen_b} == {first.epoch}
    assert await outsider.silence(0.5) == []

    metrics_a, metrics_b = await a.metrics(), await b.metrics()
    assert metrics_a("lophoc_rooms", kind="owned") == 1
    assert metrics_b("lophoc_rooms", kind="owned") == 1
    assert metrics_b("lophoc_rooms", kind="followed") == 2


async def test_either_node_serves_a_room_whose_writer_is_elsewhere(
    connect: Connect, nodes: tuple[ServerProcess, ServerProcess]
) -> None:
    """Members who all sit on B still get contiguous offsets from A's writer."""
    a, b = nodes
    room = unique("lesson")
    opener, first = await enter(connect, a, room, "t-a", Role.TEACHER)

    joins = []
    for n in range(3):
        joins.append(await enter(connect, b, room, f"s{n}"))
    teacher, _ = await enter(connect, b, room, "t-b", Role.TEACHER)
    acks = [
        await teacher.expect(Ack, Broadcast(id=f"b{n}", room=room, topic="q"))
        for n in range(5)
    ]
    last = acks[-1].offset
    assert last is not None
    assert offsets(acks) == list(range(last - 4, last + 1))

    for client, joined in joins:
        assert joined.epoch == first.epoch
        events = await client.events_until(last)
        assert offsets(events) == list(range(joined.offset + 1, last + 1))
        broadcasts = [e for e in events if isinstance(e, BroadcastEvent)]
        assert offsets(broadcasts) == offsets(acks)
        assert {e.sender.user for e in broadcasts} == {"t-b"}
    events = await opener.events_until(last)
    assert offsets(events) == list(range(first.offset + 1, last + 1))

    metrics_a = await a.metrics()
    assert metrics_a("lophoc_rooms", kind="owned") == 1


async def test_a_join_through_the_other_node_gets_the_roster_in_its_format(
    connect: Connect, nodes: tuple[ServerProcess, ServerProcess]
) -> None:
    """The writer's node encodes the roster as the joiner speaks, JSON or not."""
    a, b = nodes
    room = unique("lesson")
    await enter(connect, a, room, "t-a", Role.TEACHER, school="S1", class_="6A")
    await enter(connect, a, room, "s-a", school="S2", class_="7B")
    expected = [
        SchoolRoster(
            school="S1",
            classes=[
                ClassRoster(
                    class_="6A", members=[member("t-a", Role.TEACHER, "S1", "6A")]
                )
            ],
        ),
        SchoolRoster(
            school="S2",
            classes=[
                ClassRoster(
                    class_="7B",
                    members=[
                        member("s-a", Role.STUDENT, "S2", "7B"),
                        member("s-b", Role.STUDENT, "S2", "7B"),
                    ],
                )
            ],
        ),
    ]
    for subprotocol in (JSON_SUBPROTOCOL, MSGPACK_SUBPROTOCOL):
        client, joined = await enter(
            connect, b, room, "s-b", school="S2", class_="7B", subprotocol=subprotocol
        )
        assert client.hello is not None
        assert client.hello.node == "node-b"
        assert joined.roster == expected, subprotocol


def arrived(event: Any, user: str) -> bool:
    """Whether room event ``event`` says ``user`` came (back) into the room."""
    if isinstance(event, MemberJoined):
        return bool(event.member.user == user)
    if isinstance(event, PresenceChanged):
        return any(m.user == user for m in event.joined)
    return False


async def test_a_member_through_the_other_node_stays_in_a_room_that_moved(
    connect: Connect, nodes: tuple[ServerProcess, ServerProcess]
) -> None:
    """A room rebuilt on a node that never held a connection still serves it."""
    a, b = nodes
    room = unique("lesson")
    # The first join makes A the room's writer; B's member goes through A.
    await enter(connect, a, room, "t-host", Role.TEACHER)
    guest, _ = await enter(connect, b, room, "t-guest", Role.TEACHER)
    # A restarts: it hands the room over and closes its own connections.
    a.stop()
    a.start()
    # A join through the new A rebuilds the room there, from the store; A
    # holds no connection of the guest's and marks them gone.
    late, _ = await enter(connect, a, room, "t-late", Role.TEACHER)
    # The guest's connection never closed: B joins it again as soon as it
    # hears, and a broadcast sent meanwhile joins it again before it is
    # tried once more. Either way it is served.
    ack = await guest.expect(Ack, Broadcast(id="after-move", room=room, topic="t"))
    seen = await late.events_until(ack.offset)
    back = [e.offset for e in seen if arrived(e, "t-guest")]
    assert back, seen
    assert isinstance(seen[-1], BroadcastEvent)
    assert seen[-1].sender.user == "t-guest"
    # The guest was told the room had marked it gone, then saw itself back.
    await guest.recv_where(
        lambda m: (
            isinstance(m, MemberLeft)
            and m.user == "t-guest"
            and m.reason is LeaveReason.DISCONNECTED
        )
    )
    await guest.recv_where(lambda m: arrived(m, "t-guest"))

    # Without a command of the guest's: the next rebuild's mark is undone
    # by B alone, and the others see the guest back.
    a.stop()
    a.start()
    later, _ = await enter(connect, a, room, "t-later", Role.TEACHER)
    sent_at = ack.offset or 0
    await guest.recv_where(
        lambda m: (
            isinstance(m, MemberLeft) and m.user == "t-guest" and m.offset > sent_at
        )
    )
    await later.recv_where(lambda m: arrived(m, "t-guest"), 10.0)
