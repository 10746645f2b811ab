"""Speaking items answered by voice: a real microphone recorded per attempt and item.

A student's SDK :class:`AudioPeer` publishes a tone over the exam room's
media connection; ``exam_speak`` and ``exam_speak_end`` record it as the
answer to a speaking item. The recording must hold the tone, be listed in
the results as awaiting an examiner, be vouched for by the signed log, and
be downloadable by examiners and admins only.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import pytest

from client_sdk import AudioPeer, CommandError, ErrorCode, Role
from client_sdk.protocol import AttemptState, ExamState
from tests.lessons.conftest import Crowd, ServerProcess, admin_token, bearer
from tests.lessons.test_media import decode_ogg
from tests.media.peer import band_share

from .conftest import ExamApi, exam_file, seated, token, verify_log

pytestmark = pytest.mark.timeout(90)


async def refused(attempt: object) -> CommandError:
    """The error a command awaited here was refused with."""
    with pytest.raises(CommandError) as caught:
        await attempt  # type: ignore[misc]
    return caught.value


async def test_spoken_answer_is_recorded_listed_and_for_examiners_only(
    server: ServerProcess, api: ExamApi, crowd: Crowd, tmp_path: Path
) -> None:
    """A tone spoken for q6 is stored with its digest and heard by examiners only."""
    room = "exam-speaking"
    exam = exam_file(room, 2, examiners=["t-exam"])
    tokens, (student,) = await seated(server, api, crowd, exam)
    client = student.client
    await client.fetch_exam(room)

    # Without a microphone on the room's media there is nothing to record.
    assert (await refused(client.start_speaking(room, "q6"))).code is (
        ErrorCode.INVALID
    )
    # A speaking item takes no typed answer.
    assert (await refused(client.save_answer(room, "q6", "my-file.ogg"))).field == (
        "item"
    )

    async with AudioPeer(client, room, tone_hz=440, slots=0):
        await asyncio.sleep(0.5)
        not_speaking = await refused(client.start_speaking(room, "q1"))
        assert (not_speaking.code, not_speaking.field) == (ErrorCode.INVALID, "item")
        await client.start_speaking(room, "q6")
        await asyncio.sleep(2.0)
        await client.stop_speaking(room, "q6")
        again = await refused(client.stop_speaking(room, "q6"))
        assert again.code is ErrorCode.INVALID

    state = await client.fetch_exam(room)
    file = state.answers["q6"]
    assert isinstance(file, str)
    assert file.endswith(".ogg")

    examiner = token("t-exam", Role.TEACHER, room)
    results = (await api.results(room, examiner)).json()
    by_user = {s["user"]: s for s in results["students"]}
    q6 = next(i for i in by_user["s-0"]["items"] if i["item"] == "q6")
    assert q6["status"] == "awaiting examiner"
    assert q6["points"] is None
    assert q6["recording"] == file
    csv = (await api.results(room, examiner, csv=True)).text
    assert "awaiting examiner" in csv.splitlines()[1] + csv.splitlines()[2]

    base = f"/api/exams/{room}/recordings"
    listed = (await api.http.get(base, headers=bearer(examiner))).json()
    assert [(r["user"], r["item"], r["file"]) for r in listed] == [("s-0", "q6", file)]
    audio = await api.http.get(f"{base}/{file}", headers=bearer(examiner))
    assert audio.status_code == 200
    assert audio.headers["content-type"] == "audio/ogg"
    assert hashlib.sha256(audio.content).hexdigest() == listed[0]["sha256"]
    admin = await api.http.get(f"{base}/{file}", headers=bearer(admin_token()))
    assert admin.content == audio.content

    # The file holds the tone, about as long as the student spoke.
    path = tmp_path / file
    path.write_bytes(audio.content)
    samples, seconds = decode_ogg(path)
    assert 1.5 <= seconds <= 3.0
    assert band_share(samples, 440) > 0.5

    # Students (the speaker too) and proctors may neither list nor download.
    for who in (tokens["s-0"], tokens["s-1"], tokens["p-1"]):
        for url in (base, f"{base}/{file}"):
            response = await api.http.get(url, headers=bearer(who))
            assert response.status_code == 403, (who, url)
    unknown = await api.http.get(f"{base}/other.ogg", headers=bearer(examiner))
    assert unknown.status_code == 404

    # The signed log names the file and its digest, and verifies.
    exported = await api.log(room)
    entries = [json.loads(line) for line in exported.text.splitlines()]
    recorded = [e for e in entries if e.get("kind") == "recorded"]
    assert [e["data"]["sha256"] for e in recorded] == [listed[0]["sha256"]]
    log_path = tmp_path / "exam.log"
    log_path.write_text(exported.text)
    assert verify_log(log_path).returncode == 0


async def test_speaking_ends_at_the_deadline_and_is_refused_after_it(
    server: ServerProcess, api: ExamApi, crowd: Crowd
) -> None:
    """The deadline stops and stores a running recording; a later start is closed."""
    room = "exam-speaking-deadline"
    exam = exam_file(room, 1, duration_ms=4000)
    _, (student,) = await seated(server, api, crowd, exam)
    client = student.client
    await client.fetch_exam(room)

    async with AudioPeer(client, room, tone_hz=660, slots=0):
        await asyncio.sleep(0.5)
        await client.start_speaking(room, "q6")
        await student.wait(
            ExamState, lambda s: s.state is AttemptState.SUBMITTED, within=10
        )

        async def stored() -> None:
            for _ in range(50):
                if (await client.fetch_exam(room)).answers.get("q6"):
                    return
                await asyncio.sleep(0.1)
            raise AssertionError("the cut recording was never stored")

        await stored()
        late = await refused(client.start_speaking(room, "q6"))
        assert late.code is ErrorCode.CLOSED
    results = (await api.results(room)).json()
    q6 = next(i for i in results["students"][0]["items"] if i["item"] == "q6")
    assert q6["status"] == "awaiting examiner"


async def test_closing_the_microphone_stores_what_was_spoken(
    server: ServerProcess, api: ExamApi, crowd: Crowd
) -> None:
    """A media connection that closes mid-answer leaves its recording stored."""
    room = "exam-speaking-drop"
    _, (student,) = await seated(server, api, crowd, exam_file(room, 1))
    client = student.client
    await client.fetch_exam(room)
    async with AudioPeer(client, room, tone_hz=440, slots=0):
        await asyncio.sleep(0.5)
        await client.start_speaking(room, "q6")
        await asyncio.sleep(1.0)
    state = await client.fetch_exam(room)
    assert str(state.answers["q6"]).endswith(".ogg")
    assert state.state is AttemptState.RUNNING
    listed = (
        await api.http.get(
            f"/api/exams/{room}/recordings", headers=bearer(admin_token())
        )
    ).json()
    assert [r["item"] for r in listed] == ["q6"]
    assert listed[0]["seconds"] >= 0.8


async def test_an_answer_recorded_on_one_node_is_heard_from_the_other(
    nodes: tuple[ServerProcess, ...], crowd: Crowd
) -> None:
    """An answer spoken through node B is listed and served by node A."""
    node_a, node_b = nodes
    api_a = ExamApi(node_a)
    room = "exam-speaking-nodes"
    tokens = await api_a.tokens(exam_file(room, 1))
    proctor = await crowd.enter("p-1", node_a, tokens["p-1"], room)
    await proctor.client.watch_exam(room)
    student = await crowd.enter("s-0", node_b, tokens["s-0"], room)
    client = student.client
    await client.fetch_exam(room)
    async with AudioPeer(client, room, tone_hz=440, slots=0):
        await asyncio.sleep(0.5)
        await client.start_speaking(room, "q6")
        await asyncio.sleep(1.5)
        await client.stop_speaking(room, "q6")

    base = f"/api/exams/{room}/recordings"
    admin = bearer(admin_token())
    listed = (await api_a.http.get(base, headers=admin)).json()
    assert [(r["user"], r["item"]) for r in listed] == [("s-0", "q6")]
    audio = await api_a.http.get(f"{base}/{listed[0]['file']}", headers=admin)
    assert audio.status_code == 200
    assert hashlib.sha256(audio.content).hexdigest() == listed[0]["sha256"]
    await api_a.close()
