"""Sitting an exam through a real server: variants, saves, submit, timing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from client_sdk import JSON_SUBPROTOCOL, Client, CommandError, ErrorCode, Resumed
from client_sdk.protocol import AttemptState, ExamState
from tests.lessons.conftest import TEST_BACKOFF, Crowd, ServerProcess

from .conftest import ITEMS, ExamApi, exam_file, seated


def items_of(state: ExamState) -> list[str]:
    """The item ids of a student's variant, in the order shown."""
    assert state.sections is not None
    return [item.id for section in state.sections for item in section.items]


async def test_variant_after_opening_and_saves_graded(
    server: ServerProcess, api: ExamApi, crowd: Crowd
) -> None:
    """Before opens_at a fetch has no items; after it, the variant, saves, grades."""
    room = "exam-flow"
    _, (student,) = await seated(
        server, api, crowd, exam_file(room, 2, opens_in_ms=1500)
    )

    early = await student.client.fetch_exam(room)
    assert early.sections is None
    assert early.state is AttemptState.NOT_STARTED
    with pytest.raises(CommandError) as refused:
        await student.client.save_answer(room, "q1", 0)
    assert refused.value.code is ErrorCode.INVALID

    nudge = await student.wait(ExamState, lambda s: s.id is None, within=5)
    assert nudge.sections is None
    state = await student.client.fetch_exam(room)
    assert state.state is AttemptState.RUNNING
    assert sorted(items_of(state)) == ITEMS
    assert 55_000 < state.remaining_ms <= 60_000

    shown = {i.id: i for s in state.sections or [] for i in s.items}
    right = shown["q1"].options.index(
        next(o for o in shown["q1"].options if o.endswith("apple"))
    )
    await student.client.save_answer(room, "q1", right)
    await student.client.save_answer(room, "q3", "Cold")
    await student.client.save_answer(room, "q4", ["am"])
    await student.client.submit_exam(room)
    with pytest.raises(CommandError) as late:
        await student.client.save_answer(room, "q5", 0)
    assert late.value.code is ErrorCode.CLOSED

    response = await api.results(room)
    assert response.status_code == 200, response.text
    by_user = {s["user"]: s for s in response.json()["students"]}
    assert by_user["s-0"]["score"] == 3
    assert by_user["s-0"]["state"] == "submitted"
    assert by_user["s-0"]["ungraded"] == 5
    assert by_user["s-1"]["state"] == "not_started"
    csv = await api.results(room, csv=True)
    assert csv.status_code == 200
    assert csv.text.splitlines()[0].startswith("school,class,user,name,state,score")


def options_of(state: ExamState) -> dict[str, list[str]]:
    """Each item's options in the order the student was shown them."""
    return {i.id: i.options for s in state.sections or [] for i in s.items}


async def test_variants_are_per_student_and_reproducible(
    server: ServerProcess, api: ExamApi, crowd: Crowd
) -> None:
    """Each student's order differs from the others' and is the same on refetch."""
    room = "exam-shuffle"
    tokens = await api.tokens(exam_file(room, 6))
    states = {}
    for user in [f"s-{i}" for i in range(6)]:
        student = await crowd.enter(user, server, tokens[user], room)
        states[user] = await student.client.fetch_exam(room)
        again = await student.client.fetch_exam(room)
        assert again.sections == states[user].sections
    shown = {
        (tuple(items_of(state)), tuple(map(tuple, options_of(state).values())))
        for state in states.values()
    }
    assert len(shown) >= 5
    for state in states.values():
        assert [len(s.items) for s in state.sections or []] == [4, 2]
        assert sorted(options_of(state)["q1"]) == sorted(
            ["ITEMMARK-apple", "car", "dog", "sky"]
        )


async def test_saved_answers_and_time_come_back_after_a_reconnect(
    server: ServerProcess, api: ExamApi, crowd: Crowd
) -> None:
    """A dropped student gets saved answers and time left back; a retry stores once."""
    room = "exam-reconnect"
    tokens, (student,) = await seated(server, api, crowd, exam_file(room, 1))
    first = await student.client.fetch_exam(room)
    await student.client.save_answer(room, "q3", "cold", id="answer-q3")
    await student.client.save_answer(room, "q2", [0, 1], id="answer-q2")
    await student.client.save_answer(room, "q3", "cold", id="answer-q3")

    link = student.client._link
    assert link is not None
    link.ws.transport.abort()
    await student.wait(Resumed, within=10)
    back = await student.client.fetch_exam(room)
    assert back.answers == {"q3": "cold", "q2": [0, 1]}
    assert back.sections == first.sections
    assert back.ends_at == first.ends_at
    assert back.remaining_ms < first.remaining_ms
    await student.client.save_answer(room, "q3", "cold", id="answer-q3")

    later = await crowd.enter("s-0 again", server, tokens["s-0"], room)
    again = await later.client.fetch_exam(room)
    assert again.answers == back.answers

    log = (await api.log(room)).text.splitlines()
    saves = [line for line in log if '"kind":"answer"' in line]
    assert len(saves) == 2


async def test_deadline_submits_and_extra_time_counts(
    server: ServerProcess, api: ExamApi, crowd: Crowd
) -> None:
    """At a student's deadline the server submits; extra time moves it later."""
    room = "exam-deadline"
    tokens = await api.tokens(
        exam_file(room, 2, duration_ms=2000, extra_ms={"s-1": 2000})
    )
    plain = await crowd.enter("s-0", server, tokens["s-0"], room)
    extra = await crowd.enter("s-1", server, tokens["s-1"], room)
    for student in (plain, extra):
        await student.client.fetch_exam(room)
        await student.client.save_answer(room, "q3", "cold")

    done = await plain.wait(
        ExamState, lambda s: s.state is AttemptState.SUBMITTED, within=5
    )
    assert done.reason == "time up"
    with pytest.raises(CommandError) as refused:
        await plain.client.save_answer(room, "q4", ["am"])
    assert refused.value.code is ErrorCode.CLOSED
    await extra.client.save_answer(room, "q4", ["am"])
    late = await extra.wait(
        ExamState, lambda s: s.state is AttemptState.SUBMITTED, within=5
    )
    assert late.ends_at - done.ends_at == 2000

    results = {s["user"]: s for s in (await api.results(room)).json()["students"]}
    assert results["s-0"]["score"] == 1
    assert results["s-1"]["score"] == 2


async def test_late_join_window(
    server: ServerProcess, api: ExamApi, crowd: Crowd
) -> None:
    """Within the window a late student starts, with no more time; after it, not."""
    room = "exam-late"
    tokens = await api.tokens(
        exam_file(room, 2, opens_in_ms=-1000, late_join_ms=2500, duration_ms=60_000)
    )
    early = await crowd.enter("s-0", server, tokens["s-0"], room)
    state = await early.client.fetch_exam(room)
    assert state.remaining_ms <= 59_000
    await asyncio.sleep(2.0)
    late = await crowd.enter("s-1", server, tokens["s-1"], room)
    with pytest.raises(CommandError) as refused:
        await late.client.fetch_exam(room)
    assert refused.value.code is ErrorCode.CLOSED


async def test_deadline_rearmed_after_a_restart(
    api: ExamApi, crowd: Crowd, tmp_path: Path
) -> None:
    """A restarted node rebuilds the room and still submits at the deadline."""
    node = ServerProcess(tmp_path / "node")
    node.start()
    try:
        restarted = ExamApi(node)
        room = "exam-restart"
        tokens = await restarted.tokens(exam_file(room, 1, duration_ms=4000))
        student = await crowd.enter("s-0", node, tokens["s-0"], room)
        await student.client.fetch_exam(room)
        await student.client.save_answer(room, "q3", "cold")
        node.stop()
        node.start()
        done = await student.wait(
            ExamState, lambda s: s.state is AttemptState.SUBMITTED, within=10
        )
        assert done.reason == "time up"
        assert done.answers == {"q3": "cold"}
        await restarted.close()
    finally:
        node.stop()


async def test_json_subprotocol_carries_every_exam_message(
    server: ServerProcess, api: ExamApi
) -> None:
    """On lophoc.v1.json a student fetches, saves each kind of value and submits."""
    room = "exam-json"
    tokens = await api.tokens(exam_file(room, 1))
    frames: list[bytes | str] = []
    async with Client(
        server.ws_url,
        tokens["s-0"],
        room,
        subprotocol=JSON_SUBPROTOCOL,
        on_frame=frames.append,
        backoff=TEST_BACKOFF,
    ) as client:
        await client.join(room)
        state = await client.fetch_exam(room)
        assert sorted(items_of(state)) == ITEMS
        await client.save_answer(room, "q1", 2)
        await client.save_answer(room, "q2", [0, 3])
        await client.save_answer(room, "q3", "cold")
        await client.save_answer(room, "q4", ["am"])
        back = await client.fetch_exam(room)
        assert back.answers == {"q1": 2, "q2": [0, 3], "q3": "cold", "q4": ["am"]}
        await client.submit_exam(room)
    assert frames
    assert all(isinstance(f, str) for f in frames)
    assert any('"type":"exam_state"' in f for f in frames if isinstance(f, str))


async def test_no_going_back_when_the_exam_forbids_it(
    server: ServerProcess, api: ExamApi, crowd: Crowd
) -> None:
    """Without allow_back an item is closed once a later one is saved."""
    room = "exam-no-back"
    exam = exam_file(room, 1, allow_back=False)
    _, (student,) = await seated(server, api, crowd, exam)
    client = student.client
    state = await client.fetch_exam(room)
    assert state.allow_back is False

    await client.save_answer(room, "q1", 0)
    await client.save_answer(room, "q1", 1)
    await client.save_answer(room, "q3", "cold")
    with pytest.raises(CommandError) as refused:
        await client.save_answer(room, "q1", 2)
    assert (refused.value.code, refused.value.field) == (ErrorCode.CLOSED, "item")
    await client.save_answer(room, "q3", "warm")

    again = await client.fetch_exam(room)
    assert again.answers == {"q1": 1, "q3": "warm"}
