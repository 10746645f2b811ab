"""Backend selection: a URL's scheme picks the broker or store module.

| URL | broker | store |
| --- | --- | --- |
| ``memory://`` | in-process | in-process, lost on exit |
| ``redis://host:port/db`` | Redis pub/sub | Redis streams and hashes |
| ``rediss://host:port/db`` | the same over TLS | the same over TLS |
| ``sqlite:///absolute/path.db`` | - | that SQLite file |
| ``sqlite://`` | - | ``<data_dir>/lophoc.db`` |

Backend modules are imported only when their scheme is used, so a node on the
embedded backends never imports the Redis client.
"""

from __future__ import annotations

import pathlib
import urllib.parse

from .broker import Broker
from .errors import ConfigError
from .store import Store

#: The SQLite file of ``sqlite://`` inside the data directory.
DEFAULT_SQLITE_NAME = "lophoc.db"

_REDIS_SCHEMES = ("redis", "rediss")


def open_broker(url: str) -> Broker:
    """A broker for ``url``, not yet connected.

    Raises :class:`ConfigError` for an unknown scheme, or for ``sqlite://``,
    which has no way to reach other processes.
    """
    scheme = _scheme(url)
    if scheme == "memory":
        from .broker_memory import MemoryBroker

        return MemoryBroker()
    if scheme in _REDIS_SCHEMES:
        from .broker_redis import RedisBroker

        return RedisBroker(url)
    if scheme == "sqlite":
        raise ConfigError(
            "SQLite can store but not broadcast; use memory:// or redis:// "
            "for the broker",
            mask_url(url),
        )
    raise ConfigError(
        "unknown broker URL scheme (expected memory:// or redis://)", mask_url(url)
    )


def open_store(
    url: str, data_dir: pathlib.Path, *, history_limit: int | None = None
) -> Store:
    """A store for ``url``, not yet connected.

    ``data_dir`` is where ``sqlite://`` keeps its file; ``history_limit``
    overrides :attr:`Store.history_limit`. Raises :class:`ConfigError` for an
    unknown scheme or an unusable SQLite path.
    """
    scheme = _scheme(url)
    if scheme == "memory":
        from .store_memory import MemoryStore

        return MemoryStore(history_limit=history_limit)
    if scheme in _REDIS_SCHEMES:
        from .store_redis import RedisStore

        return RedisStore(url, history_limit=history_limit)
    if scheme == "sqlite":
        from .store_sqlite import SqliteStore

        return SqliteStore(sqlite_path(url, data_dir), history_limit=history_limit)
    raise ConfigError(
        "unknown store URL scheme (expected memory://, sqlite:// or redis://)",
        mask_url(url),
    )


def sqlite_path(url: str, data_dir: pathlib.Path) -> pathlib.Path:
    """The database file a ``sqlite://`` URL names."""
    parts = urllib.parse.urlsplit(url)
    if parts.netloc:
        raise ConfigError(
            "a SQLite URL takes no host: write sqlite:///absolute/path.db",
            mask_url(url),
        )
    path = urllib.parse.unquote(parts.path)
    if path in ("", "/"):
        return data_dir / DEFAULT_SQLITE_NAME
    if not path.startswith("/"):
        raise ConfigError(
            "a SQLite URL needs an absolute path: sqlite:///absolute/path.db",
            mask_url(url),
        )
    return pathlib.Path(path)


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, fit for logs and errors."""
    try:
        parts = urllib.parse.urlsplit(url)
        password = parts.password
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        # Unparseable, so there is no telling where a password would be.
        return url.split("://", 1)[0] + "://***"

    has_query_password = any(name == "password" for name, _ in query)
    if password is None and not has_query_password:
        return url

    netloc = parts.netloc
    if password is not None:
        userinfo, _, hostinfo = netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        netloc = f"{user}:***@{hostinfo}"
    if has_query_password:
        masked = [
            (name, "***" if name == "password" else value) for name, value in query
        ]
        return urllib.parse.urlunsplit(
            parts._replace(
                netloc=netloc, query=urllib.parse.urlencode(masked, safe="*")
            )
        )
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _scheme(url: str) -> str:
    scheme, separator, _ = url.partition("://")
    if not separator:
        raise ConfigError("a backend URL looks like scheme://...", mask_url(url))
    return scheme.lower()
