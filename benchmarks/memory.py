"""Scenario 3, memory: what a queued job costs, and whether ``map`` stays bounded.

* **Bytes per pending job**: 10^6 jobs handed to ``pool.run()`` behind ``size=10`` (ten run and
  block, the rest wait), measured with :mod:`tracemalloc` as the growth of traced memory divided
  by the number of jobs. The caller's list of futures is allocated before the measurement, and
  every job gets the same argument, so what is counted is what the pool keeps per job: its
  record, its future, the argument tuple and its queue slot. The same is measured for the
  hand-written ``asyncio.Queue`` + ``Future`` floor and for ``asyncio.Semaphore`` + gather (a
  task per job), at 10^5 jobs (a per-job figure; a million tasks would only take longer).
* **map peak**: ``pool.map`` over ``range(N)`` for N = 10^4, 10^5 and 10^6, with ``size=10``,
  consuming each result as it comes; the peak of traced memory above the start, which must not
  grow with N (the map reads its input lazily, at most ``2 * size`` items ahead).
"""

from __future__ import annotations

import gc
import sys
import tracemalloc
from typing import Any

import anyio
import anyio.lowlevel

from werkpool import WorkerPool

from . import baselines
from .common import ASYNCIO, Config, ScenarioResult, Target, fmt_bytes, md_table

SIZE = 10
#: Budget per pending run() job (the issue's target).
PENDING_BUDGET = 500
#: map's peak may differ this much between the shortest and longest input and still count as
#: "independent of the input length": allocator noise, not growth per item.
MAP_TOLERANCE = 1.10


async def _settle() -> None:
    for _ in range(3):
        await anyio.lowlevel.checkpoint()


async def _block(event: anyio.Event) -> None:
    await event.wait()


async def werkpool_pending_bytes(n: int) -> float:
    """Bytes of traced memory per job queued with ``run()`` behind ``size=10``."""
    release = anyio.Event()
    futures: list[Any] = [None] * n
    async with WorkerPool(size=SIZE) as pool:
        await _settle()
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for i in range(n):
                futures[i] = pool.run(_block, release)
            await _settle()  # the first ten have started and block; the rest wait
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        await pool.kill()
    return (after - before) / n


async def _count(i: int) -> int:
    return i


async def map_peak(n: int) -> tuple[int, int]:
    """(peak traced bytes above the start, items seen) for ``map`` over ``range(n)``."""
    async with WorkerPool(size=SIZE) as pool:
        gc.collect()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            seen = 0
            async for _ in pool.map(_count, range(n)):
                seen += 1
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    return peak - base, seen


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(cfg: Config) -> ScenarioResult:
    n = cfg.memory_jobs
    nb = cfg.memory_baseline_jobs
    rows: list[list[str]] = []
    targets: list[Target] = []
    pending: dict[str, Any] = {}
    for backend in cfg.backends:
        if backend.uvloop:
            continue  # the same Python objects as on asyncio
        _log(f"  memory: {n:,} pending run() jobs on {backend.label}")
        per_job = backend.run(lambda: werkpool_pending_bytes(n))
        pending[f"werkpool run() / {backend.label}"] = per_job
        rows.append([f"**werkpool** `run()`, {backend.label}", f"{n:,}", fmt_bytes(per_job)])
        targets.append(
            Target(
                "memory",
                f"bytes per pending run() job, {backend.label}",
                f"<= {PENDING_BUDGET} B",
                f"{per_job:.0f} B",
                per_job <= PENDING_BUDGET,
            )
        )
    _log(f"  memory: {nb:,} pending jobs in the baselines")
    for label, func in (
        (
            "floor: `asyncio.Queue` + a Future per job, asyncio",
            baselines.queue_future_pending_bytes,
        ),
        (
            "`asyncio.Semaphore` + gather (a task per job), asyncio",
            baselines.semaphore_pending_bytes,
        ),
    ):
        per_job = ASYNCIO.run(lambda f=func: f(nb, SIZE))  # type: ignore[misc]
        pending[label] = per_job
        rows.append([label, f"{nb:,}", fmt_bytes(per_job)])
    pending_md = md_table(["pending jobs held by", "jobs", "traced bytes per job"], rows)

    peaks: dict[str, dict[int, int]] = {}
    map_rows: list[list[str]] = []
    for backend in cfg.backends:
        if backend.uvloop:
            continue
        peaks[backend.label] = {}
        for length in cfg.map_lengths:
            _log(f"  memory: map over {length:,} items on {backend.label}")
            peak, seen = backend.run(lambda m=length: map_peak(m))  # type: ignore[misc]
            if seen != length:
                raise AssertionError(f"map yielded {seen} of {length} items")
            peaks[backend.label][length] = peak
        first, last = cfg.map_lengths[0], cfg.map_lengths[-1]
        growth = peaks[backend.label][last] / peaks[backend.label][first]
        map_rows.append(
            [
                backend.label,
                *(fmt_bytes(peaks[backend.label][m]) for m in cfg.map_lengths),
                f"{growth:.2f}x",
            ]
        )
        targets.append(
            Target(
                "memory",
                f"map peak, {last:,} vs {first:,} items, {backend.label}",
                f"independent of the input length (<= {MAP_TOLERANCE:.2f}x)",
                f"{growth:.2f}x",
                growth <= MAP_TOLERANCE,
            )
        )
    map_md = md_table(
        [
            "backend",
            *(f"peak, {m:,} items" for m in cfg.map_lengths),
            f"{cfg.map_lengths[-1]:,} ÷ {cfg.map_lengths[0]:,}",
        ],
        map_rows,
    )
    markdown = (
        f"Traced memory ({'`tracemalloc`'}) per job waiting behind `size={SIZE}`:\n\n"
        f"{pending_md}\n\n"
        f"Peak traced memory of `pool.map(f, range(N))` with `size={SIZE}`, results consumed "
        f"as they come:\n\n{map_md}"
    )
    return ScenarioResult(
        "memory",
        markdown,
        targets,
        {
            "size": SIZE,
            "pending_jobs": n,
            "baseline_jobs": nb,
            "bytes_per_pending_job": pending,
            "map_peak_bytes": peaks,
        },
    )
