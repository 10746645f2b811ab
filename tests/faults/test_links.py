"""Clients whose connections are cut or frozen resume without loss or repeats.

Students reach node A through the proxy; the host is on A directly and keeps
broadcasting. The proxy then either resets every connection at once (a
crashed router) or freezes them with the sockets left open (a half-dead
link that no error reports, which only the client's keepalive notices),
and later lets traffic through again. Each client must reconnect, join
again from its last offset and see every event exactly once, in order.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from client_sdk import Reconnected, Resumed, Resynced
from client_sdk.protocol import BroadcastEvent

from .conftest import (
    Cluster,
    Crowd,
    contiguous,
    converged,
    lesson_on,
    record,
    spread,
)
from .proxy import TcpProxy

pytestmark = pytest.mark.redis

STUDENTS = 30
#: The host's broadcasts, and the time between two of them.
MESSAGES = 15
SPACING = 0.2
#: How long the links stay frozen; longer than the clients' keepalive.
STALL = 3.0
#: Clients ping every half second and give up after a second of silence.
PING_INTERVAL = 0.5
PING_TIMEOUT = 1.0


@pytest.mark.parametrize("cut", ["drop", "stall"])
async def test_clients_resume_without_loss_or_repeats(
    cut: str, cluster: Cluster, proxy: TcpProxy, crowd: Crowd
) -> None:
    """After a reset or a frozen link, each client sees every event once."""
    node_a = cluster.nodes[0]
    lesson = await lesson_on(node_a, STUDENTS)
    room = lesson.room
    host, pupils = await crowd.enter_lesson(
        lesson,
        node_a.ws_url(),
        proxy.ws_url,
        ping_interval=PING_INTERVAL,
        ping_timeout=PING_TIMEOUT,
    )
    await host.client.broadcast(room, "start", b"")
    await converged([host, *pupils])

    async def talk() -> None:
        for index in range(MESSAGES):
            await host.client.broadcast(room, "talk", str(index).encode())
            await asyncio.sleep(SPACING)

    talking = asyncio.create_task(talk())
    await asyncio.sleep(SPACING * 2)
    cut_at = time.monotonic()
    if cut == "drop":
        assert proxy.drop() >= STUDENTS
    else:
        proxy.stall()
        await asyncio.sleep(STALL)
        proxy.resume()
    await talking
    await converged([host, *pupils], within=20.0)

    expected = [("start", b""), *(("talk", str(i).encode()) for i in range(MESSAGES))]
    for peer in pupils:
        assert peer.stamped(Reconnected, after=cut_at), f"{peer.name} kept its link"
        assert peer.stamped(Resumed, after=cut_at), peer.name
        assert not peer.stamped(Resynced), f"{peer.name} lost the room's history"
        seen = peer.events()
        assert contiguous([e.offset for e in seen]), peer.name
        bodies = [(e.topic, e.body) for e in seen if isinstance(e, BroadcastEvent)]
        assert bodies == expected, peer.name
    resumed = [peer.stamped(Resumed, after=cut_at)[0][0] - cut_at for peer in pupils]
    record(f"links cut ({cut}), {STUDENTS} clients: resumed after {spread(resumed)}")
