"""Scenario 4, idle cost: a pool waiting for its next rate slot must sleep, not poll.

A pool with ``rate=1`` and 10 queued instant jobs is watched for 5 s of wall time: it starts one
job a second and should otherwise sleep. The process CPU time over that span (``process_time``)
divided by the wall time is the share of one core it used; an event loop that only sleeps for the
same span is the floor.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import anyio

from werkpool import WorkerPool

from .common import Config, ScenarioResult, Target, md_table

JOBS = 10
BUDGET = 0.01  # the target: under 1 % of one core


async def _instant() -> None:
    pass


async def idle_pool(seconds: float) -> dict[str, float]:
    async with WorkerPool(rate=1) as pool:
        for _ in range(JOBS):
            pool.start_soon(_instant)
        await anyio.sleep(0.05)  # the first job has run; the pool now waits for the next slot
        cpu, wall = time.process_time(), time.perf_counter()
        await anyio.sleep(seconds)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        started = pool.statistics().attempts
        await pool.kill()
    return {"cpu_s": cpu, "wall_s": wall, "share": cpu / wall, "started": started}


async def idle_loop(seconds: float) -> dict[str, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    await anyio.sleep(seconds)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {"cpu_s": cpu, "wall_s": wall, "share": cpu / wall, "started": 0}


def run(cfg: Config) -> ScenarioResult:
    seconds = cfg.idle_seconds
    rows: list[list[str]] = []
    targets: list[Target] = []
    data: dict[str, Any] = {}
    for backend in cfg.backends:
        print(f"  idle: {seconds:g} s on {backend.label}", file=sys.stderr, flush=True)
        pool = backend.run(lambda: idle_pool(seconds))
        loop = backend.run(lambda: idle_loop(seconds))
        data[backend.label] = {"pool": pool, "sleeping loop": loop}
        rows.append(
            [
                backend.label,
                f"{pool['share'] * 100:.3f} %",
                f"{loop['share'] * 100:.3f} %",
                f"{int(pool['started'])}",
            ]
        )
        targets.append(
            Target(
                "idle",
                f"CPU of an idle rate=1 pool, {backend.label}",
                f"< {BUDGET * 100:g} % of one core",
                f"{pool['share'] * 100:.3f} %",
                pool["share"] < BUDGET,
            )
        )
    markdown = (
        f"Process CPU time ÷ wall time over {seconds:g} s, pool `WorkerPool(rate=1)` with "
        f"{JOBS} queued instant jobs, beside an event loop that only sleeps:\n\n"
        + md_table(
            ["backend", "pool: share of one core", "sleeping loop", "jobs started by then"], rows
        )
    )
    return ScenarioResult("idle", markdown, targets, {"seconds": seconds, "results": data})
