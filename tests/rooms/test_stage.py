"""Putting a linked class on stage: only the host, only a linked class."""

from __future__ import annotations

import pytest

from client_sdk.protocol import (
    ErrorCode,
    LinkedClass,
    Member,
    Role,
    RoomEvent,
    SetStage,
    StageChanged,
)
from rooms.errors import Refused
from rooms.lesson import Lesson
from rooms.plan import parse_plan
from rooms.room import Room
from tests.rooms.linked import CO_A, HOST, PLAN, T0, act, linked_room

DEVICE_B = Member(user="dev-b", name="7B", role=Role.CLASSROOM, school="B", class_="7B")


@pytest.fixture
def room() -> Room:
    """The linked lesson's room with the host, a co-teacher and a device in it."""
    return linked_room([HOST, CO_A, DEVICE_B])


def stage(
    room: Room, actor: Member, now: int = T0, **fields: str | None
) -> list[RoomEvent]:
    """The events of ``actor`` setting the stage to ``fields``."""
    return act(room, actor, SetStage(id=f"st-{now}", room="r", **fields), now)


def test_host_puts_a_class_on_stage_and_takes_it_off(room: Room) -> None:
    """The host's stage command becomes a numbered event and the snapshot has it."""
    [on] = stage(room, HOST, school="B", class_="7B")
    assert isinstance(on, StageChanged)
    assert on.offset == room.offset
    assert on.stage == LinkedClass(school="B", class_="7B", co_teacher="co-b")
    assert room.lesson is not None
    assert room.lesson.view().stage == on.stage

    [off] = stage(room, HOST, T0 + 1)
    assert isinstance(off, StageChanged)
    assert off.stage is None
    assert room.lesson.view().stage is None


def test_only_the_host_sets_the_stage(room: Room) -> None:
    """A co-teacher or a classroom device is refused, naming the room."""
    for actor in (CO_A, DEVICE_B):
        with pytest.raises(Refused) as refused:
            stage(room, actor, school="B")
        assert refused.value.code is ErrorCode.FORBIDDEN


def test_stage_must_be_a_linked_class(room: Room) -> None:
    """An unknown class, a class without school and a repeat are refused."""
    with pytest.raises(Refused) as unknown:
        stage(room, HOST, school="Z", class_="9Z")
    assert unknown.value.code is ErrorCode.INVALID
    assert "Z" in str(unknown.value)
    with pytest.raises(Refused):
        stage(room, HOST, class_="7B")
    stage(room, HOST, school="A")
    with pytest.raises(Refused):
        stage(room, HOST, T0 + 1, school="A", class_="7A")


def test_replay_rebuilds_the_stage(room: Room) -> None:
    """A room rebuilt from its events has the same class on stage."""
    [event] = stage(room, HOST, school="B")
    assert isinstance(event, StageChanged)
    rebuilt = Room("r", "e1", lesson=Lesson("r", parse_plan(PLAN)))
    rebuilt.replay(event)
    assert rebuilt.lesson is not None
    assert rebuilt.lesson.stage == event.stage
