"""The Python client against a real node: commands, events, clock, reconnects."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

import msgspec
import pytest

from client_sdk import (
    JSON_SUBPROTOCOL,
    MSGPACK_SUBPROTOCOL,
    Ack,
    Broadcast,
    BroadcastEvent,
    Client,
    ClientClosed,
    ClientError,
    ClientEvent,
    CloseCode,
    CommandError,
    ConnectionLost,
    ConnectionRefused,
    ConnectionState,
    Disconnected,
    ErrorCode,
    Hello,
    MemberJoined,
    MemberLeft,
    Reconnected,
    Resumed,
    Resynced,
    Role,
)
from client_sdk.protocol import ServerMessage
from server import auth

from .conftest import Node

T = TypeVar("T")

#: The most items a test reads from one stream while waiting for something.
MAX_ITEMS = 500
WAIT = 10.0

SUBPROTOCOLS = pytest.mark.parametrize(
    "subprotocol", [MSGPACK_SUBPROTOCOL, JSON_SUBPROTOCOL], ids=["msgpack", "json"]
)


async def read_until(
    client: Client, done: Callable[[ClientEvent], bool], within: float = WAIT
) -> list[ClientEvent]:
    """Every item of the stream up to and including the first ``done`` one."""
    items: list[ClientEvent] = []
    async with asyncio.timeout(within):
        for _ in range(MAX_ITEMS):
            item = await client.next_event()
            items.append(item)
            if done(item):
                return items
    raise AssertionError(f"gave up after {MAX_ITEMS} items: {items[-5:]!r}")


async def next_of(client: Client, kind: type[T], within: float = WAIT) -> T:
    """The next item of type ``kind``, skipping others."""
    items = await read_until(client, lambda item: isinstance(item, kind), within)
    found = items[-1]
    assert isinstance(found, kind)
    return found


async def teacher_and_student(
    node: Node, room: str, subprotocol: str = MSGPACK_SUBPROTOCOL
) -> tuple[Client, Client]:
    """Both connected and in ``room``, the student's stream past its own join."""
    teacher = node.client("t1", Role.TEACHER, room, subprotocol=subprotocol)
    student = node.client("s1", Role.STUDENT, room, subprotocol=subprotocol)
    await teacher.connect()
    await student.connect()
    await teacher.join(room)
    await student.join(room)
    return teacher, student


@SUBPROTOCOLS
async def test_connect_returns_hello(node: Node, room: str, subprotocol: str) -> None:
    """connect() returns the node's hello over either subprotocol."""
    client = node.client("s1", Role.STUDENT, room, subprotocol=subprotocol)

    hello = await client.connect()

    assert isinstance(hello, Hello)
    assert (hello.protocol, hello.user, hello.role) == (1, "s1", Role.STUDENT)
    assert hello.rooms == [room]
    assert client.state is ConnectionState.OPEN
    assert client.hello == hello
    pong = await client.ping()
    assert pong.server_time > 0


@pytest.mark.parametrize(
    ("make_token", "code"),
    [
        (
            lambda room: auth.mint(
                "y" * 48, user="s1", role=Role.STUDENT, rooms=[room]
            ),
            CloseCode.TOKEN_INVALID,
        ),
        (
            lambda room: auth.mint(
                "x" * 48, user="s1", role=Role.STUDENT, rooms=["other"]
            ),
            CloseCode.WRONG_ROOM,
        ),
        (lambda room: "", CloseCode.TOKEN_MISSING),
    ],
    ids=["bad-signature", "wrong-room", "no-token"],
)
async def test_refusal_raises_connection_refused(
    node: Node, room: str, make_token: Callable[[str], str], code: CloseCode
) -> None:
    """A refused handshake raises ConnectionRefused with its close code, once."""
    client = node.client("s1", Role.STUDENT, room, token=make_token(room))

    with pytest.raises(ConnectionRefused) as refused:
        await client.connect()

    assert refused.value.code == code
    assert refused.value.reason
    assert client.state is ConnectionState.IDLE


@SUBPROTOCOLS
async def test_broadcast_reaches_student(
    node: Node, room: str, subprotocol: str
) -> None:
    """A teacher's broadcast reaches a student as a typed event at the acked offset."""
    teacher, student = await teacher_and_student(node, room, subprotocol)

    ack = await teacher.broadcast(room, "quiz.open", b"\x00\x01question 1")
    event = await student.next_event(timeout=WAIT)

    assert isinstance(event, BroadcastEvent)
    assert (event.room, event.offset, event.topic) == (room, ack.offset, "quiz.open")
    assert event.body == b"\x00\x01question 1"
    assert (event.sender.user, event.sender.role) == ("t1", Role.TEACHER)
    assert student.rooms[room] == (event.epoch, ack.offset)


async def test_join_events_are_typed(node: Node, room: str) -> None:
    """A member joining and leaving reaches the others as typed events."""
    teacher = node.client("t1", Role.TEACHER, room)
    student = node.client("s1", Role.STUDENT, room)
    await teacher.connect()
    await student.connect()
    joined = await teacher.join(room)

    await student.join(room)
    await student.leave(room)

    arrived = await teacher.next_event(timeout=WAIT)
    left = await teacher.next_event(timeout=WAIT)
    assert isinstance(arrived, MemberJoined)
    assert (arrived.member.user, arrived.offset) == ("s1", joined.offset + 1)
    assert isinstance(left, MemberLeft)
    assert (left.user, left.offset) == ("s1", joined.offset + 2)
    assert room not in student.rooms


async def test_same_id_is_applied_once(node: Node, room: str) -> None:
    """A broadcast sent twice with one id gets one offset and one event."""
    teacher, student = await teacher_and_student(node, room)
    command = Broadcast(id="quiz-42", room=room, topic="answer", body=b"B")

    first = await teacher.request(command)
    second = await teacher.request(command)
    after = await teacher.broadcast(room, "answer", b"C")

    assert first.id == second.id == "quiz-42"
    assert first.offset == second.offset
    assert after.offset == (first.offset or 0) + 1
    events = [await student.next_event(timeout=WAIT) for _ in range(2)]
    assert [(e.offset, e.body) for e in events if isinstance(e, BroadcastEvent)] == [
        (first.offset, b"B"),
        (after.offset, b"C"),
    ]


async def test_error_frames_raise_command_error(node: Node, room: str) -> None:
    """Refused commands raise CommandError with the code, field and id."""
    teacher, student = await teacher_and_student(node, room)

    with pytest.raises(CommandError) as forbidden:
        await student.broadcast(room, "answer", b"A", id="s-1")
    with pytest.raises(CommandError) as not_joined:
        await teacher.broadcast("elsewhere", "hi")
    with pytest.raises(CommandError) as invalid:
        await teacher.broadcast(room, "")

    assert (forbidden.value.code, forbidden.value.field) == (
        ErrorCode.FORBIDDEN,
        "room",
    )
    assert forbidden.value.id == "s-1"
    assert (not_joined.value.code, not_joined.value.field) == (
        ErrorCode.NOT_JOINED,
        "room",
    )
    assert (invalid.value.code, invalid.value.field) == (ErrorCode.INVALID, "topic")
    # The connection survived every refusal.
    assert (await teacher.broadcast(room, "still", b"ok")).offset is not None


async def test_measure_clock_on_loopback(node: Node, room: str) -> None:
    """On loopback the measured offset is near zero and the round trip positive."""
    client = node.client("s1", Role.STUDENT, room)
    with pytest.raises(ClientError):
        client.server_now()
    await client.connect()
    # Before a measurement, hello gives an estimate off by the one-way delay.
    assert abs(client.server_now() - time.time() * 1000) < 1000

    clock = await client.measure_clock(samples=5, spacing=0.01)

    assert clock.samples == 5
    assert 0 < clock.rtt_ms < 1000
    # Same machine, same clock: only the server's whole milliseconds and
    # half the round trip separate the two.
    assert abs(clock.offset_ms) <= clock.error_ms + 2
    assert abs(client.server_now() - time.time() * 1000) < clock.error_ms + 50


async def test_reconnects_and_resumes_after_a_dropped_socket(
    node: Node, room: str
) -> None:
    """After its socket drops, the student resumes and gets every broadcast once."""
    teacher, student = await teacher_and_student(node, room)
    total = 30

    async def lesson() -> None:
        for index in range(total):
            await teacher.broadcast(room, "slide", str(index).encode())
            await asyncio.sleep(0.02)

    sender = asyncio.create_task(lesson())
    try:
        before = await read_until(
            student,
            lambda item: isinstance(item, BroadcastEvent) and item.body == b"9",
        )
        link = student._link
        assert link is not None
        link.ws.transport.abort()
        after = await read_until(
            student,
            lambda item: (
                isinstance(item, BroadcastEvent)
                and item.body == str(total - 1).encode()
            ),
            within=20,
        )
        await asyncio.wait_for(sender, WAIT)
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)

    items = before + after
    bodies = [i.body for i in items if isinstance(i, BroadcastEvent)]
    assert bodies == [str(index).encode() for index in range(total)]
    offsets = [
        i.offset
        for i in items
        if isinstance(i, BroadcastEvent | MemberJoined | MemberLeft)
    ]
    assert offsets == list(range(offsets[0], offsets[0] + len(offsets)))
    kinds = [type(i) for i in items]
    assert Disconnected in kinds
    assert Reconnected in kinds
    disconnected = next(i for i in items if isinstance(i, Disconnected))
    assert (disconnected.code, disconnected.reconnecting) == (1006, True)
    resumed = next(i for i in items if isinstance(i, Resumed))
    assert resumed.room == room
    assert resumed.joined.recovered
    assert Resynced not in kinds
    # The server saw the student drop and come back; both are in the stream.
    assert any(isinstance(i, MemberLeft) and i.user == "s1" for i in items)
    assert student.state is ConnectionState.OPEN


async def test_commands_in_flight_survive_a_drop(node: Node, room: str) -> None:
    """Broadcasts sent as the socket drops are all acked and delivered once."""
    teacher, student = await teacher_and_student(node, room)

    sending = asyncio.gather(
        *(teacher.broadcast(room, "answer", str(i).encode()) for i in range(5))
    )
    await asyncio.sleep(0)
    link = teacher._link
    assert link is not None
    link.ws.transport.abort()
    acks = await asyncio.wait_for(sending, WAIT)

    offsets = sorted(ack.offset or 0 for ack in acks)
    assert len(set(offsets)) == 5
    seen: list[BroadcastEvent] = []
    async with asyncio.timeout(WAIT):
        while len(seen) < 5:
            item = await student.next_event()
            if isinstance(item, BroadcastEvent):
                seen.append(item)
    assert sorted(e.offset for e in seen) == offsets
    assert sorted(e.body for e in seen) == [str(i).encode() for i in range(5)]


def lose_reply(
    monkeypatch: pytest.MonkeyPatch, client: Client, command_id: str, *, drop: bool
) -> list[Ack]:
    """Make the current link lose the first reply to ``command_id``.

    With ``drop`` the connection also dies as the reply arrives, as when a
    network fails between the server's ack and the client reading it.
    """
    link = client._link
    assert link is not None
    resolve = link.resolve
    lost: list[Ack] = []

    def losing(reply_to: str, message: ServerMessage) -> bool:
        if reply_to == command_id and not lost and isinstance(message, Ack):
            lost.append(message)
            if drop:
                link.ws.transport.abort()
            return False
        return resolve(reply_to, message)

    monkeypatch.setattr(link, "resolve", losing)
    return lost


@pytest.mark.parametrize("drop", [True, False], ids=["connection-lost", "timeout"])
async def test_lost_ack_is_retried_with_the_same_id(
    node: Node, room: str, monkeypatch: pytest.MonkeyPatch, drop: bool
) -> None:
    """A broadcast whose ack was lost is sent again and applied only once."""
    teacher, student = await teacher_and_student(node, room)
    lost = lose_reply(monkeypatch, teacher, "slide-7", drop=drop)

    ack = await teacher.broadcast(room, "slide", b"7", id="slide-7", timeout=1.0)
    after = await teacher.broadcast(room, "slide", b"8")

    assert [a.offset for a in lost] == [ack.offset]
    items = await read_until(
        student, lambda i: isinstance(i, BroadcastEvent) and i.body == b"8"
    )
    slides = [(i.offset, i.body) for i in items if isinstance(i, BroadcastEvent)]
    assert slides == [(ack.offset, b"7"), (after.offset, b"8")]


async def test_skipped_offset_triggers_a_rejoin(node: Node, room: str) -> None:
    """An event past a gap makes the client rejoin from its last offset."""
    teacher, student = await teacher_and_student(node, room)
    first = await teacher.broadcast(room, "slide", b"1")
    await next_of(student, BroadcastEvent)
    # Pretend the event before the last one never arrived.
    student._rooms[room].offset = (first.offset or 0) - 1

    second = await teacher.broadcast(room, "slide", b"2")
    items = await read_until(
        student, lambda i: isinstance(i, BroadcastEvent) and i.body == b"2"
    )

    assert isinstance(items[0], Resumed)
    replayed = [(i.offset, i.body) for i in items if isinstance(i, BroadcastEvent)]
    assert replayed == [(first.offset, b"1"), (second.offset, b"2")]


async def test_server_restart_resyncs_the_room(node: Node, room: str) -> None:
    """A node restarted on a memory store has a new epoch: the client resyncs."""
    teacher, student = await teacher_and_student(node, room)
    await teacher.broadcast(room, "slide", b"before")
    before = await next_of(student, BroadcastEvent)

    await node.stop()
    await node.start()

    resynced = await next_of(student, Resynced, within=20)
    assert resynced.room == room
    assert not resynced.joined.recovered
    assert resynced.joined.epoch != before.epoch
    assert student.rooms[room] == (resynced.joined.epoch, resynced.joined.offset)
    await next_of(teacher, Resynced, within=20)
    ack = await teacher.broadcast(room, "slide", b"after")
    after = await next_of(student, BroadcastEvent)
    assert (after.epoch, after.offset, after.body) == (
        resynced.joined.epoch,
        ack.offset,
        b"after",
    )


async def test_a_node_restart_is_news_not_a_failure(
    node: Node, room: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A 1012 close is followed by a reconnect, logged as info, not a warning."""
    student = node.client("s1", Role.STUDENT, room)
    await student.connect()
    await student.join(room)

    with caplog.at_level("INFO", logger="client_sdk.client"):
        await node.stop()
        gone = await next_of(student, Disconnected)
        await node.start()
        await next_of(student, Resynced, within=20)

    assert (gone.code, gone.reconnecting) == (1012, True)
    closed = [r for r in caplog.records if "connection closed with 1012" in r.message]
    assert closed, caplog.records
    assert all(record.levelname == "INFO" for record in closed)


async def test_no_reconnect_when_disabled(node: Node, room: str) -> None:
    """With reconnect off, a drop ends the stream with ConnectionLost."""
    client = node.client("s1", Role.STUDENT, room, reconnect=False)
    await client.connect()
    await client.join(room)
    link = client._link
    assert link is not None

    link.ws.transport.abort()

    gone = await next_of(client, Disconnected)
    assert (gone.code, gone.reconnecting) == (1006, False)
    with pytest.raises(ConnectionLost):
        await client.next_event(timeout=WAIT)
    with pytest.raises(ConnectionLost):
        await client.ping()
    assert client.state is ConnectionState.CLOSED


async def test_close_stops_everything(node: Node, room: str) -> None:
    """close() ends the stream, refuses commands and leaves no task behind."""
    before = asyncio.all_tasks()
    client = node.client("s1", Role.STUDENT, room)
    await client.connect()
    await client.join(room)

    await client.close()

    assert client.state is ConnectionState.CLOSED
    assert [item async for item in client.events()] == []
    with pytest.raises(ClientClosed):
        await client.ping()
    left = {t for t in asyncio.all_tasks() - before if "Client" in repr(t.get_coro())}
    assert not left


async def test_close_while_reconnecting(node: Node, room: str) -> None:
    """close() during a reconnect returns promptly and ends the stream."""
    client = node.client("s1", Role.STUDENT, room)
    await client.connect()
    await client.join(room)

    await node.stop()
    gone = await next_of(client, Disconnected)
    during = client.state
    async with asyncio.timeout(WAIT):
        await client.close()

    assert gone.reconnecting
    assert during is ConnectionState.RECONNECTING
    assert client.state is ConnectionState.CLOSED
    assert [item async for item in client.events()] == []


async def test_refusal_on_reconnect_stops_reconnecting(node: Node, room: str) -> None:
    """A node that now refuses the token ends the client with ConnectionRefused."""
    client = node.client("s1", Role.STUDENT, room)
    await client.connect()
    await client.join(room)

    await node.stop()
    node.settings = msgspec.structs.replace(node.settings, secret="z" * 48)
    await node.start()

    await next_of(client, Disconnected)
    with pytest.raises(ConnectionRefused) as refused:
        await client.next_event(timeout=WAIT)
    assert refused.value.code == CloseCode.TOKEN_INVALID
    assert client.state is ConnectionState.CLOSED
