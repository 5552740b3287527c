"""Admission limits: small synchronous strategy objects that the scheduler composes.

A limit answers one question for the job at the head of the queue, "from when may it start?",
and is told when an attempt starts and when it ends. None of them awaits anything: the scheduler
drives them with the current time, so they can be unit-tested with no event loop
(``tests/test_limits.py``).
Later limits (several rates at once, strict windows, per-key limits) are more classes of this shape.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Protocol, final

if TYPE_CHECKING:
    from ._scheduler import Job

__all__ = ["ConcurrencyLimit", "Limit", "RateLimit", "TokenSource"]

_INF = math.inf


class Limit(Protocol):
    """What the scheduler asks of every limit."""

    #: True when :meth:`earliest` may return a finite time in the future (the scheduler then reads
    #: the clock); False for limits that only ever say "now" or "after a release".
    timed: bool

    def earliest(self, job: Job, now: float) -> float:
        """Return the earliest time *job* may start.

        ``-inf`` or any time <= *now* means "now"; a finite later time means "wait for the clock";
        ``inf`` means "wait until some attempt ends".
        """
        ...

    def admit(self, job: Job, at: float) -> None:
        """Record that *job* starts an attempt, admitted at time *at* (<= the current time)."""
        ...

    def restamp(self, job: Job, at: float) -> None:
        """Re-date the latest admission, *job*'s, to *at*: when its code really began (later)."""
        ...

    def release(self, job: Job) -> None:
        """Record that the attempt *job* started has ended."""
        ...


@final
class RateLimit:
    """
    A leaky bucket for attempt starts, in its GCRA form ("virtual scheduling", ITU-T I.371).

    With ``T = 1/rate`` and tolerance ``tau = (burst - 1) * T``, a start at time ``a`` conforms if
    ``a >= tat - tau``, and then ``tat = max(tat, a) + T``. Hence the k-th of any run of conforming
    starts is at least ``(k - burst) * T`` after the first, so a half-open window of length ``W``
    holds at most ``ceil(W * rate) + burst - 1`` starts. Credit never exceeds ``burst``: an idle or
    busy stretch only moves ``tat`` into the past, and ``max(tat, a)`` forgets it.

    ``tat`` is kept as ``origin + count / rate`` rather than summed, so ten million starts do not
    accumulate rounding error into a drift.
    """

    __slots__ = ("_count", "_origin", "burst", "rate")

    timed = True

    def __init__(self, rate: float, burst: int = 1) -> None:
        self.rate = rate
        self.burst = burst
        self._origin = -_INF
        self._count = 0

    @property
    def tat(self) -> float:
        """The theoretical arrival time: when the bucket is empty again (``-inf`` when fresh)."""
        return self._origin + self._count / self.rate

    def earliest(self, job: Job | None, now: float) -> float:
        return self._origin + (self._count - self.burst + 1) / self.rate

    def admit(self, job: Job | None, at: float) -> None:
        if at > self._origin + self._count / self.rate:
            self._origin = at  # the bucket drained before `at`: restart the schedule there
            self._count = 1
        else:
            self._count += 1

    def restamp(self, job: Job | None, at: float) -> None:
        # As if the latest admit() had been at `at`: the schedule before it ended at
        # tat - 1/rate; if that is before `at`, the bucket had drained by then and restarts.
        if at > self._origin + (self._count - 1) / self.rate:
            self._origin = at
            self._count = 1

    def release(self, job: Job | None) -> None:
        pass


class TokenSource(Protocol):
    """The part of :class:`anyio.CapacityLimiter` the concurrency limit uses."""

    @property
    def available_tokens(self) -> float: ...

    def acquire_on_behalf_of_nowait(self, borrower: object) -> None: ...

    def release_on_behalf_of(self, borrower: object) -> None: ...


@final
class ConcurrencyLimit:
    """At most ``total_tokens`` attempts at once, counted by a capacity limiter borrowed per job.

    The pool uses it when it also has a rate, so that a start waits for both limits in one
    admission decision; a size-only pool needs no admission check (its workers are the bound).
    """

    __slots__ = ("limiter",)

    timed = False

    def __init__(self, limiter: TokenSource) -> None:
        self.limiter = limiter

    def earliest(self, job: Job, now: float) -> float:
        return -_INF if self.limiter.available_tokens >= 1 else _INF

    def admit(self, job: Job, at: float) -> None:
        # Never blocks: earliest() said a token is free, and nothing awaits between the two calls.
        self.limiter.acquire_on_behalf_of_nowait(job)

    def restamp(self, job: Job, at: float) -> None:
        pass  # counts attempts, not times

    def release(self, job: Job) -> None:
        self.limiter.release_on_behalf_of(job)
