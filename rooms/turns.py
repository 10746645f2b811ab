"""Speaking turns: the hand queue, the floor, drills and speaking time.

:class:`Turns` is part of a lesson room's state and, like the rest of it,
does no I/O. Each change of the queue becomes one ``hand_queue`` event with
the whole queue in order, so every client shows the same order without
ordering it itself. A turn's end (``ends_at``) and a drill's next turn are
deadlines kept as data: :meth:`Turns.due` tells the writer when to tick.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from client_sdk.protocol import (
    DrillEnded,
    DrillStarted,
    ErrorCode,
    FloorGranted,
    FloorReleased,
    GrantFloor,
    HandQueue,
    LowerHand,
    Member,
    Mute,
    MuteChanged,
    QueueEntry,
    QueuePolicy,
    RaiseHand,
    ReleaseReason,
    RevokeFloor,
    Role,
    SetQueuePolicy,
    StartDrill,
    StopDrill,
    Turn,
    TurnCommand,
    TurnEvent,
)

from .errors import Refused

SPEAKERS = (Role.STUDENT, Role.CLASSROOM)
Moderates = Callable[[Member, Member], bool]


@dataclass(slots=True)
class Drill:
    """A drill in progress: who is still to speak, and the timing."""

    prompt: str
    waiting: list[str]
    seconds: int
    pause_seconds: int
    #: When the next turn starts, while nobody holds the floor.
    next_at: int | None = None


@dataclass(slots=True)
class Turns:
    """The speaking part of a lesson room's state."""

    policy: QueuePolicy = QueuePolicy.FIRST_COME
    hands: dict[str, QueueEntry] = field(default_factory=dict)
    floor: Turn | None = None
    drill: Drill | None = None
    muted: set[str] = field(default_factory=set)
    spoken_ms: Counter[str] = field(default_factory=Counter)
    school_ms: Counter[str] = field(default_factory=Counter)
    school_turns: Counter[str] = field(default_factory=Counter)
    user_turns: Counter[str] = field(default_factory=Counter)

    # Reading ---------------------------------------------------------------

    def queue(self) -> list[QueueEntry]:
        """The raised hands in the order of the current policy."""
        entries = sorted(self.hands.values(), key=lambda e: (e.raised_at, e.user))
        if self.policy is QueuePolicy.LEAST_TIME:
            return sorted(entries, key=lambda e: self.spoken_ms[e.user])
        if self.policy is QueuePolicy.ROUND_ROBIN:
            # The n-th waiting hand of a school that has had t turns ranks
            # t + n: schools alternate, the least heard school first.
            seen: Counter[str] = Counter()
            ranked = []
            for entry in entries:
                rank = self.school_turns[entry.school] + seen[entry.school]
                seen[entry.school] += 1
                ranked.append((rank, entry.raised_at, entry.user, entry))
            return [item[3] for item in sorted(ranked)]
        return entries

    def due(self) -> int | None:
        """When the writer must next tick: a turn's end or a drill's next turn."""
        if self.floor is not None:
            return self.floor.ends_at
        if self.drill is not None:
            return self.drill.next_at
        return None

    def holder(self) -> str | None:
        """Who holds the floor now, if anyone."""
        return self.floor.user if self.floor else None

    # Deciding --------------------------------------------------------------

    def decide(
        self,
        actor: Member,
        command: TurnCommand,
        now: int,
        members: Mapping[str, Member],
        is_host: bool,
        moderates: Moderates,
    ) -> list[TurnEvent]:
        """Events of a turn command; raises :class:`Refused` if not allowed."""
        if isinstance(command, RaiseHand):
            return self._raise(actor, now)
        if isinstance(command, LowerHand):
            return self._lower(actor, command, members, moderates, now)
        if isinstance(command, Mute):
            return self._mute(actor, command, members, moderates, now)
        if isinstance(command, GrantFloor):
            return self._grant(actor, command, now, members, is_host, moderates)
        if isinstance(command, RevokeFloor):
            holder = members.get(self.holder() or "")
            if holder is None or self.floor is None:
                raise Refused(ErrorCode.INVALID, "nobody holds the floor", "room")
            if not (is_host or moderates(actor, holder)):
                raise _forbidden("only the host or the holder's co-teacher revokes")
            return self._release(now, ReleaseReason.REVOKED)
        if not is_host:
            raise _forbidden("only the lesson's host runs the queue and drills")
        if isinstance(command, SetQueuePolicy):
            return [self._queue_event(now, policy=command.policy)]
        if isinstance(command, StartDrill):
            return self._start_drill(command, now, members)
        if isinstance(command, StopDrill):
            return self._stop_drill(now)
        raise Refused(ErrorCode.UNKNOWN_TYPE, "not a turn command", "type")

    def _raise(self, actor: Member, now: int) -> list[TurnEvent]:
        if actor.role not in SPEAKERS:
            raise _forbidden("teachers are always heard; hands are for students")
        if actor.user in self.muted:
            raise _forbidden("a teacher muted you")
        if actor.user in self.hands or actor.user == self.holder():
            return []
        entry = QueueEntry(actor.user, actor.name, actor.school, now)
        return [self._queue_event(now, add=entry)]

    def _lower(
        self,
        actor: Member,
        command: LowerHand,
        members: Mapping[str, Member],
        moderates: Moderates,
        now: int,
    ) -> list[TurnEvent]:
        user = command.user or actor.user
        if user != actor.user:
            target = members.get(user)
            if target is None or not moderates(actor, target):
                raise _forbidden("you may not lower this hand", "user")
        if user not in self.hands:
            return []
        return [self._queue_event(now, drop=user)]

    def _mute(
        self,
        actor: Member,
        command: Mute,
        members: Mapping[str, Member],
        moderates: Moderates,
        now: int,
    ) -> list[TurnEvent]:
        target = members.get(command.user)
        if target is None:
            raise Refused(ErrorCode.INVALID, "no such member in this room", "user")
        if not moderates(actor, target) or target.role not in SPEAKERS:
            raise _forbidden("you may not mute this member", "user")
        if (command.user in self.muted) == command.muted:
            return []
        events: list[TurnEvent] = [
            MuteChanged(
                room="",
                offset=0,
                epoch="",
                at=now,
                user=command.user,
                muted=command.muted,
            )
        ]
        if command.muted:
            if command.user == self.holder():
                events += self._release(now, ReleaseReason.REVOKED)
            if command.user in self.hands:
                events.append(self._queue_event(now, drop=command.user))
        return events

    def _grant(
        self,
        actor: Member,
        command: GrantFloor,
        now: int,
        members: Mapping[str, Member],
        is_host: bool,
        moderates: Moderates,
    ) -> list[TurnEvent]:
        if command.user is not None:
            target = members.get(command.user)
            if target is None:
                raise Refused(ErrorCode.INVALID, "no such member in this room", "user")
        else:
            # The next hand of the queue, or of the co-teacher's own school.
            target = next(
                (
                    members[e.user]
                    for e in self.queue()
                    if e.user in members
                    and (is_host or moderates(actor, members[e.user]))
                ),
                None,
            )
            if target is None:
                raise Refused(ErrorCode.INVALID, "no hand is raised", "user")
        if not (is_host or moderates(actor, target)):
            raise _forbidden("only the host or the student's co-teacher grants", "user")
        if target.role not in SPEAKERS:
            raise Refused(ErrorCode.INVALID, "teachers are always heard", "user")
        if target.user in self.muted:
            raise Refused(ErrorCode.INVALID, "this student is muted", "user")
        ends = now + command.seconds * 1000 if command.seconds else None
        return self._give(target, now, ends, None)

    def _give(
        self, target: Member, now: int, ends_at: int | None, prompt: str | None
    ) -> list[TurnEvent]:
        events: list[TurnEvent] = []
        if self.floor is not None:
            events += self._release(now, ReleaseReason.REVOKED)
        turn = Turn(
            user=target.user,
            name=target.name,
            school=target.school,
            started_at=now,
            ends_at=ends_at,
            prompt=prompt,
        )
        events.append(FloorGranted(room="", offset=0, epoch="", at=now, turn=turn))
        if target.user in self.hands:
            events.append(self._queue_event(now, drop=target.user))
        return events

    def _release(self, now: int, reason: ReleaseReason) -> list[TurnEvent]:
        floor = self.floor
        if floor is None:
            return []
        spoke = max(now - floor.started_at, 0)
        if floor.ends_at is not None:
            spoke = min(spoke, floor.ends_at - floor.started_at)
        return [
            FloorReleased(
                room="",
                offset=0,
                epoch="",
                at=now,
                user=floor.user,
                reason=reason,
                spoke_ms=spoke,
            )
        ]

    def _start_drill(
        self, command: StartDrill, now: int, members: Mapping[str, Member]
    ) -> list[TurnEvent]:
        if self.drill is not None:
            raise Refused(
                ErrorCode.INVALID, "a drill is running; stop it first", "room"
            )
        order = (
            list(command.users)
            if command.users is not None
            else [e.user for e in self.queue()]
        )
        unknown = [u for u in order if u not in members]
        if unknown:
            raise Refused(
                ErrorCode.INVALID, f"not in the room: {', '.join(unknown[:5])}", "users"
            )
        order = [u for u in order if u not in self.muted]
        if not order:
            raise Refused(ErrorCode.INVALID, "nobody to call on", "users")
        events: list[TurnEvent] = [
            DrillStarted(
                room="",
                offset=0,
                epoch="",
                at=now,
                prompt=command.prompt,
                order=order,
                seconds=command.seconds,
                pause_seconds=command.pause_seconds,
            )
        ]
        first = members[order[0]]
        events += self._give(first, now, now + command.seconds * 1000, command.prompt)
        if command.users is None and self.hands:
            events.append(self._queue_event(now, clear=True))
        return events

    def _stop_drill(self, now: int) -> list[TurnEvent]:
        if self.drill is None:
            raise Refused(ErrorCode.INVALID, "no drill is running", "room")
        return [
            *self._release(now, ReleaseReason.DRILL_ENDED),
            DrillEnded(room="", offset=0, epoch="", at=now),
        ]

    def tick(self, now: int, members: Mapping[str, Member]) -> list[TurnEvent]:
        """End a turn whose time is up; start a drill's next turn when due."""
        floor, drill = self.floor, self.drill
        if floor is not None:
            if floor.ends_at is None or now < floor.ends_at:
                return []
            return self._release(floor.ends_at, ReleaseReason.EXPIRED)
        if drill is None or drill.next_at is None or now < drill.next_at:
            return []
        # Students who left or were muted since the drill began are skipped;
        # replaying the grant drops them from the waiting list.
        for user in drill.waiting:
            if user in members and user not in self.muted:
                ends = now + drill.seconds * 1000
                return self._give(members[user], now, ends, drill.prompt)
        return [DrillEnded(room="", offset=0, epoch="", at=now)]

    def on_departure(self, user: str, now: int) -> list[TurnEvent]:
        """Events for a member leaving: their turn ends, their hand goes down."""
        events: list[TurnEvent] = []
        if user == self.holder():
            events += self._release(now, ReleaseReason.LEFT)
        if user in self.hands:
            events.append(self._queue_event(now, drop=user))
        return events

    def _queue_event(
        self,
        now: int,
        *,
        add: QueueEntry | None = None,
        drop: str | None = None,
        clear: bool = False,
        policy: QueuePolicy | None = None,
    ) -> HandQueue:
        # The event carries the queue as it will be once applied, so the
        # state is computed on a copy.
        future = Turns(
            policy=policy or self.policy,
            hands={} if clear else dict(self.hands),
            spoken_ms=self.spoken_ms,
            school_turns=self.school_turns,
        )
        if add is not None:
            future.hands[add.user] = add
        if drop is not None:
            future.hands.pop(drop, None)
        return HandQueue(
            room="",
            offset=0,
            epoch="",
            at=now,
            policy=future.policy,
            queue=future.queue(),
        )

    # Applying --------------------------------------------------------------

    def replay(self, event: TurnEvent) -> None:
        """Fold one stored turn event into the state."""
        if isinstance(event, HandQueue):
            self.policy = event.policy
            self.hands = {e.user: e for e in event.queue}
        elif isinstance(event, FloorGranted):
            self.floor = event.turn
            self.school_turns[event.turn.school] += 1
            self.user_turns[event.turn.user] += 1
            drill = self.drill
            if drill is not None:
                if event.turn.user in drill.waiting:
                    del drill.waiting[: drill.waiting.index(event.turn.user) + 1]
                drill.next_at = None
        elif isinstance(event, FloorReleased):
            if self.floor is not None:
                self.school_ms[self.floor.school] += event.spoke_ms
            self.spoken_ms[event.user] += event.spoke_ms
            self.floor = None
            if self.drill is not None:
                self.drill.next_at = event.at + self.drill.pause_seconds * 1000
        elif isinstance(event, DrillStarted):
            self.drill = Drill(
                prompt=event.prompt,
                waiting=list(event.order),
                seconds=event.seconds,
                pause_seconds=event.pause_seconds,
            )
        elif isinstance(event, DrillEnded):
            self.drill = None
        elif event.muted:
            self.muted.add(event.user)
        else:
            self.muted.discard(event.user)


def _forbidden(message: str, field: str = "room") -> Refused:
    return Refused(ErrorCode.FORBIDDEN, message, field)
