"""WorkerPool: the public face of the pool, composed of its faces (:mod:`werkpool._facade`).

This module holds the pool itself: made (its arguments checked), entered and left (``async
with``, :meth:`~WorkerPool.shutdown`, :meth:`~WorkerPool.kill`) and looked at
(:meth:`~WorkerPool.statistics`, ``repr``). Its methods by concept come from the faces it
inherits, each reading the slots declared here: the run-time control of its limits, hooks and
pauses (:class:`~werkpool._facade._control.ControlFace`), the submission of async functions
(:class:`~werkpool._facade._submission.SubmissionFace`) and of blocking ones
(:class:`~werkpool._facade._threads.ThreadFace`).

Everything underneath is composed, layer by layer (see the README's "Architecture"): the pool's
:class:`~werkpool._runtime._lifecycle.Lifecycle` owns its phases and its parts, the sans-I/O
:class:`~werkpool._core._scheduler.Scheduler` (every change of a job's state), the
:class:`~werkpool._runtime._crew.Crew` of worker tasks run by a
:class:`~werkpool._runtime._workers.Runner`, and the ``max_pending``
:class:`~werkpool._runtime._room.Room`.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable
from types import FunctionType
from typing import TYPE_CHECKING, Final, cast, final

import anyio

from ._core._lanes import KEY_ORDERS, KeyOrder
from ._core._limitset import LimitSet
from ._core._scheduler import DEFAULT_MAX_RETRY_AFTER
from ._core._specs import LimitSpec, Shared, check_limits, split_shared
from ._core._statistics import PoolStatistics
from ._core._validate import check_burst, check_max_pending, check_rate, check_size, show_value
from ._facade._control import ControlFace
from ._facade._submission import SubmissionFace
from ._facade._threads import ThreadFace
from ._runtime._hooks import check_hook
from ._runtime._lifecycle import NEW, Lifecycle
from ._runtime._room import EmptyQueue, Room
from ._runtime._threads import ThreadLimiter

if sys.version_info >= (3, 11):
    from typing import Self
else:  # pragma: no cover
    from typing_extensions import Self

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable
    from types import TracebackType

    from ._core._events import Hook
    from ._core._exceptions import RetryAfter

__all__ = ["WorkerPool", "worker_pool"]

_INF: Final = float("inf")


def _check_hooks(hooks: object) -> tuple[Hook, ...]:
    if callable(hooks) or isinstance(hooks, (str, bytes)) or not isinstance(hooks, Iterable):
        raise TypeError(
            "hooks must be an iterable of callables taking a werkpool.JobEvent (hooks=[hook]), "
            f"not {type(hooks).__name__}"
        )
    checked = tuple(cast("Iterable[Hook]", hooks))
    for hook in checked:
        check_hook(hook, "hooks")
    return checked


def _check_retry_after(retry_after: object) -> None:
    if retry_after is not None and not callable(retry_after):
        raise TypeError(
            f"retry_after must be None or a callable taking an exception and returning a "
            f"delay in seconds or None, not {type(retry_after).__name__}"
        )


def _check_key_weight(key_weight: object) -> None:
    if key_weight is not None and not callable(key_weight):
        raise TypeError(
            f"key_weight must be None or a callable taking a key and returning its weight "
            f"(a number > 0), not {type(key_weight).__name__}"
        )


def _check_key_order(key_order: object, key_weight: object) -> KeyOrder:
    if not isinstance(key_order, str):
        raise TypeError(f"key_order must be 'fair' or 'submitted', not {type(key_order).__name__}")
    if key_order not in KEY_ORDERS:
        raise ValueError(f"key_order must be 'fair' or 'submitted', not {key_order!r}")
    if key_order == "submitted" and key_weight is not None:
        raise ValueError(
            "key_weight= weighs the keys' fair share: it needs key_order='fair', not 'submitted'"
        )
    return key_order


def check_max_retry_after(value: object) -> float:
    """Check ``max_retry_after=`` (the pool's or the httpx transport's): a number of seconds
    >= 0, or ``math.inf`` for no cap."""
    rule = "a number of seconds >= 0 (math.inf: no cap)"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"max_retry_after must be {rule}, not {type(value).__name__}")
    try:
        seconds = float(value)
    except OverflowError:  # an int beyond the floats
        raise ValueError(
            f"max_retry_after must be {rule}, got {show_value(value)}; use math.inf for no cap"
        ) from None
    if math.isnan(seconds) or seconds < 0:
        raise ValueError(f"max_retry_after must be {rule}, got {show_value(value)}")
    return seconds + 0.0  # -0.0 reads as 0


@final
class WorkerPool(ControlFace, SubmissionFace, ThreadFace):
    """
    Run many async jobs under a concurrency limit, a rate limit, or both, on asyncio or trio.

    :param size: the most attempts that may execute at once (``None``: no limit)
    :param rate: the most attempt starts per second (``None``: no limit)
    :param burst: how many starts may go back to back after a pause (default 1; at most 2**53)
    :param max_pending: how many jobs may wait to start before :meth:`run` raises
        :exc:`werkpool.PoolFullError` and :meth:`submit` waits (``None``: no bound)
    :param limits: more limits for every attempt, as values (:class:`werkpool.Rate`,
        :class:`werkpool.Window`, :class:`werkpool.Concurrency`); they apply together with
        ``size`` and ``rate`` (a start takes credit in all of them or in none). A limit with a
        ``unit`` counts what each job's ``cost=`` says.
    :param per_key: limits that each key (``key=`` of a job) gets its own instances of; a job
        without a key is not subject to them. A saturated key never delays another key.
    :param key_weight: ``key_weight(key)`` gives a key's weight (a number > 0; asked when the
        pool first needs the key, by its first job or a pause of the key, and again after an
        idle key was dropped; a bad one raises at that call) in the fair share of the pool-wide
        limits: among the keys whose jobs wait, each gets attempt starts in proportion to its
        weight, however many jobs it queued first. ``None`` (the default): every key weighs 1,
        and so do the jobs without a key, as one more key.
    :param key_order: how the keys share the pool-wide limits (those of ``limits=``, ``size``
        and ``rate``). ``"fair"`` (the default): by the fair share of ``key_weight``, so a key
        that queued many jobs first does not hold back the others. ``"submitted"``: the oldest
        waiting job goes first, whatever its key (a retried job keeps its place), which keeps
        every key's own limits busy and finishes a batch soonest when one key holds most of the
        work (see "Fair share or submission order" in the limits guide). Either way a key held
        by its own ``per_key=`` limits or pause never holds up another key.
    :param retry_after: ``retry_after(error)`` maps an attempt's error to a pushback delay in
        seconds (an HTTP 429's ``Retry-After``), or to a :exc:`werkpool.RetryAfter` with its
        ``scope``, or None: as if the job raised :exc:`werkpool.RetryAfter` (the job's key, or
        the pool, or what the scope names, pauses)
    :param hooks: callables that each get a :class:`werkpool.JobEvent` at every transition of a job
        (submitted, started, retrying, finished) or of a pause: for logging, metrics, progress
        (see :meth:`add_hook`)
    :param max_retry_after: the longest pause a pushback may cause, in seconds (default 900,
        15 minutes; ``math.inf``: no cap). A :exc:`werkpool.RetryAfter`, a ``retry_after=``
        delay or a :meth:`push_back` asking for more pauses this long only, and its
        ``"paused"`` event says what was asked (:attr:`werkpool.JobEvent.clamped_from`): a
        ``Retry-After`` of 1e308 s or a date in year 9999 never stops the pool for good.

    **Rate contract.** In any half-open window of length ``W`` seconds, at most
    ``ceil(W * rate) + burst - 1`` attempts start, on the jobs' own clock: each start is dated
    when its job's code begins (:func:`anyio.current_time` as the job reads it), never earlier.
    With the default ``burst=1`` no two starts are closer than ``1/rate``, so ``rate=10`` never
    starts more than 10 in any second, as a server sees it; unused credit never grows beyond
    ``burst``, however long the pool is idle or busy. A worker the event loop wakes late cannot
    make that up, so with ``burst=1`` the long-run rate is a few percent below ``rate``;
    ``burst >= 2`` absorbs such lateness (see "Choosing burst" in the README and the rate
    contract guide).

    Every attempt, retries included, takes a rate slot and a size slot; a job sleeping in its
    backoff holds neither. Jobs of one key waiting for the same limits start in submission
    order; the keys share the pool-wide limits fairly (round robin, see ``key_weight``), so a
    key that queued many jobs first does not hold back the others (or in submission order, see
    ``key_order``).

    Use it as an async context manager (``async with WorkerPool(...) as pool:``, or
    :func:`worker_pool`): leaving the block normally waits for every job, leaving it with an
    exception or a cancellation cancels them all and re-raises that exception as it was. On asyncio
    and trio it may also be used without ``async with``: the first :meth:`run` starts it in a
    background task (a trio system task on trio), and :meth:`shutdown` or :meth:`kill` stops it.

    .. versionadded:: 0.2
    .. versionchanged:: 0.3 on trio too; ``burst``, ``max_pending``, ``limits``, ``per_key``,
       ``retry_after`` and ``hooks``
    """

    # The faces have no slots of their own: each reads these (and declares which it reads).
    __slots__ = ("__weakref__", "_life", "_threads")

    def __init__(
        self,
        size: int | None = None,
        rate: float | None = None,
        *,
        burst: int = 1,
        max_pending: int | None = None,
        limits: Iterable[LimitSpec | Shared] = (),
        per_key: Iterable[LimitSpec | Shared] = (),
        retry_after: Callable[[Exception], float | RetryAfter | None] | None = None,
        hooks: Iterable[Hook] = (),
        max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
        key_weight: Callable[[Hashable], float] | None = None,
        key_order: KeyOrder = "fair",
    ) -> None:
        size = check_size(size)
        rate = check_rate(rate)
        burst = check_burst(burst)
        max_pending = check_max_pending(max_pending)
        specs, shared = split_shared(check_limits(limits, "limits"))
        key_specs, key_shared = split_shared(check_limits(per_key, "per_key"))
        _check_retry_after(retry_after)
        _check_key_weight(key_weight)
        key_order = _check_key_order(key_order, key_weight)
        max_retry_after = check_max_retry_after(max_retry_after)
        room = None if max_pending is None else Room(max_pending, EmptyQueue())
        limitset = LimitSet(size, rate, burst, specs, key_specs, shared, key_shared)
        self._life = Lifecycle(
            limitset,
            room,
            retry_after,
            _check_hooks(hooks),
            max_retry_after,
            key_weight,
            key_order,
        )
        self._threads = ThreadLimiter()

    # -- the pool at a glance ---------------------------------------------------------------------

    def statistics(self) -> PoolStatistics:
        """
        Return a snapshot of the pool's limits and counters.

        .. versionadded:: 0.3
        """
        life = self._life
        sched = life.sched
        room = life.room
        now = life.now() if life.binding is not None else 0.0
        paused_until = life.control.paused_until()
        if paused_until != _INF and paused_until <= now:
            paused_until = -_INF
        return PoolStatistics(
            size=life.size,
            rate=life.rate,
            burst=life.limitset.burst,
            max_pending=None if room is None else room.limit,
            submitted=sched.submitted,
            queued=sched.queued,
            running=sched.running,
            backoff=sched.backoff,
            completed=sched.completed,
            failed=sched.failed,
            cancelled=sched.cancelled,
            attempts=sched.attempts,
            retries=sched.retries,
            borrowed_tokens=0 if life.limitset.size is None else life.control.size_in_use(),
            limits=life.control.limit_statistics(now),
            keys=sched.sweep_keys(now),
            paused_until=None if paused_until == -_INF else paused_until,
        )

    def __repr__(self) -> str:
        life = self._life
        state = ("new", "open", "closing", "killed", "closed")[life.state]
        sched = life.sched
        counts = (
            ""
            if life.binding is None
            else f" queued={sched.queued} running={sched.running} backoff={sched.backoff}"
        )
        return (
            f"<werkpool.WorkerPool {state} size={life.size} rate={life.rate} "
            f"burst={life.limitset.burst}{counts}>"
        )

    # -- async with, shutdown and kill ------------------------------------------------------------

    async def __aenter__(self) -> Self:
        life = self._life
        if life.state != NEW:
            raise RuntimeError(
                "this WorkerPool is already running or has exited; create a new one "
                "(a pool used without 'async with' runs from its first run())"
            )
        life.bind()
        await life.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        try:
            await self._life.finish(exc)
        finally:
            # A failure of the pool raised from here has this frame in its traceback: it must
            # not keep the body's error, which may lead back to it (issue #21 item 17).
            del exc, tb
        return False

    async def shutdown(self) -> None:
        """
        Stop accepting jobs and wait for every accepted job to finish.

        Returns as soon as the last job ends. Jobs of this pool may still submit follow-up jobs
        while it drains. Cancelling the task awaiting ``shutdown()`` stops the waiting, not the
        jobs. Safe to call more than once, and after :meth:`kill`.

        :raises RuntimeError: if awaited from inside one of the pool's own jobs (it would wait for
            itself)
        :raises BaseException: a pool used without ``async with`` that failed (a
            :meth:`start_soon` job raised, say) raises its failure here, as ``async with`` would:
            once, from the first ``shutdown()`` after the failure
        """
        life = self._life
        if life.state == NEW:
            life.abort()  # a pool never used: closed at once
            return
        assert life.binding is not None
        life.binding.check()
        if life.in_worker():
            raise RuntimeError(
                "shutdown() was awaited from inside one of this pool's jobs, "
                "so it would wait for itself"
            )
        life.begin_closing()
        if life.background is not None:
            await life.background.stop()
        else:
            await life.wait_drained()

    async def kill(self) -> None:
        """
        Cancel every job, whether queued, waiting for a rate slot, running or in its backoff.

        Every future ends cancelled. Returns once no job code runs any more. Idempotent, and safe
        to combine with :meth:`shutdown` in any order.
        """
        life = self._life
        if life.binding is not None:
            life.binding.check()
        life.abort()
        if life.in_worker():
            return  # a job killing its own pool: it is being cancelled itself
        with anyio.CancelScope(shield=True):
            if life.background is not None:
                await life.background.stop(reraise=False)
            else:
                await life.wait_stopped()


def _name_the_faces_methods(pool: type) -> None:
    """Give the faces' methods *pool*'s name: ``WorkerPool.map``, not ``SubmissionFace.map``.

    The faces are how the class is written, not what users call: Python names a method's
    ``__qualname__`` in its repr and in the TypeError of a wrong call ("WorkerPool.map() missing
    1 required positional argument"), where a face's name would send the reader to a class
    they never met. Each function belongs to its face alone, so renaming it changes nothing else.
    """
    for face in pool.__mro__[1:-1]:  # the faces, not the pool itself nor object
        for member in vars(face).values():
            functions = [member.fget, member.fset] if isinstance(member, property) else [member]
            for function in functions:
                if isinstance(function, FunctionType):
                    qualname = function.__qualname__
                    if qualname.startswith(f"{face.__name__}."):
                        function.__qualname__ = f"{pool.__name__}.{qualname.partition('.')[2]}"


_name_the_faces_methods(WorkerPool)


def worker_pool(
    size: int | None = None,
    rate: float | None = None,
    *,
    burst: int = 1,
    max_pending: int | None = None,
    limits: Iterable[LimitSpec | Shared] = (),
    per_key: Iterable[LimitSpec | Shared] = (),
    retry_after: Callable[[Exception], float | RetryAfter | None] | None = None,
    hooks: Iterable[Hook] = (),
    max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
    key_weight: Callable[[Hashable], float] | None = None,
    key_order: KeyOrder = "fair",
) -> WorkerPool:
    """
    Return a :class:`WorkerPool` to use as ``async with worker_pool(size=..., rate=...) as pool:``.

    The arguments are those of :class:`WorkerPool`, checked here, so a bad one raises at this
    call.

    .. versionadded:: 0.2
    .. versionchanged:: 0.3 ``burst``, ``max_pending``, ``limits``, ``per_key``, ``retry_after``
       and ``hooks``
    """
    return WorkerPool(
        size,
        rate,
        burst=burst,
        max_pending=max_pending,
        limits=limits,
        per_key=per_key,
        retry_after=retry_after,
        hooks=hooks,
        max_retry_after=max_retry_after,
        key_weight=key_weight,
        key_order=key_order,
    )
