"""Blocking functions as jobs: each attempt runs the function in a worker thread.

:class:`InThread` turns a blocking callable into a job's callable (one that returns an
awaitable), so a thread job is an ordinary job to everything below: it is admitted by the same
size, rates and keys, retried and timed out by the same policy. Only its attempt differs: it
hands the function to a worker thread of anyio's and waits for it there.

Threads come from the pool's own :class:`ThreadLimiter`, never from anyio's default limiter
(40 threads): that one would silently cap ``size`` (an attempt admitted, dated and counted,
then waiting for a thread), and it is shared with every other ``to_thread`` user of the loop.
"""

from __future__ import annotations

import inspect
import math
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar, final

import anyio
import anyio.to_thread

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

__all__ = ["InThread", "ThreadLimiter", "check_blocking"]

T = TypeVar("T")

_INF: Final = math.inf


def check_blocking(fn: object, method: str) -> None:
    """Reject what cannot run in a thread, at the call that passed it."""
    if not callable(fn):
        raise TypeError(f"{method}() needs a callable to run in a thread, not {type(fn).__name__}")
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
    ):
        plain = method.removesuffix("_sync")
        raise TypeError(
            f"{method}() runs blocking functions in a worker thread, but {fn!r} is an async "
            f"function: pass it to pool.{plain}() instead"
        )


@final
class ThreadLimiter:
    """The threads of one pool: as many as its concurrency limit lets attempts run.

    The limiter's size follows the pool's ``size`` (read at each attempt, so a size changed
    while the pool runs applies at once); an unlimited pool gets an unlimited limiter. The
    pool's own limits are then the only bound on its threads, and never one it cannot see.
    """

    __slots__ = ("_limiter", "_unbounded")

    def __init__(self) -> None:
        self._limiter: anyio.CapacityLimiter | None = None
        self._unbounded: anyio.CapacityLimiter | None = None

    def limiter(self, size: int | None, abandon: bool = False) -> anyio.CapacityLimiter:
        """The limiter for an attempt starting now, sized for *size* (None: no limit).

        An attempt that may abandon its thread gets an unbounded limiter: trio returns a
        limiter's token only when the thread finishes, even an abandoned one, so an abandoned
        thread would hold one of the pool's tokens and the next attempt, already admitted and
        dated, would wait for a thread. The pool's size bounds these attempts all the same.
        """
        if abandon:
            unbounded = self._unbounded
            if unbounded is None:
                unbounded = self._unbounded = anyio.CapacityLimiter(_INF)
            return unbounded
        tokens: float = _INF if size is None else size
        limiter = self._limiter
        if limiter is None:
            # Made on first use, in the pool's event loop (a limiter belongs to one backend).
            limiter = self._limiter = anyio.CapacityLimiter(tokens)
        elif limiter.total_tokens != tokens:
            limiter.total_tokens = tokens
        return limiter

    @property
    def borrowed(self) -> int:
        """How many threads run an attempt (or its abandoned function) through this limiter."""
        limiter = self._limiter
        return 0 if limiter is None else int(limiter.borrowed_tokens)


@final
class InThread(Generic[T]):
    """A blocking function as a job's callable: each call runs ``fn(*args)`` in a thread.

    :param fn: the blocking function
    :param threads: the pool's threads
    :param size: reads the pool's concurrency limit at each attempt
    :param abandon_on_cancel: passed to :func:`anyio.to_thread.run_sync`: False waits for the
        thread when the attempt is cancelled or times out; True lets the attempt end at once
        and the thread run on, unseen
    """

    __slots__ = ("abandon_on_cancel", "fn", "size", "threads")

    def __init__(
        self,
        fn: Callable[..., T],
        threads: ThreadLimiter,
        size: Callable[[], int | None],
        abandon_on_cancel: bool,
    ) -> None:
        self.fn = fn
        self.threads = threads
        self.size = size
        self.abandon_on_cancel = abandon_on_cancel

    def __call__(self, *args: Any) -> Coroutine[Any, Any, T]:
        return anyio.to_thread.run_sync(
            self.fn,
            *args,
            abandon_on_cancel=self.abandon_on_cancel,
            limiter=self.threads.limiter(self.size(), self.abandon_on_cancel),
        )

    @property
    def __wrapped__(self) -> Callable[..., T]:
        """The blocking function (the functools convention): a job's default label names it."""
        return self.fn

    def __repr__(self) -> str:
        return f"<in a thread: {self.fn!r}>"
