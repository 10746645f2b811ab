"""Command-line checks shared by the benchmarks that compare several servers."""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence


def add_servers(
    parser: argparse.ArgumentParser,
    known: Sequence[str],
    default: Sequence[str] | None = None,
) -> None:
    """The ``--servers`` option: some of ``known``, run in the order given."""
    parser.add_argument(
        "--servers",
        default=",".join(known if default is None else default),
        help=f"comma-separated, run in this order: {', '.join(known)}",
    )


def check_servers(
    parser: argparse.ArgumentParser, args: argparse.Namespace, known: Sequence[str]
) -> None:
    """Turn ``--servers`` into a list of names from ``known``, each once.

    Exits with the usage message when the list is empty, names a server
    that is not in ``known``, or names one twice.
    """
    servers = [name.strip() for name in args.servers.split(",") if name.strip()]
    if not servers or set(servers) - set(known) or len(set(servers)) < len(servers):
        parser.error(
            f"--servers takes some of {', '.join(known)}, each once,"
            f" got {args.servers!r}"
        )
    args.servers = servers


def check_counts(
    parser: argparse.ArgumentParser, args: argparse.Namespace, names: Iterable[str]
) -> None:
    """Exit with the usage message when one of the options ``names`` is under 1."""
    for name in names:
        if getattr(args, name) < 1:
            flag = name.replace("_", "-")
            parser.error(f"--{flag} must be at least 1, got {getattr(args, name)}")
