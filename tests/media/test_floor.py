"""The speaker list read from a lesson room's turns."""

from __future__ import annotations

from client_sdk.protocol import Member, Role, Turn
from media.floor import speakers
from rooms.turns import Turns


def _member(user: str, role: Role) -> Member:
    return Member(user=user, name=user, role=role, school="s", class_="8A")


MEMBERS = {
    "t2": _member("t2", Role.CO_TEACHER),
    "t1": _member("t1", Role.TEACHER),
    "s1": _member("s1", Role.STUDENT),
    "s2": _member("s2", Role.STUDENT),
}


def test_host_then_holder_then_teachers() -> None:
    """The host comes first, the floor holder second, other teachers after."""
    turns = Turns(floor=Turn(user="s2", name="s2", school="s", started_at=0))
    assert speakers(turns, MEMBERS, host="t1") == ["t1", "s2", "t2"]


def test_without_floor_only_teachers() -> None:
    """Nobody holding the floor leaves the teachers, sorted."""
    assert speakers(Turns(), MEMBERS) == ["t1", "t2"]


def test_absent_or_muted_holder_is_not_heard() -> None:
    """A holder who left, or is muted, is not a speaker."""
    turns = Turns(floor=Turn(user="s9", name="s9", school="s", started_at=0))
    assert speakers(turns, MEMBERS, host="t1") == ["t1", "t2"]
    muted = Turns(
        floor=Turn(user="s1", name="s1", school="s", started_at=0), muted={"s1"}
    )
    assert speakers(muted, MEMBERS) == ["t1", "t2"]
