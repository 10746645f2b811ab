"""The HTTP side of a node: health, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
import time

import pytest

from client_sdk.protocol import Broadcast, Error, ErrorCode, Ping, Pong, Role
from tests.helpers import RedisProcess

from .conftest import Connect, ServerFactory, ServerProcess, unique


async def test_healthz_answers_ok(server: ServerProcess) -> None:
    """GET /healthz is 200 with status ok and the node's name."""
    response = await server.aget("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["node"]


async def test_readyz_is_ready_on_embedded_backends(server: ServerProcess) -> None:
    """GET /readyz is 200 with the in-process broker and the SQLite store."""
    response = await server.aget("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready"}


async def test_index_tells_where_to_connect(server: ServerProcess) -> None:
    """GET / names the WebSocket path, both subprotocols and the endpoints."""
    body = (await server.aget("/")).json()
    assert body["websocket"].startswith("/ws?")
    assert body["subprotocols"] == ["lophoc.v1.msgpack", "lophoc.v1.json"]
    assert {body["health"], body["ready"], body["metrics"]} == {
        "/healthz",
        "/readyz",
        "/metrics",
    }


@pytest.mark.redis
async def test_readyz_names_the_backend_that_is_down(
    server_factory: ServerFactory, redis_process: RedisProcess
) -> None:
    """With Redis stopped /readyz is 503 naming broker and store; /healthz stays 200."""
    node = server_factory(
        args=["--broker", redis_process.url, "--store", redis_process.url]
    )
    ready = await node.aget("/readyz")
    assert ready.status_code == 200, ready.text

    redis_process.stop()
    try:
        down = await node.aget("/readyz")
        assert down.status_code == 503
        body = down.json()
        assert body["status"] == "unavailable"
        assert set(body["failed"]) == {"broker", "store"}
        assert all(body["failed"].values())
        assert (await node.aget("/healthz")).status_code == 200
    finally:
        redis_process.start()

    deadline = time.monotonic() + 15
    while (await node.aget("/readyz")).status_code != 200:
        assert time.monotonic() < deadline, "not ready again after Redis came back"
        await asyncio.sleep(0.2)
    node.stop()


async def test_metrics_count_what_happened(
    connect: Connect, server: ServerProcess
) -> None:
    """Connections, messages in and out, errors and refusals all show in /metrics."""
    before = await server.metrics()
    room = unique()
    client = await connect(server, server.token("t1", Role.TEACHER, room), room)
    await client.expect(Pong, Ping(id="p1", client_time=1))
    error = await client.expect(Error, Broadcast(id="b1", room=room, topic="t"))
    assert error.code == ErrorCode.NOT_JOINED
    refused = await connect(server, None, room, hello=False)
    await refused.closed()

    during = await server.metrics()
    assert during.has("lophoc_connections")
    assert during("lophoc_connections") >= 1
    assert (
        during("lophoc_connections_accepted_total")
        >= before("lophoc_connections_accepted_total") + 1
    )
    for kind in ("ping", "broadcast"):
        name = "lophoc_messages_in_total"
        assert during(name, type=kind) == before(name, type=kind) + 1
    assert (
        during("lophoc_messages_out_total") >= before("lophoc_messages_out_total") + 3
    )
    name = "lophoc_errors_total"
    assert during(name, code="not_joined") == before(name, code="not_joined") + 1
    name = "lophoc_handshake_refusals_total"
    assert during(name, code="4001") == before(name, code="4001") + 1
    assert during.has("lophoc_rooms", kind="owned")

    await client.close()
    deadline = time.monotonic() + 5
    while (await server.metrics())("lophoc_connections") >= during(
        "lophoc_connections"
    ):
        assert time.monotonic() < deadline, "closed connection still counted"
        await asyncio.sleep(0.05)


async def test_metrics_are_prometheus_text(server: ServerProcess) -> None:
    """/metrics is served as Prometheus text exposition 0.0.4."""
    response = await server.aget("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "# TYPE lophoc_messages_in_total counter" in response.text
    # What the garbage collector costs the loop, and its quiet collections.
    assert "# TYPE lophoc_gc_longest_pause_seconds gauge" in response.text
    assert "# TYPE lophoc_gc_quiet_collections_total counter" in response.text
