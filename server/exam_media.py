"""A student's microphone in an exam room, as the proctors get it.

Two things, both on the node that holds the room's media:

- **Voice on a silent item.** Every student's microphone on the room's
  media connection is decoded once for its voice-activity figure
  (:mod:`media.activity`). While a student is not speaking a spoken answer
  on this node, :class:`ExamMicrophones` adds up their speech over
  :data:`rooms.proctoring.VOICE_WINDOW_MS`; once it reaches
  :data:`rooms.proctoring.VOICE_MIN_MS` it sends the room's writer a
  ``voice_on_silent_item`` signal carrying the figures
  (:class:`rooms.exam_room.VoiceHeard`), as :mod:`server.exam_speaking`
  sends a recording. The writer decides: only during the student's running
  attempt, not while a spoken answer is being recorded, and at most once per
  :data:`rooms.proctoring.VOICE_EVERY_MS`; the incident goes into the signed
  log and to the proctors like the server's other signals.
- **Listening in.** A proctor's ``exam_proctor`` with ``listen`` goes to the
  room's writer first, which checks that they are one of the room's proctors
  and logs it; then this node forwards that student's microphone to that
  proctor's media connection, and to nobody else, until ``stop_listening``,
  another ``listen``, or the proctor's leaving.

Known limit: like recording, both see the microphones of this node's media
only; with several nodes the room's connections must reach one node (see
:mod:`server.media_hub`).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import TYPE_CHECKING

from client_sdk.protocol import (
    Ack,
    IncidentKind,
    Member,
    ProctorActionKind,
    ProctorCommand,
    ReportSignal,
)
from media.activity import VoiceWindow
from media.errors import MediaError
from rooms import proctoring
from rooms.errors import BackendError, Refused
from rooms.exam_room import ExamAction, VoiceHeard
from rooms.hub import Hub
from rooms.wire import RefusedReply

if TYPE_CHECKING:
    from .media_hub import MediaHub, RoomMedia

logger = logging.getLogger(__name__)

#: How often the voice figures of a room's students are read.
POLL_SECONDS = 0.25


class ExamMicrophones:
    """Voice watches and listening routes of this node's exam rooms."""

    def __init__(self, hub: Hub, media: MediaHub) -> None:
        self._hub = hub
        self._media = media
        #: Whom each proctor listens to, by room then proctor.
        self._listening: dict[str, dict[str, str]] = {}

    # Listening ------------------------------------------------------------

    def routes(self, room: str) -> dict[str, list[str]]:
        """Whom each proctor of ``room`` hears, as the relay takes it."""
        return {
            proctor: [student]
            for proctor, student in self._listening.get(room, {}).items()
        }

    async def listen(self, member: Member, command: ProctorCommand) -> Ack:
        """Apply a proctor's ``listen`` or ``stop_listening``, then route it."""
        room = command.room
        action = ExamAction(member, command, self._hub.clock())
        reply = await self._hub.submit(room, action)
        if isinstance(reply, RefusedReply):
            raise Refused(reply.code, reply.message, reply.field)
        routes = self._listening.setdefault(room, {})
        if command.action is ProctorActionKind.LISTEN and command.user is not None:
            routes[member.user] = command.user
        else:
            routes.pop(member.user, None)
        if not routes:
            del self._listening[room]
        await self._media.resteer(room)
        logger.info(
            "exam %s: %s %s %s",
            room,
            member.user,
            command.action,
            command.user or "",
        )
        return Ack(id=command.id, room=room)

    def forget(self, room: str, user: str) -> None:
        """``user`` left ``room``'s media: they listen to nobody any more."""
        routes = self._listening.get(room)
        if routes is not None and routes.pop(user, None) is not None and not routes:
            del self._listening[room]

    # Voice on a silent item -------------------------------------------------

    def metered(self, media: RoomMedia) -> list[str]:
        """The participants of ``media`` whose voice is measured: its students."""
        desk = media.room.exam
        if desk is None:
            return []
        return [
            u for u in media.relay.participants if desk.setup.candidate(u) is not None
        ]

    async def watch(self, media: RoomMedia) -> None:
        """Until cancelled, report the sustained voice of ``media``'s students."""
        windows: dict[str, VoiceWindow] = {}
        while True:
            await asyncio.sleep(POLL_SECONDS)
            now = time.monotonic()
            for user in self.metered(media):
                window = windows.setdefault(
                    user, VoiceWindow(proctoring.VOICE_WINDOW_MS / 1000)
                )
                try:
                    activity = media.relay.activity(user)
                except MediaError:
                    continue
                if activity is None:
                    continue
                voiced = window.add(now, activity.voiced_seconds)
                if self._media.answers.recording(media.room.id, user):
                    window.clear()
                elif voiced * 1000 >= proctoring.VOICE_MIN_MS:
                    window.clear()
                    await self._report(media, user, round(voiced * 1000))
            for gone in windows.keys() - set(media.relay.participants):
                del windows[gone]

    async def _report(self, media: RoomMedia, user: str, voiced_ms: int) -> None:
        room = media.room.id
        member = media.room.members.get(user)
        if member is None:
            return
        command = ReportSignal(
            id=f"voice-{secrets.token_hex(8)}",
            room=room,
            signal=IncidentKind.VOICE_ON_SILENT_ITEM,
        )
        heard = VoiceHeard(voiced_ms=voiced_ms, window_ms=proctoring.VOICE_WINDOW_MS)
        action = ExamAction(member, command, self._hub.clock(), voice=heard)
        try:
            reply = await self._hub.submit(room, action)
        except (BackendError, Refused) as exc:
            logger.warning("exam %s: voice of %s not reported: %s", room, user, exc)
            return
        if isinstance(reply, RefusedReply):
            logger.debug("exam %s: voice of %s refused: %s", room, user, reply)
        else:
            logger.debug("exam %s: %d ms of voice from %s", room, voiced_ms, user)
