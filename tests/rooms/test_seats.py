"""Seat limits of a room, in the state machine (the embedded backend's path)."""

from __future__ import annotations

import pytest

from client_sdk.protocol import ErrorCode, LeaveReason, Member, Role
from rooms.errors import LophocError, Refused
from rooms.plan import parse_plan
from rooms.room import JoinRoom, LeaveRoom, Room

NOW = 1_800_000_000_000


def person(user: str, role: Role = Role.STUDENT) -> Member:
    return Member(user=user, name=user.upper(), role=role, school="A", class_="6A")


def enter(room: Room, who: Member, session: str) -> None:
    room.apply(room.decide(JoinRoom(who, session), NOW))


def test_a_full_room_refuses_another_student_with_room_full() -> None:
    """Past the seats, a new student's join is refused with ``room_full``."""
    room = Room("r", "e1")
    room.seats = 2
    enter(room, person("a"), "s1")
    enter(room, person("b"), "s2")
    with pytest.raises(Refused) as refused:
        room.decide(JoinRoom(person("c"), "s3"), NOW)
    assert refused.value.code is ErrorCode.ROOM_FULL
    assert refused.value.field == "room"


def test_staff_and_second_connections_take_no_seat() -> None:
    """A full room still lets teachers in, and a seated student's other tab."""
    room = Room("r", "e1")
    room.seats = 1
    enter(room, person("a"), "s1")
    enter(room, person("t", Role.TEACHER), "s2")
    enter(room, person("a"), "s3")
    assert set(room.members) == {"a", "t"}
    assert room.sessions["a"] == {"s1", "s3"}


def test_a_seat_frees_when_its_student_leaves() -> None:
    """Once a seated student has left, the next one gets the seat."""
    room = Room("r", "e1")
    room.seats = 1
    enter(room, person("a"), "s1")
    room.apply(room.decide(LeaveRoom("a", "s1", LeaveReason.LEFT), NOW))
    enter(room, person("b"), "s2")
    assert set(room.members) == {"b"}


def test_a_lesson_file_sets_its_seats_and_refuses_zero() -> None:
    """``seats`` in a lesson file must be a positive count."""
    text = "title: T\nhost: {user: h}\nclasses: [{school: S, class: 9A}]\n"
    assert parse_plan(text + "seats: 30\n").seats == 30
    assert parse_plan(text).seats is None
    with pytest.raises(LophocError, match="seats"):
        parse_plan(text + "seats: 0\n")
