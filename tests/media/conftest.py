"""Fixtures of the media tests: a media room and real aiortc peers joined to it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol, TypeVar

import numpy as np
import pytest
import pytest_asyncio

from media.relay import MediaRoom
from tests.media.peer import HandSignaled, Peak, TonePeer, eventually, peak

Join = Callable[..., Awaitable[TonePeer]]
PeerT = TypeVar("PeerT", bound=HandSignaled)


class Joined(Protocol):
    """The ``joined`` fixture: join a peer to the room, get it back."""

    async def __call__(self, peer: PeerT) -> PeerT: ...


@pytest_asyncio.fixture
async def room() -> AsyncIterator[MediaRoom]:
    """A media room with no STUN or TURN server: host candidates only."""
    media = MediaRoom("room-1", ice_servers=())
    yield media
    await media.close()


@pytest_asyncio.fixture
async def joined(room: MediaRoom) -> AsyncIterator[Joined]:
    """Joins hand-signaled peers to the room; closes the room, then them."""
    peers: list[HandSignaled] = []

    async def connect(peer: PeerT) -> PeerT:
        peers.append(peer)
        await peer.join(room)
        return peer

    yield connect
    await room.close()
    await asyncio.gather(*(peer.close() for peer in peers))


@pytest_asyncio.fixture
async def join(joined: Joined) -> Join:
    """Connects a :class:`TonePeer` to the room, signaling by hand."""

    async def connect(
        name: str, frequency: float | None, *, slots: int = 1, amplitude: float = 0.3
    ) -> TonePeer:
        return await joined(TonePeer(name, frequency, slots=slots, amplitude=amplitude))

    return connect


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
