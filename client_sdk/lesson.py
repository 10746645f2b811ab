"""The lesson commands of the Python client.

:class:`LessonCommands` is mixed into :class:`client_sdk.client.Client`: it
turns each command of a linked lesson into one awaitable method that returns
the server's ``ack`` or raises :class:`~client_sdk.errors.CommandError` with
the error's stable code.

A quiz question carries absolute server times: a client shows it at
``opens_at`` by sleeping until the server's clock reads that time, with
:meth:`ServerClock.wait_until <client_sdk.clock.ServerClock.wait_until>`.

Example, a student answering the question the host just opened::

    async for item in client.events():
        if isinstance(item, QuestionOpened):
            await client.wait_until(item.opens_at)
            show(item.question)
            await client.answer(room, item.question.number, choice)
"""

from __future__ import annotations

from .protocol import (
    Ack,
    Answer,
    AnswerValue,
    AskQuestion,
    CloseQuestion,
    EndLesson,
    RemoveMember,
    Reveal,
    StepActivity,
)
from .requests import Requester


class LessonCommands(Requester):
    """The commands of a linked lesson, as methods of the client.

    The host steps through the plan and asks, closes and reveals questions;
    students answer; the host, or the co-teacher of a student's school,
    removes a member. Each method sends one command and returns its ``ack``,
    retrying with the same id as :meth:`Client.request
    <client_sdk.client.Client.request>` does, so a retried command is
    applied once. ``timeout`` and ``retries`` default to the client's.
    """

    async def step(
        self,
        room: str,
        index: int,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
        retries: int | None = None,
    ) -> Ack:
        """Host: make activity ``index`` (from 0) of the plan the current one."""
        command = StepActivity(id=self.next_id(), room=room, index=index)
        return await self.request(command, timeout=timeout, retries=retries)

    async def ask(
        self,
        room: str,
        question: int,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
        retries: int | None = None,
    ) -> Ack:
        """Host: open question ``question`` (from 0) of the current quiz.

        Every member then receives a ``question_opened`` event whose
        ``opens_at`` lies the plan's lead time in the future.
        """
        command = AskQuestion(id=self.next_id(), room=room, question=question)
        return await self.request(command, timeout=timeout, retries=retries)

    async def answer(
        self,
        room: str,
        number: int,
        value: AnswerValue,
        *,
        id: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
        retries: int | None = None,
    ) -> Ack:
        """Student: answer question ``number``; the ack means it is stored.

        ``value`` is an option index (single choice), ``True`` or ``False``,
        a text (short text) or a list of option indices (multiple choice,
        ordering). The command ``id`` identifies the answer: an answer sent
        again with the same ``id`` is stored once and acknowledged again,
        even after the question closed. Pass an ``id`` of your own to keep
        that promise across restarts of the application.

        Raises :class:`~client_sdk.errors.CommandError` with ``closed``
        after the deadline (``closes_at`` plus ``grace_ms``) or for a second
        answer where the quiz does not allow changing one, and ``invalid``
        before ``opens_at`` or for a value of the wrong shape.
        """
        command = Answer(id=id or self.next_id(), room=room, number=number, value=value)
        return await self.request(command, timeout=timeout, retries=retries)

    async def close_question(
        self,
        room: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
        retries: int | None = None,
    ) -> Ack:
        """Host: stop taking answers to the open question now."""
        command = CloseQuestion(id=self.next_id(), room=room)
        return await self.request(command, timeout=timeout, retries=retries)

    async def reveal(
        self,
        room: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
        retries: int | None = None,
    ) -> Ack:
        """Host: show the key, the counts and the leaderboards of the question.

        Each student who answered then receives their own ``result`` notice.
        """
        command = Reveal(id=self.next_id(), room=room)
        return await self.request(command, timeout=timeout, retries=retries)

    async def end_lesson(
        self,
        room: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
        retries: int | None = None,
    ) -> Ack:
        """Host: end the lesson; its report is final from then on."""
        command = EndLesson(id=self.next_id(), room=room)
        return await self.request(command, timeout=timeout, retries=retries)

    async def remove(
        self,
        room: str,
        user: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
        retries: int | None = None,
    ) -> Ack:
        """Host or co-teacher: send ``user`` out of the room for good.

        Their connections close with 4013 and the room refuses them from
        then on. A co-teacher may remove only students and classroom devices
        of their own school; anything else raises ``forbidden``.
        """
        command = RemoveMember(id=self.next_id(), room=room, user=user)
        return await self.request(command, timeout=timeout, retries=retries)
