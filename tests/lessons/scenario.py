"""The three-school lesson of :mod:`tests.lessons.test_quiz`, and its record.

:func:`lesson` runs it against a real server and returns a :class:`Run`
holding everything everyone received, the replies to the commands that were
meant to be refused, and the reports.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import connect as ws_connect
from websockets.typing import Subprotocol

from client_sdk import (
    AnswerResult,
    AnswerTally,
    CommandError,
    LessonEnded,
    QuestionClosed,
    QuestionOpened,
)
from client_sdk.codec import client_codec
from client_sdk.protocol import MSGPACK_SUBPROTOCOL, Join, Joined, ServerMessage

from .conftest import WAIT, Api, Crowd, ServerProcess, Watcher, admin_token

ROOM = "linked-english-1"
#: The accepted answer of question 1: it must reach no student before the reveal.
MARKER = "zebra-7Q3"
SCHOOLS = ["THCS Ba Đình", "THCS Cầu Giấy", "THCS Đống Đa"]
#: Question 2 answers: option 1 is right; LATE answers after the deadline.
LATE = -1

LESSON: dict[str, Any] = {
    "id": ROOM,
    "title": "Animals, three schools",
    "host": {"user": "t-lan", "name": "Cô Lan"},
    "lead_ms": 1000,
    "classes": [
        {
            "school": school,
            "class": f"8{letter}",
            "co_teacher": {"user": f"co-{letter.lower()}", "name": f"Co {letter}"},
            "students": [
                {"user": f"s-{letter.lower()}1", "name": f"Student {letter}1"}
            ],
        }
        for school, letter in zip(SCHOOLS, "ABC", strict=True)
    ],
    "activities": [
        {"kind": "material", "title": "Warm-up", "url": "https://example.org/1"},
        {
            "kind": "quiz",
            "title": "Animals",
            "questions": [
                {
                    "kind": "short_text",
                    "prompt": "Type the code of the striped animal",
                    "answer": [MARKER],
                    "seconds": 10,
                },
                {
                    "kind": "single",
                    "prompt": "Which one is a mammal?",
                    "options": ["shark", "whale", "trout"],
                    "answer": 1,
                    "seconds": 5,
                },
            ],
        },
    ],
}


@dataclass(frozen=True)
class Pupil:
    """A student of the scenario and what they answer.

    ``personal`` students join with their own code; the others with their
    class's code and ``name``. ``right1`` is graded by hand: case and runs
    of spaces do not count, a different character does.
    """

    key: str
    school: int
    personal: bool
    answer1: str
    right1: bool
    answer2: int

    @property
    def right2(self) -> bool:
        """Whether the answer to question 2 is the right option."""
        return self.answer2 == 1


PUPILS = [
    Pupil("a1", 0, True, MARKER, True, 1),
    Pupil("a2", 0, False, "  Zebra-7q3 ", True, 0),
    Pupil("a3", 0, False, "zebra", False, 1),
    Pupil("b1", 1, True, "ZEBRA-7Q3", True, 1),
    Pupil("b2", 1, False, "giraffe", False, 1),
    Pupil("c1", 2, True, "zebra-7Q3", True, 2),
    Pupil("c2", 2, False, "zebra 7Q3", False, LATE),
]
#: Sends its first answer twice under one id, then tries to change it.
DUPLICATE = "a1"
#: Removed by the co-teacher of their school after the second reveal.
REMOVED = "a3"
#: Drops out after the second reveal; their co-teacher then removes them.
DROPPED = "c2"


@dataclass
class Run:
    """Everything the lesson produced, for the tests to check."""

    created: dict[str, Any]
    host: Watcher
    co_teachers: list[Watcher]
    students: dict[str, Watcher]
    users: dict[str, str]
    tokens: dict[str, str] = field(default_factory=dict)
    observer_frames: list[bytes | str] = field(default_factory=list)
    observer_user: str = ""
    observer: asyncio.Task[None] | None = None
    answer_acks: dict[tuple[str, int], list[str]] = field(default_factory=dict)
    duplicate_change: CommandError | None = None
    late: CommandError | None = None
    other_school: CommandError | None = None
    co_teacher_removed: CommandError | None = None
    removed_rejoin: CommandError | None = None
    report: dict[str, Any] = field(default_factory=dict)
    report_csv: str = ""
    access: dict[str, int] = field(default_factory=dict)

    @property
    def everyone(self) -> list[Watcher]:
        """Every SDK client of the lesson."""
        return [self.host, *self.co_teachers, *self.students.values()]


async def observe(
    server: ServerProcess,
    token: str,
    frames: list[bytes | str],
    joined: asyncio.Event,
) -> None:
    """A bare WebSocket student: join, then keep every frame until cancelled."""
    codec = client_codec(MSGPACK_SUBPROTOCOL)
    url = f"{server.ws_url}?room={ROOM}&token={token}"
    async with ws_connect(url, subprotocols=[Subprotocol(MSGPACK_SUBPROTOCOL)]) as ws:
        frames.append(await ws.recv())
        await ws.send(codec.encode(Join(id="observer-join", room=ROOM)))
        for _ in range(1000):
            frames.append(await ws.recv())
            if isinstance(codec.decode(frames[-1]), Joined):
                joined.set()


def decode_all(frames: list[bytes | str]) -> list[ServerMessage]:
    """Every frame as a protocol message."""
    codec = client_codec(MSGPACK_SUBPROTOCOL)
    return [codec.decode(frame) for frame in frames]


async def answer_q1(run: Run, pupil: Pupil, opened: QuestionOpened) -> None:
    """Answer question 1 at its opening time; the duplicate sender twice."""
    client = run.students[pupil.key].client
    await client.wait_until(opened.opens_at)
    number = opened.question.number
    answer_id = f"{pupil.key}-q1-answer"
    ack = await client.answer(ROOM, number, pupil.answer1, id=answer_id)
    run.answer_acks[(pupil.key, number)] = [ack.id]
    if pupil.key == DUPLICATE:
        again = await client.answer(ROOM, number, pupil.answer1, id=answer_id)
        run.answer_acks[(pupil.key, number)].append(again.id)
        try:
            await client.answer(ROOM, number, "changed my mind")
        except CommandError as exc:
            run.duplicate_change = exc


async def answer_q2(run: Run, pupil: Pupil, opened: QuestionOpened) -> None:
    """Answer question 2 at its opening time, or after its deadline."""
    client = run.students[pupil.key].client
    number = opened.question.number
    if pupil.answer2 != LATE:
        await client.wait_until(opened.opens_at)
        ack = await client.answer(ROOM, number, pupil.answer2)
        run.answer_acks[(pupil.key, number)] = [ack.id]
        return
    await client.wait_until(opened.closes_at + opened.grace_ms + 300)
    try:
        await client.answer(ROOM, number, 1)
    except CommandError as exc:
        run.late = exc


async def enter_everyone(
    server: ServerProcess, api: Api, crowd: Crowd, created: dict[str, Any]
) -> Run:
    """The host, the co-teachers and the SDK students, all in the room."""
    classes = created["classes"]
    host = await crowd.enter("host", server, created["host"]["token"], ROOM)
    co_teachers = [
        await crowd.enter(f"co-{index}", server, entry["co_teacher"]["token"], ROOM)
        for index, entry in enumerate(classes)
    ]
    run = Run(created, host, co_teachers, {}, {})
    for pupil in PUPILS:
        entry = classes[pupil.school]
        if pupil.personal:
            code, name = entry["students"][0]["code"], None
        else:
            code, name = entry["code"], f"Student {pupil.key.upper()}"
        response = await api.join(code, name)
        assert response.status_code == 200, response.text
        run.users[pupil.key] = response.json()["user"]
        run.tokens[pupil.key] = response.json()["token"]
        run.students[pupil.key] = await crowd.enter(
            pupil.key, server, run.tokens[pupil.key], ROOM
        )
    return run


async def first_question(server: ServerProcess, api: Api, run: Run) -> None:
    """Short text, answered at once; the host closes it and reveals it.

    A bare WebSocket student joins while it is open and stays to the end.
    """
    host = run.host.client
    await host.step(ROOM, 0)
    await host.step(ROOM, 1)
    await host.ask(ROOM, 0)
    await run.host.wait(QuestionOpened)

    joined = await api.join(run.created["classes"][2]["code"], "Observer")
    run.observer_user = joined.json()["user"]
    observer_in = asyncio.Event()
    run.observer = asyncio.create_task(
        observe(server, joined.json()["token"], run.observer_frames, observer_in)
    )
    await asyncio.wait_for(observer_in.wait(), WAIT)

    openings = [await run.students[p.key].wait(QuestionOpened) for p in PUPILS]
    await asyncio.gather(
        *(answer_q1(run, p, q) for p, q in zip(PUPILS, openings, strict=True))
    )
    await run.host.wait(AnswerTally, lambda t: t.answered == len(PUPILS))
    await host.close_question(ROOM)
    await host.reveal(ROOM)
    for pupil in PUPILS:
        await run.students[pupil.key].wait(AnswerResult, lambda r: r.number == 1)


async def second_question(run: Run) -> None:
    """Single choice, closed by its deadline; one answer comes too late."""
    await run.host.client.ask(ROOM, 1)
    second = await run.host.wait(QuestionOpened, lambda q: q.question.number == 2)
    await asyncio.gather(*(answer_q2(run, pupil, second) for pupil in PUPILS))
    await run.host.wait(QuestionClosed, lambda c: c.number == 2)
    await run.host.client.reveal(ROOM)
    for pupil in PUPILS:
        if pupil.answer2 != LATE:
            await run.students[pupil.key].wait(AnswerResult, lambda r: r.number == 2)


async def removals(server: ServerProcess, api: Api, crowd: Crowd, run: Run) -> None:
    """A co-teacher tries two people of another school, then removes their own."""
    co_a = run.co_teachers[0].client
    try:
        await co_a.remove(ROOM, run.users["b1"])
    except CommandError as exc:
        run.other_school = exc
    try:
        await co_a.remove(ROOM, run.created["classes"][1]["co_teacher"]["user"])
    except CommandError as exc:
        run.co_teacher_removed = exc

    await co_a.remove(ROOM, run.users[REMOVED])
    await run.students[REMOVED].stopped()
    again = await crowd.enter(
        f"{REMOVED}-again", server, run.tokens[REMOVED], ROOM, join=False
    )
    try:
        await again.client.join(ROOM)
    except CommandError as exc:
        run.removed_rejoin = exc

    # Removing someone who has gone already keeps them out for good too.
    await run.students[DROPPED].close()
    dropped = run.users[DROPPED]
    for _ in range(50):
        report = (await api.report(ROOM, run.created["host"]["token"])).json()
        row = next(r for r in report["attendance"] if r["user"] == dropped)
        if not row["present"]:
            break
        await asyncio.sleep(0.1)
    await run.co_teachers[2].client.remove(ROOM, dropped)


async def reports(api: Api, run: Run) -> None:
    """The report as JSON and CSV, and who may read it."""
    classes = run.created["classes"]
    host_token = run.created["host"]["token"]
    report = await api.report(ROOM, host_token)
    assert report.status_code == 200, report.text
    run.report = report.json()
    sheet = await api.report(ROOM, host_token, csv=True)
    assert sheet.status_code == 200, sheet.text
    run.report_csv = sheet.text

    readers = {
        "host": host_token,
        "admin": admin_token(),
        **{
            f"co-teacher {index}": entry["co_teacher"]["token"]
            for index, entry in enumerate(classes)
        },
        "classroom": classes[0]["classroom"]["token"],
        "student": await api.student_token(classes[1]["students"][0]["code"]),
    }
    for who, reader in readers.items():
        run.access[who] = (await api.report(ROOM, reader)).status_code


async def lesson(server: ServerProcess, api: Api, crowd: Crowd) -> Run:
    """Run the whole lesson and record what happened."""
    response = await api.create(LESSON)
    assert response.status_code == 201, response.text
    run = await enter_everyone(server, api, crowd, response.json())

    await first_question(server, api, run)
    await second_question(run)
    await removals(server, api, crowd, run)

    await run.host.client.end_lesson(ROOM)
    for watcher in run.everyone:
        if watcher.name not in (REMOVED, DROPPED):
            await watcher.wait(LessonEnded)
    if run.observer is not None:
        run.observer.cancel()
        await asyncio.gather(run.observer, return_exceptions=True)

    await reports(api, run)
    return run
