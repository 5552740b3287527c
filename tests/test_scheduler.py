"""The sans-I/O scheduler, driven by hand with explicit times: no event loop.

Every change of a job's state happens in the scheduler, so these tests cover all of them: the fast
path of a pool without limits, admission under limits, settlement, the retry decision, cancellation,
the drain, kill(), and the remote limits' reservations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support import Holders, rate_violation

from werkpool._core._job import (
    BACKOFF,
    CANCELLED,
    DONE,
    QUEUED,
    RAISED,
    RESERVING,
    RETURNED,
    RUNNING,
    Job,
    PlainJob,
)
from werkpool._core._options import JobOptions, default_backoff
from werkpool._core._rate_limit import RateLimit
from werkpool._core._reservation import Reservation
from werkpool._core._scheduler import TICK, Scheduler

OPTIONS = JobOptions(None, 0, (Exception,), default_backoff)


class Boom(Exception):
    pass


def retrying(
    retries: int, delay: float = 1.0, on: tuple[type[Exception], ...] = (Exception,)
) -> JobOptions:
    return JobOptions(None, retries, on, lambda n: delay)


@dataclass
class Owner:
    """Records the jobs it is told about."""

    notify_success: bool = True
    settled: list[Job] = field(default_factory=list)

    def job_settled(self, job: Job) -> None:
        self.settled.append(job)


def submit(
    sched: Scheduler, label: object, options: JobOptions = OPTIONS, owner: Any = None
) -> PlainJob:
    return sched.submit(lambda: None, (label,), options, owner)


def admit(sched: Scheduler, now: float = 0.0) -> PlainJob:
    job = sched.poll(now)
    assert isinstance(job, PlainJob), job
    return job


def counts_add_up(sched: Scheduler) -> bool:
    return sched.submitted == (
        sched.queued
        + sched.running
        + sched.backoff
        + sched.completed
        + sched.failed
        + sched.cancelled
    )


class TestFastPath:
    """A pool without limits: poll() takes the head of the line, no limit asked, no clock read."""

    def test_fifo_admission(self) -> None:
        """Jobs are admitted in submission order, each RUNNING with its first attempt."""
        sched = Scheduler()
        assert sched.unlimited
        jobs = [submit(sched, i) for i in range(5)]
        admitted = [sched.poll(math.nan) for _ in range(5)]  # the time is never read
        assert admitted == jobs
        assert all(job.state == RUNNING and job.attempts == 1 for job in jobs)
        assert (sched.queued, sched.running, sched.attempts) == (0, 5, 5)
        assert sched.poll(0.0) == math.inf  # nothing left: wait for a change

    def test_cancelled_queued_jobs_are_skipped(self) -> None:
        """A job cancelled while queued is settled at once and never admitted."""
        owner = Owner()
        sched = Scheduler()
        jobs = [submit(sched, i, owner=owner) for i in range(4)]
        assert sched.cancel(jobs[1]) is False  # nothing runs: no worker to stop
        assert sched.cancel(jobs[2]) is False
        assert (jobs[1].outcome, jobs[1].state) == (CANCELLED, DONE)
        assert owner.settled == [jobs[1], jobs[2]]
        assert (sched.queued, sched.cancelled) == (2, 2)
        assert admit(sched) is jobs[0]
        assert admit(sched) is jobs[3]
        assert counts_add_up(sched)

    def test_the_fast_path_yields_to_backoffs(self) -> None:
        """New jobs start while a retry waits out its backoff; it comes first once due."""
        sched = Scheduler()
        a, b, c, d = (submit(sched, x, retrying(1, delay=1.0)) for x in "abcd")
        assert admit(sched) is a
        assert sched.raised(a, Boom(), 0.0) == 1.0
        assert (a.state, sched.backoff) == (BACKOFF, 1)
        assert admit(sched, 0.5) is b
        assert admit(sched, 0.6) is c
        assert admit(sched, 1.0) is a  # due now, and older than d
        assert (a.attempts, sched.retries) == (2, 1)
        assert admit(sched, 1.0) is d


class TestLocalFastPath:
    """Local limits alone (no key, remote limit or pause): poll() takes its second fast path,
    which answers as the general path does."""

    @staticmethod
    def _general(sched: Scheduler) -> Scheduler:
        """*sched*, made to take the general path whatever its limits."""
        configure = sched._configure

        def general() -> None:
            configure()
            sched.local = False

        sched._configure = general  # type: ignore[method-assign]
        general()
        return sched

    def test_it_is_taken_only_with_local_limits_alone(self) -> None:
        """A pool with local limits takes it; a pause or a key leaves it for the general path."""
        sched = Scheduler([RateLimit(10)])
        assert sched.local
        assert not sched.unlimited
        assert not Scheduler().local
        sched.pause(1.0)
        assert not sched.local
        sched.resume()
        assert sched.local
        sched.submit(lambda: None, (), OPTIONS, key="k")
        assert not sched.local

    def test_a_cancelled_head_is_skipped_and_the_next_slot_answered(self) -> None:
        """Cancelled queued jobs are dropped from the head; a job the rate holds gets its slot."""
        sched = Scheduler([RateLimit(10)])
        jobs = [submit(sched, i) for i in range(4)]
        sched.cancel(jobs[0])
        sched.cancel(jobs[1])
        assert admit(sched, 0.0) is jobs[2]
        assert sched.poll(0.05) == pytest.approx(0.1)
        assert admit(sched, 0.1) is jobs[3]
        assert sched.poll(0.1) == math.inf
        assert counts_add_up(sched)

    @given(
        steps=st.lists(
            st.tuples(
                st.sampled_from("ssspppprrrcf"),
                st.integers(0, 7),
                st.sampled_from([0.0, 0.0, 0.001, 0.004, 0.011]),
            ),
            max_size=60,
        )
    )
    def test_it_answers_as_the_general_path(self, steps: list[tuple[str, int, float]]) -> None:
        """Any sequence of submissions, cancellations, polls and outcomes (with retries, so that
        the general path's backoffs and retries take over at times) gives the same answers,
        states and counters on both paths."""
        answers: list[list[object]] = []
        for general in (False, True):
            limits = [RateLimit(100, 2), Holders(4)]
            sched = Scheduler(limits)
            if general:
                self._general(sched)
            seen: list[object] = []
            jobs: list[PlainJob] = []
            running: list[PlainJob] = []
            now = 0.0
            for op, pick, dt in steps:
                now += dt
                if op == "s":
                    jobs.append(submit(sched, len(jobs), retrying(1, delay=0.01)))
                elif op == "c" and jobs:
                    seen.append(sched.cancel(jobs[pick % len(jobs)]))
                elif op in "rf" and running:
                    job = running.pop(pick % len(running))
                    if op == "r":
                        sched.returned(job, None)
                    else:
                        seen.append(sched.raised(job, Boom(), now))
                else:
                    result = sched.poll(now)
                    if isinstance(result, PlainJob):
                        running.append(result)
                        seen.append(result.seq)
                    else:
                        seen.append(result)
                seen.append((sched.queued, sched.running, sched.backoff, sched.attempts))
            seen.append([(job.state, job.attempts) for job in jobs])
            answers.append(seen)
        assert answers[0] == answers[1]


class TestAdmission:
    def test_concurrency_limit_blocks_until_release(self) -> None:
        """With size 2 the third job waits for a release (poll says inf)."""
        tokens = Holders(2)
        sched = Scheduler([tokens])
        jobs = [submit(sched, i) for i in range(3)]
        first, second = admit(sched), admit(sched)
        assert sched.poll(0.0) == math.inf
        assert tokens.borrowers == {first, second}
        sched.returned(first, "done")
        assert tokens.borrowers == {second}
        assert admit(sched) is jobs[2]

    def test_new_pool_limits_hold_every_lane(self) -> None:
        """After replace_limits() the pool's new limits are taken and released by the attempts
        of every lane: the jobs without a key, a key's lane made before, and one made after."""
        sched = Scheduler([Holders(9)])
        early = sched.submit(lambda: None, (), OPTIONS, key="early")
        tokens = Holders(3)
        sched.replace_limits([tokens], ())
        late = sched.submit(lambda: None, (), OPTIONS, key="late")
        plain = submit(sched, "plain")
        admitted = {admit(sched, 0.0) for _ in range(3)}
        assert admitted == tokens.borrowers == {early, late, plain}
        for job in admitted:
            sched.returned(job, None)
        assert tokens.borrowers == set()
        assert counts_add_up(sched)

    def test_a_keys_attempts_take_the_pools_limits_then_its_own(self) -> None:
        """Lane.taken: the pool's limits, then the key's; with none of the pool's, the key's own
        tuple itself (a key makes no object for it); replace_limits() regroups every lane."""
        own = (Holders(1),)
        sched = Scheduler(per_key=lambda: own)
        job = sched.submit(lambda: None, (), OPTIONS, key="k")
        lane = job.lane
        assert lane.taken is lane.limits is own
        assert lane.group.limits is own
        pool = Holders(5)
        sched.replace_limits([pool], ())
        assert lane.taken == (pool, *own)
        assert sched.main.taken == (pool,)
        assert admit(sched) is job
        assert pool.borrowers == own[0].borrowers == {job}

    def test_a_job_knows_its_key_through_its_lane(self) -> None:
        """Job.key is the key= it was queued with (None: none), what a remote limit reads."""
        sched = Scheduler()
        keyed = sched.submit(lambda: None, (), OPTIONS, key=("host", 1))
        plain = submit(sched, "plain")
        assert keyed.key == ("host", 1)
        assert plain.key is None
        assert plain.lane is sched.main  # the main lane, whose key is None

    def test_backoff_end_is_the_next_wakeup(self) -> None:
        """With only a job in backoff, poll returns when its backoff ends."""
        sched = Scheduler([RateLimit(1000)])
        job = submit(sched, 0, retrying(1, delay=7.5))
        admit(sched)
        assert sched.raised(job, Boom(), 0.0) == 7.5
        assert sched.poll(1.0) == 7.5
        assert admit(sched, 7.5) is job


class TestSettlement:
    def test_returned_sets_the_outcome_and_tells_the_owner(self) -> None:
        owner = Owner()
        sched = Scheduler()
        job = submit(sched, 0, owner=owner)
        admit(sched)
        sched.returned(job, "value")
        assert (job.state, job.outcome, job.value) == (DONE, RETURNED, "value")
        assert owner.settled == [job]
        assert job.owner is None  # told once, then forgotten
        assert (sched.running, sched.completed) == (0, 1)

    def test_an_owner_of_failures_only_is_not_told_of_a_success(self) -> None:
        owner = Owner(notify_success=False)
        sched = Scheduler()
        ok, bad = submit(sched, 0, owner=owner), submit(sched, 1, owner=owner)
        admit(sched), admit(sched)
        sched.returned(ok, None)
        sched.raised(bad, Boom(), 0.0)
        assert owner.settled == [bad]

    def test_a_job_cancelled_while_running_ends_cancelled_even_if_it_returns(self) -> None:
        sched = Scheduler()
        job = submit(sched, 0)
        admit(sched)
        job.cancel()  # its owner cancelled it (a map closing)
        assert sched.cancel(job) is True  # running: the caller must stop its worker
        assert job.state == RUNNING
        sched.returned(job, "late")
        assert (job.outcome, sched.cancelled, sched.completed) == (CANCELLED, 1, 0)

    def test_a_returned_job_after_kill_is_cancelled(self) -> None:
        sched = Scheduler()
        job = submit(sched, 0)
        admit(sched)
        sched.kill()
        sched.returned(job, "late")
        assert job.outcome == CANCELLED

    def test_raised_fails_a_job_without_retries(self) -> None:
        sched = Scheduler()
        job = submit(sched, 0)
        admit(sched)
        error = Boom()
        assert sched.raised(job, error, 0.0) == math.inf
        assert (job.state, job.outcome, job.value, sched.failed) == (DONE, RAISED, error, 1)

    def test_raised_retries_only_retryable_errors(self) -> None:
        sched = Scheduler()
        job = submit(sched, 0, retrying(3, on=(KeyError,)))
        admit(sched)
        assert sched.raised(job, Boom(), 2.0) == math.inf
        assert job.outcome == RAISED

    def test_raised_retries_until_the_retries_are_spent(self) -> None:
        """retries=2: three attempts, then the last error fails the job."""
        sched = Scheduler()
        job = submit(sched, 0, retrying(2, delay=0.5))
        now = 0.0
        for attempt in (1, 2):
            assert admit(sched, now) is job
            assert job.attempts == attempt
            now = sched.raised(job, Boom(attempt), now)
            assert now == 0.5 * attempt
        assert admit(sched, now) is job
        last = Boom(3)
        sched.raised(job, last, now)
        assert job.value is last
        assert (sched.attempts, sched.retries, sched.failed) == (3, 2, 1)

    def test_nothing_is_retried_once_killed(self) -> None:
        sched = Scheduler()
        job = submit(sched, 0, retrying(5))
        admit(sched)
        sched.kill()
        assert sched.raised(job, Boom(), 0.0) == math.inf
        assert job.outcome == RAISED

    def test_a_stop_iteration_is_wrapped(self) -> None:
        """R50: a job's StopIteration fails it as a RuntimeError caused by it."""
        sched = Scheduler()
        job = submit(sched, 0)
        admit(sched)
        stop = StopIteration()
        sched.raised(job, stop, 0.0)
        assert isinstance(job.value, RuntimeError)
        assert job.value.__cause__ is stop

    def test_a_backoff_that_raises_fails_the_job_with_that_error(self) -> None:
        sched = Scheduler()

        def backoff(n: int) -> float:
            raise ValueError("bad backoff")

        job = submit(sched, 0, JobOptions(None, 1, (Exception,), backoff))
        admit(sched)
        error = Boom()
        assert sched.raised(job, error, 0.0) == math.inf
        assert isinstance(job.value, ValueError)
        assert job.value.__cause__ is error

    def test_a_backoff_that_raises_keyboard_interrupt_fails_the_job_and_propagates(self) -> None:
        sched = Scheduler()

        def backoff(n: int) -> float:
            raise KeyboardInterrupt

        job = submit(sched, 0, JobOptions(None, 1, (Exception,), backoff))
        admit(sched)
        with pytest.raises(KeyboardInterrupt):
            sched.raised(job, Boom(), 0.0)
        assert isinstance(job.value, KeyboardInterrupt)
        assert sched.failed == 1

    def test_aborted_is_never_retried(self) -> None:
        sched = Scheduler()
        job = submit(sched, 0, retrying(5))
        admit(sched)
        interrupt = KeyboardInterrupt()
        sched.aborted(job, interrupt)
        assert (job.outcome, job.value) == (RAISED, interrupt)

    def test_stopped_cancels(self) -> None:
        sched = Scheduler([(tokens := Holders(1))])
        job = submit(sched, 0, retrying(5))
        admit(sched)
        sched.stopped(job)
        assert (job.outcome, sched.cancelled, sched.running) == (CANCELLED, 1, 0)
        assert tokens.borrowers == set()

    def test_a_settled_job_keeps_nothing_of_its_callable(self) -> None:
        """A future's record drops fn and args when settled (R53); see test_futures."""
        sched = Scheduler()
        job = submit(sched, 0)
        sched.cancel(job)
        assert job.args == ()


class TestDrainAndKill:
    def test_close_with_nothing_pending_drains_at_once(self) -> None:
        told: list[int] = []
        sched = Scheduler(on_drained=lambda: told.append(1))
        sched.close()
        assert sched.over
        assert told == [1]
        sched.close()
        assert told == [1]  # once

    def test_the_last_settlement_ends_the_drain(self) -> None:
        told: list[int] = []
        sched = Scheduler(on_drained=lambda: told.append(1))
        a, b = submit(sched, 0), submit(sched, 1, retrying(1))
        admit(sched), admit(sched)
        sched.close()
        assert not sched.over
        sched.returned(a, None)
        sched.raised(b, Boom(), 0.0)  # a retry keeps the drain going
        assert (told, sched.over) == ([], False)
        assert admit(sched, 1.0) is b
        sched.returned(b, None)
        assert (told, sched.over) == ([1], True)

    def test_kill_cancels_every_waiting_job_in_submission_order(self) -> None:
        owner = Owner()
        sched = Scheduler()
        a, b, c = (submit(sched, x, retrying(1), owner) for x in "abc")
        admit(sched)
        sched.raised(a, Boom(), 0.0)  # a in its backoff
        sched.kill()
        assert owner.settled == [a, b, c]
        assert all(job.outcome == CANCELLED for job in (a, b, c))
        assert sched.poll(10.0) == math.inf
        assert counts_add_up(sched)

    def test_kill_with_an_error_fails_the_waiting_jobs(self) -> None:
        sched = Scheduler()
        job = submit(sched, 0)
        error = Boom()
        sched.kill(error)
        assert (job.outcome, job.value) == (RAISED, error)


class TestRateDating:
    """R49: an admission is dated when it happens, never at the slot it was due."""

    def test_late_wakeup_is_dated_now_and_pushes_the_next_slot(self) -> None:
        """burst=1: a wake-up 3 ms late starts the next 1/rate period from the late start."""
        sched = Scheduler([RateLimit(100)])
        for i in range(3):
            submit(sched, i)
        admit(sched, 0.0)
        assert sched.poll(0.0) == pytest.approx(0.01)
        admit(sched, 0.013)  # woke 3 ms after the slot
        # The next start is 1/rate after the late one as the job saw it, not after the slot.
        assert sched.poll(0.013) == pytest.approx(0.023)
        assert sched.poll(0.0229) == pytest.approx(0.023)

    def test_late_wake_ups_cost_rate_with_burst_1_and_nothing_with_burst_2(self) -> None:
        """Every wake-up 1 ms late: burst=1 loses the lateness per start, burst=2 keeps the grid."""
        for burst, last in ((1, 49 * 0.011), (2, 0.48 + 0.001)):  # burst=2: two at 0
            sched = Scheduler([RateLimit(100, burst)])
            jobs = [submit(sched, i) for i in range(50)]
            now = 0.0
            admitted: list[float] = []
            for job in jobs:
                result = sched.poll(now)
                while isinstance(result, float):
                    now = result + 0.001
                    result = sched.poll(now)
                assert result is job
                admitted.append(now)
            assert admitted[-1] == pytest.approx(last, abs=0.0011)
            if burst == 1:
                gaps = [b - a for a, b in pairwise(admitted)]
                assert min(gaps) >= 0.01 - 1e-12  # never closer than 1/rate on the real clock
            assert rate_violation(admitted, 100, burst) is None

    def test_restamp_dates_the_start_when_the_job_began(self) -> None:
        """A start the pool re-dates (its code began 4 ms after the poll) moves the next slot."""
        rate = RateLimit(100)
        sched = Scheduler([rate])
        jobs = [submit(sched, i) for i in range(3)]
        assert admit(sched) is jobs[0]
        sched.restamp(jobs[0], 0.004)
        assert rate.tat == pytest.approx(0.014)
        assert sched.poll(0.0139) == pytest.approx(0.014)

    def test_a_stall_banks_no_credit_beyond_burst(self) -> None:
        """After a long stall, burst=3 lets exactly three starts through at once, then spaces."""
        sched = Scheduler([RateLimit(10, 3)])
        for i in range(5):
            submit(sched, i)
        for _ in range(3):
            admit(sched, 5.0)
        assert sched.poll(5.0) == pytest.approx(5.1)

    def test_size_bound_start_is_dated_when_the_slot_frees(self) -> None:
        """With no free slot, the next start is dated when a slot frees, not at its rate slot."""
        rate = RateLimit(10)
        sched = Scheduler([(Holders(1)), rate])
        first = submit(sched, 0)
        submit(sched, 1)
        assert admit(sched) is first
        assert sched.poll(0.05) == math.inf
        sched.returned(first, None)
        admit(sched, 0.102)  # the slot freed 2 ms after the rate slot
        assert rate.tat == 0.102 + 0.1

    @given(
        rate=st.sampled_from([5.0, 100.0, 1000.0, 20_000.0]),
        burst=st.integers(1, 4),
        lateness=st.lists(st.floats(0, 0.003), min_size=30, max_size=120),
    )
    def test_contract_on_admissions_with_random_lateness(
        self, rate: float, burst: int, lateness: list[float]
    ) -> None:
        """Random late wake-ups never break the contract on the dated admissions."""
        spy = _Spy()
        sched = Scheduler([RateLimit(rate, burst), spy])
        for i in range(len(lateness)):
            submit(sched, i)
        now = 0.0
        for late in lateness:
            result = sched.poll(now)
            while isinstance(result, float):
                now = result + late
                result = sched.poll(now)
            # Dated now (or less than a tick after, at its sub-ns slot), never before (R49).
            assert now <= spy.dated[-1] <= now + TICK
            assert isinstance(result, Job)
            assert result.state == RUNNING
        assert rate_violation(spy.dated, rate, burst) is None


class _Spy:
    """A limit that never blocks and records when each admission was dated."""

    timed = False

    def __init__(self) -> None:
        self.dated: list[float] = []
        self.refunds = 0

    def earliest(self, job: Job, now: float) -> float:
        return -math.inf

    def admit(self, job: Job, at: float) -> None:
        self.dated.append(at)

    def restamp(self, job: Job, at: float) -> None:
        self.dated[-1] = at

    def refund(self, job: Job) -> None:
        self.refunds += 1
        self.dated.pop()

    def release(self, job: Job) -> None:
        pass


class _Remote:
    """A remote limit that is never performed here: the tests answer for it."""

    pipeline = 1

    async def acquire(self, job: Job) -> float:  # pragma: no cover - never awaited here
        raise AssertionError("the scheduler never awaits a remote limit")

    def holds(self, job: Job) -> bool:  # pragma: no cover
        raise AssertionError("the scheduler never asks a remote limit")

    async def release(self, job: Job) -> None:  # pragma: no cover
        raise AssertionError("the scheduler never awaits a remote limit")


def reserve(sched: Scheduler, now: float = 0.0) -> Reservation:
    result = sched.poll(now)
    assert isinstance(result, Reservation), result
    return result


class TestRemoteReservations:
    """The scheduler's half of a remote limit: a Reservation handed out, the answer reported."""

    def test_a_reservation_holds_the_local_limits_and_is_the_only_one_in_flight(self) -> None:
        tokens = Holders(5)
        remote = _Remote()
        sched = Scheduler([tokens], [remote])
        a, b = submit(sched, "a"), submit(sched, "b")
        res = reserve(sched)
        assert (res.job, res.limits) == (a, (remote,))
        assert a.state == RESERVING
        assert tokens.borrowers == {a}  # local limits first: the remote one is the last gate
        assert (sched.queued, sched.running, sched.attempts) == (2, 0, 0)  # not started yet
        assert sched.poll(0.0) == math.inf  # one reservation at a time: FIFO across workers
        assert sched.granted(res) is True
        assert (a.state, a.attempts, sched.running, sched.queued) == (RUNNING, 1, 1, 1)
        assert reserve(sched).job is b

    def test_a_refusal_puts_the_job_back_at_the_head_and_holds_until_retry_at(self) -> None:
        spy = _Spy()
        sched = Scheduler([spy], [_Remote()])
        a, b = submit(sched, "a"), submit(sched, "b")
        res = reserve(sched, 1.0)
        sched.refused(res, 1.5)
        assert (a.state, spy.dated, spy.refunds) == (QUEUED, [], 1)  # local credit given back
        assert sched.poll(1.2) == 1.5  # nobody asks again before retry_at
        again = reserve(sched, 1.5)
        assert again.job is a  # still first: b did not overtake it
        assert sched.granted(again)
        assert reserve(sched, 1.5).job is b
        assert a.attempts == 1  # a refusal is not an attempt

    def test_the_end_of_a_refusals_hold_is_marked_coarse_a_rate_slot_is_not(self) -> None:
        """poll() marks the time it returns as coarse_at when it is the end of a refusal's
        hold (a worker need not spin for it), never when it is a local rate's slot."""
        sched = Scheduler([RateLimit(10)], [_Remote()])  # a slot every 0.1 s
        for name in "abc":
            submit(sched, name)
        assert sched.granted(reserve(sched, 1.0), 1.0)  # a starts at 1.0: b's slot is 1.1
        assert sched.poll(1.0) == pytest.approx(1.1) != sched.coarse_at  # a slot: aimed at
        sched.refused(reserve(sched, 1.1), 1.5)
        assert sched.poll(1.2) == 1.5 == sched.coarse_at  # the hold's end: no spin needed
        assert sched.granted(reserve(sched, 1.5), 1.5)  # b starts at 1.5: c's slot is 1.6
        assert sched.poll(1.5) == pytest.approx(1.6) != sched.coarse_at

    def test_a_refusal_gives_the_rate_slot_back(self) -> None:
        rate = RateLimit(10)
        sched = Scheduler([rate], [_Remote()])
        submit(sched, "a")
        res = reserve(sched, 0.0)
        assert rate.earliest(None, 0.0) == pytest.approx(0.1)
        sched.refused(res, 0.0)
        assert rate.earliest(None, 0.0) <= 0.0  # the slot is free again

    def test_a_job_cancelled_while_reserving_is_settled_when_the_answer_comes(self) -> None:
        tokens = Holders(1)
        owner = Owner()
        sched = Scheduler([tokens], [_Remote()])
        job = submit(sched, 0, owner=owner)
        res = reserve(sched)
        job.cancel()
        assert sched.cancel(job) is True  # the worker's request must be stopped
        assert sched.granted(res) is False  # the remote credit must be given back
        assert (job.state, job.outcome, owner.settled) == (DONE, CANCELLED, [job])
        assert tokens.borrowers == set()
        assert sched.reserving == 0
        assert counts_add_up(sched)

    def test_an_abandoned_reservation_requeues_a_live_job(self) -> None:
        sched = Scheduler([], [_Remote()])
        a = submit(sched, "a")
        submit(sched, "b")
        sched.abandoned(reserve(sched))
        assert a.state == QUEUED
        assert reserve(sched).job is a

    def test_an_abandoned_reservation_of_a_cancelled_job_settles_it(self) -> None:
        sched = Scheduler([], [_Remote()])
        job = submit(sched, 0)
        res = reserve(sched)
        job.cancel()
        sched.abandoned(res)
        assert (job.state, sched.cancelled, sched.queued) == (DONE, 1, 0)

    def test_a_refusal_after_kill_or_cancel_settles_the_job(self) -> None:
        """A refusal that arrives once the job was cancelled (or the pool killed) does not put
        the job back in line, where nothing would ever run or cancel it."""
        for how in ("cancel", "kill"):
            sched = Scheduler([], [_Remote()])
            job = submit(sched, 0)
            res = reserve(sched)
            if how == "cancel":
                job.cancel()
                assert sched.cancel(job)
            else:
                sched.kill()
            sched.refused(res, 5.0)
            assert (job.state, job.outcome, sched.queued) == (DONE, CANCELLED, 0), how
            assert counts_add_up(sched)

    def test_kill_during_a_reservation(self) -> None:
        sched = Scheduler([], [_Remote()])
        job, waiting = submit(sched, 0), submit(sched, 1)
        res = reserve(sched)
        sched.kill()
        assert waiting.outcome == CANCELLED
        assert sched.granted(res) is False
        assert job.outcome == CANCELLED
        assert counts_add_up(sched)
        assert sched.over

    @given(
        answers=st.lists(
            st.tuples(st.sampled_from(["grant", "refuse", "abandon", "cancel"]), st.booleans()),
            min_size=1,
            max_size=60,
        ),
    )
    def test_any_sequence_of_answers_keeps_the_counts_and_fifo(
        self, answers: list[tuple[str, bool]]
    ) -> None:
        """Whatever the remote answers, counts add up, jobs start in order, nothing is lost."""
        tokens = Holders(3)
        sched = Scheduler([tokens], [_Remote()])
        jobs = [submit(sched, i) for i in range(20)]
        started: list[Job] = []
        now = 0.0
        for answer, end_one in answers:
            if end_one and started and started[0].state == RUNNING:
                sched.returned(started[0], None)
            result = sched.poll(now)
            if isinstance(result, float):
                now = max(now, result) if result != math.inf else now + 1
                continue
            assert isinstance(result, Reservation)
            if answer == "grant":
                if sched.granted(result):
                    started.append(result.job)
            elif answer == "refuse":
                sched.refused(result, now + 0.5)
            elif answer == "abandon":
                sched.abandoned(result)
            else:
                result.job.cancel()
                assert sched.cancel(result.job)
                assert not sched.granted(result)
            assert counts_add_up(sched)
            assert len(tokens.borrowers) == sched.running
        seqs = [job.seq for job in started]
        assert seqs == sorted(seqs)  # FIFO
        assert all(job.state in (QUEUED, RUNNING, DONE) for job in jobs)


class TestSharedLimitHolds:
    """Refusals of shared limits (#13): a per-key refusal holds only its key, a release seen by
    the store ends a hold at once, and pipelined reservations keep their count."""

    def _keyed(self, sched: Scheduler, label: object, key: object) -> PlainJob:
        return sched.submit(lambda: None, (label,), OPTIONS, None, key=key)

    def test_a_per_key_refusal_holds_that_key_only(self) -> None:
        sched = Scheduler([], [_Remote()])
        a = self._keyed(sched, "a", "hot")
        b = self._keyed(sched, "b", "cold")
        res = reserve(sched, 0.0)
        assert res.job is a
        sched.refused(res, 5.0, key=True)
        assert a.state == QUEUED
        other = reserve(sched, 0.0)  # the cold key asks at once, past the held hot key
        assert other.job is b
        assert sched.granted(other)
        assert sched.poll(1.0) == 5.0  # the hot key waits for its retry time
        assert reserve(sched, 5.0).job is a

    def test_a_pool_refusal_holds_every_key(self) -> None:
        sched = Scheduler([], [_Remote()])
        a = self._keyed(sched, "a", "hot")
        self._keyed(sched, "b", "cold")
        sched.refused(reserve(sched, 0.0), 5.0)  # key=False: a limit of the pool refused
        assert sched.poll(0.0) == 5.0
        assert reserve(sched, 5.0).job is a

    def test_remote_freed_ends_the_pools_hold(self) -> None:
        sched = Scheduler([], [_Remote()])
        a = submit(sched, "a")
        sched.refused(reserve(sched, 0.0), 30.0)
        assert sched.poll(0.0) == 30.0
        assert sched.remote_freed(None) is True  # a job waits: the caller wakes a worker
        assert reserve(sched, 0.0).job is a
        assert sched.remote_freed(None) is False  # no hold left to end

    def test_remote_freed_ends_one_keys_hold(self) -> None:
        sched = Scheduler([], [_Remote()])
        a = self._keyed(sched, "a", "hot")
        sched.refused(reserve(sched, 0.0), 30.0, key=True)
        assert sched.poll(0.0) == 30.0
        assert sched.remote_freed("other") is False  # an unknown key: nothing to end
        assert sched.remote_freed("hot") is True
        assert reserve(sched, 0.0).job is a

    def test_reservations_in_flight_are_bounded_by_depth(self) -> None:
        sched = Scheduler([], [_Remote()])
        sched.depth = 3
        jobs = [submit(sched, i) for i in range(5)]
        first = [reserve(sched) for _ in range(3)]
        assert [r.job for r in first] == jobs[:3]  # handed out in submission order
        assert sched.poll(0.0) == math.inf  # three in flight: the fourth waits
        assert sched.reserving == 3
        sched.refused(first[0], 0.0)
        sched.granted(first[1])
        assert sched.reserving == 1
        assert reserve(sched).job is jobs[0]  # the refused job is first again
        assert counts_add_up(sched)


class _OrderedRemote(_Remote):
    """A remote limit that keeps a chain's order (the tests answer for it)."""

    async def acquire_in_order(
        self, job: Job, chain: Any, link: int
    ) -> float:  # pragma: no cover - never awaited here
        raise AssertionError("the scheduler never awaits a remote limit")


class TestChains:
    """pipeline=1 with a remote limit that keeps a chain's order: several reservations in
    flight, as links of one chain, which fails at its first link not granted."""

    def test_only_a_lone_ordered_limit_with_pipeline_one_and_no_dated_limit_chains(self) -> None:
        from werkpool._core._holds import ORDERED_DEPTH

        sched = Scheduler([], [])
        sched.use_remote([_OrderedRemote()], dated=False)
        assert (sched.depth, sched.turns is not None) == (ORDERED_DEPTH, True)
        sched.set_depth(dated=True)  # a local rate must date each start: one at a time
        assert (sched.depth, sched.turns) == (1, None)
        sched.use_remote([_OrderedRemote(), _OrderedRemote()], dated=False)
        assert (sched.depth, sched.turns) == (1, None)  # two limits: asked one after the other
        sched.use_remote([_Remote()], dated=False)  # keeps no order: no chain
        assert sched.turns is None

    def test_after_a_refused_link_the_later_ones_go_back_and_a_new_chain_begins(self) -> None:
        sched = Scheduler([], [])
        sched.use_remote([_OrderedRemote()], dated=False)
        a, b, c, d = (submit(sched, label) for label in "abcd")
        ra, rb, rc = reserve(sched), reserve(sched), reserve(sched)
        assert [r.job for r in (ra, rb, rc)] == [a, b, c]
        assert [r.ticket for r in (ra, rb, rc)] == [0, 1, 2]
        chain = ra.chain
        assert chain is not None
        assert chain is rb.chain is rc.chain
        sched.refused(ra, 1.0)
        assert chain.broken == 0
        assert not chain.asks(1)
        # b and c are in flight: nothing more is asked before they answered (d may not
        # overtake a).
        assert sched.poll(0.5) == math.inf
        # b's store granted it (it answered before the refusal reached it): it may not
        # start before a, so it goes back to the head too; its worker gives the credit back.
        assert sched.granted(rb, 0.0) is False
        assert b.state == QUEUED
        sched.refused(rc, -math.inf)  # not asked: no hold
        assert sched.reserving == 0
        again = reserve(sched, 1.0)  # a's refusal held the pool until 1.0
        assert again.job is a
        assert again.chain is not chain
        assert again.ticket == 3
        assert reserve(sched, 1.0).job is b
        assert reserve(sched, 1.0).job is c
        assert reserve(sched, 1.0).job is d
        assert counts_add_up(sched)

    def test_a_cancelled_links_job_does_not_fail_the_chain(self) -> None:
        sched = Scheduler([], [])
        sched.use_remote([_OrderedRemote()], dated=False)
        a = submit(sched, "a")
        submit(sched, "b")
        ra, rb = reserve(sched), reserve(sched)
        a.cancel()
        sched.cancel(a)
        assert sched.granted(ra, 0.0) is False  # cancelled: its credit goes back
        assert ra.chain is not None
        assert ra.chain.broken > 1
        assert sched.granted(rb, 0.0) is True  # as if a had never been asked


def test_turns_let_each_ticket_start_only_after_every_earlier_one_passed() -> None:
    from werkpool._core._reservation import Turns

    woken: list[int] = []

    class Waiter:
        def __init__(self, ticket: int) -> None:
            self.ticket = ticket

        def set(self) -> None:
            woken.append(self.ticket)

    turns = Turns()
    tickets = [turns.issue() for _ in range(5)]
    assert tickets == [0, 1, 2, 3, 4]
    assert turns.turn == 0
    turns.waiting[1] = Waiter(1)
    turns.waiting[4] = Waiter(4)
    turns.passed(2)  # ended early (refused): 0 and 1 still come first
    turns.passed(3)
    assert turns.turn == 0
    assert woken == []
    turns.passed(0)
    assert turns.turn == 1
    assert woken == [1]
    turns.passed(1)  # 2 and 3 passed already: 4's turn
    assert turns.turn == 4
    assert woken == [1, 4]
    turns.passed(1)  # twice: harmless
    assert turns.turn == 4
