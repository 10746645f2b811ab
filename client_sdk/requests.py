"""Commands and their replies: the request core of the Python client.

:class:`Requester` sends a command over the client's current connection,
waits for its reply, and sends it again under the same id after a timeout,
a lost connection or a retryable error, which the server applies once. The
command mixins (:mod:`client_sdk.exam` and the others) build on it, and
:class:`client_sdk.client.Client` keeps the connection it sends over.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Final, TypeAlias, TypedDict, overload

import msgspec

from .backoff import Backoff
from .errors import ClientError, CommandError, CommandTimeout, ProtocolViolation
from .link import Link, LinkLost
from .protocol import (
    Ack,
    Broadcast,
    ClientMessage,
    Error,
    ErrorCode,
    ExamAckCommand,
    ExamFetch,
    ExamState,
    Join,
    Joined,
    Leave,
    LessonCommand,
    MediaAnswer,
    MediaCandidate,
    MediaLeave,
    MediaOffer,
    Ping,
    Pong,
    ProbeReply,
    ProctorView,
    TurnCommand,
    VideoQuality,
    VideoQualityAnswer,
    WatchExam,
)

logger = logging.getLogger(__name__)

#: The lesson, turn and media commands the server answers with an ``ack``.
LessonRequest: TypeAlias = LessonCommand | TurnCommand | MediaCandidate | MediaLeave


class Options(TypedDict, total=False):
    """The bounds of one command: each attempt's ``timeout`` and ``retries``.

    Left out (or ``None``), they are the client's ``request_timeout`` and
    ``retries``.
    """

    timeout: float | None
    retries: int | None


#: The exam commands the server answers with an ``ack``.
ExamRequest: TypeAlias = ExamAckCommand

#: Error codes the protocol says to retry with the same id.
RETRYABLE_ERRORS: Final = frozenset(
    {ErrorCode.UNAVAILABLE, ErrorCode.INTERNAL, ErrorCode.RATE_LIMITED}
)
Reply = Ack | Joined | Pong | MediaAnswer | VideoQualityAnswer | ExamState | ProctorView
#: The reply of each command that is not answered with an ``ack``.
REPLIES: Final[dict[type, type[Reply]]] = {
    Join: Joined,
    Ping: Pong,
    MediaOffer: MediaAnswer,
    VideoQuality: VideoQualityAnswer,
    ExamFetch: ExamState,
    WatchExam: ProctorView,
}


class Requester:
    """Sends commands and returns their replies; the base of the client.

    The client sets these up when it is made; ``_link`` and ``_ready`` say
    which connection is usable now, ``_failure`` what ended it for good.
    """

    backoff: Backoff
    request_timeout: float
    retries: int
    _link: Link | None
    _ready: asyncio.Event
    _failure: ClientError | None
    _ids: itertools.count[int]
    _id_prefix: str

    def next_id(self) -> str:
        """A command id no other command of this client has used."""
        return f"{self._id_prefix}-{next(self._ids)}"

    @overload
    async def request(
        self,
        command: Join,
        *,
        timeout: float | None = ...,  # noqa: ASYNC109
        retries: int | None = ...,
    ) -> Joined: ...

    @overload
    async def request(
        self,
        command: Leave | Broadcast | LessonRequest | ExamRequest,
        *,
        timeout: float | None = ...,  # noqa: ASYNC109
        retries: int | None = ...,
    ) -> Ack: ...

    @overload
    async def request(
        self,
        command: Ping,
        *,
        timeout: float | None = ...,  # noqa: ASYNC109
        retries: int | None = ...,
    ) -> Pong: ...

    @overload
    async def request(
        self,
        command: ExamFetch,
        *,
        timeout: float | None = ...,  # noqa: ASYNC109
        retries: int | None = ...,
    ) -> ExamState: ...

    @overload
    async def request(
        self,
        command: WatchExam,
        *,
        timeout: float | None = ...,  # noqa: ASYNC109
        retries: int | None = ...,
    ) -> ProctorView: ...

    @overload
    async def request(
        self,
        command: MediaOffer,
        *,
        timeout: float | None = ...,  # noqa: ASYNC109
        retries: int | None = ...,
    ) -> MediaAnswer: ...

    @overload
    async def request(
        self,
        command: VideoQuality,
        *,
        timeout: float | None = ...,  # noqa: ASYNC109
        retries: int | None = ...,
    ) -> VideoQualityAnswer: ...

    async def request(
        self,
        command: ClientMessage,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
        retries: int | None = None,
    ) -> Reply:
        """Send ``command`` and return the server's reply.

        An empty ``id`` is replaced with :meth:`next_id`. Each attempt waits
        up to ``timeout`` seconds, for a connection and then for the reply: a
        bound per attempt, which an ``asyncio.timeout`` around the call could
        not express. After a timeout or a lost connection the command is sent
        again with the same id, up to ``retries`` more times, as it is after
        an ``unavailable``, ``internal`` or ``rate_limited`` error. Other
        errors raise :class:`CommandError`; running out of attempts raises
        :class:`CommandTimeout`. A ``probe_reply``, which gets no reply, is
        refused with ``ValueError``: the client sends those by itself.
        """
        if isinstance(command, ProbeReply):
            raise ValueError("probe_reply gets no reply; the client sends it itself")
        if not command.id:
            command = msgspec.structs.replace(command, id=self.next_id())
        timeout = self.request_timeout if timeout is None else timeout
        retries = self.retries if retries is None else retries
        last: BaseException | None = None
        for attempt in range(retries + 1):
            if attempt:
                await asyncio.sleep(self.backoff.delay(attempt - 1))
            try:
                link = await self._wait_ready(timeout)
                if isinstance(command, Join):
                    self._track_join(command)
                return await self._exchange(link, command, timeout)
            except CommandError as exc:
                if exc.code not in RETRYABLE_ERRORS:
                    raise
                last = exc
            except (TimeoutError, LinkLost) as exc:
                last = exc
            logger.debug(
                "command %s: attempt %d failed: %r", command.id, attempt + 1, last
            )
        raise CommandTimeout(command.id, retries + 1) from last

    async def _wait_ready(self, limit: float) -> Link:
        async with asyncio.timeout(limit):
            while True:
                if self._failure is not None:
                    raise self._failure
                if self._link is not None and self._ready.is_set():
                    return self._link
                await self._ready.wait()

    async def _exchange(
        self, link: Link, command: ClientMessage, limit: float
    ) -> Reply:
        future = link.expect(command.id)
        try:
            await link.send(command)
            async with asyncio.timeout(limit):
                reply = await future
        finally:
            link.forget(command.id, future)
        if isinstance(reply, Error):
            raise CommandError(reply.code, reply.message, reply.field, command.id)
        expected: type[Reply] = REPLIES.get(type(command), Ack)
        if not isinstance(reply, expected):
            raise ProtocolViolation(
                f"command {command.id!r} got {type(reply).__name__}, "
                f"not {expected.__name__}"
            )
        return reply

    def _track_join(self, command: Join) -> None:
        """Note a join about to be sent; the client follows the room."""
