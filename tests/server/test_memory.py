"""Freed heap pages go back to the system (glibc, in a process of its own)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: A join storm in miniature: a roster-sized buffer made and freed for each
#: join, while each join's connection keeps small objects that live on.
STORM = """
import sys
from server.memory import trim


def rss_kib():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4


first = bytes(700_000)
del first
connections = []
before = rss_kib()
for join in range(20):
    roster = bytearray(500_000 - join * 1_000)
    roster[::4096] = b"x" * len(roster[::4096])
    connections.append([bytearray(200) for _ in range(100)])
    del roster
if sys.argv[1] == "trimmed":
    assert trim()
print(rss_kib() - before)
"""


def grown_kib(mode: str) -> int:
    """What the storm left the process's resident memory, in KiB."""
    done = subprocess.run(
        [sys.executable, "-c", STORM, mode],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return int(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_a_trimmed_heap_keeps_the_connections_not_the_rosters() -> None:
    """After a trim the storm has kept its connections' objects, little more."""
    # 2,000 small buffers of 200 bytes, with their headers.
    kept = 2_000 * 300 // 1024
    trimmed = grown_kib("trimmed")
    assert trimmed < kept + 200
    # Untrimmed, glibc keeps about a roster's worth: the test can tell.
    assert grown_kib("kept") > trimmed + 300
