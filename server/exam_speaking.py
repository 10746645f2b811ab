"""Spoken exam answers: a student's microphone recorded for a speaking item.

A student on a speaking item sends ``exam_speak``; the exam room checks that
their attempt is open and the item is a speaking one, and logs that they
began. This node then records the audio the student already sends on the
room's media connection (:mod:`media.relay`), as the Opus packets arrived,
to ``<recordings>/<room>/<user>-<item>-<ms>.ogg``. ``exam_speak_end`` ends
it: the file goes into the store (so any node serves it to an examiner),
and its name, length and SHA-256 become the item's answer and an entry of
the room's signed log, so the log vouches for the audio as well.

The server ends a recording by itself, and stores it the same way, when
the attempt stops running (the deadline, a proctor's pause or end, a
submission: the room's ``exam_state`` notice to the student says so) and
when the student's media connection closes. The deadline is the room's,
read from that notice: time a proctor adds is recorded too.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import pathlib
import re
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from client_sdk.protocol import (
    Ack,
    AttemptState,
    ErrorCode,
    ExamNotice,
    ExamState,
    Member,
    Role,
    StartSpeaking,
    StopSpeaking,
)
from media.errors import MediaError
from media.recorder import RecordingInfo, RecordingKind
from rooms.errors import BackendError, Refused
from rooms.exam_room import ExamAction, SpokenAnswer
from rooms.feed import EncodedNotice
from rooms.hub import Hub
from rooms.wire import AppendReply, ExamReply, RefusedReply

if TYPE_CHECKING:
    from .media_hub import MediaHub

logger = logging.getLogger(__name__)

#: Store documents holding the audio of spoken answers, keyed ``room/file``.
RECORDING = "exam_recording"

_unsafe = re.compile(r"[^A-Za-z0-9_.-]+")
_notice_decoder = msgspec.msgpack.Decoder(ExamNotice)


def recording_key(room: str, file: str) -> str:
    """The store key of a spoken answer's audio."""
    return f"{room}/{file}"


@dataclass(frozen=True, slots=True)
class _Speaking:
    """A spoken answer being recorded on this node."""

    member: Member
    item: str
    command: str
    path: pathlib.Path


class SpokenAnswers:
    """The spoken answers this node is recording, by room and student."""

    def __init__(self, hub: Hub, media: MediaHub) -> None:
        self._hub = hub
        self._media = media
        self._active: dict[tuple[str, str], _Speaking] = {}
        self._unstored: dict[tuple[str, str], tuple[_Speaking, RecordingInfo]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def recording(self, room: str, user: str) -> bool:
        """Whether ``user`` is speaking an answer in ``room`` on this node."""
        return (room, user) in self._active

    async def start(self, member: Member, command: StartSpeaking) -> Ack:
        """Begin recording ``member``'s answer to ``command.item``."""
        room, user = command.room, member.user
        if member.role is not Role.STUDENT:
            raise Refused(ErrorCode.FORBIDDEN, "only students speak answers", "room")
        relay = self._media.relay_of(room, user)
        if relay is None:
            raise Refused(
                ErrorCode.INVALID,
                "send media_offer first: the answer is your microphone's audio",
                "room",
            )
        if (room, user) in self._active:
            raise Refused(
                ErrorCode.INVALID,
                f"already speaking {self._active[room, user].item!r}",
                "item",
            )
        reply = await self._submit(room, ExamAction(member, command, self._hub.clock()))
        if not isinstance(reply, ExamReply):
            # A retried command the room had applied: the recording runs.
            return Ack(id=command.id, room=room)
        name = f"{_unsafe.sub('-', user)}-{command.item}-{self._hub.clock()}.ogg"
        path = self._media.folder(room) / name
        speaking = _Speaking(member, command.item, command.id, path)
        self._active[room, user] = speaking
        try:
            await relay.start_recording(
                user, path, kind=RecordingKind.ANSWER, prompt=command.item
            )
        except MediaError as exc:
            self._active.pop((room, user), None)
            raise Refused(ErrorCode.INVALID, str(exc), "item") from exc
        logger.info("exam %s: %s speaks %s", room, user, command.item)
        return Ack(id=command.id, room=room)

    async def stop(self, member: Member, command: StopSpeaking) -> Ack:
        """End ``member``'s recording of ``command.item`` and store it."""
        await self._file(command.room, member.user, command.id, command.item)
        return Ack(id=command.id, room=command.room)

    async def cut(self, room: str, user: str) -> None:
        """End and store ``user``'s recording in ``room``, if one runs."""
        unstored = self._unstored.get((room, user))
        speaking = self._active.get((room, user)) or (unstored and unstored[0])
        if not speaking:
            return
        try:
            await self._file(room, user, f"{speaking.command[:56]}.end")
        except Refused as refused:
            logger.warning("exam %s: answer of %s not stored: %s", room, user, refused)

    def noticed(self, room: str, notice: EncodedNotice) -> None:
        """A notice of ``room``: end a student's recording when their time stops."""
        if notice.user is None or notice.msgpack is None:
            return
        if (room, notice.user) not in self._active:
            return
        message = _notice_decoder.decode(notice.msgpack)
        if isinstance(message, ExamState) and message.state is not (
            AttemptState.RUNNING
        ):
            self._spawn(self.cut(room, notice.user))

    async def close(self) -> None:
        """Store every recording still running, and wait for pending ones."""
        held = {*self._active, *self._unstored}
        await asyncio.gather(*(self.cut(room, user) for room, user in held))
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _file(
        self, room: str, user: str, command_id: str, item: str | None = None
    ) -> None:
        # A recording whose storing failed waits for the retry of its end.
        key = (room, user)
        speaking = self._active.get(key)
        unstored = self._unstored.get(key)
        current = speaking or (unstored[0] if unstored else None)
        if current is None or item not in (None, current.item):
            raise Refused(ErrorCode.INVALID, f"not speaking {item!r}", "item")
        if speaking is not None:
            del self._active[key]
            relay = self._media.relay_of(room, user)
            if relay is None:
                raise Refused(ErrorCode.INVALID, "the media connection closed", "room")
            try:
                info = await relay.stop_recording(user)
            except MediaError as exc:
                raise Refused(ErrorCode.INVALID, str(exc), "item") from exc
        else:
            current, info = self._unstored.pop(key)
        try:
            await self._store(room, user, current, info, command_id)
        except BackendError as exc:
            self._unstored[key] = (current, info)
            raise Refused(
                ErrorCode.UNAVAILABLE, "the store is unreachable; send it again"
            ) from exc

    async def _store(
        self,
        room: str,
        user: str,
        speaking: _Speaking,
        info: RecordingInfo,
        command_id: str,
    ) -> None:
        path = pathlib.Path(info.path)
        data = await asyncio.to_thread(path.read_bytes)
        await self._hub.store.save_document(
            RECORDING, recording_key(room, path.name), data
        )
        spoken = SpokenAnswer(
            user=user,
            item=speaking.item,
            file=path.name,
            sha256=hashlib.sha256(data).hexdigest(),
            size=len(data),
            seconds=info.seconds,
            voiced_seconds=info.voiced_seconds,
        )
        command = StopSpeaking(id=command_id, room=room, item=speaking.item)
        action = ExamAction(
            speaking.member, command, self._hub.clock(), recording=spoken
        )
        await self._submit(room, action)
        logger.info(
            "exam %s: answer of %s to %s stored, %.1f s",
            room,
            user,
            speaking.item,
            info.seconds,
        )

    async def _submit(self, room: str, action: ExamAction) -> AppendReply | ExamReply:
        reply = await self._hub.submit(room, action)
        if isinstance(reply, RefusedReply):
            raise Refused(reply.code, reply.message, reply.field)
        if isinstance(reply, AppendReply | ExamReply):
            return reply
        raise Refused(ErrorCode.INTERNAL, "unexpected reply from the room")

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
