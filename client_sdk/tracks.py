"""What generated and received media tracks share: pacing, reading to the end.

A track built from a generator (a tone, a colour pattern, a loop of encoded
frames) would otherwise hand aiortc its frames as fast as the sender reads
them: :class:`Pacer` holds each one back to its place on the monotonic
clock. :func:`frames_of` reads what a remote track delivers until it ends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TypeVar

from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av.frame import Frame

FrameT = TypeVar("FrameT", bound=Frame)


class Pacer:
    """The clock of one generated track, started by its first frame.

    A frame that is late goes at once, so a track held up by a busy event
    loop catches up with its timeline instead of drifting behind it.
    """

    def __init__(self) -> None:
        self._start: float | None = None

    async def wait(self, track: MediaStreamTrack, offset: float) -> None:
        """Sleep until ``offset`` seconds after the first frame.

        Raises :class:`MediaStreamError` once ``track`` has ended, as a
        track's ``recv`` must.
        """
        if track.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        delay = self._start + offset - now
        if delay > 0:
            await asyncio.sleep(delay)


async def frames_of(
    track: MediaStreamTrack, kind: type[FrameT]
) -> AsyncIterator[FrameT]:
    """The frames of ``kind`` that ``track`` delivers, until either side ends it."""
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        if isinstance(frame, kind):
            yield frame
