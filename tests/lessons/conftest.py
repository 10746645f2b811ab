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
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx
import pytest

from client_sdk import Backoff, Client, ClientError, ClientEvent, Role
from server import auth
from tests.helpers import REPO as REPO
from tests.helpers import LophocProcess, closing

T = TypeVar("T")

#: The token key of every server here (LOPHOC_SECRET needs 48 characters).
SECRET = "lessons-test-key-" + "9f8e7d6c5b4a3210" * 3
#: How long a test waits for one item it expects.
WAIT = 10.0
#: The most stream items a watcher keeps: far above what a lesson here sends.
MAX_ITEMS = 2000
#: Fast, but bounded: a test that loses its server fails within seconds.
TEST_BACKOFF = Backoff(
    initial=0.05, maximum=0.5, jitter=0.5, max_attempts=40, max_elapsed=15.0
)


class ServerProcess(LophocProcess):
    """A ``lophoc serve`` process signed with :data:`SECRET`.

    ``ws_url`` is the bare WebSocket endpoint, which the SDK is given.
    """

    def __init__(self, directory: Path, args: Sequence[str] = ()) -> None:
        super().__init__(directory, secret=SECRET, args=args)

    @property
    def ws_url(self) -> str:
        """The WebSocket endpoint, without a query."""
        return f"ws://127.0.0.1:{self.port}/ws"


@contextlib.contextmanager
def redis_nodes(
    base: Path, redis_url: str, names: Sequence[str] = ("node-a", "node-b")
) -> Iterator[tuple[ServerProcess, ...]]:
    """Nodes sharing one Redis as broker and store, stopped at the end."""
    started: list[ServerProcess] = []
    try:
        for name in names:
            node = ServerProcess(
                base / name,
                ["--broker", redis_url, "--store", redis_url, "--node", name],
            )
            started.append(node)
            node.start()
        yield tuple(started)
    finally:
        for node in started:
            node.stop()


def admin_token(room: str = "admin") -> str:
    """A token of an administrator, who may create lessons for any host."""
    return auth.mint(SECRET, user="admin-1", role=Role.ADMIN, rooms=[room])


def bearer(token: str) -> dict[str, str]:
    """The Authorization header carrying ``token``."""
    return {"authorization": f"Bearer {token}"}


class Api:
    """The lesson HTTP API of one server."""

    def __init__(self, server: LophocProcess) -> None:
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

    ``items`` holds every item of the stream in order, ``stamps`` the
    monotonic time each arrived, ``frames`` every frame received (the SDK's
    ``on_frame`` hook), ``ended`` the error that ended the stream, if any.
    Keyword ``options`` go to the :class:`~client_sdk.Client`.
    """

    #: The most stream items kept.
    max_items = MAX_ITEMS
    #: How long :meth:`wait` waits unless told.
    patience = WAIT

    def __init__(
        self, name: str, url: str, token: str, room: str, **options: Any
    ) -> None:
        self.name = name
        self.frames: list[bytes | str] = []
        self.items: list[ClientEvent] = []
        self.stamps: list[float] = []
        self.ended: ClientError | None = None
        settings: dict[str, Any] = {
            "backoff": TEST_BACKOFF,
            "request_timeout": 5.0,
            "open_timeout": 5.0,
            "on_frame": self.frames.append,
        }
        self.client = Client(url, token, room, **(settings | options))
        self._changed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

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
                self.stamps.append(time.monotonic())
                self.items.append(item)
                self._changed.set()
                if len(self.items) >= self.max_items:
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
        within: float | None = None,
        *,
        after: float = 0.0,
    ) -> T:
        """The first ``kind`` item arrived after ``after`` that ``match``es."""
        seen = 0
        async with asyncio.timeout(self.patience if within is None else within):
            for _ in range(self.max_items):
                for stamp, item in zip(
                    self.stamps[seen:], self.items[seen:], strict=True
                ):
                    if stamp > after and isinstance(item, kind) and match(item):
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
    async with closing(Api(server)) as client:
        yield client


@pytest.fixture
async def crowd() -> AsyncIterator[Crowd]:
    """Watched clients of this test, all closed when it ends."""
    async with closing(Crowd()) as people:
        yield people


class MediaPeer(Protocol):
    """Anything a test connects to a lesson's media and must close."""

    async def close(self) -> object:
        """Close the peer's connection."""


@pytest.fixture
async def peers() -> AsyncIterator[list[Any]]:
    """Media peers a test starts (audio or video), all closed when it ends."""
    made: list[MediaPeer] = []
    yield made
    await asyncio.gather(*(peer.close() for peer in made))
