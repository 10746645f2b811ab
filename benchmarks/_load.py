"""The clients of the fan-out benchmark: receivers in worker processes, and
the publisher.

Each worker process runs one event loop holding its share of the room's
members. It connects and joins them when told, then counts every broadcast
frame the publisher tagged, per measurement phase, with its publish-to-receive
latency. Two numbers go to shared memory as they change, so the publisher can
read them without a round trip: the highest sequence number every member of
this worker has received (the publisher's flow-control window is measured
against it) and the count of all frames received (to see when the join storm
has settled). When the first moves, a byte on the progress pipe wakes the
publisher, which would otherwise have to poll and take CPU from the server.
Everything else is sent back over the control pipe on request.

:class:`Workers` is the orchestrator's handle on those processes, and
:class:`Publisher` the teacher's connection, run by the orchestrator itself.
"""

from __future__ import annotations

import array
import asyncio
import collections
import contextlib
import json
import multiprocessing
import os
import resource
import struct
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

import _wire
from _wire import Frame
from _wsclient import WsClient, connect

from client_sdk.protocol import MSGPACK_SUBPROTOCOL, Broadcast

#: The body of every benchmark broadcast starts with the publisher's send
#: time (``time.time_ns``: one clock for every process of one machine), the
#: sequence number and the phase; the rest is padding.
BODY = struct.Struct("<qqq")

WARMUP, SATURATION, FIXED_RATE = 0, 1, 2
PHASES = ("warmup", "saturation", "fixed_rate")

#: Handshakes in flight per worker: enough to connect a thousand clients in
#: a few seconds, few enough for the server's accept backlog.
CONNECT_CONCURRENCY = 32
JOIN_TIMEOUT = 30.0


T = TypeVar("T")


def run_on_uvloop(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop, which uvicorn picks for lophoc when installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def save_report(report: dict[str, Any], output: Path) -> None:
    """Write a benchmark's report as JSON to ``output`` and say where."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {output}")


async def until_still(
    count: Callable[[], int], still: float, within: float, poll: float = 0.05
) -> bool:
    """Wait until ``count()`` has not moved for ``still`` seconds.

    The count is of frames reaching the clients: when it stops moving, the
    server has finished what a wave of joins set off. False when that did
    not happen within ``within`` seconds.
    """
    deadline = time.monotonic() + within
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now = count()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= still:
            return True
        await asyncio.sleep(poll)
    return False


def raise_open_files_limit() -> int:
    """Lift the soft limit on open files to the hard one; returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` so far, from /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except FileNotFoundError:
        # The process has exited; a crashed worker shows in the lost frames.
        return 0.0
    # The command name (field 2) may hold spaces; fields count from after it.
    fields = stat[stat.rindex(b")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def machine_cpu() -> dict[str, float]:
    """CPU seconds the whole machine has spent, by kind, from /proc/stat."""
    with open("/proc/stat") as handle:
        ticks = [int(value) for value in handle.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks
    hertz = os.sysconf("SC_CLK_TCK")
    return {
        "machine": (user + nice + system) / hertz,
        # Loopback TCP is mostly processed in softirq, which the kernel may
        # charge to no process at all; shown apart so it is not mistaken
        # for another program's work.
        "interrupts": (irq + softirq) / hertz,
        # Time the hypervisor gave to other guests while this one waited.
        "steal": steal / hertz,
    }


async def receive(pipe: Connection) -> Any:
    """The next object from ``pipe``, without blocking the event loop to wait."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(pipe.fileno(), readable)
    try:
        await ready
    finally:
        loop.remove_reader(pipe.fileno())
        # uvloop makes a watched descriptor non-blocking, and Connection's
        # recv and send cannot resume a partial read or write.
        os.set_blocking(pipe.fileno(), True)
    # The sender writes a whole message at once; reading it may block for
    # the moment a large report takes to cross the pipe, which is fine.
    return pipe.recv()


@dataclass(slots=True)
class PhaseStats:
    """What one worker saw of one phase."""

    frames: int = 0
    latencies_ns: array.array[int] = field(default_factory=lambda: array.array("q"))
    last_ns: int = 0


class Member:
    """One client of the room: its connection and what it has received."""

    __slots__ = ("client", "counts", "pool", "waiting")

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.client: WsClient | None = None
        self.counts = [0] * len(PHASES)
        #: (frame type, future) awaited during the handshake and the join.
        self.waiting: tuple[str, asyncio.Future[Frame]] | None = None

    def on_message(self, data: bytes, now: int) -> None:
        """Count a tagged broadcast, or hand a reply to whoever waits for it."""
        self.pool.received += 1
        message = _wire.decode(self.pool.dialect, self.client, data)
        if message is None:
            return
        if message.type == "broadcast" and len(message.body) >= BODY.size:
            self.pool.record(self, message.body, now)
            return
        waiting = self.waiting
        if waiting is None:
            return
        kind, future = waiting
        if message.type == kind and not future.done():
            future.set_result(message)
        elif message.type == "error" and not future.done():
            future.set_exception(RuntimeError(f"server error {message.code!r}"))

    async def expect(self, kind: str) -> Frame:
        """Wait for the next frame of type ``kind``."""
        future: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self.waiting = (kind, future)
        try:
            return await asyncio.wait_for(future, JOIN_TIMEOUT)
        finally:
            self.waiting = None


class Pool:
    """The members held by one worker process."""

    def __init__(
        self, slot: int, shared: Any, workers: int, progress: Connection
    ) -> None:
        self.slot = slot
        self.dialect = _wire.LOPHOC
        self.progress = progress.fileno()
        os.set_blocking(self.progress, False)
        self.shared = shared
        self.workers = workers
        self.members: list[Member] = []
        self.phases = [PhaseStats() for _ in PHASES]
        #: Members of this worker still missing each sequence number.
        self.missing: dict[int, int] = {}
        self._received = 0

    @property
    def received(self) -> int:
        """Frames of any kind received by this worker's members."""
        return self._received

    @received.setter
    def received(self, value: int) -> None:
        self._received = value
        self.shared[self.workers + self.slot] = value

    def record(self, member: Member, body: bytes, now: int) -> None:
        """Count one tagged broadcast for ``member``."""
        sent, sequence, phase = BODY.unpack_from(body)
        member.counts[phase] += 1
        stats = self.phases[phase]
        stats.frames += 1
        stats.latencies_ns.append(now - sent)
        if now > stats.last_ns:
            stats.last_ns = now
        # Each member receives in publish order, so sequence numbers become
        # complete in order too and the shared value only moves forward.
        left = self.missing.get(sequence, len(self.members)) - 1
        if left:
            self.missing[sequence] = left
        else:
            self.missing.pop(sequence, None)
            self.shared[self.slot] = sequence
            # A full pipe already holds a wake-up the publisher has not read.
            with contextlib.suppress(BlockingIOError):
                os.write(self.progress, b"\x01")

    async def connect(
        self,
        host: str,
        ports: Sequence[int],
        room: str,
        tokens: list[str],
        subprotocol: str | None,
    ) -> tuple[int, list[str]]:
        """Connect and join one member per token; returns the count and errors.

        Members go to the ``ports`` (the nodes of one server) in turn.
        """
        semaphore = asyncio.Semaphore(CONNECT_CONCURRENCY)
        errors: list[str] = []

        async def join(index: int, token: str) -> None:
            member = Member(self)
            async with semaphore:
                try:
                    hello = asyncio.get_running_loop().create_future()
                    member.waiting = ("hello", hello)
                    member.client = await connect(
                        host,
                        ports[index % len(ports)],
                        _wire.path(self.dialect, room, token),
                        member.on_message,
                        subprotocol,
                    )
                    _wire.opened(self.dialect, member.client)
                    await asyncio.wait_for(hello, JOIN_TIMEOUT)
                    joined = asyncio.create_task(member.expect("joined"))
                    await asyncio.sleep(0)
                    _wire.send(
                        self.dialect,
                        member.client,
                        {"type": "join", "id": "j", "room": room},
                    )
                    await joined
                except Exception as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    if member.client is not None:
                        member.client.abort()
                    return
            self.members.append(member)

        await asyncio.gather(
            *(join(index, token) for index, token in enumerate(tokens))
        )
        return len(self.members), errors[:5]

    def report(self, phase: int) -> dict[str, Any]:
        """What this worker saw of ``phase``, for the orchestrator to merge."""
        stats = self.phases[phase]
        closed: dict[int, int] = {}
        for member in self.members:
            if member.client is not None and member.client.closed.done():
                code = member.client.closed.result()
                closed[code] = closed.get(code, 0) + 1
        return {
            "frames": stats.frames,
            "latencies_ns": stats.latencies_ns.tobytes(),
            "last_ns": stats.last_ns,
            "counts": [member.counts[phase] for member in self.members],
            "closed": closed,
        }

    def reset(self, phase: int) -> None:
        """Forget what was counted of ``phase``, before it runs again."""
        self.phases[phase] = PhaseStats()
        for member in self.members:
            member.counts[phase] = 0

    def close(self) -> None:
        """Drop every connection at once; the server sees them go."""
        for member in self.members:
            if member.client is not None:
                member.client.abort()


# Worker processes ---------------------------------------------------------


async def serve(
    slot: int, pipe: Connection, progress: Connection, shared: Any, workers: int
) -> None:
    """Obey the orchestrator's requests until told to close."""
    pool = Pool(slot, shared, workers, progress)
    while True:
        request = await receive(pipe)
        kind = request[0]
        if kind == "connect":
            _, host, ports, room, tokens, subprotocol, pool.dialect = request
            started = time.monotonic()
            count, errors = await pool.connect(host, ports, room, tokens, subprotocol)
            pipe.send(("connected", count, errors, time.monotonic() - started))
        elif kind == "report":
            pipe.send(("report", pool.report(request[1])))
        elif kind == "reset":
            pool.reset(request[1])
            pipe.send(("reset",))
        elif kind == "close":
            pool.close()
            # Let the aborts reach the sockets before the process exits.
            await asyncio.sleep(0.1)
            pipe.send(("closed",))
            return


def worker_main(
    slot: int, pipe: Connection, progress: Connection, shared: Any, workers: int
) -> None:
    """Entry point of a worker process."""
    raise_open_files_limit()
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(slot, pipe, progress, shared, workers))
    else:
        uvloop.run(serve(slot, pipe, progress, shared, workers))


# Publisher ----------------------------------------------------------------


class Publisher:
    """The teacher's connection: sends tagged broadcasts, counts the replies."""

    def __init__(self, room: str, body_size: int, dialect: str = _wire.LOPHOC) -> None:
        self.room = room
        self.dialect = dialect
        self.client: WsClient | None = None
        self.sequence = 0
        self.acks = 0
        self.echoes = 0
        self.errors: collections.Counter[str] = collections.Counter()
        self.event_bytes = 0
        self.command_bytes = 0
        self._padding = b"\x00" * max(0, body_size - BODY.size)
        self._waiting: tuple[str, asyncio.Future[Frame]] | None = None

    async def open(self, host: str, port: int, token: str) -> None:
        """Connect and join the room."""
        loop = asyncio.get_running_loop()
        hello: asyncio.Future[Frame] = loop.create_future()
        self._waiting = ("hello", hello)
        lophoc = self.dialect == _wire.LOPHOC
        self.client = await connect(
            host,
            port,
            _wire.path(self.dialect, self.room, token),
            self.on_message,
            MSGPACK_SUBPROTOCOL if lophoc else None,
        )
        _wire.opened(self.dialect, self.client)
        await asyncio.wait_for(hello, JOIN_TIMEOUT)
        joined: asyncio.Future[Frame] = loop.create_future()
        self._waiting = ("joined", joined)
        _wire.send(
            self.dialect,
            self.client,
            {"type": "join", "id": "j", "room": self.room},
        )
        await asyncio.wait_for(joined, JOIN_TIMEOUT)
        self._waiting = None

    def on_message(self, data: bytes, now: int) -> None:
        """Count acks, errors and the publisher's own copy of each event."""
        message = _wire.decode(self.dialect, self.client, data)
        if message is None:
            return
        if message.type == "broadcast":
            self.echoes += 1
            self.event_bytes = len(data)
        elif message.type == "ack":
            self.acks += 1
        elif message.type == "error":
            self.errors[message.code] += 1
        if self._waiting is not None:
            kind, future = self._waiting
            if message.type == kind and not future.done():
                future.set_result(message)

    def publish(self, phase: int) -> int:
        """Send the next message of ``phase``; returns its sequence number."""
        assert self.client is not None, "publish before open"
        self.sequence += 1
        body = BODY.pack(time.time_ns(), self.sequence, phase) + self._padding
        command = Broadcast(
            id=str(self.sequence), room=self.room, topic="bench", body=body
        )
        self.command_bytes = _wire.send(self.dialect, self.client, command)
        return self.sequence


# The orchestrator's side -------------------------------------------------


class Workers:
    """The client worker processes of one server's run."""

    def __init__(
        self,
        processes: Sequence[multiprocessing.process.BaseProcess],
        pipes: list[Connection],
        progress: list[Connection],
        shared: Any,
    ) -> None:
        self.processes = processes
        self.pipes = pipes
        #: ``done[i]`` then ``received[i]`` for worker ``i``, kept by its Pool.
        self.shared = shared
        self._progress = progress
        self._moved = asyncio.Event()
        loop = asyncio.get_running_loop()
        for pipe in progress:
            os.set_blocking(pipe.fileno(), False)
            loop.add_reader(pipe.fileno(), self._readable, pipe.fileno())

    @property
    def count(self) -> int:
        """How many workers there are."""
        return len(self.processes)

    def completed(self) -> int:
        """The highest sequence number every receiver has."""
        return int(min(self.shared[: self.count]))

    def received(self) -> int:
        """Frames of any kind received so far by all receivers."""
        return int(sum(self.shared[self.count :]))

    def expect_progress(self) -> None:
        """Arm :meth:`progress`; call before reading :meth:`completed`."""
        self._moved.clear()

    async def progress(self, seconds: float) -> None:
        """Wait until some worker's completed sequence moves, or ``seconds``."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, seconds)):
                await self._moved.wait()

    async def connect(
        self,
        ports: Sequence[int],
        room: str,
        tokens: Sequence[str],
        subprotocol: str | None,
        dialect: str,
        host: str = "127.0.0.1",
    ) -> tuple[int, list[str]]:
        """Connect ``tokens`` to ``room``, shared out over the workers.

        Returns how many members the workers hold now, and the errors of
        those that did not join.
        """
        shares = [tokens[slot :: self.count] for slot in range(self.count)]
        for pipe, share in zip(self.pipes, shares, strict=True):
            pipe.send(("connect", host, ports, room, share, subprotocol, dialect))
        # Each worker answers with all the members it holds so far.
        replies = [await receive(pipe) for pipe in self.pipes]
        return (
            sum(reply[1] for reply in replies),
            [error for reply in replies for error in reply[2]],
        )

    async def ask(self, request: tuple[Any, ...]) -> list[Any]:
        """Send ``request`` to every worker; their answers, in worker order."""
        for pipe in self.pipes:
            pipe.send(request)
        return [await receive(pipe) for pipe in self.pipes]

    def close(self) -> None:
        """Stop watching the progress pipes."""
        loop = asyncio.get_running_loop()
        for pipe in self._progress:
            loop.remove_reader(pipe.fileno())
            pipe.close()

    def _readable(self, fd: int) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(fd, 65_536)
        self._moved.set()


def start_workers(count: int) -> Workers:
    """Start ``count`` worker processes, each with an empty pool."""
    # spawn, not fork: the parent has an event loop and threads by now.
    context = multiprocessing.get_context("spawn")
    shared = context.RawArray("q", 2 * count)
    processes = []
    pipes = []
    progress = []
    for slot in range(count):
        parent, child = context.Pipe()
        woken, waker = context.Pipe(duplex=False)
        process = context.Process(
            target=worker_main,
            args=(slot, child, waker, shared, count),
            name=f"fanout-worker-{slot}",
            daemon=True,
        )
        process.start()
        child.close()
        waker.close()
        processes.append(process)
        pipes.append(parent)
        progress.append(woken)
    return Workers(processes, pipes, progress, shared)


async def stop_workers(workers: Workers) -> None:
    """Close every worker's connections and wait for the processes to end."""
    with contextlib.suppress(OSError, EOFError):
        await asyncio.wait_for(workers.ask(("close",)), 10)
    for process in workers.processes:
        process.join(timeout=5)
        if process.is_alive():
            process.kill()
    workers.close()
