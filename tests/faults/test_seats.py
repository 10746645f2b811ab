"""Seat limits hold across nodes: one writer counts the seats of a room.

Students join one lesson through nodes A and B at once. The room's single
writer decides every join, wherever it came in, so the room never holds
more students than its ``seats``; the others are refused with
``room_full`` until someone leaves.
"""

from __future__ import annotations

import asyncio

import pytest

from client_sdk import CommandError
from client_sdk.protocol import ErrorCode

from .conftest import Cluster, Crowd, Peer, lesson_on

pytestmark = pytest.mark.redis

SEATS = 5
STUDENTS = 12


async def test_seats_hold_when_students_join_through_two_nodes(
    cluster: Cluster, crowd: Crowd
) -> None:
    """Of students joining at once through A and B, exactly ``seats`` get in."""
    node_a, node_b = cluster.nodes
    urls = [node_a.ws_url(), node_b.ws_url()]
    lesson = await lesson_on(node_a, STUDENTS, seats=SEATS)
    room = lesson.room

    outcomes = await asyncio.gather(
        *(
            crowd.enter(user, urls[index % 2], token, room)
            for index, (user, token) in enumerate(lesson.students)
        ),
        return_exceptions=True,
    )
    seated = [o for o in outcomes if isinstance(o, Peer)]
    refused = [o for o in outcomes if not isinstance(o, Peer)]
    assert len(seated) == SEATS, refused
    assert all(
        isinstance(r, CommandError) and r.code is ErrorCode.ROOM_FULL for r in refused
    ), refused

    # Staff take no seat: the host gets in through either node.
    host = await crowd.enter("host", urls[1], lesson.host_token, room)
    assert host.client.hello is not None

    # A seated student's second connection, through the other node, is
    # the same person and takes no second seat.
    first = seated[0]
    first_index = [user for user, _ in lesson.students].index(first.name)
    token = lesson.students[first_index][1]
    again = await crowd.enter(first.name, urls[(first_index + 1) % 2], token, room)
    assert again.client.hello is not None

    # Once a seated student leaves for good, one more gets in.
    leaver = seated[-1]
    await leaver.client.leave(room)
    waiting = next(
        (user, token)
        for user, token in lesson.students
        if user not in {peer.name for peer in seated}
    )
    late = await crowd.enter(waiting[0], urls[0], waiting[1], room)
    assert late.client.hello is not None
    extra = next(
        (user, token)
        for user, token in lesson.students
        if user not in {peer.name for peer in [*seated, late]}
    )
    with pytest.raises(CommandError) as full:
        await crowd.enter(extra[0], urls[1], extra[1], room)
    assert full.value.code is ErrorCode.ROOM_FULL
