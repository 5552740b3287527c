"""The snapshot that :meth:`WorkerPool.statistics` returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import final

__all__ = ["LimitStatistics", "PoolStatistics"]


@final
@dataclass(frozen=True, slots=True)
class LimitStatistics:
    """
    A snapshot of one of the pool's limits, in :attr:`PoolStatistics.limits`.

    .. versionadded:: 0.3
    """

    #: ``"rate"``, ``"window"`` or ``"concurrency"``.
    kind: str
    #: The limit's ``count`` (``n`` for a concurrency limit).
    count: float
    #: The period or window in seconds (``None`` for a concurrency limit).
    per: float | None
    #: How many units may go back to back (``None`` but for a rate).
    burst: float | None
    #: The unit counted (``None``: attempts).
    unit: str | None
    #: Units in use now: the summed cost of running attempts (concurrency), the units still in
    #: the bucket (rate) or in the current window (window).
    in_use: float
    #: From when (:func:`anyio.current_time`'s clock) a start of cost 1 fits; ``-inf`` or a time
    #: <= now means now, ``inf`` means once an attempt ends.
    next_free: float
    #: The rate in use now, in units per second (below ``count / per`` after pushbacks, for an
    #: adaptive rate); ``None`` but for a rate.
    effective_rate: float | None


@final
@dataclass(frozen=True, slots=True)
class PoolStatistics:
    """
    A snapshot of a pool's limits and counters, from :meth:`WorkerPool.statistics`.

    ``submitted == queued + running + backoff + completed + failed + cancelled`` at any moment.

    .. versionadded:: 0.3
    """

    #: The concurrency limit (``None``: unlimited).
    size: int | None
    #: The rate limit in starts per second (``None``: unlimited).
    rate: float | None
    #: How many starts may go back to back.
    burst: int
    #: How many jobs may wait to start before run() refuses and submit() waits.
    max_pending: int | None
    #: Jobs accepted so far.
    submitted: int
    #: Jobs waiting to start (first attempts and retries whose backoff is over).
    queued: int
    #: Attempts executing now.
    running: int
    #: Jobs waiting out a backoff before their next attempt.
    backoff: int
    #: Jobs that returned a result.
    completed: int
    #: Jobs that failed (after their retries).
    failed: int
    #: Jobs cancelled (by their future, their caller, kill() or the pool's exit).
    cancelled: int
    #: Attempts started, retries included.
    attempts: int
    #: Attempts that were retries.
    retries: int
    #: Attempts counted against ``size`` now (equals ``running``; a job that asks a remote limit
    #: holds a place meanwhile, before it runs); 0 without ``size``. The name is that of anyio's
    #: capacity limiter, which kept the size in 0.3.
    borrowed_tokens: int
    #: One snapshot per limit of the pool (``size`` and ``rate`` first), not of its keys.
    #:
    #: .. versionadded:: 0.3
    limits: tuple[LimitStatistics, ...] = ()
    #: Keys with their own limits now (keys idle and at rest are dropped).
    #:
    #: .. versionadded:: 0.3
    keys: int = 0
    #: Until when the pool starts nothing (``inf``: until :meth:`~WorkerPool.resume`); ``None``
    #: when it is not paused.
    #:
    #: .. versionadded:: 0.3
    paused_until: float | None = None
