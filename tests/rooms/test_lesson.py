"""The lesson state machine, to the millisecond, with a fake clock."""

from __future__ import annotations

import msgspec
import pytest

from client_sdk.protocol import (
    ActivityChanged,
    Answer,
    AnswerValue,
    AskQuestion,
    CloseQuestion,
    EndLesson,
    ErrorCode,
    LeaveReason,
    LessonCommand,
    Member,
    MemberLeft,
    QuestionClosed,
    QuestionOpened,
    QuestionRevealed,
    RemoveMember,
    Reveal,
    Role,
    StepActivity,
)
from rooms.errors import Refused
from rooms.lesson import GRACE_MS, Lesson
from rooms.plan import parse_plan
from rooms.room import Decision, JoinRoom, LessonAction, Room, RoomCommand, Tick

PLAN = """
title: Unit 5 - Food
host: {user: host, name: Co Lan}
lead_ms: 1500
classes:
  - {school: A, class: 8A, co_teacher: {user: co-a}}
  - {school: B, class: 8B, co_teacher: {user: co-b}}
  - {school: C, class: 8C}
activities:
  - {kind: material, title: Words, url: "https://example.org/words"}
  - kind: quiz
    title: Check
    questions:
      - {kind: single, prompt: "Apple?", options: [tao, cam, com], answer: 0,
         seconds: 10, points: 1000}
      - {kind: short_text, prompt: "French for coffee", answer: [café],
         seconds: 20}
  - kind: quiz
    title: Changeable
    allow_change: true
    questions:
      - {kind: true_false, prompt: "Rice is a fruit", answer: false, seconds: 10}
"""

T0 = 1_800_000_000_000
HOST = Member(user="host", name="Co Lan", role=Role.TEACHER, school="A", class_="8A")
CO_A = Member(user="co-a", name="Co A", role=Role.CO_TEACHER, school="A", class_="8A")


def student(user: str, school: str) -> Member:
    return Member(
        user=user, name=user.upper(), role=Role.STUDENT, school=school, class_="8"
    )


class Clock:
    """A clock that only moves when the test says so."""

    def __init__(self) -> None:
        self.now = T0

    def advance(self, ms: int) -> int:
        self.now += ms
        return self.now


def apply(room: Room, command: RoomCommand, now: int) -> Decision:
    decision = room.decide(command, now)
    room.apply(decision)
    return decision


def act(
    room: Room, actor: Member, command: LessonCommand, now: int, rtt: int = 0
) -> Decision:
    return apply(room, LessonAction(actor, command, now, rtt), now)


@pytest.fixture
def room() -> Room:
    plan = parse_plan(PLAN)
    room = Room("lesson-1", "e1", lesson=Lesson("lesson-1", plan))
    for number, member in enumerate(
        [HOST, CO_A, student("a1", "A"), student("a2", "A"), student("b1", "B")]
    ):
        apply(room, JoinRoom(member, f"s{number}"), T0)
    return room


def open_first_question(room: Room, clock: Clock) -> QuestionOpened:
    act(room, HOST, StepActivity(id="c1", room="lesson-1", index=1), clock.now)
    decision = act(
        room, HOST, AskQuestion(id="c2", room="lesson-1", question=0), clock.now
    )
    (event,) = decision.events
    assert isinstance(event, QuestionOpened)
    return event


def answer(
    room: Room, who: Member, value: AnswerValue, at: int, rtt: int = 0, id: str = "x"
) -> Decision:
    command = Answer(id=f"{who.user}-{id}", room="lesson-1", number=1, value=value)
    return act(room, who, command, at, rtt)


def test_question_opens_after_the_lead_time_without_its_key(room: Room) -> None:
    """A question opens lead_ms ahead, closes after its seconds, and hides the key."""
    clock = Clock()
    event = open_first_question(room, clock)

    assert event.opens_at == T0 + 1500
    assert event.closes_at == T0 + 1500 + 10_000
    assert event.grace_ms == GRACE_MS
    assert "answer" not in msgspec.json.decode(msgspec.json.encode(event.question))
    assert room.lesson is not None
    assert room.lesson.view().question is not None


def test_only_the_host_steps_and_asks(room: Room) -> None:
    """A co-teacher or a student cannot move the lesson on."""
    for actor in (CO_A, student("a1", "A")):
        with pytest.raises(Refused) as refused:
            act(room, actor, StepActivity(id="c", room="lesson-1", index=1), T0)
        assert refused.value.code is ErrorCode.FORBIDDEN


def test_speed_scoring_with_latency_credit(room: Room) -> None:
    """Points fall from full at opens_at to half at closes_at, less half the RTT."""
    clock = Clock()
    event = open_first_question(room, clock)
    opens = event.opens_at

    # a1 answers right at once; a2 right after 5 s over a 400 ms round trip;
    # b1 wrong.
    answer(room, student("a1", "A"), 0, opens)
    answer(room, student("a2", "A"), 0, opens + 5000, rtt=400)
    answer(room, student("b1", "B"), 2, opens + 1000)

    records = room.lesson.answers[1]  # type: ignore[union-attr]
    assert records["a1"].points == 1000
    # 5000 - 200 credit = 4800 ms of 10000: 1000 * (1 - 0.5 * 0.48) = 760
    assert records["a2"].points == 760
    assert records["b1"].points == 0
    assert records["b1"].right is False


def test_answer_before_open_after_grace_or_twice_is_refused(room: Room) -> None:
    """Early and late answers are refused; a second answer needs allow_change."""
    clock = Clock()
    event = open_first_question(room, clock)
    a1 = student("a1", "A")

    with pytest.raises(Refused) as early:
        answer(room, a1, 0, event.opens_at - 1)
    assert early.value.code is ErrorCode.INVALID

    with pytest.raises(Refused) as late:
        answer(room, a1, 0, event.closes_at + GRACE_MS + 1)
    assert late.value.code is ErrorCode.CLOSED

    answer(room, a1, 0, event.closes_at + GRACE_MS)
    with pytest.raises(Refused) as again:
        answer(room, a1, 1, event.closes_at, id="second")
    assert again.value.code is ErrorCode.CLOSED


def test_same_answer_id_is_a_duplicate(room: Room) -> None:
    """An answer sent again with its id changes nothing."""
    clock = Clock()
    event = open_first_question(room, clock)
    a1 = student("a1", "A")

    first = answer(room, a1, 0, event.opens_at + 100)
    again = room.decide(
        LessonAction(
            a1,
            Answer(id="a1-x", room="lesson-1", number=1, value=0),
            event.opens_at + 900,
        ),
        event.opens_at + 900,
    )

    assert first.duplicate is False
    assert again.duplicate is True
    assert again.record == first.record


def test_answer_of_the_wrong_shape_names_the_value(room: Room) -> None:
    """An option index out of range is refused with field value."""
    clock = Clock()
    event = open_first_question(room, clock)

    with pytest.raises(Refused) as refused:
        answer(room, student("a1", "A"), 7, event.opens_at + 10)

    assert refused.value.code is ErrorCode.INVALID
    assert refused.value.field == "value"


def test_deadline_closes_the_question_at_closes_at_plus_grace(room: Room) -> None:
    """The tick closes the question exactly when its grace has run out."""
    clock = Clock()
    event = open_first_question(room, clock)

    assert room.due() == event.closes_at + GRACE_MS
    assert apply(room, Tick(), event.closes_at + GRACE_MS - 1).events == []
    closed = apply(room, Tick(), event.closes_at + GRACE_MS).events

    assert [type(e) for e in closed] == [QuestionClosed]
    assert room.due() is None


def test_reveal_gives_counts_leaderboards_and_results(room: Room) -> None:
    """The reveal carries the key, counts by school, boards, and each result."""
    clock = Clock()
    opens = open_first_question(room, clock).opens_at
    answer(room, student("a1", "A"), 0, opens)
    answer(room, student("a2", "A"), 1, opens + 100)
    answer(room, student("b1", "B"), 0, opens + 10_000)

    decision = act(room, HOST, Reveal(id="r", room="lesson-1"), opens + 3000)

    revealed = [e for e in decision.events if isinstance(e, QuestionRevealed)]
    assert [type(e) for e in decision.events] == [QuestionClosed, QuestionRevealed]
    (event,) = revealed
    assert event.answer == 0
    assert event.counts == [2, 1, 0]
    assert [(s.school, s.answered, s.counts) for s in event.by_school] == [
        ("A", 2, [1, 1, 0]),
        ("B", 1, [1, 0, 0]),
    ]
    assert [(r.rank, r.user, r.points) for r in event.leaderboard] == [
        (1, "a1", 1000),
        (2, "b1", 500),
        (3, "a2", 0),
    ]
    # School A: (1000 + 0) / 2 = 500; B: 500 / 1 = 500: a shared first place.
    assert [(s.rank, s.school, s.average) for s in event.schools] == [
        (1, "A", 500.0),
        (1, "B", 500.0),
    ]
    results = dict(decision.results)
    assert results["a1"].right
    assert results["a1"].rank == 1
    assert not results["a2"].right
    assert results["a2"].points == 0


def test_short_text_ignores_case_and_spaces_but_not_accents(room: Room) -> None:
    """'  CAFÉ ' is right, 'cafe' is not, and the reveal lists accepted texts."""
    clock = Clock()
    open_first_question(room, clock)
    act(room, HOST, CloseQuestion(id="c", room="lesson-1"), clock.now)
    opened = act(
        room, HOST, AskQuestion(id="c3", room="lesson-1", question=1), clock.now
    ).events[0]
    assert isinstance(opened, QuestionOpened)
    at = opened.opens_at + 10

    for who, text in (("a1", "  CAFÉ "), ("a2", "cafe")):
        act(
            room,
            student(who, "A"),
            Answer(id=f"{who}-t", room="lesson-1", number=2, value=text),
            at,
        )
    reveal = act(room, HOST, Reveal(id="r2", room="lesson-1"), at + 100).events[-1]

    records = room.lesson.answers[2]  # type: ignore[union-attr]
    assert records["a1"].right is True
    assert records["a2"].right is False
    assert isinstance(reveal, QuestionRevealed)
    assert reveal.accepted == ["café"]
    assert reveal.answer is None


def test_allow_change_lets_a_student_change_an_answer(room: Room) -> None:
    """In a quiz that allows it, a later answer replaces the earlier one."""
    act(room, HOST, StepActivity(id="s", room="lesson-1", index=2), T0)
    opened = act(room, HOST, AskQuestion(id="q", room="lesson-1", question=0), T0)
    event = opened.events[0]
    assert isinstance(event, QuestionOpened)
    b1 = student("b1", "B")

    for value, id in ((True, "one"), (False, "two")):
        act(
            room,
            b1,
            Answer(id=id, room="lesson-1", number=3, value=value),
            event.opens_at + 50,
        )

    assert room.lesson.answers[3]["b1"].value is False  # type: ignore[union-attr]
    assert room.lesson.answers[3]["b1"].right is True  # type: ignore[union-attr]


def test_tally_follows_changed_answers(room: Room) -> None:
    """The teachers' tally counts a changed answer once, under its new value.

    A tally taken before the changes and one taken after all of them agree
    with the counts of the reveal.
    """
    act(room, HOST, StepActivity(id="s", room="lesson-1", index=2), T0)
    opened = act(room, HOST, AskQuestion(id="q", room="lesson-1", question=0), T0)
    event = opened.events[0]
    assert isinstance(event, QuestionOpened)
    at = event.opens_at + 50
    a1, a2, b1 = student("a1", "A"), student("a2", "A"), student("b1", "B")
    for who, value, id in (
        (a1, True, "1"),
        (a2, True, "2"),
        (b1, True, "3"),
        (a1, False, "4"),
        (b1, False, "5"),
        (b1, True, "6"),
    ):
        act(room, who, Answer(id=id, room="lesson-1", number=3, value=value), at)
        if id == "1":
            first = room.tally()
            assert first is not None
            assert first.counts == [1, 0]

    tally = room.tally()
    assert tally is not None
    assert (tally.answered, tally.present, tally.counts) == (3, 3, [2, 1])
    assert [(s.school, s.answered, s.counts) for s in tally.by_school] == [
        ("A", 2, [1, 1]),
        ("B", 1, [1, 0]),
    ]
    revealed = act(room, HOST, Reveal(id="r", room="lesson-1"), at)
    shown = revealed.events[-1]
    assert isinstance(shown, QuestionRevealed)
    assert (shown.counts, shown.by_school) == (tally.counts, tally.by_school)


def test_co_teacher_moderates_only_their_school(room: Room) -> None:
    """A co-teacher removes their own school's student, not another school's."""
    with pytest.raises(Refused) as refused:
        act(room, CO_A, RemoveMember(id="m1", room="lesson-1", user="b1"), T0)
    assert refused.value.code is ErrorCode.FORBIDDEN

    decision = act(room, CO_A, RemoveMember(id="m2", room="lesson-1", user="a1"), T0)

    (event,) = decision.events
    assert isinstance(event, MemberLeft)
    assert event.reason is LeaveReason.REMOVED
    assert decision.remove == "a1"
    with pytest.raises(Refused):
        apply(room, JoinRoom(student("a1", "A"), "again"), T0)


def test_lesson_replays_to_the_same_state(room: Room) -> None:
    """Replaying the lesson's events rebuilds the current activity and question."""
    clock = Clock()
    events = [
        *act(room, HOST, StepActivity(id="a", room="lesson-1", index=1), T0).events
    ]
    events += act(
        room, HOST, AskQuestion(id="b", room="lesson-1", question=0), T0
    ).events
    events += act(
        room, HOST, EndLesson(id="e", room="lesson-1"), clock.advance(5)
    ).events

    rebuilt = Room("lesson-1", "e1", lesson=Lesson("lesson-1", parse_plan(PLAN)))
    for event in events:
        rebuilt.replay(event)

    assert isinstance(events[0], ActivityChanged)
    assert rebuilt.lesson is not None
    assert room.lesson is not None
    assert rebuilt.lesson.view() == room.lesson.view()
    assert rebuilt.lesson.ended is True
