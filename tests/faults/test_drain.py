"""SIGTERM drains a node: its clients and rooms move to another, nothing is lost.

In the quiz scenario (:mod:`tests.faults.scenario`) node A gets SIGTERM
while the answers arrive. The test plays the reverse proxy: it polls A's
/readyz and sends new connections to B once it fails. A closes every
connection with 1012, keeps writing its room while the clients' rejoins
come back forwarded from B, releases the room's lease, and exits. The lease
is 15 s long here, so a room that moves within the drain time has been
handed over, not left to lapse.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from client_sdk import Client, Disconnected
from client_sdk.protocol import MSGPACK_SUBPROTOCOL, CloseCode, Role
from tests.server.conftest import ServerProcess

from .conftest import (
    FAULT_BACKOFF,
    exited,
    health_check,
    http_status,
    record,
    terminate,
)
from .proxy import TcpProxy
from .scenario import (
    Outage,
    check_acked_again_within,
    check_answers_reported_once,
    check_resumed_on_b,
    quiz_cluster,
    run_quiz_outage,
)

#: How long a node may take to drain (LOPHOC_DRAIN_SECONDS).
DRAIN_SECONDS = 8.0
#: Longer than the drain: a room that moves within the drain time was
#: handed over; waiting for its lease to lapse would take this long.
DRAIN_LEASE_MS = 15_000
#: Time for the process itself to end after its drain.
EXIT_MARGIN = 1.5
STUDENTS = 200


@dataclass
class Drain:
    """The quiz scenario, and what A did once it got SIGTERM."""

    run: Outage
    #: The /readyz status that made the proxy turn to B.
    readyz: int | None
    #: A's exit code, None if it had not exited in time; seconds until then.
    exit_code: int | None
    exited_after: float


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def drain(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Drain]:
    """The quiz scenario with A drained by SIGTERM, run once for the module."""
    env = {
        "LOPHOC_DRAIN_SECONDS": str(DRAIN_SECONDS),
        "LOPHOC_LEASE_MS": str(DRAIN_LEASE_MS),
    }
    async with quiz_cluster(tmp_path_factory.mktemp("drain"), env) as (
        cluster,
        proxy,
        crowd,
    ):
        node_a, node_b = cluster.nodes
        checks: list[asyncio.Task[int | None]] = []
        exits: list[asyncio.Task[tuple[int | None, float]]] = []

        async def exit_of_a() -> tuple[int | None, float]:
            code = await exited(node_a, DRAIN_SECONDS + EXIT_MARGIN)
            return code, time.monotonic()

        async def fault() -> None:
            checks.append(
                asyncio.create_task(health_check(proxy, node_a, node_b, DRAIN_SECONDS))
            )
            terminate(node_a)
            exits.append(asyncio.create_task(exit_of_a()))

        run = await run_quiz_outage(cluster, proxy, crowd, STUDENTS, fault)
        readyz = await checks[0]
        code, when = await exits[0]
        outcome = Drain(run, readyz, code, when - run.at)
        record(
            f"drain (SIGTERM, lease {DRAIN_LEASE_MS} ms), {run.summary()}; A "
            f"exited {outcome.exited_after:.2f} s after SIGTERM"
        )
        yield outcome


pytestmark = pytest.mark.redis


def test_drained_node_exits_cleanly_within_the_drain_time(drain: Drain) -> None:
    """A exits with status 0 within LOPHOC_DRAIN_SECONDS of SIGTERM."""
    assert drain.exit_code == 0, drain.exit_code
    assert drain.exited_after < DRAIN_SECONDS + EXIT_MARGIN


def test_proxy_learns_of_the_drain_from_readyz(drain: Drain) -> None:
    """The reverse proxy sees /readyz answer 503 before the node goes."""
    assert drain.readyz == 503


def test_clients_are_told_to_reconnect_elsewhere(drain: Drain) -> None:
    """Each client's connection to A ends with 1012, and the client reconnects."""
    for peer in drain.run.peers:
        gone = peer.stamped(Disconnected, after=drain.run.at)
        assert gone, f"{peer.name} was never disconnected"
        first = gone[0][1]
        assert first.code == CloseCode.SERVICE_RESTART, (peer.name, first)
        assert first.reconnecting, peer.name


def test_every_acknowledged_answer_is_reported_once(drain: Drain) -> None:
    """Each answer acked before, during or after the drain is in B's report once."""
    check_answers_reported_once(drain.run)


def test_clients_resume_on_the_other_node_without_gaps(drain: Drain) -> None:
    """Every client resumes on B: each offset seen once, in order."""
    check_resumed_on_b(drain.run)


def test_clients_move_within_the_drain_time(drain: Drain) -> None:
    """Every client is acked again within the drain time, inside the lease."""
    check_acked_again_within(drain.run, DRAIN_SECONDS)


def test_nobody_is_left_present_after_everyone_leaves(drain: Drain) -> None:
    """Once every client has closed, B's report shows nobody present."""
    present = drain.run.present_after_leaving
    assert not present, f"{len(present)} still shown present: {present[:5]}"


async def test_draining_node_refuses_new_connections(tmp_path: Path) -> None:
    """While draining, /healthz is ok, /readyz 503 and a handshake gets 1013."""
    node = ServerProcess(tmp_path / "node", env={"LOPHOC_DRAIN_SECONDS": "4"})
    node.start()
    # A client behind a frozen link cannot take its close frame.
    proxy = TcpProxy(node.port)
    await proxy.start()
    token = node.token("t-1", Role.TEACHER, "lobby")
    client = Client(
        proxy.ws_url,
        token,
        "lobby",
        backoff=FAULT_BACKOFF,
        open_timeout=2.0,
        proxy=None,
    )
    try:
        await client.connect()
        await client.join("lobby")
        proxy.stall()
        started = time.monotonic()
        terminate(node)
        readyz: int | None = 200
        for _ in range(40):
            readyz = await http_status(f"{node.http_url}/readyz")
            if readyz != 200:
                break
            await asyncio.sleep(0.05)
        assert readyz == 503
        assert await http_status(f"{node.http_url}/healthz") == 200

        with pytest.raises(ConnectionClosed) as closed:
            async with ws_connect(
                node.ws_url("lobby", token),
                subprotocols=[Subprotocol(MSGPACK_SUBPROTOCOL)],
            ) as ws:
                await asyncio.wait_for(ws.recv(), 5.0)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == CloseCode.TRY_AGAIN_LATER

        assert await exited(node, 4.0 + EXIT_MARGIN) == 0
        assert time.monotonic() - started < 4.0 + EXIT_MARGIN
    finally:
        proxy.resume()
        await client.close()
        await proxy.close()
        node.stop()
