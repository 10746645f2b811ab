"""Helpers shared by the test modules: free ports and redis-server processes."""

from __future__ import annotations

import pathlib
import shutil
import signal
import socket
import subprocess
import time

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
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

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
