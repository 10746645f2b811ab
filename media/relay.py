"""A room's media: one peer connection per participant, speakers forwarded.

:class:`MediaRoom` answers each participant's SDP offer with an aiortc peer
connection of the server's own, and forwards the current speakers' Opus
packets (:mod:`media.forward`) to everyone else. Signaling is the caller's
job: offers, answers and candidates come in and go out as plain strings.

How a client lays out its offer:

- its first audio m-line that sends is its microphone; other sending audio
  m-lines are refused (answered without receiving);
- each audio m-line that receives is a *slot*: one speaker at a time is
  heard on it. A client that wants to hear the teacher and the floor holder
  at once offers two receiving audio m-lines;
- its first video m-line that sends is its camera, the second its screen;
  further sending video m-lines are refused. Each video m-line that receives
  is a *video slot* showing one published track at a time
  (:mod:`media.video`); VP8 is chosen where offered, else H.264. A
  published track offered as simulcast layers (``a=simulcast:send``, RFC
  8853) is answered ``a=simulcast:recv`` for up to three of them
  (:mod:`media.simulcast`), and each viewer gets one layer;
- data channels are left to aiortc.

Who is forwarded is enforced here, on the server: :meth:`MediaRoom.set_speakers`
takes the speakers in order of priority (:func:`media.floor.speakers` reads
them from a lesson's turns); each listener's slots carry the
first of them (never the listener themself) and a speaker keeps their slot
while they stay in the set. :meth:`MediaRoom.set_listening` adds sources
for single listeners only (a proctor listening to one student of an exam).
Anyone else's packets are not forwarded, whatever their client sends.
Video is steered the same way, per viewer, by :meth:`MediaRoom.set_video`
(:func:`media.viewing.video_routes` reads it from the lesson's members and
stage). A viewer whose link loses packets gets less video until the link is
clean again (:mod:`media.protection`), and its ``notify`` callback hears of
each such change.
"""

from __future__ import annotations

import asyncio
import datetime
import enum
import logging
import pathlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from aiortc import (
    RTCPeerConnection,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc import sdp as rtc_sdp

from client_sdk.protocol import VideoLayer, VideoQualityChanged

from .activity import VoiceActivity
from .errors import (
    BadCandidate,
    BadOffer,
    RecordingError,
    RoomClosed,
    UnknownParticipant,
)
from .forward import ForwardTrack, InboundAudio
from .ice import IceServer, rtc_configuration
from .offer import (
    SDP_ERRORS,
    Plan,
    opus_capability,
    read_offer,
    transceiver_direction,
    video_capabilities,
)
from .protection import Step, VideoProtection
from .recorder import OggOpusWriter, RecordingInfo, RecordingKind
from .simulcast import (
    SimulcastOffer,
    accept_simulcast,
    route_by_mid,
)
from .slot import fill
from .video import (
    InboundVideo,
    VideoForwardTrack,
    VideoKind,
    slots_forward,
    slots_layers,
)
from .viewing import VideoSource
from .worker import SpeakerWorker

logger = logging.getLogger(__name__)


class PeerState(enum.StrEnum):
    """The state of a participant's peer connection (W3C RTCPeerConnectionState)."""

    NEW = "new"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    FAILED = "failed"
    CLOSED = "closed"


StateListener = Callable[[str, PeerState], None]
#: Hears the changes of a viewer's video the relay made on its own.
VideoNotify = Callable[[VideoQualityChanged], None]


@dataclass(slots=True)
class _Participant:
    id: str
    pc: RTCPeerConnection
    inbound: InboundAudio | None
    slots: list[ForwardTrack]
    worker: SpeakerWorker | None = None
    recording: bool = False
    state: PeerState = PeerState.NEW
    videos: dict[VideoKind, InboundVideo] = field(default_factory=dict)
    video_slots: list[VideoForwardTrack] = field(default_factory=list)
    #: What the viewer asked for with ``video_quality``.
    requested: VideoLayer = VideoLayer.HIGH
    protection: VideoProtection | None = None
    notify: VideoNotify | None = None


class MediaRoom:
    """The media of one room on its owner node.

    ``on_state`` hears every change of a participant's connection state;
    on ``failed`` the caller should ask the client for a new offer (an ICE
    restart is a new connection here).
    """

    def __init__(
        self,
        room: str,
        *,
        ice_servers: Iterable[IceServer] = (),
        on_state: StateListener | None = None,
    ) -> None:
        self.room = room
        self._ice_servers = tuple(ice_servers)
        self._on_state = on_state
        self._participants: dict[str, _Participant] = {}
        self._speakers: tuple[str, ...] = ()
        self._listening: dict[str, tuple[str, ...]] = {}
        self._metered: frozenset[str] = frozenset()
        self._video_routes: dict[str, list[VideoSource]] = {}
        # Serialises changes of membership, workers and recordings; SDP
        # negotiation happens outside it so joins do not wait on each other.
        self._lock = asyncio.Lock()
        self._closed = False

    # Reading ---------------------------------------------------------------

    @property
    def participants(self) -> tuple[str, ...]:
        """The participants with a peer connection, in order of arrival."""
        return tuple(self._participants)

    @property
    def speakers(self) -> tuple[str, ...]:
        """The speakers, in the order given to :meth:`set_speakers`."""
        return self._speakers

    def state(self, participant: str) -> PeerState:
        """The connection state of a participant's peer."""
        return self._get(participant).state

    def forwarding(self, listener: str) -> tuple[str | None, ...]:
        """Whom each of a listener's slots carries now (None: nobody)."""
        return tuple(
            slot.source.participant if slot.source else None
            for slot in self._get(listener).slots
        )

    def forwarding_video(self, viewer: str) -> tuple[VideoSource | None, ...]:
        """Which published track each of a viewer's video slots shows now."""
        return tuple(
            (slot.source.participant, slot.source.kind) if slot.source else None
            for slot in self._get(viewer).video_slots
        )

    def video_quality(self, viewer: str) -> VideoLayer:
        """What ``viewer``'s video slots forward now, as ``video_quality`` says."""
        joined = self._get(viewer)
        return slots_forward(joined.video_slots, self._wanted(joined))

    def video_protection(self, viewer: str) -> VideoProtection | None:
        """The loss protection of ``viewer``'s video (None: it has no slots)."""
        return self._get(viewer).protection

    def published(self, participant: str) -> dict[VideoKind, InboundVideo]:
        """The video tracks a participant's offer publishes, by kind."""
        return dict(self._get(participant).videos)

    def activity(self, participant: str) -> VoiceActivity | None:
        """Voice activity of a speaker or recorded participant, else None."""
        worker = self._get(participant).worker
        return worker.activity if worker else None

    # Signaling -------------------------------------------------------------

    async def answer(
        self, participant: str, offer: str, *, notify: VideoNotify | None = None
    ) -> str:
        """Answer a participant's SDP offer; returns the SDP answer.

        The answer carries all of the server's candidates (aiortc gathers
        before answering), so the client needs no trickled candidates from
        the server. A participant who offers again gets a new connection:
        the old one is closed, ending a recording in progress. ``notify``
        hears each change of this connection's video made for its link.
        """
        self._check_open()
        plan = read_offer(offer)
        pc = RTCPeerConnection(rtc_configuration(self._ice_servers))
        joined = _Participant(participant, pc, None, [], notify=notify)
        # Before negotiating: aiortc starts connecting inside
        # setLocalDescription, and its first state change must not be missed.
        pc.on("connectionstatechange", lambda: self._state_changed(joined))
        try:
            # Under max-bundle aiortc gives every transceiver the first one's
            # transport, then stops, as a bundled-away transport, that of any
            # transceiver not matched to the first m-line: the first one made
            # must be of the first m-line's kind, or the connection's only
            # transport is stopped and it never comes up.
            if plan.kinds[:1] == ["video"]:
                simulcast = self._prepare_video(pc, joined, plan)
                joined.slots, microphone = self._prepare(pc, participant, plan)
            else:
                joined.slots, microphone = self._prepare(pc, participant, plan)
                simulcast = self._prepare_video(pc, joined, plan)
            await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
            if microphone is not None:
                transceiver, payload_type = microphone
                joined.inbound = InboundAudio(
                    participant, transceiver.receiver, payload_type
                )
            for transceiver, layers in simulcast:
                # aiortc answers only the header extensions it knows, and
                # the rid ones are not among them; added here, they are in
                # the answer and aiortc's RTP parser reads them.
                transceiver._headerExtensions.extend(layers.extensions)
            await pc.setLocalDescription(await pc.createAnswer())
            # Only now does each transceiver have the bundle's transport.
            for transceiver, _ in simulcast:
                route_by_mid(transceiver.receiver.transport)
            self._protect(joined)
        except SDP_ERRORS as exc:
            await pc.close()
            raise BadOffer("offer cannot be answered", participant) from exc
        except BaseException:
            await pc.close()
            raise

        async with self._lock:
            if self._closed:
                await pc.close()
                raise RoomClosed("media room closed", self.room)
            previous = self._participants.pop(participant, None)
            self._participants[participant] = joined
            if joined.state is not PeerState.NEW:
                self._report(joined)
            self._route()
            self._route_video()
            if previous is not None:
                logger.info("%s: %s offered again", self.room, participant)
                await self._drop(previous)
            await self._reconcile()
        logger.info(
            "%s: %s joined media with %d slots%s, %d video slots, publishing %s",
            self.room,
            participant,
            len(joined.slots),
            " and a microphone" if joined.inbound else "",
            len(joined.video_slots),
            ",".join(
                f"{kind}*{video.layers}" if video.simulcast else kind
                for kind, video in joined.videos.items()
            )
            or "no video",
        )
        return accept_simulcast(
            pc.localDescription.sdp,
            {line.index: line.simulcast for line in plan.video if line.simulcast},
        )

    async def add_candidate(
        self,
        participant: str,
        candidate: str | None,
        sdp_mid: str | None = None,
        sdp_mline_index: int | None = None,
    ) -> None:
        """Add a candidate the client trickled; None or "" ends its candidates.

        ``candidate`` is the attribute value of RFC 8839 section 5.1, with or
        without its ``candidate:`` prefix, as browsers hand it out.
        """
        pc = self._get(participant).pc
        if not candidate:
            await pc.addIceCandidate(None)
            return
        try:
            parsed = rtc_sdp.candidate_from_sdp(candidate.removeprefix("candidate:"))
        except SDP_ERRORS as exc:
            raise BadCandidate("ICE candidate does not parse", candidate) from exc
        parsed.sdpMid = sdp_mid
        parsed.sdpMLineIndex = sdp_mline_index
        if sdp_mid is None and sdp_mline_index is None:
            parsed.sdpMLineIndex = 0
        await pc.addIceCandidate(parsed)

    # Speakers and recordings -------------------------------------------------

    async def set_speakers(self, speakers: Iterable[str]) -> None:
        """Forward these participants, first ones first, to everyone else.

        Forwarding switches before this returns: the next packet of each
        listener's slot comes from the new speaker. Workers (voice activity)
        of speakers who came or went are started or stopped after.
        """
        self._check_open()
        self._speakers = tuple(dict.fromkeys(speakers))
        self._route()
        async with self._lock:
            await self._reconcile()

    async def set_listening(
        self, routes: Mapping[str, Sequence[str]], metered: Iterable[str] = ()
    ) -> None:
        """Forward to each listener of ``routes`` its sources, after the speakers.

        ``metered`` participants are decoded for :meth:`activity` anyway.
        """
        self._check_open()
        self._listening = {user: tuple(heard) for user, heard in routes.items()}
        self._metered = frozenset(metered)
        self._route()
        async with self._lock:
            await self._reconcile()

    def set_video(self, routes: Mapping[str, Sequence[VideoSource]]) -> None:
        """Show each viewer these published tracks, first ones first.

        Viewers missing from ``routes`` see nothing; a track is shown only
        once its publisher is connected and publishes it. Each slot keeps
        its track while the track stays wanted, and a slot given a new track
        starts at that track's next keyframe.
        """
        self._check_open()
        self._video_routes = {
            viewer: list(dict.fromkeys(wanted)) for viewer, wanted in routes.items()
        }
        self._route_video()

    def set_video_quality(self, viewer: str, requested: VideoLayer) -> VideoLayer:
        """Ask for ``requested`` on every video slot of ``viewer``.

        Returns what the slots forward: ``low`` when at least one of them
        shows a publisher's lower layer, else as
        :func:`media.video.forwarded_layer` says for one layer. While the
        viewer's link is lossy that may be less than ``requested``.
        """
        joined = self._get(viewer)
        joined.requested = requested
        wanted = self._wanted(joined)
        for slot in joined.video_slots:
            slot.set_layer(wanted)
        return slots_forward(joined.video_slots, wanted)

    def video_layers(self, viewer: str) -> int:
        """The most layers any publisher shown on ``viewer``'s slots sends.

        1 when none of them sends simulcast (or the viewer sees nothing).
        """
        return slots_layers(self._get(viewer).video_slots)

    async def start_recording(
        self,
        participant: str,
        path: pathlib.Path,
        *,
        kind: RecordingKind = RecordingKind.TURN,
        prompt: str | None = None,
    ) -> None:
        """Record a participant's audio to ``path`` until :meth:`stop_recording`."""
        self._check_open()
        async with self._lock:
            joined = self._get(participant)
            if joined.inbound is None:
                raise RecordingError("participant sends no audio", participant)
            if joined.recording:
                raise RecordingError("already recording", participant)
            joined.recording = True
            await self._reconcile()
            worker = joined.worker
            if worker is None:  # pragma: no cover - _reconcile just made it
                raise RecordingError("no worker", participant)
            writer = OggOpusWriter(
                path,
                room=self.room,
                participant=participant,
                kind=kind,
                prompt=prompt,
                started=time.monotonic(),
                started_at=_utcnow(),
            )
            try:
                await worker.begin_recording(writer)
            except BaseException:
                joined.recording = False
                await self._reconcile()
                raise
        logger.info("%s: recording %s (%s)", self.room, participant, kind)

    async def stop_recording(self, participant: str) -> RecordingInfo:
        """Finish a participant's recording; returns what was recorded."""
        async with self._lock:
            joined = self._get(participant)
            if not joined.recording or joined.worker is None:
                raise RecordingError("not recording", participant)
            try:
                return await joined.worker.end_recording()
            finally:
                joined.recording = False
                await self._reconcile()

    # Leaving ---------------------------------------------------------------

    async def remove(self, participant: str) -> RecordingInfo | None:
        """Close a participant's connection; returns a recording it cut short."""
        async with self._lock:
            leaving = self._participants.pop(participant, None)
            if leaving is None:
                raise UnknownParticipant(participant)
            self._route()
            self._route_video()
            info = await self._drop(leaving)
        logger.info("%s: %s left media", self.room, participant)
        return info

    async def close(self) -> None:
        """Close every connection, finishing recordings; idempotent."""
        async with self._lock:
            if self._closed:
                return
            self._closed = True
            leaving = list(self._participants.values())
            self._participants.clear()
            self._speakers = ()
            self._video_routes = {}
            results = await asyncio.gather(
                *(self._drop(p) for p in leaving), return_exceptions=True
            )
        for left, result in zip(leaving, results, strict=True):
            if isinstance(result, BaseException):
                logger.error(
                    "%s: closing %s failed", self.room, left.id, exc_info=result
                )
        logger.info("%s: media closed, %d connections", self.room, len(leaving))

    # Internals -------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RoomClosed("media room closed", self.room)

    def _get(self, participant: str) -> _Participant:
        try:
            return self._participants[participant]
        except KeyError:
            raise UnknownParticipant(participant) from None

    def _prepare(
        self, pc: RTCPeerConnection, participant: str, plan: Plan
    ) -> tuple[list[ForwardTrack], tuple[RTCRtpTransceiver, int] | None]:
        """Transceivers matching the offer's m-lines, in their order.

        aiortc gives each m-line of a remote offer the first transceiver of
        its kind not yet bound to one, so creating them beforehand lets the
        server choose direction, track and codecs per m-line. Restricting
        the audio codecs to Opus makes the forwarded packets decodable by
        every listener.
        """
        opus = opus_capability()
        slots: list[ForwardTrack] = []
        microphone = None
        lines = iter(plan.audio)
        for kind in plan.kinds:
            if kind != "audio":
                continue
            line = next(lines)
            direction = transceiver_direction(send=line.slot, receive=line.microphone)
            if line.slot:
                track = ForwardTrack(participant, len(slots))
                slots.append(track)
                transceiver = pc.addTransceiver(track, direction=direction)
            else:
                transceiver = pc.addTransceiver("audio", direction=direction)
            if line.opus is not None:
                transceiver.setCodecPreferences([opus])
            if line.microphone and line.opus is not None:
                microphone = (transceiver, line.opus)
        return slots, microphone

    def _prepare_video(
        self, pc: RTCPeerConnection, joined: _Participant, plan: Plan
    ) -> list[tuple[RTCRtpTransceiver, SimulcastOffer]]:
        """Video transceivers matching the offer's video m-lines, in order.

        Created after the audio ones: aiortc binds m-lines to transceivers
        per kind, so the order across kinds does not matter. Returns the
        publishing transceivers that receive simulcast, with their layers.
        """
        simulcast = []
        for line in plan.video:
            direction = transceiver_direction(
                send=line.slot, receive=line.publishes is not None
            )
            if line.slot and line.codec is not None:
                track = VideoForwardTrack(
                    joined.id, len(joined.video_slots), line.codec
                )
                joined.video_slots.append(track)
                transceiver = pc.addTransceiver(track, direction=direction)
                track.bind(transceiver.sender)
            else:
                transceiver = pc.addTransceiver("video", direction=direction)
            if line.codec is not None:
                transceiver.setCodecPreferences(video_capabilities(line.codec))
            if line.publishes is not None:
                rids = line.simulcast.rids if line.simulcast else ()
                joined.videos[line.publishes] = InboundVideo(
                    joined.id, line.publishes, transceiver.receiver, rids
                )
                if line.simulcast is not None:
                    simulcast.append((transceiver, line.simulcast))
        return simulcast

    def _protect(self, joined: _Participant) -> None:
        """Watch the reports on every stream sent to a viewer with video slots.

        Audio slots count too: they share the link, and a viewer whose video
        is off still reports on them.
        """
        if not joined.video_slots:
            return
        protection = VideoProtection(
            joined.id,
            lambda step: self._stepped(joined, step),
            lambda: joined.requested,
            lambda: slots_layers(joined.video_slots),
        )
        slots = {*joined.slots, *joined.video_slots}
        for transceiver in joined.pc.getTransceivers():
            if transceiver.sender.track in slots:
                protection.watch(transceiver.sender)
        joined.protection = protection

    def _wanted(self, joined: _Participant) -> VideoLayer:
        """What a viewer's slots should forward: its request, as its link allows."""
        if joined.protection is None:
            return joined.requested
        return joined.protection.guard.limit(joined.requested)

    def _stepped(self, joined: _Participant, step: Step) -> None:
        """Apply a step of the viewer's protection; tell the viewer if it shows."""
        if self._closed or self._participants.get(joined.id) is not joined:
            return
        before = slots_forward(joined.video_slots, step.level)
        for slot in joined.video_slots:
            slot.set_layer(step.level)
        after = slots_forward(joined.video_slots, step.level)
        logger.info(
            "%s: %s's video %s -> %s on %s, %.1f%% lost",
            self.room,
            joined.id,
            before,
            after,
            step.reason,
            step.loss * 100,
        )
        if after is before or joined.notify is None:
            return
        joined.notify(
            VideoQualityChanged(
                room=self.room,
                requested=joined.requested,
                forwarded=after,
                reason=step.reason,
                loss=round(step.loss, 3),
            )
        )

    def _route_video(self) -> None:
        """Point every viewer's video slots at the tracks they may see."""
        for viewer in self._participants.values():
            wanted: list[InboundVideo] = []
            for user, kind in self._video_routes.get(viewer.id, ()):
                publisher = self._participants.get(user)
                video = publisher.videos.get(kind) if publisher else None
                if video is not None and user != viewer.id:
                    wanted.append(video)
            fill(viewer.video_slots, wanted)

    def _route(self) -> None:
        """Point every listener's slots at the speakers they should hear."""
        sources = [
            joined.inbound
            for speaker in self._speakers
            if (joined := self._participants.get(speaker)) is not None
            and joined.inbound is not None
        ]
        for listener in self._participants.values():
            private = [
                joined.inbound
                for user in self._listening.get(listener.id, ())
                if (joined := self._participants.get(user)) is not None
                and joined.inbound is not None
            ]
            wanted = dict.fromkeys(sources + private)
            fill(listener.slots, [s for s in wanted if s.participant != listener.id])

    async def _reconcile(self) -> None:
        """Give a worker to each speaker, metered or recorded participant only."""
        speakers = {*self._speakers, *self._metered}
        for joined in list(self._participants.values()):
            needs = joined.inbound is not None and (
                joined.recording or joined.id in speakers
            )
            if needs and joined.worker is None and joined.inbound is not None:
                worker = SpeakerWorker(joined.id)
                worker.start()
                joined.worker = worker
                joined.inbound.sink = worker.feed
            elif not needs and joined.worker is not None:
                worker, joined.worker = joined.worker, None
                if joined.inbound is not None:
                    joined.inbound.sink = None
                await worker.stop()

    async def _drop(self, leaving: _Participant) -> RecordingInfo | None:
        """Stop a participant's tracks, worker and connection."""
        for slot in leaving.slots:
            slot.stop()
        for video_slot in leaving.video_slots:
            video_slot.stop()
        for video in leaving.videos.values():
            video.close()
        info = None
        if leaving.inbound is not None:
            leaving.inbound.outlets.clear()
            leaving.inbound.sink = None
        if leaving.worker is not None:
            worker, leaving.worker = leaving.worker, None
            info = await worker.stop()
        await leaving.pc.close()
        return info

    def _state_changed(self, joined: _Participant) -> None:
        joined.state = PeerState(joined.pc.connectionState)
        # A connection still negotiating, replaced or removed is not the one
        # the caller knows; answer() reports where a new one got to.
        if self._participants.get(joined.id) is joined:
            self._report(joined)

    def _report(self, joined: _Participant) -> None:
        state = joined.state
        if state is PeerState.FAILED:
            logger.warning("%s: %s connection failed", self.room, joined.id)
        else:
            logger.debug("%s: %s connection %s", self.room, joined.id, state)
        if self._on_state is None:
            return
        try:
            self._on_state(joined.id, state)
        except Exception:
            # aiortc's event emitter would turn this into an "error" event
            # nobody listens to; the connection itself is fine.
            logger.exception("%s: state listener failed", self.room)


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
