"""The paper is sealed until it opens, and the key never leaves the server.

Every item and every accepted answer of the paper carries a marker. Each
client here keeps every frame it receives; the test tries every way in
(joining, the snapshot, recovery from an old offset, fetching, the HTTP
API) with every role, then looks for the markers in what came back.
"""

from __future__ import annotations

import asyncio

import pytest

from client_sdk import CommandError, ErrorCode, Role
from client_sdk.protocol import ClientSignal, ExamState, ProctorActionKind
from tests.lessons.conftest import Crowd, ServerProcess, Watcher, bearer

from .conftest import (
    ITEM_MARKER,
    KEY_MARKER,
    ExamApi,
    exam_file,
    now_ms,
    seated,
    token,
)


def leaks(watcher: Watcher, marker: str) -> list[bytes | str]:
    """The frames ``watcher`` received that contain ``marker``."""
    return [
        f
        for f in watcher.frames
        if (marker.encode() in f if isinstance(f, bytes) else marker in f)
    ]


async def try_everything(watcher: Watcher, room: str) -> list[ErrorCode]:
    """Join, rejoin from offset 0, fetch, watch, save; the refusals' codes."""
    client = watcher.client
    refusals: list[ErrorCode] = []
    try:
        joined = await client.join(room)
    except CommandError as exc:
        return [exc.code]
    await client.join(room, last_offset=0, epoch=joined.epoch)
    for attempt in (
        client.fetch_exam(room),
        client.watch_exam(room),
        client.save_answer(room, "q1", 0),
    ):
        try:
            await attempt
        except CommandError as exc:
            refusals.append(exc.code)
    return refusals


ALLOWED_REFUSALS = {ErrorCode.FORBIDDEN, ErrorCode.INVALID, ErrorCode.CLOSED}


async def test_nothing_of_the_paper_before_it_opens(
    server: ServerProcess, api: ExamApi, crowd: Crowd
) -> None:
    """No frame or response to any role holds an item before opens_at, nor a key."""
    room = "exam-sealed"
    exam = exam_file(room, 3, opens_in_ms=6000, examiners=["t-exam"])
    tokens = await api.tokens(exam)
    opens_at = exam["opens_at"]
    people = {
        "student": tokens["s-0"],
        "proctor": tokens["p-1"],
        "stranger": token("s-99", Role.STUDENT, room),
        "other-proctor": token("p-9", Role.PROCTOR, room),
        "teacher": token("t-1", Role.TEACHER, room),
        "co-teacher": token("co-1", Role.CO_TEACHER, room),
        "classroom": token("class-1", Role.CLASSROOM, room),
    }
    watchers = {
        name: await crowd.enter(name, server, value, room, join=False)
        for name, value in people.items()
    }
    refused = await asyncio.gather(
        *(try_everything(w, room) for w in watchers.values())
    )
    outsiders = ["stranger", "other-proctor", "teacher", "co-teacher", "classroom"]
    for name, codes in zip(watchers, refused, strict=True):
        assert set(codes) <= ALLOWED_REFUSALS, name
        if name in outsiders:
            assert codes == [ErrorCode.FORBIDDEN], name

    responses = []
    for name, value in people.items():
        for path in ("results", "log", "recordings", "recordings/any.ogg"):
            response = await api.http.get(
                f"/api/exams/{room}/{path}", headers=bearer(value)
            )
            assert response.status_code == 403, (name, path, response.text)
            responses.append(response.text)
        created = await api.create(exam_file("exam-other", 1), value)
        assert created.status_code == 403 or name == "teacher"
    assert now_ms() < opens_at, "the checks took longer than the sealed window"
    for name, watcher in watchers.items():
        assert not leaks(watcher, ITEM_MARKER), name
    assert not any(ITEM_MARKER in text or KEY_MARKER in text for text in responses)

    # After the opening, a student sees their own items but never the key,
    # and a proctor never sees either, however they ask.
    student, proctor = watchers["student"], watchers["proctor"]
    await student.wait(ExamState, lambda s: s.id is None, within=10)
    state = await student.client.fetch_exam(room)
    assert state.sections is not None
    await student.client.save_answer(room, "q3", "cold")
    await student.client.submit_exam(room)
    for codes in await asyncio.gather(
        try_everything(student, room), try_everything(proctor, room)
    ):
        assert set(codes) <= ALLOWED_REFUSALS
    view = await proctor.client.watch_exam(room)
    assert [s.user for s in view.seats] == ["s-0", "s-1", "s-2"]

    assert leaks(student, ITEM_MARKER), "the student never got their variant"
    for name, watcher in watchers.items():
        assert not leaks(watcher, KEY_MARKER), name
        if name != "student":
            assert not leaks(watcher, ITEM_MARKER), name
    examiner = await api.results(room, token("t-exam", Role.TEACHER, room))
    assert examiner.status_code == 200


@pytest.mark.parametrize("field", ["paper", "students", "opens_at"])
async def test_bad_exam_file_names_each_bad_field(api: ExamApi, field: str) -> None:
    """A refused exam file names the path of every bad part."""
    exam = exam_file(f"exam-bad-{field}", 2)
    if field == "paper":
        exam["paper"]["sections"][0]["items"][0]["answer"] = 7
        exam["paper"]["sections"][1]["items"][1]["options"] = ["x", "y"]
        expected = {
            "paper.sections[0].items[0].answer",
            "paper.sections[1].items[1].options",
        }
    elif field == "students":
        exam["students"][1]["class"] = ""
        expected = {"students[1].class"}
    else:
        exam["opens_at"] = "next tuesday"
        expected = {"opens_at"}
    response = await api.create(exam)
    assert response.status_code == 422, response.text
    assert {p["path"] for p in response.json()["problems"]} == expected


async def test_bad_exam_commands_name_the_field(
    server: ServerProcess, api: ExamApi, crowd: Crowd
) -> None:
    """Oversized, misshapen or foreign exam commands are refused, naming why."""
    room = "exam-bad-commands"
    _, (student,) = await seated(server, api, crowd, exam_file(room, 1))
    client = student.client
    await client.fetch_exam(room)

    cases = [
        (client.save_answer(room, "q3", "x" * 5000), ErrorCode.INVALID, "value"),
        (client.save_answer(room, "q2", list(range(60))), ErrorCode.INVALID, "value"),
        (client.save_answer(room, "../etc", 0), ErrorCode.INVALID, "item"),
        (client.save_answer(room, "q99", 0), ErrorCode.INVALID, "item"),
        (client.save_answer("exam-elsewhere", "q1", 0), ErrorCode.NOT_JOINED, "room"),
        (
            client.report_signal(room, ClientSignal.COPY, "d" * 500),
            ErrorCode.INVALID,
            "detail",
        ),
        (
            client.proctor(room, ProctorActionKind.END, "s-0"),
            ErrorCode.FORBIDDEN,
            "room",
        ),
    ]
    for attempt, code, field in cases:
        with pytest.raises(CommandError) as refused:
            await attempt
        assert (refused.value.code, refused.value.field) == (code, field)
    assert (await client.fetch_exam(room)).answers == {}
