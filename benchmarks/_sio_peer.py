"""The Socket.IO peer of the benchmarks: python-socketio under uvicorn.

A ``socketio.AsyncServer`` mounted as an ASGI app and run by uvicorn, as
lophoc is, answering the same commands as the ``websockets`` peer
(``_peer.py``), as Socket.IO events:

* ``join``: the connection enters the Socket.IO room named in the command
  and gets a ``joined`` event;
* ``broadcast``: one ``broadcast`` event, lophoc's broadcast event in its
  JSON form, emitted to the room (the sender included) with
  ``AsyncServer.emit(..., room=...)``, then an ``ack`` to the sender.

Socket.IO encodes an event emitted to a room once and then queues it for
each member's Engine.IO socket, whose own task writes it. Nothing is
authorized, stored or ordered, as with the ``websockets`` peer.

With ``--redis URL`` the server uses ``socketio.AsyncRedisManager``: an emit
to a room is published on Redis and every node (this one too) sends it to
its own members of the room, which is how Socket.IO runs on several nodes.

Started by the benchmarks as its own process::

    python benchmarks/_sio_peer.py --port 9001 --sender '{"user": "t0", ...}'
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import msgspec
import socketio
import uvicorn
from _peer import peer_parser, publisher

from client_sdk.protocol import Ack, Broadcast, BroadcastEvent, Joined, Member

# A lophoc node's defaults: 64 KiB frames, pings every 20 s.
MAX_FRAME_BYTES = 65_536
PING_INTERVAL = 20


def build(sender: Member, redis_url: str | None) -> socketio.ASGIApp:
    """The Socket.IO server and its handlers, as an ASGI app."""
    manager = socketio.AsyncRedisManager(redis_url) if redis_url is not None else None
    server = socketio.AsyncServer(
        async_mode="asgi",
        client_manager=manager,
        ping_interval=PING_INTERVAL,
        ping_timeout=PING_INTERVAL,
        max_http_buffer_size=MAX_FRAME_BYTES,
        # The benchmark clients send no Origin; nothing to check.
        cors_allowed_origins="*",
    )
    # lophoc's epochs are 12 hex digits (rooms.store.new_epoch).
    epoch = secrets.token_hex(6)
    offset = 0

    async def join(sid: str, data: dict[str, Any]) -> None:
        room = str(data["room"])
        await server.enter_room(sid, room)
        joined = Joined(
            id=str(data["id"]),
            room=room,
            epoch=epoch,
            offset=offset,
            recovered=False,
            roster=[],
        )
        await server.emit("joined", msgspec.to_builtins(joined), to=sid)

    async def broadcast(sid: str, data: dict[str, Any]) -> None:
        nonlocal offset
        # Checked as lophoc and the websockets peer check a command; the
        # body comes as base64 in JSON and goes out the same way.
        command = msgspec.convert(data, Broadcast)
        offset += 1
        event = BroadcastEvent(
            room=command.room,
            offset=offset,
            epoch=epoch,
            at=time.time_ns() // 1_000_000,
            sender=sender,
            topic=command.topic,
            body=command.body,
        )
        await server.emit("broadcast", msgspec.to_builtins(event), room=command.room)
        ack = Ack(id=command.id, room=command.room, offset=offset)
        await server.emit("ack", msgspec.to_builtins(ack), to=sid)

    # Registered by call, not as decorators: socketio has no type hints, and
    # its decorator would hide the handlers' own.
    server.on("join", join)
    server.on("broadcast", broadcast)
    return socketio.ASGIApp(server, socketio_path="socket.io")


def main() -> None:
    """Parse the command line and serve until SIGTERM."""
    parser = peer_parser(__doc__.split("\n")[0])
    parser.add_argument("--redis", help="redis:// URL: run as one of several nodes")
    args = parser.parse_args()
    sender = publisher(args)
    # The same server stack as a lophoc node: uvicorn's defaults pick uvloop,
    # httptools and the websockets protocol when installed.
    uvicorn.run(
        build(sender, args.redis),
        host=args.host,
        port=args.port,
        log_level="warning",
        ws_max_size=MAX_FRAME_BYTES,
        # Engine.IO pings on its own; uvicorn's WebSocket pings would be
        # a second keepalive that lophoc's nodes do not run.
        ws_ping_interval=None,
        # As a lophoc node: no per-frame compression, no access log.
        ws_per_message_deflate=False,
        access_log=False,
        backlog=2048,
        lifespan="off",
    )


if __name__ == "__main__":
    main()
