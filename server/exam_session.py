"""The exam commands of a connection: from a client frame to the exam room.

A session hands every exam command here. The command goes to the room's
writer (on this node or forwarded to its owner) as an
:class:`rooms.exam_room.ExamAction`; the writer decides who may do what.
What comes back is for the sending connection only: an ``ack``, or a
student's :class:`ExamState` or a proctor's :class:`ProctorView` carrying
the command's id. It never goes through the room's feed, which every
member of the room receives. A spoken answer's start and end go to the
node's :class:`server.exam_speaking.SpokenAnswers`, which records it from
the student's media connection here; a proctor's ``listen`` and
``stop_listening`` go to :class:`server.exam_media.ExamMicrophones`, which
routes the student's microphone to the proctor's media connection here.
"""

from __future__ import annotations

import logging

from client_sdk.protocol import (
    Ack,
    ErrorCode,
    ExamCommand,
    ExamState,
    Member,
    ProctorActionKind,
    ProctorCommand,
    ProctorView,
    StartSpeaking,
    StopSpeaking,
)
from rooms.errors import Refused
from rooms.exam_room import ExamAction
from rooms.hub import Hub
from rooms.wire import AppendReply, ExamReply, RefusedReply

from .media_hub import MediaHub

logger = logging.getLogger(__name__)

#: Proctor actions that change what this node's media forwards.
LISTENING = (ProctorActionKind.LISTEN, ProctorActionKind.STOP_LISTENING)


async def exam_command(
    hub: Hub,
    member: Member,
    joined: bool,
    command: ExamCommand,
    media: MediaHub | None = None,
) -> Ack | ExamState | ProctorView:
    """Apply ``command`` of ``member``; the message to send back to them.

    ``joined`` says whether this connection is in the command's room;
    ``media`` is the node's media, which records spoken answers and lets
    proctors listen in.
    Raises :class:`Refused` for the error frame.
    """
    room = command.room
    if not joined:
        raise Refused(ErrorCode.NOT_JOINED, f"not in room {room!r}", "room")
    if isinstance(command, StartSpeaking | StopSpeaking):
        if media is None:
            raise Refused(ErrorCode.UNAVAILABLE, "this node serves no media")
        if isinstance(command, StartSpeaking):
            return await media.answers.start(member, command)
        return await media.answers.stop(member, command)
    if isinstance(command, ProctorCommand) and command.action in LISTENING:
        if media is None:
            raise Refused(ErrorCode.UNAVAILABLE, "this node serves no media")
        return await media.microphones.listen(member, command)
    reply = await hub.submit(
        room, ExamAction(actor=member, command=command, received_at=hub.clock())
    )
    if isinstance(reply, RefusedReply):
        raise Refused(reply.code, reply.message, reply.field)
    if isinstance(reply, ExamReply):
        return reply.message
    if isinstance(reply, AppendReply):
        return Ack(id=command.id, room=room)
    logger.error("exam command %s got %s", command.id, type(reply).__name__)
    raise Refused(ErrorCode.INTERNAL, "unexpected reply from the room")
