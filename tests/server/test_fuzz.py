"""Random and mutated frames: the codec only refuses, the server only answers."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any, get_args

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from client_sdk.codec import FrameError, server_codec
from client_sdk.protocol import (
    JSON_SUBPROTOCOL,
    MSGPACK_SUBPROTOCOL,
    SUBPROTOCOLS,
    Ack,
    Broadcast,
    ClientMessage,
    CloseCode,
    Error,
    ErrorCode,
    Join,
    Joined,
    Leave,
    Ping,
    Pong,
    ProbeReply,
    Role,
)

from .conftest import Client, ServerFactory, ServerProcess

ROOM = "fuzz-room"
FIELDS = ["type", "id", "room", "topic", "body", "client_time", "last_offset", "epoch"]
#: Every command class the server accepts.
COMMAND_TYPES = get_args(ClientMessage)
TYPES = [c.__struct_config__.tag for c in COMMAND_TYPES] + ["hello", "ack", "", "JOIN"]

ids = st.text(min_size=1, max_size=64)
rooms = st.sampled_from([ROOM, "other-room"]) | st.from_regex(
    r"\A[A-Za-z0-9_.:-]{1,64}\Z"
)
millis = st.integers(min_value=0, max_value=2**63 - 1)
commands = st.one_of(
    st.builds(
        Join,
        id=ids,
        room=rooms,
        last_offset=st.none() | millis,
        epoch=st.none() | st.text(max_size=16),
    ),
    st.builds(Leave, id=ids, room=rooms),
    st.builds(
        Broadcast,
        id=ids,
        room=rooms,
        topic=st.text(min_size=1, max_size=64),
        body=st.binary(max_size=512),
    ),
    st.builds(Ping, id=ids, client_time=millis),
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=40)
    | st.binary(max_size=40)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
# Maps that look like commands but with any value in any known field.
shaped = st.fixed_dictionaries(
    {"type": st.sampled_from(TYPES) | st.text(max_size=8)},
    optional={name: values for name in FIELDS[1:]},
)


@st.composite
def mutated(draw: st.DrawFn, frame: bytes) -> bytes:
    """``frame`` with a few bytes flipped, inserted, deleted or cut off."""
    data = bytearray(frame)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        where = draw(st.integers(min_value=0, max_value=max(len(data) - 1, 0)))
        action = draw(st.sampled_from(["flip", "insert", "delete", "cut"]))
        if action == "flip" and data:
            data[where] ^= 1 << draw(st.integers(min_value=0, max_value=7))
        elif action == "insert":
            data[where:where] = draw(st.binary(min_size=1, max_size=8))
        elif action == "delete" and data:
            del data[where]
        elif action == "cut":
            del data[where:]
    return bytes(data)


def encoded(subprotocol: str, message: Any) -> bytes:
    """``message`` (a command or a plain map) as one frame of ``subprotocol``."""
    if subprotocol == MSGPACK_SUBPROTOCOL:
        return msgspec.msgpack.encode(message)
    try:
        return msgspec.json.encode(message)
    except (TypeError, ValueError, OverflowError):
        # Bytes, NaN and the like have no JSON form; send something close.
        return msgspec.json.encode(repr(message))


def frames(subprotocol: str) -> st.SearchStrategy[bytes]:
    """Valid, shaped, mutated and random frames of ``subprotocol``."""
    valid = commands.map(lambda c: encoded(subprotocol, c))
    maps = shaped.map(lambda m: encoded(subprotocol, m))
    return st.one_of(
        valid,
        maps,
        valid.flatmap(mutated),
        maps.flatmap(mutated),
        st.binary(max_size=256),
    )


def classify(subprotocol: str, frame: bytes) -> Any:
    """What the codec makes of ``frame``: a command, or the FrameError raised."""
    codec = server_codec(subprotocol)
    try:
        return codec.decode(frame)
    except FrameError as exc:
        return exc


# In process ---------------------------------------------------------------

FAST = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.parametrize("subprotocol", SUBPROTOCOLS)
@FAST
@given(data=st.data())
def test_codec_decodes_or_raises_frame_error(subprotocol: str, data: Any) -> None:
    """Any bytes decode to a client command or raise FrameError, nothing else."""
    frame = data.draw(frames(subprotocol))
    codec = server_codec(subprotocol)
    result = classify(subprotocol, frame)
    if isinstance(result, FrameError):
        assert result.code in ErrorCode
        assert isinstance(result.message, str)
        assert result.field is None or isinstance(result.field, str)
        assert str(result)
    else:
        assert isinstance(result, COMMAND_TYPES)
    command_id = codec.command_id(frame)
    assert command_id is None or isinstance(command_id, str)


@pytest.mark.parametrize("subprotocol", SUBPROTOCOLS)
@FAST
@given(command=commands)
def test_valid_commands_survive_a_round_trip(subprotocol: str, command: Any) -> None:
    """Every valid command decodes back to itself in both subprotocols."""
    codec = server_codec(subprotocol)
    assert codec.decode(codec.encode(command)) == command


@pytest.mark.parametrize("subprotocol", SUBPROTOCOLS)
@FAST
@given(text=st.text(max_size=256))
def test_codec_takes_any_text(subprotocol: str, text: str) -> None:
    """Text (a JSON text frame's content) decodes or raises FrameError."""
    result = classify(subprotocol, text.encode())
    assert isinstance(result, (FrameError, *COMMAND_TYPES))


# Against a live server ----------------------------------------------------

REPLIES = (Ack, Error, Joined, Pong)
CLOSE_CODES = {code.value for code in CloseCode}


@pytest.fixture(scope="module")
def tolerant_server(server_factory: ServerFactory) -> ServerProcess:
    """A server that neither rate limits nor gives up on bad frames."""
    return server_factory(
        {
            "LOPHOC_MESSAGES_PER_SECOND": "100000",
            "LOPHOC_BURST": "100000",
            "LOPHOC_MAX_BAD_FRAMES": "100000",
        }
    )


@pytest.fixture(scope="module")
def rss_at_start(tolerant_server: ServerProcess) -> int:
    """The tolerant server's resident memory before any fuzzing, in KiB."""
    # One ordinary session first, so imports done lazily are not counted.
    asyncio.run(drive(tolerant_server, MSGPACK_SUBPROTOCOL, [b"\xc1"]))
    return tolerant_server.rss_kib()


async def drive(
    server: ServerProcess, subprotocol: str, batch: list[bytes]
) -> tuple[int, int | None]:
    """Send ``batch`` on one connection; check one answer per frame.

    After each frame a ping with a fresh id marks where its answer must
    have arrived. Returns how many frames were answered, and the close code
    if the server closed the connection before the end.
    """
    token = server.token("t-fuzz", Role.TEACHER, ROOM)
    ws = await ws_connect(
        server.ws_url(ROOM, token),
        subprotocols=[Subprotocol(subprotocol)],
        max_size=2**22,
    )
    client = Client(ws)
    answered = 0
    try:
        await client.recv()
        for frame in batch:
            expected = classify(subprotocol, frame)
            marker = f"mark-{secrets.token_hex(8)}"
            closed: ConnectionClosed | None = None
            try:
                if subprotocol == JSON_SUBPROTOCOL:
                    text = frame.decode("utf-8", errors="replace")
                    await client.send_frame(text)
                    expected = classify(subprotocol, text.encode())
                else:
                    await client.send_frame(frame)
                await client.send(Ping(id=marker, client_time=0))
                pong = await client.reply(marker)
            except ConnectionClosed as exc:
                closed = exc
            if closed is not None:
                assert closed.rcvd is not None, "closed without a close frame"
                assert closed.rcvd.code in CLOSE_CODES, closed.rcvd
                return answered, closed.rcvd.code
            assert isinstance(pong, Pong)
            answers = [m for m in client.inbox if isinstance(m, REPLIES)]
            client.inbox.clear()
            # A probe reply is the one command that gets no answer.
            if isinstance(expected, ProbeReply):
                assert answers == [], (frame, answers)
                answered += 1
                continue
            assert len(answers) == 1, (frame, answers)
            (answer,) = answers
            if isinstance(expected, FrameError):
                assert isinstance(answer, Error)
                assert (answer.code, answer.field) == (expected.code, expected.field)
            else:
                assert answer.id == expected.id
            answered += 1
    finally:
        await client.close()
    return answered, None


@pytest.mark.parametrize("subprotocol", SUBPROTOCOLS)
@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_live_server_answers_every_fuzzed_frame(
    tolerant_server: ServerProcess, rss_at_start: int, subprotocol: str, data: Any
) -> None:
    """Each random frame gets exactly the answer the codec predicts."""
    batch = data.draw(st.lists(frames(subprotocol), min_size=10, max_size=40))
    answered, code = asyncio.run(drive(tolerant_server, subprotocol, batch))
    # No rate or bad-frame limit is near; a documented close (checked in
    # drive) may still come from a command, such as a teacher removing itself.
    if code is None:
        assert answered == len(batch)


def test_server_is_healthy_after_fuzzing(
    tolerant_server: ServerProcess, rss_at_start: int
) -> None:
    """After the fuzzing a fresh client joins, and memory stayed bounded."""
    before = rss_at_start
    batch = [b"\xc1", b"\x91" * 60_000 + b"\xc0", b"\x80"] * 100
    for _ in range(3):
        answered = asyncio.run(drive(tolerant_server, MSGPACK_SUBPROTOCOL, batch))
        assert answered == (len(batch), None)
    after = tolerant_server.rss_kib()
    assert after - before < 100 * 1024, f"RSS grew from {before} to {after} KiB"

    assert tolerant_server.get("/healthz").status_code == 200

    async def join() -> Joined:
        token = tolerant_server.token("s-after", Role.STUDENT, ROOM)
        ws = await ws_connect(tolerant_server.ws_url(ROOM, token))
        client = Client(ws)
        try:
            await client.recv()
            joined: Joined = await client.expect(Joined, Join(id="j", room=ROOM))
            return joined
        finally:
            await client.close()

    assert asyncio.run(join()).room == ROOM
