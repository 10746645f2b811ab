"""Exam papers: their file format, each student's variant, and grading.

An examiner writes a paper as YAML or JSON: sections of items, each with
its points and answer key. A paper is checked as a whole, every bad part
reported with its path, like a lesson file.

Each student sits their own variant: the order of the items within a
section and of the options within an item are shuffled from a seed the
server derives from a secret of the exam and the student's id, so the same
student always gets the same variant (after a reconnect, on another node,
and when grading) and two students almost never get the same one. A variant
never holds a key: it is what a student may see once the exam opens.
"""

from __future__ import annotations

import hashlib
import hmac
import random
from typing import Annotated

import msgspec

from client_sdk.protocol import ItemKind, ItemView, SectionView

from .plan import PlanError, check_items, locate, read_mapping
from .quiz import normalize

Text = Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
Option = Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
ItemId = Annotated[
    str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[\w.-]+\Z")
]
Url = Annotated[str, msgspec.Meta(max_length=2000, pattern=r"^https?://")]
#: What marks a gap in a gap-fill item's prompt.
GAP = "___"


class Item(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One item with its key, as the examiner wrote it.

    ``answer`` is an option index (single), a list of indices (multiple), a
    list of accepted texts (short text), or a list with one list of accepted
    texts per gap (gap fill). Speaking items have no key: an examiner grades
    the recording. ``audio`` makes any item a listening item.
    """

    id: ItemId
    kind: ItemKind
    prompt: Text
    options: list[Option] = msgspec.field(default_factory=list)
    answer: int | list[int | str | list[str]] | None = None
    points: Annotated[float, msgspec.Meta(ge=0, le=1000)] = 1
    audio: Url | None = None
    seconds: Annotated[int, msgspec.Meta(ge=5, le=600)] | None = None
    ignore_accents: bool = False

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem is not None:
            field, message = problem
            raise ValueError(f"{message} (at `{field}`)")

    def _problem(self) -> tuple[str, str] | None:
        kind, key, count = self.kind, self.answer, len(self.options)
        if kind in (ItemKind.SINGLE, ItemKind.MULTIPLE) and not 2 <= count <= 10:
            return "options", f"a {kind.value} item needs 2 to 10 options"
        if kind not in (ItemKind.SINGLE, ItemKind.MULTIPLE) and count:
            return "options", f"a {kind.value} item takes no options"
        if kind is ItemKind.SINGLE and (type(key) is not int or not 0 <= key < count):
            return "answer", "must be the index of one of the options"
        if kind is ItemKind.MULTIPLE and not (
            isinstance(key, list)
            and key
            and all(type(i) is int and 0 <= i < count for i in key)
            and len(set(map(str, key))) == len(key)
        ):
            return "answer", "must list distinct indices of the right options"
        if kind is ItemKind.SHORT_TEXT and not (
            isinstance(key, list) and key and all(isinstance(a, str) for a in key)
        ):
            return "answer", "must list the accepted answers"
        if kind is ItemKind.GAP_FILL:
            gaps = self.prompt.count(GAP)
            if gaps == 0:
                return "prompt", f"a gap-fill prompt marks each gap with {GAP}"
            if not (
                isinstance(key, list)
                and len(key) == gaps
                and all(isinstance(g, list) and g for g in key)
            ):
                return "answer", f"must list accepted answers for each of {gaps} gaps"
        if kind is ItemKind.SPEAKING and key is not None:
            return "answer", "a speaking item is graded by an examiner, not a key"
        return None

    @property
    def gaps(self) -> int:
        """How many gaps a gap-fill item has."""
        return self.prompt.count(GAP) if self.kind is ItemKind.GAP_FILL else 0


class Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A titled group of items, shuffled within itself unless told not to."""

    title: Text
    items: Annotated[list[Item], msgspec.Meta(min_length=1, max_length=200)]
    shuffle: bool = True


class ExamPaper(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A whole paper."""

    title: Text
    sections: Annotated[list[Section], msgspec.Meta(min_length=1, max_length=50)]
    shuffle_options: bool = True

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for item in self.items():
            if item.id in seen:
                raise ValueError(f"item id {item.id!r} is used twice (at `sections`)")
            seen.add(item.id)

    def items(self) -> list[Item]:
        """Every item in paper order."""
        return [item for section in self.sections for item in section.items]

    def item(self, item_id: str) -> Item | None:
        """The item with this id, if any."""
        return next((i for i in self.items() if i.id == item_id), None)

    def total(self) -> float:
        """The points of the whole paper."""
        return sum(item.points for item in self.items())


class Variant(msgspec.Struct, frozen=True):
    """One student's paper, and how their option order maps to the paper's.

    ``orders[item_id][shown] = original`` option index; only the server
    keeps it, to grade what the student chose.
    """

    sections: list[SectionView]
    orders: dict[str, list[int]]


def seed_for(exam_secret: bytes, student: str) -> int:
    """The student's shuffling seed: the same every time, unguessable."""
    digest = hmac.new(exam_secret, student.encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big")


def variant(paper: ExamPaper, seed: int) -> Variant:
    """The variant of ``paper`` for the student whose seed is ``seed``."""
    rng = random.Random(seed)
    sections: list[SectionView] = []
    orders: dict[str, list[int]] = {}
    for section in paper.sections:
        items = list(section.items)
        if section.shuffle:
            rng.shuffle(items)
        views = []
        for item in items:
            order = list(range(len(item.options)))
            if paper.shuffle_options and order:
                rng.shuffle(order)
            orders[item.id] = order
            views.append(
                ItemView(
                    id=item.id,
                    kind=item.kind,
                    prompt=item.prompt,
                    points=item.points,
                    options=[item.options[i] for i in order],
                    gaps=item.gaps,
                    audio=item.audio,
                    seconds=item.seconds,
                )
            )
        sections.append(SectionView(title=section.title, items=views))
    return Variant(sections=sections, orders=orders)


ExamAnswer = int | str | list[int] | list[str]


def grade(item: Item, shown_order: list[int], value: ExamAnswer) -> float | None:
    """Points for an answer in the student's own option order.

    ``None`` for a speaking item, which an examiner grades. Multiple choice
    and gap fill earn nothing unless wholly right; a value of the wrong
    shape earns nothing.
    """
    kind, key = item.kind, item.answer
    if kind is ItemKind.SPEAKING:
        return None
    if kind is ItemKind.SINGLE:
        right = type(value) is int and 0 <= value < len(shown_order)
        right = right and shown_order[value] == key  # type: ignore[index]
    elif kind is ItemKind.MULTIPLE:
        right = (
            isinstance(value, list)
            and all(type(v) is int and 0 <= v < len(shown_order) for v in value)
            and {shown_order[v] for v in value} == set(key)  # type: ignore[arg-type, index]
        )
    elif kind is ItemKind.SHORT_TEXT:
        right = isinstance(value, str) and _accepted(item, value, key)  # type: ignore[arg-type]
    else:
        right = (
            isinstance(value, list)
            and len(value) == item.gaps
            and all(
                isinstance(v, str) and _accepted(item, v, accepted)  # type: ignore[arg-type]
                for v, accepted in zip(value, key, strict=False)  # type: ignore[arg-type]
            )
        )
    return item.points if right else 0.0


def _accepted(item: Item, text: str, accepted: list[str]) -> bool:
    typed = normalize(text, item.ignore_accents)
    return any(normalize(a, item.ignore_accents) == typed for a in accepted)


def parse_paper(text: str | bytes, filename: str = "paper.yaml") -> ExamPaper:
    """Read a paper file; raise :class:`PlanError` naming every bad part."""
    data = read_mapping(text, filename)
    try:
        return msgspec.convert(data, ExamPaper)
    except msgspec.ValidationError as first:
        problems: list[tuple[str, str]] = []
        sections = data.get("sections")
        if isinstance(sections, list):
            for index, section in enumerate(sections):
                if isinstance(section, dict):
                    before = len(problems)
                    check_items(section, "items", Item, problems)
                    problems[before:] = [
                        (f"sections[{index}].{path}", message)
                        for path, message in problems[before:]
                    ]
        if not problems:
            problems.append(locate(first, ""))
        raise PlanError(problems) from first
