"""The embedded store: room history in one SQLite file in the data directory.

The default for a single node. Every append is one transaction committed with
``synchronous=FULL`` in WAL mode, so an answer acknowledged after
:meth:`SqliteStore.append` returned survives a crash or a power cut.

One thread of the store's own (a one-worker
:class:`~concurrent.futures.ThreadPoolExecutor`) holds the connection and runs
each call of the store whole, its transaction included: a call costs the event
loop one hand-off to that thread and one wake-up back, however many statements
it runs. A quiz burst commits a group of answers every few hundred
microseconds, and a hand-off per statement (``BEGIN``, the inserts,
``COMMIT``), as an asyncio wrapper of :mod:`sqlite3` makes, cost more CPU than
the commit and its fsync together.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import pathlib
import sqlite3
from collections.abc import Callable, Sequence
from typing import TypeVar

from .errors import BackendError, ConfigError, StaleWriter
from .store import AppendResult, RoomHead, Store, new_epoch

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Rows in one INSERT of records: four parameters each, well under SQLite's
#: default limit of 32,766 parameters per statement.
_ROWS_PER_INSERT = 1000

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
    caller. Every call runs on the store's thread, one at a time in the order
    made, each transaction whole: the SQLite writer lock is per file anyway.
    """

    def __init__(self, path: pathlib.Path, *, history_limit: int | None = None) -> None:
        if history_limit is not None:
            if history_limit < 1:
                raise ConfigError("history_limit must be at least 1", history_limit)
            self.history_limit = history_limit
        self.path = path
        #: The store's thread; ``None`` before connect and after close.
        self._thread: concurrent.futures.ThreadPoolExecutor | None = None
        #: Touched on the store's thread only.
        self._db: sqlite3.Connection | None = None

    async def connect(self) -> None:
        """Open the file, creating its directory and schema when missing."""
        if self._thread is not None:
            return
        self._thread = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="lophoc-sqlite"
        )
        try:
            await self._call(self._open)
        except BaseException:
            thread, self._thread = self._thread, None
            thread.shutdown(wait=False)
            raise
        logger.info("sqlite store: opened %s", self.path)

    async def close(self) -> None:
        """Close the database file once the calls already made have run."""
        if self._thread is None:
            return
        try:
            await self._call(self._shut)
        finally:
            thread, self._thread = self._thread, None
            if thread is not None:
                thread.shutdown(wait=False)

    async def ping(self) -> None:
        """Raise :class:`BackendError` unless the file answers a query."""
        await self._call(lambda: self._connection().execute("SELECT 1").fetchall())

    async def open_room(self, room: str) -> RoomHead:
        """The room's epoch and last offset, creating an epoch if it has none."""
        head, created = await self._call(lambda: self._open_room(room))
        if created:
            logger.info("room %s: new history at epoch %s", room, head.epoch)
        return head

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
        return await self._call(
            lambda: self._transaction(
                lambda db: self._append(db, room, epoch, offset, frames, dedupe_key)
            )
        )

    async def read(
        self, room: str, epoch: str, after: int, until: int
    ) -> list[bytes] | None:
        """Frames ``after + 1`` to ``until``, or ``None`` if not all held."""
        return await self._call(lambda: self._read(room, epoch, after, until))

    async def save_records(
        self, room: str, collection: str, records: Sequence[tuple[str, bytes]]
    ) -> None:
        """Store ``records`` in a collection of ``room``, in one transaction."""
        if not records:
            return
        params: list[str | bytes] = []
        for key, value in records:
            params += (room, collection, key, bytes(value))
        await self._call(lambda: self._save_records(params))

    async def load_records(self, room: str, collection: str) -> dict[str, bytes]:
        """Every record of a collection of ``room``."""
        rows = await self._call(
            lambda: (
                self._connection()
                .execute(
                    "SELECT key, value FROM record WHERE room = ? AND collection = ?",
                    (room, collection),
                )
                .fetchall()
            )
        )
        return {row[0]: bytes(row[1]) for row in rows}

    async def save_document(self, kind: str, key: str, data: bytes) -> None:
        """Store a document, replacing any older one."""
        await self._call(
            lambda: self._connection().execute(
                "INSERT OR REPLACE INTO document (kind, key, data) VALUES (?, ?, ?)",
                (kind, key, bytes(data)),
            )
        )

    async def load_document(self, kind: str, key: str) -> bytes | None:
        """A stored document, or ``None``."""
        rows = await self._call(
            lambda: (
                self._connection()
                .execute(
                    "SELECT data FROM document WHERE kind = ? AND key = ?", (kind, key)
                )
                .fetchall()
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

    # On the event loop -------------------------------------------------------

    async def _call(self, work: Callable[[], T]) -> T:
        thread = self._thread
        if thread is None:
            raise BackendError("sqlite store is not connected")
        # One worker: the calls run one at a time, in the order made. A
        # caller cancelled before its call starts drops it; once started, it
        # runs whole: its transaction is stored entirely or not at all.
        try:
            return await asyncio.get_running_loop().run_in_executor(thread, work)
        except sqlite3.Error as exc:
            raise BackendError(f"sqlite store {self.path}: {exc}") from exc

    # On the store's thread ---------------------------------------------------

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None leaves transactions to the explicit BEGIN
            # of _transaction instead of the sqlite3 module's implicit ones.
            db = sqlite3.connect(self.path, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise BackendError(f"cannot open SQLite store {self.path}") from exc
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # FULL also syncs the WAL on every commit; NORMAL, the usual WAL
            # choice, may lose the last commits on power loss.
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=5000")
            db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            db.close()
            raise BackendError(f"cannot prepare SQLite store {self.path}") from exc
        self._db = db

    def _shut(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise BackendError("sqlite store is not connected")
        return self._db

    def _transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            result = work(db)
            db.execute("COMMIT")
        except BaseException:
            # A failed COMMIT may leave the transaction open (SQLITE_BUSY);
            # SQLite has already rolled back after an I/O error.
            if db.in_transaction:
                try:
                    db.execute("ROLLBACK")
                except sqlite3.Error:
                    logger.exception("sqlite store %s: rollback failed", self.path)
            raise
        return result

    def _save_records(self, params: list[str | bytes]) -> None:
        # One statement for the whole group rather than executemany's step
        # per row: each SQLite call on this thread gives up the GIL and then
        # waits to take it back from the busy event loop (up to the switch
        # interval, 5 ms), so fewer calls make a group's commit come back
        # sooner. A single statement is its own transaction; larger groups
        # are split, under one explicit transaction.
        db = self._connection()
        rows = len(params) // 4
        if rows <= _ROWS_PER_INSERT:
            db.execute(_insert_records(rows), params)
            return

        def insert_all(db: sqlite3.Connection) -> None:
            for first in range(0, rows, _ROWS_PER_INSERT):
                chunk = params[first * 4 : (first + _ROWS_PER_INSERT) * 4]
                db.execute(_insert_records(len(chunk) // 4), chunk)

        self._transaction(insert_all)

    def _open_room(self, room: str) -> tuple[RoomHead, bool]:
        db = self._connection()
        rows = db.execute(
            "SELECT epoch, last_offset FROM room WHERE id = ?", (room,)
        ).fetchall()
        if rows:
            return RoomHead(rows[0][0], rows[0][1]), False

        epoch = new_epoch()
        db.execute(
            "INSERT INTO room (id, epoch, last_offset) VALUES (?, ?, 0)",
            (room, epoch),
        )
        return RoomHead(epoch, 0), True

    def _append(
        self,
        db: sqlite3.Connection,
        room: str,
        epoch: str,
        offset: int,
        frames: Sequence[bytes],
        dedupe_key: str | None,
    ) -> AppendResult:
        rows = db.execute(
            "SELECT epoch, last_offset FROM room WHERE id = ?", (room,)
        ).fetchall()
        if not rows or rows[0][0] != epoch or rows[0][1] != offset - 1:
            if (
                rows
                and rows[0][0] == epoch
                and self._repeats_last_append(db, room, offset, frames)
            ):
                return AppendResult(offset)
            expected = (
                f"epoch {rows[0][0]} and offset {rows[0][1] + 1}"
                if rows
                else "an opened room"
            )
            raise StaleWriter(room, expected)

        if dedupe_key is not None:
            seen = db.execute(
                "SELECT first_offset FROM dedupe WHERE room = ? AND key = ?",
                (room, dedupe_key),
            ).fetchall()
            if seen:
                return AppendResult(seen[0][0], duplicate=True)

        last = offset + len(frames) - 1
        db.executemany(
            "INSERT INTO event (room, event_offset, frame) VALUES (?, ?, ?)",
            [(room, offset + i, bytes(frame)) for i, frame in enumerate(frames)],
        )
        db.execute("UPDATE room SET last_offset = ? WHERE id = ?", (last, room))
        if dedupe_key is not None:
            db.execute(
                "INSERT INTO dedupe (room, key, first_offset) VALUES (?, ?, ?)",
                (room, dedupe_key, offset),
            )

        # A key is kept as long as its event is: a client retrying after
        # that cannot recover its history either and starts afresh.
        cutoff = last - self.history_limit
        if cutoff > 0:
            db.execute(
                "DELETE FROM event WHERE room = ? AND event_offset <= ?",
                (room, cutoff),
            )
            db.execute(
                "DELETE FROM dedupe WHERE room = ? AND first_offset <= ?",
                (room, cutoff),
            )
        return AppendResult(offset)

    def _read(
        self, room: str, epoch: str, after: int, until: int
    ) -> list[bytes] | None:
        db = self._connection()
        rows = db.execute(
            "SELECT epoch, last_offset FROM room WHERE id = ?", (room,)
        ).fetchall()
        if not rows or rows[0][0] != epoch:
            return None
        if after < 0 or until < after or until > rows[0][1]:
            return None
        if after == until:
            return []
        events = db.execute(
            "SELECT frame FROM event WHERE room = ?"
            " AND event_offset > ? AND event_offset <= ?"
            " ORDER BY event_offset",
            (room, after, until),
        ).fetchall()
        if len(events) != until - after:
            return None
        return [bytes(event[0]) for event in events]

    def _repeats_last_append(
        self,
        db: sqlite3.Connection,
        room: str,
        offset: int,
        frames: Sequence[bytes],
    ) -> bool:
        # The contract of every backend: an append sent again after its reply
        # was lost is answered as the first time (see rooms.store_redis).
        last = offset + len(frames) - 1
        stored = db.execute(
            "SELECT frame FROM event JOIN room ON room.id = event.room"
            " WHERE event.room = ? AND room.last_offset = ?"
            " AND event_offset >= ? ORDER BY event_offset",
            (room, last, offset),
        ).fetchall()
        return [bytes(row[0]) for row in stored] == [bytes(f) for f in frames]


@functools.lru_cache(maxsize=64)
def _insert_records(rows: int) -> str:
    """The INSERT of ``rows`` records, the same text for the same count."""
    values = ", ".join(["(?, ?, ?, ?)"] * rows)
    return (
        f"INSERT OR REPLACE INTO record (room, collection, key, value) VALUES {values}"
    )
