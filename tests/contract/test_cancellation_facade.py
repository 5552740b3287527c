"""Contract R18-R23: cancellation, the futures facade and the structured API."""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from anyio.lowlevel import checkpoint
from support import (
    Boom,
    Probe,
    approx,
    assert_consistent,
    assert_idle,
    asyncio_only,
    borrowed,
    echo,
    fail_after_sleep,
    sleep_echo,
    trio_only,
)

from werkpool import Future, FutureCancelled, FutureNotFinished, WorkerPool

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable


def outcome(future: Any) -> str:
    """'cancelled', 'failed' or 'succeeded' (reading the exception marks it retrieved)."""
    if future.cancelled():
        return "cancelled"
    return "failed" if future.exception() is not None else "succeeded"


# -- R18: cancelling a future cancels its job ----------------------------------------------------


async def test_r18_cancelled_queued_future_never_starts() -> None:
    """cancel() on a queued job's future returns True, and the job never runs."""
    probe = Probe(limit=1)
    async with WorkerPool(size=1) as pool:
        pool.run(probe.job, "running", 1.0)
        queued = pool.run(probe.job, "queued", 1.0)
        assert queued.cancel() is True
        assert queued.cancelled()
        assert queued.done()
        assert pool.statistics().cancelled == 1
    assert probe.order == ["running"]
    assert_idle(pool)


async def test_r18_running_job_is_cancelled_at_its_next_checkpoint() -> None:
    """The cancellation lands at the job's next checkpoint; code before it still runs."""
    events: list[str] = []
    cancelled_exc = anyio.get_cancelled_exc_class()
    futures: dict[str, Any] = {}

    async def cancels_itself() -> str:
        await checkpoint()
        assert futures["self"].cancel() is True  # the future is cancelled right away...
        assert futures["self"].cancelled()
        events.append("code after cancel() runs on")  # ...the job only at its next checkpoint
        try:
            await checkpoint()
        except cancelled_exc:
            events.append("cancelled at the checkpoint")
            raise
        events.append("never")
        return "never"

    async with WorkerPool(size=1) as pool:
        futures["self"] = pool.run(cancels_itself)
        after = pool.run(echo, "after")
        assert await after == "after"
    assert events == ["code after cancel() runs on", "cancelled at the checkpoint"]
    assert futures["self"].cancelled()
    assert_idle(pool)


async def test_r18_cancel_frees_the_slot_when_the_cancellation_lands() -> None:
    """A running job cancelled at t=0.5 frees its slot at 0.5: the next job starts then."""
    probe = Probe(limit=1)
    t0 = anyio.current_time()
    async with WorkerPool(size=1) as pool:
        first = pool.run(probe.job, "first", 10.0)
        pool.run(probe.job, "second", 1.0)
        await anyio.sleep(0.5)
        assert first.cancel() is True
        assert first.cancelled()
    assert probe.starts == [approx(t0), approx(t0 + 0.5)]
    assert_idle(pool)


@pytest.mark.parametrize("ending", ["result", "error", "timeout", "cancelled"])
async def test_r18_cancel_after_the_end_is_a_no_op(ending: str) -> None:
    """cancel() on a finished future returns False and changes nothing."""
    async with WorkerPool() as pool:
        if ending == "result":
            future = pool.run(echo, 7)
        elif ending == "error":
            future = pool.run(fail_after_sleep, 0.1, "error")
        elif ending == "timeout":
            future = pool.run(anyio.sleep, 5, timeout=1)
        else:
            future = pool.run(anyio.sleep, 5)
            assert future.cancel() is True
        await anyio.sleep(2)
        assert future.done()
        before = outcome(future)
        assert future.cancel() is False
        assert future.cancel() is False
        assert outcome(future) == before
        assert before == {"result": "succeeded", "cancelled": "cancelled"}.get(ending, "failed")
        if ending == "result":
            assert future.result() == 7
    s = pool.statistics()
    assert s.completed + s.failed + s.cancelled == 1


# -- R19: asyncio.wait_for, asyncio.timeout and asyncio.shield -----------------------------------


@asyncio_only
async def test_r19_wait_for_timeout_cancels_a_running_job_and_frees_its_slot() -> None:
    """wait_for(pool.run(f), 1) timing out cancels the running job and frees its slot."""
    probe = Probe(limit=1)
    t0 = anyio.current_time()
    async with WorkerPool(size=1) as pool:
        future = pool.run(probe.job, "slow", 10.0)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(future, timeout=1)
        assert future.cancelled()
        assert await pool.run(probe.job, "next") == "next"
        assert probe.starts[-1] == approx(t0 + 1.0)
        assert_consistent(pool, 0)
    assert pool.statistics().cancelled == 1


@asyncio_only
async def test_r19_wait_for_timeout_cancels_a_queued_job() -> None:
    """wait_for timing out on a queued job: it never starts."""
    probe = Probe(limit=1)
    async with WorkerPool(size=1) as pool:
        pool.run(probe.job, "busy", 5.0)
        queued = pool.run(probe.job, "queued", 1.0)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(queued, timeout=1)
        assert queued.cancelled()
    assert probe.order == ["busy"]
    assert_idle(pool)


@asyncio_only
@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout() is new in Python 3.11")
async def test_r19_asyncio_timeout_cancels_the_job() -> None:
    """async with asyncio.timeout(1): await pool.run(f) cancels the job when it expires."""
    probe = Probe(limit=1)
    async with WorkerPool(size=1) as pool:
        future = pool.run(probe.job, "slow", 10.0)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1):  # type: ignore[attr-defined]
                await future
        assert future.cancelled()
        await checkpoint()
        assert_consistent(pool, 0)
    assert probe.order == ["slow"]
    assert_idle(pool)


@asyncio_only
async def test_r19_cancelled_awaiting_task_cancels_the_job() -> None:
    """A task cancelled while awaiting the future cancels the job (asyncio's own semantics)."""
    probe = Probe(limit=1)
    async with WorkerPool(size=1) as pool:
        future = pool.run(probe.job, "slow", 10.0)
        task = asyncio.get_running_loop().create_task(_await(future))
        await anyio.sleep(1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert future.cancelled()
        await checkpoint()
        assert_consistent(pool, 0)
    assert_idle(pool)


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


@asyncio_only
async def test_r19_shield_keeps_the_job_running() -> None:
    """wait_for(shield(pool.run(f)), 1) times out, and the job runs on to its result."""
    async with WorkerPool(size=1) as pool:
        future = pool.run(sleep_echo, 3.0, "kept")
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(future), timeout=1)
        assert not future.done()
        task = asyncio.get_running_loop().create_task(_await(asyncio.shield(future)))
        await anyio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not future.done()
        assert await future == "kept"


@asyncio_only
async def test_r19_cancelled_gather_cancels_its_jobs() -> None:
    """Cancelling asyncio.gather() of pool futures cancels every job behind it."""
    probe = Probe()
    async with WorkerPool(size=2) as pool:
        futures = [pool.run(probe.job, i, 10.0) for i in range(4)]
        gathered = asyncio.gather(*futures)
        await anyio.sleep(1)
        gathered.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gathered
        assert all(f.cancelled() for f in futures)
    assert probe.order == [0, 1]
    assert_idle(pool)


# -- R20: a job that swallows its cancellation ---------------------------------------------------


@pytest.mark.parametrize("how", ["future", "caller"])
@pytest.mark.parametrize("then", ["returns", "raises", "sleeps_shielded_then_returns"])
async def test_r20_swallowed_cancellation_never_sets_a_result(how: str, then: str) -> None:
    """A job that catches its cancellation cannot un-cancel its future; it runs once only."""
    cancelled_exc = anyio.get_cancelled_exc_class()
    calls: list[float] = []

    async def stubborn() -> str:
        calls.append(anyio.current_time())
        try:
            await anyio.sleep(100)
        except cancelled_exc:
            if then == "raises":
                raise Boom("raised instead") from None
            if then == "sleeps_shielded_then_returns":
                with anyio.CancelScope(shield=True):
                    await anyio.sleep(2)
            return "swallowed"
        return "finished"

    async with WorkerPool(size=1) as pool:
        if how == "caller":
            with anyio.move_on_after(1) as scope:
                await pool.call(stubborn, retries=3, retryable_exceptions=Exception)
            assert scope.cancelled_caught
        else:
            future = pool.run(stubborn, retries=3, retryable_exceptions=Exception)
            await anyio.sleep(1)
            assert future.cancel() is True
        assert await pool.run(echo, "after") == "after"
        if how == "future":
            assert future.cancelled()
            assert future.cancel() is False
    assert len(calls) == 1
    s = pool.statistics()
    assert (s.cancelled, s.completed, s.failed, s.retries) == (1, 1, 0, 0)
    assert_idle(pool)


async def test_r20_swallowed_cancellation_after_a_pool_failure_never_sets_a_result() -> None:
    """A failed start_soon() job cancels the other jobs: one that swallows it gets no result."""
    cancelled_exc = anyio.get_cancelled_exc_class()

    async def stubborn() -> str:
        try:
            await anyio.sleep(100)
        except cancelled_exc:
            return "swallowed"
        return "finished"

    with pytest.raises(Boom, match=r"^pool fails$"):
        async with WorkerPool() as pool:
            future = pool.run(stubborn)
            pool.start_soon(fail_after_sleep, 1.0, "pool fails")
            await anyio.sleep(10)
    assert future.done()
    assert future.cancelled(), f"the swallowed cancellation resolved {future!r}"


# -- R21: every future resolves exactly once -----------------------------------------------------


async def _path_success(pool: WorkerPool) -> list[Any]:
    return [pool.run(echo, 1), pool.start_soon(echo, 2), await pool.submit(echo, 3)]


async def _path_failure(pool: WorkerPool) -> list[Any]:
    return [pool.run(fail_after_sleep, 0.5), await pool.submit(fail_after_sleep, 0.1)]


async def _path_timeout(pool: WorkerPool) -> list[Any]:
    return [pool.run(anyio.sleep, 5, timeout=1), pool.run(anyio.sleep, 1, timeout=1)]


async def _path_retries_exhausted(pool: WorkerPool) -> list[Any]:
    return [pool.run(fail_after_sleep, 0.1, retries=2, backoff=lambda n: 0.1)]


async def _path_cancel(pool: WorkerPool) -> list[Any]:
    running = pool.run(anyio.sleep, 10)
    queued = [pool.run(anyio.sleep, 10) for _ in range(3)]
    backing_off = pool.run(fail_after_sleep, 0.1, retries=2, backoff=lambda n: 50)
    await anyio.sleep(1)
    for future in [running, *queued, backing_off]:
        future.cancel()
    return [running, *queued, backing_off]


async def _path_kill(pool: WorkerPool) -> list[Any]:
    futures = [pool.run(anyio.sleep, 10) for _ in range(3)]
    futures.append(pool.run(fail_after_sleep, 0.1, retries=2, backoff=lambda n: 50))
    await anyio.sleep(1)
    await pool.kill()
    return futures


async def _path_shutdown(pool: WorkerPool) -> list[Any]:
    futures = [pool.run(sleep_echo, 1.0, i) for i in range(5)]
    futures.append(pool.run(fail_after_sleep, 0.5))
    await pool.shutdown()
    return futures


PATHS: dict[str, Callable[[WorkerPool], Awaitable[list[Any]]]] = {
    "success": _path_success,
    "failure": _path_failure,
    "timeout": _path_timeout,
    "retries-exhausted": _path_retries_exhausted,
    "cancel": _path_cancel,
    "kill": _path_kill,
    "shutdown": _path_shutdown,
}


@pytest.mark.parametrize("path", list(PATHS))
async def test_r21_every_future_resolves_exactly_once(path: str) -> None:
    """On every path each future resolves once, by exactly one of result, exception or cancel.

    The pool-error and KeyboardInterrupt/SystemExit paths are in test_errors_isolation.py
    (R27, R28), with the same check.
    """
    resolved: dict[int, int] = {}
    async with WorkerPool(size=2) as pool:
        futures = await PATHS[path](pool)
        for future in futures:
            future.add_done_callback(
                lambda f: resolved.__setitem__(id(f), resolved.get(id(f), 0) + 1)
            )
    for _ in range(3):
        await checkpoint()  # asyncio runs done callbacks soon after, not at once
    assert [resolved.get(id(f), 0) for f in futures] == [1] * len(futures)
    expected = {
        "success": "succeeded",
        "failure": "failed",
        "timeout": "failed",
        "retries-exhausted": "failed",
        "cancel": "cancelled",
        "kill": "cancelled",
    }
    outcomes = [outcome(f) for f in futures]
    if path == "shutdown":
        assert outcomes == ["succeeded"] * 5 + ["failed"]
    else:
        assert outcomes == [expected[path]] * len(futures)
    assert_idle(pool)


# -- R22: the handle's surface -------------------------------------------------------------------


async def test_r22_future_surface_on_both_backends() -> None:
    """await, done, cancelled, result, exception, cancel and add_done_callback all work."""
    seen: list[Any] = []
    async with WorkerPool(size=1) as pool:
        ok = pool.run(sleep_echo, 1.0, "ok")
        bad = pool.run(fail_after_sleep, 1.0, "bad")
        pending = pool.run(anyio.sleep, 10)
        ok.add_done_callback(seen.append)
        assert (ok.done(), ok.cancelled()) == (False, False)
        assert await ok == "ok"
        assert (ok.done(), ok.cancelled(), ok.result(), ok.exception()) == (True, False, "ok", None)
        with pytest.raises(Boom, match=r"^bad$"):
            await bad
        assert isinstance(bad.exception(), Boom)
        with pytest.raises(Boom, match=r"^bad$"):
            bad.result()
        assert pending.cancel() is True
        assert (pending.done(), pending.cancelled()) == (True, True)
        await checkpoint()
    assert seen == [ok]


@trio_only
async def test_r22_trio_handle_has_wait_and_status() -> None:
    """On trio the handle is a werkpool.Future: wait() never raises; reads of a bad state do."""
    async with WorkerPool(size=1) as pool:
        ok = pool.run(sleep_echo, 1.0, "ok")
        bad = pool.run(fail_after_sleep, 1.0, "bad")
        cancelled = pool.run(anyio.sleep, 10)
        assert isinstance(ok, Future)
        assert ok.status is Future.Status.PENDING
        with pytest.raises(FutureNotFinished, match=r"^the job has not finished yet$"):
            ok.result()
        with pytest.raises(FutureNotFinished):
            ok.exception()
        await ok.wait()
        assert ok.status is Future.Status.FINISHED
        await bad.wait()  # does not raise the job's error
        assert bad.status is Future.Status.FAILED
        cancelled.cancel()
        await cancelled.wait()
        assert cancelled.status is Future.Status.CANCELLED
        with pytest.raises(FutureCancelled, match=r"^the job was cancelled$"):
            cancelled.result()
        with pytest.raises(FutureCancelled, match=r"^the job was cancelled$"):
            await cancelled
        handle = pool.start_soon(sleep_echo, 1.0, "soon")
        submitted = await pool.submit(sleep_echo, 1.0, "submitted")
        assert isinstance(handle, Future)
        assert isinstance(submitted, Future)
        await handle.wait()
        await submitted.wait()
        assert (handle.result(), submitted.result()) == ("soon", "submitted")


@pytest.mark.parametrize("ending", ["result", "error", "cancelled"])
async def test_r22_every_awaiter_gets_the_outcome(ending: str) -> None:
    """Five tasks awaiting one future each get its result, the same error, or the cancellation."""
    got: list[Any] = []
    error = Boom("shared")

    async def fails() -> None:
        await anyio.sleep(1)
        raise error

    async with WorkerPool() as pool:
        if ending == "result":
            future = pool.run(sleep_echo, 1.0, "shared")
        elif ending == "error":
            future = pool.run(fails)
        else:
            future = pool.run(anyio.sleep, 10)

        async def waiter() -> None:
            try:
                got.append(await future)
            except (Boom, FutureCancelled, asyncio.CancelledError) as exc:
                got.append(exc)

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(waiter)
            if ending == "cancelled":
                await anyio.sleep(1)
                future.cancel()
    assert len(got) == 5
    if ending == "result":
        assert got == ["shared"] * 5
    elif ending == "error":
        assert all(item is error for item in got)
    else:
        assert all(isinstance(item, (FutureCancelled, asyncio.CancelledError)) for item in got)


async def test_r22_unawaited_handles_never_block_pool_exit() -> None:
    """Handles nobody awaits (run and start_soon) do not hold the pool open past their jobs."""
    t0 = anyio.current_time()
    async with WorkerPool(size=10) as pool:
        for i in range(100):
            pool.run(sleep_echo, 1.0, i)
            pool.start_soon(sleep_echo, 1.0, i)
    assert anyio.current_time() - t0 == approx(20.0)
    assert pool.statistics().completed == 200
    assert_idle(pool)


# -- R23: the structured API ---------------------------------------------------------------------


@pytest.mark.parametrize("method", ["call", "submit"])
async def test_r23_call_and_submit_are_checkpoints(method: str) -> None:
    """In a cancelled scope, call() and submit() raise before submitting anything.

    (That they also let other tasks run cannot be observed deterministically: trio may resume
    the same task first after a checkpoint.)
    """
    probe = Probe()
    async with WorkerPool() as pool:
        with anyio.CancelScope() as scope:
            scope.cancel()
            await getattr(pool, method)(probe.job, "never")
            pytest.fail("not reached: the call is a checkpoint")  # pragma: no cover
        assert scope.cancelled_caught
        assert pool.statistics().submitted == 0

        result = await getattr(pool, method)(echo, "x")
        if method == "submit":
            result = await result
        assert result == "x"
    assert probe.order == []


async def test_r23_submit_in_an_already_cancelled_scope_raises_even_if_room_frees_at_once() -> None:
    """submit() is a checkpoint: called in a cancelled scope it raises, and submits nothing.

    Here the queue is full (max_pending=2) when the producer starts, and the pool's worker frees
    room in the same event-loop tick, before the cancellation has been delivered.
    """
    outcome: list[str] = []
    async with WorkerPool(max_pending=2) as pool, anyio.create_task_group() as tg:
        scope = anyio.CancelScope()

        async def producer() -> None:
            with scope:
                await pool.submit(echo, "must not be submitted")
                outcome.append("submitted in a cancelled scope")
            if scope.cancelled_caught:
                outcome.append("cancelled")

        tg.start_soon(producer)
        pool.run(echo, 1)
        scope.cancel()  # before the producer even started
        pool.run(echo, 2)
    assert outcome == ["cancelled"]
    assert pool.statistics().submitted == 2


async def test_r23_cancelled_caller_frees_the_slot_before_call_returns() -> None:
    """call() re-raises the caller's cancellation only once the job's cleanup ended."""
    probe = Probe(limit=1)
    seen_at_return: list[tuple[float, int, int]] = []
    cancelled_exc = anyio.get_cancelled_exc_class()
    t0 = anyio.current_time()
    async with WorkerPool(size=1) as pool:
        with anyio.move_on_after(1):
            try:
                await pool.call(probe.job, "cleans up", 100.0, False, 2.0)
            except cancelled_exc:
                seen_at_return.append((anyio.current_time(), probe.running, borrowed(pool)))
                raise
        assert seen_at_return == [(approx(t0 + 3.0), 0, 0)]
        assert await pool.run(probe.job, "next") == "next"
        assert probe.starts[-1] == approx(t0 + 3.0)
    assert_idle(pool)


async def test_r23_cancelled_call_waiting_for_a_slot_never_starts() -> None:
    """A call cancelled while its job waits for a slot returns at once; the job never runs."""
    probe = Probe(limit=1)
    t0 = anyio.current_time()
    async with WorkerPool(size=1) as pool:
        pool.run(probe.job, "busy", 5.0)
        with anyio.move_on_after(1):
            await pool.call(probe.job, "never", 1.0)
        assert anyio.current_time() - t0 == approx(1.0)
        assert_consistent(pool, 1)
    assert probe.order == ["busy"]
    assert_idle(pool)


async def test_r23_cancelled_call_waiting_for_room_submits_nothing() -> None:
    """A call cancelled while waiting for room under max_pending leaves nothing behind."""
    async with WorkerPool(size=1, max_pending=1) as pool:
        pool.run(anyio.sleep, 5)
        await anyio.sleep(0.1)
        pool.run(anyio.sleep, 5)  # waits to start: the queue is full
        with anyio.move_on_after(1):
            await pool.call(echo, "never")
        assert pool.statistics().submitted == 2
        with anyio.move_on_after(1):
            await pool.submit(echo, "never either")
        assert pool.statistics().submitted == 2
        assert await pool.call(echo, "later") == "later"  # room comes back as jobs start
    assert pool.statistics().submitted == 3
    assert_idle(pool)
