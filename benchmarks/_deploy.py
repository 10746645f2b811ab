"""The servers under test of the fan-out and idle benchmarks, as processes.

Each is a *deployment*: one or two server processes on free loopback ports
and, for two nodes, the redis-server they share, started here without
persistence on a free port of its own. The names:

``lophoc``
    ``lophoc serve`` with the memory broker and store: one node.
``lophoc-2``
    two ``lophoc serve`` nodes with the Redis broker and store.
``peer``
    ``_peer.py``, a ``websockets`` server using ``broadcast()``: one node.
``socketio``
    ``_sio_peer.py``, python-socketio's ``AsyncServer`` under uvicorn.
``socketio-2``
    two of those with ``socketio.AsyncRedisManager``.

The clients connect to the nodes in turn; the publisher to the first one.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import _wire
import msgspec
from _answers_servers import (
    HOST,
    ROOT,
    free_port,
    serve_command,
    start_redis,
    stop_process,
    wait_listening,
)

from client_sdk.protocol import Member

SERVERS = ("lophoc", "peer", "socketio", "lophoc-2", "socketio-2")


@dataclass
class Deployment:
    """A server under test: its nodes and, with two nodes, their redis-server."""

    name: str
    dialect: str
    ports: list[int] = field(default_factory=list)
    nodes: list[asyncio.subprocess.Process] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    redis: asyncio.subprocess.Process | None = None
    redis_port: int | None = None

    @property
    def pid(self) -> int:
        """The first node's process id: the publisher's node."""
        return self.nodes[0].pid

    @property
    def pids(self) -> list[int]:
        """Every process of the deployment, for its CPU time."""
        pids = [node.pid for node in self.nodes]
        if self.redis is not None:
            pids.append(self.redis.pid)
        return pids

    @property
    def redis_url(self) -> str:
        """The URL of the deployment's redis-server."""
        return f"redis://{HOST}:{self.redis_port}/0"


def node_command(
    name: str, port: int, data_dir: Path, sender: Member, redis_url: str | None
) -> list[str]:
    """The command line of one node of deployment ``name``."""
    base = name.removesuffix("-2")
    if base == "lophoc":
        backend = redis_url or "memory://"
        return [*serve_command(port, data_dir), "--broker", backend, "--store", backend]
    script = "_peer.py" if base == "peer" else "_sio_peer.py"
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / script),
        "--port",
        str(port),
        "--sender",
        json.dumps(msgspec.to_builtins(sender)),
    ]
    if redis_url is not None:
        command += ["--redis", redis_url]
    return command


def lophoc_env(secret: str, clients: int) -> dict[str, str]:
    """The environment of a lophoc node for a room of ``clients``."""
    return dict(
        os.environ,
        LOPHOC_SECRET=secret,
        # One publisher sends hundreds of messages a second here, far above
        # a classroom's limit; the limit is not what is measured.
        LOPHOC_MESSAGES_PER_SECOND="100000",
        LOPHOC_BURST="100000",
        # The join storm queues up to one frame per member at each member;
        # the default 1024 would close the slower ones.
        LOPHOC_SEND_QUEUE=str(max(65_536, 4 * clients)),
        LOPHOC_LOG_LEVEL="warning",
    )


def running(process: asyncio.subprocess.Process) -> Callable[[], bool]:
    """Whether ``process`` still runs, asked each time it is called."""
    return lambda: process.returncode is None


async def start_deployment(
    name: str, clients: int, secret: str, workdir: Path, sender: Member
) -> Deployment:
    """Start deployment ``name`` and wait until every node accepts connections."""
    if name not in SERVERS:
        raise ValueError(f"unknown server {name!r}; expected one of {SERVERS}")
    dialect = _wire.SOCKETIO if name.startswith("socketio") else _wire.LOPHOC
    deployment = Deployment(name, dialect)
    try:
        redis_url = None
        if name.endswith("-2"):
            redis_dir = workdir / f"{name}-redis"
            redis_dir.mkdir(parents=True, exist_ok=True)
            deployment.redis, deployment.redis_port = await start_redis(redis_dir)
            redis_url = deployment.redis_url
        for index in range(2 if name.endswith("-2") else 1):
            port = free_port()
            log = workdir / f"{name}-{index}.log"
            env = dict(os.environ)
            if name.startswith("lophoc"):
                env = lophoc_env(secret, clients)
                env["LOPHOC_NODE"] = f"node-{index}"
            command = node_command(
                name, port, workdir / f"{name}-{index}", sender, redis_url
            )
            with log.open("wb") as output:
                process = await asyncio.create_subprocess_exec(
                    *command, cwd=ROOT, env=env, stdout=output, stderr=output
                )
            deployment.ports.append(port)
            deployment.nodes.append(process)
            deployment.logs.append(log)
            await wait_listening(port, running(process), name, log)
    except BaseException:
        await stop_deployment(deployment)
        raise
    return deployment


async def stop_deployment(deployment: Deployment) -> None:
    """Stop every node, then the redis-server."""
    await asyncio.gather(*(stop_process(node) for node in deployment.nodes))
    if deployment.redis is not None:
        await stop_process(deployment.redis)
