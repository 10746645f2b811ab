"""The broker: fan-out of encoded frames on named channels.

A room's events travel on one channel per room; node-to-node requests on
one channel per node. Payloads are bytes and are never inspected here.

Handlers run on the broker's reader task, in the order messages arrived on
their channel; they must not block (they hand frames to queues). Backends
are chosen by URL (see :func:`rooms.backends.open_broker`) and all of them
pass the contract suite in ``tests/rooms/test_broker_contract.py``.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable

Handler = Callable[[bytes], None]
ReconnectHandler = Callable[[], Awaitable[None]]


class Broker(abc.ABC):
    """Publish and subscribe on named channels."""

    @abc.abstractmethod
    async def connect(self) -> None:
        """Open connections; called once before any other method."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop the reader task and release connections."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise :class:`rooms.errors.BackendError` if the broker is unreachable."""

    @abc.abstractmethod
    async def publish(self, channel: str, data: bytes) -> None:
        """Send ``data`` to every subscriber of ``channel``, on every node."""

    @abc.abstractmethod
    async def subscribe(self, channel: str, handler: Handler) -> None:
        """Call ``handler`` with each message published on ``channel``.

        Returns once the subscription is active: a message published after
        this returns is delivered.
        """

    @abc.abstractmethod
    async def unsubscribe(self, channel: str, handler: Handler) -> None:
        """Stop calling ``handler`` for ``channel``."""

    def on_reconnect(self, handler: ReconnectHandler) -> None:
        """Call ``handler`` after the broker lost and regained its connection.

        Messages published while it was down are lost; the handler lets the
        caller repair from the store. The in-process broker never reconnects.
        """
        self._reconnect_handlers.append(handler)

    def __init__(self) -> None:
        self._reconnect_handlers: list[ReconnectHandler] = []
