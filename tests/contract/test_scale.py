"""Contract R45-R47: scale, cost per job, and backend parity.

The 10^6 versions are marked ``slow`` (``nox -s tests_slow``): CI runs them on one interpreter
(the newest), the 10^5 ones on all. No test here measures wall time (a project rule): cost is
counted as werkpool's own function calls, which is deterministic, and memory with
:mod:`tracemalloc`.
"""

from __future__ import annotations

import ast
import gc
import importlib.metadata
import inspect
import random
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.lowlevel import checkpoint
from support import (
    Boom,
    assert_idle,
    borrowed,
    count_werkpool_calls,
    stats_add_up,
)

import werkpool
from werkpool import WorkerPool

ROOT = Path(__file__).resolve().parents[2]
#: R45's budget per pending job: "≲ 1 KB".
BYTES_PER_PENDING_JOB = 1000


async def _settle(pool: WorkerPool | None = None, running: int = 0) -> None:
    """Let the event loop run a little, and until *running* attempts execute in *pool*."""
    for _ in range(5):
        await checkpoint()
    for _ in range(1000):
        if pool is None or pool.statistics().running >= running:
            return
        await checkpoint()
    raise AssertionError(f"{pool!r} did not start {running} jobs")


async def _block(release: anyio.Event) -> None:
    await release.wait()


# -- R45: many pending jobs ----------------------------------------------------------------------


async def _pending_jobs(n: int) -> tuple[float, int, int, int]:
    """Queue *n* jobs behind size=10.

    Return (bytes per pending job, tasks added, werkpool calls for 1,000 run() calls behind a
    short queue, and for 1,000 behind *n* pending jobs).
    """
    release = anyio.Event()
    futures: list[Any] = [None] * n  # the caller's list, allocated before the measurement
    async with WorkerPool(size=10) as pool:
        await _settle()
        tasks_before = len(anyio.get_running_tasks())
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for i in range(n):
                futures[i] = pool.run(_block, release)
            await _settle(pool, 10)  # ten start and block; the rest wait
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        tasks_added = len(anyio.get_running_tasks()) - tasks_before
        assert pool.statistics().queued == n - 10
        # O(1) per submission: 1,000 more run() calls behind n pending jobs cost what they
        # cost behind a short queue (counted in calls into werkpool, not in seconds).
        with count_werkpool_calls() as deep:
            extra = [pool.run(_block, release) for _ in range(1000)]
        release.set()
    release = anyio.Event()
    async with WorkerPool(size=10) as pool:
        extra += [pool.run(_block, release) for _ in range(10)]
        await _settle(pool, 10)
        with count_werkpool_calls() as shallow:
            extra += [pool.run(_block, release) for _ in range(1000)]
        release.set()
    assert all(f.done() for f in [*futures, *extra])
    return (after - before) / n, tasks_added, shallow.python, deep.python


async def test_r45_pending_jobs_cost_bounded_memory_no_task_and_o1_submission() -> None:
    """10^5 jobs behind size=10: <= 1 KB each, no task per job, O(1) work per submission."""
    per_job, tasks_added, shallow_calls, deep_calls = await _pending_jobs(100_000)
    assert per_job <= BYTES_PER_PENDING_JOB, f"{per_job:.0f} bytes per pending job"
    assert tasks_added <= 10 + 2, f"{tasks_added} tasks for 100,000 pending jobs"
    assert deep_calls <= shallow_calls * 1.05 + 50, (shallow_calls, deep_calls)


@pytest.mark.slow
async def test_r45_a_million_pending_jobs() -> None:
    """The checklist's figure: 10^6 pending jobs, <= 1 KB each, no task per job."""
    per_job, tasks_added, _, _ = await _pending_jobs(1_000_000)
    assert per_job <= BYTES_PER_PENDING_JOB, f"{per_job:.0f} bytes per pending job"
    assert tasks_added <= 10 + 2


# -- R46: completion, cancellation and kill cost O(1) per job ------------------------------------


async def _job(i: int) -> int:
    if i & 1:
        raise Boom(i)
    return i


async def _half_failing(n: int) -> None:
    async with WorkerPool(size=100) as pool:
        futures = [pool.run(_job, i) for i in range(n)]
    for i, future in enumerate(futures):
        if i & 1:
            error = future.exception()
            assert type(error) is Boom
            assert error.args == (i,)
        else:
            assert future.result() == i
    s = pool.statistics()
    assert (s.submitted, s.completed, s.failed, s.cancelled) == (n, n // 2, n // 2, 0)
    assert_idle(pool)


async def test_r46_hundred_thousand_jobs_half_failing_through_run() -> None:
    """10^5 trivial jobs through run() with size=100, half failing: every outcome right."""
    await _half_failing(100_000)


@pytest.mark.slow
async def test_r46_a_million_jobs_half_failing_through_run() -> None:
    """The issue's figure: 10^6 trivial jobs, size=100, half failing."""
    await _half_failing(1_000_000)


async def _cancel_queued_at_random(n: int, seed: int) -> None:
    rng = random.Random(seed)
    started: set[int] = set()
    release = anyio.Event()

    async def job(i: int) -> int:
        started.add(i)
        await release.wait()
        return i

    async with WorkerPool(size=10) as pool:
        futures = [pool.run(job, i) for i in range(n)]
        await _settle(pool, 10)
        assert started == set(range(10))
        victims = rng.sample(range(10, n), n // 2)
        for i in victims:
            assert futures[i].cancel() is True
            assert futures[i].cancelled()
        assert pool.statistics().queued == n - 10 - len(victims)
        assert borrowed(pool) == 10
        assert stats_add_up(pool)
        release.set()
    assert started.isdisjoint(victims)
    assert len(started) == n - len(victims)
    kept = set(range(n)) - set(victims)
    assert all(futures[i].result() == i for i in kept)
    assert borrowed(pool) == 0
    assert_idle(pool)


async def test_r46_hundred_thousand_queued_jobs_cancelled_at_random() -> None:
    """Half of 10^5 queued jobs cancelled in random order: none starts, no slot leaks."""
    await _cancel_queued_at_random(100_000, seed=46)


@pytest.mark.slow
async def test_r46_a_million_queued_jobs_cancelled_at_random() -> None:
    await _cancel_queued_at_random(1_000_000, seed=47)


async def _mixed_workload(n: int, seed: int) -> None:
    """n jobs finishing out of order, a fifth cancelled (queued or running), then kill()."""
    rng = random.Random(seed)
    durations = [rng.choice([0.0, 0.001, 0.005, 0.02]) for _ in range(n)]

    async def job(i: int) -> int:
        await anyio.sleep(durations[i])
        if i % 7 == 0:
            raise Boom(i)
        return i

    async with WorkerPool(size=20) as pool:
        futures = [pool.run(job, i) for i in range(n)]
        for i in rng.sample(range(n), n // 5):
            futures[i].cancel()
        await anyio.sleep(sum(durations) / 20 / 2)  # about half way through
        tail = [pool.run(job, i) for i in range(n // 10)]
        await pool.kill()
    for future in [*futures, *tail]:
        assert future.done()
        if not future.cancelled():
            future.exception()
    assert stats_add_up(pool)


@pytest.mark.parametrize("seed", [1, 2])
async def test_r46_cost_per_job_is_constant_with_no_linear_scans(seed: int) -> None:
    """Completion, out-of-order completion, cancellation and kill(): O(1) per job.

    Counted as calls into werkpool's code: 8,000 jobs must cost no more per job than 2,000
    (a linear scan or a wake-everyone per completion would grow), and werkpool never calls
    ``list.remove``/``index``/``insert``, the O(n) operations that make a queue quadratic.
    """
    with count_werkpool_calls() as small:
        await _mixed_workload(2000, seed)
    with count_werkpool_calls() as large:
        await _mixed_workload(8000, seed)
    per_job_small = small.python / 2000
    per_job_large = large.python / 8000
    assert per_job_large <= per_job_small * 1.15, (per_job_small, per_job_large)
    linear = {
        name: count
        for name, count in {**small.c_calls, **large.c_calls}.items()
        if name.split(".")[-1] in ("remove", "index", "insert")
    }
    assert linear == {}


# -- R47: backend parity -------------------------------------------------------------------------

#: Tests that are about one backend's own feature, run on that backend only.
ONE_BACKEND = {
    "test_r10_rate_1e_minus_9_spaces_starts_31_years_apart": "trio",
    "test_r19_wait_for_timeout_cancels_a_running_job_and_frees_its_slot": "asyncio",
    "test_r19_wait_for_timeout_cancels_a_queued_job": "asyncio",
    "test_r19_asyncio_timeout_cancels_the_job": "asyncio",
    "test_r19_cancelled_awaiting_task_cancels_the_job": "asyncio",
    "test_r19_shield_keeps_the_job_running": "asyncio",
    "test_r19_cancelled_gather_cancels_its_jobs": "asyncio",
    "test_r22_trio_handle_has_wait_and_status": "trio",
    "test_r24_job_raising_cancelled_error_itself_affects_only_its_future": "asyncio",
    "test_r38_an_asyncio_future_is_rejected_too": "asyncio",
    # A job cancelling its own task, and futures cancelled from another thread: asyncio only
    # (on trio a job cannot cancel its worker's task, and no future is touched off-thread).
    "test_r51_a_job_cancelling_its_own_task_does_not_kill_its_worker": "asyncio",
    "test_r51_a_job_whose_self_cancel_is_pending_when_it_returns": "asyncio",
    "test_r54_cancelling_a_future_from_another_thread_goes_through_the_loop": "asyncio",
}


def test_r47_every_contract_test_runs_on_both_backends(request: pytest.FixtureRequest) -> None:
    """Each async contract test (and each that runs its own loop) is collected for both.

    Sync tests without a backend use no event loop (constructor checks, sans-I/O arithmetic).
    """
    here = Path(__file__).resolve().parent
    # The real-clock rate tests also run on uvloop (tests/contract/test_real_clock_rate.py).
    more_loops = "test_real_clock_rate.py"
    name_more_loops: set[str] = set()
    backends: dict[str, set[str]] = {}
    for item in request.session.items:
        path = Path(str(getattr(item, "path", ""))).resolve()
        if path.parent != here or not isinstance(item, pytest.Function):
            continue
        params = getattr(item, "callspec", None)
        params = params.params if params is not None else {}
        backend = params.get("anyio_backend", params.get("backend"))
        name = item.originalname
        if inspect.iscoroutinefunction(item.obj):
            assert backend is not None, name
        if backend is not None:
            backends.setdefault(name, set()).add(backend)
            if path.name == more_loops:
                name_more_loops.add(name)
    assert backends
    for name, seen in backends.items():
        expected = {ONE_BACKEND[name]} if name in ONE_BACKEND else {"asyncio", "trio"}
        if name in name_more_loops:  # asyncio and trio, and uvloop beside them
            assert seen >= expected, (name, seen)
        else:
            assert seen == expected, (name, seen)


def test_r47_anyio_pin_and_python_versions() -> None:
    """anyio >= 4.16 is required and installed: since 0.4 werkpool changes ``total_tokens`` at run
    time (``pool.size = n``), which needs 4.16; nox tests Python 3.10 to 3.13."""
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert '"anyio>=4.16"' in pyproject
    installed = tuple(int(x) for x in importlib.metadata.version("anyio").split(".")[:3])
    assert installed >= (4, 16)
    changes = []
    for source in Path(werkpool.__file__).parent.rglob("*.py"):
        tree = ast.parse(source.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
                targets = [node.target]
            changes += [
                source.name
                for target in targets
                if isinstance(target, ast.Attribute) and target.attr == "total_tokens"
            ]
    # Only the pool's thread limiter changes it, following the size at run time (so the 4.16
    # pin is needed); the size itself is the number of workers (see _runtime/_control.py).
    assert sorted(changes) == ["_threads.py"]
    noxfile = ast.parse((ROOT / "noxfile.py").read_text(encoding="utf-8"))
    pythons = next(
        ast.literal_eval(node.value)
        for node in ast.walk(noxfile)
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "PYTHONS" for t in node.targets)
    )
    assert pythons == ["3.10", "3.11", "3.12", "3.13"]
    assert sys.version_info >= (3, 10)
