"""Concurrency limits: at most so many running attempts (or units of them) at once.

:class:`CountLimit` counts in the scheduler: for a unit (``Concurrency(16, unit="gpu_gb")``), a
key, or the pool's ``size`` where its workers alone do not bound the attempts (see
:class:`werkpool._runtime._control.Control`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, final

from ._job import RUNNING as _RUNNING
from ._limit import Exact, Limit, cost_of, exact
from ._statistics import LimitStatistics

if TYPE_CHECKING:
    from ._job import Job

__all__ = ["CountLimit"]

_INF = math.inf
_new = object.__new__

#: The settlements of a count of attempts (no unit): one empty dict for them all, never written
#: (only a count of units settles a cost, in :attr:`CountLimit._extra`), so a new key makes one
#: fewer.
_NO_EXTRA: dict[int, Exact] = {}


@final
class CountLimit(Limit):
    """At most ``n`` units of running attempts at once: a weighted or per-key concurrency limit.

    It counts in the scheduler: for a unit (``Concurrency(16, unit="gpu_gb")``), a key, or the
    pool's ``size`` where the number of workers alone does not bound the attempts.
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
        self._extra: dict[int, Exact] = _NO_EXTRA if unit is None else {}
        #: A pushback naming this limit holds it until then; it then reads the clock.
        self._pushed_until = -_INF
        self.timed = False

    def fresh(self) -> CountLimit:
        """A new limit of this one's value, with nothing in use: each new key's own count is
        made so (:func:`~werkpool._core._limits.maker`), in one call without keywords."""
        new = _new(CountLimit)
        new.n = self.n
        new.unit = self.unit
        new.spec = self.spec
        new.in_use = 0
        new._extra = _NO_EXTRA if self.unit is None else {}
        new._pushed_until = -_INF
        new.timed = False
        return new

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
