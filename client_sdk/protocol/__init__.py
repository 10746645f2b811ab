"""The lophoc wire protocol, version 1: every message type, defined once.

The server and the Python client SDK both import this package, so a field
added here is a field on both sides. Each message is a :class:`msgspec.Struct`
tagged by its ``type`` field; :mod:`client_sdk.codec` turns frames into these
classes and back, and rejects anything that does not fit them. The messages
live in one module per concept (:mod:`.core`, :mod:`.lesson`); the unions
below are the complete sets each side accepts.
"""

from __future__ import annotations

from typing import TypeAlias

from .core import *  # noqa: F403
from .core import (
    Ack,
    Broadcast,
    BroadcastEvent,
    Error,
    Hello,
    Join,
    Joined,
    Leave,
    MemberJoined,
    MemberLeft,
    Ping,
    Pong,
    PresenceChanged,
)
from .exam import *  # noqa: F403
from .exam import (
    ExamCommand,
    ExamNotice,
    ExamState,
    ExamWarning,
    IncidentRaised,
    ProctorView,
    SeatChanged,
)
from .lesson import *  # noqa: F403
from .lesson import (
    ActivityChanged,
    Answer,
    AnswerResult,
    AnswerTally,
    AskQuestion,
    CloseQuestion,
    EndLesson,
    LessonEnded,
    LessonSnapshot,
    Probe,
    ProbeReply,
    QuestionClosed,
    QuestionOpened,
    QuestionRevealed,
    RemoveMember,
    Reveal,
    SetStage,
    StageChanged,
    StepActivity,
)
from .media import *  # noqa: F403
from .media import (
    MediaAnswer,
    MediaCandidate,
    MediaLeave,
    MediaOffer,
    VideoQuality,
    VideoQualityAnswer,
    VideoQualityChanged,
)
from .turns import *  # noqa: F403
from .turns import (
    DrillEnded,
    DrillStarted,
    FloorGranted,
    FloorReleased,
    GrantFloor,
    HandQueue,
    LowerHand,
    Mute,
    MuteChanged,
    RaiseHand,
    RevokeFloor,
    SetQueuePolicy,
    StartDrill,
    StopDrill,
)

ClientMessage: TypeAlias = (
    Join
    | Leave
    | Broadcast
    | Ping
    | StepActivity
    | AskQuestion
    | Answer
    | CloseQuestion
    | Reveal
    | EndLesson
    | RemoveMember
    | SetStage
    | ProbeReply
    | RaiseHand
    | LowerHand
    | SetQueuePolicy
    | GrantFloor
    | RevokeFloor
    | StartDrill
    | StopDrill
    | Mute
    | MediaOffer
    | MediaCandidate
    | MediaLeave
    | VideoQuality
    | ExamCommand
)
RoomEvent: TypeAlias = (
    MemberJoined
    | MemberLeft
    | PresenceChanged
    | BroadcastEvent
    | ActivityChanged
    | QuestionOpened
    | QuestionClosed
    | QuestionRevealed
    | LessonEnded
    | StageChanged
    | HandQueue
    | FloorGranted
    | FloorReleased
    | DrillStarted
    | DrillEnded
    | MuteChanged
)
ServerMessage: TypeAlias = (
    Hello
    | Ack
    | Error
    | Joined
    | Pong
    | RoomEvent
    | AnswerTally
    | AnswerResult
    | LessonSnapshot
    | Probe
    | MediaAnswer
    | VideoQualityAnswer
    | VideoQualityChanged
    | ExamState
    | ProctorView
    | SeatChanged
    | IncidentRaised
    | ExamWarning
)
#: Every notice a room's writer may send (the lesson's and the exam's):
#: messages for some members only, with no offset.
AnyNotice: TypeAlias = AnswerTally | AnswerResult | LessonSnapshot | Probe | ExamNotice
