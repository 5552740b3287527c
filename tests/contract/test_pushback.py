"""Contract #12: provider pushback (``RetryAfter``, ``retry_after=``, adaptive rates) and the
per-limit statistics.

A job that raises ``RetryAfter(seconds)`` (or an error the pool's ``retry_after=`` callable maps
to a delay) pauses the pool, or only its key when it has one: nothing of it starts until the
delay is over (a longer pause is kept), and the job is retried then if it has retries left,
whatever its ``retryable_exceptions``; with none left it fails with that error. An adaptive
``Rate`` halves its effective rate at each pushback (never below 1/64 of ``count``) and regrows
linearly while none comes, back to the configured rate in ``per`` seconds from half, never
above it. ``statistics()`` reports each of the pool's limits, the active keys and the pause.
"""

from __future__ import annotations

import math
import re
from itertools import pairwise
from typing import Any

import anyio
import pytest
from anyio.lowlevel import checkpoint
from support import Boom, Probe, approx, assert_idle, rate_violation

from werkpool import Concurrency, LimitStatistics, Rate, RetryAfter, Window, WorkerPool

INF = math.inf


class TooManyRequests(Exception):
    """An HTTP client's 429, with the server's Retry-After in seconds."""

    def __init__(self, delay: float) -> None:
        super().__init__(f"429, retry after {delay} s")
        self.delay = delay


def http_retry_after(error: BaseException) -> float | None:
    """A ``retry_after=`` callable: the delay of a 429, None for anything else."""
    return error.delay if isinstance(error, TooManyRequests) else None


class Pushy:
    """Jobs that push back: the listed attempts raise the given error, the others succeed."""

    def __init__(self) -> None:
        self.starts: dict[object, list[float]] = {}

    async def job(
        self, label: object, errors: dict[int, BaseException], duration: float = 0.0
    ) -> object:
        """Attempt ``n`` (1, 2, ...) sleeps *duration*, then raises ``errors[n]`` if given."""
        attempts = self.starts.setdefault(label, [])
        attempts.append(anyio.current_time())
        if duration:
            await anyio.sleep(duration)
        else:
            await checkpoint()
        error = errors.get(len(attempts))
        if error is not None:
            raise error
        return label


async def at(t0: float, when: float) -> None:
    await anyio.sleep_until(t0 + when)


# -- RetryAfter pauses the pool, or only the key -------------------------------------------------


async def test_retry_after_pauses_the_pool_and_the_job_is_retried_when_it_ends() -> None:
    """A job raises ``RetryAfter(5)`` at 1 s: nothing starts until 6 (jobs queued at 2 wait),
    the job's retry starts at 6 (the pause replaces its backoff), a job already running goes on."""
    jobs = Pushy()
    t0 = anyio.current_time()
    async with WorkerPool() as pool:
        pushed = pool.run(jobs.job, "pushed", {1: RetryAfter(5)}, 1.0, retries=1)
        running = pool.run(jobs.job, "running", {}, 3.0)
        await at(t0, 2.0)
        assert pool.paused
        assert pool.statistics().paused_until == approx(t0 + 6)
        later = [pool.run(jobs.job, i, {}) for i in range(2)]
        await at(t0, 5.9)
        assert running.done()  # ran to its end inside the pause
        assert not any(f.done() for f in later)
    assert await pushed == "pushed"
    assert [await f for f in later] == [0, 1]
    assert jobs.starts["pushed"] == [approx(t0), approx(t0 + 6)]
    assert jobs.starts[0] == jobs.starts[1] == [approx(t0 + 6)]
    assert not pool.paused
    assert pool.statistics().retries == 1


@pytest.mark.parametrize("per_key", [[], [Concurrency(5)]], ids=["no-per-key", "per-key"])
async def test_retry_after_of_a_keyed_job_pauses_only_its_key(per_key: list[Any]) -> None:
    """Key a's job raises ``RetryAfter(5)`` at 1 s: a's jobs wait until 6 (its retry too), while
    key b and jobs without a key start at once; the pool itself is not paused."""
    jobs = Pushy()
    t0 = anyio.current_time()
    async with WorkerPool(per_key=per_key) as pool:
        pushed = pool.run(jobs.job, "a-pushed", {1: RetryAfter(5)}, 1.0, retries=1, key="a")
        await at(t0, 2.0)
        assert not pool.paused
        assert pool.statistics().paused_until is None
        for label, key in [("a", "a"), ("b", "b"), ("none", None)]:
            pool.run(jobs.job, label, {}, key=key)
    assert await pushed == "a-pushed"
    assert jobs.starts == {
        "a-pushed": [approx(t0), approx(t0 + 6)],
        "a": [approx(t0 + 6)],
        "b": [approx(t0 + 2)],
        "none": [approx(t0 + 2)],
    }


async def test_a_pushback_is_retried_whatever_retryable_exceptions_says() -> None:
    """``retryable_exceptions=KeyError``: a ``RetryAfter`` is retried all the same."""
    jobs = Pushy()
    t0 = anyio.current_time()
    async with WorkerPool() as pool:
        future = pool.run(
            jobs.job, "x", {1: RetryAfter(2)}, retries=1, retryable_exceptions=KeyError
        )
    assert await future == "x"
    assert jobs.starts["x"] == [approx(t0), approx(t0 + 2)]


async def test_with_no_retries_left_the_job_fails_with_the_pushback_and_the_pause_holds() -> None:
    """retries=1, both attempts pushed back (2 s): attempts at 0 and 2, then the job fails with
    the second ``RetryAfter``; the pool still pauses until 4 (a job queued at 3 starts at 4)."""
    jobs = Pushy()
    second = RetryAfter(2)
    t0 = anyio.current_time()
    async with WorkerPool() as pool:
        future = pool.run(jobs.job, "x", {1: RetryAfter(2), 2: second}, retries=1)
        await at(t0, 3.0)
        assert future.done()
        pool.run(jobs.job, "later", {})
    assert future.exception() is second
    assert second.seconds == 2.0
    assert jobs.starts == {"x": [approx(t0), approx(t0 + 2)], "later": [approx(t0 + 4)]}
    assert pool.statistics().failed == 1


async def test_retry_after_zero_retries_at_once() -> None:
    """``RetryAfter(0)``: no pause; the retry starts at once, not after a backoff."""
    jobs = Pushy()
    t0 = anyio.current_time()
    async with WorkerPool() as pool:
        future = pool.run(jobs.job, "x", {1: RetryAfter(0)}, retries=1, backoff=lambda n: 50.0)
    assert await future == "x"
    assert jobs.starts["x"] == [approx(t0), approx(t0)]


async def test_a_pushback_extends_a_pause_and_never_shortens_it() -> None:
    """During ``pause_for(10)``: a ``RetryAfter(2)`` at 1 s leaves the end at 10; a
    ``RetryAfter(8)`` at 5 s moves it to 13."""
    jobs = Pushy()
    t0 = anyio.current_time()
    async with WorkerPool() as pool:
        pushed = [
            pool.run(jobs.job, "short", {1: RetryAfter(2)}, 1.0),
            pool.run(jobs.job, "long", {1: RetryAfter(8)}, 5.0),
        ]
        while pool.statistics().running < 2:  # let both start before the pause
            await checkpoint()
        pool.pause_for(10)
        await at(t0, 2.0)
        assert pool.statistics().paused_until == approx(t0 + 10)
        await at(t0, 6.0)
        assert pool.statistics().paused_until == approx(t0 + 13)
        pool.run(jobs.job, "later", {})
    assert jobs.starts["later"] == [approx(t0 + 13)]
    assert all(isinstance(f.exception(), RetryAfter) for f in pushed)


# -- retry_after= maps any error to a delay ------------------------------------------------------


async def test_retry_after_callable_maps_an_error_to_a_pause() -> None:
    """``retry_after=`` gives 3 for a 429 at 1 s: the pool pauses until 4 and the job is retried
    then, not after its own 100 s backoff; the callable got the job's exception."""
    jobs = Pushy()
    seen: list[BaseException] = []
    error = TooManyRequests(3)

    def retry_after(exc: BaseException) -> float | None:
        seen.append(exc)
        return http_retry_after(exc)

    t0 = anyio.current_time()
    async with WorkerPool(retry_after=retry_after) as pool:
        future = pool.run(jobs.job, "x", {1: error}, 1.0, retries=1, backoff=lambda n: 100.0)
        await at(t0, 2.0)
        assert pool.statistics().paused_until == approx(t0 + 4)
        pool.run(jobs.job, "later", {})
    assert await future == "x"
    assert seen == [error]
    assert jobs.starts == {"x": [approx(t0), approx(t0 + 4)], "later": [approx(t0 + 4)]}


async def test_retry_after_callable_returning_none_leaves_the_error_alone() -> None:
    """An error the callable maps to None: no pause, the usual backoff (0.5 s) and retry rules
    (a non-retryable one fails at once)."""
    jobs = Pushy()
    t0 = anyio.current_time()
    async with WorkerPool(retry_after=http_retry_after) as pool:
        retried = pool.run(jobs.job, "retried", {1: Boom("x")}, retries=1, backoff=lambda n: 0.5)
        failed = pool.run(
            jobs.job, "failed", {1: Boom("y")}, retries=3, retryable_exceptions=KeyError
        )
        other = pool.run(jobs.job, "other", {}, 0.0)
        await anyio.sleep(0.1)
        assert not pool.paused
    assert await retried == "retried"
    assert isinstance(failed.exception(), Boom)
    assert await other == "other"
    assert jobs.starts == {
        "retried": [approx(t0), approx(t0 + 0.5)],
        "failed": [approx(t0)],
        "other": [approx(t0)],
    }


async def test_retry_after_callable_with_a_key_pauses_only_the_key() -> None:
    """A keyed job's 429 (2 s) holds its key (its retry and a1 start at 2); another key goes
    on."""
    jobs = Pushy()
    t0 = anyio.current_time()
    async with WorkerPool(retry_after=http_retry_after, per_key=[Concurrency(10)]) as pool:
        pool.run(jobs.job, "a0", {1: TooManyRequests(2)}, retries=1, key="a")
        await anyio.sleep(0.5)
        pool.run(jobs.job, "a1", {}, key="a")
        pool.run(jobs.job, "b", {}, key="b")
    assert jobs.starts == {
        "a0": [approx(t0), approx(t0 + 2)],
        "a1": [approx(t0 + 2)],
        "b": [approx(t0 + 0.5)],
    }


@pytest.mark.parametrize(
    ("answer", "error"),
    [(-1.0, ValueError), (math.nan, ValueError), (math.inf, ValueError), ("1", TypeError)],
    ids=["negative", "nan", "inf", "str"],
)
async def test_a_bad_retry_after_answer_fails_the_job_naming_retry_after(
    answer: object, error: type[Exception]
) -> None:
    """A callable that returns no valid delay fails the job with an error naming it."""
    jobs = Pushy()
    async with WorkerPool(retry_after=lambda exc: answer) as pool:  # type: ignore[arg-type,return-value]
        future = pool.run(jobs.job, "x", {1: Boom("x")}, retries=2)
        with pytest.raises(error, match=r"\bretry_after\b"):
            await future
    assert len(jobs.starts["x"]) == 1


@pytest.mark.parametrize(
    ("seconds", "error"),
    [(-1, ValueError), (math.nan, ValueError), (math.inf, ValueError), ("5", TypeError)],
    ids=["negative", "nan", "inf", "str"],
)
def test_retry_after_refuses_a_bad_delay_naming_seconds(
    seconds: object, error: type[Exception]
) -> None:
    """``RetryAfter(seconds)``: a finite number >= 0."""
    with pytest.raises(error, match=r"\bseconds\b"):
        RetryAfter(seconds)  # type: ignore[arg-type]


def test_retry_after_is_an_exception_with_its_delay() -> None:
    """An :exc:`Exception` (so ``except Exception`` sees it), with ``.seconds`` as a float."""
    error = RetryAfter(3)
    assert isinstance(error, Exception)
    assert error.seconds == 3.0
    assert isinstance(error.seconds, float)


# -- adaptive rates ------------------------------------------------------------------------------


def effective(pool: WorkerPool, index: int = 0) -> float | None:
    return pool.statistics().limits[index].effective_rate


def adaptive_model(pushbacks: list[float], rate: float, per: float) -> list[float]:
    """The effective rate right after each pushback at the times *pushbacks*, by the contract:
    halved (not below ``rate / 64``), regrowing between pushbacks by ``rate / (2 * per)`` per
    second, a quarter of that below the rate refused last when that refusal came within
    ``2 * (per + pause)`` of the one before (the pauses here are 1 s), never above ``rate``."""
    effective, last, ceiling, after = rate, None, math.inf, []
    slope = rate / (2 * per)
    for t in pushbacks:
        if last is not None:
            elapsed = t - last
            gentle = 0.0  # the seconds of gentle regrowth (none without a ceiling)
            if ceiling != math.inf:
                gentle = min(elapsed, max(0.0, ceiling - effective) / (slope / 4))
            effective += gentle * slope / 4 + (elapsed - gentle) * slope
            effective = min(rate, effective)
        ceiling = effective if last is not None and t - last <= 2 * (per + 1) else math.inf
        effective = max(effective / 2, rate / 64)
        last = t
        after.append(effective)
    return after


async def test_adaptive_rate_halves_at_each_pushback_down_to_a_64th() -> None:
    """``Rate(10000, per=1000, adaptive=True)`` (10/s): nine pushbacks of 1 s in a row, each
    after the last one's pause but within its quiet (before the rate regrows to its last good
    one): the effective rate halves each time (regrowing a little in between, by the
    contract's 10/2000 per second), 5, 2.5, ... down to 10/64 and never below."""
    jobs = Pushy()
    async with WorkerPool(limits=[Rate(10_000, per=1000, adaptive=True)]) as pool:
        assert effective(pool) == 10
        seen = []
        for i in range(9):
            with pytest.raises(RetryAfter):
                await pool.run(jobs.job, i, {1: RetryAfter(1)})
            seen.append(effective(pool))
    pushbacks = [jobs.starts[i][0] for i in range(9)]
    expected = adaptive_model(pushbacks, 10, 1000)
    assert seen == [pytest.approx(r, rel=1e-9) for r in expected]
    assert seen[0] == approx(5)
    assert seen[1] == pytest.approx(2.5, rel=2e-3)
    assert seen[-3:] == [approx(10 / 64)] * 3


async def test_adaptive_rate_regrows_to_its_last_good_rate_then_linearly() -> None:
    """``Rate(200, per=20, adaptive=True)`` (10/s): one lone pushback of 1 s halves it to 5/s;
    it regrows by 10/(2*20) = 0.25/s per second during the pause and the quiet after it (one
    pause-length), then at 2 s jumps at once to its last good rate (0.9 x 10 = 9/s), then
    regrows linearly again (9.5 at 4 s), never above 10: a lone refusal (a jitter 429) leaves
    the probe at full speed."""
    jobs = Pushy()
    async with WorkerPool(limits=[Rate(200, per=20, adaptive=True)]) as pool:
        future = pool.run(jobs.job, "x", {1: RetryAfter(1)})
        with pytest.raises(RetryAfter):
            await future
        t0 = anyio.current_time()
        assert effective(pool) == approx(5)
        for when, expected in (
            (0.5, 5.125),
            (1.5, 5.375),
            (1.99, 5.4975),
            (2.0, 9.0),
            (4.0, 9.5),
            (6.0, 10.0),
            (60.0, 10.0),
        ):
            await at(t0, when)
            assert effective(pool) == approx(expected), when
            assert pool.statistics().limits[0].count == 200  # the configured count stays


async def test_adaptive_rate_halves_the_pace_of_starts() -> None:
    """``Rate(10000, per=1000, adaptive=True)`` (10/s, regrowing only 0.005/s per second): starts
    0.1 s apart; a pushback of 2 s from the fourth start pauses the pool, then the later ones
    are 0.2 s apart (to 0.1 %) during the quiet that follows the pause (2 s)."""
    jobs = Pushy()
    probe = Probe()
    async with WorkerPool(limits=[Rate(10_000, per=1000, adaptive=True)]) as pool:
        for i in range(3):
            pool.run(probe.job, i)
        pushed = pool.run(jobs.job, "pushback", {1: RetryAfter(2)})
        for i in range(3, 8):
            pool.run(probe.job, i)
    assert isinstance(pushed.exception(), RetryAfter)
    starts = sorted([*probe.starts, *jobs.starts["pushback"]])
    gaps = [b - a for a, b in pairwise(starts)]
    assert gaps[:3] == [approx(0.1)] * 3
    assert gaps[3] == approx(2.0)  # the pause: one start as it ends
    assert gaps[4:] == [pytest.approx(0.2, rel=5e-3)] * 4
    assert rate_violation(starts, 10, 1) is None


async def test_adaptive_rate_recovers_and_never_exceeds_the_configured_rate() -> None:
    """``Rate(10, per=1, adaptive=True)`` with a steady queue and one pushback of 0 s: no quiet
    to wait for, so the rate is back at once at its last good rate (9/s) and climbs to 10 within
    0.2 s, and the refused start's unit is given back: 10 starts in the second after it (not 7
    or 8 as when it regrew from 5), then exactly 0.1 s apart again; never closer than 0.1 s."""
    jobs = Pushy()
    probe = Probe()
    t0 = anyio.current_time()
    async with WorkerPool(limits=[Rate(10, adaptive=True)]) as pool:
        pushed = pool.run(jobs.job, "pushback", {1: RetryAfter(0)})
        for i in range(30):
            pool.run(probe.job, i)
    assert isinstance(pushed.exception(), RetryAfter)
    starts = [t - t0 for t in probe.starts]
    assert sum(1 for t in starts if t < 1.0) == 10
    late = [t for t in starts if t >= 1.5]
    assert len(late) >= 5
    assert [b - a for a, b in pairwise(late)] == [approx(0.1)] * (len(late) - 1)
    assert rate_violation(probe.starts, 10, 1) is None  # the refused start was given back


async def test_a_keys_pushback_slows_only_that_keys_adaptive_rate() -> None:
    """``per_key=[Rate(10000, per=1000, adaptive=True)]``: key a's pushback of 1 s makes a's
    starts 0.2 s apart (during the quiet after its pause); key b keeps 0.1 s."""
    jobs = Pushy()
    probe = Probe()
    t0 = anyio.current_time()
    async with WorkerPool(per_key=[Rate(10_000, per=1000, adaptive=True)]) as pool:
        pushed = pool.run(jobs.job, "pushback", {1: RetryAfter(1)}, key="a")
        for i in range(5):
            pool.run(probe.job, ("a", i), key="a")
            pool.run(probe.job, ("b", i), key="b")
    a = [t - t0 for (k, _), t in zip(probe.order, probe.starts, strict=True) if k == "a"]
    b = [t - t0 for (k, _), t in zip(probe.order, probe.starts, strict=True) if k == "b"]
    assert isinstance(pushed.exception(), RetryAfter)
    assert b == [approx(k * 0.1) for k in range(5)]
    assert [y - x for x, y in pairwise(a)] == [pytest.approx(0.2, rel=2e-3)] * 4


async def test_a_non_adaptive_rate_keeps_its_rate_after_a_pushback() -> None:
    """``Rate(10)`` (not adaptive): a pushback pauses but does not slow the rate down."""
    jobs = Pushy()
    async with WorkerPool(limits=[Rate(10)]) as pool:
        with pytest.raises(RetryAfter):
            await pool.run(jobs.job, "x", {1: RetryAfter(0)})
        assert effective(pool) == 10


# -- statistics per limit ------------------------------------------------------------------------


async def test_statistics_describe_each_limit_shorthands_first() -> None:
    """One snapshot per pool limit, the size and rate shorthands first, then ``limits=`` in
    order; kind, count, per, burst and unit as configured; effective_rate for rates only."""
    limits = [
        Window(3, per=10),
        Concurrency(4, unit="gb"),
        Rate(100, per=60, burst=100, unit="tokens"),
    ]
    async with WorkerPool(size=2, rate=5, burst=2, limits=limits, per_key=[Rate(1)]) as pool:
        snaps = pool.statistics().limits
        assert all(isinstance(s, LimitStatistics) for s in snaps)
        described = [(s.kind, s.count, s.per, s.burst, s.unit, s.effective_rate) for s in snaps]
        assert described == [
            ("concurrency", 2, None, None, None, None),
            ("rate", 5, 1.0, 2, None, 5.0),
            ("window", 3, 10.0, None, None, None),
            ("concurrency", 4, None, None, "gb", None),
            ("rate", 100, 60.0, 100, "tokens", approx(100 / 60)),
        ]
        assert pool.statistics().keys == 0
        assert pool.statistics().paused_until is None


async def test_statistics_in_use_and_next_free() -> None:
    """After two 2 s jobs (3 GB and 30 tokens; 1 GB and 0 tokens) start at 0: the size is full
    (in_use 2, next free once one ends: inf), the rate's bucket holds 2 starts (the next fits at
    0.2), the window 2 (a third fits now), 4 GB of 4 run (full), the token bucket holds 30 and
    drains at 100/60 per second."""
    limits = [
        Window(3, per=10),
        Concurrency(4, unit="gb"),
        Rate(100, per=60, burst=100, unit="tokens"),
    ]
    t0 = anyio.current_time()
    async with WorkerPool(size=2, rate=5, burst=2, limits=limits) as pool:
        pool.run(anyio.sleep, 2.0, cost={"gb": 3, "tokens": 30})
        pool.run(anyio.sleep, 2.0, cost={"gb": 1})
        while pool.statistics().running < 2:  # let both start (the clock stands still)
            await checkpoint()
        assert anyio.current_time() == t0
        size, rate, window, gb, tokens = pool.statistics().limits
        assert (size.in_use, size.next_free) == (2, INF)
        assert rate.in_use == approx(2)
        assert rate.next_free == approx(t0 + 0.2)
        assert window.in_use == 2
        assert window.next_free <= t0
        assert (gb.in_use, gb.next_free) == (4, INF)
        assert tokens.in_use == approx(30)
        assert tokens.next_free <= t0
        await at(t0, 6.0)
        size, rate, window, gb, tokens = pool.statistics().limits
        assert (size.in_use, gb.in_use, rate.in_use) == (0, 0, 0)
        assert size.next_free <= t0 + 6
        assert gb.next_free <= t0 + 6
        assert tokens.in_use == approx(30 - 6 * 100 / 60)
        assert window.in_use == 2  # both starts are within the last 10 s


async def test_statistics_window_next_free_when_full() -> None:
    """``Window(2, per=10)`` after two starts at 0: in_use 2, next_free at 10."""
    t0 = anyio.current_time()
    async with WorkerPool(limits=[Window(2, per=10)]) as pool:
        for _ in range(2):
            await pool.run(anyio.sleep, 0)
        (window,) = pool.statistics().limits
        assert (window.in_use, window.next_free) == (2, approx(t0 + 10))
        await at(t0, 10)
        (window,) = pool.statistics().limits
        assert window.in_use == 0
        assert window.next_free <= t0 + 10


async def test_statistics_count_active_keys_and_report_the_pause() -> None:
    """``keys`` counts keys in use; ``paused_until`` is None, a time (pause_for, pushback), or
    inf (pause) and None again after resume()."""
    async with WorkerPool(per_key=[Concurrency(1)]) as pool:
        for key in "abc":
            pool.run(anyio.sleep, 1.0, key=key)
        await anyio.sleep(0.5)
        assert pool.statistics().keys == 3
        t = anyio.current_time()
        pool.pause_for(2)
        assert pool.statistics().paused_until == approx(t + 2)
        pool.pause()
        assert pool.statistics().paused_until == INF
        pool.resume()
        assert pool.statistics().paused_until is None
        await anyio.sleep(1.0)
        assert pool.statistics().keys == 0
    assert_idle(pool)


async def test_statistics_before_the_pool_starts() -> None:
    """A pool not yet entered reports its limits, at rest."""
    pool = WorkerPool(size=3, limits=[Rate(2, burst=2), Window(5, per=1)])
    stats = pool.statistics()
    assert [(s.kind, s.count, s.in_use) for s in stats.limits] == [
        ("concurrency", 3, 0),
        ("rate", 2, 0),
        ("window", 5, 0),
    ]
    assert (stats.keys, stats.paused_until) == (0, None)
    async with pool:
        pass


async def test_statistics_pushbacks_pause_the_pool() -> None:
    """After a ``RetryAfter(4)``: ``paused`` and ``paused_until`` say until when."""
    jobs = Pushy()
    t0 = anyio.current_time()
    async with WorkerPool() as pool:
        with pytest.raises(RetryAfter, match=re.escape("4")):
            await pool.run(jobs.job, "x", {1: RetryAfter(4)})
        assert pool.paused
        assert pool.statistics().paused_until == approx(t0 + 4)
        await at(t0, 4)
        assert not pool.paused
        assert pool.statistics().paused_until is None


# -- push_back(): a pushback that fails no job ---------------------------------------------------


async def test_push_back_pauses_the_pool_and_halves_adaptive_rates_without_failing_a_job() -> None:
    """``pool.push_back(2)`` (as werkpool.httpx does with a last 429): nothing starts for 2 s,
    and the adaptive rate halves, as for a job's RetryAfter; no job fails."""
    probe = Probe()
    t0 = anyio.current_time()
    async with WorkerPool(limits=[Rate(10_000, per=1000, adaptive=True)]) as pool:
        pool.push_back(2)
        assert pool.paused
        assert pool.statistics().paused_until == approx(t0 + 2)
        assert effective(pool) == approx(5)
        futures = [pool.run(probe.job, i) for i in range(3)]
    assert [f.result() for f in futures] == [0, 1, 2]
    starts = [t - t0 for t in probe.starts]
    assert starts[0] >= 2 - 1e-9
    assert [y - x for x, y in pairwise(starts)] == [pytest.approx(0.2, rel=1e-2)] * 2
    assert pool.statistics().failed == 0


async def test_push_back_with_a_key_pauses_only_that_key_and_slows_its_rate() -> None:
    """``push_back(1, key="a")``: key a starts nothing for 1 s and its adaptive rate halves;
    key b goes on at once at its own rate; the pool itself is not paused."""
    probe = Probe()
    t0 = anyio.current_time()
    async with WorkerPool(per_key=[Rate(10_000, per=1000, adaptive=True)]) as pool:
        pool.run(probe.job, ("a", -1), key="a")  # the key exists before its pushback
        await anyio.sleep(0.5)
        pool.push_back(1, key="a")
        assert not pool.paused
        for i in range(3):
            pool.run(probe.job, ("a", i), key="a")
            pool.run(probe.job, ("b", i), key="b")
    a = [t - t0 for (k, i), t in zip(probe.order, probe.starts, strict=True) if k == "a" and i >= 0]
    b = [t - t0 for (k, _), t in zip(probe.order, probe.starts, strict=True) if k == "b"]
    assert b[0] == approx(0.5)
    assert a[0] >= 1.5 - 1e-9
    assert [y - x for x, y in pairwise(a)] == [pytest.approx(0.2, rel=1e-2)] * 2


async def test_push_back_keeps_a_longer_pause_and_refuses_a_bad_delay() -> None:
    async with WorkerPool() as pool:
        pool.pause_for(5)
        pool.push_back(1)
        assert pool.statistics().paused_until == approx(anyio.current_time() + 5)
        pool.resume()
        for bad, error in ((-1, ValueError), (math.nan, ValueError), ("1", TypeError)):
            with pytest.raises(error, match="seconds"):
                pool.push_back(bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="key"):
            pool.push_back(1, key=[])  # type: ignore[arg-type]


class _StricterServer:
    """A GCRA of 7/s, burst 1: refuses what comes too early with a RetryAfter (the exact wait,
    or a fixed one)."""

    def __init__(self, fixed: float | None) -> None:
        self.fixed = fixed
        self.tat = -1.0
        self.admitted: list[float] = []
        self.refused = 0

    async def call(self) -> None:
        now = anyio.current_time()
        if now < self.tat - 1e-9:
            self.refused += 1
            raise RetryAfter(self.tat - now if self.fixed is None else self.fixed)
        self.tat = max(self.tat, now) + 1 / 7
        self.admitted.append(now)
        await anyio.sleep(0.05)


@pytest.mark.parametrize(
    ("fixed", "min_share", "max_refused"),
    [(None, 0.9, 0.4), (1.0, 0.4, 0.2)],
    ids=["exact Retry-After", "Retry-After 1 s"],
)
async def test_an_adaptive_rate_settles_near_a_stricter_servers_rate(
    fixed: float | None, min_share: float, max_refused: float
) -> None:
    """``Rate(10, adaptive=True)`` against a server that admits 7/s (benchmarks/control_law.py
    draws it): 600 jobs, every refusal retried. Below the rate refused last the probe is gentle,
    so each recovery does not overrun the server at once: after the first 10 s the client gets
    at least 90 % of the server's rate with under 40 % of the jobs refused once (with the exact
    wait as Retry-After), or 40 % with under 20 % refused (a fixed 1 s Retry-After). Before the
    gentle probe it regrew to 10/s within the pause: 412 refusals and 99 %, or 599 and 13 %."""
    server = _StricterServer(fixed)
    async with WorkerPool(limits=[Rate(10, adaptive=True)]) as pool:
        for _ in range(600):
            pool.run(server.call, retries=100)
    assert len(server.admitted) == 600
    end = server.admitted[-1]
    after = [t for t in server.admitted if t >= 10]
    assert len(after) / (end - 10) >= min_share * 7
    assert server.refused <= max_refused * 600
