"""Real nodes, a Redis of each test's own, a breakable proxy, and timed SDK peers.

The fault tests run ``lophoc serve`` processes on a redis-server that the
test may stop and start again, put a :class:`~tests.faults.proxy.TcpProxy`
between the clients and the nodes, and drive the Python SDK the way a
school's devices would. Each :class:`Peer` keeps every item of its stream
with the monotonic time it arrived, so a test can measure how long a client
took to come back after a fault, and check afterwards that it saw every
room event exactly once.

Measured recovery times are printed in a section of their own at the end of
the pytest run (see :func:`pytest_terminal_summary`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import os
import secrets
import signal
import statistics
import subprocess
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from client_sdk import Backoff, ClientEvent
from client_sdk.protocol import Event
from tests.helpers import RedisProcess, closing
from tests.lessons.conftest import SECRET, Api, Watcher
from tests.server.conftest import ServerProcess

from .proxy import TcpProxy

T = TypeVar("T")

#: The lease of a room's writer: short, so that a failover takes seconds.
LEASE_MS = 2000
#: How long a test waits for one item it expects.
WAIT = 15.0
#: The most stream items a peer keeps: far above what one test sends.
MAX_ITEMS = 20_000
#: Reconnect fast, and give up within a bound so that a broken test ends.
FAULT_BACKOFF = Backoff(
    initial=0.05, maximum=0.5, jitter=0.5, max_attempts=80, max_elapsed=30.0
)
#: Clients started at once: more would only queue on the 2-core test machine.
START_BATCH = 25

#: Lines for the summary at the end of the run, added by the tests.
MEASUREMENTS: list[str] = []


def record(line: str) -> None:
    """Keep one measurement for the summary printed after the run."""
    MEASUREMENTS.append(line)


def spread(seconds: Sequence[float]) -> str:
    """``p50 / p95 / max`` of some durations, in seconds."""
    if not seconds:
        return "no samples"
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return (
        f"p50 {statistics.median(ordered):.2f} s, p95 {p95:.2f} s, "
        f"max {ordered[-1]:.2f} s (n={len(ordered)})"
    )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print what the fault tests measured."""
    if MEASUREMENTS:
        terminalreporter.section("fault test measurements")
        for line in MEASUREMENTS:
            terminalreporter.write_line(line)


# Redis -----------------------------------------------------------------------


class DurableRedis(RedisProcess):
    """A redis-server that keeps its data across a restart (AOF, fsync always).

    This is how the architecture asks Redis to run in production; the plain
    :class:`RedisProcess` loses everything when it stops.
    """

    persistence = ("--save", "", "--appendonly", "yes", "--appendfsync", "always")


# Nodes -----------------------------------------------------------------------


class Cluster:
    """Nodes ``node-a``, ``node-b``, ... sharing one Redis as broker and store."""

    def __init__(
        self,
        base: Path,
        redis_url: str,
        count: int,
        env: dict[str, str] | None = None,
    ) -> None:
        backends = ["--broker", redis_url, "--store", redis_url]
        self.nodes = [
            ServerProcess(
                base / f"node-{name}",
                env={"LOPHOC_LEASE_MS": str(LEASE_MS), **(env or {})},
                args=[*backends, "--node", f"node-{name}"],
                secret=SECRET,
            )
            for name in "abcdefgh"[:count]
        ]

    def start(self) -> None:
        """Start every node at once; return when all answer /healthz."""
        with concurrent.futures.ThreadPoolExecutor(len(self.nodes)) as pool:
            for future in [pool.submit(node.start) for node in self.nodes]:
                future.result()

    def stop(self) -> None:
        """Stop every node that still runs."""
        for node in self.nodes:
            node.stop()

    @contextlib.contextmanager
    def running(self) -> Iterator[Cluster]:
        """Start every node, and stop them all afterwards."""
        try:
            self.start()
            yield self
        finally:
            self.stop()


def terminate(node: ServerProcess) -> None:
    """SIGTERM without waiting: the node drains its connections and exits."""
    assert node.pid is not None, f"{node} is not running"
    os.kill(node.pid, signal.SIGTERM)


async def exited(node: ServerProcess, within: float) -> int | None:
    """Wait for a terminated node to exit; its exit code, None if it did not."""
    process: subprocess.Popen[bytes] | None = node._process
    if process is None:
        return None
    try:
        return await asyncio.to_thread(process.wait, within)
    except subprocess.TimeoutExpired:
        return None


async def http_status(url: str) -> int | None:
    """The status of GET ``url``, or None when nothing answered in time."""
    try:
        async with httpx.AsyncClient(timeout=3.0) as http:
            return (await http.get(url)).status_code
    except httpx.HTTPError:
        return None


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[DurableRedis]:
    """A redis-server of this test's own that keeps its data when restarted."""
    server = DurableRedis(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def cluster(redis_process: RedisProcess, tmp_path: Path) -> Iterator[Cluster]:
    """Two nodes, A and B, on a Redis of this test's own."""
    with Cluster(tmp_path, redis_process.url, 2).running() as nodes:
        yield nodes


@pytest.fixture
def durable_cluster(durable_redis: DurableRedis, tmp_path: Path) -> Iterator[Cluster]:
    """Two nodes, A and B, on a Redis that keeps its data across a restart."""
    with Cluster(tmp_path, durable_redis.url, 2).running() as nodes:
        yield nodes


async def health_check(
    proxy: TcpProxy, node: ServerProcess, fallback: ServerProcess, within: float
) -> int | None:
    """Poll ``node``'s /readyz as a reverse proxy does; retarget when it fails.

    Returns the status that failed (None when nothing answered), or 200 if
    ``node`` stayed ready for ``within`` seconds.
    """
    for _ in range(int(within / 0.05)):
        status = await http_status(f"{node.http_url}/readyz")
        if status != 200:
            proxy.retarget(fallback.port)
            return status
        await asyncio.sleep(0.05)
    return 200


@pytest.fixture
async def proxy(cluster: Cluster) -> AsyncIterator[TcpProxy]:
    """A proxy in front of node A."""
    front = TcpProxy(cluster.nodes[0].port)
    await front.start()
    try:
        yield front
    finally:
        await front.close()


# Lessons ---------------------------------------------------------------------

SCHOOLS = ["THCS Ba Đình", "THCS Cầu Giấy"]


def quiz_lesson(
    room: str, *, seconds: int = 60, lead_ms: int = 400, seats: int | None = None
) -> dict[str, Any]:
    """A lesson of two linked classes with one single choice question."""
    plan: dict[str, Any] = {"seats": seats} if seats is not None else {}
    return plan | {
        "id": room,
        "title": "Fault drill",
        "host": {"user": "t-host", "name": "Host"},
        "lead_ms": lead_ms,
        "classes": [
            {"school": school, "class": "9A", "co_teacher": {"user": f"co-{index}"}}
            for index, school in enumerate(SCHOOLS)
        ],
        "activities": [
            {
                "kind": "quiz",
                "title": "Drill",
                "questions": [
                    {
                        "kind": "single",
                        "prompt": "Pick one",
                        "options": ["left", "right"],
                        "answer": 1,
                        "seconds": seconds,
                    }
                ],
            }
        ],
    }


class Lesson:
    """A lesson created through the HTTP API, and the tokens it handed out."""

    def __init__(self, room: str, created: dict[str, Any]) -> None:
        self.room = room
        self.created = created
        self.host_token: str = created["host"]["token"]
        #: (user, token) of every student enrolled with a class code.
        self.students: list[tuple[str, str]] = []


async def lesson_on(node: ServerProcess, count: int, **options: Any) -> Lesson:
    """:func:`create_lesson` through ``node``'s HTTP API."""
    api = Api(node)
    try:
        return await create_lesson(api, count, **options)
    finally:
        await api.close()


async def create_lesson(api: Api, count: int, **options: Any) -> Lesson:
    """Create a lesson and enrol ``count`` students with the class codes."""
    room = f"drill-{secrets.token_hex(3)}"
    response = await api.create(quiz_lesson(room, **options))
    assert response.status_code == 201, response.text
    lesson = Lesson(room, response.json())
    codes = [entry["code"] for entry in lesson.created["classes"]]

    async def enrol(index: int) -> tuple[str, str]:
        reply = await api.join(codes[index % len(codes)], f"Student {index:03d}")
        assert reply.status_code == 200, reply.text
        body = reply.json()
        return body["user"], body["token"]

    lesson.students = list(await asyncio.gather(*(enrol(i) for i in range(count))))
    return lesson


# Peers -----------------------------------------------------------------------


class Peer(Watcher):
    """A watched SDK client that reconnects fast and checks its cursor.

    ``log`` pairs every item of the stream with the monotonic time it
    arrived, so a test can measure how long the client took to come back.
    """

    max_items = MAX_ITEMS
    patience = WAIT

    def __init__(
        self, name: str, url: str, token: str, room: str, **options: Any
    ) -> None:
        # Loopback only: never a proxy from the environment.
        settings: dict[str, Any] = {
            "backoff": FAULT_BACKOFF,
            "request_timeout": 10.0,
            "proxy": None,
        }
        super().__init__(name, url, token, room, **(settings | options))
        self.room = room

    @property
    def log(self) -> list[tuple[float, ClientEvent]]:
        """``(monotonic time, item)`` for every item of the stream, in order."""
        return list(zip(self.stamps, self.items, strict=True))

    @property
    def cursor(self) -> tuple[str | None, int | None]:
        """``(epoch, offset)`` of the last room event this peer has read.

        Not the client's own cursor, which moves when a frame arrives,
        before the event reaches the stream that the test reads.
        """
        for item in reversed(self.items):
            if isinstance(item, Event):
                return item.epoch, item.offset
        return None, None

    def stamped(self, kind: type[T], after: float = 0.0) -> list[tuple[float, T]]:
        """Items of type ``kind`` that arrived after monotonic time ``after``."""
        return [(t, i) for t, i in self.log if t > after and isinstance(i, kind)]

    def events(self) -> list[Event]:
        """The room events handed to the application, in order."""
        return self.all(Event)


class Crowd:
    """Starts peers, a batch at a time, and closes every one at the end."""

    def __init__(self) -> None:
        self.peers: list[Peer] = []

    async def enter(
        self, name: str, url: str, token: str, room: str, **options: Any
    ) -> Peer:
        """One peer, connected, read and joined to ``room``."""
        peer = Peer(name, url, token, room, **options)
        self.peers.append(peer)
        await peer.start()
        return peer

    async def enter_all(
        self, people: Sequence[tuple[str, str]], url: str, room: str, **options: Any
    ) -> list[Peer]:
        """A peer per ``(name, token)``, started ``START_BATCH`` at a time."""
        started: list[Peer] = []
        for first in range(0, len(people), START_BATCH):
            batch = people[first : first + START_BATCH]
            started += await asyncio.gather(
                *(
                    self.enter(name, url, token, room, **options)
                    for name, token in batch
                )
            )
        return started

    async def enter_lesson(
        self, lesson: Lesson, host_url: str, *urls: str, **options: Any
    ) -> tuple[Peer, list[Peer]]:
        """The host through ``host_url``; the students spread evenly over ``urls``.

        ``options`` go to the students' clients.
        """
        host = await self.enter("host", host_url, lesson.host_token, lesson.room)
        share = -(-len(lesson.students) // len(urls))
        pupils: list[Peer] = []
        for index, url in enumerate(urls):
            people = lesson.students[index * share : (index + 1) * share]
            pupils += await self.enter_all(people, url, lesson.room, **options)
        return host, pupils

    async def close(self) -> None:
        """Close every peer."""
        await asyncio.gather(*(peer.close() for peer in self.peers))


@pytest.fixture
async def crowd() -> AsyncIterator[Crowd]:
    """Peers of this test, all closed when it ends."""
    async with closing(Crowd()) as people:
        yield people


async def converged(
    peers: Sequence[Peer], within: float = WAIT
) -> tuple[str | None, int | None]:
    """Wait until every peer has read up to the same (epoch, offset); return it."""
    deadline = time.monotonic() + within
    for _ in range(int(within / 0.05) + 1):
        cursors = {peer.cursor for peer in peers}
        if len(cursors) == 1:
            (cursor,) = cursors
            return cursor
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    counts: dict[tuple[str | None, int | None], list[str]] = {}
    for peer in peers:
        counts.setdefault(peer.cursor, []).append(peer.name)
    raise AssertionError(f"peers did not converge within {within} s: {counts}")


def contiguous(offsets: Sequence[int]) -> bool:
    """Whether ``offsets`` go up by exactly one each time."""
    return all(b == a + 1 for a, b in itertools.pairwise(offsets))
