"""SIGTERM drains the node before uvicorn shuts it down.

uvicorn's own answer to SIGTERM closes the listening socket and then every
WebSocket at once. A node of a cluster should rather leave in good order:
fail ``/readyz`` and refuse new handshakes with a close code while the
reverse proxy notices, send its clients to another node, and release its
room leases so that the rooms move at once (see :meth:`server.app.Node.drain`).
:class:`DrainingServer` runs that drain on the first SIGTERM and lets uvicorn
shut down once it is done; SIGINT, or a second SIGTERM, stops at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from types import FrameType

import uvicorn
from starlette.applications import Starlette

logger = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    """A uvicorn server whose first SIGTERM drains ``app``'s node first."""

    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self._app = app
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_requested = False
        self._drainer: asyncio.Task[None] | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        """Serve until told to exit, keeping the loop for the signal handler."""
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Start the drain on the first SIGTERM; anything else as uvicorn does."""
        if (
            sig != signal.SIGTERM
            or self._drain_requested
            or self.should_exit
            or self._loop is None
        ):
            super().handle_exit(sig, frame)
            return
        self._drain_requested = True
        # A signal handler runs between two bytecodes of the loop's own
        # thread: hand the work to the loop rather than touch it here.
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        self._drainer = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        node = getattr(self._app.state, "node", None)
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            if node is not None:
                await node.drain()
        except Exception:
            logger.exception("the drain failed; shutting down")
        finally:
            # uvicorn's shutdown follows and closes what is left, within
            # what remains of the drain time: the node exits within it.
            if node is not None:
                left = node.settings.drain_seconds - (loop.time() - started)
                self.config.timeout_graceful_shutdown = max(int(left), 1)
            self.should_exit = True
