"""The store contract: every backend, the same behaviour."""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import AsyncIterator, Awaitable, Callable

import msgspec
import pytest
import redis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from rooms.audit import AuditChain, Checkpoint, LogEntry, public_key_hex, verify
from rooms.backends import open_store
from rooms.errors import BackendError, StaleWriter
from rooms.exam_room import AUDIT, CHECKPOINTS, key_for
from rooms.store import AppendResult, Store
from rooms.store_redis import RedisStore, room_key
from rooms.store_sqlite import SqliteStore
from tests.helpers import RedisProcess, free_port

StoreFactory = Callable[..., Awaitable[Store]]

BACKENDS = ["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The name of the backend under test."""
    name: str = request.param
    return name


@pytest.fixture
async def make_store(
    request: pytest.FixtureRequest, backend: str, tmp_path: pathlib.Path
) -> AsyncIterator[StoreFactory]:
    """Opens connected stores of the backend under test, all on the same data."""
    if backend == "memory":
        url = "memory://"
    elif backend == "sqlite":
        url = f"sqlite://{tmp_path}/data/rooms.db"
    else:
        url = request.getfixturevalue("redis_url")
    opened: list[Store] = []

    async def make(history_limit: int | None = None) -> Store:
        store = open_store(url, tmp_path, history_limit=history_limit)
        await store.connect()
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


@pytest.fixture
async def store(make_store: StoreFactory) -> Store:
    """A connected store of the backend under test."""
    return await make_store()


async def test_open_room_creates_epoch_once(store: Store) -> None:
    """A room gets an epoch and offset 0 once; opening it again changes nothing."""
    head = await store.open_room("r1")
    assert head.offset == 0
    assert head.epoch
    assert await store.open_room("r1") == head
    assert (await store.open_room("r2")).epoch != head.epoch


async def test_append_assigns_contiguous_offsets(store: Store) -> None:
    """Appends take the offsets after the last one, starting at 1."""
    head = await store.open_room("r")
    first = await store.append("r", head.epoch, 1, [b"a"])
    batch = await store.append("r", head.epoch, 2, [b"b", b"c", b"d"])
    assert first == AppendResult(1)
    assert batch == AppendResult(2)
    assert await store.open_room("r") == type(head)(head.epoch, 4)
    assert await store.read("r", head.epoch, 0, 4) == [b"a", b"b", b"c", b"d"]


@pytest.mark.parametrize("offset", [0, 1, 3])
async def test_append_refuses_wrong_offset(store: Store, offset: int) -> None:
    """An offset other than the next one raises StaleWriter and writes nothing."""
    head = await store.open_room("r")
    await store.append("r", head.epoch, 1, [b"a"])
    with pytest.raises(StaleWriter) as caught:
        await store.append("r", head.epoch, offset, [b"x"])
    assert caught.value.room == "r"
    assert (await store.open_room("r")).offset == 1
    assert await store.read("r", head.epoch, 0, 1) == [b"a"]


async def test_append_refuses_wrong_epoch(store: Store) -> None:
    """Another epoch, or a room never opened, raises StaleWriter."""
    head = await store.open_room("r")
    with pytest.raises(StaleWriter):
        await store.append("r", "not-" + head.epoch, 1, [b"x"])
    with pytest.raises(StaleWriter):
        await store.append("never-opened", head.epoch, 1, [b"x"])
    assert (await store.open_room("r")).offset == 0


async def test_repeated_last_append_is_answered_again(store: Store) -> None:
    """The last append sent again, as after a lost reply, succeeds unchanged."""
    head = await store.open_room("r")
    await store.append("r", head.epoch, 1, [b"a"])
    first = await store.append("r", head.epoch, 2, [b"b", b"c"], dedupe_key="c1")

    again = await store.append("r", head.epoch, 2, [b"b", b"c"], dedupe_key="c1")

    assert again == first == AppendResult(2)
    assert (await store.open_room("r")).offset == 3
    assert await store.read("r", head.epoch, 0, 3) == [b"a", b"b", b"c"]
    with pytest.raises(StaleWriter):
        await store.append("r", head.epoch, 2, [b"b", b"other"])
    with pytest.raises(StaleWriter):
        await store.append("r", head.epoch, 1, [b"a"])


async def test_dedupe_returns_first_offset(store: Store) -> None:
    """A repeated dedupe key returns the first offset and writes nothing."""
    head = await store.open_room("r")
    await store.append("r", head.epoch, 1, [b"a", b"b"], dedupe_key="c1")
    await store.append("r", head.epoch, 3, [b"c"])

    again = await store.append("r", head.epoch, 4, [b"x"], dedupe_key="c1")

    assert again == AppendResult(1, duplicate=True)
    assert (await store.open_room("r")).offset == 3
    assert await store.read("r", head.epoch, 0, 3) == [b"a", b"b", b"c"]


async def test_dedupe_keys_are_per_room(store: Store) -> None:
    """The same dedupe key in another room is a new command."""
    one = await store.open_room("one")
    two = await store.open_room("two")
    await store.append("one", one.epoch, 1, [b"a"], dedupe_key="c1")
    result = await store.append("two", two.epoch, 1, [b"b"], dedupe_key="c1")
    assert result == AppendResult(1)


async def test_dedupe_still_checks_the_writer(store: Store) -> None:
    """A repeated key from a writer at the wrong offset is still StaleWriter."""
    head = await store.open_room("r")
    await store.append("r", head.epoch, 1, [b"a"], dedupe_key="c1")
    await store.append("r", head.epoch, 2, [b"b"])
    with pytest.raises(StaleWriter):
        await store.append("r", head.epoch, 1, [b"a"], dedupe_key="c1")


async def test_read_returns_exact_frames_in_order(store: Store) -> None:
    """Frames come back byte for byte, in offset order, for any sub-range."""
    head = await store.open_room("r")
    frames = [bytes(range(256)), b"", b"\x00" * 10, bytes(range(255, -1, -1))]
    await store.append("r", head.epoch, 1, frames[:2])
    await store.append("r", head.epoch, 3, frames[2:])

    assert await store.read("r", head.epoch, 0, 4) == frames
    assert await store.read("r", head.epoch, 1, 3) == frames[1:3]
    assert await store.read("r", head.epoch, 3, 4) == frames[3:]


@pytest.mark.parametrize("at", [0, 2, 3])
async def test_read_empty_range(store: Store, at: int) -> None:
    """A range with after == until is empty, up to the last offset."""
    head = await store.open_room("r")
    if at:
        await store.append("r", head.epoch, 1, [b"a", b"b", b"c"])
    assert await store.read("r", head.epoch, at, at) == []


@pytest.mark.parametrize(("after", "until"), [(0, 3), (2, 3), (3, 3), (-1, 1), (2, 1)])
async def test_read_outside_history_is_none(
    store: Store, after: int, until: int
) -> None:
    """A range past the last offset, or upside down, cannot be recovered."""
    head = await store.open_room("r")
    await store.append("r", head.epoch, 1, [b"a", b"b"])
    assert await store.read("r", head.epoch, after, until) is None


async def test_read_wrong_epoch_is_none(store: Store) -> None:
    """Reading with another epoch, or an unknown room, returns None."""
    head = await store.open_room("r")
    await store.append("r", head.epoch, 1, [b"a"])
    assert await store.read("r", "not-" + head.epoch, 0, 1) is None
    assert await store.read("r", "not-" + head.epoch, 1, 1) is None
    assert await store.read("unknown", head.epoch, 0, 0) is None


async def test_trimming_keeps_history_limit(make_store: StoreFactory) -> None:
    """With a small limit old events go, the last ``history_limit`` stay."""
    store = await make_store(history_limit=5)
    head = await store.open_room("r")
    # Redis trims whole stream nodes (up to 100 entries each), so it takes a
    # few hundred events before the oldest ones are certainly gone.
    total = 300
    for offset in range(1, total + 1):
        await store.append("r", head.epoch, offset, [b"%d" % offset])

    assert await store.read("r", head.epoch, 0, total) is None
    assert await store.read("r", head.epoch, 0, 1) is None
    expected = [b"%d" % offset for offset in range(total - 4, total + 1)]
    assert await store.read("r", head.epoch, total - 5, total) == expected
    assert (await store.open_room("r")).offset == total


async def test_trimming_a_batch_larger_than_the_limit(
    make_store: StoreFactory,
) -> None:
    """One append bigger than the limit keeps at least its last events."""
    store = await make_store(history_limit=3)
    head = await store.open_room("r")
    await store.append("r", head.epoch, 1, [b"%d" % n for n in range(1, 9)])
    assert await store.read("r", head.epoch, 5, 8) == [b"6", b"7", b"8"]


async def test_dedupe_forgets_trimmed_events(make_store: StoreFactory) -> None:
    """A dedupe key is kept as long as its event: after trimming it is new."""
    store = await make_store(history_limit=2)
    head = await store.open_room("r")
    await store.append("r", head.epoch, 1, [b"a"], dedupe_key="old")
    await store.append("r", head.epoch, 2, [b"b"], dedupe_key="kept")
    await store.append("r", head.epoch, 3, [b"c"])

    kept = await store.append("r", head.epoch, 4, [b"x"], dedupe_key="kept")
    old = await store.append("r", head.epoch, 4, [b"d"], dedupe_key="old")

    assert kept == AppendResult(2, duplicate=True)
    assert old == AppendResult(4)


async def test_concurrent_appends_one_wins(store: Store) -> None:
    """Two writers racing for the same offset: one appends, one is stale."""
    head = await store.open_room("r")
    results = await asyncio.gather(
        store.append("r", head.epoch, 1, [b"first"]),
        store.append("r", head.epoch, 1, [b"second"]),
        return_exceptions=True,
    )
    assert sum(isinstance(result, AppendResult) for result in results) == 1
    assert sum(isinstance(result, StaleWriter) for result in results) == 1
    assert (await store.open_room("r")).offset == 1


async def test_append_needs_frames(store: Store) -> None:
    """An append of nothing is a caller bug, refused before any write."""
    head = await store.open_room("r")
    with pytest.raises(ValueError, match="frame"):
        await store.append("r", head.epoch, 1, [])


async def test_records_are_saved_and_replaced(store: Store) -> None:
    """Records come back by key; a key saved again takes the new value."""
    await store.save_records("r", "answers", [("1:s1", b"A"), ("1:s2", b"B")])
    await store.save_records("r", "answers", [("1:s1", b"C"), ("2:s1", bytes(256))])
    await store.save_records("r", "answers", [])
    assert await store.load_records("r", "answers") == {
        "1:s1": b"C",
        "1:s2": b"B",
        "2:s1": bytes(256),
    }


async def test_records_are_per_room_and_collection(store: Store) -> None:
    """A collection of one room shares nothing with other rooms or collections."""
    await store.save_records("r", "answers", [("k", b"1")])
    await store.save_records("other", "answers", [("k", b"2")])
    await store.save_records("r", "notes", [("k", b"3")])
    assert await store.load_records("r", "answers") == {"k": b"1"}
    assert await store.load_records("other", "answers") == {"k": b"2"}
    assert await store.load_records("r", "notes") == {"k": b"3"}
    assert await store.load_records("empty", "answers") == {}


async def test_documents_are_saved_and_replaced(store: Store) -> None:
    """A document comes back byte for byte; saving again replaces it."""
    assert await store.load_document("lesson", "r") is None
    await store.save_document("lesson", "r", bytes(range(256)))
    await store.save_document("lesson", "other", b"other")
    assert await store.load_document("lesson", "r") == bytes(range(256))
    await store.save_document("lesson", "r", b"v2")
    assert await store.load_document("lesson", "r") == b"v2"
    assert await store.load_document("exam", "r") is None


async def test_claim_renew_release(store: Store) -> None:
    """A node claims a free room, renews it, releases it and claims it again."""
    assert await store.claim("r", "node-a", 10_000) == "node-a"
    assert await store.claim("r", "node-a", 10_000) == "node-a"
    await store.release("r", "node-a")
    assert await store.claim("r", "node-a", 10_000) == "node-a"
    await store.release("r", "node-a")


async def test_single_process_store_grants_every_claim(
    backend: str, store: Store
) -> None:
    """Memory and SQLite serve one node: any claim is granted to its caller."""
    if backend == "redis":
        pytest.skip("Redis leases are exclusive between nodes")
    assert await store.claim("r", "node-a", 10_000) == "node-a"
    assert await store.claim("r", "node-b", 10_000) == "node-b"


async def test_claim_needs_a_positive_ttl(store: Store) -> None:
    """A lease of zero milliseconds is a caller bug."""
    with pytest.raises(ValueError, match="TTL"):
        await store.claim("r", "node-a", 0)


async def test_ping(store: Store) -> None:
    """A connected store answers ping."""
    await store.ping()


async def test_history_survives_reopening(
    backend: str, make_store: StoreFactory
) -> None:
    """A durable store gives back its history, records and documents."""
    if backend == "memory":
        pytest.skip("the memory store keeps nothing across instances")
    store = await make_store()
    head = await store.open_room("r")
    await store.append("r", head.epoch, 1, [b"a", b"b"], dedupe_key="c1")
    await store.save_records("r", "answers", [("1:s1", b"A")])
    await store.save_document("lesson", "r", b"plan")
    await store.close()

    reopened = await make_store()
    assert await reopened.load_records("r", "answers") == {"1:s1": b"A"}
    assert await reopened.load_document("lesson", "r") == b"plan"
    assert await reopened.open_room("r") == type(head)(head.epoch, 2)
    assert await reopened.read("r", head.epoch, 0, 2) == [b"a", b"b"]
    again = await reopened.append("r", head.epoch, 3, [b"x"], dedupe_key="c1")
    assert again == AppendResult(1, duplicate=True)


async def test_exam_log_survives_reopening_and_verifies(
    backend: str, make_store: StoreFactory
) -> None:
    """An exam log stored entry by entry loads back whole, in order, verifiable."""
    key = Ed25519PrivateKey.generate()
    chain = AuditChain("exam-r")
    store = await make_store()
    for at in range(120):
        entry = chain.append(at, "answer", f"s-{at % 7}", {"item": f"q{at}"})
        await store.save_records(
            "exam-r", AUDIT, [(key_for(entry.seq), msgspec.msgpack.encode(entry))]
        )
    point = chain.checkpoint(key, 999)
    await store.save_records(
        "exam-r", CHECKPOINTS, [(key_for(point.seq), msgspec.msgpack.encode(point))]
    )
    if backend != "memory":
        await store.close()
        store = await make_store()

    records = await store.load_records("exam-r", AUDIT)
    entries = [
        msgspec.msgpack.decode(records[k], type=LogEntry) for k in sorted(records)
    ]
    points = [
        msgspec.msgpack.decode(v, type=Checkpoint)
        for v in (await store.load_records("exam-r", CHECKPOINTS)).values()
    ]
    assert [e.seq for e in entries] == list(range(1, 121))
    assert verify("exam-r", entries, points, public_key_hex(key)) == []


# SQLite ---------------------------------------------------------------------


async def test_sqlite_creates_directory_and_syncs_fully(
    tmp_path: pathlib.Path,
) -> None:
    """The data directory is created; WAL and synchronous=FULL are on."""
    path = tmp_path / "nested" / "data" / "lophoc.db"
    store = SqliteStore(path)
    await store.connect()
    try:
        assert path.exists()
        pragmas = await store._call(
            lambda: [
                store._connection().execute(f"PRAGMA {name}").fetchall()
                for name in ("journal_mode", "synchronous")
            ]
        )
        assert pragmas == [[("wal",)], [(2,)]]
    finally:
        await store.close()


async def test_sqlite_closed_store_raises_backend_error(
    tmp_path: pathlib.Path,
) -> None:
    """A closed SQLite store raises BackendError, not an sqlite3 error."""
    store = SqliteStore(tmp_path / "lophoc.db")
    await store.connect()
    await store.close()
    with pytest.raises(BackendError):
        await store.ping()


async def test_sqlite_runs_calls_in_the_order_made(tmp_path: pathlib.Path) -> None:
    """Calls made together are stored in the order made: the last save wins."""
    store = SqliteStore(tmp_path / "lophoc.db")
    await store.connect()
    try:
        await asyncio.gather(
            *(
                store.save_records("r", "answers", [("1:s1", f"{n}".encode())])
                for n in range(50)
            )
        )
        assert await store.load_records("r", "answers") == {"1:s1": b"49"}
    finally:
        await store.close()


async def test_sqlite_stores_a_large_group_whole(tmp_path: pathlib.Path) -> None:
    """A group of records too large for one statement is stored whole."""
    store = SqliteStore(tmp_path / "lophoc.db")
    await store.connect()
    try:
        records = [(f"1:s{n}", f"{n}".encode()) for n in range(2500)]
        await store.save_records("r", "answers", records)
        await store.save_records("r", "answers", [("1:s7", b"changed")])
        assert await store.load_records("r", "answers") == {
            **dict(records),
            "1:s7": b"changed",
        }
    finally:
        await store.close()


async def test_sqlite_cancelled_call_is_stored_whole_or_not_at_all(
    tmp_path: pathlib.Path,
) -> None:
    """A save whose caller is cancelled leaves all its records or none."""
    store = SqliteStore(tmp_path / "lophoc.db")
    await store.connect()
    try:
        records = [(f"1:s{n}", b"x" * 100) for n in range(500)]
        saving = asyncio.create_task(store.save_records("r", "answers", records))
        await asyncio.sleep(0)
        saving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await saving

        stored = await store.load_records("r", "answers")
        assert len(stored) in (0, 500)
        head = await store.open_room("r")
        result = await store.append("r", head.epoch, head.offset + 1, [b"e"])
        assert result == AppendResult(head.offset + 1)
    finally:
        await store.close()


# Redis ----------------------------------------------------------------------


@pytest.mark.redis
async def test_redis_two_nodes_agree_on_a_new_epoch(redis_url: str) -> None:
    """Two nodes opening the same new room at once get the same epoch."""
    stores = [RedisStore(redis_url), RedisStore(redis_url)]
    for store in stores:
        await store.connect()
    try:
        heads = await asyncio.gather(*(s.open_room("r") for s in stores))
        assert heads[0] == heads[1]
    finally:
        for store in stores:
            await store.close()


@pytest.mark.redis
async def test_redis_lease_is_exclusive(redis_url: str) -> None:
    """Another node cannot claim a held room; it can after release or expiry."""
    store = RedisStore(redis_url)
    await store.connect()
    try:
        assert await store.claim("r", "node-a", 10_000) == "node-a"
        assert await store.claim("r", "node-b", 10_000) == "node-a"
        await store.release("r", "node-b")
        assert await store.claim("r", "node-b", 10_000) == "node-a"

        await store.release("r", "node-a")
        assert await store.claim("r", "node-b", 50) == "node-b"

        owner = "node-b"
        async with asyncio.timeout(5):
            while owner == "node-b":
                await asyncio.sleep(0.02)
                owner = await store.claim("r", "node-a", 10_000)
        assert owner == "node-a"
    finally:
        await store.close()


@pytest.mark.redis
async def test_redis_renewal_extends_the_lease(redis_url: str) -> None:
    """Claiming again as the owner pushes the expiry out by the new TTL."""
    store = RedisStore(redis_url)
    await store.connect()
    try:
        await store.claim("r", "node-a", 100)
        await store.claim("r", "node-a", 10_000)
        await asyncio.sleep(0.2)
        assert await store.claim("r", "node-b", 10_000) == "node-a"
    finally:
        await store.close()


@pytest.mark.redis
async def test_redis_keys_share_the_room_hash_tag(redis_url: str) -> None:
    """Every key of a room carries ``{room}``, so they share a cluster slot."""
    store = RedisStore(redis_url)
    await store.connect()
    try:
        head = await store.open_room("lesson-1")
        await store.append("lesson-1", head.epoch, 1, [b"a"], dedupe_key="c1")
        await store.claim("lesson-1", "node-a", 10_000)
        await store.save_records("lesson-1", "answers", [("1:s1", b"A")])
    finally:
        await store.close()
    client = redis.Redis.from_url(redis_url)
    try:
        keys = {k.decode() if isinstance(k, bytes) else k for k in client.keys("*")}
    finally:
        client.close()
    parts = ("head", "events", "dedupe", "owner", "records:answers")
    assert keys == {room_key("lesson-1", part) for part in parts}
    assert all(key.startswith("lophoc:{lesson-1}:") for key in keys)


@pytest.mark.redis
async def test_redis_lost_history_gets_a_new_epoch(redis_url: str) -> None:
    """When Redis loses a room's head, the room restarts at a new epoch."""
    store = RedisStore(redis_url)
    await store.connect()
    try:
        old = await store.open_room("r")
        await store.append("r", old.epoch, 1, [b"a", b"b"], dedupe_key="c1")
        # Only the head goes, as an eviction could do; the stale stream and
        # dedupe set must not leak into the new epoch.
        client = redis.Redis.from_url(redis_url)
        try:
            client.delete(room_key("r", "head"))
        finally:
            client.close()

        new = await store.open_room("r")
        assert new.epoch != old.epoch
        assert new.offset == 0
        assert await store.read("r", old.epoch, 0, 2) is None
        with pytest.raises(StaleWriter):
            await store.append("r", old.epoch, 3, [b"c"])
        result = await store.append("r", new.epoch, 1, [b"z"], dedupe_key="c1")
        assert result == AppendResult(1)
        assert await store.read("r", new.epoch, 0, 1) == [b"z"]
    finally:
        await store.close()


@pytest.mark.redis
async def test_redis_store_rides_over_a_restart(redis_process: RedisProcess) -> None:
    """After Redis restarts, pooled connections are replaced without an error."""
    store = RedisStore(redis_process.url)
    await store.connect()
    try:
        before = await store.open_room("r")
        redis_process.stop()
        async with asyncio.timeout(10):
            with pytest.raises(BackendError):
                await store.ping()
        redis_process.start()

        # This Redis keeps nothing on disk, so the room comes back anew.
        after = await store.open_room("r")
        assert after.epoch != before.epoch
        assert await store.append("r", after.epoch, 1, [b"a"]) == AppendResult(1)
    finally:
        await store.close()


@pytest.mark.redis
async def test_redis_unreachable_raises_backend_error() -> None:
    """Connecting to a port where no Redis listens raises BackendError."""
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0")
    try:
        async with asyncio.timeout(10):
            with pytest.raises(BackendError):
                await store.connect()
    finally:
        await store.close()
