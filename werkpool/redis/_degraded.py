"""Degraded mode: a local share of each shared limit while the store is unavailable.

With ``RedisStore(local_share=f)``, an admission that cannot reach the server is decided by local
limits of ``f`` of each shared limit's budget (``Rate(100)`` with 0.1: ``Rate(10)`` in each
process), so that work goes on at a reduced, still bounded, rate. :class:`LocalShares` holds them,
one set for the pool's own shared limits and one per key for the per-key ones, made on first use
and dropped once at rest (an idle key costs no memory). No I/O here, and no event loop: the
caller passes the clock's time.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, final

from .._core._exceptions import LimitUnavailableError
from .._core._lanes import LimitGroup
from .._core._limit import Limit
from .._core._limit import cost_of as _cost
from .._core._limits import build
from .._core._remote_limit import Refusal
from .._core._specs import Concurrency, LimitSpec, Rate, Shared, Window

if TYPE_CHECKING:
    from collections.abc import Hashable

    from .._core._job import Job

__all__ = ["LocalShares", "scaled"]

_INF = math.inf


@final
class LocalShares:
    """The local shares of one pool's shared limits: the pool's, and each key's."""

    __slots__ = ("_shares", "keyed", "limits", "share")

    def __init__(
        self, limits: tuple[Shared, ...], per_key: tuple[Shared, ...], share: float
    ) -> None:
        self.limits = limits
        self.keyed = per_key
        #: The fraction of each budget a process may use alone (``local_share``).
        self.share = share
        #: None -> the pool's local shares, key -> the pool's and that key's: their specs, and
        #: their live limits as a limit group, the one the scheduler admits a lane's jobs with.
        self._shares: dict[Hashable | None, tuple[tuple[LimitSpec, ...], LimitGroup]] = {}

    def __len__(self) -> int:
        """How many sets of local shares are kept (the pool's and each key's in use)."""
        return len(self._shares)

    def admit(self, job: Job, key: Hashable | None, now: float, recheck: float) -> float | Refusal:
        """Admit *job* (of *key*) under the local shares at *now*, or refuse it.

        :return: *now* if admitted (then :meth:`limits_of` names the limits to release), else a
            :class:`Refusal` (a full concurrency share asks again after *recheck*, or when a local
            attempt ends)
        :raises LimitUnavailableError: if a share can never admit the job's cost
        """
        local = self._shares.get(key)
        if local is None:
            specs = self.limits + (self.keyed if key is not None else ())
            shares = [scaled(s.limit, self.share) for s in specs]
            group = LimitGroup(tuple(build(spec) for spec in shares))
            local = self._shares[key] = (tuple(shares), group)
        specs_, group = local
        for spec in specs_:
            if _cost(job, spec.unit) > spec.capacity:
                raise LimitUnavailableError(
                    f"the store is unavailable, and the local share {spec!r} (local_share="
                    f"{self.share:g}) can never admit this job's cost {job.cost!r}"
                )
        earliest = group.earliest(job, now)
        if earliest > now:
            # A full local concurrency share frees when a local attempt ends (release wakes).
            return Refusal(now + recheck if earliest == _INF else earliest)
        group.admit(job, now)
        return now

    def limits_of(self, key: Hashable | None) -> tuple[Limit, ...]:
        """The live local limits of *key* (an admission just made them)."""
        return self._shares[key][1].limits

    def let_go(self, key: Hashable | None, now: float) -> None:
        """Drop *key*'s local shares if they are at rest (a fresh one behaves the same)."""
        local = self._shares.get(key)
        if local is not None and all(limit.rest_at() <= now for limit in local[1].limits):
            del self._shares[key]

    def sweep(self, now: float) -> None:
        """Drop every set of local shares at rest."""
        for key in list(self._shares):
            self.let_go(key, now)


def scaled(limit: Rate | Window | Concurrency, share: float) -> Rate | Window | Concurrency:
    """*limit* with *share* of its budget (at least one unit at once, for attempts)."""
    whole = limit.unit is None
    if isinstance(limit, Rate):
        burst = limit.burst * share
        return Rate(
            limit.count * share,
            limit.per,
            burst=max(1, math.floor(burst)) if whole else max(burst, 1e-9),
            unit=limit.unit,
        )
    if isinstance(limit, Window):
        count = limit.count * share
        return Window(max(1, math.floor(count)) if whole else count, limit.per, unit=limit.unit)
    n = limit.n * share
    return Concurrency(max(1, math.floor(n)) if whole else n, unit=limit.unit)
