"""Quiz questions: their kinds, how an answer is graded, and how it scores.

A :class:`Question` as a teacher writes it holds its answer key. What
students receive before the reveal is :meth:`Question.view`, which has no
key in any form; the key leaves the server only inside the reveal.

Grading rules, as the teacher is told in docs/lessons.md:

- single choice and true/false: the one right option;
- multiple choice: exactly the set of right options, no partial credit;
- ordering: exactly the right order;
- short text: any accepted answer, ignoring letter case and runs of spaces;
  accents count unless the question sets ``ignore_accents``, because in a
  language lesson "café" and "cafe" are different spellings.

Scoring: a right answer earns ``points`` times a speed factor that falls
linearly from 1 at ``opens_at`` to one half at ``closes_at``. The time taken
runs from ``opens_at`` to the server's receipt, less half the student's
measured round trip, so a slow school link costs nothing. A wrong answer
earns nothing; there is no streak bonus.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated

import msgspec

from client_sdk.protocol import AnswerValue, QuestionKind, QuestionView

Text = Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
Options = Annotated[list[Text], msgspec.Meta(min_length=2, max_length=10)]
#: The largest round trip credited back to a student: beyond it a link is
#: broken rather than slow, and a client could claim any delay it liked.
MAX_LATENCY_CREDIT_MS = 1500
SLOWEST_FACTOR = 0.5


class Question(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One quiz question with its answer key, as written in a lesson plan.

    ``answer`` is an option index (single), a list of indices (multiple and
    ordering, for ordering the right order of ``options``), a boolean
    (true/false) or a list of accepted strings (short text).
    """

    kind: QuestionKind
    prompt: Text
    options: list[Text] = msgspec.field(default_factory=list)
    answer: bool | int | list[int | Text]
    points: Annotated[int, msgspec.Meta(ge=0, le=10_000)] = 1000
    seconds: Annotated[int, msgspec.Meta(ge=5, le=3600)] = 30
    ignore_accents: bool = False

    def __post_init__(self) -> None:
        problem = self._check()
        if problem is not None:
            field, message = problem
            # msgspec reports errors raised here with the path of the struct
            # inside the plan; the field name makes it point at the value.
            raise ValueError(f"{message} (at `{field}`)")

    def _check(self) -> tuple[str, str] | None:
        kind, answer, options = self.kind, self.answer, self.options
        choice = kind in (QuestionKind.SINGLE, QuestionKind.MULTIPLE)
        if (choice or kind is QuestionKind.ORDERING) and not 2 <= len(options) <= 10:
            return "options", f"a {kind.value} question needs 2 to 10 options"
        if not choice and kind is not QuestionKind.ORDERING and options:
            return "options", f"a {kind.value} question takes no options"
        if kind is QuestionKind.SINGLE:
            if type(answer) is not int or not 0 <= answer < len(options):
                return "answer", "must be the index of one of the options"
        elif kind is QuestionKind.TRUE_FALSE:
            if type(answer) is not bool:
                return "answer", "must be true or false"
        elif kind is QuestionKind.MULTIPLE:
            if not _indices(answer, len(options)) or len(set(answer)) != len(answer):  # type: ignore[arg-type]
                return "answer", "must list distinct indices of the right options"
        elif kind is QuestionKind.ORDERING:
            if sorted(answer) != list(range(len(options))):  # type: ignore[arg-type]
                return "answer", "must list every option index once, in order"
        elif not (
            isinstance(answer, list)
            and answer
            and all(isinstance(a, str) and a.strip() for a in answer)
        ):
            return "answer", "must list the accepted answers"
        return None

    def view(self, number: int) -> QuestionView:
        """What a student may see before the reveal: no key."""
        return QuestionView(
            number=number,
            kind=self.kind,
            prompt=self.prompt,
            options=list(self.options),
            points=self.points,
            seconds=self.seconds,
        )

    def grade(self, value: AnswerValue) -> bool:
        """Whether ``value`` is right; a value of the wrong shape is wrong."""
        kind, key = self.kind, self.answer
        if kind is QuestionKind.SINGLE:
            return type(value) is int and value == key
        if kind is QuestionKind.TRUE_FALSE:
            return type(value) is bool and value is key
        if kind is QuestionKind.MULTIPLE:
            return isinstance(value, list) and set(value) == set(key)  # type: ignore[arg-type]
        if kind is QuestionKind.ORDERING:
            return isinstance(value, list) and value == key
        if not isinstance(value, str):
            return False
        typed = normalize(value, self.ignore_accents)
        return any(
            normalize(str(accepted), self.ignore_accents) == typed
            for accepted in key  # type: ignore[union-attr]
        )

    def shape_error(self, value: AnswerValue) -> str | None:
        """Why ``value`` cannot be an answer to this question, if it cannot."""
        kind, count = self.kind, len(self.options)
        if kind is QuestionKind.SINGLE:
            if type(value) is not int or not 0 <= value < count:
                return f"expected an option index from 0 to {count - 1}"
        elif kind is QuestionKind.TRUE_FALSE:
            if type(value) is not bool:
                return "expected true or false"
        elif kind is QuestionKind.MULTIPLE:
            if not _indices(value, count):
                return f"expected a list of option indices from 0 to {count - 1}"
        elif kind is QuestionKind.ORDERING:
            if not isinstance(value, list) or sorted(value) != list(range(count)):
                return f"expected every option index from 0 to {count - 1} once"
        elif not isinstance(value, str) or len(value) > 500:
            return "expected a text of at most 500 characters"
        return None


def _indices(value: object, count: int) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(type(i) is int and 0 <= i < count for i in value)
    )


def normalize(text: str, ignore_accents: bool) -> str:
    """Text as compared for short answers: case folded, spaces collapsed.

    NFC first, so a letter typed as base plus combining mark equals the
    same letter typed precomposed (Vietnamese keyboards produce both).
    """
    text = unicodedata.normalize("NFC", text)
    if ignore_accents:
        decomposed = unicodedata.normalize("NFD", text)
        text = "".join(c for c in decomposed if not unicodedata.combining(c))
        # Vietnamese đ is a letter of its own, not d with a mark.
        text = text.replace("đ", "d").replace("Đ", "D")
    return " ".join(text.casefold().split())


def score(
    question: Question,
    right: bool,
    opens_at: int,
    closes_at: int,
    received_at: int,
    round_trip_ms: int,
) -> int:
    """Points for one answer; see the module docstring for the rule."""
    if not right:
        return 0
    credit = min(max(round_trip_ms, 0), MAX_LATENCY_CREDIT_MS) // 2
    taken = min(max(received_at - credit - opens_at, 0), closes_at - opens_at)
    window = max(closes_at - opens_at, 1)
    factor = 1.0 - (1.0 - SLOWEST_FACTOR) * taken / window
    return round(question.points * factor)
