"""How a session's frames reach the socket: framed once, written directly.

A room event goes to every member of the room, and on the ASGI path each
copy costs a ``websocket.send`` message, a wake-up of the member's sender
task and a frame built by the WebSocket library for that one member. A
server's frames are never masked (RFC 6455 section 5.1), so the frame of an
event is the same bytes for every member: :class:`Framer` builds it once,
and :class:`FrameProtocol` lets a session write those bytes to its
connection's transport at once, in the same loop that fans the event out.

:class:`FrameProtocol` is uvicorn's ``websockets`` sans-I/O protocol with one
addition: the ASGI scope of each connection carries it under the
``lophoc.frames`` extension, and :meth:`FrameProtocol.write_frame` writes a
whole frame while the connection is open and its transport not paused.
Everything else (the handshake, reading, pings, closing) is uvicorn's. A
session served by another ASGI server, or by uvicorn with another protocol,
finds no extension and sends through ASGI as before.

Writing beside the protocol object is safe because lophoc's frames are
whole messages (never fragmented) and unextended (no per-message
compression is negotiated), and everything runs on one event loop: a frame
written here never lands inside another. uvicorn's protocol is not a public
API, so pyproject pins the uvicorn releases this was checked against, and
the tests serve through this class.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import (
    WebSocketsSansIOProtocol,
)
from websockets.frames import Frame, Opcode
from websockets.protocol import State

from .flow import Mailbox

#: Name of the ASGI scope extension that carries the connection's protocol.
EXTENSION = "lophoc.frames"


class FrameProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol that also takes ready-made frames."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # What the protocol hands to the application's ``receive``: uvicorn
        # makes an asyncio.Queue, with three deques for every connection.
        self.queue = Mailbox()  # type: ignore[assignment]

    def forget_handshake(self) -> None:
        """Let go of the handshake's headers once the session has read them.

        uvicorn keeps the request and the response, headers and all, for the
        connection's life; the ``websockets`` parser keeps the request too,
        in the frame of its generator; and the ASGI scope has a copy of the
        request's headers. A session reads the headers (Origin, the token)
        before it starts and never again, so all three are emptied: a
        kilobyte or two per connection, idle ones included.
        """
        if self.handshake_complete and self.request is not None:
            self.request.headers.clear()
            self.request = None  # type: ignore[assignment]
            self.response = None  # type: ignore[assignment]
            # Emptied in place: Starlette's WebSocket holds the same list.
            self.scope["headers"].clear()  # type: ignore[attr-defined]

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        # A refused handshake made no scope; an accepted one's application
        # task is created but has not run yet, so it sees the extension.
        # A frame made once for everyone cannot carry a per-connection
        # extension's encoding (per-message compression): such a
        # connection goes through ASGI.
        scope = getattr(self, "scope", None)
        if scope is not None and not self.conn.extensions:
            scope["extensions"][EXTENSION] = {"protocol": self}

    def open_for_frames(self) -> bool:
        """True if a frame written now goes out at once, after the earlier ones.

        False once the connection closes or starts closing, and while the
        transport's buffer is over its high-water mark (the client reads
        slower than we write): the session then keeps frames in its own
        bounded queue, whose limit is what disconnects a slow reader.
        """
        return (
            self.writable.is_set()
            and not self.close_sent
            and not self.disconnected
            and self.conn.state is State.OPEN
        )

    def write_frame(self, frame: bytes) -> None:
        """Write one whole frame made by :class:`Framer`.

        Only when :meth:`open_for_frames` says so, as the caller checks.
        """
        self.transport.write(frame)

    def abort(self) -> None:
        """Drop the connection now, with whatever it has not sent."""
        self.transport.abort()

    async def wait_writable(self) -> None:
        """Until the transport's buffer drained, or the connection ended."""
        await self.writable.wait()


def frame_protocol(scope: Any) -> FrameProtocol | None:
    """The connection's :class:`FrameProtocol`, if it is served by one."""
    extension = scope.get("extensions", {}).get(EXTENSION)
    if extension is None:
        return None
    protocol: FrameProtocol = extension["protocol"]
    return protocol


class Framer:
    """Makes the WebSocket frame of a payload, once for a run of members.

    A room event reaches every member's session one after another, with
    the same payload object; the frame of the last payload is kept, so the
    whole room shares one. Binary and text frames are kept apart.
    """

    __slots__ = ("_binary", "_text")

    def __init__(self) -> None:
        self._binary: tuple[bytes, bytes] = (b"", b"")
        self._text: tuple[bytes, bytes] = (b"", b"")

    def frame(self, payload: bytes, binary: bool) -> bytes:
        """The unmasked, final frame that carries ``payload``."""
        last = self._binary if binary else self._text
        if last[0] is payload:
            return last[1]
        opcode = Opcode.BINARY if binary else Opcode.TEXT
        frame = Frame(opcode, payload).serialize(mask=False)
        if binary:
            self._binary = (payload, frame)
        else:
            self._text = (payload, frame)
        return frame
