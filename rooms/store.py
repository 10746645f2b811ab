"""The durable store: room history, epochs, deduplication and ownership.

A store keeps, per room, an epoch, the offset of its last event, the encoded
frames of its recent events, and the client command ids already applied. The
room's single writer appends through :meth:`Store.append`, which is the only
place offsets are assigned; everything a client was acknowledged for went
through it first.

Backends are chosen by URL (see :func:`rooms.backends.open_store`) and all of
them pass the contract suite in ``tests/rooms/test_store_contract.py``.
"""

from __future__ import annotations

import abc
import secrets
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RoomHead:
    """Where a room's history stands: its epoch and its last offset."""

    epoch: str
    offset: int


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What :meth:`Store.append` did.

    ``offset`` is the offset of the first appended frame; when ``duplicate`` is
    true nothing was written and ``offset`` is the one recorded the first time
    the same deduplication key was appended.
    """

    offset: int
    duplicate: bool = False


def new_epoch() -> str:
    """A fresh epoch id: random, so a lost and rebuilt history never reuses one."""
    return secrets.token_hex(6)


class Store(abc.ABC):
    """Durable room state shared by every node of a deployment."""

    #: Events kept per room for recovery; older ones are trimmed.
    history_limit: int = 10_000

    @abc.abstractmethod
    async def connect(self) -> None:
        """Open connections or files; called once before any other method."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release everything :meth:`connect` opened."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise :class:`rooms.errors.BackendError` if the store is unreachable."""

    @abc.abstractmethod
    async def open_room(self, room: str) -> RoomHead:
        """The room's epoch and last offset, creating an epoch if it has none."""

    @abc.abstractmethod
    async def append(
        self,
        room: str,
        epoch: str,
        offset: int,
        frames: Sequence[bytes],
        dedupe_key: str | None = None,
    ) -> AppendResult:
        """Store ``frames`` at ``offset``, ``offset + 1``, ... atomically.

        Refuses with :class:`rooms.errors.StaleWriter` unless the room is at
        ``epoch`` and its last offset is ``offset - 1``. When ``dedupe_key``
        was appended before, writes nothing and returns the first offset.
        Sending exactly the last append again (same epoch, offset and
        frames, as a retry after a lost reply does) returns its result.
        """

    @abc.abstractmethod
    async def read(
        self, room: str, epoch: str, after: int, until: int
    ) -> list[bytes] | None:
        """Frames of offsets ``after + 1`` to ``until``, in order.

        Returns ``None`` when the room is not at ``epoch`` any more or when
        part of that range was trimmed: the caller cannot recover from it.
        """

    @abc.abstractmethod
    async def save_records(
        self, room: str, collection: str, records: Sequence[tuple[str, bytes]]
    ) -> None:
        """Store ``records`` (key, value) in a collection of ``room`` at once.

        A key already present is overwritten. Used for answers, which are
        private to their writer and teachers, so not room events.
        """

    @abc.abstractmethod
    async def load_records(self, room: str, collection: str) -> dict[str, bytes]:
        """Every record of a collection of ``room``."""

    @abc.abstractmethod
    async def save_document(self, kind: str, key: str, data: bytes) -> None:
        """Store a document (a lesson's plan), replacing any older one."""

    @abc.abstractmethod
    async def load_document(self, kind: str, key: str) -> bytes | None:
        """A stored document, or ``None``."""

    @abc.abstractmethod
    async def claim(self, room: str, node: str, ttl_ms: int) -> str:
        """Take or renew ownership of ``room`` for ``node``; return the owner.

        The owner is ``node`` when the room had no owner, or had ``node``
        already (the lease is then extended by ``ttl_ms``).
        """

    @abc.abstractmethod
    async def release(self, room: str, node: str) -> None:
        """Give up ownership of ``room`` if ``node`` holds it."""
