"""Scenario 1, overhead: many tiny jobs through werkpool, side by side with the floors.

Every contender runs ``job(i)`` for 100,000 values of ``i`` with at most 100 at once, on a fresh
event loop per measurement. Each round runs every contender once, in a shuffled order, so the
floors and werkpool see the same machine; the report gives the ratio of the medians over rounds
(and the range of the per-round ratios, as a noise gauge), never an absolute time.
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import io
import pstats
import random
import sys
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio

from werkpool import WorkerPool

from . import baselines
from .common import (
    ASYNCIO,
    Backend,
    Config,
    ScenarioResult,
    Target,
    fmt_ratio,
    installed,
    md_table,
    median,
    timed_run,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    Job = Callable[[int], Awaitable[int]]

SIZE = 100


# -- the jobs -------------------------------------------------------------------------------------


async def trivial(i: int) -> int:
    return i


async def yield_once(i: int) -> int:
    await anyio.sleep(0)  # noqa: ASYNC115 - the issue's job, as users write it
    return i


JOBS: dict[str, Job] = {"trivial": trivial, "yield once": yield_once}


# -- werkpool's three ways in ---------------------------------------------------------------------


def _on_asyncio() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


async def werkpool_run(job: Job, n: int, size: int) -> int:
    """``pool.run()`` per item, then ``asyncio.gather`` (on trio: await each future in turn)."""
    async with WorkerPool(size=size) as pool:
        futures = [pool.run(job, i) for i in range(n)]
        if _on_asyncio():
            results = await asyncio.gather(*futures)
        else:
            results = [await future for future in futures]
    return len(results)


async def werkpool_map(job: Job, n: int, size: int) -> int:
    """``async for`` over ``pool.map(job, range(n))``, collecting the results."""
    async with WorkerPool(size=size) as pool:
        results = [result async for result in pool.map(job, range(n))]
    return len(results)


#: A rate far above what one loop can start: it never binds, so what is timed is the rate
#: limit's bookkeeping per start (its GCRA schedule and settlement record, #21/#24).
HUGE_RATE = 1e9


async def werkpool_map_rate(job: Job, n: int, size: int) -> int:
    """``werkpool_map`` with ``rate=``: the rate path (never binding, see :data:`HUGE_RATE`)."""
    async with WorkerPool(size=size, rate=HUGE_RATE) as pool:
        results = [result async for result in pool.map(job, range(n))]
    return len(results)


async def werkpool_start_soon(job: Job, n: int, size: int) -> int:
    """``pool.start_soon()`` per item; the pool's exit waits for them all."""
    async with WorkerPool(size=size) as pool:
        for i in range(n):
            pool.start_soon(job, i)
    return pool.statistics().completed


# -- the field ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Contender:
    key: str
    label: str
    func: Callable[[Job, int, int], Awaitable[int]]
    asyncio_only: bool = False
    needs: str | None = None  # a module that must be installed


CONTENDERS = (
    Contender(
        "queue_floor",
        "floor: 100 workers on an `asyncio.Queue`",
        baselines.asyncio_queue_floor,
        asyncio_only=True,
    ),
    Contender(
        "future_floor",
        "floor: 100 workers completing a Future per job + gather",
        baselines.asyncio_future_floor,
        asyncio_only=True,
    ),
    Contender(
        "stream_floor", "floor: 100 workers on an AnyIO memory stream", baselines.stream_floor
    ),
    Contender("gather", "`asyncio.gather`, no limit", baselines.bare_gather, asyncio_only=True),
    Contender(
        "semaphore",
        "`asyncio.Semaphore(100)` + gather",
        baselines.semaphore_gather,
        asyncio_only=True,
    ),
    Contender(
        "aiometer_amap",
        "`aiometer.amap(max_at_once=100)`",
        baselines.aiometer_amap,
        needs="aiometer",
    ),
    Contender(
        "aiometer_each",
        "`aiometer.run_on_each(max_at_once=100)`",
        baselines.aiometer_run_on_each,
        needs="aiometer",
    ),
    Contender("werkpool_run", "**werkpool** `run()` + gather", werkpool_run),
    Contender("werkpool_map", "**werkpool** `map()`", werkpool_map),
    Contender(
        "werkpool_map_rate", "**werkpool** `map()`, `rate=1e9` (never binding)", werkpool_map_rate
    ),
    Contender("werkpool_start_soon", "**werkpool** `start_soon()`", werkpool_start_soon),
)
BY_KEY = {c.key: c for c in CONTENDERS}

#: The aiometer call that does the same work as each werkpool entry point.
AIOMETER_TWIN = {
    "werkpool_run": "aiometer_amap",
    "werkpool_map": "aiometer_amap",
    "werkpool_start_soon": "aiometer_each",
}
AIOMETER_NAMES = {"aiometer_amap": "amap", "aiometer_each": "run_on_each"}


def contenders_for(backend: Backend) -> list[Contender]:
    return [
        c
        for c in CONTENDERS
        if (backend.is_asyncio or not c.asyncio_only) and (c.needs is None or installed(c.needs))
    ]


def floor_key(backend: Backend) -> str:
    """The floor that map() and start_soon() answer to on this backend."""
    return "queue_floor" if backend.is_asyncio else "stream_floor"


# -- measuring ------------------------------------------------------------------------------------


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def measure_block(
    backend: Backend, job: Job, n: int, repeats: int, rng: random.Random
) -> dict[str, list[float]]:
    """Time every contender *repeats* times on *backend*, interleaved in shuffled rounds."""
    contenders = contenders_for(backend)
    for c in contenders:  # warm up imports, caches and code paths at a tenth of the size
        timed_run(backend, partial(c.func, job, max(n // 10, 1), SIZE))
    times: dict[str, list[float]] = {c.key: [] for c in contenders}
    for _ in range(repeats):
        order = list(contenders)
        rng.shuffle(order)
        for c in order:
            seconds, count = timed_run(backend, partial(c.func, job, n, SIZE))
            if count != n:
                raise AssertionError(f"{c.key} on {backend.label} finished {count} of {n} jobs")
            times[c.key].append(seconds)
    return times


def _ratios(times: dict[str, list[float]], key: str, base: str) -> tuple[float, float, float]:
    """(ratio of medians, lowest and highest per-round ratio) of *key* over *base*."""
    per_round = [a / b for a, b in zip(times[key], times[base], strict=True)]
    return median(times[key]) / median(times[base]), min(per_round), max(per_round)


def run(cfg: Config) -> ScenarioResult:
    n = cfg.overhead_jobs
    rng = random.Random(cfg.seed)
    raw: dict[str, dict[str, dict[str, list[float]]]] = {}
    for kind, job in JOBS.items():
        raw[kind] = {}
        for backend in cfg.backends:
            _log(f"  overhead: {kind} jobs on {backend.label} ({cfg.repeats} rounds of {n:,})")
            raw[kind][backend.label] = measure_block(backend, job, n, cfg.repeats, rng)

    sections: list[str] = []
    targets: list[Target] = []
    summary: dict[str, Any] = {}
    for kind in JOBS:
        rows: list[list[str]] = []
        summary[kind] = {}
        for backend in cfg.backends:
            times = raw[kind][backend.label]
            floor = floor_key(backend)
            block: dict[str, Any] = {}
            for c in contenders_for(backend):
                ratio, lo, hi = _ratios(times, c.key, floor)
                entry: dict[str, float] = {
                    "median_s": median(times[c.key]),
                    "x_floor": ratio,
                    "x_floor_min": lo,
                    "x_floor_max": hi,
                }
                future_floor = ""
                if backend.is_asyncio and c.key.startswith("werkpool_run"):
                    entry["x_future_floor"], flo, fhi = _ratios(times, c.key, "future_floor")
                    future_floor = f"{fmt_ratio(entry['x_future_floor'])} ({flo:.2f}-{fhi:.2f})"
                speedup = ""
                twin = AIOMETER_TWIN.get(c.key)
                if twin is not None and twin in times:
                    entry["aiometer_speedup"] = median(times[twin]) / median(times[c.key])
                    speedup = (
                        f"{entry['aiometer_speedup']:.1f}x faster than `{AIOMETER_NAMES[twin]}`"
                    )
                block[c.key] = entry
                label = c.label
                if c.key == "werkpool_run" and not backend.is_asyncio:
                    label = "**werkpool** `run()` + await each"
                rows.append(
                    [
                        backend.label,
                        label,
                        f"{fmt_ratio(ratio)} ({lo:.2f}-{hi:.2f})",
                        future_floor,
                        speedup,
                    ]
                )
            summary[kind][backend.label] = block
            targets += _targets(kind, backend, block)
        sections.append(
            f"**{kind} jobs** (`{_job_source(kind)}`), {n:,} jobs, size 100, "
            f"median of {cfg.repeats} rounds\n\n"
            + md_table(
                [
                    "backend",
                    "implementation",
                    "time ÷ floor (per-round range)",
                    "time ÷ Future floor",
                    "vs aiometer",
                ],
                rows,
            )
        )
    intro = (
        "Time of each implementation divided by the floor's, on the same backend: the "
        "`asyncio.Queue` floor on asyncio and uvloop, the AnyIO memory-stream floor on trio. "
        "`run()` is also divided by the floor that completes one `asyncio.Future` per job "
        "and gathers them the same way."
    )
    markdown = "\n\n".join([intro, *sections])
    return ScenarioResult(
        "overhead",
        markdown,
        targets,
        {"jobs": n, "size": SIZE, "rounds": cfg.repeats, "seconds": raw, "summary": summary},
    )


def _job_source(kind: str) -> str:
    if kind == "trivial":
        return "async def f(i): return i"
    return "async def f(i): await anyio.sleep(0); return i"


def _targets(kind: str, backend: Backend, block: dict[str, Any]) -> list[Target]:
    floor = "asyncio.Queue floor" if backend.is_asyncio else "memory-stream floor"
    out: list[Target] = []
    for key, name in (("werkpool_map", "map"), ("werkpool_start_soon", "start_soon")):
        ratio = block[key]["x_floor"]
        out.append(
            Target(
                "overhead",
                f"{name}, {kind} jobs, {backend.label}",
                f"<= 2x the {floor}",
                fmt_ratio(ratio),
                ratio <= 2.0,
            )
        )
        speedup = block[key].get("aiometer_speedup")
        if speedup is not None:
            out.append(
                Target(
                    "overhead",
                    f"{name} vs aiometer, {kind} jobs, {backend.label}",
                    ">= 4x faster than aiometer",
                    f"{speedup:.1f}x faster",
                    speedup >= 4.0,
                )
            )
    if backend.is_asyncio:
        ratio = block["werkpool_run"]["x_future_floor"]
        out.append(
            Target(
                "overhead",
                f"run() + gather, {kind} jobs, {backend.label}",
                "<= 1.5x the Future-per-job floor",
                fmt_ratio(ratio),
                ratio <= 1.5,
            )
        )
    return out


# -- profiling ------------------------------------------------------------------------------------


def gc_share(
    func: Callable[[Job, int, int], Awaitable[int]],
    floor: Contender,
    job: Job,
    n: int,
    backend: Backend,
    repeats: int = 3,
) -> str:
    """Time *func* against *floor* with the cyclic GC on and off: how much of the gap it is."""
    lines = []
    for label, enabled in (("on", True), ("off", False)):
        times: dict[str, list[float]] = {"floor": [], "werkpool": []}
        if not enabled:
            gc.disable()
        try:
            for _ in range(repeats):
                times["floor"].append(timed_run(backend, partial(floor.func, job, n, SIZE))[0])
                times["werkpool"].append(timed_run(backend, partial(func, job, n, SIZE))[0])
        finally:
            gc.enable()
        base, ours = median(times["floor"]), median(times["werkpool"])
        lines.append(
            f"  GC {label:3}: floor {base * 1e3:6.1f} ms, werkpool {ours * 1e3:6.1f} ms "
            f"({ours / base:.2f}x), medians of {repeats}"
        )
    return "\n".join(lines)


def profile(which: str, kind: str, n: int, top: int = 30, backend: Backend = ASYNCIO) -> str:
    """cProfile one werkpool entry point (``run``, ``map`` or ``start_soon``); top by tottime.

    Before the profile, the same entry point is timed against its floor with the cyclic garbage
    collector on and off, to show how much of the gap is collection work (many queued jobs).
    """
    func = BY_KEY[f"werkpool_{which}"].func
    job = JOBS[kind]
    timed_run(backend, partial(func, job, max(n // 10, 1), SIZE))  # warm up
    floor = BY_KEY["future_floor" if which == "run" else floor_key(backend)]
    timed_run(backend, partial(floor.func, job, max(n // 10, 1), SIZE))
    shares = gc_share(func, floor, job, n, backend)
    profiler = cProfile.Profile()
    profiler.enable()
    seconds, _ = timed_run(backend, partial(func, job, n, SIZE))
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    header = (
        f"werkpool {which}() with {n:,} {kind} jobs on {backend.label}, against "
        f"{floor.label} (no profiler):\n{shares}\n\n"
        f"cProfile of werkpool {which}() ({seconds:.2f} s under the profiler), "
        f"top {top} by own time\n"
    )
    return header + out.getvalue()
