"""One WebSocket connection to a node: the handshake, ``hello``, and replies.

A :class:`Link` lives as long as one connection. It pairs each reply with
the command that asked for it by ``id`` and, when the connection ends, fails
every command still waiting with :class:`LinkLost`, so that the client can
send them again on the next link. Reconnecting, rooms and events are the
business of :class:`client_sdk.client.Client`, which owns the links.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.typing import Subprotocol

from .clock import wall_ms
from .codec import Codec, FrameError, client_codec, server_codec
from .errors import (
    ClientError,
    CommandError,
    ConnectFailed,
    ConnectionRefused,
    ProtocolViolation,
)
from .protocol import PROTOCOL_VERSION, ClientMessage, CloseCode, Hello, ServerMessage

logger = logging.getLogger(__name__)

#: Close code of a connection that ended without a close frame (RFC 6455 §7.1.5).
ABNORMAL_CLOSURE: Final = 1006
#: Close codes after which the same token may work again in a moment.
RECONNECT_CODES: Final = frozenset(
    {
        CloseCode.GOING_AWAY,
        ABNORMAL_CLOSURE,
        # The client checks frame sizes against hello's limit before
        # sending, so the next connection will not repeat the offence.
        CloseCode.MESSAGE_TOO_BIG,
        CloseCode.INTERNAL_ERROR,
        CloseCode.SERVICE_RESTART,
        CloseCode.TRY_AGAIN_LATER,
        # The client read too slowly; it can resume from its last offset.
        CloseCode.SEND_QUEUE_FULL,
        # Retried commands wait for the backoff, which is the throttle.
        CloseCode.RATE_LIMIT_EXCEEDED,
        CloseCode.RESYNC,
    }
)
#: Close codes of a node that is going away in good order: the client goes
#: to another node at once, and logs it as news, not as a failure.
MOVED_CODES: Final = frozenset(
    {CloseCode.GOING_AWAY, CloseCode.SERVICE_RESTART, CloseCode.TRY_AGAIN_LATER}
)
#: Refusals: the same token and room would be refused again.
REFUSAL_CODES: Final = frozenset(
    {
        CloseCode.TOKEN_MISSING,
        CloseCode.TOKEN_INVALID,
        CloseCode.TOKEN_EXPIRED,
        CloseCode.TOKEN_NOT_YET_VALID,
        CloseCode.WRONG_ROOM,
        CloseCode.ORIGIN_REFUSED,
        CloseCode.SUBPROTOCOL_UNSUPPORTED,
        CloseCode.ROOM_MISSING,
        # Not a handshake refusal but as final: a teacher removed this
        # person, and the room refuses them from now on.
        CloseCode.REMOVED,
    }
)


#: Called with each frame received, before it is decoded.
FrameHook = Callable[[bytes | str], None]


class LinkLost(Exception):
    """The connection a command was sent on ended before its reply came."""


@dataclass(frozen=True, slots=True)
class LinkOptions:
    """How to open a link; ``url`` holds the token, ``safe_url`` does not."""

    url: str
    safe_url: str
    subprotocol: str
    open_timeout: float = 10.0
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    max_frame_bytes: int = 4 * 2**20
    proxy: str | Literal[True] | None = True
    on_frame: FrameHook | None = None


def close_of(exc: ConnectionClosed) -> tuple[int, str]:
    """The close code and reason the server sent, or 1006 if it sent none."""
    if exc.rcvd is None:
        return ABNORMAL_CLOSURE, "connection dropped"
    return exc.rcvd.code, exc.rcvd.reason


def _tap(hook: FrameHook | None, frame: bytes | str) -> None:
    if hook is None:
        return
    try:
        hook(frame)
    except Exception:
        # A debugging hook must not cost the connection.
        logger.exception("the frame hook failed")


async def open_link(options: LinkOptions) -> Link:
    """Connect, wait for ``hello`` and return the open link.

    Raises :class:`ConnectionRefused` when the server closes with a 4xxx
    code before ``hello``, :class:`ConnectFailed` when it cannot be reached
    or closes otherwise, and :class:`ProtocolViolation` for a bad ``hello``.
    """
    codec = client_codec(options.subprotocol)
    try:
        ws = await connect(
            options.url,
            subprotocols=[Subprotocol(options.subprotocol)],
            open_timeout=options.open_timeout,
            ping_interval=options.ping_interval,
            ping_timeout=options.ping_timeout,
            max_size=options.max_frame_bytes,
            # The server turns compression off: classroom frames are small.
            compression=None,
            proxy=options.proxy,
        )
    except InvalidURI as exc:
        raise ValueError(f"invalid WebSocket URL {options.safe_url!r}") from exc
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        reason = str(exc) or type(exc).__name__
        raise ConnectFailed(options.safe_url, reason) from exc
    try:
        hello = await _receive_hello(ws, codec, options)
        return Link(ws, codec, hello, options.on_frame)
    except BaseException:
        ws.transport.abort()
        raise


async def _receive_hello(
    ws: ClientConnection, codec: Codec[ServerMessage], options: LinkOptions
) -> Hello:
    if ws.subprotocol != options.subprotocol:
        raise ProtocolViolation(
            f"asked for subprotocol {options.subprotocol}, got {ws.subprotocol}"
        )
    try:
        async with asyncio.timeout(options.open_timeout):
            frame = await ws.recv()
    except ConnectionClosed as exc:
        code, reason = close_of(exc)
        # The server accepts a connection it refuses, then closes it at
        # once: that is the only way a browser page gets to see the reason.
        if 4000 <= code < 5000:
            raise ConnectionRefused(code, reason) from exc
        raise ConnectFailed(
            options.safe_url, f"closed before hello: {code} {reason}"
        ) from exc
    except TimeoutError as exc:
        raise ConnectFailed(options.safe_url, "no hello from the server") from exc
    _tap(options.on_frame, frame)

    try:
        hello = codec.decode(frame)
    except FrameError as exc:
        raise ProtocolViolation(f"undecodable first frame: {exc}") from exc
    if not isinstance(hello, Hello):
        raise ProtocolViolation(f"first frame is {type(hello).__name__}, not hello")
    if hello.protocol != PROTOCOL_VERSION:
        raise ProtocolViolation(f"server speaks protocol {hello.protocol}")
    logger.info(
        "connected to node %s as %s (session %s)",
        hello.node,
        hello.user,
        hello.session,
    )
    return hello


class Link:
    """One open WebSocket, its ``hello``, and the commands awaiting a reply."""

    def __init__(
        self,
        ws: ClientConnection,
        codec: Codec[ServerMessage],
        hello: Hello,
        on_frame: FrameHook | None = None,
    ) -> None:
        self.ws = ws
        self.codec = codec
        self.hello = hello
        #: A rough clock offset from hello: it ignores the one-way delay.
        self.hello_offset_ms = hello.server_time - wall_ms()
        self.pending: dict[str, asyncio.Future[ServerMessage]] = {}
        self._check = server_codec(codec.subprotocol)
        #: Set when the client itself closed this link to start over.
        self.abandoned = False
        self._on_frame = on_frame

    async def send(self, command: ClientMessage) -> None:
        """Send one command; raise :class:`LinkLost` if the link is closed.

        A command the server would refuse as invalid raises
        :class:`CommandError` at once: the server could not tell which
        command its error is about, as it cannot read the command's id.
        """
        data = self.codec.encode(command)
        try:
            self._check.decode(data)
        except FrameError as exc:
            raise CommandError(exc.code, exc.message, exc.field, command.id) from exc
        limit = self.hello.limits.max_frame_bytes
        if len(data) > limit:
            # The server would close the whole connection with 1009.
            raise ClientError(
                f"command {command.id!r} is {len(data)} bytes; the server "
                f"accepts frames of at most {limit}"
            )
        try:
            await self.ws.send(data if self.codec.binary else data.decode())
        except ConnectionClosed as exc:
            raise LinkLost from exc

    def expect(self, command_id: str) -> asyncio.Future[ServerMessage]:
        """A future for the reply to ``command_id``; register before sending."""
        if command_id in self.pending:
            raise ClientError(f"command {command_id!r} is already waiting for a reply")
        future = asyncio.get_running_loop().create_future()
        self.pending[command_id] = future
        return future

    def forget(self, command_id: str, future: asyncio.Future[ServerMessage]) -> None:
        """Stop waiting for ``command_id`` if ``future`` is still its waiter."""
        if self.pending.get(command_id) is future:
            del self.pending[command_id]
        if future.done() and not future.cancelled():
            # The link may have failed it while the command was still being
            # sent; nobody awaits it now, so asyncio must not report it.
            future.exception()

    def resolve(self, command_id: str, message: ServerMessage) -> bool:
        """Hand ``message`` to the command waiting for it, if one still is."""
        future = self.pending.get(command_id)
        if future is None or future.done():
            return False
        future.set_result(message)
        return True

    async def read(self, handle: Callable[[ServerMessage], None]) -> tuple[int, str]:
        """Pass each message to ``handle`` until the connection ends.

        Returns the close code and reason; every command still waiting then
        fails with :class:`LinkLost`.
        """
        try:
            while True:
                frame = await self.ws.recv()
                _tap(self._on_frame, frame)
                try:
                    message = self.codec.decode(frame)
                except FrameError as exc:
                    # A newer server may send messages this client does not
                    # know; the compatibility rule says to ignore them.
                    logger.warning("dropped an undecodable frame: %s", exc)
                    continue
                try:
                    handle(message)
                except Exception:
                    # A bug in handling one frame must not stop the reader,
                    # which would leave every command waiting forever.
                    logger.exception("failed to handle a %s frame", type(message))
        except ConnectionClosed as exc:
            return close_of(exc)
        finally:
            for future in self.pending.values():
                if not future.done():
                    future.set_exception(LinkLost())

    async def close(self, reason: str = "", *, abandon: bool = False) -> None:
        """Close with 1000; ``abandon`` marks a close meant to reconnect."""
        self.abandoned = self.abandoned or abandon
        try:
            await self.ws.close(CloseCode.NORMAL, reason)
        except Exception:
            # No close handshake then: the server sees the TCP connection end.
            logger.debug("close handshake failed; aborting", exc_info=True)
            self.ws.transport.abort()
