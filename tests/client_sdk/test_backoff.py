"""The reconnect backoff policy: growth, jitter and bounds."""

from __future__ import annotations

import random

import pytest

from client_sdk import Backoff


def test_backoff_grows_up_to_its_ceiling_with_jitter() -> None:
    """Delays double up to the maximum, each shortened by at most the jitter."""
    backoff = Backoff(initial=0.1, factor=2.0, maximum=1.0, jitter=0.5)
    rng = random.Random(7)

    delays = [backoff.delay(attempt, rng) for attempt in range(8)]

    ceilings = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert backoff.delay(10_000, rng) <= 1.0


def test_backoff_is_bounded_in_attempts_and_time() -> None:
    """Attempts stop at max_attempts or once max_elapsed has passed."""
    backoff = Backoff(max_attempts=3, max_elapsed=5.0)

    assert backoff.allows(2, 4.9)
    assert not backoff.allows(3, 0.0)
    assert not backoff.allows(0, 5.1)
    assert Backoff(max_attempts=None, max_elapsed=None).allows(10**6, 10.0**6)


@pytest.mark.parametrize(
    "bad",
    [
        {"initial": 0},
        {"factor": 0.5},
        {"maximum": 0.01},
        {"jitter": 1.5},
        {"max_attempts": 0},
        {"max_elapsed": -1.0},
    ],
)
def test_backoff_refuses_bad_settings(bad: dict[str, float]) -> None:
    """Each nonsensical setting is refused with a ValueError."""
    with pytest.raises(ValueError, match=next(iter(bad))):
        Backoff(**bad)  # type: ignore[arg-type]
