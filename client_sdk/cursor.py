"""Where the client stands in each joined room: epoch and last offset seen.

A :class:`RoomCursor` decides, without any I/O, what to do with each room
event that arrives: hand it to the application, drop it as already seen, or
stop and join the room again because an offset was skipped. It also decides
what a ``joined`` reply means for what the application knew of the room.
Offsets are contiguous per room within an epoch (see docs/protocol.md), so
the next event of a room is always exactly one past the last one seen.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .protocol import Event, Joined


class Verdict(enum.Enum):
    """What to do with one room event."""

    #: The next event of the room: hand it to the application.
    DELIVER = "deliver"
    #: Seen before (a replay overlapping live delivery): drop it.
    DUPLICATE = "duplicate"
    #: A join of the room is being answered; its replay brings this event.
    SYNCING = "syncing"
    #: An offset was skipped or the epoch changed: join again to recover.
    GAP = "gap"


class JoinOutcome(enum.Enum):
    """What a ``joined`` reply means for the application's view of a room."""

    #: A join with no resume point: the reply's roster is the starting state.
    FRESH = "fresh"
    #: The missed events follow the reply, in order; nothing was lost.
    RESUMED = "resumed"
    #: The history could not be replayed: drop what was known of the room.
    RESET = "reset"


@dataclass(slots=True)
class RoomCursor:
    """The client's position in one room.

    ``joined`` is true once the server has answered a join; such rooms are
    joined again after a reconnect. ``syncing`` is true while a join is in
    flight: events that arrive meanwhile were sent before the server took
    the join, and the join's replay sends them again.
    """

    room: str
    epoch: str | None = None
    offset: int | None = None
    joined: bool = False
    syncing: bool = True

    @property
    def resume_point(self) -> tuple[int | None, str | None]:
        """``(last_offset, epoch)`` to send in a join, or ``(None, None)``."""
        if self.epoch is None or self.offset is None:
            return None, None
        return self.offset, self.epoch

    def check(self, event: Event) -> Verdict:
        """Judge ``event``; a delivered one moves the cursor forward."""
        if self.syncing or self.offset is None:
            return Verdict.SYNCING
        if event.epoch != self.epoch:
            return Verdict.GAP
        if event.offset <= self.offset:
            return Verdict.DUPLICATE
        if event.offset != self.offset + 1:
            return Verdict.GAP
        self.offset = event.offset
        return Verdict.DELIVER

    def on_joined(self, joined: Joined) -> JoinOutcome:
        """Take the server's answer to a join sent from this cursor."""
        had_state = self.epoch is not None and self.offset is not None
        self.joined = True
        self.syncing = False
        if joined.recovered and had_state and joined.epoch == self.epoch:
            # The offset stays where it is: replayed events the client has
            # already seen are then dropped as duplicates.
            return JoinOutcome.RESUMED
        self.epoch = joined.epoch
        self.offset = joined.offset
        return JoinOutcome.RESET if had_state else JoinOutcome.FRESH
