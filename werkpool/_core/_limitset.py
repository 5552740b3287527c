"""A pool's limits as configured: the values the user gave, and the live limits made from them.

:class:`LimitSet` is the loop-free half of a pool's limit configuration. It folds ``size=`` with
the unit-less :class:`~werkpool.Concurrency` values of ``limits=`` into one bound, builds the live
limits (the ``rate=`` shorthand and the ``limits=`` values) and each key's own, checks a job's
``cost=`` against every limit that will count it (with a per-unit cap for the common case, so a
job's check is a few dict lookups), and on ``set_limits()`` makes the new live limits carry on
from the old ones (no banked credit appears, no window forgets a start). It takes ``now`` and the
jobs concerned as arguments and never reads a clock, so it is tested without an event loop.

What runs at a pool's size (its workers, the scheduler's count of attempts) is the runtime's:
:mod:`werkpool._runtime._lifecycle` applies a change of :attr:`LimitSet.size` there.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, final

from ._limits import build, maker
from ._rate_limit import RateLimit
from ._specs import Concurrency, Rate, Window, check_cost
from ._statistics import LimitStatistics
from ._window_limit import WindowLimit

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from ._job import Job
    from ._limit import Limit
    from ._specs import LimitSpec, Shared

__all__ = ["LimitSet"]

_INF = math.inf


def _no_limits() -> tuple[Limit, ...]:
    return ()


def _fold_size(size: int | None, specs: Sequence[LimitSpec]) -> int | None:
    """The smallest of ``size=`` and the unit-less Concurrency values among *specs*."""
    sizes = [int(spec.n) for spec in specs if isinstance(spec, Concurrency) and spec.unit is None]
    if size is not None:
        sizes.append(size)
    return min(sizes) if sizes else None


def _is_size(spec: LimitSpec) -> bool:
    """A unit-less Concurrency counts toward the size: the workers keep it, not a live limit."""
    return isinstance(spec, Concurrency) and spec.unit is None


@final
class LimitSet:
    """The limits of one pool as values, and how to make, check and replace the live ones.

    :param size: the ``size=`` shorthand, or None
    :param rate: the ``rate=`` shorthand, or None
    :param burst: the rate shorthand's burst
    :param specs: the ``limits=`` values (unit-less :class:`Concurrency` among them count toward
        :attr:`size`)
    :param per_key: the ``per_key=`` values: each key gets its own instances
    :param shared: the pool's shared limits (kept in a store, fixed for the pool's life)
    :param shared_per_key: the per-key shared limits
    """

    __slots__ = (
        "_all",
        "_caps",
        "burst",
        "per_key",
        "rate",
        "shared",
        "shared_per_key",
        "size",
        "size_shorthand",
        "specs",
    )

    def __init__(
        self,
        size: int | None,
        rate: float | None,
        burst: int,
        specs: tuple[LimitSpec, ...] = (),
        per_key: tuple[LimitSpec, ...] = (),
        shared: tuple[Shared, ...] = (),
        shared_per_key: tuple[Shared, ...] = (),
    ) -> None:
        self.size_shorthand = size
        self.rate = rate
        self.burst = burst
        self.specs = specs
        self.per_key = per_key
        self.shared = shared
        self.shared_per_key = shared_per_key
        #: The pool's concurrency bound: the smallest of ``size=`` and the unit-less
        #: Concurrency values of ``limits=``.
        self.size = _fold_size(size, specs)
        self._refresh()

    def _refresh(self) -> None:
        """Recompute what the values imply: every spec a cost is checked against, and the
        largest admissible cost of each unit (both read once per job)."""
        specs: tuple[LimitSpec, ...] = self.specs + self.per_key
        specs += tuple(shared.limit for shared in self.shared + self.shared_per_key)
        if self.rate is not None:
            specs += (Rate(self.rate, burst=self.burst),)
        self._all = specs
        caps: dict[str, float] = {}
        for spec in specs:
            if spec.unit is not None:
                caps[spec.unit] = min(caps.get(spec.unit, _INF), spec.capacity)
        self._caps = caps

    def all_specs(self) -> tuple[LimitSpec, ...]:
        """Every limit value a job's cost is checked against (the shorthands included)."""
        return self._all

    def check_cost(self, cost: object, *, again: bool = False) -> dict[str, float] | None:
        """Check a job's ``cost=`` against the pool's limits (see :func:`_specs.check_cost`);
        *again* after an await, when the limits may have changed: units no longer counted pass.

        None and a dict whose amounts all fit take a fast path (this runs once per job);
        anything else goes through the full check, which raises with a clear message.
        """
        if cost is None:
            return None
        if type(cost) is dict:
            caps = self._caps
            # No cast(): a call, once per job (pyright sees dict[Unknown, Unknown] here).
            given: dict[str, float] = cost  # pyright: ignore[reportUnknownVariableType]
            # Keys and amounts are checked below; anything unexpected takes the full check.
            for unit, amount in given.items():
                cap = caps.get(unit)
                if (
                    cap is None
                    or (amount.__class__ is not int and amount.__class__ is not float)
                    or not 0 <= amount <= cap  # NaN fails both
                ):
                    break
            else:
                # All fit: the job keeps a copy (the caller may change its dict later), made
                # in one call rather than entry by entry.
                return given.copy() if given else None
        return check_cost(cost, self._all, known_units=not again)  # pyright: ignore[reportUnknownArgumentType]

    def build(self) -> list[Limit]:
        """Live limits for the rate shorthand and the ``limits=`` values (but the unit-less
        Concurrency values: they make up :attr:`size`)."""
        limits: list[Limit] = []
        if self.rate is not None:
            limits.append(RateLimit(self.rate, self.burst, spec=Rate(self.rate, burst=self.burst)))
        limits += [build(spec) for spec in self.specs if not _is_size(spec)]
        return limits

    def per_key_factory(self) -> Callable[[], tuple[Limit, ...]]:
        """What makes a new key's own live limits."""
        if not self.per_key:
            return _no_limits
        makers = tuple(maker(spec) for spec in self.per_key)
        # Once per new key: the usual one or two values without a loop.
        if len(makers) == 1:
            (only,) = makers
            return lambda: (only(),)
        if len(makers) == 2:
            first, second = makers
            return lambda: (first(), second())
        return lambda: tuple([make() for make in makers])

    def strict_rates(self) -> bool:
        """Whether starts must land on their slots: some rate, the pool's or a key's, has
        burst 1. A local one's next slot counts from a late start (a larger burst makes it up);
        a shared one's slots are dated in its store, so there a late start shortens the gap to
        the next one, which a strict server sees."""
        if self.rate is not None and self.burst == 1:
            return True
        shared = tuple(spec.limit for spec in self.shared + self.shared_per_key)
        return any(
            isinstance(spec, Rate) and spec.burst == 1
            for spec in self.specs + self.per_key + shared
        )

    def dates_per_key(self) -> bool:
        """Whether each key's own limits date its admissions (a rate or a window)."""
        return any(isinstance(spec, (Rate, Window)) for spec in self.per_key)

    def set_size(self, size: int | None) -> None:
        """Make *size* the concurrency bound: ``size=`` given now replaces the unit-less
        Concurrency values of ``limits=`` as well."""
        self.size_shorthand = size
        self.specs = tuple(spec for spec in self.specs if not _is_size(spec))
        self.size = size
        self._refresh()

    def check_waiting(
        self, rate: float | None, burst: int, specs: tuple[LimitSpec, ...], jobs: Iterable[Job]
    ) -> None:
        """Refuse new limit values that could never admit one of *jobs* (waiting or running:
        a running one may be retried).

        :raises ValueError: naming the limit and the job's cost
        """
        new_specs = specs + ((Rate(rate, burst=burst),) if rate is not None else ())
        for job in jobs:
            if job.cost:
                for unit, amount in job.cost.items():
                    for spec in new_specs:
                        if spec.unit == unit and amount > spec.capacity:
                            raise ValueError(
                                f"the limit {spec!r} could never admit a pending job of "
                                f"cost[{unit!r}]={amount:g}: cancel it first"
                            )

    def replace(
        self,
        rate: float | None,
        burst: int,
        specs: tuple[LimitSpec, ...],
        old: Sequence[Limit],
        now: float,
    ) -> list[Limit]:
        """Take the new values; return the new live limits, carried on from the *old* ones.

        Each new rate takes over the fullest bucket of the old rates of its unit (capped at its
        burst; an adaptive one keeps the slow-down of the same period), and each new window the
        starts of the old window of its unit with the longest period (it remembers the most of
        them). The caller keeps the limits it added itself (the size's count) beside these.
        """
        self.rate, self.burst, self.specs = rate, burst, specs
        self.size = _fold_size(self.size_shorthand, specs)
        self._refresh()
        new = self.build()
        old_windows = [o for o in old if isinstance(o, WindowLimit)]
        old_rates = [o for o in old if isinstance(o, RateLimit)]
        for limit in new:
            if isinstance(limit, WindowLimit):
                windows = [o for o in old_windows if o.unit == limit.unit]
                if windows:
                    limit.carry_on_from(max(windows, key=lambda o: o.per), now)
            elif isinstance(limit, RateLimit):
                alike = [o for o in old_rates if o.unit == limit.unit]
                per = limit.per
                alike.sort(key=lambda o: o.per == per)  # the same period last: it wins
                for old_rate in alike:
                    limit.carry_on_from(old_rate, now)
        return new

    def snapshots(
        self, live: Iterable[Limit], in_use: float, now: float
    ) -> tuple[LimitStatistics, ...]:
        """A snapshot of the size (with *in_use* attempts counted against it) and of each of
        the *live* limits."""
        snaps: list[LimitStatistics] = []
        size = self.size
        if size is not None:
            snaps.append(
                LimitStatistics(
                    kind="concurrency",
                    count=size,
                    per=None,
                    burst=None,
                    unit=None,
                    in_use=in_use,
                    next_free=-_INF if in_use < size else _INF,
                    effective_rate=None,
                )
            )
        snaps += [limit.snapshot(now) for limit in live]
        return tuple(snaps)
