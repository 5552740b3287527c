"""Contract R30-R37: shutdown, kill and the pool's lifecycle."""

from __future__ import annotations

import sys
import threading
from typing import Any

import anyio
import pytest
from anyio.lowlevel import checkpoint
from support import (
    BACKENDS,
    Boom,
    Probe,
    approx,
    assert_idle,
    asyncio_tasks,
    case_id,
    echo,
    fail_after_sleep,
    internal_tasks,
    run_virtual,
    sleep_echo,
)

from werkpool import PoolClosedError, WorkerPool, worker_pool

if sys.version_info < (3, 11):
    from exceptiongroup import ExceptionGroup

CLOSED = r"^this WorkerPool no longer accepts jobs: {}$"
OTHER_LOOP = (
    r"^this WorkerPool belongs to another {}: use it only from the event loop that started it$"
)


async def _submit(pool: WorkerPool, method: str) -> Any:
    """Submit one job by *method*; return its future (or result)."""
    if method == "run":
        return pool.run(echo, method)
    if method == "start_soon":
        return pool.start_soon(echo, method)
    if method == "submit":
        return await pool.submit(echo, method)
    if method == "call":
        return await pool.call(echo, method)
    results = pool.map(echo, [method])
    return [r async for r in results]


METHODS = ["run", "start_soon", "submit", "call", "map"]


# -- R30: shutdown() -----------------------------------------------------------------------------


async def test_r30_shutdown_waits_for_every_accepted_job() -> None:
    """Queued, running, rate-waiting and backing-off jobs all finish before shutdown() returns."""
    probe = Probe(limit=2)
    attempts: list[float] = []

    async def fails_once() -> str:
        attempts.append(anyio.current_time())
        if len(attempts) == 1:
            raise Boom("first")
        return "retried"

    t0 = anyio.current_time()
    async with WorkerPool(size=2, rate=4) as pool:
        retried = pool.run(fails_once, retries=1, backoff=lambda n: 6.0)
        futures = [pool.run(probe.job, i, 1.0) for i in range(8)]
        await anyio.sleep(0.1)
        await pool.shutdown()
        assert anyio.current_time() - t0 == approx(6.0 + 0.0)  # the retry at 6.0 was the last
        assert all(f.done() for f in futures)
        assert await retried == "retried"
    assert [await f for f in futures] == list(range(8))
    assert_idle(pool)


@pytest.mark.parametrize("method", METHODS)
async def test_r30_external_submission_after_shutdown_began_is_refused(method: str) -> None:
    """run, start_soon, submit, call and map from outside raise PoolClosedError while draining."""
    async with WorkerPool() as pool:
        busy = pool.run(sleep_echo, 5.0, "busy")
        async with anyio.create_task_group() as tg:
            tg.start_soon(pool.shutdown)
            await anyio.sleep(1)  # shutdown() has begun and waits for "busy"
            before = pool.statistics().submitted
            with pytest.raises(PoolClosedError, match=CLOSED.format(r"shutdown\(\) has begun")):
                await _submit(pool, method)
            assert pool.statistics().submitted == before
        assert await busy == "busy"
    assert issubclass(PoolClosedError, RuntimeError)


@pytest.mark.parametrize("method", ["run", "start_soon", "submit", "call"])
async def test_r30_a_job_may_submit_follow_up_work_while_draining(method: str) -> None:
    """The documented policy: a job of the pool may still submit while shutdown() drains."""
    seen: list[int] = []

    async def crawl(depth: int) -> int:
        seen.append(depth)
        await anyio.sleep(1)
        if depth < 3:
            if method == "run":
                pool.run(crawl, depth + 1)
            elif method == "start_soon":
                pool.start_soon(crawl, depth + 1)
            elif method == "submit":
                await pool.submit(crawl, depth + 1)
            else:
                await pool.call(crawl, depth + 1)
        return depth

    t0 = anyio.current_time()
    with anyio.fail_after(100):  # (call() holds its slot while it waits: four levels, four slots)
        async with WorkerPool(size=4) as pool:
            pool.run(crawl, 0)
            await pool.shutdown()
            assert anyio.current_time() - t0 == approx(4.0)
    assert seen == [0, 1, 2, 3]
    assert_idle(pool)


async def test_r30_job_code_in_a_child_task_may_submit_while_draining() -> None:
    """A job that fans out into its own child tasks may submit from them, like from itself.

    The README: "Jobs of the pool may still submit follow-up jobs while it drains (a crawler can
    finish its crawl)". A crawler job that fetches its links in a task group of its own is still
    that job: its follow-up submissions must not depend on which of its tasks makes them.
    """
    results: list[str] = []

    async def crawler(page: str) -> None:
        await anyio.sleep(1)

        async def follow(link: str) -> None:
            try:
                pool.run(echo, link)
                results.append(f"{link}: submitted")
            except PoolClosedError as exc:
                results.append(f"{link}: {exc}")

        async with anyio.create_task_group() as tg:
            for link in (f"{page}/a", f"{page}/b"):
                tg.start_soon(follow, link)

    async with WorkerPool(size=2) as pool:
        pool.run(crawler, "/before")
        await anyio.sleep(2)  # not draining yet: the child tasks may submit
        pool.run(crawler, "/during")
        await pool.shutdown()  # draining while the second crawler runs
    assert sorted(results) == [
        "/before/a: submitted",
        "/before/b: submitted",
        "/during/a: submitted",
        "/during/b: submitted",
    ]


async def test_r30_shutdown_awaited_from_a_jobs_child_task_is_refused() -> None:
    """shutdown() from a job's own child task would wait for that job: it must raise, not hang."""

    async def job() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(pool.shutdown)

    async with WorkerPool() as pool:
        future = pool.run(job)
        with anyio.move_on_after(100) as deadlock:
            # The job's own task group wraps its child's error in an ExceptionGroup.
            with pytest.raises(ExceptionGroup) as info:
                await _wait(future)
        if deadlock.cancelled_caught:
            await pool.kill()
        assert not deadlock.cancelled_caught, "shutdown() from a job's child task deadlocked"
    (error,) = info.value.exceptions
    assert isinstance(error, RuntimeError)
    assert str(error) == (
        "shutdown() was awaited from inside one of this pool's jobs, so it would wait for itself"
    )


async def _wait(future: Any) -> Any:
    """Await *future* without letting a cancellation of the waiter cancel it (asyncio)."""
    done = anyio.Event()
    future.add_done_callback(lambda _: done.set())
    await done.wait()
    return future.result()


# -- R31: shutdown returns with the last job -----------------------------------------------------


@pytest.mark.parametrize("rate", [1e-9, 1e-3, 1.0, 1e3, None])
async def test_r31_shutdown_returns_when_the_last_job_ends_whatever_the_rate(
    rate: float | None,
) -> None:
    """No 1/rate tail: shutdown() returns the instant the last job ends."""
    t0 = anyio.current_time()
    async with WorkerPool(rate=rate, burst=3) as pool:
        for duration in (1.0, 2.0, 3.5):
            pool.run(anyio.sleep, duration)
        await pool.shutdown()
        assert anyio.current_time() - t0 == approx(3.5)
    assert anyio.current_time() - t0 == approx(3.5)


async def test_r31_shutdown_returns_when_the_last_waiting_job_is_cancelled() -> None:
    """A drain waiting on a job far off in the rate schedule ends when that job is cancelled."""
    t0 = anyio.current_time()
    async with WorkerPool(rate=1e-6) as pool:
        pool.run(anyio.sleep, 1.0)
        far = pool.run(anyio.sleep, 1.0)  # its slot is 11.6 days away

        async def cancel_later() -> None:
            await anyio.sleep(5)
            far.cancel()

        async with anyio.create_task_group() as tg:
            tg.start_soon(cancel_later)
            await pool.shutdown()
            assert anyio.current_time() - t0 == approx(5.0)


@pytest.mark.parametrize("rate", [1e-9, 1.0])
async def test_r31_unscoped_shutdown_returns_when_the_last_job_ends(rate: float) -> None:
    """The same for a pool used without `async with`."""
    t0 = anyio.current_time()
    pool = WorkerPool(rate=rate)
    pool.run(anyio.sleep, 2.0)
    await pool.shutdown()
    assert anyio.current_time() - t0 == approx(2.0)
    assert internal_tasks() == []


# -- R32: cancelling shutdown() ------------------------------------------------------------------


async def test_r32_cancelled_shutdown_waiter_leaves_the_jobs_running() -> None:
    """Cancelling the task awaiting shutdown() stops the wait only: jobs finish, still closed."""
    t0 = anyio.current_time()
    async with WorkerPool(size=2) as pool:
        futures = [pool.run(sleep_echo, 3.0, i) for i in range(4)]
        with anyio.move_on_after(1) as scope:
            await pool.shutdown()
        assert scope.cancelled_caught
        assert not any(f.done() for f in futures)
        with pytest.raises(PoolClosedError, match=CLOSED.format(r"shutdown\(\) has begun")):
            pool.run(echo, "refused")
        assert [await f for f in futures] == [0, 1, 2, 3]
        assert anyio.current_time() - t0 == approx(6.0)
    assert_idle(pool)


async def test_r32_cancelled_shutdown_of_an_unscoped_pool_leaves_the_jobs_running() -> None:
    """The same without `async with`; a second shutdown() then waits for the rest."""
    pool = WorkerPool(size=1)
    futures = [pool.run(sleep_echo, 2.0, i) for i in range(3)]
    with anyio.move_on_after(1):
        await pool.shutdown()
    assert not any(f.done() for f in futures)
    await pool.shutdown()
    assert [f.result() for f in futures] == [0, 1, 2]
    assert internal_tasks() == []


# -- R33: kill() ---------------------------------------------------------------------------------


async def test_r33_kill_cancels_every_kind_of_job() -> None:
    """Queued, rate-waiting, running, backing-off, call() and map() jobs all end cancelled."""
    probe = Probe()
    outcomes: dict[str, Any] = {}

    async def caller() -> None:
        try:
            await pool.call(probe.job, "call", 100.0)
        except Exception as exc:  # FutureCancelled: the pool cancelled the job
            outcomes["call"] = exc

    async def mapper() -> None:
        try:
            async for _ in pool.map(sleep_echo_pair, [(100.0, 0)]):
                pass
            outcomes["map"] = "ended normally"
        except PoolClosedError as exc:
            outcomes["map"] = exc

    async with WorkerPool(size=4, rate=2) as pool:
        running = pool.run(probe.job, "running", 100.0)
        backing_off = pool.run(fail_after_sleep, 0.1, retries=1, backoff=lambda n: 50)
        async with anyio.create_task_group() as tg:
            tg.start_soon(caller)
            tg.start_soon(mapper)
            await anyio.sleep(1.6)  # four starts so far at 2/s: the rest wait for the rate
            rate_waiting = pool.run(probe.job, "rate-waiting")
            queued = [pool.run(probe.job, i) for i in range(5)]
            assert pool.statistics().backoff == 1
            await pool.kill()
    for future in [running, backing_off, rate_waiting, *queued]:
        assert future.cancelled()
    assert type(outcomes["call"]).__name__ == "FutureCancelled"
    assert isinstance(outcomes["map"], PoolClosedError)
    assert probe.order == ["running", "call"]
    assert_idle(pool)


async def test_r33_kill_returns_after_shielded_cleanup_and_no_job_code_runs_after() -> None:
    """kill() waits for the jobs' shielded cleanup; once it returns, no job code runs again."""
    ran: list[tuple[str, float]] = []
    cancelled_exc = anyio.get_cancelled_exc_class()

    async def job(label: str) -> None:
        try:
            while True:
                ran.append((label, anyio.current_time()))
                await anyio.sleep(0.25)
        except cancelled_exc:
            with anyio.CancelScope(shield=True):
                await anyio.sleep(2)
                ran.append((f"{label} cleaned up", anyio.current_time()))
            raise

    async with WorkerPool(size=3) as pool:
        for i in range(5):
            pool.run(job, f"job {i}")
        await anyio.sleep(1)
        t_kill = anyio.current_time()
        await pool.kill()
        returned = anyio.current_time()
        assert returned - t_kill == approx(2.0)
        seen = list(ran)
        await anyio.sleep(50)
        assert ran == seen
    assert all(t <= returned for _, t in ran)
    assert sorted(label for label, _ in ran if "cleaned" in label) == [
        f"job {i} cleaned up" for i in range(3)
    ]
    assert internal_tasks() == []


async def test_r33_kill_is_idempotent_and_combines_with_shutdown_in_any_order() -> None:
    """kill(); kill(); shutdown() / shutdown(); kill() / a shutdown() waiting while kill()."""
    async with WorkerPool() as pool:
        f1 = pool.run(anyio.sleep, 10)
        await pool.kill()
        await pool.kill()
        await pool.shutdown()
    assert f1.cancelled()

    async with WorkerPool() as pool:
        pool.run(anyio.sleep, 1)
        await pool.shutdown()
        await pool.kill()

    t0 = anyio.current_time()
    async with WorkerPool() as pool:
        f3 = pool.run(anyio.sleep, 100)
        async with anyio.create_task_group() as tg:
            tg.start_soon(pool.shutdown)
            await anyio.sleep(1)
            await pool.kill()  # the pending shutdown() returns too
        assert anyio.current_time() - t0 == approx(1.0)
    assert f3.cancelled()

    pool = WorkerPool(size=1)  # unscoped, a running job and queued ones
    unscoped = [pool.run(anyio.sleep, 100) for _ in range(3)]
    await anyio.sleep(1)
    await pool.kill()
    await pool.kill()
    await pool.shutdown()
    assert all(f.cancelled() for f in unscoped)
    assert internal_tasks() == []


async def test_r33_kill_leaves_every_future_cancelled_even_if_a_job_swallows_it() -> None:
    """README: kill() cancels every job and "every future ends cancelled" -- even a stubborn one.

    A job that catches kill()'s cancellation and returns a value must not resolve its future
    with that value (the same rule as R20 for a cancelled future).
    """
    cancelled_exc = anyio.get_cancelled_exc_class()

    async def stubborn() -> str:
        try:
            await anyio.sleep(100)
        except cancelled_exc:
            return "swallowed"
        return "finished"

    async with WorkerPool() as pool:
        future = pool.run(stubborn)
        await anyio.sleep(1)
        await pool.kill()
        assert future.done()
        assert future.cancelled(), f"kill() left the future {future!r}"
    s = pool.statistics()
    assert (s.completed, s.cancelled) == (0, 1)


async def test_r33_a_pending_shutdown_returns_only_when_the_killed_jobs_stopped() -> None:
    """shutdown() waits for every accepted job: if kill() ends them, it returns once they ended.

    A shutdown() pending in one task while another kills the pool must not return while the
    killed jobs still run their (shielded) cleanup: code after ``await pool.shutdown()`` relies
    on no job running any more.
    """
    probe = Probe()
    seen: list[tuple[str, float, int]] = []
    t0 = anyio.current_time()
    async with WorkerPool() as pool:
        pool.run(probe.job, "cleans up", 100.0, False, 2.0)

        async def waits_for_shutdown() -> None:
            await pool.shutdown()
            seen.append(("shutdown", anyio.current_time() - t0, probe.running))

        async with anyio.create_task_group() as tg:
            tg.start_soon(waits_for_shutdown)
            await anyio.sleep(1)
            await pool.kill()
            seen.append(("kill", anyio.current_time() - t0, probe.running))
    assert sorted(seen) == [("kill", approx(3.0), 0), ("shutdown", approx(3.0), 0)]


async def test_r33_kill_wakes_every_producer_waiting_for_room() -> None:
    """Producers in submit()/call() waiting for room when the pool is killed all get an error.

    Three producers start while the queue is full (max_pending=2) and kill() runs: none may be
    left waiting forever.
    """
    outcomes: dict[str, str] = {}

    async def producer(name: str) -> None:
        try:
            if name.startswith("call"):
                await pool.call(echo, name)
            else:
                await pool.submit(echo, name)
            outcomes[name] = "accepted"
        except PoolClosedError:
            outcomes[name] = "PoolClosedError"

    with anyio.fail_after(1000):  # virtual seconds: a producer left waiting fails the test
        async with WorkerPool(max_pending=2) as pool, anyio.create_task_group() as tg:
            pool.run(echo, 0)
            pool.run(echo, 1)
            for name in ("submit 1", "submit 2", "call 3", "submit 4"):
                tg.start_soon(producer, name)
            await pool.kill()
    assert outcomes == dict.fromkeys(
        ("submit 1", "submit 2", "call 3", "submit 4"), "PoolClosedError"
    )


# -- R34: leaving `async with` -------------------------------------------------------------------


async def test_r34_normal_exit_drains() -> None:
    """Leaving the block normally waits for every job, queued ones included."""
    t0 = anyio.current_time()
    async with worker_pool(size=2) as pool:
        futures = [pool.run(sleep_echo, 1.0, i) for i in range(6)]
    assert anyio.current_time() - t0 == approx(3.0)
    assert [f.result() for f in futures] == list(range(6))


async def test_r34_body_error_cancels_the_jobs_and_propagates_at_once() -> None:
    """An error in the body leaves the block at once, as the same object, every job cancelled."""
    probe = Probe()
    error = Boom("body")
    t0 = anyio.current_time()
    with pytest.raises(Boom) as info:
        async with worker_pool(size=2) as pool:
            futures = [pool.run(probe.job, i, 10.0) for i in range(5)]
            await anyio.sleep(1)
            raise error
    assert info.value is error
    assert anyio.current_time() - t0 == approx(1.0)
    assert all(f.cancelled() for f in futures)
    assert probe.running == 0
    assert internal_tasks() == []


async def test_r34_cancelled_body_cancels_the_jobs_promptly() -> None:
    """A cancellation of the scope around the pool cancels its jobs and leaves at once."""
    probe = Probe()
    t0 = anyio.current_time()
    with anyio.move_on_after(2) as scope:
        async with worker_pool(size=2) as pool:
            futures = [pool.run(probe.job, i, 10.0, False, 0.5) for i in range(5)]
            await pool.shutdown()
    assert scope.cancelled_caught
    assert anyio.current_time() - t0 == approx(2.5)  # only the jobs' shielded cleanup
    assert all(f.cancelled() for f in futures)
    assert probe.running == 0
    assert internal_tasks() == []


# -- R35: constructor errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"size": 0}, ValueError, r"^size must be None or an int >= 1, got 0$"),
        ({"size": "3"}, TypeError, r"^size must be None or an int >= 1, not str$"),
        ({"rate": -1}, ValueError, r"^rate must be None or a finite number > 0, got -1$"),
        ({"rate": "10"}, TypeError, r"^rate must be None or a finite number > 0, not str$"),
        ({"burst": 0}, ValueError, r"^burst must be an int >= 1, got 0$"),
        ({"max_pending": 0}, ValueError, r"^max_pending must be None or an int >= 1, got 0$"),
        ({"max_pending": 2.5}, TypeError, r"^max_pending must be None or an int >= 1, not float$"),
    ],
    ids=case_id,
)
async def test_r35_constructor_errors_are_raised_as_themselves(
    kwargs: dict[str, Any], error: type[Exception], pattern: str
) -> None:
    """A bad argument raises its own TypeError/ValueError, from WorkerPool(), worker_pool() and
    inside `async with` alike: never masked by another error."""
    with pytest.raises(error, match=pattern) as info:
        WorkerPool(**kwargs)
    assert info.value.__context__ is None
    with pytest.raises(error, match=pattern):
        worker_pool(**kwargs)
    with pytest.raises(error, match=pattern):
        async with WorkerPool(**kwargs):
            pytest.fail("not reached")  # pragma: no cover
    with pytest.raises(error, match=pattern):
        async with worker_pool(**kwargs):
            pytest.fail("not reached")  # pragma: no cover


# -- R36: using a pool where it does not belong --------------------------------------------------


async def test_r36_run_before_entering_starts_the_pool_unscoped() -> None:
    """Documented: run() on a new pool starts it in the background (werkpool 0.2's usage).

    The checklist's "before entering raises" does not apply: werkpool keeps 0.2's API, where a
    pool is used without `async with`. Such a pool cannot then be entered.
    """
    pool = WorkerPool(size=2)
    future = pool.run(sleep_echo, 1.0, "unscoped")
    assert await future == "unscoped"
    with pytest.raises(RuntimeError, match=r"^this WorkerPool is already running or has exited"):
        async with pool:
            pass  # pragma: no cover
    await pool.shutdown()
    assert internal_tasks() == []


@pytest.mark.parametrize("method", METHODS)
async def test_r36_use_after_exit_raises_without_phantom_entries(method: str) -> None:
    """After the block, every way to submit raises PoolClosedError (a RuntimeError)."""
    async with WorkerPool() as pool:
        assert await pool.run(echo, 1) == 1
    before = pool.statistics()
    with pytest.raises(RuntimeError, match=CLOSED.format("the pool has exited")):
        await _submit(pool, method)
    assert pool.statistics() == before


@pytest.mark.parametrize("method", ["run", "start_soon"])
async def test_r36_use_from_another_thread_raises(method: str) -> None:
    """run()/start_soon() from a worker thread raise RuntimeError and leave nothing behind."""
    async with WorkerPool() as pool:
        pool.run(echo, 1)
        before = pool.statistics().submitted
        with pytest.raises(RuntimeError, match=OTHER_LOOP.format("thread")):
            await anyio.to_thread.run_sync(getattr(pool, method), echo, 2)
        assert pool.statistics().submitted == before
        assert await pool.run(echo, 3) == 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_r36_use_from_another_event_loop_raises(backend: str) -> None:
    """A pool bound to one event loop refuses run(), shutdown() and kill() from another."""
    pools: list[WorkerPool] = []
    errors: list[str] = []

    async def first() -> None:
        pool = WorkerPool(size=1)
        pools.append(pool)
        async with pool:
            assert await pool.run(echo, 1) == 1
        unscoped = WorkerPool(size=1)
        pools.append(unscoped)
        assert await unscoped.run(echo, 2) == 2
        await unscoped.shutdown()

    async def second() -> None:
        for pool in pools:
            before = pool.statistics()
            for call in (lambda p: p.run(echo, 3), lambda p: p.start_soon(echo, 3)):
                with pytest.raises(RuntimeError, match=OTHER_LOOP.format("event loop")):
                    call(pool)
            for method in ("shutdown", "kill"):
                with pytest.raises(RuntimeError, match=OTHER_LOOP.format("event loop")):
                    await getattr(pool, method)()
            if pool.statistics() != before:
                errors.append("a refused submission left a trace")

    run_virtual(backend, first)
    run_virtual(backend, second)
    assert errors == []


async def test_r36_use_from_a_thread_running_its_own_loop_raises() -> None:
    """A pool open in this loop refuses a thread that runs an event loop of its own."""
    outcome: list[BaseException] = []

    def other_thread(backend: str) -> None:
        async def use() -> None:
            pool.run(echo, 1)

        try:
            anyio.run(use, backend=backend)
        except BaseException as exc:
            outcome.append(exc)

    async with WorkerPool() as pool:
        backend = "trio" if asyncio_tasks() == set() else "asyncio"
        thread = threading.Thread(target=other_thread, args=(backend,))
        thread.start()
        while thread.is_alive():
            await anyio.to_thread.run_sync(thread.join, 0.01)
        assert len(outcome) == 1
        assert isinstance(outcome[0], RuntimeError)
        assert outcome[0].args[0].startswith("this WorkerPool belongs to another thread")
        assert pool.statistics().submitted == 0


# -- R37: no task left behind --------------------------------------------------------------------


async def _exit_normally(pool: WorkerPool) -> None:
    async with pool:
        pool.run(anyio.sleep, 1)
        pool.start_soon(anyio.sleep, 1)
        async for _ in pool.map(sleep_echo_pair, [(0.5, 1)]):
            pass


async def _exit_by_shutdown(pool: WorkerPool) -> None:
    async with pool:
        pool.run(anyio.sleep, 1)
        await pool.shutdown()


async def _exit_by_kill(pool: WorkerPool) -> None:
    async with pool:
        pool.run(anyio.sleep, 100)
        await anyio.sleep(1)
        await pool.kill()


async def _exit_by_error(pool: WorkerPool) -> None:
    with pytest.raises(Boom):
        async with pool:
            pool.run(anyio.sleep, 100)
            await anyio.sleep(1)
            raise Boom


async def _exit_by_failed_job(pool: WorkerPool) -> None:
    with pytest.raises(Boom):
        async with pool:
            pool.start_soon(fail_after_sleep, 1)
            pool.run(anyio.sleep, 100)
            await anyio.sleep(10)


async def _exit_with_open_map(pool: WorkerPool) -> None:
    async with pool:
        results = pool.map(sleep_echo_pair, [(1.0, i) for i in range(20)])
        await results.__anext__()


async def _unscoped_shutdown(pool: WorkerPool) -> None:
    pool.run(anyio.sleep, 1)
    await pool.shutdown()


async def _unscoped_kill(pool: WorkerPool) -> None:
    pool.run(anyio.sleep, 100)
    await anyio.sleep(1)
    await pool.kill()


async def sleep_echo_pair(pair: tuple[float, int]) -> int:
    await anyio.sleep(pair[0])
    return pair[1]


EXITS = {
    "normal": _exit_normally,
    "shutdown": _exit_by_shutdown,
    "kill": _exit_by_kill,
    "body-error": _exit_by_error,
    "failed-start_soon-job": _exit_by_failed_job,
    "map-left-open": _exit_with_open_map,
    "unscoped-shutdown": _unscoped_shutdown,
    "unscoped-kill": _unscoped_kill,
}


@pytest.mark.parametrize("how", list(EXITS))
async def test_r37_no_internal_task_is_alive_after_the_pool_exits(how: str) -> None:
    """anyio.get_running_tasks() (and asyncio.all_tasks()) are back to what they were."""
    await checkpoint()
    before = {task.id for task in anyio.get_running_tasks()}
    before_asyncio = asyncio_tasks()
    pool = WorkerPool(size=3, rate=100)
    await EXITS[how](pool)
    for _ in range(3):
        await checkpoint()
    assert internal_tasks() == []
    assert {task.id for task in anyio.get_running_tasks()} == before
    assert asyncio_tasks() == before_asyncio
    assert pool.statistics().running == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_r37_no_internal_task_is_alive_after_the_loop_ends_without_shutdown(backend: str) -> None:
    """A pool never shut down is ended by the loop's own teardown, leaving no task behind."""
    futures: list[Any] = []

    async def main() -> None:
        pool = WorkerPool(size=1)
        futures.extend(pool.run(anyio.sleep, 100) for _ in range(3))
        await anyio.sleep(1)

    run_virtual(backend, main)
    assert all(f.done() for f in futures)
    if backend == "asyncio":
        assert all(f.cancelled() for f in futures)
