"""WorkerPool: the scheduler's I/O shell, a fixed set of workers inside an AnyIO task group.

This module holds the public face of the pool: its constructor, properties, the submission API
(run, start_soon, call, submit, map), statistics, ``async with``, shutdown() and kill(). The
machinery underneath lives in the earlier classes of its chain (see ``_pool_state.py``):
``_PoolState`` (attributes, loop binding, backpressure, waking workers), ``_Workers`` (the worker
loop, settling jobs) and ``_Lifecycle`` (admission, task groups, stopping).
"""

from __future__ import annotations

import sys
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar, final, overload

import anyio
from anyio.lowlevel import checkpoint_if_cancelled

from ._exceptions import FutureCancelled, PoolFullError
from ._futures import AsyncioFuture, Future, JobFuture
from ._lifecycle import _Lifecycle
from ._map import MapCore, MapIterator, check_window
from ._pool_state import _CLOSED, _INF, _KILLED, _NEW
from ._retry import JobOptions, default_backoff
from ._scheduler import QUEUED, RAISED, RETURNED, Job, JobOwner, Scheduler
from ._statistics import PoolStatistics
from ._validate import (
    check_backoff,
    check_burst,
    check_max_pending,
    check_rate,
    check_retries,
    check_retryable,
    check_size,
    check_task,
    check_timeout,
)

if sys.version_info >= (3, 11):
    from typing import Self, TypeVarTuple, Unpack
else:  # pragma: no cover
    from typing_extensions import Self, TypeVarTuple, Unpack

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
    from types import TracebackType

__all__ = ["WorkerPool", "worker_pool"]

T = TypeVar("T")
U = TypeVar("U")
Ts = TypeVarTuple("Ts")

_DEFAULT_RETRYABLE: Final[tuple[type[Exception], ...]] = (Exception,)
_DEFAULT_OPTIONS: Final = JobOptions(None, 0, _DEFAULT_RETRYABLE, default_backoff)


@final
class _StartSoonOwner:
    """Reports the failure of a start_soon() job to its pool.

    It holds the pool weakly: the pool holds it, and a cycle would leave every pool to the
    cyclic garbage collector (R53). Its jobs cannot outlive the pool's run anyway.
    """

    __slots__ = ("_pool",)

    def __init__(self, pool: WorkerPool) -> None:
        self._pool = weakref.ref(pool)

    def job_settled(self, job: Job) -> None:
        if job.cancelled():
            return
        error = job.exception()  # also marks an asyncio future's exception as retrieved
        pool = self._pool()
        if error is not None and pool is not None:
            pool._job_failed(error)


@final
class _CallOwner:
    """Lets call() wait until its job is over, so a cancelled call returns with the slot free."""

    __slots__ = ("settled",)

    def __init__(self) -> None:
        self.settled = anyio.Event()

    def job_settled(self, job: Job) -> None:
        self.settled.set()


def _options(
    timeout: float | None,
    retries: int,
    retryable_exceptions: type[Exception] | Iterable[type[Exception]],
    backoff: Callable[[int], float],
) -> JobOptions:
    """Validate per-job options; the defaults share one instance (no work, no memory per job)."""
    if (
        timeout is None
        and retries.__class__ is int
        and retries == 0
        and retryable_exceptions is _DEFAULT_RETRYABLE
        and backoff is default_backoff
    ):
        return _DEFAULT_OPTIONS
    return JobOptions(
        check_timeout(timeout),
        check_retries(retries),
        check_retryable(retryable_exceptions),
        check_backoff(backoff),
    )


@final
class WorkerPool(_Lifecycle):
    """
    Run many async jobs under a concurrency limit, a rate limit, or both, on asyncio or trio.

    :param size: the most attempts that may execute at once (``None``: no limit)
    :param rate: the most attempt starts per second (``None``: no limit)
    :param burst: how many starts may go back to back after a pause (default 1; at most 2**53)
    :param max_pending: how many jobs may wait to start before :meth:`run` raises
        :exc:`werkpool.PoolFullError` and :meth:`submit` waits (``None``: no bound)

    **Rate contract.** In any half-open window of length ``W`` seconds, at most
    ``ceil(W * rate) + burst - 1`` attempts start, on the jobs' own clock: each start is dated
    when its job's code begins (:func:`anyio.current_time` as the job reads it), never earlier.
    With the default ``burst=1`` no two starts are closer than ``1/rate``, so ``rate=10`` never
    starts more than 10 in any second, as a server sees it; unused credit never grows beyond
    ``burst``, however long the pool is idle or busy. A worker the event loop wakes late cannot
    make that up, so with ``burst=1`` the long-run rate is a few percent below ``rate``;
    ``burst >= 2`` absorbs such lateness (see the README's "Choosing burst").

    Every attempt, retries included, takes a rate slot and a size slot; a job sleeping in its
    backoff holds neither. Jobs waiting for the same limits start in submission order.

    Use it as an async context manager (``async with WorkerPool(...) as pool:``, or
    :func:`worker_pool`): leaving the block normally waits for every job, leaving it with an
    exception or a cancellation cancels them all and re-raises that exception as it was. On asyncio
    and trio it may also be used without ``async with``: the first :meth:`run` starts it in a
    background task (a trio system task on trio), and :meth:`shutdown` or :meth:`kill` stops it.

    .. versionadded:: 0.3
    """

    __slots__ = ()  # every attribute is declared in _PoolState.__slots__

    def __init__(
        self,
        size: int | None = None,
        rate: float | None = None,
        *,
        burst: int = 1,
        max_pending: int | None = None,
    ) -> None:
        self._size = check_size(size)
        self._rate = check_rate(rate)
        self._burst = check_burst(burst)
        self._max_pending = check_max_pending(max_pending)
        self._space_waiters = deque()  # producers waiting for room, FIFO (some abandoned)
        self._space_waiting = 0  # how many of them still wait
        self._space_abandoned = set()  # cancelled while waiting, skipped when reached
        self._space_reserved = 0  # waiters woken for room that have not submitted yet
        self._errors = []  # failures of start_soon() jobs, for the pool
        self._maps = set()
        self._started = None
        self._start_soon_owner = _StartSoonOwner(self)
        self._state = _NEW
        self._backend = ""
        self._loop = None
        self._trio_token = None
        self._thread = 0
        self._limiter = None
        self._sched = None
        self._cancelled_exc = BaseException
        self._tg = None
        self._outer_tg = None
        self._kill_scope = None
        self._parked = {}  # insertion-ordered: LIFO wake-ups, O(1) removal
        self._reap_scope = None
        self._idle_round = 0
        self._sleeper = None
        self._sleeper_deadline = _INF
        self._waking = 0
        self._workers = set()
        self._drained = None
        self._stopped = None
        self._hosted = False
        self._host_stop = None
        self._host_done = None
        self._host_error = None
        self._host_task = None

    # -- public properties ------------------------------------------------------------------------

    @property
    def size(self) -> int | None:
        """The concurrency limit (``None``: unlimited)."""
        return self._size

    @property
    def rate(self) -> float | None:
        """The rate limit in attempt starts per second (``None``: unlimited)."""
        return self._rate

    @property
    def burst(self) -> int:
        """How many starts may go back to back."""
        return self._burst

    def __repr__(self) -> str:
        state = ("new", "open", "closing", "killed", "closed")[self._state]
        sched = self._sched
        counts = (
            ""
            if sched is None
            else f" queued={sched.queued} running={sched.running} backoff={sched.backoff}"
        )
        return (
            f"<werkpool.WorkerPool {state} size={self._size} rate={self._rate} "
            f"burst={self._burst}{counts}>"
        )

    # -- submission -------------------------------------------------------------------------------

    def run(
        self,
        task: Callable[[Unpack[Ts]], Awaitable[T]],
        /,
        *args: Unpack[Ts],
        timeout: float | None = None,
        retries: int = 0,
        retryable_exceptions: type[Exception] | Iterable[type[Exception]] = (_DEFAULT_RETRYABLE),
        backoff: Callable[[int], float] = default_backoff,
    ) -> JobFuture[T]:
        """
        Schedule ``task(*args)`` under the pool's limits and return its future at once.

        *task* is a callable that returns an awaitable, called once per attempt: ``pool.run(fetch,
        url)`` binds ``url`` now (prefer it to ``lambda: fetch(url)`` in a loop, which binds late).

        :param timeout: seconds each attempt may take, counted from its start; an attempt over it
            fails with :exc:`TimeoutError`. ``None``: no limit. An attempt still running at its
            deadline times out, even if it would have returned then.
        :param retries: how many times to retry after the first attempt fails (up to
            ``retries + 1`` attempts in all)
        :param retryable_exceptions: the :exc:`Exception` subclass(es) that may be retried
            (default: :exc:`Exception`); cancellation and other ``BaseException`` are never
            retried
        :param backoff: ``backoff(n)`` gives the seconds to wait before retry ``n`` (1, 2, ...);
            it must return a finite number >= 0, or the job fails with that error. The default,
            :func:`werkpool.default_backoff`, is exponential with jitter, capped at 60 s.
        :return: an :class:`asyncio.Future` on asyncio, a :class:`werkpool.Future` on trio;
            cancelling it cancels the job
        :raises TypeError: if *task* is not callable (a coroutine object is closed first)
        :raises werkpool.PoolClosedError: if the pool no longer accepts work
        """
        if not callable(task):  # checked at run time too: untyped callers pass anything
            check_task(task)  # type: ignore[unreachable]
        options = _options(timeout, retries, retryable_exceptions, backoff)
        sched = self._accepting()
        if self._max_pending is not None and (
            sched.queued + self._space_reserved >= self._max_pending or self._space_waiting
        ):
            raise PoolFullError(
                f"this WorkerPool already has max_pending={self._max_pending} jobs waiting to "
                "start: use 'await pool.submit(...)' to wait for room instead"
            )
        return self._enqueue(sched, task, args, options, None)  # type: ignore[no-any-return]

    def _enqueue(
        self,
        sched: Scheduler,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        options: JobOptions,
        owner: JobOwner | None,
    ) -> Any:
        """Queue a job whose record is its future (asyncio's own type on asyncio); return it."""
        loop = self._loop
        job: AsyncioFuture[Any] | Future[Any] = (
            AsyncioFuture(loop=loop) if loop is not None else Future()
        )
        job.fn = fn
        job.args = args
        job.options = options
        job.owner = owner
        job.state = QUEUED
        job.attempts = 0
        job.worker = None
        job._pool = self
        sched.enqueue(job)
        if not self._waking:
            self._kick(job)
        return job

    # -- the structured API -----------------------------------------------------------------------

    def start_soon(
        self,
        func: Callable[[Unpack[Ts]], Awaitable[T]],
        /,
        *args: Unpack[Ts],
        timeout: float | None = None,
        retries: int = 0,
        retryable_exceptions: type[Exception] | Iterable[type[Exception]] = (_DEFAULT_RETRYABLE),
        backoff: Callable[[int], float] = default_backoff,
    ) -> JobFuture[T]:
        """
        Schedule ``func(*args)`` like a task group's ``start_soon``: its failure fails the pool.

        Returns at once with a handle (the same kind of future as :meth:`run`) that you may keep
        or drop. If the job fails after its retries, the pool cancels all its remaining work and
        the error propagates out of ``async with`` (a lone error as it was, several together in
        an :exc:`ExceptionGroup`), as a task group does. The options are those of :meth:`run`;
        ``max_pending`` does not apply (the call cannot wait), like :meth:`run` with room.

        .. versionadded:: 0.3
        """
        if not callable(func):  # checked at run time too: untyped callers pass anything
            check_task(func)  # type: ignore[unreachable]
        options = _options(timeout, retries, retryable_exceptions, backoff)
        sched = self._accepting()
        return self._enqueue(  # type: ignore[no-any-return]
            sched, func, args, options, self._start_soon_owner
        )

    async def call(
        self,
        func: Callable[[Unpack[Ts]], Awaitable[T]],
        /,
        *args: Unpack[Ts],
        timeout: float | None = None,  # noqa: ASYNC109 - per attempt, not for this call
        retries: int = 0,
        retryable_exceptions: type[Exception] | Iterable[type[Exception]] = (_DEFAULT_RETRYABLE),
        backoff: Callable[[int], float] = default_backoff,
    ) -> T:
        """
        Run ``func(*args)`` under the pool's limits and return its result here.

        The job's error is raised to the caller, not to the pool. Cancelling the caller cancels
        the job, and ``call`` returns (re-raising the cancellation) only once the job's code has
        stopped and its slot is free. Always a checkpoint. Waits for room if ``max_pending`` jobs
        are already waiting to start.

        :raises werkpool.FutureCancelled: if the pool cancelled the job (by :meth:`kill`)

        .. versionadded:: 0.3
        """
        check_task(func)
        options = _options(timeout, retries, retryable_exceptions, backoff)
        await checkpoint_if_cancelled()  # a cancelled caller submits nothing, room or not
        await self._wait_for_room()
        sched = self._accepting_after_wait()
        owner = _CallOwner()
        job = sched.submit(func, args, options, owner)
        if not self._waking:
            self._kick(job)
        try:
            await owner.settled.wait()
        except BaseException:
            self._cancel_owned(job)
            with anyio.CancelScope(shield=True):
                await owner.settled.wait()  # no job code runs and the slot is free again
            raise
        if job.outcome == RETURNED:
            return job.value  # type: ignore[no-any-return]
        if job.outcome == RAISED:
            raise job.value
        raise FutureCancelled("the job was cancelled")

    async def submit(
        self,
        func: Callable[[Unpack[Ts]], Awaitable[T]],
        /,
        *args: Unpack[Ts],
        timeout: float | None = None,  # noqa: ASYNC109 - per attempt, not for this call
        retries: int = 0,
        retryable_exceptions: type[Exception] | Iterable[type[Exception]] = (_DEFAULT_RETRYABLE),
        backoff: Callable[[int], float] = default_backoff,
    ) -> JobFuture[T]:
        """
        Like :meth:`run`, but wait while ``max_pending`` jobs already wait to start.

        For producers that need backpressure: ``await pool.submit(...)`` returns the job's future
        once there is room in the queue (at once without ``max_pending``). Waiters get room in
        the order they asked. Always a checkpoint.

        .. versionadded:: 0.3
        """
        check_task(func)
        options = _options(timeout, retries, retryable_exceptions, backoff)
        await checkpoint_if_cancelled()  # a cancelled caller submits nothing, room or not
        await self._wait_for_room()
        sched = self._accepting_after_wait()
        return self._enqueue(sched, func, args, options, None)  # type: ignore[no-any-return]

    @overload
    def map(
        self,
        func: Callable[[U], Awaitable[T]],
        iterable: Iterable[U] | AsyncIterable[U],
        /,
        *,
        ordered: bool = ...,
        return_exceptions: Literal[False] = ...,
        window: int | None = ...,
        timeout: float | None = ...,
        retries: int = ...,
        retryable_exceptions: type[Exception] | Iterable[type[Exception]] = ...,
        backoff: Callable[[int], float] = ...,
    ) -> MapIterator[T]: ...

    @overload
    def map(
        self,
        func: Callable[[U], Awaitable[T]],
        iterable: Iterable[U] | AsyncIterable[U],
        /,
        *,
        ordered: bool = ...,
        return_exceptions: bool,
        window: int | None = ...,
        timeout: float | None = ...,
        retries: int = ...,
        retryable_exceptions: type[Exception] | Iterable[type[Exception]] = ...,
        backoff: Callable[[int], float] = ...,
    ) -> MapIterator[T | BaseException]: ...

    def map(
        self,
        func: Callable[[Any], Awaitable[Any]],
        iterable: Iterable[Any] | AsyncIterable[Any],
        /,
        *,
        ordered: bool = True,
        return_exceptions: bool = False,
        window: int | None = None,
        timeout: float | None = None,
        retries: int = 0,
        retryable_exceptions: type[Exception] | Iterable[type[Exception]] = (_DEFAULT_RETRYABLE),
        backoff: Callable[[int], float] = default_backoff,
    ) -> MapIterator[Any]:
        """
        Run ``func(item)`` for each item under the pool's limits; iterate over the results.

        *iterable* may be a list, a generator or an async iterable. It is read lazily, as the pool
        can start more jobs, never faster than the pool's own limits allow and never slower:
        with ``size``, at most ``size + window`` items are in flight (queued, running, or
        finished and not yet yielded); with a rate and no size, the rate decides how many start
        and at most ``window`` items wait to start or to be yielded; with neither limit, at most
        ``window`` items are in flight. So memory stays bounded however long or endless the
        input, and ``window`` bounds the results held for ordered output behind a slow item.
        With ``ordered=True`` results come in input order, otherwise in completion order. A
        failed item raises its error from the iteration, after cancelling the map's other jobs;
        with ``return_exceptions=True`` it yields the exception instead and the map goes on. An
        error that would read as the end of the loop (``StopAsyncIteration``, ``StopIteration``)
        is raised as a :exc:`RuntimeError` whose ``__cause__`` it is, as :pep:`479` does.
        Leaving the loop early by an error or a cancellation cancels the map's jobs; after a
        ``break``, close it with ``async with pool.map(...) as results:`` or ``aclose()``. A map
        dropped without closing is closed when it is freed; one still open when the pool exits
        is closed then: its jobs are cancelled and iterating it again raises
        :exc:`werkpool.PoolClosedError`.

        :param window: how many of the map's items may wait beyond those the pool runs (see
            above): an int >= 1, or None for the default, the pool's ``size``, or 256 without
            one
        :raises TypeError: if ``window`` is not None or an int
        :raises ValueError: if ``window`` is < 1

        .. versionadded:: 0.3
        """
        check_task(func)
        options = _options(timeout, retries, retryable_exceptions, backoff)
        check_window(window)
        sched = self._accepting()
        core = MapCore(
            self, sched, func, iterable, options, ordered, return_exceptions, self._size, window
        )
        return MapIterator(core)

    def statistics(self) -> PoolStatistics:
        """
        Return a snapshot of the pool's limits and counters.

        .. versionadded:: 0.3
        """
        sched = self._sched
        return PoolStatistics(
            size=self._size,
            rate=self._rate,
            burst=self._burst,
            max_pending=self._max_pending,
            submitted=0 if sched is None else sched.submitted,
            queued=0 if sched is None else sched.queued,
            running=0 if sched is None else sched.running,
            backoff=0 if sched is None else sched.backoff,
            completed=0 if sched is None else sched.completed,
            failed=0 if sched is None else sched.failed,
            cancelled=0 if sched is None else sched.cancelled,
            attempts=0 if sched is None else sched.attempts,
            retries=0 if sched is None else sched.retries,
            borrowed_tokens=0 if self._limiter is None else int(self._limiter.borrowed_tokens),
        )

    # -- async with, shutdown and kill ------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._state != _NEW:
            raise RuntimeError(
                "this WorkerPool is already running or has exited; create a new one "
                "(a pool used without 'async with' runs from its first run())"
            )
        self._bind()
        await self._start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        await self._finish(exc)
        return False

    async def shutdown(self) -> None:
        """
        Stop accepting jobs and wait for every accepted job to finish.

        Returns as soon as the last job ends. Jobs of this pool may still submit follow-up jobs
        while it drains. Cancelling the task awaiting ``shutdown()`` stops the waiting, not the
        jobs. Safe to call more than once, and after :meth:`kill`.

        :raises RuntimeError: if awaited from inside one of the pool's own jobs (it would wait for
            itself)
        """
        if self._state == _NEW:
            self._state = _CLOSED
            return
        self._check_loop()
        if self._in_worker():
            raise RuntimeError(
                "shutdown() was awaited from inside one of this pool's jobs, "
                "so it would wait for itself"
            )
        self._begin_closing()
        sched = self._sched
        assert sched is not None
        assert self._drained is not None
        if sched.pending == 0:
            self._set_drained()
        if self._hosted:
            assert self._host_stop is not None
            assert self._host_done is not None
            self._host_stop.set()
            await self._host_done.wait()
            if self._host_error is not None:
                raise self._host_error
        else:
            await self._drained.wait()
            if self._state >= _KILLED and self._stopped is not None:
                await self._stopped.wait()  # killed: return once the cancelled jobs stopped

    async def kill(self) -> None:
        """
        Cancel every job, whether queued, waiting for a rate slot, running or in its backoff.

        Every future ends cancelled. Returns once no job code runs any more. Idempotent, and safe
        to combine with :meth:`shutdown` in any order.
        """
        if self._state != _NEW:
            self._check_loop()
        self._abort()
        if self._in_worker():
            return  # a job killing its own pool: it is being cancelled itself
        with anyio.CancelScope(shield=True):
            if self._hosted:
                assert self._host_stop is not None
                assert self._host_done is not None
                self._host_stop.set()
                await self._host_done.wait()
            elif self._stopped is not None and self._outer_tg is not None:
                await self._stopped.wait()


def worker_pool(
    size: int | None = None,
    rate: float | None = None,
    *,
    burst: int = 1,
    max_pending: int | None = None,
) -> WorkerPool:
    """
    Return a :class:`WorkerPool` to use as ``async with worker_pool(size=..., rate=...) as pool:``.

    The arguments are checked here, so a bad one raises at this call.

    .. versionadded:: 0.3
    """
    return WorkerPool(size, rate, burst=burst, max_pending=max_pending)
