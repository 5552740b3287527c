"""Regressions for the ``pool.map`` defects found by testing from outside (issue 9, items 1, 7, 11).

Each test is named after the requirement the defect broke; see RELIABILITY.md.
"""

from __future__ import annotations

import gc
import weakref
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from anyio.lowlevel import checkpoint
from support import Boom, Probe, approx, assert_idle, echo, rate_violation

from werkpool import PoolClosedError, WorkerPool
from werkpool._runtime._map import MapCore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator


async def sleep_1(value: int) -> int:
    await anyio.sleep(1)
    return value


async def numbers(limit: int | None = None) -> AsyncIterator[int]:
    i = 0
    while limit is None or i < limit:
        yield i
        i += 1


def _causes(error: BaseException) -> list[BaseException]:
    """*error* and the chain of its ``__cause__``s."""
    chain = [error]
    while chain[-1].__cause__ is not None:
        chain.append(chain[-1].__cause__)  # type: ignore[arg-type]
    return chain


# -- R50: a map job's StopAsyncIteration cannot pass for the end of the map -----------------------


async def _exhausted_stream() -> AsyncIterator[int]:
    return
    yield  # pragma: no cover - makes this an async generator


@pytest.mark.parametrize("ordered", [True, False], ids=["ordered", "unordered"])
async def test_r50_map_job_raising_stop_async_iteration_is_an_error(ordered: bool) -> None:
    """job(3) awaits an exhausted stream's __anext__: the loop raises, the other jobs end."""
    seen: list[int] = []

    async def job(x: int) -> int:
        await anyio.sleep(0.5 if x < 3 else 1 if x == 3 else 10)
        if x == 3:
            await _exhausted_stream().__anext__()
        return x

    async with WorkerPool(size=5) as pool:
        with pytest.raises(RuntimeError, match=r"raised StopAsyncIteration$") as info:
            async for value in pool.map(job, range(10), ordered=ordered):
                seen.append(value)  # noqa: PERF401 - collects up to the error
        assert any(isinstance(e, StopAsyncIteration) for e in _causes(info.value))
        assert sorted(seen) == [0, 1, 2]  # not the end of the map after [0, 1, 2]: an error
        assert anyio.current_time() == approx(1.0)  # raised at once, not after the others
        assert_idle(pool)
        assert pool.statistics().cancelled == 6  # 4 running and 2 queued


async def test_r50_map_job_raising_stop_iteration_is_an_error() -> None:
    """A job whose callable raises StopIteration (``next()`` of an empty iterator) too."""

    def job(x: int) -> Any:
        if x == 1:
            next(iter(()))
        return echo(x)

    async with WorkerPool(size=2) as pool:
        with pytest.raises(RuntimeError) as info:
            async for _ in pool.map(job, range(10)):
                pass
        assert any(isinstance(e, StopIteration) for e in _causes(info.value))
        assert_idle(pool)


async def test_r50_map_return_exceptions_yields_stop_async_iteration_as_a_value() -> None:
    """With return_exceptions=True the StopAsyncIteration is yielded in place; the map goes on."""

    async def job(x: int) -> int:
        if x == 1:
            raise StopAsyncIteration(x)
        return x

    async with WorkerPool(size=2) as pool:
        results = [r async for r in pool.map(job, range(4), return_exceptions=True)]
    assert results[0] == 0
    # The job's error as the pool settled it: the StopAsyncIteration, or a RuntimeError from it.
    assert isinstance(results[1], BaseException)
    assert any(isinstance(e, StopAsyncIteration) for e in _causes(results[1]))
    assert results[2:] == [2, 3]


class _BrokenIterator:
    """A sync input whose ``__next__`` raises StopAsyncIteration after two items."""

    def __init__(self) -> None:
        self.n = 0

    def __iter__(self) -> Iterator[int]:
        return self

    def __next__(self) -> int:
        self.n += 1
        if self.n > 2:
            raise StopAsyncIteration("not the end of the map")
        return self.n


async def test_r50_map_input_raising_stop_async_iteration_is_an_error() -> None:
    """The input's own StopAsyncIteration is raised as an error after the items before it."""
    got: list[int] = []
    async with WorkerPool(size=2) as pool:
        with pytest.raises(RuntimeError, match=r"^the input of this map raised") as info:
            async for value in pool.map(echo, _BrokenIterator()):
                got.append(value)  # type: ignore[arg-type]  # noqa: PERF401
        assert isinstance(info.value.__cause__, StopAsyncIteration)
        assert_idle(pool)
    assert got == [1, 2]


class _BadAsyncIterable:
    def __aiter__(self) -> AsyncIterator[int]:
        raise Boom("no iterator")


async def test_r24_map_async_input_failing_in_aiter_raises_in_the_loop() -> None:
    """An async input whose ``__aiter__`` fails raises in the loop; the pool is unharmed."""
    async with WorkerPool(size=2) as pool:
        with pytest.raises(Boom, match=r"^no iterator$"):
            async for _ in pool.map(echo, _BadAsyncIterable()):
                pass
        assert await pool.call(echo, 1) == 1
        assert_idle(pool)


# -- R53: an abandoned map is collected, and its jobs cancelled -----------------------------------


def _maps_alive() -> int:
    """How many maps' states (their cores) exist now, found in the GC's list of objects: the
    pool holds its open maps (to close them when it exits), so a map it failed to let go of
    stays alive."""
    return sum(isinstance(obj, MapCore) for obj in gc.get_objects())


async def _settle() -> None:
    """Let the pool act on the finalizer's request (it runs on the event loop, soon)."""
    for _ in range(5):
        await checkpoint()
    await anyio.sleep(0.01)


@pytest.mark.usefixtures("no_gc")
@pytest.mark.parametrize("source", ["list", "generator", "async"])
@pytest.mark.parametrize("ordered", [True, False], ids=["ordered", "unordered"])
async def test_r53_abandoned_map_is_freed_and_its_jobs_cancelled(
    source: str, ordered: bool
) -> None:
    """``async for ... break`` with no ``async with``: the map is freed, its jobs are cancelled."""
    items = {"list": list(range(8)), "generator": iter(range(8)), "async": numbers(8)}[source]
    async with WorkerPool(size=2) as pool:
        results = pool.map(sleep_1, items, ordered=ordered)  # type: ignore[arg-type]
        gone = weakref.ref(results)
        async for _ in results:
            break
        del results
        assert gone() is None  # freed by reference counting alone
        await _settle()
        assert_idle(pool)
        stats = pool.statistics()
        assert stats.cancelled >= 2  # the jobs started after the first results
        assert stats.completed + stats.cancelled == stats.submitted
        assert anyio.current_time() == approx(1.01)
    assert anyio.current_time() == approx(1.01)  # the exit did not wait for the abandoned jobs


@pytest.mark.usefixtures("no_gc")
async def test_r53_repeated_abandoned_maps_leave_nothing_behind() -> None:
    """A long-lived pool: 500 maps left by ``break`` keep no map, record or result alive."""
    probe = Probe()

    async def job(x: int) -> bytes:
        await probe.job(x, 0.5)
        return bytes(10_000)

    async with WorkerPool(size=4) as pool:
        for _ in range(500):
            async for _ in pool.map(job, range(8)):
                break
        await _settle()
        assert_idle(pool)
        assert probe.running == 0
        assert _maps_alive() == 0  # the pool let go of every map
        stats = pool.statistics()
        assert stats.cancelled > 0
        assert stats.submitted == stats.completed + stats.cancelled


@pytest.mark.usefixtures("no_gc")
async def test_r53_finished_map_is_freed_by_reference_counting() -> None:
    """A map read to its end, and one closed by ``async with``, leave no reference cycle."""
    async with WorkerPool(size=2) as pool:
        results = pool.map(echo, numbers(5))
        assert [r async for r in results] == [0, 1, 2, 3, 4]
        gone = [weakref.ref(results), weakref.ref(results._core)]  # type: ignore[attr-defined]
        del results
        assert [ref() for ref in gone] == [None, None]
        async with pool.map(sleep_1, range(10)) as results:
            async for _ in results:
                break
        gone = [weakref.ref(results), weakref.ref(results._core)]  # type: ignore[attr-defined]
        del results
        assert [ref() for ref in gone] == [None, None]
        assert_idle(pool)


@pytest.mark.usefixtures("no_gc")
async def test_r53_map_freed_in_another_thread_is_closed_on_the_loop() -> None:
    """The last reference goes in a worker thread: the map is closed on the pool's loop."""

    async def job(x: int) -> int:
        if x:
            await anyio.sleep_forever()  # not a timer: the clock may jump while the thread runs
        return x

    async with WorkerPool(size=2) as pool:
        holder = [pool.map(job, range(8))]
        async for _ in holder[0]:
            break
        gone = weakref.ref(holder[0])
        await anyio.to_thread.run_sync(holder.clear)
        assert gone() is None
        await _settle()
        assert_idle(pool)
        assert pool.statistics().cancelled == 3  # items 1 and 2 running, 3 queued
        assert _maps_alive() == 0  # the pool let go of every map


async def test_r53_map_alive_at_pool_exit_is_still_closed_then() -> None:
    """A map still referenced when the pool exits is closed by the exit, as before: its jobs are
    cancelled, and reading it on raises PoolClosedError."""
    async with WorkerPool(size=2) as pool:
        results = pool.map(sleep_1, numbers())
        async for _ in results:
            break
    assert anyio.current_time() == approx(1.0)
    assert_idle(pool)
    assert pool.statistics().cancelled >= 2
    with pytest.raises(PoolClosedError, match=r"closed, and its jobs cancelled"):
        await results.__anext__()


# -- R9 / R6: a map keeps the pool's rate; its window bounds what it holds -------------------------


@pytest.mark.parametrize("source", ["list", "async"])
async def test_r9_map_on_a_rate_only_pool_keeps_the_rate(source: str) -> None:
    """``WorkerPool(rate=1000)`` maps 3,000 one-second jobs in ~4 s, as run() would, not 13.6 s."""
    probe = Probe()

    async def job(x: int) -> int:
        await probe.job(x, 1.0)
        return x

    items = {"list": range(3000), "async": numbers(3000)}[source]
    async with WorkerPool(rate=1000) as pool:
        results = [r async for r in pool.map(job, items)]  # type: ignore[arg-type]
        elapsed = anyio.current_time()
    assert results == list(range(3000))
    # The last start is at 2.999 s (one start per ms), so the last result comes at 3.999 s.
    assert elapsed <= 4.0 + 1e-6
    assert rate_violation(probe.starts, 1000, 1) is None
    assert probe.peak >= 990  # about rate x duration jobs at once: nothing throttles below it


async def test_r9_map_on_a_rate_only_pool_keeps_the_rate_unordered() -> None:
    """The same with ordered=False and a generator input."""
    async with WorkerPool(rate=1000) as pool:
        n = 0
        async for _ in pool.map(sleep_1, (i for i in range(3000)), ordered=False):
            n += 1
        assert anyio.current_time() <= 4.0 + 1e-6
    assert n == 3000


@pytest.mark.parametrize("source", ["list", "async"])
async def test_r9_map_window_bounds_results_held_behind_a_slow_item(source: str) -> None:
    """Rate-only pool, ordered, item 0 slow: the map stops reading once ``window`` items wait.

    At most ``window`` items wait to start or to be yielded when the map reads one; the jobs
    then running (here 10 ms x 1000/s: 10, or 11 counting both ends) still finish into the
    buffer, so it holds at most ``window`` plus what the pool runs at once.
    """

    async def job(x: int) -> int:
        await anyio.sleep(100 if x == 0 else 0.01)
        return x

    items = {"list": range(10_000), "async": numbers(10_000)}[source]
    peak = 0
    first: list[int] = []
    async with WorkerPool(rate=1000) as pool:
        async with pool.map(job, items, window=50) as results:  # type: ignore[arg-type]

            async def read_one() -> None:
                first.append(await results.__anext__())

            async with anyio.create_task_group() as tg:
                tg.start_soon(read_one)
                while not first:
                    await anyio.sleep(0.005)
                    s = pool.statistics()
                    peak = max(peak, s.queued + s.completed)  # nothing was yielded yet
                    if 1 < anyio.current_time() < 99:  # the map waits for item 0, reads nothing
                        assert (s.running, s.queued) == (1, 0)
                        assert 50 <= s.completed <= 50 + 11
                        assert s.submitted == s.completed + 1
        assert first == [0]
        assert 100.0 <= anyio.current_time() <= 100.01
        assert_idle(pool)
    assert peak <= 50 + 11 + 1  # + 1: the job finishing between two of our looks


async def test_r9_map_window_on_a_size_pool() -> None:
    """With ``size``, at most ``size + window`` items are in flight (default window: size)."""
    pulled = 0

    async def endless() -> AsyncIterator[int]:
        nonlocal pulled
        i = 0
        while True:
            pulled += 1
            yield i
            i += 1

    async with WorkerPool(size=3) as pool:
        for window, bound in ((None, 6), (1, 4), (10, 13)):
            pulled = 0
            before = pool.statistics().submitted
            async with pool.map(sleep_1, endless(), window=window) as results:
                count = 0
                async for value in results:
                    assert value == count
                    count += 1
                    assert pool.statistics().submitted - before - count <= bound
                    assert pulled - count <= bound + 1
                    if count == 50:
                        break
            # never throttled below size=3: 50 one-second items take 17 s
            assert_idle(pool)
    assert anyio.current_time() == approx(3 * 17.0)


async def test_r9_map_window_bounds_everything_in_flight_without_limits() -> None:
    """A pool with neither size nor rate: the window bounds all of the map's items in flight."""
    async with WorkerPool() as pool:
        async with pool.map(sleep_1, numbers(), window=10) as results:
            count = 0
            async for _ in results:
                count += 1
                assert pool.statistics().submitted - count <= 10
                if count == 100:
                    break
        assert anyio.current_time() == approx(10.0)


@pytest.mark.parametrize(
    ("window", "error", "message"),
    [
        (0, ValueError, r"^window must be None or an int >= 1, got 0$"),
        (-3, ValueError, r"^window must be None or an int >= 1, got -3$"),
        (True, TypeError, r"^window must be None or an int >= 1, not bool$"),
        (2.0, TypeError, r"^window must be None or an int >= 1, not float$"),
        ("8", TypeError, r"^window must be None or an int >= 1, not str$"),
    ],
)
async def test_r40_map_window_is_checked_at_the_call(
    window: object, error: type[Exception], message: str
) -> None:
    """A bad ``window`` raises at ``pool.map()``, naming the argument; nothing is submitted."""
    async with WorkerPool(size=2) as pool:
        with pytest.raises(error, match=message):
            pool.map(echo, range(3), window=window)  # type: ignore[call-overload]
        assert pool.statistics().submitted == 0
        assert _maps_alive() == 0  # the pool let go of every map
