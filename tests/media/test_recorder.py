"""Recording turns and spoken answers to Ogg Opus files, from real peers."""

from __future__ import annotations

import asyncio
import datetime
import pathlib
import time

import av
import msgspec
import numpy as np
import pytest

from media.errors import RecordingError, UnknownParticipant
from media.opus import CLOCK_RATE, SAMPLES_20MS, SILENCE_20MS, OpusPacket
from media.recorder import OggOpusWriter, RecordingInfo, RecordingKind, sidecar_path
from media.relay import MediaRoom
from tests.media.conftest import Join, hears
from tests.media.peer import peak

pytestmark = pytest.mark.timeout(60)


def decode(path: pathlib.Path) -> tuple[np.ndarray, dict[str, str]]:
    """The mono samples of a recording, as floats, and its stream's tags."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        tags = dict(stream.metadata)
        chunks = [
            frame.to_ndarray().astype(np.float32).reshape(-1) / 32768
            for frame in container.decode(stream)
        ]
    return np.concatenate(chunks), tags


async def test_turn_recording_holds_the_tone_for_the_turn(
    room: MediaRoom, join: Join, tmp_path: pathlib.Path
) -> None:
    """A recorded turn is 440 Hz, lasts the turn within 10%, and says who and what."""
    await join("A", 440)
    b = await join("B", None)
    await room.set_speakers(["A"])
    await hears(b, 440)
    path = tmp_path / "turns" / "a.ogg"

    began = time.monotonic()
    await room.start_recording("A", path, prompt="Giới thiệu trường em")
    await asyncio.sleep(2.0)
    info = await room.stop_recording("A")
    turn = time.monotonic() - began

    samples, tags = decode(path)
    found = peak(samples)
    assert found is not None
    assert abs(found.frequency - 440) <= 5
    assert abs(samples.size / CLOCK_RATE - turn) <= 0.1 * turn
    assert abs(info.seconds - turn) <= 0.1 * turn
    assert info.participant == "A"
    assert info.kind is RecordingKind.TURN
    assert info.prompt == "Giới thiệu trường em"
    assert info.voiced_seconds > 0.8 * info.seconds
    assert info.packets > 80
    assert info.ended_at > info.started_at
    assert tags["LOPHOC_PARTICIPANT"] == "A"
    assert tags["LOPHOC_PROMPT"] == "Giới thiệu trường em"
    sidecar = msgspec.json.decode(sidecar_path(path).read_bytes(), type=RecordingInfo)
    assert sidecar == info


async def test_answer_of_a_non_speaker_is_recorded_not_forwarded(
    room: MediaRoom, join: Join, tmp_path: pathlib.Path
) -> None:
    """A student's spoken answer is recorded while nobody hears it."""
    b = await join("B", None)
    await join("D", 880)
    path = tmp_path / "d.ogg"

    await room.start_recording("D", path, kind=RecordingKind.ANSWER, prompt="Q3")
    assert room.activity("D") is not None
    await asyncio.sleep(1.5)
    info = await room.stop_recording("D")

    samples, _ = decode(path)
    found = peak(samples)
    assert found is not None
    assert abs(found.frequency - 880) <= 5
    assert info.kind is RecordingKind.ANSWER
    assert b.heard == []
    assert room.activity("D") is None


async def test_recording_misuse_raises(
    room: MediaRoom, join: Join, tmp_path: pathlib.Path
) -> None:
    """Recording twice, stopping unstarted, no microphone or no file: errors."""
    await join("A", 440)
    await join("B", None)
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")

    with pytest.raises(RecordingError):
        await room.stop_recording("A")
    with pytest.raises(RecordingError):
        await room.start_recording("B", tmp_path / "b.ogg")
    with pytest.raises(UnknownParticipant):
        await room.start_recording("Z", tmp_path / "z.ogg")
    with pytest.raises(RecordingError):
        await room.start_recording("A", blocker / "a.ogg")
    assert room.activity("A") is None

    await room.start_recording("A", tmp_path / "a.ogg")
    with pytest.raises(RecordingError):
        await room.start_recording("A", tmp_path / "again.ogg")
    await room.stop_recording("A")


async def test_leaving_mid_recording_finishes_the_file(
    room: MediaRoom, join: Join, tmp_path: pathlib.Path
) -> None:
    """A participant who leaves while recorded leaves a complete file behind."""
    await join("A", 440)
    path = tmp_path / "a.ogg"
    await room.start_recording("A", path, prompt="cut short")
    await asyncio.sleep(0.5)

    info = await room.remove("A")

    assert info is not None
    assert info.prompt == "cut short"
    samples, _ = decode(path)
    assert samples.size / CLOCK_RATE == pytest.approx(info.seconds, abs=0.05)
    assert sidecar_path(path).exists()


def _writer(path: pathlib.Path, started: float) -> OggOpusWriter:
    return OggOpusWriter(
        path,
        room="r",
        participant="p",
        kind=RecordingKind.TURN,
        prompt=None,
        started=started,
        started_at=datetime.datetime.now(datetime.UTC),
    )


def test_writer_fills_gaps_and_pads_to_the_turn(tmp_path: pathlib.Path) -> None:
    """Lost packets and the quiet end of a turn become silence, not a shorter file."""
    writer = _writer(tmp_path / "gaps.ogg", started=100.0)
    writer.open()
    for index in (0, 1, 2, 6, 7, 5):
        writer.write(
            OpusPacket(
                SILENCE_20MS,
                timestamp=7_000_000 + index * SAMPLES_20MS,
                generation=0,
                arrival=100.5 + index * 0.02,
            )
        )

    seconds = writer.close(ended=102.0)

    # 0.5 s of leading silence, packets 0-2, a filled gap of 3, packets 6-7
    # (5 came too late), then silence to the 2 s of the turn.
    assert writer.packets == 5
    assert writer.dropped == 1
    assert writer.filled == 25 + 3 + 67
    assert seconds == pytest.approx(2.0, abs=0.02)
    samples, _ = decode(tmp_path / "gaps.ogg")
    assert samples.size / CLOCK_RATE == pytest.approx(2.0, abs=0.02)
