"""Speaking turns end to end: the same queue everywhere, grants, timed turns."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest

from client_sdk import CommandError
from client_sdk.protocol import (
    ErrorCode,
    FloorGranted,
    FloorReleased,
    HandQueue,
    QueuePolicy,
    ReleaseReason,
)

from .conftest import Api, Crowd, ServerProcess


@pytest.fixture
async def api(server: ServerProcess) -> AsyncIterator[Api]:
    """The HTTP API of the module's server."""
    client = Api(server)
    yield client
    await client.close()


async def test_queue_grants_and_timed_turns(
    server: ServerProcess, api: Api, crowd: Crowd
) -> None:
    """Every client sees one queue order; grants respect schools; turns time out."""
    lesson_id = f"turns-{secrets.token_hex(3)}"
    created = await api.create(
        {
            "id": lesson_id,
            "title": "Speaking",
            "host": {"user": "t-host"},
            "classes": [
                {"school": "A", "class": "7A", "co_teacher": {"user": "co-a"}},
                {"school": "B", "class": "7B", "co_teacher": {"user": "co-b"}},
                {"school": "C", "class": "7C"},
            ],
        }
    )
    assert created.status_code == 201, created.text
    body = created.json()
    host = await crowd.enter("host", server, body["host"]["token"], lesson_id)
    co_a = await crowd.enter(
        "co-a", server, body["classes"][0]["co_teacher"]["token"], lesson_id
    )
    students = {}
    for index, name in [(0, "a1"), (0, "a2"), (1, "b1"), (2, "c1")]:
        token = await api.student_token(body["classes"][index]["code"], name)
        students[name] = await crowd.enter(name, server, token, lesson_id)

    await host.client.set_queue_policy(lesson_id, QueuePolicy.ROUND_ROBIN)
    for name in ("a1", "a2", "b1", "c1"):
        await students[name].client.raise_hand(lesson_id)

    def full(queue: HandQueue) -> bool:
        return len(queue.queue) == 4

    orders = []
    for watcher in [host, co_a, *students.values()]:
        queue = await watcher.wait(HandQueue, full)
        orders.append([entry.name for entry in queue.queue])
    assert all(order == ["a1", "b1", "c1", "a2"] for order in orders)

    # A co-teacher gives the floor to their own school only.
    b1_user = students["b1"].client.hello.user  # type: ignore[union-attr]
    with pytest.raises(CommandError) as refused:
        await co_a.client.grant_floor(lesson_id, user=b1_user)
    assert refused.value.code is ErrorCode.FORBIDDEN
    await co_a.client.grant_floor(lesson_id, seconds=5)

    granted = await students["c1"].wait(FloorGranted)
    assert granted.turn.name == "a1"
    assert granted.turn.ends_at == granted.turn.started_at + 5000

    # The server ends the turn on its own clock.
    released = await students["b1"].wait(FloorReleased, within=10)
    assert released.reason is ReleaseReason.EXPIRED
    assert released.spoke_ms == 5000
    assert released.at >= granted.turn.ends_at
