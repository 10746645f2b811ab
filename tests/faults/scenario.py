"""A quiz of a few hundred students through the proxy, and a node lost mid-answers.

Nodes A and B share one Redis. Every client reaches the nodes through the
proxy, which sends them to A; the room's writer is on A. While the
students' answers arrive, a fault takes A away (a kill -9 in
test_failover.py, a SIGTERM drain in test_drain.py); the clients reconnect
to B, join again from their last offset and retry unanswered commands
under the same ids. :func:`run_quiz_outage` records what happened, and the
``check_*`` functions hold the promises both kinds of fault must keep.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from client_sdk import (
    Disconnected,
    QuestionOpened,
    QuestionRevealed,
    Reconnected,
    Resumed,
    Resynced,
)
from client_sdk.protocol import Ack, Event, QueuePolicy
from tests.helpers import MISSING_REDIS, RedisProcess
from tests.lessons.conftest import Api

from .conftest import Cluster, Crowd, Lesson, Peer, contiguous, create_lesson, spread
from .proxy import TcpProxy

#: Answers are sent over this many seconds from ``opens_at`` ...
ANSWER_SPREAD = 2.0
#: ... and node A is lost this long after ``opens_at``: half before, half after.
FAULT_AT = 1.0
#: Every client acknowledged again within this long after the fault.
RECOVERY_TARGET = 5.0
#: Beyond this, recovery is broken, not slow.
RECOVERY_LIMIT = 20.0


@dataclass
class Outage:
    """What the scenario recorded."""

    students: int
    lesson: Lesson
    peers: list[Peer]
    opened: QuestionOpened
    #: Monotonic and wall-clock time of the fault.
    at: float
    at_wall: float
    #: Answers acknowledged before the fault.
    answered_before: int
    #: Per student, in enrolment order: the answer's ack, or what it raised.
    acks: list[Ack | BaseException]
    #: Per peer: seconds from the fault to the ack of a command sent at it.
    acked_again: list[float | BaseException]
    report: dict[str, Any]
    #: Users the report shows present once every client has left.
    present_after_leaving: list[str]
    #: Seconds from the fault to B's log line "writer ready", if found.
    takeover: float | None = None
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """The measured figures, for the summary after the run."""
        waits = [w for w in self.acked_again if isinstance(w, float)]
        rejoined = [
            peer.stamped(Resumed, after=self.at)[0][0] - self.at
            for peer in self.peers
            if peer.stamped(Resumed, after=self.at)
        ]
        reconnected = [
            peer.stamped(Reconnected, after=self.at)[0][0] - self.at
            for peer in self.peers
            if peer.stamped(Reconnected, after=self.at)
        ]
        takeover = "?" if self.takeover is None else f"{self.takeover:.2f} s"
        return (
            f"{self.students} students: {self.answered_before} answers acked "
            f"before the fault; B wrote the room {takeover} after it; clients "
            f"reconnected after {spread(reconnected)}, resumed after "
            f"{spread(rejoined)}; acked again after {spread(waits)}"
        )


async def answer_later(
    peer: Peer, opened: QuestionOpened, delay: float, value: int
) -> Ack:
    """Answer ``delay`` seconds after the question opens."""
    await peer.client.wait_until(opened.opens_at + delay * 1000)
    return await peer.client.answer(
        peer.room, opened.question.number, value, id=f"{peer.name}-answer"
    )


async def command_after_fault(
    peer: Peer,
    opened: QuestionOpened,
    answered: asyncio.Task[Ack] | None = None,
    value: int = 0,
) -> float:
    """A command for the room's writer, sent at the fault; when it was acked.

    A student answers again: once its scheduled answer is acked (at once if
    that came before the fault), the same answer under the same id, which
    the writer acks as a duplicate. The host changes the queue policy.
    """
    if answered is None:
        await peer.client.set_queue_policy(peer.room, QueuePolicy.FIRST_COME)
        return time.monotonic()
    first = await answered
    await peer.client.answer(peer.room, opened.question.number, value, id=first.id)
    return time.monotonic()


async def still_present(api: Api, lesson: Lesson, within: float = 10.0) -> list[str]:
    """Who the report shows present, once it shows nobody or ``within`` ran out."""
    present: list[str] = []
    for _ in range(int(within / 0.2)):
        report = await api.report(lesson.room, lesson.host_token)
        assert report.status_code == 200, report.text
        present = [r["user"] for r in report.json()["attendance"] if r["present"]]
        if not present:
            break
        await asyncio.sleep(0.2)
    return present


def takeover_after(log: str, since_wall: float) -> float | None:
    """Seconds from ``since_wall`` to the first "writer ready" line of a log."""
    for line in log.splitlines():
        found = re.match(r"(\S+ \S+) INFO rooms\.writer: .* writer ready", line)
        if found:
            stamp = datetime.strptime(found[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            return stamp - since_wall
    return None


@contextlib.asynccontextmanager
async def quiz_cluster(
    base: Path, env: dict[str, str] | None = None
) -> AsyncIterator[tuple[Cluster, TcpProxy, Crowd]]:
    """Redis, nodes A and B, a proxy to A and a crowd, all ended afterwards."""
    if shutil.which("redis-server") is None:
        pytest.fail(MISSING_REDIS, pytrace=False)
    redis = RedisProcess(base / "redis")
    redis.start()
    cluster = Cluster(base, redis.url, 2, env)
    crowd = Crowd()
    proxy: TcpProxy | None = None
    try:
        cluster.start()
        proxy = TcpProxy(cluster.nodes[0].port)
        await proxy.start()
        yield cluster, proxy, crowd
    finally:
        await crowd.close()
        if proxy is not None:
            await proxy.close()
        cluster.stop()
        redis.stop()


async def run_quiz_outage(
    cluster: Cluster,
    proxy: TcpProxy,
    crowd: Crowd,
    students: int,
    fault: Callable[[], Awaitable[None]],
) -> Outage:
    """A quiz on A; ``fault`` takes A away mid-answers; everyone moves to B."""
    node_a, node_b = cluster.nodes
    api_a, api_b = Api(node_a), Api(node_b)
    try:
        lesson = await create_lesson(api_a, students)
        room = lesson.room
        # The host joins first, through A, so A claims the room's lease.
        host, pupils = await crowd.enter_lesson(lesson, proxy.ws_url, proxy.ws_url)
        assert host.client.hello is not None
        assert host.client.hello.node == "node-a"

        await host.client.step(room, 0)
        await host.client.ask(room, 0)
        opened = await host.wait(QuestionOpened)
        answers = [
            asyncio.create_task(
                answer_later(pupil, opened, ANSWER_SPREAD * i / students, i % 2)
            )
            for i, pupil in enumerate(pupils)
        ]

        await host.client.wait_until(opened.opens_at + FAULT_AT * 1000)
        at, at_wall = time.monotonic(), time.time()
        await fault()
        answered_before = sum(task.done() for task in answers)
        everyone = [host, *pupils]
        probes = [
            asyncio.create_task(command_after_fault(host, opened)),
            *(
                asyncio.create_task(command_after_fault(pupil, opened, answer, i % 2))
                for i, (pupil, answer) in enumerate(zip(pupils, answers, strict=True))
            ),
        ]
        async with asyncio.timeout(RECOVERY_LIMIT + 10):
            acks = await asyncio.gather(*answers, return_exceptions=True)
            acked_at = await asyncio.gather(*probes, return_exceptions=True)

        # Every client must get the reveal, at the same offset.
        await host.client.reveal(room)
        for peer in everyone:
            await peer.wait(QuestionRevealed)
        report = await api_b.report(room, lesson.host_token)
        assert report.status_code == 200, report.text

        await crowd.close()
        present = await still_present(api_b, lesson)
        return Outage(
            students=students,
            lesson=lesson,
            peers=everyone,
            opened=opened,
            at=at,
            at_wall=at_wall,
            answered_before=answered_before,
            acks=list(acks),
            acked_again=[
                done if isinstance(done, BaseException) else done - at
                for done in acked_at
            ],
            report=report.json(),
            present_after_leaving=present,
            takeover=takeover_after(node_b.log_tail(100_000), at_wall),
        )
    finally:
        await api_a.close()
        await api_b.close()


def check_answers_reported_once(run: Outage) -> None:
    """Every answer was acked, and B's report holds each exactly once."""
    by_user = {s["user"]: s for s in run.report["students"]}
    number = run.opened.question.number
    for index, ((user, _), ack) in enumerate(
        zip(run.lesson.students, run.acks, strict=True)
    ):
        assert isinstance(ack, Ack), f"{user}: the answer failed with {ack!r}"
        stored = [a["value"] for a in by_user[user]["answers"] if a["number"] == number]
        assert stored == [index % 2], user
    (question,) = run.report["questions"]
    assert question["answered"] == run.students


def check_resumed_on_b(run: Outage) -> None:
    """Every client resumed on B: each offset seen once, in order, one epoch."""
    for peer in run.peers:
        reconnects = peer.stamped(Reconnected, after=run.at)
        assert reconnects, f"{peer.name} never reconnected"
        assert reconnects[-1][1].hello.node == "node-b", peer.name
        seen = [
            type(item).__name__ if not isinstance(item, Disconnected) else item
            for stamp, item in peer.log
            if stamp > run.at and not isinstance(item, Event)
        ]
        assert peer.stamped(Resumed, after=run.at), (peer.name, seen)
        assert not peer.stamped(Resynced), f"{peer.name} lost the room's history"
    events = [peer.events() for peer in run.peers]
    reveals = {
        (e.epoch, e.offset)
        for read in events
        for e in read
        if isinstance(e, QuestionRevealed)
    }
    assert len(reveals) == 1, reveals
    for peer, read in zip(run.peers, events, strict=True):
        offsets = [e.offset for e in read]
        assert contiguous(offsets), f"{peer.name}: {offsets}"
        assert len({e.epoch for e in read}) == 1, peer.name


def check_acked_again_within(run: Outage, limit: float) -> None:
    """A command sent at the fault was acked within ``limit`` s, for every client."""
    failed = [w for w in run.acked_again if isinstance(w, BaseException)]
    assert not failed, failed
    waits = [w for w in run.acked_again if isinstance(w, float)]
    slow = [w for w in waits if w > limit]
    assert not slow, f"{len(slow)} of {len(waits)} over {limit} s: {spread(waits)}"
