"""Submission: async functions handed to the pool as jobs, one call per job or a stream.

:class:`SubmissionFace` is the face of :class:`~werkpool.WorkerPool` that takes work:
:meth:`run` (a future at once, or :exc:`~werkpool.PoolFullError` under ``max_pending``),
:meth:`start_soon` (a task group's way: the job's failure fails the pool), :meth:`call` (the
result here), :meth:`submit` (a future once there is room) and :meth:`map` (a bounded stream of
results). Each checks the job's options once, passes the lifecycle's submission gate (which binds
the pool on first use) and queues the job in the scheduler. :meth:`run` and :meth:`start_soon`
are the per-job hot path: their no-options branch does nothing more than it must.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Literal, TypeVar, final, overload

import anyio
from anyio.lowlevel import checkpoint, checkpoint_if_cancelled

from .._core._exceptions import FutureCancelled, PoolFullError
from .._core._job import RAISED, RETURNED
from .._core._options import DEFAULT_OPTIONS, read_item_options, read_options
from .._core._validate import check_key, check_task
from .._runtime._map import MapCore, MapIterator, check_window

if sys.version_info >= (3, 11):
    from typing import TypeVarTuple, Unpack
else:  # pragma: no cover
    from typing_extensions import TypeVarTuple, Unpack

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, Awaitable, Callable, Hashable, Iterable, Mapping

    from .._core._job import Job
    from .._core._options import JobOptions, MapOptions, SubmitOptions
    from .._core._scheduler import Scheduler
    from .._runtime._futures import JobFuture
    from .._runtime._lifecycle import Lifecycle

__all__ = ["SubmissionFace"]

T = TypeVar("T")
U = TypeVar("U")
Ts = TypeVarTuple("Ts")


@final
class _CallOwner:
    """Lets call() wait until its job is over, so a cancelled call returns with the slot free."""

    __slots__ = ("settled",)

    notify_success = True

    def __init__(self) -> None:
        self.settled = anyio.Event()

    def job_settled(self, job: Job) -> None:
        self.settled.set()


def _read_at_once(
    life: Lifecycle, method: str, task: object, options: Mapping[str, Any]
) -> tuple[JobOptions, Hashable, dict[str, float] | None]:
    """:func:`read_options` for :meth:`WorkerPool.run` and :meth:`WorkerPool.start_soon`, which
    cannot wait: the key and the cost are checked now, against the limits in force."""
    checked, key, cost = read_options(method, task, options)
    if key is not None or cost is not None:
        check_key(key)
        cost = life.check_cost(cost)
    return checked, key, cost


class SubmissionFace:
    """The submission methods of a :class:`~werkpool.WorkerPool`, for async functions."""

    __slots__ = ()

    #: The pool's lifecycle: its submission gate, scheduler and ``max_pending`` room
    #: (WorkerPool's slot).
    _life: Lifecycle

    def run(
        self,
        task: Callable[[Unpack[Ts]], Awaitable[T]],
        /,
        *args: Unpack[Ts],
        **options: Unpack[SubmitOptions],
    ) -> JobFuture[T]:
        """
        Schedule ``task(*args)`` under the pool's limits and return its future at once.

        *task* is a callable that returns an awaitable, called once per attempt: ``pool.run(fetch,
        url)`` binds ``url`` now (prefer it to ``lambda: fetch(url)`` in a loop, which binds late).

        The keyword options (all optional) are those of every submission method:

        :param timeout: seconds each attempt may take, counted from its start; an attempt over it
            fails with :exc:`TimeoutError`. ``None`` (the default): no limit. An attempt still
            running at its deadline times out, even if it would have returned then.
        :param retries: how many times to retry after the first attempt fails (up to
            ``retries + 1`` attempts in all; default 0)
        :param retryable_exceptions: the :exc:`Exception` subclass(es) that may be retried
            (default: :exc:`Exception`); cancellation and other ``BaseException`` are never
            retried
        :param backoff: ``backoff(n)`` gives the seconds to wait before retry ``n`` (1, 2, ...);
            it must return a finite number >= 0, or the job fails with that error. The default,
            :func:`werkpool.default_backoff`, is exponential with jitter, capped at 60 s.
        :param key: the job's key (any hashable, such as a host name): the pool's ``per_key=``
            limits apply to each key separately, and a pushback pauses only that key. ``None``
            (the default): the pool's limits only.
        :param cost: what each attempt costs, per unit (``{"tokens": 1200}``), for the limits
            that count a unit; a limit without a unit counts 1 per attempt (``None``, the
            default: no units)
        :param name: the job's label in its events (:attr:`werkpool.JobEvent.name`), log lines,
            spans and the progress bar. ``None`` (the default): a short repr of the first
            argument (at most 40 characters), or the function's ``__qualname__`` if there is
            none; made only by a pool with hooks, so an unnamed job costs nothing without them.
        :return: an :class:`asyncio.Future` on asyncio, a :class:`werkpool.Future` on trio;
            cancelling it cancels the job
        :raises TypeError: if *task* is not callable (a coroutine object is closed first), *key*
            is not hashable, *cost* not a mapping of str to numbers, *name* not a str, or a
            keyword is not one of these options
        :raises ValueError: if *cost* names a unit no limit counts, or could never fit a limit
        :raises werkpool.PoolClosedError: if the pool no longer accepts work
        """
        life = self._life
        if options:
            checked, key, cost = _read_at_once(life, "run", task, options)
        else:
            if not callable(task):  # checked at run time too: untyped callers pass anything
                check_task(task)  # type: ignore[unreachable]
            checked, key, cost = DEFAULT_OPTIONS, None, None
        sched = life.scheduler_for_submit()
        room = life.room
        if room is not None and room.full():
            raise PoolFullError(
                f"this WorkerPool already has max_pending={room.limit} jobs waiting to "
                "start: use 'await pool.submit(...)' to wait for room instead"
            )
        return life.enqueue_future(sched, task, args, checked, None, key, cost)  # type: ignore[no-any-return]

    # -- the structured API -----------------------------------------------------------------------

    def start_soon(
        self,
        func: Callable[[Unpack[Ts]], Awaitable[T]],
        /,
        *args: Unpack[Ts],
        **options: Unpack[SubmitOptions],
    ) -> JobFuture[T]:
        """
        Schedule ``func(*args)`` like a task group's ``start_soon``: its failure fails the pool.

        Returns at once with a handle (the same kind of future as :meth:`run`) that you may keep
        or drop.

        If the job fails after its retries, the pool cancels all its remaining work and the error
        propagates out of ``async with`` (a lone error as it was, several together in an
        :exc:`ExceptionGroup`), as a task group does.

        The options are those of :meth:`run`. ``max_pending`` does not apply (the call cannot
        wait), like :meth:`run` with room.

        .. versionadded:: 0.3
        """
        life = self._life
        if options:
            checked, key, cost = _read_at_once(life, "start_soon", func, options)
        else:
            if not callable(func):  # checked at run time too: untyped callers pass anything
                check_task(func)  # type: ignore[unreachable]
            checked, key, cost = DEFAULT_OPTIONS, None, None
        sched = life.scheduler_for_submit()
        owner = life.start_soon_owner
        return life.enqueue_future(sched, func, args, checked, owner, key, cost)  # type: ignore[no-any-return]

    async def call(
        self,
        func: Callable[[Unpack[Ts]], Awaitable[T]],
        /,
        *args: Unpack[Ts],
        **options: Unpack[SubmitOptions],
    ) -> T:
        """
        Run ``func(*args)`` under the pool's limits and return its result here.

        The job's error is raised to the caller, not to the pool. Cancelling the caller cancels
        the job, and ``call`` returns (re-raising the cancellation) only once the job's code has
        stopped and its slot is free.

        Always a checkpoint. Waits for room if ``max_pending`` jobs are already waiting to start.
        The options are those of :meth:`run`.

        :raises werkpool.FutureCancelled: if the pool cancelled the job (by :meth:`kill`)

        .. versionadded:: 0.3
        """
        sched, checked, key, cost = await self._admit("call", func, options)
        owner = _CallOwner()
        job = sched.submit(func, args, checked, owner, key, cost)
        life = self._life
        life.kick_for(job)
        try:
            await owner.settled.wait()
        except BaseException:
            life.cancel_owned(job)
            with anyio.CancelScope(shield=True):
                await owner.settled.wait()  # no job code runs and the slot is free again
            raise
        if job.outcome == RETURNED:
            return job.value  # type: ignore[no-any-return]
        if job.outcome == RAISED:
            error = job.value
            # The error's traceback will hold this frame: it must not hold the job (which holds
            # the error) nor the error itself, or each failed call() would leave a reference
            # cycle to the cyclic GC (issue #21 item 17).
            del job
            try:
                raise error
            finally:
                del error
        raise FutureCancelled("the job was cancelled")

    async def submit(
        self,
        func: Callable[[Unpack[Ts]], Awaitable[T]],
        /,
        *args: Unpack[Ts],
        **options: Unpack[SubmitOptions],
    ) -> JobFuture[T]:
        """
        Like :meth:`run`, but wait while ``max_pending`` jobs already wait to start.

        For producers that need backpressure: ``await pool.submit(...)`` returns the job's future
        once there is room in the queue (at once without ``max_pending``). Waiters get room in
        the order they asked. Always a checkpoint.

        .. versionadded:: 0.3
        """
        sched, checked, key, cost = await self._admit("submit", func, options)
        return self._life.enqueue_future(sched, func, args, checked, None, key, cost)  # type: ignore[no-any-return]

    async def _admit(
        self, method: str, func: object, options: Mapping[str, Any]
    ) -> tuple[Scheduler, JobOptions, Hashable, dict[str, float] | None]:
        """The prologue of :meth:`call` and :meth:`submit`: check the job, wait for room.

        Returns the scheduler, the checked options, the key and the cost, checked again after
        the wait against the limits then in force (with no await before the job is queued).
        """
        checked, key, cost = read_options(method, func, options)
        check_key(key)
        life = self._life
        checked_cost = life.check_cost(cost)
        await checkpoint_if_cancelled()  # a cancelled caller submits nothing, room or not
        sched = await self._wait_for_room(cost if checked_cost is not None else None)
        if checked_cost is not None:
            checked_cost = life.check_cost(cost, again=True)  # the limits may have changed
        return sched, checked, key, checked_cost

    async def _wait_for_room(self, cost: object = None) -> Scheduler:
        """Wait (FIFO) for room under ``max_pending``, then pass the submission gate.

        A *cost* is checked again after the wait, against the limits then in force (the caller
        checks it once more, with no await in between, when it queues the job).
        """
        life = self._life
        room = life.room
        if room is None:
            await checkpoint()
            return life.scheduler_for_submit()
        await room.wait()
        try:
            sched = life.scheduler_for_submit()
            if cost is not None:
                life.check_cost(cost, again=True)
        except BaseException:
            room.forfeit()  # our room goes unused: the next waiter must learn why
            raise
        room.claim()
        return sched

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
        **options: Unpack[MapOptions[U]],
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
        **options: Unpack[MapOptions[U]],
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
        **options: Unpack[MapOptions[Any]],
    ) -> MapIterator[Any]:
        """
        Run ``func(item)`` for each item under the pool's limits; iterate over the results.

        *iterable* may be a list, a generator or an async iterable. It is read lazily, as the pool
        can start more jobs, never faster than the pool's own limits allow and never slower:

        - with ``size``, at most ``size + window`` items are in flight (queued, running, or
          finished and not yet yielded);
        - with a rate and no size, the rate decides how many start, and at most ``window`` items
          wait to start or to be yielded;
        - with neither limit, at most ``window`` items are in flight.

        So memory stays bounded however long or endless the input, and ``window`` bounds the
        results held for ordered output behind a slow item.

        With ``ordered=True`` results come in input order, otherwise in completion order. A
        failed item raises its error from the iteration, after cancelling the map's other jobs;
        with ``return_exceptions=True`` it yields the exception instead and the map goes on. An
        error that would read as the end of the loop (``StopAsyncIteration``, ``StopIteration``)
        is raised as a :exc:`RuntimeError` whose ``__cause__`` it is, as :pep:`479` does.

        Leaving the loop early by an error or a cancellation cancels the map's jobs; after a
        ``break``, close it with ``async with pool.map(...) as results:`` or ``aclose()``. A map
        dropped without closing is closed when it is freed. One still open when the pool exits
        is closed then: its jobs are cancelled and iterating it again raises
        :exc:`werkpool.PoolClosedError`.

        The options ``timeout``, ``retries``, ``retryable_exceptions`` and ``backoff`` are those
        of :meth:`run`; *key*, *cost* and *name* are given per item:

        :param window: how many of the map's items may wait beyond those the pool runs (see
            above): an int >= 1, or None for the default, the pool's ``size``, or 256 without
            one
        :param key: ``key(item)`` gives each item's key (see :meth:`run`)
        :param cost: ``cost(item)`` gives each item's cost (see :meth:`run`); a key or cost that
            is not valid, or an error of *key* or *cost*, stops the map, which raises the error
            once the items before it are yielded (a ``StopIteration`` as a :exc:`RuntimeError`,
            never as the end of the input)
        :param name: each item's label (see :meth:`run`): a str is a prefix (``"fetch"``
            labels the items ``"fetch[0]"``, ``"fetch[1]"``, ... in input order), a callable
            gives ``name(item)``, a str (its error, or a result that is not a str, stops the map
            as *key*'s does); None: a short repr of each item
        :raises TypeError: if ``window`` is not None or an int, *key* or *cost* is not None or
            a callable, or *name* is not None, a str or a callable
        :raises ValueError: if ``window`` is < 1

        .. versionadded:: 0.3
        """
        checked, _, _ = read_options("map", func, options, per_item=True)
        check_window(window)
        key, cost, name = read_item_options(options)
        life = self._life
        sched = life.scheduler_for_submit()
        core = MapCore(life, sched, func, iterable, checked, ordered, return_exceptions, window)
        if key is not None or cost is not None:
            core.set_key_and_cost(key, cost)
        if name is not None:
            core.set_name(name)
        return MapIterator(core)
