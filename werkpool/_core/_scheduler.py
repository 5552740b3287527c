"""The pool's sans-I/O core: the one place where a job's state changes.

The line of jobs, their admission under the limits (the fast path of a pool without limits
included), the remote limits' reservations, the settling of each attempt (the retry decision
among it), cancellation, the drain and kill(): every transition of a job and every counter is
here, in synchronous methods that read no clock. The pool passes ``now`` in, performs the I/O a
method hands back, and reports outcomes (httpcore's ``_assign_requests_to_connections`` is the
model). Each state change is thus atomic on the event loop, and ``tests/test_scheduler.py`` drives
the whole core with no event loop at all.
"""

# R27, R49 here are reliability requirements: docs/reliability.md lists them.

from __future__ import annotations

import math
from collections import deque
from heapq import heapify, heappop, heappush
from typing import TYPE_CHECKING, Final, cast, final

from ._event_sink import HeldEvents
from ._events import FINISHED, PAUSED, RESUMED, RETRYING, STARTED, SUBMITTED
from ._exceptions import RetryAfter
from ._job import (
    BACKOFF,
    CANCELLED,
    DONE,
    QUEUED,
    RESERVING,
    RETURNED,
    RUNNING,
    PlainJob,
    protocol_safe,
    spent,
)
from ._lanes import Keys, Lane
from ._options import next_delay
from ._rate_limit import RateLimit
from ._reservation import Reservation
from ._window_limit import WindowLimit

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Iterable, Sequence
    from typing import Any

    from ._event_sink import EventSink
    from ._job import Job, JobOwner
    from ._lanes import KeyOrder
    from ._limit import Limit
    from ._options import JobOptions
    from ._ratelimit_headers import Budget
    from ._remote_limit import RemoteLimit

__all__ = ["DEFAULT_MAX_RETRY_AFTER", "TICK", "Reservation", "Scheduler"]

#: A wait shorter than this (1 ns, the resolution of the event loops' clocks) is no wait: the
#: start is admitted at once and dated at its slot, less than a tick *after* now (never before:
#: see :meth:`Scheduler.poll`). Without it a rate of 1e12/s would ask the loop for sleeps of
#: 1e-12 s, which some clocks round to zero and spin on.
TICK: Final = 1e-9

#: The longest pushback the pool honours by default (``max_retry_after=``): 15 minutes. A
#: ``Retry-After`` of 1e308 s or a date in year 9999 would otherwise stop a pool or key for good.
DEFAULT_MAX_RETRY_AFTER: Final = 900.0

_INF = math.inf


def _nothing() -> None:
    pass


def _name(limit: Limit) -> object:
    """The ``name=`` of *limit*'s value (None if it has none)."""
    return getattr(getattr(limit, "spec", None), "name", None)


def _no_limits() -> tuple[Limit, ...]:
    return ()


@final
@final
class Scheduler:
    """FIFO admission of jobs under a set of limits, and every change of a job's state.

    :param limits: the local limits, all taken by every attempt (AND)
    :param remote: the remote limits, asked after the local ones admit a job
    :param on_drained: called once the pool closes (or was killed) and no job is pending: the
        pool's supervisor may stop
    """

    def __init__(
        self,
        limits: Sequence[Limit] = (),
        remote: Sequence[RemoteLimit] = (),
        *,
        per_key: Callable[[], tuple[Limit, ...]] = _no_limits,
        key_weight: Callable[[Hashable], float] | None = None,
        key_order: KeyOrder = "fair",
        retry_after: Callable[[Exception], float | RetryAfter | None] | None = None,
        on_drained: Callable[[], None] = _nothing,
        max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
    ) -> None:
        self.limits: tuple[Limit, ...] = tuple(limits)
        self.remote: tuple[RemoteLimit, ...] = tuple(remote)
        #: Makes a new key's own limits (the pool's ``per_key=``).
        self.per_key = per_key
        #: A key's weight in the fair share of the pool-wide limits (None: equal weights).
        self.key_weight = key_weight
        #: How the keys share the pool-wide limits: "fair" or "submitted" (the pool's option).
        self.key_order = key_order
        #: Maps a job's error to a pushback delay in seconds, or None (the pool's retry_after=).
        self.retry_after = retry_after
        #: The longest pause a pushback may cause, in seconds (the pool's ``max_retry_after=``).
        self.max_retry_after = max_retry_after
        # The jobs without a key: first attempts in order, and retries whose backoff is over as
        # a heap by submission order (each key's lane has the same two lines).
        self._queue: deque[Job] = deque()
        self._retry_ready: list[tuple[int, Job]] = []
        #: The lanes of the keys in use (made when the first job with a key comes).
        self.keys: Keys | None = None
        #: No attempt starts before this time (pause(), pause_for(), a pushback).
        self.paused_until = -_INF
        self.timed = False
        self.unlimited = False
        self._configure()
        self.on_drained = on_drained
        #: Jobs in their backoff, as a heap by its end.
        self.backoffs: list[tuple[float, int, Job]] = []
        #: The jobs of :attr:`backoffs` that wait out a pushback (by submission number), not a
        #: backoff of their own: resume() ends their wait.
        self.pushed_back: set[int] = set()
        self._seq = 0
        #: How many reservations workers perform now, and how many may be in flight at once:
        #: 1 keeps FIFO exact; more (a store that pipelines requests, and no local limit that
        #: dates its latest admission, see :meth:`restamp`) keeps it up to the ones in flight.
        self.reserving = 0
        self.depth = 1
        #: A remote limit refused: no reservation before this time.
        self._hold_until = -_INF
        #: shutdown() began (or kill()): once nothing is pending, the pool may stop.
        self.closing = False
        #: kill() began or the pool crashed: nothing is retried, a job that returns is cancelled.
        self.killed = False
        self._drain_told = False

        # Counters for statistics(); each is O(1) to keep.
        self.queued = 0  # reserving jobs count as queued: they have not started
        self.running = 0
        self.backoff = 0
        self.completed = 0
        self.failed = 0
        self.cancelled = 0
        self.attempts = 0
        self.retries = 0
        self.pushbacks = 0
        #: What running attempts reported they really cost (:meth:`settle`), by job number.
        self.settled: dict[int, dict[str, float]] = {}
        #: Told of every transition when the pool has hooks; None (the common case): no work.
        self.sink: EventSink | None = None

    def _new_keys(self) -> Keys:
        """The keys' bookkeeping, made when the first key is used (or the keys were cleared)."""
        return Keys(self.per_key, TICK, self.key_weight, fair=self.key_order == "fair")

    def _configure(self) -> None:
        """Work out the fast paths after a change of limits, keys or pause."""
        #: True if some limit depends on the clock: only then does the pool read it per job. A
        #: remote limit does (a refusal holds starts until a time, a grant may be for later), and
        #: so do keys (their limits, their pauses) and a pause.
        self.timed = (
            bool(self.remote)
            or self.keys is not None
            or self.paused_until != -_INF
            or any(limit.timed for limit in self.limits)
        )
        #: No limit, key or pause at all (a size-only pool: its workers bound the concurrency):
        #: poll() then takes the head of the line without asking any limit (the fast path).
        self.unlimited = (
            not self.limits and not self.remote and self.keys is None and self.paused_until == -_INF
        )

    # -- submission -------------------------------------------------------------------------------

    def submit(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        options: JobOptions,
        owner: JobOwner | None = None,
        key: Hashable = None,
        cost: dict[str, float] | None = None,
    ) -> PlainJob:
        """Queue a new :class:`PlainJob` at the back and return it."""
        job = PlainJob(fn, args, options, owner)
        job.cost = cost
        self.enqueue(job, key)
        return job

    def enqueue(self, job: Job, key: Hashable = None) -> None:
        """Queue a record the caller made (every field set but ``seq``; ``lane`` None) at the
        back of the line of *key* (None: the jobs without a key)."""
        if key is not None:
            self.enqueue_keyed(job, key)
            return
        self._seq += 1
        job.seq = self._seq
        self._queue.append(job)
        self.queued += 1
        if self.sink is not None:
            self.sink.job_event(SUBMITTED, job)

    def enqueue_keyed(self, job: Job, key: Hashable) -> None:
        """Queue a record the caller made at the back of the line of *key*."""
        keys = self.keys
        if keys is None:
            keys = self.keys = self._new_keys()
            self._configure()
        lane = job.lane = keys.lane(key)  # first: a key_weight that raises changes nothing
        self._seq += 1
        job.seq = self._seq
        self.queued += 1
        lane.pending += 1
        lane.push(job)
        keys.queued(lane, job)
        if self.sink is not None:
            self.sink.job_event(SUBMITTED, job)

    def enqueue_all(self, jobs: list[PlainJob]) -> None:
        """Queue records the caller made, in order, at the back (a map's batch)."""
        seq = self._seq
        for job in jobs:
            seq += 1
            job.seq = seq
        self._seq = seq
        self._queue.extend(jobs)
        self.queued += len(jobs)
        sink = self.sink
        if sink is not None:
            for job in jobs:
                sink.job_event(SUBMITTED, job)

    @property
    def submitted(self) -> int:
        """Jobs accepted so far."""
        return self._seq

    @property
    def pending(self) -> int:
        """Jobs accepted and not settled: queued (or reserving), running or in backoff."""
        return self.queued + self.running + self.backoff

    @property
    def over(self) -> bool:
        """The pool closes (or was killed) and no job is pending: workers may leave."""
        return self.closing and not (self.queued or self.running or self.backoff)

    def has_queued(self) -> bool:
        """True if a job waits to start, now or after its backoff (a worker must watch the line)."""
        return bool(self.queued or self.backoff)

    # -- admission --------------------------------------------------------------------------------

    def _head(self) -> Job | None:
        """The next job to start (a due retry or the oldest queued one); drops settled records."""
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
        """True if *job* is the next to start (of its key, for a job with a key)."""
        lane = job.lane
        return (self._head() if lane is None else lane.head()) is job

    def _release_due(self, now: float) -> None:
        """Move the jobs whose backoff ended by *now* back into line (by submission order)."""
        backoffs = self.backoffs
        while backoffs and backoffs[0][0] <= now + TICK:
            _, seq, job = heappop(backoffs)
            if self.pushed_back:
                self.pushed_back.discard(seq)
            if job.state == BACKOFF:
                job.state = QUEUED
                self.backoff -= 1
                self.queued += 1
                self._requeue(job)

    def _requeue(self, job: Job) -> None:
        """*job* waits again in its lane, ahead of the jobs submitted after it."""
        lane = job.lane
        if lane is None:
            heappush(self._retry_ready, (job.seq, job))
        else:
            lane.requeue(job)
            self.keys.look_again(lane)  # type: ignore[union-attr]  # a lane implies keys

    def next_wakeup(self) -> float:
        """When the earliest backoff ends, or a key waiting for the clock may start (``inf``:
        neither)."""
        backoffs = self.backoffs
        while backoffs and backoffs[0][2].state != BACKOFF:
            self.pushed_back.discard(heappop(backoffs)[1])
        wakeup = backoffs[0][0] if backoffs else _INF
        if self.keys is not None:
            wakeup = min(wakeup, self.keys.next_wakeup())
        return wakeup

    def earliest_start(self, now: float) -> float:
        """When the local limits would next admit a start, whatever the job (for a map's pace)."""
        earliest = self.paused_until
        for limit in self.limits:
            t = limit.earliest(None, now)  # type: ignore[arg-type]
            if t > earliest:
                earliest = t
        return earliest

    def poll(self, now: float) -> Job | Reservation | float:
        """
        Admit the next job if the limits allow it now, or say how long to wait.

        Returns the admitted job (now ``RUNNING``; its limits are taken); or, with remote limits,
        a :class:`Reservation` for the worker to perform; or the time at which to poll again:
        finite for the clock (a rate slot, the end of a backoff or of a refusal), ``inf`` when
        only the end of an attempt or of a reservation, or a new job, can change the answer.
        *now* is read only if :attr:`timed` or a backoff runs (else pass anything).
        """
        if self.unlimited and not self.backoffs and not self._retry_ready:
            # The fast path of a pool without limits: take the head of the line, skipping the
            # records cancelled while queued. Only first attempts are in _queue.
            queue = self._queue
            while queue:
                first = queue.popleft()
                if first.state == QUEUED:
                    first.state = RUNNING
                    first.attempts = 1
                    self.queued -= 1
                    self.running += 1
                    self.attempts += 1
                    return first
            return _INF
        if self.backoffs and self.backoffs[0][0] <= now + TICK:  # a timer may fire a tick early
            self._release_due(now)
        job = self._head()
        keys = self.keys
        if keys is not None:
            # The head that goes next by the keys' fair share (the jobs without a key are one
            # more flow), among the keys that may start now; FIFO within each key.
            keyed = keys.pick(now) if job is None else keys.pick(now, keys.main_tag(), job.seq)
            if keyed is not None:
                job = keyed
            keys.sweep(now)
        if job is None:
            return self.next_wakeup()
        earliest = self.paused_until
        for limit in self.limits:
            t = limit.earliest(job, now)
            if t > earliest:
                earliest = t
        if self.remote:
            if self.reserving >= self.depth:
                return min(_INF, self.next_wakeup())  # a reservation in flight ends first
            if self._hold_until > earliest:
                earliest = self._hold_until
        if earliest > now + TICK:
            return min(earliest, self.next_wakeup())
        # The start is dated now, the moment it happens, never at the slot it was due: the job's
        # code runs right after this call (no checkpoint in between), so the times the limits
        # count are the times the job, and the server it calls, see. Dating a late wake-up back
        # to its slot would let the next start follow sooner than 1/rate on that clock (R49).
        # A bucket with burst >= 2 absorbs such lateness in its tolerance, so its long-run rate
        # does not drift; with burst=1 each late wake-up costs its lateness (see WorkerPool).
        # Less than a TICK ahead counts as now, and is dated at the slot (after now, not before).
        at = earliest if earliest > now else now
        self._take(job)
        if keys is not None:
            keys.served(job.lane)  # its flow's next head comes one share later
        for limit in self.limits:
            limit.admit(job, at)
        lane = job.lane
        if lane is not None:
            for limit in lane.limits:
                limit.admit(job, at)
        if self.remote:
            job.state = RESERVING
            self.reserving += 1
            return Reservation(job, self.remote, self.depth > 1)
        self._started(job)
        return job

    def _take(self, job: Job) -> None:
        """Take *job*, the head (of its key), out of the line."""
        lane = job.lane
        if lane is not None:
            lane.take(job)
        elif self._retry_ready and self._retry_ready[0][1] is job:
            heappop(self._retry_ready)
        else:
            self._queue.popleft()

    def _refund(self, job: Job) -> None:
        """Take back the admission of *job*, whose attempt never started."""
        for limit in self.limits:
            limit.refund(job)
        lane = job.lane
        if self.keys is not None:
            self.keys.unserved(lane)  # nor did it use its key's share
        if lane is not None:
            for limit in lane.limits:
                limit.refund(job)

    def _started(self, job: Job) -> None:
        """*job*, taken out of line, starts an attempt (the hooks hear of it by :meth:`began`)."""
        job.state = RUNNING
        job.attempts += 1
        self.queued -= 1
        self.running += 1
        self.attempts += 1
        if job.attempts > 1:
            self.retries += 1

    def began(self, job: Job) -> None:
        """The worker owns the attempt :meth:`poll` (or :meth:`granted`) started, and is about
        to run the job's code: tell the hooks it started (call only if :attr:`sink` is set).

        Not earlier: a hook may resize the pool, change its limits or cancel the job, and each
        needs the attempt to be found on its worker (to count it, or to stop it). A hook that
        cancelled the job leaves it ``done()``: the worker then stops it unrun.
        """
        self.sink.job_event(STARTED, job)  # type: ignore[union-attr]  # see above

    def restamp(self, job: Job, at: float) -> None:
        """Re-date the admission :meth:`poll` just returned *job* for: it began at *at*, later.

        Called before any other admission, so each limit may treat it as its latest one.
        """
        for limit in self.limits:
            limit.restamp(job, at)
        lane = job.lane
        if lane is not None:
            for limit in lane.limits:
                limit.restamp(job, at)

    # -- remote limits: the answers to a Reservation ----------------------------------------------

    def granted(self, reservation: Reservation, at: float = -_INF) -> bool:
        """Every remote limit granted the attempt, from time *at*. Return True to run it; False
        if the job was cancelled meanwhile, or a pause began that holds it past *at* (its local
        limits are released; a paused job waits again at the head): the worker gives the remote
        credit back."""
        job = reservation.job
        self.reserving -= 1
        if job.state != RESERVING or job.done() or self.killed:
            # Cancelled meanwhile (its worker is being stopped), or the pool is being killed.
            self._refund(job)
            self._cancelled(job)
            return False
        lane = job.lane
        hold = self.paused_until
        if lane is not None and lane.paused_until > hold:
            hold = lane.paused_until
        if hold > at + TICK or (reservation.pipelined and self.depth == 1):
            # A pushback paused the pool (or the key) while the remote limits were asked; or
            # set_limits() gave it a rate or window meanwhile, which must date this start: the
            # job asks again under it, one request at a time (#21 item 10).
            self._refund(job)
            self._back_to_the_head(job)
            return False
        self._started(job)
        return True

    def refused(self, reservation: Reservation, retry_at: float, key: bool = False) -> None:
        """A remote limit refused (and none holds credit now): the job goes back to the head
        of the line, and no reservation is made before *retry_at*: no reservation of the job's
        key if *key* (a per-key remote limit refused), else none at all."""
        self.reserving -= 1
        job = reservation.job
        self._refund(job)
        lane = job.lane
        if key and lane is not None:
            if retry_at > lane.held_until:
                lane.held_until = retry_at
        elif retry_at > self._hold_until:
            self._hold_until = retry_at
        self._back_to_the_head(job)

    def remote_freed(self, key: Hashable | None = None) -> bool:
        """A remote limit has credit again (another process released a slot): end the hold of
        a refusal, the pool's (*key* None) or *key*'s, so the head asks again now rather than
        at its fallback time. Return True if some job may ask now (the caller wakes a worker).
        """
        if key is None:
            if self._hold_until == -_INF:
                return False
            self._hold_until = -_INF
            return self.queued > 0
        keys = self.keys
        lane = None if keys is None else keys.lanes.get(key)
        if lane is None or lane.held_until == -_INF:
            return False
        lane.held_until = -_INF
        assert keys is not None
        keys.look_again(lane)
        return lane.head() is not None

    def abandoned(self, reservation: Reservation) -> None:
        """The worker's request was cancelled before an answer: undo the reservation."""
        self.reserving -= 1
        self._refund(reservation.job)
        self._back_to_the_head(reservation.job)

    def _back_to_the_head(self, job: Job) -> None:
        """A reservation ended without an attempt: *job* waits again, first in line; or it is
        settled as cancelled if its future was cancelled meanwhile, or the pool killed."""
        if job.state != RESERVING:
            return
        if job.done() or self.killed:
            self._cancelled(job)
        else:
            job.state = QUEUED
            self._requeue(job)  # its seq puts it back at the head

    # -- outcomes of an attempt -------------------------------------------------------------------

    def _end_attempt(self, job: Job) -> None:
        """The attempt ended: release its limits."""
        if self.settled:
            self.settled.pop(job.seq, None)
        for limit in self.limits:
            limit.release(job)
        lane = job.lane
        if lane is not None:
            self._lane_released(lane, job)
        self.running -= 1
        job.worker = None

    def _lane_released(self, lane: Lane, job: Job) -> None:
        """An attempt of a job with a key ended: release the key's limits."""
        for limit in lane.limits:
            limit.release(job)
        self.keys.released(lane)  # type: ignore[union-attr]  # a lane implies keys

    def returned(self, job: Job, result: object) -> None:
        """The attempt returned *result* in time: the job is done, unless cancelled meanwhile."""
        # _end_attempt(), written out: this runs once per job.
        if self.settled:
            self.settled.pop(job.seq, None)
        if self.limits:
            for limit in self.limits:
                limit.release(job)
        lane = job.lane
        if lane is not None:
            self._lane_released(lane, job)
            self.keys.settled(lane)  # type: ignore[union-attr]  # a lane implies keys
        self.running -= 1
        job.worker = None
        job.state = DONE
        if type(job) is PlainJob:  # a map's or a call's: its outcome is two fields, set here
            if job.outcome or self.killed:
                self.cancelled += 1  # cancelled while it ran, yet it returned
                job.outcome = CANCELLED
            else:
                self.completed += 1
                job.outcome = RETURNED
                job.value = result
            # A map keeps the record until its result is yielded: fn and args are the map's
            # function and the item, nothing to free early.
        else:
            job.host = None  # settled: cancelling its future no longer concerns the pool
            if job.done() or self.killed:
                # Cancelled while running (or the pool is being killed), yet it returned: the
                # future ends cancelled, never with a value it was not meant to get.
                self.cancelled += 1
                job.cancel()
            else:
                self.completed += 1
                job.set_result(result)
            job.fn = spent  # the future the caller keeps holds neither callable nor arguments
            job.args = ()
        if self.sink is not None:
            self.sink.job_event(FINISHED, job, "cancelled" if job.cancelled() else "completed")
        owner = job.owner
        if owner is not None and owner.notify_success:
            job.owner = None
            owner.job_settled(job)
        if self.closing and not (self.queued or self.running or self.backoff):
            self._drained()

    def raised(self, job: Job, error: Exception, now: float) -> float:
        """The attempt failed with *error* (its own, or a TimeoutError) at *now*.

        Retry the job if its options allow it, else fail it. Return the end of its backoff
        (``inf`` if it is settled), so the caller can wake a worker that sleeps longer.

        :raises BaseException: what the job's backoff raised, if not an :exc:`Exception` (the
            job fails with it too)
        """
        settled = self.settled.get(job.seq) if self.settled else None
        self._end_attempt(job)
        if job.done():  # its future was cancelled while it ran
            self._cancelled(job)
            return _INF
        safe = protocol_safe(error)
        options = job.options
        if isinstance(safe, RetryAfter) or self.retry_after is not None:
            # The pushback's pause is told once the job waits for its retry (or failed): a
            # hook acting on the pool from it must not find the job still running.
            held = self._hold_events()
            try:
                try:
                    pause = self._pushback(job, safe, now, settled)
                except Exception as bad:
                    bad.__cause__ = safe
                    self._failed(job, protocol_safe(bad, "retry_after"))
                    return _INF
                except BaseException as bad:
                    # KeyboardInterrupt, SystemExit: as for the backoff's below (R27).
                    self._failed(job, bad)
                    raise
                if pause is not None:
                    if job.attempts <= options.retries and not self.killed:
                        # Retried once the pause is over: the pause replaces its backoff.
                        return self._back_off(job, pause, safe, now, pushback=True)
                    self._failed(job, safe)
                    return _INF
            finally:
                self._replay_events(held)
        if (
            job.attempts <= options.retries
            and isinstance(safe, options.retryable)
            and not self.killed
        ):
            try:
                delay = next_delay(options, job.attempts)
            except Exception as bad:
                bad.__cause__ = safe
                self._failed(job, protocol_safe(bad, "the backoff"))
                return _INF
            except BaseException as bad:
                # KeyboardInterrupt, SystemExit: as when the job raises them, its future
                # holds the error, and it goes on to stop the pool.
                self._failed(job, bad)
                raise
            return self._back_off(job, now + delay, safe, now)
        self._failed(job, safe)
        return _INF

    def _hold_events(self) -> HeldEvents | None:
        """Record what the hooks are told from now on, until :meth:`_replay_events`: the steps
        of one transition are told once it is complete. None: no hooks (or held already)."""
        sink = self.sink
        if sink is None or type(sink) is HeldEvents:
            return None
        held = HeldEvents(sink)
        self.sink = held
        return held

    def _replay_events(self, held: HeldEvents | None) -> None:
        """Tell the hooks what was held, in order (a hook may start another transition)."""
        if held is not None:
            if self.sink is held:
                self.sink = held.sink
            held.replay()

    def _back_off(
        self, job: Job, due: float, error: BaseException, now: float, pushback: bool = False
    ) -> float:
        """*job* failed with *error* at *now* and waits until *due* for its next attempt (the
        end of a *pushback*'s pause, or its backoff); return *due*."""
        job.state = BACKOFF
        self.backoff += 1
        heappush(self.backoffs, (due, job.seq, job))
        if pushback:
            self.pushed_back.add(job.seq)
        if self.sink is not None:
            self.sink.job_event(RETRYING, job, error=error, delay=due - now)
        return due

    def _pushback(
        self,
        job: Job,
        error: BaseException,
        now: float,
        settled: dict[str, float] | None = None,
    ) -> float | None:
        """If *error* is a provider's pushback, pause what it names (its scope: the job's key,
        the pool, or one limit), slow its adaptive rates down, and give the refused attempt's
        cost (*settled*, if it reported one) back to its limits; return the end of the pause,
        or None (no pushback).

        :raises Exception: what the ``retry_after`` callable raised, or a TypeError or
            ValueError if it returned something that is not a delay, or the scope names no limit
        """
        # What was asked when something before the pool clamped it already: the httpx transport
        # raises a RetryAfter clamped to its own max_retry_after, with ``clamped_from`` set.
        asked: object = None
        scope: str | None = None
        if isinstance(error, RetryAfter):
            delay: object = error.seconds
            asked = getattr(error, "clamped_from", None)
            scope = getattr(error, "scope", None)
        else:
            assert self.retry_after is not None
            assert isinstance(error, Exception)
            delay = cast("object", self.retry_after(error))
            if delay is None:
                return None
            if isinstance(delay, RetryAfter):  # a delay with a scope
                scope = delay.scope
                delay = delay.seconds
            if isinstance(delay, bool) or not isinstance(delay, (int, float)):
                raise TypeError(
                    f"retry_after must return None, a finite number of seconds >= 0 or a "
                    f"werkpool.RetryAfter, not {type(delay).__name__}"
                )
            if not math.isfinite(delay) or delay < 0:
                raise ValueError(
                    f"retry_after must return None or a finite number of seconds >= 0, "
                    f"got {delay!r}"
                )
        seconds = float(delay)  # type: ignore[arg-type]
        clamped_from = None
        if isinstance(asked, float) and asked > seconds:
            clamped_from = asked
        if seconds > self.max_retry_after:
            if clamped_from is None:
                clamped_from = seconds
            seconds = self.max_retry_after
        until = now + seconds
        lane = job.lane
        key = None if lane is None else lane.key
        self.check_scope(scope, key)
        # The provider charged nothing for the refused attempt: its cost comes back to every
        # limit that counted it (before the pushback fills the bucket of what it holds).
        self._take_back_all(job, settled if settled is not None else job.cost, now)
        self.push_back(key, now, until, clamped_from, scope, job)
        return until

    def _limits_of(self, job: Job) -> Iterable[Limit]:
        """The local limits an attempt of *job* goes through: the pool's, then its key's."""
        yield from self.limits
        lane = job.lane
        if lane is not None:
            yield from lane.limits

    def _take_back_all(self, job: Job, cost: dict[str, float] | None, now: float) -> None:
        """Give back what *job*'s refused attempt was charged in the rates and windows (a
        concurrency limit was released as the attempt ended)."""
        for limit in self._limits_of(job):
            if isinstance(limit, (RateLimit, WindowLimit)):
                unit = limit.unit
                amount = 1 if unit is None else (0 if cost is None else cost.get(unit, 0))
                if amount:
                    limit.take_back(job, amount, now)

    def settle(self, job: Job, cost: dict[str, float], now: float) -> None:
        """*job*'s running attempt really cost *cost* (units it names; the others as announced):
        each limit counting a unit charges or takes back the difference with what it counted.
        A second call replaces the first."""
        counted = self.settled.get(job.seq)
        if counted is None:
            counted = dict(job.cost) if job.cost else {}
        for limit in self._limits_of(job):
            unit = limit.unit
            if unit is None or unit not in cost:
                continue
            delta = cost[unit] - counted.get(unit, 0)
            if delta > 0:
                limit.charge(job, delta, now)
            elif delta < 0:
                limit.take_back(job, -delta, now)
        counted.update(cost)
        self.settled[job.seq] = counted
        keys = self.keys
        if job.lane is not None and keys is not None:
            keys.look_again(job.lane)  # its limits may admit sooner (or later) now

    def limit_names(self, key: Hashable = None) -> set[str]:
        """The names of the pool's limits (and *key*'s, if it has a lane)."""
        limits: list[Limit] = list(self.limits)
        if key is not None and self.keys is not None:
            lane = self.keys.lanes.get(key)
            if lane is not None:
                limits.extend(lane.limits)
        names = {getattr(getattr(limit, "spec", None), "name", None) for limit in limits}
        return {name for name in names if isinstance(name, str)}

    def check_scope(self, scope: str | None, key: Hashable) -> None:
        """Raise a ValueError if *scope* names no limit of the pool (nor of *key*)."""
        if scope is None or scope in ("key", "pool"):
            return
        names = self.limit_names(key)
        if scope not in names:
            raise ValueError(
                f"a pushback's scope {scope!r} names no limit of this pool (scopes: 'key', "
                f"'pool'{''.join(', ' + repr(name) for name in sorted(names))})"
            )

    def push_back(
        self,
        key: Hashable,
        now: float,
        until: float,
        clamped_from: float | None = None,
        scope: str | None = None,
        job: Job | None = None,
    ) -> None:
        """A provider pushed back at *now*: start nothing of what *scope* names before *until*,
        and slow its adaptive rates down. A job's :exc:`RetryAfter` comes here (*job*: the
        refused attempt's), and so does a pushback heard without failing a job (a last 429
        handed to its caller).

        Which refusal pauses what: scope ``"key"`` (the default with a *key*) pauses *key* and
        slows its adaptive limits only; ``"pool"`` (the default without) pauses the pool and
        slows the pool's adaptive limits only; a limit's name holds that limit only (the pool's,
        and *key*'s of that name), and slows it if adaptive. Check a name with
        :meth:`check_scope` first.

        *until* is at most ``max_retry_after`` away (the caller clamped it); *clamped_from*: the
        seconds the provider asked for, if more (the paused event reports it).
        """
        if scope is None or (scope == "key" and key is None):
            scope = "pool" if key is None else "key"
        self.pushbacks += 1
        if scope == "pool":
            for limit in self.limits:
                limit.pushback(now, until, True, job)
            self.pause(until, clamped_from)
        elif scope == "key":
            keys = self.keys
            lane = None if keys is None else keys.lanes.get(key)
            if lane is not None:
                for limit in lane.limits:
                    limit.pushback(now, until, True, job)
            self.pause_key(key, until, clamped_from)
        else:
            for limit in self._named(scope, key):
                limit.pushback(now, until, True, job)
            if key is not None and self.keys is not None:
                lane = self.keys.lanes.get(key)
                if lane is not None:
                    self.keys.look_again(lane)  # it waits for the clock now
            self._configure()  # a held concurrency limit reads the clock from now on

    def _named(self, scope: str, key: Hashable) -> list[Limit]:
        """The pool's limits named *scope*, and *key*'s."""
        found = [limit for limit in self.limits if _name(limit) == scope]
        if key is not None and self.keys is not None:
            lane = self.keys.lanes.get(key)
            if lane is not None:
                found.extend(limit for limit in lane.limits if _name(limit) == scope)
        return found

    def observe(self, budgets: Iterable[Budget], key: Hashable, now: float) -> int:
        """A server's budgets, read at *now* from its rate-limit headers (#22 item 3): each
        lowers the matching limit of the pool (*key* None) or of *key* until its reset
        (:meth:`RateLimit.observe`); return how many budgets found a limit.

        A budget matches a local :class:`RateLimit` or :class:`WindowLimit` of its unit (None,
        requests: the limits that count attempts; ``"tokens"``: ``unit="tokens"``; ``"input-
        tokens"`` also matches ``unit="input_tokens"``); among several of the unit, the one
        whose ``per`` is nearest the budget's window, else whose count is nearest its limit,
        else the first. A reset further than ``max_retry_after`` away is clamped to it.
        """
        if key is None:
            limits: tuple[Limit, ...] = self.limits
            lane = None
        else:
            keys = self.keys
            lane = None if keys is None else keys.lanes.get(key)
            if lane is None:
                if not any(type(limit) in _OBSERVING for limit in self.per_key()):
                    return 0  # no limit of a key could take it: no lane made for nothing
                if keys is None:
                    keys = self.keys = self._new_keys()
                    self._configure()
                lane = keys.lane(key)
            limits = lane.limits
        applied = 0
        for budget in budgets:
            limit = _match(budget, limits)
            if limit is not None:
                until, refill = _hold(budget, now, self.max_retry_after)
                limit.observe(budget.remaining, until, now, refill)
                applied += 1
        if lane is not None and not lane.pending:
            assert self.keys is not None
            self.keys.rest(lane)  # a key held with no job: dropped once its hold is over
        return applied

    # -- runtime control --------------------------------------------------------------------------

    def pause(self, until: float, clamped_from: float | None = None) -> None:
        """Start nothing before *until* (``inf``: until :meth:`resume`); never shortens a pause.
        *clamped_from*: see :meth:`push_back`."""
        if until > self.paused_until:
            self.paused_until = until
            self._configure()
            if self.sink is not None:
                if clamped_from is None:
                    self.sink.pause_event(PAUSED, None, until)
                else:
                    self.sink.pause_event(PAUSED, None, until, clamped_from)

    def pause_key(self, key: Hashable, until: float, clamped_from: float | None = None) -> None:
        """Start no job of *key* before *until*; never shortens the key's pause."""
        if self.keys is None:
            self.keys = self._new_keys()
            self._configure()
        keys = self.keys
        lane = keys.lane(key)
        if until > lane.paused_until:
            lane.paused_until = until
            keys.look_again(lane)  # it waits for the clock now
            if self.sink is not None:
                if clamped_from is None:
                    self.sink.pause_event(PAUSED, key, until)
                else:
                    self.sink.pause_event(PAUSED, key, until, clamped_from)
        if not lane.pending:
            keys.rest(lane)  # a key paused with no job: dropped once the pause is over

    def resume(self, now: float = -_INF) -> None:
        """End every pause and pushback, the pool's and its keys', at *now*.

        The hooks hear of each pause that was still running at *now* (one whose end already
        passed ended then, with no event). The rates a pushback filled hold again only what the
        real starts left (:meth:`RateLimit.end_pushback`), and the jobs waiting out a pushback
        are due at once: the next attempt starts as soon as the limits allow, never closer than
        the rate permits.
        """
        sink = self.sink
        if sink is not None and self.paused_until > now:
            sink.pause_event(RESUMED, None, None)
        self.paused_until = -_INF
        for limit in self.limits:
            if type(limit) is RateLimit:
                limit.end_pushback(now)
        if self.keys is not None:
            for lane in self.keys.lanes.values():
                for limit in lane.limits:
                    if type(limit) is RateLimit:
                        limit.end_pushback(now)
                if lane.paused_until != -_INF:
                    if sink is not None and lane.paused_until > now:
                        sink.pause_event(RESUMED, lane.key, None)
                    lane.paused_until = -_INF
                    self.keys.look_again(lane)
        if self.pushed_back:
            # Due now, in place: each job has one entry in the heap, so none is left behind to
            # release it again later.
            pushed_back = self.pushed_back
            # In place: each worker holds this very list for the scheduler's life (its loop
            # binds sched.backoffs once), so a new list would leave them reading a stale one.
            self.backoffs[:] = [
                (now if seq in pushed_back and due > now else due, seq, job)
                for due, seq, job in self.backoffs
            ]
            heapify(self.backoffs)
            pushed_back.clear()
        self._configure()

    def use_remote(self, remote: Sequence[RemoteLimit], depth: int) -> None:
        """Ask the *remote* limits after the local ones from now on, with up to *depth*
        reservations in flight (the pool binds them to their stores when it binds to a loop)."""
        self.remote = tuple(remote)
        self.depth = depth
        self._configure()

    def replace_limits(
        self, limits: Sequence[Limit], running: Iterable[Job], now: float = 0.0
    ) -> None:
        """Use *limits* from now on (the caller carried state over from the old ones).

        :param running: the jobs whose attempts (or reservations) run now: they release into
            the new limits, which count them as taken. A job whose remote reservation is in
            flight is admitted into every new limit at *now*: the answer re-dates it there
            (granted) or takes it back (refused).
        """
        for job in running:
            for limit in limits:
                if limit not in self.limits and (job.state == RESERVING or not limit.timed):
                    limit.admit(job, now)
        self.limits = tuple(limits)
        self._configure()

    def pending_jobs(self) -> Iterable[Job]:
        """Every job that waits to start (first attempts and retries, in any lane)."""
        yield from (job for job in self._queue if job.state == QUEUED)
        yield from (job for _, job in self._retry_ready if job.state == QUEUED)
        yield from (job for _, _, job in self.backoffs if job.state == BACKOFF)
        if self.keys is not None:
            yield from self.keys.waiting()

    def sweep_keys(self, now: float) -> int:
        """Drop the idle keys at rest by *now*; return how many keys remain."""
        if self.keys is None:
            return 0
        self.keys.sweep(now)
        return len(self.keys.lanes)

    def aborted(self, job: Job, error: BaseException) -> None:
        """The attempt ended with an error that is never retried: a KeyboardInterrupt or the like
        (the caller re-raises it), or a callable that returned no awaitable."""
        self._end_attempt(job)
        if job.done():
            self._cancelled(job)
        else:
            self._failed(job, error)

    def stopped(self, job: Job) -> None:
        """The attempt was cancelled (its future, kill(), or the job's own cancellation)."""
        self._end_attempt(job)
        self._cancelled(job)

    # -- settling ---------------------------------------------------------------------------------

    def _failed(self, job: Job, error: BaseException) -> None:
        """Settle *job* as failed with *error* (after its attempt, or while it waits on a crash)."""
        if job.state == QUEUED:
            self.queued -= 1
        elif job.state == BACKOFF:
            self.backoff -= 1
        job.state = DONE
        self.failed += 1
        job.set_exception(error)
        if self.sink is not None:
            self.sink.job_event(FINISHED, job, "failed", error=error)
        self._settled(job)

    def _cancelled(self, job: Job) -> None:
        """Cancel *job*; if it waits (queued or in backoff) it is dropped from the line in O(1)."""
        state = job.state
        if state == DONE:
            return
        if state in (QUEUED, RESERVING):
            self.queued -= 1
        elif state == BACKOFF:
            self.backoff -= 1
        job.state = DONE  # first: the future's cancel hook then sees a settled job
        self.cancelled += 1
        job.cancel()
        if self.sink is not None:
            self.sink.job_event(FINISHED, job, "cancelled")
        self._settled(job)

    def _settled(self, job: Job) -> None:
        """Forget what a settled job needs no more, tell its owner, check for the end of a drain.

        :meth:`returned` writes the same out for its common case.
        """
        job.host = None
        job.fn = spent  # a future the caller keeps does not keep the job's callable and arguments
        job.args = ()
        lane = job.lane
        if lane is not None:
            self.keys.settled(lane)  # type: ignore[union-attr]  # a lane implies keys
        owner = job.owner
        if owner is not None:
            job.owner = None
            owner.job_settled(job)
        if self.closing and not (self.queued or self.running or self.backoff):
            self._drained()

    def _drained(self) -> None:
        """Tell the pool, once, that nothing is pending while it closes."""
        if not self._drain_told:
            self._drain_told = True
            self.on_drained()

    # -- cancellation, drain and kill -------------------------------------------------------------

    def cancel(self, job: Job) -> bool:
        """*job*'s future (or its owner) was cancelled.

        A waiting job is settled as cancelled here. Return True if an attempt or a reservation
        of it is under way: the caller stops its worker, which then reports the outcome.
        """
        state = job.state
        if state in (RUNNING, RESERVING):
            return True
        if state in (QUEUED, BACKOFF):
            self._cancelled(job)
        return False

    def close(self) -> None:
        """shutdown() began: once nothing is pending, :attr:`on_drained` is called."""
        self.closing = True
        if not (self.queued or self.running or self.backoff):
            self._drained()

    def kill(self, error: BaseException | None = None) -> None:
        """Settle every job that waits: cancelled, or failed with *error* if the pool crashed
        with an :exc:`Exception`. Running attempts are the caller's to stop; none is retried."""
        self.closing = self.killed = True
        waiting = list(self.pending_jobs())
        waiting.sort(key=lambda job: job.seq)
        self._queue.clear()
        self._retry_ready.clear()
        self.backoffs.clear()
        self.pushed_back.clear()
        if self.keys is not None:
            self.keys.clear()
        held = self._hold_events()  # each finished event once every waiting job is settled
        try:
            for job in waiting:
                if isinstance(error, Exception):
                    self._failed(job, error)
                else:
                    self._cancelled(job)
        finally:
            self._replay_events(held)
        if not (self.queued or self.running or self.backoff):
            self._drained()


# -- a server's budgets (#22 item 3) ---------------------------------------------------------------

#: The limits a server's budget can lower.
_OBSERVING: Final = (RateLimit, WindowLimit)

#: The dialects whose budgets refill continuously ("reset" is when the budget is full again):
#: OpenAI's and Anthropic's. The others (GitHub, the IETF drafts) count a fixed window that
#: resets whole at its end.
_REFILLING: Final = frozenset({"openai", "anthropic"})


def _unit_name(unit: str | None) -> str | None:
    """A unit's name compared: ``input_tokens`` and ``Input-Tokens`` are ``input-tokens``."""
    return None if unit is None else unit.lower().replace("_", "-")


def _match(budget: Budget, limits: Iterable[Limit]) -> RateLimit | WindowLimit | None:
    """The local limit *budget* speaks of (see :meth:`Scheduler.observe`), or None."""
    unit = _unit_name(budget.unit)
    found = [
        limit
        for limit in limits
        if isinstance(limit, _OBSERVING) and _unit_name(limit.unit) == unit
    ]
    if len(found) <= 1:
        return found[0] if found else None
    window = budget.window
    if window is not None and window > 0:
        return min(found, key=lambda limit: abs(math.log(limit.per / window)))
    size = budget.limit
    if size is not None and size > 0:
        return min(found, key=lambda limit: abs(math.log(_count(limit) / size)))
    return found[0]


def _count(limit: RateLimit | WindowLimit) -> float:
    """The units a limit lets start per its ``per`` (> 0)."""
    return limit.configured * limit.per if isinstance(limit, RateLimit) else limit.count


def _hold(budget: Budget, now: float, longest: float) -> tuple[float, float]:
    """Until when *budget* holds (its reset, at most *longest* seconds away; *now*, no hold,
    without a reset), and the units per second it regains meanwhile: for a budget that refills
    continuously to full at its reset, ``(limit - remaining) / (reset - now)``; for a fixed
    window, or without a stated limit, none (only the remaining units until the reset)."""
    reset = budget.reset_at
    if reset is None or reset <= now:
        return now, 0.0
    size = budget.limit
    refill = 0.0
    if budget.source in _REFILLING and size is not None and size > budget.remaining:
        refill = (size - budget.remaining) / (reset - now)
    return min(reset, now + longest), refill
