"""The broker contract: every backend, the same behaviour."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from rooms.backends import open_broker
from rooms.broker import Broker
from rooms.broker_redis import RedisBroker
from rooms.errors import BackendError
from tests.helpers import RedisProcess, free_port

BACKENDS = ["memory", pytest.param("redis", marks=pytest.mark.redis)]

#: How long a test waits for messages it expects.
WAIT_SECONDS = 5.0


class Inbox:
    """A broker handler that keeps what it receives and lets a test wait for it."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self._changed = asyncio.Event()

    def __call__(self, data: bytes) -> None:
        self.messages.append(data)
        self._changed.set()

    async def wait_for(self, count: int) -> list[bytes]:
        """The messages, once there are at least ``count`` of them."""
        async with asyncio.timeout(WAIT_SECONDS):
            while len(self.messages) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.messages


@pytest.fixture(params=BACKENDS)
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[Broker]:
    """A connected broker of the backend under test."""
    if request.param == "memory":
        url = "memory://"
    else:
        url = request.getfixturevalue("redis_url")
    broker = open_broker(url)
    await broker.connect()
    yield broker
    await broker.close()


async def test_delivers_to_every_subscriber_of_the_channel(broker: Broker) -> None:
    """Each subscriber of a channel gets its messages; other channels do not."""
    first, second, elsewhere = Inbox(), Inbox(), Inbox()
    await broker.subscribe("a", first)
    await broker.subscribe("a", second)
    await broker.subscribe("b", elsewhere)

    await broker.publish("a", b"for a")
    await broker.publish("b", b"marker")

    assert await first.wait_for(1) == [b"for a"]
    assert await second.wait_for(1) == [b"for a"]
    # Both channels share one ordered stream: "for a" would have come first.
    assert await elsewhere.wait_for(1) == [b"marker"]


async def test_keeps_publish_order(broker: Broker) -> None:
    """A thousand messages arrive in the order they were published."""
    inbox = Inbox()
    await broker.subscribe("a", inbox)
    sent = [n.to_bytes(4, "big") for n in range(1000)]
    for data in sent:
        await broker.publish("a", data)
    assert await inbox.wait_for(len(sent)) == sent


async def test_unsubscribe_stops_delivery(broker: Broker) -> None:
    """After unsubscribe a handler gets nothing, whether or not others remain."""
    leaving, staying, marker = Inbox(), Inbox(), Inbox()
    await broker.subscribe("a", leaving)
    await broker.subscribe("a", staying)
    await broker.subscribe("b", marker)

    await broker.unsubscribe("a", leaving)
    await broker.publish("a", b"one")
    assert await staying.wait_for(1) == [b"one"]

    await broker.unsubscribe("a", staying)
    await broker.publish("a", b"two")
    await broker.publish("b", b"marker")
    await marker.wait_for(1)

    assert leaving.messages == []
    assert staying.messages == [b"one"]


async def test_subscribe_again_after_unsubscribe(broker: Broker) -> None:
    """A channel left by its last handler can be subscribed again."""
    inbox = Inbox()
    await broker.subscribe("a", inbox)
    await broker.unsubscribe("a", inbox)
    await broker.subscribe("a", inbox)
    await broker.publish("a", b"back")
    assert await inbox.wait_for(1) == [b"back"]


async def test_racing_subscribe_and_unsubscribe(broker: Broker) -> None:
    """Interleaved subscribes and unsubscribes end in the last state asked for."""
    inboxes = [Inbox() for _ in range(10)]
    marker = Inbox()
    await broker.subscribe("marker", marker)
    for round_ in range(5):
        if round_:
            await asyncio.gather(*(broker.unsubscribe("a", i) for i in inboxes[:3]))
        await asyncio.gather(*(broker.subscribe("a", inbox) for inbox in inboxes))
        await asyncio.gather(
            *(broker.unsubscribe("a", inbox) for inbox in inboxes),
            *(broker.subscribe("a", inbox) for inbox in inboxes[:3]),
        )
        await asyncio.gather(
            *(broker.unsubscribe("a", inbox) for inbox in inboxes[:3]),
            *(broker.subscribe("a", inbox) for inbox in inboxes[:3]),
        )

    await broker.publish("a", b"x")
    await broker.publish("marker", b"marker")
    await marker.wait_for(1)
    assert [inbox.messages for inbox in inboxes] == [[b"x"]] * 3 + [[]] * 7


async def test_unsubscribe_unknown_handler_is_a_no_op(broker: Broker) -> None:
    """Unsubscribing what was never subscribed changes nothing."""
    inbox = Inbox()
    await broker.subscribe("a", inbox)
    await broker.unsubscribe("a", Inbox())
    await broker.unsubscribe("never", inbox)
    await broker.publish("a", b"still here")
    assert await inbox.wait_for(1) == [b"still here"]


async def test_binary_payloads_survive(broker: Broker) -> None:
    """Payloads with every byte value, empty or large, arrive unchanged."""
    inbox = Inbox()
    await broker.subscribe("a", inbox)
    payloads = [
        bytes(range(256)),
        b"",
        b"\r\n*1\r\n$4\r\nPING\r\n",
        bytes(range(255, -1, -1)) * 4096,
    ]
    for data in payloads:
        await broker.publish("a", data)
    assert await inbox.wait_for(len(payloads)) == payloads


async def test_failing_handler_does_not_stop_others(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    """A handler that raises is logged; later handlers and messages still run."""

    def failing(data: bytes) -> None:
        raise RuntimeError("handler bug")

    inbox = Inbox()
    await broker.subscribe("a", failing)
    await broker.subscribe("a", inbox)
    with caplog.at_level(logging.ERROR, logger="rooms"):
        await broker.publish("a", b"one")
        await broker.publish("a", b"two")
        assert await inbox.wait_for(2) == [b"one", b"two"]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2
    assert all(r.exc_info is not None for r in errors)


async def test_ping(broker: Broker) -> None:
    """A connected broker answers ping."""
    await broker.ping()


async def test_memory_publish_does_not_run_handlers() -> None:
    """The in-process publish only queues: handlers run later, on the dispatcher."""
    broker = open_broker("memory://")
    await broker.connect()
    try:
        inbox = Inbox()
        await broker.subscribe("a", inbox)
        await broker.publish("a", b"queued")
        assert inbox.messages == []
        assert await inbox.wait_for(1) == [b"queued"]
    finally:
        await broker.close()


async def test_memory_skips_messages_queued_before_subscribing() -> None:
    """A message published before subscribe is not delivered, even if queued."""
    broker = open_broker("memory://")
    await broker.connect()
    try:
        early, late = Inbox(), Inbox()
        await broker.subscribe("a", early)
        await broker.publish("a", b"before")
        await broker.subscribe("a", late)
        await broker.publish("a", b"after")
        assert await early.wait_for(2) == [b"before", b"after"]
        assert late.messages == [b"after"]
    finally:
        await broker.close()


async def test_memory_unconnected_refuses_publish() -> None:
    """A memory broker that is not running says so instead of dropping frames."""
    broker = open_broker("memory://")
    with pytest.raises(BackendError):
        await broker.publish("a", b"lost")
    with pytest.raises(BackendError):
        await broker.ping()


# Redis ----------------------------------------------------------------------


@pytest.mark.redis
async def test_redis_nodes_see_each_other(redis_url: str) -> None:
    """Two brokers on one Redis, as two nodes, get each other's messages."""
    node_a, node_b = RedisBroker(redis_url), RedisBroker(redis_url)
    await node_a.connect()
    await node_b.connect()
    try:
        inbox_a, inbox_b = Inbox(), Inbox()
        await node_a.subscribe("room", inbox_a)
        await node_b.subscribe("room", inbox_b)
        await node_a.publish("room", b"from a")
        await node_b.publish("room", b"from b")
        assert await inbox_a.wait_for(2) == [b"from a", b"from b"]
        assert await inbox_b.wait_for(2) == [b"from a", b"from b"]
    finally:
        await node_a.close()
        await node_b.close()


@pytest.mark.redis
async def test_redis_subscribe_returns_when_active(redis_url: str) -> None:
    """A message published by another node right after subscribe is delivered."""
    listener, sender = RedisBroker(redis_url), RedisBroker(redis_url)
    await listener.connect()
    await sender.connect()
    try:
        inboxes = [Inbox() for _ in range(20)]
        for number, inbox in enumerate(inboxes):
            await listener.subscribe(f"room-{number}", inbox)
            await sender.publish(f"room-{number}", b"right away")
        for inbox in inboxes:
            assert await inbox.wait_for(1) == [b"right away"]
    finally:
        await listener.close()
        await sender.close()


@pytest.mark.redis
async def test_redis_unreachable_raises_backend_error() -> None:
    """Connecting to a port where no Redis listens raises BackendError."""
    broker = RedisBroker(f"redis://127.0.0.1:{free_port()}/0")
    try:
        async with asyncio.timeout(10):
            with pytest.raises(BackendError):
                await broker.connect()
    finally:
        await broker.close()


@pytest.mark.redis
async def test_redis_stopped_raises_backend_error(
    redis_process: RedisProcess,
) -> None:
    """With Redis stopped, ping and publish raise BackendError."""
    broker = RedisBroker(redis_process.url)
    await broker.connect()
    try:
        await broker.ping()
        redis_process.stop()
        async with asyncio.timeout(10):
            with pytest.raises(BackendError):
                await broker.ping()
            with pytest.raises(BackendError):
                await broker.publish("a", b"lost")
    finally:
        await broker.close()


@pytest.mark.redis
async def test_redis_reconnects_and_resubscribes(
    redis_process: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """After Redis restarts, subscriptions work again and on_reconnect handlers ran.

    The reconnect handler publishes from another node: its message arrives,
    so the handlers ran only once every channel was subscribed again.
    """
    broker = RedisBroker(redis_process.url, backoff_cap=0.2)
    sender = RedisBroker(redis_process.url)
    inbox = Inbox()
    reconnected = asyncio.Event()
    calls: list[str] = []

    async def failing() -> None:
        calls.append("failing")
        raise RuntimeError("handler bug")

    async def repair() -> None:
        calls.append("repair")
        await sender.publish("room", b"from the handler")
        reconnected.set()

    broker.on_reconnect(failing)
    broker.on_reconnect(repair)
    await broker.connect()
    await sender.connect()
    try:
        await broker.subscribe("room", inbox)
        await sender.publish("room", b"before")
        await inbox.wait_for(1)

        with caplog.at_level(logging.INFO, logger="rooms"):
            redis_process.stop()
            redis_process.start()
            async with asyncio.timeout(10):
                await reconnected.wait()

        assert calls == ["failing", "repair"]
        await sender.publish("room", b"after")
        assert await inbox.wait_for(3) == [b"before", b"from the handler", b"after"]
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert any("lost the connection" in r.getMessage() for r in warnings)
    finally:
        await broker.close()
        await sender.close()


@pytest.mark.redis
async def test_redis_idle_connection_stays_up(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Keepalive PINGs on an idle connection are answered and change nothing."""
    broker = RedisBroker(redis_url, keepalive=0.05)
    await broker.connect()
    try:
        inbox = Inbox()
        await broker.subscribe("room", inbox)
        with caplog.at_level(logging.WARNING, logger="rooms"):
            await asyncio.sleep(0.4)
            await broker.publish("room", b"still there")
            assert await inbox.wait_for(1) == [b"still there"]
        assert caplog.records == []
    finally:
        await broker.close()


class Warnings(logging.Handler):
    """Collects warnings of a logger and lets a test wait for the first one."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        self.seen.set()


@pytest.mark.redis
async def test_redis_silent_server_is_detected(redis_process: RedisProcess) -> None:
    """A Redis that stops answering without closing is given up and rejoined."""
    url = f"{redis_process.url}?socket_timeout=0.3&socket_connect_timeout=0.3"
    broker = RedisBroker(url, keepalive=0.1, backoff_cap=0.2)
    reconnected = asyncio.Event()

    async def note() -> None:
        reconnected.set()

    broker.on_reconnect(note)
    warnings = Warnings()
    logger = logging.getLogger("rooms.broker_redis")
    logger.addHandler(warnings)
    await broker.connect()
    try:
        inbox = Inbox()
        await broker.subscribe("room", inbox)
        redis_process.pause()
        try:
            async with asyncio.timeout(5):
                await warnings.seen.wait()
        finally:
            redis_process.resume()
        async with asyncio.timeout(10):
            await reconnected.wait()
        assert "PING" in warnings.messages[0]
        await broker.publish("room", b"back")
        assert await inbox.wait_for(1) == [b"back"]
    finally:
        logger.removeHandler(warnings)
        await broker.close()


@pytest.mark.redis
async def test_redis_subscribe_needs_connect(redis_url: str) -> None:
    """Subscribing before connect fails at once instead of waiting."""
    broker = RedisBroker(redis_url)
    try:
        with pytest.raises(BackendError, match="not connected"):
            await broker.subscribe("room", Inbox())
    finally:
        await broker.close()


@pytest.mark.redis
async def test_redis_subscribe_while_down_completes_after_restart(
    redis_process: RedisProcess,
) -> None:
    """A subscribe made while Redis is away returns once it is back, and works."""
    broker = RedisBroker(redis_process.url, backoff_cap=0.2)
    await broker.connect()
    try:
        redis_process.stop()
        inbox = Inbox()
        subscribing = asyncio.create_task(broker.subscribe("room", inbox))
        await asyncio.sleep(0.2)
        assert not subscribing.done()

        redis_process.start()
        async with asyncio.timeout(10):
            await subscribing
        await broker.publish("room", b"hello")
        assert await inbox.wait_for(1) == [b"hello"]
    finally:
        await broker.close()


@pytest.mark.redis
async def test_redis_subscribe_times_out_while_down(
    redis_process: RedisProcess,
) -> None:
    """Without Redis, subscribe gives up after its timeout and keeps no handler."""
    broker = RedisBroker(redis_process.url, subscribe_timeout=0.3, backoff_cap=0.2)
    await broker.connect()
    try:
        redis_process.stop()
        inbox = Inbox()
        async with asyncio.timeout(10):
            with pytest.raises(BackendError, match="did not confirm"):
                await broker.subscribe("room", inbox)

        redis_process.start()
        marker = Inbox()
        async with asyncio.timeout(10):
            await broker.subscribe("marker", marker)
        await broker.publish("room", b"not for the inbox")
        await broker.publish("marker", b"marker")
        await marker.wait_for(1)
        assert inbox.messages == []
    finally:
        await broker.close()
