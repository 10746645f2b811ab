"""Protocol v1, linked lessons and quizzes.

A lesson room has a host teacher, linked classes from several schools, and
a plan of activities the host steps through. A quiz question is opened with
an absolute ``opens_at`` a little in the future so that every school shows
it at the same moment, and a ``closes_at``. Nothing sent before the reveal
holds a question's answer key.

Answers are not room events: they would put every student's answer in front
of every other student. The server stores them, acknowledges them, and
sends the teachers a running tally as a :class:`AnswerTally` notice. Notices
have no offset and are not replayed; a reconnecting teacher gets the tally
again with the next answer or the reveal.
"""

from __future__ import annotations

import enum
from typing import Annotated, TypeAlias

import msgspec

from .core import Command, Event, RoomId
from .turns import QueueEntry, QueuePolicy, Turn

#: A question number within a lesson, counted from 1 in plan order.
QuestionNumber = Annotated[int, msgspec.Meta(ge=1, le=10_000)]
#: What a student answers: an option index (single), ``true``/``false``,
#: a text (short text), or a list of option indices (multiple, ordering).
AnswerValue: TypeAlias = (
    bool | int | Annotated[str, msgspec.Meta(max_length=500)] | list[int]
)


class QuestionKind(enum.StrEnum):
    """The kinds of quiz question."""

    SINGLE = "single"
    MULTIPLE = "multiple"
    TRUE_FALSE = "true_false"
    SHORT_TEXT = "short_text"
    ORDERING = "ordering"


class ActivityKind(enum.StrEnum):
    """The kinds of step in a lesson plan."""

    MATERIAL = "material"
    QUIZ = "quiz"
    SPEAKING = "speaking"


class LinkedClass(msgspec.Struct, frozen=True, omit_defaults=True):
    """A class of one school taking part in a lesson."""

    school: str
    class_: str = msgspec.field(name="class")
    co_teacher: str | None = None


class ActivityView(msgspec.Struct, frozen=True, omit_defaults=True):
    """The current step of the plan, as every client sees it."""

    index: int
    kind: ActivityKind
    title: str
    url: str | None = None
    prompt: str | None = None
    questions: int = 0


class QuestionView(msgspec.Struct, frozen=True):
    """A question as students see it: no answer key."""

    number: int
    kind: QuestionKind
    prompt: str
    options: list[str]
    points: int
    seconds: int


class OpenQuestion(msgspec.Struct, frozen=True):
    """The question currently asked, in a snapshot."""

    question: QuestionView
    opens_at: int
    closes_at: int
    grace_ms: int
    allow_change: bool
    closed: bool


class LessonView(msgspec.Struct, frozen=True, omit_defaults=True):
    """A lesson as a joining client first sees it."""

    id: str
    title: str
    host: str
    classes: list[LinkedClass]
    activities: int
    activity: ActivityView | None = None
    question: OpenQuestion | None = None
    ended: bool = False
    #: The hand queue in order and its policy, as the last ``hand_queue``
    #: event had them, so that a page opened mid-lesson shows the same queue.
    policy: QueuePolicy | None = None
    queue: list[QueueEntry] | None = None
    #: The turn in progress, as its ``floor_granted`` event had it.
    floor: Turn | None = None
    #: The class whose camera every member sees, as ``stage_changed`` had it.
    stage: LinkedClass | None = None


class SchoolTally(msgspec.Struct, frozen=True):
    """Answers of one school to one question."""

    school: str
    answered: int
    counts: list[int]


class ScoreRow(msgspec.Struct, frozen=True):
    """One student's place on the leaderboard."""

    rank: int
    user: str
    name: str
    school: str
    class_: str = msgspec.field(name="class")
    points: int = 0


class SchoolScore(msgspec.Struct, frozen=True):
    """One school's place on the school leaderboard.

    Schools are ranked by ``average`` (points per student who answered at
    least once), so a big school does not win by size alone.
    """

    rank: int
    school: str
    students: int
    points: int
    average: float


# Commands -----------------------------------------------------------------


class StepActivity(Command, tag="step"):
    """Host: make activity ``index`` of the plan the current one."""

    room: RoomId
    index: Annotated[int, msgspec.Meta(ge=0)]


class AskQuestion(Command, tag="open_question"):
    """Host: ask question ``question`` (from 0) of the current quiz activity."""

    room: RoomId
    question: Annotated[int, msgspec.Meta(ge=0)]


class Answer(Command, tag="answer"):
    """Student or classroom: answer question ``number``.

    The command ``id`` identifies the answer: sent again it is stored once.
    """

    room: RoomId
    number: QuestionNumber
    value: AnswerValue


class CloseQuestion(Command, tag="close_question"):
    """Host: stop taking answers to the open question now."""

    room: RoomId


class Reveal(Command, tag="reveal"):
    """Host: show the right answer, the counts and the leaderboards."""

    room: RoomId


class EndLesson(Command, tag="end_lesson"):
    """Host: end the lesson; its report is then final."""

    room: RoomId


class SetStage(Command, tag="stage"):
    """Host: put one linked class on stage, or (no school) take it off.

    The class on stage is seen by everyone: its classroom camera, and the
    cameras of its students, go to every member's video slots. ``class``
    may be left out when the school links a single class.
    """

    room: RoomId
    school: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] | None = None
    class_: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] | None = (
        msgspec.field(default=None, name="class")
    )


class RemoveMember(Command, tag="remove"):
    """Host, or the co-teacher of the member's school: send ``user`` away."""

    room: RoomId
    user: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class ProbeReply(Command, tag="probe_reply"):
    """Echo of a :class:`Probe`; not answered. ``id`` is any string."""

    nonce: Annotated[str, msgspec.Meta(max_length=32)]


# Events -------------------------------------------------------------------


class ActivityChanged(Event, tag="activity"):
    """The host moved to another activity of the plan."""

    activity: ActivityView


class QuestionOpened(Event, tag="question_opened"):
    """A question to show at ``opens_at`` (server time) until ``closes_at``.

    Answers received up to ``closes_at + grace_ms`` are taken: the grace
    covers the time an answer sent at the last moment spends in transit.
    """

    question: QuestionView
    opens_at: int
    closes_at: int
    grace_ms: int
    allow_change: bool


class QuestionClosed(Event, tag="question_closed"):
    """No more answers are taken for question ``number``."""

    number: int
    answered: int


class QuestionRevealed(Event, tag="question_revealed"):
    """The right answer of question ``number`` and how everyone did.

    ``answer`` is the key: an option index, ``true``/``false``, the list of
    right option indices (multiple) or the right order (ordering); for
    short text it is absent and ``accepted`` lists the accepted texts.
    ``counts`` has one entry per option, or ``[true, false]`` counts, or
    ``[right, wrong]`` for short text and ordering.
    """

    number: int
    counts: list[int]
    by_school: list[SchoolTally]
    leaderboard: list[ScoreRow]
    schools: list[SchoolScore]
    answer: bool | int | list[int] | None = None
    accepted: list[str] | None = None


class LessonEnded(Event, tag="lesson_ended"):
    """The host ended the lesson."""


class StageChanged(Event, tag="stage_changed"):
    """The class on stage now; absent: no class is on stage."""

    stage: LinkedClass | None = None


# Notices: not room events, no offset, sent to some members only ------------


class AnswerTally(msgspec.Struct, tag_field="type", tag="answer_tally"):
    """To the teachers: answers so far to question ``number``."""

    room: str
    number: int
    answered: int
    present: int
    counts: list[int]
    by_school: list[SchoolTally]


class AnswerResult(msgspec.Struct, tag_field="type", tag="result"):
    """To one student after a reveal: their answer's result and standing."""

    room: str
    number: int
    answered: bool
    right: bool
    points: int
    total: int
    rank: int


class LessonSnapshot(msgspec.Struct, tag_field="type", tag="lesson"):
    """Follows ``joined`` in a lesson room when ``recovered`` is false."""

    room: str
    lesson: LessonView


class Probe(msgspec.Struct, tag_field="type", tag="probe"):
    """Answer with ``probe_reply`` at once: measures the round trip."""

    nonce: str
    server_time: int


#: Lesson commands that act on a room (every one but ``probe_reply``).
LessonCommand: TypeAlias = (
    StepActivity
    | AskQuestion
    | Answer
    | CloseQuestion
    | Reveal
    | EndLesson
    | RemoveMember
    | SetStage
)
LessonEvent: TypeAlias = (
    ActivityChanged
    | QuestionOpened
    | QuestionClosed
    | QuestionRevealed
    | LessonEnded
    | StageChanged
)
Notice: TypeAlias = AnswerTally | AnswerResult | LessonSnapshot | Probe
