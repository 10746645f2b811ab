"""The embedded store: room history in one SQLite file in the data directory.

The default for a single node. Every append is one transaction committed with
``synchronous=FULL`` in WAL mode, so an answer acknowledged after
:meth:`SqliteStore.append` returned survives a crash or a power cut.
"""

from __future__ import annotations

import asyncio
import logging
import pathlib
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import aiosqlite

from .errors import BackendError, ConfigError, StaleWriter
from .store import AppendResult, RoomHead, Store, new_epoch

logger = logging.getLogger(__name__)

# "offset" is an SQL keyword, hence the longer column names.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS room (
    id TEXT PRIMARY KEY,
    epoch TEXT NOT NULL,
    last_offset INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS event (
    room TEXT NOT NULL,
    event_offset INTEGER NOT NULL,
    frame BLOB NOT NULL,
    PRIMARY KEY (room, event_offset)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dedupe (
    room TEXT NOT NULL,
    key TEXT NOT NULL,
    first_offset INTEGER NOT NULL,
    PRIMARY KEY (room, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dedupe_by_offset ON dedupe (room, first_offset);
CREATE TABLE IF NOT EXISTS record (
    room TEXT NOT NULL,
    collection TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (room, collection, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS document (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (kind, key)
) WITHOUT ROWID;
"""


class SqliteStore(Store):
    """A :class:`Store` in one SQLite database file.

    One process uses the file, so :meth:`claim` always grants the room to the
    caller. All statements go through one connection, one transaction at a
    time: the SQLite writer lock is per file anyway.
    """

    def __init__(self, path: pathlib.Path, *, history_limit: int | None = None) -> None:
        if history_limit is not None:
            if history_limit < 1:
                raise ConfigError("history_limit must be at least 1", history_limit)
            self.history_limit = history_limit
        self.path = path
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    async def connect(self) -> None:
        """Open the file, creating its directory and schema when missing."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None leaves transactions to the explicit BEGIN
            # below instead of the sqlite3 module's implicit ones.
            db = await aiosqlite.connect(self.path, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise BackendError(f"cannot open SQLite store {self.path}") from exc
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            # FULL also syncs the WAL on every commit; NORMAL, the usual WAL
            # choice, may lose the last commits on power loss.
            await db.execute("PRAGMA synchronous=FULL")
            await db.execute("PRAGMA busy_timeout=5000")
            await db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            await db.close()
            raise BackendError(f"cannot prepare SQLite store {self.path}") from exc
        self._db = db
        logger.info("sqlite store: opened %s", self.path)

    async def close(self) -> None:
        """Close the database file."""
        if self._db is None:
            return
        async with self._lock:
            db, self._db = self._db, None
            await db.close()

    async def ping(self) -> None:
        """Raise :class:`BackendError` unless the file answers a query."""
        async with self._session() as db:
            await db.execute_fetchall("SELECT 1")

    async def open_room(self, room: str) -> RoomHead:
        """The room's epoch and last offset, creating an epoch if it has none."""
        async with self._session() as db:
            rows = list(
                await db.execute_fetchall(
                    "SELECT epoch, last_offset FROM room WHERE id = ?", (room,)
                )
            )
            if rows:
                return RoomHead(rows[0][0], rows[0][1])

            epoch = new_epoch()
            await db.execute(
                "INSERT INTO room (id, epoch, last_offset) VALUES (?, ?, 0)",
                (room, epoch),
            )
        logger.info("room %s: new history at epoch %s", room, epoch)
        return RoomHead(epoch, 0)

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
        async with self._transaction() as db:
            rows = list(
                await db.execute_fetchall(
                    "SELECT epoch, last_offset FROM room WHERE id = ?", (room,)
                )
            )
            if not rows or rows[0][0] != epoch or rows[0][1] != offset - 1:
                if (
                    rows
                    and rows[0][0] == epoch
                    and await self._repeats_last_append(db, room, offset, frames)
                ):
                    return AppendResult(offset)
                expected = (
                    f"epoch {rows[0][0]} and offset {rows[0][1] + 1}"
                    if rows
                    else "an opened room"
                )
                raise StaleWriter(room, expected)

            if dedupe_key is not None:
                seen = list(
                    await db.execute_fetchall(
                        "SELECT first_offset FROM dedupe WHERE room = ? AND key = ?",
                        (room, dedupe_key),
                    )
                )
                if seen:
                    return AppendResult(seen[0][0], duplicate=True)

            last = offset + len(frames) - 1
            await db.executemany(
                "INSERT INTO event (room, event_offset, frame) VALUES (?, ?, ?)",
                [(room, offset + i, bytes(frame)) for i, frame in enumerate(frames)],
            )
            await db.execute(
                "UPDATE room SET last_offset = ? WHERE id = ?", (last, room)
            )
            if dedupe_key is not None:
                await db.execute(
                    "INSERT INTO dedupe (room, key, first_offset) VALUES (?, ?, ?)",
                    (room, dedupe_key, offset),
                )

            # A key is kept as long as its event is: a client retrying after
            # that cannot recover its history either and starts afresh.
            cutoff = last - self.history_limit
            if cutoff > 0:
                await db.execute(
                    "DELETE FROM event WHERE room = ? AND event_offset <= ?",
                    (room, cutoff),
                )
                await db.execute(
                    "DELETE FROM dedupe WHERE room = ? AND first_offset <= ?",
                    (room, cutoff),
                )
        return AppendResult(offset)

    async def read(
        self, room: str, epoch: str, after: int, until: int
    ) -> list[bytes] | None:
        """Frames ``after + 1`` to ``until``, or ``None`` if not all held."""
        async with self._session() as db:
            rows = list(
                await db.execute_fetchall(
                    "SELECT epoch, last_offset FROM room WHERE id = ?", (room,)
                )
            )
            if not rows or rows[0][0] != epoch:
                return None
            if after < 0 or until < after or until > rows[0][1]:
                return None
            if after == until:
                return []
            events = list(
                await db.execute_fetchall(
                    "SELECT frame FROM event WHERE room = ?"
                    " AND event_offset > ? AND event_offset <= ?"
                    " ORDER BY event_offset",
                    (room, after, until),
                )
            )
        if len(events) != until - after:
            return None
        return [bytes(event[0]) for event in events]

    async def save_records(
        self, room: str, collection: str, records: Sequence[tuple[str, bytes]]
    ) -> None:
        """Store ``records`` in a collection of ``room``, in one transaction."""
        async with self._transaction() as db:
            await db.executemany(
                "INSERT OR REPLACE INTO record (room, collection, key, value)"
                " VALUES (?, ?, ?, ?)",
                [(room, collection, key, bytes(value)) for key, value in records],
            )

    async def load_records(self, room: str, collection: str) -> dict[str, bytes]:
        """Every record of a collection of ``room``."""
        async with self._session() as db:
            rows = await db.execute_fetchall(
                "SELECT key, value FROM record WHERE room = ? AND collection = ?",
                (room, collection),
            )
        return {row[0]: bytes(row[1]) for row in rows}

    async def save_document(self, kind: str, key: str, data: bytes) -> None:
        """Store a document, replacing any older one."""
        async with self._session() as db:
            await db.execute(
                "INSERT OR REPLACE INTO document (kind, key, data) VALUES (?, ?, ?)",
                (kind, key, bytes(data)),
            )

    async def load_document(self, kind: str, key: str) -> bytes | None:
        """A stored document, or ``None``."""
        async with self._session() as db:
            rows = list(
                await db.execute_fetchall(
                    "SELECT data FROM document WHERE kind = ? AND key = ?",
                    (kind, key),
                )
            )
        return bytes(rows[0][0]) if rows else None

    async def claim(self, room: str, node: str, ttl_ms: int) -> str:
        """The only node owns every room."""
        if ttl_ms < 1:
            raise ValueError(f"a lease needs a positive TTL, not {ttl_ms} ms")
        return node

    async def release(self, room: str, node: str) -> None:
        """Nothing to give up: no other node could take the room."""

    async def _repeats_last_append(
        self,
        db: aiosqlite.Connection,
        room: str,
        offset: int,
        frames: Sequence[bytes],
    ) -> bool:
        # The contract of every backend: an append sent again after its reply
        # was lost is answered as the first time (see rooms.store_redis).
        last = offset + len(frames) - 1
        stored = list(
            await db.execute_fetchall(
                "SELECT frame FROM event JOIN room ON room.id = event.room"
                " WHERE event.room = ? AND room.last_offset = ?"
                " AND event_offset >= ? ORDER BY event_offset",
                (room, last, offset),
            )
        )
        return [bytes(row[0]) for row in stored] == [bytes(f) for f in frames]

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[aiosqlite.Connection]:
        # One connection serves every coroutine: without the lock a read
        # could run inside another coroutine's open transaction.
        async with self._lock:
            if self._db is None:
                raise BackendError("sqlite store is not connected")
            try:
                yield self._db
            except sqlite3.Error as exc:
                raise BackendError(f"sqlite store {self.path}: {exc}") from exc

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._session() as db:
            await db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                try:
                    await db.execute("ROLLBACK")
                except sqlite3.Error:
                    logger.exception("sqlite store %s: rollback failed", self.path)
                raise
            await db.execute("COMMIT")
