"""Who is heard, read from a lesson room's speaking turns.

The room state in :mod:`rooms.turns` decides who holds the floor; this module
turns it into the ordered speaker list :meth:`media.relay.MediaRoom.set_speakers`
takes. Teachers are always heard (``rooms.turns`` refuses to grant them the
floor for that reason); a student only while holding the floor.
"""

from __future__ import annotations

from collections.abc import Mapping

from client_sdk.protocol import Member, Role
from rooms.turns import Turns

#: Roles forwarded at all times.
ALWAYS_HEARD = (Role.TEACHER, Role.CO_TEACHER)


def speakers(
    turns: Turns, members: Mapping[str, Member], host: str | None = None
) -> list[str]:
    """The speakers in order of priority: host, floor holder, other teachers.

    The order matters to listeners with fewer slots than speakers: with one
    slot a student hears the host; with two, the host and the floor holder.
    Members absent from ``members`` are left out, and so is a muted holder.
    """
    order: list[str] = []
    if host is not None and host in members:
        order.append(host)
    holder = turns.holder()
    if holder is not None and holder in members and holder not in turns.muted:
        order.append(holder)
    teachers = sorted(
        user for user, member in members.items() if member.role in ALWAYS_HEARD
    )
    order += teachers
    return list(dict.fromkeys(order))
