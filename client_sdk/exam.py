"""The exam commands of the Python client.

:class:`ExamCommands` is mixed into :class:`client_sdk.client.Client`: each
command of a proctored exam is one awaitable method. Saves, submissions,
signals and proctor actions return the server's ``ack``; :meth:`fetch_exam`
returns the student's :class:`~client_sdk.protocol.ExamState` and
:meth:`watch_exam` the proctor's :class:`~client_sdk.protocol.ProctorView`.
A refusal raises :class:`~client_sdk.errors.CommandError` with the error's
stable code (``closed`` once the student's time is up or they submitted).

Example, a student sitting an exam::

    await client.join(room)
    state = await client.fetch_exam(room)
    if state.sections is None:
        await client.wait_until(state.opens_at)
        state = await client.fetch_exam(room)
    for section in state.sections:
        for item in section.items:
            await client.save_answer(room, item.id, choose(item))
    await client.submit_exam(room)
"""

from __future__ import annotations

from typing import Protocol, TypeAlias

from .protocol import (
    Ack,
    ClientSignal,
    ExamFetch,
    ExamState,
    ExamValue,
    ProctorActionKind,
    ProctorCommand,
    ProctorView,
    ReportSignal,
    SaveExamAnswer,
    SubmitExam,
    WatchExam,
)

#: The exam commands the server answers with an ``ack``.
ExamRequest: TypeAlias = SaveExamAnswer | SubmitExam | ReportSignal | ProctorCommand


class _Requester(Protocol):
    """What the mixin needs of the client it is mixed into, for acks."""

    async def request(
        self,
        command: ExamRequest,
        *,
        timeout: float | None = ...,  # noqa: ASYNC109
        retries: int | None = ...,
    ) -> Ack: ...

    def next_id(self) -> str: ...


class _Fetcher(Protocol):
    """What :meth:`ExamCommands.fetch_exam` needs of the client."""

    async def request(
        self,
        command: ExamFetch,
        *,
        timeout: float | None = ...,  # noqa: ASYNC109
        retries: int | None = ...,
    ) -> ExamState: ...

    def next_id(self) -> str: ...


class _Watcher(Protocol):
    """What :meth:`ExamCommands.watch_exam` needs of the client."""

    async def request(
        self,
        command: WatchExam,
        *,
        timeout: float | None = ...,  # noqa: ASYNC109
        retries: int | None = ...,
    ) -> ProctorView: ...

    def next_id(self) -> str: ...


class ExamCommands:
    """The commands of a proctored exam, as methods of the client.

    Each method sends one command, retrying with the same id as
    :meth:`Client.request <client_sdk.client.Client.request>` does, so a
    retried save is stored once. ``timeout`` and ``retries`` default to the
    client's.
    """

    async def fetch_exam(
        self: _Fetcher,
        room: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
        retries: int | None = None,
    ) -> ExamState:
        """Student: the exam as it stands for me.

        Before ``opens_at`` it has the times and no ``sections``. After it,
        the first fetch starts the attempt (``closed`` once the late-join
        window has passed) and every fetch carries my variant, my saved
        answers and my time left: what a page needs after a reconnect.
        """
        command = ExamFetch(id=self.next_id(), room=room)
        return await self.request(command, timeout=timeout, retries=retries)

    async def save_answer(
        self: _Requester,
        room: str,
        item: str,
        value: ExamValue,
        *,
        id: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
        retries: int | None = None,
    ) -> Ack:
        """Student: save my answer to ``item``; the ack means it is stored.

        ``value`` is an option index in the order I was shown (single
        choice), a list of them (multiple choice), a text (short text), or a
        list of texts, one per gap (gap fill). The command ``id`` identifies
        this answer: sent again with the same ``id`` it is stored once.
        Raises ``closed`` after my deadline, after I submitted, while a
        proctor paused me, or when going back is not allowed.
        """
        command = SaveExamAnswer(
            id=id or self.next_id(), room=room, item=item, value=value
        )
        return await self.request(command, timeout=timeout, retries=retries)

    async def submit_exam(
        self: _Requester,
        room: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
        retries: int | None = None,
    ) -> Ack:
        """Student: hand in my attempt; submitting twice is harmless."""
        command = SubmitExam(id=self.next_id(), room=room)
        return await self.request(command, timeout=timeout, retries=retries)

    async def report_signal(
        self: _Requester,
        room: str,
        signal: ClientSignal,
        detail: str = "",
        *,
        timeout: float | None = None,  # noqa: ASYNC109
        retries: int | None = None,
    ) -> Ack:
        """Student's page: tell the proctors what it noticed (tab hidden, ...)."""
        command = ReportSignal(
            id=self.next_id(), room=room, signal=signal, detail=detail
        )
        return await self.request(command, timeout=timeout, retries=retries)

    async def watch_exam(
        self: _Watcher,
        room: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
        retries: int | None = None,
    ) -> ProctorView:
        """Proctor: every seat of the room now; changes follow as notices."""
        command = WatchExam(id=self.next_id(), room=room)
        return await self.request(command, timeout=timeout, retries=retries)

    async def proctor(
        self: _Requester,
        room: str,
        action: ProctorActionKind,
        user: str | None = None,
        *,
        message: str = "",
        ms: int = 0,
        timeout: float | None = None,  # noqa: ASYNC109
        retries: int | None = None,
    ) -> Ack:
        """Proctor: act on ``user``'s attempt, or on the room without ``user``.

        ``pause``, ``resume`` and ``note`` work on the whole room when
        ``user`` is left out. Every action goes into the room's log.
        """
        command = ProctorCommand(
            id=self.next_id(),
            room=room,
            action=action,
            user=user,
            message=message,
            ms=ms,
        )
        return await self.request(command, timeout=timeout, retries=retries)
