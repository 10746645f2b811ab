"""Proctors through a real server: their scope, every action, incidents, the log."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import msgspec
import pytest

from client_sdk import CommandError, ErrorCode, Role
from client_sdk.protocol import (
    AttemptState,
    ClientSignal,
    ExamState,
    ExamWarning,
    IncidentKind,
    IncidentRaised,
    ProctorActionKind,
    SeatChanged,
    Severity,
)
from rooms.exam_room import SIGNAL_QUIET_MS
from server import auth
from tests.lessons.conftest import SECRET, Crowd, ServerProcess

from .conftest import WRITTEN, ExamApi, exam_file, seated, verify_log


async def test_a_proctor_sees_only_their_rooms(
    server: ServerProcess, api: ExamApi, crowd: Crowd
) -> None:
    """A proctor of room A gets nothing of room B, even with a token for it."""
    a = await api.tokens(exam_file("exam-a", 2, proctors=["p-a"]))
    b = await api.tokens(exam_file("exam-b", 2, proctors=["p-b"]))
    both = auth.mint(SECRET, user="p-a", role=Role.PROCTOR, rooms=["exam-a", "exam-b"])
    proctor = await crowd.enter("p-a", server, both, "exam-a")
    view = await proctor.client.watch_exam("exam-a")
    assert [s.user for s in view.seats] == ["s-0", "s-1"]
    with pytest.raises(CommandError) as refused:
        await proctor.client.join("exam-b")
    assert refused.value.code is ErrorCode.FORBIDDEN
    with pytest.raises(CommandError) as not_joined:
        await proctor.client.watch_exam("exam-b")
    assert not_joined.value.code is ErrorCode.NOT_JOINED

    in_b = await crowd.enter("s-0 of B", server, b["s-0"], "exam-b")
    await in_b.client.fetch_exam("exam-b")
    await in_b.client.report_signal("exam-b", ClientSignal.PASTE)
    in_a = await crowd.enter("s-1 of A", server, a["s-1"], "exam-a")
    await in_a.client.report_signal("exam-a", ClientSignal.COPY)
    await proctor.wait(IncidentRaised, lambda n: n.incident.user == "s-1")
    assert all(n.room == "exam-a" for n in proctor.all(IncidentRaised))
    assert all(n.room == "exam-a" for n in proctor.all(SeatChanged))
    about_b: list[dict[str, object]] = [
        msgspec.msgpack.decode(frame)
        for frame in proctor.frames
        if isinstance(frame, bytes) and b"exam-b" in frame
    ]
    # The hello lists the token's rooms; the refusals name the room refused.
    assert {m["type"] for m in about_b} == {"hello", "error"}


async def test_every_proctor_action_reaches_the_student_and_the_log(
    server: ServerProcess, api: ExamApi, crowd: Crowd, tmp_path: Path
) -> None:
    """Warn, pause, resume, add time, flag, note, end: each acts and is recorded."""
    room = "exam-actions"
    tokens = await api.tokens(exam_file(room, 3))
    proctor = await crowd.enter("p-1", server, tokens["p-1"], room)
    students = [
        await crowd.enter(f"s-{i}", server, tokens[f"s-{i}"], room) for i in range(3)
    ]
    for student in students:
        await student.client.fetch_exam(room)
    one = students[0]
    act = proctor.client.proctor

    await act(room, ProctorActionKind.WARN, "s-0", message="eyes on your screen")
    warning = await one.wait(ExamWarning)
    assert warning.message == "eyes on your screen"

    before = await one.client.fetch_exam(room)
    await act(room, ProctorActionKind.PAUSE, "s-0")
    paused = await one.wait(ExamState, lambda s: s.state is AttemptState.PAUSED)
    with pytest.raises(CommandError) as refused:
        await one.client.save_answer(room, "q3", "cold")
    assert refused.value.code is ErrorCode.CLOSED
    await act(room, ProctorActionKind.RESUME, "s-0")
    resumed = await one.wait(
        ExamState, lambda s: s.state is AttemptState.RUNNING and s.id is None
    )
    assert resumed.ends_at > before.ends_at
    assert resumed.ends_at - before.ends_at == pytest.approx(
        resumed.server_time - paused.server_time, abs=50
    )
    await one.client.save_answer(room, "q3", "cold")

    await act(room, ProctorActionKind.ADD_TIME, "s-0", ms=90_000)
    longer = await one.wait(ExamState, lambda s: s.ends_at >= resumed.ends_at + 90_000)
    assert longer.state is AttemptState.RUNNING

    await act(room, ProctorActionKind.PAUSE)
    for student in students:
        await student.wait(ExamState, lambda s: s.state is AttemptState.PAUSED)
    await act(room, ProctorActionKind.RESUME)
    view = await proctor.client.watch_exam(room)
    assert {s.state for s in view.seats} == {AttemptState.RUNNING}

    await act(room, ProctorActionKind.FLAG, "s-1", message="looked away often")
    await act(room, ProctorActionKind.NOTE, message="fire drill at 10:05")
    await act(room, ProctorActionKind.END, "s-2", message="phone on the desk")
    ended = await students[2].wait(ExamState, lambda s: s.state is AttemptState.ENDED)
    assert ended.reason == "phone on the desk"
    with pytest.raises(CommandError) as after_end:
        await students[2].client.save_answer(room, "q3", "cold")
    assert after_end.value.code is ErrorCode.CLOSED
    with pytest.raises(CommandError) as bad:
        await act(room, ProctorActionKind.ADD_TIME, "s-1")
    assert bad.value.code is ErrorCode.INVALID
    with pytest.raises(CommandError) as student_acts:
        await one.client.proctor(room, ProctorActionKind.END, "s-1", message="x")
    assert student_acts.value.code is ErrorCode.FORBIDDEN

    seats = {s.user: s for s in (await proctor.client.watch_exam(room)).seats}
    assert seats["s-1"].flagged
    assert seats["s-0"].warnings == 1
    assert seats["s-2"].state is AttemptState.ENDED

    exported = await api.log(room)
    assert exported.status_code == 200
    lines = [json.loads(line) for line in exported.text.splitlines()]
    actions = [
        (e["data"]["action"], e["data"]["user"])
        for e in lines
        if e.get("type") == "entry" and e["kind"] == "action"
    ]
    assert actions == [
        ("warn", "s-0"),
        ("pause", "s-0"),
        ("resume", "s-0"),
        ("add_time", "s-0"),
        ("pause", ""),
        ("resume", ""),
        ("flag", "s-1"),
        ("note", ""),
        ("end", "s-2"),
    ]
    path = tmp_path / "exam.log"
    path.write_bytes(exported.content)
    checked = verify_log(path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "intact" in checked.stdout
    assert any(e.get("type") == "checkpoint" for e in lines)

    # An appeal's copy with one changed answer no longer verifies.
    tampered = exported.text.replace('\\"cold\\"', '\\"hot\\"', 1)
    assert tampered != exported.text
    path.write_text(tampered)
    failed = verify_log(path)
    assert failed.returncode == 1
    assert "changed" in failed.stdout


async def test_signals_become_incidents_with_severity(
    server: ServerProcess, api: ExamApi, crowd: Crowd
) -> None:
    """Page signals, disconnects, a second connection and haste become incidents."""
    room = "exam-incidents"
    tokens, (proctor, student) = await seated(
        server, api, crowd, exam_file(room, 2), "p-1", "s-0"
    )
    state = await student.client.fetch_exam(room)

    def raised(kind: IncidentKind) -> IncidentRaised:
        found = [n for n in proctor.all(IncidentRaised) if n.incident.kind is kind]
        assert found, kind
        return found[-1]

    await student.client.report_signal(room, ClientSignal.PASTE, "ctrl+v")
    await proctor.wait(IncidentRaised, lambda n: n.incident.kind is IncidentKind.PASTE)
    assert raised(IncidentKind.PASTE).incident.severity is Severity.HIGH
    for _ in range(3):
        # Past the second within which a repeated signal is not logged.
        await student.client.report_signal(room, ClientSignal.WINDOW_BLUR)
        await asyncio.sleep(SIGNAL_QUIET_MS / 1000 + 0.05)
    await proctor.wait(
        IncidentRaised,
        lambda n: (
            n.incident.kind is IncidentKind.WINDOW_BLUR
            and n.incident.severity is not Severity.LOW
        ),
    )
    blurs = [
        n.incident.severity
        for n in proctor.all(IncidentRaised)
        if n.incident.kind is IncidentKind.WINDOW_BLUR
    ]
    assert blurs[0] is Severity.LOW
    assert blurs[-1] is Severity.MEDIUM

    # Every item answered within a second: nobody reads five items that fast.
    for section in state.sections or []:
        for item in section.items:
            if item.id in WRITTEN:
                await student.client.save_answer(room, item.id, 0)
    await proctor.wait(
        IncidentRaised, lambda n: n.incident.kind is IncidentKind.TOO_FAST
    )

    second = await crowd.enter("s-0 second tab", server, tokens["s-0"], room)
    await proctor.wait(
        IncidentRaised, lambda n: n.incident.kind is IncidentKind.SECOND_CONNECTION
    )
    await second.close()
    await student.close()
    await proctor.wait(
        IncidentRaised, lambda n: n.incident.kind is IncidentKind.DISCONNECTED
    )
    back = await crowd.enter("s-0 back", server, tokens["s-0"], room)
    await proctor.wait(
        IncidentRaised, lambda n: n.incident.kind is IncidentKind.RECONNECTED
    )
    seat = {s.user: s for s in (await proctor.client.watch_exam(room)).seats}["s-0"]
    assert seat.connected
    assert seat.answered == len(WRITTEN)
    assert seat.incidents == len(proctor.all(IncidentRaised))
    await back.close()

    logged = [
        json.loads(line)
        for line in (await api.log(room)).text.splitlines()
        if '"kind":"incident"' in line
    ]
    assert sorted(e["seq"] for e in logged) == sorted(
        n.incident.seq for n in proctor.all(IncidentRaised)
    )
