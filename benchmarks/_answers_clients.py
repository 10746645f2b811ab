"""The clients of the answers benchmark: students in worker processes, and the host.

Each worker process runs one event loop holding its share of the students.
It connects and joins them when told, then for each round schedules every
student's answer at the moment :class:`Plan` draws for them and records
when it went out and when its ack (or the echo) came back. The count of
frames received goes to shared memory as it changes, so the orchestrator
sees when the join storm is over without a round trip; everything else is
sent back over the worker's pipe on request.

:class:`Workers` is the orchestrator's handle on those processes, and
:class:`Host` the teacher's connection, run by the orchestrator itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import random
import secrets
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import msgspec
from _answers_servers import HOST, LESSON_ID, OPTIONS
from _load import raise_open_files_limit, receive
from _wsclient import WsClient, connect

from client_sdk.protocol import (
    MSGPACK_SUBPROTOCOL,
    Answer,
    AskQuestion,
    CloseQuestion,
    Join,
    ProbeReply,
    QuestionOpened,
    StepActivity,
)

#: A handshake or a join that takes longer than this counts as failed.
JOIN_TIMEOUT = 60.0
#: After the last scheduled send, how long a worker waits for missing acks.
ACK_TIMEOUT = 30.0

encoder = msgspec.msgpack.Encoder()


class Reply(msgspec.Struct):
    """The fields of a server frame the clients look at; others are skipped."""

    type: str
    id: str = ""
    code: str = ""
    message: str = ""
    nonce: str = ""


reply_decoder = msgspec.msgpack.Decoder(Reply)
opened_decoder = msgspec.msgpack.Decoder(QuestionOpened)


def probe_reply(nonce: str) -> bytes:
    """The answer to a ``probe``.

    Without it lophoc probes each connection every second until it has three
    round trips, which would be 2,000 extra frames a second during the burst.
    """
    return encoder.encode(ProbeReply(id="p", nonce=nonce))


# Students, in the worker processes -----------------------------------------


class Student:
    """One student's connection and the fate of their answer."""

    __slots__ = (
        "acked_ns",
        "answer_id",
        "client",
        "error",
        "frame",
        "pool",
        "resend",
        "resend_acked_ns",
        "resend_error",
        "resent_ns",
        "scheduled_ns",
        "sent_ns",
        "user",
        "value",
        "waiting",
    )

    def __init__(self, pool: Pool, user: str) -> None:
        self.pool = pool
        self.user = user
        self.client: WsClient | None = None
        #: (frame type, future) awaited while connecting and joining.
        self.waiting: tuple[str, asyncio.Future[Reply]] | None = None
        self.reset()

    def reset(self) -> None:
        """Forget the last round's answer."""
        self.answer_id = ""
        self.value = 0
        self.frame = b""
        self.resend = False
        self.scheduled_ns = 0
        self.sent_ns = 0
        self.acked_ns = 0
        self.error = ""
        self.resent_ns = 0
        self.resend_acked_ns = 0
        self.resend_error = ""

    def on_message(self, data: bytes, now: int) -> None:
        """Take an ack, an error or a probe; hand join replies to the waiter."""
        reply = reply_decoder.decode(data)
        kind = reply.type
        if kind == "probe":
            if self.client is not None:
                self.client.send_binary(probe_reply(reply.nonce))
            # Not counted: probes never stop, and the count tells when the
            # join storm has.
            return
        self.pool.count_frame()
        if reply.id and reply.id == self.answer_id:
            # lophoc acks an answer; the echo server sends the answer back.
            if kind in ("ack", "answer"):
                self.on_reply(now, "")
                return
            if kind == "error":
                self.on_reply(now, reply.code or "error")
                return
        waiting = self.waiting
        if waiting is None:
            return
        expected, future = waiting
        if future.done():
            return
        if kind == expected:
            future.set_result(reply)
        elif kind == "error":
            future.set_exception(
                RuntimeError(f"server error {reply.code}: {reply.message}")
            )

    def on_reply(self, now: int, error: str) -> None:
        """Record the reply to the answer, or to its second copy."""
        if not self.acked_ns and not self.error:
            if error:
                self.error = error
            else:
                self.acked_ns = now
            self.pool.answered()
            if not self.resend:
                return
            if self.acked_ns and self.client is not None:
                # At once, as a client that timed out on the ack would,
                # while the burst is still on.
                self.resent_ns = time.time_ns()
                self.client.send_binary(self.frame)
            else:
                # A refused answer is not sent again: no second reply comes.
                self.pool.answered()
            return
        if self.resent_ns and not self.resend_acked_ns and not self.resend_error:
            if error:
                self.resend_error = error
            else:
                self.resend_acked_ns = now
            self.pool.answered()

    def send(self) -> None:
        """Send the answer now."""
        if self.client is None or self.client.closed.done():
            self.error = "closed"
            for _ in range(2 if self.resend else 1):
                self.pool.answered()
            return
        self.sent_ns = time.time_ns()
        self.client.send_binary(self.frame)


class Pool:
    """The students of one worker process."""

    def __init__(self, slot: int, shared: Any) -> None:
        self.slot = slot
        self.shared = shared
        self.students: list[Student] = []
        self.frames = 0
        self._outstanding = 0
        self._done: asyncio.Event | None = None

    def count_frame(self) -> None:
        """Count a received frame where the orchestrator can see it."""
        self.frames += 1
        self.shared[self.slot] = self.frames

    def answered(self) -> None:
        """One awaited reply came (or will never come)."""
        self._outstanding -= 1
        if self._outstanding <= 0 and self._done is not None:
            self._done.set()

    async def connect(
        self,
        port: int,
        room: str,
        people: list[tuple[str, str]],
        lophoc: bool,
    ) -> tuple[int, list[str]]:
        """Connect and join one student per (user, token); count and errors."""
        errors: list[str] = []
        # The echo server has no hello and sends the join back as it is.
        greeting, joined = ("hello", "joined") if lophoc else (None, "join")
        join = encoder.encode(Join(id="j", room=room))

        async def enter(user: str, token: str) -> None:
            student = Student(self, user)
            loop = asyncio.get_running_loop()
            try:
                async with asyncio.timeout(JOIN_TIMEOUT):
                    hello: asyncio.Future[Reply] = loop.create_future()
                    if greeting is not None:
                        student.waiting = (greeting, hello)
                    student.client = await connect(
                        HOST,
                        port,
                        f"/ws?room={room}&token={token}",
                        student.on_message,
                        MSGPACK_SUBPROTOCOL,
                    )
                    if greeting is not None:
                        await hello
                    reply: asyncio.Future[Reply] = loop.create_future()
                    student.waiting = (joined, reply)
                    student.client.send_binary(join)
                    await reply
            except Exception as exc:
                errors.append(f"{user}: {type(exc).__name__}: {exc}")
                if student.client is not None:
                    student.client.abort()
                return
            finally:
                student.waiting = None
            self.students.append(student)

        before = len(self.students)
        await asyncio.gather(*(enter(user, token) for user, token in people))
        return len(self.students) - before, errors[:5]

    async def burst(
        self, start_ns: int, spread: float, room: str, number: int, plan: Plan
    ) -> dict[str, Any]:
        """Answer question ``number`` from every student; what came back."""
        loop = asyncio.get_running_loop()
        self._done = asyncio.Event()
        self._outstanding = 0
        for student in self.students:
            student.reset()
            offset, value, resend = plan.draw(student.user)
            student.value = value
            student.resend = resend
            student.answer_id = f"a{number}-{student.user}-{secrets.token_hex(4)}"
            student.frame = encoder.encode(
                Answer(id=student.answer_id, room=room, number=number, value=value)
            )
            student.scheduled_ns = start_ns + int(offset * spread * 1e9)
            self._outstanding += 2 if resend else 1
            # loop.time() is monotonic; the start is wall-clock, shared by
            # every process of the machine.
            delay = (student.scheduled_ns - time.time_ns()) / 1e9
            loop.call_at(loop.time() + delay, student.send)
        if not self.students:
            self._done.set()
        timeout = (start_ns - time.time_ns()) / 1e9 + spread + ACK_TIMEOUT
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._done.wait(), max(1.0, timeout))
        return {
            "users": [s.user for s in self.students],
            "values": [s.value for s in self.students],
            "scheduled_ns": [s.scheduled_ns for s in self.students],
            "sent_ns": [s.sent_ns for s in self.students],
            "acked_ns": [s.acked_ns for s in self.students],
            "errors": [s.error for s in self.students],
            "resent_ns": [s.resent_ns for s in self.students],
            "resend_acked_ns": [s.resend_acked_ns for s in self.students],
            "resend_errors": [s.resend_error for s in self.students],
            "answer_frame_bytes": len(self.students[0].frame) if self.students else 0,
        }

    def close(self) -> None:
        """Drop every connection at once."""
        for student in self.students:
            if student.client is not None:
                student.client.abort()
        self.students = []


@dataclass(frozen=True)
class Plan:
    """Who answers when, what, and who sends twice: the same for every server.

    Drawn from ``seed``, the round and the user id alone, so each server
    gets the same bursts from the same students whatever worker holds them.
    """

    seed: int
    index: int
    resend_share: float

    def draw(self, user: str) -> tuple[float, int, bool]:
        """Share of the spread at which ``user`` answers, the option, a resend."""
        rng = random.Random(f"{self.seed}:{self.index}:{user}")
        return (
            rng.random(),
            rng.randrange(len(OPTIONS)),
            rng.random() < self.resend_share,
        )


async def serve_worker(slot: int, pipe: Connection, shared: Any) -> None:
    """Obey the orchestrator's requests until told to close."""
    pool = Pool(slot, shared)
    while True:
        request = await receive(pipe)
        kind = request[0]
        try:
            if kind == "connect":
                _, port, room, people, lophoc = request
                count, errors = await pool.connect(port, room, people, lophoc)
                pipe.send(("connected", count, errors))
            elif kind == "burst":
                _, start_ns, spread, room, number, plan = request
                report = await pool.burst(start_ns, spread, room, number, plan)
                pipe.send(("burst", report))
            elif kind == "close":
                pool.close()
                # Let the aborts reach the sockets before the process exits.
                await asyncio.sleep(0.1)
                pipe.send(("closed",))
                return
        except Exception:
            # The orchestrator shows this rather than a bare broken pipe.
            pipe.send(("failed", traceback.format_exc()))
            pool.close()
            return


def worker_main(slot: int, pipe: Connection, shared: Any) -> None:
    """Entry point of a client worker process."""
    raise_open_files_limit()
    import uvloop

    uvloop.run(serve_worker(slot, pipe, shared))


@dataclass
class Workers:
    """The client worker processes of one server's run."""

    processes: list[multiprocessing.process.BaseProcess]
    pipes: list[Connection]
    #: Frames received so far by each worker, kept by its Pool.
    shared: Any

    def frames(self) -> int:
        """Frames of any kind received so far by all students."""
        return int(sum(self.shared))

    def send(self, requests: Sequence[tuple[Any, ...]]) -> None:
        """Send request ``i`` to worker ``i``."""
        for pipe, request in zip(self.pipes, requests, strict=True):
            pipe.send(request)

    async def collect(self) -> list[Any]:
        """The next answer of every worker, in worker order.

        Each worker bounds its own work; callers still put a timeout around
        this for a worker that hangs or is starved of CPU.
        """
        replies = []
        for slot, pipe in enumerate(self.pipes):
            try:
                reply = await receive(pipe)
            except (EOFError, OSError) as exc:
                code = self.processes[slot].exitcode
                raise RuntimeError(
                    f"client worker {slot} died (exit code {code})"
                ) from exc
            if reply[0] == "failed":
                raise RuntimeError(f"client worker {slot} failed:\n{reply[1]}")
            replies.append(reply)
        return replies

    async def ask(self, requests: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Send request ``i`` to worker ``i``; their answers, in worker order."""
        self.send(requests)
        return await self.collect()


def start_workers(count: int) -> Workers:
    """Start ``count`` worker processes, each with no students yet."""
    # spawn, not fork: the parent has an event loop and threads by now.
    context = multiprocessing.get_context("spawn")
    shared = context.RawArray("q", count)
    processes: list[multiprocessing.process.BaseProcess] = []
    pipes = []
    for slot in range(count):
        parent, child = context.Pipe()
        process = context.Process(
            target=worker_main,
            args=(slot, child, shared),
            name=f"answers-worker-{slot}",
            daemon=True,
        )
        process.start()
        child.close()
        processes.append(process)
        pipes.append(parent)
    return Workers(processes, pipes, shared)


async def stop_workers(workers: Workers) -> None:
    """Close every worker's connections and wait for the processes to end."""
    with contextlib.suppress(RuntimeError, OSError, TimeoutError):
        async with asyncio.timeout(10):
            await workers.ask([("close",)] * len(workers.pipes))
    for process in workers.processes:
        await asyncio.to_thread(process.join, 5)
        if process.is_alive():
            process.kill()
    for pipe in workers.pipes:
        pipe.close()


# The teacher, in the orchestrator ------------------------------------------


class Host:
    """The teacher's connection: steps the plan and opens the question."""

    def __init__(self) -> None:
        self.client: WsClient | None = None
        self._waiting: dict[str, asyncio.Future[bytes]] = {}

    async def open(self, port: int, token: str) -> None:
        """Connect and join the lesson."""
        hello = self._expect("hello")
        self.client = await connect(
            HOST,
            port,
            f"/ws?room={LESSON_ID}&token={token}",
            self.on_message,
            MSGPACK_SUBPROTOCOL,
        )
        await asyncio.wait_for(hello, JOIN_TIMEOUT)
        await self.command(Join(id="host-join", room=LESSON_ID), "joined")

    def on_message(self, data: bytes, now: int) -> None:
        """Answer probes; hand awaited frames (by id, else by type) over."""
        reply = reply_decoder.decode(data)
        if reply.type == "probe" and self.client is not None:
            self.client.send_binary(probe_reply(reply.nonce))
            return
        future = self._waiting.pop(reply.id, None) or self._waiting.pop(
            reply.type, None
        )
        if future is None or future.done():
            return
        if reply.type == "error":
            future.set_exception(
                RuntimeError(f"host command refused: {reply.code}: {reply.message}")
            )
        else:
            future.set_result(data)

    def _expect(self, key: str) -> asyncio.Future[bytes]:
        future = asyncio.get_running_loop().create_future()
        self._waiting[key] = future
        return future

    async def command(self, command: Any, reply: str = "ack") -> bytes:
        """Send ``command`` and wait for its ``reply`` (matched by id)."""
        if self.client is None:
            raise RuntimeError("the host sends commands only once connected")
        future = self._expect(command.id)
        self.client.send_binary(encoder.encode(command))
        data = await asyncio.wait_for(future, JOIN_TIMEOUT)
        if reply_decoder.decode(data).type != reply:
            raise RuntimeError(f"expected {reply} for {command.id}")
        return data

    async def ask(self, index: int) -> QuestionOpened:
        """Ask question ``index`` of the quiz; the event everyone got."""
        if index == 0:
            await self.command(StepActivity(id="host-step", room=LESSON_ID, index=0))
        else:
            # One question is open at a time, and the last one would stay
            # open until its deadline, QUESTION_SECONDS after it opened.
            await self.command(CloseQuestion(id=f"host-close-{index}", room=LESSON_ID))
        opened = self._expect("question_opened")
        await self.command(
            AskQuestion(id=f"host-ask-{index}", room=LESSON_ID, question=index)
        )
        return opened_decoder.decode(await asyncio.wait_for(opened, JOIN_TIMEOUT))

    def close(self) -> None:
        """Drop the connection."""
        if self.client is not None:
            self.client.abort()
