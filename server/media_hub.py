"""A node's media: a relay per lesson room, driven by the room's events.

Each lesson room with a media participant on this node gets a
:class:`media.relay.MediaRoom`. A :class:`RoomMedia` follows the room's
events like any local listener: it keeps its own copy of the room's state,
and on every change of the floor, the teachers present or the mutes, it
tells the relay who is heard and who sees which video (the host, the
linked classes, the class on stage). A granted turn starts a recording of its
speaker, a released turn ends it. In an exam room no student is forwarded
to anybody: a student's audio is recorded for a speaking item
(:mod:`server.exam_speaking`), measured for voice on a silent item, and
forwarded to a proctor who listens to them (:mod:`server.exam_media`).

Known limit: a room's media lives on the node where its participants'
sockets are. With several nodes the reverse proxy must send a room's
connections to one node (hash on the ``room`` query parameter) for all of
them to hear each other.
"""

from __future__ import annotations

import asyncio
import logging
import pathlib
import re
from collections.abc import Callable, Coroutine
from typing import Any

from client_sdk.protocol import (
    FloorGranted,
    FloorReleased,
    HandQueue,
    IceServerInfo,
    Member,
    RoomEvent,
    VideoLayer,
)
from media.errors import MediaError
from media.floor import speakers
from media.ice import IceServer
from media.recorder import RecordingKind
from media.relay import MediaRoom, VideoNotify
from media.viewing import video_routes
from rooms.feed import EncodedEvent, EncodedNotice
from rooms.hub import Hub
from rooms.room import Room
from rooms.writer import load_room

from .exam_media import ExamMicrophones
from .exam_speaking import SpokenAnswers

logger = logging.getLogger(__name__)

_unsafe = re.compile(r"[^A-Za-z0-9_.-]+")


class RoomMedia:
    """The relay of one room, and the room state that steers it."""

    def __init__(
        self,
        room: Room,
        relay: MediaRoom,
        recordings: pathlib.Path,
        noticed: Callable[[str, EncodedNotice], None] | None = None,
        microphones: ExamMicrophones | None = None,
    ) -> None:
        self.room = room
        self.relay = relay
        self._recordings = recordings
        self._noticed = noticed
        self._microphones = microphones
        self._tasks: set[asyncio.Task[None]] = set()
        self._steer: asyncio.Lock = asyncio.Lock()

    # Listener of the room's feed --------------------------------------------

    def deliver(self, event: EncodedEvent) -> None:
        """Follow the room's state; re-steer the relay when it matters."""
        decoded = event.decode()
        if decoded.offset <= self.room.offset:
            return
        self.room.replay(decoded)
        if isinstance(decoded, HandQueue):
            return
        self.spawn(self._apply(decoded))

    def reset(self, room: str) -> None:
        """Lost events: the next offer or event reloads nothing; log it."""
        logger.warning("room %s: media view lost events", room)

    def notice(self, notice: EncodedNotice) -> None:
        """Notices do not change who is heard; an exam's may end a recording."""
        if self._noticed is not None and self.room.exam is not None:
            self._noticed(self.room.id, notice)

    def membership(self, room: str) -> tuple[Member, str] | None:
        """The relay is not a member of the room."""
        return None

    def forgotten(self, room: str) -> None:
        """Never called: the relay is not a member."""

    # Steering ---------------------------------------------------------------

    async def steer(self) -> None:
        """Forward exactly the speakers and the video the room's state allows."""
        exam = self._microphones
        if self.room.exam is not None and exam is not None:
            await self.relay.set_listening(
                exam.routes(self.room.id), exam.metered(self)
            )
            return
        turns, lesson = self.room.turns, self.room.lesson
        if turns is None or lesson is None:
            return
        host = lesson.plan.host.user
        self.relay.set_video(video_routes(self.room.members, host, lesson.stage))
        heard = [
            user
            for user in speakers(turns, self.room.members, host)
            if user in self.relay.participants
        ]
        await self.relay.set_speakers(heard)

    async def _apply(self, event: RoomEvent) -> None:
        async with self._steer:
            try:
                await self.steer()
                if isinstance(event, FloorReleased):
                    await self._stop_recording(event.user)
                elif isinstance(event, FloorGranted):
                    await self._start_recording(event)
            except MediaError:
                logger.warning(
                    "room %s: media could not follow %s", self.room.id, event
                )

    async def _start_recording(self, event: FloorGranted) -> None:
        turn = event.turn
        if turn.user not in self.relay.participants:
            return
        self._recordings.mkdir(parents=True, exist_ok=True)
        name = f"{turn.started_at}-{_unsafe.sub('-', turn.user)}.ogg"
        await self.relay.start_recording(
            turn.user,
            self._recordings / name,
            kind=RecordingKind.TURN,
            prompt=turn.prompt,
        )

    async def _stop_recording(self, user: str) -> None:
        if user in self.relay.participants:
            try:
                await self.relay.stop_recording(user)
            except MediaError:
                logger.debug("room %s: no recording of %s to stop", self.room.id, user)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` until it ends or the room's media closes."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Close every peer connection and wait for pending steering."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.relay.close()


class MediaHub:
    """The media rooms of this node, opened on first offer, closed when empty."""

    def __init__(
        self,
        hub: Hub,
        ice_servers: list[IceServer],
        recordings: pathlib.Path,
    ) -> None:
        self._hub = hub
        self._ice = ice_servers
        self._recordings = recordings
        self._rooms: dict[str, RoomMedia] = {}
        self._owners: dict[tuple[str, str], str] = {}
        self._lock = asyncio.Lock()
        #: Spoken exam answers being recorded on this node.
        self.answers = SpokenAnswers(hub, self)
        #: Exam students' voice watched, and proctors listening in.
        self.microphones = ExamMicrophones(hub, self)

    def folder(self, room_id: str) -> pathlib.Path:
        """Where the recordings of a room go."""
        return self._recordings / _unsafe.sub("-", room_id)

    def ice_info(self) -> list[IceServerInfo]:
        """The ICE servers as clients are told them in ``hello``."""
        return [
            IceServerInfo(
                urls=list(s.urls), username=s.username, credential=s.credential
            )
            for s in self._ice
        ]

    async def _room(self, room_id: str) -> RoomMedia:
        async with self._lock:
            media = self._rooms.get(room_id)
            if media is not None:
                return media
            state = await load_room(self._hub.store, room_id)
            media = RoomMedia(
                state,
                MediaRoom(room_id, ice_servers=self._ice),
                self.folder(room_id),
                self.answers.noticed,
                self.microphones,
            )
            if state.exam is not None:
                media.spawn(self.microphones.watch(media))
            await self._hub.listen(room_id, media)
            self._rooms[room_id] = media
            return media

    async def resteer(self, room_id: str) -> None:
        """Steer ``room_id``'s relay again, if this node holds its media."""
        media = self._rooms.get(room_id)
        if media is not None:
            await media.steer()

    def relay_of(self, room_id: str, user: str) -> MediaRoom | None:
        """The relay that holds ``user``'s media in ``room_id`` on this node."""
        media = self._rooms.get(room_id)
        if media is None or user not in media.relay.participants:
            return None
        return media.relay

    async def offer(
        self,
        room_id: str,
        user: str,
        session: str,
        sdp: str,
        notify: VideoNotify | None = None,
    ) -> str:
        """Answer ``user``'s offer in ``room_id`` and steer who is heard.

        One media connection per person and room: an offer from another of
        their connections replaces it, and only that connection's leave
        closes it. ``notify`` gets the notices of what the server changed
        on that connection's video by itself (a weak link's steps).
        """
        media = await self._room(room_id)
        answer = await media.relay.answer(user, sdp, notify=notify)
        self._owners[(room_id, user)] = session
        await media.steer()
        return answer

    async def candidate(
        self,
        room_id: str,
        user: str,
        candidate: str | None,
        sdp_mid: str | None,
        sdp_mline_index: int | None,
    ) -> None:
        """Add a candidate the client trickled."""
        media = self._rooms.get(room_id)
        if media is None:
            raise MediaError("send media_offer first", room_id)
        await media.relay.add_candidate(user, candidate, sdp_mid, sdp_mline_index)

    def video_quality(
        self, room_id: str, user: str, requested: VideoLayer
    ) -> tuple[VideoLayer, int]:
        """Ask for less or full video on ``user``'s slots.

        What the slots now carry, and the most layers a publisher shown on
        them sends (1 where none sends simulcast).
        """
        media = self._rooms.get(room_id)
        if media is None or user not in media.relay.participants:
            raise MediaError("send media_offer first", room_id)
        forwarded = media.relay.set_video_quality(user, requested)
        return forwarded, media.relay.video_layers(user)

    async def leave(self, room_id: str, user: str, session: str) -> None:
        """Close ``user``'s media in a room; the room's relay closes when empty.

        Nothing happens when a newer connection of the same person holds
        their media now.
        """
        media = self._rooms.get(room_id)
        if self._owners.get((room_id, user)) != session:
            return
        del self._owners[(room_id, user)]
        self.microphones.forget(room_id, user)
        if media is None or user not in media.relay.participants:
            return
        await self.answers.cut(room_id, user)
        await media.relay.remove(user)
        await media.steer()
        if not media.relay.participants:
            async with self._lock:
                self._rooms.pop(room_id, None)
            await self._hub.unlisten(room_id, media)
            await media.close()

    async def close(self) -> None:
        """Close every room's media, storing the spoken answers it recorded."""
        await self.answers.close()
        for room_id, media in list(self._rooms.items()):
            await self._hub.unlisten(room_id, media)
            await media.close()
        self._rooms.clear()
