"""A ready demo lesson for ``lophoc serve --demo`` (what ``./dev serve`` runs).

It creates a linked lesson of three schools in the node's store, mints
tokens with the node's own key for a teacher, a co-teacher and three
students, creates an exam room for the same three students with a proctor,
and prints a link per person that opens the right page already signed in.
The token rides in the URL fragment (``#token=...``), which a browser never
sends to the server, so it reaches no log. The links are for
a local trial only: anyone holding one is that person until the token
expires.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

from client_sdk.protocol import Role
from rooms.backends import open_store

from . import auth, exams, lessons
from .settings import Settings

#: The demo's schools, each with a class, a co-teacher and a student.
SCHOOLS = (
    ("THCS Ba Đình", "8A", ("t-hoa", "Cô Hoa"), ("s-an", "Nguyễn An")),
    ("THCS Cầu Giấy", "8B", ("t-minh", "Thầy Minh"), ("s-binh", "Trần Bình")),
    ("THCS Hoàn Kiếm", "8C", ("t-mai", "Cô Mai"), ("s-chi", "Lê Chi")),
)
#: Demo tokens last as long as a lesson's.
TTL_SECONDS = lessons.LESSON_TOKEN_TTL
#: The demo exam opens this long after the demo starts, so that its sealed
#: state (a countdown, no paper) can be seen first.
EXAM_OPENS_IN_MS = 2 * 60_000
#: How long the demo exam runs once open.
EXAM_MINUTES = 20
#: The demo exam's proctor.
PROCTOR = ("p-thu", "Cô Thu")
#: The headings ``describe`` prints above each part of the demo.
LESSON_HEADING = "Demo lesson (links for a local trial only; each signs you in):"
EXAM_HEADING = (
    f"Demo exam room (opens {EXAM_OPENS_IN_MS // 60_000} minutes after the start;"
    " links for a local trial only):"
)


class DemoError(ValueError):
    """The demo cannot run with these settings."""


@dataclass(frozen=True)
class DemoLink:
    """One person of the demo and the page that opens signed in as them."""

    who: str
    path: str
    token: str | None = None
    code: str | None = None
    heading: str = LESSON_HEADING

    def url(self, base: str) -> str:
        """The full link on a node at ``base`` (``http://host:port``)."""
        if self.token is not None:
            return f"{base}{self.path}#token={self.token}"
        if self.code is not None:
            return f"{base}{self.path}#code={quote(self.code)}"
        return f"{base}{self.path}"


def plan(lesson_id: str) -> dict[str, object]:
    """The demo lesson file, as the structure docs/lessons.md describes."""
    return {
        "title": "Unit 5: Food and drink",
        "id": lesson_id,
        "host": {"user": "t-lan", "name": "Cô Lan"},
        "lead_ms": 1500,
        "classes": [
            {
                "school": school,
                "class": klass,
                "co_teacher": {"user": co[0], "name": co[1]},
            }
            for school, klass, co, _ in SCHOOLS
        ],
        "activities": [
            {"kind": "material", "title": "New words: food and drink"},
            {
                "kind": "quiz",
                "title": "Check your words",
                "allow_change": True,
                "questions": [
                    {
                        "kind": "single",
                        "prompt": "An apple is ...",
                        "options": ["a fruit", "a drink", "a vegetable"],
                        "answer": 0,
                        "seconds": 30,
                    },
                    {
                        "kind": "true_false",
                        "prompt": "Rice is a drink.",
                        "answer": False,
                        "seconds": 20,
                    },
                    {
                        "kind": "multiple",
                        "prompt": "Which are drinks?",
                        "options": ["tea", "rice", "juice", "bread"],
                        "answer": [0, 2],
                        "seconds": 30,
                    },
                ],
            },
            {
                "kind": "speaking",
                "title": "Your breakfast",
                "prompt": "Tell us what you ate this morning",
                "seconds_per_turn": 45,
            },
        ],
    }


def exam_plan(exam_id: str, opens_at_ms: int) -> dict[str, object]:
    """The demo exam file, as docs/exams.md describes: the three students."""
    return {
        "id": exam_id,
        "opens_at": opens_at_ms,
        "duration_minutes": EXAM_MINUTES,
        "late_join_minutes": EXAM_MINUTES,
        "students": [
            {"user": user, "name": name, "school": school, "class": klass}
            for school, klass, _, (user, name) in SCHOOLS
        ],
        "proctors": [{"user": PROCTOR[0], "name": PROCTOR[1]}],
        "examiners": ["t-lan"],
        "paper": {
            "title": "English 8: food and drink",
            "sections": [
                {
                    "title": "Words",
                    "items": [
                        {
                            "id": "w1",
                            "kind": "single",
                            "prompt": "Which is a drink?",
                            "options": ["bread", "milk", "rice"],
                            "answer": 1,
                        },
                        {
                            "id": "w2",
                            "kind": "multiple",
                            "prompt": "Which are fruit?",
                            "options": ["mango", "fish", "banana", "egg"],
                            "answer": [0, 2],
                        },
                        {
                            "id": "w3",
                            "kind": "gap_fill",
                            "prompt": "I drink ___ every morning.",
                            "answer": [["tea", "milk", "water", "coffee"]],
                        },
                    ],
                },
                {
                    "title": "Speaking",
                    "items": [
                        {
                            "id": "s1",
                            "kind": "speaking",
                            "prompt": "Tell us about your favourite food.",
                            "seconds": 60,
                            "points": 3,
                        },
                    ],
                },
            ],
        },
    }


async def create(store_url: str, data_dir: Path, secret: str) -> list[DemoLink]:
    """Store a new demo lesson and exam room; return the links of their people."""
    store = open_store(store_url, data_dir)
    await store.connect()
    try:
        lesson_id = f"demo-{secrets.token_hex(3)}"
        created = await lessons.create_lesson(
            store, secret, json.dumps(plan(lesson_id)), "demo.json"
        )
        now_ms = time.time_ns() // 1_000_000
        exam = await exams.create_exam(
            store,
            secret,
            json.dumps(exam_plan(f"{lesson_id}-exam", now_ms + EXAM_OPENS_IN_MS)),
            "demo-exam.json",
            now_ms // 1000,
        )
    finally:
        await store.close()

    def student(user: str, name: str, school: str, klass: str) -> str:
        return auth.mint(
            secret,
            user=user,
            name=name,
            role=Role.STUDENT,
            rooms=[created.id],
            school=school,
            class_=klass,
            ttl_seconds=TTL_SECONDS,
        )

    links = [
        DemoLink(f"host: {created.host.name}", "/web/teacher.html", created.host.token)
    ]
    linked = created.classes[1]
    if linked.co_teacher is not None:
        links.append(
            DemoLink(
                f"co-teacher: {linked.co_teacher.name} ({linked.school})",
                "/web/teacher.html",
                linked.co_teacher.token,
            )
        )
    for school, klass, _, (user, name) in SCHOOLS:
        links.append(
            DemoLink(
                f"student: {name} ({school})",
                "/web/student.html",
                student(user, name, school, klass),
            )
        )
    links.append(
        DemoLink(
            f"join page, class code of {created.classes[0].school} "
            f"{created.classes[0].class_}",
            "/web/",
            code=created.classes[0].code,
        )
    )
    for (school, *_), sitting in zip(SCHOOLS, exam.students, strict=True):
        links.append(
            DemoLink(
                f"exam: {sitting.name} ({school})",
                "/web/exam.html",
                sitting.token,
                heading=EXAM_HEADING,
            )
        )
    for proctor in exam.proctors:
        links.append(
            DemoLink(
                f"proctor: {proctor.name}",
                "/web/proctor.html",
                proctor.token,
                heading=EXAM_HEADING,
            )
        )
    return links


def prepare(settings: Settings) -> list[DemoLink]:
    """Create the demo lesson before the node starts, in the node's store.

    The lesson must outlast this call, so a ``memory://`` store, which
    lives only inside one process, cannot hold it.
    """
    if urlsplit(settings.store_url).scheme == "memory":
        raise DemoError(
            "--demo needs a store that lasts (sqlite:// or redis://), "
            f"not {settings.store_url!r}"
        )
    return asyncio.run(
        create(settings.store_url, Path(settings.data_dir), settings.secret)
    )


def describe(links: list[DemoLink], base: str) -> str:
    """The text ``lophoc serve --demo`` prints: a heading per part, a person each."""
    lines: list[str] = []
    heading = ""
    for link in links:
        if link.heading != heading:
            heading = link.heading
            lines.append(heading)
        lines.append(f"  {link.who}\n    {link.url(base)}")
    return "\n".join(lines)
