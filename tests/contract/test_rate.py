"""Contract R6-R11: the rate limit (``rate``, ``burst``)."""

from __future__ import annotations

import math
import random
from itertools import pairwise
from typing import Any

import anyio
import pytest
from support import (
    Boom,
    Probe,
    approx,
    assert_consistent,
    assert_idle,
    count_werkpool_calls,
    jump_clock,
    max_starts_in,
    r6_bound,
    rate_violation,
    trio_only,
)

from werkpool import WorkerPool
from werkpool._core._job import Job
from werkpool._core._options import JobOptions, default_backoff
from werkpool._core._rate_limit import RateLimit
from werkpool._core._scheduler import Scheduler

WIDTHS = (0.01, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.3, 5.0, 10.0)


def assert_rate_contract(starts: list[float], rate: float, burst: int) -> None:
    """werkpool's ``ceil(W*r) + B - 1`` (exactly) and the checklist's ``B + floor(W*r)``."""
    assert rate_violation(starts, rate, burst) is None, rate_violation(starts, rate, burst)
    for width in (*WIDTHS, 1 / rate, 2.5 / rate):
        assert max_starts_in(starts, width) <= r6_bound(width, rate, burst), width
        assert max_starts_in(starts, width) <= math.ceil(width * rate - 1e-9) + burst - 1, width


# -- R6: the window contract ---------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(8))
async def test_r06_window_contract_holds_on_randomized_programs(seed: int) -> None:
    """Random sizes, rates, bursts, arrivals, durations, failures, retries and cancels."""
    rng = random.Random(seed)
    rate = rng.choice([0.5, 2.0, 7.5, 20.0])
    burst = rng.choice([1, 2, 4])
    size = rng.choice([None, 1, 3])
    probe = Probe(limit=size)
    futures: list[Any] = []
    async with WorkerPool(size=size, rate=rate, burst=burst) as pool:
        for i in range(60):
            if rng.random() < 0.4:
                await anyio.sleep(rng.choice([0.0, 0.05, 0.5, 3.0, 20.0]))
            futures.append(
                pool.run(
                    probe.job,
                    i,
                    rng.choice([0.0, 0.05, 0.3, 1.0]),
                    rng.random() < 0.25,
                    retries=rng.choice([0, 2]),
                    backoff=lambda n: rng.choice([0.0, 0.1, 1.0]),
                )
            )
            if rng.random() < 0.1:
                rng.choice(futures).cancel()
            assert_consistent(pool, probe.running)
    for future in futures:
        if not future.cancelled():
            future.exception()
    assert len(probe.starts) >= 40
    assert_rate_contract(probe.starts, rate, burst)
    assert_idle(pool)


async def test_r06_burst_then_exact_spacing() -> None:
    """burst=4, rate=8: four start together, then one every 125 ms, and never more per window."""
    probe = Probe()
    t0 = anyio.current_time()
    async with WorkerPool(rate=8, burst=4) as pool:
        for i in range(12):
            pool.run(probe.job, i)
    expected = [0, 0, 0, 0] + [k / 8 for k in range(1, 9)]
    assert [t - t0 for t in probe.starts] == [approx(x) for x in expected]
    assert_rate_contract(probe.starts, 8, 4)


# -- R7: retries consume rate credit -------------------------------------------------------------


@pytest.mark.parametrize("burst", [1, 3])
async def test_r07_retries_consume_rate_credit(burst: int) -> None:
    """Failing attempts with zero backoff still take a rate slot each: 30 attempts at rate 5."""
    probe = Probe()

    async def fails_twice(label: int) -> int:
        probe.enter(label)
        probe.leave()
        if probe.attempts[label] < 3:
            raise Boom(label)
        return label

    t0 = anyio.current_time()
    async with WorkerPool(rate=5, burst=burst) as pool:
        futures = [pool.run(fails_twice, i, retries=2, backoff=lambda n: 0.0) for i in range(10)]
    assert [await f for f in futures] == list(range(10))
    assert len(probe.starts) == 30
    assert pool.statistics().attempts == 30
    assert pool.statistics().retries == 20
    assert_rate_contract(probe.starts, 5, burst)
    # 30 starts at 5/s: the last is (30 - burst) periods after the first, not earlier.
    assert max(probe.starts) - t0 == approx((30 - burst) / 5)


# -- R8: no credit banked beyond the burst --------------------------------------------------------


async def test_r08_idle_period_banks_at_most_burst() -> None:
    """After 1000 s idle, rate=2 burst=3: three start at once, then one per 0.5 s."""
    probe = Probe()
    async with WorkerPool(rate=2, burst=3) as pool:
        await pool.run(probe.job, "warm-up")
        await anyio.sleep(1000)
        t0 = anyio.current_time()
        for f in [pool.run(probe.job, i) for i in range(8)]:
            await f
    assert [t - t0 for t in probe.starts[1:]] == [
        approx(x) for x in (0, 0, 0, 0.5, 1.0, 1.5, 2.0, 2.5)
    ]
    assert_rate_contract(probe.starts, 2, 3)


async def test_r08_no_burst_beyond_burst_after_a_long_running_job() -> None:
    """A 100 s job holds the only slot; afterwards at most `burst` start in the same instant."""
    probe = Probe(limit=1)
    t0 = anyio.current_time()
    async with WorkerPool(size=1, rate=1, burst=2) as pool:
        pool.run(probe.job, "long", 100.0)
        for i in range(6):
            pool.run(probe.job, i)
    assert [t - t0 for t in probe.starts] == [approx(x) for x in (0, 100, 100, 101, 102, 103, 104)]
    assert max_starts_in(probe.starts, 1e-6) == 2
    assert_rate_contract(probe.starts, 1, 2)


# -- R9: the long-run rate -----------------------------------------------------------------------


async def test_r09_long_run_rate_is_within_one_percent() -> None:
    """5,000 starts at 250/s with size=20 and mixed durations: the achieved rate is 250/s."""
    probe = Probe(limit=20)
    rng = random.Random(9)
    async with WorkerPool(size=20, rate=250) as pool:
        for i in range(5000):
            pool.run(probe.job, i, rng.choice([0.0, 0.01, 0.05]))
    span = max(probe.starts) - min(probe.starts)
    achieved = (len(probe.starts) - 1) / span
    assert abs(achieved - 250) <= 0.01 * 250
    assert achieved <= 250 * (1 + 1e-9)  # never above the rate either
    assert span == approx(4999 / 250)  # no drift at all on virtual time
    assert_rate_contract(probe.starts[:600], 250, 1)


@pytest.mark.parametrize("burst", [1, 2])
def test_r09_r49_late_wake_ups_with_burst_1_lose_only_their_lateness(burst: int) -> None:
    """Sans-I/O: 10,000 admissions at 100/s with every wake-up up to 2 ms late.

    The event loops wake a worker late by up to a few ms; on virtual time they never do, so the
    scheduler is driven directly with jittered clock readings (the pool does exactly this).
    Admissions are dated when they happen (R49): with burst=1 no two are closer than 1/rate, and
    each costs its own lateness (about 1 ms of 10 on average here); with burst=2 the bucket's
    tolerance absorbs the lateness and the long-run rate stays within 1 %.
    """
    rng = random.Random(10)
    options = JobOptions(None, 0, (Exception,), default_backoff)
    sched = Scheduler([RateLimit(100, burst)])
    jobs = [sched.submit(lambda: None, (i,), options) for i in range(10_000)]
    now = 0.0
    woke: list[float] = []
    for job in jobs:
        result = sched.poll(now)
        while not isinstance(result, Job):
            now = max(now, result) + rng.uniform(0.0, 0.002)
            result = sched.poll(now)
        assert result is job
        woke.append(now)
        sched.returned(job, None)
    achieved = (len(woke) - 1) / (woke[-1] - woke[0])
    gaps = [b - a for a, b in pairwise(woke)]
    if burst == 1:
        assert min(gaps) >= 1 / 100 - 1e-12
        assert 100 / 1.11 <= achieved <= 100 / 1.09  # 1 ms of lateness on average per start
    else:
        assert abs(achieved - 100) <= 1.0
        assert woke[-1] <= 9998 / 100 + 0.002 + 1e-9  # lateness never accumulates
    assert_rate_contract(woke[:2000], 100, burst)


@pytest.mark.parametrize("burst", [1, 2])
async def test_r49_late_wake_ups_never_bring_the_next_start_closer(burst: int) -> None:
    """On the jobs' own clock: after wake-ups that come 3 ms late, starts stay 1/rate apart.

    A task whose timer is due just before each slot moves the clock 3 ms on, so the worker
    waiting for that slot runs 3 ms after it, as on a busy loop. Dating that start back to its
    slot (werkpool < 0.4) made the next one follow 97 ms later as the job (and a server) saw it.
    """
    probe = Probe()
    t0 = anyio.current_time()

    async def stall_before_slots() -> None:
        for k in range(1, 6):
            await anyio.sleep_until(t0 + k * 0.1 + (k - 1) * 0.003 - 1e-6)
            jump_clock(0.003)

    async with anyio.create_task_group() as tg, WorkerPool(rate=10, burst=burst) as pool:
        tg.start_soon(stall_before_slots)
        for i in range(6 + burst):
            pool.run(probe.job, i)
    starts = [t - t0 for t in probe.starts]
    gaps = [b - a for a, b in pairwise(starts)]
    assert_rate_contract(starts, 10, burst)
    if burst == 1:
        assert min(gaps) >= 0.1 - 1e-6
        assert starts[1] == approx(0.103 - 1e-6)  # dated when it happened, 3 ms after its slot
    else:
        assert starts[:2] == [approx(0.0), approx(0.0)]


# -- R10: extreme rates --------------------------------------------------------------------------


async def _three_starts(rate: float) -> list[float]:
    probe = Probe()
    t0 = anyio.current_time()
    async with WorkerPool(rate=rate) as pool:
        futures = [pool.run(probe.job, i) for i in range(3)]
    assert [await f for f in futures] == [0, 1, 2]
    return [t - t0 for t in probe.starts]


@pytest.mark.parametrize("rate", [1e-3, 1e-6])
async def test_r10_tiny_rates_space_starts_without_overflow(rate: float) -> None:
    """rate=1e-3 and 1e-6: starts exactly 1/rate apart (1,000 s; 11.6 days)."""
    starts = await _three_starts(rate)
    assert starts == [pytest.approx(k / rate, rel=1e-9, abs=1e-6) for k in range(3)]


@trio_only
async def test_r10_rate_1e_minus_9_spaces_starts_31_years_apart() -> None:
    """rate=1e-9: the second start comes 1e9 s (31.7 years) after the first, the third 2e9 s.

    trio only: looptime (the asyncio virtual clock, 1 ns ticks) cannot itself run past about
    2**24 s (a bare ``asyncio.sleep(2e7)`` spins: the float clock's step exceeds its tick there),
    whatever werkpool does; the same arithmetic is checked without a loop below.
    """
    starts = await _three_starts(1e-9)
    assert starts == [pytest.approx(k * 1e9, rel=1e-9, abs=1e-6) for k in range(3)]


@pytest.mark.parametrize("rate", [1e-9, 1e-12, 1e-300])
def test_r10_tiny_rate_arithmetic_does_not_overflow(rate: float) -> None:
    """Sans-I/O: the rate limit's schedule at 1e-9/s and below is exact and finite."""
    limit = RateLimit(rate, burst=1)
    admitted = []
    now = 0.0
    for _ in range(4):
        now = max(now, limit.earliest(None, now))
        assert math.isfinite(now)
        limit.admit(None, now)
        admitted.append(now)
    assert admitted == [pytest.approx(k / rate, rel=1e-12) for k in range(4)]


@pytest.mark.parametrize("rate", [1e-3, 1e-9])
async def test_r10_tiny_rate_delays_neither_shutdown_nor_kill(rate: float) -> None:
    """shutdown() returns when the last job ends and kill() at once, not at the next rate tick."""
    t0 = anyio.current_time()
    async with WorkerPool(rate=rate) as pool:
        pool.run(anyio.sleep, 2.0)
        await pool.shutdown()
        assert anyio.current_time() - t0 == approx(2.0)
    t1 = anyio.current_time()
    async with WorkerPool(rate=rate) as pool:
        first = pool.run(anyio.sleep, 5.0)
        waiting = pool.run(anyio.sleep, 5.0)  # its slot is 1/rate away
        await anyio.sleep(1.0)
        await pool.kill()
        assert anyio.current_time() - t1 == approx(1.0)
    assert first.cancelled()
    assert waiting.cancelled()


@pytest.mark.timeout(60)  # a busy loop stops virtual time: only a real-time guard ends it
@pytest.mark.parametrize("rate", [1e6, 1e12])
async def test_r10_huge_rates_behave_as_unlimited_without_busy_loop(rate: float) -> None:
    """rate=1e6 and 1e12: 2,000 instant jobs go through with O(1) work each and no spinning."""
    probe = Probe()
    n = 2000
    t0 = anyio.current_time()
    with count_werkpool_calls() as calls:
        async with WorkerPool(rate=rate) as pool:
            futures = [pool.run(probe.job, i) for i in range(n)]
    assert [await f for f in futures] == list(range(n))
    assert probe.order == list(range(n))
    assert max(probe.starts) - t0 <= (n - 1) / rate + 1e-6
    assert_rate_contract(probe.starts, rate, 1)
    # A spin on sub-nanosecond waits would call into the pool over and over per job.
    assert calls.python <= 100 * n, calls.python


# -- R11: size and rate together -----------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 5])
@pytest.mark.parametrize("rate", [0.5, 3.0, 50.0])
@pytest.mark.parametrize("burst", [1, 3])
async def test_r11_size_and_rate_never_stall(size: int, rate: float, burst: int) -> None:
    """Every job ends by the analytical bound: start_k <= k * max(1/rate, D/size).

    With FIFO starts, job k may start once the rate allows (at most 1/rate after job k-1) and a
    slot is free (job k-size, and everything before it, ended at most D after it started), so
    the last of N jobs of duration <= D ends by (N - 1) * max(1/rate, D/size) + D.
    """
    rng = random.Random(size * 1000 + int(rate * 10) + burst)
    n, longest = 30, 1.0
    durations = [round(rng.uniform(0, longest), 2) for _ in range(n)]
    probe = Probe(limit=size)
    t0 = anyio.current_time()
    with anyio.fail_after(10_000):  # virtual seconds: a stall fails fast instead of hanging
        async with WorkerPool(size=size, rate=rate, burst=burst) as pool:
            futures = [pool.run(probe.job, i, durations[i]) for i in range(n)]
    assert [await f for f in futures] == list(range(n))
    step = max(1 / rate, longest / size)
    for k, start in enumerate(probe.starts):
        assert start - t0 <= k * step + 1e-6
    assert anyio.current_time() - t0 <= (n - 1) * step + longest + 1e-6
    assert_rate_contract(probe.starts, rate, burst)
    assert probe.peak <= size
    assert_idle(pool)
