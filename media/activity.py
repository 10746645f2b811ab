"""Voice activity of a decoded speaker: level, speaking or not, speech time.

The level of each decoded frame is its RMS relative to full scale in dBov,
the measure of RFC 6465 Appendix A, from -127 (silence) to 0. A speaker is
"speaking" while frames stay above a threshold, and for a short hangover
after, so the figure does not flicker between the words of a sentence.

This is deliberately simple: an energy detector, not a speech classifier.
A loud fan counts as speech; a whisper in a quiet room may not. It is good
enough for "who is talking" in the room's interface and for telling an
empty spoken answer from a real one, and for noticing a student who talks
during a written exam (:class:`VoiceWindow`).
"""

from __future__ import annotations

import array
import collections
import math
import operator
from dataclasses import dataclass

from .opus import CLOCK_RATE

#: Quietest and loudest levels (RFC 6465 Appendix A).
MIN_DBOV = -127
MAX_DBOV = 0

#: A frame at or above this level is speech. Speech close to a headset
#: microphone sits around -30 to -15 dBov; room noise below -50.
SPEECH_DBOV = -45

#: How long "speaking" holds after the last loud frame.
HANGOVER_SECONDS = 0.3

_FULL_SCALE = 32767


def level_dbov(samples: array.array[int]) -> int:
    """The level of signed 16-bit samples in dBov (RFC 6465 Appendix A)."""
    if not samples:
        return MIN_DBOV
    energy = sum(map(operator.mul, samples, samples))
    rms = math.sqrt(energy / len(samples)) / _FULL_SCALE
    if rms <= 0:
        return MIN_DBOV
    return max(MIN_DBOV, min(MAX_DBOV, round(20 * math.log10(rms))))


@dataclass(frozen=True, slots=True)
class VoiceActivity:
    """A snapshot of one speaker's voice activity."""

    participant: str
    #: Level of the last decoded frame, dBov.
    level_dbov: int
    speaking: bool
    #: Seconds of speech and of audio decoded since the meter started.
    voiced_seconds: float
    heard_seconds: float


class VoiceMeter:
    """Turns decoded frames into :class:`VoiceActivity` figures.

    Fed from one thread only (the speaker's worker); :attr:`activity` is
    replaced whole, so a reader on another thread sees one consistent
    snapshot.
    """

    def __init__(self, participant: str, threshold_dbov: int = SPEECH_DBOV) -> None:
        self.participant = participant
        self.threshold_dbov = threshold_dbov
        self.voiced_samples = 0
        self.heard_samples = 0
        self._quiet_samples = 0
        self.activity = VoiceActivity(participant, MIN_DBOV, False, 0.0, 0.0)

    def add(self, samples: array.array[int]) -> None:
        """Account for one decoded mono frame."""
        level = level_dbov(samples)
        count = len(samples)
        self.heard_samples += count
        if level >= self.threshold_dbov:
            self.voiced_samples += count
            self._quiet_samples = 0
        else:
            self._quiet_samples += count
        speaking = self.voiced_samples > 0 and (
            self._quiet_samples < HANGOVER_SECONDS * CLOCK_RATE
        )
        self.activity = VoiceActivity(
            participant=self.participant,
            level_dbov=level,
            speaking=speaking,
            voiced_seconds=self.voiced_samples / CLOCK_RATE,
            heard_seconds=self.heard_samples / CLOCK_RATE,
        )


class VoiceWindow:
    """Seconds of speech within the last ``window`` seconds, from samples.

    Fed with a speaker's running :attr:`VoiceActivity.voiced_seconds` now
    and then (on the event loop, not the worker's thread); it keeps the
    growth between samples, so a meter that restarted (a new connection)
    only counts from its restart.
    """

    def __init__(self, window: float) -> None:
        self.window = window
        self._last: float | None = None
        self._steps: collections.deque[tuple[float, float]] = collections.deque()

    def add(self, now: float, voiced_seconds: float) -> float:
        """Note the running total at ``now``; the speech within the window."""
        last, self._last = self._last, voiced_seconds
        if last is not None and voiced_seconds > last:
            self._steps.append((now, voiced_seconds - last))
        while self._steps and self._steps[0][0] <= now - self.window:
            self._steps.popleft()
        return sum(step for _, step in self._steps)

    def clear(self) -> None:
        """Forget the speech so far; the running total keeps being followed."""
        self._steps.clear()
