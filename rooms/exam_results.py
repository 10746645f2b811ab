"""An exam room's results and its exported log, from what the store holds.

Both are computed from a room rebuilt out of the store (:func:`load_room`),
not from a live writer, so any node gives them, during the exam or after.
Results grade each saved answer against the key in the student's own
option order (their variant, from the same seed as when they sat it);
speaking items are left for an examiner. The export is the log in the
JSON lines ``lophoc verify-log`` reads.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

import msgspec

from client_sdk.protocol import AttemptState

from .audit import Checkpoint, LogEntry, LogHeader
from .exam_paper import ExamAnswer, grade
from .exam_room import ExamDesk

#: The status of a speaking item whose recording an examiner has to grade.
AWAITING_EXAMINER = "awaiting examiner"


class ItemResult(msgspec.Struct, frozen=True, omit_defaults=True):
    """One item of one student: points, or ``None`` while an examiner grades.

    A recorded speaking item is ``awaiting examiner``, with the file to
    download from ``/api/exams/{room}/recordings/{recording}``.
    """

    item: str
    answered: bool
    points: float | None
    max: float
    status: str | None = None
    recording: str | None = None


class StudentResult(msgspec.Struct, frozen=True):
    """One student's attempt and score."""

    user: str
    name: str
    school: str
    class_: str = msgspec.field(name="class")
    state: AttemptState = AttemptState.NOT_STARTED
    reason: str | None = None
    score: float = 0
    max: float = 0
    #: Points of speaking items, which an examiner has yet to grade.
    ungraded: float = 0
    flagged: bool = False
    incidents: int = 0
    items: list[ItemResult] = msgspec.field(default_factory=list)


class ExamResults(msgspec.Struct, frozen=True):
    """Every student of an exam room."""

    room: str
    title: str
    opens_at: int
    max: float
    students: list[StudentResult]


def build_results(desk: ExamDesk) -> ExamResults:
    """Grade every attempt of ``desk`` as it stands."""
    paper = desk.setup.paper
    students = []
    for candidate in desk.setup.students:
        attempt = desk.exam.attempts.get(candidate.user)
        orders = desk.variant_of(candidate.user).orders
        items: list[ItemResult] = []
        score = ungraded = 0.0
        for item in paper.items():
            saved = attempt.answers.get(item.id) if attempt else None
            points: float | None = 0.0
            if saved is not None:
                value: ExamAnswer = saved[1]  # type: ignore[assignment]
                points = grade(item, orders[item.id], value)
            elif item.kind.value == "speaking":
                points = None
            if points is None:
                ungraded += item.points
            else:
                score += points
            spoken = item.kind.value == "speaking" and saved is not None
            items.append(
                ItemResult(
                    item.id,
                    saved is not None,
                    points,
                    item.points,
                    status=AWAITING_EXAMINER if spoken else None,
                    recording=str(saved[1]) if spoken and saved else None,
                )
            )
        students.append(
            StudentResult(
                user=candidate.user,
                name=candidate.name,
                school=candidate.school,
                class_=candidate.class_,
                state=attempt.state if attempt else AttemptState.NOT_STARTED,
                reason=attempt.ended_reason if attempt else None,
                score=score,
                max=paper.total(),
                ungraded=ungraded,
                flagged=candidate.user in desk.flagged,
                incidents=sum(1 for i in desk.incidents if i.user == candidate.user),
                items=items,
            )
        )
    return ExamResults(
        room=desk.setup.id,
        title=desk.setup.title,
        opens_at=desk.setup.opens_at,
        max=paper.total(),
        students=students,
    )


def results_csv(results: ExamResults) -> str:
    """One row per student, one column of points per item, for a spreadsheet."""
    out = io.StringIO()
    writer = csv.writer(out)
    items = [i.item for i in results.students[0].items] if results.students else []
    writer.writerow(
        [
            "school",
            "class",
            "user",
            "name",
            "state",
            "score",
            "max",
            "ungraded",
            "flagged",
            "incidents",
            *items,
        ]
    )
    for s in results.students:
        writer.writerow(
            [
                s.school,
                s.class_,
                s.user,
                s.name,
                s.state.value,
                f"{s.score:g}",
                f"{s.max:g}",
                f"{s.ungraded:g}",
                "yes" if s.flagged else "",
                s.incidents,
                *(
                    i.status or "" if i.points is None else f"{i.points:g}"
                    for i in s.items
                ),
            ]
        )
    return out.getvalue()


_line_encoder = msgspec.json.Encoder()


def export_log(
    room: str,
    public_key: str,
    entries: Sequence[LogEntry],
    checkpoints: Sequence[Checkpoint],
) -> bytes:
    """The log as JSON lines: a header, then entries and checkpoints in order.

    Each checkpoint follows the entry it signed, as it was written.
    """
    lines = [_line_encoder.encode(LogHeader(room, public_key))]
    points = sorted(checkpoints, key=lambda p: p.seq)
    at = 0
    for entry in entries:
        lines.append(_line_encoder.encode(entry))
        while at < len(points) and points[at].seq <= entry.seq:
            lines.append(_line_encoder.encode(points[at]))
            at += 1
    lines += [_line_encoder.encode(p) for p in points[at:]]
    return b"\n".join(lines) + b"\n"
