"""The ``lophoc`` command: run a node, mint join tokens, check settings.

Every subcommand reads the same settings as ``lophoc serve`` (defaults, the
settings file, ``LOPHOC_*`` environment variables, then its own flags), so a
token minted here is signed with the key the node on this machine uses.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from client_sdk.protocol import Role
from rooms.backends import open_broker, open_store
from rooms.errors import LophocError

from . import auth, demo
from .cli_audit import add_audit_commands
from .cli_exams import add_exam_commands
from .cli_lessons import add_lesson_commands
from .settings import Settings, load_settings

logger = logging.getLogger(__name__)

_QUERY_TOKEN = re.compile(r"(?<=[?&]token=)[^&\s\"]+")


class RedactTokens(logging.Filter):
    """Masks the ``token`` query parameter in log records.

    uvicorn logs the path and query string of every WebSocket handshake on
    its ``uvicorn.error`` logger, access log or not, and join tokens travel
    in that query string.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = _QUERY_TOKEN.sub("***", record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(
                _QUERY_TOKEN.sub("***", arg) if isinstance(arg, str) else arg
                for arg in record.args
            )
        return True


def _settings_from(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {
        "host": getattr(args, "host", None),
        "port": getattr(args, "port", None),
        "broker_url": getattr(args, "broker", None),
        "store_url": getattr(args, "store", None),
        "data_dir": getattr(args, "data_dir", None),
        "allowed_origins": getattr(args, "allowed_origin", None),
        "node": getattr(args, "node", None),
        "drain_seconds": getattr(args, "drain_seconds", None),
        "log_level": getattr(args, "log_level", None),
    }
    return load_settings(args.config, overrides)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .app import create_app
    from .drain import DrainingServer
    from .transport import FrameProtocol

    settings = _settings_from(args).with_secret()
    links = demo.prepare(settings) if args.demo else []
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        ws_max_size=settings.max_frame_bytes,
        ws_ping_interval=settings.ping_interval,
        ws_ping_timeout=settings.ping_timeout,
        # Compressing each frame once per member would cost more CPU than
        # the whole fan-out; classroom frames are small anyway.
        ws_per_message_deflate=False,
        # uvicorn's websockets protocol, taking a room's frames directly.
        ws=FrameProtocol,
        # The access log would print join tokens from query strings.
        access_log=False,
        log_level=settings.log_level,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    # After uvicorn.Config, which configures its loggers.
    logging.getLogger("uvicorn.error").addFilter(RedactTokens())
    server = DrainingServer(config, app)
    host = (
        "localhost"
        if settings.host in ("127.0.0.1", "0.0.0.0", "::")
        else settings.host
    )
    print(
        f"lophoc listening on http://{host}:{settings.port}/\n"
        f"  WebSocket: ws://{host}:{settings.port}/ws?room=ROOM&token=TOKEN\n"
        f"  a token:   lophoc token --role teacher --user t1 --room demo "
        f"--data-dir {settings.data_dir}\n"
        f"  pages:     http://{host}:{settings.port}/web/",
        flush=True,
    )
    if links:
        print(demo.describe(links, f"http://{host}:{settings.port}"), flush=True)
    server.run()
    return 0


def _token(args: argparse.Namespace) -> int:
    settings = _settings_from(args).with_secret()
    token = auth.mint(
        settings.secret,
        user=args.user,
        role=Role(args.role),
        rooms=args.room,
        name=args.name or "",
        school=args.school or "",
        class_=args.class_ or "",
        ttl_seconds=args.ttl,
        not_before=args.not_before,
    )
    print(token)
    return 0


def _show_settings(args: argparse.Namespace) -> int:
    settings = _settings_from(args)
    data = msgspec.to_builtins(settings)
    if data.get("secret"):
        data["secret"] = "(set)"
    for server in data.get("ice_servers", []):
        if server.get("credential"):
            server["credential"] = "(set)"
    print(json.dumps(data, indent=2, sort_keys=True))
    return 0


def _check(args: argparse.Namespace) -> int:
    settings = _settings_from(args)

    async def probe() -> dict[str, str]:
        results: dict[str, str] = {}
        broker = open_broker(settings.broker_url)
        store = open_store(settings.store_url, Path(settings.data_dir))
        for name, backend in (("broker", broker), ("store", store)):
            try:
                await asyncio.wait_for(backend.connect(), 5)
                await asyncio.wait_for(backend.ping(), 5)
                results[name] = "ok"
            except (LophocError, OSError, TimeoutError) as exc:
                results[name] = f"unreachable: {exc}"
            finally:
                await backend.close()
        return results

    results = asyncio.run(probe())
    for name, result in results.items():
        print(f"{name}: {result}")
    return 0 if all(r == "ok" for r in results.values()) else 1


def _secret(args: argparse.Namespace) -> int:
    print(secrets.token_urlsafe(48))
    return 0


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", help="settings file (TOML); default config/lophoc.toml"
    )
    parser.add_argument("--data-dir", help="where the SQLite store and key live")


def _add_backends(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--broker", help="broker URL: memory:// or redis://host:port/db"
    )
    parser.add_argument(
        "--store", help="store URL: sqlite://, sqlite:///path, memory:// or redis://..."
    )


def _add_node(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default 8765)")
    parser.add_argument(
        "--allowed-origin",
        action="append",
        metavar="ORIGIN",
        help="a browser origin allowed to connect (repeatable; '*' for any)",
    )
    parser.add_argument("--node", help="name of this node in logs and metrics")
    parser.add_argument(
        "--drain-seconds",
        type=float,
        help="on SIGTERM, how long the node may take to hand its clients and "
        "rooms to other nodes before it exits (default 10)",
    )
    parser.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="log level"
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``lophoc`` command."""
    parser = argparse.ArgumentParser(
        prog="lophoc",
        description="Real-time classroom hub: linked lessons, quizzes, "
        "speaking turns and proctored exams.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve",
        help="run a node",
        description="Run a lophoc node. With no settings it uses the embedded "
        "backends: one process, an SQLite file in the data directory.",
    )
    _add_common(serve)
    _add_backends(serve)
    _add_node(serve)
    serve.add_argument(
        "--demo",
        action="store_true",
        help="create a demo lesson and exam room and print signed-in links to "
        "their pages (for a local trial only)",
    )
    serve.set_defaults(run=_serve)

    token = commands.add_parser(
        "token",
        help="mint a signed join token",
        description="Print a join token signed with this node's key.",
    )
    _add_common(token)
    token.add_argument("--role", required=True, choices=[r.value for r in Role])
    token.add_argument("--user", required=True, help="user id")
    token.add_argument(
        "--room", required=True, action="append", help="room id (repeatable)"
    )
    token.add_argument("--name", help="display name (default: the user id)")
    token.add_argument("--school", help="school of the holder")
    token.add_argument("--class", dest="class_", help="class of the holder")
    token.add_argument(
        "--ttl", type=int, default=3600, help="seconds until it expires (default 3600)"
    )
    token.add_argument(
        "--not-before", type=int, help="Unix time before which it is not valid"
    )
    token.set_defaults(run=_token)

    show = commands.add_parser(
        "settings",
        help="print the effective settings",
        description="Print the settings a node would run with (the key masked).",
    )
    _add_common(show)
    _add_backends(show)
    # The same flags as serve, so that the output is what serve would use.
    _add_node(show)
    show.set_defaults(run=_show_settings)

    check = commands.add_parser(
        "check",
        help="check that the broker and store answer",
        description="Connect to the configured broker and store and report.",
    )
    _add_common(check)
    _add_backends(check)
    check.set_defaults(run=_check)

    secret = commands.add_parser(
        "secret",
        help="print a new random token key",
        description="Print a key for LOPHOC_SECRET; every node of a deployment "
        "must share the same key.",
    )
    secret.set_defaults(run=_secret)

    add_lesson_commands(commands, _settings_from, _add_common, _add_backends)
    add_audit_commands(commands)
    add_exam_commands(commands, _settings_from, _add_common, _add_backends)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lophoc`` command."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except (LophocError, ValueError) as exc:
        print(f"lophoc: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
