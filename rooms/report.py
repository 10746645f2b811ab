"""The lesson report: attendance, each question by school, each student.

A report is computed from a room rebuilt out of the store, not from a live
writer, so any node can produce it, during the lesson or long after.
"""

from __future__ import annotations

import csv
import io

import msgspec

from client_sdk.protocol import LeaveReason, QuestionKind, Role

from .lesson import AnswerRecord, Lesson
from .room import Room


class AttendanceRow(msgspec.Struct, frozen=True):
    """One person of the lesson and whether they are still there."""

    school: str
    class_: str = msgspec.field(name="class")
    user: str = ""
    name: str = ""
    role: Role = Role.STUDENT
    present: bool = False
    left: LeaveReason | None = None
    left_at: int | None = None


class QuestionSchool(msgspec.Struct, frozen=True):
    """How one school did on one question."""

    school: str
    answered: int
    right: int
    points: int


class QuestionReport(msgspec.Struct, frozen=True):
    """One question asked in the lesson, its key and results by school."""

    number: int
    kind: QuestionKind
    prompt: str
    answered: int
    right: int
    schools: list[QuestionSchool]


class StudentAnswer(msgspec.Struct, frozen=True):
    """One answer of one student."""

    number: int
    value: bool | int | str | list[int]
    right: bool
    points: int
    received_at: int


class StudentReport(msgspec.Struct, frozen=True):
    """A student's answers and total."""

    user: str
    name: str
    school: str
    class_: str = msgspec.field(name="class")
    points: int = 0
    answers: list[StudentAnswer] = msgspec.field(default_factory=list)


class SpeakingRow(msgspec.Struct, frozen=True):
    """How often and how long one student (or a school) held the floor."""

    school: str
    turns: int
    spoke_ms: int
    user: str | None = None
    name: str | None = None


class LessonReport(msgspec.Struct, frozen=True):
    """Everything a teacher or an official reads after a lesson."""

    lesson: str
    title: str
    host: str
    ended: bool
    attendance: list[AttendanceRow]
    questions: list[QuestionReport]
    students: list[StudentReport]
    speaking: list[SpeakingRow] = msgspec.field(default_factory=list)
    speaking_by_school: list[SpeakingRow] = msgspec.field(default_factory=list)


def build_report(room: Room) -> LessonReport:
    """The report of a lesson room; raises ``ValueError`` for other rooms."""
    lesson = room.lesson
    if lesson is None:
        raise ValueError(f"room {room.id!r} is not a lesson")
    return LessonReport(
        lesson=lesson.id,
        title=lesson.plan.title,
        host=lesson.plan.host.user,
        ended=lesson.ended,
        attendance=_attendance(room),
        questions=_questions(lesson),
        students=_students(lesson),
        speaking=_speaking(room),
        speaking_by_school=_speaking_by_school(room),
    )


def _speaking(room: Room) -> list[SpeakingRow]:
    turns = room.turns
    if turns is None:
        return []
    people = {m.user: m for m in room.members.values()}
    people.update({a.member.user: a.member for a in room.away.values()})
    rows = []
    for user, count in turns.user_turns.items():
        member = people.get(user)
        rows.append(
            SpeakingRow(
                school=member.school if member else "",
                turns=count,
                spoke_ms=turns.spoken_ms[user],
                user=user,
                name=member.name if member else user,
            )
        )
    return sorted(rows, key=lambda r: (-r.spoke_ms, r.name or "", r.user or ""))


def _speaking_by_school(room: Room) -> list[SpeakingRow]:
    turns = room.turns
    if turns is None:
        return []
    return sorted(
        (
            SpeakingRow(school=school, turns=count, spoke_ms=turns.school_ms[school])
            for school, count in turns.school_turns.items()
        ),
        key=lambda r: (-r.spoke_ms, r.school),
    )


def _attendance(room: Room) -> list[AttendanceRow]:
    rows = [
        AttendanceRow(
            school=m.school,
            class_=m.class_,
            user=m.user,
            name=m.name,
            role=m.role,
            present=True,
        )
        for m in room.members.values()
    ]
    rows += [
        AttendanceRow(
            school=a.member.school,
            class_=a.member.class_,
            user=a.member.user,
            name=a.member.name,
            role=a.member.role,
            left=a.reason,
            left_at=a.at,
        )
        for a in room.away.values()
    ]
    return sorted(rows, key=lambda r: (r.school, r.class_, r.name, r.user))


def _questions(lesson: Lesson) -> list[QuestionReport]:
    reports = []
    for number, answers in sorted(lesson.answers.items()):
        question = lesson.questions[number]
        schools: dict[str, list[AnswerRecord]] = {}
        for record in answers.values():
            schools.setdefault(record.school, []).append(record)
        reports.append(
            QuestionReport(
                number=number,
                kind=question.kind,
                prompt=question.prompt,
                answered=len(answers),
                right=sum(r.right for r in answers.values()),
                schools=[
                    QuestionSchool(
                        school=school,
                        answered=len(records),
                        right=sum(r.right for r in records),
                        points=sum(r.points for r in records),
                    )
                    for school, records in sorted(schools.items())
                ],
            )
        )
    return reports


def _students(lesson: Lesson) -> list[StudentReport]:
    by_user: dict[str, list[AnswerRecord]] = {}
    for answers in lesson.answers.values():
        for user, record in answers.items():
            by_user.setdefault(user, []).append(record)
    students = []
    for user, records in by_user.items():
        first = records[0]
        students.append(
            StudentReport(
                user=user,
                name=first.name,
                school=first.school,
                class_=first.class_,
                points=sum(r.points for r in records),
                answers=[
                    StudentAnswer(
                        number=r.number,
                        value=r.value,
                        right=r.right,
                        points=r.points,
                        received_at=r.received_at,
                    )
                    for r in sorted(records, key=lambda r: r.number)
                ],
            )
        )
    return sorted(students, key=lambda s: (-s.points, s.name, s.user))


def report_csv(report: LessonReport) -> str:
    """One row per student and question asked, for a spreadsheet.

    Students who answered nothing appear once with empty answer columns,
    so the sheet also shows who took part without answering.
    """
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        [
            "school",
            "class",
            "user",
            "name",
            "present",
            "question",
            "answer",
            "right",
            "points",
            "total",
        ]
    )
    students = {s.user: s for s in report.students}
    for row in report.attendance:
        if row.role not in (Role.STUDENT, Role.CLASSROOM):
            continue
        student = students.get(row.user)
        head = [
            row.school,
            row.class_,
            row.user,
            row.name,
            "yes" if row.present else "no",
        ]
        if student is None or not student.answers:
            writer.writerow([*head, "", "", "", "", 0])
            continue
        for answer in student.answers:
            writer.writerow(
                [
                    *head,
                    answer.number,
                    msgspec.json.encode(answer.value).decode(),
                    "yes" if answer.right else "no",
                    answer.points,
                    student.points,
                ]
            )
    return out.getvalue()
