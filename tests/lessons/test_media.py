"""Live audio end to end: signaling over the socket, the floor decides who is heard."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from client_sdk.protocol import FloorGranted, FloorReleased, MediaOffer
from tests.media.conftest import hears
from tests.media.peer import TonePeer, band_share, eventually

from .conftest import Api, Crowd, ServerProcess, Watcher

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def api(server: ServerProcess) -> AsyncIterator[Api]:
    """The HTTP API of the module's server."""
    client = Api(server)
    yield client
    await client.close()


@pytest.fixture
async def peers() -> AsyncIterator[list[TonePeer]]:
    """Real aiortc peers, closed at the end."""
    made: list[TonePeer] = []
    yield made
    await asyncio.gather(*(peer.close() for peer in made))


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
                {"school": "A", "class": "7A"},
                {"school": "B", "class": "7B"},
                {"school": "C", "class": "7C"},
            ],
        }
    )
    assert created.status_code == 201, created.text
    body = created.json()
    host = await crowd.enter("host", server, body["host"]["token"], lesson_id)
    students = {}
    for name, index in (("A", 0), ("B", 1), ("C", 2), ("D", 1)):
        token = await api.student_token(body["classes"][index]["code"], name)
        students[name] = await crowd.enter(name, server, token, lesson_id)

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
