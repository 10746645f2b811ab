"""What students and proctors see of an exam room: variants, states, seats.

:class:`DeskViews` is the read side of :class:`rooms.exam_room.ExamDesk`:
it turns the desk's attempts and incidents into the messages of the
protocol, and changes nothing. A student's view never holds the key, and a
proctor's never holds an item or an answer.
"""

from __future__ import annotations

from client_sdk.protocol import (
    AttemptState,
    ExamState,
    Incident,
    ProctorView,
    Seat,
    SectionView,
)

from .exam import Attempt, Exam
from .exam_paper import Variant, seed_for, variant
from .exam_setup import ExamSetup

#: The newest incidents a proctor's first view carries.
VIEW_INCIDENTS = 200


class DeskViews:
    """The views of an exam desk; the desk holds the state they read."""

    setup: ExamSetup
    exam: Exam
    sessions: dict[str, set[str]]
    incidents: list[Incident]
    flagged: dict[str, str]
    warnings: dict[str, int]
    _variants: dict[str, Variant]
    _secret: bytes

    def variant_of(self, user: str) -> Variant:
        """The student's variant: the same on every node and for grading."""
        found = self._variants.get(user)
        if found is None:
            found = variant(self.setup.paper, seed_for(self._secret, user))
            self._variants[user] = found
        return found

    def state_for(
        self,
        user: str,
        now: int,
        *,
        sections: bool = False,
        reply_id: str | None = None,
    ) -> ExamState:
        """The student's exam; their items only when asked and once open."""
        rules = self.exam.rules
        attempt = self.exam.attempts.get(user) or Attempt(user)
        ends_at = attempt.ends_at(rules)
        if attempt.state in (AttemptState.RUNNING, AttemptState.PAUSED):
            remaining = attempt.remaining(rules, now)
        elif attempt.state is AttemptState.NOT_STARTED:
            remaining = max(ends_at - max(now, rules.opens_at), 0)
        else:
            remaining = 0
        shown: list[SectionView] | None = None
        if (
            sections
            and now >= rules.opens_at
            and attempt.state is not (AttemptState.NOT_STARTED)
        ):
            shown = self.variant_of(user).sections
        return ExamState(
            room=self.setup.id,
            title=self.setup.title,
            opens_at=rules.opens_at,
            late_join_until=rules.opens_at + rules.late_join_ms,
            ends_at=ends_at,
            remaining_ms=remaining,
            server_time=now,
            state=attempt.state,
            allow_back=rules.allow_back,
            id=reply_id,
            sections=shown,
            answers={item: value for item, (_, value) in attempt.answers.items()},  # type: ignore[misc]
            reason=attempt.ended_reason,
        )

    def seat(self, user: str, now: int, connections: int | None = None) -> Seat:
        """One student's seat as a proctor sees it."""
        candidate = self.setup.candidate(user)
        attempt = self.exam.attempts.get(user) or Attempt(user)
        held = len(self.sessions.get(user, ())) if connections is None else connections
        rules = self.exam.rules
        running = attempt.state in (AttemptState.RUNNING, AttemptState.PAUSED)
        return Seat(
            user=user,
            name=candidate.name if candidate else user,
            school=candidate.school if candidate else "",
            class_=candidate.class_ if candidate else "",
            connected=held > 0,
            connections=held,
            state=attempt.state,
            answered=len(attempt.answers),
            items=len(self.exam.items),
            ends_at=attempt.ends_at(rules),
            remaining_ms=attempt.remaining(rules, now) if running else 0,
            incidents=sum(1 for i in self.incidents if i.user == user),
            warnings=self.warnings.get(user, 0),
            flagged=user in self.flagged,
            reason=attempt.ended_reason,
        )

    def proctor_view(self, reply_id: str, now: int) -> ProctorView:
        """Every seat of the room and its newest incidents."""
        return ProctorView(
            id=reply_id,
            room=self.setup.id,
            title=self.setup.title,
            opens_at=self.setup.opens_at,
            server_time=now,
            seats=[self.seat(c.user, now) for c in self.setup.students],
            incidents=self.incidents[-VIEW_INCIDENTS:],
        )
