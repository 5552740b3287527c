"""The lifecycle of a pool: binding to a loop, the submission gate, its task groups, stopping.

:class:`Lifecycle` owns the parts of one running pool (the scheduler, the crew of workers and their
:class:`~werkpool._runtime._workers.Runner`, the ``max_pending`` room) and its phases: new, open,
closing (``shutdown()``: draining), killed (``kill()`` or a failure: cancelling) and closed. It
decides whether a caller may submit (binding the pool to the caller's loop, and starting it in the
background, on first use), runs the supervisor that holds the workers' task group, and leaves the
task groups at the end, raising the pool's own failure as it was raised.
"""

# R52, R53 here are reliability requirements: docs/reliability.md lists them.

from __future__ import annotations

import asyncio
import math
import sys
import weakref
from typing import TYPE_CHECKING, Any, Final, Protocol, cast, final

import anyio

from .._core._exceptions import PoolClosedError
from .._core._job import QUEUED, RESERVING, RUNNING, Job, PlainJob
from .._core._scheduler import DEFAULT_MAX_RETRY_AFTER, Scheduler
from . import _exits
from ._background import BackgroundHost
from ._binding import LoopBinding
from ._control import Control
from ._crew import IDLE_RETIRE, Crew
from ._exits import failure_to_raise, reraise_unchanged
from ._futures import AsyncioFuture, Future
from ._hooks import Hooks
from ._weak import StartSoonOwner, weakly
from ._workers import Runner

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Hashable

    from anyio.abc import TaskGroup

    from .._core._events import Hook
    from .._core._exceptions import RetryAfter
    from .._core._job import JobOwner
    from .._core._lanes import KeyOrder
    from .._core._limitset import LimitSet
    from .._core._options import JobOptions
    from .._core._remote_limit import RemoteLimit
    from .._core._specs import Store
    from ._room import Room

__all__ = ["CLOSED", "CLOSING", "KILLED", "NEW", "OPEN", "Lifecycle", "MapCloser"]

_INF = math.inf

# The phases of a pool.
NEW: Final = 0  # constructed, not bound to an event loop
OPEN: Final = 1  # accepting work
CLOSING: Final = 2  # shutdown() began: draining, only the pool's own jobs may submit
KILLED: Final = 3  # kill() began, or the pool failed: cancelling everything
CLOSED: Final = 4  # exited


class MapCloser(Protocol):
    """What the lifecycle closes when the pool stops: an open map."""

    def close_by_pool(self) -> None: ...


@final
class Lifecycle:
    """The parts and phases of one pool; see the module docstring.

    :param limitset: the pool's limits as configured (``size=``, ``rate=``, ``limits=``,
        ``per_key=`` and the shared ones)
    :param room: the ``max_pending`` line, or None
    :param retry_after: maps a job's error to a pushback delay (``retry_after=``)
    :param max_retry_after: the longest pause a pushback may cause (``max_retry_after=``)
    :param key_weight: a key's weight in the fair share of the pool-wide limits (``key_weight=``)
    :param key_order: how the keys share the pool-wide limits (``key_order=``)
    :param hooks: the pool's hooks (``hooks=``)
    """

    __slots__ = (
        "__weakref__",
        "_kill_scope",
        "_may_stop",
        "_started",
        "_stopped",
        "_supervisor_tg",
        "background",
        "binding",
        "check_cost",
        "control",
        "crew",
        "errors",
        "fatal",
        "hooks",
        "key_order",
        "key_weight",
        "limitset",
        "loop",
        "maps",
        "max_retry_after",
        "remote",
        "retry_after",
        "room",
        "runner",
        "sched",
        "sink",
        "start_soon_owner",
        "state",
    )

    def __init__(
        self,
        limitset: LimitSet,
        room: Room | None,
        retry_after: Callable[[Exception], float | RetryAfter | None] | None = None,
        hooks: tuple[Hook, ...] = (),
        max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
        key_weight: Callable[[Hashable], float] | None = None,
        key_order: KeyOrder = "fair",
    ) -> None:
        self.limitset = limitset
        #: Checks a job's ``cost=`` (:meth:`LimitSet.check_cost`), once per job.
        self.check_cost = limitset.check_cost
        self.key_weight = key_weight
        self.key_order = key_order
        #: The pool's hooks, and what calls them once the pool runs (None without hooks).
        self.hooks = hooks
        self.sink: Hooks | None = None
        self.retry_after = retry_after
        self.max_retry_after = max_retry_after
        self.room = room
        #: Remote limits every attempt must also get (set before the pool binds).
        self.remote: tuple[RemoteLimit, ...] = ()
        self.state = NEW
        #: Failures of start_soon() jobs: the pool raises them when it exits.
        self.errors: list[BaseException] = []
        #: What a hook raised that is not an Exception (KeyboardInterrupt, SystemExit...): the
        #: pool stops and raises it when it exits, as a job's (see hook_raised).
        self.fatal: BaseException | None = None
        #: The maps still open: closed when the pool stops.
        self.maps: set[MapCloser] = set()
        self.start_soon_owner = StartSoonOwner(self)
        # Made when the pool binds to its loop (see _bind).
        self.binding: LoopBinding | None = None
        #: The asyncio loop the pool is bound to (None on trio, or before binding).
        self.loop: asyncio.AbstractEventLoop | None = None
        #: Every change of a job's state (loop-free: made now, its remote limits and hooks
        #: attached when the pool binds).
        self.sched = Scheduler(
            limitset.build(),
            per_key=limitset.per_key_factory(),
            key_weight=key_weight,
            key_order=key_order,
            retry_after=retry_after,
            max_retry_after=max_retry_after,
            on_drained=weakly(self._let_supervisor_stop),  # the lifecycle holds the scheduler
        )
        #: Applies run-time changes of the limits (size, limit values, pauses, pushbacks).
        self.control = Control(limitset, self.sched)
        self.crew: Crew | None = None
        self.runner: Runner | None = None
        self._started: anyio.Event | None = None  # the workers' task group exists
        self._may_stop: anyio.Event | None = None  # the supervisor may stop: drained or killed
        self._stopped: anyio.Event | None = None  # the supervisor has stopped
        self._supervisor_tg: TaskGroup | None = None  # holds the supervisor (crew.tg: workers)
        self._kill_scope: anyio.CancelScope | None = None
        #: Runs the pool when it is used without `async with` (made on first use).
        self.background: BackgroundHost | None = None

    # The size and the rate, as a map reads them (MapHost) to pace its input.

    @property
    def size(self) -> int | None:
        return self.limitset.size

    @property
    def rate(self) -> float | None:
        return self.limitset.rate

    # -- binding ----------------------------------------------------------------------------------

    def now(self) -> float:
        """The pool's clock: its binding's (precise on uvloop, see ``_binding.precise_clock``),
        or :func:`anyio.current_time` before the pool is bound. Every time the pool hands its
        scheduler is read here or by the workers from the same clock."""
        return self.control.now()  # the binding's clock once bound (Control.bind)

    def bind(self) -> Scheduler:
        """Bind the pool to the running loop and make its parts; the phase becomes OPEN."""
        binding = self.binding = LoopBinding()
        self.loop = binding.loop
        config, sched = self.limitset, self.sched
        binding.pace(config.strict_rates())
        remote = self.remote + self._bind_shared()
        if remote:
            # Pipelined requests need local limits that do not date their latest admission.
            dated = any(limit.timed for limit in sched.limits) or config.dates_per_key()
            sched.use_remote(remote, dated)
        self._attach_hooks()
        crew = self.crew = Crew(sched, _INF if config.size is None else config.size)
        self.control.bind(crew, binding.clock, counted=bool(remote), pace=binding.pace)
        runner = self.runner = Runner(sched, crew, binding, self.room, self)
        crew.set_body(runner.worker_main)
        if self.room is not None:
            self.room.queue = sched
        self._may_stop = anyio.Event()
        self._stopped = anyio.Event()
        self._started = anyio.Event()
        self.state = OPEN
        return sched

    def _attach_hooks(self) -> None:
        """Let the scheduler tell the pool's hooks of every transition (or nobody, without
        hooks)."""
        sched = self.sched
        if not self.hooks:
            # Dropped, with what it knew of the jobs in flight: a hook added later starts
            # afresh (those jobs' timings unknown to it), and nothing is kept meanwhile.
            sched.sink = self.sink = None
            return
        sink = self.sink
        if sink is None:
            assert self.binding is not None
            sink = self.sink = Hooks(self.hooks, self.binding.clock, self)
            # Weakly: the scheduler holds its sink, and a cycle would leave every exited pool
            # with hooks to the cyclic garbage collector (issue #21 item 17). The sink lives no
            # longer than the scheduler: only the scheduler and this lifecycle (which holds the
            # scheduler too) refer to it.
            sink.sched = cast("Scheduler", weakref.proxy(sched))
        sink.hooks = self.hooks
        sched.sink = sink

    def hook_raised(self, error: BaseException) -> bool:
        """A hook raised *error*, a BaseException that is not an Exception: as for a job raising
        it, the pool stops (every job waiting or running is cancelled, so every future resolves)
        and *error* leaves it, raised by the supervisor when it ends. Return False if no
        supervisor will end any more (the pool exited): the caller raises *error* itself.

        The transition whose event the hook was told of is complete: the error went no further
        than the hooks' loop, so no state is left half-changed.
        """
        stopped = self._stopped
        if stopped is None or stopped.is_set() or self.state == CLOSED:
            return False
        if self.fatal is None:
            self.fatal = error
            self.abort()
        return True

    def set_hooks(self, hooks: tuple[Hook, ...]) -> None:
        """Use *hooks* from the next transition on."""
        self.hooks = hooks
        if self.binding is not None:
            self._attach_hooks()

    def _bind_shared(self) -> tuple[RemoteLimit, ...]:
        """One remote limit per store named by the shared limits: it decides all of them (the
        pool's and the per-key ones) in one request per attempt."""
        stores: dict[int, Store] = {}
        shared, shared_per_key = self.limitset.shared, self.limitset.shared_per_key
        for spec in shared + shared_per_key:
            stores.setdefault(id(spec.store), spec.store)
        bound: list[RemoteLimit] = []
        for store in stores.values():
            mine = tuple(spec for spec in shared if spec.store is store)
            per_key = tuple(spec for spec in shared_per_key if spec.store is store)
            bound.append(store.bind(mine, per_key, self._remote_freed))
        return tuple(bound)

    def _remote_freed(self, key: Hashable | None) -> None:
        """A store says a shared limit freed up (a slot released elsewhere): a job it refused
        asks again now."""
        crew = self.crew
        if crew is None or self.state >= KILLED:
            return
        if self.sched.remote_freed(key):
            crew.wake_now()

    # -- the submission gate ----------------------------------------------------------------------

    def scheduler_for_submit(self) -> Scheduler:
        """Return the scheduler to queue a job in, or raise why the caller may not submit.

        On the first use of a pool without ``async with`` this binds it to the caller's loop and
        starts it in the background.
        """
        if self.state != OPEN:
            return self._submission_slow_path()
        loop = self.loop
        if loop is None or asyncio._get_running_loop() is not loop:
            assert self.binding is not None
            self.binding.check()  # on trio, or from the wrong loop or thread
        return self.sched

    def _submission_slow_path(self) -> Scheduler:
        """The submission gate when the pool is not simply open: bind on first use, or refuse."""
        state = self.state
        if state == NEW:
            sched = self.bind()
            assert self.binding is not None
            self.background = BackgroundHost(self, self.binding, _OWN_MODULES)
            self.background.start()
            return sched
        if self.binding is not None:
            self.binding.check()
        if state == CLOSING and self.in_worker():
            if not self.sched.over:
                # A job of this pool may still submit follow-up work while draining: its
                # workers stay until the last accepted job ends, so this one will run.
                return self.sched
            # The drain is over (the last job ended, and a task it started outlived it): the
            # workers are leaving, so the job could never run. Refuse it here (R52).
            raise PoolClosedError(
                "this WorkerPool no longer accepts jobs: its drain is complete (every accepted "
                "job ended before this follow-up was submitted)"
            )
        reason = {
            CLOSING: "shutdown() has begun",
            KILLED: "kill() has begun or the pool failed",
            CLOSED: "the pool has exited",
        }[state]
        raise PoolClosedError(f"this WorkerPool no longer accepts jobs: {reason}")

    def in_worker(self) -> bool:
        """True in this pool's job code, including tasks that a job started."""
        return self.runner is not None and self.runner.in_worker()

    def kick_for(self, job: Job | None) -> None:
        """A job was queued: make sure a worker looks, unless one is about to."""
        crew = self.crew
        assert crew is not None
        crew.kick(job)

    def call_soon_threadsafe(self, fn: Callable[[], object]) -> None:
        """Run ``fn()`` soon on the pool's event loop, from any thread (for a dropped map)."""
        assert self.binding is not None
        self.binding.call_soon_threadsafe(fn)

    def cancel_owned(self, job: PlainJob) -> None:
        """Cancel a job that has no future (a map's, a call's)."""
        assert self.runner is not None
        self.runner.cancel_owned(job)

    def enqueue_future(
        self,
        sched: Scheduler,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        options: JobOptions,
        owner: JobOwner | None,
        key: Hashable = None,
        cost: dict[str, float] | None = None,
    ) -> Any:
        """Queue a job whose record is its future (asyncio's own type on asyncio); return it."""
        loop = self.loop
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
        job.host = self.runner
        job.cost = cost
        if key is None:
            sched.enqueue(job)  # which sets job.lane
        else:
            job.lane = None  # until its key's lane is found (key_weight may raise)
            sched.enqueue_keyed(job, key)
        crew = self.crew
        assert crew is not None  # set by bind()
        if not crew.waking:  # else a worker is about to look (kick()'s first test, once per job)
            crew.kick(job)
        return job

    def start_soon_failed(self, error: BaseException) -> None:
        """A start_soon() job failed: cancel everything and let the supervisor raise the error."""
        if error not in self.errors:  # by identity: one object raised by several jobs is one
            self.errors.append(error)
        if self.state < KILLED:
            # Running jobs are cancelled through their scopes, their futures left pending: one
            # that fails at the same moment fails its future and is reported with this error
            # (several failures are raised together); one that returns ends cancelled.
            self.abort(cancel_running_futures=False)

    # -- running ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the supervisor's task group and start the supervisor in it (``async with``)."""
        assert self._started is not None
        tg = anyio.create_task_group()
        await tg.__aenter__()
        try:
            # Not tg.start(): on trio, anyio's start() keeps what the started task raised in a
            # reference cycle with its own frame (anyio 4.16), and the supervisor raises the
            # pool's failures: each failed pool would be left to the cyclic GC (#21 item 17).
            tg.start_soon(self._supervise)
            await self._started.wait()  # if the supervisor fails first, the task group cancels this
        except BaseException:
            self.abort()
            await tg.__aexit__(*sys.exc_info())
            raise
        self._supervisor_tg = tg

    async def task_group(self) -> TaskGroup:
        """The workers' task group, once the pool runs (a map starts its feeder there)."""
        crew = self.crew
        started = self._started
        if crew is not None and crew.tg is None and started is not None and not started.is_set():
            await started.wait()  # a pool used without `async with` whose task is starting
        if crew is None or crew.tg is None:
            raise PoolClosedError("this WorkerPool no longer accepts jobs: the pool has exited")
        return crew.tg

    async def _supervise(self) -> None:
        """The supervisor task: holds the workers' task group until the pool may stop.

        Meanwhile it retires idle workers; afterwards it raises what a hook raised that stops
        the pool (see :meth:`hook_raised`), or the failures of start_soon() jobs, as failed
        tasks fail a task group.
        """
        crew = self.crew
        assert crew is not None
        assert self._stopped is not None
        assert self._started is not None
        assert self.binding is not None
        try:
            with anyio.CancelScope() as self._kill_scope:
                async with anyio.create_task_group() as tg:
                    crew.tg = tg
                    self._started.set()
                    crew.look_again()  # jobs submitted before the pool started
                    await self._retire_idle_workers_until_may_stop()
                    crew.tg = None
        except BaseException as exc:
            cancelled = isinstance(exc, self.binding.cancelled_exc)
            if not cancelled:
                self.crashed(exc)
            # Taken off the lifecycle, whose frames its traceback will hold (issue #21 item 17).
            fatal, self.fatal = self.fatal, None
            if fatal is None:
                if cancelled and self.binding.backend == "asyncio":
                    # An enclosing scope was cancelled: the task ends here anyway, and ends
                    # normally. Ending cancelled, it would leave anyio's task group a reference
                    # cycle through the CancelledError's traceback, which holds this frame and so
                    # the whole pool (issue #21 item 17). Its task group treats a cancelled child
                    # and one that returns alike; the cancellation reaches the pool's caller.
                    return
                raise
            # A hook's KeyboardInterrupt or SystemExit is not lost to a cancellation from
            # outside, nor to a crash at the same moment.
            try:
                if cancelled:
                    reraise_unchanged(fatal)
                raise BaseExceptionGroup(
                    "the pool failed and a hook raised", [exc, fatal]
                ) from None
            finally:
                del fatal  # this frame joins its traceback (issue #21 item 17)
        finally:
            crew.tg = None
            self._stopped.set()
        # What the pool raises is taken off the lifecycle, and out of this frame, as it is
        # raised: its traceback holds this frame, which holds the lifecycle (issue #21 item 17).
        fatal, self.fatal = self.fatal, None
        errors, self.errors = self.errors, []
        if fatal is None and errors:
            fatal = (
                errors[0]
                if len(errors) == 1
                else BaseExceptionGroup("several jobs started with start_soon() failed", errors)
            )
        del errors
        if fatal is not None:
            try:
                raise fatal
            finally:
                del fatal

    async def _retire_idle_workers_until_may_stop(self) -> None:
        """Wait until the pool may stop; meanwhile, while workers are parked, reap each round.

        One timer for the whole pool, and only while some worker is idle: a busy pool and a
        pool at rest (its idle workers retired) keep none.
        """
        may_stop, crew = self._may_stop, self.crew
        assert may_stop is not None
        assert crew is not None
        while not may_stop.is_set():
            if crew.parked:
                with anyio.move_on_after(IDLE_RETIRE):
                    await may_stop.wait()
                if not may_stop.is_set():
                    crew.reap()
            else:
                try:
                    with anyio.CancelScope() as crew.reap_scope:
                        await may_stop.wait()  # or until a worker parks (it cancels the scope)
                finally:
                    crew.reap_scope = None

    def _let_supervisor_stop(self) -> None:
        """The pool drained (or is killed): the supervisor may stop, and idle workers leave."""
        assert self._may_stop is not None
        assert self.crew is not None
        if not self._may_stop.is_set():
            self._may_stop.set()
            self.crew.wake_all()

    # -- stopping ---------------------------------------------------------------------------------

    def begin_closing(self) -> None:
        """shutdown() or the end of ``async with``: accept no more jobs, drain the others."""
        if self.state == OPEN:
            self.state = CLOSING
            if self.room is not None:
                self.room.close()  # waiters wake to find the pool closed
        if self.binding is not None:
            self.sched.close()

    def abort(self, *, cancel_running_futures: bool = True) -> None:
        """Cancel everything, synchronously: the first half of kill().

        :param cancel_running_futures: also cancel the futures of running attempts now, not when
            the attempts stop (False when a start_soon() job failed: see start_soon_failed)
        """
        if self.state == NEW:
            self.state = CLOSED
            return
        if self.state < KILLED:
            self.state = KILLED
        sched, crew, runner = self.sched, self.crew, self.runner
        assert crew is not None
        assert runner is not None
        self.close_maps()
        sched.kill()
        for worker in crew.workers if cancel_running_futures else ():
            job = worker.job
            if job is not None and (job.state == RUNNING or job.state == RESERVING):
                # Cancelled now, not when the job stops: a job that swallows its cancellation
                # and returns cannot resolve its future any more.
                if isinstance(job, PlainJob):
                    runner.cancel_owned(job)
                else:
                    job.cancel()
        if self._kill_scope is not None:
            self._kill_scope.cancel()
        self._let_supervisor_stop()
        if self.room is not None:
            self.room.close()  # they wake to find the pool closed

    def crashed(self, error: BaseException) -> None:
        """A worker or the supervisor failed outside any job: fail what waits, then stop."""
        if self.state >= KILLED:
            return
        self.state = KILLED
        self._let_supervisor_stop()
        self.sched.kill(error)

    def close_maps(self) -> None:
        """Close the maps still open: their jobs are cancelled, their input is no longer read."""
        for core in list(self.maps):
            core.close_by_pool()

    async def finish(self, exc: BaseException | None) -> None:
        """Leave the pool's task groups: drain after a normal exit, cancel everything otherwise.

        Raise the pool's own failure, if any; return if there is none, or if what should leave
        ``async with`` is *exc* itself (the caller lets it go on, as it was).
        """
        assert self._supervisor_tg is not None
        assert self._may_stop is not None
        if exc is None:
            self.close_maps()  # nobody iterates them any more: do not wait for their jobs
            self.begin_closing()
            try:
                await self._may_stop.wait()
            except BaseException as waiting_error:
                self.abort()
                await self._exit_task_group(waiting_error)
                raise
        else:
            self.abort()
        try:
            await self._exit_task_group(exc)
        finally:
            # A failure raised from here has this frame in its traceback: it must not keep the
            # body's error (which may lead back to it), or a reference cycle is left (#21 item 17).
            del exc
        self.state = CLOSED

    async def wait_stopped(self) -> None:
        """Wait until the supervisor has stopped (no job code runs any more)."""
        if self._stopped is not None and self._supervisor_tg is not None:
            await self._stopped.wait()

    async def wait_drained(self) -> None:
        """Wait until the pool may stop (drained, or killed)."""
        assert self._may_stop is not None
        await self._may_stop.wait()
        if self.state >= KILLED and self._stopped is not None:
            await self._stopped.wait()  # killed: return once the cancelled jobs stopped

    async def _exit_task_group(self, body_error: BaseException | None) -> None:
        """Exit the supervisor's task group; raise the pool's own failure, if any, as it was.

        Return if nothing failed, or if what should leave ``async with`` is *body_error*, what
        the body raised (None if nothing): the caller lets it go on (see
        :func:`~werkpool._runtime._exits.failure_to_raise`).
        """
        tg = self._supervisor_tg
        assert tg is not None
        self._supervisor_tg = None
        try:
            await tg.__aexit__(None, None, None)
        except BaseExceptionGroup as group:
            self.state = CLOSED
            assert self.binding is not None
            failure = failure_to_raise(group, body_error, self.binding.cancelled_exc)
        else:
            return
        finally:
            # The task group keeps the errors of its tasks, and this frame joins the traceback
            # of what is raised from here: it must hold neither, or the error is left in a
            # reference cycle to the cyclic GC (issue #21 item 17).
            del tg
        del body_error
        if failure is not None:
            try:
                reraise_unchanged(failure)
            finally:
                del failure


#: The modules whose frames a kept failure's traceback leaves out (see without_frames_of).
_OWN_MODULES = (globals(), vars(_exits))
