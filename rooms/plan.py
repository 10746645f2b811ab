"""Lesson files: who teaches, which classes are linked, and the plan.

A teacher writes a lesson as JSON or YAML (see docs/lessons.md). It is
checked as a whole before anything is stored, and every bad part is reported
with its path (``activities[2].questions[0].answer``), not only the first,
so a teacher fixes a file in one go.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

import msgspec
import yaml

from client_sdk.protocol import ActivityKind, ActivityView, LinkedClass, RoomId

from .errors import LophocError
from .quiz import Question

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
UserId = Annotated[
    str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[^\s]+\Z")
]
Title = Annotated[str, msgspec.Meta(min_length=1, max_length=300)]
Url = Annotated[str, msgspec.Meta(max_length=2000, pattern=r"^https?://")]
#: Time between sending a question and ``opens_at``: long enough for the
#: question to reach a slow school link before anyone sees it.
DEFAULT_LEAD_MS = 1500

_PATH = re.compile(r" - at `\$(.*)`$")
_FIELD = re.compile(r" \(at `([^`]+)`\)$")


class PlanError(LophocError):
    """A lesson file that cannot be used; ``problems`` lists every bad part.

    Each problem is a pair of a path (``activities[1].title``, or ``""`` for
    the file as a whole) and what is wrong there.
    """

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{p or 'file'}: {m}" for p, m in problems))
        self.problems = problems


class Person(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Someone named in a lesson file."""

    user: UserId
    name: Name | None = None

    @property
    def display(self) -> str:
        """The name to show, or the user id when none is given."""
        return self.name or self.user


class ClassEntry(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One linked class: its school, name, co-teacher and known students."""

    school: Name
    class_: Name = msgspec.field(name="class")
    co_teacher: Person | None = None
    students: list[Person] = msgspec.field(default_factory=list)


class Material(
    msgspec.Struct, tag_field="kind", tag="material", forbid_unknown_fields=True
):
    """A slide, a text or a link everyone looks at."""

    title: Title
    url: Url | None = None


class Quiz(msgspec.Struct, tag_field="kind", tag="quiz", forbid_unknown_fields=True):
    """Questions asked one at a time by the host."""

    title: Title
    questions: Annotated[list[Question], msgspec.Meta(min_length=1, max_length=100)]
    allow_change: bool = False


class Speaking(
    msgspec.Struct, tag_field="kind", tag="speaking", forbid_unknown_fields=True
):
    """A speaking drill: a prompt and timed turns at the microphone."""

    title: Title
    prompt: Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
    seconds_per_turn: Annotated[int, msgspec.Meta(ge=5, le=600)] = 60


Activity = Material | Quiz | Speaking


class LessonPlan(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A whole lesson file."""

    title: Title
    host: Person
    classes: Annotated[list[ClassEntry], msgspec.Meta(min_length=1, max_length=64)]
    activities: Annotated[list[Activity], msgspec.Meta(max_length=200)] = msgspec.field(
        default_factory=list
    )
    id: RoomId | None = None
    lead_ms: Annotated[int, msgspec.Meta(ge=0, le=10_000)] = DEFAULT_LEAD_MS
    #: Students and classroom devices present at once; no limit when absent.
    seats: Annotated[int, msgspec.Meta(ge=1, le=100_000)] | None = None

    def questions(self) -> list[tuple[int, int, Question]]:
        """Every question with its activity index and index in that quiz."""
        found: list[tuple[int, int, Question]] = []
        for index, activity in enumerate(self.activities):
            if isinstance(activity, Quiz):
                found.extend((index, n, q) for n, q in enumerate(activity.questions))
        return found

    def number_of(self, activity: int, question: int) -> int:
        """The lesson-wide number (from 1) of a question of a quiz activity."""
        number = 0
        for index, act in enumerate(self.activities):
            if isinstance(act, Quiz):
                if index == activity:
                    return number + question + 1
                number += len(act.questions)
        raise IndexError(activity)

    def linked_classes(self) -> list[LinkedClass]:
        """The classes as clients see them."""
        return [
            LinkedClass(
                school=c.school,
                class_=c.class_,
                co_teacher=c.co_teacher.user if c.co_teacher else None,
            )
            for c in self.classes
        ]

    def activity_view(self, index: int) -> ActivityView:
        """Activity ``index`` as every client may see it (no answer keys)."""
        activity = self.activities[index]
        if isinstance(activity, Material):
            return ActivityView(
                index=index,
                kind=ActivityKind.MATERIAL,
                title=activity.title,
                url=activity.url,
            )
        if isinstance(activity, Quiz):
            return ActivityView(
                index=index,
                kind=ActivityKind.QUIZ,
                title=activity.title,
                questions=len(activity.questions),
            )
        return ActivityView(
            index=index,
            kind=ActivityKind.SPEAKING,
            title=activity.title,
            prompt=activity.prompt,
        )


def locate(exc: msgspec.ValidationError, prefix: str) -> tuple[str, str]:
    """The path and message of a validation error, the path under ``prefix``."""
    text = str(exc)
    match = _PATH.search(text)
    if match is not None:
        prefix, text = prefix + match.group(1), text[: match.start()]
    # A check across fields of a question names its field at the end.
    field = _FIELD.search(text)
    if field is not None:
        prefix, text = f"{prefix}.{field.group(1)}", text[: field.start()]
    return prefix, text


def check_items(
    data: dict[str, Any], key: str, kind: Any, problems: list[tuple[str, str]]
) -> None:
    """Check each item of the list ``data[key]`` on its own, noting problems."""
    items = data.get(key)
    if not isinstance(items, list):
        return
    for index, item in enumerate(items):
        try:
            msgspec.convert(item, kind)
        except msgspec.ValidationError as exc:
            problems.append(locate(exc, f"{key}[{index}]"))


class _Loader(yaml.SafeLoader):
    """YAML with only true and false as booleans (as in YAML 1.2).

    YAML 1.1 reads yes, no, on and off as booleans, so a teacher's options
    ``[yes, no]`` would not be texts.
    """


_Loader.yaml_implicit_resolvers = {
    first: [r for r in resolvers if r[0] != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def _yaml(text: str | bytes) -> Any:
    return yaml.load(text, Loader=_Loader)


def read_mapping(text: str | bytes, filename: str) -> dict[str, Any]:
    """A JSON (``.json``) or YAML file's top-level mapping, or PlanError."""
    try:
        loader = json.loads if filename.endswith(".json") else _yaml
        data = loader(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise PlanError([("", f"not valid JSON or YAML: {exc}")]) from exc
    if not isinstance(data, dict):
        raise PlanError([("", "the file must be a mapping of fields")])
    return data


def parse_plan(text: str | bytes, filename: str = "lesson.yaml") -> LessonPlan:
    """Read a lesson file; raise :class:`PlanError` naming every bad part.

    The format is taken from the file name: ``.json`` is JSON, anything
    else YAML (of which JSON is a subset).
    """
    data = read_mapping(text, filename)

    try:
        plan = msgspec.convert(data, LessonPlan)
    except msgspec.ValidationError as first:
        # msgspec stops at the first problem; checking each list item on its
        # own finds one problem per bad item, which is what a teacher fixing
        # a long plan needs.
        problems: list[tuple[str, str]] = []
        check_items(data, "activities", Activity, problems)
        check_items(data, "classes", ClassEntry, problems)
        if not problems:
            problems.append(locate(first, ""))
        raise PlanError(problems) from first

    problems = _cross_checks(plan)
    if problems:
        raise PlanError(problems)
    return plan


def _cross_checks(plan: LessonPlan) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    users: dict[str, str] = {plan.host.user: "host"}
    for index, entry in enumerate(plan.classes):
        key = (entry.school, entry.class_)
        if key in seen:
            problems.append((f"classes[{index}]", "this class is listed twice"))
        seen.add(key)
        people = ([entry.co_teacher] if entry.co_teacher else []) + entry.students
        for person in people:
            where = users.setdefault(person.user, f"classes[{index}]")
            if where != f"classes[{index}]":
                problems.append(
                    (f"classes[{index}]", f"user {person.user!r} is also in {where}")
                )
    return problems
