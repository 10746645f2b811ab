"""The lesson state machine: plan steps, quiz questions, answers and scores.

Like :class:`rooms.room.Room`, a :class:`Lesson` does no I/O and reads the
time only from its arguments. Host actions become room events that every
member sees; answers become :class:`AnswerRecord` values that the writer
stores before it acknowledges them, and that only teachers see (as a tally)
until the reveal.

Deadlines are data: an open question carries ``opens_at`` and
``closes_at``, and :meth:`Lesson.due` tells the writer when it must next
look at the room, so a writer rebuilt on another node re-arms the same
deadline from the state alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import msgspec

from client_sdk.protocol import (
    ActivityChanged,
    Answer,
    AnswerResult,
    AnswerTally,
    AskQuestion,
    CloseQuestion,
    EndLesson,
    ErrorCode,
    LessonEnded,
    LessonEvent,
    LessonView,
    LinkedClass,
    Member,
    OpenQuestion,
    QuestionClosed,
    QuestionKind,
    QuestionOpened,
    QuestionRevealed,
    Reveal,
    Role,
    SchoolScore,
    SchoolTally,
    ScoreRow,
    SetStage,
    StageChanged,
    StepActivity,
)

from .errors import Refused
from .plan import LessonPlan, Quiz
from .quiz import Question, score

#: Time after ``closes_at`` during which an answer is still taken: it covers
#: an answer sent at the last moment over a slow school link.
GRACE_MS = 1000
#: Students shown on the leaderboard of a reveal.
LEADERBOARD_SIZE = 10

HostAction = StepActivity | AskQuestion | CloseQuestion | Reveal | EndLesson | SetStage


class AnswerRecord(msgspec.Struct, frozen=True):
    """One student's answer to one question, as stored."""

    number: int
    answer_id: str
    user: str
    name: str
    school: str
    class_: str = msgspec.field(name="class")
    value: bool | int | str | list[int] = 0
    received_at: int = 0
    round_trip_ms: int = 0
    right: bool = False
    points: int = 0


@dataclass(slots=True)
class Asked:
    """The question currently (or last) asked."""

    number: int
    activity: int
    index: int
    question: Question
    opens_at: int
    closes_at: int
    allow_change: bool
    closed: bool = False
    revealed: bool = False


@dataclass(slots=True)
class Counts:
    """How the answers to one question split over its slots, kept as they come.

    The teachers' tally is sent a few times a second during a burst of
    thousands of answers; counting them all again each time held the event
    loop for milliseconds, long enough to delay the acknowledgements that
    came meanwhile.
    """

    size: int
    total: list[int]
    #: Per school: the counts of its slots and its number of answers.
    schools: dict[str, tuple[list[int], list[int]]] = field(default_factory=dict)

    @classmethod
    def of(cls, question: Question) -> Counts:
        """Empty counts with a slot per option (or right and wrong)."""
        size = _size(question)
        return cls(size, [0] * size)

    def add(self, question: Question, record: AnswerRecord, step: int = 1) -> None:
        """Count ``record`` in (or out, with ``step`` -1)."""
        counts, answered = self.schools.setdefault(
            record.school, ([0] * self.size, [0])
        )
        answered[0] += step
        for slot in _slots(question, record):
            counts[slot] += step
            self.total[slot] += step
        if not answered[0]:
            del self.schools[record.school]

    def split(self) -> tuple[list[int], list[SchoolTally]]:
        """Copies of the counts, the schools in name order."""
        return list(self.total), [
            SchoolTally(school=school, answered=answered[0], counts=list(counts))
            for school, (counts, answered) in sorted(self.schools.items())
        ]


@dataclass(slots=True)
class Outcome:
    """What a lesson command causes, before the writer numbers the events."""

    events: list[LessonEvent] = field(default_factory=list)
    record: AnswerRecord | None = None
    duplicate: bool = False
    tally: AnswerTally | None = None
    results: list[tuple[str, AnswerResult]] = field(default_factory=list)


class Lesson:
    """The lesson part of a room's state."""

    def __init__(self, lesson_id: str, plan: LessonPlan) -> None:
        self.id = lesson_id
        self.plan = plan
        self.current: int | None = None
        self.asked: Asked | None = None
        self.ended = False
        #: The linked class every member sees, if one is on stage.
        self.stage: LinkedClass | None = None
        self.answers: dict[int, dict[str, AnswerRecord]] = {}
        #: The counts of a question's answers, kept with ``answers`` from
        #: the question's first tally on.
        self.counts: dict[int, Counts] = {}
        #: Each question's key, by number, for grading and the report.
        self.questions = {
            plan.number_of(activity, index): question
            for activity, index, question in plan.questions()
        }

    # Views -----------------------------------------------------------------

    def view(self) -> LessonView:
        """The lesson as a joining client sees it; never an answer key."""
        asked = self.asked
        question = None
        if asked is not None and not asked.revealed:
            question = OpenQuestion(
                question=asked.question.view(asked.number),
                opens_at=asked.opens_at,
                closes_at=asked.closes_at,
                grace_ms=GRACE_MS,
                allow_change=asked.allow_change,
                closed=asked.closed,
            )
        return LessonView(
            id=self.id,
            title=self.plan.title,
            host=self.plan.host.user,
            classes=self.plan.linked_classes(),
            activities=len(self.plan.activities),
            activity=(
                self.plan.activity_view(self.current)
                if self.current is not None
                else None
            ),
            question=question,
            ended=self.ended,
            stage=self.stage,
        )

    def due(self) -> int | None:
        """When the writer must next call :meth:`tick`, if ever."""
        asked = self.asked
        if asked is None or asked.closed:
            return None
        return asked.closes_at + GRACE_MS

    # Permissions -----------------------------------------------------------

    def is_host(self, actor: Member) -> bool:
        """Whether ``actor`` runs this lesson (its host, or an admin)."""
        return actor.role is Role.ADMIN or (
            actor.role is Role.TEACHER and actor.user == self.plan.host.user
        )

    def may_moderate(self, actor: Member, target: Member) -> bool:
        """Whether ``actor`` may act on ``target`` (remove, mute, call on).

        The host acts on anyone; a co-teacher only on students and classroom
        devices of their own school.
        """
        if self.is_host(actor):
            return True
        return (
            actor.role is Role.CO_TEACHER
            and target.role in (Role.STUDENT, Role.CLASSROOM)
            and actor.school == target.school
        )

    def _require_host(self, actor: Member) -> None:
        if not self.is_host(actor):
            raise Refused(
                ErrorCode.FORBIDDEN, "only the lesson's host may do this", "room"
            )
        if self.ended:
            raise Refused(ErrorCode.FORBIDDEN, "the lesson has ended", "room")

    # Host actions ----------------------------------------------------------

    def decide_host(self, actor: Member, action: HostAction, now: int) -> Outcome:
        """Events of a host action; raises :class:`Refused` if not allowed."""
        self._require_host(actor)
        if isinstance(action, StepActivity):
            return self._step(action)
        if isinstance(action, AskQuestion):
            return self._ask(action, now)
        if isinstance(action, CloseQuestion):
            return self._close(now, by_host=True)
        if isinstance(action, Reveal):
            return self._reveal()
        if isinstance(action, SetStage):
            return self._stage(action, now)
        return Outcome(events=[LessonEnded(room="", offset=0, epoch="", at=now)])

    def _step(self, action: StepActivity) -> Outcome:
        if action.index >= len(self.plan.activities):
            raise Refused(
                ErrorCode.INVALID,
                f"the plan has {len(self.plan.activities)} activities",
                "index",
            )
        view = self.plan.activity_view(action.index)
        return Outcome(
            events=[ActivityChanged(room="", offset=0, epoch="", at=0, activity=view)]
        )

    def _stage(self, action: SetStage, now: int) -> Outcome:
        if action.school is None:
            if action.class_ is not None:
                raise Refused(ErrorCode.INVALID, "a class needs its school", "school")
            stage = None
        else:
            stage = next(
                (
                    linked
                    for linked in self.plan.linked_classes()
                    if linked.school == action.school
                    and action.class_ in (None, linked.class_)
                ),
                None,
            )
            if stage is None:
                raise Refused(
                    ErrorCode.INVALID,
                    f"no linked class {action.school!r}/{action.class_!r}",
                    "class",
                )
        if stage == self.stage:
            raise Refused(ErrorCode.INVALID, "that is already the stage", "school")
        event = StageChanged(room="", offset=0, epoch="", at=now, stage=stage)
        return Outcome(events=[event])

    def _ask(self, action: AskQuestion, now: int) -> Outcome:
        quiz = self._current_quiz()
        if action.question >= len(quiz.questions):
            raise Refused(
                ErrorCode.INVALID,
                f"this quiz has {len(quiz.questions)} questions",
                "question",
            )
        if self.asked is not None and not self.asked.closed:
            raise Refused(
                ErrorCode.INVALID,
                f"question {self.asked.number} is still open; close it first",
                "question",
            )
        question = quiz.questions[action.question]
        number = self.plan.number_of(self.current or 0, action.question)
        opens_at = now + self.plan.lead_ms
        event = QuestionOpened(
            room="",
            offset=0,
            epoch="",
            at=now,
            question=question.view(number),
            opens_at=opens_at,
            closes_at=opens_at + question.seconds * 1000,
            grace_ms=GRACE_MS,
            allow_change=quiz.allow_change,
        )
        return Outcome(events=[event])

    def _current_quiz(self) -> Quiz:
        if self.current is None:
            raise Refused(ErrorCode.INVALID, "no activity is current", "question")
        activity = self.plan.activities[self.current]
        if not isinstance(activity, Quiz):
            raise Refused(
                ErrorCode.INVALID, "the current activity is not a quiz", "question"
            )
        return activity

    def _close(self, now: int, by_host: bool) -> Outcome:
        asked = self.asked
        if asked is None or asked.closed:
            if by_host:
                raise Refused(ErrorCode.INVALID, "no question is open", "room")
            return Outcome()
        answered = len(self.answers.get(asked.number, {}))
        return Outcome(
            events=[
                QuestionClosed(
                    room="",
                    offset=0,
                    epoch="",
                    at=now,
                    number=asked.number,
                    answered=answered,
                )
            ]
        )

    def _reveal(self) -> Outcome:
        asked = self.asked
        if asked is None or asked.revealed:
            raise Refused(ErrorCode.INVALID, "no question to reveal", "room")
        outcome = Outcome()
        if not asked.closed:
            outcome.events.extend(self._close(0, by_host=False).events)
        question = asked.question
        answers = self.answers.get(asked.number, {})
        counts, by_school = self._counts(question, answers.values())
        board = self.leaderboard()
        key = question.answer
        outcome.events.append(
            QuestionRevealed(
                room="",
                offset=0,
                epoch="",
                at=0,
                number=asked.number,
                counts=counts,
                by_school=by_school,
                leaderboard=board[:LEADERBOARD_SIZE],
                schools=self.school_board(),
                answer=None if question.kind is QuestionKind.SHORT_TEXT else key,  # type: ignore[arg-type]
                accepted=(
                    [str(a) for a in key]  # type: ignore[union-attr]
                    if question.kind is QuestionKind.SHORT_TEXT
                    else None
                ),
            )
        )
        ranks = {row.user: row for row in board}
        for user, record in answers.items():
            row = ranks.get(user)
            outcome.results.append(
                (
                    user,
                    AnswerResult(
                        room="",
                        number=asked.number,
                        answered=True,
                        right=record.right,
                        points=record.points,
                        total=row.points if row else 0,
                        rank=row.rank if row else 0,
                    ),
                )
            )
        return outcome

    def tick(self, now: int) -> Outcome:
        """Close the open question once its deadline and grace have passed."""
        due = self.due()
        if due is None or now < due:
            return Outcome()
        return self._close(now, by_host=False)

    # Answers ---------------------------------------------------------------

    def decide_answer(
        self,
        actor: Member,
        command: Answer,
        received_at: int,
        round_trip_ms: int,
    ) -> Outcome:
        """Check and grade an answer; the writer stores the record."""
        if actor.role not in (Role.STUDENT, Role.CLASSROOM):
            raise Refused(ErrorCode.FORBIDDEN, "only students answer", "room")
        asked = self.asked
        if asked is None or asked.number != command.number or asked.revealed:
            raise Refused(
                ErrorCode.INVALID,
                f"question {command.number} is not open",
                "number",
            )
        answers = self.answers.setdefault(asked.number, {})
        earlier = answers.get(actor.user)
        if earlier is not None and earlier.answer_id == command.id:
            return Outcome(record=earlier, duplicate=True)
        if received_at < asked.opens_at:
            raise Refused(ErrorCode.INVALID, "the question is not open yet", "number")
        if asked.closed or received_at > asked.closes_at + GRACE_MS:
            raise Refused(
                ErrorCode.CLOSED,
                f"question {asked.number} closed at {asked.closes_at}",
                "number",
            )
        if earlier is not None and not asked.allow_change:
            raise Refused(
                ErrorCode.CLOSED,
                "this quiz does not allow changing an answer",
                "number",
            )
        problem = asked.question.shape_error(command.value)
        if problem is not None:
            raise Refused(ErrorCode.INVALID, problem, "value")

        right = asked.question.grade(command.value)
        record = AnswerRecord(
            number=asked.number,
            answer_id=command.id,
            user=actor.user,
            name=actor.name,
            school=actor.school,
            class_=actor.class_,
            value=command.value,
            received_at=received_at,
            round_trip_ms=round_trip_ms,
            right=right,
            points=score(
                asked.question,
                right,
                asked.opens_at,
                asked.closes_at,
                received_at,
                round_trip_ms,
            ),
        )
        return Outcome(record=record)

    def tally(self, present: int) -> AnswerTally | None:
        """The running counts of the open question, for the teachers."""
        asked = self.asked
        if asked is None:
            return None
        answers = self.answers.get(asked.number, {})
        kept = self.counts.get(asked.number)
        if kept is None:
            kept = self.counts[asked.number] = Counts.of(asked.question)
            for record in answers.values():
                kept.add(asked.question, record)
        counts, by_school = kept.split()
        return AnswerTally(
            room="",
            number=asked.number,
            answered=len(answers),
            present=present,
            counts=counts,
            by_school=by_school,
        )

    # Applying --------------------------------------------------------------

    def replay(self, event: msgspec.Struct) -> None:
        """Fold one stored lesson event into the state."""
        if isinstance(event, ActivityChanged):
            self.current = event.activity.index
        elif isinstance(event, QuestionOpened):
            number = event.question.number
            activity, index = self._locate(number)
            quiz = self.plan.activities[activity]
            self.asked = Asked(
                number=number,
                activity=activity,
                index=index,
                question=self.questions[number],
                opens_at=event.opens_at,
                closes_at=event.closes_at,
                allow_change=isinstance(quiz, Quiz) and quiz.allow_change,
            )
            self.answers.setdefault(number, {})
        elif isinstance(event, QuestionClosed):
            if self.asked is not None and self.asked.number == event.number:
                self.asked.closed = True
        elif isinstance(event, QuestionRevealed):
            if self.asked is not None and self.asked.number == event.number:
                self.asked.closed = True
                self.asked.revealed = True
        elif isinstance(event, LessonEnded):
            self.ended = True
        elif isinstance(event, StageChanged):
            self.stage = event.stage

    def record(self, record: AnswerRecord) -> None:
        """Keep a stored answer (also used when rebuilding from the store)."""
        answers = self.answers.setdefault(record.number, {})
        earlier = answers.get(record.user)
        answers[record.user] = record
        # Counts start at the question's first tally: a room rebuilt from
        # thousands of stored answers (a report does it) counts none of them.
        counts = self.counts.get(record.number)
        question = self.questions.get(record.number)
        if counts is None or question is None:
            return
        if earlier is not None:
            counts.add(question, earlier, -1)
        counts.add(question, record)

    def _locate(self, number: int) -> tuple[int, int]:
        for activity, index, _question in self.plan.questions():
            if self.plan.number_of(activity, index) == number:
                return activity, index
        raise KeyError(number)

    # Scores ----------------------------------------------------------------

    def totals(self) -> dict[str, tuple[AnswerRecord, int]]:
        """Each student's points over the lesson, with one of their records."""
        totals: dict[str, tuple[AnswerRecord, int]] = {}
        for answers in self.answers.values():
            for user, record in answers.items():
                _, points = totals.get(user, (record, 0))
                totals[user] = (record, points + record.points)
        return totals

    def leaderboard(self) -> list[ScoreRow]:
        """Students by points, equal points sharing a rank (1, 2, 2, 4)."""
        ordered = sorted(
            self.totals().items(),
            key=lambda item: (-item[1][1], item[1][0].name, item[0]),
        )
        rows: list[ScoreRow] = []
        for position, (user, (record, points)) in enumerate(ordered, start=1):
            rank = rows[-1].rank if rows and rows[-1].points == points else position
            rows.append(
                ScoreRow(
                    rank=rank,
                    user=user,
                    name=record.name,
                    school=record.school,
                    class_=record.class_,
                    points=points,
                )
            )
        return rows

    def school_board(self) -> list[SchoolScore]:
        """Schools by average points per student who answered."""
        schools: dict[str, list[int]] = {}
        for record, points in self.totals().values():
            schools.setdefault(record.school, []).append(points)
        ordered = sorted(
            (
                (round(sum(p) / len(p), 1), school, len(p), sum(p))
                for school, p in schools.items()
            ),
            key=lambda row: (-row[0], row[1]),
        )
        board: list[SchoolScore] = []
        for position, (average, school, students, points) in enumerate(ordered, 1):
            rank = (
                board[-1].rank if board and board[-1].average == average else position
            )
            board.append(
                SchoolScore(
                    rank=rank,
                    school=school,
                    students=students,
                    points=points,
                    average=average,
                )
            )
        return board

    @staticmethod
    def _counts(
        question: Question, answers: Iterable[AnswerRecord]
    ) -> tuple[list[int], list[SchoolTally]]:
        size = _size(question)
        total = [0] * size
        schools: dict[str, tuple[list[int], list[int]]] = {}
        for record in answers:
            counts, answered = schools.setdefault(record.school, ([0] * size, [0]))
            answered[0] += 1
            for slot in _slots(question, record):
                counts[slot] += 1
                total[slot] += 1
        return total, [
            SchoolTally(school=school, answered=answered[0], counts=counts)
            for school, (counts, answered) in sorted(schools.items())
        ]


def _size(question: Question) -> int:
    if question.kind in (QuestionKind.SINGLE, QuestionKind.MULTIPLE):
        return len(question.options)
    return 2


def _slots(question: Question, record: AnswerRecord) -> list[int]:
    value = record.value
    if question.kind is QuestionKind.SINGLE and type(value) is int:
        return [value]
    if question.kind is QuestionKind.MULTIPLE and isinstance(value, list):
        return sorted(set(value))
    if question.kind is QuestionKind.TRUE_FALSE:
        return [0 if value is True else 1]
    return [0 if record.right else 1]
