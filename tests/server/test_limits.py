"""Connection limits: frame size, rate, send queue, pings and bad frames."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from typing import Any

import msgspec
import pytest
from websockets.exceptions import ConnectionClosed

from client_sdk.protocol import (
    JSON_SUBPROTOCOL,
    Ack,
    Broadcast,
    BroadcastEvent,
    CloseCode,
    Error,
    ErrorCode,
    Join,
    LeaveReason,
    MemberLeft,
    Ping,
    Pong,
    Role,
)

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
OPCODE_CLOSE = 0x8
OPCODE_PING = 0x9


@pytest.fixture(scope="module")
def rate_server(server_factory: ServerFactory) -> ServerProcess:
    """A server allowing 5 messages per second with a burst of 5."""
    return server_factory({"LOPHOC_MESSAGES_PER_SECOND": "5", "LOPHOC_BURST": "5"})


@pytest.fixture(scope="module")
def small_queue_server(server_factory: ServerFactory) -> ServerProcess:
    """A server with an 8-frame send queue and no practical rate limit."""
    return server_factory(
        {
            "LOPHOC_SEND_QUEUE": "8",
            "LOPHOC_MESSAGES_PER_SECOND": "10000",
            "LOPHOC_BURST": "10000",
        }
    )


@pytest.fixture(scope="module")
def ping_server(server_factory: ServerFactory) -> ServerProcess:
    """A server that pings every half second and waits half a second for pongs."""
    return server_factory({"LOPHOC_PING_INTERVAL": "0.5", "LOPHOC_PING_TIMEOUT": "0.5"})


async def _alive(client: Client) -> None:
    pong = await client.expect(Pong, Ping(id="alive", client_time=7))
    assert pong.client_time == 7


async def test_frame_over_64_kib_is_closed_with_1009(
    connect: Connect, server: ServerProcess
) -> None:
    """A frame past max_frame_bytes closes the connection with 1009."""
    room = unique()
    client = await connect(server, server.token("s1", Role.STUDENT, room), room)
    with contextlib.suppress(ConnectionClosed):
        await client.send_frame(b"\x00" * (65_536 + 4096))
    code, _ = await client.closed()
    assert code == CloseCode.MESSAGE_TOO_BIG
    assert (await server.aget("/healthz")).status_code == 200


async def test_frame_just_under_the_limit_is_read(
    connect: Connect, server: ServerProcess
) -> None:
    """A broadcast frame just under 64 KiB is accepted and answered."""
    room = unique()
    teacher, _ = await enter(connect, server, room, "t1", Role.TEACHER)
    body = b"\xab" * 65_000
    ack = await teacher.expect(
        Ack, Broadcast(id="big", room=room, topic="t", body=body)
    )
    assert ack.offset is not None
    assert (
        len(teacher.codec.encode(Broadcast(id="big", room=room, topic="t", body=body)))
        < 65_536
    )


async def test_rate_limit_errors_then_closes_with_4009(
    connect: Connect, rate_server: ServerProcess
) -> None:
    """Past the burst, commands get rate_limited errors; persisting gets 4009."""
    room = unique()
    client = await connect(
        rate_server, rate_server.token("s1", Role.STUDENT, room), room
    )
    assert client.hello is not None
    assert client.hello.limits.messages_per_second == 5.0
    assert client.hello.limits.burst == 5
    before = await rate_server.metrics()

    # Ten at once: five fit the burst, the bucket refills 5 per second, and
    # five refusals stay within the strikes allowed before closing.
    ids = [f"p{n}" for n in range(10)]
    for n, command_id in enumerate(ids):
        await client.send(Ping(id=command_id, client_time=n))
    replies = [await client.reply(command_id) for command_id in ids]

    pongs = [r for r in replies if isinstance(r, Pong)]
    limited = [r for r in replies if isinstance(r, Error)]
    assert 5 <= len(pongs) <= 7
    assert limited
    assert len(pongs) + len(limited) == len(ids)
    assert [r.id for r in pongs] == ids[: len(pongs)]
    for error in limited:
        assert error.code == ErrorCode.RATE_LIMITED
    assert [e.id for e in limited] == ids[len(pongs) :]

    with contextlib.suppress(ConnectionClosed):
        for n in range(50):
            await client.send(Ping(id=f"more{n}", client_time=n))
    code, _ = await client.closed()
    assert code == CloseCode.RATE_LIMIT_EXCEEDED

    after = await rate_server.metrics()
    errors = "lophoc_errors_total"
    assert after(errors, code="rate_limited") >= before(
        errors, code="rate_limited"
    ) + len(limited)
    closes = "lophoc_server_closes_total"
    assert after(closes, code="4009") == before(closes, code="4009") + 1


async def test_rate_limit_refills_over_time(
    connect: Connect, rate_server: ServerProcess
) -> None:
    """Pings paced under the rate are all answered, past the burst size."""
    room = unique()
    client = await connect(
        rate_server, rate_server.token("s1", Role.STUDENT, room), room
    )
    for n in range(8):
        await client.expect(Pong, Ping(id=f"slow{n}", client_time=n))
        await asyncio.sleep(0.25)


async def test_slow_reader_is_dropped_and_others_keep_receiving(
    connect: Connect, small_queue_server: ServerProcess
) -> None:
    """A member that never reads is disconnected; the others miss nothing."""
    server = small_queue_server
    room = unique()
    teacher, _ = await enter(connect, server, room, "t1", Role.TEACHER)
    good, joined = await enter(connect, server, room, "s-good")

    # A client that joins and then never reads: tiny receive buffer, no
    # reads, so the server's writes back up into its send queue.
    slow = await RawSocket.upgrade(
        server, room, server.token("s-slow", Role.STUDENT, room), receive_buffer=4096
    )
    await slow.send_frame(msgspec.msgpack.encode(Join(id="j", room=room)))
    assert (await good.event()).member.user == "s-slow"
    await teacher.silence(0.2)

    body = bytes(range(256)) * 230
    received: list[Any] = []
    drops = 0.0
    sent = 0
    deadline = time.monotonic() + 40
    while sent < 400 and time.monotonic() < deadline:
        ack = await teacher.expect(
            Ack, Broadcast(id=f"b{sent}", room=room, topic="load", body=body)
        )
        sent += 1
        teacher.inbox.clear()
        received.extend(await good.events_until(ack.offset))
        if sent % 10 == 0:
            metrics = await server.metrics()
            drops = metrics("lophoc_send_queue_drops_total")
            if drops and any(isinstance(e, MemberLeft) for e in received):
                break
    assert drops >= 1, f"no drop after {sent} broadcasts of {len(body)} bytes"
    metrics = await server.metrics()
    assert metrics("lophoc_server_closes_total", code="4008") >= 1
    # The member leaves once the close handshake the slow client never
    # answers has timed out: a couple of seconds after the drop.
    if not any(isinstance(e, MemberLeft) for e in received):
        received.append(await good.recv_where(lambda m: isinstance(m, MemberLeft), 10))

    # A few more after the drop still reach the reader that keeps up.
    for n in range(5):
        ack = await teacher.expect(
            Ack, Broadcast(id=f"after{n}", room=room, topic="load", body=body)
        )
        received.extend(await good.events_until(ack.offset))

    offsets = [e.offset for e in received]
    assert offsets == list(range(joined.offset + 2, joined.offset + 2 + len(offsets)))
    broadcasts = [e for e in received if isinstance(e, BroadcastEvent)]
    assert len(broadcasts) == sent + 5
    assert all(e.body == body for e in broadcasts)
    left = [e for e in received if isinstance(e, MemberLeft)]
    assert [(e.user, e.reason) for e in left] == [("s-slow", LeaveReason.DISCONNECTED)]

    # The close frame cannot reach a peer that does not read: once the close
    # handshake has timed out the server drops the socket, and what it had
    # queued for it, while the client still has not read a byte.
    deadline = time.monotonic() + 10
    while server.holds_connection_from(slow.port):
        assert time.monotonic() < deadline, "the dropped socket is still open"
        await asyncio.sleep(0.1)
    codes = []
    try:
        async with asyncio.timeout(15):
            while True:
                try:
                    opcode, payload = await slow.read_frame()
                except (asyncio.IncompleteReadError, ConnectionResetError):
                    break
                if opcode == OPCODE_CLOSE:
                    codes.append(struct.unpack("!H", payload[:2])[0])
    finally:
        slow.close()
    assert codes in ([], [CloseCode.SEND_QUEUE_FULL])


async def test_client_that_never_answers_pings_is_cut_off(
    ping_server: ServerProcess,
) -> None:
    """A connection that ignores pings is closed by the server within seconds."""
    room = unique()
    raw = await RawSocket.upgrade(
        ping_server, room, ping_server.token("s1", Role.STUDENT, room)
    )
    started = time.monotonic()
    opcodes: list[int] = []
    close_code = None
    try:
        async with asyncio.timeout(5):
            while True:
                try:
                    opcode, payload = await raw.read_frame()
                except asyncio.IncompleteReadError:
                    break
                opcodes.append(opcode)
                if opcode == OPCODE_CLOSE:
                    close_code = struct.unpack("!H", payload[:2])[0]
            assert await raw.reader.read() == b""
    finally:
        raw.close()
    assert time.monotonic() - started < 5
    assert opcodes[0] == OPCODE_BINARY
    assert OPCODE_PING in opcodes
    assert close_code in (None, CloseCode.INTERNAL_ERROR)


async def test_client_that_answers_pings_stays(
    connect: Connect, ping_server: ServerProcess
) -> None:
    """A normal client, which answers pings, outlives several ping timeouts."""
    room = unique()
    client = await connect(
        ping_server, ping_server.token("s1", Role.STUDENT, room), room
    )
    assert client.hello is not None
    assert client.hello.limits.ping_interval_ms == 500
    await asyncio.sleep(2.0)
    await _alive(client)


BAD_FRAMES = [
    pytest.param(b"\xc1", ErrorCode.MALFORMED, None, None, id="not-msgpack"),
    pytest.param(
        msgspec.msgpack.encode({"type": "ping", "id": "x", "client_time": 1})[:-3],
        ErrorCode.MALFORMED,
        None,
        None,
        id="truncated",
    ),
    pytest.param("{'type': 'ping'}", ErrorCode.MALFORMED, None, None, id="text-frame"),
    pytest.param(
        msgspec.msgpack.encode({"type": "teleport", "id": "u1"}),
        ErrorCode.UNKNOWN_TYPE,
        "type",
        "u1",
        id="unknown-type",
    ),
    pytest.param(
        msgspec.msgpack.encode({"type": "ping", "id": "w1", "client_time": "soon"}),
        ErrorCode.INVALID,
        "client_time",
        "w1",
        id="wrong-field-type",
    ),
    pytest.param(
        msgspec.msgpack.encode({"type": "join", "id": "m1"}),
        ErrorCode.INVALID,
        "room",
        "m1",
        id="missing-field",
    ),
    pytest.param(
        msgspec.msgpack.encode({"type": "join", "id": "r1", "room": "a b/c"}),
        ErrorCode.INVALID,
        "room",
        "r1",
        id="bad-room-id",
    ),
    pytest.param(
        msgspec.msgpack.encode({"type": "ping", "id": "", "client_time": 1}),
        ErrorCode.INVALID,
        "id",
        "",
        id="empty-id",
    ),
    pytest.param(b"\x91" * 60_000 + b"\xc0", None, None, None, id="nesting-bomb"),
    pytest.param(
        b"\x82\xa2id\xa2n1\xa5extra" + b"\x91" * 60_000 + b"\xc0",
        ErrorCode.MALFORMED,
        None,
        None,
        id="nesting-bomb-in-field",
    ),
]


@pytest.mark.parametrize(("frame", "code", "field", "command_id"), BAD_FRAMES)
async def test_bad_frame_gets_an_error_frame(
    connect: Connect,
    server: ServerProcess,
    frame: bytes | str,
    code: ErrorCode | None,
    field: str | None,
    command_id: str | None,
) -> None:
    """An undecodable or invalid frame gets an error naming code and field."""
    room = unique()
    client = await connect(server, server.token("s1", Role.STUDENT, room), room)
    await client.send_frame(frame)
    error = await client.recv()
    assert isinstance(error, Error)
    if code is not None:
        assert error.code == code
    else:
        assert error.code in (ErrorCode.MALFORMED, ErrorCode.INVALID)
    assert error.field == field
    assert error.id == command_id
    assert error.message
    await _alive(client)


@pytest.mark.parametrize(
    ("frame", "code", "field"),
    [
        ("{nope", ErrorCode.MALFORMED, None),
        (
            '{"type": "ping", "id": "a", "client_time": -1}',
            ErrorCode.INVALID,
            "client_time",
        ),
        ("[" * 30_000 + "]" * 30_000, None, None),
    ],
)
async def test_bad_json_frame_gets_an_error_frame(
    connect: Connect,
    server: ServerProcess,
    frame: str,
    code: ErrorCode | None,
    field: str | None,
) -> None:
    """The JSON subprotocol refuses bad text frames the same way."""
    room = unique()
    client = await connect(
        server,
        server.token("s1", Role.STUDENT, room),
        room,
        subprotocol=JSON_SUBPROTOCOL,
    )
    await client.send_frame(frame)
    error = await client.recv()
    assert isinstance(error, Error)
    assert error.code == code or code is None
    assert error.field == field
    await _alive(client)


async def test_too_many_bad_frames_close_with_4010(
    connect: Connect, server: ServerProcess
) -> None:
    """More than max_bad_frames undecodable frames close the connection, 4010."""
    room = unique()
    client = await connect(server, server.token("s1", Role.STUDENT, room), room)
    with contextlib.suppress(ConnectionClosed):
        for _ in range(40):
            await client.send_frame(b"\xc1")
    code, _ = await client.closed()
    assert code == CloseCode.TOO_MANY_ERRORS
    assert all(isinstance(m, Error) for m in client.inbox)
    assert len(client.inbox) >= 20
    metrics = await server.metrics()
    assert metrics("lophoc_messages_in_total", type="undecodable") >= 21
    assert metrics("lophoc_server_closes_total", code="4010") >= 1
    assert (await server.aget("/healthz")).status_code == 200
