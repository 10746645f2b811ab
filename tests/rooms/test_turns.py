"""Speaking turns in a lesson room: queue policies, the floor, drills, mutes."""

from __future__ import annotations

import pytest

from client_sdk.protocol import (
    DrillEnded,
    DrillStarted,
    ErrorCode,
    FloorGranted,
    FloorReleased,
    GrantFloor,
    HandQueue,
    LeaveReason,
    LowerHand,
    Mute,
    QueuePolicy,
    RaiseHand,
    ReleaseReason,
    RevokeFloor,
    SetQueuePolicy,
    StartDrill,
    StopDrill,
)
from rooms.errors import Refused
from rooms.lesson import Lesson
from rooms.plan import parse_plan
from rooms.room import LeaveRoom, Room, Tick
from tests.rooms.linked import CO_A, CO_B, HOST, PLAN, T0, act, apply, kid, linked_room


@pytest.fixture
def room() -> Room:
    people = [HOST, CO_A, CO_B] + [kid(u) for u in ("a1", "a2", "a3", "b1", "b2", "c1")]
    return linked_room(people)


def raise_hands(room: Room, users: list[str], start: int = T0) -> None:
    for n, user in enumerate(users):
        act(room, kid(user), RaiseHand(id=f"h-{user}", room="r"), start + n)


def queue_of(room: Room) -> list[str]:
    assert room.turns is not None
    return [entry.user for entry in room.turns.queue()]


def test_queue_event_carries_the_whole_order(room: Room) -> None:
    """Each change sends the full ordered queue, the same for everyone."""
    raise_hands(room, ["a1", "b1"])
    events = act(room, kid("c1"), RaiseHand(id="h", room="r"), T0 + 10)

    (event,) = events
    assert isinstance(event, HandQueue)
    assert [e.user for e in event.queue] == ["a1", "b1", "c1"]
    assert [e.raised_at for e in event.queue] == [T0, T0 + 1, T0 + 10]
    assert act(room, kid("c1"), RaiseHand(id="h2", room="r"), T0 + 11) == []


def test_round_robin_alternates_schools(room: Room) -> None:
    """Round robin puts the least heard school first, then alternates."""
    raise_hands(room, ["a1", "a2", "a3", "b1", "b2", "c1"])
    act(
        room, HOST, SetQueuePolicy(id="p", room="r", policy=QueuePolicy.ROUND_ROBIN), T0
    )

    assert queue_of(room) == ["a1", "b1", "c1", "a2", "b2", "a3"]

    # School A has spoken once: B and C now come before A's next hand.
    act(room, HOST, GrantFloor(id="g", room="r", user="a1"), T0 + 100)
    assert queue_of(room) == ["b1", "c1", "a2", "b2", "a3"]


def test_least_time_puts_the_quietest_first(room: Room) -> None:
    """Least speaking time orders by time spoken so far."""
    act(room, HOST, GrantFloor(id="g1", room="r", user="a1"), T0)
    act(room, HOST, RevokeFloor(id="r1", room="r"), T0 + 30_000)
    act(room, HOST, GrantFloor(id="g2", room="r", user="b1"), T0 + 30_000)
    act(room, HOST, RevokeFloor(id="r2", room="r"), T0 + 35_000)
    raise_hands(room, ["a1", "b1", "c1"], T0 + 40_000)

    act(room, HOST, SetQueuePolicy(id="p", room="r", policy=QueuePolicy.LEAST_TIME), T0)

    assert queue_of(room) == ["c1", "b1", "a1"]


def test_grant_next_and_time_limit_ends_on_the_server_clock(room: Room) -> None:
    """A timed turn ends at its ends_at, not a moment before."""
    raise_hands(room, ["b1", "a1"])
    events = act(room, HOST, GrantFloor(id="g", room="r", seconds=30), T0 + 5)

    granted = next(e for e in events if isinstance(e, FloorGranted))
    assert granted.turn.user == "b1"
    assert granted.turn.ends_at == T0 + 5 + 30_000
    assert queue_of(room) == ["a1"]
    assert room.due() == T0 + 5 + 30_000
    assert apply(room, Tick(), T0 + 30_004).events == []

    (released,) = apply(room, Tick(), T0 + 30_005).events

    assert isinstance(released, FloorReleased)
    assert released.reason is ReleaseReason.EXPIRED
    assert released.spoke_ms == 30_000
    assert room.turns is not None
    assert room.turns.holder() is None
    assert room.turns.school_ms["B"] == 30_000


def test_co_teacher_grants_only_their_own_school(room: Room) -> None:
    """A co-teacher cannot give the floor to another school's student."""
    raise_hands(room, ["b1", "a1"])

    with pytest.raises(Refused) as refused:
        act(room, CO_A, GrantFloor(id="g", room="r", user="b1"), T0)
    assert refused.value.code is ErrorCode.FORBIDDEN

    # "Next" for a co-teacher is the next hand of their own school.
    events = act(room, CO_A, GrantFloor(id="g2", room="r"), T0)
    granted = next(e for e in events if isinstance(e, FloorGranted))
    assert granted.turn.user == "a1"

    with pytest.raises(Refused):
        act(room, CO_B, RevokeFloor(id="r", room="r"), T0)
    act(room, CO_A, RevokeFloor(id="r2", room="r"), T0 + 1000)


def test_students_cannot_grant_and_teachers_have_no_hands(room: Room) -> None:
    """Only students raise hands; only teachers hand out the floor."""
    with pytest.raises(Refused):
        act(room, kid("a1"), GrantFloor(id="g", room="r", user="a2"), T0)
    with pytest.raises(Refused):
        act(room, HOST, RaiseHand(id="h", room="r"), T0)
    with pytest.raises(Refused):
        act(room, kid("a1"), LowerHand(id="l", room="r", user="b1"), T0)


def test_muted_student_cannot_raise_or_hold_the_floor(room: Room) -> None:
    """Muting takes the floor and the hand away and blocks both."""
    raise_hands(room, ["a2"])
    act(room, HOST, GrantFloor(id="g", room="r", user="a1"), T0)

    events = act(room, CO_A, Mute(id="m", room="r", user="a1"), T0 + 500)
    act(room, CO_A, Mute(id="m2", room="r", user="a2"), T0 + 600)

    assert any(isinstance(e, FloorReleased) for e in events)
    assert queue_of(room) == []
    with pytest.raises(Refused):
        act(room, kid("a1"), RaiseHand(id="h", room="r"), T0 + 700)
    with pytest.raises(Refused):
        act(room, HOST, GrantFloor(id="g2", room="r", user="a1"), T0 + 800)
    with pytest.raises(Refused):
        act(room, CO_A, Mute(id="m3", room="r", user="b1"), T0 + 900)


def test_holder_leaving_ends_the_turn(room: Room) -> None:
    """When the floor holder leaves, the turn ends with reason left."""
    act(room, HOST, GrantFloor(id="g", room="r", user="c1"), T0)

    events = apply(
        room, LeaveRoom("c1", "s8", LeaveReason.DISCONNECTED), T0 + 2000
    ).events

    released = [e for e in events if isinstance(e, FloorReleased)]
    assert released[0].reason is ReleaseReason.LEFT
    assert [e.offset for e in events] == list(
        range(events[0].offset, events[0].offset + len(events))
    )


def test_drill_gives_timed_turns_in_order_with_pauses(room: Room) -> None:
    """A drill calls each student for its seconds, pausing between turns."""
    events = act(
        room,
        HOST,
        StartDrill(
            id="d",
            room="r",
            prompt="Describe your breakfast",
            seconds=20,
            pause_seconds=3,
            users=["b1", "a1", "c1"],
        ),
        T0,
    )
    assert isinstance(events[0], DrillStarted)
    first = events[1]
    assert isinstance(first, FloorGranted)
    assert (first.turn.user, first.turn.ends_at) == ("b1", T0 + 20_000)
    assert first.turn.prompt == "Describe your breakfast"

    # b1's time runs out; after a 3 s pause a1 speaks.
    assert isinstance(apply(room, Tick(), T0 + 20_000).events[0], FloorReleased)
    assert room.due() == T0 + 23_000
    assert apply(room, Tick(), T0 + 22_999).events == []
    second = apply(room, Tick(), T0 + 23_000).events[0]
    assert isinstance(second, FloorGranted)
    assert second.turn.user == "a1"

    # c1 leaves before their turn: the drill ends after a1.
    apply(room, LeaveRoom("c1", "s8", LeaveReason.LEFT), T0 + 24_000)
    apply(room, Tick(), T0 + 43_000)
    (ended,) = apply(room, Tick(), T0 + 46_000).events
    assert isinstance(ended, DrillEnded)
    assert room.turns is not None
    assert room.turns.spoken_ms["a1"] == 20_000


def test_stop_drill_ends_the_current_turn(room: Room) -> None:
    """Stopping a drill releases the floor and ends the drill."""
    raise_hands(room, ["a1", "b1"])
    act(room, HOST, StartDrill(id="d", room="r", prompt="Hi", seconds=10), T0)

    assert queue_of(room) == []
    events = act(room, HOST, StopDrill(id="s", room="r"), T0 + 4000)

    assert [type(e) for e in events] == [FloorReleased, DrillEnded]
    assert events[0].reason is ReleaseReason.DRILL_ENDED
    assert events[0].spoke_ms == 4000


def test_replay_rebuilds_queue_floor_and_times(room: Room) -> None:
    """A room rebuilt from its events has the same queue, floor and totals."""
    history = []
    for n, user in enumerate(["a1", "b1", "c1"]):
        history += act(room, kid(user), RaiseHand(id=f"h{n}", room="r"), T0 + n)
    history += act(room, HOST, GrantFloor(id="g", room="r", seconds=60), T0 + 10)
    history += act(room, HOST, RevokeFloor(id="r", room="r"), T0 + 5010)
    history += act(room, HOST, GrantFloor(id="g2", room="r"), T0 + 6000)

    rebuilt = Room("r", "e1", lesson=Lesson("r", parse_plan(PLAN)))
    for event in history:
        rebuilt.replay(event)

    assert rebuilt.turns is not None
    assert room.turns is not None
    assert rebuilt.turns.queue() == room.turns.queue()
    assert rebuilt.turns.floor == room.turns.floor
    assert rebuilt.turns.spoken_ms == room.turns.spoken_ms == {"a1": 5000}


def test_report_counts_speaking_time_by_student_and_school(room: Room) -> None:
    """The lesson report lists turns and time spoken per student and school."""
    from rooms.report import build_report

    act(room, HOST, GrantFloor(id="g1", room="r", user="a1"), T0)
    act(room, HOST, GrantFloor(id="g2", room="r", user="b1"), T0 + 4000)
    act(room, HOST, GrantFloor(id="g3", room="r", user="a2"), T0 + 10_000)
    act(room, HOST, RevokeFloor(id="r", room="r"), T0 + 11_000)

    report = build_report(room)

    assert [(r.user, r.turns, r.spoke_ms) for r in report.speaking] == [
        ("b1", 1, 6000),
        ("a1", 1, 4000),
        ("a2", 1, 1000),
    ]
    assert [(r.school, r.turns, r.spoke_ms) for r in report.speaking_by_school] == [
        ("B", 1, 6000),
        ("A", 2, 5000),
    ]
