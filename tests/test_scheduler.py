"""The sans-I/O scheduler, driven by hand with explicit times: no event loop."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
from helpers import rate_contract_holds
from hypothesis import given
from hypothesis import strategies as st
from test_limits import _Tokens

from werkpool._limits import ConcurrencyLimit, RateLimit
from werkpool._retry import JobOptions, default_backoff
from werkpool._scheduler import DONE, RUNNING, TICK, Job, PlainJob, Scheduler

OPTIONS = JobOptions(None, 0, (Exception,), default_backoff)


def submit(sched: Scheduler, label: object) -> Job:
    return sched.submit(lambda: None, (label,), OPTIONS)


def finish(sched: Scheduler, job: Job) -> None:
    sched.end_attempt(job)
    sched.completed_job(job)


class TestQueue:
    def test_fifo_admission(self) -> None:
        """Jobs are admitted in submission order."""
        sched = Scheduler([])
        jobs = [submit(sched, i) for i in range(5)]
        assert [sched.poll(0.0) for _ in range(5)] == jobs
        assert sched.poll(0.0) == math.inf  # nothing left: wait for a change

    def test_cancelled_queued_job_is_skipped_in_o1(self) -> None:
        """A cancelled queued job is never admitted and leaves the counts right."""
        sched = Scheduler([])
        jobs = [submit(sched, i) for i in range(4)]
        sched.cancelled_job(jobs[1])
        sched.cancelled_job(jobs[2])
        assert sched.queued == 2
        assert sched.cancelled == 2
        assert sched.poll(0.0) is jobs[0]
        assert sched.poll(0.0) is jobs[3]

    def test_concurrency_limit_blocks_until_release(self) -> None:
        """With size 2 the third job waits for a release (poll says inf)."""
        tokens = _Tokens(2)
        sched = Scheduler([ConcurrencyLimit(tokens)], max_workers=2)
        jobs = [submit(sched, i) for i in range(3)]
        first, second = sched.poll(0.0), sched.poll(0.0)
        assert sched.poll(0.0) == math.inf
        assert sched.running == 2
        assert tokens.borrowers == {first, second}
        finish(sched, first)  # type: ignore[arg-type]
        assert sched.poll(0.0) is jobs[2]

    def test_retry_goes_before_younger_jobs(self) -> None:
        """A job back from its backoff starts before jobs submitted after it."""
        sched = Scheduler([])
        a, b, c = (submit(sched, x) for x in "abc")
        assert sched.poll(0.0) is a
        sched.end_attempt(a)
        sched.retry_at(a, 1.0)
        assert sched.backoff == 1
        assert sched.poll(0.5) is b
        assert sched.poll(1.0) is a
        assert a.attempts == 2
        assert sched.retries == 1
        assert sched.poll(1.0) is c

    def test_backoff_end_is_the_next_wakeup(self) -> None:
        """With only a job in backoff, poll returns when its backoff ends."""
        sched = Scheduler([])
        job = submit(sched, 0)
        sched.poll(0.0)
        sched.end_attempt(job)
        sched.retry_at(job, 7.5)
        assert sched.poll(1.0) == 7.5
        assert sched.poll(7.5) is job

    def test_cancel_in_backoff_drops_the_job(self) -> None:
        """A job cancelled in its backoff is never admitted again."""
        sched = Scheduler([])
        job = submit(sched, 0)
        sched.poll(0.0)
        sched.end_attempt(job)
        sched.retry_at(job, 2.0)
        sched.cancelled_job(job)
        assert job.state == DONE
        assert sched.poll(3.0) == math.inf
        assert sched.pending == 0

    def test_drop_all_returns_waiting_jobs_in_order(self) -> None:
        """drop_all() hands back every queued and backing-off job, oldest first."""
        sched = Scheduler([])
        a, b, c = (submit(sched, x) for x in "abc")
        sched.poll(0.0)
        sched.end_attempt(a)
        sched.retry_at(a, 5.0)
        assert sched.drop_all() == [a, b, c]
        assert sched.poll(10.0) == math.inf


class TestRateDating:
    """R49: an admission is dated when it happens, never at the slot it was due."""

    def test_late_wakeup_is_dated_now_and_pushes_the_next_slot(self) -> None:
        """burst=1: a wake-up 3 ms late starts the next 1/rate period from the late start."""
        rate = RateLimit(100)
        sched = Scheduler([rate])
        for i in range(3):
            submit(sched, i)
        sched.idle = 1
        assert sched.poll(0.0).__class__ is PlainJob
        assert sched.poll(0.0) == pytest.approx(0.01)
        assert sched.poll(0.013).__class__ is PlainJob  # woke 3 ms after the slot
        # The next start is 1/rate after the late one as the job saw it, not after the slot.
        assert sched.poll(0.013) == pytest.approx(0.023)
        assert sched.poll(0.0229) == pytest.approx(0.023)

    def test_late_wake_ups_cost_rate_with_burst_1_and_nothing_with_burst_2(self) -> None:
        """Every wake-up 1 ms late: burst=1 loses the lateness per start, burst=2 keeps the grid."""
        for burst, last in ((1, 49 * 0.011), (2, 0.48 + 0.001)):  # burst=2: two at 0
            rate = RateLimit(100, burst)
            sched = Scheduler([rate])
            jobs = [submit(sched, i) for i in range(50)]
            sched.idle = 1
            now = 0.0
            admitted: list[float] = []
            for job in jobs:
                result = sched.poll(now)
                while result.__class__ is not PlainJob:
                    now = result + 0.001  # type: ignore[operator]
                    result = sched.poll(now)
                assert result is job
                admitted.append(now)
            assert admitted[-1] == pytest.approx(last, abs=0.0011)
            gaps = [b - a for a, b in pairwise(admitted)]
            if burst == 1:
                assert min(gaps) >= 0.01 - 1e-12  # never closer than 1/rate on the real clock
            assert rate_contract_holds(admitted, 100, burst)

    def test_restamp_dates_the_start_when_the_job_began(self) -> None:
        """A start the pool re-dates (its code began 4 ms after the poll) moves the next slot."""
        rate = RateLimit(100)
        sched = Scheduler([rate])
        jobs = [submit(sched, i) for i in range(3)]
        sched.idle = 1
        assert sched.poll(0.0) is jobs[0]
        sched.restamp(jobs[0], 0.004)
        assert rate.tat == pytest.approx(0.014)
        assert sched.poll(0.0139) == pytest.approx(0.014)

    def test_restamp_does_not_move_a_schedule_that_was_still_running(self) -> None:
        """burst=2: the second start of a burst re-dated a little later keeps the grid."""
        rate = RateLimit(100, 2)
        sched = Scheduler([rate])
        jobs = [submit(sched, i) for i in range(3)]
        sched.idle = 1
        assert sched.poll(0.0) is jobs[0]
        assert sched.poll(0.0) is jobs[1]
        sched.restamp(jobs[1], 0.004)  # before the schedule ahead of it (0.01) ended
        assert rate.tat == pytest.approx(0.02)
        sched.restamp(jobs[1], 0.015)  # after it ended: the bucket had drained, restart there
        assert rate.tat == pytest.approx(0.025)

    def test_a_stall_banks_no_credit_beyond_burst(self) -> None:
        """After a long stall, burst=3 lets exactly three starts through at once, then spaces."""
        rate = RateLimit(10, 3)
        sched = Scheduler([rate])
        for i in range(5):
            submit(sched, i)
        sched.idle = 1
        assert sched.poll(5.0).__class__ is PlainJob
        assert sched.poll(5.0).__class__ is PlainJob
        assert sched.poll(5.0).__class__ is PlainJob
        assert sched.poll(5.0) == pytest.approx(5.1)

    def test_a_job_started_after_its_slot_is_dated_when_it_starts(self) -> None:
        """A job polled after its slot passed is dated at that poll, not at the slot."""
        rate = RateLimit(1000)
        sched = Scheduler([rate])
        sched.idle = 1
        submit(sched, "a")
        assert sched.poll(0.0).__class__ is PlainJob
        submit(sched, "b")  # submitted after its slot (0.001) passed
        assert sched.poll(0.0012).__class__ is PlainJob
        assert rate.tat == 0.0012 + 0.001

    def test_size_bound_start_is_dated_when_the_slot_frees(self) -> None:
        """With no free worker, the next start is dated when a worker frees, not at its slot."""
        tokens = _Tokens(1)
        rate = RateLimit(10)
        sched = Scheduler([ConcurrencyLimit(tokens), rate], max_workers=1)
        sched.workers = 1
        first = submit(sched, 0)
        submit(sched, 1)
        assert sched.poll(0.0) is first
        finish(sched, first)
        job = sched.poll(0.102)  # the worker freed 2 ms after the rate slot
        assert job.__class__ is PlainJob
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
        sched.idle = 1
        now = 0.0
        for late in lateness:
            result = sched.poll(now)
            while result.__class__ is not PlainJob:
                now = result + late  # type: ignore[operator]
                result = sched.poll(now)
            # Dated now (or less than a tick after, at its sub-ns slot), never before (R49).
            assert now <= spy.dated[-1] <= now + TICK
            assert result.state == RUNNING  # type: ignore[union-attr]
        assert rate_contract_holds(spy.dated, rate, burst)


class _Spy:
    """A limit that never blocks and records when each admission was dated."""

    timed = False

    def __init__(self) -> None:
        self.dated: list[float] = []

    def earliest(self, job: Job, now: float) -> float:
        return -math.inf

    def admit(self, job: Job, at: float) -> None:
        self.dated.append(at)

    def restamp(self, job: Job, at: float) -> None:
        self.dated[-1] = at

    def release(self, job: Job) -> None:
        pass
