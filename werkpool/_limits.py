"""Admission limits: small strategy objects that the scheduler composes.

A *local* limit (:class:`Limit`) answers one question for the job at the head of the line, "from
when may it start?", and is told when an attempt starts, when it ends, and when an admission is
taken back. It awaits nothing: the scheduler drives it with the current time, so it can be tested
with no event loop (``tests/test_limits.py``). Every method gets the job, so a limit may weigh a
job by its cost or key (weighted and per-key limits are more classes of this shape).

A *remote* limit (:class:`RemoteLimit`) is kept elsewhere, say in Redis: asking it takes I/O and it
may refuse. The scheduler never awaits it. Once the local limits admit the head job, the scheduler
hands a worker a :class:`~werkpool._scheduler.Reservation` to perform (httpcore's shape: the state
change is synchronous and returns the I/O to do); the worker awaits :meth:`RemoteLimit.acquire`
and reports the answer back, and gives the credit back (:meth:`RemoteLimit.release`, shielded)
when the attempt ends or the request is cancelled.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, final

if TYPE_CHECKING:
    from ._job import Job

__all__ = [
    "ConcurrencyLimit",
    "Limit",
    "RateLimit",
    "Refusal",
    "RemoteLimit",
    "TokenSource",
    "WindowLimit",
]

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

    def refund(self, job: Job) -> None:
        """Take back the latest admission, *job*'s: its attempt never started (a remote limit
        refused it, or its request was cancelled). Never more permissive than before the admit."""
        ...

    def release(self, job: Job) -> None:
        """Record that the attempt *job* started has ended."""
        ...


@final
@dataclass(frozen=True, slots=True)
class Refusal:
    """A remote limit's "not now": the attempt may ask again from *retry_at* (the pool's clock)."""

    retry_at: float


class RemoteLimit(Protocol):
    """A limit kept outside the process: asking it is I/O, and it may refuse.

    The pool asks the remote limits of a job one after the other, only once the local limits
    admitted it, and one job at a time (so FIFO holds across the pool's workers). An attempt
    takes credit in every remote limit or in none: when one refuses, the ones that granted are
    released.
    """

    async def acquire(self, job: Job) -> float | Refusal:
        """Take credit for one attempt of *job*.

        :return: the time (on the pool's clock, :func:`anyio.current_time`) from which the
            attempt may start, now or later; or a :class:`Refusal`, having taken nothing
        """
        ...

    async def release(self, job: Job) -> None:
        """Give back what :meth:`acquire` took for *job*'s attempt (it ended, or was never run).

        Called shielded from cancellation, also after an :meth:`acquire` that was cancelled
        midway (it must then give back whatever that request took, if anything).
        """
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
        """The next conforming start: ``tat - tau`` (any job: each start costs one slot)."""
        return self._origin + (self._count - self.burst + 1) / self.rate

    def admit(self, job: Job | None, at: float) -> None:
        """Count a start at *at*: ``tat = max(tat, at) + T``."""
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

    def refund(self, job: Job | None) -> None:
        # One start fewer in the schedule. If admit() had restarted it (the bucket was empty),
        # the schedule now ends at that admission's time instead of before it: stricter than
        # before the admit by less than a slot, never looser.
        self._count -= 1

    def release(self, job: Job | None) -> None:
        pass


@final
class WindowLimit:
    """
    A strict sliding window: never more than ``count`` starts in any window of ``per`` seconds.

    For providers that count that way (a request log, not a bucket): a start at ``t`` is allowed
    only if the ``count``-th start before it was at ``t - per`` or earlier, so every half-open
    window ``[a, a + per)`` holds at most ``count`` starts. Unlike :class:`RateLimit` with
    ``burst=count``, it never lets ``count`` more through right after a full window ended: credit
    comes back as the old starts leave the window, one by one. It keeps the last ``count``
    start times (O(count) memory).
    """

    __slots__ = ("_starts", "count", "per")

    timed = True

    def __init__(self, count: int, per: float) -> None:
        self.count = count
        self.per = per
        self._starts: deque[float] = deque(maxlen=count)

    def earliest(self, job: Job | None, now: float) -> float:
        """When the oldest of the last ``count`` starts leaves the window (``-inf``: not full)."""
        starts = self._starts
        return starts[0] + self.per if len(starts) == self.count else -_INF

    def admit(self, job: Job | None, at: float) -> None:
        self._starts.append(at)  # the deque drops the oldest once it holds `count`

    def restamp(self, job: Job | None, at: float) -> None:
        self._starts[-1] = at

    def refund(self, job: Job | None) -> None:
        # The start admitted last never happened. One it pushed out of the full deque need not
        # come back: the admit was allowed only because that start had left the window.
        self._starts.pop()

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

    def refund(self, job: Job) -> None:
        self.limiter.release_on_behalf_of(job)

    def release(self, job: Job) -> None:
        self.limiter.release_on_behalf_of(job)
