"""A TCP proxy on loopback that the fault tests break on purpose.

It stands in for the reverse proxy in front of a deployment's nodes: clients
connect to the proxy, which opens a connection to its current target and
copies bytes both ways. A test can then cut every connection at once
(:meth:`TcpProxy.drop`, an RST as a crashed router or a dead Wi-Fi gives),
freeze them with the sockets left open (:meth:`TcpProxy.stall`, a half-dead
link that no error reports) and let them flow again (:meth:`TcpProxy.resume`),
or send new connections to another node (:meth:`TcpProxy.retarget`), which
is what a reverse proxy does when a node fails its health check.

The proxy runs in the test's own event loop. Every task it starts is kept,
and :meth:`TcpProxy.close` cancels and awaits them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Coroutine
from typing import Any

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
#: Bytes read from one side at a time.
CHUNK = 64 * 1024
#: How long the proxy tries to reach its target for one client connection.
CONNECT_TIMEOUT = 2.0


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close a socket with an RST instead of a FIN, as a crash would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        # SO_LINGER on with a zero timeout makes close() send an RST and
        # throw away whatever is still queued (socket(7)).
        with contextlib.suppress(OSError):
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
    writer.transport.abort()


class _Pair:
    """One client connection and its connection to the target."""

    def __init__(
        self,
        client: asyncio.StreamWriter,
        upstream: asyncio.StreamWriter,
        target: int,
    ) -> None:
        self.client = client
        self.upstream = upstream
        self.target = target

    def reset(self) -> None:
        _reset(self.client)
        _reset(self.upstream)

    def close(self) -> None:
        # A FIN after what is queued: a close frame the node sent on its way
        # out must still reach the client.
        self.client.close()
        self.upstream.close()


class TcpProxy:
    """Forwards connections on a free loopback port to ``127.0.0.1:target``.

    ``drop`` resets every open connection; ``stall`` stops copying bytes in
    both directions while keeping the sockets open, for open connections and
    new ones alike, until ``resume``; ``retarget`` makes new connections go
    to another port (open ones stay where they are until they end).
    """

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        #: Connections accepted since the start, and those that reached a target.
        self.accepted = 0
        self.forwarded = 0
        self._server: asyncio.Server | None = None
        self._pairs: set[_Pair] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._tasks: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"<TcpProxy :{self.port} -> :{self.target}>"

    @property
    def ws_url(self) -> str:
        """The WebSocket endpoint of the node behind the proxy."""
        return f"ws://{HOST}:{self.port}/ws"

    @property
    def open_connections(self) -> int:
        """Client connections that are forwarded right now."""
        return len(self._pairs)

    @property
    def stalled(self) -> bool:
        """Whether bytes are being held back."""
        return not self._flowing.is_set()

    async def start(self) -> None:
        """Listen on a free port of 127.0.0.1 (``port`` holds it afterwards)."""
        self._server = await asyncio.start_server(self._accept, HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        logger.info("proxy :%d -> :%d started", self.port, self.target)

    def retarget(self, port: int) -> None:
        """Send connections accepted from now on to ``127.0.0.1:port``."""
        logger.info(
            "proxy :%d retargeted from :%d to :%d", self.port, self.target, port
        )
        self.target = port

    def drop(self) -> int:
        """Reset every open connection, both sides; return how many there were."""
        pairs, self._pairs = list(self._pairs), set()
        for pair in pairs:
            pair.reset()
        logger.info("proxy :%d dropped %d connections", self.port, len(pairs))
        return len(pairs)

    def stall(self) -> None:
        """Stop copying bytes both ways; sockets stay open, bytes are held."""
        self._flowing.clear()

    def resume(self) -> None:
        """Copy bytes again, first those held back during the stall."""
        self._flowing.set()

    async def close(self) -> None:
        """Stop listening, reset every connection and end every task."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        self.drop()
        self._flowing.set()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            # Since Python 3.12 this also waits for the connection handlers,
            # which end once their pumps are gone.
            async with asyncio.timeout(5.0):
                await server.wait_closed()

    async def _accept(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.accepted += 1
        target = self.target
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                up_reader, up_writer = await asyncio.open_connection(HOST, target)
        except (OSError, TimeoutError):
            # What a reverse proxy with no live upstream does: hang up.
            _reset(writer)
            return
        self.forwarded += 1
        pair = _Pair(writer, up_writer, target)
        self._pairs.add(pair)
        pumps = [
            self._spawn(self._pump(reader, up_writer, pair)),
            self._spawn(self._pump(up_reader, writer, pair)),
        ]
        try:
            await asyncio.gather(*pumps)
        finally:
            self._pairs.discard(pair)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _pump(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        pair: _Pair,
    ) -> None:
        # Ends at EOF or when either socket fails; close() cancels the rest.
        try:
            while data := await source.read(CHUNK):
                await self._flowing.wait()
                if pair not in self._pairs:
                    return
                sink.write(data)
                await sink.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            # One side ended: close the other one too, as a reverse proxy
            # does, rather than leave the peer on a half-open connection.
            if pair in self._pairs:
                self._pairs.discard(pair)
                pair.close()
