"""Protecting a viewer's audio on a weak link: its video steps down on loss.

A viewer's audio and video share one link. When that link loses packets,
the relay takes video away from that viewer, a step at a time (the
publisher's upper simulcast layer to its lowest, then no video), so the
audio that remains gets through; once the link has been clean for a while
it gives the video back, a step at a time. The viewer's own
``video_quality`` is a ceiling: no step goes above it.

What the link loses is read from the viewer's RTCP receiver reports (RFC
3550 section 6.4.2): each report block names one stream the relay sends the
viewer, audio or video, with its extended highest sequence number and the
cumulative number of packets lost (section 6.4.1). aiortc's sender reads
these for its round-trip time and statistics and keeps no history;
:meth:`VideoProtection.watch` wraps each sender's RTCP handler to see the
blocks first. The blocks of all the viewer's streams are summed over
windows of about a second, so a stream of few packets (a quiet video slot)
does not outweigh a busy one. A window stays open until it holds
:data:`MIN_PACKETS` packets, so a report on a quiet stream alone (a video
slot of a few packets a second, reported on between two audio reports)
joins the next one instead of making a window too small to judge; only a
link quiet for :data:`QUIET_WINDOW` closes a window that small, which then
counts as clean if it lost nothing and leaves a run of lossy windows as it
was. A step follows only what persists:

- two windows in a row over :data:`LOSSY` lost step down one level;
- :data:`CLEAN_FOR` seconds of windows under :data:`CLEAN` step up one
  level; a step up followed by loss within that time doubles the clean
  time asked for the next one (up to :data:`MAX_CLEAN_FOR`), so a link
  that cannot carry the video is not made to lose audio every few seconds;
- each step starts the count again, so no two steps come closer than two
  windows.

:class:`LossGuard` decides, from report values and the time given to it,
and does no I/O; :class:`VideoProtection` is its thin aiortc side.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from aiortc import RTCRtpSender
from aiortc.rtp import AnyRtcpPacket, RtcpRrPacket, RtcpSrPacket

from client_sdk.protocol import VideoChangeReason, VideoLayer

logger = logging.getLogger(__name__)

#: A window losing more than this share of packets is lossy.
LOSSY = 0.10
#: A window losing less than this share of packets is clean.
CLEAN = 0.02
#: Lossy windows in a row that step video down one level.
LOSSY_WINDOWS = 2
#: Seconds of clean windows that step video up one level.
CLEAN_FOR = 10.0
#: The longest clean time asked for after steps up that did not hold.
MAX_CLEAN_FOR = 80.0
#: A window closes at the first report this long after it opened that
#: brings it to :data:`MIN_PACKETS`.
WINDOW = 1.0
#: Below this many packets a window's share lost is noise.
MIN_PACKETS = 10
#: A window still under :data:`MIN_PACKETS` closes at the first report this
#: long after it opened: it counts as clean only if it lost nothing, is
#: never lossy and leaves the count of lossy windows in a row unchanged.
QUIET_WINDOW = 4.0

_RANK = {VideoLayer.OFF: 0, VideoLayer.LOW: 1, VideoLayer.HIGH: 2}

#: Sequence numbers are 16 bits on the wire; aiortc's receiver reports
#: leave out the count of cycles RFC 3550 puts in the upper half.
_SEQ_MOD = 1 << 16


def lower(a: VideoLayer, b: VideoLayer) -> VideoLayer:
    """The lesser of two amounts of video."""
    return a if _RANK[a] <= _RANK[b] else b


@dataclass(frozen=True, slots=True)
class Step:
    """A change of the video a viewer gets, decided by :class:`LossGuard`."""

    #: What the viewer's slots should forward from now on.
    level: VideoLayer
    reason: VideoChangeReason
    #: The share of packets lost in the window that decided it.
    loss: float


class LossGuard:
    """One viewer's link as its receiver reports tell it, and the video cap.

    ``cap`` is the most video the link is trusted with (``high``: no cap);
    what the viewer gets is the lower of ``cap`` and what it asked for
    (:meth:`limit`). Feed it the blocks of each RTCP packet with
    :meth:`reports`, then ask :meth:`decide` whether to step.
    """

    def __init__(self, now: float) -> None:
        self.cap = VideoLayer.HIGH
        #: The share of packets lost in the last window that had enough.
        self.loss: float | None = None
        self.steps_down = 0
        self.steps_up = 0
        # Per stream: the highest sequence number and packets lost reported.
        self._streams: dict[int, tuple[int, int]] = {}
        self._opened = now
        self._expected = 0
        self._lost = 0
        self._lossy = 0
        self._clean_since = now
        self._clean_for = CLEAN_FOR
        self._stepped_up_at: float | None = None

    def limit(self, requested: VideoLayer) -> VideoLayer:
        """What a viewer who asked for ``requested`` gets now."""
        return lower(requested, self.cap)

    def reports(self, blocks: Iterable[tuple[int, int, int]], now: float) -> None:
        """Take the report blocks of one RTCP packet.

        Each block is a stream's SSRC, its highest sequence number and its
        cumulative count of packets lost, which may fall when duplicates
        arrive (RFC 3550 section 6.4.1); a window counts no less than
        nothing lost and no more than everything. A browser reports on all
        its streams in one packet, which so stays within one window.
        """
        for ssrc, highest, lost in blocks:
            before = self._streams.get(ssrc)
            self._streams[ssrc] = (highest, lost)
            if before is not None:
                expected = (highest - before[0]) % _SEQ_MOD
                self._expected += expected
                self._lost += min(max(lost - before[1], 0), expected)
        opened_for = now - self._opened
        if opened_for >= QUIET_WINDOW or (
            opened_for >= WINDOW and self._expected >= MIN_PACKETS
        ):
            self._close(now)

    def decide(self, requested: VideoLayer, layers: int, now: float) -> Step | None:
        """The step to take now, if one is due; ``cap`` is updated for it.

        ``layers`` is the most simulcast layers a publisher the viewer sees
        sends: with one there is no lower layer, and video goes from all of
        it to none.
        """
        level = self.limit(requested)
        if self._lossy >= LOSSY_WINDOWS and level is not VideoLayer.OFF:
            down = (
                VideoLayer.OFF
                if level is VideoLayer.LOW or layers < 2
                else VideoLayer.LOW
            )
            if self._stepped_up_at is not None:
                held = now - self._stepped_up_at
                self._clean_for = (
                    min(self._clean_for * 2, MAX_CLEAN_FOR)
                    if held < self._clean_for
                    else CLEAN_FOR
                )
                self._stepped_up_at = None
            self.cap = down
            self.steps_down += 1
            self._restart(now)
            return Step(down, VideoChangeReason.LOSS, self.loss or 0.0)
        if (
            self._lossy == 0
            and _RANK[self.cap] < _RANK[requested]
            and now - self._clean_since >= self._clean_for
        ):
            up = (
                VideoLayer.HIGH
                if self.cap is VideoLayer.LOW or layers < 2
                else VideoLayer.LOW
            )
            self.cap = VideoLayer.HIGH if _RANK[up] >= _RANK[requested] else up
            self.steps_up += 1
            self._stepped_up_at = now
            self._restart(now)
            return Step(
                self.limit(requested), VideoChangeReason.RECOVERED, self.loss or 0.0
            )
        return None

    def _close(self, now: float) -> None:
        """End the window: count it lossy, clean or neither."""
        expected, lost = self._expected, self._lost
        self._opened, self._expected, self._lost = now, 0, 0
        if expected >= MIN_PACKETS:
            share = lost / expected
            self.loss = share
            clean = share < CLEAN
            self._lossy = self._lossy + 1 if share > LOSSY else 0
        else:
            # Too quiet to say the link is lossy or that it is not.
            clean = lost == 0
        if not clean:
            self._clean_since = now

    def _restart(self, now: float) -> None:
        # Reports for a while yet describe packets sent before the step.
        self._opened, self._expected, self._lost = now, 0, 0
        self._lossy = 0
        self._clean_since = now


class VideoProtection:
    """A viewer's :class:`LossGuard`, fed from the senders of its slots.

    ``step`` is called with each step the guard takes; ``requested`` and
    ``layers`` read what the viewer asked for and the most layers sent
    to it now.
    """

    def __init__(
        self,
        viewer: str,
        step: Callable[[Step], None],
        requested: Callable[[], VideoLayer],
        layers: Callable[[], int],
    ) -> None:
        self.viewer = viewer
        self.guard = LossGuard(time.monotonic())
        self._step = step
        self._requested = requested
        self._layers = layers
        # The SSRCs of the streams watched; RTX streams are left out, as
        # retransmissions are no measure of loss.
        self._ssrcs: set[int] = set()
        self._last: AnyRtcpPacket | None = None

    def watch(self, sender: RTCRtpSender) -> None:
        """See the report blocks about ``sender``'s stream before aiortc does."""
        handle: Callable[[AnyRtcpPacket], Awaitable[None]] = sender._handle_rtcp_packet
        self._ssrcs.add(sender._ssrc)

        async def reported(packet: AnyRtcpPacket) -> None:
            # The transport hands one packet to each sender it has a block
            # for, one after the other: the first of them reads them all.
            if isinstance(packet, RtcpRrPacket | RtcpSrPacket) and (
                packet is not self._last
            ):
                self._last = packet
                self.reported(
                    [
                        (block.ssrc, block.highest_sequence, block.packets_lost)
                        for block in packet.reports
                        if block.ssrc in self._ssrcs
                    ]
                )
            await handle(packet)

        # An instance attribute shadows the method for this sender only;
        # aiortc's transport calls it for each RTCP packet routed here.
        setattr(sender, "_handle_rtcp_packet", reported)  # noqa: B010

    def reported(self, blocks: list[tuple[int, int, int]]) -> None:
        """Take the report blocks of one packet; step if the guard says so."""
        if not blocks:
            return
        now = time.monotonic()
        guard = self.guard
        guard.reports(blocks, now)
        step = guard.decide(self._requested(), self._layers(), now)
        if step is None:
            return
        logger.debug(
            "%s: video %s on %s (%.1f%% lost)",
            self.viewer,
            step.level,
            step.reason,
            step.loss * 100,
        )
        try:
            self._step(step)
        except Exception:
            # Raised into aiortc's RTCP handling, it would end the DTLS
            # transport's receiving loop.
            logger.exception("%s: applying a video step failed", self.viewer)
