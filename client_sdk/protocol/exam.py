"""Protocol v1, proctored exams.

An exam room has a roster of student seats, its proctors, and a paper that
stays on the server. Until the exam opens (``opens_at``) nothing of the
paper leaves it; from then on each student fetches their own variant (their
order of items and options, never the key) with :class:`ExamFetch`, and the
server also pushes it to them as an :class:`ExamState` notice when the exam
opens. Nothing about the paper is a room event: room events reach every
member, and a variant or an answer is for one student only.

A student saves answers one at a time with :class:`SaveExamAnswer`; the
``ack`` means the answer is stored. The command id identifies the answer: a
save sent again with the same id is stored once. :class:`SubmitExam` ends
the attempt; at the student's deadline the server submits it by itself,
and every later save is refused with ``closed``. A speaking item is
answered by voice: :class:`StartSpeaking` and :class:`StopSpeaking` record
the microphone the student sends on the room's media connection.

Proctors watch with :class:`WatchExam`, which answers with a
:class:`ProctorView` of every seat; after it, every change of a seat comes
as a :class:`SeatChanged` notice and every incident as an
:class:`IncidentRaised` notice. They act with :class:`ProctorCommand`.
Everything (answers, submissions, incidents, actions) also goes into the
room's tamper-evident log, which examiners export over HTTP.
"""

from __future__ import annotations

import enum
from typing import Annotated, TypeAlias

import msgspec

from .core import Command, Millis, RoomId

#: What a student answers to one item: an option index (single choice), a
#: text (short text), or a list (option indices for multiple choice, one
#: text per gap for gap fill). A speaking item's answer is its recording,
#: which the server files (:class:`StartSpeaking`); its value is the file's name.
ExamValue: TypeAlias = (
    int
    | Annotated[str, msgspec.Meta(max_length=2000)]
    | Annotated[
        list[int | Annotated[str, msgspec.Meta(max_length=500)]],
        msgspec.Meta(max_length=50),
    ]
)
ItemRef = Annotated[
    str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[\w.-]+\Z")
]
UserRef = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
NoteText = Annotated[str, msgspec.Meta(max_length=1000)]


class ItemKind(enum.StrEnum):
    """The kinds of exam item."""

    SINGLE = "single"
    MULTIPLE = "multiple"
    SHORT_TEXT = "short_text"
    GAP_FILL = "gap_fill"
    SPEAKING = "speaking"


class AttemptState(enum.StrEnum):
    """Where a student's attempt stands."""

    NOT_STARTED = "not_started"
    RUNNING = "running"
    PAUSED = "paused"
    SUBMITTED = "submitted"
    ENDED = "ended"


class IncidentKind(enum.StrEnum):
    """What an incident is about: a page's signal or the server's own.

    Those without a comment are what an exam page reports of its student
    (:data:`PAGE_SIGNALS`); the others only the server raises.
    """

    PAGE_HIDDEN = "page_hidden"
    WINDOW_BLUR = "window_blur"
    FULLSCREEN_LEFT = "fullscreen_left"
    COPY = "copy"
    PASTE = "paste"
    SECOND_SCREEN = "second_screen"
    DEVTOOLS = "devtools"
    FACE_MISSING = "face_missing"
    FACES_SEVERAL = "faces_several"
    #: The student's last connection to the room closed.
    DISCONNECTED = "disconnected"
    #: The student came back after a disconnect.
    RECONNECTED = "reconnected"
    #: A second connection of the same student while one is open.
    SECOND_CONNECTION = "second_connection"
    #: The student came back from another network address.
    ADDRESS_CHANGED = "address_changed"
    #: An answer came sooner after the item was shown than anyone can read it.
    TOO_FAST = "too_fast"
    #: Sustained voice on the student's microphone while no spoken answer
    #: of theirs was being recorded.
    VOICE_ON_SILENT_ITEM = "voice_on_silent_item"


#: What an exam page reports of its student's behaviour: the incident kinds
#: a page may claim (:class:`ReportSignal`), never the server's own.
ClientSignal = IncidentKind
PAGE_SIGNALS = frozenset(IncidentKind) - {
    IncidentKind.DISCONNECTED,
    IncidentKind.RECONNECTED,
    IncidentKind.SECOND_CONNECTION,
    IncidentKind.ADDRESS_CHANGED,
    IncidentKind.TOO_FAST,
    IncidentKind.VOICE_ON_SILENT_ITEM,
}


class Severity(enum.StrEnum):
    """How much attention an incident deserves, lowest first."""

    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class ProctorActionKind(enum.StrEnum):
    """What a proctor may do."""

    #: Show the student ``message``.
    WARN = "warn"
    #: Stop the student's clock (or, without ``user``, everyone's).
    PAUSE = "pause"
    #: Start the clock again; the pause does not count against the time.
    RESUME = "resume"
    #: Give the student ``ms`` more milliseconds.
    ADD_TIME = "add_time"
    #: End the student's attempt now, for the reason in ``message``.
    END = "end"
    #: Mark the attempt for an examiner's review, saying why in ``message``.
    FLAG = "flag"
    #: Add ``message`` to the record, about ``user`` or the whole room.
    NOTE = "note"
    #: Hear ``user``'s microphone on my own media connection, instead of
    #: whoever I listened to before. Only the room's proctors may.
    LISTEN = "listen"
    #: Stop hearing the student I listen to; needs no ``user``.
    STOP_LISTENING = "stop_listening"


# Views --------------------------------------------------------------------


class ItemView(msgspec.Struct, frozen=True, omit_defaults=True):
    """An item as one student sees it: their option order, no key."""

    id: str
    kind: ItemKind
    prompt: str
    points: float
    options: list[str] = msgspec.field(default_factory=list)
    gaps: int = 0
    #: A listening item's recording.
    audio: str | None = None
    #: A speaking item's time to speak.
    seconds: int | None = None


class SectionView(msgspec.Struct, frozen=True):
    """A section of a student's variant."""

    title: str
    items: list[ItemView]


class Incident(msgspec.Struct, frozen=True, omit_defaults=True):
    """Something a proctor should know about one student.

    ``seq`` is the incident's entry in the room's log.
    """

    seq: int
    at: int
    user: str
    kind: IncidentKind
    severity: Severity
    detail: str = ""


class Seat(msgspec.Struct, frozen=True, omit_defaults=True):
    """One student's seat as a proctor sees it: no answers, no items."""

    user: str
    name: str
    school: str
    class_: str = msgspec.field(name="class")
    connected: bool = False
    connections: int = 0
    state: AttemptState = AttemptState.NOT_STARTED
    answered: int = 0
    items: int = 0
    ends_at: int = 0
    remaining_ms: int = 0
    incidents: int = 0
    warnings: int = 0
    flagged: bool = False
    reason: str | None = None


# Client to server ---------------------------------------------------------


class ExamFetch(Command, tag="exam_fetch"):
    """Student: my exam as it stands; answered with :class:`ExamState`.

    The first fetch after ``opens_at`` starts the attempt (within the
    late-join window); a fetch before it gets the times and no items.
    """

    room: RoomId


class SaveExamAnswer(Command, tag="exam_save"):
    """Student: save ``value`` as the answer to ``item``; ``ack`` once stored."""

    room: RoomId
    item: ItemRef
    value: ExamValue


class SubmitExam(Command, tag="exam_submit"):
    """Student: hand in the attempt; nothing is saved after it."""

    room: RoomId


class ReportSignal(Command, tag="exam_signal"):
    """Student's page: something the proctors should know (an incident).

    ``signal`` is one of :data:`PAGE_SIGNALS`; a kind only the server
    raises is refused with ``invalid``.
    """

    room: RoomId
    signal: ClientSignal
    detail: Annotated[str, msgspec.Meta(max_length=200)] = ""


class StartSpeaking(Command, tag="exam_speak"):
    """Student: record my spoken answer to the speaking ``item`` from now on.

    The recording is of the microphone this connection's person sends on
    the room's media connection (``media_offer`` first). ``ack`` once it
    runs; refused unless the attempt is open, before the deadline, and
    ``item`` is a speaking item (going back to one too, without
    ``allow_back``).
    """

    room: RoomId
    item: ItemRef


class StopSpeaking(Command, tag="exam_speak_end"):
    """Student: I finished speaking ``item``; ``ack`` once the answer is stored.

    The recording becomes the item's answer and an entry of the room's log.
    The server ends it by itself at the deadline, when a proctor pauses or
    ends the attempt, and when the media connection closes.
    """

    room: RoomId
    item: ItemRef


class WatchExam(Command, tag="exam_watch"):
    """Proctor: every seat of the room; answered with :class:`ProctorView`."""

    room: RoomId


class ProctorCommand(Command, tag="exam_proctor"):
    """Proctor: act on ``user``'s attempt, or on the whole room without one.

    ``pause``, ``resume``, ``note`` and ``stop_listening`` may leave
    ``user`` out; the others need it. ``add_time`` takes ``ms``; ``warn``,
    ``end`` and ``flag`` take a ``message``.
    """

    room: RoomId
    action: ProctorActionKind
    user: UserRef | None = None
    message: NoteText = ""
    ms: Annotated[int, msgspec.Meta(ge=0, le=6 * 3600_000)] = 0


# Server to client -----------------------------------------------------------


class ExamState(msgspec.Struct, tag_field="type", omit_defaults=True, tag="exam_state"):
    """A student's exam: times, their variant once open, their saved answers.

    The reply to :class:`ExamFetch` (with its ``id``), and a notice (no
    ``id``) when the exam opens or a proctor changes the attempt. Times are
    server milliseconds; ``remaining_ms`` stops while the attempt is paused.
    """

    room: str
    title: str
    opens_at: int
    late_join_until: int
    ends_at: int
    remaining_ms: Millis
    server_time: int
    state: AttemptState
    allow_back: bool
    id: str | None = None
    sections: list[SectionView] | None = None
    answers: dict[str, ExamValue] = msgspec.field(default_factory=dict)
    reason: str | None = None


class ProctorView(
    msgspec.Struct, tag_field="type", omit_defaults=True, tag="exam_proctor_view"
):
    """Reply to :class:`WatchExam`: every seat and the latest incidents."""

    id: str
    room: str
    title: str
    opens_at: int
    server_time: int
    seats: list[Seat]
    incidents: list[Incident] = msgspec.field(default_factory=list)


class SeatChanged(
    msgspec.Struct, tag_field="type", omit_defaults=True, tag="exam_seat"
):
    """Notice to the room's proctors: one seat as it is now."""

    room: str
    seat: Seat


class IncidentRaised(
    msgspec.Struct, tag_field="type", omit_defaults=True, tag="exam_incident"
):
    """Notice to the room's proctors: a new incident."""

    room: str
    incident: Incident


class ExamWarning(
    msgspec.Struct, tag_field="type", omit_defaults=True, tag="exam_warning"
):
    """Notice to one student: a proctor's warning."""

    room: str
    at: int
    message: str


#: The exam commands answered with an ``ack``.
ExamAckCommand: TypeAlias = (
    SaveExamAnswer
    | SubmitExam
    | ReportSignal
    | StartSpeaking
    | StopSpeaking
    | ProctorCommand
)
ExamCommand: TypeAlias = ExamFetch | WatchExam | ExamAckCommand
ExamNotice: TypeAlias = ExamState | SeatChanged | IncidentRaised | ExamWarning
