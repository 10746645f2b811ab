"""The shared store for several nodes: room history in Redis.

Each room has four keys, all with the room id as a hash tag so that they sit
in one Redis Cluster slot and one script may touch them together:

| key | type | holds |
| --- | --- | --- |
| ``lophoc:{room}:head`` | hash | ``epoch`` and ``offset`` (the last one) |
| ``lophoc:{room}:events`` | stream | one entry per event: id ``0-<offset>`` |
| ``lophoc:{room}:dedupe`` | sorted set | deduplication keys, scored by first offset |
| ``lophoc:{room}:owner`` | string | the node holding the room's lease, with a TTL |
| ``lophoc:{room}:records:<collection>`` | hash | a collection's records by key |

Documents live outside rooms, one string each: ``lophoc:document:<kind>:<key>``.

A stream entry keeps the encoded event in its one field, ``f``. Appending is
one Lua script, so the epoch and offset check, the deduplication lookup and
the writes happen atomically. Durability is Redis's: run it with
``appendonly yes`` and ``appendfsync always`` (or ``everysec``, accepting the
loss of up to a second of acknowledged answers on a power cut).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from .backends import mask_url
from .errors import BackendError, ConfigError, StaleWriter
from .redis_pool import command_client
from .store import AppendResult, RoomHead, Store, new_epoch

logger = logging.getLogger(__name__)

_FRAME_FIELD = b"f"

# KEYS: head, events, dedupe. ARGV: a fresh epoch.
# A new epoch means the history was lost; whatever is left of an older one
# (an evicted head with its stream kept) would refuse the new ids, so it goes.
_OPEN_ROOM = """
if redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], 'offset', 0)
  redis.call('DEL', KEYS[2], KEYS[3])
end
local head = redis.call('HMGET', KEYS[1], 'epoch', 'offset')
return {head[1], tonumber(head[2]) or 0}
"""

# KEYS: head, events, dedupe.
# ARGV: epoch, first offset, history limit, '1' if a dedupe key follows (else
# '0'), the dedupe key (or ''), frames.
# Returns {'stale', epoch, last offset}, {'duplicate', offset} or {'ok', offset}.
#
# redis-py sends a command again when the connection drops before the reply
# came back, so the script may run twice: the second run finds its frames
# already at the head and answers as the first did.
#
# The dedupe set is trimmed with the stream: a key stays while its event is
# kept, which bounds the set by the history limit. A client retrying later
# cannot recover that history either and starts from a fresh snapshot.
_APPEND = """
local head = redis.call('HMGET', KEYS[1], 'epoch', 'offset')
local last = tonumber(head[2]) or 0
local offset = tonumber(ARGV[2])
local count = #ARGV - 5
if head[1] ~= ARGV[1] then
  return {'stale', head[1] or '', last}
end
if last ~= offset - 1 then
  if last == offset + count - 1 then
    local stored = redis.call('XRANGE', KEYS[2], string.format('0-%d', offset),
                              string.format('0-%d', last))
    local same = #stored == count
    for i = 1, #stored do
      same = same and stored[i][2][2] == ARGV[5 + i]
    end
    if same then
      return {'ok', offset}
    end
  end
  return {'stale', head[1], last}
end
if ARGV[4] == '1' then
  local seen = redis.call('ZSCORE', KEYS[3], ARGV[5])
  if seen then
    return {'duplicate', tonumber(seen)}
  end
end
local limit = tonumber(ARGV[3])
for i = 1, count do
  last = offset + i - 1
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', limit,
             string.format('0-%d', last), 'f', ARGV[5 + i])
end
redis.call('HSET', KEYS[1], 'offset', string.format('%d', last))
if ARGV[4] == '1' then
  redis.call('ZADD', KEYS[3], offset, ARGV[5])
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', string.format('%d', last - limit))
return {'ok', offset}
"""

# KEYS: owner. ARGV: node, ttl in milliseconds.
_CLAIM = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return ARGV[1]
end
local owner = redis.call('GET', KEYS[1])
if owner == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return owner
"""

# KEYS: owner. ARGV: node.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 0
"""


def room_key(room: str, part: str) -> str:
    """The Redis key of one part of a room: ``lophoc:{room}:part``."""
    return f"lophoc:{{{room}}}:{part}"


class RedisStore(Store):
    """A :class:`Store` in Redis, shared by every node of a deployment."""

    def __init__(self, url: str, *, history_limit: int | None = None) -> None:
        if history_limit is not None:
            if history_limit < 1:
                raise ConfigError("history_limit must be at least 1", history_limit)
            self.history_limit = history_limit
        self._where = mask_url(url)
        # Every script is safe to run twice, as the client's retries may.
        # Longer outages surface as BackendError.
        try:
            self._redis: Redis = command_client(url)
        except ValueError as exc:
            raise ConfigError("bad Redis URL", self._where) from exc
        self._open_room = self._redis.register_script(_OPEN_ROOM)
        self._append = self._redis.register_script(_APPEND)
        self._claim = self._redis.register_script(_CLAIM)
        self._release = self._redis.register_script(_RELEASE)

    async def connect(self) -> None:
        """Check that Redis answers; connections are opened as needed."""
        await self.ping()
        logger.info("redis store: connected to %s", self._where)

    async def close(self) -> None:
        """Close every connection."""
        await self._redis.aclose()

    async def ping(self) -> None:
        """Raise :class:`BackendError` unless Redis answers PING."""
        with self._errors("PING"):
            await self._redis.ping()

    async def open_room(self, room: str) -> RoomHead:
        """The room's epoch and last offset, creating an epoch if it has none."""
        epoch = new_epoch()
        with self._errors(f"opening room {room!r}"):
            reply = await self._open_room(keys=self._keys(room), args=[epoch])
        head = RoomHead(_text(reply[0]), int(reply[1]))
        if head.epoch == epoch:
            logger.info("room %s: new history at epoch %s", room, epoch)
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
        args: list[str | int | bytes] = [
            epoch,
            offset,
            self.history_limit,
            "0" if dedupe_key is None else "1",
            dedupe_key or "",
            *frames,
        ]
        with self._errors(f"appending to room {room!r}"):
            reply = await self._append(keys=self._keys(room), args=args)

        outcome = _text(reply[0])
        if outcome == "stale":
            stored = _text(reply[1])
            expected = (
                f"epoch {stored} and offset {int(reply[2]) + 1}"
                if stored
                else "an opened room"
            )
            raise StaleWriter(room, expected)
        return AppendResult(int(reply[1]), duplicate=outcome == "duplicate")

    async def read(
        self, room: str, epoch: str, after: int, until: int
    ) -> list[bytes] | None:
        """Frames ``after + 1`` to ``until``, or ``None`` if not all held."""
        if after < 0 or until < after:
            return None
        head_key, events_key, _ = self._keys(room)
        with self._errors(f"reading room {room!r}"):
            # One transaction, so the epoch checked is the one of the range.
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hmget(head_key, ["epoch", "offset"])
                if until > after:
                    pipe.xrange(events_key, f"0-{after + 1}", f"0-{until}")
                replies: list[Any] = await pipe.execute()

        stored_epoch, stored_offset = replies[0]
        if stored_epoch is None or _text(stored_epoch) != epoch:
            return None
        if until > int(stored_offset or 0):
            return None
        if until == after:
            return []
        entries = replies[1]
        # Ids are unique and within the range, so the right count means no gap.
        if len(entries) != until - after:
            return None
        return [bytes(fields[_FRAME_FIELD]) for _, fields in entries]

    async def save_records(
        self, room: str, collection: str, records: Sequence[tuple[str, bytes]]
    ) -> None:
        """Store ``records`` in a collection of ``room``, in one HSET."""
        if not records:
            return
        items: list[str | bytes] = []
        for key, value in records:
            items += (key, bytes(value))
        with self._errors(f"saving records of room {room!r}"):
            await self._redis.hset(_records_key(room, collection), items=items)

    async def load_records(self, room: str, collection: str) -> dict[str, bytes]:
        """Every record of a collection of ``room``."""
        with self._errors(f"loading records of room {room!r}"):
            stored = await self._redis.hgetall(_records_key(room, collection))
        return {_text(key): _raw(value) for key, value in stored.items()}

    async def save_document(self, kind: str, key: str, data: bytes) -> None:
        """Store a document, replacing any older one."""
        with self._errors(f"saving {kind} document {key!r}"):
            await self._redis.set(_document_key(kind, key), bytes(data))

    async def load_document(self, kind: str, key: str) -> bytes | None:
        """A stored document, or ``None``."""
        with self._errors(f"loading {kind} document {key!r}"):
            data = await self._redis.get(_document_key(kind, key))
        return None if data is None else _raw(data)

    async def claim(self, room: str, node: str, ttl_ms: int) -> str:
        """Take or renew the room's lease for ``node``; return the owner."""
        if ttl_ms < 1:
            raise ValueError(f"a lease needs a positive TTL, not {ttl_ms} ms")
        with self._errors(f"claiming room {room!r}"):
            owner = await self._claim(
                keys=[room_key(room, "owner")], args=[node, ttl_ms]
            )
        return _text(owner)

    async def release(self, room: str, node: str) -> None:
        """Drop the room's lease if ``node`` holds it."""
        with self._errors(f"releasing room {room!r}"):
            await self._release(keys=[room_key(room, "owner")], args=[node])

    def _keys(self, room: str) -> list[str]:
        return [
            room_key(room, "head"),
            room_key(room, "events"),
            room_key(room, "dedupe"),
        ]

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except (RedisError, OSError) as exc:
            raise BackendError(f"redis store {self._where}: {action}: {exc}") from exc


def _records_key(room: str, collection: str) -> str:
    return room_key(room, f"records:{collection}")


def _document_key(kind: str, key: str) -> str:
    return f"lophoc:document:{kind}:{key}"


def _raw(value: bytes | str) -> bytes:
    # The client leaves replies undecoded; the str case is for the type checker.
    return value if isinstance(value, bytes) else value.encode()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
