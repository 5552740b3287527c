"""The local limit: what the scheduler asks of every limit it composes, with the defaults.

A *local* limit answers one question for the job at the head of the line, "from when may it
start?", and is told when an attempt starts, when it ends, and when an admission is taken back.
It awaits nothing: the scheduler drives it with the current time, so it can be tested with no
event loop (``tests/test_limits.py``). Every method gets the job, so a limit may weigh a job by
its cost (:func:`cost_of`) or key.

:class:`Limit` is the base of every local limit: it declares what the scheduler calls, and gives
the answers of a limit that counts attempts and ignores time, costs and pushbacks (no restamp,
nothing to take back or charge, at rest at once). A limit writes only the methods where it
differs: the GCRA rate (``_rate_limit``), the sliding window (``_window_limit``), the counts of
running attempts (``_count_limit``). A limit kept outside the process is a
:class:`~werkpool._core._remote_limit.RemoteLimit` instead.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._job import Job
    from ._statistics import LimitStatistics

__all__ = ["Exact", "Limit", "cost_of", "exact"]

_INF = math.inf


class Limit:
    """What the scheduler asks of every local limit; the defaults count attempts, not time.

    Subclasses must answer :meth:`earliest`, :meth:`admit`, :meth:`refund` and
    :meth:`snapshot`; the other methods default to "nothing to do".
    """

    __slots__ = ()

    #: True when :meth:`earliest` may return a finite time in the future (the scheduler then reads
    #: the clock); False for limits that only ever say "now" or "after a release".
    timed: bool = False
    #: True if :meth:`pushback` may change the limit (an adaptive rate).
    adaptive: bool = False
    #: The unit it counts (``None``: one per attempt).
    unit: str | None = None

    def earliest(self, job: Job, now: float) -> float:
        """Return the earliest time *job* may start.

        ``-inf`` or any time <= *now* means "now"; a finite later time means "wait for the clock";
        ``inf`` means "wait until some attempt ends".
        """
        raise NotImplementedError

    def admit(self, job: Job, at: float) -> None:
        """Record that *job* starts an attempt, admitted at time *at* (<= the current time)."""
        raise NotImplementedError

    def refund(self, job: Job) -> None:
        """Take back the latest admission, *job*'s: its attempt never started (a remote limit
        refused it, or its request was cancelled). Never more permissive than before the admit."""
        raise NotImplementedError

    def snapshot(self, now: float) -> LimitStatistics:
        """The limit's state at *now*, for :meth:`WorkerPool.statistics`."""
        raise NotImplementedError

    def restamp(self, job: Job, at: float) -> None:
        """Re-date the latest admission, *job*'s, to *at*: when its code really began (later).
        By default nothing: a limit that counts attempts does not count their times."""

    def release(self, job: Job) -> None:
        """Record that the attempt *job* started has ended (by default nothing: a limit of
        starts forgets them by itself)."""

    def pushback(self, now: float, until: float, paused: bool, job: Job | None = None) -> None:
        """The provider refused at *now* (the attempt of *job*, if known), naming this limit (or
        the pool or key it belongs to); the pause lasts until *until*. If *paused*, the limit is
        held: a rate drops its credit, a window or a count admits nothing before *until*; an
        adaptive rate also slows down, once per episode. By default nothing: the pool's pause
        holds the starts."""

    def take_back(self, job: Job, amount: float, now: float) -> None:
        """Give back *amount* of what *job*'s attempt (running, or just ended) was charged, at
        *now*: it cost less than announced, or the provider refused it (and charged nothing).
        Never lets a start come closer than the limit permits for what was really spent. By
        default nothing: a limit of attempts counts one whatever it cost."""

    def charge(self, job: Job, amount: float, now: float) -> None:
        """Charge *amount* more for *job*'s attempt (running, or just ended), at *now*: it cost
        more than announced. By default nothing (see :meth:`take_back`)."""

    def rest_at(self) -> float:
        """From when the limit is as if fresh (``-inf``: now; ``inf``: while attempts run); by
        default now."""
        return -_INF


#: An amount counted exactly: an int, or the exact value of a fractional float.
Exact = int | Fraction


def exact(amount: float) -> Exact:
    """*amount* as an exact number, so that adding and taking back costs leaves no residue.

    Summing floats does: 0.2 + 0.4 + 0.3 - 0.2 - 0.4 - 0.3 is 1.7e-16, which would keep a
    ``Concurrency(1, unit=...)`` from ever admitting a cost of 1 again and a key's limits from
    ever being dropped. Whole amounts (the usual case) stay ints; a float's :class:`Fraction` is
    its exact binary value, so the sums are exact whatever the costs.
    """
    if type(amount) is int:
        return amount
    return int(amount) if amount.is_integer() else Fraction(amount)


def cost_of(job: Job | None, unit: str | None) -> float:
    """What one attempt of *job* costs in *unit*: 1 for attempts (``unit=None``); else what its
    ``cost=`` says, 0 if it names no cost in that unit. No job (a map's pace): 1 or 0."""
    if unit is None:
        return 1
    cost = None if job is None else job.cost
    return 0 if cost is None else cost.get(unit, 0)
