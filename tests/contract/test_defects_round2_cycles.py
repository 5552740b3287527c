"""Issue #21 item 17: a pool leaves no cyclic garbage behind.

An exited pool, its parts (lifecycle, scheduler, crew, runner, loop binding, events, cancel
scopes) and its finished futures are freed by reference counting alone: each reference cycle
would be left to the cyclic garbage collector, whose full collections (and their pauses) come
the more often the more such objects a program makes. A short-lived pool per request is common.

Measured as the issue says: the count ``gc.collect()`` returns after :data:`POOLS` pools made
with the collector disabled, minus the same work done in plain anyio task groups (what anyio
and the event loop leave of it themselves). Expected: under 1 object per pool. Before the fix it
was about 37 per pool (39 to 130 depending on the case on asyncio, 34 to 140 on trio).

Each case is a pool used one way (empty, with work, with each kind of limit, with hooks, killed,
with failing jobs, with an abandoned map, without ``async with``, crashed) beside a task-group
twin of the same shape.
"""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from anyio.lowlevel import checkpoint
from support import Boom, echo

from werkpool import Concurrency, JobEvent, Rate, WorkerPool

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

pytestmark = pytest.mark.anyio

#: How many pools each measure makes.
POOLS = 50


async def _slow(value: object) -> object:
    await anyio.sleep(1)
    return value


async def _fail(value: object) -> object:
    await checkpoint()
    raise Boom(value)


def _hook(event: JobEvent) -> None:
    pass


def _other_hook(event: JobEvent) -> None:
    pass


async def _garbage_of(work: Callable[[], Awaitable[None]]) -> int:
    """What ``gc.collect()`` finds after *work* ran :data:`POOLS` times with the GC disabled."""
    for _ in range(3):  # warm up: first-use caches, lazy imports
        await work()
    gc.collect()
    gc.disable()
    try:
        for _ in range(POOLS):
            await work()
    finally:
        found = gc.collect()
        gc.enable()
    return found


# -- the pools, each with its task-group twin ---------------------------------------------------


async def _use(pool: WorkerPool) -> None:
    """run, call, submit and map: every way of submitting."""
    assert await pool.run(echo, 1) == 1
    assert await pool.call(echo, 2) == 2
    assert await (await pool.submit(echo, 3)) == 3
    assert [x async for x in pool.map(echo, range(3))] == [0, 1, 2]


async def _tg_work() -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(echo, 1)
        tg.start_soon(echo, 2)


async def _empty() -> None:
    async with WorkerPool(size=2):
        pass


async def _tg_empty() -> None:
    async with anyio.create_task_group():
        pass


async def _work() -> None:
    async with WorkerPool(size=2) as pool:
        await _use(pool)


async def _rate() -> None:
    async with WorkerPool(size=2, rate=100, limits=[Rate(50, per=1)]) as pool:
        await _use(pool)


async def _per_key() -> None:
    async with WorkerPool(size=2, per_key=[Concurrency(1), Rate(10)]) as pool:
        assert await pool.run(echo, 1, key="a") == 1
        assert await pool.call(echo, 2, key="b") == 2
        assert [x async for x in pool.map(echo, range(3), key=str)] == [0, 1, 2]


async def _hooks() -> None:
    async with WorkerPool(size=2, hooks=[_hook]) as pool:
        await _use(pool)
        pool.add_hook(_other_hook)
        pool.remove_hook(_other_hook)


async def _max_pending() -> None:
    async with WorkerPool(size=2, max_pending=1) as pool:
        await _use(pool)


async def _kill() -> None:
    async with WorkerPool(size=1) as pool:
        running = pool.run(_slow, 1)
        queued = pool.run(_slow, 2)
        await anyio.sleep(0.5)  # the first job runs
        await pool.kill()
    assert running.cancelled()
    assert queued.cancelled()


async def _tg_kill() -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(_slow, 1)
        await anyio.sleep(0.5)
        tg.cancel_scope.cancel()


async def _raising() -> None:
    # (A future kept in a variable of the frame that awaits it would make a cycle of that frame,
    # the future and its error's traceback: that cycle is the caller's, as with asyncio's own
    # futures.)
    async with WorkerPool(size=2) as pool:
        with pytest.raises(Boom):
            await pool.run(_fail, 1)
        with pytest.raises(Boom):
            await pool.call(_fail, 2)
        with pytest.raises(Boom):
            await (await pool.submit(_fail, 3))
        with pytest.raises(Boom):
            async for _ in pool.map(_fail, range(2)):
                pass
        results = [x async for x in pool.map(_fail, range(2), return_exceptions=True)]
        assert [type(x) for x in results] == [Boom, Boom]
        del results


async def _caught(value: object) -> None:
    with pytest.raises(Boom):
        await _fail(value)


async def _tg_raising() -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(_caught, 1)
        tg.start_soon(_caught, 2)


async def _abandoned_map() -> None:
    async with WorkerPool(size=2) as pool:
        results = pool.map(_slow, range(10))
        async for first in results:
            assert first == 0
            break
        del results  # dropped midway: its jobs are cancelled


async def _unscoped() -> None:
    pool = WorkerPool(size=2)
    assert await pool.run(echo, 1) == 1
    await pool.shutdown()
    assert pool.statistics().completed == 1


async def _unscoped_kill() -> None:
    pool = WorkerPool(size=2)
    future = pool.run(_slow, 1)
    await anyio.sleep(0.5)  # it runs
    await pool.kill()
    assert future.cancelled()


async def _crash() -> None:
    with pytest.raises(Boom):
        async with WorkerPool(size=2) as pool:
            pool.start_soon(_fail, 1)
            await anyio.sleep(5)


async def _tg_crash() -> None:
    with pytest.raises(Exception) as caught:  # noqa: PT011 - an ExceptionGroup, on 3.10 too
        async with anyio.create_task_group() as tg:
            tg.start_soon(_fail, 1)
            await anyio.sleep(5)
    assert caught.group_contains(Boom)
    del caught


async def _body_raises() -> None:
    # (No job is left running: trio's task group twin would leave its own cycles, through the
    # cancellation of that child, which would hide the pool's. kill() covers that case.)
    with pytest.raises(Boom):
        async with WorkerPool(size=2) as pool:
            assert await pool.run(echo, 1) == 1
            raise Boom("body")


async def _tg_body_raises() -> None:
    with pytest.raises(Exception) as caught:  # noqa: PT011 - an ExceptionGroup, on 3.10 too
        async with anyio.create_task_group():
            await checkpoint()
            raise Boom("body")
    assert caught.group_contains(Boom)
    del caught


async def _numbers() -> AsyncIterator[int]:
    for i in range(100):
        await anyio.sleep(0.1)
        yield i


async def _cancelled_from_outside() -> None:
    with anyio.move_on_after(0.5) as scope:
        async with WorkerPool(size=2) as pool:
            pool.run(_slow, 1)
            async for _ in pool.map(_slow, _numbers()):  # an async input: its feeder task
                pass
    assert scope.cancelled_caught


async def _tg_cancelled_from_outside() -> None:
    with anyio.move_on_after(0.5) as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_slow, 1)
            await _slow(2)
    assert scope.cancelled_caught


async def _unscoped_crash() -> None:
    pool = WorkerPool(size=2)
    pool.start_soon(_fail, 1)
    await anyio.sleep(0.5)
    with pytest.raises(Boom):
        await pool.shutdown()


async def _unscoped_crash_never_shut_down() -> None:
    pool = WorkerPool(size=2)
    pool.start_soon(_fail, 1)
    await anyio.sleep(0.5)  # its background host stopped on the failure


def _items_then_boom() -> Iterator[int]:
    yield 1
    raise Boom("input")


async def _map_input_raising() -> None:
    async with WorkerPool(size=2) as pool:
        with pytest.raises(Boom):
            async for _ in pool.map(echo, _items_then_boom()):
                pass
        results = pool.map(echo, _items_then_boom())
        assert await results.__anext__() == 1
        del results  # dropped with its input's error not raised yet


CASES: dict[str, tuple[Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]] = {
    "empty": (_empty, _tg_empty),
    "run, call, submit, map": (_work, _tg_work),
    "rate= and limits=": (_rate, _tg_work),
    "per_key=": (_per_key, _tg_work),
    "hooks": (_hooks, _tg_work),
    "max_pending=": (_max_pending, _tg_work),
    "kill()": (_kill, _tg_kill),
    "a job raising": (_raising, _tg_raising),
    "a map abandoned midway": (_abandoned_map, _tg_work),
    "without async with": (_unscoped, _tg_work),
    "without async with, killed": (_unscoped_kill, _tg_kill),
    "a start_soon() job crashing the pool": (_crash, _tg_crash),
    "the body raising": (_body_raises, _tg_body_raises),
    "a scope around it cancelled": (_cancelled_from_outside, _tg_cancelled_from_outside),
    "without async with, crashing": (_unscoped_crash, _tg_crash),
    "without async with, crashing, never shut down": (_unscoped_crash_never_shut_down, _tg_crash),
    "a map whose input raises": (_map_input_raising, _tg_work),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_item17_a_pool_leaves_under_one_object_of_cyclic_garbage(case: str) -> None:
    """Each way of using a pool leaves (nearly) nothing for the cyclic GC: under 1 per pool."""
    pools, twin = CASES[case]
    garbage = await _garbage_of(pools)
    baseline = await _garbage_of(twin)
    per_pool = (garbage - baseline) / POOLS
    assert per_pool < 1, f"{per_pool:g} objects of cyclic garbage per pool ({garbage} - {baseline})"


async def test_item17_an_exited_pool_still_reads_after_its_parts_let_go(
    anyio_backend: Any,
) -> None:
    """Every public read works on a pool that has exited."""
    async with WorkerPool(size=2, rate=100, hooks=[_hook], max_pending=4) as pool:
        future = pool.run(echo, 1)
        assert await pool.call(echo, 2) == 2
    assert await future == 1
    assert future.result() == 1
    stats = pool.statistics()
    assert (stats.submitted, stats.completed) == (2, 2)
    assert "closed" in repr(pool)
    assert pool.size == 2
    assert pool.rate == 100
    assert pool.hooks == (_hook,)
    assert not pool.paused
    await pool.shutdown()  # idempotent after exit
    await pool.kill()


async def test_item17_shutdown_raises_a_background_failure_once() -> None:
    """A pool used without ``async with`` raises its failure from the first shutdown(), as
    ``async with`` raises it once; it is not kept for later calls (its traceback holds the
    caller's frame, which holds the pool: kept, it would be a reference cycle)."""
    pool = WorkerPool(size=2)
    pool.start_soon(_fail, 1)
    await anyio.sleep(0.5)
    with pytest.raises(Boom):
        await pool.shutdown()
    await pool.shutdown()
    assert pool.statistics().failed == 1
    assert "closed" in repr(pool)


def test_item17_a_hooks_base_exception_leaves_no_cycle_through_emit() -> None:
    """A hook's SystemExit raised out of ``Hooks.emit`` (no pool to hand it to) leaves no
    reference cycle: emit's frame drops its variable holding the error, whose traceback holds
    that frame."""
    from werkpool._runtime._hooks import Hooks

    def stop(event: JobEvent) -> None:
        raise SystemExit(3)

    hooks = Hooks((stop,), lambda: 0.0)
    event = JobEvent(kind="submitted", time=0.0, job=1, key=None)
    gc.collect()
    gc.disable()
    try:
        for _ in range(10):
            with pytest.raises(SystemExit):
                hooks.emit(event)
        found = gc.collect()
    finally:
        gc.enable()
    assert found == 0, f"{found} objects in reference cycles"
