"""A node dies (kill -9) while students answer: nothing acknowledged is lost.

While the answers of a quiz on node A arrive (see :mod:`tests.faults.scenario`),
A is killed with SIGKILL and the proxy turns to B, as a reverse proxy does
when a node stops answering its health check. B takes the room's lease once
A's lapses (LOPHOC_LEASE_MS=2000), or sooner once a command forwarded to the
silent A finds the lease free, and rebuilds the room from the store.

The scenario runs once per class size (the :func:`failover` fixture); each
test checks one promise of what it recorded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from .conftest import LEASE_MS, Cluster, record
from .proxy import TcpProxy
from .scenario import (
    RECOVERY_LIMIT,
    RECOVERY_TARGET,
    Outage,
    check_acked_again_within,
    check_answers_reported_once,
    check_resumed_on_b,
    quiz_cluster,
    run_quiz_outage,
)

pytestmark = pytest.mark.redis

#: Class sizes the scenario runs with.
CLASS_SIZES = [200]


def kill_a(cluster: Cluster, proxy: TcpProxy) -> None:
    """SIGKILL node A, send new connections to B and cut the open ones."""
    node_a, node_b = cluster.nodes
    proxy.retarget(node_b.port)
    node_a.kill()
    proxy.drop()


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=CLASS_SIZES)
async def failover(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Outage]:
    """The scenario, run once per class size for every test of this module."""
    async with quiz_cluster(tmp_path_factory.mktemp("failover")) as (
        cluster,
        proxy,
        crowd,
    ):

        async def fault() -> None:
            kill_a(cluster, proxy)

        run = await run_quiz_outage(cluster, proxy, crowd, request.param, fault)
        record(f"failover (kill -9, lease {LEASE_MS} ms), {run.summary()}")
        yield run


def test_every_acknowledged_answer_is_reported_once(failover: Outage) -> None:
    """Each answer acked before, during or after the kill is in B's report once."""
    check_answers_reported_once(failover)


def test_clients_resume_on_the_surviving_node_without_gaps(failover: Outage) -> None:
    """Every client reconnects to B and resumes: each offset seen once, in order."""
    check_resumed_on_b(failover)


def test_every_client_is_acknowledged_again_within_bounds(failover: Outage) -> None:
    """A command sent at the kill is acked once B has the room, within 20 s."""
    check_acked_again_within(failover, RECOVERY_LIMIT)


def test_every_client_is_acknowledged_again_within_5_s(failover: Outage) -> None:
    """Every client is acknowledged again within 5 s of its node's crash."""
    check_acked_again_within(failover, RECOVERY_TARGET)


def test_nobody_is_left_present_after_everyone_leaves(failover: Outage) -> None:
    """Once every client has closed, the report shows nobody present."""
    present = failover.present_after_leaving
    assert not present, f"{len(present)} still shown present: {present[:5]}"
