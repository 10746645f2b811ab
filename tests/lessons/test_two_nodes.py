"""A lesson over two server nodes sharing one Redis (broker and store).

The host is on node A, students on both nodes: the room's writer lives on
whichever node claimed it first, and the other forwards answers to it and
fans its events and notices out to its own members.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from client_sdk import AnswerResult, AnswerTally, QuestionOpened, QuestionRevealed

from .conftest import Api, Crowd, ServerProcess, Watcher, redis_nodes

SCHOOLS = ["THCS Ba Đình", "THCS Cầu Giấy"]


@pytest.fixture
def nodes(redis_url: str, tmp_path: Path) -> Iterator[tuple[ServerProcess, ...]]:
    """Two nodes, A and B, on one Redis."""
    with redis_nodes(tmp_path, redis_url) as started:
        yield started


def two_school_lesson(room: str) -> dict[str, Any]:
    """One single choice question for two linked classes."""
    return {
        "id": room,
        "title": "Two nodes",
        "host": {"user": "t-hai"},
        "lead_ms": 800,
        "classes": [
            {
                "school": school,
                "class": "9A",
                "co_teacher": {"user": f"co-{index}"},
                "students": [{"user": f"s-{index}", "name": f"Student {index}"}],
            }
            for index, school in enumerate(SCHOOLS)
        ],
        "activities": [
            {
                "kind": "quiz",
                "title": "Colours",
                "questions": [
                    {
                        "kind": "single",
                        "prompt": "The colour of the sky?",
                        "options": ["green", "blue"],
                        "answer": 1,
                        "seconds": 10,
                    }
                ],
            }
        ],
    }


async def test_lesson_across_two_nodes(
    nodes: tuple[ServerProcess, ServerProcess], crowd: Crowd
) -> None:
    """Host on A, students on A and B: every answer acked, results and report right."""
    node_a, node_b = nodes
    room = f"two-nodes-{secrets.token_hex(3)}"
    api_a, api_b = Api(node_a), Api(node_b)
    try:
        response = await api_a.create(two_school_lesson(room))
        assert response.status_code == 201, response.text
        created = response.json()
        host = await crowd.enter("host", node_a, created["host"]["token"], room)
        co_b = await crowd.enter(
            "co-1", node_b, created["classes"][1]["co_teacher"]["token"], room
        )
        # Student 0 by personal code on A; student 1 by personal code on B;
        # a third by class code on B.
        codes = [c["students"][0]["code"] for c in created["classes"]]
        tokens = [
            await api_a.student_token(codes[0]),
            await api_b.student_token(codes[1]),
        ]
        joined = await api_b.join(created["classes"][0]["code"], "Student X")
        assert joined.status_code == 200, joined.text
        students: dict[str, tuple[Watcher, int, bool]] = {
            "s-0": (await crowd.enter("s-0", node_a, tokens[0], room), 1, True),
            "s-1": (await crowd.enter("s-1", node_b, tokens[1], room), 0, False),
            joined.json()["user"]: (
                await crowd.enter("x", node_b, joined.json()["token"], room),
                1,
                True,
            ),
        }
        # The same student on a second device, on the other node.
        again = await crowd.enter("s-1 again", node_a, tokens[1], room)

        await host.client.step(room, 0)
        await host.client.ask(room, 0)
        opened = {
            user: await watcher.wait(QuestionOpened)
            for user, (watcher, _, _) in students.items()
        }
        first = opened["s-0"]
        assert {
            (q.question.number, q.opens_at, q.closes_at) for q in opened.values()
        } == {(first.question.number, first.opens_at, first.closes_at)}

        async def answer(watcher: Watcher, value: int) -> str | None:
            await watcher.client.wait_until(first.opens_at)
            ack = await watcher.client.answer(
                room, first.question.number, value, id=f"{watcher.name}-1"
            )
            return ack.id

        acks = await asyncio.gather(
            *(answer(w, value) for w, value, _ in students.values())
        )
        assert acks == [f"{w.name}-1" for w, _, _ in students.values()]
        # The second device resends s-1's answer, through node A: stored once.
        resent = await again.client.answer(room, first.question.number, 0, id="s-1-1")
        assert resent.id == "s-1-1"

        tally = await host.wait(AnswerTally, lambda t: t.answered == len(students))
        assert {t.school: (t.answered, t.counts) for t in tally.by_school} == {
            SCHOOLS[0]: (2, [0, 2]),
            SCHOOLS[1]: (1, [1, 0]),
        }
        await co_b.wait(AnswerTally, lambda t: t.answered == len(students))

        await host.client.reveal(room)
        revealed = await co_b.wait(QuestionRevealed)
        assert revealed.answer == 1
        assert revealed.counts == [1, 2]

        report = await api_b.report(room, created["host"]["token"])
        assert report.status_code == 200, report.text
        by_user = {s["user"]: s for s in report.json()["students"]}
        assert set(by_user) == set(students)
        for user, (watcher, value, right) in students.items():
            (stored,) = by_user[user]["answers"]
            assert (stored["value"], stored["right"]) == (value, right)
            if right:
                assert 500 <= stored["points"] <= 1000
            else:
                assert stored["points"] == 0
            result = await watcher.wait(AnswerResult)
            assert (result.right, result.points) == (right, stored["points"])
        (question,) = report.json()["questions"]
        assert (question["answered"], question["right"]) == (3, 2)
    finally:
        await api_a.close()
        await api_b.close()
