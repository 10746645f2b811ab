"""RoomCursor: what the client does with each event and each joined reply."""

from __future__ import annotations

from client_sdk.cursor import JoinOutcome, RoomCursor, Verdict
from client_sdk.protocol import Joined, LeaveReason, MemberLeft

ROOM = "lesson-1"


def event(offset: int, epoch: str = "e1") -> MemberLeft:
    """A room event at ``offset`` of ``epoch``."""
    return MemberLeft(
        room=ROOM,
        offset=offset,
        epoch=epoch,
        at=0,
        user="s1",
        reason=LeaveReason.LEFT,
    )


def joined(offset: int, epoch: str = "e1", *, recovered: bool = False) -> Joined:
    """A joined reply at ``offset`` of ``epoch``."""
    return Joined(
        id="j1",
        room=ROOM,
        epoch=epoch,
        offset=offset,
        recovered=recovered,
        roster=None if recovered else [],
    )


def test_events_wait_for_the_joined_reply() -> None:
    """Until the join is answered, events are held back for its replay."""
    cursor = RoomCursor(ROOM)

    assert cursor.check(event(1)) is Verdict.SYNCING
    assert cursor.on_joined(joined(3)) is JoinOutcome.FRESH
    assert cursor.resume_point == (3, "e1")


def test_next_offset_is_delivered_and_older_ones_dropped() -> None:
    """Offset last+1 is delivered; anything at or below last is a duplicate."""
    cursor = RoomCursor(ROOM)
    cursor.on_joined(joined(3))

    assert cursor.check(event(4)) is Verdict.DELIVER
    assert cursor.check(event(4)) is Verdict.DUPLICATE
    assert cursor.check(event(2)) is Verdict.DUPLICATE
    assert cursor.offset == 4


def test_skipped_offset_or_new_epoch_is_a_gap() -> None:
    """A skipped offset or another epoch asks for a rejoin, without moving on."""
    cursor = RoomCursor(ROOM)
    cursor.on_joined(joined(3))

    assert cursor.check(event(5)) is Verdict.GAP
    assert cursor.check(event(4, "e2")) is Verdict.GAP
    assert cursor.offset == 3


def test_recovered_join_keeps_the_offset() -> None:
    """A recovered join keeps the last offset seen, so the replay is deduplicated."""
    cursor = RoomCursor(ROOM, epoch="e1", offset=5, joined=True)

    assert cursor.on_joined(joined(9, recovered=True)) is JoinOutcome.RESUMED
    assert cursor.check(event(5)) is Verdict.DUPLICATE
    assert cursor.check(event(6)) is Verdict.DELIVER


def test_unrecovered_join_resets_the_room() -> None:
    """A join that could not recover moves the cursor to the new epoch's head."""
    cursor = RoomCursor(ROOM, epoch="e1", offset=5, joined=True)

    assert cursor.on_joined(joined(2, "e2")) is JoinOutcome.RESET
    assert cursor.resume_point == (2, "e2")
    assert cursor.check(event(3, "e2")) is Verdict.DELIVER
