"""The workers of a WorkerPool: the loop that runs attempts, and the settling of jobs.

``_Workers`` is the second class of the chain that makes up WorkerPool (see ``_pool_state.py``):
it adds the worker task (``_worker_main`` and its per-job loop ``_work``, the pool's hot path),
parking idle workers, and everything that settles a job: a return, a failure, a retry, a
cancellation, and a crash of the machinery itself.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
from contextvars import ContextVar
from types import CoroutineType
from typing import TYPE_CHECKING, Final

import anyio
from anyio.lowlevel import checkpoint

from ._pool_state import _CLOSING, _INF, _KILLED, _PoolState, _Worker
from ._retry import next_delay
from ._scheduler import (
    BACKOFF,
    CANCELLED,
    DONE,
    QUEUED,
    RETURNED,
    RUNNING,
    Job,
    PlainJob,
    spent,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._scheduler import Scheduler

#: A worker that has run this many jobs back to back without waiting lets other tasks run once.
_FAIRNESS_BATCH: Final = 64

#: How close to a rate slot (seconds) a worker stops using timers and yields to the loop until
#: the slot comes. The event loops' timers wake up to 1 ms late (epoll counts whole ms), and a
#: start can never be dated back (R49), so with burst=1 each late wake-up costs rate. A timer set
#: SPIN early lands within SPIN of the slot about a quarter of the time, and the rest of the wait
#: (at most 2 * SPIN) is spent yielding: about SPIN**2/2 ms of busy looping per start on average
#: (0.03 ms), bought by less lateness. Rates above 1/(2 * SPIN) (2,000/s) are paced by yields
#: alone, as long as the clock moves between two loop iterations (uvloop's counts whole ms).
SPIN: Final = 0.00025

#: A worker idle (parked, with no job in sight) for a whole round of this many seconds exits (1 to
#: 2 rounds after it parked); the pool starts workers again when jobs come (R53).
IDLE_RETIRE: Final = 10.0


def _cancelling_of_current_task() -> Callable[[], int] | None:
    """``cancelling`` of the running asyncio task on 3.11+, where a stray cancellation can be
    undone; None on 3.10 (no cancellation count to restore)."""
    if sys.version_info >= (3, 11):
        task = asyncio.current_task()
        if task is not None:
            return task.cancelling
    return None  # pragma: no cover - 3.10


def _protocol_safe(error: BaseException) -> BaseException:
    """Wrap a StopIteration or StopAsyncIteration a job raised, as PEP 479 does for generators.

    Re-raised raw from a future or a ``__anext__``, it would read as the end of an iteration
    (or asyncio's futures refuse it with a TypeError, crashing the worker); R50.
    """
    if isinstance(error, (StopIteration, StopAsyncIteration)):
        wrapped = RuntimeError(f"the job raised {type(error).__name__}")
        wrapped.__cause__ = error
        return wrapped
    return error


#: The pool whose job code the current task runs (set in each worker task; inherited by the
#: tasks a job starts), so that a job may still submit while its pool drains.
_running_in: ContextVar[_PoolState | None] = ContextVar("werkpool_running_in", default=None)


class _NotAwaitable(Exception):
    """Raised inside the worker when a job's callable returned something that is not awaitable."""

    def __init__(self, value: object) -> None:
        self.value = value


class _Workers(_PoolState):
    """The worker tasks of a WorkerPool, and how they settle the jobs they run."""

    __slots__ = ()

    # -- workers ----------------------------------------------------------------------------------

    async def _worker_main(self) -> None:
        """The body of one worker task: run attempts until the pool no longer needs this worker."""
        sched = self._sched
        assert sched is not None
        worker = _Worker()
        self._workers.add(worker)
        # Marks this task, and the tasks its jobs start, as running this pool's job code.
        _running_in.set(self)
        self._waking -= 1
        try:
            while True:
                try:
                    with anyio.CancelScope() as scope:
                        worker.scope = scope
                        if await self._work(worker, scope, sched):
                            return
                except self._cancelled_exc:
                    if not self._stray_cancellation():
                        raise
                # The scope was cancelled to stop one job (its future was cancelled, or its attempt
                # timed out), or a job cancelled this task itself: that job is accounted for, so
                # carry on in a fresh scope.
        except BaseException as exc:
            if not isinstance(exc, self._cancelled_exc):
                self._crashed(exc)
            raise
        finally:
            sched.workers -= 1
            self._workers.discard(worker)
            worker.job = None
            if worker.token:
                self._return_token(worker)

    def _stray_cancellation(self) -> bool:
        """True if a cancellation reached this worker that no cancel scope of anyio's made.

        On asyncio a job runs inline in its worker's task, so ``asyncio.current_task().cancel()``
        in a job cancels the worker itself (R51). Such a cancellation ends the job (its future is
        cancelled) but must not end the worker: nothing around it was cancelled. The task's
        cancellation count is restored, so that anyio's scopes later tell their own cancellations
        apart correctly. A real stop of the pool always comes through a scope (kill(), the exit
        of ``async with``, an enclosing scope), and is then not stray.
        """
        if self._backend != "asyncio" or anyio.current_effective_deadline() == -_INF:
            return False
        if sys.version_info >= (3, 11):
            task = asyncio.current_task()
            if task is not None:
                while task.cancelling():
                    task.uncancel()
        return True

    async def _absorb_stray_cancellation(self, scope: anyio.CancelScope) -> None:
        """A job cancelled its own task and returned (or swallowed it): clear that up here.

        Otherwise the pending cancellation would hit the worker's next job, and the raised count
        would make anyio's scopes mistake their own cancellations for outside ones (R51).
        """
        if scope.cancel_called or anyio.current_effective_deadline() == -_INF:
            return  # a real cancellation is under way: let it land
        self._stray_cancellation()  # on 3.13+ this also drops a cancellation not yet delivered
        if sys.version_info < (3, 13):
            try:
                await checkpoint()  # 3.11 and 3.12 keep it pending: let it land here, harmlessly
            except self._cancelled_exc:
                if not self._stray_cancellation():
                    raise

    def _in_worker(self) -> bool:
        """True in this pool's job code, including tasks that a job started."""
        return _running_in.get() is self

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
        candidate: Job | None = None
        queue = sched._queue
        limiter = self._limiter
        simple = sched.simple
        # Size-only pools: the worker borrows the limiter's token, and keeps it between attempts
        # that follow each other with no wait in between (so borrowed == running at every
        # checkpoint, for one acquire per busy spell instead of one per job).
        worker_token = simple and limiter is not None
        worker.stopping = False
        # asyncio 3.11+: the task's cancellation count, to notice one a job left on it (R51).
        cancelling = _cancelling_of_current_task() if self._backend == "asyncio" else None
        result: object = None
        awaitable: object = None
        timed = sched.timed  # then every job comes through poll(), and is restamped
        spun_at = -_INF  # the clock reading at the last yield while waiting for a slot
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
                now = anyio.current_time() if sched.timed or sched.delayed else 0.0
                admitted = sched.poll(now)
                if not isinstance(admitted, Job):  # the time to poll again
                    if self._state >= _CLOSING and sched.pending == 0:
                        self._set_drained()
                        return True
                    streak = 0
                    if worker.token:
                        self._return_token(worker)
                    wake_at = _INF
                    if self._sleeper is None:
                        wait = admitted - now
                        if wait <= 2 * SPIN and now != spun_at:
                            # The slot is nearer than the loop's timers can aim (they wake up to
                            # a millisecond late): let the loop run once and look again. If the
                            # clock did not move meanwhile (a virtual clock), a timer waits.
                            spun_at = now
                            self._waking += 1  # we look again at once: nobody else need
                            try:
                                await checkpoint()
                            finally:
                                self._waking -= 1
                            continue
                        # Wake SPIN early, so that a late timer still lands near the slot (the
                        # yields above take over from there); a virtual clock waits exactly.
                        wake_at = admitted - SPIN if wait > 2 * SPIN else admitted
                    # An idle worker keeps nothing of its last job alive (R53).
                    result = awaitable = candidate = worker.job = None
                    del admitted
                    if not await self._park(worker, sched, wake_at):
                        return True  # idle for long: retired (the pool spawns anew when needed)
                    continue
                job = admitted
                # Hand the queue on: if more may start, someone must look at it while we run.
                if not self._waking and self._sleeper is None and sched.has_queued():
                    self._kick(None)
            if self._space_waiting:
                self._give_room()
            if worker_token and not worker.token:
                limiter.acquire_on_behalf_of_nowait(worker)  # type: ignore[union-attr]
                worker.token = True

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
                if timed:
                    # Date the start when the job's code begins, after all the work since the
                    # poll (handing the queue on can start a worker: tens of µs; making the
                    # coroutine can run the garbage collector): the limits then count the times
                    # the job, and a server, see (R49).
                    sched.restamp(job, anyio.current_time())
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
            if cancelling is not None and cancelling():
                await self._absorb_stray_cancellation(scope)
            streak += 1
            if streak == _FAIRNESS_BATCH:
                streak = 0
                if worker.token:
                    self._return_token(worker)
                await checkpoint()

    async def _park(self, worker: _Worker, sched: Scheduler, wake_at: float) -> bool:
        """Wait until woken, or until *wake_at* (a rate slot or the end of a backoff).

        Return False if the worker should exit instead: it was idle for a whole round of the
        supervisor's reaping (see :meth:`_reap`).
        """
        event = worker.event = anyio.Event()
        if wake_at == _INF:
            self._parked[worker] = self._idle_round
            reap_scope = self._reap_scope
            if reap_scope is not None:
                # The first idle worker: the supervisor starts counting rounds (see _reap).
                self._reap_scope = None
                reap_scope.cancel()
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
        if worker.retire and sched.has_queued():
            # Woken to retire, but a job came in meanwhile, whose submitter saw this wake-up
            # pending (_waking) and so woke nobody else. If no worker waits for the clock,
            # stay and take it; if one does, it watches the head of the line: let it look
            # again (the job may be the new head) and leave.
            if self._sleeper is None:
                worker.retire = False
            elif not self._waking:
                self._wake(self._sleeper)
        return not worker.retire

    def _reap(self) -> None:
        """A round of IDLE_RETIRE seconds ended: retire the workers idle for all of it.

        Called by the pool's supervisor while workers are parked (it keeps no timer when none
        is, and a park costs no timer either). Every worker parked before this round began has
        been idle for at least IDLE_RETIRE, and exits; the pool starts workers again when jobs
        come. So a pool at rest holds O(1) memory, whatever its past peak (R53).
        """
        round_ = self._idle_round
        self._idle_round += 1
        for other, parked_in in list(self._parked.items()):
            if parked_in < round_:
                other.retire = True
                self._wake(other)

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
        """True for a CancelledError that no cancel scope around this worker caused.

        On asyncio a job can end with CancelledError because it awaited something that was
        cancelled, or because it cancelled its own task (which is its worker's task). That ends
        the job (its future is cancelled) but must not end the worker (see _stray_cancellation).
        """
        if self._backend != "asyncio" or not isinstance(exc, self._cancelled_exc):
            return False
        if scope.cancel_called:
            return False
        return self._stray_cancellation()

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
        if exc is not None:
            tb = exc.__traceback__
            if tb is not None and tb.tb_frame.f_code is _WORK_CODE:
                # Drop the worker's own frame from the job's traceback: the caller sees the job's
                # frames only, and a kept exception does not keep the worker (and its pool, and
                # whatever job it runs next) alive, nor make a cycle with its future (R53).
                exc.__traceback__ = tb.tb_next
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
            error = _protocol_safe(exc)
        options = job.options
        if (
            job.attempts <= options.retries
            and isinstance(error, options.retryable)
            and self._state < _KILLED
        ):
            try:
                delay = next_delay(options, job.attempts)
            except BaseException as bad:
                if isinstance(bad, Exception):
                    bad.__cause__ = error
                    self._fail(job, _protocol_safe(bad))
                    return
                # KeyboardInterrupt, SystemExit: as when the job raises them, its future holds
                # the error, and it goes on to stop the pool.
                self._fail(job, bad)
                raise
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
        """Forget a finished job (pool, callable, arguments; tell its owner), check for the end of
        a drain. _returned() writes the same out for its common case."""
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
            if self._backend == "asyncio" and asyncio._get_running_loop() is None:
                # Cancelled while the loop is not running (asyncio.run() cancelling the tasks
                # left at its end, one of them awaiting this future): anyio's cancellation needs
                # the running loop, so it is delivered from the loop's next iteration (R54).
                assert self._loop is not None
                self._loop.call_soon(self._stop_attempt, job)
            else:
                self._stop_attempt(job)
        elif job.state in (QUEUED, BACKOFF):
            sched.cancelled_job(job)
            self._settled(job)
            if self._space_waiting:
                self._give_room()

    def _stop_attempt(self, job: Job) -> None:
        """Cancel the running attempt of *job*; its worker settles the job when that lands."""
        worker = job.worker
        if job.state == RUNNING and worker is not None and worker.scope is not None:
            worker.stopping = True
            worker.scope.cancel()

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


_WORK_CODE: Final = _Workers._work.__code__
