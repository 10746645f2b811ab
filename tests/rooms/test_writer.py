"""The room writer with a lesson: group commit of answers, deadlines, rebuilds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from client_sdk.protocol import (
    Answer,
    AskQuestion,
    ErrorCode,
    LeaveReason,
    Member,
    MemberJoined,
    PresenceChanged,
    QuestionClosed,
    Role,
    StepActivity,
)
from rooms.backends import open_broker, open_store
from rooms.errors import Refused
from rooms.feed import EncodedEvent, EncodedNotice
from rooms.hub import Hub
from rooms.plan import parse_plan
from rooms.room import JoinRoom, LeaveRoom, LessonAction
from rooms.roster import decode_roster
from rooms.wire import AppendReply, JoinReply, RefusedReply
from rooms.writer import ANSWERS, LESSON, load_room

PLAN = """
title: Burst
host: {user: host}
lead_ms: 0
classes:
  - {school: A, class: 6A}
  - {school: B, class: 6B}
activities:
  - kind: quiz
    title: Q
    questions:
      - {kind: single, prompt: "?", options: [a, b, c, d], answer: 2, seconds: 5}
"""
HOST = Member(user="host", name="Host", role=Role.TEACHER, school="A", class_="6A")


class FakeClock:
    """Server time that tests move by hand."""

    def __init__(self) -> None:
        self.now = 1_800_000_000_000

    def __call__(self) -> int:
        return self.now


class Listener:
    """Records events and notices a node delivers for the room."""

    def __init__(self, member: Member | None = None, session: str = "") -> None:
        self.events: list[EncodedEvent] = []
        self.notices: list[EncodedNotice] = []
        self.member = member
        self.session = session
        self.forgotten_in: list[str] = []

    def membership(self, room: str) -> tuple[Member, str] | None:
        return (self.member, self.session) if self.member else None

    def forgotten(self, room: str) -> None:
        self.forgotten_in.append(room)

    def deliver(self, event: EncodedEvent) -> None:
        self.events.append(event)

    def reset(self, room: str) -> None:
        raise AssertionError(f"unexpected reset of {room}")

    def notice(self, notice: EncodedNotice) -> None:
        self.notices.append(notice)


def student(n: int) -> Member:
    school = "A" if n % 2 else "B"
    return Member(
        user=f"s{n}", name=f"S{n}", role=Role.STUDENT, school=school, class_="6"
    )


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[Hub]:
    broker = open_broker("memory://")
    store = open_store("sqlite://", tmp_path)
    await store.connect()
    await broker.connect()
    await store.save_document(LESSON, "quiz", msgspec.msgpack.encode(parse_plan(PLAN)))
    hub = Hub(broker, store, node="solo", clock=FakeClock())
    await hub.start()
    yield hub
    await hub.close()
    await broker.close()
    await store.close()


async def open_question(hub: Hub) -> None:
    await hub.submit("quiz", JoinRoom(HOST, "h"))
    now = hub.clock()
    for command in (
        StepActivity(id="s", room="quiz", index=0),
        AskQuestion(id="q", room="quiz", question=0),
    ):
        reply = await hub.submit("quiz", LessonAction(HOST, command, now))
        assert isinstance(reply, AppendReply)


def answer(n: int, value: int, at: int, answer_id: str | None = None) -> LessonAction:
    command = Answer(id=answer_id or f"a{n}", room="quiz", number=1, value=value)
    return LessonAction(student(n), command, at)


async def test_a_burst_of_answers_is_stored_once_each(hub: Hub) -> None:
    """Two hundred answers at once are all acknowledged and stored once each."""
    for n in range(200):
        await hub.submit("quiz", JoinRoom(student(n), f"c{n}"))
    await open_question(hub)
    at = hub.clock()

    replies = await asyncio.gather(
        *(hub.submit("quiz", answer(n, n % 4, at)) for n in range(200)),
        *(hub.submit("quiz", answer(n, n % 4, at)) for n in range(0, 200, 10)),
    )
    stored = await hub.store.load_records("quiz", ANSWERS)

    assert all(isinstance(r, AppendReply) for r in replies)
    assert sum(r.duplicate for r in replies if isinstance(r, AppendReply)) == 20
    assert len(stored) == 200
    room = await load_room(hub.store, "quiz")
    assert room.lesson is not None
    assert sum(r.right for r in room.lesson.answers[1].values()) == 50


async def test_tally_reaches_staff_listeners(hub: Hub) -> None:
    """Teachers' listeners receive a tally notice after answers arrive."""
    listener = Listener()
    await hub.listen("quiz", listener)
    for n in range(4):
        await hub.submit("quiz", JoinRoom(student(n), f"c{n}"))
    await open_question(hub)
    for n in range(4):
        await hub.submit("quiz", answer(n, 2, hub.clock()))

    # Tallies are throttled: the latest one, not the first, counts all four.
    tally: dict[str, object] = {}
    for _ in range(60):
        if listener.notices:
            tally = msgspec.json.decode(listener.notices[-1].json)
            if tally["answered"] == 4:
                break
        await asyncio.sleep(0.05)

    assert tally["type"] == "answer_tally"
    assert tally["answered"] == 4
    assert len(listener.notices) < 6
    assert tally["counts"] == [0, 0, 4, 0]
    assert listener.notices[-1].user is None


async def test_deadline_closes_the_question_by_itself(hub: Hub) -> None:
    """With no command after it, the deadline still closes the question."""
    listener = Listener()
    await hub.listen("quiz", listener)
    await hub.submit("quiz", JoinRoom(student(1), "c1"))
    await open_question(hub)
    clock = hub.clock
    assert isinstance(clock, FakeClock)
    # The question closes 5 s after opening, plus a second of grace; the
    # writer's timer, armed when it opened, fires without any command.
    clock.now += 6_001

    for _ in range(60):
        if any(isinstance(e.decode(), QuestionClosed) for e in listener.events):
            break
        await asyncio.sleep(0.05)
    late = await hub.submit("quiz", answer(1, 2, clock.now))

    assert any(isinstance(e.decode(), QuestionClosed) for e in listener.events)
    assert isinstance(late, RefusedReply)
    assert late.code is ErrorCode.CLOSED


async def test_failed_store_breaks_the_writer_and_rebuild_keeps_acked(
    hub: Hub,
) -> None:
    """A group that cannot be stored is refused; the rebuilt room keeps what was.

    The connections this node holds stay in the rebuilt room; nothing more
    than what was acknowledged is in it.
    """
    for n in (1, 2):
        await hub.listen("quiz", Listener(student(n), f"c{n}"))
        await hub.submit("quiz", JoinRoom(student(n), f"c{n}"))
    await open_question(hub)
    first = await hub.submit("quiz", answer(1, 2, hub.clock()))
    assert isinstance(first, AppendReply)

    store = hub.store
    original = store.save_records

    async def failing(*args: object, **kwargs: object) -> None:
        from rooms.errors import BackendError

        raise BackendError("disk gone")

    store.save_records = failing  # type: ignore[method-assign]
    with pytest.raises(Refused) as refused:
        await hub.submit("quiz", answer(2, 1, hub.clock()))
    store.save_records = original  # type: ignore[method-assign]

    assert refused.value.code is ErrorCode.UNAVAILABLE
    assert "quiz" not in hub._writers
    rebuilt = await load_room(store, "quiz")
    again = await hub.submit("quiz", answer(2, 1, hub.clock()))
    room = await load_room(store, "quiz")

    assert rebuilt.lesson is not None
    assert set(rebuilt.lesson.answers[1]) == {"s1"}
    assert isinstance(again, AppendReply)
    assert set(room.members) == {"s1", "s2"}
    assert set(room.away) == {"host"}
    assert room.lesson is not None
    assert set(room.lesson.answers[1]) == {"s1", "s2"}


async def test_large_room_gathers_presence_into_few_events(hub: Hub) -> None:
    """Past fifty members, arrivals and departures share one event per window."""
    listener = Listener()
    await hub.listen("quiz", listener)

    replies = [
        await hub.submit("quiz", JoinRoom(student(n), f"c{n}")) for n in range(120)
    ]
    for n in range(100, 110):
        await hub.submit("quiz", LeaveRoom(f"s{n}", f"c{n}", LeaveReason.LEFT))
    for _ in range(60):
        if any(isinstance(e.decode(), PresenceChanged) for e in listener.events):
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)

    decoded = [e.decode() for e in listener.events]
    single = [e for e in decoded if isinstance(e, MemberJoined)]
    batches = [e for e in decoded if isinstance(e, PresenceChanged)]
    last = replies[-1]
    assert isinstance(last, JoinReply)
    joined = {e.member.user for e in single} | {
        m.user for b in batches for m in b.joined
    }
    departed = {d.user for b in batches for d in b.left}
    assert len(single) == 50
    assert 1 <= len(batches) <= 4
    assert {f"s{n}" for n in range(100)} <= joined
    # Whoever left had been announced, unless they came and went unseen
    # within one window.
    for user in (f"s{n}" for n in range(100, 110)):
        assert (user in joined) == (user in departed)
    assert [e.offset for e in decoded] == list(range(1, len(decoded) + 1))
    assert (
        sum(len(c.members) for s in decode_roster(last.roster) for c in s.classes)
        == 120
    )
    room = await load_room(hub.store, "quiz")
    assert set(room.members) == {f"s{n}" for n in range(100)} | {
        f"s{n}" for n in range(110, 120)
    }
