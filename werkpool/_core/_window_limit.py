"""The window limit: a strict sliding window of starts, for providers that keep a request log.

Never more than ``count`` units start in any window of ``per`` seconds; credit comes back as the
old starts leave the window, one by one (a bucket with ``burst=count`` would let ``count`` more
through right after a full window).
"""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING, final

from ._budget_hold import BudgetHold
from ._limit import Exact, Limit, cost_of, exact
from ._statistics import LimitStatistics

if TYPE_CHECKING:
    from ._job import Job

__all__ = ["WindowLimit"]

_INF = math.inf


@final
class WindowLimit(Limit):
    """
    A strict sliding window: never more than ``count`` units start in any window of ``per`` s.

    For providers that count that way (a request log, not a bucket): a start of cost ``c`` at
    ``t`` is allowed only if the starts after ``t - per`` plus ``c`` are at most ``count``, so
    every half-open window ``[a, a + per)`` holds at most ``count``. Unlike :class:`RateLimit`
    with ``burst=count``, it never lets ``count`` more through right after a full window ended:
    credit comes back as the old starts leave the window, one by one. It keeps the starts of the
    last ``per`` seconds (at most ``count`` of them for attempts).
    """

    __slots__ = (
        "_costs",
        "_hold",
        "_pushed_until",
        "_seqs",
        "_starts",
        "_total",
        "count",
        "per",
        "spec",
        "unit",
    )

    timed = True

    def __init__(
        self, count: float, per: float, *, unit: str | None = None, spec: object = None
    ) -> None:
        self.count = count
        self.per = per
        self.unit = unit
        self.spec = spec
        self._starts: deque[float] = deque()
        self._costs: deque[Exact] = deque()
        self._total: Exact = 0  # the costs in _costs, summed exactly (see _exact)
        #: The job number of each start (0: none, a map's pace), to settle its cost later.
        self._seqs: deque[int] = deque()
        #: A pushback naming this window holds it until then.
        self._pushed_until = -_INF
        #: A server's budget read from its headers (:meth:`observe`), while it lasts.
        self._hold: BudgetHold | None = None

    def _forget_before(self, now: float) -> None:
        """Drop the starts that left every window containing *now*."""
        starts, costs = self._starts, self._costs
        edge = now - self.per
        while starts and starts[0] <= edge:
            starts.popleft()
            self._seqs.popleft()
            self._total -= costs.popleft()

    def earliest(self, job: Job | None, now: float) -> float:
        """When enough of the oldest starts have left the window for *job* (``-inf``: now)."""
        self._forget_before(now)
        cost = cost_of(job, self.unit)
        at = self._earliest_for(cost)
        if cost and self._pushed_until > now and self._pushed_until > at:
            at = self._pushed_until  # a pushback named this window: held until then
        hold = self._hold
        if hold is not None:
            if now < hold.until:
                return max(at, hold.earliest(cost, now))
            self._hold = None  # the server's window has reset: our own rule alone again
        return at

    def admit(self, job: Job | None, at: float) -> None:
        cost = exact(cost_of(job, self.unit))
        self._starts.append(at)
        self._costs.append(cost)
        self._seqs.append(0 if job is None else job.seq)
        self._total += cost
        if self._hold is not None:
            self._hold.take(float(cost), at)

    def restamp(self, job: Job | None, at: float) -> None:
        if self._starts:
            self._starts[-1] = at
        else:
            # Its admission already left the window (a remote limit answered later than `per`),
            # or came before this window did (set_limits while its start was granted): it starts
            # now, so it counts from now (#21 item 10).
            self.admit(job, at)

    def refund(self, job: Job | None) -> None:
        # The start admitted last never happened. Starts forgotten before it had left the window,
        # and if it has left too (a remote limit answered later than `per`), nothing remains.
        if self._starts:
            self._starts.pop()
            self._seqs.pop()
            self._total -= self._costs.pop()
        if self._hold is not None:
            self._hold.give_back(cost_of(job, self.unit))

    def carry_on_from(self, older: WindowLimit, now: float) -> None:
        """Keep counting *older*'s recent starts (a new window replaces it)."""
        self._starts.extend(older._starts)
        self._costs.extend(older._costs)
        self._seqs.extend(older._seqs)
        self._total += older._total
        self._pushed_until = max(self._pushed_until, older._pushed_until)
        if self._hold is None:
            self._hold = older._hold  # the server's budget is the same server's

    def observe(self, remaining: float, until: float, now: float, refill: float = 0.0) -> None:
        """A server said at *now* that only *remaining* more units fit before *until* (its
        rate-limit headers, #22 item 3), plus *refill* per second: a :class:`BudgetHold` lets
        no more start before *until*, beside the window's own rule (never looser than it). A
        newer reading replaces an older hold."""
        if until > now:
            self._hold = BudgetHold(remaining, until, refill, now)

    def pushback(self, now: float, until: float, paused: bool, job: Job | None = None) -> None:
        """A pushback named this window (or its pool or key): if *paused*, admit nothing
        before *until*."""
        if paused and until > self._pushed_until:
            self._pushed_until = until

    def _entry(self, job: Job) -> int:
        """The index of *job*'s latest start still in the window, or -1."""
        seqs, seq = self._seqs, job.seq
        for i in range(len(seqs) - 1, -1, -1):
            if seqs[i] == seq:
                return i
        return -1

    def take_back(self, job: Job, amount: float, now: float) -> None:
        """*job*'s start counts *amount* less (not below 0), if it is still in the window."""
        i = self._entry(job)
        if i < 0:
            return
        back = min(self._costs[i], exact(amount))
        self._costs[i] -= back
        self._total -= back

    def charge(self, job: Job, amount: float, now: float) -> None:
        """*job*'s start counts *amount* more, if it is still in the window."""
        i = self._entry(job)
        if i < 0:
            return
        more = exact(amount)
        self._costs[i] += more
        self._total += more

    def rest_at(self) -> float:
        rest = self._starts[-1] + self.per if self._starts else -_INF
        rest = max(rest, self._pushed_until)
        hold = self._hold
        return rest if hold is None else max(rest, hold.until)

    def snapshot(self, now: float) -> LimitStatistics:
        self._forget_before(now)
        return LimitStatistics(
            kind="window",
            count=self.count,
            per=self.per,
            burst=None,
            unit=self.unit,
            in_use=float(self._total),
            next_free=self._earliest_for(1),
            effective_rate=None,
        )

    def _earliest_for(self, cost: float) -> float:
        excess = self._total + exact(cost) - self.count
        if excess <= 0:
            return -_INF
        # The oldest starts must leave until `excess` units have: the last of them sets the time.
        for at, weight in zip(self._starts, self._costs, strict=True):
            excess -= weight
            if excess <= 0:
                return at + self.per
        return _INF  # a cost above `count` (refused at submission)
