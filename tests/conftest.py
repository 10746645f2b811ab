"""Fixtures for every test: a real redis-server, started once per session.

A failed test's report also shows the output of every ``lophoc serve``
process its fixtures started.
"""

from __future__ import annotations

import pathlib
import shutil
from collections.abc import Iterator

import pytest
import redis

from tests.helpers import MISSING_REDIS, LophocProcess, RedisProcess, processes_in


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """One redis-server for the whole session, on a free port."""
    if shutil.which("redis-server") is None:
        pytest.fail(MISSING_REDIS, pytrace=False)
    directory = tmp_path_factory.mktemp("redis")
    server = RedisProcess(directory)
    try:
        server.start()
    except RuntimeError:
        # Another process may have taken the free port in the meantime.
        server = RedisProcess(directory)
        server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisProcess) -> str:
    """The session's Redis, emptied for this test."""
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.flushall()
    finally:
        client.close()
    return redis_server.url


@pytest.fixture
def redis_process(tmp_path: pathlib.Path) -> Iterator[RedisProcess]:
    """A redis-server of this test's own, which the test may stop and restart."""
    if shutil.which("redis-server") is None:
        pytest.fail(MISSING_REDIS, pytrace=False)
    server = RedisProcess(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Iterator[None]:
    """Attach the logs of the servers a failed test used to its report."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if not report.failed:
        return
    servers: list[LophocProcess] = []
    for value in getattr(item, "funcargs", {}).values():
        servers.extend(processes_in(value))
    for server in dict.fromkeys(servers):
        report.sections.append(
            (f"lophoc serve on port {server.port}", server.log_tail(80))
        )
