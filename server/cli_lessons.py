"""``lophoc lesson``: create lessons from files and read their reports.

These work on the store named by the settings, like a node does, so they
need no running node: on one machine with the embedded store they share its
SQLite file; with Redis they reach every node's lessons.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import msgspec

from rooms.backends import open_store
from rooms.plan import PlanError
from rooms.report import report_csv
from rooms.store import Store

from . import lessons
from .settings import Settings

T = TypeVar("T")
SettingsFrom = Callable[[argparse.Namespace], Settings]


def _with_store(settings: Settings, work: Callable[[Store], Awaitable[T]]) -> T:
    async def run() -> T:
        store = open_store(settings.store_url, Path(settings.data_dir))
        await store.connect()
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(run())


def create_from_file(
    path: Path,
    what: str,
    settings: Settings,
    make: Callable[[Store, bytes, str], Awaitable[object]],
) -> int:
    """Create a lesson or exam from the file at ``path``; print it as JSON.

    ``make`` gets the store, the file's bytes and its name; a bad file's
    problems are printed with their paths, and a taken id is refused.
    """
    try:
        text = path.read_bytes()
    except OSError as exc:
        print(f"lophoc: cannot read {path}: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        created = _with_store(settings, lambda store: make(store, text, path.name))
    except PlanError as exc:
        print(f"lophoc: {path} is not a valid {what}:", file=sys.stderr)
        for where, message in exc.problems:
            print(f"  {where or 'file'}: {message}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"lophoc: {exc}", file=sys.stderr)
        return 2
    print(msgspec.json.format(msgspec.json.encode(created)).decode())
    return 0


def _create(args: argparse.Namespace, settings: Settings) -> int:
    return create_from_file(
        Path(args.file),
        "lesson",
        settings,
        lambda store, text, name: lessons.create_lesson(
            store, settings.secret, text, name
        ),
    )


def print_found(
    found: T | None, what: str, csv: bool, to_csv: Callable[[T], str]
) -> int:
    """Print a report as JSON, or CSV with ``csv``; exit status 2 without one."""
    if found is None:
        print(f"lophoc: no {what}", file=sys.stderr)
        return 2
    if csv:
        sys.stdout.write(to_csv(found))
    else:
        print(msgspec.json.format(msgspec.json.encode(found)).decode())
    return 0


def _report(args: argparse.Namespace, settings: Settings) -> int:
    found = _with_store(
        settings, lambda store: lessons.lesson_report(store, args.lesson)
    )
    return print_found(found, f"lesson {args.lesson!r}", args.csv, report_csv)


def _join(args: argparse.Namespace, settings: Settings) -> int:
    try:
        lesson, access = _with_store(
            settings,
            lambda store: lessons.join_with_code(
                store, settings.secret, args.code, args.name
            ),
        )
    except ValueError as exc:
        print(f"lophoc: {exc}", file=sys.stderr)
        return 2
    print(
        msgspec.json.format(
            msgspec.json.encode(
                {"lesson": lesson, "user": access.user, "token": access.token}
            )
        ).decode()
    )
    return 0


Run = Callable[[argparse.Namespace, Settings], int]


def command_group(
    commands: argparse._SubParsersAction,  # type: ignore[type-arg]
    name: str,
    help_text: str,
    description: str,
    settings_from: SettingsFrom,
    add_common: Callable[[argparse.ArgumentParser], None],
    add_backends: Callable[[argparse.ArgumentParser], None],
) -> Callable[[str, str, Run], argparse.ArgumentParser]:
    """Add ``lophoc <name>``; return a maker of its subcommands.

    Each subcommand takes the common and backend options and runs with the
    settings they make, the token key filled in.
    """
    group = commands.add_parser(name, help=help_text, description=description)
    actions = group.add_subparsers(dest="action", required=True)

    def command(name: str, help_text: str, run: Run) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = actions.add_parser(
            name, help=help_text, description=help_text
        )
        add_common(parser)
        add_backends(parser)
        parser.set_defaults(
            run=lambda args: run(args, settings_from(args).with_secret())
        )
        return parser

    return command


Command = Callable[[str, str, Run], argparse.ArgumentParser]
AddCommands = Callable[
    [
        "argparse._SubParsersAction[argparse.ArgumentParser]",
        SettingsFrom,
        Callable[[argparse.ArgumentParser], None],
        Callable[[argparse.ArgumentParser], None],
    ],
    None,
]


def subcommands(
    name: str, help_text: str, description: str
) -> Callable[[Callable[[Command], None]], AddCommands]:
    """Make a filler of subcommands an adder of ``lophoc <name>`` to the parser.

    The adder takes the command's parser and its settings and option makers,
    as :func:`command_group` does; the decorated function gets the maker of
    subcommands and adds each.
    """

    def wrap(fill: Callable[[Command], None]) -> AddCommands:
        def add(
            commands: argparse._SubParsersAction[argparse.ArgumentParser],
            settings_from: SettingsFrom,
            add_common: Callable[[argparse.ArgumentParser], None],
            add_backends: Callable[[argparse.ArgumentParser], None],
        ) -> None:
            fill(
                command_group(
                    commands,
                    name,
                    help_text,
                    description,
                    settings_from,
                    add_common,
                    add_backends,
                )
            )

        add.__doc__ = fill.__doc__
        return add

    return wrap


@subcommands(
    "lesson",
    "create lessons and read their reports",
    "Create a lesson from a file, read its report, or turn a join code "
    "into a student token.",
)
def add_lesson_commands(command: Command) -> None:
    """Add ``lophoc lesson create|report|join`` to the command's parser."""
    create = command(
        "create",
        "Check and store a lesson file (YAML or JSON); print its tokens and "
        "join codes as JSON.",
        _create,
    )
    create.add_argument("file", help="the lesson file (see docs/lessons.md)")

    report = command(
        "report", "Print a lesson's report as JSON, or CSV with --csv.", _report
    )
    report.add_argument("lesson", help="the lesson id")
    report.add_argument("--csv", action="store_true", help="print CSV, not JSON")

    join = command("join", "Print a student token for a join code and a name.", _join)
    join.add_argument("code", help="the join code of a class or a student")
    join.add_argument("name", nargs="?", help="the student's name (class codes)")
