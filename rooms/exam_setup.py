"""Exam rooms as an examiner writes them: settings, roster, proctors, paper.

An exam file (YAML or JSON) names the room, when it opens and for how
long, who sits it (each student with school and class), who proctors it,
and holds the paper (see :mod:`rooms.exam_paper`). It is checked as a
whole and every bad part is reported with its path, the paper's under
``paper.``.

What the server stores is an :class:`ExamSetup`: the file with times in
milliseconds and a random secret from which each student's variant is
derived. It is a document of the store, read by the room's writer and by
the results; no client ever receives it.
"""

from __future__ import annotations

import datetime
import json
import secrets
from typing import Annotated, Any

import msgspec

from .exam import ExamRules
from .exam_paper import ExamPaper, parse_paper
from .plan import PlanError, check_items, locate, read_mapping

#: The document kind of an exam room's setup in the store.
EXAM = "exam"

UserId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
ExamId = Annotated[
    str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+\Z")
]
Minutes = Annotated[float, msgspec.Meta(ge=0, le=24 * 60)]


class Candidate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A student on the roster: one seat."""

    user: UserId
    name: Name
    school: Name
    class_: Name = msgspec.field(name="class")


class Proctor(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A proctor of the room."""

    user: UserId
    name: Name | None = None


class ExamFile(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The exam file as written."""

    id: ExamId
    opens_at: int | datetime.datetime
    duration_minutes: Annotated[float, msgspec.Meta(gt=0, le=24 * 60)]
    late_join_minutes: Minutes = 15
    allow_back: bool = True
    extra_minutes: dict[UserId, Minutes] = msgspec.field(default_factory=dict)
    students: Annotated[list[Candidate], msgspec.Meta(min_length=1, max_length=5000)]
    proctors: Annotated[list[Proctor], msgspec.Meta(max_length=100)] = msgspec.field(
        default_factory=list
    )
    #: Teachers besides admins who may read results and the log.
    examiners: Annotated[list[UserId], msgspec.Meta(max_length=100)] = msgspec.field(
        default_factory=list
    )
    paper: dict[str, Any]


class ExamSetup(msgspec.Struct, frozen=True, kw_only=True):
    """An exam room as the server keeps it."""

    id: str
    opens_at: int
    duration_ms: int
    late_join_ms: int
    allow_back: bool
    extra_ms: dict[str, int]
    students: list[Candidate]
    proctors: list[Proctor]
    examiners: list[str]
    secret: str
    paper: ExamPaper

    @property
    def title(self) -> str:
        """The paper's title."""
        return self.paper.title

    def rules(self) -> ExamRules:
        """The timing rules of :mod:`rooms.exam`."""
        return ExamRules(
            opens_at=self.opens_at,
            duration_ms=self.duration_ms,
            late_join_ms=self.late_join_ms,
            allow_back=self.allow_back,
            extra_ms=dict(self.extra_ms),
        )

    def candidate(self, user: str) -> Candidate | None:
        """The roster entry of ``user``, if they sit this exam."""
        return next((c for c in self.students if c.user == user), None)

    def is_proctor(self, user: str) -> bool:
        """Whether ``user`` proctors this room."""
        return any(p.user == user for p in self.proctors)


def _millis(value: int | datetime.datetime) -> int:
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.UTC)
        return int(value.timestamp() * 1000)
    return value


def parse_exam(text: str | bytes, filename: str = "exam.yaml") -> ExamSetup:
    """Read an exam file; raise :class:`PlanError` naming every bad part."""
    data = read_mapping(text, filename)
    problems: list[tuple[str, str]] = []
    exam: ExamFile | None = None
    try:
        exam = msgspec.convert(data, ExamFile)
    except msgspec.ValidationError as exc:
        for key, kind in (("students", Candidate), ("proctors", Proctor)):
            check_items(data, key, kind, problems)
        if not problems:
            path, message = locate(exc, "")
            problems.append((path.lstrip("."), message))

    paper: ExamPaper | None = None
    if isinstance(data.get("paper"), dict):
        try:
            paper = parse_paper(json.dumps(data["paper"], default=str), "paper.json")
        except PlanError as bad:
            problems += [
                (f"paper.{path}" if path else "paper", message)
                for path, message in bad.problems
            ]
    if exam is None or paper is None:
        raise PlanError(problems or [("paper", "the paper is missing")])

    users = [c.user for c in exam.students]
    repeated = sorted({u for u in users if users.count(u) > 1})
    if repeated:
        problems.append(("students", f"listed twice: {', '.join(repeated)}"))
    unknown = sorted(set(exam.extra_minutes) - set(users))
    if unknown:
        problems.append(("extra_minutes", f"not on the roster: {', '.join(unknown)}"))
    if problems:
        raise PlanError(problems)
    return ExamSetup(
        id=exam.id,
        opens_at=_millis(exam.opens_at),
        duration_ms=int(exam.duration_minutes * 60_000),
        late_join_ms=int(exam.late_join_minutes * 60_000),
        allow_back=exam.allow_back,
        extra_ms={u: int(m * 60_000) for u, m in exam.extra_minutes.items()},
        students=exam.students,
        proctors=exam.proctors,
        examiners=exam.examiners,
        secret=secrets.token_hex(32),
        paper=paper,
    )
