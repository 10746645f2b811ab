"""``lophoc exam``: create exam rooms, read results, export the log.

Like ``lophoc lesson``, these work on the store named by the settings and
need no running node. ``export-log`` signs nothing: it writes the log the
nodes stored, with the public key of this data directory's ``audit.key``
(the key every node of the deployment shares) in its header.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rooms.exam_results import results_csv

from . import exams
from .cli_lessons import (
    Command,
    _with_store,
    create_from_file,
    print_found,
    subcommands,
)
from .settings import Settings


def _create(args: argparse.Namespace, settings: Settings) -> int:
    return create_from_file(
        Path(args.file),
        "exam",
        settings,
        lambda store, text, name: exams.create_exam(
            store, settings.secret, text, name, int(time.time())
        ),
    )


def _results(args: argparse.Namespace, settings: Settings) -> int:
    now = time.time_ns() // 1_000_000
    found = _with_store(
        settings, lambda store: exams.exam_results(store, args.exam, now)
    )
    return print_found(found, f"exam {args.exam!r}", args.csv, results_csv)


def _export_log(args: argparse.Namespace, settings: Settings) -> int:
    key = exams.load_or_create_audit_key(Path(settings.data_dir))
    setup = _with_store(settings, lambda store: exams.load_setup(store, args.exam))
    if setup is None:
        print(f"lophoc: no exam {args.exam!r}", file=sys.stderr)
        return 2
    body = _with_store(settings, lambda store: exams.exam_log(store, args.exam, key))
    if args.output == "-":
        sys.stdout.buffer.write(body)
    else:
        Path(args.output).write_bytes(body)
    return 0


@subcommands(
    "exam",
    "create exam rooms, read results, export logs",
    "Create an exam room from a file, read its results, or export its "
    "log for lophoc verify-log.",
)
def add_exam_commands(command: Command) -> None:
    """Add ``lophoc exam create|results|export-log`` to the command's parser."""
    create = command(
        "create",
        "Check and store an exam file (YAML or JSON); print its tokens as JSON.",
        _create,
    )
    create.add_argument("file", help="the exam file (see docs/exams.md)")

    results = command(
        "results", "Print an exam's results as JSON, or CSV with --csv.", _results
    )
    results.add_argument("exam", help="the exam room id")
    results.add_argument("--csv", action="store_true", help="print CSV, not JSON")

    export = command(
        "export-log",
        "Write an exam room's log in the format lophoc verify-log reads.",
        _export_log,
    )
    export.add_argument("exam", help="the exam room id")
    export.add_argument(
        "-o", "--output", default="-", help="the file to write (default: stdout)"
    )
