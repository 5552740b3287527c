"""WorkerPool semantics on asyncio and trio, under virtual time."""

from __future__ import annotations

import anyio
import pytest
from support import Probe, approx, echo, max_starts_in, rate_violation, sleep_echo

from werkpool import PoolClosedError, WorkerPool

pytestmark = pytest.mark.anyio


async def wait_all(futures: list) -> list:  # type: ignore[type-arg]
    return [await future for future in futures]


# -- concurrency limit ----------------------------------------------------------------------------


class TestSize:
    async def test_unlimited_size_runs_everything_at_once(self) -> None:
        """size=None starts every job at once."""
        probe = Probe()
        async with WorkerPool() as pool:
            for i in range(50):
                pool.run(probe.job, i, 1.0)
        assert probe.peak == 50
        assert max(probe.ends) == approx(probe.starts[0] + 1.0)


# -- rate limit -----------------------------------------------------------------------------------


class TestRate:
    async def test_starts_evenly_spaced_with_burst_one(self) -> None:
        """rate=10 spaces 25 instant jobs exactly 0.1 s apart, starting at once."""
        probe = Probe()
        start = anyio.current_time()
        async with WorkerPool(rate=10) as pool:
            for i in range(25):
                pool.run(probe.job, i)
        assert [t - start for t in probe.starts] == [approx(k / 10) for k in range(25)]
        assert max_starts_in(probe.starts, 1.0) == 10  # the seed started 19 in the first second
        assert rate_violation(probe.starts, 10, 1) is None

    async def test_combined_size_and_rate(self) -> None:
        """Seed example 4: size 5, rate 10, 100 jobs of 0.2 s: rate-bound, never over five."""
        probe = Probe(limit=5)
        start = anyio.current_time()
        async with WorkerPool(size=5, rate=10) as pool:
            futures = [pool.run(probe.job, i, 0.2) for i in range(100)]
        assert await wait_all(futures) == list(range(100))
        assert probe.order == list(range(100))
        assert rate_violation(probe.starts, 10, 1) is None
        assert anyio.current_time() - start == approx(9.9 + 0.2)

    async def test_size_bound_jobs_start_when_slot_frees(self) -> None:
        """When size binds, a job starts when a slot frees, not at an earlier rate slot."""
        probe = Probe(limit=1)
        start = anyio.current_time()
        async with WorkerPool(size=1, rate=10) as pool:
            for i in range(4):
                pool.run(probe.job, i, 0.25)
        assert [t - start for t in probe.starts] == [approx(x) for x in (0, 0.25, 0.5, 0.75)]


# -- errors and isolation -------------------------------------------------------------------------


class TestErrors:
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
    async def test_unscoped_use(self) -> None:
        """Construct, run, shutdown, with no async with (seed examples 2, 4 and 5)."""
        pool = WorkerPool(size=2, rate=5)
        t0 = anyio.current_time()
        futures = [pool.run(sleep_echo, 0.5, i) for i in range(6)]
        assert await wait_all(futures) == list(range(6))
        await pool.shutdown()
        # Starts at 0 and 0.2 (rate), then as slots free: 0.5, 0.7, 1.0, 1.2; the last ends at 1.7.
        assert anyio.current_time() - t0 == approx(1.7)
        with pytest.raises(PoolClosedError):
            pool.run(echo, 1)

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
        probe = Probe()
        t0 = anyio.current_time()
        async with WorkerPool(size=4, rate=50) as pool:
            for i in range(11):
                pool.run(probe.job, i)
        assert anyio.current_time() - t0 >= 0.2 - 0.005
        assert probe.order == list(range(11))

    async def test_timeout_on_the_real_clock(self) -> None:
        """A real 50 ms timeout interrupts a 10 s job."""
        async with WorkerPool() as pool:
            future = pool.run(anyio.sleep, 10, timeout=0.05)
            with pytest.raises(TimeoutError):
                await future
