"""The crew of worker tasks: starting them, parking idle ones, waking them, retiring them.

The wake-up protocol has one rule: whenever a job is queued, some worker will look at the line
soon. The crew keeps it, in one place: :meth:`Crew.kick` does nothing while a worker is waking
(:attr:`Crew.waking` counts the workers woken or started that have not looked yet: they will);
otherwise it wakes the worker waiting for the clock (the *sleeper*, at most one) if the new job
may be due sooner, else the worker parked last, else starts a new worker, up to
``max_workers``. The callers only say what happened: a job was queued (:meth:`~Crew.kick`),
something changed that may let a waiting job start (:meth:`~Crew.look_again`), a worker took a
job and the line must be handed on (:meth:`~Crew.hand_on`), a remote limit freed up
(:meth:`~Crew.wake_now`).
"""

# R53 here is a reliability requirement: docs/reliability.md lists them.

from __future__ import annotations

import math
import weakref
from typing import TYPE_CHECKING, Final, Protocol, final

import anyio

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine
    from typing import Any

    from anyio.abc import TaskGroup

    from .._core._job import Job

__all__ = ["IDLE_RETIRE", "Crew", "Line", "Worker"]

_INF = math.inf

#: A worker idle (parked, with no job in sight) for a whole round of this many seconds exits (1 to
#: 2 rounds after it parked); the crew starts workers again when jobs come (R53).
IDLE_RETIRE: Final = 10.0


class Line(Protocol):
    """What the crew asks of the line of jobs (the scheduler)."""

    #: The jobs waiting to start, and those in their backoff (read once per job: an attribute).
    queued: int
    backoff: int
    #: No limit, key or pause: every waiting job may start as soon as a worker takes it.
    unlimited: bool

    def is_head(self, job: Job) -> bool: ...

    def has_queued(self) -> bool: ...


async def _no_body() -> None:  # pragma: no cover - replaced before the crew starts
    raise AssertionError("the crew's body was not set")


def _body_unset() -> Callable[[], Coroutine[Any, Any, None]]:  # pragma: no cover
    return _no_body


@final
class Worker:
    """One worker task's record: what it runs and how to stop or wake it."""

    __slots__ = ("event", "job", "retire", "scope", "stopping")

    def __init__(self) -> None:
        #: The cancel scope its attempts run in (cancelled to stop one attempt, or all on kill).
        self.scope: anyio.CancelScope | None = None
        #: Set to wake it while it is parked.
        self.event: anyio.Event | None = None
        #: The job whose attempt (or reservation) it runs now.
        self.job: Job | None = None
        #: The pool cancelled ``scope`` to stop the current job (its future was cancelled).
        self.stopping = False
        #: Woken to exit: it was idle for a whole round of reaping (see :meth:`Crew.reap`).
        self.retire = False


@final
class Crew:
    """The worker tasks of one pool, and who of them looks at the line of jobs next.

    :param line: the line of jobs the workers serve
    :param max_workers: how many workers may exist (the pool's ``size``, or ``inf``)
    Its body (the coroutine function a new worker task runs) is set by the layer above, which
    builds the workers on top of the crew (:meth:`set_body`).
    """

    __slots__ = (
        "_body",
        "count",
        "idle_round",
        "line",
        "max_workers",
        "parked",
        "reap_scope",
        "relay",
        "sleeper",
        "sleeper_deadline",
        "tg",
        "waking",
        "workers",
    )

    def __init__(self, line: Line, max_workers: float) -> None:
        self.line = line
        self.max_workers = max_workers
        #: The body of a new worker task, dereferenced at each spawn (see :meth:`set_body`).
        self._body: Callable[[], Callable[[], Coroutine[Any, Any, None]] | None] = _body_unset
        #: The task group workers are started in (None while the pool is not running).
        self.tg: TaskGroup | None = None
        #: Worker tasks started and not yet ended.
        self.count = 0
        #: The records of the running worker tasks (kill() stops their jobs).
        self.workers: set[Worker] = set()
        #: Workers woken (or started) that have not looked at the line yet. While it is
        #: nonzero a new job needs no wake-up of its own: that worker will see it.
        self.waking = 0
        #: Parked workers (insertion-ordered, woken LIFO), each with the reaping round it parked in.
        self.parked: dict[Worker, int] = {}
        #: The one worker that waits for the clock (a rate slot or a backoff), and until when.
        self.sleeper: Worker | None = None
        self.sleeper_deadline = _INF
        self.idle_round = 0
        #: A worker was woken to take the next job of a burst (see :meth:`hand_on`): if it takes
        #: one while more wait, it calls up a worker for each. Cleared when a worker parks (it
        #: found nothing: the burst was taken, the next begins with one worker again) or yields
        #: between jobs for fairness (:meth:`yielding`: it runs them itself, blocked in none).
        self.relay = False
        #: The supervisor's wait while no worker is parked; the first to park cancels it, so that
        #: the supervisor counts rounds of idleness (see :meth:`reap`). None while it counts.
        self.reap_scope: anyio.CancelScope | None = None

    def set_body(self, body: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Start each new worker task as ``body()``, a bound method of the layer above.

        Held through a weak reference: its object holds the crew, and a strong reference back
        would make a cycle that leaves every exited pool to the cyclic garbage collector (issue
        #21 item 17). That object outlives the worker tasks (the pool holds it, and so does
        each running worker's coroutine).
        """
        self._body = weakref.WeakMethod(body)

    def kick(self, job: Job | None) -> None:
        """Make sure some worker looks at the line soon: *job* was just queued (None: something
        changed). Nothing to do while a worker is waking: it will look."""
        if self.waking:
            return
        sleeper = self.sleeper
        if sleeper is not None:
            # It already waits for the clock on behalf of the head job; only a job that is now
            # the head (or a None) can need an earlier look.
            if job is None or self.line.is_head(job):
                self.wake(sleeper)
            return
        if self.parked:
            # The worker parked last: the others stay idle long enough to retire (IDLE_RETIRE).
            self.wake(next(reversed(self.parked)))
        else:
            self.spawn()

    def look_again(self) -> None:
        """Something changed that may let a waiting job start (limits, a pause, the size, a
        reservation given up): if one waits, make sure a worker looks."""
        if not self.waking and self.line.has_queued():
            self.kick(None)

    def hand_on(self) -> None:
        """A worker took the head job (or waits for the slot it was granted): if more jobs wait,
        another worker looks at the line meanwhile. Runs once per job, hence the attributes read
        here; the sleeper, if any, already watches the line for the clock."""
        line = self.line
        if not self.waking and self.sleeper is None and (line.queued or line.backoff):
            if self.relay and line.unlimited and line.queued > 1:
                # Each waiting job may start now, and the one that woke this worker did not take
                # them all meanwhile: they wait on I/O, not on CPU. A worker for each, at once.
                # Woken one by one (each handing on once it ran), a burst of n jobs would begin
                # over n iterations of the event loop, delaying the last ones.
                self.relay = False
                self._call_up(line.queued)
            else:
                # One worker first. Jobs that return without waiting are all run by the worker
                # that took the first (it goes on until its batch ends): calling up a worker for
                # each would wake them to find nothing, per batch (trio map: 1.6x the CPU).
                self.relay = line.unlimited
                self.kick(None)

    def _call_up(self, n: int) -> None:
        """Wake, then start, up to *n* workers (the parked ones first, the last parked first)."""
        parked = self.parked
        while n > 0 and parked:
            self.wake(next(reversed(parked)))
            n -= 1
        while n > 0 and self.spawn():
            n -= 1

    def yielding(self) -> None:
        """A worker lets other tasks run between its jobs (a batch ended), not blocked in one: a
        worker it woke need not call up others for the jobs it would run itself."""
        self.relay = False

    def wake_now(self) -> None:
        """A remote limit freed up: the job it refused asks again now. The sleeper waits for
        the clock on its behalf, so it is woken even while another worker is waking."""
        if self.sleeper is not None:
            self.wake(self.sleeper)
        else:
            self.kick(None)

    def wake(self, worker: Worker) -> None:
        """Wake a parked worker or the sleeper."""
        if worker is self.sleeper:
            self.sleeper = None
        else:
            del self.parked[worker]
        self.waking += 1
        assert worker.event is not None
        worker.event.set()

    def wake_all(self) -> None:
        """Wake every parked worker and the sleeper (the pool drains or stops)."""
        for worker in list(self.parked):
            self.wake(worker)
        if self.sleeper is not None:
            self.wake(self.sleeper)

    def wake_sleeper_before(self, due: float) -> None:
        """A job becomes due at *due*: wake the sleeper if it would wake later than that."""
        if self.sleeper is not None and due < self.sleeper_deadline:
            self.wake(self.sleeper)

    def spawn(self) -> bool:
        """Start a worker task, if the pool runs and has fewer than ``max_workers``; return
        whether one was started."""
        tg = self.tg
        if tg is None or self.count >= self.max_workers:
            return False
        body = self._body()
        if body is None:  # pragma: no cover - the pool's parts are gone: nothing runs it
            return False
        self.count += 1
        self.waking += 1
        tg.start_soon(body, name="werkpool worker")
        return True

    async def park(self, worker: Worker, wake_at: float) -> bool:
        """Wait until woken, or until *wake_at* (a rate slot or the end of a backoff).

        With ``wake_at == inf`` the worker is idle (parked); else it is the sleeper. Return False
        if it should exit instead: it was idle for a whole round of reaping (see :meth:`reap`).
        """
        self.relay = False  # it found nothing to start: the burst, if any, was taken
        event = worker.event = anyio.Event()
        if wake_at == _INF:
            self.parked[worker] = self.idle_round
            reap_scope = self.reap_scope
            if reap_scope is not None:
                # The first idle worker: the supervisor starts counting rounds (see reap()).
                self.reap_scope = None
                reap_scope.cancel()
        else:
            self.sleeper = worker
            self.sleeper_deadline = wake_at
        try:
            if wake_at == _INF:
                await event.wait()
            else:
                with anyio.CancelScope(deadline=wake_at):
                    await event.wait()
        finally:
            if event.is_set():
                self.waking -= 1
            elif worker is self.sleeper:
                self.sleeper = None
            else:
                self.parked.pop(worker, None)
        if worker.retire and self.line.has_queued():
            # Woken to retire, but a job came in meanwhile, whose submitter saw this wake-up
            # pending (waking) and so woke nobody else. If no worker waits for the clock, stay
            # and take it; if one does, it watches the head of the line: let it look again
            # (the job may be the new head) and leave.
            if self.sleeper is None:
                worker.retire = False
            elif not self.waking:
                self.wake(self.sleeper)
        return not worker.retire

    def reap(self) -> None:
        """A round of IDLE_RETIRE seconds ended: retire the workers idle for all of it.

        Called by the pool's supervisor while workers are parked (it keeps no timer when none
        is, and a park costs no timer either). Every worker parked before this round began has
        been idle for at least IDLE_RETIRE, and exits; the crew starts workers again when jobs
        come. So a pool at rest holds O(1) memory, whatever its past peak (R53).
        """
        round_ = self.idle_round
        self.idle_round += 1
        for other, parked_in in list(self.parked.items()):
            if parked_in < round_:
                other.retire = True
                self.wake(other)
