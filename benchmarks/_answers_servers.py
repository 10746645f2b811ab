"""The servers of the answers benchmark, and the lesson they all run.

Each server under test runs as its own process, started here on a free port
of the loopback interface: ``lophoc serve`` with its SQLite store or with a
redis-server of its own, or one of the two echo servers below. The lesson is the same
on both lophoc rows: linked classes of several schools and a quiz with one
question per round; the students' join tokens are minted here rather than
through the API, which is not what is measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
import shutil
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _load import raise_open_files_limit

from client_sdk.protocol import MSGPACK_SUBPROTOCOL, Role
from server.auth import mint

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
#: The same room id on every server, so every answer frame has the same size.
LESSON_ID = "bench-answers"
SCHOOLS = 4
CLASSES_PER_SCHOOL = 2
OPTIONS = ["an apple", "a banana", "a cherry", "a durian"]

SERVER_START_TIMEOUT = 20.0
SERVER_STOP_TIMEOUT = 10.0
#: Longer than a round can last, so that the host, not the deadline, closes
#: each question before asking the next.
QUESTION_SECONDS = 120


def serve_command(port: int, data_dir: Path) -> list[str]:
    """The command line of a ``lophoc serve`` node on ``port``."""
    return [
        sys.executable,
        "-m",
        "server.cli",
        "serve",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
    ]


# The echo server -----------------------------------------------------------


async def echo_serve(port: int) -> None:
    """Send every frame back to its sender, until SIGTERM."""
    import signal

    from websockets.asyncio.server import ServerConnection, serve
    from websockets.exceptions import ConnectionClosed
    from websockets.typing import Subprotocol

    async def echo(connection: ServerConnection) -> None:
        # The clients drop their connections without a closing handshake at
        # the end; that is no error worth a traceback.
        with contextlib.suppress(ConnectionClosed):
            async for message in connection:
                await connection.send(message)

    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    async with serve(
        echo,
        HOST,
        port,
        subprotocols=[Subprotocol(MSGPACK_SUBPROTOCOL)],
        # A lophoc node's defaults: no compression, 64 KiB frames, pings
        # every 20 s, so neither server does more housekeeping.
        compression=None,
        max_size=65_536,
        ping_interval=20.0,
        ping_timeout=20.0,
        # The clients connect in batches; the default backlog of 100 would
        # refuse some of them.
        backlog=2048,
    ):
        await stop


def echo_main(port: int) -> None:
    """Entry point of the echo server process: uvloop, as uvicorn uses."""
    raise_open_files_limit()
    import uvloop

    uvloop.run(echo_serve(port))


async def uvicorn_echo(
    scope: dict[str, Any],
    receive: Callable[[], Awaitable[dict[str, Any]]],
    send: Callable[[dict[str, Any]], Awaitable[None]],
) -> None:
    """An ASGI application that sends every frame back, as lophoc sends.

    Served by uvicorn with lophoc's :class:`~server.transport.FrameProtocol`,
    it writes each echo as a frame straight to the connection while that is
    open for frames, and through ASGI otherwise: a lophoc session's way of
    sending, with none of lophoc's work in between.
    """
    from server.transport import Framer, frame_protocol

    if scope["type"] != "websocket":
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept", "subprotocol": MSGPACK_SUBPROTOCOL})
    protocol, framer = frame_protocol(scope), Framer()
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":
            return
        payload = message.get("bytes")
        if payload is None:
            await send({"type": "websocket.send", "text": message.get("text")})
        elif protocol is not None and protocol.open_for_frames():
            protocol.write_frame(framer.frame(payload, binary=True))
        else:
            await send({"type": "websocket.send", "bytes": payload})


def uvicorn_echo_main(port: int) -> None:
    """Entry point of the uvicorn echo server: lophoc's uvicorn settings."""
    raise_open_files_limit()
    import uvicorn

    from server.transport import FrameProtocol

    uvicorn.run(
        uvicorn_echo,
        host=HOST,
        port=port,
        ws=FrameProtocol,
        ws_max_size=65_536,
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
        ws_per_message_deflate=False,
        access_log=False,
        log_level="warning",
        lifespan="off",
        backlog=2048,
    )


# Servers -------------------------------------------------------------------


#: The echo servers by row name, and the function each one's process runs.
ECHOES: dict[str, Callable[[int], None]] = {
    "echo": echo_main,
    "echo-uvicorn": uvicorn_echo_main,
}


@dataclass
class Server:
    """A server under test and, for the redis row, its redis-server."""

    name: str
    port: int
    pid: int
    stop: Callable[[], Awaitable[None]]
    log: Path
    redis_pid: int | None = None
    stop_redis: Callable[[], Awaitable[None]] | None = None


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


async def wait_listening(
    port: int, alive: Callable[[], bool], what: str, log: Path
) -> None:
    """Return once ``port`` accepts connections; raise if ``alive()`` goes false."""
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while True:
        try:
            _, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            if not alive():
                raise RuntimeError(f"{what} exited at start:\n{tail(log)}") from None
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{what} did not listen on {port}:\n{tail(log)}"
                ) from None
            await asyncio.sleep(0.1)
            continue
        writer.close()
        await writer.wait_closed()
        return


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


async def stop_process(process: asyncio.subprocess.Process) -> None:
    """SIGTERM, then SIGKILL if it takes longer than the stop timeout."""
    if process.returncode is not None:
        return
    process.terminate()
    try:
        await asyncio.wait_for(process.wait(), SERVER_STOP_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()


async def start_redis(workdir: Path) -> tuple[asyncio.subprocess.Process, int]:
    """A redis-server of our own, without persistence, on a free port."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server not found on the PATH")
    port = free_port()
    log = workdir / "redis.log"
    with log.open("wb") as output:
        # No snapshots and no append-only file: the row measures lophoc
        # with a store that answers from memory.
        process = await asyncio.create_subprocess_exec(
            binary,
            "--port",
            str(port),
            "--bind",
            HOST,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
            stdout=output,
            stderr=output,
        )
    try:
        await wait_listening(port, lambda: process.returncode is None, "redis", log)
    except BaseException:
        await stop_process(process)
        raise
    return process, port


async def start_server(name: str, secret: str, workdir: Path) -> Server:
    """Start server ``name`` (and its redis) and wait until it accepts."""
    port = free_port()
    log = workdir / f"{name}.log"
    if name in ECHOES:
        context = multiprocessing.get_context("spawn")
        process = context.Process(target=ECHOES[name], args=(port,), daemon=True)
        process.start()

        async def stop_echo() -> None:
            process.terminate()
            await asyncio.to_thread(process.join, SERVER_STOP_TIMEOUT)
            if process.is_alive():
                process.kill()

        try:
            await wait_listening(port, process.is_alive, name, log)
        except BaseException:
            await stop_echo()
            raise
        if process.pid is None:
            raise RuntimeError(f"the {name} server process has no pid")
        return Server(name, port, process.pid, stop_echo, log)

    redis = None
    command = [*serve_command(port, workdir / name), "--log-level", "warning"]
    if name == "lophoc-memory":
        command += ["--store", "memory://"]
    if name == "lophoc-redis":
        redis, redis_port = await start_redis(workdir)
        command += ["--store", f"redis://{HOST}:{redis_port}/0"]
    env = dict(os.environ)
    env.update(
        LOPHOC_SECRET=secret,
        # A student sends two or three frames here; the limits only have to
        # stay out of the way of the host and the join storm.
        LOPHOC_MESSAGES_PER_SECOND="1000",
        LOPHOC_BURST="1000",
        # Room at each student for the presence events of the join storm
        # and the question's events, should a worker fall behind reading.
        LOPHOC_SEND_QUEUE="4096",
    )
    with log.open("wb") as output:
        lophoc = await asyncio.create_subprocess_exec(
            *command, cwd=ROOT, env=env, stdout=output, stderr=output
        )

    async def stop_lophoc() -> None:
        await stop_process(lophoc)

    async def stop_redis() -> None:
        if redis is not None:
            await stop_process(redis)

    try:
        await wait_listening(port, lambda: lophoc.returncode is None, name, log)
    except BaseException:
        await stop_lophoc()
        await stop_redis()
        raise
    return Server(
        name,
        port,
        lophoc.pid,
        stop_lophoc,
        log,
        redis_pid=redis.pid if redis is not None else None,
        stop_redis=stop_redis,
    )


# The lesson ----------------------------------------------------------------


def lesson_file(questions: int) -> str:
    """The lesson: linked classes of several schools, a quiz of ``questions``."""
    classes = "\n".join(
        f"  - {{school: school-{s}, class: 10A{c}}}"
        for s in range(1, SCHOOLS + 1)
        for c in range(1, CLASSES_PER_SCHOOL + 1)
    )
    options = ", ".join(json.dumps(option) for option in OPTIONS)
    quiz = "\n".join(
        f"""\
      - kind: single
        prompt: Which fruit is yellow and curved? (round {number})
        options: [{options}]
        answer: 1
        seconds: {QUESTION_SECONDS}"""
        for number in range(1, questions + 1)
    )
    return f"""\
title: Answer burst benchmark
id: {LESSON_ID}
host: {{user: t-host, name: Teacher Host}}
classes:
{classes}
activities:
  - kind: quiz
    title: Fruit
    questions:
{quiz}
"""


def http(
    method: str, port: int, path: str, token: str, body: bytes | None = None
) -> Any:
    """One HTTP request to the API; the decoded JSON of the response."""
    request = urllib.request.Request(
        f"http://{HOST}:{port}{path}",
        data=body,
        method=method,
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/yaml",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        raise RuntimeError(f"{method} {path}: {exc.code} {detail}") from exc


def student_tokens(secret: str, students: int) -> list[tuple[str, str]]:
    """(user, token) for each student, spread over the linked classes.

    Minted here rather than through ``POST /api/join``: 2,000 HTTP joins
    would measure the API, and the tokens are the same either way.
    """
    people = []
    for index in range(students):
        school = index % SCHOOLS + 1
        klass = index // SCHOOLS % CLASSES_PER_SCHOOL + 1
        user = f"s{index:05d}"
        people.append(
            (
                user,
                mint(
                    secret,
                    user=user,
                    name=f"Student {index:05d}",
                    role=Role.STUDENT,
                    rooms=[LESSON_ID],
                    school=f"school-{school}",
                    class_=f"10A{klass}",
                ),
            )
        )
    return people
