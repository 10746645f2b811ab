"""A linked lesson of three schools, run once end to end; each test checks one promise.

The host, a co-teacher per school and seven students connect with the SDK to
a real server process; an eighth student is a bare WebSocket that joins in
the middle of the first question. The host asks a short text question whose
accepted answer is a marker string, then a five-second single choice
question that its deadline closes; co-teachers then remove one student who
is present and one who dropped out, and the host ends the lesson (see
:mod:`tests.lessons.scenario`). The :func:`run` fixture records everything
everyone received and the reports; the tests below read that record.

Answer times are only loosely controlled over the network, so scores are
checked by what is robust: right or wrong, 0 for wrong, 500 to 1000 for
right, and leaderboards and school averages recomputed by hand from the
per-student points of the report.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio

from client_sdk import (
    AnswerResult,
    AnswerTally,
    CloseCode,
    ConnectionRefused,
    Disconnected,
    ErrorCode,
    LessonSnapshot,
    QuestionClosed,
    QuestionOpened,
    QuestionRevealed,
)

from .conftest import Api, Crowd, ServerProcess, Watcher
from .scenario import (
    DROPPED,
    DUPLICATE,
    LATE,
    MARKER,
    PUPILS,
    REMOVED,
    ROOM,
    SCHOOLS,
    Run,
    decode_all,
    lesson,
)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def run(server: ServerProcess) -> AsyncIterator[Run]:
    """The lesson, run once for every test of this module."""
    api = Api(server)
    crowd = Crowd()
    try:
        yield await asyncio.wait_for(lesson(server, api, crowd), 60)
    finally:
        await crowd.close()
        await api.close()


# Helpers of the checks ------------------------------------------------------


def report_student(run: Run, key: str) -> dict[str, Any]:
    """The report's entry of one pupil."""
    user = run.users[key]
    return next(s for s in run.report["students"] if s["user"] == user)


def report_answers(run: Run, key: str) -> dict[int, dict[str, Any]]:
    """One pupil's answers in the report, by question number."""
    return {a["number"]: a for a in report_student(run, key)["answers"]}


def reveal(watcher: Watcher, number: int) -> QuestionRevealed:
    """The reveal of question ``number`` as ``watcher`` received it."""
    return next(r for r in watcher.all(QuestionRevealed) if r.number == number)


def mentions_marker(frame: bytes | str) -> bool:
    """Whether a raw frame holds the key of question 1, in any letter case."""
    data = frame.encode() if isinstance(frame, str) else frame
    return MARKER.lower().encode() in data.lower()


def student_frames(run: Run) -> dict[str, list[bytes | str]]:
    """Every frame each student received, the bare WebSocket one included."""
    frames = {key: w.frames for key, w in run.students.items()}
    frames["observer"] = run.observer_frames
    return frames


def rank_of(points: float, everyone: list[float]) -> int:
    """A leaderboard rank by hand: one more than the number of higher scores."""
    return 1 + sum(1 for other in everyone if other > points)


# The checks -----------------------------------------------------------------


def test_every_client_sees_the_same_questions(run: Run) -> None:
    """Every client gets each question with the same number, opens_at and closes_at."""
    seen = {
        watcher.name: [
            (q.question.number, q.opens_at, q.closes_at)
            for q in watcher.all(QuestionOpened)
        ]
        for watcher in run.everyone
    }
    expected = seen["host"]
    assert [number for number, _, _ in expected] == [1, 2]
    assert all(questions == expected for questions in seen.values()), seen
    for opens_at, closes_at, seconds in (
        (expected[0][1], expected[0][2], 10),
        (expected[1][1], expected[1][2], 5),
    ):
        assert closes_at - opens_at == seconds * 1000

    # The late joiner got question 1 in its snapshot, question 2 as an event.
    observed = decode_all(run.observer_frames)
    snapshot = next(m for m in observed if isinstance(m, LessonSnapshot))
    assert snapshot.lesson.question is not None
    open_question = snapshot.lesson.question
    assert (
        open_question.question.number,
        open_question.opens_at,
        open_question.closes_at,
    ) == expected[0]
    later = [
        (m.question.number, m.opens_at, m.closes_at)
        for m in observed
        if isinstance(m, QuestionOpened)
    ]
    assert later == expected[1:]


def test_answers_arrive_after_the_question_opens(run: Run) -> None:
    """Students who wait_until(opens_at) answer after it, within the question's time."""
    opened = {q.question.number: q for q in run.host.all(QuestionOpened)}
    for pupil in PUPILS:
        for number, answer in report_answers(run, pupil.key).items():
            question = opened[number]
            assert question.opens_at <= answer["received_at"] <= question.closes_at


def test_no_student_frame_holds_the_key_before_the_reveal(run: Run) -> None:
    """The first frame a student receives holding the key is the reveal itself."""
    for key, frames in student_frames(run).items():
        first = next(
            (index for index, f in enumerate(frames) if mentions_marker(f)), None
        )
        assert first is not None, f"{key} never received the reveal"
        revealed = decode_all([frames[first]])[0]
        assert isinstance(revealed, QuestionRevealed), (key, revealed)
        assert revealed.number == 1
        assert revealed.accepted == [MARKER]
        assert revealed.answer is None
    for watcher in run.everyone:
        assert reveal(watcher, 1).accepted == [MARKER]


def test_duplicate_answer_is_acked_twice_and_stored_once(run: Run) -> None:
    """An answer sent twice under one id is acked both times and stored once."""
    acks = run.answer_acks[(DUPLICATE, 1)]
    assert acks == [f"{DUPLICATE}-q1-answer"] * 2
    answers = report_student(run, DUPLICATE)["answers"]
    assert [(a["number"], a["value"]) for a in answers if a["number"] == 1] == [
        (1, MARKER)
    ]
    # A second answer under a new id is a change, which this quiz refuses.
    assert run.duplicate_change is not None
    assert run.duplicate_change.code is ErrorCode.CLOSED


def test_late_answer_is_refused_as_closed(run: Run) -> None:
    """An answer after closes_at + grace is refused with `closed` and not stored."""
    assert run.late is not None
    assert (run.late.code, run.late.field) == (ErrorCode.CLOSED, "number")
    late = next(p for p in PUPILS if p.answer2 == LATE)
    assert 2 not in report_answers(run, late.key)
    # The deadline closed the question, not the host.
    opened = next(q for q in run.host.all(QuestionOpened) if q.question.number == 2)
    closed = next(c for c in run.host.all(QuestionClosed) if c.number == 2)
    assert closed.at >= opened.closes_at + opened.grace_ms
    assert closed.answered == len(PUPILS) - 1


def test_co_teacher_removes_only_their_own_schools_students(run: Run) -> None:
    """A co-teacher may not remove another school's people, only their own.

    Their own includes a student who had dropped out already: the report
    then says removed, not disconnected.
    """
    assert run.other_school is not None
    assert run.other_school.code is ErrorCode.FORBIDDEN
    assert run.co_teacher_removed is not None
    assert run.co_teacher_removed.code is ErrorCode.FORBIDDEN

    removed = run.students[REMOVED]
    gone = removed.all(Disconnected)
    assert [(d.code, d.reconnecting) for d in gone] == [(CloseCode.REMOVED, False)]
    assert isinstance(removed.ended, ConnectionRefused)
    assert removed.ended.code == CloseCode.REMOVED
    assert run.removed_rejoin is not None
    assert run.removed_rejoin.code is ErrorCode.FORBIDDEN

    for key in (REMOVED, DROPPED):
        row = next(r for r in run.report["attendance"] if r["user"] == run.users[key])
        assert (row["present"], row["left"]) == (False, "removed"), key
    # Nobody else was sent away.
    for key, watcher in run.students.items():
        if key != REMOVED:
            assert not watcher.all(Disconnected), key


def test_teachers_get_tallies_by_school_and_students_none(run: Run) -> None:
    """Host and co-teachers see answer tallies by school; no student gets one."""
    expected_q1: dict[str, tuple[int, list[int]]] = {}
    expected_q2: dict[str, tuple[int, list[int]]] = {}
    for pupil in PUPILS:
        school = SCHOOLS[pupil.school]
        answered, counts = expected_q1.setdefault(school, (0, [0, 0]))
        counts[0 if pupil.right1 else 1] += 1
        expected_q1[school] = (answered + 1, counts)
        if pupil.answer2 != LATE:
            answered, counts = expected_q2.setdefault(school, (0, [0, 0, 0]))
            counts[pupil.answer2] += 1
            expected_q2[school] = (answered + 1, counts)

    for teacher in [run.host, *run.co_teachers]:
        tallies = teacher.all(AnswerTally)
        for number, expected in ((1, expected_q1), (2, expected_q2)):
            final = [t for t in tallies if t.number == number][-1]
            by_school = {t.school: (t.answered, t.counts) for t in final.by_school}
            assert by_school == expected, (teacher.name, number)
            assert final.answered == sum(a for a, _ in expected.values())
            assert final.counts == [
                sum(c) for c in zip(*(c for _, c in expected.values()), strict=True)
            ]

    for key, frames in student_frames(run).items():
        kinds = {type(message) for message in decode_all(frames)}
        assert AnswerTally not in kinds, key
    for watcher in run.students.values():
        assert not watcher.all(AnswerTally)


def test_points_are_zero_when_wrong_and_500_to_1000_when_right(run: Run) -> None:
    """Each stored answer is graded as by hand and scored within the speed range."""
    for pupil in PUPILS:
        answers = report_answers(run, pupil.key)
        expected: dict[int, tuple[str | int, bool]] = {1: (pupil.answer1, pupil.right1)}
        if pupil.answer2 != LATE:
            expected[2] = (pupil.answer2, pupil.right2)
        assert {n: (a["value"], a["right"]) for n, a in answers.items()} == expected
        for answer in answers.values():
            if answer["right"]:
                assert 500 <= answer["points"] <= 1000, (pupil.key, answer)
            else:
                assert answer["points"] == 0, (pupil.key, answer)
        student = report_student(run, pupil.key)
        assert student["points"] == sum(a["points"] for a in answers.values())


def test_leaderboards_match_the_reports_points(run: Run) -> None:
    """The final student and school leaderboards follow from the report's points."""
    totals = {s["user"]: s["points"] for s in run.report["students"]}
    final = reveal(run.host, 2)

    board = [(row.user, row.points, row.rank) for row in final.leaderboard]
    assert {user for user, _, _ in board} == set(totals)
    assert [points for _, points, _ in board] == sorted(totals.values(), reverse=True)
    for user, points, rank in board:
        assert points == totals[user]
        assert rank == rank_of(points, list(totals.values()))

    by_school: dict[str, list[int]] = {}
    for student in run.report["students"]:
        by_school.setdefault(student["school"], []).append(student["points"])
    averages = {s: round(sum(p) / len(p), 1) for s, p in by_school.items()}
    expected = sorted(
        (
            (school, len(points), sum(points), averages[school])
            for school, points in by_school.items()
        ),
        key=lambda row: (-row[3], row[0]),
    )
    assert [
        (s.school, s.students, s.points, s.average) for s in final.schools
    ] == expected
    for school in final.schools:
        assert school.rank == rank_of(school.average, list(averages.values()))

    # After question 1, the board held question 1's points alone.
    first = reveal(run.host, 1)
    q1 = {pupil.key: report_answers(run, pupil.key)[1]["points"] for pupil in PUPILS}
    assert {row.user: row.points for row in first.leaderboard} == {
        run.users[key]: points for key, points in q1.items()
    }


def test_each_student_gets_their_own_result(run: Run) -> None:
    """After each reveal a student gets one result, matching the report and board."""
    for pupil in PUPILS:
        answers = report_answers(run, pupil.key)
        results = {r.number: r for r in run.students[pupil.key].all(AnswerResult)}
        assert set(results) == set(answers), pupil.key
        for number, result in results.items():
            row = next(
                r
                for r in reveal(run.host, number).leaderboard
                if r.user == run.users[pupil.key]
            )
            assert result.answered
            assert (result.right, result.points) == (
                answers[number]["right"],
                answers[number]["points"],
            )
            assert (result.total, result.rank) == (row.points, row.rank)
    for teacher in [run.host, *run.co_teachers]:
        assert not teacher.all(AnswerResult)
    observed = decode_all(run.observer_frames)
    assert not [m for m in observed if isinstance(m, AnswerResult)]


def test_report_holds_what_was_answered(run: Run) -> None:
    """The JSON report has each question's counts by school and the attendance."""
    report = run.report
    assert (report["lesson"], report["host"], report["ended"]) == (
        ROOM,
        "t-lan",
        True,
    )
    for number, right_of in ((1, "right1"), (2, "right2")):
        answered = [p for p in PUPILS if number == 1 or p.answer2 != LATE]
        question = next(q for q in report["questions"] if q["number"] == number)
        assert question["answered"] == len(answered)
        assert question["right"] == sum(getattr(p, right_of) for p in answered)
        schools = {
            s["school"]: (s["answered"], s["right"]) for s in question["schools"]
        }
        assert schools == {
            SCHOOLS[index]: (
                sum(1 for p in answered if p.school == index),
                sum(1 for p in answered if p.school == index and getattr(p, right_of)),
            )
            for index in range(len(SCHOOLS))
        }
    people = {(row["user"], row["role"]) for row in report["attendance"]}
    assert ("t-lan", "teacher") in people
    assert {
        ("co-a", "co-teacher"),
        ("co-b", "co-teacher"),
        ("co-c", "co-teacher"),
    } <= people
    assert {(run.users[p.key], "student") for p in PUPILS} <= people
    assert (run.observer_user, "student") in people


def test_report_csv_matches_the_json(run: Run) -> None:
    """The CSV report has one row per student and answer, and the non-answerers once."""
    rows = list(csv.DictReader(io.StringIO(run.report_csv)))
    students = {s["user"]: s for s in run.report["students"]}
    expected = set()
    for row in run.report["attendance"]:
        if row["role"] != "student":
            continue
        student = students.get(row["user"])
        if student is None:
            expected.add((row["user"], "", "", "", "", "0"))
            continue
        for answer in student["answers"]:
            expected.add(
                (
                    row["user"],
                    str(answer["number"]),
                    json.dumps(answer["value"], separators=(",", ":")),
                    "yes" if answer["right"] else "no",
                    str(answer["points"]),
                    str(student["points"]),
                )
            )
    found = {
        (r["user"], r["question"], r["answer"], r["right"], r["points"], r["total"])
        for r in rows
    }
    assert len(rows) == len(found)
    assert found == expected
    assert (run.observer_user, "", "", "", "", "0") in found


def test_only_teachers_and_admins_read_the_report(run: Run) -> None:
    """Host, co-teachers and admins read the report; students and devices get 403."""
    assert run.access == {
        "host": 200,
        "admin": 200,
        "co-teacher 0": 200,
        "co-teacher 1": 200,
        "co-teacher 2": 200,
        "classroom": 403,
        "student": 403,
    }


def test_joined_clients_get_a_lesson_snapshot_first(run: Run) -> None:
    """Each SDK client's stream starts with the lesson snapshot of its join."""
    for watcher in run.everyone:
        first = watcher.items[0]
        assert isinstance(first, LessonSnapshot), (watcher.name, first)
        assert (first.room, first.lesson.id) == (ROOM, ROOM)
        assert first.lesson.host == "t-lan"
        assert [c.school for c in first.lesson.classes] == SCHOOLS
