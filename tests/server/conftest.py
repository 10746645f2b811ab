"""Real ``lophoc serve`` processes and raw WebSocket clients for the server tests.

Every test here talks to a server in another process through its sockets,
exactly as a browser or a third-party client would: frames are built with
msgspec from :mod:`client_sdk.protocol` (or by hand, when the point is a bad
frame) and sent with the ``websockets`` library or a raw TCP socket.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import hashlib
import os
import secrets
import socket
import struct
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Mapping,
    Sequence,
)
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from client_sdk.codec import Codec, client_codec
from client_sdk.protocol import (
    MSGPACK_SUBPROTOCOL,
    SUBPROTOCOLS,
    Ack,
    Error,
    Event,
    Hello,
    Join,
    Joined,
    Member,
    Pong,
    Role,
    ServerMessage,
)
from tests.helpers import REPO as REPO
from tests.helpers import LophocProcess

M = TypeVar("M")

#: The token key every test server runs with (LOPHOC_SECRET).
SECRET = "lophoc-test-key-" + "0123456789abcdef" * 3

#: How long a test waits for one frame it expects.
RECV_TIMEOUT = 5.0


class ServerProcess(LophocProcess):
    """A ``lophoc serve`` process signed with :data:`SECRET` unless told.

    ``ws_url`` builds the WebSocket URL of a room and token.
    """

    def __init__(
        self,
        directory: Path,
        *,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
        secret: str = SECRET,
        port: int | None = None,
    ) -> None:
        super().__init__(directory, secret=secret, env=env, args=args, port=port)

    @property
    def origin(self) -> str:
        """The Origin of a page this server itself would serve."""
        return self.http_url

    def ws_url(self, room: str | None = None, token: str | None = None) -> str:
        """The WebSocket URL with ``room`` and ``token`` as query parameters."""
        query = {
            key: value
            for key, value in (("room", room), ("token", token))
            if value is not None
        }
        suffix = f"?{urlencode(query)}" if query else ""
        return f"ws://127.0.0.1:{self.port}/ws{suffix}"

    async def aget(self, path: str) -> httpx.Response:
        """GET ``path`` without blocking the event loop."""
        async with httpx.AsyncClient(timeout=5.0) as http:
            return await http.get(self.http_url + path)

    async def metrics(self) -> Metrics:
        """The samples of GET /metrics."""
        response = await self.aget("/metrics")
        response.raise_for_status()
        return Metrics(response.text)

    def rss_kib(self) -> int:
        """Resident memory of the process, from /proc/<pid>/status."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError(f"no VmRSS in /proc/{self.pid}/status")

    def holds_connection_from(self, client_port: int) -> bool:
        """Whether the process still has a TCP socket to ``client_port``.

        Matches the socket inodes among the process's open files against
        the kernel's table of IPv4 TCP connections (/proc/net/tcp).
        """
        inodes = set()
        for fd in Path(f"/proc/{self.pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:[") : -1])
        for line in Path(f"/proc/{self.pid}/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == client_port and fields[9] in inodes:
                return True
        return False


class Metrics:
    """Prometheus samples, looked up by sample name and labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                key = (sample.name, frozenset(sample.labels.items()))
                self.samples[key] = sample.value

    def __call__(self, name: str, **labels: str) -> float:
        """The value of sample ``name`` with exactly ``labels``; 0 if absent."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def has(self, name: str, **labels: str) -> bool:
        """Whether the sample is exposed at all."""
        return (name, frozenset(labels.items())) in self.samples


class ServerFactory:
    """Starts servers in their own directories and stops them all at the end."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.servers: list[ServerProcess] = []

    def __call__(
        self,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
        *,
        start: bool = True,
        **kwargs: Any,
    ) -> ServerProcess:
        """A new server with ``env`` (``LOPHOC_*``) and extra ``serve`` flags."""
        directory = self.base / f"node{len(self.servers)}"
        server = ServerProcess(directory, env=env, args=args, **kwargs)
        self.servers.append(server)
        if start:
            server.start()
        return server

    def stop_all(self) -> None:
        """Stop every server this factory started."""
        for server in self.servers:
            server.stop()


class Client:
    """One WebSocket connection, with server frames decoded to protocol types.

    Frames that arrive while the test waits for something else are kept, in
    order, and handed out by later waits.
    """

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        # A refused client may have been answered with a subprotocol it
        # offered but that is not version 1; it only ever reads the close.
        offered = ws.subprotocol
        self.subprotocol = offered if offered in SUBPROTOCOLS else MSGPACK_SUBPROTOCOL
        self.codec: Codec[ServerMessage] = client_codec(self.subprotocol)
        self.inbox: collections.deque[ServerMessage] = collections.deque()
        self.hello: Hello | None = None
        self._ids = 0

    def next_id(self, prefix: str = "c") -> str:
        """A command id unique on this connection."""
        self._ids += 1
        return f"{prefix}{self._ids}"

    async def send(self, message: object) -> None:
        """Encode ``message`` and send it as this subprotocol's frame kind."""
        frame = self.codec.encode(message)
        await self.send_frame(frame if self.codec.binary else frame.decode())

    async def send_frame(self, frame: bytes | str) -> None:
        """Send one frame as is: bytes as a binary frame, str as a text frame."""
        await self.ws.send(frame)

    async def recv_frame(self, within: float = RECV_TIMEOUT) -> bytes | str:
        """The next frame as received, undecoded."""
        async with asyncio.timeout(within):
            return await self.ws.recv()

    async def recv(self, within: float = RECV_TIMEOUT) -> ServerMessage:
        """The next message, kept ones first."""
        if self.inbox:
            return self.inbox.popleft()
        return self._decode(await self.recv_frame(within))

    def _decode(self, frame: bytes | str) -> ServerMessage:
        # Each subprotocol has its frame kind (binary MessagePack, text JSON).
        if self.codec.binary:
            assert isinstance(frame, bytes), f"text frame on {self.subprotocol}"
        else:
            assert isinstance(frame, str), f"binary frame on {self.subprotocol}"
        return self.codec.decode(frame)

    async def recv_where(
        self, match: Callable[[ServerMessage], bool], within: float = RECV_TIMEOUT
    ) -> ServerMessage:
        """The first message that ``match``es; the others stay kept in order."""
        for index, message in enumerate(self.inbox):
            if match(message):
                del self.inbox[index]
                return message
        async with asyncio.timeout(within):
            while True:
                message = self._decode(await self.ws.recv())
                if match(message):
                    return message
                self.inbox.append(message)

    async def reply(
        self, command_id: str, within: float = RECV_TIMEOUT
    ) -> Ack | Error | Joined | Pong:
        """The answer to command ``command_id``."""

        def answers(message: ServerMessage) -> bool:
            return (
                isinstance(message, Ack | Error | Joined | Pong)
                and message.id == command_id
            )

        message = await self.recv_where(answers, within)
        assert isinstance(message, Ack | Error | Joined | Pong)
        return message

    async def request(self, command: Any, within: float = RECV_TIMEOUT) -> Any:
        """Send ``command`` and return its answer."""
        await self.send(command)
        return await self.reply(command.id, within)

    async def expect(
        self, kind: type[M], command: Any, within: float = RECV_TIMEOUT
    ) -> M:
        """Send ``command``; its answer must be a ``kind``."""
        answer = await self.request(command, within)
        assert isinstance(answer, kind), f"expected {kind.__name__}, got {answer!r}"
        return answer

    async def event(self, within: float = RECV_TIMEOUT) -> Any:
        """The next room event."""
        return await self.recv_where(lambda m: isinstance(m, Event), within)

    async def events(self, count: int, within: float = RECV_TIMEOUT) -> list[Any]:
        """The next ``count`` room events, within ``within`` seconds in all."""
        found: list[Any] = []
        async with asyncio.timeout(within):
            while len(found) < count:
                found.append(await self.event(within))
        return found

    async def events_until(
        self, offset: int | None, within: float = RECV_TIMEOUT
    ) -> list[Any]:
        """Room events up to and including the one at ``offset``."""
        assert offset is not None
        found: list[Any] = []
        async with asyncio.timeout(within):
            while not found or found[-1].offset < offset:
                found.append(await self.event(within))
        return found

    async def silence(self, seconds: float = 1.0) -> list[ServerMessage]:
        """Everything that arrives within ``seconds`` (kept frames included)."""
        found = list(self.inbox)
        self.inbox.clear()
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                found.append(await self.recv(left))
            except TimeoutError:
                break
        return found

    async def closed(self, within: float = RECV_TIMEOUT) -> tuple[int | None, str]:
        """Read until the server closes; the close code and reason it sent.

        What arrives before the close is kept, for :meth:`silence` or the
        ``inbox`` to show.
        """
        try:
            async with asyncio.timeout(within):
                while True:
                    self.inbox.append(self._decode(await self.ws.recv()))
        except ConnectionClosed as exc:
            if exc.rcvd is None:
                return None, ""
            return exc.rcvd.code, exc.rcvd.reason

    async def close(self) -> None:
        """Close from this side, without waiting long for the server."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(3):
                await self.ws.close()


Connect = Callable[..., Awaitable[Client]]


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """Open clients to a server; every one is closed when the test ends.

    ``await connect(server, token, room)`` returns a client whose hello frame
    was read; ``hello=False`` returns before reading anything, for refusals.
    ``subprotocol=None`` offers no subprotocol at all.
    """
    clients: list[Client] = []

    async def open_client(
        server: ServerProcess,
        token: str | None,
        room: str | None,
        *,
        subprotocol: str | None = MSGPACK_SUBPROTOCOL,
        subprotocols: Sequence[str] | None = None,
        hello: bool = True,
        **kwargs: Any,
    ) -> Client:
        offered = subprotocols
        if offered is None and subprotocol is not None:
            offered = [subprotocol]
        kwargs.setdefault("max_size", 2**22)
        kwargs.setdefault("open_timeout", 5)
        kwargs.setdefault("close_timeout", 2)
        ws = await ws_connect(
            server.ws_url(room, token),
            subprotocols=[Subprotocol(name) for name in offered] if offered else None,
            **kwargs,
        )
        client = Client(ws)
        clients.append(client)
        if hello:
            message = await client.recv()
            assert isinstance(message, Hello), f"expected hello, got {message!r}"
            client.hello = message
        return client

    yield open_client
    await asyncio.gather(*(client.close() for client in clients))


@pytest.fixture(scope="module")
def server_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServerFactory]:
    """Start servers with custom settings; they live until the module ends."""
    factory = ServerFactory(tmp_path_factory.mktemp("servers"))
    yield factory
    factory.stop_all()


@pytest.fixture(scope="module")
def server(server_factory: ServerFactory) -> ServerProcess:
    """A server on the embedded defaults: SQLite store, in-process broker."""
    return server_factory()


DEFAULT_SCHOOL = "THCS Chu Văn An"
DEFAULT_CLASS = "6A"


def unique(prefix: str = "room") -> str:
    """A room or user id no other test uses."""
    return f"{prefix}-{secrets.token_hex(4)}"


async def enter(
    connect: Connect,
    server: ServerProcess,
    room: str,
    user: str,
    role: Role = Role.STUDENT,
    *,
    school: str = DEFAULT_SCHOOL,
    class_: str = DEFAULT_CLASS,
    name: str = "",
    subprotocol: str = MSGPACK_SUBPROTOCOL,
    last_offset: int | None = None,
    epoch: str | None = None,
) -> tuple[Client, Joined]:
    """Connect as ``user`` and join ``room``; the client and its joined reply."""
    token = server.token(user, role, room, school=school, class_=class_, name=name)
    client = await connect(server, token, room, subprotocol=subprotocol)
    command = Join(
        id=client.next_id("j"), room=room, last_offset=last_offset, epoch=epoch
    )
    joined = await client.expect(Joined, command)
    assert joined.room == room
    return client, joined


def member(
    user: str,
    role: Role = Role.STUDENT,
    school: str = DEFAULT_SCHOOL,
    class_: str = DEFAULT_CLASS,
    name: str = "",
) -> Member:
    """The member a token minted by :func:`enter` stands for."""
    return Member(user=user, name=name or user, role=role, school=school, class_=class_)


# Raw sockets --------------------------------------------------------------

_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class RawSocket:
    """A WebSocket upgraded by hand over a plain TCP stream.

    It never answers pings and never closes politely: it is the client a
    server must protect itself from.
    """

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.reader = reader
        self.writer = writer
        #: The client's own port, as the server sees it.
        self.port: int = writer.get_extra_info("sockname")[1]

    @classmethod
    async def upgrade(
        cls,
        server: ServerProcess,
        room: str,
        token: str,
        *,
        receive_buffer: int | None = None,
    ) -> RawSocket:
        """Connect and complete the RFC 6455 §4.1 opening handshake."""
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:
            # Set before connecting, so the window scale offered in the SYN
            # stays small and the kernel cannot buffer much on our behalf.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", server.port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=2**16)

        key = base64.b64encode(secrets.token_bytes(16))
        path = server.ws_url(room, token).split(str(server.port), 1)[1]
        request = (
            f"GET {path} HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{server.port}\r\n"
            "Upgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key.decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: {MSGPACK_SUBPROTOCOL}\r\n"
            "\r\n"
        )
        writer.write(request.encode())
        await writer.drain()
        async with asyncio.timeout(RECV_TIMEOUT):
            head = await reader.readuntil(b"\r\n\r\n")
        status, *lines = head.decode("latin-1").split("\r\n")
        assert status.startswith("HTTP/1.1 101"), head
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines if line)
        }
        accept = base64.b64encode(hashlib.sha1(key + _WS_GUID).digest()).decode()
        assert headers.get("sec-websocket-accept") == accept, headers
        return cls(reader, writer)

    async def read_frame(self) -> tuple[int, bytes]:
        """One frame from the server (RFC 6455 §5.2): its opcode and payload."""
        first, second = await self.reader.readexactly(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
        assert not second & 0x80, "a server must not mask its frames"
        return first & 0x0F, await self.reader.readexactly(length)

    async def send_frame(self, payload: bytes, opcode: int = 0x2) -> None:
        """One final frame, masked as a client must (RFC 6455 §5.3)."""
        mask = secrets.token_bytes(4)
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
        elif length < 2**16:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(header + mask + masked)
        await self.writer.drain()

    def close(self) -> None:
        """Drop the TCP connection without a closing handshake."""
        self.writer.transport.abort()
