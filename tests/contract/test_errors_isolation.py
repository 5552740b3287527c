"""Contract R24-R29: errors stay with their job; the pool fails loudly, and cleanly."""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import sys
import traceback
import warnings
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
    asyncio_only,
    echo,
    fail_after_sleep,
    internal_tasks,
    run_virtual,
    sleep_echo,
    sleep_echo_1,
    stats_add_up,
)

import werkpool._core._rate_limit
import werkpool._core._scheduler
import werkpool._runtime._crew
from werkpool import PoolClosedError, WorkerPool

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup, ExceptionGroup

NOISE = (
    "exception was never retrieved",
    "Task was destroyed but it is pending",
    "was never awaited",
)


class Crash(Exception):
    """An error raised inside werkpool's own machinery by fault injection."""


# -- R24: a failing job affects only its own future ------------------------------------------------


async def test_r24_thousand_jobs_half_failing_only_fail_themselves() -> None:
    """1,000 jobs, a random half of them failing: each future has exactly its own outcome."""
    rng = random.Random(24)
    failing = set(rng.sample(range(1000), 500))

    async def job(i: int) -> int:
        await anyio.sleep(rng.choice([0.0, 0.001, 0.01]))
        if i in failing:
            raise Boom(i)
        return i

    async with WorkerPool(size=10) as pool:
        futures = [pool.run(job, i) for i in range(1000)]
        for i, future in enumerate(futures):
            if i in failing:
                with pytest.raises(Boom) as info:
                    await future
                assert info.value.args == (i,)
            else:
                assert await future == i
        assert await pool.run(echo, "still accepting") == "still accepting"
        assert await pool.call(echo, "and calls") == "and calls"
    s = pool.statistics()
    assert (s.completed, s.failed, s.cancelled) == (502, 500, 0)
    assert_idle(pool)


async def test_r24_failing_items_and_calls_do_not_disturb_their_siblings() -> None:
    """A failing map item (return_exceptions) and a failing call leave the others running."""

    async def odd_fails(x: int) -> int:
        await anyio.sleep(0.1 * (x % 3))
        if x % 2:
            raise Boom(x)
        return x

    async with WorkerPool(size=3) as pool:
        results = [r async for r in pool.map(odd_fails, range(20), return_exceptions=True)]
        assert [r if isinstance(r, int) else ("boom", r.args[0]) for r in results] == [
            x if x % 2 == 0 else ("boom", x) for x in range(20)
        ]
        sibling = pool.run(sleep_echo, 2.0, "sibling")
        with pytest.raises(Boom, match=r"^call$"):
            await pool.call(fail_after_sleep, 1.0, "call")
        assert not sibling.done()
        assert await sibling == "sibling"
    assert_idle(pool)


@asyncio_only
async def test_r24_job_raising_cancelled_error_itself_affects_only_its_future() -> None:
    """A job that raises CancelledError on its own (it awaited a cancelled future) ends alone.

    Common on asyncio: a job awaits a task or future that someone else cancelled. Its siblings
    must finish, and the pool must go on running new jobs.
    """

    async def awaits_a_cancelled_future() -> None:
        await anyio.sleep(0.5)
        doomed = asyncio.get_running_loop().create_future()
        doomed.cancel()
        await doomed  # raises CancelledError here, though nobody cancelled this job

    with anyio.fail_after(1000):  # virtual seconds: a wedged pool fails fast instead of hanging
        async with WorkerPool(size=2) as pool:
            victim = pool.run(awaits_a_cancelled_future)
            sibling = pool.run(sleep_echo, 2.0, "sibling")
            await anyio.sleep(1)
            assert victim.cancelled() or isinstance(victim.exception(), asyncio.CancelledError)
            assert not sibling.done()
            assert await sibling == "sibling"
            assert await pool.run(echo, "later") == "later"
    assert_idle(pool)


# -- R25: the original exception object ----------------------------------------------------------


async def _raises_tracked(errors: list[BaseException], cause: bool = False) -> None:
    await anyio.sleep(0.1)
    error = Boom("original")
    errors.append(error)
    if cause:
        raise error from KeyError("the cause")
    raise error


def _frames(error: BaseException) -> list[str]:
    return [frame.name for frame in traceback.extract_tb(error.__traceback__)]


async def test_r25_the_original_exception_object_with_its_traceback() -> None:
    """await, exception(), call() and map() all deliver the job's own exception object."""
    errors: list[BaseException] = []
    async with WorkerPool() as pool:
        future = pool.run(_raises_tracked, errors, True)
        with pytest.raises(Boom) as info:
            await future
        assert info.value is errors[-1]
        assert future.exception() is errors[-1]
        assert "_raises_tracked" in _frames(info.value)
        assert isinstance(info.value.__cause__, KeyError)

        with pytest.raises(Boom) as info:
            await pool.call(_raises_tracked, errors)
        assert info.value is errors[-1]
        assert "_raises_tracked" in _frames(info.value)

        with pytest.raises(Boom) as info:
            async for _ in pool.map(_raises_tracked, [errors]):
                pass
        assert info.value is errors[-1]


async def test_r25_exception_group_raised_by_a_job_is_delivered_unchanged() -> None:
    """An ExceptionGroup raised by the job itself reaches the caller as that same object."""
    group = ExceptionGroup("the job's own group", [Boom(1), KeyError(2)])

    async def raises_group() -> None:
        await checkpoint()
        raise group

    async with WorkerPool() as pool:
        with pytest.raises(ExceptionGroup) as info:
            await pool.run(raises_group)
        assert info.value is group
        with pytest.raises(ExceptionGroup) as info:
            await pool.call(raises_group)
        assert info.value is group
        results = [r async for r in pool.map(lambda _: raises_group(), [0], return_exceptions=True)]
        assert results == [group]


# -- R26: what leaves `async with` ---------------------------------------------------------------


async def test_r26_lone_body_error_is_reraised_unwrapped_with_cause_and_context() -> None:
    """The body's error leaves the block as the same object, its cause and context intact."""
    with pytest.raises(Boom) as info:
        async with WorkerPool(size=2) as pool:
            pool.run(anyio.sleep, 10)
            await anyio.sleep(1)
            try:
                raise KeyError("context")
            except KeyError:
                raise Boom("body") from ValueError("cause")
    assert not isinstance(info.value, BaseExceptionGroup)
    assert str(info.value) == "body"
    assert isinstance(info.value.__cause__, ValueError)
    assert isinstance(info.value.__context__, KeyError)


async def test_r26_lone_start_soon_failure_is_reraised_unwrapped_with_cause() -> None:
    """A failed start_soon() job's error leaves the block as it was raised, cause and all."""
    errors: list[BaseException] = []
    with pytest.raises(Boom) as info:
        async with WorkerPool() as pool:
            pool.start_soon(_raises_tracked, errors, True)
            await anyio.sleep(10)
    assert info.value is errors[0]
    assert isinstance(info.value.__cause__, KeyError)
    assert "_raises_tracked" in _frames(info.value)


async def test_r26_body_error_and_a_failed_job_stay_grouped() -> None:
    """Two genuine errors, the body's and a start_soon() job's, are both raised, in a group."""
    body_error = Boom("body")

    async def fails() -> None:
        await anyio.sleep(1)
        raise Boom("job")

    with pytest.raises(BaseExceptionGroup) as info:
        async with WorkerPool() as pool:
            pool.start_soon(fails)
            with anyio.CancelScope(shield=True):
                await anyio.sleep(2)  # the job fails meanwhile; the body fails on its own
            raise body_error
    assert body_error in info.value.exceptions
    assert sorted(str(e) for e in info.value.exceptions) == ["body", "job"]


async def test_r26_several_failed_jobs_stay_grouped() -> None:
    """Two start_soon() jobs failing together come out in one group holding both."""

    async def fails_regardless(message: str) -> None:
        with anyio.CancelScope(shield=True):
            await anyio.sleep(1.0)
        raise Boom(message)

    with pytest.raises(ExceptionGroup) as info:
        async with WorkerPool() as pool:
            pool.start_soon(fails_regardless, "a")
            pool.start_soon(fails_regardless, "b")
    assert sorted(str(e) for e in info.value.exceptions) == ["a", "b"]


# -- R27: KeyboardInterrupt and SystemExit -------------------------------------------------------


class _NoiseCatcher(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.name}: {record.getMessage()}")


def _run_and_collect_noise(backend: str, main: Any) -> tuple[Any, list[str]]:
    """Run *main* on its own virtual-time loop; return (its outcome, asyncio noise logged)."""
    catcher = _NoiseCatcher()
    logger = logging.getLogger("asyncio")
    logger.addHandler(catcher)
    try:
        try:
            outcome: Any = run_virtual(backend, main, seed=27)
        except BaseException as exc:
            outcome = exc
        gc.collect()
    finally:
        logger.removeHandler(catcher)
    noise = [m for m in catcher.messages if any(text in m for text in NOISE)]
    return outcome, noise


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("error", [KeyboardInterrupt, SystemExit])
def test_r27_base_exception_in_a_job_cancels_all_and_propagates(
    backend: str, error: type[BaseException]
) -> None:
    """A KeyboardInterrupt/SystemExit from a job resolves every future and leaves the block.

    On asyncio the event loop itself also re-raises it (asyncio does so for a BaseException in
    any task: werkpool cannot and should not prevent that); on trio the program goes on.
    """
    record: dict[str, Any] = {}

    async def fatal() -> None:
        await anyio.sleep(1)
        raise error("from a job")

    async def main() -> str:
        resolved: dict[int, int] = {}
        probe = Probe()
        futures: list[Any] = []
        try:
            async with WorkerPool(size=2) as pool:
                futures.append(pool.run(fatal))
                futures.append(pool.run(probe.job, "running", 100.0, False, 0.5))
                futures.extend(pool.run(probe.job, i, 100.0) for i in range(3))
                futures.append(pool.run(fail_after_sleep, 0.1, retries=3, backoff=lambda n: 50))
                for future in futures:
                    future.add_done_callback(
                        lambda f: resolved.__setitem__(id(f), resolved.get(id(f), 0) + 1)
                    )
                await anyio.sleep(50)
                record["body finished"] = True
        except error as exc:
            record["caught"] = (exc, anyio.current_time())
        for _ in range(3):
            await checkpoint()
        record["resolved"] = [resolved.get(id(f), 0) for f in futures]
        record["outcomes"] = [
            "cancelled" if f.cancelled() else type(f.exception()).__name__ for f in futures
        ]
        record["started"] = list(probe.order)
        record["running"] = probe.running
        record["internal tasks"] = internal_tasks()
        record["stats add up"] = stats_add_up(pool)
        return "main returned"

    outcome, noise = _run_and_collect_noise(backend, main)
    if backend == "trio":
        assert outcome == "main returned"
    else:
        assert outcome == "main returned" or isinstance(outcome, error)
    assert "body finished" not in record
    caught, when = record["caught"]
    assert str(caught) == "from a job"
    assert when == approx(1.5)  # at once, but for the running job's 0.5 s shielded cleanup
    assert record["resolved"] == [1] * 6
    assert record["outcomes"] == [error.__name__] + ["cancelled"] * 5
    assert record["started"] == ["running"]
    assert record["running"] == 0
    assert record["internal tasks"] == []
    assert record["stats add up"]
    assert noise == []


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("error", [KeyboardInterrupt, SystemExit])
def test_r27_base_exception_in_the_body_cancels_all_and_propagates(
    backend: str, error: type[BaseException]
) -> None:
    """A KeyboardInterrupt/SystemExit in the body cancels every job and leaves the block as is."""
    record: dict[str, Any] = {}
    raised = error("from the body")

    async def main() -> str:
        probe = Probe()
        try:
            async with WorkerPool(size=2) as pool:
                futures = [pool.run(probe.job, i, 100.0, False, 0.5) for i in range(5)]
                await anyio.sleep(1)
                raise raised
        except error as exc:
            record["caught"] = (exc, anyio.current_time())
        record["cancelled"] = [f.cancelled() for f in futures]
        record["running"] = probe.running
        record["internal tasks"] = internal_tasks()
        return "main returned"

    outcome, noise = _run_and_collect_noise(backend, main)
    assert outcome == "main returned"
    caught, when = record["caught"]
    assert caught is raised
    assert when == approx(1.5)  # promptly: only the jobs' 0.5 s shielded cleanup
    assert record["cancelled"] == [True] * 5
    assert record["running"] == 0
    assert record["internal tasks"] == []
    assert noise == []


# -- R28: a crash inside the pool's machinery ----------------------------------------------------


def _inject(monkeypatch: pytest.MonkeyPatch, where: str, crash: Crash) -> None:
    """Make one of werkpool's internal parts raise *crash*, while jobs still wait to start."""
    target: Any = {
        "scheduler": werkpool._core._scheduler.Scheduler,
        "rate-limit": werkpool._core._rate_limit.RateLimit,
        "worker-parking": werkpool._runtime._crew.Crew,
    }[where]
    name = {"scheduler": "poll", "rate-limit": "earliest", "worker-parking": "park"}[where]
    after = {"scheduler": 4, "rate-limit": 4, "worker-parking": 1}[where]
    original = getattr(target, name)
    calls = [0]

    def broken(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == after:
            raise crash
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, broken)


CRASH_SITES = ["scheduler", "rate-limit", "worker-parking"]


@pytest.mark.parametrize("where", CRASH_SITES)
async def test_r28_internal_crash_propagates_and_resolves_every_future(
    where: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The machinery's error leaves `async with` as it was; no future is left pending.

    Queued jobs fail with that error (as documented); running ones are cancelled. Nothing is
    only logged.
    """
    crash = Crash(f"broken {where}")
    _inject(monkeypatch, where, crash)
    probe = Probe()
    resolved: dict[int, int] = {}
    futures: list[Any] = []
    caplog.set_level(logging.DEBUG)
    with anyio.fail_after(1000), pytest.raises(Crash) as info:
        async with WorkerPool(size=2, rate=10) as pool:
            for i in range(8):
                future = pool.run(probe.job, i, 1.0)
                future.add_done_callback(
                    lambda f: resolved.__setitem__(id(f), resolved.get(id(f), 0) + 1)
                )
                futures.append(future)
            await anyio.sleep(100)
            pytest.fail("the body must be cancelled when the pool fails")  # pragma: no cover
    assert info.value is crash
    assert all(f.done() for f in futures)
    outcomes = [
        "cancelled" if f.cancelled() else "crash" if f.exception() is crash else f.result()
        for f in futures
    ]
    # Jobs that ended before the crash keep their result; the running ones are cancelled; the
    # waiting ones fail with the crash itself.
    assert set(outcomes) <= {"cancelled", "crash", *range(8)}
    assert "crash" in outcomes
    for _ in range(3):
        await checkpoint()
    assert [resolved.get(id(f), 0) for f in futures] == [1] * 8
    assert probe.running == 0
    assert internal_tasks() == []
    assert [r for r in caplog.records if r.name in ("werkpool", "asyncio")] == []
    with pytest.raises(PoolClosedError):
        pool.run(echo, "after the crash")


@pytest.mark.parametrize("where", CRASH_SITES)
async def test_r28_statistics_add_up_after_an_internal_crash(
    where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the crash every job is counted once: queued + ... + cancelled == submitted."""
    _inject(monkeypatch, where, Crash("broken"))
    with anyio.fail_after(1000), pytest.raises(Crash):
        async with WorkerPool(size=2, rate=10) as pool:
            futures = [pool.run(anyio.sleep, 1.0) for _ in range(8)]
            await anyio.sleep(100)
    for future in futures:
        if not future.cancelled():
            future.exception()
    s = pool.statistics()
    assert (s.queued, s.running, s.backoff) == (0, 0, 0), s
    assert stats_add_up(pool), s


async def test_r28_crash_of_an_unscoped_pool_is_raised_by_shutdown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pool used without `async with` fails its futures and raises the error from shutdown()."""
    crash = Crash("broken rate limit")
    _inject(monkeypatch, "rate-limit", crash)
    pool = WorkerPool(rate=1)
    futures = [pool.run(sleep_echo, 0.5, i) for i in range(6)]
    with anyio.fail_after(1000):
        await anyio.sleep(100)
        assert all(f.done() for f in futures)
        assert any(not f.cancelled() and f.exception() is crash for f in futures)
        for future in futures:
            assert future.cancelled() or future.exception() in (None, crash)
        with pytest.raises(Crash) as info:
            await pool.shutdown()
    assert info.value is crash
    with pytest.raises(PoolClosedError):
        pool.run(echo, 1)
    assert internal_tasks() == []


# -- R29: no warnings, no asyncio noise ----------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_r29_no_warnings_and_no_asyncio_noise_on_any_path(backend: str) -> None:
    """Success, failure, timeout, retries, cancels, a swallowed cancel, call, map, kill: silent."""

    async def main() -> str:
        cancelled_exc = anyio.get_cancelled_exc_class()

        async def swallows() -> str:
            try:
                await anyio.sleep(100)
            except cancelled_exc:
                return "swallowed"
            return "done"

        async with WorkerPool(size=3, rate=50) as pool:
            ok = pool.run(sleep_echo, 0.5, "ok")
            bad = pool.run(fail_after_sleep, 0.5, "bad")
            late = pool.run(anyio.sleep, 5, timeout=1)
            flaky = pool.run(fail_after_sleep, 0.1, retries=2, backoff=lambda n: 0.1)
            queued = pool.run(anyio.sleep, 1)
            queued.cancel()
            swallowing = pool.run(swallows)
            handle = pool.start_soon(sleep_echo, 0.1, "soon")
            with anyio.move_on_after(0.5):
                await pool.call(anyio.sleep, 10)
            async with pool.map(sleep_echo_1, range(10)) as results:
                async for value in results:
                    if value == 2:
                        break
            await anyio.sleep(0.5)
            swallowing.cancel()
            assert await ok == "ok"
            for future in (bad, late, flaky):
                assert future.exception() is not None or await future
            assert await handle == "soon"
            doomed = [pool.run(anyio.sleep, 100) for _ in range(5)]
            await anyio.sleep(0.1)
            await pool.kill()
            assert all(f.cancelled() for f in doomed)
        return "done"

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outcome, noise = _run_and_collect_noise(backend, main)
    assert outcome == "done"
    assert noise == []
    assert [str(w.message) for w in caught] == []


def test_r29_the_suite_runs_with_warnings_as_errors_and_the_noise_guard(
    request: pytest.FixtureRequest,
) -> None:
    """pytest runs with -W error, and the conftest guard checks asyncio's log for noise."""
    assert "error" in request.config.getini("filterwarnings")
    assert "no_asyncio_noise" in request.fixturenames  # autouse: guards every test
    conftests = [
        plugin
        for plugin in request.config.pluginmanager.get_plugins()
        if getattr(plugin, "__name__", "").endswith("conftest") and hasattr(plugin, "ASYNCIO_NOISE")
    ]
    assert conftests
    guarded = " | ".join(conftests[0].ASYNCIO_NOISE)
    for message in (
        "Task exception was never retrieved",
        "Future exception was never retrieved",
        "Task was destroyed but it is pending",
        "coroutine 'fetch' was never awaited",
    ):
        assert any(text in message for text in conftests[0].ASYNCIO_NOISE), (message, guarded)
