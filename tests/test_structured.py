"""The structured API: start_soon, call, submit, map and statistics, on asyncio and trio."""

from __future__ import annotations

import inspect
import sys
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from support import (
    Boom,
    Probe,
    approx,
    assert_idle,
    echo,
    fail_after_sleep,
    rate_violation,
    sleep_echo,
    sleep_echo_1,
)

import werkpool
from werkpool import PoolClosedError, PoolFullError, PoolStatistics, WorkerPool
from werkpool._core._options import MAP_OPTIONS, SUBMIT_OPTIONS, job_options

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

if sys.version_info < (3, 11):
    from exceptiongroup import ExceptionGroup

pytestmark = pytest.mark.anyio


# -- start_soon ----------------------------------------------------------------------------------


class TestStartSoon:
    async def test_runs_under_the_limits_and_returns_a_handle(self) -> None:
        """start_soon returns at once; the handle has the result; size holds."""
        probe = Probe(limit=2)
        async with WorkerPool(size=2) as pool:
            handles = [pool.start_soon(probe.job, i, 1.0) for i in range(6)]
            assert not handles[0].done()
        assert [await h for h in handles] == list(range(6))
        assert probe.peak == 2

    async def test_lone_failure_propagates_unwrapped_and_cancels_the_rest(self) -> None:
        """A failed start_soon job cancels the pool's other work and leaves as it was raised."""
        body_reached_end = False
        with pytest.raises(Boom, match=r"^first$") as info:
            async with WorkerPool(size=2) as pool:
                pool.start_soon(fail_after_sleep, 1.0, "first")
                other = pool.run(anyio.sleep, 100)
                queued = pool.run(anyio.sleep, 100)
                await anyio.sleep(50)
                body_reached_end = True
        assert not isinstance(info.value, ExceptionGroup)
        assert not body_reached_end  # the body is cancelled, as a task group's host would be
        assert other.cancelled()
        assert queued.cancelled()

    async def test_failure_after_retries_only(self) -> None:
        """A start_soon job that succeeds on a retry does not fail the pool."""
        attempts: list[int] = []

        async def flaky() -> str:
            attempts.append(1)
            if len(attempts) < 3:
                raise Boom
            return "ok"

        async with WorkerPool() as pool:
            handle = pool.start_soon(flaky, retries=2, backoff=lambda n: 0.5)
        assert await handle == "ok"
        assert len(attempts) == 3

    async def test_cancelled_handle_is_not_a_failure(self) -> None:
        """Cancelling a start_soon handle cancels the job without failing the pool."""
        async with WorkerPool() as pool:
            handle = pool.start_soon(anyio.sleep, 10)
            await anyio.sleep(1)
            handle.cancel()
            assert await pool.call(echo, "still fine") == "still fine"
        assert handle.cancelled()


# -- call ----------------------------------------------------------------------------------------


class TestCall:
    async def test_returns_the_result(self) -> None:
        """call() runs the job under the limits and returns its result."""
        async with WorkerPool(size=1) as pool:
            assert await pool.call(sleep_echo, 1.0, "x") == "x"

    async def test_call_waits_behind_run_fifo(self) -> None:
        """One FIFO line: a call waits behind jobs queued earlier by run() and map()."""
        probe = Probe(limit=1)
        async with WorkerPool(size=1) as pool:
            pool.run(probe.job, "run-1", 1.0)
            pool.run(probe.job, "run-2", 1.0)
            await pool.call(probe.job, "call", 1.0)
            assert probe.order == ["run-1", "run-2", "call"]


# -- submit and max_pending ----------------------------------------------------------------------


class TestSubmit:
    async def test_submit_waits_for_room(self) -> None:
        """With max_pending=2 a producer is held while two jobs wait to start."""
        times: list[float] = []
        async with WorkerPool(size=1, max_pending=2) as pool:
            t0 = anyio.current_time()
            for i in range(6):
                await pool.submit(sleep_echo, 1.0, i)
                times.append(anyio.current_time() - t0)
                assert pool.statistics().queued <= 2
        # Jobs 0, 1, 2 are accepted at once (0 starts, 1 and 2 wait); then one per second.
        assert times == [0.0, 0.0, 0.0, approx(1.0), approx(2.0), approx(3.0)]

    async def test_run_with_a_full_queue_raises(self) -> None:
        """run() refuses instead of growing the queue past max_pending."""
        async with WorkerPool(size=1, max_pending=1) as pool:
            pool.run(anyio.sleep, 1)
            await anyio.sleep(0.01)  # it starts: no longer waiting
            pool.run(anyio.sleep, 1)
            with pytest.raises(PoolFullError, match=r"max_pending=1"):
                pool.run(anyio.sleep, 1)
            await anyio.sleep(1.5)
            pool.run(anyio.sleep, 1)  # room again

    async def test_waiters_get_room_in_order(self) -> None:
        """Producers waiting in submit() are served first come, first served."""
        order: list[int] = []
        async with WorkerPool(size=1, max_pending=1) as pool:
            pool.run(anyio.sleep, 1)
            await anyio.sleep(0.01)
            pool.run(anyio.sleep, 1)

            async def producer(i: int) -> None:
                await pool.submit(echo, i)
                order.append(i)

            async with anyio.create_task_group() as tg:
                for i in range(4):
                    tg.start_soon(producer, i)
                    await anyio.sleep(0.01)
        assert order == [0, 1, 2, 3]

    async def test_producers_cancelled_while_waiting_are_skipped(self) -> None:
        """Cancelled waiters keep no place in line: the others get room first come, first
        served, and once none waits the line is empty and run() is accepted again."""
        order: list[int] = []
        async with WorkerPool(size=1, max_pending=1) as pool:
            pool.run(anyio.sleep, 1)
            await anyio.sleep(0.01)
            pool.run(anyio.sleep, 1)  # the queue is full until t=1

            async def producer(i: int, scope: anyio.CancelScope) -> None:
                with scope:
                    await pool.submit(echo, i)
                    order.append(i)

            scopes = [anyio.CancelScope() for _ in range(6)]
            async with anyio.create_task_group() as tg:
                for i, scope in enumerate(scopes):
                    tg.start_soon(producer, i, scope)
                    await anyio.sleep(0.01)  # in this order (trio starts tasks in any order)
                await anyio.sleep(0.1)
                assert order == []  # all six wait in line
                assert pool.statistics().submitted == 2
                for i in (0, 2, 3):
                    scopes[i].cancel()
                await anyio.sleep(0.1)
                assert order == []  # the other three still wait
                assert pool.statistics().submitted == 2
            assert order == [1, 4, 5]
            await anyio.sleep(1)  # their echo jobs are done: the queue is empty

            pool.run(anyio.sleep, 5)
            await anyio.sleep(0.01)
            pool.run(anyio.sleep, 5)  # the queue is full again
            late = [anyio.CancelScope() for _ in range(3)]
            async with anyio.create_task_group() as tg:
                for i, scope in enumerate(late):
                    tg.start_soon(producer, 10 + i, scope)
                await anyio.sleep(0.1)
                for scope in late:
                    scope.cancel()
            # None of them waits any more (the line keeps nothing of them: test_room.py's
            # test_last_waiter_leaving_empties_the_line): once the queue has room, run(), which
            # never overtakes a producer that waits, is accepted.
            await anyio.sleep(10)  # both sleepers done: there is room again
            assert await pool.run(echo, "room") == "room"
        assert order == [1, 4, 5]
        assert_idle(pool)

    async def test_shutdown_wakes_waiting_producers_with_an_error(self) -> None:
        """A producer waiting for room gets PoolClosedError when the pool shuts down."""
        async with WorkerPool(size=1, max_pending=1) as pool:
            pool.run(anyio.sleep, 5)
            await anyio.sleep(0.01)
            pool.run(anyio.sleep, 5)

            async def late_producer() -> None:
                with pytest.raises(PoolClosedError):
                    await pool.submit(echo, 1)

            async with anyio.create_task_group() as tg:
                tg.start_soon(late_producer)
                await anyio.sleep(1)
                await pool.shutdown()


# -- map -----------------------------------------------------------------------------------------


async def numbers(limit: int | None = None) -> AsyncIterator[int]:
    i = 0
    while limit is None or i < limit:
        yield i
        i += 1


async def square(x: int) -> int:
    await anyio.sleep(0.1)
    return x * x


class TestMap:
    @pytest.mark.parametrize("source", ["list", "generator", "async"])
    async def test_ordered_results(self, source: str) -> None:
        """map yields results in input order for lists, generators and async iterables."""
        items = {
            "list": list(range(20)),
            "generator": (i for i in range(20)),
            "async": numbers(20),
        }[source]
        async with WorkerPool(size=4) as pool:
            results = [r async for r in pool.map(square, items)]
        assert results == [i * i for i in range(20)]

    async def test_unordered_yields_in_completion_order(self) -> None:
        """ordered=False yields each result as soon as it is ready."""

        async def wait_for(delay: float) -> float:
            await anyio.sleep(delay)
            return delay

        async with WorkerPool() as pool:
            results = [r async for r in pool.map(wait_for, [3.0, 1.0, 2.0], ordered=False)]
        assert results == [1.0, 2.0, 3.0]

    async def test_memory_bound_with_a_long_sync_input(self) -> None:
        """A map over 10^5 items never holds more than the window of records at once."""
        peak = 0
        async with WorkerPool(size=5) as pool:
            results = pool.map(echo, range(100_000))
            count = 0
            async for _ in results:
                count += 1
                peak = max(peak, len(results._core.in_flight))
        assert count == 100_000
        assert peak <= 10

    async def test_first_error_stops_the_map_and_cancels_in_flight(self) -> None:
        """Without return_exceptions the first error is raised and the other jobs cancelled."""

        async def fail_on_3(x: int) -> int:
            await anyio.sleep(1 if x == 3 else 10)
            if x == 3:
                raise Boom("3")
            return x

        async with WorkerPool(size=5) as pool:
            with pytest.raises(Boom, match=r"^3$"):
                async for _ in pool.map(fail_on_3, range(10), ordered=False):
                    pass
            assert_idle(pool)
            assert pool.statistics().cancelled == 9  # 4 running and 5 queued

    async def test_break_then_close_cancels_in_flight(self) -> None:
        """Leaving an 'async with pool.map()' early cancels its jobs and frees their slots."""
        async with WorkerPool(size=3) as pool:
            async with pool.map(sleep_echo_1, range(100)) as results:
                async for value in results:
                    if value == 2:
                        break
            assert_idle(pool)
            assert pool.statistics().completed == 3

    async def test_cancelled_loop_leaves_nothing_running(self) -> None:
        """Cancelling the scope around a map loop cancels its jobs before the scope exits."""
        async with WorkerPool(size=3) as pool:
            with anyio.move_on_after(2.5):
                async for _ in pool.map(sleep_echo_1, numbers()):
                    pass
            assert_idle(pool)

    async def test_input_error_after_results(self) -> None:
        """An error from the input is raised after the results of the items before it."""

        def items() -> object:
            yield 1
            yield 2
            raise Boom("input broke")

        got: list[object] = []
        async with WorkerPool(size=2) as pool:
            with pytest.raises(Boom, match=r"^input broke$"):
                async for value in pool.map(echo, items()):  # type: ignore[arg-type]
                    got.append(value)  # noqa: PERF401 - collects up to the error
        assert got == [1, 2]

    async def test_map_respects_the_rate_and_fifo_with_run(self) -> None:
        """map and run share one line and one rate limit."""
        probe = Probe()
        async with WorkerPool(rate=10) as pool:
            pool.run(probe.job, "run-first")
            results = [r async for r in pool.map(probe.job, ["m0", "m1", "m2"])]
            pool.run(probe.job, "run-last")
        assert results == ["m0", "m1", "m2"]
        assert probe.order == ["run-first", "m0", "m1", "m2", "run-last"]
        assert rate_violation(probe.starts, 10, 1) is None

    async def test_map_on_unscoped_pool(self) -> None:
        """map works on a pool used without async with, from an async source too."""
        pool = WorkerPool(size=2)
        assert [r async for r in pool.map(square, numbers(5))] == [0, 1, 4, 9, 16]
        await pool.shutdown()


# -- one line, one set of limits -----------------------------------------------------------------


class TestAllEntryPoints:
    async def test_fifo_and_size_across_all_five(self) -> None:
        """run, submit, start_soon, call and map share one FIFO line and one size limit."""
        probe = Probe(limit=1)
        async with WorkerPool(size=1) as pool:
            pool.run(probe.job, "run", 1.0)
            await pool.submit(probe.job, "submit", 1.0)
            pool.start_soon(probe.job, "start_soon", 1.0)
            results = pool.map(probe.job, ["map"])
            first = await results.__anext__()  # queues "map" behind the three above
            assert first == "map"
            await pool.call(probe.job, "call", 1.0)
            await results.aclose()
        assert probe.order == ["run", "submit", "start_soon", "map", "call"]
        assert probe.peak == 1


def blocking_echo(value: object) -> object:
    return value


#: Every submission method and whether it is awaited; the last five run a blocking function.
SUBMITTERS = [
    ("run", False),
    ("start_soon", False),
    ("call", True),
    ("submit", True),
    ("map", False),
    ("run_sync", False),
    ("start_soon_sync", False),
    ("call_sync", True),
    ("submit_sync", True),
    ("map_sync", False),
]


async def submit_by_name(pool: WorkerPool, method: str, fn: Any = None, **options: Any) -> Any:
    """Submit ``fn(1)`` by *method* (for a map, over ``[1]``); return what the call gives, awaited
    if the method is async."""
    if fn is None:
        fn = blocking_echo if method.endswith("_sync") else echo
    outcome = getattr(pool, method)(fn, [1] if method.startswith("map") else 1, **options)
    return await outcome if method in ("call", "submit", "call_sync", "submit_sync") else outcome


async def result_of(pool: WorkerPool, method: str, **options: Any) -> object:
    """Submit ``fn(1)`` by *method* and return its result."""
    outcome = await submit_by_name(pool, method, **options)
    if method.startswith("map"):
        async with outcome:
            return await outcome.__anext__()
    return outcome if method.startswith("call") else await outcome


class TestOptionsOfEveryMethod:
    """The job options are declared once (SubmitOptions, MapOptions) for all ten methods: each
    still takes every option by its name, with its default, and rejects a wrong keyword as
    Python rejects one for a named parameter."""

    @pytest.mark.parametrize(("method", "awaited"), SUBMITTERS)
    async def test_unknown_keyword_names_method_and_keyword(
        self, method: str, awaited: bool
    ) -> None:
        async with WorkerPool() as pool:
            pattern = rf"{method}\(\) got an unexpected keyword argument 'tiemout'"
            with pytest.raises(TypeError, match=pattern):
                await submit_by_name(pool, method, tiemout=5)
            # A keyword is checked before the callable, as Python checks its parameters.
            with pytest.raises(TypeError, match=pattern):
                await submit_by_name(pool, method, "not callable", tiemout=5)
            if not method.endswith("_sync"):
                pattern = rf"{method}\(\) got an unexpected keyword argument 'abandon_on_cancel'"
                with pytest.raises(TypeError, match=pattern):
                    await submit_by_name(pool, method, abandon_on_cancel=True)
            assert pool.statistics().submitted == 0

    @pytest.mark.parametrize("method", ["map", "map_sync"])
    async def test_a_map_without_its_iterable_is_reported_under_its_own_name(
        self, method: str
    ) -> None:
        # map_sync() passes its arguments on to map(); the error still names the call made,
        # and the class users see, not the face that map() is written in.
        async with WorkerPool() as pool:
            fn = blocking_echo if method.endswith("_sync") else echo
            pattern = (
                rf"^WorkerPool\.{method}\(\) missing 1 required positional argument: 'iterable'$"
            )
            with pytest.raises(TypeError, match=pattern):
                getattr(pool, method)(fn)
            assert pool.statistics().submitted == 0

    @pytest.mark.parametrize(("method", "awaited"), SUBMITTERS)
    async def test_every_option_by_name_with_its_default(self, method: str, awaited: bool) -> None:
        per_item = method.startswith("map")
        defaults: dict[str, Any] = {
            "timeout": None,
            "retries": 0,
            "retryable_exceptions": (Exception,),
            "backoff": werkpool.default_backoff,
            "key": None,
            "cost": None,
            "name": None,
        }
        if method.endswith("_sync"):
            defaults["abandon_on_cancel"] = False
        if per_item:
            defaults.update(ordered=True, return_exceptions=False, window=None)
        async with WorkerPool() as pool:
            assert await result_of(pool, method, **defaults) == 1
            given: dict[str, Any] = {
                "retries": 2,
                "name": "one",
                "key": str if per_item else "host",
            }
            if not method.endswith("_sync"):  # virtual time could jump past it while fn runs
                given["timeout"] = 5
            assert await result_of(pool, method, **given) == 1
        assert pool.statistics().completed == 2

    @pytest.mark.parametrize(("method", "awaited"), SUBMITTERS)
    async def test_a_bad_option_raises_as_before(self, method: str, awaited: bool) -> None:
        async with WorkerPool() as pool:
            with pytest.raises(ValueError, match=r"retries must be an int >= 0, got -1"):
                await submit_by_name(pool, method, retries=-1)
            with pytest.raises(TypeError, match=r"^key must be (hashable|None or a callable)"):
                await submit_by_name(pool, method, key=[])
            assert pool.statistics().submitted == 0

    def test_the_validator_takes_exactly_the_declared_options(self) -> None:
        """job_options() binds the options by Python's own keyword binding: its parameters must
        be the keys SubmitOptions and MapOptions declare."""
        declared = set(inspect.signature(job_options).parameters)
        assert declared == SUBMIT_OPTIONS == MAP_OPTIONS

    def test_sync_twins_keep_their_kind_and_docstrings(self) -> None:
        for method, awaited in SUBMITTERS[5:]:
            twin = getattr(WorkerPool, method)
            assert twin.__name__ == method
            assert inspect.iscoroutinefunction(twin) is awaited
            assert "for a blocking function" in twin.__doc__


# -- statistics ----------------------------------------------------------------------------------


class TestStatistics:
    async def test_snapshot_adds_up(self) -> None:
        """statistics() counts queued, running, backoff, outcomes, attempts and retries."""
        async with WorkerPool(size=2, rate=100, burst=2, max_pending=50) as pool:
            ok = [pool.run(sleep_echo, 1.0, i) for i in range(3)]
            bad = pool.run(fail_after_sleep, 0.5, "x", retries=1, backoff=lambda n: 5)
            await anyio.sleep(0.75)
            stats = pool.statistics()
            assert isinstance(stats, PoolStatistics)
            assert (stats.size, stats.rate, stats.burst, stats.max_pending) == (2, 100.0, 2, 50)
            assert (stats.running, stats.queued, stats.backoff) == (2, 2, 0)
            await anyio.sleep(1.0)
            stats = pool.statistics()
            assert (stats.completed, stats.backoff) == (2, 1)
            cancelled = pool.run(anyio.sleep, 1)
            cancelled.cancel()
            for future in ok:
                await future
            with pytest.raises(Boom):
                await bad
        stats = pool.statistics()
        assert stats.submitted == 5
        assert (stats.completed, stats.failed, stats.cancelled) == (3, 1, 1)
        assert (stats.attempts, stats.retries) == (5, 1)
        assert_idle(pool)

    async def test_repr_is_short_and_live(self) -> None:
        """The pool's repr names its state and live counts."""
        async with WorkerPool(size=1) as pool:
            pool.run(anyio.sleep, 1)
            pool.run(anyio.sleep, 1)
            await anyio.sleep(0.01)
            assert "queued=1 running=1" in repr(pool)
