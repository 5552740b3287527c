"""WorkerPool: the scheduler's I/O shell, a fixed set of workers inside an AnyIO task group."""

from __future__ import annotations

import asyncio
import inspect
import math
import sys
import threading
from collections import deque
from contextvars import ContextVar
from types import CoroutineType, TracebackType
from typing import TYPE_CHECKING, Any, Final, NoReturn, TypeVar, final

import anyio
from anyio.lowlevel import checkpoint, checkpoint_if_cancelled

from ._exceptions import FutureCancelled, PoolClosedError, PoolFullError
from ._futures import AsyncioFuture, Future, JobFuture
from ._limits import ConcurrencyLimit, Limit, RateLimit
from ._map import MapIterator
from ._retry import JobOptions, default_backoff, next_delay
from ._scheduler import (
    BACKOFF,
    CANCELLED,
    DONE,
    QUEUED,
    RAISED,
    RETURNED,
    RUNNING,
    Job,
    JobOwner,
    PlainJob,
    Scheduler,
    spent,
)
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
    from exceptiongroup import BaseExceptionGroup
    from typing_extensions import Self, TypeVarTuple, Unpack

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, Awaitable, Callable, Iterable

    from anyio.abc import TaskGroup, TaskStatus

__all__ = ["WorkerPool", "worker_pool"]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

_INF = math.inf
_DEFAULT_RETRYABLE: Final[tuple[type[BaseException], ...]] = (Exception,)
_DEFAULT_OPTIONS: Final = JobOptions(None, 0, _DEFAULT_RETRYABLE, default_backoff)
#: A worker that has run this many jobs back to back without waiting lets other tasks run once.
_FAIRNESS_BATCH: Final = 64

# Lifecycle states.
_NEW: Final = 0  # constructed, not bound to an event loop
_OPEN: Final = 1  # accepting work
_CLOSING: Final = 2  # shutdown() began: draining, only the pool's own jobs may submit
_KILLED: Final = 3  # kill() began, or the pool failed: cancelling everything
_CLOSED: Final = 4  # exited


@final
class _StartSoonOwner:
    """Reports the failure of a start_soon() job to its pool."""

    __slots__ = ("_pool",)

    def __init__(self, pool: WorkerPool) -> None:
        self._pool = pool

    def job_settled(self, job: Job) -> None:
        if job.cancelled():
            return
        error = job.exception()  # also marks an asyncio future's exception as retrieved
        if error is not None:
            self._pool._job_failed(error)


@final
class _CallOwner:
    """Lets call() wait until its job is over, so a cancelled call returns with the slot free."""

    __slots__ = ("settled",)

    def __init__(self) -> None:
        self.settled = anyio.Event()

    def job_settled(self, job: Job) -> None:
        self.settled.set()


#: The pool whose job code the current task runs (set in each worker task; inherited by the
#: tasks a job starts), so that a job may still submit while its pool drains.
_running_in: ContextVar[WorkerPool | None] = ContextVar("werkpool_running_in", default=None)


class _NotAwaitable(Exception):
    """Raised inside the worker when a job's callable returned something that is not awaitable."""

    def __init__(self, value: object) -> None:
        self.value = value


@final
class _Worker:
    __slots__ = ("event", "job", "scope", "stopping", "token")

    def __init__(self) -> None:
        self.scope: anyio.CancelScope | None = None
        self.event: anyio.Event | None = None
        self.job: Job | None = None  # the job whose attempt this worker runs now
        #: The pool cancelled ``scope`` to stop the current job (its future was cancelled).
        self.stopping = False
        #: The worker holds a token of the pool's limiter on its own behalf (size-only pools).
        self.token = False


def _options(
    timeout: float | None,
    retries: int,
    retryable_exceptions: type[BaseException] | Iterable[type[BaseException]],
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


def _reraise_unchanged(error: BaseException) -> NoReturn:
    """Raise *error* keeping its __cause__ and __context__ (a plain raise in an except block
    would overwrite __context__ with the exception being handled)."""
    cause, context, suppress = error.__cause__, error.__context__, error.__suppress_context__
    try:
        raise error
    finally:
        error.__cause__, error.__context__ = cause, context
        error.__suppress_context__ = suppress


def _detect_backend() -> str:
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            trio.lowlevel.current_task()
        except RuntimeError:
            pass
        else:
            return "trio"
    if asyncio._get_running_loop() is not None:
        return "asyncio"
    raise RuntimeError(
        "werkpool: a WorkerPool must be used from inside a running asyncio or trio event loop"
    )


@final
class WorkerPool:
    """
    Run many async jobs under a concurrency limit, a rate limit, or both, on asyncio or trio.

    :param size: the most attempts that may execute at once (``None``: no limit)
    :param rate: the most attempt starts per second (``None``: no limit)
    :param burst: how many starts may go back to back after a pause (default 1)
    :param max_pending: how many jobs may wait to start before :meth:`run` raises
        :exc:`werkpool.PoolFullError` and :meth:`submit` waits (``None``: no bound)

    **Rate contract.** In any half-open window of length ``W`` seconds, at most
    ``ceil(W * rate) + burst - 1`` attempts start. With the default ``burst=1`` starts are spaced
    ``1/rate`` apart, so ``rate=10`` never starts more than 10 in any second; unused credit never
    grows beyond ``burst``, however long the pool is idle or busy. Starts are admitted on this
    schedule by the pool's clock (:func:`anyio.current_time`); a job may begin slightly after its
    admission when the event loop is busy, never before, and such lateness does not push later
    admissions back, so the long-run rate does not drift below ``rate``.

    Every attempt, retries included, takes a rate slot and a size slot; a job sleeping in its
    backoff holds neither. Jobs waiting for the same limits start in submission order.

    Use it as an async context manager (``async with WorkerPool(...) as pool:``, or
    :func:`worker_pool`): leaving the block normally waits for every job, leaving it with an
    exception or a cancellation cancels them all and re-raises that exception as it was. On asyncio
    and trio it may also be used without ``async with``: the first :meth:`run` starts it in a
    background task (a trio system task on trio), and :meth:`shutdown` or :meth:`kill` stops it.

    .. versionadded:: 0.3
    """

    __slots__ = (
        "_backend",
        "_burst",
        "_cancelled_exc",
        "_drained",
        "_errors",
        "_host_done",
        "_host_error",
        "_host_stop",
        "_host_task",
        "_hosted",
        "_kill_scope",
        "_limiter",
        "_loop",
        "_maps",
        "_max_pending",
        "_outer_tg",
        "_parked",
        "_rate",
        "_sched",
        "_size",
        "_sleeper",
        "_sleeper_deadline",
        "_space_reserved",
        "_space_waiters",
        "_start_soon_owner",
        "_started",
        "_state",
        "_stopped",
        "_tg",
        "_thread",
        "_trio_token",
        "_waking",
        "_workers",
    )

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
        self._space_waiters: deque[anyio.Event] = deque()
        self._space_reserved = 0  # waiters woken for room that have not submitted yet
        self._errors: list[BaseException] = []  # failures of start_soon() jobs, for the pool
        self._maps: set[MapIterator[Any]] = set()
        self._started: anyio.Event | None = None
        self._start_soon_owner = _StartSoonOwner(self)
        self._state = _NEW
        self._backend = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._trio_token: object = None
        self._thread = 0
        self._limiter: anyio.CapacityLimiter | None = None
        self._sched: Scheduler | None = None
        self._cancelled_exc: type[BaseException] = BaseException
        self._tg: TaskGroup | None = None
        self._outer_tg: TaskGroup | None = None
        self._kill_scope: anyio.CancelScope | None = None
        self._parked: dict[_Worker, None] = {}  # insertion-ordered: FIFO wake-ups, O(1) removal
        self._sleeper: _Worker | None = None
        self._sleeper_deadline = _INF
        self._waking = 0
        self._workers: set[_Worker] = set()
        self._drained: anyio.Event | None = None
        self._stopped: anyio.Event | None = None
        self._hosted = False
        self._host_stop: anyio.Event | None = None
        self._host_done: anyio.Event | None = None
        self._host_error: BaseException | None = None
        self._host_task: asyncio.Task[None] | None = None

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

    # -- binding to an event loop -----------------------------------------------------------------

    def _bind(self) -> Scheduler:
        backend = _detect_backend()
        self._backend = backend
        self._thread = threading.get_ident()
        if backend == "asyncio":
            self._loop = asyncio.get_running_loop()
        else:
            import trio

            self._trio_token = trio.lowlevel.current_trio_token()
        self._cancelled_exc = anyio.get_cancelled_exc_class()
        limits: list[Limit] = []
        if self._size is not None:
            self._limiter = anyio.CapacityLimiter(self._size)
            if self._rate is not None:
                limits.append(ConcurrencyLimit(self._limiter))
            # Without a rate the size needs no admission check: at most `size` workers exist,
            # each running one attempt at a time. Each worker then borrows a token for as long
            # as it runs attempts back to back (see _work), not one per job.
        if self._rate is not None:
            limits.append(RateLimit(self._rate, self._burst))
        self._sched = Scheduler(limits, _INF if self._size is None else self._size)
        self._drained = anyio.Event()
        self._stopped = anyio.Event()
        self._started = anyio.Event()
        self._state = _OPEN
        return self._sched

    def _check_loop(self) -> None:
        if self._backend == "asyncio":
            if asyncio._get_running_loop() is self._loop:
                return
        else:
            trio = sys.modules["trio"]
            try:
                if trio.lowlevel.current_trio_token() is self._trio_token:
                    return
            except RuntimeError:
                pass
        where = "thread" if threading.get_ident() != self._thread else "event loop"
        raise RuntimeError(
            f"this WorkerPool belongs to another {where}: use it only from the event loop "
            "that started it"
        )

    # -- submission -------------------------------------------------------------------------------

    def run(
        self,
        task: Callable[[Unpack[Ts]], Awaitable[T]],
        /,
        *args: Unpack[Ts],
        timeout: float | None = None,
        retries: int = 0,
        retryable_exceptions: type[BaseException] | Iterable[type[BaseException]] = (
            _DEFAULT_RETRYABLE
        ),
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
        :param retryable_exceptions: the exception class(es) that may be retried (default:
            :exc:`Exception`); cancellation is never retried
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
            sched.queued + self._space_reserved >= self._max_pending or self._space_waiters
        ):
            raise PoolFullError(
                f"this WorkerPool already has max_pending={self._max_pending} jobs waiting to "
                "start: use 'await pool.submit(...)' to wait for room instead"
            )
        return self._enqueue(sched, task, args, options, None)  # type: ignore[no-any-return]

    def _accepting(self) -> Scheduler:
        """Return the scheduler if this caller may submit now, or raise why not."""
        sched = self._sched
        if self._state != _OPEN:
            return self._admission_check()
        loop = self._loop
        if loop is None or asyncio._get_running_loop() is not loop:
            self._check_loop()  # on trio, or from the wrong loop or thread
        assert sched is not None
        return sched

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
        job: Job = AsyncioFuture(loop=loop) if loop is not None else Future()
        job.fn = fn
        job.args = args
        job.options = options
        job.owner = owner
        job.ready_at = anyio.current_time() if sched.timed else 0.0
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
        retryable_exceptions: type[BaseException] | Iterable[type[BaseException]] = (
            _DEFAULT_RETRYABLE
        ),
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
        retryable_exceptions: type[BaseException] | Iterable[type[BaseException]] = (
            _DEFAULT_RETRYABLE
        ),
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
        job = sched.submit(func, args, options, anyio.current_time() if sched.timed else 0.0, owner)
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
        retryable_exceptions: type[BaseException] | Iterable[type[BaseException]] = (
            _DEFAULT_RETRYABLE
        ),
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

    def map(
        self,
        func: Callable[[Any], Awaitable[T]],
        iterable: Iterable[Any] | AsyncIterable[Any],
        /,
        *,
        ordered: bool = True,
        return_exceptions: bool = False,
        timeout: float | None = None,
        retries: int = 0,
        retryable_exceptions: type[BaseException] | Iterable[type[BaseException]] = (
            _DEFAULT_RETRYABLE
        ),
        backoff: Callable[[int], float] = default_backoff,
    ) -> MapIterator[T]:
        """
        Run ``func(item)`` for each item under the pool's limits; iterate over the results.

        *iterable* may be a list, a generator or an async iterable; it is read lazily, so at most
        ``2 * size`` items (256 without a size) are in flight, however long or endless the input.
        With ``ordered=True`` results come in input order, otherwise in completion order. A
        failed item raises its error from the iteration, after cancelling the map's other jobs;
        with ``return_exceptions=True`` it yields the exception instead and the map goes on.
        Leaving the loop early by an error or a cancellation cancels the map's jobs; after a
        ``break``, close it with ``async with pool.map(...) as results:`` or ``aclose()``, or it
        is closed when the pool exits: a map still open then has its jobs cancelled and raises
        :exc:`werkpool.PoolClosedError` if iterated again.

        .. versionadded:: 0.3
        """
        check_task(func)
        options = _options(timeout, retries, retryable_exceptions, backoff)
        self._accepting()
        window = 2 * self._size if self._size is not None else 256
        results: MapIterator[T] = MapIterator(
            self, func, iterable, options, ordered, return_exceptions, window
        )
        self._maps.add(results)
        return results

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

    # -- backpressure -----------------------------------------------------------------------------

    async def _wait_for_room(self) -> None:
        """Wait, first come first served, until fewer than max_pending jobs wait to start."""
        limit = self._max_pending
        sched = self._sched
        if (
            limit is None
            or sched is None
            or (not self._space_waiters and sched.queued + self._space_reserved < limit)
        ):
            # Reserve the room before the checkpoint, so producers that pass here in the same
            # tick cannot overfill the queue between the check and the submission.
            if limit is not None:
                self._space_reserved += 1
            try:
                await checkpoint()
            except BaseException:
                if limit is not None:
                    self._space_reserved -= 1
                    if self._space_waiters:
                        self._give_room()
                raise
            return
        event = anyio.Event()
        self._space_waiters.append(event)
        try:
            await event.wait()
        except BaseException:
            if event.is_set():
                self._space_reserved -= 1  # we were given room: hand it on
                self._give_room()
            else:
                self._space_waiters.remove(event)
            raise

    def _accepting_after_wait(self) -> Scheduler:
        """Claim the room reserved by _wait_for_room() and check the pool still accepts."""
        if self._max_pending is not None:
            self._space_reserved -= 1
        try:
            return self._accepting()
        except BaseException:
            if self._space_waiters:
                self._give_room()  # our room goes unused: the next waiter must learn why
            raise

    def _give_room(self) -> None:
        """Wake waiters of submit()/call() while there is room for them."""
        sched = self._sched
        limit = self._max_pending
        assert sched is not None
        assert limit is not None
        waiters = self._space_waiters
        while waiters and (sched.queued + self._space_reserved < limit or self._state != _OPEN):
            self._space_reserved += 1
            waiters.popleft().set()

    def _job_failed(self, error: BaseException) -> None:
        """A start_soon() job failed: cancel everything and let the supervisor raise the error."""
        self._errors.append(error)
        if self._state < _KILLED:
            # Running jobs are cancelled through their scopes, their futures left pending: one
            # that fails at the same moment fails its future and is reported with this error
            # (several failures are raised together); one that returns ends cancelled.
            self._abort(cancel_running_futures=False)

    def _admission_check(self) -> Scheduler:
        """The slow path of :meth:`run` when the pool is not simply open."""
        state = self._state
        if state == _NEW:
            sched = self._bind()
            self._start_host()
            return sched
        if self._sched is not None:
            self._check_loop()
        if state == _CLOSING and self._in_worker():
            assert self._sched is not None
            return self._sched  # a job of this pool may still submit follow-up work while draining
        reason = {
            _CLOSING: "shutdown() has begun",
            _KILLED: "kill() has begun or the pool failed",
            _CLOSED: "the pool has exited",
        }[state]
        raise PoolClosedError(f"this WorkerPool no longer accepts jobs: {reason}")

    def _in_worker(self) -> bool:
        """True in this pool's job code, including tasks that a job started."""
        return _running_in.get() is self

    # -- waking and spawning workers --------------------------------------------------------------

    def _kick(self, job: Job | None) -> None:
        """Make sure some worker looks at the queue soon (nobody is about to: ``_waking == 0``)."""
        sleeper = self._sleeper
        if sleeper is not None:
            # A worker already waits for the clock on behalf of the head job; only a job that is
            # now the head (or a None: "something changed") can need an earlier wake-up.
            assert self._sched is not None
            if job is None or self._sched.is_head(job):
                self._wake(sleeper)
            return
        if self._parked:
            self._wake(next(iter(self._parked)))
        else:
            self._spawn()

    def _wake(self, worker: _Worker) -> None:
        if worker is self._sleeper:
            self._sleeper = None
        else:
            del self._parked[worker]
        self._waking += 1
        assert worker.event is not None
        worker.event.set()

    def _wake_all(self) -> None:
        for worker in list(self._parked):
            self._wake(worker)
        if self._sleeper is not None:
            self._wake(self._sleeper)

    def _spawn(self) -> None:
        sched = self._sched
        tg = self._tg
        if tg is None or sched is None or sched.workers >= sched.max_workers:
            return
        sched.workers += 1
        self._waking += 1
        tg.start_soon(self._worker_main, name="werkpool worker")

    # -- workers ----------------------------------------------------------------------------------

    async def _worker_main(self) -> None:
        sched = self._sched
        assert sched is not None
        worker = _Worker()
        self._workers.add(worker)
        # Marks this task, and the tasks its jobs start, as running this pool's job code.
        _running_in.set(self)
        self._waking -= 1
        try:
            while True:
                with anyio.CancelScope() as scope:
                    worker.scope = scope
                    if await self._work(worker, scope, sched):
                        return
                # The scope was cancelled to stop one job (its future was cancelled, or its attempt
                # timed out); that job is accounted for, so carry on in a fresh scope.
        except BaseException as exc:
            if not isinstance(exc, self._cancelled_exc):
                self._crashed(exc)
            raise
        finally:
            sched.workers -= 1
            self._workers.discard(worker)
            if worker.token:
                self._return_token(worker)

    def _return_token(self, worker: _Worker) -> None:
        """The worker runs no attempt any more: give its token back before it waits."""
        assert self._limiter is not None
        worker.token = False
        self._limiter.release_on_behalf_of(worker)

    async def _work(self, worker: _Worker, scope: anyio.CancelScope, sched: Scheduler) -> bool:
        """Run jobs until the worker should exit (True) or its scope was cancelled (False).

        This loop runs once per job, so the common case is written out in it: taking the head of
        the line (without :meth:`Scheduler.poll` when no clock-based limit or retry is in play)
        and running the attempt (no coroutine of its own per job).
        """
        streak = 0
        queue = sched._queue
        limiter = self._limiter
        simple = sched.simple
        # Size-only pools: the worker borrows the limiter's token, and keeps it between attempts
        # that follow each other with no wait in between (so borrowed == running at every
        # checkpoint, for one acquire per busy spell instead of one per job).
        worker_token = simple and limiter is not None
        worker.stopping = False
        while True:
            job = None
            if simple and not sched.delayed and not sched._retry_ready:
                # The fast path: pop the head in line, skipping cancelled records, and take a
                # token without a checkpoint. The same state changes as Scheduler.poll().
                while queue:
                    candidate = queue.popleft()
                    if candidate.state == QUEUED:
                        job = candidate
                        break
                if job is not None:
                    job.state = RUNNING
                    job.attempts = 1
                    sched.queued -= 1
                    sched.running += 1
                    sched.attempts += 1
                    if queue and not self._waking:
                        self._kick(None)  # more may start: someone must look while we run
            if job is None:
                # Read the clock only when some limit or backoff depends on it.
                admitted = sched.poll(anyio.current_time() if sched.timed or sched.delayed else 0.0)
                if isinstance(admitted, float):
                    if self._state >= _CLOSING and sched.pending == 0:
                        self._set_drained()
                        return True
                    streak = 0
                    if worker.token:
                        self._return_token(worker)
                    await self._park(worker, sched, admitted if self._sleeper is None else _INF)
                    continue
                job = admitted
                # Hand the queue on: if more may start, someone must look at it while we run.
                if not self._waking and self._sleeper is None and sched.has_queued():
                    self._kick(None)
            if worker_token and not worker.token:
                limiter.acquire_on_behalf_of_nowait(worker)  # type: ignore[union-attr]
                worker.token = True
            if self._space_waiters:
                self._give_room()

            # -- one attempt of the job --
            job.worker = worker
            worker.job = job
            timeout = job.options.timeout
            deadline = _INF
            if timeout is not None:
                deadline = anyio.current_time() + timeout
                scope.deadline = deadline
            try:
                awaitable = job.fn(*job.args)
                if awaitable.__class__ is not CoroutineType and not inspect.isawaitable(awaitable):
                    raise _NotAwaitable(awaitable)
                result = await awaitable
            except _NotAwaitable as bad:
                self._not_awaitable(job, bad.value)
            except BaseException as exc:
                if timeout is not None:
                    scope.deadline = _INF
                self._attempt_failed(job, exc, scope, deadline)
                if not isinstance(exc, Exception) and not self._raised_by_the_job(exc, scope):
                    raise  # cancellation (the scope or the pool's), KeyboardInterrupt, SystemExit
            else:
                if timeout is not None:
                    scope.deadline = _INF
                    if anyio.current_time() >= deadline:
                        # It returned at or after its deadline: a timeout, on every backend.
                        self._attempt_failed(job, None, scope, deadline)
                    else:
                        self._returned(job, result)
                else:
                    self._returned(job, result)
            if (worker.stopping or timeout is not None) and scope.cancel_called:
                return False
            streak += 1
            if streak == _FAIRNESS_BATCH:
                streak = 0
                if worker.token:
                    self._return_token(worker)
                await checkpoint()

    async def _park(self, worker: _Worker, sched: Scheduler, wake_at: float) -> None:
        event = worker.event = anyio.Event()
        if wake_at == _INF:
            self._parked[worker] = None
        else:
            self._sleeper = worker
            self._sleeper_deadline = wake_at
        sched.idle += 1
        try:
            if wake_at == _INF:
                await event.wait()
            else:
                with anyio.CancelScope(deadline=wake_at):
                    await event.wait()
        finally:
            sched.idle -= 1
            if event.is_set():
                self._waking -= 1
            elif worker is self._sleeper:
                self._sleeper = None
            else:
                self._parked.pop(worker, None)

    def _returned(self, job: Job, result: object) -> None:
        """Settle an attempt that returned in time: the job is done, unless cancelled meanwhile."""
        sched = self._sched
        assert sched is not None
        # Scheduler.end_attempt() and completed_job(), then _settled(), written out: once per job.
        if sched.simple:
            sched.running -= 1  # no limit to release (a worker's token stays with it)
            job.worker = None
        else:
            sched.end_attempt(job)
        if type(job) is PlainJob:  # a map's or a call's: its outcome is two fields, set here
            if job.outcome or self._state == _KILLED:
                sched.cancelled_job(job)  # cancelled while it ran, yet it returned
                job.outcome = CANCELLED
            else:
                job.state = DONE
                sched.completed += 1
                job.outcome = RETURNED
                job.value = result
        else:
            job._pool = None  # settled: cancelling its future no longer concerns the pool
            if job.done() or self._state == _KILLED:
                # Cancelled while running (or the pool is being torn down), yet the job returned:
                # the future ends cancelled, never with a value it was not meant to get.
                sched.cancelled_job(job)
                job.cancel()
            else:
                job.state = DONE
                sched.completed += 1
                job.set_result(result)
            job.fn = spent  # the future the caller keeps holds neither callable nor arguments
            job.args = ()
        owner = job.owner
        # A start_soon() job's owner only cares about failures: skip the call on success.
        if owner is not None and owner is not self._start_soon_owner:
            job.owner = None
            owner.job_settled(job)
        if self._state >= _CLOSING and not (sched.queued or sched.running or sched.backoff):
            self._set_drained()  # the last job of a drain

    def _raised_by_the_job(self, exc: BaseException, scope: anyio.CancelScope) -> bool:
        """True for a CancelledError the job raised itself, with nobody cancelling this worker.

        On asyncio a job can end with CancelledError because it awaited something that was
        cancelled. That ends the job (its future is cancelled) but must not end the worker: no
        scope around it is cancelled and its task has no pending cancel request.
        """
        if self._backend != "asyncio" or not isinstance(exc, self._cancelled_exc):
            return False
        if scope.cancel_called or anyio.current_effective_deadline() == -_INF:
            return False
        if sys.version_info >= (3, 11):
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                return False
        return True

    def _not_awaitable(self, job: Job, value: object) -> None:
        error = TypeError(
            f"the job's callable {job.fn!r} returned {type(value).__name__}, not an awaitable: "
            "pass an async function (or a callable returning an awaitable)"
        )
        sched = self._sched
        assert sched is not None
        sched.end_attempt(job)
        self._fail(job, error)

    def _attempt_failed(
        self, job: Job, exc: BaseException | None, scope: anyio.CancelScope, deadline: float
    ) -> None:
        """Settle an attempt that raised *exc* (None: it returned after its deadline)."""
        sched = self._sched
        assert sched is not None
        sched.end_attempt(job)
        if job.done():  # its future was cancelled while it ran
            sched.cancelled_job(job)
            self._settled(job)
            return
        timed_out = deadline != _INF and (
            exc is None or (scope.cancel_called and anyio.current_time() >= deadline)
        )
        if timed_out:
            error: BaseException = TimeoutError(
                f"the attempt timed out after {job.options.timeout:g} s"
            )
            if exc is not None and not isinstance(exc, self._cancelled_exc):
                error.__context__ = exc
        elif exc is None:  # pragma: no cover - timed_out is always true without an exception
            raise AssertionError("unreachable")
        elif isinstance(exc, self._cancelled_exc):
            self._cancel_job(job)
            return
        elif not isinstance(exc, Exception):
            self._fail(job, exc)  # KeyboardInterrupt, SystemExit...: resolve, then re-raised
            return
        else:
            error = exc
        options = job.options
        if (
            job.attempts <= options.retries
            and isinstance(error, options.retryable)
            and self._state < _KILLED
        ):
            try:
                delay = next_delay(options, job.attempts)
            except Exception as bad:
                bad.__cause__ = error
                self._fail(job, bad)
                return
            due = anyio.current_time() + delay
            sched.retry_at(job, due)
            if self._sleeper is not None and due < self._sleeper_deadline:
                self._wake(self._sleeper)
            return
        self._fail(job, error)

    def _fail(self, job: Job, error: BaseException) -> None:
        sched = self._sched
        assert sched is not None
        sched.failed_job(job)
        job.set_exception(error)
        self._settled(job)

    def _cancel_job(self, job: Job) -> None:
        sched = self._sched
        assert sched is not None
        sched.cancelled_job(job)  # first: the future's cancel hook then sees a finished job
        job.cancel()
        self._settled(job)

    def _settled(self, job: Job) -> None:
        """Forget a finished job: break the job/future cycle and check for the end of a drain."""
        job._pool = None
        job.fn = spent  # a future the caller keeps does not keep the job's callable and arguments
        job.args = ()
        owner = job.owner
        if owner is not None:
            job.owner = None
            owner.job_settled(job)
        if self._state >= _CLOSING:
            sched = self._sched
            assert sched is not None
            if sched.pending == 0:
                self._set_drained()

    def _future_cancelled(self, job: Job) -> None:
        """Called synchronously by a job's future when someone cancels it."""
        sched = self._sched
        assert sched is not None
        if job.state == RUNNING:
            worker = job.worker
            if worker is not None and worker.scope is not None:
                worker.stopping = True
                worker.scope.cancel()  # the worker settles the job when the cancellation lands
        elif job.state in (QUEUED, BACKOFF):
            sched.cancelled_job(job)
            self._settled(job)
            if self._space_waiters:
                self._give_room()

    def _cancel_owned(self, job: PlainJob) -> None:
        """Cancel a job that has no future (a map's, a call's), as cancelling a future would."""
        if job.state != DONE and job.cancel():
            self._future_cancelled(job)

    def _set_drained(self) -> None:
        assert self._drained is not None
        if not self._drained.is_set():
            self._drained.set()
            self._wake_all()

    def _crashed(self, exc: BaseException) -> None:
        """A worker failed outside any job: resolve every waiting job, then let the error rise."""
        if self._state >= _KILLED:
            return
        self._state = _KILLED
        sched = self._sched
        assert sched is not None
        assert self._drained is not None
        self._drained.set()
        for job in sched.drop_all():
            if isinstance(exc, Exception):
                self._fail(job, exc)
            else:
                self._cancel_job(job)

    # -- lifecycle --------------------------------------------------------------------------------

    async def _supervise(self, *, task_status: TaskStatus[None]) -> None:
        assert self._stopped is not None
        assert self._drained is not None
        try:
            with anyio.CancelScope() as self._kill_scope:
                async with anyio.create_task_group() as tg:
                    self._tg = tg
                    task_status.started()
                    assert self._started is not None
                    self._started.set()
                    sched = self._sched
                    assert sched is not None
                    if sched.has_queued() and not self._waking:
                        self._kick(None)  # jobs submitted before the pool started
                    await self._drained.wait()
                    self._tg = None
        except BaseException as exc:
            if not isinstance(exc, self._cancelled_exc):
                self._crashed(exc)
            raise
        finally:
            self._tg = None
            self._stopped.set()
        # Failed start_soon() jobs fail the pool, as failed tasks fail a task group.
        errors = self._errors
        if len(errors) == 1:
            raise errors[0]
        if errors:
            raise BaseExceptionGroup("several jobs started with start_soon() failed", errors)

    def _abort(self, *, cancel_running_futures: bool = True) -> None:
        """Cancel everything, synchronously: the first half of kill()."""
        if self._state == _NEW:
            self._state = _CLOSED
            return
        if self._state < _KILLED:
            self._state = _KILLED
        sched = self._sched
        assert sched is not None
        self._close_maps()
        for job in sched.drop_all():
            self._cancel_job(job)
        for worker in self._workers if cancel_running_futures else ():
            running = worker.job
            if running is not None and running.state == RUNNING:
                # Cancelled now, not when the job stops: a job that swallows its cancellation
                # and returns cannot resolve its future any more.
                if isinstance(running, PlainJob):
                    self._cancel_owned(running)
                else:
                    running.cancel()
        if self._kill_scope is not None:
            self._kill_scope.cancel()
        assert self._drained is not None
        self._drained.set()
        self._wake_all()
        if self._space_waiters:
            self._give_room()  # they wake to find the pool closed

    def _begin_closing(self) -> None:
        if self._state == _OPEN:
            self._state = _CLOSING
            if self._space_waiters:
                self._give_room()  # they wake to find the pool closed

    def _close_maps(self) -> None:
        """Close the maps still open: their jobs are cancelled, their input is no longer read."""
        for results in list(self._maps):
            results._close_by_pool()

    async def __aenter__(self) -> Self:
        if self._state != _NEW:
            raise RuntimeError(
                "this WorkerPool is already running or has exited; create a new one "
                "(a pool used without 'async with' runs from its first run())"
            )
        self._bind()
        await self._start()
        return self

    async def _start(self) -> None:
        tg = anyio.create_task_group()
        await tg.__aenter__()
        try:
            await tg.start(self._supervise)
        except BaseException:
            self._abort()
            await tg.__aexit__(*sys.exc_info())
            raise
        self._outer_tg = tg

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        await self._finish(exc)
        return False

    async def _finish(self, exc: BaseException | None) -> None:
        """Leave the pool's task group: drain after a normal exit, cancel everything otherwise."""
        tg = self._outer_tg
        assert tg is not None
        assert self._drained is not None
        if exc is None:
            self._close_maps()  # nobody iterates them any more: do not wait for their jobs
            self._begin_closing()
            sched = self._sched
            assert sched is not None
            if sched.pending == 0:
                self._set_drained()
            try:
                await self._drained.wait()
            except BaseException as waiting_error:
                self._abort()
                await self._exit_task_group(tg, waiting_error)
                raise
        else:
            self._abort()
        await self._exit_task_group(tg, exc)
        self._state = _CLOSED

    async def _exit_task_group(self, tg: TaskGroup, body_error: BaseException | None) -> None:
        """Exit the outer task group; raise the pool's own failure, if any, as it was raised.

        *body_error* is what the ``async with`` body raised (None if nothing): a genuine error
        of the body and a failure of the pool are raised together, in an ExceptionGroup.
        """
        self._outer_tg = None
        try:
            await tg.__aexit__(None, None, None)
        except BaseExceptionGroup as group:
            self._state = _CLOSED
            # The pool's own two task groups nest a lone error twice: unwrap it.
            error: BaseException = group
            while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
                error = error.exceptions[0]
            cancelled = self._cancelled_exc
            only_cancelled = isinstance(error, cancelled) or (
                isinstance(error, BaseExceptionGroup)
                and error.split(cancelled)[1] is None  # nothing but cancellations
            )
            if only_cancelled:
                # An enclosing scope was cancelled and reached the pool's tasks too: that is not
                # a failure of the pool. Raise the body's own exception if it has one (the
                # cancellation is delivered again at the next checkpoint), else the cancellation.
                _reraise_unchanged(body_error if body_error is not None else error)
            if body_error is not None and not isinstance(body_error, cancelled):
                raise BaseExceptionGroup(
                    "the body of 'async with WorkerPool' and the pool both failed",
                    [body_error, error],
                ) from None
            _reraise_unchanged(error)

    def _start_host(self) -> None:
        """Run the pool in a background task, for use without ``async with``."""
        self._hosted = True
        self._host_stop = anyio.Event()
        self._host_done = anyio.Event()
        if self._backend == "asyncio":
            assert self._loop is not None
            # Keep a reference: the event loop holds only weak references to tasks.
            self._host_task = self._loop.create_task(self._host(), name="werkpool host")
        else:
            import trio

            trio.lowlevel.spawn_system_task(self._host, name="werkpool host")

    async def _host(self) -> None:
        assert self._host_stop is not None
        assert self._host_done is not None
        try:
            await self._start()
            try:
                await self._host_stop.wait()
            except BaseException as exc:
                await self._finish(exc)
                raise
            await self._finish(None)
        except BaseException as exc:  # a system task must not raise; shutdown() re-raises it
            if not isinstance(exc, self._cancelled_exc):
                self._host_error = exc
        finally:
            self._host_done.set()

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
