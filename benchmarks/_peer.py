"""The ceiling of the fan-out benchmark: a plain ``websockets`` broadcast server.

It speaks just enough of lophoc's protocol for the same clients to use it
unchanged: a ``hello`` frame on connect, ``joined`` for a ``join``, and for a
``broadcast`` command one ``broadcast`` event, built from the same
:mod:`client_sdk.protocol` classes as lophoc's and so of the same size, sent
to every open connection (the sender included) with
:func:`websockets.asyncio.server.broadcast`, then an ``ack`` to the sender.

Nothing is authorized, stored, ordered or queued per connection, and there is
no task per connection on the send side: ``broadcast`` writes the one encoded
frame to each transport in a loop. That is about the least a Python server
can do per message, so lophoc's numbers are read as a fraction of these.

Started by ``fanout.py`` as its own process::

    python benchmarks/_peer.py --port 9001 --sender '{"user": "t0", ...}'
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import secrets
import signal
import time

import msgspec
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.typing import Subprotocol

from client_sdk.protocol import (
    MSGPACK_SUBPROTOCOL,
    Ack,
    Broadcast,
    BroadcastEvent,
    ClientMessage,
    Join,
    Joined,
    Member,
)

# The same frame limit and keepalive as a lophoc node's defaults, so neither
# server does more or less housekeeping.
MAX_FRAME_BYTES = 65_536
PING_INTERVAL = 20.0


class PeerRoom:
    """Every connection, and the counters that make events look like lophoc's."""

    def __init__(self, sender: Member) -> None:
        self.connections: set[ServerConnection] = set()
        self.sender = sender
        # lophoc's epochs are 12 hex digits (rooms.store.new_epoch).
        self.epoch = secrets.token_hex(6)
        self.offset = 0
        self.decoder = msgspec.msgpack.Decoder(ClientMessage)
        self.encoder = msgspec.msgpack.Encoder()
        self.hello = self.encoder.encode({"type": "hello", "server": "peer"})

    async def handler(self, connection: ServerConnection) -> None:
        """Serve one connection until it closes."""
        self.connections.add(connection)
        try:
            await connection.send(self.hello)
            async for message in connection:
                await self.on_message(connection, message)
        finally:
            self.connections.discard(connection)

    async def on_message(
        self, connection: ServerConnection, message: str | bytes
    ) -> None:
        """Answer one command; invalid ones are dropped, as no client sends any."""
        if isinstance(message, str):
            return
        try:
            command = self.decoder.decode(message)
        except msgspec.MsgspecError:
            return
        if isinstance(command, Broadcast):
            self.offset += 1
            event = BroadcastEvent(
                room=command.room,
                offset=self.offset,
                epoch=self.epoch,
                at=time.time_ns() // 1_000_000,
                sender=self.sender,
                topic=command.topic,
                body=command.body,
            )
            broadcast(self.connections, self.encoder.encode(event))
            ack = Ack(id=command.id, room=command.room, offset=self.offset)
            await connection.send(self.encoder.encode(ack))
        elif isinstance(command, Join):
            joined = Joined(
                id=command.id,
                room=command.room,
                epoch=self.epoch,
                offset=self.offset,
                recovered=False,
                roster=[],
            )
            await connection.send(self.encoder.encode(joined))


async def run(host: str, port: int, sender: Member) -> None:
    """Serve until SIGTERM or SIGINT."""
    room = PeerRoom(sender)
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set_result, None)
    async with serve(
        room.handler,
        host,
        port,
        subprotocols=[Subprotocol(MSGPACK_SUBPROTOCOL)],
        compression=None,
        max_size=MAX_FRAME_BYTES,
        ping_interval=PING_INTERVAL,
        ping_timeout=PING_INTERVAL,
        # The benchmark opens its clients in bursts; the asyncio default
        # backlog of 100 would refuse some of them.
        backlog=2048,
    ):
        await stop


def peer_parser(description: str) -> argparse.ArgumentParser:
    """The options of every peer server: where to listen, who publishes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--sender", required=True, help="the publisher as a JSON Member"
    )
    return parser


def publisher(args: argparse.Namespace) -> Member:
    """The publisher of ``--sender``; lifts the open files limit on the way.

    Every peer holds thousands of connections, over the usual soft limit.
    """
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return msgspec.convert(json.loads(args.sender), Member)


def main() -> None:
    """Parse the command line and serve."""
    parser = peer_parser(__doc__.split("\n")[0])
    parser.add_argument(
        "--loop",
        choices=["uvloop", "asyncio"],
        default="uvloop",
        help="event loop; uvloop, as uvicorn picks for lophoc when installed",
    )
    args = parser.parse_args()
    sender = publisher(args)
    with contextlib.suppress(KeyboardInterrupt):
        if args.loop == "uvloop":
            import uvloop

            uvloop.run(run(args.host, args.port, sender))
        else:
            asyncio.run(run(args.host, args.port, sender))


if __name__ == "__main__":
    main()
