"""WorkerPool semantics on asyncio and trio, under virtual time."""

from __future__ import annotations

import math
import sys
from itertools import pairwise

import anyio
import pytest
from helpers import Recorder, max_in_window, rate_contract_holds

from werkpool import PoolClosedError, WorkerPool, worker_pool

if sys.version_info < (3, 11):
    from exceptiongroup import ExceptionGroup

pytestmark = pytest.mark.anyio


def approx(value: float) -> object:
    # trio's MockClock adds floats; looptime counts integer nanoseconds.
    return pytest.approx(value, abs=1e-6)


async def wait_all(futures: list) -> list:  # type: ignore[type-arg]
    return [await future for future in futures]


class Boom(Exception):
    pass


# -- concurrency limit ----------------------------------------------------------------------------


class TestSize:
    async def test_never_more_than_size_at_once(self) -> None:
        """20 one-second jobs with size=5 run five at a time, in four waves."""
        rec = Recorder(limit=5)
        start = anyio.current_time()
        async with WorkerPool(size=5) as pool:
            futures = [pool.run(rec.job, i, 1.0) for i in range(20)]
        assert await wait_all(futures) == list(range(20))
        assert rec.peak == 5
        assert [t - start for t in rec.starts] == [approx(k // 5) for k in range(20)]
        assert anyio.current_time() - start == approx(4.0)

    async def test_size_one_is_fifo(self) -> None:
        """With size=1 jobs start in submission order."""
        rec = Recorder(limit=1)
        async with WorkerPool(size=1) as pool:
            for i in range(30):
                pool.run(rec.job, i, 0.01 * (30 - i))
        assert rec.order == list(range(30))

    async def test_borrowed_tokens_track_running_attempts(self) -> None:
        """The limiter lends exactly one token per executing attempt, and none once idle."""
        async with WorkerPool(size=3) as pool:
            futures = [pool.run(anyio.sleep, 1.0) for _ in range(7)]
            await anyio.sleep(0.5)
            assert pool._limiter is not None
            assert pool._limiter.borrowed_tokens == 3
            await anyio.sleep(2.0)
            assert pool._limiter.borrowed_tokens == 1
            await wait_all(futures)
            assert pool._limiter.borrowed_tokens == 0

    async def test_unlimited_size_runs_everything_at_once(self) -> None:
        """size=None starts every job at once."""
        rec = Recorder()
        async with WorkerPool() as pool:
            for i in range(50):
                pool.run(rec.job, i, 1.0)
        assert rec.peak == 50
        assert max(rec.ends) == approx(rec.starts[0] + 1.0)


# -- rate limit -----------------------------------------------------------------------------------


class TestRate:
    async def test_starts_evenly_spaced_with_burst_one(self) -> None:
        """rate=10 spaces 25 instant jobs exactly 0.1 s apart, starting at once."""
        rec = Recorder()
        start = anyio.current_time()
        async with WorkerPool(rate=10) as pool:
            for i in range(25):
                pool.run(rec.job, i)
        assert [t - start for t in rec.starts] == [approx(k / 10) for k in range(25)]
        assert max_in_window(rec.starts, 1.0) == 10  # the seed started 19 in the first second
        assert rate_contract_holds(rec.starts, 10, 1)

    async def test_burst_then_spacing(self) -> None:
        """burst=3 lets three start back to back, then one per period."""
        rec = Recorder()
        start = anyio.current_time()
        async with WorkerPool(rate=1, burst=3) as pool:
            for i in range(6):
                pool.run(rec.job, i)
        assert [t - start for t in rec.starts] == [approx(x) for x in (0, 0, 0, 1, 2, 3)]
        assert rate_contract_holds(rec.starts, 1, 3)

    async def test_idle_pool_banks_no_more_than_burst(self) -> None:
        """After a long idle stretch at most `burst` jobs start together."""
        rec = Recorder()
        async with WorkerPool(rate=1, burst=2) as pool:
            await pool.run(rec.job, "first")
            await anyio.sleep(100)
            t0 = anyio.current_time()
            await wait_all([pool.run(rec.job, i) for i in range(5)])
        assert [t - t0 for t in rec.starts[1:]] == [approx(x) for x in (0, 0, 1, 2, 3)]

    async def test_busy_pool_banks_no_credit(self) -> None:
        """Credit does not pile up while a long job holds the only slot."""
        rec = Recorder()
        start = anyio.current_time()
        async with WorkerPool(size=1, rate=10) as pool:
            pool.run(rec.job, "long", 5.0)
            for i in range(10):
                pool.run(rec.job, i)
        assert [t - start for t in rec.starts] == [0.0] + [approx(5.0 + k / 10) for k in range(10)]
        assert rate_contract_holds(rec.starts, 10, 1)

    async def test_combined_size_and_rate(self) -> None:
        """Seed example 4: size 5, rate 10, 100 jobs of 0.2 s: rate-bound, never over five."""
        rec = Recorder(limit=5)
        start = anyio.current_time()
        async with WorkerPool(size=5, rate=10) as pool:
            futures = [pool.run(rec.job, i, 0.2) for i in range(100)]
        assert await wait_all(futures) == list(range(100))
        assert rec.order == list(range(100))
        assert rate_contract_holds(rec.starts, 10, 1)
        assert anyio.current_time() - start == approx(9.9 + 0.2)

    async def test_size_bound_jobs_start_when_slot_frees(self) -> None:
        """When size binds, a job starts when a slot frees, not at an earlier rate slot."""
        rec = Recorder(limit=1)
        start = anyio.current_time()
        async with WorkerPool(size=1, rate=10) as pool:
            for i in range(4):
                pool.run(rec.job, i, 0.25)
        assert [t - start for t in rec.starts] == [approx(x) for x in (0, 0.25, 0.5, 0.75)]

    async def test_long_run_has_no_drift(self) -> None:
        """2,000 starts at 1,000/s end exactly 1.999 s after the first."""
        rec = Recorder()
        async with WorkerPool(rate=1000) as pool:
            for i in range(2000):
                pool.run(rec.job, i)
        assert rec.starts[-1] - rec.starts[0] == approx(1.999)
        assert rate_contract_holds(rec.starts, 1000, 1)

    async def test_tiny_rate_does_not_delay_shutdown(self) -> None:
        """rate=1e-9: the first job starts at once; shutdown returns when it ends."""
        rec = Recorder()
        start = anyio.current_time()
        pool = WorkerPool(rate=1e-9)
        async with pool:
            pool.run(rec.job, 0, 1.0)
        assert anyio.current_time() - start == approx(1.0)

    async def test_huge_rate_behaves_as_unlimited(self) -> None:
        """rate=1e12 admits 1,000 jobs at the same instant, without spinning."""
        rec = Recorder()
        start = anyio.current_time()
        async with WorkerPool(rate=1e12) as pool:
            for i in range(1000):
                pool.run(rec.job, i)
        assert anyio.current_time() - start < 1e-6

    async def test_retries_take_rate_slots(self) -> None:
        """Every attempt, retries included, takes a rate slot."""
        starts: list[float] = []

        async def flaky() -> str:
            starts.append(anyio.current_time())
            if len(starts) < 3:
                raise Boom
            return "ok"

        t0 = anyio.current_time()
        async with WorkerPool(rate=1) as pool:
            future = pool.run(flaky, retries=2, backoff=lambda n: 0)
            assert await future == "ok"
        assert [t - t0 for t in starts] == [approx(x) for x in (0, 1, 2)]


# -- timeouts and retries -------------------------------------------------------------------------


class TestTimeoutsAndRetries:
    async def test_timeout_counts_from_the_attempt_start(self) -> None:
        """Time spent queued does not count against the timeout."""
        rec = Recorder()
        async with WorkerPool(size=1) as pool:
            pool.run(rec.job, "slow", 5.0)
            quick = pool.run(rec.job, "queued-then-quick", 1.0, timeout=2)
            slow = pool.run(rec.job, "queued-then-slow", 3.0, timeout=2)
            assert await quick == "queued-then-quick"
            with pytest.raises(TimeoutError, match=r"^the attempt timed out after 2 s$"):
                await slow
        assert rec.ends[-1] - rec.starts[-1] == approx(2.0)

    async def test_deadline_boundary(self) -> None:
        """Finishing before the deadline succeeds; at the deadline it times out."""
        async with WorkerPool() as pool:
            before = pool.run(anyio.sleep, 0.999, timeout=1)
            at = pool.run(anyio.sleep, 1.0, timeout=1)
            zero = pool.run(anyio.sleep, 0, timeout=0)
            assert await before is None
            with pytest.raises(TimeoutError):
                await at
            with pytest.raises(TimeoutError):
                await zero

    async def test_timeout_is_retryable(self) -> None:
        """An attempt that times out is retried when TimeoutError is retryable."""
        calls: list[float] = []

        async def slow_then_fast() -> str:
            calls.append(anyio.current_time())
            await anyio.sleep(10 if len(calls) < 3 else 0.5)
            return "done"

        async with WorkerPool() as pool:
            future = pool.run(
                slow_then_fast,
                timeout=1,
                retries=5,
                retryable_exceptions=[TimeoutError],
                backoff=lambda n: 0.5,
            )
            assert await future == "done"
        assert len(calls) == 3
        assert [b - a for a, b in pairwise(calls)] == [approx(1.5), approx(1.5)]

    async def test_retries_mean_retries_after_the_first_attempt(self) -> None:
        """retries=3 gives four attempts, and backoff(n) is called for n = 1, 2, 3."""
        attempts: list[int] = []
        backoffs: list[int] = []

        async def always_fails() -> None:
            attempts.append(1)
            raise Boom(len(attempts))

        def backoff(n: int) -> float:
            backoffs.append(n)
            return 0.25

        async with WorkerPool() as pool:
            future = pool.run(always_fails, retries=3, backoff=backoff)
            with pytest.raises(Boom) as info:
                await future
        assert len(attempts) == 4
        assert backoffs == [1, 2, 3]
        assert info.value.args == (4,)  # the last attempt's own exception object

    async def test_non_retryable_error_fails_at_once(self) -> None:
        """An error outside retryable_exceptions is not retried."""
        attempts: list[int] = []

        async def fails() -> None:
            attempts.append(1)
            raise KeyError("nope")

        async with WorkerPool() as pool:
            future = pool.run(fails, retries=5, retryable_exceptions=ConnectionError)
            with pytest.raises(KeyError):
                await future
        assert attempts == [1]

    async def test_backoff_holds_no_slot(self) -> None:
        """A job in its backoff lets the next job use its slot."""
        rec = Recorder(limit=1)
        attempts: list[float] = []

        async def fails_once() -> str:
            attempts.append(anyio.current_time())
            if len(attempts) == 1:
                raise Boom
            return "retried"

        t0 = anyio.current_time()
        async with WorkerPool(size=1) as pool:
            first = pool.run(fails_once, retries=1, backoff=lambda n: 10)
            second = pool.run(rec.job, "second", 3.0)
            assert await first == "retried"
            assert await second == "second"
        assert [t - t0 for t in attempts] == [0.0, approx(10.0)]
        assert rec.starts == [approx(t0)]

    @pytest.mark.parametrize("value", [math.nan, -1.0, math.inf, "soon", None])
    async def test_bad_backoff_value_fails_the_job(self, value: object) -> None:
        """A backoff that returns a bad value fails the job with a clear error, chained."""
        async with WorkerPool() as pool:
            future = pool.run(_raise_boom, retries=2, backoff=lambda n: value)
            with pytest.raises((ValueError, TypeError), match=r"^backoff\(1\) returned ") as info:
                await future
        assert isinstance(info.value.__cause__, Boom)

    async def test_backoff_that_raises_fails_the_job(self) -> None:
        """An exception from backoff() itself fails the job, chained to the attempt's error."""

        def backoff(n: int) -> float:
            raise ZeroDivisionError

        async with WorkerPool() as pool:
            future = pool.run(_raise_boom, retries=2, backoff=backoff)
            with pytest.raises(ZeroDivisionError) as info:
                await future
        assert isinstance(info.value.__cause__, Boom)

    async def test_cancellation_is_never_retried(self) -> None:
        """Cancelling a running job with retries and Exception retryable ends it."""
        attempts: list[int] = []

        async def sleeper() -> None:
            attempts.append(1)
            await anyio.sleep(100)

        async with WorkerPool() as pool:
            future = pool.run(sleeper, retries=5, retryable_exceptions=Exception)
            await anyio.sleep(1)
            assert future.cancel() is True
            await anyio.sleep(1)
            assert future.cancelled()
        assert attempts == [1]

    async def test_default_backoff_is_capped(self) -> None:
        """The default backoff grows exponentially with jitter and stops at 60 s."""
        from werkpool import default_backoff

        assert 2 <= default_backoff(1) <= 3
        assert 8 <= default_backoff(3) <= 9
        assert default_backoff(6) == 60
        assert default_backoff(10_000) == 60


async def _raise_boom() -> None:
    raise Boom("attempt failed")


# -- cancellation and futures ---------------------------------------------------------------------


class TestCancellation:
    async def test_cancelled_queued_job_never_starts(self) -> None:
        """A queued job whose future is cancelled never runs, and later jobs are not delayed."""
        rec = Recorder(limit=1)
        t0 = anyio.current_time()
        async with WorkerPool(size=1) as pool:
            futures = [pool.run(rec.job, i, 1.0) for i in range(4)]
            assert futures[1].cancel() is True
            assert futures[1].cancelled()
        assert rec.order == [0, 2, 3]
        assert [t - t0 for t in rec.starts] == [0.0, approx(1.0), approx(2.0)]

    async def test_cancel_running_job_frees_its_slot_at_once(self) -> None:
        """Cancelling a running job stops it and the next job starts at that moment."""
        rec = Recorder(limit=1)
        t0 = anyio.current_time()
        async with WorkerPool(size=1) as pool:
            first = pool.run(rec.job, "first", 100.0)
            second = pool.run(rec.job, "second", 1.0)
            await anyio.sleep(2)
            first.cancel()
            assert await second == "second"
        assert first.cancelled()
        assert [t - t0 for t in rec.starts] == [0.0, approx(2.0)]
        assert rec.ends[0] - t0 == approx(2.0)

    async def test_cancel_after_completion_is_a_no_op(self) -> None:
        """cancel() on a finished future returns False and keeps the result."""
        async with WorkerPool() as pool:
            future = pool.run(_echo, 7)
            assert await future == 7
            assert future.cancel() is False
            assert future.result() == 7

    async def test_cancel_during_backoff_stops_the_job(self) -> None:
        """Cancelling a job in its backoff means no further attempt."""
        attempts: list[int] = []

        async def fails() -> None:
            attempts.append(1)
            raise Boom

        async with WorkerPool() as pool:
            future = pool.run(fails, retries=3, backoff=lambda n: 10)
            await anyio.sleep(5)
            future.cancel()
        assert attempts == [1]
        assert future.cancelled()

    async def test_job_that_swallows_cancellation_stays_cancelled(self) -> None:
        """A job that catches its cancellation and returns does not un-cancel its future."""
        cancelled = anyio.get_cancelled_exc_class()

        async def stubborn() -> str:
            try:
                await anyio.sleep(100)
            except cancelled:
                return "ignored"
            return "finished"

        async with WorkerPool(size=1) as pool:
            future = pool.run(stubborn)
            after = pool.run(_echo, "after")
            await anyio.sleep(1)
            future.cancel()
            assert await after == "after"
        assert future.cancelled()

    async def test_many_awaiters_get_the_result(self) -> None:
        """Several tasks awaiting one future all get its result."""
        got: list[object] = []
        async with WorkerPool() as pool:
            future = pool.run(_sleep_echo, 1.0, "shared")

            async def waiter() -> None:
                got.append(await future)

            async with anyio.create_task_group() as tg:
                for _ in range(5):
                    tg.start_soon(waiter)
        assert got == ["shared"] * 5


async def _echo(value: object) -> object:
    return value


async def _sleep_echo(delay: float, value: object) -> object:
    await anyio.sleep(delay)
    return value


# -- errors and isolation -------------------------------------------------------------------------


class TestErrors:
    async def test_failures_affect_only_their_own_future(self) -> None:
        """1,000 jobs, every other one failing: each future gets its own outcome."""

        async def maybe_fail(i: int) -> int:
            await anyio.sleep(0.001)
            if i % 2:
                raise Boom(i)
            return i

        async with WorkerPool(size=10) as pool:
            futures = [pool.run(maybe_fail, i) for i in range(1000)]
            for i, future in enumerate(futures):
                if i % 2:
                    with pytest.raises(Boom) as info:
                        await future
                    assert info.value.args == (i,)
                else:
                    assert await future == i
            assert await pool.run(_echo, "still accepting") == "still accepting"

    async def test_exception_group_from_a_job_is_delivered_unchanged(self) -> None:
        """An ExceptionGroup raised by a job reaches its future as the same object."""
        group = ExceptionGroup("job's own", [Boom(1), Boom(2)])

        async def raises_group() -> None:
            raise group

        async with WorkerPool() as pool:
            future = pool.run(raises_group)
            with pytest.raises(ExceptionGroup) as info:
                await future
        assert info.value is group

    async def test_non_awaitable_result_fails_without_retry(self) -> None:
        """A callable returning a non-awaitable fails with TypeError, never retried."""
        calls: list[int] = []

        def not_async() -> int:
            calls.append(1)
            return 5

        async with WorkerPool() as pool:
            future = pool.run(
                not_async,  # type: ignore[arg-type]
                retries=3,
                retryable_exceptions=TypeError,
            )
            with pytest.raises(TypeError, match=r"returned int, not an awaitable"):
                await future
        assert calls == [1]

    async def test_base_exception_from_a_job_propagates(self) -> None:
        """A BaseException from a job resolves its future, cancels the others and propagates."""

        class Fatal(BaseException):
            pass

        async def fatal() -> None:
            await anyio.sleep(1)
            raise Fatal

        with pytest.raises(Fatal):
            async with WorkerPool() as pool:
                doomed = pool.run(fatal)
                other = pool.run(anyio.sleep, 100)
                queued_behind = [pool.run(anyio.sleep, 100) for _ in range(3)]
                await anyio.sleep(50)
        assert isinstance(doomed.exception(), Fatal)
        assert other.cancelled()
        assert all(f.cancelled() for f in queued_behind)


# -- lifecycle ------------------------------------------------------------------------------------


class TestLifecycle:
    async def test_body_exception_cancels_jobs_and_is_reraised_unwrapped(self) -> None:
        """An error in the body cancels the jobs and is re-raised as the same object."""
        error = Boom("from the body")
        with pytest.raises(Boom) as info:
            async with worker_pool(size=2) as pool:
                futures = [pool.run(anyio.sleep, 10) for _ in range(5)]
                await anyio.sleep(1)
                raise error
        assert info.value is error
        assert all(f.cancelled() for f in futures)

    async def test_cancelled_body_cancels_jobs(self) -> None:
        """Cancelling the scope around the pool cancels its jobs promptly."""
        t0 = anyio.current_time()
        with anyio.move_on_after(2):
            async with worker_pool(size=2) as pool:
                futures = [pool.run(anyio.sleep, 10) for _ in range(5)]
        assert anyio.current_time() - t0 == approx(2.0)
        assert all(f.cancelled() for f in futures)

    async def test_shutdown_returns_when_the_last_job_ends(self) -> None:
        """No 1/rate tail: shutdown returns when the last job ends."""
        t0 = anyio.current_time()
        async with WorkerPool(rate=0.001) as pool:
            pool.run(anyio.sleep, 3.0)
            await pool.shutdown()
            assert anyio.current_time() - t0 == approx(3.0)

    async def test_run_after_shutdown_raises(self) -> None:
        """run() after shutdown() began raises PoolClosedError, a RuntimeError."""
        async with WorkerPool() as pool:
            await pool.shutdown()
            with pytest.raises(PoolClosedError, match=r"shutdown\(\) has begun"):
                pool.run(_echo, 1)
        assert issubclass(PoolClosedError, RuntimeError)
        with pytest.raises(PoolClosedError, match=r"the pool has exited"):
            pool.run(_echo, 1)

    async def test_jobs_may_submit_while_draining(self) -> None:
        """A job may submit follow-up work during shutdown, and the drain waits for it."""
        seen: list[int] = []

        async def crawl(depth: int) -> None:
            seen.append(depth)
            await anyio.sleep(1)
            if depth < 3:
                pool.run(crawl, depth + 1)

        async with WorkerPool(size=2) as pool:
            pool.run(crawl, 0)
            await pool.shutdown()
        assert seen == [0, 1, 2, 3]

    async def test_kill_cancels_every_kind_of_job(self) -> None:
        """kill() cancels queued, rate-waiting, running and backing-off jobs."""
        ran_after_kill: list[str] = []

        async def body(label: str) -> None:
            try:
                await anyio.sleep(100)
            finally:
                ran_after_kill.append(label)

        async with WorkerPool(size=3, rate=1) as pool:
            running = pool.run(body, "running")
            backing_off = pool.run(_raise_boom, retries=1, backoff=lambda n: 50)
            rate_waiting = pool.run(body, "rate-waiting")
            queued = [pool.run(body, f"queued {i}") for i in range(5)]
            await anyio.sleep(0.5)
            await pool.kill()
            after_kill = list(ran_after_kill)
            await anyio.sleep(10)
            assert ran_after_kill == after_kill  # nothing ran once kill() returned
        for future in [running, backing_off, rate_waiting, *queued]:
            assert future.cancelled()
        assert ran_after_kill == ["running"]

    async def test_kill_is_idempotent_and_combines_with_shutdown(self) -> None:
        """kill() twice, shutdown() after kill() and kill() after shutdown() are all fine."""
        async with WorkerPool() as pool:
            future = pool.run(anyio.sleep, 10)
            await pool.kill()
            await pool.kill()
            await pool.shutdown()
        assert future.cancelled()
        async with WorkerPool() as pool2:
            pool2.run(anyio.sleep, 1)
            await pool2.shutdown()
            await pool2.kill()

    async def test_unscoped_use(self) -> None:
        """Construct, run, shutdown, with no async with (seed examples 2, 4 and 5)."""
        pool = WorkerPool(size=2, rate=5)
        t0 = anyio.current_time()
        futures = [pool.run(_sleep_echo, 0.5, i) for i in range(6)]
        assert await wait_all(futures) == list(range(6))
        await pool.shutdown()
        # Starts at 0 and 0.2 (rate), then as slots free: 0.5, 0.7, 1.0, 1.2; the last ends at 1.7.
        assert anyio.current_time() - t0 == approx(1.7)
        with pytest.raises(PoolClosedError):
            pool.run(_echo, 1)

    async def test_unscoped_kill(self) -> None:
        """An unscoped pool can be killed; its futures end cancelled."""
        pool = WorkerPool(size=1)
        futures = [pool.run(anyio.sleep, 10) for _ in range(3)]
        await anyio.sleep(1)
        await pool.kill()
        assert all(f.cancelled() for f in futures)

    async def test_cannot_enter_twice(self) -> None:
        """Entering a running or exited pool raises RuntimeError."""
        pool = WorkerPool()
        async with pool:
            with pytest.raises(RuntimeError, match=r"already running or has exited"):
                async with pool:
                    pass
        with pytest.raises(RuntimeError, match=r"already running or has exited"):
            async with pool:
                pass

    async def test_shutdown_from_inside_a_job_is_refused(self) -> None:
        """A job awaiting its own pool's shutdown() gets a RuntimeError instead of a deadlock."""

        async def self_wait() -> None:
            await pool.shutdown()

        async with WorkerPool() as pool:
            future = pool.run(self_wait)
            with pytest.raises(RuntimeError, match=r"would wait for itself"):
                await future

    async def test_nested_submission_from_a_job(self) -> None:
        """A job may submit and await another job when the pool has room."""

        async def outer() -> object:
            return await pool.run(_echo, "inner")

        async with WorkerPool(size=2) as pool:
            assert await pool.run(outer) == "inner"

    async def test_repr_shows_live_counts(self) -> None:
        """repr() names the state and the queued/running counts."""
        pool = WorkerPool(size=1, rate=2)
        assert repr(pool) == "<werkpool.WorkerPool new size=1 rate=2.0 burst=1>"
        async with pool:
            pool.run(anyio.sleep, 10)
            pool.run(anyio.sleep, 10)
            await anyio.sleep(1)
            assert repr(pool) == (
                "<werkpool.WorkerPool open size=1 rate=2.0 burst=1 queued=1 running=1 backoff=0>"
            )
            await pool.kill()


@pytest.mark.realclock
class TestRealClock:
    async def test_rate_on_the_real_clock(self) -> None:
        """On the real clock, 11 starts at rate 50 take at least 0.2 s and keep the contract."""
        rec = Recorder()
        t0 = anyio.current_time()
        async with WorkerPool(size=4, rate=50) as pool:
            for i in range(11):
                pool.run(rec.job, i)
        assert anyio.current_time() - t0 >= 0.2 - 0.005
        assert rec.order == list(range(11))

    async def test_timeout_on_the_real_clock(self) -> None:
        """A real 50 ms timeout interrupts a 10 s job."""
        async with WorkerPool() as pool:
            future = pool.run(anyio.sleep, 10, timeout=0.05)
            with pytest.raises(TimeoutError):
                await future

    async def test_run_from_another_thread_is_refused(self) -> None:
        """run() from a worker thread raises RuntimeError instead of corrupting the pool."""
        async with WorkerPool() as pool:
            with pytest.raises(RuntimeError, match=r"another thread|event loop"):
                await anyio.to_thread.run_sync(pool.run, _echo, 1)
            assert await pool.run(_echo, 2) == 2
