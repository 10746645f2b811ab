"""Live audio end to end: signaling over the socket, the floor decides who is heard."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable
from pathlib import Path

import av
import httpx
import numpy as np
import pytest

from client_sdk.protocol import FloorGranted, FloorReleased, MediaOffer
from tests.media.conftest import hears
from tests.media.peer import TonePeer, band_share, eventually

from .conftest import Api, Crowd, ServerProcess, Watcher, bearer

pytestmark = pytest.mark.timeout(90)


async def connect_media(
    watcher: Watcher, room: str, frequency: float | None, peers: list[TonePeer]
) -> TonePeer:
    """Offer over the lesson's WebSocket and apply the server's answer."""
    peer = TonePeer(watcher.name, frequency)
    peers.append(peer)
    answer = await watcher.client.request(
        MediaOffer(id="", room=room, sdp=await peer.offer())
    )
    await peer.accept(answer.sdp)
    await peer.connected(within=15)
    return peer


async def test_floor_holder_is_heard_and_others_are_not(
    server: ServerProcess, api: Api, crowd: Crowd, peers: list[TonePeer]
) -> None:
    """A's tone reaches B and C with the floor; D's never does; revoke stops A."""
    lesson_id = f"media-{secrets.token_hex(3)}"
    created = await api.create(
        {
            "id": lesson_id,
            "title": "Speaking",
            "host": {"user": "t-host"},
            "classes": [
                {"school": "A", "class": "7A", "co_teacher": {"user": "co-a"}},
                {"school": "B", "class": "7B", "co_teacher": {"user": "co-b"}},
                {"school": "C", "class": "7C"},
            ],
        }
    )
    assert created.status_code == 201, created.text
    body = created.json()
    host = await crowd.enter("host", server, body["host"]["token"], lesson_id)
    students = {}
    tokens = {}
    for name, index in (("A", 0), ("B", 1), ("C", 2), ("D", 1)):
        tokens[name] = await api.student_token(body["classes"][index]["code"], name)
        students[name] = await crowd.enter(name, server, tokens[name], lesson_id)

    await connect_media(students["A"], lesson_id, 440, peers)
    b = await connect_media(students["B"], lesson_id, None, peers)
    c = await connect_media(students["C"], lesson_id, None, peers)
    await connect_media(students["D"], lesson_id, 880, peers)

    a_user = students["A"].client.hello.user  # type: ignore[union-attr]
    await host.client.grant_floor(lesson_id, user=a_user)
    await students["B"].wait(FloorGranted)
    started = await hears(b, 440, within=5)
    await hears(c, 440, within=5)
    await asyncio.sleep(1.0)

    for listener in (b, c):
        heard = listener.audio(started)
        assert band_share(heard, 880) < 0.01

    await host.client.revoke_floor(lesson_id)
    released = await students["C"].wait(FloorReleased)
    await asyncio.sleep(0.8)
    after = b.audio(time.monotonic() - 0.5)
    assert released.user == a_user
    assert band_share(after, 440) < 0.05

    # The turn was recorded to its own file, with its metadata beside it.
    folder = Path(server.directory) / "data" / "recordings" / lesson_id

    def recorded() -> bool:
        return any(folder.glob("*.ogg")) and any(folder.glob("*.json"))

    await eventually(recorded, 5.0, "a recording of A's turn")

    # The host and A's own co-teacher may list and download it; B's
    # co-teacher and students may not.
    def get(path: str, token: str) -> Awaitable[httpx.Response]:
        return api.http.get(path, headers=bearer(token))

    base = f"/api/lessons/{lesson_id}/recordings"
    host_token = body["host"]["token"]
    listed = (await get(base, host_token)).json()
    assert [r["participant"] for r in listed] == [a_user]
    name = listed[0]["file"]
    audio = await get(f"{base}/{name}", host_token)
    own = await get(f"{base}/{name}", body["classes"][0]["co_teacher"]["token"])
    other = await get(f"{base}/{name}", body["classes"][1]["co_teacher"]["token"])
    student = await get(base, tokens["B"])
    assert audio.status_code == own.status_code == 200
    assert audio.headers["content-type"] == "audio/ogg"
    assert other.status_code == 404
    assert student.status_code == 403

    # The file holds A's tone for as long as the turn lasted (within 10%).
    path = folder / name
    samples, seconds = decode_ogg(path)
    assert abs(seconds - released.spoke_ms / 1000) <= 0.1 * released.spoke_ms / 1000
    assert band_share(samples, 440) > 0.5


def decode_ogg(path: Path) -> tuple[np.ndarray, float]:
    """Mono samples of an Ogg Opus file at 48 kHz, and its length in seconds."""
    chunks = []
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            data = frame.to_ndarray().astype(np.float64)
            chunks.append(data.reshape(-1, frame.layout.nb_channels).mean(axis=1))
    samples = np.concatenate(chunks) / 32768.0
    return samples, samples.size / 48_000


async def test_a_second_tab_closing_keeps_the_first_tabs_audio(
    server: ServerProcess, api: Api, crowd: Crowd
) -> None:
    """Media belongs to the connection that offered it; leave closes it."""
    from client_sdk import AudioPeer

    lesson_id = f"tabs-{secrets.token_hex(3)}"
    created = await api.create(
        {
            "id": lesson_id,
            "title": "Tabs",
            "host": {"user": "t-host"},
            "classes": [{"school": "A", "class": "7A"}],
        }
    )
    body = created.json()
    host = await crowd.enter("host", server, body["host"]["token"], lesson_id)
    speaker_token = await api.student_token(body["classes"][0]["code"], "S")
    listener_token = await api.student_token(body["classes"][0]["code"], "L")
    speaker = await crowd.enter("S", server, speaker_token, lesson_id)
    tab1 = await crowd.enter("L1", server, listener_token, lesson_id)
    tab2 = await crowd.enter("L2", server, listener_token, lesson_id)

    async with (
        AudioPeer(speaker.client, lesson_id, tone_hz=440) as _,
        AudioPeer(tab1.client, lesson_id) as ears,
    ):
        user = speaker.client.hello.user  # type: ignore[union-attr]
        await host.client.grant_floor(lesson_id, user=user)
        await eventually(lambda: ears.frames_received > 50, 5.0, "tab 1 hears")

        # The listener's second tab leaves the room and closes: tab 1 keeps
        # hearing, since its media was never tab 2's.
        await tab2.client.leave(lesson_id)
        await tab2.close()
        before = ears.frames_received
        await asyncio.sleep(1.0)
        assert ears.frames_received > before + 25

        # Tab 1 leaving the room closes its media with it.
        await tab1.client.leave(lesson_id)
        await asyncio.sleep(0.5)
        after = ears.frames_received
        await asyncio.sleep(0.8)
        assert ears.frames_received <= after + 2
