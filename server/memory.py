"""Memory the heap keeps after a join storm goes back to the system.

A join's reply carries the room's whole roster: in a room of 5,000 it is a
buffer of a few hundred kilobytes, made, framed and written in turn, once
for every join. glibc's ``malloc`` serves a block of 128 KiB or more with
its own ``mmap`` and unmaps it when freed, but after each such free it
raises that threshold to the freed block's size, so the next rosters come
from the heap, among the connections' small objects that live on, and the
heap keeps their room after they are freed: in the idle-connections
benchmark, 0.8 KiB for each of 5,000 connections. glibc gives back only
the top of its heap on its own.

:func:`trim` asks glibc (``malloc_trim``) to give back every free page of
its heaps, wherever it lies. The node calls it in a quiet moment, after a
burst has freed what it made (server/collector.py). Elsewhere (macOS,
musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable


def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int
    return function


_MALLOC_TRIM = _malloc_trim()


def trim() -> bool:
    """Give free heap pages back to the system; True if glibc gave any."""
    return _MALLOC_TRIM is not None and bool(_MALLOC_TRIM(0))
