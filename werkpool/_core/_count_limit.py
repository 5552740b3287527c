"""Concurrency limits: at most so many running attempts (or units of them) at once.

:class:`CountLimit` counts in the scheduler, for a unit or a key; :class:`ConcurrencyLimit`
borrows the tokens of the pool's capacity limiter (``size=`` beside a rate), so a start waits for
both in one admission decision.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Protocol, final

from ._job import RUNNING as _RUNNING
from ._limit import Exact, Limit, cost_of, exact
from ._statistics import LimitStatistics

if TYPE_CHECKING:
    from ._job import Job

__all__ = ["ConcurrencyLimit", "CountLimit", "TokenSource"]

_INF = math.inf


@final
class CountLimit(Limit):
    """At most ``n`` units of running attempts at once: a weighted or per-key concurrency limit.

    The pool's own ``size`` is a :class:`ConcurrencyLimit` (or simply its number of workers);
    this one counts in the scheduler, for a unit (``Concurrency(16, unit="gpu_gb")``) or a key.
    """

    __slots__ = ("_extra", "_pushed_until", "in_use", "n", "spec", "timed", "unit")

    def __init__(self, n: float, *, unit: str | None = None, spec: object = None) -> None:
        self.n = n
        self.unit = unit
        self.spec = spec
        #: The summed cost of the running attempts, exact (see _exact): it is 0 again, not a
        #: float residue, once they all ended.
        self.in_use: Exact = 0
        #: What a settlement added to (or took from) a running attempt, by job number.
        self._extra: dict[int, Exact] = {}
        #: A pushback naming this limit holds it until then; it then reads the clock.
        self._pushed_until = -_INF
        self.timed = False

    def earliest(self, job: Job | None, now: float) -> float:
        unit = self.unit
        cost = 1 if unit is None else exact(cost_of(job, unit))
        if cost and self._pushed_until > now:
            return self._pushed_until  # a pushback named this limit: held until then
        return -_INF if self.in_use + cost <= self.n else _INF

    def admit(self, job: Job | None, at: float) -> None:
        unit = self.unit
        self.in_use += 1 if unit is None else exact(cost_of(job, unit))

    def refund(self, job: Job | None) -> None:
        unit = self.unit
        self.in_use -= 1 if unit is None else exact(cost_of(job, unit))

    def release(self, job: Job | None) -> None:
        unit = self.unit
        self.in_use -= 1 if unit is None else exact(cost_of(job, unit))
        if self._extra and job is not None:
            self.in_use -= self._extra.pop(job.seq, 0)

    def pushback(self, now: float, until: float, paused: bool, job: Job | None = None) -> None:
        """A pushback named this limit (or its pool or key): if *paused*, admit nothing before
        *until* (the limit reads the clock from now on)."""
        if paused and until > self._pushed_until:
            self._pushed_until = until
            self.timed = True

    def take_back(self, job: Job, amount: float, now: float) -> None:
        """The running attempt of *job* holds *amount* less (not below nothing)."""
        if job.state != _RUNNING or self.unit is None:
            return  # it ended: its units are free already; an attempt counts 1 whatever it cost
        held = exact(cost_of(job, self.unit)) + self._extra.get(job.seq, 0)
        back = min(held, exact(amount))
        self.in_use -= back
        self._extra[job.seq] = self._extra.get(job.seq, 0) - back

    def charge(self, job: Job, amount: float, now: float) -> None:
        """The running attempt of *job* holds *amount* more (until it ends)."""
        if job.state != _RUNNING or self.unit is None:
            return
        more = exact(amount)
        self.in_use += more
        self._extra[job.seq] = self._extra.get(job.seq, 0) + more

    def rest_at(self) -> float:
        return -_INF if self.in_use <= 0 else _INF

    def snapshot(self, now: float) -> LimitStatistics:
        return LimitStatistics(
            kind="concurrency",
            count=self.n,
            per=None,
            burst=None,
            unit=self.unit,
            in_use=float(self.in_use),
            next_free=-_INF if self.in_use + 1 <= self.n else _INF,
            effective_rate=None,
        )


class TokenSource(Protocol):
    """The part of :class:`anyio.CapacityLimiter` the concurrency limit uses."""

    @property
    def available_tokens(self) -> float: ...

    @property
    def total_tokens(self) -> float: ...

    def acquire_on_behalf_of_nowait(self, borrower: object) -> None: ...

    def release_on_behalf_of(self, borrower: object) -> None: ...


@final
class ConcurrencyLimit(Limit):
    """At most ``total_tokens`` attempts at once, counted by a capacity limiter borrowed per job.

    The pool uses it when it also has a rate, so that a start waits for both limits in one
    admission decision; a size-only pool needs no admission check (its workers are the bound).
    """

    __slots__ = ("limiter",)

    def __init__(self, limiter: TokenSource) -> None:
        self.limiter = limiter

    def earliest(self, job: Job, now: float) -> float:
        return -_INF if self.limiter.available_tokens >= 1 else _INF

    def admit(self, job: Job, at: float) -> None:
        # Never blocks: earliest() said a token is free, and nothing awaits between the two calls.
        self.limiter.acquire_on_behalf_of_nowait(job)

    def refund(self, job: Job) -> None:
        self.limiter.release_on_behalf_of(job)

    def release(self, job: Job) -> None:
        self.limiter.release_on_behalf_of(job)

    def snapshot(self, now: float) -> LimitStatistics:
        limiter = self.limiter
        total = float(limiter.total_tokens)
        return LimitStatistics(
            kind="concurrency",
            count=total,
            per=None,
            burst=None,
            unit=None,
            in_use=total - limiter.available_tokens,
            next_free=-_INF if limiter.available_tokens >= 1 else _INF,
            effective_rate=None,
        )
