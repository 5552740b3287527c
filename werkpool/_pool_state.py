"""The state of a WorkerPool: its slots, binding to an event loop, backpressure, waking workers.

WorkerPool is built as a chain of classes, each in its own module and each adding methods only:
``_PoolState`` (here) <- ``_Workers`` (``_workers.py``) <- ``_Lifecycle`` (``_lifecycle.py``) <-
``WorkerPool`` (``_pool.py``). Every instance attribute is declared once, in ``_PoolState``'s
``__slots__``; the later classes declare ``__slots__ = ()``, so a pool's layout (and the speed of
its attribute access) is that of a single class. A method calls only methods of its own class or
of an earlier one; where one must call a later one (``_spawn`` starts ``_worker_main``), that
method is named in a ``TYPE_CHECKING`` stub, for the type checker only.
"""

from __future__ import annotations

import asyncio
import math
import sys
import threading
from typing import TYPE_CHECKING, Final, final

import anyio
from anyio.lowlevel import checkpoint

from ._limits import ConcurrencyLimit, Limit, RateLimit
from ._scheduler import Scheduler

if TYPE_CHECKING:
    from collections import deque

    from anyio.abc import TaskGroup

    from ._map import MapCore
    from ._pool import _StartSoonOwner
    from ._scheduler import Job

_INF = math.inf

# Lifecycle states.
_NEW: Final = 0  # constructed, not bound to an event loop
_OPEN: Final = 1  # accepting work
_CLOSING: Final = 2  # shutdown() began: draining, only the pool's own jobs may submit
_KILLED: Final = 3  # kill() began, or the pool failed: cancelling everything
_CLOSED: Final = 4  # exited


@final
class _Worker:
    __slots__ = ("event", "job", "retire", "scope", "stopping", "token")

    def __init__(self) -> None:
        self.scope: anyio.CancelScope | None = None
        self.event: anyio.Event | None = None
        self.job: Job | None = None  # the job whose attempt this worker runs now
        #: The pool cancelled ``scope`` to stop the current job (its future was cancelled).
        self.stopping = False
        #: The worker holds a token of the pool's limiter on its own behalf (size-only pools).
        self.token = False
        #: Woken to exit: it was idle for a whole round of reaping (see _Workers._reap).
        self.retire = False


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


class _PoolState:
    """A WorkerPool's attributes, and the methods that only read and update them.

    Never instantiated on its own: ``WorkerPool.__init__`` sets every attribute.
    """

    __slots__ = (
        "__weakref__",
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
        "_idle_round",
        "_kill_scope",
        "_limiter",
        "_loop",
        "_maps",
        "_max_pending",
        "_outer_tg",
        "_parked",
        "_rate",
        "_reap_scope",
        "_sched",
        "_size",
        "_sleeper",
        "_sleeper_deadline",
        "_space_abandoned",
        "_space_reserved",
        "_space_waiters",
        "_space_waiting",
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

    _size: int | None
    _rate: float | None
    _burst: int
    _max_pending: int | None
    _space_waiters: deque[anyio.Event]
    _space_waiting: int
    _space_abandoned: set[anyio.Event]
    _space_reserved: int
    _errors: list[BaseException]
    _maps: set[MapCore]
    _started: anyio.Event | None
    _start_soon_owner: _StartSoonOwner
    _state: int
    _backend: str
    _loop: asyncio.AbstractEventLoop | None
    _trio_token: object
    _thread: int
    _limiter: anyio.CapacityLimiter | None
    _sched: Scheduler | None
    _cancelled_exc: type[BaseException]
    _tg: TaskGroup | None
    _outer_tg: TaskGroup | None
    _kill_scope: anyio.CancelScope | None
    #: Parked workers (insertion-ordered, woken LIFO), each with the reaping round it parked in.
    _parked: dict[_Worker, int]
    #: The supervisor's wait while no worker is parked; the first to park cancels it, so that
    #: the supervisor counts rounds of idleness (see _Workers._reap). None while it counts.
    _reap_scope: anyio.CancelScope | None
    _idle_round: int
    _sleeper: _Worker | None
    _sleeper_deadline: float
    _waking: int
    _workers: set[_Worker]
    _drained: anyio.Event | None
    _stopped: anyio.Event | None
    _hosted: bool
    _host_stop: anyio.Event | None
    _host_done: anyio.Event | None
    _host_error: BaseException | None
    _host_task: asyncio.Task[None] | None

    if TYPE_CHECKING:
        # Defined by the later classes of the chain (see the module docstring).

        async def _worker_main(self) -> None: ...

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

    # -- backpressure -----------------------------------------------------------------------------

    async def _wait_for_room(self) -> None:
        """Wait, first come first served, until fewer than max_pending jobs wait to start."""
        limit = self._max_pending
        sched = self._sched
        if (
            limit is None
            or sched is None
            or (not self._space_waiting and sched.queued + self._space_reserved < limit)
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
                    if self._space_waiting:
                        self._give_room()
                raise
            return
        event = anyio.Event()
        self._space_waiters.append(event)
        self._space_waiting += 1
        try:
            await event.wait()
        except BaseException:
            if event.is_set():
                self._space_reserved -= 1  # we were given room: hand it on
                self._give_room()
            else:
                # Left in line and skipped when reached: removing it from the middle of the
                # deque would cost O(waiters) for each cancelled producer.
                self._space_waiting -= 1
                if self._space_waiting:
                    self._space_abandoned.add(event)
                else:  # nobody waits any more: everything still in line was abandoned
                    self._space_waiters.clear()
                    self._space_abandoned.clear()
            raise

    def _give_room(self) -> None:
        """Wake waiters of submit()/call() while there is room for them."""
        sched = self._sched
        limit = self._max_pending
        assert sched is not None
        assert limit is not None
        waiters = self._space_waiters
        abandoned = self._space_abandoned
        while self._space_waiting and (
            sched.queued + self._space_reserved < limit or self._state != _OPEN
        ):
            event = waiters.popleft()
            if abandoned and event in abandoned:
                abandoned.discard(event)  # its producer was cancelled while waiting
                continue
            self._space_waiting -= 1
            self._space_reserved += 1
            event.set()

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
            # The worker parked last: the others stay idle long enough to retire (IDLE_RETIRE).
            self._wake(next(reversed(self._parked)))
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
