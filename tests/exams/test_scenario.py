"""A province's morning: 100 students in two exam rooms on two nodes over Redis.

Students sit on both nodes, each room's writer lives on one of them, and
connections drop at random while answers are being saved. At the end
every acknowledged answer is in its room's log exactly once, every incident
a proctor saw is in that room's log, and both logs verify.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path

from client_sdk.protocol import IncidentKind, IncidentRaised
from tests.lessons.conftest import Crowd, ServerProcess, Watcher

from .conftest import WRITTEN, ExamApi, exam_file, verify_log

ROOMS = ["exam-east", "exam-west"]
PER_ROOM = 50
#: Connections dropped on purpose during the run, and the run's bound.
DROPS = 30
LIMIT_S = 60.0


async def sit(student: Watcher, room: str, rng: random.Random) -> list[str]:
    """Fetch, save an answer to every item (some twice), submit; the acked ids."""
    client = student.client
    state = await client.fetch_exam(room)
    acked = []
    user = client.hello.user if client.hello else student.name
    shown = [i.id for s in state.sections or [] for i in s.items]
    for item in [i for i in shown if i in WRITTEN]:
        answer_id = f"{room}-{user}-{item}"
        await client.save_answer(
            room, item, 0 if item != "q3" else "cold", id=answer_id
        )
        acked.append(answer_id)
        if rng.random() < 0.2:
            # A page that lost the ack sends the same answer again.
            await client.save_answer(room, item, 0, id=answer_id)
        await asyncio.sleep(rng.uniform(0.05, 0.4))
    await client.submit_exam(room)
    return acked


async def chaos(
    students: list[Watcher], rng: random.Random, stop: asyncio.Event
) -> int:
    """Drop up to :data:`DROPS` random connections while the exam runs."""
    dropped = 0
    for _ in range(DROPS):
        if stop.is_set():
            break
        link = rng.choice(students).client._link
        if link is not None:
            link.ws.transport.abort()
            dropped += 1
        await asyncio.sleep(rng.uniform(0.05, 0.15))
    return dropped


async def test_hundred_students_two_rooms_two_nodes_with_drops(
    nodes: tuple[ServerProcess, ...], crowd: Crowd, tmp_path: Path
) -> None:
    """Every acknowledged answer is stored once; every incident is in its log."""
    started = time.monotonic()
    rng = random.Random(20261203)
    apis = [ExamApi(node) for node in nodes]
    tokens = {room: await apis[0].tokens(exam_file(room, PER_ROOM)) for room in ROOMS}
    proctors = {
        room: await crowd.enter(f"p {room}", nodes[1 - i], tokens[room]["p-1"], room)
        for i, room in enumerate(ROOMS)
    }
    for proctor in proctors.values():
        await proctor.client.watch_exam(proctor.client.room)

    seated: list[tuple[Watcher, str]] = []
    for room in ROOMS:
        seated += await asyncio.gather(
            *(
                _seat(crowd, nodes[i % 2], tokens[room][f"s-{i}"], room, f"s-{i}")
                for i in range(PER_ROOM)
            )
        )
    stop = asyncio.Event()

    async def everyone() -> list[list[str]]:
        try:
            return await asyncio.gather(
                *(sit(w, room, random.Random(rng.random())) for w, room in seated)
            )
        finally:
            stop.set()

    acked, dropped = await asyncio.gather(
        everyone(), chaos([w for w, _ in seated], rng, stop)
    )
    assert dropped > 10

    for index, room in enumerate(ROOMS):
        exported = await apis[index].log(room)
        assert exported.status_code == 200
        path = tmp_path / f"{room}.log"
        path.write_bytes(exported.content)
        checked = verify_log(path)
        assert checked.returncode == 0, checked.stdout

        entries = [
            e
            for e in map(json.loads, exported.text.splitlines())
            if e.get("type") == "entry"
        ]
        stored = [e["data"]["answer_id"] for e in entries if e["kind"] == "answer"]
        expected = [
            answer_id
            for (watcher, at), ids in zip(seated, acked, strict=True)
            if at == room
            for answer_id in ids
        ]
        assert len(expected) == PER_ROOM * len(WRITTEN)
        assert sorted(stored) == sorted(expected)
        submitted = {e["data"]["user"] for e in entries if e["kind"] == "submitted"}
        assert len(submitted) == PER_ROOM

        incidents = {e["seq"]: e for e in entries if e["kind"] == "incident"}
        seen = proctors[room].all(IncidentRaised)
        assert seen
        for notice in seen:
            assert notice.room == room
            logged = incidents[notice.incident.seq]
            assert logged["data"]["user"] == notice.incident.user
            assert logged["data"]["kind"] == notice.incident.kind.value
        kinds = {e["data"]["kind"] for e in incidents.values()}
        assert IncidentKind.DISCONNECTED.value in kinds or (
            IncidentKind.SECOND_CONNECTION.value in kinds
        )

    for api in apis:
        await api.close()
    assert time.monotonic() - started < LIMIT_S


async def _seat(
    crowd: Crowd, node: ServerProcess, token: str, room: str, name: str
) -> tuple[Watcher, str]:
    return await crowd.enter(name, node, token, room), room


async def test_a_student_back_on_the_other_node_gets_answers_and_time(
    nodes: tuple[ServerProcess, ...], crowd: Crowd
) -> None:
    """Reconnecting through node B gives the variant, answers and time saved on A."""
    node_a, node_b = nodes
    api = ExamApi(node_a)
    room = "exam-hop"
    tokens = await api.tokens(exam_file(room, 1))
    first = await crowd.enter("s-0 on A", node_a, tokens["s-0"], room)
    before = await first.client.fetch_exam(room)
    await first.client.save_answer(room, "q3", "cold", id="hop-q3")
    await first.client.save_answer(room, "q4", ["am"], id="hop-q4")
    await first.close()

    second = await crowd.enter("s-0 on B", node_b, tokens["s-0"], room)
    after = await second.client.fetch_exam(room)
    assert after.sections == before.sections
    assert after.answers == {"q3": "cold", "q4": ["am"]}
    assert after.ends_at == before.ends_at
    assert 0 < before.remaining_ms - after.remaining_ms < 10_000
    # The page resends an answer whose ack it lost: stored once.
    await second.client.save_answer(room, "q4", ["am"], id="hop-q4")

    exported = await api.log(room)
    entries = [json.loads(line) for line in exported.text.splitlines()]
    saved = [e["data"]["answer_id"] for e in entries if e.get("kind") == "answer"]
    assert saved == ["hop-q3", "hop-q4"]
    await api.close()


async def test_a_student_on_the_other_node_stays_seated_when_the_room_moves(
    nodes: tuple[ServerProcess, ...], crowd: Crowd
) -> None:
    """A restart of the room's node logs no reconnection for a student it never held.

    The room's writer is rebuilt on the restarted node, which knows only its
    own connections; the student's node joins the student again, as the
    same connection, and the proctor sees no incident for it.
    """
    node_a, node_b = nodes
    api = ExamApi(node_a)
    room = "exam-moved"
    tokens = await api.tokens(exam_file(room, 1))
    proctor = await crowd.enter("proctor on A", node_a, tokens["p-1"], room)
    student = await crowd.enter("s-0 on B", node_b, tokens["s-0"], room)
    await student.client.fetch_exam(room)
    await student.client.save_answer(room, "q3", "cold", id="moved-q3")

    node_a.stop()
    node_a.start()
    # The proctor's client comes back through A by itself: A rebuilds the
    # room. The student's answer after it is taken, its seat still open.
    await student.client.save_answer(room, "q4", ["am"], id="moved-q4")
    view = await proctor.client.watch_exam(room)
    seat = {s.user: s for s in view.seats}["s-0"]
    assert seat.connected
    assert seat.answered == 2

    logged = [
        json.loads(line)
        for line in (await api.log(room)).text.splitlines()
        if '"kind":"incident"' in line
    ]
    kinds = {e["data"]["kind"] for e in logged if e["data"]["user"] == "s-0"}
    assert not kinds & {"reconnected", "disconnected", "second_connection"}, logged
    await api.close()
