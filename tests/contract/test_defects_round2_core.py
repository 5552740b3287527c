"""Issue #21, round 2 of outside testing: the core's defects about BaseExceptions and hooks.

- item 4: a hook raising a KeyboardInterrupt or a SystemExit stops the pool as a job raising it
  would: every future resolves, ``call()`` and ``map()`` return, and the error leaves
  ``async with``;
- item 5: so does a ``retry_after=`` callable raising one (as its ``backoff=`` twin, R27);
- item 9: each event comes after its transition is complete: what a hook does from it (resize,
  cancel, ``set_limits()``, pause) is safe;
- item 13: a failing hook is remembered by identity, not by an ``id()`` a later hook may reuse;
- item 14: a ``call()`` job raising ``SystemExit`` leaves ``async with`` as that one SystemExit
  on trio too (not a group holding it twice).

The tests that let a KeyboardInterrupt or a SystemExit loose run their own loop (as
test_errors_isolation's R27 tests do): on asyncio the event loop itself re-raises them from any
task. A hang (the defects of items 4 and 5) is ended by a real-time timeout.
"""

from __future__ import annotations

import gc
import logging
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from anyio.lowlevel import checkpoint
from support import (
    BACKENDS,
    Boom,
    Probe,
    approx,
    assert_idle,
    internal_tasks,
    run_virtual,
    stats_add_up,
)

from werkpool import Concurrency, JobEvent, RetryAfter, WorkerPool

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = pytest.mark.anyio

FATAL = [KeyboardInterrupt, SystemExit]


class _Flaky:
    """Jobs that fail (or push back) on their first attempt, then return their label."""

    def __init__(self, first: str) -> None:
        self.first = first
        self.attempts: dict[object, int] = {}

    async def job(self, label: object) -> object:
        self.attempts[label] = self.attempts.get(label, 0) + 1
        await anyio.sleep(1)
        if self.attempts[label] == 1 and self.first == "fail":
            raise Boom(label)
        if self.attempts[label] == 1 and self.first == "push back":
            raise RetryAfter(1)
        return label


def _run_own_loop(backend: str, main: Callable[[], Any]) -> Any:
    """Run *main* on a loop of its own; return what it returned, or what escaped the loop."""
    try:
        outcome = run_virtual(backend, main, seed=21)
    except BaseException as exc:  # asyncio re-raises a KeyboardInterrupt/SystemExit of a task
        outcome = exc
    gc.collect()
    return outcome


# -- item 4: a hook raising a BaseException ------------------------------------------------------


@pytest.mark.timeout(30)  # the defect hangs for good, on virtual time too
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("error", FATAL)
@pytest.mark.parametrize("entry", ["call", "map", "run"])
@pytest.mark.parametrize("kind", ["submitted", "started", "retrying", "paused", "finished"])
def test_item4_a_hook_raising_a_base_exception_stops_the_pool_like_a_job(
    backend: str, error: type[BaseException], entry: str, kind: str
) -> None:
    """The hook's error leaves ``async with``, promptly; every future is resolved; nothing of
    the pool runs or is left half-changed (the counters add up)."""
    raised = error(f"from a {kind} hook")
    flaky = _Flaky({"retrying": "fail", "paused": "push back"}.get(kind, "return"))
    record: dict[str, Any] = {}
    futures: list[Any] = []
    options: dict[str, Any] = {"retries": 1, "backoff": lambda n: 1.0}

    def hook(event: JobEvent) -> None:
        if event.kind == kind and "raised" not in record:
            record["raised"] = anyio.current_time()
            raise raised

    async def main() -> str:
        pool = WorkerPool(size=2, hooks=[hook])
        try:
            async with pool:
                if entry == "call":
                    record["result"] = await pool.call(flaky.job, "a", **options)
                elif entry == "map":
                    results = pool.map(flaky.job, ["a", "b", "c"], **options)
                    record["result"] = [x async for x in results]
                else:
                    futures.extend(pool.run(flaky.job, x, **options) for x in "abc")
                    await anyio.sleep(50)
                record["body finished"] = True
        except BaseException as exc:
            record["caught"] = (exc, anyio.current_time())
        for _ in range(3):
            await checkpoint()
        record["resolved"] = [f.done() for f in futures]
        record["internal tasks"] = internal_tasks()
        record["stats add up"] = stats_add_up(pool)
        record["running"] = pool.statistics().running
        return "main returned"

    outcome = _run_own_loop(backend, main)
    if backend == "trio":
        assert outcome == "main returned"
    else:
        assert outcome == "main returned" or outcome is raised
    # A call whose job's finished event raised has its result: the body may go on to its end.
    assert "body finished" not in record or (kind, entry) == ("finished", "call")
    caught, when = record["caught"]
    assert caught is raised
    assert when == approx(record["raised"])  # at once: the jobs are cancelled
    assert record["resolved"] == [True] * len(futures)
    # Every job is cancelled, but for the one whose finished event raised: it completed.
    done = [f.result() for f in futures if not f.cancelled()]
    assert len(done) == (1 if kind == "finished" and entry == "run" else 0)
    assert set(done) <= {"a", "b"}  # one of the two first jobs (the loop picks which ends first)
    assert record["internal tasks"] == []
    assert record["stats add up"]
    assert record["running"] == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_item4_a_hooks_base_exception_is_not_lost_to_a_cancellation_from_outside(
    backend: str,
) -> None:
    """A scope around ``async with`` cancels the pool; a hook raises a KeyboardInterrupt at the
    ``finished`` events of the jobs it cancels: that error leaves the scope, not swallowed by
    it as the cancellation is."""
    raised = KeyboardInterrupt("from a finished hook")
    record: dict[str, Any] = {}
    futures: list[Any] = []

    def hook(event: JobEvent) -> None:
        if event.kind == "finished":
            raise raised

    async def main() -> str:
        try:
            with anyio.move_on_after(1):
                async with WorkerPool(size=1, hooks=[hook]) as pool:
                    futures.extend(pool.run(anyio.sleep, 10) for _ in range(3))
                    await anyio.sleep(5)
            record["moved on"] = True
        except BaseException as exc:
            record["caught"] = (exc, anyio.current_time())
        return "main returned"

    outcome = _run_own_loop(backend, main)
    assert outcome == "main returned" or (backend == "asyncio" and outcome is raised)
    assert "moved on" not in record
    assert record["caught"] == (raised, approx(1))
    assert [f.cancelled() for f in futures] == [True] * 3


@pytest.mark.parametrize("error", FATAL)
async def test_item4_a_hook_raising_after_the_pool_exited_raises_in_the_caller(
    error: type[BaseException],
) -> None:
    """No pool runs to stop: the caller whose action fired the event gets the error, after the
    action is complete (here a pause)."""
    raised = error("late")

    def hook(event: JobEvent) -> None:
        if event.kind == "paused":
            raise raised

    pool = WorkerPool(size=1, hooks=[hook])
    async with pool:
        pass
    with pytest.raises(error) as info:
        pool.pause()
    assert info.value is raised
    assert pool.paused


# -- item 5: a retry_after= callable raising a BaseException -------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("error", FATAL)
@pytest.mark.parametrize("entry", ["call", "map", "run"])
def test_item5_retry_after_raising_a_base_exception_fails_its_job_and_stops_the_pool(
    backend: str, error: type[BaseException], entry: str
) -> None:
    """As when the job raises it (and as ``backoff=``, R27): its job fails with it, the other
    jobs are cancelled, and it leaves ``async with`` (once)."""
    raised = error("from retry_after")
    record: dict[str, Any] = {}
    futures: list[Any] = []

    def retry_after(exc: Exception) -> float | None:
        raise raised

    async def fails() -> None:
        await anyio.sleep(1)
        raise Boom("the job")

    async def main() -> str:
        pool = WorkerPool(size=2, retry_after=retry_after)
        try:
            async with pool:
                if entry == "call":
                    futures.append(pool.run(anyio.sleep, 10))
                    await pool.call(fails, retries=1)
                elif entry == "map":
                    futures.append(pool.run(anyio.sleep, 10))
                    [x async for x in pool.map(lambda _: fails(), [1])]
                else:
                    futures.append(pool.run(fails, retries=1))
                    futures.append(pool.run(anyio.sleep, 10))
                    await anyio.sleep(50)
                record["body finished"] = True
        except BaseException as exc:
            record["caught"] = (exc, anyio.current_time())
        for _ in range(3):
            await checkpoint()
        record["internal tasks"] = internal_tasks()
        record["stats"] = pool.statistics()
        record["stats add up"] = stats_add_up(pool)
        return "main returned"

    outcome = _run_own_loop(backend, main)
    if backend == "trio":
        assert outcome == "main returned"
    else:
        assert outcome == "main returned" or outcome is raised
    assert "body finished" not in record
    caught, when = record["caught"]
    assert caught is raised
    assert when == approx(1)
    if entry == "run":
        assert futures[0].exception() is raised
    assert futures[-1].cancelled()
    assert record["internal tasks"] == []
    assert record["stats add up"]
    assert (record["stats"].failed, record["stats"].cancelled) == (1, 1)


# -- item 9: each event after its transition -----------------------------------------------------


async def test_item9_resizing_from_a_started_hook_holds_the_new_size() -> None:
    """``pool.size = 1`` from the first ``started`` event: the job that started counts against
    the new size, so the others run one at a time (and none is lost from the count)."""
    probe = Probe()

    def hook(event: JobEvent) -> None:
        if event.kind == "started" and event.job == 1:
            pool.size = 1

    pool = WorkerPool(size=2, hooks=[hook])
    async with pool:
        futures = [pool.run(probe.job, i, 1.0) for i in range(4)]
        for future in futures:
            await future
    assert probe.peak == 1
    assert probe.starts == [approx(t) for t in (0, 1, 2, 3)]
    assert_idle(pool)  # the size's snapshot counts no place in use


async def test_item9_cancelling_from_a_started_hook_stops_the_job() -> None:
    """The job's future cancelled from its own ``started`` event: its code never runs, and it
    finishes as cancelled."""
    probe = Probe()
    kinds: list[tuple[str, int | None, str | None]] = []

    def hook(event: JobEvent) -> None:
        kinds.append((event.kind, event.job, event.outcome))
        if event.kind == "started" and event.job == 1:
            futures[0].cancel()

    pool = WorkerPool(size=1, hooks=[hook])
    async with pool:
        futures = [pool.run(probe.job, i, 1.0) for i in range(2)]
        assert await futures[1] == 1
    assert futures[0].cancelled()
    assert probe.order == [1]
    assert probe.starts == [approx(0)]
    assert ("finished", 1, "cancelled") in kinds
    assert_idle(pool)
    stats = pool.statistics()
    assert (stats.completed, stats.cancelled) == (1, 1)


async def test_item9_set_limits_and_pause_from_a_started_hook() -> None:
    """``set_limits([Concurrency(1)])`` from the first ``started`` event counts that job; a
    pause from the second holds the rest until ``resume()``."""
    probe = Probe()

    def hook(event: JobEvent) -> None:
        if event.kind == "started" and event.job == 1:
            pool.set_limits([Concurrency(1)])
        if event.kind == "started" and event.job == 2:
            pool.pause()

    pool = WorkerPool(size=3, hooks=[hook])
    async with pool:
        futures = [pool.run(probe.job, i, 1.0) for i in range(4)]
        await anyio.sleep(10)
        assert probe.order == [0, 1]
        pool.resume()
        for future in futures:
            await future
    assert probe.peak == 1
    assert probe.starts == [approx(t) for t in (0, 1, 10, 11)]
    assert_idle(pool)


async def test_item9_resizing_from_a_pushbacks_paused_hook_leaks_no_slot() -> None:
    """The ``paused`` event of a pushback comes once the job that pushed back waits for its
    retry: resizing from it does not count that job as running for good."""
    flaky = _Flaky("push back")

    def hook(event: JobEvent) -> None:
        if event.kind == "paused":
            pool.size = 1

    pool = WorkerPool(size=2, hooks=[hook])
    with anyio.fail_after(100):
        async with pool:
            futures = [pool.run(flaky.job, x, retries=1) for x in "ab"]
            assert [await f for f in futures] == ["a", "b"]
    assert_idle(pool)  # the size's snapshot counts no place in use: no slot leaked


async def test_item9_cancelling_from_a_pushbacks_paused_hook_drops_the_retry() -> None:
    """The job that pushed back waits for its retry when ``paused`` comes: cancelling its
    future from there drops it, and its code does not run again."""
    flaky = _Flaky("push back")

    def hook(event: JobEvent) -> None:
        if event.kind == "paused":
            future.cancel()

    async with WorkerPool(size=1, hooks=[hook]) as pool:
        future = pool.run(flaky.job, "a", retries=1)
        await anyio.sleep(10)
        assert future.cancelled()
    assert flaky.attempts == {"a": 1}
    assert_idle(pool)


async def test_item9_the_events_of_a_kill_come_once_every_job_is_settled() -> None:
    """Each ``finished`` event of a kill comes once every waiting job is cancelled: the counts
    it carries are the final ones, and ``statistics()`` says the same."""
    seen: list[tuple[int, int, int]] = []

    def hook(event: JobEvent) -> None:
        if event.kind == "finished":
            stats = pool.statistics()
            seen.append((event.queued, stats.queued, stats.cancelled))

    pool = WorkerPool(size=1, hooks=[hook])
    async with pool:
        for _ in range(4):
            pool.run(anyio.sleep, 10)
        await anyio.sleep(1)
        await pool.kill()
    assert seen == [(0, 0, 3)] * 3 + [(0, 0, 4)]  # the running job ends after the 3 waiting


# -- item 13: broken hooks remembered by identity ------------------------------------------------


class _SlotsHook:
    """A hook that cannot be weakly referenced (no ``__weakref__`` slot)."""

    __slots__ = ("n",)

    def __init__(self, n: int) -> None:
        self.n = n

    def __call__(self, event: JobEvent) -> None:
        raise RuntimeError(f"slots hook {self.n}")


class _Messages(logging.Handler):
    """Keeps each record's message and error text, not the record: a record's traceback would
    keep the failing hook alive (through the frame that called it), so its address could not
    be reused."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.errors: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.errors.append(str(record.exc_info[1]) if record.exc_info else record.getMessage())


@pytest.mark.parametrize("make", ["closure", "no-weakref"])
async def test_item13_each_new_failing_hook_is_logged_even_at_a_reused_address(make: str) -> None:
    """20 failing hooks, added and dropped one after the other (a new one often lands at the
    address of the last), beside a hook that stays: each is logged, once."""

    def closure(n: int) -> Callable[[JobEvent], None]:
        def hook(event: JobEvent) -> None:
            raise RuntimeError(f"closure hook {n}")

        return hook

    events: list[JobEvent] = []
    handler = _Messages()
    logger = logging.getLogger("werkpool")
    logger.addHandler(handler)
    logger.propagate = False  # pytest's own capture would keep the records
    try:
        # A hook that stays: the pool keeps its hooks' state (a pool without hooks drops it).
        async with WorkerPool(size=1, hooks=[events.append]) as pool:
            for n in range(20):
                hook = closure(n) if make == "closure" else _SlotsHook(n)
                pool.add_hook(hook)
                await pool.call(anyio.sleep, 0)
                await pool.call(anyio.sleep, 0)  # raises again: not logged again
                pool.remove_hook(hook)
                del hook
                gc.collect()
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    kind = "closure" if make == "closure" else "slots"
    assert handler.errors == [f"{kind} hook {n}" for n in range(20)]


# -- item 14: a call() job's SystemExit, once ----------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_item14_a_call_jobs_system_exit_leaves_the_block_once(backend: str) -> None:
    """trio gave a BaseExceptionGroup holding the same SystemExit twice (the call's and the
    pool's); asyncio gives the SystemExit itself: so do both now."""
    raised = SystemExit(3)
    record: dict[str, Any] = {}

    async def exits() -> None:
        await anyio.sleep(1)
        raise raised

    async def main() -> str:
        try:
            async with WorkerPool(size=2) as pool:
                await pool.call(exits)
        except BaseException as exc:
            record["caught"] = exc
        return "main returned"

    outcome = _run_own_loop(backend, main)
    if backend == "trio":
        assert outcome == "main returned"
    else:
        assert outcome == "main returned" or outcome is raised
    assert record["caught"] is raised
    assert raised.code == 3
