"""Contract R1-R5: the concurrency limit (``size``)."""

from __future__ import annotations

import inspect
import random
from pathlib import Path
from typing import Any

import anyio
import pytest
from support import (
    Boom,
    Probe,
    approx,
    assert_consistent,
    assert_idle,
    borrowed,
    echo,
    fail_after_sleep,
)

from werkpool import JobEvent, WorkerPool

README = Path(__file__).resolve().parents[2] / "README.md"


class EventsMade:
    """Counts the ``anyio.Event``s made while the ``with`` block runs (each parking worker
    makes one): :attr:`made`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        self.made = 0
        self.event = anyio.Event

    def _counted(self) -> anyio.Event:
        self.made += 1
        return self.event()

    def __enter__(self) -> EventsMade:
        self.monkeypatch.setattr(anyio, "Event", self._counted)
        return self

    def __exit__(self, *exc: object) -> None:
        self.monkeypatch.setattr(anyio, "Event", self.event)


# -- R1: never more than `size` attempts executing ------------------------------------------------


async def test_r01_executing_attempts_never_exceed_size() -> None:
    """size=4: at most four attempts execute, counted inside each job; a backoff holds no slot."""
    probe = Probe(limit=4)
    attempts: list[float] = []
    samples: list[tuple[int, int, int]] = []

    async def flaky() -> str:
        attempts.append(anyio.current_time())
        probe.enter("flaky")
        try:
            await anyio.sleep(0.5)
            if len(attempts) == 1:
                raise Boom("first attempt")
            return "flaky"
        finally:
            probe.leave()

    t0 = anyio.current_time()
    async with WorkerPool(size=4) as pool:
        flaky_future = pool.run(flaky, retries=1, backoff=lambda n: 5.0)
        futures = [pool.run(probe.job, i, 1.0) for i in range(40)]

        async def monitor() -> None:
            while not all(f.done() for f in futures):
                s = pool.statistics()
                samples.append((s.running, s.backoff, borrowed(pool)))
                assert_consistent(pool, probe.running)
                await anyio.sleep(0.25)

        async with anyio.create_task_group() as tg:
            tg.start_soon(monitor)
    assert await flaky_future == "flaky"
    assert [await f for f in futures] == list(range(40))
    assert probe.peak == 4
    assert probe.violations == []
    assert all(running <= 4 and tokens == running for running, _, tokens in samples)
    # While "flaky" waited out its 5 s backoff the other jobs used all four slots.
    assert (4, 1, 4) in samples
    # Its retry went first when its backoff ended, in the slot that freed at 5.5 s.
    assert [t - t0 for t in attempts] == [0.0, approx(5.5)]
    # No slot idles while jobs wait: four attempts start at once, and every later one starts
    # the instant an earlier one ends.
    starts, ends = sorted(probe.starts), sorted(probe.ends)
    assert starts[:4] == [approx(t0)] * 4
    assert starts[4:] == [approx(t) for t in ends[: len(starts) - 4]]


async def test_r01_size_holds_while_jobs_are_cancelled() -> None:
    """Cancelling running jobs (with slow shielded cleanup) never lets a fourth attempt in."""
    probe = Probe(limit=3)
    rng = random.Random(1)
    async with WorkerPool(size=3) as pool:
        futures = [pool.run(probe.job, i, 2.0, False, 0.7) for i in range(30)]
        for _ in range(25):
            await anyio.sleep(rng.choice([0.1, 0.35, 0.7]))
            rng.choice(futures).cancel()
            assert_consistent(pool, probe.running)
    assert probe.violations == []
    assert probe.peak == 3
    assert all(f.done() for f in futures)
    assert_idle(pool)


async def test_r01_size_holds_during_kill() -> None:
    """kill() with jobs in shielded cleanup starts nothing new and never exceeds size."""
    probe = Probe(limit=2)
    async with WorkerPool(size=2) as pool:
        futures = [pool.run(probe.job, i, 10.0, False, 1.0) for i in range(6)]
        await anyio.sleep(0.5)
        started = len(probe.starts)
        t_kill = anyio.current_time()
        await pool.kill()
        assert anyio.current_time() - t_kill == approx(1.0)  # the shielded cleanups ran
        assert probe.running == 0
        await anyio.sleep(20)
    assert len(probe.starts) == started == 2
    assert probe.peak == 2
    assert all(f.cancelled() for f in futures)
    assert_idle(pool)


async def test_r01_size_holds_through_a_resize_and_each_pool_has_its_own_bound() -> None:
    """Each pool keeps exactly its own ``size``, and follows ``pool.size = n``.

    The checklist asks that size hold while the bound changes: since 0.4 ``size`` is settable on
    a running pool; the other pool's bound is untouched and the invariants hold throughout.
    """
    pool = WorkerPool(size=3)
    async with pool, WorkerPool(size=1) as other:
        futures = [pool.run(anyio.sleep, 1) for _ in range(7)]
        others = [other.run(anyio.sleep, 1) for _ in range(2)]
        for step in range(4):
            if step == 2:
                pool.size = 5
            expected = 3 if step < 2 else 5
            assert pool.size == expected
            assert pool.statistics().limits[0].count == expected
            assert other.statistics().limits[0].count == 1
            assert pool.statistics().running <= expected
            assert_consistent(pool)
            assert_consistent(other)
            await anyio.sleep(0.75)
        for future in [*futures, *others]:
            await future
    assert pool.size == 5


# -- R2: FIFO start order ------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["start_soon", "run"])
async def test_a_burst_of_ready_jobs_begins_within_three_loop_iterations(how: str) -> None:
    """200 jobs queued at once in a pool of 200 workers with no limit: all begin within three
    iterations of the event loop (#24). Woken one by one, each worker handing on once it ran,
    they began over about 200 iterations, which with I/O in flight delays the last ones."""
    iterations = 0
    counting = True

    async def count() -> None:
        nonlocal iterations
        for _ in range(5_000):  # bounded: it ends once the jobs began, or after 5,000
            if not counting:
                return
            iterations += 1
            await anyio.lowlevel.checkpoint()

    began: list[int] = []

    async def job() -> None:
        began.append(iterations)
        await anyio.sleep(1)

    async with anyio.create_task_group() as tg:
        tg.start_soon(count)
        await anyio.lowlevel.checkpoint()
        async with WorkerPool(size=200) as pool:
            for _ in range(200):
                if how == "start_soon":
                    pool.start_soon(job)
                else:
                    pool.run(job)
            for _ in range(2_000):
                if len(began) == 200:
                    break
                await anyio.lowlevel.checkpoint()
            counting = False
    assert len(began) == 200
    assert max(began) - min(began) <= 3, (min(began), max(began))


@pytest.mark.parametrize("how", ["map", "start_soon"])
async def test_jobs_that_never_wait_wake_no_crowd_of_workers(
    how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Jobs that return without waiting are run by the worker that took the first, one batch
    after another: the burst rule above must not wake a worker per waiting job for them, to
    find nothing (on trio it did: 40,000 parked workers per 100,000 jobs, 1.6x the CPU)."""

    async def job(i: int) -> int:
        return i

    async with WorkerPool(size=100) as pool:
        await anyio.lowlevel.checkpoint()
        # Every anyio.Event made: each parking worker's, and the map's own few.
        with EventsMade(monkeypatch) as events:
            if how == "map":
                assert [r async for r in pool.map(job, range(10_000))] == list(range(10_000))
            else:
                for i in range(10_000):
                    pool.start_soon(job, i)
                await pool.shutdown()
    # Counted before the fix (since 9f5cae6): trio map about 4,000; now tens.
    assert events.made < 10_000 // 50, events.made


async def test_a_map_of_jobs_that_wait_once_keeps_its_workers_fed(
    monkeypatch: pytest.MonkeyPatch, anyio_backend_name: str
) -> None:
    """A map refills its window before its consumer waits, so that the line does not run dry
    between two refills while the window has room: otherwise the workers that finish first
    park, to be woken one by one (issue #24: a park for every fourth yield-once job)."""

    async def job(i: int) -> int:
        await anyio.lowlevel.checkpoint()
        return i

    async with WorkerPool(size=100) as pool:
        await anyio.lowlevel.checkpoint()
        # Every anyio.Event made: each parking worker's, and the consumer's waits.
        with EventsMade(monkeypatch) as events:
            assert [r async for r in pool.map(job, range(10_000))] == list(range(10_000))
    # Counted before the fix: 2,710 on asyncio, 3,390-3,740 on trio; after it 100 on asyncio (the
    # consumer waits once per round of 100 jobs) and 1,670-1,950 on trio, whose run loop may run
    # the consumer after the workers of a round: an ordered map's results held behind an earlier
    # one that has not finished fill the window, and the next round finds the line dry.
    assert events.made < (250 if anyio_backend_name == "asyncio" else 2_600), events.made


async def test_r02_size_one_starts_in_submission_order() -> None:
    """size=1: run, submit and start_soon jobs start in exactly the order they were submitted."""
    probe = Probe(limit=1)
    async with WorkerPool(size=1) as pool:
        for i in range(45):
            duration = 0.01 * (45 - i)  # later jobs are shorter: no help from durations
            kind = i % 3
            if kind == 0:
                pool.run(probe.job, i, duration)
            elif kind == 1:
                await pool.submit(probe.job, i, duration)
            else:
                pool.start_soon(probe.job, i, duration)
    assert probe.order == list(range(45))


async def test_r02_size_k_starts_fifo_when_queued_jobs_are_cancelled() -> None:
    """size=3: jobs start in submission order, minus the ones cancelled while queued."""
    probe = Probe(limit=3)
    rng = random.Random(2)
    durations = [rng.choice([0.1, 0.3, 0.5, 1.0, 2.0]) for _ in range(60)]
    cancelled: set[int] = set()
    async with WorkerPool(size=3) as pool:
        futures = [pool.run(probe.job, i, durations[i]) for i in range(60)]
        for _ in range(12):
            await anyio.sleep(rng.choice([0.05, 0.2, 0.4]))
            waiting = [i for i in range(60) if i not in probe.attempts and i not in cancelled]
            if waiting:
                victim = rng.choice(waiting[len(waiting) // 3 :])  # mid-queue, not the head
                assert futures[victim].cancel() is True
                cancelled.add(victim)
    expected = [i for i in range(60) if i not in cancelled]
    assert probe.order == expected
    assert probe.starts == sorted(probe.starts)
    assert all(futures[i].cancelled() for i in cancelled)
    assert len(cancelled) == 12


# -- R3: cancelled while waiting for a slot ------------------------------------------------------


async def test_r03_cancel_while_waiting_for_slot_never_starts() -> None:
    """Queued jobs cancelled never start, take no slot and do not delay the jobs behind them."""
    probe = Probe(limit=2)
    t0 = anyio.current_time()
    async with WorkerPool(size=2) as pool:
        futures = [pool.run(probe.job, i, 1.0) for i in range(10)]
        await anyio.sleep(0.5)
        for i in (2, 3, 5):
            assert futures[i].cancel() is True
            assert futures[i].cancelled()
        assert_consistent(pool, probe.running)
        assert pool.statistics().queued == 5
    assert probe.order == [0, 1, 4, 6, 7, 8, 9]
    assert [t - t0 for t in probe.starts] == [approx(x) for x in (0, 0, 1, 1, 2, 2, 3)]
    assert_idle(pool)


async def test_r03_cancel_in_the_same_tick_as_the_hand_off() -> None:
    """A job cancelled in the very step its slot is released never starts; the next one does."""
    probe = Probe(limit=1)
    futures: dict[str, Any] = {}

    async def releaser() -> str:
        probe.enter("A")
        try:
            await anyio.sleep(1.0)
            futures["B"].cancel()  # B is next in line; the slot is released right after this
            return "A"
        finally:
            probe.leave()

    t0 = anyio.current_time()
    async with WorkerPool(size=1) as pool:
        futures["A"] = pool.run(releaser)
        futures["B"] = pool.run(probe.job, "B", 1.0)
        futures["C"] = pool.run(probe.job, "C", 1.0)
    assert probe.order == ["A", "C"]
    assert probe.starts == [approx(t0), approx(t0 + 1.0)]
    assert futures["B"].cancelled()
    assert_idle(pool)


async def test_r03_cancel_running_and_next_in_one_step() -> None:
    """Cancelling the running job and the next one together: the one after starts at once."""
    probe = Probe(limit=1)
    t0 = anyio.current_time()
    async with WorkerPool(size=1) as pool:
        running = pool.run(probe.job, "A", 100.0)
        nxt = pool.run(probe.job, "B", 1.0)
        after = pool.run(probe.job, "C", 1.0)
        await anyio.sleep(1.0)
        running.cancel()
        nxt.cancel()
        assert await after == "C"
    assert probe.order == ["A", "C"]
    assert probe.starts == [approx(t0), approx(t0 + 1.0)]
    assert_idle(pool)


@pytest.mark.parametrize("rounds", [12])
async def test_r03_caller_cancelled_in_the_same_tick_as_the_slot_frees(rounds: int) -> None:
    """anyio #947's shape: a call() cancelled exactly when the slot is handed to it leaks nothing.

    Whichever of the two happens first in that tick, the slot is never lost: either the job
    never starts, or it starts and is cancelled before call() returns; the next job starts at
    once, and the limiter lends exactly one token per executing attempt.
    """
    probe = Probe(limit=1)
    async with WorkerPool(size=1) as pool:
        for r in range(rounds):
            t0 = anyio.current_time()
            holder = pool.run(probe.job, ("hold", r), 1.0)
            with anyio.move_on_after(1.0):
                await pool.call(probe.job, ("call", r), 5.0)
            assert anyio.current_time() == approx(t0 + 1.0)
            assert probe.running == 0  # whatever happened, nothing of the call runs any more
            assert_consistent(pool, 0)
            assert await holder == ("hold", r)
            assert probe.attempts.get(("call", r), 0) <= 1
            t1 = anyio.current_time()
            assert await pool.run(probe.job, ("next", r)) == ("next", r)
            assert probe.starts[-1] == approx(t1)  # not delayed by a lost slot
    assert_idle(pool)


async def test_r03_future_cancel_racing_the_hand_off() -> None:
    """future.cancel() at the instant the slot frees: the job after it is not delayed."""
    probe = Probe(limit=1)
    t0 = anyio.current_time()
    async with WorkerPool(size=1) as pool:
        pool.run(probe.job, "A", 1.0)
        racer = pool.run(probe.job, "B", 10.0)
        after = pool.run(probe.job, "C", 1.0)

        async def cancel_at_one() -> None:
            await anyio.sleep(1.0)
            racer.cancel()

        async with anyio.create_task_group() as tg:
            tg.start_soon(cancel_at_one)
        assert await after == "C"
    assert racer.cancelled()
    assert probe.attempts.get("B", 0) <= 1
    c_start = probe.starts[probe.order.index("C")]
    assert c_start == approx(t0 + 1.0)
    assert_idle(pool)


# -- R4: a slot is released once, after the job's code has finished --------------------------------


async def test_r04_slot_released_only_after_awaited_cleanup() -> None:
    """A cancelled job holds its slot through its shielded cleanup; the next starts after it."""
    probe = Probe(limit=1)
    t0 = anyio.current_time()
    async with WorkerPool(size=1) as pool:
        first = pool.run(probe.job, "A", 100.0, False, 2.0)
        second = pool.run(probe.job, "B", 1.0)
        await anyio.sleep(1.0)
        assert first.cancel() is True
        assert first.cancelled()
        for _ in range(3):
            await anyio.sleep(0.5)  # t = 1.5, 2.0, 2.5: A is still cleaning up
            assert probe.order == ["A"]
            assert borrowed(pool) == 1
            assert_consistent(pool, 1)
        assert await second == "B"
    assert probe.starts == [approx(t0), approx(t0 + 3.0)]
    assert_idle(pool)


@pytest.mark.parametrize("rate", [None, 1000.0])
async def test_r04_each_slot_is_taken_and_released_exactly_once(rate: float | None) -> None:
    """Every attempt takes its place under ``size`` once and gives it back once, after it ends,
    on every outcome (returned, raised, timed out, retried, not a coroutine, cancelled running
    or queued, swallowing its cancellation, killed).

    The pool's hooks see each attempt's start and its end (a retry or the job's finish): no job
    starts an attempt while its last one is still open, every attempt ends, and R4's "places
    taken == attempts running" is checked by assert_consistent here and by the next test.
    """
    open_attempts: dict[int | None, int] = {}
    errors: list[str] = []

    def hook(event: JobEvent) -> None:
        if event.kind == "started":
            if open_attempts.get(event.job):
                errors.append(f"job {event.job} started an attempt while one was open")
            open_attempts[event.job] = 1
        elif event.kind in ("retrying", "finished"):
            open_attempts[event.job] = 0

    cancelled_exc = anyio.get_cancelled_exc_class()

    async def swallows() -> str:
        try:
            await anyio.sleep(100)
        except cancelled_exc:
            return "swallowed"
        return "finished"

    def not_async() -> int:
        return 5

    async def fails_twice_then_ok() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise Boom("again")
        return "ok"

    attempts: list[int] = []
    async with WorkerPool(size=2, rate=rate, hooks=[hook]) as pool:
        ok = pool.run(echo, "ok")
        failed = pool.run(fail_after_sleep, 0.5)
        timed_out = pool.run(anyio.sleep, 5, timeout=1)
        retried = pool.run(fails_twice_then_ok, retries=3, backoff=lambda n: 0.1)
        wrong = pool.run(not_async)  # type: ignore[arg-type]
        running = pool.run(anyio.sleep, 50)
        queued = pool.run(anyio.sleep, 50)
        swallowing = pool.run(swallows)
        await anyio.sleep(0.01)
        queued.cancel()
        await anyio.sleep(3)
        running.cancel()
        await anyio.sleep(1)
        swallowing.cancel()
        await anyio.sleep(1)
        killed = [pool.run(anyio.sleep, 50) for _ in range(3)]
        await anyio.sleep(1)
        assert_consistent(pool)
        await pool.kill()
    assert await ok == "ok"
    with pytest.raises(Boom):
        await failed
    with pytest.raises(TimeoutError):
        await timed_out
    assert await retried == "ok"
    with pytest.raises(TypeError):
        await wrong
    assert running.cancelled()
    assert queued.cancelled()
    assert swallowing.cancelled()
    assert all(f.cancelled() for f in killed)
    assert errors == []
    assert open_attempts
    assert not any(open_attempts.values()), open_attempts
    assert pool.statistics().attempts >= len(open_attempts)
    assert_idle(pool)


@pytest.mark.parametrize("seed", [3, 4, 5])
async def test_r04_borrowed_tokens_equal_running_after_every_step(seed: int) -> None:
    """A random program of submits, cancels and waits: tokens lent == attempts running, always."""
    rng = random.Random(seed)
    probe = Probe(limit=3)
    futures: list[Any] = []
    async with WorkerPool(size=3, rate=rng.choice([None, 5.0])) as pool:
        for step in range(150):
            action = rng.random()
            if action < 0.45:
                futures.append(
                    pool.run(
                        probe.job,
                        step,
                        rng.choice([0.0, 0.1, 0.5, 2.0]),
                        rng.random() < 0.3,
                        rng.choice([0.0, 0.0, 0.3]),
                        retries=rng.choice([0, 1]),
                        backoff=lambda n: 0.2,
                        timeout=rng.choice([None, None, 0.4]),
                    )
                )
            elif action < 0.65 and futures:
                rng.choice(futures).cancel()
            else:
                await anyio.sleep(rng.choice([0.0, 0.05, 0.3, 1.0]))
            assert_consistent(pool, probe.running)
        await anyio.sleep(0.5)
        assert_consistent(pool, probe.running)
    for future in futures:
        if not future.cancelled():
            future.exception()  # retrieved: asyncio must not report it as lost
    assert probe.violations == []
    assert_idle(pool)


# -- R5: nested submissions ----------------------------------------------------------------------


async def test_r05_nested_submissions_from_a_job() -> None:
    """A job may run, start_soon, submit and call on its own pool: no borrower error, no hang."""

    async def outer() -> list[object]:
        futures = [pool.run(echo, i) for i in range(3)]
        handle = pool.start_soon(echo, "soon")
        submitted = await pool.submit(echo, "submitted")
        called = await pool.call(echo, "called")
        return [*[await f for f in futures], await handle, await submitted, called]

    with anyio.fail_after(60):
        async with WorkerPool(size=2) as pool:
            results = await pool.run(outer)
            assert results == [0, 1, 2, "soon", "submitted", "called"]
            # Many levels deep, each holding a slot: fine while slots remain.
            nested = await pool.run(_nest, pool, 1)
            assert nested == 1
    assert_idle(pool)


async def _nest(pool: WorkerPool, depth: int) -> int:
    if depth == 0:
        return 0
    return await pool.call(_nest, pool, depth - 1) + 1


async def test_r05_submission_never_blocks() -> None:
    """run() from a job returns at once even with no free slot; submit() waits for no slot."""
    assert not inspect.iscoroutinefunction(WorkerPool.run)  # it cannot wait: not a coroutine
    assert not inspect.iscoroutinefunction(WorkerPool.start_soon)

    async def producer() -> int:
        t = anyio.current_time()
        futures = [pool.run(echo, i) for i in range(500)]
        futures += [pool.start_soon(echo, i) for i in range(500)]
        assert not any(f.done() for f in futures)  # none could start: this job holds the slot
        extra = await pool.submit(echo, "extra")  # a checkpoint, but no wait for a slot
        assert anyio.current_time() == t
        futures.append(extra)
        return len(futures)

    async with WorkerPool(size=1) as pool:
        assert await pool.run(producer) == 1001
    assert pool.statistics().completed == 1002
    assert_idle(pool)


async def test_r05_size_one_self_wait_deadlocks_as_documented() -> None:
    """size=1, a job awaiting a job of its own pool: the documented deadlock, and a docs note."""
    probe = Probe(limit=1)

    async def waits_for_inner() -> str:
        inner = pool.run(probe.job, "inner")
        done = anyio.Event()
        inner.add_done_callback(lambda _: done.set())
        with anyio.move_on_after(60) as scope:
            await done.wait()
        return "deadlocked" if scope.cancelled_caught else "finished"

    t0 = anyio.current_time()
    async with WorkerPool(size=1) as pool:
        assert await pool.run(waits_for_inner) == "deadlocked"
    # The inner job could start only once its parent gave up and freed the only slot.
    assert probe.order == ["inner"]
    assert probe.starts == [approx(t0 + 60)]
    text = " ".join(README.read_text(encoding="utf-8").split())
    assert (
        "A job that awaits another job of the same pool needs a free slot for it: "
        "with `size=1` that is a deadlock" in text
    )
    assert "Submitting without awaiting is fine." in text
