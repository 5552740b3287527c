"""Issue #14, part 2: blocking functions run in worker threads under the pool's limits.

``run_sync``, ``start_soon_sync``, ``call_sync``, ``submit_sync`` and ``map_sync`` run ``fn`` in
a thread of the pool's own limiter, counted by the same size, rates and keys as any job, with the
same retries, backoff and per-attempt timeout. A running thread cannot be interrupted: with
``abandon_on_cancel=False`` a timeout or cancellation waits for ``fn`` to return (the slot stays
held), with ``True`` the attempt ends at once and the thread runs on, uncounted.

Threads here are steered by the test through :class:`Blocker` (a condition variable), never by
``time.sleep``: every real wait is bounded by ``REAL_WAIT``, and the ``blocker`` fixture releases
and waits for every thread it holds, so none outlives its test. Time is virtual: while the event
loop waits for a thread it may jump to its next timer, so tests only assert what such jumps cannot
change (and :func:`spin_until` holds the clock still where a thread must finish "in no time").
"""

from __future__ import annotations

import contextvars
import functools
import math
import threading
import time
from typing import TYPE_CHECKING, Any

import anyio
import anyio.from_thread
import anyio.to_thread
import pytest
from anyio.lowlevel import checkpoint
from support import Boom, approx, assert_idle, echo

from werkpool import Concurrency, PoolFullError, WorkerPool

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

#: The bound of every real (wall-clock) wait of the tests and of their threads.
REAL_WAIT = 10.0
TIMED_OUT = r"^the attempt timed out after {} s$"
SYNC_METHODS = ["run_sync", "start_soon_sync", "submit_sync", "call_sync", "map_sync"]


class Blocker:
    """A blocking function the test steers from the event loop, and a record of what it did.

    ``job(label)`` enters (noting its thread), blocks until the test releases *label* (or all
    labels), and returns *label*. Its wait is bounded: an unreleased thread gives up after
    ``REAL_WAIT`` with a RuntimeError rather than hang the run.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._released: set[object] = set()
        self._all = False
        self.inside: list[object] = []  # labels whose call is blocked in fn now
        self.entered: list[object] = []  # in the order the calls began
        self.finished: list[object] = []  # in the order the calls returned
        self.threads: dict[object, int] = {}  # label -> threading.get_ident() of its call
        self.peak = 0  # the most calls inside at once (since reset_peak)

    def job(self, label: object) -> object:
        with self._cond:
            self.inside.append(label)
            self.entered.append(label)
            self.threads[label] = threading.get_ident()
            self.peak = max(self.peak, len(self.inside))
            self._cond.notify_all()
            try:
                if not self._cond.wait_for(lambda: self._all or label in self._released, REAL_WAIT):
                    raise RuntimeError(f"{label!r} was never released")
            finally:
                self.inside.remove(label)
                self.finished.append(label)
                self._cond.notify_all()
        return label

    def release(self, *labels: object) -> None:
        with self._cond:
            self._released.update(labels)
            self._cond.notify_all()

    def release_all(self) -> None:
        with self._cond:
            self._all = True
            self._cond.notify_all()

    def reset_peak(self) -> None:
        with self._cond:
            self.peak = len(self.inside)

    def wait_for(self, predicate: Callable[[], bool], limit: float = REAL_WAIT) -> bool:
        """Block this thread until *predicate* (called under the lock) holds; False on timeout."""
        with self._cond:
            return self._cond.wait_for(predicate, limit)

    async def until(self, predicate: Callable[[], bool], limit: float = REAL_WAIT) -> None:
        """Wait until *predicate* holds, in a helper thread so that the event loop runs on."""
        reached = await anyio.to_thread.run_sync(self.wait_for, predicate, limit)
        assert reached, f"not reached in {limit} s: inside={self.inside}, entered={self.entered}"


@pytest.fixture
def blocker() -> Iterator[Blocker]:
    """A :class:`Blocker` whose threads are all released, and gone, when the test ends."""
    steered = Blocker()
    yield steered
    steered.release_all()
    assert steered.wait_for(lambda: not steered.inside), "a thread of the test still runs"


async def spin_until(done: Callable[[], bool], limit: float = REAL_WAIT) -> None:
    """Yield to the event loop until *done*, without ever letting it idle.

    A virtual clock only moves when the loop has nothing to do, so it stands still meanwhile: a
    thread that returns in real microseconds then also returns in no virtual time, and cannot
    overrun a deadline the clock would otherwise have jumped to while waiting for it.
    """
    give_up = time.monotonic() + limit
    while not done():
        assert time.monotonic() < give_up, f"not done in {limit} s of real time"
        await checkpoint()


def _counts_are(blocker: Blocker, finished: int, entered: int) -> bool:
    return len(blocker.finished) == finished and len(blocker.entered) == entered


def _no_backoff(retry: int) -> float:
    return 0.0


def args_and_thread(*args: object) -> tuple[tuple[object, ...], int]:
    return args, threading.get_ident()


async def submit_sync_by(pool: WorkerPool, method: str, fn: Any, *args: Any, **opts: Any) -> Any:
    """Run ``fn(*args)`` through *method* and return its result (map_sync: of the one item
    ``args[0]``), raising its error."""
    if method == "run_sync":
        return await pool.run_sync(fn, *args, **opts)
    if method == "start_soon_sync":
        return await pool.start_soon_sync(fn, *args, **opts)
    if method == "submit_sync":
        return await (await pool.submit_sync(fn, *args, **opts))
    if method == "call_sync":
        return await pool.call_sync(fn, *args, **opts)
    assert method == "map_sync"
    async with pool.map_sync(fn, [args[0]], **opts) as results:
        (result,) = [result async for result in results]
        return result


def call_only(pool: WorkerPool, method: str, fn: Any, *args: Any, **opts: Any) -> Any:
    """Make the call *method* (without running anything): its validation raises here or when
    the returned awaitable is awaited."""
    if method == "map_sync":
        return pool.map_sync(fn, list(args), **opts)
    return getattr(pool, method)(fn, *args, **opts)


async def raise_at_call(pool: WorkerPool, method: str, fn: Any, **opts: Any) -> BaseException:
    """The error *method* raises for these arguments (at the call, or when it is awaited)."""
    with pytest.raises(Exception) as info:  # noqa: PT011 - the caller checks which
        result = call_only(pool, method, fn, 1, **opts)
        if method in ("submit_sync", "call_sync"):
            await result
    return info.value


# -- results, arguments, errors ---------------------------------------------------------------


@pytest.mark.parametrize("method", SYNC_METHODS)
async def test_each_method_returns_fn_result_computed_in_a_worker_thread(method: str) -> None:
    """fn gets its arguments and its result comes back, computed off the event loop's thread."""
    args: tuple[object, ...] = ("item",) if method == "map_sync" else (1, "two", None)
    async with WorkerPool(size=2) as pool:
        got_args, ident = await submit_sync_by(pool, method, args_and_thread, *args)
    assert got_args == args
    assert ident != threading.get_ident()
    s = pool.statistics()
    assert (s.submitted, s.completed, s.attempts) == (1, 1, 1)
    assert_idle(pool)


@pytest.mark.parametrize("method", [m for m in SYNC_METHODS if m != "start_soon_sync"])
async def test_fn_error_reaches_the_caller_as_raised(method: str) -> None:
    """The error fn raised in its thread is what the future, the call or the map raises."""
    raised: list[Boom] = []

    def fails(label: object) -> None:
        raised.append(Boom(label))
        raise raised[-1]

    async with WorkerPool() as pool:
        with pytest.raises(Boom) as info:
            await submit_sync_by(pool, method, fails, "from the thread")
    assert info.value is raised[0]
    assert any(frame.name == "fails" for frame in info.traceback)
    assert pool.statistics().failed == 1


async def test_start_soon_sync_failure_fails_the_pool() -> None:
    """Like start_soon: the thread's error cancels the pool's other work and leaves the block."""
    never = anyio.Event()
    raised: list[Boom] = []

    def fails() -> None:
        raised.append(Boom("thread"))
        raise raised[-1]

    with pytest.raises(Boom) as info:
        async with WorkerPool() as pool:
            other = pool.run(never.wait)
            pool.start_soon_sync(fails)
            await never.wait()  # no timer: only the failure can end this
    assert info.value is raised[0]
    assert other.cancelled()
    s = pool.statistics()
    assert (s.failed, s.cancelled) == (1, 1)


async def test_fn_runs_with_a_copy_of_the_context_async_jobs_see() -> None:
    """fn sees the context variables an async job of the pool sees, and its own changes stay in
    its thread's copy, as with anyio.to_thread.run_sync."""
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="default")
    var.set("before the pool")

    async def read_async() -> str:
        return var.get()

    def read_and_change() -> str:
        seen = var.get()
        var.set("changed in the thread")
        return seen

    async with WorkerPool() as pool:
        in_async = await pool.call(read_async)
        assert await pool.call_sync(read_and_change) == in_async == "before the pool"
        assert await pool.call_sync(read_and_change) == in_async  # not the last thread's change
        assert await pool.call(read_async) == in_async
    assert var.get() == "before the pool"


# -- size ---------------------------------------------------------------------------------------


async def test_size_bounds_threads_and_queues_the_rest(blocker: Blocker) -> None:
    """size=3, 10 blocked jobs: exactly 3 are inside fn, each in its own thread; 7 queue; each
    slot a thread frees goes to the next job."""
    async with WorkerPool(size=3) as pool:
        try:
            futures = [pool.run_sync(blocker.job, n) for n in range(10)]
            await blocker.until(lambda: len(blocker.inside) == 3)
            await anyio.sleep(1)  # the pool has every chance to start a 4th
            s = pool.statistics()
            assert (s.running, s.queued, s.borrowed_tokens) == (3, 7, 3)
            assert set(blocker.entered) == {0, 1, 2}  # started together: threads race
            idents = {blocker.threads[n] for n in range(3)}
            assert len(idents) == 3
            assert threading.get_ident() not in idents
            for n in range(10):  # free one slot at a time: the next job takes it
                blocker.release(n)
                expected = min(n + 4, 10)
                await blocker.until(
                    functools.partial(_counts_are, blocker, finished=n + 1, entered=expected)
                )
                assert len(blocker.inside) == expected - n - 1
        finally:
            blocker.release_all()
        assert [await f for f in futures] == list(range(10))
    assert blocker.peak == 3
    assert blocker.entered[3:] == list(range(3, 10))  # one at a time, in submission order
    assert_idle(pool)


async def test_anyio_default_thread_limit_does_not_cap_size(blocker: Blocker) -> None:
    """size=60: all 60 jobs are inside fn at once (anyio's default limiter has 40 threads), and
    none of them borrows from that default limiter."""
    default = anyio.to_thread.current_default_thread_limiter()
    assert default.total_tokens < 60
    async with WorkerPool(size=60) as pool:
        try:
            futures = [pool.run_sync(blocker.job, n) for n in range(60)]
            await blocker.until(lambda: len(blocker.inside) == 60, limit=20)
            assert pool.statistics().running == 60
            assert default.borrowed_tokens == 0
            assert len(set(blocker.threads.values())) == 60
        finally:
            blocker.release_all()
        assert [await f for f in futures] == list(range(60))
    assert_idle(pool)


async def test_rate_only_pool_has_no_thread_cap(blocker: Blocker) -> None:
    """size=None, rate=100: 50 blocked jobs all start (0.49 s of virtual time) and run at once."""
    t0 = anyio.current_time()
    async with WorkerPool(rate=100) as pool:
        try:
            futures = [pool.run_sync(blocker.job, n) for n in range(50)]
            await blocker.until(lambda: len(blocker.inside) == 50, limit=20)
            assert pool.statistics().running == 50
            assert anyio.current_time() - t0 >= 0.49 - 1e-6  # the rate spaced them
        finally:
            blocker.release_all()
        assert [await f for f in futures] == list(range(50))
    assert_idle(pool)


async def test_growing_and_shrinking_size_applies_to_threads(blocker: Blocker) -> None:
    """size 2 -> 4 starts two more threads at once; 4 -> 1 lets the running ones finish, then
    runs the rest one at a time."""
    async with WorkerPool(size=2) as pool:
        try:
            futures = [pool.run_sync(blocker.job, n) for n in range(8)]
            await blocker.until(lambda: len(blocker.inside) == 2)
            await anyio.sleep(1)
            assert set(blocker.entered) == {0, 1}
            pool.size = 4
            await blocker.until(lambda: len(blocker.inside) == 4)
            await anyio.sleep(1)
            assert set(blocker.entered) == {0, 1, 2, 3}
            assert pool.statistics().running == 4
            pool.size = 1
            blocker.release(0, 1, 2, 3)
            await blocker.until(lambda: len(blocker.finished) == 4)
            blocker.reset_peak()
            await blocker.until(lambda: len(blocker.inside) == 1)
            await anyio.sleep(1)
            assert (blocker.inside, pool.statistics().running) == ([4], 1)
        finally:
            blocker.release_all()
        assert [await f for f in futures] == list(range(8))
    assert blocker.peak == 1  # after the shrink
    assert_idle(pool)


# -- rate, retries, backoff ---------------------------------------------------------------------


async def test_rate_spaces_thread_starts() -> None:
    """rate=5: 10 thread jobs take at least 9/5 s, and by any time t at most floor(5 t) + 1
    of them have started (sampled between the slots, on the loop's clock)."""
    samples: list[tuple[float, int]] = []
    t0 = anyio.current_time()
    async with WorkerPool(rate=5) as pool:
        futures = [pool.run_sync(echo_sync, n) for n in range(10)]
        await anyio.sleep(0.1)
        for _ in range(10):
            samples.append((anyio.current_time() - t0, pool.statistics().attempts))
            await anyio.sleep(0.2)
        assert [await f for f in futures] == list(range(10))
    assert anyio.current_time() - t0 >= 1.8 - 1e-6
    for at, attempts in samples:
        assert attempts <= math.floor(at * 5) + 1, samples
    assert pool.statistics().attempts == 10


def echo_sync(value: object) -> object:
    return value


async def test_retries_and_backoff_apply_to_thread_jobs() -> None:
    """fn fails twice, then succeeds: retries=2 gives its result after 3 attempts, backoff(1)
    and backoff(2) waited; an error outside retryable_exceptions is not retried."""
    calls: list[int] = []
    backoffs: list[int] = []

    def flaky() -> str:
        calls.append(threading.get_ident())
        if len(calls) < 3:
            raise Boom(len(calls))
        return "third time"

    def backoff(retry: int) -> float:
        backoffs.append(retry)
        return 1.0

    def not_retryable() -> None:
        raise KeyError("no")

    t0 = anyio.current_time()
    async with WorkerPool(size=1) as pool:
        assert await pool.run_sync(flaky, retries=2, backoff=backoff) == "third time"
        assert anyio.current_time() - t0 >= 2.0 - 1e-6
        with pytest.raises(KeyError):
            await pool.call_sync(not_retryable, retries=3, retryable_exceptions=Boom)
    assert len(calls) == 3
    assert backoffs == [1, 2]
    s = pool.statistics()
    assert (s.attempts, s.retries, s.completed, s.failed) == (4, 2, 1, 1)


# -- timeouts: what they can and cannot do to a running thread ----------------------------------


async def test_timeout_waits_for_a_thread_that_runs_on(blocker: Blocker) -> None:
    """abandon_on_cancel=False: past its deadline the attempt keeps its slot (a job behind it
    waits) until fn returns; then the future fails with TimeoutError, fn's result dropped."""
    resolved: list[list[object]] = []
    async with WorkerPool(size=1) as pool:
        try:
            future = pool.run_sync(blocker.job, "stuck", timeout=1)
            future.add_done_callback(lambda _: resolved.append(list(blocker.finished)))
            behind = pool.run_sync(blocker.job, "behind")
            await blocker.until(lambda: "stuck" in blocker.inside)
            await anyio.sleep(5)  # far past the deadline
            assert not future.done()
            s = pool.statistics()
            assert (s.running, s.queued, s.borrowed_tokens) == (1, 1, 1)
            assert blocker.entered == ["stuck"]
            blocker.release("stuck")
            with pytest.raises(TimeoutError, match=TIMED_OUT.format(1)):
                await future
            assert resolved == [["stuck"]]  # fn had returned when the future resolved
            await blocker.until(lambda: "behind" in blocker.inside)
        finally:
            blocker.release_all()
        assert await behind == "behind"
    assert_idle(pool)


async def test_retry_after_a_timed_out_thread_runs_and_succeeds(blocker: Blocker) -> None:
    """retries=1: the attempt that overran ends as TimeoutError once its thread returns, and
    the retry runs fn again, within its own deadline, to success."""
    attempts: list[int] = []

    def slow_first_time() -> object:
        attempts.append(len(attempts) + 1)
        if len(attempts) == 1:
            return blocker.job("first")
        return "second"

    async with WorkerPool(size=1) as pool:
        try:
            future = pool.run_sync(slow_first_time, timeout=1, retries=1, backoff=_no_backoff)
            await blocker.until(lambda: "first" in blocker.inside)
            await anyio.sleep(5)
            assert not future.done()
            assert pool.statistics().running == 1
            blocker.release("first")
            await spin_until(future.done)  # the retry's thread takes no virtual time
        finally:
            blocker.release_all()
        assert await future == "second"
    assert attempts == [1, 2]
    s = pool.statistics()
    assert (s.attempts, s.retries, s.completed) == (2, 1, 1)


async def test_abandoned_thread_times_out_at_once_and_frees_its_slot(blocker: Blocker) -> None:
    """abandon_on_cancel=True: the future fails with TimeoutError while fn is still blocked in
    its thread, and the pool no longer counts that thread."""
    async with WorkerPool(size=1) as pool:
        try:
            future = pool.run_sync(blocker.job, "stuck", timeout=1, abandon_on_cancel=True)
            # Hold the clock until fn is in: an attempt abandoned before its thread picks fn
            # up never runs it, and the loop would jump to the deadline while waiting.
            await spin_until(lambda: "stuck" in blocker.inside)
            with pytest.raises(TimeoutError, match=TIMED_OUT.format(1)):
                await future
            assert blocker.inside == ["stuck"]  # still running, and it has not finished
            assert blocker.finished == []
            s = pool.statistics()
            assert (s.running, s.failed, s.borrowed_tokens) == (0, 1, 0)
        finally:
            blocker.release_all()
        await blocker.until(lambda: blocker.finished == ["stuck"])
    assert_idle(pool)


async def test_abandoned_thread_slot_is_usable_by_the_next_thread_job(blocker: Blocker) -> None:
    """size=1: once a thread is abandoned, the next thread job runs while it is still blocked
    (two threads at once, as documented), not admitted and then left waiting for a thread (on
    trio an abandoned thread keeps its limiter's token until it returns)."""
    async with WorkerPool(size=1) as pool:
        try:
            stuck = pool.run_sync(blocker.job, "stuck", timeout=1, abandon_on_cancel=True)
            await spin_until(lambda: "stuck" in blocker.inside)  # before the deadline
            with pytest.raises(TimeoutError):
                await stuck
            after = pool.run_sync(blocker.job, "after")
            await blocker.until(lambda: "after" in blocker.inside, limit=2)
            assert blocker.inside == ["stuck", "after"]
            assert pool.statistics().running == 1
        finally:
            blocker.release_all()
        assert await after == "after"


@pytest.mark.parametrize("stop", ["timeout", "cancel"])
async def test_fn_stops_early_by_checking_for_cancellation(stop: str) -> None:
    """fn that calls anyio.from_thread.check_cancelled() ends its attempt long before its loop
    would: as TimeoutError past the deadline, as cancelled when the future is cancelled."""
    iterations: list[int] = []
    seen: list[type[BaseException]] = []
    left = threading.Event()
    cancelled_exc = anyio.get_cancelled_exc_class()
    bound = 5000  # at 1 ms each, 5 s of real time if nothing stopped it

    def cooperative(n: int) -> str:
        try:
            for i in range(n):
                iterations.append(i)
                anyio.from_thread.check_cancelled()
                time.sleep(0.001)
            return "ran to the end"
        except BaseException as exc:
            seen.append(type(exc))
            raise
        finally:
            left.set()

    async with WorkerPool() as pool:
        # Without a deadline or a cancellation it never raises.
        assert await pool.call_sync(cooperative, 3) == "ran to the end"
        iterations.clear()
        left.clear()
        if stop == "timeout":
            with pytest.raises(TimeoutError, match=TIMED_OUT.format(1)):
                await pool.call_sync(cooperative, bound, timeout=1)
            assert left.is_set()  # fn had returned when the call ended
        else:
            future = pool.run_sync(cooperative, bound)
            await spin_until(lambda: bool(iterations))
            future.cancel()
            assert await anyio.to_thread.run_sync(left.wait, REAL_WAIT)
            assert future.cancelled()
    assert 0 < len(iterations) < bound
    assert seen == [cancelled_exc]
    s = pool.statistics()
    assert (s.failed, s.cancelled) == ((1, 0) if stop == "timeout" else (0, 1))
    assert_idle(pool)


# -- cancellation of a running thread -----------------------------------------------------------


async def test_cancelled_call_sync_returns_only_after_fn_returned(blocker: Blocker) -> None:
    """abandon_on_cancel=False: cancelling the caller cancels the job, but the call returns
    (cancelled) only once fn has returned in its thread; the slot is held meanwhile."""
    scope = anyio.CancelScope()
    log: list[tuple[str, list[object]]] = []

    async def caller() -> None:
        with scope:
            await pool.call_sync(blocker.job, "stuck")
        log.append(("call returned", list(blocker.finished)))

    async with WorkerPool(size=1) as pool:
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(caller)
                await blocker.until(lambda: "stuck" in blocker.inside)
                scope.cancel()
                await anyio.sleep(1)
                assert log == []
                assert pool.statistics().running == 1
                blocker.release("stuck")
        finally:
            blocker.release_all()
    assert log == [("call returned", ["stuck"])]
    assert scope.cancelled_caught
    s = pool.statistics()
    assert (s.cancelled, s.completed) == (1, 0)
    assert_idle(pool)


async def test_cancelled_call_sync_abandons_the_thread(blocker: Blocker) -> None:
    """abandon_on_cancel=True: the cancelled call returns at once, fn still blocked."""
    async with WorkerPool(size=1) as pool:
        try:
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as tg:
                    call = functools.partial(pool.call_sync, abandon_on_cancel=True)
                    tg.start_soon(call, blocker.job, "stuck")
                    await blocker.until(lambda: "stuck" in blocker.inside)
                    scope.cancel()
            assert scope.cancelled_caught
            assert blocker.inside == ["stuck"]
            s = pool.statistics()
            assert (s.running, s.cancelled) == (0, 1)
        finally:
            blocker.release_all()
        await blocker.until(lambda: not blocker.inside)
    assert_idle(pool)


async def test_kill_waits_for_a_running_thread(blocker: Blocker) -> None:
    """abandon_on_cancel=False: kill() returns only after fn returned; the future ends
    cancelled, its result dropped."""
    log: list[tuple[str, list[object]]] = []

    async def kill() -> None:
        await pool.kill()
        log.append(("kill returned", list(blocker.finished)))

    async with WorkerPool() as pool:
        try:
            future = pool.run_sync(blocker.job, "stuck")
            await blocker.until(lambda: "stuck" in blocker.inside)
            async with anyio.create_task_group() as tg:
                tg.start_soon(kill)
                await anyio.sleep(1)
                assert log == []
                blocker.release("stuck")
        finally:
            blocker.release_all()
    assert log == [("kill returned", ["stuck"])]
    assert future.cancelled()
    assert pool.statistics().cancelled == 1


async def test_kill_abandons_a_thread_with_abandon_on_cancel(blocker: Blocker) -> None:
    """abandon_on_cancel=True: kill() returns while fn is still blocked in its thread."""
    async with WorkerPool() as pool:
        try:
            future = pool.run_sync(blocker.job, "stuck", abandon_on_cancel=True)
            await blocker.until(lambda: "stuck" in blocker.inside)
            await pool.kill()
            assert blocker.inside == ["stuck"]
            assert future.cancelled()
        finally:
            blocker.release_all()
    await blocker.until(lambda: not blocker.inside)
    assert pool.statistics().cancelled == 1


# -- keys, room, map ----------------------------------------------------------------------------


async def test_per_key_limits_apply_to_thread_jobs(blocker: Blocker) -> None:
    """per_key=[Concurrency(1)]: jobs of two keys run side by side, those of one key in turn."""
    async with WorkerPool(per_key=[Concurrency(1)]) as pool:
        try:
            futures = [
                pool.run_sync(blocker.job, "a1", key="a"),
                pool.run_sync(blocker.job, "a2", key="a"),
                pool.run_sync(blocker.job, "b1", key="b"),
            ]
            await blocker.until(lambda: len(blocker.inside) == 2)
            await anyio.sleep(1)
            assert sorted(map(str, blocker.inside)) == ["a1", "b1"]
            assert pool.statistics().queued == 1
            blocker.release("a1")
            await blocker.until(lambda: "a2" in blocker.inside)
            assert sorted(map(str, blocker.inside)) == ["a2", "b1"]
        finally:
            blocker.release_all()
        assert [await f for f in futures] == ["a1", "a2", "b1"]
    assert blocker.peak == 2
    assert_idle(pool)


async def test_submit_sync_waits_for_room_under_max_pending(blocker: Blocker) -> None:
    """max_pending=1: run_sync refuses a second waiting job, submit_sync waits for room."""
    submitted: list[Any] = []

    async def submit() -> None:
        submitted.append(await pool.submit_sync(blocker.job, "third"))

    async with WorkerPool(size=1, max_pending=1) as pool:
        try:
            first = pool.run_sync(blocker.job, "first")
            await blocker.until(lambda: "first" in blocker.inside)
            second = pool.run_sync(blocker.job, "second")
            with pytest.raises(PoolFullError):
                pool.run_sync(blocker.job, "refused")
            async with anyio.create_task_group() as tg:
                tg.start_soon(submit)
                await anyio.sleep(1)
                assert submitted == []
                blocker.release("first")  # "second" starts: room for "third"
        finally:
            blocker.release_all()
        assert [await first, await second, await submitted[0]] == ["first", "second", "third"]
    assert blocker.entered == ["first", "second", "third"]


async def test_map_sync_results_in_order_bounded_by_size() -> None:
    """map_sync gives [fn(x) for x in items] in order, reading at most size + window items
    ahead of the results yielded."""
    pulled = 0
    yielded = 0
    ahead: list[int] = []

    def items() -> Iterator[int]:
        nonlocal pulled
        for x in range(30):
            pulled += 1
            ahead.append(pulled - yielded)
            yield x

    async with WorkerPool(size=3) as pool:
        results = []
        async with pool.map_sync(functools.partial(pow, exp=2), items(), window=2) as squares:
            async for square in squares:
                results.append(square)
                yielded += 1
    assert results == [x**2 for x in range(30)]
    assert max(ahead) <= 3 + 2
    assert_idle(pool)


async def test_map_sync_holds_back_items_while_threads_block(blocker: Blocker) -> None:
    """size=2, window=1, every fn blocked: at most size + window = 3 items are read from the
    input (a map starts when it is first iterated, so a task iterates it)."""
    pulled: list[int] = []
    got: list[object] = []

    def items() -> Iterator[int]:
        for x in range(20):
            pulled.append(x)
            yield x

    async def consume() -> None:
        async with pool.map_sync(blocker.job, items(), window=1) as results:
            got.extend([r async for r in results])

    async with WorkerPool(size=2) as pool:
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(consume)
                await blocker.until(lambda: len(blocker.inside) == 2)
                await anyio.sleep(1)
                assert len(pulled) <= 3
                assert set(blocker.entered) == {0, 1}
                blocker.release_all()
        finally:
            blocker.release_all()
    assert got == list(range(20))
    assert blocker.peak == 2
    assert_idle(pool)


@pytest.mark.parametrize("ordered", [True, False])
async def test_map_sync_order(blocker: Blocker, ordered: bool) -> None:
    """Threads finishing in reverse order: ordered=True yields nothing before the first item's
    result, then all in input order; ordered=False yields each as its thread returns."""
    send, receive = anyio.create_memory_object_stream[object](10)

    async def consume() -> None:
        async with send, pool.map_sync(blocker.job, range(4), ordered=ordered) as results:
            async for result in results:
                await send.send(result)

    got: list[object] = []
    async with WorkerPool() as pool, receive:
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(consume)
                await blocker.until(lambda: len(blocker.inside) == 4)
                for label in (3, 2, 1):
                    blocker.release(label)
                    await blocker.until(functools.partial(blocker.finished.__contains__, label))
                    if ordered:
                        await anyio.sleep(1)
                        with pytest.raises(anyio.WouldBlock):
                            receive.receive_nowait()
                    else:
                        got.append(await receive.receive())
                blocker.release(0)
                got += [r async for r in receive]
        finally:
            blocker.release_all()
    assert got == ([0, 1, 2, 3] if ordered else [3, 2, 1, 0])


async def test_map_sync_errors() -> None:
    """An item's error is raised from the iteration, or yielded in its place with
    return_exceptions=True while the map goes on."""

    def odd_fails(x: int) -> int:
        if x % 2:
            raise Boom(x)
        return x

    async with WorkerPool(size=2) as pool:
        async with pool.map_sync(odd_fails, range(6), return_exceptions=True) as results:
            got = [r async for r in results]
        with pytest.raises(Boom, match=r"^1$"):
            async with pool.map_sync(odd_fails, range(6)) as raising:
                async for _ in raising:
                    pass
    assert [x if isinstance(x, int) else ("Boom", x.args) for x in got] == [
        0,
        ("Boom", (1,)),
        2,
        ("Boom", (3,)),
        4,
        ("Boom", (5,)),
    ]
    assert all(isinstance(x, (int, Boom)) for x in got)


# -- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("method", SYNC_METHODS)
async def test_non_callable_is_rejected_naming_the_method(method: str) -> None:
    async with WorkerPool() as pool:
        error = await raise_at_call(pool, method, 42)
        assert type(error) is TypeError
        assert str(error) == f"{method}() needs a callable to run in a thread, not int"
    assert pool.statistics().submitted == 0


class _AsyncCallable:
    async def __call__(self, x: object) -> object:
        return x


@pytest.mark.parametrize("method", SYNC_METHODS)
@pytest.mark.parametrize(
    "async_fn", [echo, functools.partial(echo), _AsyncCallable()], ids=["def", "partial", "obj"]
)
async def test_async_function_is_rejected_pointing_to_the_async_method(
    method: str, async_fn: Any
) -> None:
    plain = method.removesuffix("_sync")
    async with WorkerPool() as pool:
        error = await raise_at_call(pool, method, async_fn)
        assert type(error) is TypeError
        assert str(error).startswith(f"{method}() runs blocking functions in a worker thread, ")
        assert str(error).endswith(f"is an async function: pass it to pool.{plain}() instead")
    assert pool.statistics().submitted == 0


@pytest.mark.parametrize("method", SYNC_METHODS)
@pytest.mark.parametrize("flag", ["yes", 1, None])
async def test_abandon_on_cancel_must_be_a_bool(method: str, flag: object) -> None:
    async with WorkerPool() as pool:
        error = await raise_at_call(pool, method, echo_sync, abandon_on_cancel=flag)
        assert type(error) is TypeError
        assert str(error) == (
            f"{method}(): abandon_on_cancel must be True or False, not {type(flag).__name__}"
        )
    assert pool.statistics().submitted == 0


@pytest.mark.parametrize("method", SYNC_METHODS)
@pytest.mark.parametrize("bad_timeout", [-1, math.nan, math.inf, "1", True])
async def test_bad_timeout_raises_what_run_raises(method: str, bad_timeout: Any) -> None:
    async with WorkerPool() as pool:
        with pytest.raises((TypeError, ValueError)) as expected:
            pool.run(echo, 1, timeout=bad_timeout)
        error = await raise_at_call(pool, method, echo_sync, timeout=bad_timeout)
        assert (type(error), str(error)) == (type(expected.value), str(expected.value))
    assert pool.statistics().submitted == 0


async def test_virtual_time_helpers_sanity() -> None:
    """spin_until keeps the virtual clock still while a thread job runs (the premise above)."""
    async with WorkerPool() as pool:
        t0 = anyio.current_time()
        for n in range(5):
            future = pool.run_sync(echo_sync, n, timeout=1)
            await spin_until(future.done)
            assert await future == n
        assert anyio.current_time() == approx(t0)
