"""A student's microphone, as the proctors of an exam room get it.

Students publish tones with the SDK :class:`AudioPeer` on the exam room's
media connection. Sustained voice while no spoken answer is recorded must
reach the watching proctor as an incident and the signed log; a proctor who
listens to a student must hear that student's tone and nobody else must.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from client_sdk import AudioPeer, CommandError, ErrorCode, Role
from client_sdk.protocol import IncidentKind, IncidentRaised
from media.activity import VoiceWindow
from rooms import proctoring
from tests.lessons.conftest import Crowd, ServerProcess
from tests.media.peer import eventually

from .conftest import ExamApi, exam_file, seated, token, verify_log

pytestmark = pytest.mark.timeout(90)

VOICE = IncidentKind.VOICE_ON_SILENT_ITEM


async def refused(attempt: object) -> CommandError:
    """The error a command awaited here was refused with."""
    with pytest.raises(CommandError) as caught:
        await attempt  # type: ignore[misc]
    return caught.value


async def log_entries(
    api: ExamApi, room: str, tmp_path: Path
) -> list[dict[str, object]]:
    """The room's exported log entries, after checking that it verifies."""
    exported = await api.log(room)
    path = tmp_path / f"{room}.log"
    path.write_text(exported.text)
    assert verify_log(path).returncode == 0
    return [json.loads(line) for line in exported.text.splitlines()]


def peak_near(peer: AudioPeer, frequency: float) -> bool:
    """Whether the last half second ``peer`` heard peaks at ``frequency``."""
    found = peer.dominant_frequency(time.monotonic() - 0.5)
    return found is not None and abs(found - frequency) <= 10


def test_a_cough_is_no_incident_and_a_talker_is_reported_once_a_while() -> None:
    """Under 2 s of voice in 10 s is nothing; a talker gets one incident per 30 s."""
    window = VoiceWindow(proctoring.VOICE_WINDOW_MS / 1000)
    assert window.add(0.0, 0.0) == 0
    assert window.add(1.0, 0.8) == pytest.approx(0.8)
    assert window.add(11.5, 0.8) == 0
    assert window.add(13.0, 2.8) == pytest.approx(2.0)
    # A new connection restarts the running total: nothing is counted twice.
    assert window.add(13.5, 0.3) == pytest.approx(2.0)
    assert proctoring.voice_on_silent_item(800, 10_000, None) is None
    assert proctoring.voice_on_silent_item(2000, 10_000, None) is not None
    assert proctoring.voice_on_silent_item(5000, 10_000, 29_000) is None
    assert proctoring.voice_on_silent_item(5000, 10_000, 30_000) is not None


async def test_voice_on_a_silent_item_reaches_the_proctor_and_the_log(
    server: ServerProcess, api: ExamApi, crowd: Crowd, tmp_path: Path
) -> None:
    """A talking student raises one voice incident; a silent one raises none."""
    room = "exam-voice"
    tokens, (talker, quiet) = await seated(
        server, api, crowd, exam_file(room, 2), "s-0", "s-1"
    )
    proctor = await crowd.enter("p-1", server, tokens["p-1"], room)
    await proctor.client.watch_exam(room)
    await talker.client.fetch_exam(room)
    await quiet.client.fetch_exam(room)

    # A page may not claim the server's voice signal for anyone.
    claim = await refused(talker.client.report_signal(room, VOICE))
    assert claim.field == "signal"

    async with (
        AudioPeer(quiet.client, room, tone_hz=440, amplitude=0.0, slots=0),
        AudioPeer(talker.client, room, tone_hz=440, slots=0),
    ):
        raised = await proctor.wait(
            IncidentRaised, lambda n: n.incident.kind is VOICE, within=10
        )
        # More talking within the rate limit raises nothing more.
        await asyncio.sleep(proctoring.VOICE_MIN_MS / 1000 * 2)

    incident = raised.incident
    assert (incident.user, incident.severity) == ("s-0", proctoring.SEVERITY[VOICE])
    voiced = [n for n in proctor.all(IncidentRaised) if n.incident.kind is VOICE]
    assert [n.incident.user for n in voiced] == ["s-0"]

    entries = await log_entries(api, room, tmp_path)
    logged = [
        e
        for e in entries
        if e.get("kind") == "incident" and e["data"]["kind"] == VOICE.value  # type: ignore[index]
    ]
    assert [(e["actor"], e["data"]["user"]) for e in logged] == [  # type: ignore[index]
        ("server", "s-0")
    ]


async def test_voice_while_speaking_an_answer_is_no_incident(
    server: ServerProcess, api: ExamApi, crowd: Crowd
) -> None:
    """A student speaking the speaking item is recorded, not reported."""
    room = "exam-voice-speaking"
    tokens, (student,) = await seated(server, api, crowd, exam_file(room, 1))
    proctor = await crowd.enter("p-1", server, tokens["p-1"], room)
    await proctor.client.watch_exam(room)
    client = student.client
    await client.fetch_exam(room)
    async with AudioPeer(client, room, tone_hz=440, slots=0):
        await client.start_speaking(room, "q6")
        await asyncio.sleep(proctoring.VOICE_MIN_MS / 1000 * 2)
        await client.stop_speaking(room, "q6")
    assert not [n for n in proctor.all(IncidentRaised) if n.incident.kind is VOICE]


async def test_a_proctor_listens_to_one_student_and_nobody_else_does(
    server: ServerProcess, api: ExamApi, crowd: Crowd, tmp_path: Path
) -> None:
    """The listening proctor hears the chosen student; other students hear nothing."""
    room, other = "exam-listen", "exam-listen-other"
    tokens, (alice, bob) = await seated(
        server, api, crowd, exam_file(room, 2), "s-0", "s-1"
    )
    other_tokens = await api.tokens(exam_file(other, 1, proctors=["p-2"]))
    proctor = await crowd.enter("p-1", server, tokens["p-1"], room)
    stranger = await crowd.enter("p-2", server, other_tokens["p-2"], other)
    await alice.client.fetch_exam(room)
    await bob.client.fetch_exam(room)

    # Students, and proctors of another room, may not listen.
    by_student = await refused(bob.client.listen_to(room, "s-0"))
    assert by_student.code is ErrorCode.FORBIDDEN
    by_stranger = await refused(stranger.client.listen_to(room, "s-0"))
    assert by_stranger.code is ErrorCode.NOT_JOINED
    intruder = await crowd.enter(
        "p-2b", server, token("p-2", Role.PROCTOR, room), room, join=False
    )
    assert (await refused(intruder.client.join(room))).code is ErrorCode.FORBIDDEN
    assert (await refused(proctor.client.listen_to(room, "p-1"))).field == "user"

    async with (
        AudioPeer(alice.client, room, tone_hz=440, slots=0),
        AudioPeer(bob.client, room, tone_hz=660, slots=1) as bob_ears,
        AudioPeer(proctor.client, room, slots=1) as ears,
    ):
        await asyncio.sleep(1.0)
        assert ears.frames_received == 0

        await proctor.client.listen_to(room, "s-0")
        await eventually(lambda: peak_near(ears, 440), 5.0, "the proctor hears s-0")

        await proctor.client.listen_to(room, "s-1")
        await eventually(lambda: peak_near(ears, 660), 5.0, "the proctor hears s-1")

        await proctor.client.stop_listening(room)
        await asyncio.sleep(0.5)
        stopped = ears.frames_received
        await asyncio.sleep(1.0)
        assert ears.frames_received <= stopped + 2
        # Bob's slot never carried anyone: students are heard by proctors only.
        assert bob_ears.frames_received == 0

    entries = await log_entries(api, room, tmp_path)
    actions = [
        (e["actor"], e["data"]["action"], e["data"]["user"])  # type: ignore[index]
        for e in entries
        if e.get("kind") == "action"
    ]
    assert actions == [
        ("p-1", "listen", "s-0"),
        ("p-1", "listen", "s-1"),
        ("p-1", "stop_listening", ""),
    ]
