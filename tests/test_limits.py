"""The admission limits, driven by hand: no event loop, no clock."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support import max_starts_in, rate_violation

from werkpool._core._count_limit import CountLimit
from werkpool._core._job import PlainJob
from werkpool._core._options import JobOptions, default_backoff
from werkpool._core._rate_limit import RateLimit
from werkpool._core._scheduler import TICK, Scheduler
from werkpool._core._window_limit import WindowLimit


def drive(limit: RateLimit | WindowLimit, requests: list[float]) -> list[float]:
    """Admit one start per request time, each as early as the limit allows."""
    admitted: list[float] = []
    for t in requests:
        at = max(t, limit.earliest(None, t), admitted[-1] if admitted else -math.inf)
        limit.admit(None, at)
        admitted.append(at)
    return admitted


def _job(seq: int) -> PlainJob:
    """A job record numbered *seq*, as the scheduler would admit it."""
    job = PlainJob(print, (), JobOptions(None, 0, (Exception,), default_backoff))
    job.seq = seq
    return job


class TestRateLimit:
    def test_fresh_limit_admits_at_once(self) -> None:
        """A new limit has no history: its earliest start is -inf."""
        assert RateLimit(10).earliest(None, 0.0) == -math.inf

    def test_burst_one_spaces_by_the_period(self) -> None:
        """With burst 1, back-to-back requests are spaced exactly 1/rate apart."""
        assert drive(RateLimit(4), [0.0] * 5) == [0.0, 0.25, 0.5, 0.75, 1.0]

    def test_burst_lets_that_many_through_together(self) -> None:
        """burst=3 admits three at once, then one per period."""
        assert drive(RateLimit(2, burst=3), [0.0] * 6) == [0.0, 0.0, 0.0, 0.5, 1.0, 1.5]

    def test_idle_time_banks_at_most_burst(self) -> None:
        """After a long pause the bucket holds `burst` credits, not more."""
        limit = RateLimit(1, burst=2)
        drive(limit, [0.0])
        assert drive(limit, [1000.0] * 4) == [1000.0, 1000.0, 1001.0, 1002.0]

    def test_no_float_drift_over_ten_million_starts(self) -> None:
        """tat is origin + count/rate, so the 10^7-th slot is exact."""
        limit = RateLimit(1000)
        limit.admit(None, 5.0)
        limit._units = 10_000_000
        assert limit.earliest(None, 0.0) == 5.0 + 10_000.0

    def test_huge_rate_is_effectively_unlimited(self) -> None:
        """At 1e12/s the schedule never pushes a start into the future."""
        limit = RateLimit(1e12)
        admitted = drive(limit, [1.0] * 1000)
        assert admitted[-1] - admitted[0] < 1e-6

    @pytest.mark.parametrize("adaptive", [False, True])
    @pytest.mark.parametrize("released", [False, True])
    def test_a_start_is_settled_by_its_own_place_in_the_schedule(
        self, adaptive: bool, released: bool
    ) -> None:
        """Each attempt's record is the tat right after its units, re-dated by restamp(): a
        take-back gives back only what has not drained of it, whether the attempt runs or
        ended last, and whether its record was written or is still the bucket's tail (#24: the
        record of the start admitted last is written only when the schedule changes)."""
        limit = RateLimit(10, adaptive=adaptive)
        a, b = _job(1), _job(2)
        limit.admit(a, 0.0)
        limit.restamp(a, 0.05)  # the bucket restarts at 0.05: a's units end at 0.15
        limit.admit(b, 0.15)  # b's end at 0.25
        assert limit.admission_mark(b) > limit.admission_mark(a)  # type: ignore[operator]
        limit.take_back(a, 1, 0.1)  # 0.5 unit of a's has not drained yet
        assert limit.tat == pytest.approx(0.2)
        if released:
            limit.release(b)
        limit.take_back(b, 1, 0.1)  # b's end moved to 0.2 by a's give-back: one unit is left
        assert limit.tat == pytest.approx(0.1)
        limit.take_back(b, 1, 0.1)  # given back already
        assert limit.tat == pytest.approx(0.1)

    def test_a_refunded_start_leaves_no_record(self) -> None:
        """A start taken back before its record was written has none: nothing to settle."""
        limit = RateLimit(10)
        a = _job(1)
        limit.admit(a, 0.0)
        limit.refund(a)
        assert limit.admission_mark(a) is None
        limit.release(a)
        limit.charge(a, 1, 0.0)  # charged from now, as an attempt it does not know
        assert limit.tat == pytest.approx(0.1)

    @given(
        rate=st.floats(0.01, 1e4),
        burst=st.integers(1, 10),
        gaps=st.lists(st.floats(0, 5), min_size=1, max_size=200),
    )
    def test_contract_holds_for_any_request_pattern(
        self, rate: float, burst: int, gaps: list[float]
    ) -> None:
        """Whatever the requests, admitted starts obey ceil(W*rate) + burst - 1 per window."""
        times = []
        t = 0.0
        for gap in gaps:
            t += gap / rate
            times.append(t)
        admitted = drive(RateLimit(rate, burst), times)
        assert all(a >= r for a, r in zip(admitted, times, strict=True))
        assert rate_violation(admitted, rate, burst) is None


class TestCountLimit:
    def test_blocks_until_a_release(self) -> None:
        """With every place taken, the earliest start is 'after a release' (inf)."""
        limit = CountLimit(2)
        a, b = object(), object()
        limit.admit(a, 0.0)  # type: ignore[arg-type]
        assert limit.earliest(b, 0.0) == -math.inf  # type: ignore[arg-type]
        limit.admit(b, 0.0)  # type: ignore[arg-type]
        assert limit.earliest(object(), 0.0) == math.inf  # type: ignore[arg-type]
        limit.release(a)  # type: ignore[arg-type]
        assert limit.earliest(object(), 0.0) == -math.inf  # type: ignore[arg-type]
        assert limit.in_use == 1


class TestWindowLimit:
    def test_a_fresh_window_admits_count_at_once_then_waits_a_whole_window(self) -> None:
        """count=3 per 1 s: three at 0, then the next three at 1 (not spread out like a rate)."""
        assert drive(WindowLimit(3, 1.0), [0.0] * 7) == [0, 0, 0, 1, 1, 1, 2]

    def test_credit_comes_back_as_old_starts_leave_the_window(self) -> None:
        """Starts at 0, 0.2, 0.4: the next ones may start at 1.0, 1.2, 1.4, one by one."""
        limit = WindowLimit(3, 1.0)
        assert drive(limit, [0.0, 0.2, 0.4, 0.5, 0.5, 0.5]) == pytest.approx(
            [0.0, 0.2, 0.4, 1.0, 1.2, 1.4]
        )

    def test_no_burst_after_a_full_window(self) -> None:
        """Unlike a bucket with burst=count, a full window never lets 2 * count through in one
        window's length: at most count in any [a, a + per)."""
        limit = WindowLimit(2, 1.0)
        admitted = drive(limit, [0.0, 0.0, 0.999, 1.0, 1.0, 1.0])
        assert max_starts_in(admitted, 1.0) == 2

    def test_restamp_moves_the_latest_start(self) -> None:
        limit = WindowLimit(1, 1.0)
        limit.admit(None, 0.0)
        limit.restamp(None, 0.25)  # the job's code began later
        assert limit.earliest(None, 0.5) == 1.25

    def test_refund_takes_the_latest_start_back_exactly(self) -> None:
        """A start that never happened leaves the window as if it had never been admitted."""
        limit = WindowLimit(2, 1.0)
        for at in (0.0, 0.5):
            limit.admit(None, at)
        limit.admit(None, 1.0)  # allowed: 0.0 has left the window
        limit.refund(None)
        assert limit.earliest(None, 1.0) == -math.inf  # only 0.5 is in [0.0..1.0]'s window
        limit.admit(None, 1.0)
        assert limit.earliest(None, 1.0) == 1.5

    @given(
        count=st.integers(1, 6),
        per=st.sampled_from([0.1, 1.0, 60.0]),
        gaps=st.lists(st.floats(0, 2.0), min_size=1, max_size=80),
        lateness=st.floats(0, 0.05),
    )
    def test_any_arrivals_never_put_more_than_count_in_a_window(
        self, count: int, per: float, gaps: list[float], lateness: float
    ) -> None:
        """Through the scheduler, with late wake-ups: the window holds, and every start is as
        early as the window allows (work-conserving)."""
        limit = WindowLimit(count, per)
        sched = Scheduler([limit])
        options = JobOptions(None, 0, (Exception,), default_backoff)
        now = 0.0
        dated: list[float] = []
        for gap in gaps:
            now += gap * per  # the next job arrives
            sched.submit(lambda: None, (), options)
            allowed = max(now, limit.earliest(None, now))
            must_wait = allowed > now + TICK  # less than a tick ahead counts as now
            result = sched.poll(now)
            waited = False
            while isinstance(result, float):
                assert result == allowed  # the worker is told exactly when the window frees
                now = result + lateness * per  # ...and wakes up late
                waited = True
                result = sched.poll(now)
            assert waited == must_wait
            # A late wake-up is dated when it happens; a start within a tick, at its slot.
            dated.append(now if waited else allowed)
            assert limit._starts[-1] == dated[-1]  # the time the window counts
        assert max_starts_in(dated, per) <= count
