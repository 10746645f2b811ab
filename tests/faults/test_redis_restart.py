"""Redis stops and starts again (same port, append-only file) during a lesson.

Nodes A and B keep their clients' connections while Redis is away: /healthz
stays ok, /readyz fails and comes back, and commands sent meanwhile are
refused as ``unavailable`` and retried by the SDK under the same id. Once
Redis is back with its data, every client ends on the same offset of the
room: it either got every event it missed, or was told its history was
lost (``recovered: false``, a :class:`~client_sdk.Resynced`) and took a
fresh snapshot. None is left silently behind.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from client_sdk import Resynced
from client_sdk.protocol import BroadcastEvent, Event
from tests.server.conftest import ServerProcess

from .conftest import (
    Cluster,
    Crowd,
    DurableRedis,
    Peer,
    contiguous,
    converged,
    http_status,
    lesson_on,
    record,
)

pytestmark = pytest.mark.redis

STUDENTS = 20
#: How long Redis stays away: longer than a lease (LEASE_MS).
OUTAGE = 3.0
#: The host's broadcast sent during the outage retries for this long.
RETRIES = 40


async def status_becomes(node: ServerProcess, path: str, wanted: int) -> float:
    """Seconds until GET ``path`` answers ``wanted``; fails after 15 s."""
    started = time.monotonic()
    status = None
    for _ in range(150):
        status = await http_status(f"{node.http_url}{path}")
        if status == wanted:
            return time.monotonic() - started
        await asyncio.sleep(0.1)
    raise AssertionError(f"{node}: {path} still answers {status}, not {wanted}")


def segments(peer: Peer) -> list[list[Event]]:
    """The peer's room events, split where it was told to resync."""
    parts: list[list[Event]] = [[]]
    for _, item in peer.log:
        if isinstance(item, Resynced):
            parts.append([])
        elif isinstance(item, Event):
            parts[-1].append(item)
    return parts


async def test_clients_converge_after_redis_restarts(
    durable_redis: DurableRedis, durable_cluster: Cluster, crowd: Crowd
) -> None:
    """Every client recovers or resyncs, and all end on the same offset."""
    node_a, node_b = durable_cluster.nodes
    lesson = await lesson_on(node_a, STUDENTS)
    room = lesson.room
    host, pupils = await crowd.enter_lesson(
        lesson, node_a.ws_url(), node_a.ws_url(), node_b.ws_url()
    )
    everyone = [host, *pupils]
    await host.client.broadcast(room, "before", b"")
    await converged(everyone)

    durable_redis.stop()
    stopped = time.monotonic()
    for node in durable_cluster.nodes:
        await status_becomes(node, "/readyz", 503)
        assert await http_status(f"{node.http_url}/healthz") == 200
    # Sent while Redis is away: refused as unavailable, retried by the SDK.
    during = asyncio.create_task(
        host.client.broadcast(room, "during", b"", retries=RETRIES, timeout=5.0)
    )
    await asyncio.sleep(max(OUTAGE - (time.monotonic() - stopped), 0.0))
    assert not during.done(), "a command was acked while the store was away"

    durable_redis.start()
    ready_after = [
        await status_becomes(node, "/readyz", 200) for node in durable_cluster.nodes
    ]
    async with asyncio.timeout(30):
        await during
    await host.client.broadcast(room, "after", b"")
    epoch, offset = await converged(everyone, within=20.0)
    record(
        f"redis restart ({OUTAGE:.0f} s away), {STUDENTS} students: /readyz "
        f"ok again {max(ready_after):.2f} s after the restart; all clients at "
        f"offset {offset}"
    )

    expected = [("before", b""), ("during", b""), ("after", b"")]
    for peer in everyone:
        parts = segments(peer)
        for part in parts:
            assert contiguous([e.offset for e in part]), peer.name
        if len(parts) == 1:
            # Nothing lost: every broadcast arrived, once and in order.
            bodies = [
                (e.topic, e.body) for e in parts[0] if isinstance(e, BroadcastEvent)
            ]
            assert bodies == expected, peer.name
        last = parts[-1][-1] if parts[-1] else None
        assert last is not None, f"{peer.name} got nothing after its resync"
        assert (last.epoch, last.offset) == (epoch, offset), peer.name
