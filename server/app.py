"""The Starlette application of one node: the WebSocket, health and metrics.

``/ws`` is the protocol endpoint (see docs/protocol.md). A connection that
may not open is still accepted and then closed at once with a close code and
a reason: a browser's WebSocket never shows the status of a refused HTTP
upgrade to the page, but it does show a close code.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import pathlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from client_sdk.codec import server_codec
from client_sdk.protocol import MSGPACK_SUBPROTOCOL, SUBPROTOCOLS, CloseCode
from media.ice import IceServer
from rooms.backends import open_broker, open_store
from rooms.broker import Broker
from rooms.errors import BackendError
from rooms.hub import Hub
from rooms.store import Store

from . import api, exam_api, metrics, web
from .auth import TokenRefused, verify
from .collector import QuietCollector
from .exams import load_or_create_audit_key
from .media_hub import MediaHub
from .session import Session
from .settings import Settings
from .transport import Framer

logger = logging.getLogger(__name__)

#: New container objects between two collections of the youngest
#: generation (CPython's default is 700); see the lifespan below.
GC_YOUNG_THRESHOLD = 20_000

READY_TIMEOUT = 2.0
#: The share of the drain time kept for handing rooms over.
DRAIN_HANDOVER_SHARE = 0.25
#: The share of the drain time given to the reverse proxy to notice, and
#: its longest.
DRAIN_NOTICE_SHARE = 0.1
DRAIN_NOTICE_MAX = 2.0


@dataclass
class Node:
    """What one running node holds: its backends, hub and sessions."""

    settings: Settings
    broker: Broker
    store: Store
    hub: Hub
    media: MediaHub
    stats: metrics.Stats = field(default_factory=metrics.Stats)
    sessions: set[Session] = field(default_factory=set)
    #: Frames each room event once for all the node's sessions.
    framer: Framer = field(default_factory=Framer)
    #: Set by :meth:`drain`: the node takes no new connection.
    draining: bool = False

    async def drain(self) -> None:
        """Leave the cluster in good order, within ``settings.drain_seconds``.

        New connections are refused (1013) and ``/readyz`` fails, so that
        the reverse proxy sends clients elsewhere. Each connection is closed
        with 1012 once its command under way is answered, and its clients
        reconnect to another node; meanwhile this node still writes its
        rooms, so their rejoins forwarded here are served. Then the rooms'
        leases are released, and the next command for each room makes
        another node its writer at once, not after the lease lapses.
        """
        if self.draining:
            return
        self.draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.drain_seconds
        logger.info(
            "node %s draining: %d connections, %d rooms",
            self.hub.node,
            len(self.sessions),
            self.hub.rooms_owned,
        )
        # First a notice: /readyz fails while every connection is still
        # served, so that the reverse proxy sends the clients that are
        # about to reconnect to another node rather than back here.
        if self.sessions:
            await asyncio.sleep(
                min(self.settings.drain_seconds * DRAIN_NOTICE_SHARE, DRAIN_NOTICE_MAX)
            )
        for session in list(self.sessions):
            session.drain(CloseCode.SERVICE_RESTART, "node shutting down; reconnect")
        # Keep a share of the time for storing what the writers hold.
        until = deadline - self.settings.drain_seconds * DRAIN_HANDOVER_SHARE
        for _ in range(int(self.settings.drain_seconds / 0.05) + 1):
            if not self.sessions or loop.time() >= until:
                break
            await asyncio.sleep(0.05)
        if self.sessions:
            logger.warning(
                "node %s: %d connections still open", self.hub.node, len(self.sessions)
            )
        try:
            async with asyncio.timeout(max(deadline - loop.time(), 0.1)):
                await self.hub.hand_over()
        except TimeoutError:
            logger.warning("node %s: rooms not all handed over in time", self.hub.node)


def choose_subprotocol(offered: list[str]) -> str | None:
    """The first version 1 subprotocol the client offered, in its order.

    A client that offers none gets MessagePack; one that offers only
    unknown subprotocols gets ``None`` and is refused.
    """
    if not offered:
        return MSGPACK_SUBPROTOCOL
    for name in offered:
        if name in SUBPROTOCOLS:
            return name
    return None


def origin_allowed(origin: str | None, host: str | None, allowed: list[str]) -> bool:
    """Whether a browser page at ``origin`` may open the WebSocket.

    Clients that are not browsers send no Origin (RFC 6455 §4.1) and are
    judged by their token alone.
    """
    if not origin:
        return True
    if "*" in allowed or origin in allowed:
        return True
    if allowed:
        return False
    return bool(host) and urlsplit(origin).netloc == host


def bearer_token(websocket: WebSocket) -> str | None:
    """The token from the ``token`` query parameter or an Authorization header."""
    token = websocket.query_params.get("token")
    if token:
        return token
    header = websocket.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


class WebSocketEndpoint:
    """The ``/ws`` endpoint as a plain ASGI app.

    Starlette calls an endpoint that is not a function with the ASGI
    ``send`` itself rather than through a WebSocket object, and the session
    sends its frames through it (see Session). That ``send`` still passes
    through Starlette's exception middleware, one coroutine more per frame;
    taking the server's own ``send`` past it made no difference that the
    fan-out benchmark could tell from its noise.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await websocket_endpoint(WebSocket(scope, receive, send), send)


class LophocApp(Starlette):
    """The node's Starlette app, with ``/ws`` taken before the middleware.

    Every WebSocket connection lives as long as its client, and the
    coroutines of Starlette's middleware and router stay on its stack the
    whole time, a kilobyte and a half per idle connection. The ``/ws``
    endpoint needs neither (it handles its own errors, and Starlette's
    error middleware serves only HTTP), so it is called directly; the
    route stays in the table for what lists the routes.
    """

    _ws_endpoint = WebSocketEndpoint()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "websocket"
            and scope["path"].removeprefix(scope.get("root_path", "")) == "/ws"
        ):
            scope["app"] = self
            await self._ws_endpoint(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


async def websocket_endpoint(websocket: WebSocket, asgi_send: Send) -> None:
    """Check the handshake, then serve the connection as a :class:`Session`."""
    node: Node = websocket.app.state.node
    settings = node.settings
    offered = list(websocket.scope.get("subprotocols") or [])
    subprotocol = choose_subprotocol(offered)
    refusal: TokenRefused | None = None
    claims = None

    if node.draining:
        refusal = TokenRefused(
            CloseCode.TRY_AGAIN_LATER, "node shutting down; connect to another"
        )
    elif subprotocol is None:
        refusal = TokenRefused(
            CloseCode.SUBPROTOCOL_UNSUPPORTED,
            "offer lophoc.v1.msgpack or lophoc.v1.json",
        )
    elif not origin_allowed(
        websocket.headers.get("origin"),
        websocket.headers.get("host"),
        settings.allowed_origins,
    ):
        refusal = TokenRefused(CloseCode.ORIGIN_REFUSED, "origin not allowed")
    else:
        room = websocket.query_params.get("room")
        try:
            claims = verify(settings.secret, bearer_token(websocket))
        except TokenRefused as exc:
            refusal = exc
        else:
            if not room:
                refusal = TokenRefused(CloseCode.ROOM_MISSING, "no room named")
            elif not claims.may_enter(room):
                refusal = TokenRefused(
                    CloseCode.WRONG_ROOM, "token does not open this room"
                )

    # Answer only with a subprotocol the client offered: a client fails a
    # handshake that names one it did not offer (RFC 6455 §4.1), so one that
    # offered none gets none and speaks MessagePack. A refused client still
    # gets one of its own, or a browser would show 1006 instead of the reason.
    answered = (subprotocol or offered[0]) if offered else None
    await websocket.accept(subprotocol=answered)
    if refusal is not None or claims is None or subprotocol is None:
        refusal = refusal or TokenRefused(CloseCode.TOKEN_INVALID, "token invalid")
        node.stats.refusals[refusal.code.value] += 1
        logger.info("handshake refused: %d %s", refusal.code.value, refusal.reason)
        await websocket.close(refusal.code.value, refusal.reason)
        return

    session = Session(
        websocket,
        claims,
        server_codec(subprotocol),
        node.hub,
        settings,
        node.stats,
        asgi_send,
        node.media,
        node.framer,
    )
    node.stats.connections += 1
    node.stats.connections_total += 1
    node.sessions.add(session)
    logger.debug("session %s: opened for user %s", session.id, claims.user)
    try:
        await session.run()
    finally:
        node.sessions.discard(session)
        node.stats.connections -= 1
        logger.debug("session %s: closed", session.id)


async def healthz(request: Request) -> Response:
    """The process is alive and its event loop answers."""
    return JSONResponse({"status": "ok", "node": request.app.state.node.hub.node})


async def readyz(request: Request) -> Response:
    """Broker and store both answer; otherwise 503 naming what failed.

    A draining node answers 503 too: it takes no new connection.
    """
    node: Node = request.app.state.node
    if node.draining:
        return JSONResponse({"status": "draining"}, 503)
    failed: dict[str, str] = {}
    for name, backend in (("broker", node.broker), ("store", node.store)):
        try:
            await asyncio.wait_for(backend.ping(), READY_TIMEOUT)
        except (BackendError, TimeoutError, OSError) as exc:
            failed[name] = str(exc) or type(exc).__name__
    if failed:
        return JSONResponse({"status": "unavailable", "failed": failed}, 503)
    return JSONResponse({"status": "ready"})


async def metrics_endpoint(request: Request) -> Response:
    """Prometheus text exposition of the node's counters."""
    registry = request.app.state.registry
    return Response(metrics.render(registry), media_type=metrics.CONTENT_TYPE)


async def index(request: Request) -> Response:
    """Where to connect, for a person who opens the node in a browser."""
    return JSONResponse(
        {
            "service": "lophoc",
            "node": request.app.state.node.hub.node,
            "websocket": "/ws?room=ROOM&token=TOKEN",
            "subprotocols": list(SUBPROTOCOLS),
            "health": "/healthz",
            "ready": "/readyz",
            "metrics": "/metrics",
        }
    )


def create_app(settings: Settings) -> Starlette:
    """A node with the backends named by ``settings``; they open on startup."""
    settings = settings.with_secret()
    data_dir = Path(settings.data_dir)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        broker = open_broker(settings.broker_url)
        store = open_store(settings.store_url, data_dir)
        await store.connect()
        await broker.connect()
        hub = Hub(
            broker,
            store,
            node=settings.node or None,
            lease_ms=settings.lease_ms,
            audit_key=load_or_create_audit_key(data_dir),
        )
        await hub.start()
        # Everything allocated at startup lives as long as the process: out of
        # the collector's sight, a full collection under load (a quiz burst)
        # walks only what the connections made, which shortens its pauses.
        media = MediaHub(
            hub,
            [
                IceServer.from_config(msgspec.to_builtins(s))
                for s in settings.ice_servers
            ],
            pathlib.Path(settings.recordings_dir or data_dir / "recordings"),
        )
        gc.collect()
        gc.freeze()
        # A quiz burst makes tens of thousands of short-lived objects a
        # second (frames, commands, replies). At CPython's default of a
        # young collection every 700 new objects, the collections, and the
        # older ones they trigger, paused the loop for 3 to 150 ms in a
        # burst of 2,000 answers, most of the p99 of their acks; every
        # 20,000 keeps each pause short and rare.
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        node = Node(settings, broker, store, hub, media)
        # What a join storm leaves the collector is walked in the quiet
        # after it, not in the next quiz question's burst.
        collector = QuietCollector(node.stats)
        collector.start()
        app.state.node = node
        app.state.registry = metrics.registry_for(
            node.stats, lambda: (hub.rooms_owned, hub.rooms_followed)
        )
        logger.info(
            "node %s up: broker %s, store %s",
            hub.node,
            urlsplit(settings.broker_url).scheme,
            urlsplit(settings.store_url).scheme,
        )
        try:
            yield
        finally:
            for session in list(node.sessions):
                session.close_soon(CloseCode.GOING_AWAY, "server shutting down")
            await collector.stop()
            await media.close()
            await hub.close()
            await broker.close()
            await store.close()
            logger.info("node %s down", hub.node)

    return LophocApp(
        routes=[
            Route("/", index),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics_endpoint),
            WebSocketRoute("/ws", LophocApp._ws_endpoint),
            *api.routes,
            *exam_api.routes,
            *web.routes,
        ],
        lifespan=lifespan,
    )
