"""The hub: single writer per room, forwarding between nodes, ordered feeds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from client_sdk.protocol import (
    BroadcastEvent,
    ErrorCode,
    LeaveReason,
    Member,
    MemberJoined,
    Role,
)
from rooms.backends import open_broker, open_store
from rooms.errors import Refused
from rooms.feed import EncodedEvent
from rooms.hub import Hub
from rooms.room import JoinRoom, LeaveRoom, SendBroadcast
from rooms.roster import decode_roster
from rooms.wire import AppendReply, JoinReply, RefusedReply

TEACHER = Member(user="t", name="T", role=Role.TEACHER, school="A", class_="9A")
STUDENT = Member(user="s", name="S", role=Role.STUDENT, school="B", class_="6C")


class Collector:
    """A listener that records what its feed delivers."""

    def __init__(self) -> None:
        self.events: list[EncodedEvent] = []
        self.resets: list[str] = []
        self.arrived = asyncio.Event()

    def deliver(self, event: EncodedEvent) -> None:
        self.events.append(event)
        self.arrived.set()

    def reset(self, room: str) -> None:
        self.resets.append(room)

    def notice(self, notice: object) -> None:
        """Notices are not under test here."""

    def membership(self, room: str) -> None:
        """A collector is not a member of the room."""

    def forgotten(self, room: str) -> None:
        """Never called: a collector is not a member."""

    @property
    def offsets(self) -> list[int]:
        return [e.offset for e in self.events]

    async def wait_for(self, count: int, within: float = 5.0) -> None:
        async with asyncio.timeout(within):
            while len(self.events) < count:
                self.arrived.clear()
                await self.arrived.wait()


async def start_hub(broker_url: str, store_url: str, data_dir: Path, node: str) -> Hub:
    broker = open_broker(broker_url)
    store = open_store(store_url, data_dir)
    await store.connect()
    await broker.connect()
    hub = Hub(broker, store, node=node, lease_ms=3000)
    await hub.start()
    return hub


async def stop_hub(hub: Hub) -> None:
    await hub.close()
    await hub.broker.close()
    await hub.store.close()


@pytest.fixture
async def embedded(tmp_path: Path) -> AsyncIterator[Hub]:
    hub = await start_hub("memory://", "sqlite://", tmp_path, "solo")
    yield hub
    await stop_hub(hub)


@pytest.fixture
async def two_nodes(redis_url: str, tmp_path: Path) -> AsyncIterator[tuple[Hub, Hub]]:
    a = await start_hub(redis_url, redis_url, tmp_path, "node-a")
    b = await start_hub(redis_url, redis_url, tmp_path, "node-b")
    yield a, b
    await stop_hub(b)
    await stop_hub(a)


async def test_embedded_join_broadcast_and_dedupe(embedded: Hub) -> None:
    """One node: events arrive in order and a retried command is stored once."""
    listener = Collector()
    await embedded.listen("r", listener)

    joined = await embedded.submit("r", JoinRoom(TEACHER, "s1"))
    first = await embedded.submit("r", SendBroadcast(TEACHER, "c1", "t", b"one"))
    again = await embedded.submit("r", SendBroadcast(TEACHER, "c1", "t", b"one"))
    await listener.wait_for(2)
    await asyncio.sleep(0.1)

    assert isinstance(joined, JoinReply)
    assert joined.offset == 1
    assert first == AppendReply(2)
    assert again == AppendReply(2, duplicate=True)
    assert listener.offsets == [1, 2]
    assert isinstance(listener.events[1].decode(), BroadcastEvent)


async def test_refused_command_appends_nothing(embedded: Hub) -> None:
    """A student's broadcast is refused by the writer and leaves no event."""
    await embedded.submit("r", JoinRoom(STUDENT, "s1"))

    reply = await embedded.submit("r", SendBroadcast(STUDENT, "c1", "t", b"x"))
    head = await embedded.store.open_room("r")

    assert isinstance(reply, RefusedReply)
    assert reply.code is ErrorCode.FORBIDDEN
    assert head.offset == 1


async def test_second_node_forwards_to_the_owner(two_nodes: tuple[Hub, Hub]) -> None:
    """Commands sent through another node are applied by the one writer."""
    a, b = two_nodes
    on_a, on_b = Collector(), Collector()
    await a.listen("r", on_a)
    await b.listen("r", on_b)

    await a.submit("r", JoinRoom(TEACHER, "s1"))
    reply = await b.submit("r", JoinRoom(STUDENT, "s2"))
    sent = await b.submit("r", SendBroadcast(TEACHER, "c1", "t", b"hi"))
    await on_a.wait_for(3)
    await on_b.wait_for(3)

    assert a.rooms_owned == 1
    assert b.rooms_owned == 0
    assert isinstance(reply, JoinReply)
    assert [
        m.members[0].user for s in decode_roster(reply.roster) for m in s.classes
    ] == ["t", "s"]
    assert sent == AppendReply(3)
    assert on_a.offsets == on_b.offsets == [1, 2, 3]


async def test_feed_fills_a_gap_from_the_store(two_nodes: tuple[Hub, Hub]) -> None:
    """An event lost on pub/sub is read back from the store, in order."""
    a, b = two_nodes
    on_b = Collector()
    await b.listen("r", on_b)
    await a.submit("r", JoinRoom(TEACHER, "s1"))
    await on_b.wait_for(1)

    # Cut node B off the room channel, as a dropped subscription would.
    feed = b._feeds["r"]
    await b.broker.unsubscribe("lophoc:room:r", feed.receive)
    await a.submit("r", SendBroadcast(TEACHER, "c1", "t", b"lost"))
    await b.broker.subscribe("lophoc:room:r", feed.receive)
    await a.submit("r", SendBroadcast(TEACHER, "c2", "t", b"seen"))
    await on_b.wait_for(3)

    assert on_b.offsets == [1, 2, 3]
    bodies = [e.decode() for e in on_b.events[1:]]
    assert [e.body for e in bodies if isinstance(e, BroadcastEvent)] == [
        b"lost",
        b"seen",
    ]
    assert on_b.resets == []


async def test_feed_drops_duplicates(embedded: Hub) -> None:
    """An event offered twice (local writer and broker) is delivered once."""
    listener = Collector()
    await embedded.listen("r", listener)
    await embedded.submit("r", JoinRoom(TEACHER, "s1"))
    await listener.wait_for(1)

    feed = embedded._feeds["r"]
    feed.offer(listener.events[0].decode().epoch, 1, listener.events[0].msgpack)
    await asyncio.sleep(0.1)

    assert listener.offsets == [1]


async def test_new_writer_rebuilds_and_marks_ghosts(
    redis_url: str, tmp_path: Path
) -> None:
    """A node taking over a room rebuilds it and marks unheld members gone."""
    a = await start_hub(redis_url, redis_url, tmp_path, "node-a")
    await a.submit("r", JoinRoom(TEACHER, "s1"))
    await a.submit("r", JoinRoom(STUDENT, "s2"))
    await stop_hub(a)

    b = await start_hub(redis_url, redis_url, tmp_path, "node-b")
    try:
        reply = await b.submit("r", JoinRoom(STUDENT, "s3"))
        assert isinstance(reply, JoinReply)
        frames = await b.store.read("r", reply.epoch, 0, reply.offset)
    finally:
        await stop_hub(b)

    assert frames is not None
    assert len(frames) == reply.offset == 5
    assert [
        m.user
        for s in decode_roster(reply.roster)
        for c in s.classes
        for m in c.members
    ] == ["s"]


async def test_unreachable_owner_is_unavailable(redis_url: str, tmp_path: Path) -> None:
    """A command for a room whose owner stopped answering fails as unavailable."""
    a = await start_hub(redis_url, redis_url, tmp_path, "node-a")
    b = await start_hub(redis_url, redis_url, tmp_path, "node-b")
    b._forward_timeout = 0.5
    try:
        await a.submit("r", JoinRoom(TEACHER, "s1"))
        # Node A stops listening for forwarded commands but keeps its lease.
        await a.broker.unsubscribe("lophoc:node:node-a", a._on_node)
        with pytest.raises(Refused) as refused:
            await b.submit("r", LeaveRoom("t", "s1", LeaveReason.LEFT))
    finally:
        await stop_hub(b)
        await stop_hub(a)

    assert refused.value.code is ErrorCode.UNAVAILABLE


async def test_join_reply_lists_the_member(embedded: Hub) -> None:
    """The join reply's roster includes the member who joined."""
    reply = await embedded.submit("r", JoinRoom(TEACHER, "s1"))

    assert isinstance(reply, JoinReply)
    history = await embedded.history("r", reply.epoch, 0, 1)
    assert history is not None
    assert isinstance(history[0].decode(), MemberJoined)


async def test_idle_empty_room_releases_its_lease(
    redis_url: str, tmp_path: Path
) -> None:
    """A room left empty and unused gives its lease up for any node to take."""
    a = await start_hub(redis_url, redis_url, tmp_path, "node-a")
    a._lease_ms = 300
    try:
        await a.submit("r", JoinRoom(TEACHER, "s1"))
        await a.submit("r", LeaveRoom("t", "s1", LeaveReason.LEFT))
        for _ in range(100):
            if not a.rooms_owned:
                break
            await asyncio.sleep(0.05)
        owner = await a.store.claim("r", "node-b", 1000)
    finally:
        await stop_hub(a)

    assert owner == "node-b"
