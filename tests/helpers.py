"""Helpers shared by the test modules: free ports, redis-server and lophoc
processes, and WAV tones."""

from __future__ import annotations

import contextlib
import math
import os
import pathlib
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import wave
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import httpx

from client_sdk.protocol import Role
from server import auth

REPO = pathlib.Path(__file__).resolve().parents[1]

#: How long a server may take to answer /healthz after it was started.
START_TIMEOUT = 20.0

#: What to tell someone whose machine has no redis-server.
MISSING_REDIS = (
    "redis-server is not on PATH: run the tests with `./dev test` (see "
    "README.md), which installs it"
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def end_process(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, then SIGKILL if ``process`` has not exited within ``timeout``."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)


class RedisProcess:
    """A redis-server child process on 127.0.0.1, without persistence.

    ``stop`` and ``start`` again reuse the same port, so clients see the
    server go away and come back at the same address.
    """

    #: redis-server options about keeping data; a subclass may keep it.
    persistence: tuple[str, ...] = ("--save", "", "--appendonly", "no")

    def __init__(self, directory: pathlib.Path, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(MISSING_REDIS)
        self.binary = binary
        self.directory = directory
        self.port = port if port is not None else free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The ``redis://`` URL of database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        """Whether the process was started and has not exited."""
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start redis-server and return once it answers PING."""
        if self.running:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        log = self.directory / "redis.log"
        self._process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                *self.persistence,
                "--dir",
                str(self.directory),
                "--logfile",
                str(log),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not self._answers_ping():
            if self._process.poll() is not None:
                self._process = None
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise RuntimeError(
                    f"redis-server on port {self.port} exited at start:\n{tail}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"redis-server on port {self.port} did not answer in {timeout} s"
                )
            time.sleep(0.01)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop redis-server; its clients see their connections close."""
        process, self._process = self._process, None
        if process is None:
            return
        # A paused server would ignore SIGTERM until it runs again.
        process.send_signal(signal.SIGCONT)
        end_process(process, timeout)

    def pause(self) -> None:
        """Freeze redis-server (SIGSTOP): connections stay open, nothing answers."""
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused redis-server run again (SIGCONT)."""
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), 0.5) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False


class LophocProcess:
    """One ``lophoc serve`` child process on 127.0.0.1 and a free port.

    Its output goes to a log file, which the failure report of a test that
    used it shows (see ``tests/conftest.py``). ``stop`` and ``start`` again
    keep the port and the data directory, so a restarted server is the same
    node to its clients.
    """

    def __init__(
        self,
        directory: pathlib.Path,
        *,
        secret: str,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
        port: int | None = None,
    ) -> None:
        self.directory = directory
        self.data_dir = directory / "data"
        self.extra_env = dict(env or {})
        self.args = list(args)
        self.secret = secret
        self.port = port if port is not None else free_port()
        self.log_path = directory / f"server-{self.port}.log"
        self._process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} port={self.port} pid={self.pid}>"

    @property
    def pid(self) -> int | None:
        """The process id while it runs."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        """Whether the process was started and has not exited."""
        return self._process is not None and self._process.poll() is None

    @property
    def http_url(self) -> str:
        """The base URL of the HTTP endpoints."""
        return f"http://127.0.0.1:{self.port}"

    def token(
        self,
        user: str,
        role: Role,
        rooms: str | list[str],
        *,
        school: str = "",
        class_: str = "",
        name: str = "",
        **kwargs: Any,
    ) -> str:
        """A join token signed with this server's key."""
        return auth.mint(
            self.secret,
            user=user,
            role=role,
            rooms=[rooms] if isinstance(rooms, str) else rooms,
            school=school,
            class_=class_,
            name=name,
            **kwargs,
        )

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the process and return once GET /healthz answers 200."""
        if self.running:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOPHOC_")}
        env.update(LOPHOC_SECRET=self.secret, PYTHONUNBUFFERED="1")
        env.update(self.extra_env)
        command = [
            sys.executable,
            "-m",
            "server.cli",
            "serve",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            *self.args,
        ]
        with self.log_path.open("ab") as log:
            log.write(f"$ {' '.join(command)}\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                command,
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while not self._healthy():
            if self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                raise RuntimeError(
                    f"lophoc serve on port {self.port} exited with {code} at "
                    f"start:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"lophoc serve on port {self.port} did not answer /healthz in "
                    f"{timeout} s:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout``."""
        process, self._process = self._process, None
        if process is not None:
            end_process(process, timeout)

    def kill(self) -> None:
        """SIGKILL: the node dies without any cleanup, as in a crash."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.kill()
        process.wait(10)

    def log_tail(self, lines: int = 200) -> str:
        """The last ``lines`` lines of the process output."""
        if not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def get(self, path: str, timeout: float = 5.0) -> httpx.Response:
        """A blocking GET of ``path``; for use outside a running event loop."""
        return httpx.get(self.http_url + path, timeout=timeout)

    def _healthy(self) -> bool:
        try:
            return self.get("/healthz", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False


def processes_in(value: object) -> list[LophocProcess]:
    """The server processes a fixture value is, holds, or runs as nodes."""
    if isinstance(value, LophocProcess):
        return [value]
    members = getattr(value, "servers", None) or getattr(value, "nodes", None)
    if isinstance(value, list | tuple):
        members = value
    if not isinstance(members, list | tuple):
        return []
    return [member for member in members if isinstance(member, LophocProcess)]


class Closable(Protocol):
    """Anything closed with ``await thing.close()``."""

    def close(self) -> Awaitable[None]:
        """Close it."""
        ...


C = TypeVar("C", bound=Closable)


@contextlib.asynccontextmanager
async def closing(thing: C) -> AsyncIterator[C]:
    """Hand out ``thing`` and close it at the end, whatever happened."""
    try:
        yield thing
    finally:
        await thing.close()


def write_tone(
    path: pathlib.Path,
    frequency: float,
    seconds: float = 30.0,
    rate: int = 48_000,
    level: int = 12_000,
) -> pathlib.Path:
    """A 16-bit mono WAV file of a sine tone of peak ``level``."""
    step = 2 * math.pi * frequency / rate
    frames = b"".join(
        struct.pack("<h", int(level * math.sin(step * n)))
        for n in range(int(seconds * rate))
    )
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(frames)
    return path
