"""Contract R12-R17: per-attempt timeouts, retries and backoff."""

from __future__ import annotations

import math
from itertools import pairwise
from typing import Any

import anyio
import pytest
from support import (
    Boom,
    Probe,
    approx,
    assert_idle,
    echo,
)

from werkpool import BACKOFF_CAP, WorkerPool, default_backoff

TIMED_OUT = r"^the attempt timed out after {} s$"
BAD_BACKOFF = r"^backoff\(1\) returned .*; expected a finite number of seconds >= 0$"


# -- R12: the timeout runs from the attempt's start ----------------------------------------------


async def test_r12_timeout_not_counted_while_waiting_for_a_slot() -> None:
    """A job queued 10 s behind a busy slot, with timeout=2, runs 1.5 s and succeeds."""
    probe = Probe(limit=1)
    t0 = anyio.current_time()
    async with WorkerPool(size=1) as pool:
        pool.run(probe.job, "busy", 10.0)
        quick = pool.run(probe.job, "quick", 1.5, timeout=2)
        slow = pool.run(probe.job, "slow", 2.5, timeout=2)
        assert await quick == "quick"
        with pytest.raises(TimeoutError, match=TIMED_OUT.format(2)):
            await slow
    assert [t - t0 for t in probe.starts] == [0.0, approx(10.0), approx(11.5)]
    assert anyio.current_time() - t0 == approx(13.5)  # the slow one was stopped 2 s in


async def test_r12_timeout_not_counted_while_waiting_for_rate_credit() -> None:
    """A job that waits 5 s for its rate slot still gets its full second to run."""
    probe = Probe()
    t0 = anyio.current_time()
    async with WorkerPool(rate=0.2) as pool:
        pool.run(probe.job, "first")
        waited = pool.run(probe.job, "waited", 0.9, timeout=1)
        assert await waited == "waited"
    assert [t - t0 for t in probe.starts] == [0.0, approx(5.0)]


async def test_r12_each_attempt_gets_a_fresh_timeout() -> None:
    """Two attempts of 0.9 s with timeout=1 (1.8 s in all, plus backoff): both within time."""
    starts: list[float] = []

    async def fails_first_after_a_while() -> str:
        starts.append(anyio.current_time())
        await anyio.sleep(0.9)
        if len(starts) == 1:
            raise Boom("first")
        return "second"

    t0 = anyio.current_time()
    async with WorkerPool() as pool:
        future = pool.run(fails_first_after_a_while, timeout=1, retries=1, backoff=lambda n: 3)
        assert await future == "second"
    assert [t - t0 for t in starts] == [0.0, approx(3.9)]


# -- R13: exact boundaries -----------------------------------------------------------------------


async def test_r13_finishing_before_the_deadline_succeeds() -> None:
    """An attempt that returns 1 µs before its deadline succeeds, every time."""
    async with WorkerPool() as pool:
        futures = [pool.run(anyio.sleep, 1 - 1e-6, timeout=1) for _ in range(20)]
        assert [await f for f in futures] == [None] * 20


async def test_r13_finishing_at_the_deadline_times_out() -> None:
    """An attempt still running at its deadline times out, every time, on both backends."""
    t0 = anyio.current_time()
    async with WorkerPool() as pool:
        futures = [pool.run(anyio.sleep, 1.0, timeout=1) for _ in range(20)]
        for future in futures:
            with pytest.raises(TimeoutError, match=TIMED_OUT.format(1)):
                await future
    assert anyio.current_time() - t0 == approx(1.0)


@pytest.mark.parametrize("work", ["instant", "checkpoint", "sleep"])
async def test_r13_timeout_zero_times_out_immediately(work: str) -> None:
    """timeout=0 is accepted and always times out at once, as documented; no time passes."""
    calls: list[float] = []

    async def job() -> str:
        calls.append(anyio.current_time())
        if work == "checkpoint":
            await anyio.lowlevel.checkpoint()
        elif work == "sleep":
            await anyio.sleep(5)
        return "returned"

    t0 = anyio.current_time()
    async with WorkerPool() as pool:
        future = pool.run(job, timeout=0)
        with pytest.raises(TimeoutError, match=TIMED_OUT.format(0)):
            await future
        retried = pool.run(
            job, timeout=0, retries=2, retryable_exceptions=TimeoutError, backoff=_no
        )
        with pytest.raises(TimeoutError):
            await retried
    assert anyio.current_time() == t0
    assert len(calls) == 4  # one attempt, then three (two retries): each timed out
    assert pool.statistics().failed == 2


def _no(retry: int) -> float:
    return 0.0


# -- R14: retries and backoff --------------------------------------------------------------------


@pytest.mark.parametrize("retries", [0, 1, 3, 7])
async def test_r14_retries_n_means_at_most_n_plus_one_attempts(retries: int) -> None:
    """retries=n: n+1 attempts, backoff(1..n) called in order, the last error delivered."""
    attempts: list[int] = []
    backoffs: list[int] = []

    async def always_fails() -> None:
        attempts.append(len(attempts) + 1)
        raise Boom(len(attempts))

    def backoff(n: int) -> float:
        backoffs.append(n)
        return 0.5

    async with WorkerPool() as pool:
        future = pool.run(always_fails, retries=retries, backoff=backoff)
        with pytest.raises(Boom) as info:
            await future
    assert attempts == list(range(1, retries + 2))
    assert backoffs == list(range(1, retries + 1))
    assert info.value.args == (retries + 1,)
    s = pool.statistics()
    assert (s.attempts, s.retries, s.failed) == (retries + 1, retries, 1)


async def test_r14_success_stops_the_retries() -> None:
    """A job that succeeds on its third attempt is not tried again."""
    attempts: list[int] = []
    backoffs: list[int] = []

    async def third_time_lucky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("again")
        return "ok"

    def backoff(n: int) -> float:
        backoffs.append(n)
        return 0.25

    async with WorkerPool() as pool:
        assert await pool.call(third_time_lucky, retries=5, backoff=backoff) == "ok"
    assert len(attempts) == 3
    assert backoffs == [1, 2]


@pytest.mark.parametrize(
    ("retryable", "error", "attempts_expected"),
    [
        (ConnectionError, ValueError("not retryable"), 1),
        ((ConnectionError, KeyError), ValueError("not retryable"), 1),
        ([], Boom("empty list: nothing is retryable"), 1),
        (OSError, ConnectionRefusedError("a subclass is retryable"), 4),
        (Exception, Boom("Exception means every error"), 4),
    ],
)
async def test_r14_only_retryable_errors_are_retried(
    retryable: Any, error: BaseException, attempts_expected: int
) -> None:
    """Errors outside retryable_exceptions fail after one attempt; subclasses are retried."""
    attempts: list[int] = []

    async def fails() -> None:
        attempts.append(1)
        raise error

    async with WorkerPool() as pool:
        future = pool.run(fails, retries=3, retryable_exceptions=retryable, backoff=_no)
        with pytest.raises(type(error)):
            await future
    assert len(attempts) == attempts_expected


# -- R15: cancellation is never retried ------------------------------------------------------------


@pytest.mark.parametrize("how", ["future", "caller", "kill"])
async def test_r15_cancellation_is_never_retried_nor_a_failure(how: str) -> None:
    """With retryable_exceptions=Exception and retries=5, a cancelled job ends, cancelled."""
    attempts: list[float] = []

    async def sleeper() -> None:
        attempts.append(anyio.current_time())
        await anyio.sleep(100)

    options: dict[str, Any] = {"retries": 5, "retryable_exceptions": Exception}
    async with WorkerPool() as pool:
        if how == "caller":
            with anyio.move_on_after(1) as scope:
                await pool.call(sleeper, backoff=_no, **options)
            assert scope.cancelled_caught
        else:
            future = pool.run(sleeper, backoff=_no, **options)
            await anyio.sleep(1)
            if how == "future":
                assert future.cancel() is True
            else:
                await pool.kill()
            await anyio.sleep(10)
            assert future.cancelled()
    assert len(attempts) == 1
    s = pool.statistics()
    assert (s.attempts, s.retries, s.failed, s.cancelled) == (1, 0, 0, 1)


async def test_r15_timeout_is_not_cancellation() -> None:
    """A timed-out attempt is an error (TimeoutError), retried only if TimeoutError is retryable."""
    attempts: list[float] = []

    async def slow() -> None:
        attempts.append(anyio.current_time())
        await anyio.sleep(10)

    async with WorkerPool() as pool:
        not_retried = pool.run(slow, timeout=1, retries=2, retryable_exceptions=ConnectionError)
        with pytest.raises(TimeoutError):
            await not_retried
        assert len(attempts) == 1
        retried = pool.run(
            slow, timeout=1, retries=2, retryable_exceptions=TimeoutError, backoff=_no
        )
        with pytest.raises(TimeoutError):
            await retried
    assert len(attempts) == 4
    # Each retry starts when the attempt before it timed out (backoff 0), one timeout later.
    assert [b - a for a, b in pairwise(attempts[1:])] == [approx(1.0), approx(1.0)]
    assert pool.statistics().cancelled == 0


# -- R16: backoff is interruptible ---------------------------------------------------------------


async def _fails(attempts: list[float]) -> None:
    attempts.append(anyio.current_time())
    raise Boom("attempt failed")


@pytest.mark.parametrize("how", ["kill", "future", "caller"])
async def test_r16_backoff_is_interrupted_at_once(how: str) -> None:
    """kill(), future.cancel() or the caller's cancellation during a 100 s backoff stop the job."""
    attempts: list[float] = []
    t0 = anyio.current_time()
    async with WorkerPool(size=1) as pool:
        if how == "caller":
            with anyio.move_on_after(10):
                await pool.call(_fails, attempts, retries=3, backoff=lambda n: 100)
            assert anyio.current_time() - t0 == approx(10)  # returned when cancelled
        else:
            future = pool.run(_fails, attempts, retries=3, backoff=lambda n: 100)
            await anyio.sleep(10)
            assert pool.statistics().backoff == 1
            if how == "kill":
                await pool.kill()
            else:
                assert future.cancel() is True
            assert anyio.current_time() - t0 == approx(10)
            assert future.cancelled()
        assert pool.statistics().backoff == 0
        await anyio.sleep(500)
    assert attempts == [t0]  # no further attempt, ever
    assert_idle(pool)


# -- R17: default and user backoff ---------------------------------------------------------------


def test_r17_default_backoff_is_capped_and_jittered() -> None:
    """2**n plus up to 1 s of jitter, capped at BACKOFF_CAP=60, for any n, with no overflow."""
    assert BACKOFF_CAP == 60
    for n in range(1, 200):
        delay = default_backoff(n)
        assert math.isfinite(delay)
        assert min(2.0**n, BACKOFF_CAP) <= delay <= min(2.0**n + 1, BACKOFF_CAP)
    assert default_backoff(10**9) == BACKOFF_CAP
    samples = {default_backoff(2) for _ in range(200)}
    assert len(samples) > 100  # jittered: not one fixed value
    assert all(4 <= x <= 5 for x in samples)


async def test_r17_default_backoff_is_used_when_none_is_given() -> None:
    """Without a backoff, the first retry waits 2 to 3 s (werkpool 0.2's shape)."""
    starts: list[float] = []

    async def fails_once() -> str:
        starts.append(anyio.current_time())
        if len(starts) == 1:
            raise Boom("first")
        return "ok"

    async with WorkerPool() as pool:
        assert await pool.run(fails_once, retries=1) == "ok"
    assert 2.0 <= starts[1] - starts[0] <= 3.0 + 1e-6


@pytest.mark.parametrize(
    "value", [math.nan, math.inf, -math.inf, -1, -1e-9, "1", None, True, 1j, [1.0]]
)
async def test_r17_invalid_backoff_value_fails_the_job_clearly(value: object) -> None:
    """A bad backoff value fails the job at once (no hang), chained to the attempt's error."""
    attempts: list[float] = []
    t0 = anyio.current_time()
    with anyio.fail_after(100):
        async with WorkerPool(size=1) as pool:
            future = pool.run(_fails, attempts, retries=3, backoff=lambda n: value)
            with pytest.raises((ValueError, TypeError), match=BAD_BACKOFF) as info:
                await future
            assert await pool.run(echo, "slot is free") == "slot is free"
    assert isinstance(info.value.__cause__, Boom)
    assert attempts == [t0]
    assert anyio.current_time() == t0
    s = pool.statistics()
    assert (s.failed, s.attempts, s.retries, s.backoff) == (1, 2, 0, 0)
    assert_idle(pool)


async def test_r17_backoff_that_raises_fails_the_job() -> None:
    """A backoff that raises fails the job with that error, chained; nothing hangs."""

    def broken(n: int) -> float:
        raise ZeroDivisionError("broken backoff")

    attempts: list[float] = []
    with anyio.fail_after(100):
        async with WorkerPool() as pool:
            future = pool.run(_fails, attempts, retries=3, backoff=broken)
            with pytest.raises(ZeroDivisionError, match=r"^broken backoff$") as info:
                await future
    assert isinstance(info.value.__cause__, Boom)
    assert len(attempts) == 1
