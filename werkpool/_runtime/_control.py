"""Run-time control of a pool's limits: the size, the limit values, pauses and pushbacks.

:class:`Control` applies what the pool's owner changes while the pool runs (``pool.size = n``,
``set_limits()``, ``pause_for()``, ``push_back()``, ``resume()``, a server's budgets through
``observe_headers()``) to the parts that hold it: the loop-free
:class:`~werkpool._core._limitset.LimitSet` and the scheduler, and, once the pool is bound to its
loop, the crew of workers. It also reads them back (``paused``, the limits' snapshots, the attempts
admitted after a job's). Before the pool binds, a change is remembered: a pause waits for
:meth:`Control.bind`, so that the hooks hear of it; the rest is in the limit set and the scheduler
already.

The size has one mechanism, the number of workers (see :meth:`Control.bind`); the scheduler
counts the attempts as well only where the workers alone do not bound them. anyio's
``CapacityLimiter`` stays where a bound must be resized at run time and shared by tasks the pool
does not own: the pool's worker threads (:mod:`werkpool._runtime._threads`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, final

import anyio

from .._core._count_limit import CountLimit
from .._core._job import RESERVING, RUNNING
from .._core._rate_limit import RateLimit

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Iterable, Mapping

    from .._core._budgets import Budget
    from .._core._job import Job
    from .._core._limit import Limit
    from .._core._limitset import LimitSet
    from .._core._scheduler import Scheduler
    from .._core._specs import LimitSpec
    from .._core._statistics import LimitStatistics
    from ._crew import Crew

__all__ = ["Control"]

_INF = math.inf


@final
class Control:
    """The run-time control of one pool's limits; see the module docstring.

    :param limitset: the pool's limits as configured
    :param sched: the pool's scheduler
    """

    __slots__ = ("_clock", "_pace", "crew", "limitset", "sched", "size_count", "start_paused")

    def __init__(self, limitset: LimitSet, sched: Scheduler) -> None:
        self.limitset = limitset
        self.sched = sched
        #: Until when the pool is paused before it runs (pause() or pause_for() before binding).
        self.start_paused = -_INF
        #: The scheduler's count of the attempts against ``size``, when the workers alone do not
        #: bound them (see bind() and _apply_size); None: the workers are the bound.
        self.size_count: CountLimit | None = None
        # Set when the pool binds (see bind()).
        self.crew: Crew | None = None
        self._clock: Callable[[], float] | None = None
        #: Sets how close to a slot the workers leave their timer (LoopBinding.pace).
        self._pace: Callable[[bool], None] | None = None

    def bind(
        self,
        crew: Crew,
        clock: Callable[[], float],
        *,
        counted: bool,
        pace: Callable[[bool], None],
    ) -> None:
        """The pool bound to its loop: its crew and its clock run now, and a pause asked before
        it ran begins (the hooks are attached: they hear of it).

        The size has one mechanism: the number of workers, each running one attempt at a time,
        so a free worker is all a start needs and the other limits are asked only by one. Where
        that is not enough the scheduler counts the attempts too, in :attr:`size_count`: when
        *counted* (a job asking remote limits holds its place meanwhile, with no worker running
        it) or once the size shrank below the workers that exist (they leave when idle).
        """
        self.crew, self._clock, self._pace = crew, clock, pace
        size = self.limitset.size
        if counted and size is not None:
            self.size_count = CountLimit(size)
            self.sched.replace_limits([self.size_count, *self.sched.limits], ())
        if self.start_paused != -_INF:
            self.sched.pause(self.start_paused)

    def now(self) -> float:
        """The pool's clock (:func:`anyio.current_time` before the pool is bound)."""
        clock = self._clock
        return anyio.current_time() if clock is None else clock()

    def set_size(self, size: int | None) -> None:
        """Change the concurrency bound; running attempts above it finish first."""
        old = self.limitset.size
        self.limitset.set_size(size)
        self._apply_size(old)

    def _apply_size(self, old: int | None) -> None:
        """The limit set's size changed from *old*: the running parts follow."""
        size = self.limitset.size
        crew = self.crew
        if crew is None:
            return  # not bound yet: bind() reads it
        growing = (size or _INF) > (old or _INF)
        crew.max_workers = _INF if size is None else size
        sched = self.sched
        if self.size_count is not None:
            self.size_count.n = _INF if size is None else size
        elif size is not None and not growing:
            # The workers were the bound; more of them exist than the new size (they leave
            # when idle), so from now on the scheduler counts the attempts.
            self.size_count = CountLimit(size)
            running = self._running_jobs()
            sched.replace_limits([*sched.limits, self.size_count], running)
        if growing:
            crew.look_again()  # more may start: the workers hand the line on from there

    def set_limits(self, rate: float | None, burst: int, specs: tuple[LimitSpec, ...]) -> None:
        """Replace the rate shorthand and the ``limits=`` values on a running pool.

        A new rate or window continues the schedule of the old one of the same unit, so no
        banked credit appears; a concurrency limit counts the attempts running now.

        :raises ValueError: if a job that waits has a cost that the new limits can never admit
        """
        config, sched = self.limitset, self.sched
        old_size = config.size
        if self.crew is None:  # not bound: nothing ran under the old limits
            sched.replace_limits(config.replace(rate, burst, specs, (), 0.0), ())
            return
        running = self._running_jobs()
        config.check_waiting(rate, burst, specs, [*sched.pending_jobs(), *running])
        now = self.now()
        new: list[Limit] = [] if self.size_count is None else [self.size_count]
        new += config.replace(rate, burst, specs, sched.limits, now)
        sched.replace_limits(new, running, now)
        if self._pace is not None:
            self._pace(config.strict_rates())  # a burst may have come or gone
        if sched.remote:
            # As in bind(): pipelined requests need local limits that do not date their latest
            # admission. A rate or window given now takes the pool back to one request at a time
            # (the ones in flight ask again under it: Scheduler.granted); without one, it may
            # pipeline again (#21 item 10).
            dated = any(limit.timed for limit in new) or config.dates_per_key()
            sched.set_depth(dated)
        if config.size != old_size:
            self._apply_size(old_size)
        self._look_again()

    def _running_jobs(self) -> list[Job]:
        """The jobs whose attempt or remote reservation runs now (they hold their limits)."""
        assert self.crew is not None
        return [
            job
            for worker in self.crew.workers
            if (job := worker.job) is not None and job.state in (RUNNING, RESERVING)
        ]

    def _look_again(self) -> None:
        """Limits changed or a pause ended: a waiting worker must look at the line again."""
        if self.crew is not None:
            self.crew.look_again()

    def pause(self, until: float, key: Hashable = None) -> None:
        """Start nothing (of *key*, if given) before *until*; never shortens a pause."""
        sched = self.sched
        if self._clock is None:
            if key is not None:
                raise RuntimeError("pause_for(key=...) needs a running pool")
            self.start_paused = max(self.start_paused, until)
        elif key is None:
            sched.pause(until)
        else:
            sched.pause_key(key, until)

    def paused_until(self) -> float:
        """Until when the pool starts nothing (``-inf``: not paused)."""
        return self.start_paused if self._clock is None else self.sched.paused_until

    def push_back(
        self,
        until: float,
        key: Hashable = None,
        clamped_from: float | None = None,
        scope: str | None = None,
    ) -> None:
        """A provider's pushback heard outside a job's error: pause what *scope* names, and
        slow its adaptive rates down (as a job's :exc:`RetryAfter` would). *until* is clamped
        already; *clamped_from*: what was asked, if more; *scope* was checked."""
        sched = self.sched
        if self._clock is None:
            if scope is None or scope in ("key", "pool"):
                self.pause(until, key if scope != "pool" else None)
        else:
            sched.push_back(key, self.now(), until, clamped_from, scope)

    def sent_after(self, job: Job) -> list[Mapping[str, float] | None]:
        """The costs of the pool's attempts running now that were admitted after *job*'s (as a
        rate counting attempts orders them): a server that answered *job* had not counted them
        yet."""
        sched, crew = self.sched, self.crew
        if crew is None:
            return []
        lane = job.lane
        limits = sched.limits if lane is None else sched.limits + lane.limits
        for limit in limits:
            # A rate counting attempts: each admission moves its schedule on, so the marks
            # order the attempts even when they were admitted at the same time.
            if isinstance(limit, RateLimit) and limit.unit is None:
                mark = limit.admission_mark(job)
                if mark is not None:
                    break
        else:
            return []  # no rate orders the attempts
        later: list[Mapping[str, float] | None] = []
        for worker in crew.workers:
            other = worker.job
            if other is None or other is job or other.state != RUNNING:
                continue
            other_mark = limit.admission_mark(other)
            if other_mark is not None and other_mark > mark:
                later.append(other.cost)
        return later

    def observe(self, budgets: Iterable[Budget], key: Hashable = None) -> int:
        """A server's budgets lower the matching limits (:meth:`Scheduler.observe`); how many
        found a limit. Before the pool runs there are no limits to lower: 0."""
        if self._clock is None:
            return 0
        return self.sched.observe(budgets, key, self.now())

    def resume(self) -> None:
        """End every pause."""
        self.start_paused = -_INF
        if self._clock is not None:
            self.sched.resume(self.now())
            self._look_again()

    def limit_statistics(self, now: float) -> tuple[LimitStatistics, ...]:
        """A snapshot of each of the pool's limits: the size first."""
        live = [limit for limit in self.sched.limits if limit is not self.size_count]
        return self.limitset.snapshots(live, self.size_in_use(), now)

    def size_in_use(self) -> int:
        """The attempts counted against the size now: those running, and, where the scheduler
        counts them, those asking the remote limits (each holds its place)."""
        count = self.size_count
        return self.sched.running if count is None else int(count.in_use)
