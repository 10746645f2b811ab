"""How long the client waits between reconnect attempts, and when it gives up.

Delays grow exponentially up to a ceiling, and each is shortened by a random
fraction: when a node restarts, the thousands of students of a linked lesson
reconnect at once, and the jitter spreads them out instead of letting them
hit the new node in waves.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter, bounded in attempts and in time.

    Attempt ``n`` (from 0) waits ``min(maximum, initial * factor**n)``
    shortened by up to ``jitter`` of itself. The client gives up after
    ``max_attempts`` attempts or once ``max_elapsed`` seconds have passed
    since the connection was lost; ``None`` lifts either bound.
    """

    initial: float = 0.1
    factor: float = 2.0
    maximum: float = 10.0
    jitter: float = 0.5
    max_attempts: int | None = 20
    max_elapsed: float | None = 120.0

    def __post_init__(self) -> None:
        if self.initial <= 0:
            raise ValueError(f"initial must be positive, got {self.initial}")
        if self.factor < 1:
            raise ValueError(f"factor must be at least 1, got {self.factor}")
        if self.maximum < self.initial:
            raise ValueError(
                f"maximum {self.maximum} is shorter than initial {self.initial}"
            )
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must lie in [0, 1], got {self.jitter}")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError(f"max_attempts must be positive, got {self.max_attempts}")
        if self.max_elapsed is not None and self.max_elapsed <= 0:
            raise ValueError(f"max_elapsed must be positive, got {self.max_elapsed}")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before attempt ``attempt`` (counted from 0)."""
        # The exponent is capped so that a long outage cannot overflow it.
        base = min(self.maximum, self.initial * self.factor ** min(attempt, 64))
        draw = rng.random() if rng is not None else random.random()
        return base * (1 - self.jitter * draw)

    def allows(self, attempt: int, elapsed: float) -> bool:
        """Whether attempt ``attempt`` (from 0) may start ``elapsed`` seconds in."""
        if self.max_attempts is not None and attempt >= self.max_attempts:
            return False
        return self.max_elapsed is None or elapsed <= self.max_elapsed
