"""Messages between nodes: commands forwarded to a room's owner, and replies.

These never reach a client. They travel on the broker's per-node channel as
MessagePack, and carry the room commands of :mod:`rooms.room` unchanged.
"""

from __future__ import annotations

import msgspec

from client_sdk.protocol import (
    ErrorCode,
    ExamState,
    LessonView,
    ProctorView,
)

from .room import RoomCommand


class JoinReply(msgspec.Struct, tag=True, frozen=True):
    """The room as the joining connection must first see it."""

    epoch: str
    offset: int
    #: A list of ``SchoolRoster``, encoded in the format the join asked for
    #: and embedded as it is in the ``joined`` frame (see rooms/roster.py).
    roster: bytes
    lesson: LessonView | None = None


class AppendReply(msgspec.Struct, tag=True, frozen=True):
    """A command applied; ``offset`` is its first event's, if it had one."""

    offset: int | None = None
    duplicate: bool = False


class RefusedReply(msgspec.Struct, tag=True, frozen=True):
    """The room refused the command; becomes an ``error`` frame."""

    code: ErrorCode
    message: str
    field: str | None = None


class ExamReply(msgspec.Struct, tag=True, frozen=True):
    """An exam command's answer for the one connection that sent it."""

    message: ExamState | ProctorView


class NotOwner(msgspec.Struct, tag=True, frozen=True):
    """The node asked does not own the room (any more); ask the store again."""


Reply = JoinReply | AppendReply | ExamReply | RefusedReply | NotOwner


class Request(msgspec.Struct, tag=True, frozen=True):
    """A command forwarded to the owner of ``room``."""

    id: int
    reply_to: str
    room: str
    command: RoomCommand


class NoticeFrame(msgspec.Struct, tag=True, frozen=True):
    """A notice for some members of a room, on the room's notice channel.

    ``frame`` is the MessagePack of the client message, encoded once by the
    writer; ``user`` and ``close`` are as in :class:`rooms.writer.Notice`.
    """

    frame: bytes | None
    user: str | None = None
    close: int | None = None


class Response(msgspec.Struct, tag=True, frozen=True):
    """The owner's reply to the :class:`Request` with the same ``id``."""

    id: int
    reply: Reply


NodeMessage = Request | Response

encoder = msgspec.msgpack.Encoder()
decoder = msgspec.msgpack.Decoder(NodeMessage)
