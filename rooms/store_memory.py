"""The in-process store: room history in dictionaries, lost when the process ends.

Meant for tests and for trying lophoc out; an answer acknowledged by a node
using it does not survive a restart, so production uses SQLite or Redis.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from .errors import BackendError, ConfigError, StaleWriter
from .store import AppendResult, RoomHead, Store, new_epoch

logger = logging.getLogger(__name__)


@dataclass
class _History:
    epoch: str
    offset: int = 0
    #: Frames of offsets ``offset - len(frames) + 1`` to ``offset``.
    frames: deque[bytes] = field(default_factory=deque)
    #: Deduplication keys in the order they were appended, so in offset order.
    dedupe: dict[str, int] = field(default_factory=dict)


class MemoryStore(Store):
    """A :class:`Store` kept in this process's memory.

    There is one node, so :meth:`claim` always grants the room to the caller.
    """

    def __init__(self, *, history_limit: int | None = None) -> None:
        if history_limit is not None:
            if history_limit < 1:
                raise ConfigError("history_limit must be at least 1", history_limit)
            self.history_limit = history_limit
        self._rooms: dict[str, _History] | None = None
        self._records: dict[tuple[str, str], dict[str, bytes]] = {}
        self._documents: dict[tuple[str, str], bytes] = {}

    async def connect(self) -> None:
        """Start with no rooms."""
        self._rooms = {}

    async def close(self) -> None:
        """Forget every room, record and document."""
        self._rooms = None
        self._records.clear()
        self._documents.clear()

    async def ping(self) -> None:
        """Raise :class:`BackendError` unless :meth:`connect` was called."""
        self._held()

    async def open_room(self, room: str) -> RoomHead:
        """The room's epoch and last offset, creating an epoch if it has none."""
        history = self._held().get(room)
        if history is None:
            history = self._held().setdefault(room, _History(new_epoch()))
            logger.info("room %s: new history at epoch %s", room, history.epoch)
        return RoomHead(history.epoch, history.offset)

    async def append(
        self,
        room: str,
        epoch: str,
        offset: int,
        frames: Sequence[bytes],
        dedupe_key: str | None = None,
    ) -> AppendResult:
        """Store ``frames`` from ``offset`` on; see :meth:`Store.append`."""
        if not frames:
            raise ValueError("append needs at least one frame")
        history = self._held().get(room)
        if history is None or history.epoch != epoch:
            raise StaleWriter(room, _expected(history))
        if history.offset != offset - 1:
            if _repeats_last_append(history, offset, frames):
                return AppendResult(offset)
            raise StaleWriter(room, _expected(history))

        if dedupe_key is not None and dedupe_key in history.dedupe:
            return AppendResult(history.dedupe[dedupe_key], duplicate=True)

        history.frames.extend(bytes(frame) for frame in frames)
        history.offset += len(frames)
        if dedupe_key is not None:
            history.dedupe[dedupe_key] = offset
        self._trim(history)
        return AppendResult(offset)

    async def read(
        self, room: str, epoch: str, after: int, until: int
    ) -> list[bytes] | None:
        """Frames ``after + 1`` to ``until``, or ``None`` if not all held."""
        history = self._held().get(room)
        if history is None or history.epoch != epoch:
            return None
        first = history.offset - len(history.frames) + 1
        if after == until and 0 <= after <= history.offset:
            return []
        if after + 1 < first or until > history.offset or until < after:
            return None
        return list(
            itertools.islice(history.frames, after + 1 - first, until + 1 - first)
        )

    async def save_records(
        self, room: str, collection: str, records: Sequence[tuple[str, bytes]]
    ) -> None:
        """Store ``records`` in a collection of ``room``, replacing equal keys."""
        self._held()
        stored = self._records.setdefault((room, collection), {})
        stored.update((key, bytes(value)) for key, value in records)

    async def load_records(self, room: str, collection: str) -> dict[str, bytes]:
        """Every record of a collection of ``room``."""
        self._held()
        return dict(self._records.get((room, collection), {}))

    async def save_document(self, kind: str, key: str, data: bytes) -> None:
        """Store a document, replacing any older one."""
        self._held()
        self._documents[kind, key] = bytes(data)

    async def load_document(self, kind: str, key: str) -> bytes | None:
        """A stored document, or ``None``."""
        self._held()
        return self._documents.get((kind, key))

    async def claim(self, room: str, node: str, ttl_ms: int) -> str:
        """The only node owns every room."""
        if ttl_ms < 1:
            raise ValueError(f"a lease needs a positive TTL, not {ttl_ms} ms")
        self._held()
        return node

    async def release(self, room: str, node: str) -> None:
        """Nothing to give up: no other node could take the room."""
        self._held()

    def _held(self) -> dict[str, _History]:
        if self._rooms is None:
            raise BackendError("memory store is not connected")
        return self._rooms

    def _trim(self, history: _History) -> None:
        while len(history.frames) > self.history_limit:
            history.frames.popleft()

        # A key is kept as long as its event is: a client retrying after that
        # cannot recover its history either and starts from a fresh snapshot.
        cutoff = history.offset - self.history_limit
        while history.dedupe:
            key, offset = next(iter(history.dedupe.items()))
            if offset > cutoff:
                break
            del history.dedupe[key]


def _repeats_last_append(
    history: _History, offset: int, frames: Sequence[bytes]
) -> bool:
    # The contract of every backend: an append sent again after its reply
    # was lost is answered as the first time (see rooms.store_redis).
    if history.offset != offset + len(frames) - 1 or len(history.frames) < len(frames):
        return False
    start = len(history.frames) - len(frames)
    stored = itertools.islice(history.frames, start, None)
    return all(a == b for a, b in zip(stored, frames, strict=True))


def _expected(history: _History | None) -> str:
    if history is None:
        return "an opened room"
    return f"epoch {history.epoch} and offset {history.offset + 1}"
