"""What the audio and video slot tracks share: one source at a time, a queue.

A slot is one m-line a participant receives on. Its track is fed by one
source at a time (a speaker's microphone, a published camera) through a
bounded queue that the source fills from the event loop and aiortc's sender
empties. :class:`SlotTrack` keeps the source, its ``outlets`` set, the queue
and the end of the track; :mod:`media.forward` and :mod:`media.video` add
what is particular to Opus and to video, and their sources start from
:class:`Inbound`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from fractions import Fraction
from typing import Any, Generic, Protocol, TypeVar

from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av.packet import Packet
from av.stream import Stream


class Source(Protocol):
    """Anything that feeds slots: it keeps the slots it feeds in ``outlets``."""

    @property
    def outlets(self) -> set[Any]:
        """The slots this source feeds now."""


SourceT = TypeVar("SourceT", bound=Source)
ItemT = TypeVar("ItemT")
OutletT = TypeVar("OutletT")


class Inbound(Generic[OutletT]):
    """A participant's published track as a source: its slots and counters."""

    def __init__(self, participant: str) -> None:
        self.participant = participant
        #: The slots this source feeds now; kept by the slots' ``assign``.
        self.outlets: set[OutletT] = set()
        self.received = 0
        self.dropped = 0


class SlotTrack(MediaStreamTrack, Generic[SourceT, ItemT]):
    """A slot's track: ``source`` feeds it items through a queue of ``size``."""

    def __init__(self, size: int) -> None:
        super().__init__()
        #: Packets handed to aiortc's sender.
        self.sent = 0
        self._source: SourceT | None = None
        self._queue: asyncio.Queue[ItemT | None] = asyncio.Queue(size)

    @property
    def source(self) -> SourceT | None:
        """The source this slot forwards now, if any."""
        return self._source

    def assign(self, source: SourceT | None) -> None:
        """Forward ``source`` on this slot from its next item (None: nothing)."""
        self._switch(source)

    def _switch(self, source: SourceT | None) -> bool:
        """Leave the current source for ``source``; False if it is the same.

        Items of the previous source still queued are dropped, so a source
        taken off stops at once.
        """
        if source is self._source:
            return False
        if self._source is not None:
            self._source.outlets.discard(self)
        self._source = source
        self._drain()
        if source is not None and self.readyState == "live":
            source.outlets.add(self)
        return True

    async def _take(self) -> ItemT:
        """The next queued item; MediaStreamError once the track has ended."""
        if self.readyState != "live":
            raise MediaStreamError
        item = await self._queue.get()
        if item is None:
            raise MediaStreamError
        return item

    def _packet(self, data: bytes, pts: int, time_base: Fraction) -> Packet[Stream]:
        """An encoded packet for aiortc's sender, which packs it as it is."""
        out = Packet(data)
        out.pts = pts
        out.time_base = time_base
        self.sent += 1
        return out

    def stop(self) -> None:
        """End the track: leave the source and wake a waiting ``recv``."""
        if self._source is not None:
            self._source.outlets.discard(self)
            self._source = None
        if self.readyState == "live":
            super().stop()
            self._drain()
            self._queue.put_nowait(None)

    def _drain(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()


def fill(slots: Sequence[SlotTrack[SourceT, Any]], wanted: Sequence[SourceT]) -> None:
    """Give ``slots`` the first of ``wanted``, in order, one source a slot.

    A slot keeps its source while that source is still among those given;
    a source new to the slots takes a slot that fell free, so what a client
    shows on one slot does not move to another when the list changes.
    """
    chosen = list(wanted[: len(slots)])
    kept = {id(slot.source) for slot in slots if slot.source in chosen}
    newcomers = [source for source in chosen if id(source) not in kept]
    for slot in slots:
        if slot.source is None or slot.source not in chosen:
            slot.assign(newcomers.pop(0) if newcomers else None)
