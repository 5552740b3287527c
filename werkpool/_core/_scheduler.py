"""The pool's sans-I/O core: the one place where a job's state changes.

Its one concept is the jobs' state machine: their line (the jobs without a key are one more
lane, the ``main`` one), their admission under the holds (the pool's and the keys' limits, the
pauses: :class:`~werkpool._core._holds.Holds`, which :class:`Scheduler` extends with the jobs;
the fast path of a pool without limits included), the remote limits' reservations, the settling
of each attempt (the retry decision among it), cancellation, the drain and kill(): every
transition of a job and every counter is here, in synchronous methods that read no clock. The
pool passes ``now`` in, performs the I/O a method hands back, and reports outcomes (httpcore's
``_assign_requests_to_connections`` is the model). Each state change is thus atomic on the event
loop, and ``tests/test_scheduler.py`` drives the whole core with no event loop at all.
"""

# R27, R49 here are reliability requirements: docs/reliability.md lists them.

from __future__ import annotations

import math
from heapq import heapify, heappop, heappush
from typing import TYPE_CHECKING, final

from ._event_sink import hold_events, replay_events
from ._events import FINISHED, RETRYING, STARTED, SUBMITTED
from ._exceptions import RetryAfter
from ._holds import DEFAULT_MAX_RETRY_AFTER, TICK, Holds
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
from ._lanes import BLOCKED, IDLE
from ._options import next_delay
from ._remote_limit import INTACT, Chain
from ._reservation import Reservation

if TYPE_CHECKING:
    from collections import deque
    from collections.abc import Callable, Hashable, Iterable, Sequence
    from typing import Any

    from ._job import Job, JobOwner
    from ._lanes import KeyOrder, Lane
    from ._limit import Limit
    from ._options import JobOptions
    from ._remote_limit import RemoteLimit

__all__ = ["DEFAULT_MAX_RETRY_AFTER", "TICK", "Reservation", "Scheduler"]

_INF = math.inf


def _nothing() -> None:
    pass


def _no_limits() -> tuple[Limit, ...]:
    return ()


@final
class Scheduler(Holds):
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
        self.per_key = per_key
        self.key_weight = key_weight
        self.key_order = key_order
        self.retry_after = retry_after
        self.max_retry_after = max_retry_after
        self._hold_nothing(limits, remote)
        # The main lane's line and retries, read by poll()'s fast path once per job: an attribute
        # load fewer each (neither list is ever replaced, only changed in place).
        self._main_queue: deque[Job] = self.main.queue
        self._main_ready = self.main.retry_ready
        self.on_drained = on_drained
        #: Jobs in their backoff, as a heap by its end.
        self.backoffs: list[tuple[float, int, Job]] = []
        #: The jobs of :attr:`backoffs` that wait out a pushback (by submission number), not a
        #: backoff of their own: resume() ends their wait.
        self.pushed_back: set[int] = set()
        self._seq = 0
        #: How many reservations workers perform now (at most :attr:`depth`).
        self.reserving = 0
        #: The last time poll() returned that is the end of a hold (a remote limit's refusal) or
        #: of a pause, not a limit's slot: a wake-up a millisecond late costs nothing there (a
        #: refused request asks again well before the credit), so the worker need not spin for it.
        self.coarse_at = _INF
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
        job.lane = self.main
        self._main_queue.append(job)
        self.queued += 1
        if self.sink is not None:
            self.sink.job_event(SUBMITTED, job)

    def enqueue_keyed(self, job: Job, key: Hashable) -> None:
        """Queue a record the caller made at the back of the line of *key*."""
        keys = self.keys
        if keys is None:
            keys = self.keys = self._new_keys()
            self._configure()
        # First: a key_weight that raises changes nothing. Keys.lane(key), written out for a
        # key in use (once per job).
        lane = keys.lanes.get(key)
        if lane is None:
            lane = keys.lane(key)
        job.lane = lane
        self._seq += 1
        job.seq = self._seq
        self.queued += 1
        lane.pending += 1
        lane.queue.append(job)  # lane.push(job), written out
        if lane.where == IDLE:  # else its head is older, and already placed
            keys.look_again(lane)
        if self.sink is not None:
            self.sink.job_event(SUBMITTED, job)

    def enqueue_all(self, jobs: list[PlainJob]) -> None:
        """Queue records the caller made, in order, at the back (a map's batch)."""
        seq = self._seq
        main = self.main
        for job in jobs:
            seq += 1
            job.seq = seq
            job.lane = main
        self._seq = seq
        main.queue.extend(jobs)
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

    def is_head(self, job: Job) -> bool:
        """True if *job* is the next to start (of its key, for a job with a key)."""
        lane: Lane = job.lane
        return lane.head() is job

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
        lane: Lane = job.lane
        lane.requeue(job)
        if lane is not self.main:
            self.keys.look_again(lane)  # type: ignore[union-attr]  # a key's lane implies keys

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

    def poll(self, now: float) -> Job | Reservation | float:
        """
        Admit the next job if the limits allow it now, or say how long to wait.

        Returns the admitted job (now ``RUNNING``; its limits are taken); or, with remote limits,
        a :class:`Reservation` for the worker to perform; or the time at which to poll again:
        finite for the clock (a rate slot, the end of a backoff or of a refusal), ``inf`` when
        only the end of an attempt or of a reservation, or a new job, can change the answer.
        *now* is read only if :attr:`timed` or a backoff runs (else pass anything).
        """
        if self.unlimited and not self.backoffs and not self._main_ready:
            # The fast path of a pool without limits: take the head of the line, skipping the
            # records cancelled while queued (all are first attempts: no retry waits).
            queue = self._main_queue
            while queue:
                head = queue.popleft()
                if head.state == QUEUED:
                    head.state = RUNNING
                    head.attempts = 1
                    self.queued -= 1
                    self.running += 1
                    self.attempts += 1
                    return head
            return _INF
        if self.local and not self.backoffs and not self._main_ready:
            # The fast path of a pool with local limits alone: the general path below, for the
            # main line's first attempts (no retry waits), with no key, pause or remote hold.
            queue = self._main_queue
            while queue:
                head = queue[0]
                if head.state != QUEUED:
                    queue.popleft()  # cancelled while queued
                    continue
                earliest = -_INF
                for limit in self.limits:
                    t = limit.earliest(head, now)
                    if t > earliest:
                        earliest = t
                if earliest > now + TICK:
                    return earliest  # no backoff runs, no key waits: nothing else is due
                queue.popleft()
                at = earliest if earliest > now else now  # dated now: see the general path
                for limit in self.limits:
                    limit.admit(head, at)
                head.state = RUNNING
                head.attempts = 1
                self.queued -= 1
                self.running += 1
                self.attempts += 1
                return head
            return _INF
        if self.backoffs and self.backoffs[0][0] <= now + TICK:  # a timer may fire a tick early
            self._release_due(now)
        queue = self._main_queue
        ready = self._main_ready
        if not ready and (not queue or queue[0].state == QUEUED):
            # MainLane.head()'s common cases, written out: its line's first job, or none (a
            # keyed pool's jobs wait in their keys' lanes).
            job: Job | None = queue[0] if queue else None
        else:
            job = self.main.head()
        keys = self.keys
        if keys is not None:
            # The head that goes next by the keys' fair share (the jobs without a key are one
            # more flow), among the keys that may start now; FIFO within each key.
            keyed = keys.pick(now) if job is None else keys.pick(now, keys.main_tag(), job.seq)
            if keyed is not None:
                job = keyed
            resting = keys.resting
            if resting and resting[0][0] <= now:
                keys.sweep(now)  # some idle key's limits are at rest: it may be dropped
        if job is None:
            return self.next_wakeup()
        earliest = -_INF
        for limit in self.limits:
            t = limit.earliest(job, now)
            if t > earliest:
                earliest = t
        held = self.paused_until
        if self.remote:
            if self.reserving >= self.depth or (
                self.reserving and self.turns is not None and self.turns.chain.broken != INTACT
            ):
                # A reservation in flight ends first; or a chain's link was not granted, and
                # the links after it go back to the head: the next chain waits for all of them.
                return min(_INF, self.next_wakeup())
            if self._hold_until > held:
                held = self._hold_until
        coarse = held > earliest  # the wait is a hold's or a pause's, not a limit's slot
        if coarse:
            earliest = held
        if earliest > now + TICK:
            wake = min(earliest, self.next_wakeup())
            if coarse and wake == held:
                self.coarse_at = wake  # see coarse_at
            return wake
        # The start is dated now, the moment it happens, never at the slot it was due: the job's
        # code runs right after this call (no checkpoint in between), so the times the limits
        # count are the times the job, and the server it calls, see. Dating a late wake-up back
        # to its slot would let the next start follow sooner than 1/rate on that clock (R49).
        # A bucket with burst >= 2 absorbs such lateness in its tolerance, so its long-run rate
        # does not drift; with burst=1 each late wake-up costs its lateness (see WorkerPool).
        # Less than a TICK ahead counts as now, and is dated at the slot (after now, not before).
        at = earliest if earliest > now else now
        lane: Lane = job.lane
        if lane is self.main and not ready:
            queue.popleft()  # MainLane.take(): the head came from the line, not a retry
        else:
            lane.take(job)
        if keys is not None:
            keys.served(lane)  # its flow's next head comes one share later
        for limit in lane.taken:  # the pool's limits, then the key's
            limit.admit(job, at)
        if self.remote:
            job.state = RESERVING
            self.reserving += 1
            turns = self.turns
            if turns is None:
                return Reservation(job, self.remote, self.depth > 1)
            if turns.chain.broken != INTACT:
                turns.chain = Chain()  # the last one ended with a link not granted
            return Reservation(job, self.remote, True, turns)
        # _started(), written out: once per job.
        job.state = RUNNING
        attempts = job.attempts = job.attempts + 1
        self.queued -= 1
        self.running += 1
        self.attempts += 1
        if attempts > 1:
            self.retries += 1
        return job

    def _refund(self, job: Job) -> None:
        """Take back the admission of *job*, whose attempt never started."""
        lane: Lane = job.lane
        lane.group.refund(job)
        if self.keys is not None:
            self.keys.unserved(lane)  # nor did it use its key's share

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
        for limit in job.lane.taken:
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
        lane: Lane = job.lane
        hold = self.paused_until
        if lane.paused_until > hold:  # the main lane's never is
            hold = lane.paused_until
        chain = reservation.chain
        if (
            hold > at + TICK
            or (reservation.pipelined and self.depth == 1)
            or (chain is not None and chain.broken < reservation.ticket)
        ):
            # A pushback paused the pool (or the key) while the remote limits were asked; or
            # set_limits() gave it a rate or window meanwhile, which must date this start: the
            # job asks again under it, one request at a time (#21 item 10); or an earlier link
            # of its chain went back to the head, and this one may not start before it.
            if chain is not None:
                chain.fail(reservation.ticket)
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
        if reservation.chain is not None:
            reservation.chain.fail(reservation.ticket)
        self._refund(job)
        lane: Lane = job.lane
        if key and lane is not self.main:
            if retry_at > lane.held_until:
                lane.held_until = retry_at
        elif retry_at > self._hold_until:
            self._hold_until = retry_at
        self._back_to_the_head(job)

    def abandoned(self, reservation: Reservation) -> None:
        """The worker's request was cancelled before an answer: undo the reservation."""
        self.reserving -= 1
        if reservation.chain is not None:
            # Whether it took credit is unknown: the later links may not start before it.
            reservation.chain.fail(reservation.ticket)
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
        """The attempt ended: release its limits (the first half of :meth:`returned`)."""
        self.returned(job, None, False)

    def returned(self, job: Job, result: object, settle: bool = True) -> None:
        """The attempt returned *result* in time: the job is done, unless cancelled meanwhile.

        With *settle* False, only end the attempt (release its limits): the other outcomes
        then settle the job their way. One body for both, as this runs once per job and a call
        more would cost 2-5 % of a map's CPU per job (measured, #23).
        """
        lane: Lane = job.lane
        keyed = lane is not self.main
        if keyed:
            for limit in lane.taken:  # the pool's, then the key's
                limit.release(job)
            if lane.where == BLOCKED:  # the key waited for an attempt to end: it looks again
                self.keys.look_again(lane)  # type: ignore[union-attr]  # a key's lane implies keys
        elif self.limits:  # the main lane's: the pool's alone (none: size only)
            for limit in self.limits:
                limit.release(job)
        if self.settled:
            self.settled.pop(job.seq, None)
        self.running -= 1
        job.worker = None
        if not settle:
            return
        # _settled(), written out for this outcome: a map's job keeps its fn and args (its
        # result is yielded later), and the owner hears only if it asks (notify_success).
        if keyed:
            lane.pending -= 1  # keys.settled(), written out
            if not lane.pending:
                self.keys.rest(lane)  # type: ignore[union-attr]
        job.host = None
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
        if self.closing and not (self.running or self.queued):  # cheap first: see _drained()
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
            held = hold_events(self)
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
                replay_events(self, held)
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

    # -- runtime control --------------------------------------------------------------------------

    def resume(self, now: float = -_INF) -> None:
        """End every pause and pushback at *now* (:meth:`Holds.resume`): the jobs waiting out
        a pushback are due at once."""
        super().resume(now)
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

    def pending_jobs(self) -> Iterable[Job]:
        """Every job that waits to start (first attempts and retries, in any lane)."""
        yield from self.main.waiting()
        yield from (job for _, _, job in self.backoffs if job.state == BACKOFF)
        if self.keys is not None:
            yield from self.keys.waiting()

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
        """Forget what a settled job needs no more, tell its owner, check for the drain's end.

        :meth:`returned` writes the same out for its outcome."""
        job.host = None  # cancelling its future no longer concerns the pool
        job.fn = spent  # a future the caller keeps does not keep the job's callable and arguments
        job.args = ()
        lane: Lane = job.lane
        if lane is not self.main:
            self.keys.settled(lane)  # type: ignore[union-attr]  # a key's lane implies keys
        owner = job.owner
        if owner is not None:
            job.owner = None
            owner.job_settled(job)
        if self.closing:
            self._drained()

    def _drained(self) -> None:
        """Tell the pool, once, if nothing is pending while it closes (:attr:`over`)."""
        if self.over and not self._drain_told:
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
        self._drained()

    def kill(self, error: BaseException | None = None) -> None:
        """Settle every job that waits: cancelled, or failed with *error* if the pool crashed
        with an :exc:`Exception`. Running attempts are the caller's to stop; none is retried."""
        self.closing = self.killed = True
        waiting = list(self.pending_jobs())
        waiting.sort(key=lambda job: job.seq)
        self.main.clear()
        self.backoffs.clear()
        self.pushed_back.clear()
        if self.keys is not None:
            self.keys.clear()
        held = hold_events(self)  # each finished event once every waiting job is settled
        try:
            for job in waiting:
                if isinstance(error, Exception):
                    self._failed(job, error)
                else:
                    self._cancelled(job)
        finally:
            replay_events(self, held)
        self._drained()
