"""How the benchmark clients speak to each server: lophoc's frames or Socket.IO's.

lophoc and the ``websockets`` peer take one MessagePack command per binary
WebSocket message and send one MessagePack frame per event. The Socket.IO
peer speaks Engine.IO 4 over its WebSocket transport with Socket.IO 5's
default JSON packets: ``0{...}`` opens the Engine.IO session, ``40``
connects the default namespace, ``42["name",{...}]`` is an event, and the
server's ``2`` (ping) wants a ``3`` (pong) back within its ping timeout.

Both dialects give the same :class:`Frame` to the clients: a Socket.IO event
named ``broadcast`` carries the broadcast event as a JSON object, the form
lophoc's JSON subprotocol sends, whose ``body`` is base64. So one load
generator, one parser loop per read and one function per message serve
every server, and what differs between them is the server.
"""

from __future__ import annotations

from typing import Any

import msgspec
from _wsclient import OP_BINARY, OP_TEXT, WsClient

LOPHOC = "lophoc"
SOCKETIO = "socketio"
DIALECTS = (LOPHOC, SOCKETIO)

#: Engine.IO 4 over the WebSocket transport straight away, with no HTTP
#: long-polling first: what a Socket.IO client does with
#: ``transports=["websocket"]``.
SOCKETIO_PATH = "/socket.io/?EIO=4&transport=websocket"


class Frame(msgspec.Struct):
    """The fields of a server frame the clients look at; others are skipped."""

    type: str
    body: bytes = b""
    code: str = ""


#: What the clients take from a Socket.IO event: its name, then one object.
SocketIOEvent = tuple[str, Frame]

_msgpack_frame = msgspec.msgpack.Decoder(Frame)
_msgpack_encoder = msgspec.msgpack.Encoder()
_json_event = msgspec.json.Decoder(SocketIOEvent)
_json_encoder = msgspec.json.Encoder()

#: A Socket.IO ``connect`` packet stands in for lophoc's ``hello``.
_HELLO = Frame(type="hello")


def path(dialect: str, room: str, token: str) -> str:
    """The request path of a WebSocket connection for ``token``."""
    if dialect == SOCKETIO:
        return f"{SOCKETIO_PATH}&token={token}"
    return f"/ws?room={room}&token={token}"


def decode(dialect: str, client: WsClient | None, data: bytes) -> Frame | None:
    """The frame in one message, or None for transport chatter.

    Socket.IO's pings are answered here, on ``client``.
    """
    if dialect == LOPHOC:
        return _msgpack_frame.decode(data)
    if data[:2] == b"42":
        return _json_event.decode(data[2:])[1]
    if data[:2] == b"40":
        return _HELLO
    if client is not None:
        if data[:1] == b"2":
            client.send(OP_TEXT, b"3")
        elif data[:2] in (b"41", b"44"):
            client.abort(1000 if data[:2] == b"41" else 1008)
    return None


def opened(dialect: str, client: WsClient) -> None:
    """Start the session on a connection whose WebSocket handshake is done.

    A Socket.IO client connects the namespace once it has Engine.IO's
    ``0{...}`` open packet. That packet may come in the same read as the
    handshake's response, before the caller holds ``client``; the server
    sends it before reading anything, so ``40`` is sent straight away.
    """
    if dialect == SOCKETIO:
        client.send(OP_TEXT, b"40")


def encode(dialect: str, command: Any) -> tuple[int, bytes]:
    """One command as a WebSocket (opcode, payload).

    ``command`` is a protocol struct or a dict with a ``type``; over
    Socket.IO the type names the event and the whole command is its
    argument.
    """
    if dialect == LOPHOC:
        return OP_BINARY, _msgpack_encoder.encode(command)
    if isinstance(command, dict):
        kind = command["type"]
    else:
        kind = type(command).__struct_config__.tag
    return OP_TEXT, b"42" + _json_encoder.encode([kind, command])


def send(dialect: str, client: WsClient, command: Any) -> int:
    """Send one command on ``client``; returns the frame's size in bytes."""
    opcode, payload = encode(dialect, command)
    client.send(opcode, payload)
    return len(payload)
