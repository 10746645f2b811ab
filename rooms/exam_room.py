"""The exam room: attempts, proctoring and the record, as one state machine.

An :class:`ExamDesk` is what a :class:`rooms.room.Room` holds for an exam.
Every change it makes is an entry of the room's audit chain
(:mod:`rooms.audit`): an attempt started, an answer saved, a submission,
an incident, a proctor's action. The entries are the exam's durable state:
the writer stores them before it acknowledges anything, and a writer on
another node rebuilds the desk by replaying them through the same
:meth:`ExamDesk.replay` that applied them the first time. Nothing here does
I/O or reads the clock.

The desk answers with an :class:`ExamOutcome`: entries to store, notices
for single students or for the room's staff, and the reply to the command.
None of it is a room event, because room events reach every member: a
variant is for its student only and the key for nobody outside the server.
"""

from __future__ import annotations

import enum
import json
import logging
from dataclasses import dataclass, field

import msgspec

from client_sdk.protocol import (
    PAGE_SIGNALS,
    AttemptState,
    ErrorCode,
    ExamCommand,
    ExamFetch,
    ExamNotice,
    ExamState,
    ExamWarning,
    Incident,
    IncidentKind,
    IncidentRaised,
    ItemKind,
    Member,
    ProctorActionKind,
    ProctorCommand,
    ProctorView,
    ReportSignal,
    Role,
    SaveExamAnswer,
    SeatChanged,
    Severity,
    StartSpeaking,
    StopSpeaking,
    SubmitExam,
    WatchExam,
)

from . import proctoring
from .audit import CHECKPOINT_EVERY, AuditChain, LogEntry, Value
from .errors import Refused
from .exam import Exam
from .exam_paper import Variant
from .exam_setup import ExamSetup
from .exam_views import DeskViews

logger = logging.getLogger(__name__)

#: Store collections of an exam room's log entries and signed checkpoints.
AUDIT = "audit"
CHECKPOINTS = "checkpoints"
#: Who the server's own entries name as their actor.
SERVER = "server"
#: A page's signal of the same kind sooner than this after the last one
#: logged is acknowledged and not logged: a page stuck in a loop must not
#: fill the record (or the proctors' screens) at the rate limit.
SIGNAL_QUIET_MS = 1000


class EntryKind(enum.StrEnum):
    """The kinds of entry in an exam room's log."""

    OPENED = "opened"
    STARTED = "started"
    ANSWER = "answer"
    SUBMITTED = "submitted"
    INCIDENT = "incident"
    ACTION = "action"
    #: A student began speaking a speaking item; the recording runs.
    SPEAKING = "speaking"
    #: The recording of a spoken answer was stored: its file and digest.
    RECORDED = "recorded"


class SpokenAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """The recording of one spoken answer, as the media node stored it."""

    user: str
    item: str
    #: The name it is stored and downloaded under.
    file: str
    #: SHA-256 of the file: the signed log vouches for the audio too.
    sha256: str
    size: int
    seconds: float
    voiced_seconds: float
    at: int = 0


class VoiceHeard(msgspec.Struct, frozen=True, kw_only=True):
    """Voice a media node measured on a student's microphone."""

    #: Milliseconds of voice within the last ``window_ms``.
    voiced_ms: int
    window_ms: int


class ExamAction(msgspec.Struct, tag=True, frozen=True):
    """An exam command from ``actor``, as received by their node.

    ``recording`` comes with :class:`StopSpeaking` from the node that
    recorded it, and ``voice`` with a ``voice_on_silent_item``
    :class:`ReportSignal` from the node that heard it; never from a client.
    """

    actor: Member
    command: ExamCommand
    received_at: int
    recording: SpokenAnswer | None = None
    voice: VoiceHeard | None = None


ExamReplyMessage = ExamState | ProctorView


@dataclass(slots=True)
class ExamOutcome:
    """What a command did: log entries to store, notices, and its reply.

    A notice is for one user, or for the room's staff when its user is
    ``None``. ``duplicate`` marks a save that was stored before.
    """

    entries: list[LogEntry] = field(default_factory=list)
    notices: list[tuple[str | None, ExamNotice]] = field(default_factory=list)
    reply: ExamReplyMessage | None = None
    duplicate: bool = False


def key_for(entry_seq: int) -> str:
    """The record key of a log entry: sorts in chain order as text."""
    return f"{entry_seq:010d}"


class ExamDesk(DeskViews):
    """Attempts, incidents and actions of one exam room, kept as a log."""

    def __init__(self, setup: ExamSetup, sessions: dict[str, set[str]]) -> None:
        self.setup = setup
        #: The room's connections by user (the same dict as the room's).
        self.sessions = sessions
        items = [item.id for item in setup.paper.items()]
        self.exam = Exam(setup.rules(), items)
        self.chain = AuditChain(setup.id)
        self.opened = False
        #: A proctor paused the whole room.
        self.paused = False
        self.incidents: list[Incident] = []
        self.flagged: dict[str, str] = {}
        self.warnings: dict[str, int] = {}
        self._seen: dict[str, set[str]] = {}
        self._kinds: dict[tuple[str, IncidentKind], int] = {}
        self._last_signal: dict[tuple[str, IncidentKind], int] = {}
        #: ``actor:command id`` of the actions and signals applied: a retry
        #: of one (after ``unavailable``) is acknowledged and not repeated.
        self._commands: set[str] = set()
        self._read_ms: dict[str, int] = {}
        self._too_fast_at: dict[str, int] = {}
        self._addresses: dict[str, str] = {}
        #: Students with two connections open, and when to judge them.
        self._suspects: dict[str, int] = {}
        self._variants: dict[str, Variant] = {}
        #: The item each student is speaking now, and the stored recordings.
        self.speaking: dict[str, str] = {}
        self.recordings: list[SpokenAnswer] = []
        self._words = {
            item.id: len(" ".join([item.prompt, *item.options]).split())
            for item in setup.paper.items()
        }
        self._secret = bytes.fromhex(setup.secret)
        self._checkpointed = 0
        self._closing_entry = False

    # The log ----------------------------------------------------------------

    def _log(
        self,
        outcome: ExamOutcome,
        now: int,
        kind: EntryKind,
        actor: str,
        data: dict[str, Value],
    ) -> LogEntry:
        # The entry is applied before the chain moves on to it: an entry the
        # state refuses (an answer after the deadline) leaves no trace.
        trial = AuditChain(self.chain.room, self.chain.seq, self.chain.head)
        entry = trial.append(now, kind.value, actor, data)
        self._apply(entry)
        self.chain = trial
        outcome.entries.append(entry)
        return entry

    def replay(self, entry: LogEntry) -> None:
        """Fold one stored entry in, as when it was first written."""
        try:
            self._apply(entry)
        except Refused as refused:
            # Entries were applied once before they were stored; one that
            # does not apply now means the rules changed, not the log.
            logger.warning("exam %s: entry %d: %s", entry.room, entry.seq, refused)
        self.chain = AuditChain(entry.room, entry.seq, entry.hash)
        self._checkpointed = entry.seq - entry.seq % CHECKPOINT_EVERY

    def _apply(self, entry: LogEntry) -> None:
        data, at, exam = entry.data, entry.at, self.exam
        user = str(data.get("user") or "")
        kind = EntryKind(entry.kind)
        if data.get("command"):
            self._commands.add(f"{entry.actor}:{data['command']}")
        if kind is EntryKind.OPENED:
            self.opened = True
        elif kind is EntryKind.STARTED:
            exam.start(user, at)
            if self.paused:
                # The whole room is paused: so is a student who starts now.
                exam.pause(user, at)
        elif kind is EntryKind.ANSWER:
            item, answer_id = str(data["item"]), str(data["answer_id"])
            saved = exam.attempt(user).answers.get(item)
            exam.save(user, item, answer_id, json.loads(str(data["value"])), at)
            self._seen.setdefault(user, set()).add(answer_id)
            if saved is None:
                self._read_ms[user] = self._read_ms.get(
                    user, 0
                ) + proctoring.reading_ms(self._words.get(item, 0))
        elif kind is EntryKind.SUBMITTED:
            exam.submit(user, at, str(data.get("reason") or "submitted"))
            self._closing_entry = True
        elif kind is EntryKind.SPEAKING:
            exam.check_open(user, str(data["item"]), at)
            self.speaking[user] = str(data["item"])
        elif kind is EntryKind.RECORDED:
            self._apply_recorded(entry, user)
        elif kind is EntryKind.INCIDENT:
            incident = Incident(
                seq=entry.seq,
                at=at,
                user=user,
                kind=IncidentKind(str(data["kind"])),
                severity=Severity(str(data["severity"])),
                detail=str(data.get("detail") or ""),
            )
            self.incidents.append(incident)
            key = (user, incident.kind)
            self._kinds[key] = self._kinds.get(key, 0) + 1
            self._last_signal[key] = at
            if incident.kind is IncidentKind.TOO_FAST:
                self._too_fast_at[user] = int(data.get("answered") or 0)
        else:
            self._apply_action(entry, user)

    def _apply_recorded(self, entry: LogEntry, user: str) -> None:
        data = entry.data
        spoken = SpokenAnswer(
            user=user,
            item=str(data["item"]),
            file=str(data["file"]),
            sha256=str(data["sha256"]),
            size=int(data["size"] or 0),
            seconds=float(data["seconds"] or 0),
            voiced_seconds=float(data["voiced_seconds"] or 0),
            at=entry.at,
        )
        if self.speaking.get(user) != spoken.item:
            raise Refused(ErrorCode.INVALID, f"not speaking {spoken.item!r}", "item")
        del self.speaking[user]
        self.exam.record(user, spoken.item, str(data["command"]), spoken.file)
        self.recordings.append(spoken)

    def _apply_action(self, entry: LogEntry, user: str) -> None:
        data, at, exam = entry.data, entry.at, self.exam
        action = ProctorActionKind(str(data["action"]))
        users = [user] if user else [c.user for c in self.setup.students]
        message = str(data.get("message") or "")
        if action is ProctorActionKind.WARN:
            self.warnings[user] = self.warnings.get(user, 0) + 1
        elif action is ProctorActionKind.PAUSE:
            self.paused = self.paused or not user
            for one in users:
                exam.pause(one, at)
        elif action is ProctorActionKind.RESUME:
            self.paused = self.paused and bool(user)
            for one in users:
                exam.resume(one, at)
        elif action is ProctorActionKind.ADD_TIME:
            exam.add_time(user, int(data.get("ms") or 0))
        elif action is ProctorActionKind.END:
            exam.end(user, at, message or "ended by a proctor")
            self._closing_entry = True
        elif action is ProctorActionKind.FLAG:
            self.flagged[user] = message

    def checkpoint_due(self) -> bool:
        """Whether the chain's head should be signed now, and note it was.

        Every :data:`rooms.audit.CHECKPOINT_EVERY` entries, and after every
        attempt that ended, so a finished attempt's record is sealed.
        """
        due = self._closing_entry or (
            self.chain.seq - self._checkpointed >= CHECKPOINT_EVERY
        )
        if due and self.chain.seq:
            self._checkpointed = self.chain.seq
            self._closing_entry = False
            return True
        return False

    # Deadlines ----------------------------------------------------------------

    def due(self) -> int | None:
        """The next time the writer must send a tick: the opening, a deadline."""
        times = [self.exam.due(), *self._suspects.values()]
        if not self.opened:
            times.append(self.setup.opens_at)
        return min((t for t in times if t is not None), default=None)

    def tick(self, now: int) -> ExamOutcome:
        """Open the exam at its time; submit every attempt whose time is up."""
        outcome = ExamOutcome()
        for user, at in sorted(self._suspects.items()):
            if now < at:
                continue
            del self._suspects[user]
            held = len(self.sessions.get(user, ()))
            if held > 1:
                signal = proctoring.second_connection(held)
                self._incident(outcome, now, user, SERVER, signal)
        if not self.opened and now >= self.setup.opens_at:
            self._log(outcome, now, EntryKind.OPENED, SERVER, {})
            # A nudge only: each student fetches their own variant.
            for candidate in self.setup.students:
                outcome.notices.append(
                    (candidate.user, self.state_for(candidate.user, now))
                )
        for attempt in list(self.exam.attempts.values()):
            if attempt.state is AttemptState.RUNNING and now >= attempt.ends_at(
                self.exam.rules
            ):
                data: dict[str, Value] = {"user": attempt.user, "reason": "time up"}
                self._log(outcome, now, EntryKind.SUBMITTED, SERVER, data)
                self._changed(outcome, attempt.user, now)
        return outcome

    # Presence -------------------------------------------------------------------

    def may_enter(self, member: Member) -> bool:
        """Whether ``member`` may be in the room: its students, proctors, examiners.

        Room-wide notices go to every member who is staff, so nobody else's
        staff may be a member at all.
        """
        role, user = member.role, member.user
        if role is Role.STUDENT:
            return self.setup.candidate(user) is not None
        if role is Role.PROCTOR:
            return self.setup.is_proctor(user)
        if role is Role.TEACHER:
            return user in self.setup.examiners
        return role is Role.ADMIN

    def joined(
        self, member: Member, before: int, was_away: bool, address: str, now: int
    ) -> ExamOutcome:
        """A connection of ``member`` entered; ``before`` they already had."""
        outcome = ExamOutcome()
        user = member.user
        if self.setup.candidate(user) is None:
            return outcome
        last = self._addresses.get(user)
        if address:
            self._addresses[user] = address
        for signal in proctoring.on_join(before, was_away, address, last):
            self._incident(outcome, now, user, SERVER, signal)
        if before > 0:
            self._suspects.setdefault(user, now + proctoring.SECOND_CONNECTION_GRACE_MS)
        outcome.notices.append(
            (None, SeatChanged(self.setup.id, self.seat(user, now, before + 1)))
        )
        return outcome

    def left(self, user: str, remaining: int, dropped: bool, now: int) -> ExamOutcome:
        """A connection of ``user`` closed; ``remaining`` are still open."""
        outcome = ExamOutcome()
        if self.setup.candidate(user) is None:
            return outcome
        suspect = self._suspects.pop(user, None) if remaining <= 1 else None
        if dropped and suspect is not None and remaining:
            self._incident(outcome, now, user, SERVER, proctoring.replaced())
        elif dropped:
            for signal in proctoring.on_leave(remaining):
                self._incident(outcome, now, user, SERVER, signal)
        outcome.notices.append(
            (None, SeatChanged(self.setup.id, self.seat(user, now, remaining)))
        )
        return outcome

    # Commands ---------------------------------------------------------------------

    def command(self, action: ExamAction, now: int) -> ExamOutcome:
        """Apply one exam command; raises :class:`Refused` if it may not."""
        command, actor = action.command, action.actor
        if isinstance(command, WatchExam | ProctorCommand):
            if not (
                actor.role is Role.ADMIN
                or (actor.role is Role.PROCTOR and self.setup.is_proctor(actor.user))
            ):
                raise Refused(
                    ErrorCode.FORBIDDEN, "only this room's proctors may do this", "room"
                )
            if isinstance(command, WatchExam):
                return ExamOutcome(reply=self.proctor_view(command.id, now))
            return self._proctor(actor, command, now)

        if actor.role is not Role.STUDENT or self.setup.candidate(actor.user) is None:
            raise Refused(
                ErrorCode.FORBIDDEN, "only students on the roster sit this exam", "room"
            )
        if isinstance(command, ExamFetch):
            return self._fetch(actor.user, command.id, now)
        if isinstance(command, SaveExamAnswer):
            return self._save(actor.user, command, now)
        if isinstance(command, SubmitExam):
            return self._submit(actor.user, now)
        if isinstance(command, StartSpeaking | StopSpeaking):
            return self._speak(actor.user, command, action.recording, now)
        if action.voice is not None:
            return self._voice(actor.user, command, action.voice, now)
        return self._signal(actor.user, command, now)

    def _fetch(self, user: str, reply_id: str, now: int) -> ExamOutcome:
        outcome = ExamOutcome()
        if now < self.setup.opens_at:
            outcome.reply = self.state_for(user, now, reply_id=reply_id)
            return outcome
        attempt = self.exam.attempts.get(user)
        if attempt is None or attempt.state is AttemptState.NOT_STARTED:
            data: dict[str, Value] = {"user": user}
            self._log(outcome, now, EntryKind.STARTED, user, data)
            self._changed(outcome, user, now, notify_student=False)
        outcome.reply = self.state_for(user, now, sections=True, reply_id=reply_id)
        return outcome

    def _save(self, user: str, command: SaveExamAnswer, now: int) -> ExamOutcome:
        outcome = ExamOutcome()
        if command.id in self._seen.get(user, ()):
            outcome.duplicate = True
            return outcome
        item = self.setup.paper.item(command.item)
        if item is not None and item.kind is ItemKind.SPEAKING:
            raise Refused(
                ErrorCode.INVALID, "a speaking item is answered by voice", "item"
            )
        data: dict[str, Value] = {
            "user": user,
            "item": command.item,
            "answer_id": command.id,
            "value": json.dumps(command.value, ensure_ascii=False),
        }
        self._log(outcome, now, EntryKind.ANSWER, user, data)
        attempt = self.exam.attempts[user]
        signal = proctoring.too_fast(
            now - (attempt.started_at or now),
            self._read_ms.get(user, 0),
            len(attempt.answers),
            self._too_fast_at.get(user, 0),
        )
        if signal is not None:
            self._incident(outcome, now, user, SERVER, signal)
        self._changed(outcome, user, now, notify_student=False)
        return outcome

    def _speak(
        self,
        user: str,
        command: StartSpeaking | StopSpeaking,
        recording: SpokenAnswer | None,
        now: int,
    ) -> ExamOutcome:
        outcome = ExamOutcome()
        if f"{user}:{command.id}" in self._commands:
            outcome.duplicate = True
            return outcome
        data: dict[str, Value] = {
            "user": user,
            "item": command.item,
            "command": command.id,
        }
        if isinstance(command, StartSpeaking):
            item = self.setup.paper.item(command.item)
            if item is None or item.kind is not ItemKind.SPEAKING:
                raise Refused(
                    ErrorCode.INVALID, f"{command.item!r} is no speaking item", "item"
                )
            self._log(outcome, now, EntryKind.SPEAKING, user, data)
            outcome.reply = self.state_for(user, now, reply_id=command.id)
            return outcome
        if recording is None or recording.item != command.item:
            raise Refused(
                ErrorCode.INVALID, "only the recording node ends a spoken answer"
            )
        data.update(
            file=recording.file,
            sha256=recording.sha256,
            size=recording.size,
            seconds=recording.seconds,
            voiced_seconds=recording.voiced_seconds,
        )
        self._log(outcome, now, EntryKind.RECORDED, user, data)
        self._changed(outcome, user, now, notify_student=False)
        return outcome

    def _submit(self, user: str, now: int) -> ExamOutcome:
        outcome = ExamOutcome()
        attempt = self.exam.attempts.get(user)
        if attempt is None or attempt.state is AttemptState.NOT_STARTED:
            raise Refused(ErrorCode.INVALID, "start the exam first", "room")
        if attempt.state in (AttemptState.SUBMITTED, AttemptState.ENDED):
            return outcome
        data: dict[str, Value] = {"user": user, "reason": "submitted"}
        self._log(outcome, now, EntryKind.SUBMITTED, user, data)
        self._changed(outcome, user, now)
        return outcome

    def _signal(self, user: str, command: ReportSignal, now: int) -> ExamOutcome:
        if command.signal not in PAGE_SIGNALS:
            raise Refused(
                ErrorCode.INVALID, "only the server raises this incident", "signal"
            )
        outcome = ExamOutcome()
        key = (user, command.signal)
        last = self._last_signal.get(key)
        if f"{user}:{command.id}" in self._commands or (
            last is not None and now - last < SIGNAL_QUIET_MS
        ):
            outcome.duplicate = True
            return outcome
        seen = self._kinds.get(key, 0)
        signal = proctoring.from_client(command.signal, command.detail, seen)
        self._incident(outcome, now, user, user, signal, command.id)
        return outcome

    def _voice(
        self, user: str, command: ReportSignal, voice: VoiceHeard, now: int
    ) -> ExamOutcome:
        kind = IncidentKind.VOICE_ON_SILENT_ITEM
        if command.signal is not kind:
            raise Refused(ErrorCode.INVALID, "voice comes with its own kind", "signal")
        outcome = ExamOutcome()
        attempt = self.exam.attempts.get(user)
        # Voice is only out of place while the student sits the exam and is
        # not answering a speaking item.
        if (
            f"{SERVER}:{command.id}" in self._commands
            or user in self.speaking
            or attempt is None
            or attempt.state is not AttemptState.RUNNING
        ):
            return outcome
        last = self._last_signal.get((user, kind))
        since = None if last is None else now - last
        signal = proctoring.voice_on_silent_item(
            voice.voiced_ms, voice.window_ms, since
        )
        if signal is not None:
            self._incident(outcome, now, user, SERVER, signal, command.id)
        return outcome

    def _proctor(self, actor: Member, command: ProctorCommand, now: int) -> ExamOutcome:
        action, user = command.action, command.user
        whole_room = (
            ProctorActionKind.PAUSE,
            ProctorActionKind.RESUME,
            ProctorActionKind.NOTE,
            ProctorActionKind.STOP_LISTENING,
        )
        listening = (ProctorActionKind.LISTEN, ProctorActionKind.STOP_LISTENING)
        if action in listening and actor.role is not Role.PROCTOR:
            # Hearing a student is the proctors' own watch, not an admin's.
            raise Refused(
                ErrorCode.FORBIDDEN, "only this room's proctors may listen", "action"
            )
        if user is None and action not in whole_room:
            raise Refused(ErrorCode.INVALID, f"{action.value} needs a user", "user")
        if user is not None and self.setup.candidate(user) is None:
            raise Refused(ErrorCode.INVALID, "no such student in this room", "user")
        if action is ProctorActionKind.ADD_TIME and command.ms <= 0:
            raise Refused(ErrorCode.INVALID, "added time must be positive", "ms")
        needs_text = (ProctorActionKind.WARN, ProctorActionKind.NOTE)
        if action in needs_text and not command.message.strip():
            raise Refused(
                ErrorCode.INVALID, f"{action.value} needs a message", "message"
            )

        outcome = ExamOutcome()
        if f"{actor.user}:{command.id}" in self._commands:
            outcome.duplicate = True
            return outcome
        data: dict[str, Value] = {
            "action": action.value,
            "user": user or "",
            "message": command.message,
            "command": command.id,
        }
        if action is ProctorActionKind.ADD_TIME:
            data["ms"] = command.ms
        self._log(outcome, now, EntryKind.ACTION, actor.user, data)
        if action in listening:
            # The media node routes the audio; no attempt changed.
            return outcome

        targets = [user] if user else [c.user for c in self.setup.students]
        if action is ProctorActionKind.WARN and user is not None:
            outcome.notices.append(
                (user, ExamWarning(self.setup.id, now, command.message))
            )
        if action is not ProctorActionKind.NOTE:
            for one in targets:
                self._changed(
                    outcome,
                    one,
                    now,
                    notify_student=action
                    not in (ProctorActionKind.WARN, ProctorActionKind.FLAG),
                )
        return outcome

    def _incident(
        self,
        outcome: ExamOutcome,
        now: int,
        user: str,
        actor: str,
        signal: proctoring.Signal,
        command: str | None = None,
    ) -> None:
        data: dict[str, Value] = {
            "user": user,
            "kind": signal.kind.value,
            "severity": signal.severity.value,
            "detail": signal.detail,
        }
        if command is not None:
            data["command"] = command
        if signal.kind is IncidentKind.TOO_FAST:
            data["answered"] = len(self.exam.attempt(user).answers)
        self._log(outcome, now, EntryKind.INCIDENT, actor, data)
        outcome.notices.append(
            (None, IncidentRaised(self.setup.id, self.incidents[-1]))
        )
        outcome.notices.append((None, SeatChanged(self.setup.id, self.seat(user, now))))

    def _changed(
        self, outcome: ExamOutcome, user: str, now: int, notify_student: bool = True
    ) -> None:
        outcome.notices.append((None, SeatChanged(self.setup.id, self.seat(user, now))))
        if notify_student:
            outcome.notices.append((user, self.state_for(user, now)))
