"""The Redis client for commands that the store and the broker share.

redis-py's default connection pool holds at most 100 connections and fails
at once with ``MaxConnectionsError`` when a 101st command comes while all
are busy. A node gets there in ordinary use: when a few hundred clients
move to it together after another node went away, each rejoin reads the
room's history at the same moment. A :class:`BlockingConnectionPool` makes
such a command wait a moment for a free connection instead of failing.
"""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

#: Connections one node opens to Redis for commands, at most.
POOL_SIZE = 100
#: How long a command waits for a free connection before it fails.
POOL_WAIT = 5.0


def command_client(url: str) -> Redis:
    """A client for ``url`` whose commands queue for a pooled connection.

    A few quick retries ride over a pooled connection that Redis closed (a
    restart, an idle timeout); callers only send commands that are safe to
    run twice. Raises ``ValueError`` for a bad URL.
    """
    retry = Retry(ExponentialWithJitterBackoff(cap=0.25, base=0.01), 3)
    pool = BlockingConnectionPool.from_url(
        url, max_connections=POOL_SIZE, timeout=POOL_WAIT, retry=retry
    )
    # from_pool: the client owns the pool and closes it with itself.
    return Redis.from_pool(pool)
