"""The opening handshake: every refusal has its close code, and the hello frame."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest

from client_sdk.protocol import (
    JSON_SUBPROTOCOL,
    MSGPACK_SUBPROTOCOL,
    CloseCode,
    Hello,
    Ping,
    Pong,
    Role,
)
from server.auth import ISSUER

from .conftest import Connect, ServerFactory, ServerProcess, unique

ROOM = "lesson-1"
ALLOWED = "https://portal.example.edu.vn"


def _b64(data: dict[str, object]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _claims(room: str = ROOM, **extra: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": ISSUER,
        "sub": "s1",
        "role": "student",
        "room": room,
        "rooms": [room],
        "iat": now,
        "exp": now + 600,
    }
    claims.update(extra)
    return claims


async def _refusal(
    connect: Connect, server: ServerProcess, token: str | None, room: str | None = ROOM
) -> tuple[int | None, str]:
    client = await connect(server, token, room, hello=False)
    return await client.closed()


@pytest.fixture(scope="module")
def open_server(server_factory: ServerFactory) -> ServerProcess:
    """A server that also lets one named foreign origin in."""
    return server_factory(args=["--allowed-origin", ALLOWED])


async def test_no_token_is_refused_with_4001(
    connect: Connect, server: ServerProcess
) -> None:
    """A handshake without any token is closed with 4001."""
    code, reason = await _refusal(connect, server, None)
    assert code == CloseCode.TOKEN_MISSING
    assert reason


async def test_wrong_signature_is_refused_with_4002(
    connect: Connect, server: ServerProcess
) -> None:
    """A token signed with another key is closed with 4002."""
    token = jwt.encode(_claims(), "another-key-" + "x" * 40, algorithm="HS256")
    code, reason = await _refusal(connect, server, token)
    assert code == CloseCode.TOKEN_INVALID
    assert "signature" in reason


async def test_alg_none_token_is_refused_with_4002(
    connect: Connect, server: ServerProcess
) -> None:
    """An unsigned token (header alg none, empty signature) is closed with 4002."""
    token = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims())}."
    code, reason = await _refusal(connect, server, token)
    assert code == CloseCode.TOKEN_INVALID
    assert reason


async def test_other_algorithm_is_refused_with_4002(
    connect: Connect, server: ServerProcess
) -> None:
    """A token correctly signed with the right key but HS512 is closed with 4002."""
    token = jwt.encode(_claims(), server.secret, algorithm="HS512")
    code, reason = await _refusal(connect, server, token)
    assert code == CloseCode.TOKEN_INVALID
    assert "algorithm" in reason


@pytest.mark.parametrize(
    "token", ["garbage", "a.b.c", "....", "eyJhbGciOiJIUzI1NiJ9.e30.x" * 3]
)
async def test_garbage_token_is_refused_with_4002(
    connect: Connect, server: ServerProcess, token: str
) -> None:
    """A token that is not a JWT at all is closed with 4002."""
    code, _ = await _refusal(connect, server, token)
    assert code == CloseCode.TOKEN_INVALID


async def test_expired_token_is_refused_with_4003(
    connect: Connect, server: ServerProcess
) -> None:
    """A token whose exp passed (beyond the leeway) is closed with 4003."""
    now = int(time.time())
    token = server.token("s1", Role.STUDENT, ROOM, ttl_seconds=60, now=now - 3600)
    code, reason = await _refusal(connect, server, token)
    assert code == CloseCode.TOKEN_EXPIRED
    assert "expired" in reason


async def test_token_not_yet_valid_is_refused_with_4004(
    connect: Connect, server: ServerProcess
) -> None:
    """A token whose nbf lies an hour ahead is closed with 4004."""
    token = server.token("s1", Role.STUDENT, ROOM, not_before=int(time.time()) + 3600)
    code, _ = await _refusal(connect, server, token)
    assert code == CloseCode.TOKEN_NOT_YET_VALID


async def test_token_for_another_room_is_refused_with_4005(
    connect: Connect, server: ServerProcess
) -> None:
    """A valid token for room A used to open room B is closed with 4005."""
    token = server.token("s1", Role.STUDENT, "room-a")
    code, _ = await _refusal(connect, server, token, room="room-b")
    assert code == CloseCode.WRONG_ROOM


async def test_no_room_is_refused_with_4012(
    connect: Connect, server: ServerProcess
) -> None:
    """A valid token but no room query parameter is closed with 4012."""
    token = server.token("s1", Role.STUDENT, ROOM)
    code, _ = await _refusal(connect, server, token, room=None)
    assert code == CloseCode.ROOM_MISSING


async def test_foreign_origin_is_refused_with_4006(
    connect: Connect, server: ServerProcess
) -> None:
    """A page from another origin is closed with 4006 even with a valid token."""
    token = server.token("s1", Role.STUDENT, ROOM)
    client = await connect(
        server, token, ROOM, hello=False, origin="https://evil.example"
    )
    code, _ = await client.closed()
    assert code == CloseCode.ORIGIN_REFUSED


async def test_same_origin_and_no_origin_are_accepted(
    connect: Connect, server: ServerProcess
) -> None:
    """Origin equal to the Host header, and no Origin at all, both get hello."""
    token = server.token("s1", Role.STUDENT, ROOM)
    same = await connect(server, token, ROOM, origin=server.origin)
    plain = await connect(server, token, ROOM)
    assert same.hello is not None
    assert plain.hello is not None


async def test_allowed_origin_is_accepted(
    connect: Connect, open_server: ServerProcess
) -> None:
    """An origin named by --allowed-origin gets in; another one still does not."""
    token = open_server.token("s1", Role.STUDENT, ROOM)
    client = await connect(open_server, token, ROOM, origin=ALLOWED)
    assert client.hello is not None

    other = await connect(
        open_server, token, ROOM, hello=False, origin="https://other.example"
    )
    code, _ = await other.closed()
    assert code == CloseCode.ORIGIN_REFUSED


async def test_unknown_subprotocols_only_are_refused_with_4007(
    connect: Connect, server: ServerProcess
) -> None:
    """Offering only subprotocols of another version is closed with 4007."""
    token = server.token("s1", Role.STUDENT, ROOM)
    client = await connect(
        server,
        token,
        ROOM,
        subprotocols=["lophoc.v2.msgpack", "chat"],
        hello=False,
    )
    assert client.ws.subprotocol == "lophoc.v2.msgpack"
    code, _ = await client.closed()
    assert code == CloseCode.SUBPROTOCOL_UNSUPPORTED


async def test_authorization_bearer_header_opens_the_connection(
    connect: Connect, server: ServerProcess
) -> None:
    """A token in an Authorization: Bearer header works like ?token=."""
    token = server.token("t1", Role.TEACHER, ROOM)
    client = await connect(
        server,
        None,
        ROOM,
        additional_headers={"Authorization": f"Bearer {token}"},
    )
    assert client.hello is not None
    assert client.hello.user == "t1"


@pytest.mark.parametrize("subprotocol", [MSGPACK_SUBPROTOCOL, JSON_SUBPROTOCOL])
async def test_hello_describes_the_connection(
    connect: Connect, server: ServerProcess, subprotocol: str
) -> None:
    """The hello frame carries user, name, role, rooms and the default limits."""
    user = unique("teacher")
    token = server.token(
        user,
        Role.CO_TEACHER,
        ["lesson-1", "lesson-2"],
        name="Cô Lan",
        school="THCS Nguyễn Du",
        class_="9A",
    )
    before = int(time.time() * 1000)
    client = await connect(server, token, ROOM, subprotocol=subprotocol)
    after = int(time.time() * 1000)

    assert client.ws.subprotocol == subprotocol
    hello = client.hello
    assert isinstance(hello, Hello)
    assert hello.protocol == 1
    assert hello.user == user
    assert hello.name == "Cô Lan"
    assert hello.role is Role.CO_TEACHER
    assert hello.rooms == ["lesson-1", "lesson-2"]
    assert hello.session
    assert hello.node
    assert before - 1000 <= hello.server_time <= after + 1000
    limits = hello.limits
    assert limits.max_frame_bytes == 65_536
    assert limits.messages_per_second == 20.0
    assert limits.burst == 40
    assert limits.send_queue == 1024
    assert limits.ping_interval_ms == 20_000
    assert limits.ping_timeout_ms == 20_000


async def test_json_hello_is_a_text_frame(
    connect: Connect, server: ServerProcess
) -> None:
    """On the JSON subprotocol frames are text and hold plain JSON."""
    token = server.token("s1", Role.STUDENT, ROOM)
    client = await connect(
        server, token, ROOM, subprotocol=JSON_SUBPROTOCOL, hello=False
    )
    frame = await client.recv_frame()
    assert isinstance(frame, str)
    assert json.loads(frame)["type"] == "hello"


async def test_no_subprotocol_offered_means_msgpack(
    connect: Connect, server: ServerProcess
) -> None:
    """A client that offers no subprotocol is spoken to in MessagePack."""
    token = server.token("s1", Role.STUDENT, ROOM)
    client = await connect(server, token, ROOM, subprotocol=None, hello=False)
    assert client.ws.subprotocol is None
    frame = await client.recv_frame()
    assert isinstance(frame, bytes)
    hello = client.codec.decode(frame)
    assert isinstance(hello, Hello)

    await client.send(Ping(id="p1", client_time=1))
    pong = await client.reply("p1")
    assert isinstance(pong, Pong)
    assert pong.client_time == 1


async def test_refusals_are_counted_by_close_code(
    connect: Connect, server: ServerProcess
) -> None:
    """Each refusal adds to lophoc_handshake_refusals_total{code=...}."""
    before = await server.metrics()
    await _refusal(connect, server, None)
    await _refusal(connect, server, "garbage")
    after = await server.metrics()
    name = "lophoc_handshake_refusals_total"
    assert after(name, code="4001") == before(name, code="4001") + 1
    assert after(name, code="4002") == before(name, code="4002") + 1


async def test_tokens_never_reach_the_server_log(
    connect: Connect, server: ServerProcess
) -> None:
    """The server log masks the token of a query string it logs."""
    token = server.token(unique("user"), Role.STUDENT, ROOM)
    client = await connect(server, token, ROOM)
    assert client.hello is not None
    await client.close()

    signature = token.rsplit(".", 1)[1]
    log = server.log_tail(10_000)
    assert "WebSocket /ws" in log
    assert signature not in log
