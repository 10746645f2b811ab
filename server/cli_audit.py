"""``lophoc verify-log``: check an exported exam log for tampering.

An exported log is JSON lines: a ``header`` (room, public key), then the
``entry`` and ``checkpoint`` lines in the order they were written. The check
needs nothing but the file, and the public key when the header's is not
trusted (the node's key, published by the operator).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import msgspec

from rooms.audit import Checkpoint, ExportLine, LogEntry, LogHeader, verify

_line = msgspec.json.Decoder(ExportLine)


def _verify_log(args: argparse.Namespace) -> int:
    path = Path(args.file)
    header: LogHeader | None = None
    entries: list[LogEntry] = []
    checkpoints: list[Checkpoint] = []
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        print(f"lophoc: cannot read {path}: {exc.strerror}", file=sys.stderr)
        return 2
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            item = _line.decode(raw)
        except msgspec.MsgspecError as exc:
            print(f"{path}:{number}: not a log line: {exc}")
            return 1
        if isinstance(item, LogHeader):
            header = item
        elif isinstance(item, LogEntry):
            entries.append(item)
        else:
            checkpoints.append(item)
    if header is None:
        print(f"{path}: no header line naming the room and key")
        return 1

    key = args.public_key or header.public_key
    problems = verify(header.room, entries, checkpoints, key)
    for problem in problems:
        print(f"{path}: {problem}")
    if problems:
        print(f"{path}: {len(problems)} problems: the log was tampered with")
        return 1
    last = entries[-1].seq if entries else 0
    print(
        f"{path}: room {header.room}: {len(entries)} entries up to {last}, "
        f"{len(checkpoints)} signed checkpoints: intact"
    )
    return 0


def add_audit_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``lophoc verify-log`` to the command's parser."""
    check = commands.add_parser(
        "verify-log",
        help="check an exported exam log for tampering",
        description="Report every changed, removed, inserted, reordered or "
        "truncated entry of an exported exam log, and every bad checkpoint "
        "signature. Exits 1 if anything is wrong.",
    )
    check.add_argument("file", help="the exported log (JSON lines)")
    check.add_argument(
        "--public-key",
        help="the node's Ed25519 public key in hex (default: the log's header)",
    )
    check.set_defaults(run=_verify_log)
