"""The roster a joiner receives, kept as people come and go."""

from __future__ import annotations

import random

import msgspec
import pytest

from client_sdk.protocol import (
    AwayMember,
    ClassRoster,
    Departure,
    Joined,
    LeaveReason,
    Member,
    MemberJoined,
    MemberLeft,
    PresenceChanged,
    Role,
    RoomEvent,
    SchoolRoster,
)
from rooms.room import Room
from rooms.roster import Roster, decode_roster
from server.session import JoinedFrame

EPOCH = "e1"


def grouped(room: Room) -> list[SchoolRoster]:
    """The roster by its definition: the room's people grouped, then sorted."""
    here: dict[str, dict[str, list[Member]]] = {}
    gone: dict[str, dict[str, list[AwayMember]]] = {}
    for member in room.members.values():
        here.setdefault(member.school, {}).setdefault(member.class_, []).append(member)
    for away in room.away.values():
        school, class_ = away.member.school, away.member.class_
        gone.setdefault(school, {}).setdefault(class_, []).append(away)
        here.setdefault(school, {}).setdefault(class_, [])
    return [
        SchoolRoster(
            school=school,
            classes=[
                ClassRoster(
                    class_=class_,
                    members=sorted(people, key=lambda m: (m.name, m.user)),
                    away=sorted(
                        gone.get(school, {}).get(class_, []),
                        key=lambda a: (a.member.name, a.member.user),
                    ),
                )
                for class_, people in sorted(classes.items())
            ],
        )
        for school, classes in sorted(here.items())
    ]


def person(user: str, name: str, school: str, class_: str) -> Member:
    return Member(user=user, name=name, role=Role.STUDENT, school=school, class_=class_)


class History:
    """Events for one room, numbered as its writer would number them."""

    def __init__(self, room: Room) -> None:
        self.room = room

    def play(self, event: RoomEvent) -> None:
        self.room.replay(event)

    def joined(self, member: Member) -> None:
        offset = self.room.offset + 1
        self.play(MemberJoined("r", offset, EPOCH, offset * 10, member=member))

    def left(self, user: str, reason: LeaveReason) -> None:
        offset = self.room.offset + 1
        self.play(MemberLeft("r", offset, EPOCH, offset * 10, user=user, reason=reason))

    def presence(self, joined: list[Member], left: list[Departure]) -> None:
        offset = self.room.offset + 1
        self.play(
            PresenceChanged("r", offset, EPOCH, offset * 10, joined=joined, left=left)
        )


def test_the_roster_groups_by_school_and_class_sorted_by_name() -> None:
    """Schools, then classes, then names; away people apart, with why."""
    room = Room("r", EPOCH)
    history = History(room)
    history.joined(person("u3", "Cam", "B", "7A"))
    history.joined(person("u1", "Binh", "A", "6B"))
    history.joined(person("u2", "An", "A", "6B"))
    history.joined(person("u4", "Dung", "A", "6A"))
    history.left("u4", LeaveReason.DISCONNECTED)

    assert room.roster() == [
        SchoolRoster(
            school="A",
            classes=[
                ClassRoster(
                    class_="6A",
                    away=[
                        AwayMember(
                            person("u4", "Dung", "A", "6A"),
                            LeaveReason.DISCONNECTED,
                            50,
                        )
                    ],
                ),
                ClassRoster(
                    class_="6B",
                    members=[
                        person("u2", "An", "A", "6B"),
                        person("u1", "Binh", "A", "6B"),
                    ],
                ),
            ],
        ),
        SchoolRoster(
            school="B",
            classes=[
                ClassRoster(class_="7A", members=[person("u3", "Cam", "B", "7A")])
            ],
        ),
    ]


def test_a_snapshot_already_given_out_does_not_change() -> None:
    """A joiner's roster stays what it was when later people arrive."""
    room = Room("r", EPOCH)
    history = History(room)
    history.joined(person("u1", "An", "A", "6A"))
    first = room.roster()
    history.joined(person("u2", "Binh", "A", "6A"))
    history.joined(person("u3", "Cam", "B", "6A"))

    assert first == [
        SchoolRoster(
            school="A",
            classes=[ClassRoster(class_="6A", members=[person("u1", "An", "A", "6A")])],
        )
    ]
    assert [len(c.members) for s in room.roster() for c in s.classes] == [2, 1]


@pytest.mark.parametrize("seed", range(8))
def test_the_roster_follows_any_history(seed: int) -> None:
    """Arrivals, departures for every reason, returns and renames, in batches
    and one by one: after every event the roster is the room regrouped."""
    rng = random.Random(seed)
    room = Room("r", EPOCH)
    history = History(room)
    users = [f"u{n:02d}" for n in range(40)]
    names = ["An", "Binh", "Cam", "Dung", "Em", "An"]
    schools = ["A", "B", "C"]
    classes = ["6A", "6B", "7A"]
    reasons = list(LeaveReason)

    def someone(user: str) -> Member:
        # Names repeat, and a returning user may come back renamed or
        # moved to another class or school.
        return person(user, rng.choice(names), rng.choice(schools), rng.choice(classes))

    for _ in range(300):
        step = rng.random()
        if step < 0.45:
            history.joined(someone(rng.choice(users)))
        elif step < 0.8:
            history.left(rng.choice(users), rng.choice(reasons))
        else:
            arriving = {u: someone(u) for u in rng.sample(users, rng.randint(0, 6))}
            leaving = [
                Departure(u, rng.choice(reasons))
                for u in rng.sample(users, rng.randint(0, 6))
                if u not in arriving
            ]
            history.presence(list(arriving.values()), leaving)
        expected = grouped(room)
        assert room.roster() == expected
        # Made from cached classes, byte for byte what encoding it whole
        # makes, in both subprotocols.
        assert room.encoded_roster() == msgspec.msgpack.encode(expected)
        assert room.encoded_roster(json=True) == msgspec.json.encode(expected)
    # The history reached both lists.
    assert room.members
    assert room.away


def test_someone_cannot_be_present_and_away_at_once() -> None:
    member = person("u1", "An", "A", "6A")
    with pytest.raises(ValueError, match="u1 cannot be present and away"):
        Roster().place("u1", member, AwayMember(member, LeaveReason.LEFT, 1))


def test_the_joined_frame_embeds_the_encoded_roster_as_joined_would() -> None:
    """A client decodes the server's joined frame as the protocol's Joined."""
    room = Room("r", EPOCH)
    history = History(room)
    history.joined(person("u1", "An", "A", "6A"))
    history.left("u1", LeaveReason.DISCONNECTED)
    history.joined(person("u2", "Binh", "B", "7A"))
    encoded = room.encoded_roster()
    head = ("j1", "r", EPOCH, 3)

    joined = Joined(*head, recovered=False, roster=room.roster())
    frame = JoinedFrame(*head, recovered=False, roster=msgspec.Raw(encoded))
    assert msgspec.msgpack.encode(frame) == msgspec.msgpack.encode(joined)
    as_json = room.encoded_roster(json=True)
    frame = JoinedFrame(*head, recovered=False, roster=msgspec.Raw(as_json))
    assert msgspec.json.encode(frame) == msgspec.json.encode(joined)
    # A recovered join carries no roster at all.
    assert msgspec.msgpack.encode(
        JoinedFrame(*head, recovered=True)
    ) == msgspec.msgpack.encode(Joined(*head, recovered=True))
    assert decode_roster(encoded) == room.roster()
