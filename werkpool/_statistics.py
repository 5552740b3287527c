"""The snapshot that :meth:`WorkerPool.statistics` returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import final

__all__ = ["PoolStatistics"]


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
    #: Tokens of the pool's capacity limiter lent out now (equals ``running``; a job that asks a
    #: remote limit holds one meanwhile, before it runs).
    borrowed_tokens: int
