"""MapIterator: the lazily fed, bounded stream of results behind :meth:`WorkerPool.map`.

A map is two objects. :class:`MapIterator` is the one the user holds; :class:`MapCore` is
everything else: the input, the jobs in flight, the feeder task and the events. The pool keeps the
cores of its open maps (to close them when it exits), every job's owner is its map's core, and the
feeder task runs the core, but nothing refers from the core back to the iterator. So a map that
its user drops without closing it (``async for ... : break`` outside ``async with``) is freed by
reference counting at once; a weak reference from the core then asks the event loop to close the
core, which cancels the map's unfinished jobs (R53). The request goes through the loop, not
straight into the pool, because the last reference may go anywhere: inside the pool's own code
(a job's argument or result that held the map), in the cyclic collector, or in another thread.

How far ahead a map reads its input (``window``, see :meth:`WorkerPool.map`) depends on the
pool's limits, so that a map never runs fewer jobs than the pool allows (issue 9, item 11):

* with ``size``, at most ``size + window`` of its items are in flight (queued, running, or finished
  and not yet yielded): the pool runs up to ``size`` of them, the rest wait to start or to be
  yielded;
* with a rate and no size, the rate bounds how many start, and nothing bounds how many run but the
  jobs' own length (as for :meth:`WorkerPool.run`). The map submits items as the rate admits them:
  at most ``window`` of its items wait, to start or to be yielded. Nothing tells the map when the
  pool starts one of its jobs, so it works out from the rate when its queued items will have
  started, and looks again then (a timer per half window of starts, not one per job);
* with neither, nothing but the window bounds the jobs that run, so the window bounds all of the
  map's items in flight (otherwise an endless input would be read without end).
"""

# R53 here is a reliability requirement: docs/reliability.md lists them.

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
import weakref
from collections import deque
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Iterable,
    Iterator,
)
from typing import TYPE_CHECKING, Any, Final, Generic, Protocol, TypeVar, cast, final

import anyio

from .._core._exceptions import PoolClosedError
from .._core._job import CANCELLED, QUEUED, RETURNED, PlainJob, protocol_safe
from .._core._options import JobOptions
from .._core._validate import check_key

if TYPE_CHECKING:
    from collections.abc import Hashable
    from types import TracebackType

    from anyio.abc import TaskGroup
    from typing_extensions import Self

    from .._core._job import Job
    from .._core._scheduler import Scheduler

__all__ = ["DEFAULT_WINDOW", "MapCore", "MapHost", "MapIterator", "check_window"]

T = TypeVar("T")

#: The window of a map on a pool without ``size`` (with one, the window is ``size``).
DEFAULT_WINDOW: Final = 256

_INF = math.inf


def check_window(window: object) -> None:
    """Check the ``window`` argument of :meth:`WorkerPool.map`."""
    if window is None:
        return
    if not isinstance(window, int) or isinstance(window, bool):
        raise TypeError(f"window must be None or an int >= 1, not {type(window).__name__}")
    if window < 1:
        raise ValueError(f"window must be None or an int >= 1, got {window!r}")


class MapHost(Protocol):
    """What a map needs of its pool (the pool's lifecycle implements it)."""

    #: The pool's limits, which decide how far ahead the map reads its input.
    @property
    def size(self) -> int | None: ...
    @property
    def rate(self) -> float | None: ...

    #: The open maps, closed by the pool when it stops.
    maps: set[Any]

    def scheduler_for_submit(self) -> Scheduler:
        """The scheduler to queue jobs in, or raise why the pool accepts none."""
        ...

    def kick_for(self, job: Job | None) -> None:
        """Jobs were queued: make sure a worker looks."""
        ...

    def cancel_owned(self, job: PlainJob) -> None:
        """Cancel one of the map's jobs."""
        ...

    async def task_group(self) -> TaskGroup:
        """The task group to start the feeder of an async input in."""
        ...

    def call_soon_threadsafe(self, fn: Callable[[], object]) -> None:
        """Run ``fn()`` soon on the pool's event loop, from any thread (RuntimeError once the
        loop is over)."""
        ...

    def check_cost(self, cost: object) -> dict[str, float] | None:
        """Check an item's cost against the pool's limits (raise if it can never fit)."""
        ...


@final
class MapCore:
    """The state of one map, owned by the pool and the map's jobs; see the module docstring."""

    __slots__ = (
        "__weakref__",
        "all_settled",
        "async_source",
        "call_soon",
        "cap",
        "changed",
        "closed",
        "closed_by_pool",
        "completed",
        "cost_fn",
        "exhausted",
        "feeder_scope",
        "feeder_started",
        "fifo",
        "func",
        "host",
        "in_flight",
        "key_fn",
        "label",
        "labelled",
        "low",
        "options",
        "ordered",
        "rate",
        "ref",
        "refill_at",
        "return_exceptions",
        "room",
        "sched",
        "source_error",
        "sync_source",
        "unordered",
        "unsettled",
        "waiting",
        "wake_at",
        "window",
    )

    def __init__(
        self,
        host: MapHost,
        sched: Scheduler,
        func: Callable[[Any], Awaitable[Any]],
        iterable: Iterable[Any] | AsyncIterable[Any],
        options: JobOptions,
        ordered: bool,
        return_exceptions: bool,
        window: int | None,
    ) -> None:
        self.host = host
        self.sched = sched
        self.func = func
        self.options = options
        self.ordered = ordered
        self.return_exceptions = return_exceptions
        self.sync_source: Iterator[Any] | None = None
        self.async_source: AsyncIterable[Any] | None = None
        if isinstance(iterable, AsyncIterable):
            self.async_source = iterable
        else:
            self.sync_source = iter(iterable)
        size = host.size
        if window is None:
            window = size if size is not None else DEFAULT_WINDOW
        self.window = window
        batch = max(1, window // 2)
        #: Rate-only pools: the rate that paces the map, and its queued jobs in submission order
        #: (pruned from the left as they start), to count them.
        self.rate: float | None = None
        self.waiting: deque[PlainJob] = deque()
        #: Rate-only pools: the map reads more once at most ``low`` of its items wait to start.
        self.low = window - batch
        #: Rate-only pools: when to look again if the pool starts the map's queued items meanwhile.
        self.wake_at = _INF
        if size is not None:
            # The pool runs up to `size` of them; a sync input is read in batches of up to
            # `size` items (the admission check and the wake-up are paid per batch).
            self.cap = size + window
            self.refill_at = self.cap - min(size, window)
        else:
            self.rate = host.rate
            if self.rate is None:  # no limit at all: the window bounds everything in flight
                self.cap = window
                self.refill_at = window - batch
            else:
                self.cap = sys.maxsize  # _room() decides
                self.refill_at = sys.maxsize  # look at every step: top_up() checks the room
        # Jobs submitted and not yet yielded, in submission order: a deque when results come in
        # that order, a dict (O(1) removal anywhere) when they come as they finish. A map's jobs
        # have no future: each outcome stays on its job record (see Job.outcome).
        self.fifo: deque[PlainJob] = deque()  # ordered
        self.unordered: dict[PlainJob, None] = {}
        self.in_flight: Collection[PlainJob] = self.fifo if ordered else self.unordered
        self.completed: deque[PlainJob] = deque()  # unordered: finished, in completion order
        self.unsettled = 0  # jobs whose code may still run
        self.exhausted = False
        self.source_error: BaseException | None = None
        self.closed = False
        self.closed_by_pool = False
        self.feeder_started = False
        self.feeder_scope = anyio.CancelScope()
        self.changed: anyio.Event | None = None  # the consumer waits for a result
        self.room: anyio.Event | None = None  # the feeder waits for room in the window
        self.all_settled: anyio.Event | None = None
        #: Runs a callback on the pool's event loop, from anywhere (see _abandoned).
        self.call_soon = host.call_soon_threadsafe
        self.ref: weakref.ref[MapIterator[Any]] | None = None
        self.key_fn: Callable[[Any], Hashable] | None = None
        self.cost_fn: Callable[[Any], object] | None = None
        #: ``name=``: a prefix (str) or a function of the item; None: the default labels.
        self.label: str | Callable[[Any], str] | None = None
        #: Items labelled so far: the index in ``"prefix[i]"``.
        self.labelled = 0

    def set_key_and_cost(
        self, key_fn: Callable[[Any], Hashable] | None, cost_fn: Callable[[Any], object] | None
    ) -> None:
        """Give each item a key (``key(item)``) and a cost (``cost(item)``)."""
        self.key_fn = key_fn
        self.cost_fn = cost_fn

    def set_name(self, name: str | Callable[[Any], str]) -> None:
        """Label each item: ``"name[i]"`` (i from 0, in input order) or ``name(item)``."""
        self.label = name

    def _options_for(self, item: Any) -> JobOptions:
        """The options of *item*'s job, with its label (``self.label`` is set).

        :raises Exception: what the label function raised (a StopIteration as a RuntimeError,
            as for a key), or a TypeError if it returned something else than a str
        """
        label = self.label
        index = self.labelled
        self.labelled = index + 1
        if isinstance(label, str):
            name = f"{label}[{index}]"
        else:
            assert label is not None
            try:
                given = cast("object", label(item))  # checked at run time: a user's function
            except (StopIteration, StopAsyncIteration) as exc:
                raise protocol_safe(exc, "this map's name function") from exc
            if not isinstance(given, str):
                raise TypeError(
                    f"name(item) must return a str (the job's label), not {type(given).__name__}"
                )
            name = given
        options = self.options
        return JobOptions(
            options.timeout, options.retries, options.retryable, options.backoff, name
        )

    def _job(self, item: Any) -> tuple[PlainJob, Hashable]:
        """The job for *item*, and its key.

        :raises Exception: what the key or cost function raised, or why the key or cost is not
            valid: the map stops there. A StopIteration or StopAsyncIteration they raise comes
            as a RuntimeError from it (:pep:`479`): read raw, it would end the map's input
            silently, and the items after it would never run.
        """
        options = self.options if self.label is None else self._options_for(item)
        job = PlainJob(self.func, (item,), options, self)
        key = None
        if self.key_fn is not None:
            try:
                key = self.key_fn(item)
            except (StopIteration, StopAsyncIteration) as exc:
                raise protocol_safe(exc, "this map's key function") from exc
            check_key(key)  # a TypeError naming `key`, here rather than in the pool
        if self.cost_fn is not None:
            try:
                cost = self.cost_fn(item)
            except (StopIteration, StopAsyncIteration) as exc:
                raise protocol_safe(exc, "this map's cost function") from exc
            job.cost = self.host.check_cost(cost)
        return job, key

    # -- feeding --------------------------------------------------------------------------------

    def _room(self) -> int:
        """How many more items to submit now (0: wait for ``room``, or until ``wake_at``)."""
        if self.rate is None:
            return self.cap - len(self.in_flight)
        # Rate-only pool: the map's running jobs are the rate's business; the window bounds the
        # ones waiting to start plus the results waiting to be yielded.
        waiting = self.waiting
        while waiting and waiting[0].state != QUEUED:
            waiting.popleft()
        queued = len(waiting)
        held = len(self.in_flight) - self.unsettled
        room = self.window - held - queued
        self.wake_at = _INF
        if queued <= self.low:
            return max(room, 0)  # 0: results fill the window, the consumer must take some
        # When will the pool have started all but `low` of them? The j-th next start is at
        # `earliest + (j - 1) / rate` at the soonest; jobs queued by others come first.
        ahead = max(self.sched.queued - queued, 0)
        now = anyio.current_time()
        step = 1 / self.rate
        self.wake_at = max(
            self.sched.earliest_start(now) + (ahead + queued - self.low - 1) * step, now + step
        )
        return 0

    def _queue_batch(
        self, sched: Scheduler, batch: list[PlainJob], keys: list[Hashable] | None = None
    ) -> None:
        """Queue *batch* in the pool, add it to the window, and make sure a worker looks."""
        if keys is None:
            sched.enqueue_all(batch)
        else:
            for job, key in zip(batch, keys, strict=True):
                sched.enqueue(job, key)
        if self.ordered:
            self.fifo.extend(batch)
        else:
            self.unordered.update(dict.fromkeys(batch))
        if self.rate is not None:
            self.waiting.extend(batch)
        self.unsettled += len(batch)
        self.host.kick_for(batch[0])

    def top_up(self) -> None:
        """Read the sync input while there is room (no task needed for a sync source)."""
        source = self.sync_source
        assert source is not None
        room = self._room()
        if room <= 0:
            return
        try:
            sched = self.host.scheduler_for_submit()
        except Exception as exc:
            self._stop_reading(exc)
            return
        func = self.func
        options = self.options
        batch: list[PlainJob] = []
        plain = self.key_fn is None and self.cost_fn is None and self.label is None
        keys: list[Hashable] | None = None if plain else []
        keyed = self.key_fn is not None
        while len(batch) < room:
            try:
                item = next(source)
            except StopIteration:  # the input's end, and only that (not a key's or a cost's)
                self.exhausted = True
                break
            except Exception as exc:
                self._stop_reading(exc)
                break
            if keys is not None:
                try:
                    job, key = self._job(item)
                except Exception as exc:
                    self._stop_reading(exc)
                    break
                batch.append(job)
                keys.append(key)
                continue
            batch.append(PlainJob(func, (item,), options, self))
        if batch:
            # Without a key function every key is None: the batch is queued at once.
            self._queue_batch(sched, batch, keys if keyed else None)
            if self.rate is not None and not self.exhausted:
                self._room()  # sets wake_at

    def _stop_reading(self, error: BaseException) -> None:
        """The input (or the pool) failed: yield what is in flight, then raise *error*."""
        self.exhausted = True
        self.source_error = error

    async def _feed(self) -> None:
        """The feeder task of an async input: submit its items as the window has room."""
        assert self.async_source is not None
        source: AsyncIterator[Any] | None = None
        try:
            with self.feeder_scope:
                source = self.async_source.__aiter__()
                async for item in source:
                    while not self.closed and self._room() <= 0:
                        room = self.room = anyio.Event()
                        if self.wake_at == _INF:
                            await room.wait()
                        else:
                            with anyio.CancelScope(deadline=self.wake_at):
                                await room.wait()
                    if self.closed:
                        break
                    sched = self.host.scheduler_for_submit()
                    job, key = self._job(item)
                    self._queue_batch(sched, [job], [key])
                    self.signal()
        except Exception as exc:
            self._stop_reading(exc)
        except asyncio.CancelledError:
            # An enclosing scope was cancelled (the feeder's own scope catches its own): the task
            # ends normally, as it would end here anyway. Ending cancelled, it would leave
            # anyio's task group a reference cycle through the CancelledError's traceback,
            # which holds this frame and, through it, the map and its pool (issue #21 item 17).
            return
        finally:
            self.exhausted = True
            self.signal()
            # We stopped iterating it: let an async generator run its cleanup now, not at GC.
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()

    async def start_feeder(self) -> None:
        """Start the task that reads an async input, in the pool's task group."""
        self.feeder_started = True
        tg = await self.host.task_group()
        tg.start_soon(self._feed, name="werkpool map feeder")

    def signal(self) -> None:
        """Wake the consumer waiting for a result, if any."""
        changed = self.changed
        if changed is not None:
            self.changed = None
            changed.set()

    notify_success = True  # JobOwner: every result counts

    def job_settled(self, job: Job) -> None:
        """Called by the pool when one of this map's jobs is over."""
        self.unsettled -= 1
        if not self.ordered and job in self.unordered:
            assert isinstance(job, PlainJob)
            self.completed.append(job)
        changed = self.changed
        if changed is not None:
            self.changed = None
            changed.set()
        if self.unsettled == 0 and self.all_settled is not None:
            self.all_settled.set()

    # -- iterating ------------------------------------------------------------------------------

    def next_completed(self) -> PlainJob | None:
        """Unordered: take the first finished job out of the window (None if none has)."""
        if self.completed:
            job = self.completed.popleft()
            del self.unordered[job]
            return job
        return None

    def raise_if_closed(self) -> None:
        """Raise why iterating a closed map stops: the pool closed it, or it ended."""
        if self.closed:
            if self.closed_by_pool:
                raise PoolClosedError(
                    "this map was closed, and its jobs cancelled, when its pool exited or was "
                    "killed: iterate a map inside the pool's 'async with' block"
                )
            raise StopAsyncIteration

    # -- closing --------------------------------------------------------------------------------

    def close_nowait(self) -> None:
        """Close the map at once: stop reading, cancel its unfinished jobs, drop its results."""
        if self.closed:
            return
        self.closed = True
        self.ref = None  # nothing to do when the iterator goes (and no core <-> ref cycle)
        # Never raised now; its traceback holds the frame that read the input, which holds this
        # core: a reference cycle to the cyclic GC if kept (issue #21 item 17).
        self.source_error = None
        self.feeder_scope.cancel()
        in_flight = list(self.in_flight)
        self.fifo.clear()
        self.unordered.clear()
        self.completed.clear()
        self.waiting.clear()
        cancel = self.host.cancel_owned
        for job in in_flight:
            cancel(job)
        if self.room is not None:
            self.room.set()
        self.signal()  # a consumer waiting for a result must see the map closed
        self.host.maps.discard(self)

    def close_by_pool(self) -> None:
        """The pool exits or is killed while this map is open."""
        if not (self.exhausted and not self.in_flight):
            self.closed_by_pool = True
        self.close_nowait()

    def _abandoned(self, ref: object) -> None:
        """The MapIterator was freed while open: close the map on the pool's event loop."""
        self.ref = None
        if self.closed:
            return
        # RuntimeError: the event loop is closed (or the trio run is over), and so is the pool.
        with contextlib.suppress(RuntimeError):
            self.call_soon(self.close_nowait)

    async def aclose(self) -> None:
        """Close the map and wait until none of its jobs' code runs any more."""
        self.close_nowait()
        if self.unsettled:
            self.all_settled = anyio.Event()
            with anyio.CancelScope(shield=True):
                await self.all_settled.wait()


@final
class MapIterator(Generic[T], AsyncIterator[T]):
    """
    The results of :meth:`WorkerPool.map`: an async iterator, and an async context manager that
    closes it on exit.

    Closing (``aclose()``, leaving ``async with``, or an error or cancellation while iterating)
    stops reading the input, cancels the map's jobs that have not finished, and waits until none
    of their code runs any more. A map that is dropped without being closed is closed as soon as
    it is freed (without waiting for its jobs' code to stop).

    .. versionadded:: 0.3
    """

    __slots__ = ("__weakref__", "_core")

    def __init__(self, core: MapCore) -> None:
        self._core = core
        core.ref = weakref.ref(self, core._abandoned)
        core.host.maps.add(core)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> T:
        core = self._core
        if core.closed:
            core.raise_if_closed()
        try:
            if core.sync_source is not None:
                if not core.exhausted and len(core.in_flight) <= core.refill_at:
                    core.top_up()
            elif not core.feeder_started:
                await core.start_feeder()
            fifo = core.fifo
            while True:
                if fifo and fifo[0].outcome:  # ordered: the next result is ready
                    job = fifo.popleft()
                    break
                ready = None if core.ordered else core.next_completed()
                if ready is not None:
                    job = ready
                    break
                if core.exhausted and not core.in_flight:
                    # Taken off the core as it is raised: its traceback holds the frame that
                    # read the input, which holds the core (issue #21 item 17).
                    source_error, core.source_error = core.source_error, None
                    core.close_nowait()
                    if source_error is not None:
                        try:
                            raise protocol_safe(source_error, "the input of this map")
                        finally:
                            del source_error
                    raise StopAsyncIteration
                if (
                    core.rate is None
                    and not core.exhausted
                    and core.sync_source is not None
                    and len(core.in_flight) < core.cap
                ):
                    # About to wait: fill the window first. Refilled only in batches (refill_at),
                    # the line runs dry whenever the workers finish before this task runs again,
                    # and they park, to be woken one by one (yield-once jobs: a park for every
                    # fourth job, 1.9x the queue floor).
                    core.top_up()
                    continue
                changed = core.changed = anyio.Event()
                if core.wake_at == _INF or core.sync_source is None:
                    await changed.wait()
                else:  # rate-only pool: read more when the rate has started the queued items
                    with anyio.CancelScope(deadline=core.wake_at):
                        await changed.wait()
                    core.wake_at = _INF
                core.raise_if_closed()  # the pool closed it meanwhile
                if core.rate is not None and not core.exhausted and core.sync_source is not None:
                    core.top_up()
            if core.room is not None:
                core.room.set()
                core.room = None
            outcome = job.outcome
            if outcome == RETURNED:
                return job.value  # type: ignore[no-any-return]
            if outcome == CANCELLED:
                core.closed_by_pool = True  # only kill() or the pool's exit cancel map jobs
                raise PoolClosedError("this map's job was cancelled: its pool was killed")
            error: BaseException = job.value
            # The traceback of what is raised holds this frame: it must not hold the error
            # (through the job or itself), or each failed item would leave a reference cycle to
            # the cyclic GC (issue #21 item 17).
            del job
            ready = None
            if core.return_exceptions:
                return error  # type: ignore[return-value]
            try:
                raise protocol_safe(error, "a job of this map")
            finally:
                del error
        except StopAsyncIteration:
            raise
        except BaseException:
            await core.aclose()
            raise

    async def aclose(self) -> None:
        """Stop the map: cancel its unfinished jobs and wait until none of their code runs."""
        await self._core.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._core.aclose()

    def __repr__(self) -> str:
        core = self._core
        state = "closed" if core.closed else "open"
        return f"<werkpool.MapIterator {state} in_flight={len(core.in_flight)}>"
