"""Real ``lophoc serve`` processes, the lesson HTTP API, and watched SDK clients.

The lesson tests drive whole lessons end to end the way schools do: a lesson
file is posted to ``/api/lessons``, students trade join codes for tokens at
``/api/join``, and everyone connects with the Python SDK to a server running
in another process. Each client's stream is read in the background by a
:class:`Watcher`, which keeps every item and every raw frame received, so a
test can wait for one item and later check all of them.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from client_sdk import Backoff, Client, ClientError, ClientEvent, Role
from server import auth
from tests.helpers import free_port

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
#: The token key of every server here (LOPHOC_SECRET needs 48 characters).
SECRET = "lessons-test-key-" + "9f8e7d6c5b4a3210" * 3
#: How long a server may take to answer /healthz after it was started.
START_TIMEOUT = 20.0
#: How long a test waits for one item it expects.
WAIT = 10.0
#: The most stream items a watcher keeps: far above what a lesson here sends.
MAX_ITEMS = 2000
#: Fast, but bounded: a test that loses its server fails within seconds.
TEST_BACKOFF = Backoff(
    initial=0.05, maximum=0.5, jitter=0.5, max_attempts=40, max_elapsed=15.0
)


class ServerProcess:
    """One ``python -m server.cli serve`` child process on a free port."""

    def __init__(self, directory: Path, args: Sequence[str] = ()) -> None:
        self.directory = directory
        self.args = list(args)
        self.port = free_port()
        self.log_path = directory / f"server-{self.port}.log"
        self._process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"<ServerProcess port={self.port}>"

    @property
    def http_url(self) -> str:
        """The base URL of the HTTP API."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        """The WebSocket endpoint, without a query."""
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self) -> None:
        """Start the process and return once GET /healthz answers 200."""
        self.directory.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOPHOC_")}
        env.update(LOPHOC_SECRET=SECRET, PYTHONUNBUFFERED="1")
        command = [
            sys.executable,
            "-m",
            "server.cli",
            "serve",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.directory / "data"),
            *self.args,
        ]
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command,
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        for _ in range(int(START_TIMEOUT / 0.05)):
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"lophoc serve exited with {self._process.returncode} at "
                    f"start:\n{self.log_tail()}"
                )
            try:
                if httpx.get(f"{self.http_url}/healthz", timeout=1.0).is_success:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"lophoc serve never answered:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within 10 s."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def log_tail(self, lines: int = 80) -> str:
        """The last ``lines`` lines of the process output."""
        if not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])


def admin_token(room: str = "admin") -> str:
    """A token of an administrator, who may create lessons for any host."""
    return auth.mint(SECRET, user="admin-1", role=Role.ADMIN, rooms=[room])


def bearer(token: str) -> dict[str, str]:
    """The Authorization header carrying ``token``."""
    return {"authorization": f"Bearer {token}"}


class Api:
    """The lesson HTTP API of one server."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.http = httpx.AsyncClient(base_url=server.http_url, timeout=10.0)

    async def create(
        self, lesson: dict[str, Any], token: str | None = None
    ) -> httpx.Response:
        """POST a lesson file as JSON; the response as it came."""
        return await self.http.post(
            "/api/lessons",
            json=lesson,
            headers=bearer(token or admin_token()),
        )

    async def join(self, code: str, name: str | None = None) -> httpx.Response:
        """POST /api/join with a class or personal code."""
        body = {"code": code} if name is None else {"code": code, "name": name}
        return await self.http.post("/api/join", json=body)

    async def student_token(self, code: str, name: str | None = None) -> str:
        """The token a join code gives, failing the test on any refusal."""
        response = await self.join(code, name)
        assert response.status_code == 200, response.text
        token: str = response.json()["token"]
        return token

    async def report(
        self, lesson: str, token: str, *, csv: bool = False
    ) -> httpx.Response:
        """GET the lesson's report, as JSON or CSV."""
        return await self.http.get(
            f"/api/lessons/{lesson}/report",
            params={"format": "csv"} if csv else None,
            headers=bearer(token),
        )

    async def close(self) -> None:
        """Close the HTTP connections."""
        await self.http.aclose()


class Watcher:
    """An SDK client whose stream is read in the background and kept.

    ``items`` holds every item of the stream in order, ``frames`` every
    frame received (the SDK's ``on_frame`` hook), ``ended`` the error that
    ended the stream, if any.
    """

    def __init__(self, name: str, url: str, token: str, room: str) -> None:
        self.name = name
        self.frames: list[bytes | str] = []
        self.items: list[ClientEvent] = []
        self.ended: ClientError | None = None
        self.client = Client(
            url,
            token,
            room,
            backoff=TEST_BACKOFF,
            request_timeout=5.0,
            open_timeout=5.0,
            on_frame=self.frames.append,
        )
        self._changed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<Watcher {self.name}>"

    async def start(self, join: bool = True) -> None:
        """Connect, measure the clock, start reading and join the room."""
        await self.client.connect()
        await self.client.measure_clock(samples=3, spacing=0.01)
        self._reader = asyncio.create_task(self._read())
        if join:
            await self.client.join(self.client.room)

    async def _read(self) -> None:
        try:
            async for item in self.client.events():
                self.items.append(item)
                self._changed.set()
                if len(self.items) >= MAX_ITEMS:
                    return
        except ClientError as exc:
            self.ended = exc
        finally:
            self._changed.set()

    def all(self, kind: type[T]) -> list[T]:
        """Every item kept so far of type ``kind``."""
        return [item for item in self.items if isinstance(item, kind)]

    async def wait(
        self,
        kind: type[T],
        match: Callable[[T], bool] = lambda item: True,
        within: float = WAIT,
    ) -> T:
        """The first item of type ``kind`` that ``match``es, waiting for it."""
        seen = 0
        async with asyncio.timeout(within):
            for _ in range(MAX_ITEMS):
                for item in self.items[seen:]:
                    if isinstance(item, kind) and match(item):
                        return item
                seen = len(self.items)
                if self._reader is None or self._reader.done():
                    break
                self._changed.clear()
                await self._changed.wait()
        raise AssertionError(
            f"{self.name}: no matching {kind.__name__}; the stream ended with "
            f"{self.ended!r} after {self.items[-5:]!r}"
        )

    async def stopped(self, within: float = WAIT) -> ClientError | None:
        """Wait for the stream to end; the error it ended with."""
        if self._reader is not None:
            async with asyncio.timeout(within):
                await asyncio.shield(self._reader)
        return self.ended

    async def close(self) -> None:
        """Close the client and stop reading."""
        await self.client.close()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)


class Crowd:
    """Starts watched clients and closes every one of them at the end."""

    def __init__(self) -> None:
        self.watchers: list[Watcher] = []

    async def enter(
        self,
        name: str,
        server: ServerProcess,
        token: str,
        room: str,
        *,
        join: bool = True,
    ) -> Watcher:
        """A client of ``server``, connected, read, and joined to ``room``."""
        watcher = Watcher(name, server.ws_url, token, room)
        self.watchers.append(watcher)
        await watcher.start(join)
        return watcher

    async def close(self) -> None:
        """Close every client."""
        await asyncio.gather(*(w.close() for w in self.watchers))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server on the embedded defaults (SQLite store, in-process broker)."""
    process = ServerProcess(tmp_path_factory.mktemp("lesson-server"))
    process.start()
    yield process
    process.stop()


@pytest.fixture
async def api(server: ServerProcess) -> AsyncIterator[Api]:
    """The HTTP API of the module's server."""
    client = Api(server)
    yield client
    await client.close()


@pytest.fixture
async def crowd() -> AsyncIterator[Crowd]:
    """Watched clients of this test, all closed when it ends."""
    people = Crowd()
    try:
        yield people
    finally:
        await people.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Iterator[None]:
    """Attach the logs of the servers a failed test used to its report."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if not report.failed:
        return
    for value in getattr(item, "funcargs", {}).values():
        servers = value if isinstance(value, list | tuple) else [value]
        for server in servers:
            if isinstance(server, ServerProcess):
                report.sections.append(
                    (f"lophoc serve on port {server.port}", server.log_tail())
                )
