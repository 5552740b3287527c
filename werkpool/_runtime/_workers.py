"""The worker task: take the next job from the scheduler, run its attempt, report the outcome.

A worker does the I/O and nothing else: it asks :meth:`Scheduler.poll` for a job, waits (parked,
or for the clock) when there is none, performs a remote reservation when handed one, runs the
attempt in its cancel scope with the job's timeout, and tells the scheduler how the attempt ended
(:meth:`~Scheduler.returned`, :meth:`~Scheduler.raised`, :meth:`~Scheduler.aborted`,
:meth:`~Scheduler.stopped`), which settles the job. :class:`Runner` is also every job's
:class:`~werkpool._core._job.JobHost`: a cancelled future stops the attempt through it.
"""

# R49, R51, R53, R54 here are reliability requirements: docs/reliability.md lists them.

from __future__ import annotations

import asyncio
import sys
import weakref
from contextvars import ContextVar
from inspect import isawaitable
from types import CoroutineType
from typing import TYPE_CHECKING, Any, Final, Protocol, final

import anyio
from anyio.lowlevel import checkpoint

from .._core._job import RESERVING, RUNNING, Job, PlainJob
from .._core._remote_limit import Refusal
from .._core._reservation import Reservation
from ._binding import SPIN
from ._crew import Worker
from ._remote import give_back, perform

if TYPE_CHECKING:
    from collections.abc import Callable

    from .._core._scheduler import Scheduler
    from ._binding import LoopBinding
    from ._crew import Crew
    from ._room import Room

__all__ = ["SPIN", "Runner", "Supervisor", "running_in", "running_worker"]

_INF: Final = float("inf")

#: A worker that has run this many jobs back to back without waiting lets other tasks run once.
_FAIRNESS_BATCH: Final = 64

# How far a worker's reservation got (Runner._reserve): its request is out; the remote limits
# hold credit for the job, still reserving; the attempt was granted and waits for its start;
# or it ended (answered and undone) with nothing left to undo.
_ASKING: Final = 0
_HELD: Final = 1
_GRANTED: Final = 2
_ENDED: Final = 3


#: The runner whose job code the current task runs (set in each worker task; inherited by the
#: tasks a job starts), so that a job may still submit while its pool drains.
running_in: ContextVar[Runner | None] = ContextVar("werkpool_running_in", default=None)

#: The worker whose task this is (set once per worker task; a job's code runs inline in it), so
#: that :func:`werkpool.settle` finds the attempt it reports on (``worker.job``).
running_worker: ContextVar[Worker | None] = ContextVar("werkpool_running_worker", default=None)


class Supervisor(Protocol):
    """What a worker tells the pool's lifecycle (which implements it)."""

    def crashed(self, error: BaseException) -> None:
        """A worker failed outside any job: the pool must stop, failing what waits."""
        ...


def _cancelling_of_current_task() -> Callable[[], int] | None:
    """``cancelling`` of the running asyncio task on 3.11+, where a stray cancellation can be
    undone; None on 3.10 (no cancellation count to restore)."""
    if sys.version_info >= (3, 11):
        task = asyncio.current_task()
        if task is not None:
            return task.cancelling
    return None  # pragma: no cover - 3.10


class _NotAwaitable(Exception):
    """Raised inside the worker when a job's callable returned something that is not awaitable."""

    def __init__(self, value: object) -> None:
        self.value = value


async def _wait_until(when: float, clock: Callable[[], float], binding: LoopBinding) -> None:
    """Sleep until *when*, as for a local rate's slot: a timer aimed early
    (:meth:`LoopBinding.aim`), then yields, so that a timer's lateness (up to a millisecond)
    does not delay the start."""
    now = clock()
    if when - now > binding.spin:
        await anyio.sleep_until(binding.aim(when, now))
    seen = -_INF
    while (now := clock()) < when:
        if now == seen:  # a virtual clock: it moves only when every task waits
            await anyio.sleep_until(when)
            return
        seen = now
        await checkpoint()


@final
class Runner:
    """Runs the worker tasks of one pool: see the module docstring."""

    __slots__ = (
        "__weakref__",
        "_supervisor",
        "binding",
        "crew",
        "room",
        "sched",
        "thread",
    )

    def __init__(
        self,
        sched: Scheduler,
        crew: Crew,
        binding: LoopBinding,
        room: Room | None,
        supervisor: Supervisor,
    ) -> None:
        self.sched = sched
        self.crew = crew
        self.binding = binding
        self.room = room
        # Weakly: the supervisor (the lifecycle) holds this runner, and a cycle would leave every
        # exited pool to the cyclic garbage collector (issue #21 item 17). A worker that crashes
        # runs in the supervisor's task group, so the supervisor is alive to hear of it.
        self._supervisor = weakref.ref(supervisor)
        self.thread = binding.thread  # for JobHost

    # -- the worker task --------------------------------------------------------------------------

    async def worker_main(self) -> None:
        """The body of one worker task: run attempts until the pool no longer needs this worker."""
        crew = self.crew
        worker = Worker()
        crew.workers.add(worker)
        running_in.set(self)  # this task, and the tasks its jobs start, run this pool's jobs
        running_worker.set(worker)
        crew.waking -= 1
        cancelled_exc = self.binding.cancelled_exc
        try:
            while True:
                try:
                    with anyio.CancelScope() as scope:
                        worker.scope = scope
                        if await self._work(worker, scope):
                            return
                except cancelled_exc:
                    if not self._stray_cancellation():
                        raise
                # The scope was cancelled to stop one job (its future was cancelled, or its attempt
                # timed out), or a job cancelled this task itself: that job is settled, so carry
                # on in a fresh scope.
        except BaseException as exc:
            if isinstance(exc, cancelled_exc):
                if self.binding.backend == "asyncio":
                    # The pool stops (kill(), a failure, an enclosing scope): this task was to end
                    # here anyway, and ends normally. Ending cancelled, it would leave anyio's
                    # task group a reference cycle through the CancelledError's traceback, which
                    # holds this worker's frames and, through them, the whole pool: every killed
                    # pool would be left to the cyclic GC (issue #21 item 17). Its task group
                    # treats a cancelled child and one that returns alike.
                    return
            else:
                supervisor = self._supervisor()
                if supervisor is not None:
                    supervisor.crashed(exc)
            raise
        finally:
            crew.count -= 1
            crew.workers.discard(worker)
            worker.job = None

    async def _work(self, worker: Worker, scope: anyio.CancelScope) -> bool:
        """Run jobs until the worker should exit (True) or its scope was cancelled (False).

        This loop runs once per job: the pool's hot path. The attempt runs inline (no coroutine
        of its own per job).
        """
        sched = self.sched
        crew = self.crew
        room = self.room
        streak = 0
        worker.stopping = False
        # asyncio 3.11+: the task's cancellation count, to notice one a job left on it (R51).
        cancelling = _cancelling_of_current_task() if self.binding.backend == "asyncio" else None
        result: Any = None
        awaitable: Any = None
        # Bound once: these run once per job.
        poll = sched.poll
        returned = sched.returned
        remote = bool(sched.remote)  # only then may poll() hand out a Reservation
        backoffs = sched.backoffs  # the same list for the scheduler's life
        current_time = self.binding.clock  # anyio.current_time(), without its backend lookup
        binding = self.binding  # its spin: SPIN or STRICT_SPIN (set_limits may change it)
        reservation: Reservation | None = None
        job: Job
        spun_at = -_INF  # the clock reading at the last yield while waiting for a slot
        try:
            while True:
                # Read the clock only when some limit, pause or backoff depends on it (limits and
                # pauses may change while the pool runs: sched.timed is read each time).
                timed = sched.timed
                now = current_time() if timed or backoffs else 0.0
                admitted = poll(now)
                if type(admitted) is float:  # nothing to start: the time to poll again
                    if sched.over:
                        return True
                    streak = 0
                    wake_at = _INF
                    if crew.sleeper is None and admitted == sched.coarse_at:
                        # The end of a refusal's hold or of a pause: a timer's lateness costs
                        # nothing there, so no early aim and no yields (spinning a millisecond
                        # per refused request took a fifth of a core at 50 admissions/s).
                        wake_at = admitted
                    elif crew.sleeper is None:
                        wait = admitted - now
                        spin = binding.spin
                        if wait <= 2 * spin and now != spun_at:
                            # The slot is nearer than the loop's timers can aim (they wake up to a
                            # millisecond late): let the loop run once and look again. If the clock
                            # did not move meanwhile (a virtual clock), a timer waits.
                            spun_at = now
                            crew.waking += 1  # we look again at once: nobody else need
                            try:
                                await checkpoint()
                            finally:
                                crew.waking -= 1
                            continue
                        # Wake SPIN early, so that a late timer still lands near the slot (the
                        # yields above take over from there); a virtual clock waits exactly.
                        wake_at = binding.aim(admitted, now) if wait > 2 * spin else admitted
                    elif admitted < crew.sleeper_deadline:
                        # Something is due before the sleeper wakes (a key whose limits free up
                        # sooner than the line it watches): it must look again.
                        crew.wake(crew.sleeper)
                    # An idle worker keeps nothing of its last job alive (R53).
                    result = awaitable = worker.job = None
                    job = None  # type: ignore[assignment]  # nor the job's record itself
                    del admitted
                    if not await crew.park(worker, wake_at):
                        return True  # idle for long: retired (the crew starts anew when needed)
                    continue
                if remote and type(admitted) is Reservation:
                    reservation = admitted
                    del admitted
                    assert reservation is not None
                    if reservation.turns is not None:
                        # A chain's link: another worker asks for the next job meanwhile (the
                        # store sends the links that wait together, and stops at a refusal).
                        crew.hand_on()  # (it checks that nobody is about to look already)
                    if not await self._reserve(worker, reservation):
                        reservation = None
                        if worker.stopping and scope.cancel_called:
                            return False
                        continue
                    job = reservation.job
                else:
                    job = admitted  # type: ignore[assignment]
                if not crew.waking and crew.sleeper is None:  # hand_on()'s first test, written out
                    crew.hand_on()  # if more may start, someone must look at the line while we run
                if room is not None and room.waiting:
                    room.give()

                # -- one attempt of the job --
                job.worker = worker
                worker.job = job
                if sched.sink is not None:
                    # The hooks hear of the start now that this worker owns the attempt: a hook
                    # that resizes the pool or cancels the job finds it here (issue #21 item 9).
                    sched.began(job)
                    if job.done():  # a hook cancelled it (or stopped the pool): it does not run
                        sched.stopped(job)
                        if reservation is not None:
                            await give_back(reservation)
                            reservation = None
                        if worker.stopping and scope.cancel_called:
                            return False
                        continue
                timeout = job.options.timeout
                deadline = _INF
                if timeout is not None:
                    deadline = current_time() + timeout
                    scope.deadline = deadline
                try:
                    awaitable = job.fn(*job.args)
                    if awaitable.__class__ is not CoroutineType and not isawaitable(awaitable):
                        raise _NotAwaitable(awaitable)
                    if timed:
                        # Date the start when the job's code begins, after all the work since the
                        # poll (handing the line on can start a worker: tens of µs; making the
                        # coroutine can run the garbage collector): the limits then count the times
                        # the job, and a server, see (R49).
                        sched.restamp(job, current_time())
                    result = await awaitable
                except _NotAwaitable as bad:
                    self._not_awaitable(job, bad.value)
                except BaseException as exc:
                    if timeout is not None:
                        scope.deadline = _INF
                    self._attempt_failed(job, exc, scope, deadline)
                    if not isinstance(exc, Exception) and not self._raised_by_the_job(exc, scope):
                        # cancellation (the scope or the pool's), KeyboardInterrupt, SystemExit
                        raise
                else:
                    if timeout is not None:
                        scope.deadline = _INF
                        if current_time() >= deadline:
                            # It returned at or after its deadline: a timeout, on every backend.
                            self._attempt_failed(job, None, scope, deadline)
                        else:
                            returned(job, result)
                    else:
                        returned(job, result)
                finally:
                    if reservation is not None:
                        await give_back(reservation)
                        reservation = None
                if (worker.stopping or timeout is not None) and scope.cancel_called:
                    return False
                if cancelling is not None and cancelling():
                    await self._absorb_stray_cancellation(scope)
                streak += 1
                if streak == _FAIRNESS_BATCH:
                    streak = 0
                    crew.yielding()
                    await checkpoint()
        finally:
            # However it ends, this frame lets go of its last job: a failed job's error has this
            # frame in its traceback, and the frame (kept alive by it, with its variables) would
            # hold the job that holds the error, a reference cycle (issue #21 item 17).
            job = result = awaitable = reservation = None  # type: ignore[assignment]

    async def _reserve(self, worker: Worker, reservation: Reservation) -> bool:
        """Perform *reservation*; return True if the attempt may start (at the granted time).

        However the request ends early (a cancellation, the pool stopping), one path below
        undoes it, by how far it got (*stage*): a request still out (perform() gives back what
        it took), remote credit held while the scheduler counts the job as reserving, or an
        attempt granted and waiting for its start.
        """
        sched = self.sched
        job = reservation.job
        worker.job = job
        job.worker = worker
        clock = self.binding.clock
        stage = _ASKING
        turns = reservation.turns
        # Whoever looks at the line meanwhile sees the reservation in flight and waits: the
        # answer hands the line on (_hand_on) or the attempt does.
        try:
            try:
                answer = await perform(reservation)
            except Exception as exc:
                # The store failed to answer (unreachable past its timeout, or an error of its
                # own); perform() gave back whatever was taken. That is this attempt's outcome:
                # it fails with the error, and is retried if the job's policy says so.
                stage = _ENDED
                now = clock()
                if sched.granted(reservation, now):
                    self.crew.wake_sleeper_before(sched.raised(job, exc, now))
                self._hand_on(worker, job)
                return False
            if isinstance(answer, Refusal):
                stage = _ENDED
                sched.refused(reservation, float(answer.retry_at), answer.key)
                self._hand_on(worker, job)
                return False
            stage = _HELD
            if turns is not None and turns.turn != reservation.ticket:
                # A chain's link: the answers to one call wake their workers in any order; this
                # one starts after every earlier link started or ended (Turns).
                turn = turns.waiting[reservation.ticket] = anyio.Event()
                await turn.wait()
            if answer > clock() and sched.depth == 1:
                # Granted from a later time, with local limits that date their latest admission
                # (restamp): the job waits still reserving, so that nothing else is admitted
                # before its start is dated.
                await _wait_until(answer, clock, self.binding)
            if not sched.granted(reservation, max(answer, clock())):
                # Cancelled while asking, or a pause began meanwhile: give the credit back.
                stage = _ENDED
                self._hand_on(worker, job)
                if turns is not None:
                    turns.passed(reservation.ticket)  # the next link need not wait for this
                await give_back(reservation)
                return False
            stage = _GRANTED
            if answer > clock():  # granted from a later time: wait for it
                # Meanwhile the next job may ask (its slot comes after this one's).
                self.crew.hand_on()
                await _wait_until(answer, clock, self.binding)
            return True
        except BaseException:
            if stage == _GRANTED:
                sched.stopped(job)  # cancelled before its code began
            elif stage != _ENDED:
                sched.abandoned(reservation)
                self._hand_on(worker, job)
            if turns is not None:
                turns.waiting.pop(reservation.ticket, None)
                turns.passed(reservation.ticket)
            if stage in (_HELD, _GRANTED):  # the remote limits hold credit for it
                await give_back(reservation)
            raise
        finally:
            if turns is not None:
                # Its attempt starts now (the job's code runs before the next checkpoint), or
                # its reservation ended: the next link's turn (passing twice is harmless).
                turns.waiting.pop(reservation.ticket, None)
                turns.passed(reservation.ticket)

    def _hand_on(self, worker: Worker, job: Job) -> None:
        """A reservation ended without an attempt: let another worker look at the line."""
        job.worker = None
        worker.job = None
        self.crew.look_again()

    # -- outcomes ---------------------------------------------------------------------------------

    def _not_awaitable(self, job: Job, value: object) -> None:
        """Fail a job whose callable returned something that is not awaitable."""
        error = TypeError(
            f"the job's callable {job.fn!r} returned {type(value).__name__}, not an awaitable: "
            "pass an async function (or a callable returning an awaitable)"
        )
        self.sched.aborted(job, error)  # a bug, not a transient failure: never retried

    def _attempt_failed(
        self, job: Job, exc: BaseException | None, scope: anyio.CancelScope, deadline: float
    ) -> None:
        """Report an attempt that raised *exc* (None: it returned after its deadline)."""
        sched = self.sched
        cancelled_exc = self.binding.cancelled_exc
        if exc is not None:
            tb = exc.__traceback__
            if tb is not None and tb.tb_frame.f_code is _WORK_CODE:
                # Drop the worker's own frame from the job's traceback: the caller sees the job's
                # frames only, and a kept exception does not keep the worker (and its pool, and
                # whatever job it runs next) alive, nor make a cycle with its future (R53).
                exc.__traceback__ = tb.tb_next
        now = self.binding.clock()
        if deadline != _INF and (exc is None or (scope.cancel_called and now >= deadline)):
            error = TimeoutError(f"the attempt timed out after {job.options.timeout:g} s")
            if exc is not None and not isinstance(exc, cancelled_exc):
                error.__context__ = exc
            self.crew.wake_sleeper_before(sched.raised(job, error, now))
        elif isinstance(exc, cancelled_exc):
            sched.stopped(job)
        elif isinstance(exc, Exception):
            self.crew.wake_sleeper_before(sched.raised(job, exc, now))
        else:
            assert exc is not None
            sched.aborted(job, exc)  # KeyboardInterrupt, SystemExit...: re-raised by the caller

    # -- stray cancellations (asyncio) ------------------------------------------------------------

    def _stray_cancellation(self) -> bool:
        """True if a cancellation reached this worker that no cancel scope of anyio's made.

        On asyncio a job runs inline in its worker's task, so ``asyncio.current_task().cancel()``
        in a job cancels the worker itself (R51). Such a cancellation ends the job (its future is
        cancelled) but must not end the worker: nothing around it was cancelled. The task's
        cancellation count is restored, so that anyio's scopes later tell their own cancellations
        apart correctly. A real stop of the pool always comes through a scope (kill(), the exit
        of ``async with``, an enclosing scope), and is then not stray.
        """
        if self.binding.backend != "asyncio" or anyio.current_effective_deadline() == -_INF:
            return False
        if sys.version_info >= (3, 11):
            task = asyncio.current_task()
            if task is not None:
                while task.cancelling():
                    task.uncancel()
        return True

    def _raised_by_the_job(self, exc: BaseException, scope: anyio.CancelScope) -> bool:
        """True for a CancelledError that no cancel scope around this worker caused (see
        :meth:`_stray_cancellation`)."""
        if self.binding.backend != "asyncio" or not isinstance(exc, self.binding.cancelled_exc):
            return False
        if scope.cancel_called:
            return False
        return self._stray_cancellation()

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
            except self.binding.cancelled_exc:
                if not self._stray_cancellation():
                    raise

    # -- cancellation from outside (JobHost) ------------------------------------------------------

    def job_cancelled(self, job: Job) -> None:
        """A job's future was cancelled (called synchronously by the future)."""
        if self.sched.cancel(job):
            loop = self.binding.loop
            if loop is not None and asyncio._get_running_loop() is None:
                # Cancelled while the loop is not running (asyncio.run() cancelling the tasks
                # left at its end, one of them awaiting this future): anyio's cancellation needs
                # the running loop, so it is delivered from the loop's next iteration (R54).
                loop.call_soon(self._stop_attempt, job)
            else:
                self._stop_attempt(job)
        elif self.room is not None and self.room.waiting:
            self.room.give()

    def _stop_attempt(self, job: Job) -> None:
        """Cancel the running attempt (or reservation) of *job*; its worker reports the end."""
        worker = job.worker
        if job.state in (RUNNING, RESERVING) and worker is not None and worker.scope is not None:
            worker.stopping = True
            worker.scope.cancel()

    def cancel_owned(self, job: PlainJob) -> None:
        """Cancel a job that has no future (a map's, a call's), as cancelling a future would."""
        if job.cancel():
            self.job_cancelled(job)

    def in_worker(self) -> bool:
        """True in this pool's job code, including tasks that a job started."""
        return running_in.get() is self


_WORK_CODE: Final = Runner._work.__code__
