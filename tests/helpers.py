"""Test helpers: a recording job and the rate-contract check."""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["Recorder", "max_in_window", "rate_contract_holds"]


def max_in_window(times: Sequence[float], width: float) -> int:
    """The largest number of *times* inside any half-open window ``[t, t + width)``."""
    ordered = sorted(times)
    best = 0
    for i, start in enumerate(ordered):
        # A densest window can always be slid right until it starts at one of the times.
        # 1 µs of slack absorbs the clocks' rounding (looptime ticks in ns, trio adds floats).
        j = bisect_left(ordered, start + width - 1e-6)
        best = max(best, j - i)
    return best


def rate_contract_holds(times: Sequence[float], rate: float, burst: int) -> bool:
    """True if every window of the widths we probe obeys ``ceil(W * rate) + burst - 1``."""
    period = 1 / rate
    widths = {period * k for k in (0.5, 1, 1.5, 2, 3, 5, 10, 25)} | {1.0, 0.1}
    return all(
        max_in_window(times, width) <= math.ceil(width * rate - 1e-9) + burst - 1
        for width in widths
    )


@dataclass
class Recorder:
    """Jobs that record when they start and end, and how many run at once."""

    starts: list[float] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)
    order: list[object] = field(default_factory=list)
    running: int = 0
    peak: int = 0
    limit: int | None = None

    async def job(self, label: object = None, duration: float = 0.0) -> object:
        self.starts.append(anyio.current_time())
        self.order.append(label)
        self.running += 1
        self.peak = max(self.peak, self.running)
        if self.limit is not None:
            assert self.running <= self.limit, "more attempts executing than size allows"
        try:
            if duration:
                await anyio.sleep(duration)
            return label
        finally:
            self.running -= 1
            self.ends.append(anyio.current_time())
