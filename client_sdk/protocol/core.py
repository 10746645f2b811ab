"""Protocol v1, the core: connection, rooms, presence and broadcast.

The server and the Python client SDK both import this module, so a field
added here is a field on both sides. Each message is a :class:`msgspec.Struct`
tagged by its ``type`` field; :mod:`client_sdk.codec` turns frames into these
classes and back, and rejects anything that does not fit them.

Compatibility rule for version 1: a peer ignores fields it does not know, and
new optional fields may be added to any message. New message types may be
added too: a client ignores a server message whose ``type`` it does not know
(a room event of an unknown type still takes its offset), and a server
answers an unknown command with an ``unknown_type`` error. Removing a field,
changing its type or its meaning, or adding a required field needs a new
subprotocol (``lophoc.v2.*``).

Times are integers in milliseconds since the Unix epoch, as measured by the
server's clock unless the field name says ``client``.
"""

from __future__ import annotations

import enum
from typing import Annotated, Final

import msgspec

#: Subprotocol names offered in ``Sec-WebSocket-Protocol`` (RFC 6455 §1.9).
MSGPACK_SUBPROTOCOL: Final = "lophoc.v1.msgpack"
JSON_SUBPROTOCOL: Final = "lophoc.v1.json"
SUBPROTOCOLS: Final = (MSGPACK_SUBPROTOCOL, JSON_SUBPROTOCOL)
PROTOCOL_VERSION: Final = 1

# Bounds shared by every message: they keep one frame from holding unbounded
# strings or lists even when it fits within the frame size limit.
CommandId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
RoomId = Annotated[
    str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+\Z")
]
Topic = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Offset = Annotated[int, msgspec.Meta(ge=0)]
Millis = Annotated[int, msgspec.Meta(ge=0)]


class Role(enum.StrEnum):
    """What a connection may do, as carried by its join token."""

    TEACHER = "teacher"
    CO_TEACHER = "co-teacher"
    CLASSROOM = "classroom"
    STUDENT = "student"
    PROCTOR = "proctor"
    ADMIN = "admin"


class ErrorCode(enum.StrEnum):
    """Stable codes carried by :class:`Error` frames."""

    #: The frame is not valid MessagePack or JSON, or not a map.
    MALFORMED = "malformed"
    #: The ``type`` field names no message this server accepts.
    UNKNOWN_TYPE = "unknown_type"
    #: A field is missing, of the wrong type, or out of its bounds.
    INVALID = "invalid"
    #: The sender's role does not allow this command in this room.
    FORBIDDEN = "forbidden"
    #: The command names a room the connection has not joined.
    NOT_JOINED = "not_joined"
    #: More messages per second than the connection's limit.
    RATE_LIMITED = "rate_limited"
    #: The question or exam no longer takes this command (its deadline
    #: passed, or the quiz does not allow changing an answer).
    CLOSED = "closed"
    #: The room's owner could not be reached in time; retry with the same id.
    UNAVAILABLE = "unavailable"
    #: Every seat of the room is taken; a join may succeed once someone leaves.
    ROOM_FULL = "room_full"
    #: Anything else went wrong on the server; retry with the same id.
    INTERNAL = "internal"


class CloseCode(enum.IntEnum):
    """WebSocket close codes the server uses (RFC 6455 §7.4)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    #: A frame larger than the frame size limit (RFC 6455 §7.4.1).
    MESSAGE_TOO_BIG = 1009
    #: The server failed; the client should reconnect after a pause.
    INTERNAL_ERROR = 1011
    #: The node is restarting or shutting down; reconnect (to any node).
    SERVICE_RESTART = 1012
    #: The node is draining and takes no new connection; try again, and a
    #: reverse proxy will send the client to another node.
    TRY_AGAIN_LATER = 1013
    #: No token in the handshake.
    TOKEN_MISSING = 4001
    #: The token is malformed, wrongly signed or uses a refused algorithm.
    TOKEN_INVALID = 4002
    #: The token's ``exp`` has passed.
    TOKEN_EXPIRED = 4003
    #: The token's ``nbf`` or ``iat`` lies in the future.
    TOKEN_NOT_YET_VALID = 4004
    #: The token does not cover the room named in the handshake.
    WRONG_ROOM = 4005
    #: The ``Origin`` header is not among the allowed origins.
    ORIGIN_REFUSED = 4006
    #: The client offered subprotocols but none of version 1.
    SUBPROTOCOL_UNSUPPORTED = 4007
    #: The client read too slowly and its send queue filled up.
    SEND_QUEUE_FULL = 4008
    #: The client kept sending after being told it was rate limited.
    RATE_LIMIT_EXCEEDED = 4009
    #: The client sent too many frames that the decoder refused
    #: (``malformed``, ``unknown_type`` or ``invalid``).
    TOO_MANY_ERRORS = 4010
    #: The server lost events of a joined room that it cannot replay; the
    #: client should reconnect and join again with its last offset.
    RESYNC = 4011
    #: No ``room`` was named in the handshake.
    ROOM_MISSING = 4012
    #: A teacher removed this person from the room; do not reconnect.
    REMOVED = 4013


class Limits(msgspec.Struct, frozen=True):
    """The limits the server enforces on this connection."""

    max_frame_bytes: int
    messages_per_second: float
    burst: int
    send_queue: int
    ping_interval_ms: int
    ping_timeout_ms: int
    #: Refused frames tolerated within ``bad_frame_window_ms``.
    max_bad_frames: int = 0
    bad_frame_window_ms: int = 0


class IceServerInfo(msgspec.Struct, frozen=True, omit_defaults=True):
    """A STUN or TURN server for the client's WebRTC connection (hello)."""

    urls: list[str]
    username: str | None = None
    credential: str | None = None


class Member(msgspec.Struct, frozen=True):
    """One person or classroom device present in a room."""

    user: str
    name: str
    role: Role
    school: str
    class_: str = msgspec.field(name="class")


class LeaveReason(enum.StrEnum):
    """Why a member left a room."""

    LEFT = "left"
    DISCONNECTED = "disconnected"
    REMOVED = "removed"


class AwayMember(msgspec.Struct, frozen=True):
    """Someone who was in the room and is not now: why, and since when."""

    member: Member
    reason: LeaveReason
    at: int


class ClassRoster(msgspec.Struct, frozen=True, omit_defaults=True):
    """The members of one class of one school: present, and gone away."""

    class_: str = msgspec.field(name="class")
    members: list[Member] = msgspec.field(default_factory=list)
    away: list[AwayMember] = msgspec.field(default_factory=list)


class SchoolRoster(msgspec.Struct, frozen=True):
    """The classes of one school present in a room."""

    school: str
    classes: list[ClassRoster] = msgspec.field(default_factory=list)


# Client to server ---------------------------------------------------------


class Command(msgspec.Struct, tag_field="type", forbid_unknown_fields=False):
    """Base of every client command; ``id`` is chosen by the client.

    The server answers every command with an :class:`Ack` (or a more specific
    reply such as :class:`Joined`) or an :class:`Error` carrying the same
    ``id``. A command that adds to a room (a broadcast) sent again with the
    same ``id`` by the same person is applied once, so ids must be unique per
    person, not per connection: use random ids. Join and leave are
    idempotent by nature.
    """

    id: CommandId


class Join(Command, tag="join"):
    """Enter a room, resuming after ``last_offset`` of ``epoch`` if given."""

    room: RoomId
    last_offset: Offset | None = None
    epoch: Annotated[str, msgspec.Meta(max_length=64)] | None = None


class Leave(Command, tag="leave"):
    """Leave a room; the other members see a ``member_left`` event."""

    room: RoomId


class Broadcast(Command, tag="broadcast"):
    """Send ``body`` to everyone in the room (teachers, proctors, admins).

    ``body`` is opaque to the server: MessagePack bytes, or base64 in JSON.
    """

    room: RoomId
    topic: Topic
    body: bytes = b""


class Ping(Command, tag="ping"):
    """Ask for the server's time, to measure clock offset and round trip."""

    client_time: Millis


# Server to client ---------------------------------------------------------


class Hello(msgspec.Struct, tag_field="type", omit_defaults=True, tag="hello"):
    """First frame of every accepted connection."""

    protocol: int
    session: str
    node: str
    user: str
    name: str
    role: Role
    rooms: list[str]
    server_time: Millis
    limits: Limits
    #: STUN and TURN servers for WebRTC media (see :mod:`.media`).
    ice_servers: list[IceServerInfo] = msgspec.field(default_factory=list)


class Ack(msgspec.Struct, tag_field="type", omit_defaults=True, tag="ack"):
    """The command ``id`` was applied; ``offset`` is its event's, if any."""

    id: str
    room: str | None = None
    offset: int | None = None


class Error(msgspec.Struct, tag_field="type", omit_defaults=True, tag="error"):
    """The command ``id`` (if it could be read) was refused."""

    code: ErrorCode
    message: str
    id: str | None = None
    field: str | None = None


class Joined(msgspec.Struct, tag_field="type", omit_defaults=True, tag="joined"):
    """Reply to :class:`Join`.

    ``offset`` is the offset of the last event of the room at join time. With
    ``recovered`` true the events after the client's ``last_offset`` follow
    this frame, in order; otherwise ``roster`` is a fresh snapshot and the
    client must drop what it knew of the room.
    """

    id: str
    room: str
    epoch: str
    offset: int
    recovered: bool
    roster: list[SchoolRoster] | None = None


class Pong(msgspec.Struct, tag_field="type", omit_defaults=True, tag="pong"):
    """Reply to :class:`Ping`: both clocks, for the NTP-style offset."""

    id: str
    client_time: int
    server_time: int


class Event(msgspec.Struct, tag_field="type", omit_defaults=True):
    """Base of every room event: its room, offset and the room's epoch.

    Offsets are contiguous per room within an epoch. A new epoch means the
    room's history was lost: the client joins again (with its last offset;
    the server answers ``recovered: false`` and a fresh snapshot).
    """

    room: str
    offset: int
    epoch: str
    at: int


class MemberJoined(Event, tag="member_joined"):
    """Someone entered the room; ``returned`` when they had been here before."""

    member: Member
    returned: bool = False


class MemberLeft(Event, tag="member_left"):
    """Someone left the room, by choice or because their connection dropped."""

    user: str
    reason: LeaveReason


class Departure(msgspec.Struct, frozen=True):
    """One person who left, in a :class:`PresenceChanged` event."""

    user: str
    reason: LeaveReason


class PresenceChanged(Event, tag="presence"):
    """Several people came or went within a fraction of a second.

    In a large room the server gathers arrivals and departures into one
    event every few hundred milliseconds instead of one event each: with a
    thousand students arriving, one event per arrival would send a million
    frames. ``joined`` replaces any member with the same ``user``;
    ``returned`` lists those of ``joined`` who had been in the room before.
    """

    joined: list[Member] = msgspec.field(default_factory=list)
    left: list[Departure] = msgspec.field(default_factory=list)
    returned: list[str] = msgspec.field(default_factory=list)


class BroadcastEvent(Event, tag="broadcast"):
    """A message sent to the whole room."""

    sender: Member
    topic: str
    body: bytes
