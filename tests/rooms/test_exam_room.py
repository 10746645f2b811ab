"""The exam room's desk, its file format and proctoring rules, without a server."""

from __future__ import annotations

import json

import pytest

from client_sdk.protocol import (
    AttemptState,
    ClientSignal,
    ErrorCode,
    ExamCommand,
    ExamFetch,
    ExamState,
    IncidentKind,
    Member,
    ProctorActionKind,
    ProctorCommand,
    ReportSignal,
    Role,
    SaveExamAnswer,
    Severity,
    StartSpeaking,
    StopSpeaking,
    SubmitExam,
    WatchExam,
)
from rooms import proctoring
from rooms.audit import CHECKPOINT_EVERY, LogEntry
from rooms.errors import Refused
from rooms.exam_room import (
    SIGNAL_QUIET_MS,
    ExamAction,
    ExamDesk,
    SpokenAnswer,
)
from rooms.exam_setup import parse_exam
from rooms.plan import PlanError
from tests.exams.conftest import exam_file

OPENS = 1_800_000_000_000


def desk(**overrides: object) -> ExamDesk:
    """A desk for three students, opening at :data:`OPENS`, for one minute."""
    data = exam_file("exam-unit", 3, duration_ms=60_000, late_join_ms=60_000)
    data.update(opens_at=OPENS, **overrides)
    return ExamDesk(parse_exam(json.dumps(data), "exam.json"), {})


def student(user: str) -> Member:
    """A student member of the roster."""
    return Member(user=user, name=user, role=Role.STUDENT, school="A", class_="9A")


PROCTOR = Member(user="p-1", name="P", role=Role.PROCTOR, school="", class_="")


def act(d: ExamDesk, who: Member, command: ExamCommand, now: int) -> list[LogEntry]:
    """Apply one command; the log entries it wrote."""
    return d.command(ExamAction(who, command, now), now).entries


def run(d: ExamDesk) -> list[LogEntry]:
    """A morning of one room: starts, saves, signals, every action, the deadline."""
    log: list[LogEntry] = []
    t = OPENS + 100
    log += d.tick(t).entries
    for user in ("s-0", "s-1", "s-2"):
        log += act(d, student(user), ExamFetch(id="f", room="r"), t)
    log += act(
        d,
        student("s-0"),
        SaveExamAnswer(id="a1", room="r", item="q3", value="cold"),
        t + 5000,
    )
    log += act(
        d,
        student("s-1"),
        ReportSignal(id="x", room="r", signal=ClientSignal.PASTE),
        t + 6000,
    )
    for action, user, ms in (
        (ProctorActionKind.PAUSE, "s-0", 0),
        (ProctorActionKind.RESUME, "s-0", 0),
        (ProctorActionKind.ADD_TIME, "s-1", 30_000),
        (ProctorActionKind.FLAG, "s-1", 0),
        (ProctorActionKind.END, "s-2", 0),
    ):
        command = ProctorCommand(
            id=f"p-{action.value}",
            room="r",
            action=action,
            user=user,
            ms=ms,
            message="m",
        )
        t += 1000
        log += act(d, PROCTOR, command, t + 6000)
    log += act(
        d,
        student("s-1"),
        SaveExamAnswer(id="a2", room="r", item="q4", value=["am"]),
        t + 7000,
    )
    log += d.tick(OPENS + 70_000).entries
    return log


def test_replaying_the_log_rebuilds_the_same_room() -> None:
    """A desk rebuilt from the log has the same attempts, seats and chain head."""
    first = desk()
    log = run(first)
    again = ExamDesk(first.setup, {})
    for entry in log:
        again.replay(entry)
    now = OPENS + 80_000
    for user in ("s-0", "s-1", "s-2"):
        assert again.state_for(user, now, sections=True) == first.state_for(
            user, now, sections=True
        )
        assert again.seat(user, now) == first.seat(user, now)
    assert again.chain == first.chain
    assert again.incidents == first.incidents
    states = {u: first.exam.attempts[u].state for u in ("s-0", "s-1", "s-2")}
    assert states == {
        "s-0": AttemptState.SUBMITTED,
        "s-1": AttemptState.RUNNING,
        "s-2": AttemptState.ENDED,
    }
    assert first.exam.attempts["s-1"].ends_at(first.exam.rules) == OPENS + 90_000


def test_a_refused_command_writes_nothing() -> None:
    """An answer after the deadline or from a stranger leaves the log as it was."""
    d = desk()
    act(d, student("s-0"), ExamFetch(id="f", room="r"), OPENS)
    head = d.chain.head
    with pytest.raises(Refused) as late:
        act(
            d,
            student("s-0"),
            SaveExamAnswer(id="a", room="r", item="q1", value=0),
            OPENS + 61_000,
        )
    assert late.value.code is ErrorCode.CLOSED
    with pytest.raises(Refused) as stranger:
        act(d, student("s-9"), ExamFetch(id="f", room="r"), OPENS)
    assert stranger.value.code is ErrorCode.FORBIDDEN
    other = Member(user="p-9", name="P", role=Role.PROCTOR, school="", class_="")
    with pytest.raises(Refused):
        act(d, other, WatchExam(id="w", room="r"), OPENS)
    assert d.chain.head == head
    assert not d.may_enter(other)
    assert d.may_enter(PROCTOR)


def test_sealed_before_opening_and_no_key_in_a_variant() -> None:
    """Before opens_at a fetch starts nothing and shows no items; no key ever."""
    d = desk()
    early = d.command(
        ExamAction(student("s-0"), ExamFetch(id="f", room="r"), OPENS - 1), OPENS - 1
    )
    assert early.entries == []
    assert isinstance(early.reply, ExamState)
    assert early.reply.sections is None
    shown = d.variant_of("s-0").sections
    assert not any(hasattr(item, "answer") for s in shown for item in s.items)


def test_saves_are_idempotent_and_submit_is_final() -> None:
    """The same answer id stores once; after submitting nothing is saved."""
    d = desk()
    act(d, student("s-0"), ExamFetch(id="f", room="r"), OPENS)
    save = SaveExamAnswer(id="a", room="r", item="q1", value=1)
    assert len(act(d, student("s-0"), save, OPENS + 9000)) == 1
    assert d.command(
        ExamAction(student("s-0"), save, OPENS + 9500), OPENS + 9500
    ).duplicate
    act(d, student("s-0"), SubmitExam(id="s", room="r"), OPENS + 10_000)
    assert act(d, student("s-0"), SubmitExam(id="s2", room="r"), OPENS + 10_001) == []
    with pytest.raises(Refused) as refused:
        act(
            d,
            student("s-0"),
            SaveExamAnswer(id="b", room="r", item="q2", value=[0]),
            OPENS + 11_000,
        )
    assert refused.value.message == "you handed in your exam"


def test_checkpoints_every_fifty_entries_and_at_each_end() -> None:
    """The head is signed after each ended attempt and every fifty entries."""
    d = desk()
    act(d, student("s-0"), ExamFetch(id="f", room="r"), OPENS)
    assert not d.checkpoint_due()
    for n in range(CHECKPOINT_EVERY - 2):
        act(
            d,
            student("s-1"),
            ReportSignal(id=f"x{n}", room="r", signal=ClientSignal.COPY),
            OPENS + n * SIGNAL_QUIET_MS,
        )
    assert not d.checkpoint_due()
    act(
        d,
        student("s-1"),
        ReportSignal(id="y", room="r", signal=ClientSignal.COPY),
        OPENS + CHECKPOINT_EVERY * SIGNAL_QUIET_MS,
    )
    assert d.checkpoint_due()
    act(d, student("s-0"), SubmitExam(id="s", room="r"), OPENS + 1)
    assert d.checkpoint_due()


def test_a_page_repeating_a_signal_is_not_logged_each_time() -> None:
    """The same signal within a second of the last is acknowledged, not logged."""
    d = desk()
    logged = [
        len(
            act(
                d,
                student("s-0"),
                ReportSignal(id=f"x{at}", room="r", signal=ClientSignal.PASTE),
                OPENS + at,
            )
        )
        for at in (0, 10, SIGNAL_QUIET_MS - 1, SIGNAL_QUIET_MS)
    ]
    assert logged == [1, 0, 0, 1]
    copy = ReportSignal(id="y", room="r", signal=ClientSignal.COPY)
    assert len(act(d, student("s-0"), copy, OPENS + 10)) == 1
    # The same command again (a retry) is not a new signal, however late.
    assert act(d, student("s-0"), copy, OPENS + 5000) == []


def test_a_retried_proctor_action_applies_once() -> None:
    """The same action id sent again adds no time and no entry, even after replay."""
    d = desk()
    log = act(d, student("s-0"), ExamFetch(id="f", room="r"), OPENS)
    more = ProctorCommand(
        id="add-1", room="r", action=ProctorActionKind.ADD_TIME, user="s-0", ms=60_000
    )
    log += act(d, PROCTOR, more, OPENS + 1000)
    assert act(d, PROCTOR, more, OPENS + 2000) == []
    assert d.exam.attempts["s-0"].added_ms == 60_000

    again = ExamDesk(d.setup, {})
    for entry in log:
        again.replay(entry)
    assert act(again, PROCTOR, more, OPENS + 3000) == []
    assert again.exam.attempts["s-0"].added_ms == 60_000


def test_proctoring_severities_and_haste() -> None:
    """Repeats raise a signal's severity; reading faster than a person is noticed."""
    first = proctoring.from_client(ClientSignal.WINDOW_BLUR, "", 0)
    third = proctoring.from_client(ClientSignal.WINDOW_BLUR, "", 2)
    assert (first.severity, third.severity) == (Severity.LOW, Severity.MEDIUM)
    assert proctoring.from_client(ClientSignal.SECOND_SCREEN, "", 0).severity is (
        Severity.HIGH
    )
    assert proctoring.too_fast(1000, 3000, 2, 0) is not None
    assert proctoring.too_fast(4000, 3000, 2, 0) is None
    assert proctoring.too_fast(1000, 3000, 5, 2) is None
    joined = proctoring.on_join(0, True, "10.0.0.2", "10.0.0.1")
    assert [s.kind for s in joined] == [
        IncidentKind.RECONNECTED,
        IncidentKind.ADDRESS_CHANGED,
    ]
    assert proctoring.on_leave(1) == []


def test_a_second_connection_is_judged_after_a_grace() -> None:
    """Two connections at once count only if both are still open after a while."""
    sessions: dict[str, set[str]] = {}
    d = desk()
    d.sessions = sessions
    grace = proctoring.SECOND_CONNECTION_GRACE_MS
    d.tick(OPENS)
    sessions["s-0"] = {"old"}
    assert d.joined(student("s-0"), 1, False, "", OPENS).entries == []
    sessions["s-0"] = {"old", "new"}
    assert d.due() == OPENS + grace
    # The old connection of a reconnecting page closes: a reconnect.
    left = d.left("s-0", 1, True, OPENS + 100).entries
    assert [e.data["kind"] for e in left] == ["reconnected"]
    sessions["s-0"] = {"new"}
    assert d.tick(OPENS + grace).entries == []

    # A second device that stays: reported once the grace is over.
    d.joined(student("s-0"), 1, False, "", OPENS + 5000)
    sessions["s-0"] = {"new", "phone"}
    assert d.tick(OPENS + 5000 + grace - 1).entries == []
    found = d.tick(OPENS + 5000 + grace).entries
    assert [e.data["kind"] for e in found] == ["second_connection"]


def test_exam_file_problems_are_named() -> None:
    """Unknown students in extra time and repeated students are named by path."""
    data = exam_file("exam-x", 2)
    data["students"].append(dict(data["students"][0]))
    data["extra_minutes"] = {"s-42": 10}
    with pytest.raises(PlanError) as bad:
        parse_exam(json.dumps(data), "exam.json")
    assert [p for p, _ in bad.value.problems] == ["students", "extra_minutes"]
    data = exam_file("exam-y", 1)
    data["opens_at"] = "2026-12-04T08:00:00+07:00"
    assert parse_exam(json.dumps(data), "exam.json").opens_at == 1796346000000


def spoken(user: str, item: str, file: str) -> SpokenAnswer:
    """A recording as the media node would file it."""
    return SpokenAnswer(
        user=user,
        item=item,
        file=file,
        sha256="ab" * 32,
        size=1000,
        seconds=2.0,
        voiced_seconds=1.5,
    )


def test_a_spoken_answer_is_logged_and_replayed() -> None:
    """Speaking needs an open attempt and a speaking item; its file is the answer."""
    d = desk()
    s0 = student("s-0")
    t = OPENS + 100
    with pytest.raises(Refused):
        act(d, s0, StartSpeaking(id="early", room="r", item="q6"), t)
    log = d.tick(t).entries + act(d, s0, ExamFetch(id="f", room="r"), t)
    with pytest.raises(Refused) as not_speaking:
        act(d, s0, StartSpeaking(id="s", room="r", item="q1"), t)
    assert not_speaking.value.field == "item"
    with pytest.raises(Refused) as typed:
        act(d, s0, SaveExamAnswer(id="t", room="r", item="q6", value="x"), t)
    assert typed.value.field == "item"

    log += act(d, s0, StartSpeaking(id="s", room="r", item="q6"), t + 1000)
    # Only the node that recorded it ends a spoken answer, with its file.
    with pytest.raises(Refused):
        act(d, s0, StopSpeaking(id="e", room="r", item="q6"), t + 3000)
    stop = ExamAction(
        s0,
        StopSpeaking(id="e", room="r", item="q6"),
        t + 3000,
        recording=spoken("s-0", "q6", "s-0-q6.ogg"),
    )
    # The deadline passed while speaking: the recording still counts.
    log += d.tick(OPENS + 60_000).entries
    log += d.command(stop, OPENS + 60_500).entries
    assert [e.kind for e in log] == [
        "opened",
        "started",
        "speaking",
        "submitted",
        "recorded",
    ]
    assert d.state_for("s-0", OPENS + 61_000).answers == {"q6": "s-0-q6.ogg"}
    assert [r.file for r in d.recordings] == ["s-0-q6.ogg"]
    with pytest.raises(Refused) as closed:
        act(d, s0, StartSpeaking(id="s2", room="r", item="q6"), OPENS + 61_000)
    assert closed.value.code is ErrorCode.CLOSED

    again = ExamDesk(d.setup, {})
    for entry in log:
        again.replay(entry)
    assert again.recordings == d.recordings
    assert again.state_for("s-0", OPENS + 61_000) == d.state_for("s-0", OPENS + 61_000)


def test_a_page_cannot_claim_the_servers_incidents() -> None:
    """A signal naming a kind only the server raises is refused, naming the field."""
    d = desk()
    act(d, student("s-0"), ExamFetch(id="f", room="r"), OPENS)
    claim = ReportSignal(id="x", room="r", signal=IncidentKind.RECONNECTED)
    with pytest.raises(Refused) as refused:
        act(d, student("s-0"), claim, OPENS + 10)
    assert (refused.value.code, refused.value.field) == (ErrorCode.INVALID, "signal")
    assert d.incidents == []
