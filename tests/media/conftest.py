"""Fixtures of the media tests: a media room and real aiortc peers joined to it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import numpy as np
import pytest
import pytest_asyncio

from media.relay import MediaRoom
from tests.media.peer import Peak, TonePeer, eventually, peak

Join = Callable[..., Awaitable[TonePeer]]


@pytest_asyncio.fixture
async def room() -> AsyncIterator[MediaRoom]:
    """A media room with no STUN or TURN server: host candidates only."""
    media = MediaRoom("room-1", ice_servers=())
    yield media
    await media.close()


@pytest_asyncio.fixture
async def join(room: MediaRoom) -> AsyncIterator[Join]:
    """Connects a :class:`TonePeer` to the room over loopback, signaling by hand."""
    peers: list[TonePeer] = []

    async def connect(
        name: str, frequency: float | None, *, slots: int = 1, amplitude: float = 0.3
    ) -> TonePeer:
        peer = TonePeer(name, frequency, slots=slots, amplitude=amplitude)
        peers.append(peer)
        answer = await room.answer(name, await peer.offer())
        await peer.accept(answer)
        await peer.connected(within=10)
        return peer

    yield connect
    await room.close()
    await asyncio.gather(*(peer.close() for peer in peers))


async def hears(
    peer: TonePeer, frequency: float, *, window: float = 0.4, within: float = 3.0
) -> float:
    """Wait until ``peer``'s last ``window`` seconds peak at ``frequency``.

    Returns when it first did, as ``time.monotonic()``; fails after
    ``within`` seconds.
    """
    found: Peak | None = None
    at = 0.0

    def heard() -> bool:
        nonlocal found, at
        at = time.monotonic()
        found = peak(peer.audio(at - window))
        return found is not None and abs(found.frequency - frequency) <= 10

    try:
        await eventually(heard, within, f"{peer.name} hearing {frequency} Hz")
    except TimeoutError as exc:
        pytest.fail(f"{exc}: {found}")
    return at


def tone_of(frequency: float) -> Callable[[np.ndarray], bool]:
    """A test on one 20 ms frame: is it mostly ``frequency``?"""

    def test(samples: np.ndarray) -> bool:
        found = peak(np.tile(samples, 3))
        return (
            found is not None
            and found.level_dbfs > -40
            and abs(found.frequency - frequency) <= 40
        )

    return test
