"""The pool's sans-I/O core: the job queue, admission under the limits, retries and counters.

Every method is synchronous and reads no clock: the pool passes ``now`` in and does the awaiting
(httpcore's ``_assign_requests_to_connections`` is the model). That keeps each state change atomic
on the event loop, and lets ``tests/test_scheduler.py`` drive the core with no event loop at all.
"""

from __future__ import annotations

import math
from collections import deque
from heapq import heappop, heappush
from typing import TYPE_CHECKING, Any, Final, NoReturn, Protocol, final

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ._limits import Limit
    from ._retry import JobOptions

__all__ = [
    "BACKOFF",
    "CANCELLED",
    "DONE",
    "JOB_SLOTS",
    "QUEUED",
    "RAISED",
    "RETURNED",
    "RUNNING",
    "TICK",
    "Job",
    "JobOwner",
    "PlainJob",
    "Scheduler",
    "spent",
]

QUEUED: Final = 0
RUNNING: Final = 1
BACKOFF: Final = 2
DONE: Final = 3

# A PlainJob's outcome, kept on the record for its owner (a map reads it in place).
RETURNED: Final = 1
RAISED: Final = 2
CANCELLED: Final = 3

#: A wait shorter than this (1 ns, the resolution of the event loops' clocks) is no wait: the
#: start is admitted at once and dated at its slot, less than a tick *after* now (never before:
#: see :meth:`Scheduler.poll`). Without it a rate of 1e12/s would ask the loop for sleeps of
#: 1e-12 s, which some clocks round to zero and spin on.
TICK: Final = 1e-9

_INF = math.inf


class JobOwner(Protocol):
    """Something told when one of its jobs is over and none of its code runs any more."""

    def job_settled(self, job: Job) -> None: ...


#: The fields every job record has, whatever its class (see :class:`Job`).
JOB_SLOTS: Final = (
    "_pool",
    "args",
    "attempts",
    "fn",
    "options",
    "owner",
    "seq",
    "state",
    "worker",
)


def spent(*args: object) -> NoReturn:
    """What a settled job's ``fn`` becomes, so that its record keeps nothing of the job alive."""
    raise AssertionError("a settled job was run again")


class Job:
    """
    One submitted job, as the scheduler sees it: a record with no task, coroutine or timer.

    This class only declares the fields (``__slots__ = ()``, so it can be mixed into a C type):
    each kind of record stores them itself. A job run for a future *is* that future, so a
    ``run()`` costs one object, not a record plus a future (``_futures.AsyncioFuture`` and
    ``werkpool.Future``); a map's or a ``call()``'s job is a :class:`PlainJob`, which keeps the
    outcome for its owner to read. Every kind has the future methods the pool resolves it with.
    """

    if not TYPE_CHECKING:  # declared for mypy below, stored by each subclass's __slots__
        __slots__ = ()

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    options: JobOptions
    #: Who wants to hear when the job is over (a map, a call, start_soon's failure check).
    owner: JobOwner | None
    #: The submission order, for FIFO admission of retries among new jobs.
    seq: int
    state: int
    #: Attempts started so far.
    attempts: int
    #: Whatever runs the current attempt (the pool's worker), for cancellation.
    worker: Any
    #: The pool to tell when the job's future is cancelled; None once the job is settled.
    _pool: Any

    if TYPE_CHECKING:

        def done(self) -> bool: ...
        def cancelled(self) -> bool: ...
        def exception(self) -> BaseException | None: ...
        def cancel(self, msg: Any | None = None) -> bool: ...
        def set_result(self, result: Any, /) -> None: ...
        def set_exception(self, exception: BaseException, /) -> None: ...

    def __repr__(self) -> str:
        state = ("queued", "running", "backoff", "done")[self.state]
        return f"<Job #{self.seq} {state} attempts={self.attempts}>"


@final
class PlainJob(Job):
    """A job without a future of its own: its outcome stays on the record for its owner."""

    __slots__ = (*JOB_SLOTS, "outcome", "value")

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        options: JobOptions,
        owner: JobOwner | None = None,
    ) -> None:
        self.fn = fn
        self.args = args
        self.options = options
        self.owner = owner
        self.seq = 0
        self.state = QUEUED
        self.attempts = 0
        self.worker = None
        self._pool = None
        #: 0 while unresolved, then RETURNED, RAISED or CANCELLED, with the return value or the
        #: exception in ``value``.
        self.outcome = 0
        self.value: Any = None

    def done(self) -> bool:
        return self.outcome != 0

    def cancelled(self) -> bool:
        return self.outcome == CANCELLED

    def exception(self) -> BaseException | None:
        return self.value if self.outcome == RAISED else None

    def cancel(self, msg: Any | None = None) -> bool:
        if self.outcome:
            return False
        self.outcome = CANCELLED
        return True

    def set_result(self, result: Any, /) -> None:
        self.outcome = RETURNED
        self.value = result

    def set_exception(self, exception: BaseException, /) -> None:
        self.outcome = RAISED
        self.value = exception


@final
class Scheduler:
    """FIFO admission of jobs under a set of limits; see the module docstring."""

    def __init__(self, limits: Sequence[Limit], max_workers: float = _INF) -> None:
        self.limits: tuple[Limit, ...] = tuple(limits)
        #: True if some limit depends on the clock: only then does the pool read it per job.
        self.timed = any(limit.timed for limit in self.limits)
        #: True without any limit (a size-only pool: its workers bound the concurrency): then
        #: the pool may admit the head of the line without poll() (see WorkerPool._work).
        self.simple = not self.limits
        self._queue: deque[Job] = deque()
        self._retry_ready: list[tuple[int, Job]] = []  # heap by submission order
        #: Jobs in their backoff, as a heap by the end of it.
        self.delayed: list[tuple[float, int, Job]] = []
        self._seq = 0

        # Worker accounting, kept by the pool (how many workers exist, how many are parked).
        self.max_workers = max_workers
        self.workers = 0
        self.idle = 0

        # Counters for statistics(); each is O(1) to keep.
        self.queued = 0
        self.running = 0
        self.backoff = 0
        self.completed = 0
        self.failed = 0
        self.cancelled = 0
        self.attempts = 0
        self.retries = 0

    # -- submission -------------------------------------------------------------------------------

    def submit(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        options: JobOptions,
        owner: JobOwner | None = None,
    ) -> PlainJob:
        """Queue a new :class:`PlainJob` at the back and return it."""
        job = PlainJob(fn, args, options, owner)
        self.enqueue(job)
        return job

    def enqueue(self, job: Job) -> None:
        """Queue a record the caller made (every field set but ``seq``) at the back."""
        self._seq += 1
        job.seq = self._seq
        self._queue.append(job)
        self.queued += 1

    def enqueue_all(self, jobs: list[PlainJob]) -> None:
        """Queue records the caller made, in order, at the back (a map's batch)."""
        seq = self._seq
        for job in jobs:
            seq += 1
            job.seq = seq
        self._seq = seq
        self._queue.extend(jobs)
        self.queued += len(jobs)

    @property
    def submitted(self) -> int:
        return self._seq

    @property
    def pending(self) -> int:
        """Jobs accepted and not finished: queued, running or in backoff."""
        return self.queued + self.running + self.backoff

    def has_queued(self) -> bool:
        """True if a job waits to start now or after its backoff (cheap, may see cancelled ones)."""
        return bool(self._queue or self._retry_ready or self.delayed)

    # -- admission --------------------------------------------------------------------------------

    def _head(self) -> Job | None:
        queue = self._queue
        while queue and queue[0].state != QUEUED:
            queue.popleft()  # cancelled while queued: dropped here, in O(1)
        ready = self._retry_ready
        while ready and ready[0][1].state != QUEUED:
            heappop(ready)
        if ready and not (queue and queue[0].seq < ready[0][0]):
            return ready[0][1]
        return queue[0] if queue else None

    def is_head(self, job: Job) -> bool:
        """True if *job* is the next to start."""
        return self._head() is job

    def _release_due(self, now: float) -> None:
        delayed = self.delayed
        while delayed and delayed[0][0] <= now + TICK:
            _, seq, job = heappop(delayed)
            if job.state == BACKOFF:
                job.state = QUEUED
                self.backoff -= 1
                self.queued += 1
                heappush(self._retry_ready, (seq, job))

    def next_wakeup(self) -> float:
        """When the earliest backoff ends (``inf`` if none)."""
        delayed = self.delayed
        while delayed and delayed[0][2].state != BACKOFF:
            heappop(delayed)
        return delayed[0][0] if delayed else _INF

    def poll(self, now: float) -> Job | float:
        """
        Admit the next job if the limits allow it now, or say how long to wait.

        Returns the admitted job (now ``RUNNING``; its limits are taken), or the time at which to
        poll again: finite for the clock (a rate slot or the end of a backoff), ``inf`` when only
        the end of a running attempt, or a new job, can change the answer.
        """
        if self.delayed and self.delayed[0][0] <= now + TICK:  # a timer may fire a tick early
            self._release_due(now)
        job = self._head()
        if job is None:
            return self.next_wakeup()
        earliest = -_INF
        for limit in self.limits:
            t = limit.earliest(job, now)
            if t > earliest:
                earliest = t
        if earliest > now + TICK:
            return min(earliest, self.next_wakeup())
        # The start is dated now, the moment it happens, never at the slot it was due: the job's
        # code runs right after this call (no checkpoint in between), so the times the limits
        # count are the times the job, and the server it calls, see. Dating a late wake-up back
        # to its slot would let the next start follow sooner than 1/rate on that clock (R49).
        # A bucket with burst >= 2 absorbs such lateness in its tolerance, so its long-run rate
        # does not drift; with burst=1 each late wake-up costs its lateness (see WorkerPool).
        # Less than a TICK ahead counts as now, and is dated at the slot (after now, not before).
        self._admit(job, earliest if earliest > now else now)
        return job

    def _admit(self, job: Job, at: float) -> None:
        if self._retry_ready and self._retry_ready[0][1] is job:
            heappop(self._retry_ready)
        else:
            self._queue.popleft()
        for limit in self.limits:
            limit.admit(job, at)
        job.state = RUNNING
        job.attempts += 1
        self.queued -= 1
        self.running += 1
        self.attempts += 1
        if job.attempts > 1:
            self.retries += 1

    def restamp(self, job: Job, at: float) -> None:
        """Re-date the admission :meth:`poll` just returned *job* for: it began at *at*, later.

        Called before any other admission, so each limit may treat it as its latest one.
        """
        for limit in self.limits:
            limit.restamp(job, at)

    # -- outcomes ---------------------------------------------------------------------------------

    def end_attempt(self, job: Job) -> None:
        """Release the limits the attempt held; the job's state is then set by one call below."""
        for limit in self.limits:
            limit.release(job)
        self.running -= 1
        job.worker = None

    def completed_job(self, job: Job) -> None:
        job.state = DONE
        self.completed += 1

    def failed_job(self, job: Job) -> None:
        """Count *job* as failed: after its attempt, or while it waits if the pool crashed."""
        if job.state == QUEUED:
            self.queued -= 1
        elif job.state == BACKOFF:
            self.backoff -= 1
        job.state = DONE
        self.failed += 1

    def cancelled_job(self, job: Job) -> None:
        """Count *job* as cancelled; if it waits (queued or in backoff) it is dropped, in O(1)."""
        if job.state == QUEUED:
            self.queued -= 1
        elif job.state == BACKOFF:
            self.backoff -= 1
        elif job.state == DONE:
            return
        job.state = DONE
        self.cancelled += 1

    def retry_at(self, job: Job, due: float) -> None:
        """Put *job* (whose attempt has ended) back in line after a backoff ending at *due*."""
        job.state = BACKOFF
        self.backoff += 1
        heappush(self.delayed, (due, job.seq, job))

    def drop_all(self) -> list[Job]:
        """Remove and return every job that waits (queued or in backoff), for kill()."""
        waiting = [job for job in self._queue if job.state == QUEUED]
        waiting += [job for _, job in self._retry_ready if job.state == QUEUED]
        waiting += [job for _, _, job in self.delayed if job.state == BACKOFF]
        waiting.sort(key=lambda job: job.seq)
        self._queue.clear()
        self._retry_ready.clear()
        self.delayed.clear()
        return waiting
