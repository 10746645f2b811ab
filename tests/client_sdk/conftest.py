"""An in-process lophoc node on a free port, and clients of it that clean up.

The node runs ``uvicorn.Server`` in a task of the test's own event loop, on
the embedded memory backends, configured as ``lophoc serve`` configures it
but for one thing: it keeps uvicorn's own WebSocket protocol, so that these
tests cover the sessions' plain ASGI send path (``lophoc serve`` writes
frames directly; see server/transport.py, and the tests under tests/server).
Stopping and starting it again keeps the port, so the clients see the node
go away and come back at the same address; the memory store starts empty,
which gives every room a new epoch.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from client_sdk import Backoff, Client, Role
from server import auth
from server.app import create_app
from server.settings import Settings, load_settings
from tests.helpers import free_port

SECRET = "x" * 48
#: How long the node may take to start listening or to shut down.
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
#: Fast, but bounded: a test that loses the node fails within seconds.
TEST_BACKOFF = Backoff(
    initial=0.05, maximum=0.5, jitter=0.5, max_attempts=60, max_elapsed=20.0
)


class Node:
    """One lophoc node served by uvicorn inside the test's event loop."""

    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        self.settings: Settings = load_settings(
            overrides={
                "host": "127.0.0.1",
                "port": self.port,
                "store_url": "memory://",
                "broker_url": "memory://",
                "data_dir": str(data_dir),
                "secret": SECRET,
                "node": "test-node",
            },
            environ={},
        )
        self.url = f"ws://127.0.0.1:{self.port}/ws"
        self.clients: list[Client] = []
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Serve until :meth:`stop`; return once the port accepts connections."""
        settings = self.settings
        config = uvicorn.Config(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            ws_max_size=settings.max_frame_bytes,
            ws_ping_interval=settings.ping_interval,
            ws_ping_timeout=settings.ping_timeout,
            ws_per_message_deflate=False,
            access_log=False,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=2,
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        self._server, self._task = server, task
        async with asyncio.timeout(START_TIMEOUT):
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError(f"uvicorn on port {self.port} exited at start")
                await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Shut the node down the way SIGTERM would; its clients see 1012."""
        server, task = self._server, self._task
        self._server = self._task = None
        if server is None or task is None:
            return
        server.should_exit = True
        try:
            async with asyncio.timeout(STOP_TIMEOUT):
                await task
        except TimeoutError:
            server.force_exit = True
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def token(self, user: str, role: Role, rooms: list[str], **claims: Any) -> str:
        """A join token signed with the node's key."""
        return auth.mint(SECRET, user=user, role=role, rooms=rooms, **claims)

    def client(
        self, user: str, role: Role, room: str, *, token: str | None = None, **kw: Any
    ) -> Client:
        """A client of ``user`` for ``room``, closed when the test ends."""
        kw.setdefault("backoff", TEST_BACKOFF)
        kw.setdefault("request_timeout", 5.0)
        kw.setdefault("open_timeout", 5.0)
        if token is None:
            token = self.token(user, role, [room], name=user.title())
        client = Client(self.url, token, room, **kw)
        self.clients.append(client)
        return client


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    """A running node of this test's own, with its clients closed at the end."""
    running = Node(tmp_path)
    await running.start()
    try:
        yield running
    finally:
        await asyncio.gather(*(client.close() for client in running.clients))
        await running.stop()


@pytest.fixture
def room() -> str:
    """A room id no other test uses."""
    return f"lesson-{secrets.token_hex(4)}"
