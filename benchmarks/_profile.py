"""Where the lophoc server's CPU goes under load, sampled with py-spy.

py-spy is not a dependency of lophoc; ``pip install py-spy`` into the
virtualenv for a profiled run. It reads the server's memory from outside
without pausing it, so the server runs as it would unobserved, less the CPU
py-spy itself takes on a small machine.
"""

from __future__ import annotations

import asyncio
import collections
import math
import shutil
import sys
from pathlib import Path
from typing import Any


def find_py_spy() -> str | None:
    """The py-spy command, next to this Python or on the PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


async def start_profile(
    pid: int, seconds: float, output: Path
) -> asyncio.subprocess.Process | None:
    """Sample process ``pid`` with py-spy for ``seconds``, if py-spy is here."""
    py_spy = find_py_spy()
    if py_spy is None:
        print("--profile: py-spy not found; pip install py-spy", flush=True)
        return None
    return await asyncio.create_subprocess_exec(
        py_spy,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, math.ceil(seconds))),
        "--rate",
        "100",
        "--format",
        "raw",
        "--output",
        str(output),
        # Sampling without pausing the server changes its timing least.
        "--nonblocking",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


def summarize_profile(path: Path, top: int = 15) -> dict[str, Any]:
    """Shares of samples by function and by package, from py-spy's raw output.

    ``self`` charges each sample to the innermost function only; ``inclusive``
    to every function on its stack. Time in a system call (a socket write)
    is charged to the Python function that made it.
    """
    own: collections.Counter[str] = collections.Counter()
    lines: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    packages: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        # Outermost call first, each as "function (path:line)".
        frames = stack.split(";")
        total += count
        lines[frames[-1]] += count
        own[without_line(frames[-1])] += count
        packages[package_of(frames[-1])] += count
        for name in {without_line(frame) for frame in frames}:
            inclusive[name] += count

    def shares(counter: collections.Counter[str]) -> list[tuple[str, float]]:
        return [
            (name, round(n / max(1, total), 4)) for name, n in counter.most_common(top)
        ]

    return {
        "samples": total,
        "self": shares(own),
        "self_lines": shares(lines),
        "inclusive": shares(inclusive),
        "self_by_package": shares(packages),
    }


def without_line(frame: str) -> str:
    """A py-spy frame ``function (path:line)`` without its line number."""
    head, _, where = frame.rpartition(" (")
    return f"{head} ({where.rstrip(')').rsplit(':', 1)[0]})" if head else frame


def package_of(frame: str) -> str:
    """The lophoc package, library or stdlib module a py-spy frame is in."""
    path = frame.rpartition(" (")[2].rstrip(")").rsplit(":", 1)[0]
    top = path.split("/")[0].removesuffix(".py")
    if top in ("server", "rooms", "client_sdk", "media"):
        return f"lophoc {top}"
    if top in sys.stdlib_module_names:
        return f"stdlib {top}"
    return top
