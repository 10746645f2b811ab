"""A linked lesson of three schools, its people, and driving its room by hand."""

from __future__ import annotations

from typing import Any

from client_sdk.protocol import Member, Role
from rooms.lesson import Lesson
from rooms.plan import parse_plan
from rooms.room import Decision, JoinRoom, LessonAction, Room

PLAN = """
title: Speaking
host: {user: host}
classes:
  - {school: A, class: 7A, co_teacher: {user: co-a}}
  - {school: B, class: 7B, co_teacher: {user: co-b}}
  - {school: C, class: 7C}
"""
T0 = 1_800_000_000_000
HOST = Member(user="host", name="Host", role=Role.TEACHER, school="A", class_="7A")
CO_A = Member(user="co-a", name="Co A", role=Role.CO_TEACHER, school="A", class_="7A")
CO_B = Member(user="co-b", name="Co B", role=Role.CO_TEACHER, school="B", class_="7B")


def kid(user: str) -> Member:
    """A student whose school is the first letter of ``user``."""
    school = user[0].upper()
    return Member(user=user, name=user, role=Role.STUDENT, school=school, class_="7")


def linked_room(people: list[Member]) -> Room:
    """The lesson's room with ``people`` joined, in order, at ``T0``."""
    room = Room("r", "e1", lesson=Lesson("r", parse_plan(PLAN)))
    for n, member in enumerate(people):
        apply(room, JoinRoom(member, f"s{n}"), T0)
    return room


def apply(room: Room, command: Any, now: int) -> Decision:
    """Decide ``command`` at ``now`` and apply the decision."""
    decision = room.decide(command, now)
    room.apply(decision)
    return decision


def act(room: Room, actor: Member, command: Any, now: int) -> list[Any]:
    """What ``actor``'s lesson command does at ``now``: its events."""
    return apply(room, LessonAction(actor, command, now), now).events
