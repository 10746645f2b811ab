"""Creating lessons, handing out join tokens and codes, and reading reports.

Used by the HTTP API and by ``lophoc lesson``; both work on the store, so a
lesson created on one node is joined on any other.

A join code is short enough to read aloud in a classroom (8 letters and
digits without look-alikes such as O and 0). A class code lets any student
of that class in with their name; a personal code is for one student named
in the lesson file.
"""

from __future__ import annotations

import re
import secrets
from typing import Annotated

import msgspec

from client_sdk.protocol import Role
from rooms.plan import LessonPlan, parse_plan
from rooms.report import LessonReport, build_report
from rooms.store import Store
from rooms.writer import LESSON, load_room

from . import auth

CODE = "code"
CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 8
#: Join tokens of a lesson last a school day; a student who joins late in
#: the day with a code gets a fresh one.
LESSON_TOKEN_TTL = 12 * 3600
STUDENT_NAME = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]

_plan_encoder = msgspec.msgpack.Encoder()
_unsafe = re.compile(r"[^A-Za-z0-9_.:-]+")


class LessonExists(ValueError):
    """A lesson with this id was created before."""


class UnknownCode(ValueError):
    """A join code that names no lesson."""


class JoinCode(msgspec.Struct, frozen=True):
    """What a join code lets in: a class of a lesson, or one student of it."""

    lesson: str
    school: str
    class_: str = msgspec.field(name="class")
    user: str | None = None
    name: str | None = None


class Access(msgspec.Struct, frozen=True, omit_defaults=True):
    """A way in for one person or device: a token, a code, or both."""

    user: str
    name: str
    role: Role
    token: str | None = None
    code: str | None = None


class ClassAccess(msgspec.Struct, frozen=True):
    """The ways in for one linked class."""

    school: str
    class_: str = msgspec.field(name="class")
    code: str = ""
    classroom: Access | None = None
    co_teacher: Access | None = None
    students: list[Access] = msgspec.field(default_factory=list)


class CreatedLesson(msgspec.Struct, frozen=True):
    """What the creator of a lesson gets back."""

    id: str
    title: str
    host: Access
    classes: list[ClassAccess]


def _code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def normalize_code(code: str) -> str:
    """A code as typed by a student: spaces and dashes dropped, upper case."""
    return re.sub(r"[\s-]+", "", code).upper()


async def create_lesson(
    store: Store, secret: str, text: str | bytes, filename: str = "lesson.yaml"
) -> CreatedLesson:
    """Check and store a lesson file; return its tokens and join codes.

    Raises :class:`rooms.plan.PlanError` for a bad file and
    :class:`LessonExists` when its id is taken.
    """
    plan = parse_plan(text, filename)
    lesson_id = plan.id or f"lesson-{secrets.token_hex(4)}"
    if await store.load_document(LESSON, lesson_id) is not None:
        raise LessonExists(f"lesson {lesson_id!r} exists already")
    await store.save_document(LESSON, lesson_id, _plan_encoder.encode(plan))

    def token(user: str, name: str, role: Role, school: str, klass: str) -> str:
        return auth.mint(
            secret,
            user=user,
            name=name,
            role=role,
            rooms=[lesson_id],
            school=school,
            class_=klass,
            ttl_seconds=LESSON_TOKEN_TTL,
        )

    host = plan.host
    first = plan.classes[0]
    classes = []
    for entry in plan.classes:
        code = await _new_code(store, JoinCode(lesson_id, entry.school, entry.class_))
        device = "classroom-" + _unsafe.sub("-", f"{entry.school}-{entry.class_}")
        device_name = f"{entry.school} {entry.class_}"
        co = entry.co_teacher
        students = []
        for person in entry.students:
            personal = await _new_code(
                store,
                JoinCode(
                    lesson_id, entry.school, entry.class_, person.user, person.display
                ),
            )
            students.append(
                Access(
                    user=person.user,
                    name=person.display,
                    role=Role.STUDENT,
                    code=personal,
                )
            )
        classes.append(
            ClassAccess(
                school=entry.school,
                class_=entry.class_,
                code=code,
                classroom=Access(
                    user=device,
                    name=device_name,
                    role=Role.CLASSROOM,
                    token=token(
                        device, device_name, Role.CLASSROOM, entry.school, entry.class_
                    ),
                ),
                co_teacher=(
                    Access(
                        user=co.user,
                        name=co.display,
                        role=Role.CO_TEACHER,
                        token=token(
                            co.user,
                            co.display,
                            Role.CO_TEACHER,
                            entry.school,
                            entry.class_,
                        ),
                    )
                    if co
                    else None
                ),
                students=students,
            )
        )
    return CreatedLesson(
        id=lesson_id,
        title=plan.title,
        host=Access(
            user=host.user,
            name=host.display,
            role=Role.TEACHER,
            token=token(
                host.user, host.display, Role.TEACHER, first.school, first.class_
            ),
        ),
        classes=classes,
    )


async def _new_code(store: Store, code: JoinCode) -> str:
    # Codes are random: a collision is retried, never overwritten.
    for _ in range(10):
        value = _code()
        if await store.load_document(CODE, value) is None:
            await store.save_document(CODE, value, msgspec.msgpack.encode(code))
            return value
    raise RuntimeError("could not find a free join code")


async def join_with_code(
    store: Store, secret: str, code: str, name: str | None
) -> tuple[str, Access]:
    """A student token for a join code: the lesson id and the access.

    A class code needs the student's ``name``; a personal code carries it.
    Raises :class:`UnknownCode` or ``ValueError`` naming what is wrong.
    """
    data = await store.load_document(CODE, normalize_code(code))
    if data is None:
        raise UnknownCode("no lesson has this join code")
    entry = msgspec.msgpack.decode(data, type=JoinCode)
    if entry.user is not None:
        user, display = entry.user, entry.name or entry.user
    else:
        display = " ".join((name or "").split())
        if not 1 <= len(display) <= 100:
            raise ValueError("name: give your name (1 to 100 characters)")
        user = f"s-{secrets.token_hex(5)}"
    token = auth.mint(
        secret,
        user=user,
        name=display,
        role=Role.STUDENT,
        rooms=[entry.lesson],
        school=entry.school,
        class_=entry.class_,
        ttl_seconds=LESSON_TOKEN_TTL,
    )
    return entry.lesson, Access(user=user, name=display, role=Role.STUDENT, token=token)


async def load_plan(store: Store, lesson_id: str) -> LessonPlan | None:
    """The stored plan of a lesson, or ``None`` if there is no such lesson."""
    data = await store.load_document(LESSON, lesson_id)
    return None if data is None else msgspec.msgpack.decode(data, type=LessonPlan)


async def lesson_report(store: Store, lesson_id: str) -> LessonReport | None:
    """The report of a lesson as the store holds it now."""
    if await store.load_document(LESSON, lesson_id) is None:
        return None
    return build_report(await load_room(store, lesson_id))


def may_read(claims: auth.Claims, plan: LessonPlan) -> bool:
    """Whether a token may read a lesson's report: its host, co-teachers, admins."""
    if claims.role is Role.ADMIN:
        return True
    if claims.user == plan.host.user and claims.role is Role.TEACHER:
        return True
    return any(
        c.co_teacher is not None and c.co_teacher.user == claims.user
        for c in plan.classes
    )
