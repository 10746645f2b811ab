"""Random runs of joins, broadcasts, drops and resumes against two real nodes.

Hypothesis drives a :class:`~hypothesis.stateful.RuleBasedStateMachine`
over two ``lophoc serve`` processes sharing one Redis as broker and store.
Teachers enter one of three rooms through either node, broadcast, lose
their connection and come back (to either node) with the last offset they
read, or with a cursor the server cannot resume from. A node may also be
restarted, which closes its connections. After every step each connected
client reads what has arrived, and two things must hold:

* every event it receives belongs to the room it joined, and
* its offsets go up by exactly one, across reconnects, unless the server
  said ``recovered: false`` and sent a fresh roster, which starts it over.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pytest
from hypothesis import HealthCheck, Phase, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from client_sdk.protocol import (
    MSGPACK_SUBPROTOCOL,
    Ack,
    Broadcast,
    CloseCode,
    Error,
    ErrorCode,
    Event,
    Hello,
    Join,
    Joined,
    Role,
)
from tests.helpers import RedisProcess
from tests.server.conftest import Client, ServerProcess

from .conftest import Cluster

pytestmark = [pytest.mark.redis, pytest.mark.slow]

T = TypeVar("T")

ROOMS = 3
PEOPLE = 6
#: How long a client may take to read up to the newest offset of its room.
SETTLE = 10.0
#: Close codes with which a node may end a connection in these runs.
SERVER_CLOSES = {
    CloseCode.GOING_AWAY,
    CloseCode.SERVICE_RESTART,
    CloseCode.TRY_AGAIN_LATER,
    CloseCode.RESYNC,
}
#: Answers a broadcast may get while its room moves to another node.
RETRIED = {ErrorCode.UNAVAILABLE, ErrorCode.INTERNAL}

#: No shrinking: with real processes it takes minutes, and a failing run of
#: 20 steps prints every step anyway.
RUNS = settings(
    max_examples=15,
    stateful_step_count=20,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow],
)


def pending(client: Client) -> bool:
    """Whether a room event arrived that the test has not read yet."""
    return any(isinstance(message, Event) for message in client.inbox)


@dataclass
class Person:
    """A teacher in one room, and the cursor of what they have read there."""

    user: str
    room: str
    client: Client | None = None
    epoch: str = ""
    #: The offset of the last event read, or of the snapshot it started from.
    last: int = -1
    #: How often the server answered a join with a fresh snapshot.
    resets: int = 0
    #: Every offset read, in order, with None where a snapshot reset it.
    offsets: list[int | None] = field(default_factory=list)


class RoomMachine(RuleBasedStateMachine):
    """Clients of two nodes, checked for leaks between rooms and gaps."""

    #: The running nodes, set by the test before the runs start.
    nodes: ClassVar[list[ServerProcess]] = []

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        prefix = f"sm-{secrets.token_hex(3)}"
        self.rooms = [f"{prefix}-{index}" for index in range(ROOMS)]
        self.people: list[Person] = []
        #: The highest offset known to exist, per room.
        self.high: dict[str, int] = dict.fromkeys(self.rooms, -1)
        self.restarted = False

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work`` on this machine's event loop."""
        return self.loop.run_until_complete(work)

    def connected(self) -> list[Person]:
        """People whose connection is open."""
        return [person for person in self.people if person.client is not None]

    def away(self) -> list[Person]:
        """People who were in a room and have no connection now."""
        return [person for person in self.people if person.client is None]

    # Connections -------------------------------------------------------------

    async def open(self, person: Person, node: ServerProcess) -> Client:
        """Connect ``person`` to ``node``; the client, its hello read."""
        token = node.token(person.user, Role.TEACHER, person.room)
        try:
            ws = await ws_connect(
                node.ws_url(person.room, token),
                subprotocols=[Subprotocol(MSGPACK_SUBPROTOCOL)],
                open_timeout=SETTLE,
                close_timeout=2,
            )
        except OSError as exc:
            raise AssertionError(
                f"{node} (running: {node.running}) refused {person.user}: {exc}\n"
                f"{node.log_tail(30)}"
            ) from exc
        client = Client(ws)
        hello = await client.recv(SETTLE)
        assert isinstance(hello, Hello), hello
        return client

    async def join(
        self, person: Person, node: ServerProcess, last: int | None, epoch: str | None
    ) -> Joined:
        """Connect and join ``person``'s room with the cursor given."""
        client = await self.open(person, node)
        command = Join(
            id=secrets.token_hex(6), room=person.room, last_offset=last, epoch=epoch
        )
        joined = await client.expect(Joined, command, within=SETTLE)
        assert joined.room == person.room, joined
        person.client = client
        if joined.recovered:
            assert joined.roster is None, joined
            assert joined.epoch == person.epoch, joined
            assert last == person.last, joined
        else:
            assert joined.roster is not None, "a reset without a fresh roster"
            person.epoch, person.last = joined.epoch, joined.offset
            person.resets += 1
            person.offsets.append(None)
        event("resumed" if joined.recovered else "started from a snapshot")
        self.high[person.room] = max(self.high[person.room], joined.offset)
        return joined

    async def read(self, person: Person, until: int) -> None:
        """Read ``person``'s events up to offset ``until``, checking each."""
        client = person.client
        assert client is not None
        try:
            async with asyncio.timeout(SETTLE):
                while person.last < until or pending(client):
                    self.check(person, await client.event(SETTLE))
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else None
            assert code in SERVER_CLOSES, f"{person.user} closed with {code}"
            event(f"closed by the server with {code}")
            await self.forget(person)
        except TimeoutError:
            raise AssertionError(
                f"{person.user} in {person.room} read up to {person.last}, "
                f"not {until}, within {SETTLE} s"
            ) from None

    def check(self, person: Person, event: Event) -> None:
        """One event read by ``person``: its room, epoch and offset."""
        assert event.room == person.room, (
            f"{person.user} in {person.room} got {event!r}"
        )
        assert event.epoch == person.epoch, f"{person.user}: epoch of {event!r}"
        assert event.offset == person.last + 1, (
            f"{person.user} read {event.offset} after {person.last}: "
            f"{person.offsets[-8:]}"
        )
        person.last = event.offset
        person.offsets.append(event.offset)
        self.high[person.room] = max(self.high[person.room], event.offset)

    async def forget(self, person: Person) -> None:
        """Drop ``person``'s connection without a word to the server."""
        client, person.client = person.client, None
        if client is not None:
            transport = client.ws.transport
            transport.abort()
            await client.close()

    # Rules -------------------------------------------------------------------

    @precondition(lambda self: len(self.people) < PEOPLE)
    @rule(room=st.integers(0, ROOMS - 1), node=st.integers(0, 1))
    def arrive(self, room: int, node: int) -> None:
        """Someone new enters a room through either node."""
        person = Person(f"t{len(self.people)}", self.rooms[room])
        self.people.append(person)
        self.run(self.join(person, self.nodes[node], None, None))

    @precondition(lambda self: bool(self.connected()))
    @rule(data=st.data(), topic=st.sampled_from(["talk", "slide", "hint"]))
    def broadcast(self, data: st.DataObject, topic: str) -> None:
        """A connected teacher broadcasts to their room."""
        person = data.draw(st.sampled_from(self.connected()), label="sender")
        self.run(self.send(person, topic))

    async def send(self, person: Person, topic: str) -> None:
        """Broadcast once, retrying with the same id while the room moves."""
        client = person.client
        assert client is not None
        command = Broadcast(
            id=secrets.token_hex(6), room=person.room, topic=topic, body=b"x"
        )
        for _ in range(20):
            try:
                answer = await client.request(command, within=SETTLE)
            except ConnectionClosed:
                await self.forget(person)
                return
            if isinstance(answer, Ack):
                assert answer.offset is not None
                self.high[person.room] = max(self.high[person.room], answer.offset)
                return
            assert isinstance(answer, Error), answer
            assert answer.code in RETRIED, answer
            await asyncio.sleep(0.2)
        raise AssertionError(f"broadcast of {person.user} never applied")

    @precondition(lambda self: bool(self.connected()))
    @rule(data=st.data())
    def drop(self, data: st.DataObject) -> None:
        """A connection breaks without a closing handshake."""
        person = data.draw(st.sampled_from(self.connected()), label="dropped")
        self.run(self.forget(person))

    @precondition(lambda self: bool(self.away()))
    @rule(data=st.data(), node=st.integers(0, 1))
    def resume(self, data: st.DataObject, node: int) -> None:
        """Someone comes back, to either node, with the last offset they read."""
        person = data.draw(st.sampled_from(self.away()), label="returning")
        joined = self.run(
            self.join(person, self.nodes[node], person.last, person.epoch)
        )
        # The room's history lives in Redis: nothing was lost to a reset.
        assert joined.recovered, f"{person.user} was not resumed: {joined!r}"

    @precondition(lambda self: bool(self.away()))
    @rule(data=st.data(), node=st.integers(0, 1), stale=st.booleans())
    def resume_stale(self, data: st.DataObject, node: int, stale: bool) -> None:
        """Someone comes back with a cursor of another epoch or from the future."""
        person = data.draw(st.sampled_from(self.away()), label="returning")
        last, epoch = person.last, person.epoch
        if stale:
            epoch = "lost-epoch"
        else:
            last = self.high[person.room] + 100
        joined = self.run(self.join(person, self.nodes[node], last, epoch))
        assert not joined.recovered, joined

    @precondition(lambda self: not self.restarted)
    @rule(node=st.integers(0, 1))
    def restart(self, node: int) -> None:
        """A node restarts: its clients are closed and its rooms move."""
        self.restarted = True
        server = self.nodes[node]
        server.stop()
        server.start()

    # Invariant ---------------------------------------------------------------

    @invariant()
    def everyone_caught_up(self) -> None:
        """Each connected client reads up to its room's newest offset."""

        async def settle() -> None:
            for person in self.connected():
                await self.read(person, self.high[person.room])

        self.run(settle())

    def teardown(self) -> None:
        """Read what is left, then close every connection and the loop."""

        async def finish() -> None:
            for person in self.connected():
                client = person.client
                assert client is not None
                with contextlib.suppress(ConnectionClosed):
                    for message in await client.silence(0.2):
                        if isinstance(message, Event):
                            self.check(person, message)
            for person in self.connected():
                await self.forget(person)

        try:
            self.run(finish())
        finally:
            self.loop.close()


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Two nodes on a Redis of this module's own, for every run."""
    base: Path = tmp_path_factory.mktemp("machine")
    redis = RedisProcess(base / "redis")
    redis.start()
    try:
        with Cluster(base, redis.url, 2).running() as cluster:
            yield cluster
    finally:
        redis.stop()


@pytest.mark.timeout(600)
def test_events_stay_in_their_room_and_offsets_have_no_gaps(
    nodes: Cluster,
) -> None:
    """Random joins, broadcasts, drops, resumes and restarts keep both invariants."""
    RoomMachine.nodes = nodes.nodes
    run_state_machine_as_test(RoomMachine, settings=RUNS)
