"""Choosing a broker and a store by URL."""

from __future__ import annotations

import pathlib

import pytest

from rooms.backends import mask_url, open_broker, open_store, sqlite_path
from rooms.broker_memory import MemoryBroker
from rooms.broker_redis import RedisBroker
from rooms.errors import ConfigError
from rooms.store import Store
from rooms.store_memory import MemoryStore
from rooms.store_redis import RedisStore
from rooms.store_sqlite import SqliteStore


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("memory://", MemoryBroker),
        ("redis://127.0.0.1:6379/0", RedisBroker),
        ("rediss://cache.example:6380/1", RedisBroker),
        ("REDIS://127.0.0.1:6379/0", RedisBroker),
    ],
)
def test_open_broker_by_scheme(url: str, kind: type) -> None:
    """The URL scheme picks the broker class; nothing connects yet."""
    assert isinstance(open_broker(url), kind)


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("memory://", MemoryStore),
        ("redis://127.0.0.1:6379/0", RedisStore),
        ("rediss://cache.example:6380/1", RedisStore),
        ("sqlite://", SqliteStore),
    ],
)
def test_open_store_by_scheme(url: str, kind: type, tmp_path: pathlib.Path) -> None:
    """The URL scheme picks the store class; nothing connects yet."""
    assert isinstance(open_store(url, tmp_path), kind)


def test_sqlite_default_path_is_in_the_data_directory(tmp_path: pathlib.Path) -> None:
    """``sqlite://`` means lophoc.db in the data directory."""
    store = open_store("sqlite://", tmp_path)
    assert isinstance(store, SqliteStore)
    assert store.path == tmp_path / "lophoc.db"


def test_sqlite_absolute_path(tmp_path: pathlib.Path) -> None:
    """``sqlite:///abs/path.db`` names that file, percent-escapes decoded."""
    assert sqlite_path("sqlite:///srv/lophoc/rooms.db", tmp_path) == pathlib.Path(
        "/srv/lophoc/rooms.db"
    )
    assert sqlite_path("sqlite:///srv/l%E1%BB%9Bp/a%20b.db", tmp_path) == pathlib.Path(
        "/srv/lớp/a b.db"
    )


@pytest.mark.parametrize("url", ["sqlite://relative.db", "sqlite://host/srv/x.db"])
def test_sqlite_needs_an_absolute_path(url: str, tmp_path: pathlib.Path) -> None:
    """A SQLite URL with a host or a relative path is refused."""
    with pytest.raises(ConfigError, match=r"sqlite:///absolute/path\.db"):
        open_store(url, tmp_path)


def test_history_limit_reaches_the_store(tmp_path: pathlib.Path) -> None:
    """open_store passes history_limit to every backend."""
    for url in ("memory://", "sqlite://", "redis://127.0.0.1:6379/0"):
        store: Store = open_store(url, tmp_path, history_limit=7)
        assert store.history_limit == 7


def test_history_limit_must_be_positive(tmp_path: pathlib.Path) -> None:
    """A history limit below 1 is a configuration error naming the value."""
    with pytest.raises(ConfigError, match="history_limit") as caught:
        open_store("memory://", tmp_path, history_limit=0)
    assert caught.value.value == 0


def test_sqlite_is_no_broker() -> None:
    """Asking for a SQLite broker is a configuration error naming the URL."""
    with pytest.raises(ConfigError, match="broadcast") as caught:
        open_broker("sqlite:///srv/lophoc.db")
    assert caught.value.value == "sqlite:///srv/lophoc.db"


@pytest.mark.parametrize("url", ["kafka://user:s3cret@host:9092", "nothing"])
def test_unknown_scheme_is_refused_without_the_password(
    url: str, tmp_path: pathlib.Path
) -> None:
    """An unknown scheme is a ConfigError that never shows the password."""
    for opening in (lambda: open_broker(url), lambda: open_store(url, tmp_path)):
        with pytest.raises(ConfigError) as caught:
            opening()
        assert "s3cret" not in str(caught.value)


def test_bad_redis_url_is_refused_without_the_password() -> None:
    """A Redis URL redis-py cannot parse is a ConfigError, password masked."""
    url = "redis://:s3cret@127.0.0.1:port/0"
    for opening in (RedisBroker, RedisStore):
        with pytest.raises(ConfigError) as caught:
            opening(url)
        assert "s3cret" not in str(caught.value)
        assert "***" in str(caught.value)


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://:s3cret@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://alice:s3cret@host:6379/0", "redis://alice:***@host:6379/0"),
        (
            "redis://host:6379/0?password=s3cret&db=1",
            "redis://host:6379/0?password=***&db=1",
        ),
        ("redis://host:6379/0", "redis://host:6379/0"),
        ("memory://", "memory://"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    """Passwords in the user part or the query become ``***``."""
    assert mask_url(url) == masked
