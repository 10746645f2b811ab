"""The Python client SDK of lophoc, and the protocol it shares with the server.

:class:`Client` is the asyncio client; :mod:`client_sdk.protocol` defines
every message of the wire protocol, re-exported here for convenience.
"""

from .backoff import Backoff
from .client import Client
from .clock import ClockOffset, ClockSample
from .errors import (
    ClientClosed,
    ClientError,
    CommandError,
    CommandTimeout,
    ConnectFailed,
    ConnectionLost,
    ConnectionRefused,
    ProtocolViolation,
)
from .events import (
    ClientEvent,
    ConnectionState,
    Disconnected,
    Reconnected,
    RejoinFailed,
    Resumed,
    Resynced,
)
from .protocol import (
    JSON_SUBPROTOCOL,
    MSGPACK_SUBPROTOCOL,
    Ack,
    Broadcast,
    BroadcastEvent,
    CloseCode,
    ErrorCode,
    Hello,
    Join,
    Joined,
    Leave,
    Member,
    MemberJoined,
    MemberLeft,
    Ping,
    Pong,
    Role,
    RoomEvent,
)

__all__ = [
    "JSON_SUBPROTOCOL",
    "MSGPACK_SUBPROTOCOL",
    "Ack",
    "Backoff",
    "Broadcast",
    "BroadcastEvent",
    "Client",
    "ClientClosed",
    "ClientError",
    "ClientEvent",
    "ClockOffset",
    "ClockSample",
    "CloseCode",
    "CommandError",
    "CommandTimeout",
    "ConnectFailed",
    "ConnectionLost",
    "ConnectionRefused",
    "ConnectionState",
    "Disconnected",
    "ErrorCode",
    "Hello",
    "Join",
    "Joined",
    "Leave",
    "Member",
    "MemberJoined",
    "MemberLeft",
    "Ping",
    "Pong",
    "ProtocolViolation",
    "Reconnected",
    "RejoinFailed",
    "Resumed",
    "Resynced",
    "Role",
    "RoomEvent",
]
