"""WorkerPool: the public face of the pool (its constructor, submission API, ``async with``).

Everything underneath is composed, layer by layer (see the README's "Architecture"): the pool's
:class:`~werkpool._runtime._lifecycle.Lifecycle` owns its phases and its parts, the sans-I/O
:class:`~werkpool._core._scheduler.Scheduler` (every change of a job's state), the
:class:`~werkpool._runtime._crew.Crew` of worker tasks run by a
:class:`~werkpool._runtime._workers.Runner`, and the ``max_pending``
:class:`~werkpool._runtime._room.Room`.
"""

from __future__ import annotations

import functools
import inspect
import math
import sys
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar, cast, final, overload

import anyio
from anyio.lowlevel import checkpoint, checkpoint_if_cancelled

from ._core._exceptions import FutureCancelled, PoolFullError, RetryAfter
from ._core._job import RAISED, RETURNED, RUNNING, Job
from ._core._lanes import KEY_ORDERS, KeyOrder
from ._core._limitset import LimitSet
from ._core._options import (
    DEFAULT_OPTIONS,
    MAP_OPTIONS,
    SUBMIT_OPTIONS,
    JobOptions,
    check_names,
    read_item_options,
    read_options,
)
from ._core._ratelimit_headers import Budget, less_sent, parse_headers
from ._core._scheduler import DEFAULT_MAX_RETRY_AFTER
from ._core._specs import LimitSpec, Shared, check_limits, split_shared
from ._core._statistics import PoolStatistics
from ._core._validate import (
    check_burst,
    check_key,
    check_max_pending,
    check_rate,
    check_seconds,
    check_size,
    check_task,
    show_value,
)
from ._runtime._hooks import check_hook
from ._runtime._lifecycle import NEW, Lifecycle
from ._runtime._map import MapCore, MapIterator, check_window
from ._runtime._room import EmptyQueue, Room
from ._runtime._threads import InThread, ThreadLimiter, check_blocking
from ._runtime._workers import running_in, running_worker

if sys.version_info >= (3, 11):
    from typing import Self, TypeVarTuple, Unpack
else:  # pragma: no cover
    from typing_extensions import Self, TypeVarTuple, Unpack

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, Awaitable, Callable, Hashable, Mapping
    from types import TracebackType

    from ._core._events import Hook
    from ._core._options import MapOptions, SubmitOptions
    from ._core._scheduler import Scheduler
    from ._runtime._futures import JobFuture

__all__ = ["WorkerPool", "settle", "worker_pool"]

T = TypeVar("T")
U = TypeVar("U")
Ts = TypeVarTuple("Ts")

_INF: Final = float("inf")


@final
class _CallOwner:
    """Lets call() wait until its job is over, so a cancelled call returns with the slot free."""

    __slots__ = ("settled",)

    notify_success = True

    def __init__(self) -> None:
        self.settled = anyio.Event()

    def job_settled(self, job: Job) -> None:
        self.settled.set()


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


_Method = TypeVar("_Method", bound="Callable[..., Any]")


def _blocking_twin(
    method: Callable[..., Any], names: frozenset[str]
) -> Callable[[_Method], _Method]:
    """Make the decorated method the twin of *method* for a blocking function.

    The decorated ``def`` gives the twin its signature (for type checkers and the docs) and its
    docstring; its body never runs. The twin wraps ``fn`` to run in a worker thread (see
    :meth:`WorkerPool._in_thread`) and passes it and everything else to *method* unchanged.
    *names*: the keywords *method* takes, so a wrong one is reported under the twin's name.
    """

    def make(declared: _Method) -> _Method:
        twin_name = declared.__name__

        def twin(self: WorkerPool, fn: Any, /, *args: Any, **options: Any) -> Any:
            abandon = options.pop("abandon_on_cancel", False)
            check_names(twin_name, options, names)
            return method(self, self._in_thread(fn, twin_name, abandon), *args, **options)

        if inspect.iscoroutinefunction(declared):  # awaited: checks and all run at the await

            async def async_twin(*args: Any, **options: Any) -> Any:
                return await twin(*args, **options)

            return cast("_Method", functools.wraps(declared)(async_twin))
        return cast("_Method", functools.wraps(declared)(twin))

    return make


@final
class WorkerPool:
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

    # -- public properties ------------------------------------------------------------------------

    @property
    def size(self) -> int | None:
        """The concurrency limit (``None``: unlimited): the smallest of ``size=`` and the
        unit-less :class:`Concurrency` values of ``limits=``.

        Settable on a running pool (from its event loop): a larger size starts waiting jobs at
        once; a smaller one lets the running attempts finish and starts none until fewer than
        the new size run. Setting it replaces the unit-less Concurrency values of the limits.

        .. versionchanged:: 0.3 settable
        """
        return self._life.size

    @size.setter
    def size(self, size: int | None) -> None:
        self._check_loop()
        self._life.control.set_size(check_size(size))

    @property
    def rate(self) -> float | None:
        """The ``rate=`` shorthand in attempt starts per second (``None``: none).

        Settable on a running pool: the new rate continues the old one's schedule, so it never
        hands out banked credit.

        .. versionchanged:: 0.3 settable
        """
        return self._life.rate

    @rate.setter
    def rate(self, rate: float | None) -> None:
        self._check_loop()
        life = self._life
        life.control.set_limits(check_rate(rate), life.limitset.burst, life.limitset.specs)

    @property
    def burst(self) -> int:
        """How many starts the ``rate=`` shorthand lets go back to back."""
        return self._life.limitset.burst

    @property
    def max_retry_after(self) -> float:
        """The longest pause a pushback may cause, in seconds (``max_retry_after=``)."""
        return self._life.max_retry_after

    @property
    def limits(self) -> tuple[LimitSpec | Shared, ...]:
        """The ``limits=`` values (without the ``size``/``rate`` shorthands): the local ones,
        then the shared ones.

        .. versionadded:: 0.3
        """
        return self._life.limitset.specs + self._life.limitset.shared

    @property
    def per_key(self) -> tuple[LimitSpec | Shared, ...]:
        """The ``per_key=`` values: each key has its own instances of them (or, shared, its own
        entry in the store).

        .. versionadded:: 0.3
        """
        return self._life.limitset.per_key + self._life.limitset.shared_per_key

    def set_limits(self, limits: Iterable[LimitSpec | Shared], **shorthands: Any) -> None:
        """
        Replace the pool's ``limits=`` values while it runs; ``rate=`` and ``burst=`` may be given
        too (else the shorthand rate stays as it is).

        Each new rate or window continues the schedule of the old one of the same unit, so no
        banked credit appears; concurrency limits count the attempts running now (running
        attempts above a smaller limit finish first). Per-key limits cannot change, nor can
        shared limits: *limits* must hold the pool's shared limits as they are, if any.

        :raises ValueError: if a job that waits has a cost the new limits could never admit, or
            the shared limits differ from the pool's (nothing is changed then)

        .. versionadded:: 0.3
        """
        self._check_loop()
        life = self._life
        unknown = set(shorthands) - {"rate", "burst"}
        if unknown:
            raise TypeError(f"set_limits() got unexpected keyword arguments: {sorted(unknown)}")
        specs, shared = split_shared(check_limits(limits, "limits"))
        if set(shared) != set(life.limitset.shared):
            raise ValueError(
                "set_limits() cannot change shared limits (they are fixed for the pool's life): "
                f"the pool has {list(life.limitset.shared)!r}, the call gave {list(shared)!r}"
            )
        new_rate = check_rate(shorthands["rate"]) if "rate" in shorthands else life.rate
        new_burst = (
            check_burst(shorthands["burst"]) if "burst" in shorthands else life.limitset.burst
        )
        life.control.set_limits(new_rate, new_burst, specs)

    # -- hooks ------------------------------------------------------------------------------------

    @property
    def hooks(self) -> tuple[Hook, ...]:
        """The pool's hooks, in the order they are called.

        .. versionadded:: 0.3
        """
        return self._life.hooks

    def add_hook(self, hook: Hook) -> None:
        """Call *hook* with a :class:`werkpool.JobEvent` at each transition from now on.

        A hook is called synchronously in the pool's event loop, after the pool's own counters
        changed: keep it quick and non-blocking. An :class:`Exception` it raises is logged once
        (logger ``werkpool``) and never reaches the pool or its jobs; a ``KeyboardInterrupt``,
        ``SystemExit`` or other :class:`BaseException` stops the pool as a job raising it would.
        A pool without hooks does no work for them. Adding a hook that the pool has already
        does nothing.

        .. versionadded:: 0.3
        """
        self._check_loop()
        check_hook(hook, "add_hook()")
        life = self._life
        if hook not in life.hooks:
            life.set_hooks((*life.hooks, hook))

    def remove_hook(self, hook: Hook) -> None:
        """Stop calling *hook*.

        :raises ValueError: if the pool does not have it

        .. versionadded:: 0.3
        """
        self._check_loop()
        life = self._life
        if hook not in life.hooks:
            raise ValueError(f"remove_hook(): {hook!r} is not a hook of this pool")
        life.set_hooks(tuple(h for h in life.hooks if h is not hook and h != hook))

    # -- pauses -----------------------------------------------------------------------------------

    def pause(self) -> None:
        """Start no attempt until :meth:`resume` (running attempts go on).

        .. versionadded:: 0.3
        """
        self._check_loop()
        self._life.control.pause(_INF)

    def pause_for(self, seconds: float, *, key: Hashable = None) -> None:
        """Start no attempt (of *key*, if given) for *seconds*; a longer pause is kept.

        .. versionadded:: 0.3
        """
        self._check_loop()
        delay = check_seconds(seconds)
        check_key(key)
        self._life.control.pause(self._life.now() + delay, key)

    def push_back(self, seconds: float, *, key: Hashable = None, scope: str | None = None) -> None:
        """The provider pushed back, outside any job's error: as when a job raises
        :exc:`werkpool.RetryAfter`, hold what *scope* names for *seconds* and slow its adaptive
        rates down — but no job fails.

        *scope*: ``"key"`` (the default with *key*) pauses *key* only and slows only its
        adaptive limits; ``"pool"`` (the default without) pauses the pool and slows the pool's
        adaptive limits; the ``name=`` of one of the pool's limits (or of *key*'s) holds that
        limit only. For a pushback seen in a result that is still used, such as the last 429
        that :class:`werkpool.httpx.PoolTransport` hands to its caller. A longer pause is kept;
        a delay beyond ``max_retry_after`` is clamped to it.

        :raises TypeError: if *scope* is not None or a str
        :raises ValueError: if *scope* is ``"key"`` without a *key*, or names no limit

        .. versionadded:: 0.3
        .. versionchanged:: 0.3 ``scope``; a key's pushback no longer slows the pool's rates
        """
        self._check_loop()
        delay = check_seconds(seconds)
        check_key(key)
        checked = cast("object", scope)
        if checked is not None and not isinstance(checked, str):
            raise TypeError(
                f"push_back: scope must be None, 'key', 'pool' or a limit's name, "
                f"not {type(checked).__name__}"
            )
        if scope == "key" and key is None:
            raise ValueError("push_back: scope='key' needs key= (the key the provider refused)")
        if scope not in (None, "key", "pool"):
            if self._life.binding is None:
                raise RuntimeError("push_back(scope=<a limit's name>) needs a running pool")
            self._life.sched.check_scope(scope, key)
        self._push_back(delay, key, None, scope)

    def _push_back(
        self,
        delay: float,
        key: Hashable,
        clamped_from: float | None = None,
        scope: str | None = None,
    ) -> None:
        """:meth:`push_back` with *delay* checked. *clamped_from*: the delay the provider asked
        for, if the caller clamped it already (the httpx transport, to its own cap)."""
        life = self._life
        if delay > life.max_retry_after:
            if clamped_from is None:
                clamped_from = delay
            delay = life.max_retry_after
        life.control.push_back(life.now() + delay, key, clamped_from, scope)

    def observe_headers(self, headers: Mapping[str, str], *, key: Hashable = None) -> int:
        """A server's rate-limit headers, from a response a job got: its stated budgets lower
        the pool's limits (or *key*'s, if given) until their reset. Returns how many budgets
        found a limit of theirs.

        Read: OpenAI's ``x-ratelimit-*-{requests,tokens}``, Anthropic's
        ``anthropic-ratelimit-*``, GitHub's ``x-ratelimit-*``, the IETF draft's ``RateLimit``
        and ``RateLimit-Policy`` and the older ``RateLimit-Limit/-Remaining/-Reset``. A budget
        of requests lowers a :class:`Rate` or :class:`Window` that counts attempts (no
        ``unit``), one of tokens those with ``unit="tokens"`` (``input-tokens`` matches
        ``unit="input_tokens"``...); among several of a unit, the one whose ``per`` is nearest
        the budget's window, else whose count is nearest its limit, else the first.

        "Only *R* of *L* more before *T*": at most *R* units start before the reset *T*, plus,
        for OpenAI's and Anthropic's budgets (which refill continuously, to full at *T*), the
        ``(L - R) / (T - now)`` units per second they regain; and a rate's bucket holds at most
        *R* at once. Never looser than the configured limit,
        and never for longer than the reset: the configured rate is not changed. A reset
        further than ``max_retry_after`` away is clamped to it. Other clients that share the
        provider's budget are caught this way.

        Scope: the budgets an API key's headers state are for everything that key sends, so
        they apply to the pool's limits, unless *key* names the job key whose ``per_key=``
        limits they describe (a pool whose keys are the API keys).

        Called from inside a job (with the response its attempt got), the attempts of the pool
        admitted after that one and still running are taken off each budget: the server had not
        counted them when it answered (as :class:`werkpool.httpx.PoolTransport` does it; the
        order comes from a :class:`Rate` without a unit).

        A malformed or hostile header is ignored (never raised); a response without such
        headers costs one scan of its names. Remote (Redis) limits are not lowered.

        :param headers: the response's headers (``httpx.Headers``, or any mapping of str)
        :param key: the key whose limits the budgets describe; None: the pool's
        :raises TypeError: if *headers* is not a mapping or *key* not hashable

        .. versionadded:: 0.3
        """
        self._check_loop()
        check_key(key)
        now = self._life.now()
        report = parse_headers(headers, now, time.time())
        budgets = report.budgets
        worker = running_worker.get()
        job = None if worker is None else worker.job
        if budgets and job is not None and running_in.get() is self._life.runner:
            # Called from a job of this pool with its response: the attempts admitted after it
            # and still running were sent after its request, and the server had not counted
            # them when it answered (as the httpx transport does it).
            later = self._life.control.sent_after(job)
            if later:
                budgets = tuple(less_sent(budget, later) for budget in budgets)
        return self._life.control.observe(budgets, key)

    def _observe(self, budgets: Iterable[Budget], key: Hashable) -> int:
        """:meth:`observe_headers` with the headers read (the httpx transport reads them once
        for its classify and statistics too)."""
        return self._life.control.observe(budgets, key)

    def resume(self) -> None:
        """End every pause: :meth:`pause`, :meth:`pause_for` and pushbacks, of the pool and its
        keys. A pushback's hold ends too: the jobs waiting out its pause are retried at once,
        and the rates it emptied may start again as soon as the starts before it allow (never
        closer than the rate permits: the pushback's own hold is dropped, not the real starts').

        .. versionadded:: 0.3
        """
        self._check_loop()
        self._life.control.resume()

    @property
    def paused(self) -> bool:
        """True while the pool starts nothing (paused, or a pushback's delay runs).

        .. versionadded:: 0.3
        """
        life = self._life
        until = life.control.paused_until()
        return until == _INF or (until != -_INF and until > life.now())

    def _check_loop(self) -> None:
        """Runtime control must come from the pool's event loop (its state is not thread-safe)."""
        binding = self._life.binding
        if binding is not None:
            binding.check()

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

    # -- submission -------------------------------------------------------------------------------

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

    # -- blocking functions, in worker threads -------------------------------------------------

    def _in_thread(
        self, fn: Callable[[Unpack[Ts]], T], method: str, abandon: bool
    ) -> Callable[[Unpack[Ts]], Awaitable[T]]:
        """Wrap blocking *fn* as a job's callable whose attempts run it in a worker thread."""
        check_blocking(fn, method)
        if abandon.__class__ is not bool:
            raise TypeError(
                f"{method}(): abandon_on_cancel must be True or False, not {type(abandon).__name__}"
            )
        life = self._life
        # InThread takes any arguments: typed here as fn's own, which it passes on.
        return cast(
            "Callable[[Unpack[Ts]], Awaitable[T]]",
            InThread(fn, self._threads, lambda: life.size, abandon),
        )

    @_blocking_twin(run, SUBMIT_OPTIONS)
    def run_sync(
        self,
        fn: Callable[[Unpack[Ts]], T],
        /,
        *args: Unpack[Ts],
        abandon_on_cancel: bool = False,
        **options: Unpack[SubmitOptions],
    ) -> JobFuture[T]:
        """
        Like :meth:`run`, for a blocking function: each attempt runs ``fn(*args)`` in a thread.

        The job is counted by the same ``size``, rates and keys as any other, and retried and
        timed out by the same options; its start is dated when the attempt hands *fn* to its
        thread.

        The threads come from the pool's own limiter, as many as ``size`` (unlimited without
        one): anyio's default limit of 40 threads never caps the pool.

        A running thread cannot be interrupted. What a timeout or a cancellation (a cancelled
        future or caller, :meth:`kill`, the exit of ``async with`` with an error) does to it:

        - ``abandon_on_cancel=False`` (the default): the attempt waits for *fn* to return, and
          then ends as timed out (:exc:`TimeoutError`, its result dropped) or cancelled. Until
          then it keeps its slot, so ``size`` counts every thread that runs, and :meth:`kill` or
          the pool's exit waits for it. *fn* can stop early at points of its choosing by calling
          :func:`anyio.from_thread.check_cancelled`, which raises once the attempt is cancelled
          or over its deadline.
        - ``abandon_on_cancel=True``: the attempt ends at once, and *fn* runs on in its thread
          with its result or error dropped (or never runs, if its thread had not begun it yet).
          Its slot is free at once: the pool no longer counts that thread, so more than
          ``size`` threads may run for a while (as a server sees it).

        :param abandon_on_cancel: see above; the other options are those of :meth:`run`
        :raises TypeError: if *fn* is not callable or is an async function (use :meth:`run`)

        .. versionadded:: 0.3
        """
        raise NotImplementedError  # pragma: no cover - replaced by the twin

    @_blocking_twin(start_soon, SUBMIT_OPTIONS)
    def start_soon_sync(
        self,
        fn: Callable[[Unpack[Ts]], T],
        /,
        *args: Unpack[Ts],
        abandon_on_cancel: bool = False,
        **options: Unpack[SubmitOptions],
    ) -> JobFuture[T]:
        """
        Like :meth:`start_soon` (its failure fails the pool), for a blocking function run in a
        thread as :meth:`run_sync` says.

        .. versionadded:: 0.3
        """
        raise NotImplementedError  # pragma: no cover - replaced by the twin

    @_blocking_twin(call, SUBMIT_OPTIONS)
    async def call_sync(
        self,
        fn: Callable[[Unpack[Ts]], T],
        /,
        *args: Unpack[Ts],
        abandon_on_cancel: bool = False,
        **options: Unpack[SubmitOptions],
    ) -> T:
        """
        Like :meth:`call` (the result, or the error, here), for a blocking function run in a
        thread as :meth:`run_sync` says.

        Cancelling the caller cancels the job; with ``abandon_on_cancel=False`` the call then
        returns only once *fn* has returned in its thread.

        .. versionadded:: 0.3
        """
        raise NotImplementedError  # pragma: no cover - replaced by the twin

    @_blocking_twin(submit, SUBMIT_OPTIONS)
    async def submit_sync(
        self,
        fn: Callable[[Unpack[Ts]], T],
        /,
        *args: Unpack[Ts],
        abandon_on_cancel: bool = False,
        **options: Unpack[SubmitOptions],
    ) -> JobFuture[T]:
        """
        Like :meth:`submit` (waits for room under ``max_pending``), for a blocking function run
        in a thread as :meth:`run_sync` says.

        .. versionadded:: 0.3
        """
        raise NotImplementedError  # pragma: no cover - replaced by the twin

    @overload
    def map_sync(
        self,
        fn: Callable[[U], T],
        iterable: Iterable[U] | AsyncIterable[U],
        /,
        *,
        ordered: bool = ...,
        return_exceptions: Literal[False] = ...,
        window: int | None = ...,
        abandon_on_cancel: bool = ...,
        **options: Unpack[MapOptions[U]],
    ) -> MapIterator[T]: ...

    @overload
    def map_sync(
        self,
        fn: Callable[[U], T],
        iterable: Iterable[U] | AsyncIterable[U],
        /,
        *,
        ordered: bool = ...,
        return_exceptions: bool,
        window: int | None = ...,
        abandon_on_cancel: bool = ...,
        **options: Unpack[MapOptions[U]],
    ) -> MapIterator[T | BaseException]: ...

    @_blocking_twin(map, MAP_OPTIONS | {"ordered", "return_exceptions", "window"})
    def map_sync(
        self,
        fn: Callable[[Any], Any],
        iterable: Iterable[Any] | AsyncIterable[Any],
        /,
        *,
        ordered: bool = True,
        return_exceptions: bool = False,
        window: int | None = None,
        abandon_on_cancel: bool = False,
        **options: Unpack[MapOptions[Any]],
    ) -> MapIterator[Any]:
        """
        Like :meth:`map`, for a blocking function: each ``fn(item)`` runs in a thread, as
        :meth:`run_sync` says. Iterate over the results with ``async for``.

        .. versionadded:: 0.3
        """
        raise NotImplementedError  # pragma: no cover - replaced by the twin

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


def settle(*, cost: Mapping[str, float]) -> None:
    """
    Report, from inside a job, what its running attempt really cost.

    A job states its cost when submitted (``cost={"tokens": 2000}``), before it knows it; once
    the provider said what it charged (a usage field, say), ``werkpool.settle(cost={"tokens":
    812})`` corrects it. Each limit that counts a unit named here charges or takes back the
    difference with what it counted, at once: a :class:`Rate` adds the units to its bucket, or
    takes back those that have not drained yet (never letting a start come closer than the rate
    permits for what was really spent); a :class:`Window` counts the start's new cost while it
    is in the window; a ``Concurrency(unit=...)`` holds the new amount until the attempt ends.
    Units not named keep their announced cost. A second call replaces the first. A later retry
    is charged its announced cost again.

    An attempt that raises :exc:`RetryAfter` needs no settlement: its cost is given back.

    Call it from the job's own code (its task), while the attempt runs.

    :param cost: units to their actual amounts (finite numbers >= 0), each a unit some limit of
        the pool (or of its ``per_key=``) counts
    :raises RuntimeError: if called outside a job's running attempt
    :raises TypeError: if *cost* is not a mapping of str to numbers
    :raises ValueError: if an amount is negative or not finite, or names a unit no limit counts

    .. versionadded:: 0.3
    """
    runner = running_in.get()
    worker = running_worker.get()
    job = None if worker is None else worker.job
    if runner is None or job is None or job.state != RUNNING:
        raise RuntimeError("werkpool.settle() must be called from inside a running job")
    if threading.get_ident() != runner.thread:
        # The limits live on the pool's event loop; a worker thread the job started (its
        # context copied) must not change them from elsewhere.
        raise RuntimeError(
            "werkpool.settle() must be called from the job's own code on the pool's event loop, "
            "not from a thread the job started"
        )
    sched = runner.sched
    lane = job.lane
    specs = tuple(getattr(limit, "spec", None) for limit in sched.limits)
    if lane is not None:
        specs += tuple(getattr(limit, "spec", None) for limit in lane.limits)
    units = {unit for unit in (getattr(spec, "unit", None) for spec in specs) if unit is not None}
    if not hasattr(cost, "items"):
        raise TypeError(
            f"settle: cost must be a mapping of unit names to numbers, not {type(cost).__name__}"
        )
    checked: dict[str, float] = {}
    for unit, amount in list(cast("Mapping[object, object]", cost).items()):
        if not isinstance(unit, str):
            raise TypeError(f"settle: cost's units must be str, not {type(unit).__name__}")
        if isinstance(amount, bool) or not isinstance(amount, (int, float)):
            raise TypeError(
                f"settle: cost[{unit!r}] must be a finite number >= 0, not {type(amount).__name__}"
            )
        try:
            value = float(amount)
        except OverflowError:
            value = _INF
        if not math.isfinite(value) or value < 0:
            raise ValueError(
                f"settle: cost[{unit!r}] must be a finite number >= 0, got {show_value(amount)}"
            )
        if unit not in units:
            raise ValueError(
                f"settle: cost names the unit {unit!r}, which no limit of this job counts "
                f"(units counted: {', '.join(map(repr, sorted(units))) or 'none'})"
            )
        checked[unit] = amount if type(amount) is int else value
    if checked:
        now = runner.binding.clock()  # the pool's clock (precise on uvloop)
        sched.settle(job, checked, now)
        runner.crew.wake_sleeper_before(now)  # a take-back may let the head start now
