"""Exam attempts, to the millisecond: start, save, pause, extra time, deadlines."""

from __future__ import annotations

import pytest

from client_sdk.protocol import AttemptState, ErrorCode
from rooms.errors import Refused
from rooms.exam import Exam, ExamRules

OPEN = 1_800_000_000_000
MINUTE = 60_000


def exam(**settings: object) -> Exam:
    rules = ExamRules(
        opens_at=OPEN,
        duration_ms=45 * MINUTE,
        late_join_ms=10 * MINUTE,
        extra_ms={"slow": 15 * MINUTE},
        **settings,  # type: ignore[arg-type]
    )
    return Exam(rules, ["i1", "i2", "i3"])


def test_start_only_inside_the_window() -> None:
    """Before opens_at is refused, and so is after the late-join window."""
    room = exam()

    with pytest.raises(Refused) as early:
        room.start("a", OPEN - 1)
    with pytest.raises(Refused) as late:
        room.start("b", OPEN + 10 * MINUTE + 1)
    started = room.start("c", OPEN + 10 * MINUTE)

    assert early.value.code is ErrorCode.INVALID
    assert late.value.code is ErrorCode.CLOSED
    assert started.state is AttemptState.RUNNING


def test_a_late_student_does_not_get_longer() -> None:
    """Time runs from opens_at; extra time is per named student."""
    room = exam()
    late = room.start("a", OPEN + 9 * MINUTE)
    slow = room.start("slow", OPEN)

    assert late.ends_at(room.rules) == OPEN + 45 * MINUTE
    assert slow.ends_at(room.rules) == OPEN + 60 * MINUTE


def test_saves_are_idempotent_and_stop_at_the_deadline() -> None:
    """The same answer id saves once; nothing saves after the time is up."""
    room = exam()
    room.start("a", OPEN)

    assert room.save("a", "i1", "x1", 2, OPEN + 1000) is True
    assert room.save("a", "i1", "x1", 2, OPEN + 2000) is False
    assert room.save("a", "i1", "x2", 3, OPEN + 3000) is True
    with pytest.raises(Refused) as unknown:
        room.save("a", "nope", "x3", 1, OPEN + 4000)
    with pytest.raises(Refused) as over:
        room.save("a", "i2", "x4", 1, OPEN + 45 * MINUTE + 1)

    assert unknown.value.field == "item"
    assert over.value.code is ErrorCode.CLOSED
    assert room.attempts["a"].answers["i1"] == ("x2", 3)


def test_deadline_submits_running_attempts_by_itself() -> None:
    """At each student's own deadline the server submits for them."""
    room = exam()
    room.start("a", OPEN)
    room.start("slow", OPEN)

    assert room.due() == OPEN + 45 * MINUTE
    assert room.expire(OPEN + 45 * MINUTE - 1) == []
    first = room.expire(OPEN + 45 * MINUTE)
    assert [(a.user, a.ended_reason) for a in first] == [("a", "time up")]
    assert room.due() == OPEN + 60 * MINUTE


def test_pause_stops_the_clock_and_adds_to_the_deadline() -> None:
    """Five paused minutes move the student's deadline by five minutes."""
    room = exam()
    attempt = room.start("a", OPEN)
    room.pause("a", OPEN + 10 * MINUTE)

    with pytest.raises(Refused):
        room.save("a", "i1", "x", 1, OPEN + 11 * MINUTE)
    assert attempt.remaining(room.rules, OPEN + 14 * MINUTE) == 35 * MINUTE
    room.resume("a", OPEN + 15 * MINUTE)

    assert attempt.ends_at(room.rules) == OPEN + 50 * MINUTE
    room.add_time("a", 2 * MINUTE)
    assert attempt.ends_at(room.rules) == OPEN + 52 * MINUTE


def test_no_going_back_when_not_allowed() -> None:
    """Without allow_back an earlier item cannot change once a later is saved."""
    room = exam(allow_back=False)
    room.start("a", OPEN)
    room.save("a", "i1", "x1", 1, OPEN + 1)
    room.save("a", "i1", "x2", 2, OPEN + 2)
    room.save("a", "i2", "x3", 1, OPEN + 3)

    with pytest.raises(Refused) as back:
        room.save("a", "i1", "x4", 3, OPEN + 4)

    assert back.value.code is ErrorCode.CLOSED


def test_submit_and_proctor_end_are_final() -> None:
    """After submitting or being ended, nothing more is saved."""
    room = exam()
    room.start("a", OPEN)
    room.start("b", OPEN)
    room.submit("a", OPEN + 5)
    room.end("b", OPEN + 6, "second device seen")

    for user in ("a", "b"):
        with pytest.raises(Refused):
            room.save(user, "i1", "late", 1, OPEN + 7)
    assert room.attempts["b"].state is AttemptState.ENDED
    assert room.attempts["b"].ended_reason == "second device seen"
    assert room.submit("a", OPEN + 8).state is AttemptState.SUBMITTED
