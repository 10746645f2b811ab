"""A room's roster, kept grouped and sorted as people come and go.

Every non-recovered ``joined`` reply carries the whole roster: who is
present and who has gone away, by school and by class, each class sorted by
name. Grouping and sorting the room afresh for each join costs the room's
size per join, so a room of thousands filling up (the start of a linked
lesson, or everyone rejoining after a failover) would cost the square of
its size. :class:`Roster` instead keeps each class's two lists sorted as
people arrive and leave, and rebuilds the roster objects of a class only
when that class changed: a join costs its own class, not the room.

Encoding is kept the same way. :meth:`Roster.encoded` is the roster as
MessagePack or as JSON, made from each class's own encoding, which is made
again only when that class changed. A join asks for its connection's
format, and the ``joined`` frame embeds the bytes of the writer's reply as
they are, on the writer's node or, forwarded, on another.

The objects :meth:`Roster.snapshot` returns are shared between snapshots
and must not be changed; they are frozen structs whose lists are copies
that nothing here touches again.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import msgspec

from client_sdk.protocol import AwayMember, ClassRoster, Member, SchoolRoster

#: Where a person stands in their class's lists: by name, then user.
SortKey = tuple[str, str]


class _EncodedSchool(msgspec.Struct):
    """A :class:`SchoolRoster` whose classes are encoded: the same bytes."""

    school: str
    classes: list[msgspec.Raw]


_msgpack_encoder = msgspec.msgpack.Encoder()
_json_encoder = msgspec.json.Encoder()
_roster_decoder = msgspec.msgpack.Decoder(list[SchoolRoster])


def _encoder(json: bool) -> msgspec.msgpack.Encoder | msgspec.json.Encoder:
    return _json_encoder if json else _msgpack_encoder


def decode_roster(encoded: msgspec.Raw | bytes) -> list[SchoolRoster]:
    """The roster that :meth:`Roster.encoded` encoded."""
    roster: list[SchoolRoster] = _roster_decoder.decode(encoded)
    return roster


def _member_key(member: Member) -> SortKey:
    return (member.name, member.user)


def _away_key(away: AwayMember) -> SortKey:
    return (away.member.name, away.member.user)


@dataclass(slots=True)
class _Class:
    """One class's present and away lists, and its roster while unchanged."""

    present: list[Member] = field(default_factory=list)
    away: list[AwayMember] = field(default_factory=list)
    view: ClassRoster | None = None
    #: ``view`` as MessagePack (key False) and as JSON (True), once asked for.
    frames: dict[bool, msgspec.Raw] = field(default_factory=dict)


@dataclass(slots=True)
class _School:
    """One school's classes, and its roster while none of them changed."""

    classes: dict[str, _Class] = field(default_factory=dict)
    view: SchoolRoster | None = None


@dataclass(frozen=True, slots=True)
class _Place:
    """Where a user's entry is: which school and class, which list, what key."""

    school: str
    class_: str
    present: bool
    order: SortKey


class Roster:
    """Who is present and who has gone away, by school and class, sorted."""

    __slots__ = ("_encoded", "_places", "_schools", "_snapshot")

    def __init__(self) -> None:
        self._schools: dict[str, _School] = {}
        self._places: dict[str, _Place] = {}
        self._snapshot: list[SchoolRoster] | None = None
        #: The whole roster as MessagePack and as JSON, once asked for.
        self._encoded: dict[bool, bytes] = {}

    def __len__(self) -> int:
        """People on the roster, present or away."""
        return len(self._places)

    def place(self, user: str, present: Member | None, away: AwayMember | None) -> None:
        """Put ``user`` where they now are: present, away, or nowhere.

        ``present`` and ``away`` are what the room holds for ``user`` now;
        at most one of them is given. Whatever the roster held for ``user``
        before is replaced, so a member whose name or class changed moves.
        """
        if present is not None and away is not None:
            raise ValueError(f"{user} cannot be present and away at once")
        self._take_out(user)
        if present is not None:
            entry = self._touch(present.school, present.class_)
            bisect.insort(entry.present, present, key=_member_key)
            self._places[user] = _Place(
                present.school, present.class_, True, _member_key(present)
            )
        elif away is not None:
            member = away.member
            entry = self._touch(member.school, member.class_)
            bisect.insort(entry.away, away, key=_away_key)
            self._places[user] = _Place(
                member.school, member.class_, False, _away_key(away)
            )

    def snapshot(self) -> list[SchoolRoster]:
        """The roster: schools sorted, their classes sorted, each class by name."""
        if self._snapshot is None:
            self._snapshot = [
                self._school_view(name, self._schools[name])
                for name in sorted(self._schools)
            ]
        return list(self._snapshot)

    def encoded(self, json: bool = False) -> bytes:
        """:meth:`snapshot` as MessagePack (as JSON if ``json``).

        Made from the classes' own encodings, so only the classes that
        changed since the last call are encoded again.
        """
        encoded = self._encoded.get(json)
        if encoded is None:
            schools = [
                _EncodedSchool(
                    name,
                    [
                        self._class_frame(class_, held.classes[class_], json)
                        for class_ in sorted(held.classes)
                    ],
                )
                for name, held in sorted(self._schools.items())
            ]
            encoded = self._encoded[json] = _encoder(json).encode(schools)
        return encoded

    # Internals ---------------------------------------------------------------

    def _touch(self, school: str, class_: str) -> _Class:
        """The class's lists, made if new, its cached rosters dropped."""
        held = self._schools.get(school)
        if held is None:
            held = self._schools[school] = _School()
        entry = held.classes.get(class_)
        if entry is None:
            entry = held.classes[class_] = _Class()
        entry.view = None
        entry.frames.clear()
        held.view = None
        self._snapshot = None
        self._encoded.clear()
        return entry

    def _take_out(self, user: str) -> None:
        place = self._places.pop(user, None)
        if place is None:
            return
        entry = self._touch(place.school, place.class_)
        if place.present:
            index = bisect.bisect_left(entry.present, place.order, key=_member_key)
            del entry.present[index]
        else:
            index = bisect.bisect_left(entry.away, place.order, key=_away_key)
            del entry.away[index]
        if not entry.present and not entry.away:
            held = self._schools[place.school]
            del held.classes[place.class_]
            if not held.classes:
                del self._schools[place.school]

    def _school_view(self, name: str, held: _School) -> SchoolRoster:
        if held.view is None:
            held.view = SchoolRoster(
                school=name,
                classes=[
                    self._class_view(class_, held.classes[class_])
                    for class_ in sorted(held.classes)
                ],
            )
        return held.view

    @staticmethod
    def _class_view(name: str, entry: _Class) -> ClassRoster:
        if entry.view is None:
            entry.view = ClassRoster(
                class_=name, members=list(entry.present), away=list(entry.away)
            )
        return entry.view

    @classmethod
    def _class_frame(cls, name: str, entry: _Class, json: bool) -> msgspec.Raw:
        frame = entry.frames.get(json)
        if frame is None:
            view = cls._class_view(name, entry)
            frame = entry.frames[json] = msgspec.Raw(_encoder(json).encode(view))
        return frame
