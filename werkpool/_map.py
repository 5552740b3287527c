"""MapIterator: the lazily fed, bounded stream of results behind :meth:`WorkerPool.map`."""

from __future__ import annotations

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
from typing import TYPE_CHECKING, Any, Generic, TypeVar, final

import anyio

from ._exceptions import PoolClosedError
from ._scheduler import CANCELLED, RETURNED, PlainJob

if TYPE_CHECKING:
    from types import TracebackType

    from ._pool import WorkerPool
    from ._retry import JobOptions
    from ._scheduler import Job, Scheduler

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["MapIterator"]

T = TypeVar("T")


@final
class MapIterator(Generic[T], AsyncIterator[T]):
    """
    The results of :meth:`WorkerPool.map`: an async iterator, and an async context manager that
    closes it on exit.

    Closing (``aclose()``, leaving ``async with``, or an error or cancellation while iterating)
    stops reading the input, cancels the map's jobs that have not finished, and waits until none
    of their code runs any more.

    .. versionadded:: 0.3
    """

    def __init__(
        self,
        pool: WorkerPool,
        func: Callable[[Any], Awaitable[T]],
        iterable: Iterable[Any] | AsyncIterable[Any],
        options: JobOptions,
        ordered: bool,
        return_exceptions: bool,
        window: int,
    ) -> None:
        self._pool = pool
        self._func = func
        self._options = options
        self._ordered = ordered
        self._return_exceptions = return_exceptions
        self._window = window
        # A sync input is read in batches, once half the window is free: the admission check and
        # the wake-up are paid per batch, and at least window/2 (= size) jobs stay in flight.
        self._refill_at = window // 2
        self._sync_source: Iterator[Any] | None = None
        self._async_source: AsyncIterable[Any] | None = None
        if isinstance(iterable, AsyncIterable):
            self._async_source = iterable
        else:
            self._sync_source = iter(iterable)
        # Jobs submitted and not yet yielded, in submission order: a deque when results come in
        # that order, a dict (O(1) removal anywhere) when they come as they finish. A map's jobs
        # have no future: each outcome stays on its job record (see Job.outcome).
        self._fifo: deque[PlainJob] = deque()  # ordered
        self._unordered: dict[PlainJob, None] = {}
        self._in_flight: Collection[PlainJob] = self._fifo if ordered else self._unordered
        self._completed: deque[PlainJob] = deque()  # unordered: finished, in completion order
        self._unsettled = 0  # jobs whose code may still run
        self._exhausted = False
        self._source_error: BaseException | None = None
        self._closed = False
        self._closed_by_pool = False
        self._feeder_started = False
        self._feeder_scope = anyio.CancelScope()
        self._changed: anyio.Event | None = None  # the consumer waits for a result
        self._room: anyio.Event | None = None  # the feeder waits for room in the window
        self._all_settled: anyio.Event | None = None

    # -- feeding --------------------------------------------------------------------------------

    def _submit(self, item: Any) -> None:
        """Queue the job for one item of the async input (the feeder's way in)."""
        sched = self._pool._accepting()
        now = anyio.current_time() if sched.timed else 0.0
        self._queue_batch(sched, [PlainJob(self._func, (item,), self._options, now, self)])

    def _queue_batch(self, sched: Scheduler, batch: list[PlainJob]) -> None:
        """Queue *batch* in the pool, add it to the window, and make sure a worker looks."""
        sched.enqueue_all(batch)
        if self._ordered:
            self._fifo.extend(batch)
        else:
            self._unordered.update(dict.fromkeys(batch))
        self._unsettled += len(batch)
        pool = self._pool
        if not pool._waking:
            pool._kick(batch[0])

    def _top_up(self) -> None:
        """Read the sync input until the window is full (no task needed for a sync source)."""
        source = self._sync_source
        assert source is not None
        room = self._window - len(self._in_flight)
        try:
            sched = self._pool._accepting()
        except Exception as exc:
            self._stop_reading(exc)
            return
        func = self._func
        options = self._options
        now = anyio.current_time() if sched.timed else 0.0
        batch: list[PlainJob] = []
        while len(batch) < room:
            try:
                item = next(source)
            except StopIteration:
                self._exhausted = True
                break
            except Exception as exc:
                self._stop_reading(exc)
                break
            batch.append(PlainJob(func, (item,), options, now, self))
        if batch:
            self._queue_batch(sched, batch)

    def _stop_reading(self, error: BaseException) -> None:
        """The input (or the pool) failed: yield what is in flight, then raise *error*."""
        self._exhausted = True
        self._source_error = error

    async def _feed(self) -> None:
        assert self._async_source is not None
        source = self._async_source.__aiter__()
        try:
            with self._feeder_scope:
                async for item in source:
                    while len(self._in_flight) >= self._window and not self._closed:
                        self._room = anyio.Event()
                        await self._room.wait()
                    if self._closed:
                        break
                    self._submit(item)
                    self._signal()
        except Exception as exc:
            self._stop_reading(exc)
        finally:
            self._exhausted = True
            self._signal()
            # We stopped iterating it: let an async generator run its cleanup now, not at GC.
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()

    async def _start_feeder(self) -> None:
        self._feeder_started = True
        pool = self._pool
        started = pool._started
        if pool._tg is None and started is not None and not started.is_set():
            await started.wait()  # an unscoped pool whose background task is starting
        tg = pool._tg
        if tg is None:
            raise PoolClosedError("this WorkerPool no longer accepts jobs: the pool has exited")
        tg.start_soon(self._feed, name="werkpool map feeder")

    def _signal(self) -> None:
        changed = self._changed
        if changed is not None:
            self._changed = None
            changed.set()

    def job_settled(self, job: Job) -> None:
        """Called by the pool when one of this map's jobs is over."""
        self._unsettled -= 1
        if not self._ordered and job in self._unordered:
            assert isinstance(job, PlainJob)
            self._completed.append(job)
        changed = self._changed
        if changed is not None:
            self._changed = None
            changed.set()
        if self._unsettled == 0 and self._all_settled is not None:
            self._all_settled.set()

    # -- iterating ------------------------------------------------------------------------------

    def __aiter__(self) -> Self:
        return self

    def _next_completed(self) -> PlainJob | None:
        """Unordered: take the first finished job out of the window (None if none has)."""
        if self._completed:
            job = self._completed.popleft()
            del self._unordered[job]
            return job
        return None

    def _raise_if_closed(self) -> None:
        if self._closed:
            if self._closed_by_pool:
                raise PoolClosedError(
                    "this map was closed, and its jobs cancelled, when its pool exited or was "
                    "killed: iterate a map inside the pool's 'async with' block"
                )
            raise StopAsyncIteration

    async def __anext__(self) -> T:
        if self._closed:
            self._raise_if_closed()
        try:
            if self._sync_source is not None:
                if not self._exhausted and len(self._in_flight) <= self._refill_at:
                    self._top_up()
            elif not self._feeder_started:
                await self._start_feeder()
            fifo = self._fifo
            while True:
                if fifo and fifo[0].outcome:  # ordered: the next result is ready
                    job = fifo.popleft()
                    break
                ready = None if self._ordered else self._next_completed()
                if ready is not None:
                    job = ready
                    break
                if self._exhausted and not self._in_flight:
                    self._close_nowait()
                    if self._source_error is not None:
                        raise self._source_error
                    raise StopAsyncIteration
                self._changed = anyio.Event()
                await self._changed.wait()
                self._raise_if_closed()  # the pool closed it meanwhile
            if self._room is not None:
                self._room.set()
                self._room = None
            outcome = job.outcome
            if outcome == RETURNED:
                return job.value  # type: ignore[no-any-return]
            if outcome == CANCELLED:
                self._closed_by_pool = True  # only kill() or the pool's exit cancel map jobs
                raise PoolClosedError("this map's job was cancelled: its pool was killed")
            error: BaseException = job.value
            if self._return_exceptions:
                return error  # type: ignore[return-value]
            raise error
        except StopAsyncIteration:
            raise
        except BaseException:
            await self.aclose()
            raise

    # -- closing --------------------------------------------------------------------------------

    def _close_nowait(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._feeder_scope.cancel()
        in_flight = list(self._in_flight)
        self._fifo.clear()
        self._unordered.clear()
        self._completed.clear()
        cancel = self._pool._cancel_owned
        for job in in_flight:
            cancel(job)
        if self._room is not None:
            self._room.set()
        self._signal()  # a consumer waiting for a result must see the map closed
        self._pool._maps.discard(self)

    def _close_by_pool(self) -> None:
        """The pool exits or is killed while this map is open."""
        if not (self._exhausted and not self._in_flight):
            self._closed_by_pool = True
        self._close_nowait()

    async def aclose(self) -> None:
        """Stop the map: cancel its unfinished jobs and wait until none of their code runs."""
        self._close_nowait()
        if self._unsettled:
            self._all_settled = anyio.Event()
            with anyio.CancelScope(shield=True):
                await self._all_settled.wait()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<werkpool.MapIterator {state} in_flight={len(self._in_flight)}>"
