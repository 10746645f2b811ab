"""AudioPeer against a real ``lophoc serve``: tones and files heard, leaving heard."""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest

from client_sdk import AudioPeer, AudioPeerError, Client, Role, ToneTrack
from client_sdk.protocol import FloorGranted
from server import auth
from tests.helpers import closing, write_tone
from tests.lessons.conftest import SECRET, Api, Crowd, ServerProcess, Watcher
from tests.media.peer import eventually, peak

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server process for the module, on the embedded defaults."""
    process = ServerProcess(tmp_path_factory.mktemp("audio-server"))
    process.start()
    yield process
    process.stop()


@pytest.fixture
async def api(server: ServerProcess) -> AsyncIterator[Api]:
    """The HTTP API of the module's server."""
    async with closing(Api(server)) as client:
        yield client


@pytest.fixture
async def crowd() -> AsyncIterator[Crowd]:
    """Watched SDK clients of this test, closed at the end."""
    async with closing(Crowd()) as people:
        yield people


@pytest.fixture
async def peers() -> AsyncIterator[list[AudioPeer]]:
    """Audio peers of this test, closed before their clients."""
    made: list[AudioPeer] = []
    yield made
    await asyncio.gather(*(peer.close() for peer in made))


class Lesson:
    """A lesson of the module's server with its host and two students A and B."""

    def __init__(self, id: str, host: Watcher, a: Watcher, b: Watcher) -> None:
        self.id = id
        self.host = host
        self.a = a
        self.b = b

    async def give_floor_to_a(self) -> str:
        """The host grants A the floor; returns A's user id once B saw it."""
        hello = self.a.client.hello
        assert hello is not None
        user = hello.user
        await self.host.client.grant_floor(self.id, user=user)
        await self.b.wait(FloorGranted, lambda granted: granted.turn.user == user)
        return user


@pytest.fixture
async def lesson(server: ServerProcess, api: Api, crowd: Crowd) -> Lesson:
    """A new lesson, created by an administrator, with everyone connected."""
    lesson_id = f"audio-{secrets.token_hex(3)}"
    admin = auth.mint(SECRET, user="admin-audio", role=Role.ADMIN, rooms=["admin"])
    created = await api.create(
        {
            "id": lesson_id,
            "title": "Listening",
            "host": {"user": "t-audio"},
            "classes": [{"school": "A", "class": "8A"}],
        },
        token=admin,
    )
    assert created.status_code == 201, created.text
    body = created.json()
    code = body["classes"][0]["code"]
    host = await crowd.enter("host", server, body["host"]["token"], lesson_id)
    a = await crowd.enter("A", server, await api.student_token(code, "A"), lesson_id)
    b = await crowd.enter("B", server, await api.student_token(code, "B"), lesson_id)
    return Lesson(lesson_id, host, a, b)


async def started(peers: list[AudioPeer], peer: AudioPeer) -> AudioPeer:
    """Start ``peer``, to be closed when the test ends."""
    peers.append(peer)
    await peer.start()
    return peer


async def hears(peer: AudioPeer, frequency: float, within: float = 5.0) -> float:
    """Wait until ``peer``'s last 0.4 s peak within 3 Hz of ``frequency``."""
    found: float | None = None

    def heard() -> bool:
        nonlocal found
        found = peer.dominant_frequency(time.monotonic() - 0.4)
        return found is not None and abs(found - frequency) <= 3

    try:
        await eventually(heard, within, f"hearing {frequency} Hz")
    except TimeoutError as exc:
        pytest.fail(f"{exc}: last peak {found} Hz after {peer.frames_received} frames")
    assert found is not None
    return found


async def test_floor_holders_tone_is_heard_by_another_student(
    lesson: Lesson, peers: list[AudioPeer]
) -> None:
    """A's 523 Hz tone, with the floor, reaches B's slot at 523 Hz."""
    await lesson.give_floor_to_a()
    b = await started(peers, AudioPeer(lesson.b.client, lesson.id))
    a = await started(peers, AudioPeer(lesson.a.client, lesson.id, tone_hz=523))

    assert (a.state, b.state) == ("connected", "connected")
    since = time.monotonic()
    assert abs(await hears(b, 523) - 523) <= 3
    await asyncio.sleep(0.5)

    frames = b.frames(0, since)
    assert len(frames) >= 10
    assert all(f.slot == 0 and f.sample_rate == 48_000 for f in frames)
    assert [f.at for f in frames] == sorted(f.at for f in frames)
    assert b.audio(0, since).size == sum(f.sample_count for f in frames)
    assert b.frames_received >= len(frames)
    # A hears nobody: the server never sends a speaker back to themself.
    assert a.frames_received == 0


async def test_a_wav_file_reaches_a_listener(
    lesson: Lesson, peers: list[AudioPeer], tmp_path: Path
) -> None:
    """A 3 s WAV of 660 Hz published by the floor holder is heard at 660 Hz."""
    # 44.1 kHz, so the player's resampling to Opus's 48 kHz is on the path.
    tone = write_tone(tmp_path / "tone.wav", 660, 3.0, 44_100, level=9830)
    await lesson.give_floor_to_a()
    b = await started(peers, AudioPeer(lesson.b.client, lesson.id))
    await started(peers, AudioPeer(lesson.a.client, lesson.id, file=tone, slots=0))

    assert abs(await hears(b, 660, within=4.0) - 660) <= 3


async def test_an_unreadable_file_is_refused_before_any_offer(
    lesson: Lesson, tmp_path: Path
) -> None:
    """A file FFmpeg cannot read fails start() with AudioPeerError, closed."""
    junk = tmp_path / "notes.wav"
    junk.write_text("not audio at all")
    peer = AudioPeer(lesson.a.client, lesson.id, file=junk)

    with pytest.raises(AudioPeerError, match="cannot play audio file"):
        await peer.start()
    assert await peer.close() is None


async def test_close_leaves_and_the_listener_hears_nothing_new(
    server: ServerProcess, lesson: Lesson, peers: list[AudioPeer]
) -> None:
    """close() sends media_leave: the server drops A and B hears no more of A."""
    a_user = await lesson.give_floor_to_a()
    b = await started(peers, AudioPeer(lesson.b.client, lesson.id))
    a = await started(peers, AudioPeer(lesson.a.client, lesson.id, tone_hz=440))
    await hears(b, 440)

    left = await a.close()
    closed_at = time.monotonic()
    assert left is not None
    assert left.room == lesson.id
    assert a.state == "closed"

    # Packets already in flight or in B's jitter buffer may still play.
    await asyncio.sleep(1.0)
    assert b.frames(since=closed_at + 0.3) == []
    assert b.dominant_frequency(closed_at + 0.3) is None
    assert b.state == "connected"
    assert f"{lesson.id}: {a_user} left media" in server.log_tail(400)


async def test_tone_track_is_continuous_across_its_cached_second() -> None:
    """Whole and fractional tones keep phase frame to frame and past one second."""

    async def play(track: ToneTrack, frames: int) -> np.ndarray:
        chunks = [(await track.recv()).to_ndarray()[0] for _ in range(frames)]
        return np.concatenate(chunks).astype(np.float64) / 32768

    # 55 frames of 20 ms: past the end of the whole tone's one-second table.
    whole, fractional = await asyncio.gather(
        play(ToneTrack(523), 55), play(ToneTrack(300.5), 55)
    )
    for samples, frequency in ((whole, 523), (fractional, 300.5)):
        found = peak(samples)
        assert found is not None
        assert abs(found.frequency - frequency) < 1
        # A sine of amplitude 0.3 moves at most 0.3 * 2 pi f / rate per sample.
        step = 0.3 * 2 * math.pi * frequency / 48_000
        assert float(np.max(np.abs(np.diff(samples)))) <= step * 1.01 + 1 / 32768


def test_arguments_are_checked_before_anything_is_sent() -> None:
    """Contradictory or empty choices raise ValueError in the constructor."""
    client = Client("ws://127.0.0.1:9/ws", "token", "room")
    with pytest.raises(ValueError, match="not both"):
        AudioPeer(client, "room", tone_hz=440, file="a.wav")
    with pytest.raises(ValueError, match="no slots"):
        AudioPeer(client, "room", slots=0)
    with pytest.raises(ValueError, match="frequency"):
        AudioPeer(client, "room", tone_hz=30_000)
    assert AudioPeer(client, "room", tone_hz=440, slots=0).state == "new"
