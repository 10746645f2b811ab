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

from typing import Unpack

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
    StartSpeaking,
    StopSpeaking,
    SubmitExam,
    WatchExam,
)
from .requests import ExamRequest, Options, Requester

__all__ = ["ExamCommands", "ExamRequest"]


class ExamCommands(Requester):
    """The commands of a proctored exam, as methods of the client.

    Each method sends one command, retrying with the same id as
    :meth:`Client.request <client_sdk.client.Client.request>` does, so a
    retried save is stored once. The ``timeout`` and ``retries`` keywords
    (:class:`~client_sdk.requests.Options`) default to the client's.
    """

    async def fetch_exam(self, room: str, **options: Unpack[Options]) -> ExamState:
        """Student: the exam as it stands for me.

        Before ``opens_at`` it has the times and no ``sections``. After it,
        the first fetch starts the attempt (``closed`` once the late-join
        window has passed) and every fetch carries my variant, my saved
        answers and my time left: what a page needs after a reconnect.
        """
        return await self.request(ExamFetch(id=self.next_id(), room=room), **options)

    async def save_answer(
        self,
        room: str,
        item: str,
        value: ExamValue,
        *,
        id: str | None = None,
        **options: Unpack[Options],
    ) -> Ack:
        """Student: save my answer to ``item``; the ack means it is stored.

        ``value`` is an option index in the order I was shown (single
        choice), a list of them (multiple choice), a text (short text), or a
        list of texts, one per gap (gap fill); a speaking item is answered
        by voice (:meth:`start_speaking`). The command ``id`` identifies
        this answer: sent again with the same ``id`` it is stored once.
        Raises ``closed`` after my deadline, after I submitted, while a
        proctor paused me, or when going back is not allowed.
        """
        command = SaveExamAnswer(
            id=id or self.next_id(), room=room, item=item, value=value
        )
        return await self.request(command, **options)

    async def submit_exam(self, room: str, **options: Unpack[Options]) -> Ack:
        """Student: hand in my attempt; submitting twice is harmless."""
        return await self.request(SubmitExam(id=self.next_id(), room=room), **options)

    async def start_speaking(
        self, room: str, item: str, **options: Unpack[Options]
    ) -> Ack:
        """Student: record my spoken answer to ``item`` from now on.

        My microphone must be on the room's media connection already (an
        :class:`~client_sdk.audio.AudioPeer` of this client). The ack means
        the recording runs; it is refused outside my open attempt, after my
        deadline, and for an item that is not a speaking one.
        """
        command = StartSpeaking(id=self.next_id(), room=room, item=item)
        return await self.request(command, **options)

    async def stop_speaking(
        self, room: str, item: str, **options: Unpack[Options]
    ) -> Ack:
        """Student: I finished speaking ``item``; the ack means it is stored."""
        command = StopSpeaking(id=self.next_id(), room=room, item=item)
        return await self.request(command, **options)

    async def report_signal(
        self,
        room: str,
        signal: ClientSignal,
        detail: str = "",
        **options: Unpack[Options],
    ) -> Ack:
        """Student's page: tell the proctors what it noticed (tab hidden, ...)."""
        command = ReportSignal(
            id=self.next_id(), room=room, signal=signal, detail=detail
        )
        return await self.request(command, **options)

    async def watch_exam(self, room: str, **options: Unpack[Options]) -> ProctorView:
        """Proctor: every seat of the room now; changes follow as notices."""
        return await self.request(WatchExam(id=self.next_id(), room=room), **options)

    async def proctor(
        self,
        room: str,
        action: ProctorActionKind,
        user: str | None = None,
        *,
        message: str = "",
        ms: int = 0,
        **options: Unpack[Options],
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
        return await self.request(command, **options)

    async def listen_to(self, room: str, user: str, **options: Unpack[Options]) -> Ack:
        """Proctor: hear ``user``'s microphone on my media connection.

        My :class:`~client_sdk.audio.AudioPeer` in ``room`` (with a slot)
        receives their audio, and nobody else does, until
        :meth:`stop_listening` or my next :meth:`listen_to`. Only the room's
        proctors may; it goes into the room's log.
        """
        return await self.proctor(room, ProctorActionKind.LISTEN, user, **options)

    async def stop_listening(self, room: str, **options: Unpack[Options]) -> Ack:
        """Proctor: stop hearing the student I listen to; logged too."""
        return await self.proctor(room, ProctorActionKind.STOP_LISTENING, **options)
