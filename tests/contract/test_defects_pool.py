"""Regressions for the pool-core defects found by testing from outside (R50-R54).

Each test is named after the requirement the defect broke; see RELIABILITY.md.
"""

from __future__ import annotations

import asyncio
import gc
import math
import sys
import weakref
from typing import Any

import anyio
import pytest
from anyio.lowlevel import checkpoint
from support import (
    BACKENDS,
    Boom,
    asyncio_only,
    echo,
    internal_tasks,
    run_virtual,
    sleep_echo,
)

from werkpool import PoolClosedError, WorkerPool
from werkpool._runtime._crew import Crew, Worker

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup


def _worker_tasks() -> int:
    """How many of the pool's worker tasks run now (by their task names)."""
    return sum(name == "werkpool worker" for name in internal_tasks())


async def _ok(value: object) -> object:
    await checkpoint()
    return value


async def _fail() -> None:
    await checkpoint()
    raise Boom("fails")


# -- R50: a job's StopIteration never impersonates a protocol signal ----------------------------


async def test_r50_a_job_raising_stop_iteration_fails_alone() -> None:
    """``pool.run(lambda: ok(next(iter([]))))``: that job fails with a RuntimeError, alone."""
    async with WorkerPool(size=2) as pool:
        bad = pool.run(lambda: _ok(next(iter([]))))
        good = pool.run(_ok, 2)
        with pytest.raises(RuntimeError, match="StopIteration") as info:
            await bad
        assert isinstance(info.value.__cause__, StopIteration)
        assert await good == 2
        assert await pool.run(_ok, 3) == 3


async def test_r50_a_backoff_raising_stop_iteration_fails_its_job_alone() -> None:
    """A backoff that runs dry (``next(delays)``) fails that job, not the pool."""
    delays = iter([0.1])
    async with WorkerPool(size=2) as pool:
        bad = pool.run(_fail, retries=3, backoff=lambda n: next(delays))
        good = pool.run(sleep_echo, 1.0, "good")
        with pytest.raises(RuntimeError, match="StopIteration") as info:
            await bad
        assert isinstance(info.value.__cause__, StopIteration)
        assert await good == "good"
    stats = pool.statistics()
    assert (stats.failed, stats.completed, stats.attempts) == (1, 1, 3)


async def test_r50_a_job_raising_stop_async_iteration_is_wrapped() -> None:
    """StopAsyncIteration from a job is wrapped too, so no ``async for`` can read it as the end."""

    async def exhausted() -> None:
        raise StopAsyncIteration

    async with WorkerPool() as pool:
        with pytest.raises(RuntimeError) as info:
            await pool.run(exhausted)
        assert isinstance(info.value.__cause__, StopAsyncIteration)
        with pytest.raises(RuntimeError):
            await pool.call(exhausted)


# -- R51: whatever a job does to its own task, the worker survives ------------------------------


@asyncio_only
@pytest.mark.skipif(sys.version_info < (3, 11), reason="Task.uncancel() exists since 3.11")
@pytest.mark.parametrize("swallow", [False, True])
async def test_r51_a_job_cancelling_its_own_task_does_not_kill_its_worker(swallow: bool) -> None:
    """size=1: a job calls ``current_task().cancel()``; the next jobs still run, exit is prompt."""

    async def self_cancel() -> str:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        try:
            await checkpoint()
        except asyncio.CancelledError:
            if not swallow:
                raise
        return "swallowed"

    with anyio.fail_after(60):
        async with WorkerPool(size=1) as pool:
            first = pool.run(self_cancel)
            assert await pool.run(_ok, 2) == 2
            if swallow:
                assert await first == "swallowed"
            else:
                assert first.cancelled()
            # A later job on the same worker is cancelled through its future: only it ends.
            slow = pool.run(sleep_echo, 10.0, "slow")
            await anyio.sleep(1.0)
            slow.cancel()
            assert await pool.run(_ok, 3) == 3
    stats = pool.statistics()
    assert stats.running == stats.queued == 0


@asyncio_only
@pytest.mark.skipif(
    sys.version_info < (3, 11),
    reason="3.10's tasks keep no cancellation count: a pending cancel cannot be told apart",
)
async def test_r51_a_job_whose_self_cancel_is_pending_when_it_returns() -> None:
    """A job that cancels its task and returns at once: the pending cancel hits no one's job."""

    async def cancel_and_return() -> str:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        return "returned"

    with anyio.fail_after(60):
        async with WorkerPool(size=1) as pool:
            first = pool.run(cancel_and_return)
            second = pool.run(sleep_echo, 1.0, "second")
            assert await first == "returned"
            assert await second == "second"
            assert await pool.run(_ok, 3) == 3


# -- R52: every accepted submission runs; one the pool cannot honour raises ---------------------


async def test_r52_a_follow_up_submitted_as_the_drain_ends_runs_or_is_refused() -> None:
    """A job's fire-and-forget helper submits after one checkpoint while the drain completes."""
    outcome: list[object] = []

    async def helper(pool: WorkerPool) -> None:
        await checkpoint()
        try:
            future = pool.run(_ok, "child")
        except PoolClosedError:
            outcome.append("refused")
            return
        try:
            outcome.append(await future)
        except BaseException as exc:  # cancelled by the pool is a legitimate end too
            outcome.append(exc)
            raise

    async with anyio.create_task_group() as outer:

        async def parent(pool: WorkerPool) -> None:
            outer.start_soon(helper, pool)  # a task the job starts, outliving the job

        async with WorkerPool(size=2) as pool:
            pool.run(parent, pool)
    assert outcome in (["refused"], ["child"])
    stats = pool.statistics()
    assert stats.queued == stats.running == 0
    assert stats.submitted == stats.completed + stats.cancelled + stats.failed


# -- R27: KeyboardInterrupt from a backoff ---------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_r27_a_backoff_raising_keyboard_interrupt_resolves_its_future(backend: str) -> None:
    """As when the job raises it: the future holds it, the rest is cancelled, it propagates.

    Run on a loop of its own (as test_errors_isolation's R27 tests do): on asyncio the event
    loop itself re-raises a KeyboardInterrupt from any task.
    """

    def interrupt(n: int) -> float:
        raise KeyboardInterrupt("from the backoff")

    futures: list[Any] = []
    caught: list[BaseException] = []

    async def main() -> None:
        try:
            async with WorkerPool(size=2) as pool:
                futures.append(pool.run(_fail, retries=1, backoff=interrupt))
                futures.append(pool.run(sleep_echo, 10.0, "other"))
                await anyio.sleep(20)
        except KeyboardInterrupt as exc:
            caught.append(exc)

    try:
        run_virtual(backend, main)
    except KeyboardInterrupt as exc:
        caught.append(exc)
    gc.collect()
    assert caught
    assert str(caught[0]) == "from the backoff"
    assert futures[0].done()
    assert isinstance(futures[0].exception(), KeyboardInterrupt)
    assert futures[1].cancelled()


# -- R53: nothing retained after settlement -----------------------------------------------------


class _Payload:
    """A result or argument we can hold a weak reference to."""


async def test_r53_an_idle_worker_keeps_no_reference_to_its_last_job() -> None:
    """Results awaited and dropped, arguments of call(): nothing stays alive in an idle pool."""
    refs: list[weakref.ref[_Payload]] = []

    async def make() -> _Payload:
        await checkpoint()
        payload = _Payload()
        refs.append(weakref.ref(payload))
        return payload

    async def take(arg: _Payload) -> None:
        await checkpoint()

    async with WorkerPool() as pool:
        for _ in range(20):
            await pool.run(make)
        argument = _Payload()
        refs.append(weakref.ref(argument))
        await pool.call(take, argument)
        del argument
        await anyio.sleep(0.5)  # the workers are parked now
        gc.collect()
        assert [r for r in refs if r() is not None] == []


async def test_r53_idle_workers_beyond_need_retire() -> None:
    """After a burst of 500 concurrent jobs, an idle pool goes back to O(1) worker tasks."""
    async with WorkerPool() as pool:
        futures = [pool.run(sleep_echo, 1.0, i) for i in range(500)]
        assert [await f for f in futures] == list(range(500))
        assert _worker_tasks() == 500
        await anyio.sleep(60)
        assert _worker_tasks() <= 1
        # Retired workers come back when needed.
        assert [await f for f in [pool.run(sleep_echo, 1.0, i) for i in range(50)]] == list(
            range(50)
        )


async def test_r53_a_worker_woken_to_retire_takes_a_job_submitted_meanwhile() -> None:
    """The reaping and a submission in the same instant: the job runs, it is not stranded.

    The submitter sees a wake-up pending (the retiring worker's) and wakes nobody else; the
    retiring worker must then stay for the job. Driven through a crew of its own and its reaper,
    so the order of the two is fixed (it hung trio's test_futures on 3.10 and 3.13 by chance of
    scheduling).
    """
    line = _Line()
    crew = Crew(line, 1)
    workers = _Workers(crew, line)
    crew.set_body(workers.main)
    async with anyio.create_task_group() as tg:
        crew.tg = tg
        line.put(1)
        crew.kick(None)
        await anyio.wait_all_tasks_blocked()
        assert workers.taken == [1]
        assert len(crew.parked) == 1  # the worker is parked now
        crew.reap()  # the round it parked in ends
        crew.reap()  # a whole round idle: it is woken to retire
        line.put(2)
        crew.kick(None)  # a wake-up is pending (the retiring worker's): nobody else is woken
        await anyio.wait_all_tasks_blocked()
        assert workers.taken == [1, 2]
        assert crew.count == 1  # it stayed for the job
        tg.cancel_scope.cancel()


class _Line:
    """The line of jobs a crew serves (its Line protocol), here a list of labels."""

    def __init__(self) -> None:
        self.jobs: list[int] = []
        self.queued = 0
        self.backoff = 0
        self.unlimited = False

    def put(self, label: int) -> None:
        self.jobs.append(label)
        self.queued += 1

    def take(self) -> int:
        self.queued -= 1
        return self.jobs.pop(0)

    def is_head(self, job: object) -> bool:
        return True

    def has_queued(self) -> bool:
        return bool(self.jobs)


class _Workers:
    """The workers' side of the crew's protocol, as the pool's own workers keep it: a new
    worker has looked once it runs (``waking``), takes jobs while any wait, parks when none
    does, and exits when :meth:`Crew.park` says so."""

    def __init__(self, crew: Crew, line: _Line) -> None:
        self.crew = crew
        self.line = line
        self.taken: list[int] = []

    async def main(self) -> None:
        crew = self.crew
        worker = Worker()
        crew.workers.add(worker)
        crew.waking -= 1
        try:
            while True:
                while self.line.has_queued():
                    self.taken.append(self.line.take())
                    await checkpoint()
                if not await crew.park(worker, math.inf):
                    return
        finally:
            crew.count -= 1
            crew.workers.discard(worker)


async def test_r53_a_closed_pool_is_freed_by_reference_counting_alone() -> None:
    """With the cyclic GC off, an exited pool and its finished futures are freed."""
    gc.collect()
    gc.disable()
    try:
        async with WorkerPool(size=2, rate=100) as pool:
            futures = [pool.run(echo, i) for i in range(5)]
            pool.start_soon(echo, 5)
            assert [await f for f in futures] == list(range(5))
            assert [r async for r in pool.map(echo, range(3))] == [0, 1, 2]
        pool_ref = weakref.ref(pool)
        future_refs = [weakref.ref(f) for f in futures]
        del pool, futures
        await checkpoint()
        assert pool_ref() is None
        assert [r for r in future_refs if r() is not None] == []
    finally:
        gc.enable()


# -- R54: cancelling a future works wherever the backend allows it ------------------------------


def test_r54_asyncio_run_teardown_with_a_task_awaiting_a_running_job_is_silent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """main() returns while a background task awaits a running job's future: a clean exit."""
    started = []

    async def long_job() -> None:
        started.append(True)
        await asyncio.sleep(3600)

    async def waiter(pool: WorkerPool) -> None:
        await pool.run(long_job)

    async def main() -> None:
        pool = WorkerPool(size=1)
        pool.run(checkpoint)  # starts the unscoped pool
        task = asyncio.ensure_future(waiter(pool))
        await asyncio.sleep(0.01)
        assert started
        main.task = task  # type: ignore[attr-defined]  # keep it referenced

    async def main_with() -> None:
        async def inside() -> None:
            async with WorkerPool(size=1) as pool:
                await pool.run(long_job)

        main_with.task = asyncio.ensure_future(inside())  # type: ignore[attr-defined]
        await asyncio.sleep(0.01)

    for entry in (main, main_with):
        started.clear()
        asyncio.run(entry())
        assert started
    noise = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert noise == []


@asyncio_only
@pytest.mark.realclock  # a virtual clock would jump to the job's end while the thread runs
async def test_r54_cancelling_a_future_from_another_thread_goes_through_the_loop() -> None:
    """``fut.cancel()`` from a thread: the job is really cancelled, never left running."""
    stopped = anyio.Event()

    async def long_job() -> None:
        try:
            await anyio.sleep(3600)
        finally:
            stopped.set()

    async with WorkerPool(size=1) as pool:
        future = pool.run(long_job)
        await anyio.sleep(0.01)
        assert await anyio.to_thread.run_sync(future.cancel) is True  # from a worker thread
        with anyio.fail_after(10):
            await stopped.wait()
        assert future.cancelled()
        assert await pool.run(_ok, 2) == 2


# -- an exception never appears twice in one group ----------------------------------------------


@pytest.mark.parametrize("shared", [False, True])
async def test_r20_an_exception_appears_once_in_the_pool_error(shared: bool) -> None:
    """Jobs failing at once with one exception object (or one each): each object appears once."""
    error = Boom("shared")

    async def crash() -> None:
        await anyio.sleep(1)  # all three wake together: on trio all three fail
        raise error if shared else Boom("own")

    with pytest.raises((Boom, BaseExceptionGroup)) as info:
        async with WorkerPool(size=3) as pool:
            for _ in range(3):
                pool.start_soon(crash)
    leaves: list[BaseException] = []
    stack: list[BaseException] = [info.value]
    while stack:
        item = stack.pop()
        if isinstance(item, BaseExceptionGroup):
            stack.extend(item.exceptions)
        else:
            leaves.append(item)
    assert len({id(leaf) for leaf in leaves}) == len(leaves)
    if shared:
        assert info.value is error
    else:
        assert all(str(leaf) == "own" for leaf in leaves)
