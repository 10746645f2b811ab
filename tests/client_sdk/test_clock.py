"""Clock offset estimation from ping samples."""

from __future__ import annotations

import pytest

from client_sdk.clock import ClockOffset, ClockSample, estimate


def test_offset_comes_from_the_shortest_round_trip() -> None:
    """The sample with the smallest round trip gives the offset."""
    samples = [
        ClockSample(sent_ms=1000.0, rtt_ms=40.0, server_ms=1600),
        ClockSample(sent_ms=2000.0, rtt_ms=4.0, server_ms=2502),
        ClockSample(sent_ms=3000.0, rtt_ms=10.0, server_ms=3490),
    ]

    clock = estimate(samples)

    assert clock == ClockOffset(offset_ms=500.0, rtt_ms=4.0, samples=3)
    assert clock.error_ms == 2.0
    assert clock.server_now(local_ms=10_000.0) == 10_500.0


def test_estimate_needs_a_sample() -> None:
    """No sample, no estimate."""
    with pytest.raises(ValueError, match="at least one"):
        estimate([])
