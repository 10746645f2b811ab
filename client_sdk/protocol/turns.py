"""Protocol v1, speaking turns: hands, the queue, the floor, drills.

One queue per lesson room, kept by the server: every client receives the
whole ordered queue in a ``hand_queue`` event each time it changes, so every
screen shows the same order. One student at a time holds the floor; a turn
may carry an ``ends_at`` after which the server takes the floor back.
"""

from __future__ import annotations

import enum
from typing import Annotated

import msgspec

from .core import Command, Event, RoomId

UserId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
TurnSeconds = Annotated[int, msgspec.Meta(ge=5, le=1800)]


class QueuePolicy(enum.StrEnum):
    """How the hand queue is ordered."""

    #: First come, first served: by the time the hand went up.
    FIRST_COME = "first_come"
    #: Schools take turns: the school that has spoken least often goes
    #: first, so one school does not take every turn.
    ROUND_ROBIN = "round_robin"
    #: The student who has spoken least (in total time) goes first.
    LEAST_TIME = "least_time"


class ReleaseReason(enum.StrEnum):
    """Why a turn ended."""

    REVOKED = "revoked"
    EXPIRED = "expired"
    LEFT = "left"
    DRILL_ENDED = "drill_ended"


class QueueEntry(msgspec.Struct, frozen=True):
    """A raised hand, in queue order."""

    user: str
    name: str
    school: str
    raised_at: int


class Turn(msgspec.Struct, frozen=True, omit_defaults=True):
    """Who holds the floor, since when, until when, and for what prompt."""

    user: str
    name: str
    school: str
    started_at: int
    ends_at: int | None = None
    prompt: str | None = None


# Commands -----------------------------------------------------------------


class RaiseHand(Command, tag="raise_hand"):
    """Student or classroom: ask for the floor."""

    room: RoomId


class LowerHand(Command, tag="lower_hand"):
    """Lower one's own hand, or (a teacher) someone else's."""

    room: RoomId
    user: UserId | None = None


class SetQueuePolicy(Command, tag="queue_policy"):
    """Host: choose how the queue is ordered."""

    room: RoomId
    policy: QueuePolicy


class GrantFloor(Command, tag="grant_floor"):
    """Host or the student's co-teacher: give the floor.

    Without ``user`` the next in the queue gets it (for a co-teacher, the
    next of their own school). ``seconds`` limits the turn.
    """

    room: RoomId
    user: UserId | None = None
    seconds: TurnSeconds | None = None


class RevokeFloor(Command, tag="revoke_floor"):
    """Host or the holder's co-teacher: take the floor back now."""

    room: RoomId


class StartDrill(Command, tag="start_drill"):
    """Host: timed turns in order, with a pause between them.

    ``users`` gives the order; without it the queue's current order is
    taken (and those hands are lowered).
    """

    room: RoomId
    prompt: Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
    seconds: TurnSeconds
    pause_seconds: Annotated[int, msgspec.Meta(ge=0, le=60)] = 3
    users: Annotated[list[UserId], msgspec.Meta(max_length=500)] | None = None


class StopDrill(Command, tag="stop_drill"):
    """Host: end the drill; the current turn ends with it."""

    room: RoomId


class Mute(Command, tag="mute"):
    """Host or the student's co-teacher: mute or unmute a student.

    A muted student cannot raise a hand or hold the floor.
    """

    room: RoomId
    user: UserId
    muted: bool = True


# Events -------------------------------------------------------------------


class HandQueue(Event, tag="hand_queue"):
    """The whole queue, in order, after any change."""

    policy: QueuePolicy
    queue: list[QueueEntry]


class FloorGranted(Event, tag="floor_granted"):
    """``turn.user`` holds the floor; only teachers and they are heard."""

    turn: Turn


class FloorReleased(Event, tag="floor_released"):
    """The turn of ``user`` ended after ``spoke_ms`` milliseconds."""

    user: str
    reason: ReleaseReason
    spoke_ms: int


class DrillStarted(Event, tag="drill_started"):
    """A speaking drill: these students speak in this order."""

    prompt: str
    order: list[str]
    seconds: int
    pause_seconds: int


class DrillEnded(Event, tag="drill_ended"):
    """The drill is over (every turn taken, or the host stopped it)."""


class MuteChanged(Event, tag="mute_changed"):
    """A teacher muted or unmuted ``user``."""

    user: str
    muted: bool


TurnCommand = (
    RaiseHand
    | LowerHand
    | SetQueuePolicy
    | GrantFloor
    | RevokeFloor
    | StartDrill
    | StopDrill
    | Mute
)
TurnEvent = (
    HandQueue | FloorGranted | FloorReleased | DrillStarted | DrillEnded | MuteChanged
)
