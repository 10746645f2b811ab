"""What the client's event stream yields besides room events.

:meth:`client_sdk.client.Client.events` yields the typed room events of the
protocol (:class:`~client_sdk.protocol.MemberJoined` and the others) in
offset order, interleaved with the items below, which say what happened to
the connection and to the client's view of each room. Their position in the
stream is meaningful: a :class:`Resynced` comes before the first event of
the room's new state, a :class:`Resumed` before the replayed events.

The notices of a lesson room come in the same stream, where they arrived:
:class:`~client_sdk.protocol.LessonSnapshot` right after a join that could
not resume (so before the events that build on it),
:class:`~client_sdk.protocol.AnswerTally` (teachers only) and
:class:`~client_sdk.protocol.AnswerResult` (one student, after a reveal).
They have no offset: they are not replayed after a reconnect.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TypeAlias

from .errors import ClientClosed, ClientError, CommandError
from .protocol import (
    AnswerResult,
    AnswerTally,
    ExamState,
    ExamWarning,
    Hello,
    IncidentRaised,
    Joined,
    LessonSnapshot,
    RoomEvent,
    SeatChanged,
    VideoQualityChanged,
)


class ConnectionState(enum.Enum):
    """Where the client's connection stands."""

    IDLE = "idle"
    CONNECTING = "connecting"
    OPEN = "open"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The connection ended with ``code``; ``reconnecting`` says what comes next.

    ``code`` is 1006 when the connection dropped without a close frame, and
    4013 (``REMOVED``) when a teacher sent this person out of the room: the
    client then does not reconnect, as after a refused handshake.
    """

    code: int
    reason: str
    reconnecting: bool


@dataclass(frozen=True, slots=True)
class Reconnected:
    """A new connection is open after ``attempts`` tries.

    The rooms the client was in are being joined again; each answers with a
    :class:`Resumed` or a :class:`Resynced` next in the stream.
    """

    hello: Hello
    attempts: int


@dataclass(frozen=True, slots=True)
class Resumed:
    """A join with the last offset seen recovered the room's history.

    The events missed meanwhile follow in the stream, in order.
    """

    room: str
    joined: Joined


@dataclass(frozen=True, slots=True)
class Resynced:
    """A join could not replay the room's history (its epoch changed).

    The application must drop what it knew of the room: ``joined.roster``
    is the present state and the events that follow build on it.
    """

    room: str
    joined: Joined


@dataclass(frozen=True, slots=True)
class RejoinFailed:
    """The server refused to let the client back into ``room`` after a reconnect.

    The client no longer follows the room; ``error`` says why.
    """

    room: str
    error: CommandError


#: Messages for some members of a room only, yielded as they arrive.
RoomNotice: TypeAlias = (
    AnswerTally
    | AnswerResult
    | LessonSnapshot
    | ExamState
    | SeatChanged
    | IncidentRaised
    | ExamWarning
    | VideoQualityChanged
)

ClientEvent: TypeAlias = (
    RoomEvent
    | RoomNotice
    | Disconnected
    | Reconnected
    | Resumed
    | Resynced
    | RejoinFailed
)


class EventStream:
    """The queue between the client's reader and the application.

    Items are kept until read, without bound (see :class:`Client
    <client_sdk.client.Client>`). After :meth:`end`, reads drain what is
    left and then raise the error the stream ended with.
    """

    def __init__(self) -> None:
        self._queue: asyncio.Queue[ClientEvent | None] = asyncio.Queue()
        self._failure: ClientError | None = None

    def put(self, item: ClientEvent) -> None:
        """Add one item; never blocks."""
        self._queue.put_nowait(item)

    def end(self, failure: ClientError) -> None:
        """No more items will come; reads past the last raise ``failure``."""
        if self._failure is None:
            self._failure = failure
            self._queue.put_nowait(None)

    async def get(self, timeout: float | None = None) -> ClientEvent:  # noqa: ASYNC109
        """The next item; see :meth:`client_sdk.client.Client.next_event`."""
        async with asyncio.timeout(timeout):
            item = await self._queue.get()
        if item is None:
            # Left in place so that every later read ends the same way.
            self._queue.put_nowait(None)
            raise self._failure or ClientClosed()
        return item

    async def __aiter__(self) -> AsyncIterator[ClientEvent]:
        """Every item until the end; quietly stops if the client was closed."""
        while True:
            try:
                item = await self.get()
            except ClientClosed:
                return
            yield item
