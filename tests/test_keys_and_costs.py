"""Weighted limits, per-key lanes, pauses and pushbacks in the scheduler, driven by hand.

No event loop, no clock: each test passes the times in. They pin the rules of #12 at the level
where they are decided (``_limits``, ``_lanes``, ``_scheduler``); the pool-level contract tests
(``tests/contract/``) check the same rules end to end on both backends.
"""

from __future__ import annotations

import math
from collections import defaultdict

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support import max_starts_in

from werkpool import RetryAfter
from werkpool._core._count_limit import CountLimit
from werkpool._core._job import BACKOFF, DONE, RUNNING, Job, PlainJob
from werkpool._core._limits import build
from werkpool._core._options import JobOptions, default_backoff
from werkpool._core._rate_limit import RateLimit
from werkpool._core._scheduler import Scheduler
from werkpool._core._specs import Concurrency, Rate, Window
from werkpool._core._window_limit import WindowLimit

OPTIONS = JobOptions(None, 0, (Exception,), default_backoff)
RETRY = JobOptions(None, 3, (Exception,), lambda n: 100.0)


def job(cost: float | None = None, unit: str = "tok") -> PlainJob:
    record = PlainJob(lambda: None, (), OPTIONS)
    record.cost = None if cost is None else {unit: cost}
    return record


def noop() -> None:
    pass


def start_all(sched: Scheduler, now: float) -> list[Job]:
    """Every job that may start at *now*, in the order poll() hands them out."""
    started: list[Job] = []
    while True:
        result = sched.poll(now)
        if not isinstance(result, Job):
            return started
        started.append(result)


# -- weighted limits --------------------------------------------------------------------------


class TestWeightedRate:
    def test_a_cost_moves_the_schedule_by_cost_over_rate(self) -> None:
        """Rate(10/s, burst 10 tokens): a fresh bucket admits 10 at once, then 1 per 0.1 s."""
        limit = RateLimit(10, 10, unit="tok")
        big, small = job(10), job(1)
        assert limit.earliest(big, 0.0) == -math.inf
        limit.admit(big, 0.0)
        assert limit.earliest(small, 0.0) == pytest.approx(0.1)
        assert limit.earliest(job(5), 0.0) == pytest.approx(0.5)

    def test_a_job_without_the_unit_costs_nothing_and_unitless_counts_one(self) -> None:
        tokens, attempts = RateLimit(1, 1, unit="tok"), RateLimit(1)
        free = job(None)
        for _ in range(5):
            tokens.admit(free, 0.0)
        assert tokens.earliest(free, 0.0) <= 0.0  # now
        attempts.admit(free, 0.0)
        assert attempts.earliest(free, 0.0) == 1.0

    def test_refund_and_restamp_use_the_cost(self) -> None:
        limit = RateLimit(10, 10, unit="tok")
        first, second = job(4), job(6)
        limit.admit(first, 0.0)
        limit.admit(second, 0.0)
        limit.refund(second)
        assert limit.tat == pytest.approx(0.4)
        limit.restamp(first, 1.0)  # it began at 1.0: the bucket had drained by then
        assert limit.tat == pytest.approx(1.4)

    @given(
        rate=st.sampled_from([1.0, 3.0, 10.0]),
        burst=st.integers(1, 20),
        costs=st.lists(st.integers(0, 20), min_size=1, max_size=60),
        gaps=st.lists(st.floats(0, 2.0), min_size=60, max_size=60),
    )
    def test_any_costs_keep_the_weighted_contract(
        self, rate: float, burst: int, costs: list[int], gaps: list[float]
    ) -> None:
        """In any half-open window of length W the units started are at most
        ceil(W * rate) + burst - 1, whatever the costs (each <= burst) and arrivals."""
        limit = RateLimit(rate, burst, unit="tok")
        now = 0.0
        starts: list[tuple[float, int]] = []
        for cost, gap in zip(costs, gaps, strict=False):
            cost = min(cost, burst)
            now += gap / rate
            record = job(cost)
            at = max(now, limit.earliest(record, now))
            limit.admit(record, at)
            now = at
            starts.append((at, cost))
        times = sorted({at for at, _ in starts})
        for i, a in enumerate(times):
            for b in times[i:]:
                # The shortest half-open window holding [a, b] has W just above b - a, so
                # ceil(W * rate) = floor((b - a) * rate) + 1.
                units = sum(c for at, c in starts if a <= at <= b)
                assert units <= math.floor((b - a) * rate + 1e-9) + burst


class TestAdaptiveRate:
    def test_pushback_halves_once_per_pause_and_regrows_linearly_to_the_configured_rate(
        self,
    ) -> None:
        limit = RateLimit(10, 1, adaptive=True, per=1.0)
        limit.pushback(0.0, 1.0, True)
        assert limit.rate == 5
        limit.pushback(0.5, 1.0, True)  # an attempt already in flight: the same news
        assert limit.rate == 5
        limit.pushback(1.0, 2.0, True)  # after the pause: the provider still refuses
        assert limit.rate == pytest.approx(2.5 + 2.5)  # regrew by 10/(2*1 s) * 1 s, then halved
        # A refusal 1 s after the last (within 2 * per): below the 10/s it refused at, the rate
        # regrows a quarter as fast, +1.25 per second since the change at 1.0.
        limit.earliest(None, 1.5)
        assert limit.rate == pytest.approx(5.625)
        limit.earliest(None, 10.0)
        assert limit.rate == 10  # never above the configured rate

    def test_never_below_a_64th(self) -> None:
        limit = RateLimit(64, 1, adaptive=True, per=1e9)  # regrowing next to nothing
        for i in range(20):
            # Each after the last pause (of 1 s) ended, within its quiet (no jump back yet).
            limit.pushback(float(i), i + 1.0, True)
        assert limit.rate == 1

    def test_a_slow_down_hands_out_no_credit(self) -> None:
        """The bucket keeps its units when the rate halves: a full bucket stays full (keeping
        its end time instead would free half of it at once)."""
        limit = RateLimit(1500, 90_000, adaptive=True, per=60, unit="tok")
        for _ in range(90):
            limit.admit(job(1000), 0.0)  # full: 90,000 tokens at t=0
        limit.pushback(0.0, 1.0, False)  # halves, keeps the level (not held: no drain)
        assert limit.earliest(job(1000), 0.0) > 0.0
        assert limit.earliest(job(1000), 0.0) == pytest.approx(1000 / 750)

    def test_a_pushback_drops_the_credit_until_the_pause_ends(self) -> None:
        """The provider's bucket is empty: after the pause, starts follow at the rate, no burst."""
        limit = RateLimit(10, 10)
        limit.admit(None, 0.0)
        limit.pushback(0.0, 5.0, True)
        assert limit.rate == 10  # not adaptive: no slow-down
        assert limit.earliest(None, 5.0) == pytest.approx(5.0)  # one start when the pause ends
        limit.admit(None, 5.0)
        assert limit.earliest(None, 5.0) == pytest.approx(5.1)  # then the rate, no burst of 10

    def test_a_pushback_that_pauses_another_key_keeps_the_pools_credit(self) -> None:
        limit = RateLimit(10, 10)
        limit.admit(None, 0.0)
        limit.pushback(0.0, 5.0, False)
        assert limit.earliest(None, 0.0) <= 0.0

    def test_a_new_rate_carries_the_units_on_capped_at_its_burst(self) -> None:
        old = RateLimit(1)
        for _ in range(3):
            old.admit(None, 0.0)  # 3 units in the bucket at 0.0 (the next start at 2.0)
        new = RateLimit(100, 5)
        new.carry_on_from(old, 0.0)
        # The 3 units drain at 100/s: 2 of the 5 are free now, the rest within 0.03 s.
        assert new.earliest(None, 0.0) <= 0.0
        full = RateLimit(100, 2)
        full.carry_on_from(old, 0.0)  # 3 > burst 2: at most a full bucket carried
        assert full.earliest(None, 0.0) == pytest.approx(0.01)

    def test_an_adaptive_rate_keeps_its_slow_down_across_a_change(self) -> None:
        old = RateLimit(10, 1, adaptive=True)
        old.pushback(0.0, 0.0, True)
        new = RateLimit(20, 1, adaptive=True)
        new.carry_on_from(old, 0.0)
        assert new.rate == 10  # half of its configured rate, as the old one was


class TestWeightedWindow:
    def test_credit_comes_back_as_old_units_leave(self) -> None:
        limit = WindowLimit(10, 1.0, unit="tok")
        limit.admit(job(6), 0.0)
        limit.admit(job(4), 0.5)
        assert limit.earliest(job(5), 0.6) == 1.0  # the 6 leave at 1.0
        assert limit.earliest(job(7), 0.6) == 1.5  # and the 4 at 1.5
        assert limit.earliest(job(0), 0.6) == -math.inf

    @given(
        count=st.integers(1, 12),
        per=st.sampled_from([0.1, 1.0]),
        costs=st.lists(st.integers(0, 12), min_size=1, max_size=60),
        gaps=st.lists(st.floats(0, 2.0), min_size=60, max_size=60),
    )
    def test_any_costs_keep_at_most_count_units_in_any_window(
        self, count: int, per: float, costs: list[int], gaps: list[float]
    ) -> None:
        limit = WindowLimit(count, per, unit="tok")
        now = 0.0
        starts: list[tuple[float, int]] = []
        for cost, gap in zip(costs, gaps, strict=False):
            cost = min(cost, count)
            now += gap * per
            record = job(cost)
            at = max(now, limit.earliest(record, now))
            assert at != math.inf
            limit.admit(record, at)
            now = at
            starts.append((at, cost))
        for a, _ in starts:
            units = sum(c for at, c in starts if a <= at < a + per)
            assert units <= count


class TestCountLimit:
    def test_summed_cost_of_running_attempts_never_exceeds_n(self) -> None:
        limit = CountLimit(8, unit="gb")
        first = job(5, "gb")
        limit.admit(first, 0.0)
        assert limit.earliest(job(3, "gb"), 0.0) == -math.inf
        assert limit.earliest(job(4, "gb"), 0.0) == math.inf
        limit.release(first)
        assert limit.earliest(job(8, "gb"), 0.0) == -math.inf
        assert limit.rest_at() == -math.inf

    def test_build_makes_the_live_limit_of_each_value(self) -> None:
        assert isinstance(build(Rate(5, per=2)), RateLimit)
        assert build(Rate(5, per=2)).rate == 2.5  # type: ignore[attr-defined]
        assert isinstance(build(Window(5, per=2)), WindowLimit)
        assert isinstance(build(Concurrency(5)), CountLimit)


# -- the scheduler with costs -----------------------------------------------------------------


def test_a_big_head_job_is_not_overtaken_by_small_ones() -> None:
    """FIFO under weighted cost: the small jobs behind a big one wait for it."""
    sched = Scheduler([RateLimit(10, 10, unit="tok")])
    first = sched.submit(noop, (), OPTIONS, cost={"tok": 10})
    assert sched.poll(0.0) is first  # a fresh bucket holds 10
    big = sched.submit(noop, (), OPTIONS, cost={"tok": 10})
    small = sched.submit(noop, (), OPTIONS, cost={"tok": 1})
    assert sched.poll(0.5) == pytest.approx(1.0)  # small would fit at 0.1: it must not go first
    assert sched.poll(1.0) is big
    assert sched.poll(1.0) == pytest.approx(1.1)
    assert sched.poll(1.1) is small


def test_each_retry_pays_its_cost_again() -> None:
    sched = Scheduler([RateLimit(1, 5, unit="tok")])
    record = sched.submit(noop, (), RETRY, cost={"tok": 5})
    assert sched.poll(0.0) is record
    due = sched.raised(record, ValueError(), 0.0)
    assert due == 100.0
    assert sched.poll(100.0) is record  # the bucket had 100 s to refill: 5 fit again
    sched.raised(record, ValueError(), 100.0)
    assert sched.poll(200.0) is record
    assert record.attempts == 3


# -- keys ---------------------------------------------------------------------------------------


def keyed(*specs: Rate | Window | Concurrency) -> Scheduler:
    return Scheduler(per_key=lambda: tuple(build(spec) for spec in specs))


def test_a_saturated_key_never_delays_another_key() -> None:
    """Key A at 1/s with 100 jobs queued: a job of key B, submitted after them, starts at once."""
    sched = keyed(Rate(1))
    a_jobs = [sched.submit(noop, (), OPTIONS, key="A") for _ in range(100)]
    assert sched.poll(0.0) is a_jobs[0]
    assert sched.poll(0.0) == 1.0  # A's next slot
    b = sched.submit(noop, (), OPTIONS, key="B")
    assert sched.poll(0.0) is b
    assert sched.poll(0.5) == 1.0
    assert sched.poll(1.0) is a_jobs[1]


def test_fifo_within_a_key_and_among_ready_keys_in_submission_order() -> None:
    sched = keyed(Rate(1))
    order = [("A", 0), ("B", 0), ("A", 1), ("C", 0), ("B", 1), ("A", 2)]
    records = {tag: sched.submit(noop, (), OPTIONS, key=tag[0]) for tag in order}
    names = {id(rec): tag for tag, rec in records.items()}
    first = [names[id(j)] for j in start_all(sched, 0.0)]
    assert first == [("A", 0), ("B", 0), ("C", 0)]  # one each; A's second waits for its slot
    for rec in records.values():
        if rec.state == RUNNING:
            sched.returned(rec, None)
    second = [names[id(j)] for j in start_all(sched, 1.0)]
    assert second == [("A", 1), ("B", 1)]
    third = [names[id(j)] for j in start_all(sched, 2.0)]
    assert third == [("A", 2)]


def test_pool_limits_still_apply_to_every_key() -> None:
    sched = Scheduler([RateLimit(1)], per_key=lambda: (CountLimit(5),))
    a = sched.submit(noop, (), OPTIONS, key="A")
    b = sched.submit(noop, (), OPTIONS, key="B")
    assert sched.poll(0.0) is a
    assert sched.poll(0.0) == 1.0  # the pool's rate holds B back, though its key is free
    assert sched.poll(1.0) is b


def test_a_key_waiting_for_its_concurrency_looks_again_when_its_attempt_ends() -> None:
    sched = keyed(Concurrency(1))
    first = sched.submit(noop, (), OPTIONS, key="A")
    second = sched.submit(noop, (), OPTIONS, key="A")
    other = sched.submit(noop, (), OPTIONS, key="B")
    assert start_all(sched, 0.0) == [first, other]
    assert sched.poll(0.0) == math.inf
    sched.returned(first, None)
    assert sched.poll(0.0) is second


def test_idle_keys_are_dropped_once_their_limits_are_at_rest() -> None:
    """Memory follows the keys in use: a key with no pending job and a drained bucket goes."""
    sched = keyed(Rate(1), Concurrency(2))
    records = [sched.submit(noop, (), OPTIONS, key=i) for i in range(1000)]
    assert start_all(sched, 0.0) == records
    for record in records:
        sched.returned(record, None)
    assert sched.keys is not None
    assert sched.sweep_keys(0.5) == 1000  # each bucket is busy until 1.0
    assert sched.sweep_keys(1.0) == 0
    assert sched.keys.lanes == {}


def test_a_cancelled_head_lets_its_key_go_on() -> None:
    sched = keyed(Rate(1))
    first = sched.submit(noop, (), OPTIONS, key="A")
    second = sched.submit(noop, (), OPTIONS, key="A")
    first.cancel()
    sched.cancel(first)
    assert sched.poll(0.0) is second
    assert first.state == DONE


def test_kill_settles_the_waiting_jobs_of_every_key() -> None:
    sched = keyed(Rate(1))
    records = [sched.submit(noop, (), OPTIONS, key=k) for k in "AABBC"]
    running = start_all(sched, 0.0)
    sched.kill()
    waiting = [r for r in records if r not in running]
    assert waiting
    assert all(r.cancelled() for r in waiting)
    assert sched.queued == 0


@given(
    keys=st.lists(st.sampled_from("ABCD"), min_size=1, max_size=40),
    gaps=st.lists(st.sampled_from([0.0, 0.1, 0.5, 1.0]), min_size=40, max_size=40),
)
def test_any_arrivals_keep_each_keys_rate_and_start_ready_keys_at_once(
    keys: list[str], gaps: list[float]
) -> None:
    """Each key holds Rate(2) (burst 1); the scheduler starts a job as soon as its key allows
    (work-conserving: no head-of-line blocking) and in submission order within a key."""
    sched = keyed(Rate(2))
    now = 0.0
    started: dict[str, list[float]] = defaultdict(list)
    order: dict[str, list[int]] = defaultdict(list)
    seqs: dict[int, str] = {}
    for key, gap in zip(keys, gaps, strict=False):
        record = sched.submit(noop, (), OPTIONS, key=key)
        seqs[record.seq] = key
        for job_ in start_all(sched, now):
            key_ = seqs[job_.seq]
            started[key_].append(now)
            order[key_].append(job_.seq)
            sched.returned(job_, None)
        now += gap
        # Let time pass in small steps, starting whatever is due.
        step_to = now
        t = now - gap
        while t < step_to:
            t = min(step_to, t + 0.5)
            for job_ in start_all(sched, t):
                key_ = seqs[job_.seq]
                started[key_].append(t)
                order[key_].append(job_.seq)
                sched.returned(job_, None)
    t = now
    while sched.queued and t < now + 100:
        wait = sched.poll(t)
        assert isinstance(wait, (float, Job))
        if isinstance(wait, Job):
            key_ = seqs[wait.seq]
            started[key_].append(t)
            order[key_].append(wait.seq)
            sched.returned(wait, None)
        else:
            t = wait
    assert sched.queued == 0
    for key, times in started.items():
        assert max_starts_in(times, 0.5) <= 1  # Rate(2), burst 1: 0.5 s apart
        assert order[key] == sorted(order[key])


# -- pauses and pushback ----------------------------------------------------------------------


def test_nothing_starts_inside_a_pause_and_pause_never_shortens() -> None:
    sched = Scheduler()
    record = sched.submit(noop, (), OPTIONS)
    sched.pause(5.0)
    sched.pause(3.0)  # shorter: kept at 5
    assert sched.poll(0.0) == 5.0
    assert sched.poll(5.0) is record
    sched.resume()
    assert sched.unlimited


def test_a_key_pause_holds_only_that_key() -> None:
    sched = keyed()
    a = sched.submit(noop, (), OPTIONS, key="A")
    b = sched.submit(noop, (), OPTIONS, key="B")
    sched.pause_key("A", 10.0)
    assert sched.poll(0.0) is b
    assert sched.poll(0.0) == 10.0
    assert sched.poll(10.0) is a


def test_retry_after_pauses_the_pool_and_replaces_the_backoff() -> None:
    sched = Scheduler()
    first = sched.submit(noop, (), RETRY)
    second = sched.submit(noop, (), OPTIONS)
    assert sched.poll(0.0) is first
    assert sched.raised(first, RetryAfter(7), 1.0) == 8.0  # not the 100 s backoff
    assert first.state == BACKOFF
    assert sched.poll(1.0) == 8.0  # the pool is paused: second waits too
    assert sched.poll(8.0) is first  # submission order: the retry first
    assert sched.poll(8.0) is second
    assert sched.pushbacks == 1


def test_retry_after_of_a_keyed_job_pauses_only_its_key() -> None:
    sched = keyed()
    a1 = sched.submit(noop, (), RETRY, key="A")
    a2 = sched.submit(noop, (), OPTIONS, key="A")
    b = sched.submit(noop, (), OPTIONS, key="B")
    assert sched.poll(0.0) is a1
    sched.raised(a1, RetryAfter(5), 0.0)
    assert sched.poll(0.0) is b
    assert sched.poll(0.0) == 5.0
    assert start_all(sched, 5.0) == [a1, a2]


def test_pushback_without_retries_left_fails_the_job_with_it() -> None:
    sched = Scheduler()
    record = sched.submit(noop, (), OPTIONS)
    sched.poll(0.0)
    error = RetryAfter(2)
    sched.raised(record, error, 0.0)
    assert record.exception() is error
    assert sched.paused_until == 2.0  # the pool still holds back


def test_retry_after_callable_maps_errors_and_is_retried_regardless_of_retryable() -> None:
    class TooMany(Exception):
        pass

    only_value_errors = JobOptions(None, 1, (ValueError,), lambda n: 100.0)
    sched = Scheduler(retry_after=lambda e: 3.0 if isinstance(e, TooMany) else None)
    record = sched.submit(noop, (), only_value_errors)
    sched.poll(0.0)
    assert sched.raised(record, TooMany(), 0.0) == 3.0
    assert sched.poll(3.0) is record
    assert sched.raised(record, KeyError("x"), 3.0) == math.inf  # not a pushback, not retryable
    assert isinstance(record.exception(), KeyError)


@pytest.mark.parametrize("answer", ["soon", -1.0, math.nan, math.inf])
def test_a_bad_retry_after_answer_fails_the_job_with_a_clear_error(answer: object) -> None:
    sched = Scheduler(retry_after=lambda e: answer)  # type: ignore[arg-type,return-value]
    record = sched.submit(noop, (), RETRY)
    sched.poll(0.0)
    original = ValueError("boom")
    sched.raised(record, original, 0.0)
    error = record.exception()
    assert isinstance(error, (TypeError, ValueError))
    assert "retry_after" in str(error)
    assert error.__cause__ is original


def test_a_keys_pushback_halves_only_the_keys_adaptive_rate() -> None:
    """#22 item 1: a key's refusal slows that key's adaptive rates only (it used to halve the
    pool's as well), and gives the refused attempt's unit back to the pool's rate."""
    pool_rate = RateLimit(10, 1, adaptive=True)
    key_rate = RateLimit(4, 1, adaptive=True)
    sched = Scheduler([pool_rate], per_key=lambda: (key_rate,))
    record = sched.submit(noop, (), RETRY, key="A")
    assert sched.poll(0.0) is record
    sched.raised(record, RetryAfter(1), 0.0)
    assert (pool_rate.rate, key_rate.rate) == (10, 2)
    # The pool's bucket is neither filled to the end of the key's pause nor charged for the
    # refused attempt: a start may come at once.
    assert pool_rate.earliest(None, 0.0) <= 0.0


def test_replace_limits_counts_the_running_attempts_in_a_new_concurrency_limit() -> None:
    sched = Scheduler([CountLimit(2)])
    records = [sched.submit(noop, (), OPTIONS) for _ in range(3)]
    running = start_all(sched, 0.0)
    assert len(running) == 2
    fresh = CountLimit(1)
    sched.replace_limits([fresh], running)
    assert fresh.in_use == 2  # both still run: nothing starts until one ends... and then another
    sched.returned(running[0], None)
    assert sched.poll(0.0) == math.inf
    sched.returned(running[1], None)
    assert sched.poll(0.0) is records[2]
    assert fresh.in_use == 1
    assert records[2].state == RUNNING
