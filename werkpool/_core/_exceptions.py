"""Every public exception werkpool raises.

The futures' two errors subclass anyio's classes of the same names, so that ``except
anyio.FutureCancelled`` catches werkpool's too; anyio is imported for those two base classes
only (the core runs no event loop).
"""

from __future__ import annotations

import math
from typing import cast

import anyio

__all__ = [
    "FutureCancelled",
    "FutureNotFinished",
    "LimitUnavailableError",
    "PoolClosedError",
    "PoolFullError",
    "RetryAfter",
    "SharedLimitError",
]


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


class FutureCancelled(anyio.FutureCancelled):
    """
    Raised when reading the result of a :class:`werkpool.Future` that was cancelled.

    Only the trio-side :class:`werkpool.Future` raises it; an :class:`asyncio.Future` raises
    :class:`asyncio.CancelledError` as usual. :meth:`~werkpool.WorkerPool.call` raises it, on both
    backends, when the pool cancelled the job.

    A subclass of :class:`anyio.FutureCancelled` (an :class:`Exception`): ``except
    anyio.FutureCancelled`` catches it too (since
    the release after 0.3.0: see the changelog).
    """


class FutureNotFinished(anyio.FutureNotFinished):
    """
    Raised when reading the result of a :class:`werkpool.Future` that is still pending.

    A subclass of :class:`anyio.FutureNotFinished` (an :class:`Exception`): ``except
    anyio.FutureNotFinished`` catches it too (since
    the release after 0.3.0: see the changelog).
    """


class RetryAfter(Exception):
    """
    Raised by a job to say that the provider pushed back: start nothing for *seconds*.

    What pauses depends on *scope*, what the provider said refused ("which 429 pauses what"):

    - ``"key"``: the job's key only; only the key's adaptive rates slow down;
    - ``"pool"``: the whole pool; the pool's adaptive rates slow down (not the keys');
    - the ``name=`` of one of the pool's limits (``"tpm"``): that limit only is held until the
      delay is over (and slows down if it is an adaptive rate); other limits and keys go on;
    - ``None`` (the default): ``"key"`` for a job with a key, else ``"pool"``.

    A pause already longer is kept. The job is retried after the pause if it has retries left
    (whatever its ``retryable_exceptions``: a pushback is transient by definition), else it
    fails with this exception. The refused attempt's cost is given back to the limits it was
    admitted under (the provider charged nothing for it).

    :param seconds: the delay, a finite number >= 0 (an HTTP ``Retry-After`` in seconds)
    :param scope: ``None``, ``"key"``, ``"pool"``, or a limit's name (a non-empty str of at
        most 100 characters); a name that no limit of the pool has fails the job with a
        :exc:`ValueError`

    .. versionadded:: 0.3
    .. versionchanged:: 0.3 ``scope``
    """

    def __init__(
        self, seconds: float, message: str | None = None, *, scope: str | None = None
    ) -> None:
        given = cast("object", seconds)  # checked at run time: untyped callers pass anything
        if isinstance(given, bool) or not isinstance(given, (int, float)):
            raise TypeError(
                f"RetryAfter: seconds must be a finite number >= 0, not {type(seconds).__name__}"
            )
        try:
            value = float(seconds)
        except OverflowError:  # an int beyond the floats (10**400): a bad value, not a crash
            value = math.inf
        if not math.isfinite(value) or value < 0:
            try:
                shown = repr(seconds)
            except ValueError:  # an int past Python's limit on digits to print
                shown = f"an int of {int(seconds).bit_length()} bits"
            raise ValueError(f"RetryAfter: seconds must be a finite number >= 0, got {shown}")
        checked = cast("object", scope)
        if checked is not None:
            if not isinstance(checked, str):
                raise TypeError(
                    f"RetryAfter: scope must be None, 'key', 'pool' or a limit's name (a str), "
                    f"not {type(checked).__name__}"
                )
            if not checked or len(checked) > 100:
                raise ValueError(
                    f"RetryAfter: scope must be None, 'key', 'pool' or a limit's name "
                    f"(a non-empty str of at most 100 characters), got {checked!r}"
                )
        super().__init__(message or f"the provider asked to retry after {value:g} s")
        #: The delay, in seconds.
        self.seconds = value
        #: What refused: ``None`` (the job's key, or the pool), ``"key"``, ``"pool"`` or the
        #: name of one of the pool's limits.
        self.scope = scope


class LimitUnavailableError(Exception):
    """
    Raised as an attempt's error when a shared limit's store could not be reached in time.

    The pool asked the store (Redis) for the attempt's credit, and it stayed unreachable, too slow
    or restarting for longer than the store's ``timeout``. Nothing was taken, so no limit is
    exceeded: the attempt did not start, and counts as a failed attempt. The job's retry policy
    decides as for any error: with ``retries`` left and this class covered by
    ``retryable_exceptions`` (the default, ``Exception``, covers it), it is retried after its
    backoff; else it fails with this error.

    .. versionadded:: 0.3
    """


class SharedLimitError(Exception):
    """
    Raised as an attempt's error when a shared limit's store refused the request itself.

    For example, the Redis key of a shared limit holds a value of another type (another program
    uses the name), or the store answered with an error. The message names the key. The attempt
    did not start; the job's retry policy decides as for any error (retrying helps only once the
    store is fixed: leave this class out of ``retryable_exceptions`` to fail at once).

    .. versionadded:: 0.3
    """
