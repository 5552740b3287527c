"""The rates behind the progress bar: how fast attempts start, and how fast jobs finish.

Both take one event at a time in O(1) and bounded memory, so that a hook calling them for each
of 100,000 jobs pays a few attribute updates per job. :class:`Recent` counts the events of the
last :data:`WINDOW` seconds in fixed time buckets (the start rate the bar shows); :class:`Pace`
is an exponentially weighted rate (the finish rate behind the time to go), which is held
between events and falls smoothly only once the next one is overdue.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Final, final

__all__ = ["PACE_EVENTS", "SLOTS", "WINDOW", "Pace", "Recent"]

#: The seconds of recent history behind the start rate and the time to go.
WINDOW: Final = 5.0
#: Buckets per :data:`WINDOW`: the recent counts cost O(1) per event and bounded memory.
SLOTS: Final = 20
#: The finish rate behind the time to go averages over at least this many jobs.
PACE_EVENTS: Final = 20


@final
class Recent:
    """How many events happened in the last :data:`WINDOW` seconds, in fixed time buckets."""

    __slots__ = ("_buckets", "_width")

    def __init__(self) -> None:
        self._width = WINDOW / SLOTS
        #: [bucket number, events in it], oldest first; only the last SLOTS buckets are kept.
        self._buckets: deque[list[int]] = deque()

    def add(self, time: float) -> None:
        """Count one event at *time* (on the pool's clock)."""
        number = math.floor(time / self._width)
        buckets = self._buckets
        if buckets and buckets[-1][0] == number:
            buckets[-1][1] += 1
            return
        buckets.append([number, 1])
        while buckets[0][0] <= number - SLOTS:
            buckets.popleft()

    def rate(self, now: float, since: float) -> float:
        """Events per second over the buckets of the last :data:`WINDOW` (not before *since*).

        Over one second at least: the first few starts of a run would otherwise read as a
        spike (two starts in the first 0.1 s are not 20 per second).
        """
        first = math.floor(now / self._width) - SLOTS + 1
        count = sum(n for number, n in self._buckets if number >= first)
        return count / max(1.0, now - max(since, first * self._width))


@final
class Pace:
    """The rate of events, exponentially weighted over the last :data:`WINDOW` seconds or the
    last :data:`PACE_EVENTS` events, whichever is longer, as of the last event.

    A ratio of two decayed sums, the events and the time they took: exact for a steady pace from
    the first event on (one event at 2 s is 0.5 per second, ten at once at 1 s are 10 per
    second), and the noise of single jobs averaged over many, even when jobs are slow.

    Between events the rate is held, not decayed (a rate that fell after each event and rose at
    the next would make the time to go jump), until the next event is overdue: from then on it
    is the rate as if the event came now, which falls smoothly while nothing happens (to 0 in a
    stall) and is the very rate the event brings when it comes.
    """

    __slots__ = ("_count", "_last", "_time")

    def __init__(self, began: float) -> None:
        self._last = began
        self._count = 0.0  # events, each weighted by the decay since
        self._time = 0.0  # the seconds between them (from the beginning), weighted alike

    @property
    def last(self) -> float:
        """The time of the last event (the beginning before any)."""
        return self._last

    @staticmethod
    def _keep(gap: float) -> float:
        """How much of the past an event *gap* seconds after the last keeps: the slower decay
        of the two, a memory of WINDOW seconds and one of PACE_EVENTS events."""
        return max(math.exp(-gap / WINDOW), 1.0 - 1.0 / PACE_EVENTS)

    def add(self, time: float) -> None:
        """Count one event at *time* (on the pool's clock)."""
        gap = max(0.0, time - self._last)
        keep = self._keep(gap)
        self._count = self._count * keep + 1.0
        self._time = self._time * keep + gap
        self._last = max(self._last, time)

    def rate(self, now: float) -> float:
        """Events per second (0.0 before the first event)."""
        if self._count == 0.0:
            return 0.0
        # Over one second at least, as Recent: two jobs done in the first 0.1 s are not 20
        # per second.
        rate = self._count / max(1.0, self._time)
        gap = now - self._last
        if gap * rate > 1.0:  # the next event is overdue
            keep = self._keep(gap)
            rate = (self._count * keep + 1.0) / max(1.0, self._time * keep + gap)
        return rate
