"""The job record: what one submitted job is, its states and outcomes, and who hears of it.

A job's state changes only in the scheduler (``_scheduler.py``); this module only defines the
record and the two protocols through which the scheduler and a job's future call upward: the
job's *owner* (a map, a ``call()``, start_soon's failure check) hears when it is settled, and its
*host* (the pool's workers) hears when its future is cancelled.
"""

# R50 here is a reliability requirement: docs/reliability.md lists them.

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, NoReturn, Protocol, final

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable

    from ._options import JobOptions

__all__ = [
    "BACKOFF",
    "CANCELLED",
    "DONE",
    "JOB_SLOTS",
    "QUEUED",
    "RAISED",
    "RESERVING",
    "RETURNED",
    "RUNNING",
    "Job",
    "JobHost",
    "JobOwner",
    "PlainJob",
    "protocol_safe",
    "spent",
]

# A job's states. QUEUED -> (RESERVING ->) RUNNING -> DONE, or RUNNING -> BACKOFF -> QUEUED for a
# retry; a waiting job may go straight to DONE (cancelled, or the pool was killed).
QUEUED: Final = 0  # in line to start (a first attempt, or a retry whose backoff is over)
RUNNING: Final = 1  # an attempt runs
BACKOFF: Final = 2  # between attempts, waiting out its backoff
DONE: Final = 3  # settled: returned, failed or cancelled
RESERVING: Final = 4  # a worker asks the remote limits for its attempt (see _limits.RemoteLimit)

# A PlainJob's outcome, kept on the record for its owner (a map reads it in place). Not states:
# a settled job is DONE whatever its outcome.
RETURNED: Final = 1
RAISED: Final = 2
CANCELLED: Final = 3

_STATE_NAMES: Final = ("queued", "running", "backoff", "done", "reserving")


class JobOwner(Protocol):
    """Something told when one of its jobs is settled and none of its code runs any more."""

    #: False if only failures and cancellations interest it: the scheduler then skips the call
    #: for a job that returned (start_soon's owner: that saves a call per job).
    notify_success: bool

    def job_settled(self, job: Job) -> None:
        """The job is settled (its outcome is set); called once, by the scheduler."""
        ...


class JobHost(Protocol):
    """Who runs a job: its future tells it, synchronously, when someone cancels it."""

    #: The thread whose event loop runs the jobs (a cancel from another thread is handed to it).
    thread: int

    def job_cancelled(self, job: Job) -> None:
        """The job's future was cancelled: drop the job, or stop its running attempt."""
        ...


#: The fields every job record has, whatever its class (see :class:`Job`).
JOB_SLOTS: Final = (
    "args",
    "attempts",
    "cost",
    "fn",
    "host",
    "lane",
    "options",
    "owner",
    "seq",
    "state",
    "worker",
)


def spent(*args: object) -> NoReturn:
    """What a settled job's ``fn`` becomes, so that its record keeps nothing of the job alive."""
    raise AssertionError("a settled job was run again")


def protocol_safe(error: BaseException, source: str = "the job") -> BaseException:
    """Wrap a StopIteration or StopAsyncIteration, as :pep:`479` does for generators.

    Raised raw from a future or a ``__anext__`` it would read as the end of an iteration (and
    asyncio's futures refuse it with a TypeError): R50.
    """
    if isinstance(error, (StopIteration, StopAsyncIteration)):
        wrapped = RuntimeError(f"{source} raised {type(error).__name__}")
        wrapped.__cause__ = error
        return wrapped
    return error


class Job:
    """
    One submitted job, as the scheduler sees it: a record with no task, coroutine or timer.

    This class only declares the fields (``__slots__ = ()``); each kind of record stores them in
    its own slots. A ``run()`` job *is* its future (``_futures.AsyncioFuture`` on asyncio,
    ``werkpool.Future`` on trio), so it costs one object; a map's or a ``call()``'s job is a
    :class:`PlainJob`, which keeps its outcome for its owner. Every kind has the future methods
    the scheduler settles it with.
    """

    if not TYPE_CHECKING:  # declared for the type checker below, stored by each subclass
        __slots__ = ()

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    options: JobOptions
    #: Who wants to hear when the job is settled (a map, a call, start_soon's failure check).
    owner: JobOwner | None
    #: The submission order: FIFO admission of retries among new jobs.
    seq: int
    state: int
    #: Attempts started so far.
    attempts: int
    #: The worker that runs the current attempt (to stop it when the future is cancelled).
    worker: Any
    #: Who to tell when the job's future is cancelled; None once the job is settled.
    host: JobHost | None
    #: What one attempt costs, per unit (``cost=``), or None: one attempt, no other unit.
    cost: dict[str, float] | None
    #: The line the job waits in: its key's (with the key's limits), or the scheduler's main
    #: lane for a job without a key; None until it is queued.
    lane: Any

    @property
    def key(self) -> Hashable:
        """The job's ``key=`` (None: no key), as its lane knows it: what a remote limit reads,
        instead of the lane itself."""
        lane = self.lane
        return None if lane is None else lane.key

    if TYPE_CHECKING:

        def done(self) -> bool: ...
        def cancelled(self) -> bool: ...
        def exception(self) -> BaseException | None: ...
        def cancel(self, msg: Any | None = None) -> bool: ...
        def set_result(self, result: Any, /) -> None: ...
        def set_exception(self, exception: BaseException, /) -> None: ...

    def __repr__(self) -> str:
        return f"<Job #{self.seq} {_STATE_NAMES[self.state]} attempts={self.attempts}>"


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
        self.host = None
        self.cost = None
        self.lane = None
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
