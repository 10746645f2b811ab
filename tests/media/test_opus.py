"""Opus packet durations and RTP timestamp unwrapping, without the network."""

from __future__ import annotations

import pytest

from media.opus import SILENCE_20MS, TimestampLine, packet_samples


@pytest.mark.parametrize(
    ("payload", "samples"),
    [
        (SILENCE_20MS, 960),  # CELT 20 ms, one frame
        (bytes([(1 << 3) | 0]), 960),  # SILK 20 ms
        (bytes([(3 << 3) | 0]), 2880),  # SILK 60 ms
        (bytes([(12 << 3) | 1]), 960),  # hybrid 10 ms, two frames
        (bytes([(16 << 3) | 2]), 240),  # CELT 2.5 ms, two frames
        (bytes([(19 << 3) | 3, 3]), 2880),  # CELT 20 ms, code 3 with 3 frames
    ],
)
def test_packet_samples_follow_the_toc(payload: bytes, samples: int) -> None:
    """Durations come from the TOC byte's configuration and frame count."""
    assert packet_samples(payload) == samples


@pytest.mark.parametrize(
    "payload",
    [b"", bytes([(19 << 3) | 3]), bytes([(19 << 3) | 3, 0]), bytes([(3 << 3) | 3, 3])],
)
def test_malformed_packets_have_no_duration(payload: bytes) -> None:
    """Empty packets, missing or zero frame counts and over 120 ms give None."""
    assert packet_samples(payload) is None


def test_timestamps_unwrap_across_2_to_the_32() -> None:
    """A wrapping RTP timestamp keeps growing; a reordered one steps back."""
    line = TimestampLine()
    start = 0xFFFFFFFF - 959
    assert line.place(7, start) == 0
    assert line.place(7, (start + 960) & 0xFFFFFFFF) == 960
    assert line.place(7, (start + 2880) & 0xFFFFFFFF) == 2880
    assert line.place(7, (start + 1920) & 0xFFFFFFFF) == 1920
    assert line.place(7, (start + 3840) & 0xFFFFFFFF) == 3840
    assert line.generation == 0


def test_new_ssrc_starts_a_new_generation() -> None:
    """Another SSRC's timestamps are a new stream, continued from the line."""
    line = TimestampLine()
    line.place(1, 1000)
    line.place(1, 1960)
    assert line.place(2, 123_456_789) == 960
    assert line.generation == 1
    assert line.place(2, 123_456_789 + 960) == 1920
