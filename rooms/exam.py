"""Exam attempts: when each student may start, must stop, and what counts.

Pure timing and bookkeeping of one exam room, with no I/O. The clock is an
argument everywhere, and every deadline is data (``opens_at``, a student's
``ends_at``), so a room rebuilt on another node re-arms the same deadlines.
Methods change the state as they go: a writer stores what they did and, if
it cannot, rebuilds the room from the store, as it does for quiz answers.

The rules:

- a student starts once the exam opens and no later than the late-join
  window after it; their time runs from ``opens_at``, not from when they
  started, so a late student does not get longer;
- a student's time is the exam's duration plus any extra time named for
  them or added by a proctor; time while paused does not count;
- answers are saved one at a time until the student submits or their time
  is up; at the deadline the attempt is submitted by the server;
- without ``allow_back`` a student cannot change an item once they saved a
  later one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from client_sdk.protocol import AttemptState, ErrorCode

from .errors import Refused


@dataclass(frozen=True, slots=True)
class ExamRules:
    """The settings of one exam room."""

    opens_at: int
    duration_ms: int
    late_join_ms: int = 15 * 60_000
    allow_back: bool = True
    #: Extra milliseconds for named students (an accommodation).
    extra_ms: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class Attempt:
    """One student's attempt."""

    user: str
    state: AttemptState = AttemptState.NOT_STARTED
    started_at: int | None = None
    added_ms: int = 0
    paused_since: int | None = None
    paused_ms: int = 0
    answers: dict[str, tuple[str, object]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    ended_reason: str | None = None

    def ends_at(self, rules: ExamRules) -> int:
        """When this student's time is up, pauses and extra time included."""
        extra = rules.extra_ms.get(self.user, 0) + self.added_ms + self.paused_ms
        return rules.opens_at + rules.duration_ms + extra

    def remaining(self, rules: ExamRules, now: int) -> int:
        """Milliseconds left, stopped while paused."""
        at = self.paused_since if self.paused_since is not None else now
        return max(self.ends_at(rules) - at, 0)


class Exam:
    """The attempts of one exam room."""

    def __init__(self, rules: ExamRules, items: list[str]) -> None:
        self.rules = rules
        self.items = items
        self.attempts: dict[str, Attempt] = {}

    def attempt(self, user: str) -> Attempt:
        """The attempt of ``user``, created (not started) on first ask."""
        return self.attempts.setdefault(user, Attempt(user))

    def start(self, user: str, now: int) -> Attempt:
        """Start (or resume after a reconnect) a student's attempt."""
        rules = self.rules
        attempt = self.attempt(user)
        if attempt.state is not AttemptState.NOT_STARTED:
            return attempt
        if now < rules.opens_at:
            raise Refused(ErrorCode.INVALID, "the exam has not opened yet", "room")
        if now > rules.opens_at + rules.late_join_ms:
            raise Refused(ErrorCode.CLOSED, "the late-join window has passed", "room")
        attempt.state = AttemptState.RUNNING
        attempt.started_at = now
        return attempt

    def save(
        self, user: str, item: str, answer_id: str, value: object, now: int
    ) -> bool:
        """Save one answer; ``False`` when this answer id was saved already."""
        attempt = self.attempts.get(user)
        saved = attempt.answers.get(item) if attempt is not None else None
        if saved is not None and saved[0] == answer_id:
            return False
        self.check_open(user, item, now)
        self.record(user, item, answer_id, value)
        return True

    def check_open(self, user: str, item: str, now: int) -> Attempt:
        """The attempt, if ``user`` may answer ``item`` now; else :class:`Refused`."""
        attempt = self.attempts.get(user)
        if attempt is None or attempt.state is AttemptState.NOT_STARTED:
            raise Refused(ErrorCode.INVALID, "start the exam first", "room")
        if attempt.state is AttemptState.PAUSED:
            raise Refused(ErrorCode.CLOSED, "a proctor paused your exam", "room")
        if attempt.state is AttemptState.SUBMITTED and attempt.ended_reason != (
            "time up"
        ):
            raise Refused(ErrorCode.CLOSED, "you handed in your exam", "room")
        if attempt.state is AttemptState.ENDED:
            raise Refused(ErrorCode.CLOSED, "a proctor ended your exam", "room")
        if attempt.state is not AttemptState.RUNNING or now > attempt.ends_at(
            self.rules
        ):
            raise Refused(ErrorCode.CLOSED, "your exam time is over", "room")
        if item not in self.items:
            raise Refused(ErrorCode.INVALID, f"no item {item!r} in this exam", "item")
        went_back = item in attempt.order and attempt.order[-1] != item
        if went_back and not self.rules.allow_back:
            raise Refused(
                ErrorCode.CLOSED, "this exam does not allow going back", "item"
            )
        return attempt

    def record(self, user: str, item: str, answer_id: str, value: object) -> None:
        """Store an answer that was allowed when it began (a spoken one)."""
        attempt = self.attempt(user)
        attempt.answers[item] = (answer_id, value)
        if item not in attempt.order:
            attempt.order.append(item)

    def submit(self, user: str, now: int, reason: str = "submitted") -> Attempt:
        """End an attempt by the student's choice (or the deadline's)."""
        attempt = self.attempts.get(user)
        if attempt is None or attempt.state is AttemptState.NOT_STARTED:
            raise Refused(ErrorCode.INVALID, "start the exam first", "room")
        if attempt.state in (AttemptState.SUBMITTED, AttemptState.ENDED):
            return attempt
        self._close_pause(attempt, now)
        attempt.state = AttemptState.SUBMITTED
        attempt.ended_reason = reason
        return attempt

    def end(self, user: str, now: int, reason: str) -> Attempt:
        """A proctor ends an attempt, with a reason for the record."""
        attempt = self.attempt(user)
        self._close_pause(attempt, now)
        attempt.state = AttemptState.ENDED
        attempt.ended_reason = reason
        return attempt

    def pause(self, user: str, now: int) -> None:
        """A proctor pauses a running attempt; its clock stops."""
        attempt = self.attempts.get(user)
        if attempt is not None and attempt.state is AttemptState.RUNNING:
            attempt.state = AttemptState.PAUSED
            attempt.paused_since = now

    def resume(self, user: str, now: int) -> None:
        """A proctor resumes a paused attempt; the pause is added to its time."""
        attempt = self.attempts.get(user)
        if attempt is not None and attempt.state is AttemptState.PAUSED:
            self._close_pause(attempt, now)
            attempt.state = AttemptState.RUNNING

    def add_time(self, user: str, ms: int) -> None:
        """A proctor gives a student more time."""
        if ms <= 0:
            raise Refused(ErrorCode.INVALID, "added time must be positive", "ms")
        self.attempt(user).added_ms += ms

    def due(self) -> int | None:
        """The next deadline of a running attempt, for the writer's timer."""
        ends = [
            a.ends_at(self.rules)
            for a in self.attempts.values()
            if a.state is AttemptState.RUNNING
        ]
        return min(ends, default=None)

    def expire(self, now: int) -> list[Attempt]:
        """Submit every running attempt whose time is up."""
        return [
            self.submit(a.user, now, "time up")
            for a in list(self.attempts.values())
            if a.state is AttemptState.RUNNING and now >= a.ends_at(self.rules)
        ]

    @staticmethod
    def _close_pause(attempt: Attempt, now: int) -> None:
        if attempt.paused_since is not None:
            attempt.paused_ms += max(now - attempt.paused_since, 0)
            attempt.paused_since = None
