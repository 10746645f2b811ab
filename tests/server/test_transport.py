"""Frames written straight to the socket: shared by the room, in order, valid.

A room event is framed once and written to each member's socket as it fans
out; a member whose socket pushes back gets the rest through its queue. These
tests hold that to what a client sees: every frame a valid WebSocket frame,
every member's events complete and in order, whether the member reads
quickly, slowly, or speaks JSON beside MessagePack members.
"""

from __future__ import annotations

import asyncio
import json
import time

import msgspec
import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from client_sdk.protocol import (
    JSON_SUBPROTOCOL,
    Ack,
    Broadcast,
    BroadcastEvent,
    Join,
    Role,
)
from server.transport import Framer

from .conftest import (
    Client,
    Connect,
    RawSocket,
    ServerFactory,
    ServerProcess,
    enter,
    unique,
)

OPCODE_BINARY = 0x2


@pytest.fixture(scope="module")
def fast_server(server_factory: ServerFactory) -> ServerProcess:
    """A server on its defaults but for a rate limit a teacher never meets."""
    return server_factory(
        {"LOPHOC_MESSAGES_PER_SECOND": "10000", "LOPHOC_BURST": "10000"}
    )


@pytest.mark.parametrize("size", [0, 125, 126, 65_535, 65_536, 300_000])
@pytest.mark.parametrize("binary", [True, False])
def test_a_framed_payload_parses_back_as_one_final_frame(
    size: int, binary: bool
) -> None:
    """Each length encoding (7, 16 and 64 bits) reads back as the payload."""
    payload = (b"x" if binary else b"a") * size
    frame = Framer().frame(payload, binary)
    reader = StreamReader()
    reader.feed_data(frame)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=False)
    with pytest.raises(StopIteration) as parsed:
        next(parser)
    result: Frame = parsed.value.value
    assert result.opcode == (Opcode.BINARY if binary else Opcode.TEXT)
    assert result.fin
    assert bytes(result.data) == payload
    assert len(frame) == len(payload) + (2 if size < 126 else 4 if size < 2**16 else 10)


def test_the_room_shares_one_frame_per_payload() -> None:
    """The same payload object is framed once; another payload gets its own."""
    framer = Framer()
    event = b"\x81\xa4kind\xa5event"
    first = framer.frame(event, True)
    assert framer.frame(event, True) is first
    # A JSON member between two MessagePack members keeps the shared frame.
    text = framer.frame(b'{"kind":"event"}', False)
    assert text[0] == 0x81
    assert framer.frame(event, True) is first
    other = bytes(bytearray(event))
    assert framer.frame(other, True) == first
    assert framer.frame(other, True) is not first


def test_json_frames_are_text_frames() -> None:
    """A JSON member's frame is a text frame holding the JSON as sent."""
    payload = json.dumps({"type": "event", "n": 1}).encode()
    frame = Framer().frame(payload, False)
    assert frame[0] == 0x81
    assert frame[2:] == payload


async def test_json_and_msgpack_members_of_one_room_get_every_event(
    connect: Connect, fast_server: ServerProcess
) -> None:
    """Members of both subprotocols, interleaved, each get all events in order."""
    room = unique()
    teacher, _ = await enter(connect, fast_server, room, "t1", Role.TEACHER)
    members = []
    for n in range(6):
        subprotocol = JSON_SUBPROTOCOL if n % 2 else "lophoc.v1.msgpack"
        client, joined = await enter(
            connect, fast_server, room, f"s{n}", subprotocol=subprotocol
        )
        members.append((client, joined))
    await teacher.silence(0.2)
    bodies = [f"event {n} " * n for n in range(40)]
    last: int | None = None
    for n, body in enumerate(bodies):
        ack = await teacher.expect(
            Ack, Broadcast(id=f"b{n}", room=room, topic="t", body=body.encode())
        )
        last = ack.offset
    for client, _ in members:
        events = await client.events_until(last)
        got = [e.body.decode() for e in events if isinstance(e, BroadcastEvent)]
        assert got == bodies, client.ws.subprotocol
        offsets = [e.offset for e in events]
        assert offsets == sorted(set(offsets))


async def test_a_slow_reader_gets_every_event_in_order_once_it_reads(
    connect: Connect, fast_server: ServerProcess
) -> None:
    """Pushed back, then drained: the queued frames never overtake or vanish.

    The reader's socket buffer is tiny and it reads in short bursts with
    pauses, so its frames move between the direct path and its queue many
    times; the default send queue is large enough that it is never dropped.
    """
    room = unique()
    teacher, _ = await enter(connect, fast_server, room, "t1", Role.TEACHER)
    slow = await RawSocket.upgrade(
        fast_server,
        room,
        fast_server.token("s-slow", Role.STUDENT, room),
        receive_buffer=4096,
    )
    try:
        await slow.send_frame(msgspec.msgpack.encode(Join(id="j", room=room)))
        joined_offset = None
        while joined_offset is None:
            opcode, payload = await slow.read_frame()
            message = msgspec.msgpack.decode(payload)
            if message.get("type") == "joined":
                joined_offset = message["offset"]

        # 6 MiB in all, more than the kernel buffers for one socket, sent
        # far faster than it is read: the rest waits in the send queue.
        count = 200
        body = bytes(range(256)) * 120
        sent = asyncio.create_task(_broadcast(teacher, room, body, count))
        received: list[int] = []
        deadline = time.monotonic() + 60
        while len(received) < count and time.monotonic() < deadline:
            async with asyncio.timeout(30):
                opcode, payload = await slow.read_frame()
            assert opcode == OPCODE_BINARY
            message = msgspec.msgpack.decode(payload)
            if message.get("topic") == "slow":
                assert message["body"] == body
                received.append(int(message["offset"]))
            if len(received) % 10 == 0:
                await asyncio.sleep(0.1)
        await sent
    finally:
        slow.close()
    metrics = await fast_server.metrics()
    assert metrics("lophoc_frames_waited_total") > 0, "the socket never pushed back"
    assert len(received) == count
    assert received == sorted(received)
    assert received[0] > joined_offset


async def _broadcast(teacher: Client, room: str, body: bytes, count: int) -> None:
    for n in range(count):
        await teacher.expect(
            Ack, Broadcast(id=f"slow{n}", room=room, topic="slow", body=body)
        )
