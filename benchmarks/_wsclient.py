"""A lean WebSocket client for load generation: one asyncio Protocol per socket.

The fan-out benchmark runs its thousand clients on the same two cores as the
server under test, so every microsecond a client spends per frame is taken
from the server. The ``websockets`` client runs a generator-based parser, an
assembler and a task per connection for each frame; this one parses all the
frames of a read in one loop and calls a plain function for each message.
It implements only what the benchmark needs of RFC 6455: the opening
handshake, unfragmented data frames, ping, pong and close. Anything else
aborts the connection, so a surprise is never counted as a delivered frame.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import time
from collections.abc import Callable
from typing import cast

#: RFC 6455 §1.3: the GUID appended to the key to form Sec-WebSocket-Accept.
_ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

#: Called with each text or binary message and the time its read arrived,
#: from ``time.time_ns``; one clock read per read, not per frame.
OnMessage = Callable[[bytes, int], None]


class HandshakeError(Exception):
    """The server did not switch protocols; keeps its status line."""

    def __init__(self, status: str) -> None:
        super().__init__(f"handshake refused: {status!r}")
        self.status = status


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """A final client frame, masked as RFC 6455 §5.3 requires of clients."""
    size = len(payload)
    if size < 126:
        header = bytes((0x80 | opcode, 0x80 | size))
    elif size < 1 << 16:
        header = bytes((0x80 | opcode, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + size.to_bytes(8, "big")
    mask = os.urandom(4)
    if not size:
        return header + mask
    # XOR through one big integer: a Python loop over the bytes would cost
    # more than the whole rest of a publish.
    repeated = (mask * (size // 4 + 1))[:size]
    masked = int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")
    return header + mask + masked.to_bytes(size, "big")


class WsClient(asyncio.Protocol):
    """One client connection; messages go to ``on_message`` as they arrive."""

    def __init__(self, request: bytes, key: str, on_message: OnMessage) -> None:
        self.on_message = on_message
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.subprotocol: str | None = None
        self._request = request
        self._accept = base64.b64encode(
            hashlib.sha1(key.encode() + _ACCEPT_GUID).digest()
        )
        self._transport: asyncio.Transport | None = None
        self._handshake = b""
        self._buffer = b""

    # asyncio.Protocol -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed in handshake"))
        if not self.closed.done():
            self.closed.set_result(1006)

    def data_received(self, data: bytes) -> None:
        now = time.time_ns()
        if not self.opened.done():
            data = self._read_handshake(data)
            if not data:
                return
        buffer = self._buffer + data if self._buffer else data
        end = len(buffer)
        position = 0
        on_message = self.on_message
        while end - position >= 2:
            first, second = buffer[position], buffer[position + 1]
            size = second & 0x7F
            start = position + 2
            if size == 126:
                start += 2
                if start > end:
                    break
                size = int.from_bytes(buffer[position + 2 : start], "big")
            elif size == 127:
                start += 8
                if start > end:
                    break
                size = int.from_bytes(buffer[position + 2 : start], "big")
            stop = start + size
            if stop > end:
                break
            position = stop
            opcode = first & 0x0F
            # Servers never mask (RFC 6455 §5.1) and nothing here sends a
            # message large enough to be fragmented; either means a bug.
            if second & 0x80 or not first & 0x80 or opcode == OP_CONTINUATION:
                self.abort(1002)
                return
            if opcode in (OP_BINARY, OP_TEXT):
                on_message(buffer[start:stop], now)
            elif opcode == OP_PING:
                self.send(OP_PONG, buffer[start:stop])
            elif opcode == OP_CLOSE:
                payload = buffer[start:stop]
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                self.send(OP_CLOSE, payload[:2])
                self.abort(code)
                return
        self._buffer = buffer[position:] if position < end else b""

    # Use --------------------------------------------------------------------

    def send(self, opcode: int, payload: bytes) -> None:
        """Write one frame; dropped silently once the connection is gone."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(encode_frame(opcode, payload))

    def send_binary(self, payload: bytes) -> None:
        """Send ``payload`` as one binary message."""
        self.send(OP_BINARY, payload)

    def abort(self, code: int = 1000) -> None:
        """Drop the connection now, recording ``code`` as the reason."""
        if not self.closed.done():
            self.closed.set_result(code)
        if self._transport is not None:
            self._transport.abort()

    def _read_handshake(self, data: bytes) -> bytes:
        self._handshake += data
        head, found, rest = self._handshake.partition(b"\r\n\r\n")
        if not found:
            return b""
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        status = lines[0]
        if status.split(" ")[1:2] != ["101"] or headers.get(
            "sec-websocket-accept", ""
        ) != self._accept.decode("ascii"):
            self.opened.set_exception(HandshakeError(status))
            self.abort(1002)
            return b""
        self.subprotocol = headers.get("sec-websocket-protocol")
        self.opened.set_result(None)
        return rest


async def connect(
    host: str,
    port: int,
    path: str,
    on_message: OnMessage,
    subprotocol: str | None = None,
) -> WsClient:
    """Open a WebSocket to ``ws://host:port/path`` and finish the handshake."""
    key = base64.b64encode(os.urandom(16)).decode("ascii")
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if subprotocol:
        lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(
        lambda: WsClient(request, key, on_message), host, port
    )
    try:
        await client.opened
    except BaseException:
        client.abort(1006)
        raise
    return client
