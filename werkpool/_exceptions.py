"""Every public exception werkpool raises."""

from __future__ import annotations

__all__ = ["FutureCancelled", "FutureNotFinished", "PoolClosedError", "PoolFullError"]


class PoolClosedError(RuntimeError):
    """
    Raised when a job is submitted to a pool that no longer accepts work.

    A pool stops accepting work from outside its own jobs once :meth:`~werkpool.WorkerPool.shutdown`
    has begun, and stops accepting any work once :meth:`~werkpool.WorkerPool.kill` has begun or the
    pool has exited.
    """


class PoolFullError(Exception):
    """
    Raised by :meth:`~werkpool.WorkerPool.run` when ``max_pending`` jobs already wait to start.

    :meth:`~werkpool.WorkerPool.submit` waits for room instead, and
    :meth:`~werkpool.WorkerPool.call` waits as well.
    """


class FutureCancelled(Exception):
    """
    Raised when reading the result of a :class:`werkpool.Future` that was cancelled.

    Only the trio-side :class:`werkpool.Future` raises it; an :class:`asyncio.Future` raises
    :class:`asyncio.CancelledError` as usual.
    """


class FutureNotFinished(Exception):
    """Raised when reading the result of a :class:`werkpool.Future` that is still pending."""
