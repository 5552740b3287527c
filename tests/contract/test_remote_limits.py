"""The remote-limit protocol, end to end through the pool, with a fake remote limit.

A remote limit (later: Redis) is asked by a worker once the local limits admit a job: the
scheduler hands out a reservation, the worker performs it (one await), and reports the answer.
These tests drive a pool with :class:`support.FakeRemoteLimit` (a latency, random refusals, a
capacity) on both backends, on virtual time: every job runs exactly once, the remote capacity and
the local limits hold together, FIFO holds, and no credit outlives its attempt, whether the
reservation is granted, refused, cancelled midway or cut short by kill().
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest
from support import FakeRemoteLimit, Probe, rate_violation, remote_limits

from werkpool import WorkerPool
from werkpool._core._remote_limit import Refusal


async def test_every_job_runs_once_under_the_remote_capacity_and_size() -> None:
    """size=4 locally, capacity 3 remotely, 20% refusals: all 60 jobs return, never over either."""
    remote = FakeRemoteLimit(3, latency=0.01, refuse=0.2, seed=1)
    probe = Probe(limit=4)
    peak_remote = 0

    async def job(i: int) -> int:
        nonlocal peak_remote
        peak_remote = max(peak_remote, remote.held)
        assert remote.held <= 3
        await probe.job(i, duration=0.05 * (i % 4))
        return i

    pool = WorkerPool(size=4, limits=remote_limits(remote))
    async with pool:
        futures = [pool.run(job, i) for i in range(60)]
    assert [f.result() for f in futures] == list(range(60))
    assert probe.peak <= 3  # the remote capacity is the tighter bound
    assert peak_remote == 3
    assert remote.refusals > 0
    assert (remote.held, remote.grants, remote.releases) == (0, 60, 60)
    assert remote.errors == []
    stats = pool.statistics()
    assert (stats.completed, stats.attempts, stats.running, stats.queued) == (60, 60, 0, 0)


async def test_jobs_start_in_submission_order_through_refusals() -> None:
    """FIFO: a refused job keeps its place at the head of the line; nobody overtakes it."""
    remote = FakeRemoteLimit(latency=0.005, refuse=0.5, seed=7)
    order: list[int] = []

    async def job(i: int) -> None:
        order.append(i)

    pool = WorkerPool(size=8, limits=remote_limits(remote))
    async with pool:
        for i in range(40):
            pool.run(job, i)
    assert order == list(range(40))
    assert remote.refusals > 5


async def test_a_refusal_holds_every_start_until_retry_at() -> None:
    """After a refusal with retry_at = now + 1 s, no job asks (or starts) before that time."""

    class RefuseFirst(FakeRemoteLimit):
        async def acquire(self, job: Any) -> float | Refusal:
            if self.requests == 0:
                self.requests += 1
                return Refusal(anyio.current_time() + 1.0)
            return await super().acquire(job)

    remote = RefuseFirst()
    probe = Probe()
    pool = WorkerPool(size=5, limits=remote_limits(remote))
    start = anyio.current_time()
    async with pool:
        for i in range(5):
            pool.run(probe.job, i)
    assert min(probe.starts) - start == pytest.approx(1.0)
    assert remote.requests == 6


async def test_a_grant_for_a_later_time_starts_the_job_then() -> None:
    """A reservation-style grant ("start at t") delays the job's code until t."""
    remote = FakeRemoteLimit(start_delay=0.25)
    probe = Probe()
    pool = WorkerPool(limits=remote_limits(remote))
    start = anyio.current_time()
    async with pool:
        await pool.run(probe.job, "x")
    assert probe.starts[0] - start == pytest.approx(0.25)


async def test_local_rate_and_remote_limit_together() -> None:
    """rate=10 locally with a slow remote: starts still obey the rate's window contract."""
    remote = FakeRemoteLimit(2, latency=0.03, refuse=0.1, seed=3)
    probe = Probe()
    pool = WorkerPool(size=3, rate=10, limits=remote_limits(remote))
    async with pool:
        for i in range(30):
            pool.run(probe.job, i, 0.25)  # up to three overlap: the remote caps them at 2
    assert rate_violation(probe.starts, 10, 1) is None
    assert (len(probe.starts), remote.held, remote.peak) == (30, 0, 2)


async def test_cancelling_a_job_while_it_reserves_gives_the_credit_back() -> None:
    """The future is cancelled mid-request: it ends cancelled, the next job runs, nothing held."""
    remote = FakeRemoteLimit(1, latency=1.0)
    pool = WorkerPool(size=2, limits=remote_limits(remote))
    async with pool:
        first = pool.run(anyio.sleep, 0)
        second = pool.run(anyio.sleep, 0)
        await anyio.sleep(0.5)  # first's request is out
        assert pool.statistics().queued == 2  # reserving counts as not started
        first.cancel()
        assert await second is None
    assert first.cancelled()
    assert (remote.held, remote.grants, remote.releases) == (0, 1, 1)
    stats = pool.statistics()
    assert (stats.cancelled, stats.completed, stats.attempts) == (1, 1, 1)


async def test_cancelling_a_job_granted_for_later_releases_its_credit() -> None:
    """Cancelled while waiting for its granted start time: the credit is released."""
    remote = FakeRemoteLimit(start_delay=5.0)
    pool = WorkerPool(limits=remote_limits(remote))
    async with pool:
        future = pool.run(anyio.sleep, 0)
        await anyio.sleep(1.0)
        future.cancel()
    assert future.cancelled()
    assert (remote.held, remote.releases) == (0, 1)


async def test_kill_during_reservations_leaves_no_credit_held() -> None:
    """kill() while requests are out: every future ends cancelled, every credit comes back."""
    remote = FakeRemoteLimit(2, latency=0.5)
    pool = WorkerPool(size=4, limits=remote_limits(remote))
    async with pool:
        futures = [pool.run(anyio.sleep, 10) for _ in range(6)]
        await anyio.sleep(1.2)  # two run, one request is out
        await pool.kill()
    assert all(f.cancelled() for f in futures)
    assert remote.held == 0
    assert remote.errors == []


async def test_a_failing_release_is_logged_and_the_pool_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A remote store that fails to release: the job's outcome stands, the error is logged."""

    class BrokenRelease(FakeRemoteLimit):
        async def release(self, job: Any) -> None:
            raise ConnectionError("store down")

    pool = WorkerPool(size=2, limits=remote_limits(BrokenRelease()))
    with caplog.at_level(logging.ERROR, logger="werkpool"):
        async with pool:
            results = [await pool.run(anyio.sleep, 0) for _ in range(3)]
    assert results == [None, None, None]
    assert sum("store down" in r.exc_text for r in caplog.records if r.exc_text) == 3


async def test_retries_take_the_remote_limit_again() -> None:
    """Each attempt, retries included, asks the remote limit and releases it afterwards."""
    remote = FakeRemoteLimit(1)
    attempts = 0

    async def flaky() -> str:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise ValueError("again")
        return "ok"

    pool = WorkerPool(limits=remote_limits(remote))
    async with pool:
        assert await pool.run(flaky, retries=3, backoff=lambda n: 0.1) == "ok"
    assert (remote.grants, remote.releases, remote.held) == (3, 3, 0)
