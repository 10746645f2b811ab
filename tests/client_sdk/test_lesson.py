"""The Python client in a lesson room: probes, notices, lesson commands, removal."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
import pytest

from client_sdk import (
    JSON_SUBPROTOCOL,
    MSGPACK_SUBPROTOCOL,
    AnswerResult,
    AnswerTally,
    Client,
    ClientEvent,
    CloseCode,
    CommandError,
    ConnectionRefused,
    ConnectionState,
    Disconnected,
    ErrorCode,
    LessonSnapshot,
    QuestionClosed,
    QuestionOpened,
    QuestionRevealed,
    Role,
)
from client_sdk.codec import client_codec
from client_sdk.protocol import Error, Probe, ProbeReply

from .conftest import Node

T = TypeVar("T")

WAIT = 10.0
MAX_ITEMS = 500
SUBPROTOCOLS = pytest.mark.parametrize(
    "subprotocol", [MSGPACK_SUBPROTOCOL, JSON_SUBPROTOCOL], ids=["msgpack", "json"]
)


def lesson_file(room: str) -> dict[str, Any]:
    """A lesson with one class and a quiz of one true/false question."""
    return {
        "id": room,
        "title": "Client lesson",
        "host": {"user": "t1"},
        "lead_ms": 300,
        "classes": [
            {
                "school": "THCS Ba Đình",
                "class": "8A",
                "co_teacher": {"user": "co1"},
                "students": [{"user": "s1", "name": "Lan"}, {"user": "s2"}],
            }
        ],
        "activities": [
            {
                "kind": "quiz",
                "title": "Quiz",
                "questions": [
                    {"kind": "true_false", "prompt": "Hanoi is a city", "answer": True}
                ],
            }
        ],
    }


async def create_lesson(node: Node, room: str) -> None:
    """Create the lesson ``room`` on ``node`` through its HTTP API."""
    admin = node.token("admin", Role.ADMIN, [room])
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{node.port}") as http:
        response = await http.post(
            "/api/lessons",
            json=lesson_file(room),
            headers={"authorization": f"Bearer {admin}"},
        )
    assert response.status_code == 201, response.text


def member(node: Node, user: str, role: Role, room: str, **kw: Any) -> Client:
    """A client of ``user`` in the lesson's class, closed when the test ends."""
    token = node.token(
        user, role, [room], name=user.title(), school="THCS Ba Đình", class_="8A"
    )
    return node.client(user, role, room, token=token, **kw)


async def next_of(
    client: Client,
    kind: type[T],
    match: Callable[[T], bool] = lambda item: True,
    within: float = WAIT,
) -> T:
    """The next item of type ``kind`` that ``match``es, skipping others."""
    async with asyncio.timeout(within):
        for _ in range(MAX_ITEMS):
            item = await client.next_event()
            if isinstance(item, kind) and match(item):
                return item
    raise AssertionError(f"no {kind.__name__} in {MAX_ITEMS} items")


async def drain(client: Client, seconds: float) -> list[ClientEvent]:
    """Every item that arrives within ``seconds``."""
    items: list[ClientEvent] = []
    deadline = time.monotonic() + seconds
    for _ in range(MAX_ITEMS):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            items.append(await client.next_event(timeout=left))
        except TimeoutError:
            break
    return items


async def probe_replies(node: Node) -> float:
    """How many probe_reply commands the node has received."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{node.port}") as http:
        text = (await http.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith('lophoc_messages_in_total{type="probereply"}'):
            return float(line.split()[-1])
    return 0.0


async def test_probes_are_answered_and_not_surfaced(node: Node) -> None:
    """The client answers each probe at once; no probe or error reaches the app."""
    room = f"lesson-{secrets.token_hex(4)}"
    await create_lesson(node, room)
    frames: list[bytes | str] = []
    student = member(node, "s1", Role.STUDENT, room, on_frame=frames.append)
    await student.connect()
    await student.join(room)

    replies = 0.0
    for _ in range(40):
        replies = await probe_replies(node)
        if replies >= 2:
            break
        await asyncio.sleep(0.1)

    assert replies >= 2
    received = [client_codec(MSGPACK_SUBPROTOCOL).decode(f) for f in frames]
    assert len([m for m in received if isinstance(m, Probe)]) >= replies
    # The server answers no probe_reply, not even with an error.
    assert not [m for m in received if isinstance(m, Error)]
    items = await drain(student, 0.2)
    assert [type(i) for i in items] == [LessonSnapshot]


async def test_request_refuses_a_probe_reply(node: Node, room: str) -> None:
    """request() refuses probe_reply, which would wait for a reply never sent."""
    client = node.client("s1", Role.STUDENT, room)
    await client.connect()

    with pytest.raises(ValueError, match="probe_reply"):
        await client.request(ProbeReply(id="p1", nonce="abcd"))  # type: ignore[call-overload]


@SUBPROTOCOLS
async def test_quiz_notices_come_typed_in_the_stream(
    node: Node, subprotocol: str
) -> None:
    """Snapshot, tally and result notices are yielded typed, in arrival order."""
    room = f"lesson-{secrets.token_hex(4)}"
    await create_lesson(node, room)
    host = member(node, "t1", Role.TEACHER, room, subprotocol=subprotocol)
    student = member(node, "s1", Role.STUDENT, room, subprotocol=subprotocol)
    for client in (host, student):
        await client.connect()
        await client.measure_clock(samples=3, spacing=0.01)
        await client.join(room)

    await host.step(room, 0)
    await host.ask(room, 0)
    opened = await next_of(student, QuestionOpened)
    await student.wait_until(opened.opens_at)
    assert student.server_now() >= opened.opens_at
    ack = await student.answer(room, opened.question.number, True, id="s1-q1")
    tally = await next_of(host, AnswerTally, lambda t: t.answered == 1)
    await host.reveal(room)
    result = await next_of(student, AnswerResult)

    assert ack.id == "s1-q1"
    assert (tally.room, tally.number, tally.counts) == (room, 1, [1, 0])
    assert [(s.school, s.answered) for s in tally.by_school] == [("THCS Ba Đình", 1)]
    assert (result.room, result.number, result.right, result.rank) == (
        room,
        1,
        True,
        1,
    )
    assert 500 <= result.points <= 1000
    # The student's stream began with its snapshot and has no tally.
    student_items = await drain(student, 0.3)
    assert not [i for i in student_items if isinstance(i, AnswerTally)]


async def test_stream_order_of_a_question(node: Node) -> None:
    """A student sees snapshot, question, closing, reveal, then their own result."""
    room = f"lesson-{secrets.token_hex(4)}"
    await create_lesson(node, room)
    host = member(node, "t1", Role.TEACHER, room)
    student = member(node, "s1", Role.STUDENT, room)
    for client in (host, student):
        await client.connect()
        await client.join(room)

    await host.step(room, 0)
    await host.ask(room, 0)
    opened = await next_of(student, QuestionOpened)
    await student.wait_until(opened.opens_at)
    await student.answer(room, 1, False)
    await host.close_question(room)
    await host.reveal(room)
    await host.end_lesson(room)
    await next_of(host, QuestionRevealed)
    items = await drain(student, 0.5)

    kinds = [type(i).__name__ for i in items]
    assert kinds[-4:] == [
        "QuestionClosed",
        "QuestionRevealed",
        "AnswerResult",
        "LessonEnded",
    ], kinds
    result = items[-2]
    assert isinstance(result, AnswerResult)
    assert (result.right, result.points, result.total) == (False, 0, 0)
    closed = items[-4]
    assert isinstance(closed, QuestionClosed)
    assert closed.answered == 1


async def test_refused_lesson_commands_raise_their_code(node: Node) -> None:
    """A student's host command is forbidden; an answer too early is invalid."""
    room = f"lesson-{secrets.token_hex(4)}"
    await create_lesson(node, room)
    host = member(node, "t1", Role.TEACHER, room)
    student = member(node, "s1", Role.STUDENT, room)
    for client in (host, student):
        await client.connect()
        await client.join(room)

    with pytest.raises(CommandError) as forbidden:
        await student.step(room, 0)
    await host.step(room, 0)
    await host.ask(room, 0)
    with pytest.raises(CommandError) as early:
        await student.answer(room, 1, True)
    with pytest.raises(CommandError) as not_a_quiz:
        await host.step(room, 5)

    assert forbidden.value.code is ErrorCode.FORBIDDEN
    assert (early.value.code, early.value.field) == (ErrorCode.INVALID, "number")
    assert (not_a_quiz.value.code, not_a_quiz.value.field) == (
        ErrorCode.INVALID,
        "index",
    )


async def test_removed_client_does_not_reconnect(node: Node) -> None:
    """Closed with 4013, the client ends its stream as refused and never reconnects."""
    room = f"lesson-{secrets.token_hex(4)}"
    await create_lesson(node, room)
    host = member(node, "t1", Role.TEACHER, room)
    student = member(node, "s2", Role.STUDENT, room)
    for client in (host, student):
        await client.connect()
        await client.join(room)

    await host.remove(room, "s2")

    gone = await next_of(student, Disconnected)
    assert (gone.code, gone.reconnecting) == (CloseCode.REMOVED, False)
    # The stream ends right there: no Reconnected comes.
    with pytest.raises(ConnectionRefused) as refused:
        await student.next_event(timeout=WAIT)
    assert refused.value.code == CloseCode.REMOVED
    assert student.state is ConnectionState.CLOSED
    with pytest.raises(ConnectionRefused):
        await student.ping()

    # The same person on a new connection is let in, but not into the room.
    back = member(node, "s2", Role.STUDENT, room)
    await back.connect()
    with pytest.raises(CommandError) as rejoin:
        await back.join(room)
    assert rejoin.value.code is ErrorCode.FORBIDDEN


async def test_wait_until_sleeps_to_the_server_time(node: Node, room: str) -> None:
    """wait_until returns once the server clock reaches the time, and not long after."""
    client = node.client("s1", Role.STUDENT, room)
    await client.connect()
    await client.measure_clock(samples=3, spacing=0.01)

    target = client.server_now() + 300
    started = time.monotonic()
    await client.wait_until(target)
    waited = time.monotonic() - started
    past = time.monotonic()
    await client.wait_until(target - 10_000)

    assert client.server_now() >= target
    assert 0.29 <= waited < 1.0
    assert time.monotonic() - past < 0.05
