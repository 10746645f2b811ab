"""Pub/sub messages lost on the way are noticed by their offsets and repaired.

Redis pub/sub delivers at most once: a subscriber whose connection drops
misses whatever was published meanwhile, and nobody tells it. Here Redis
itself cuts every subscriber connection (``CLIENT KILL TYPE pubsub``) just
before each event of a room whose writer is on node A, so node B's
subscription misses them. B must fill the hole from the store's history,
by the offset of the next event or on its resubscription when no event
follows, and its clients must see every event once, in order.
"""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from client_sdk import Resynced
from client_sdk.protocol import BroadcastEvent
from tests.helpers import RedisProcess

from .conftest import Cluster, Crowd, contiguous, converged, lesson_on

pytestmark = pytest.mark.redis

STUDENTS = 10
#: Times the subscribers are cut, each followed by two events.
CUTS = 5


async def subscribers_back(redis: Redis, within: float = 10.0) -> None:
    """Wait until both nodes hold a subscriber connection again."""
    clients = b""
    for _ in range(int(within / 0.02)):
        clients = await redis.execute_command(  # type: ignore[no-untyped-call]
            "CLIENT", "LIST", "TYPE", "pubsub"
        )
        if len(clients.strip().splitlines()) >= 2:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"the nodes did not subscribe again: {clients!r}")


async def test_events_missed_by_a_dropped_subscription_are_repaired(
    cluster: Cluster, crowd: Crowd, redis_process: RedisProcess
) -> None:
    """B's clients get every event sent while B's subscription was cut, once."""
    node_a, node_b = cluster.nodes
    lesson = await lesson_on(node_a, STUDENTS)
    room = lesson.room
    host, pupils = await crowd.enter_lesson(lesson, node_a.ws_url(), node_b.ws_url())
    assert host.client.hello is not None
    assert host.client.hello.node == "node-a"
    await host.client.broadcast(room, "before", b"0")
    await converged([host, *pupils])

    redis = Redis.from_url(redis_process.url)
    try:
        for index in range(CUTS):
            await subscribers_back(redis)
            killed = await redis.execute_command(  # type: ignore[no-untyped-call]
                "CLIENT", "KILL", "TYPE", "pubsub"
            )
            assert killed >= 2, killed
            # Two events per cut: the resubscription brings the newest, and
            # the one before it must come from the store.
            for part in range(2):
                await host.client.broadcast(room, "cut", f"{index}.{part}".encode())
    finally:
        await redis.aclose()

    # No event follows the last ones: B learns of them on resubscribing.
    await converged([host, *pupils])
    # The events did go missing on B's side, and came back from the store.
    assert "missed events from the store" in node_b.log_tail(2000)

    await host.client.broadcast(room, "after", b"1")
    await converged([host, *pupils])
    for peer in pupils:
        assert not peer.stamped(Resynced), peer.name
        seen = peer.events()
        assert contiguous([e.offset for e in seen]), peer.name
        bodies = [(e.topic, e.body) for e in seen if isinstance(e, BroadcastEvent)]
        expected = [
            ("before", b"0"),
            *(("cut", f"{i}.{p}".encode()) for i in range(CUTS) for p in range(2)),
            ("after", b"1"),
        ]
        assert bodies == expected, peer.name
