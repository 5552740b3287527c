"""Scenario 2, rate accuracy: does a rate limit hold where the jobs see it, and at what rate?

For each target rate (200, 1,000 and 10,000 per second) every contender gets ``rate * 3 s + 1``
instant jobs at once, so an exact limiter starts the last one 3 s after the first. Every time
judged is a **job start on the jobs' own clock**: ``anyio.current_time()`` read on the job's first
line. That is the only clock a user (or a server the job talks to) can observe; when a limiter
admitted the job by its own bookkeeping is not measured. werkpool runs at burst 1 (its default)
and at burst 2.

On the starts: the achieved rate, ``(n - 1) / (last - first)``; the fullest half-open window of
1 s and of 100 ms against the contract ``ceil(W * rate) + burst - 1``, and how many windows (one
per start, beginning at it) exceed it; the shortest gap between consecutive starts and the share
of gaps shorter than ``1 / rate`` (with burst 1, a limiter that keeps its promise has none); and
the lateness of the k-th start against the ideal schedule ``first + k / rate`` (the first start's
own delay after the hand-over is recorded apart).
"""

from __future__ import annotations

import itertools
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
    CLOCK_RESOLUTION,
    TRIO,
    UVLOOP,
    Backend,
    Config,
    RateRun,
    ScenarioResult,
    Target,
    contract_limit,
    installed,
    md_table,
    median,
    percentile,
    window_counts,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

WINDOWS = (1.0, 0.1)
#: A run still going at this multiple of its ideal length is cut off there (aiometer and
#: aiolimiter reach a tenth of 10,000/s, which would make a 3 s run last 30 s).
CUTOFF = 2.0


async def werkpool_rate(rate: float, n: int, out: RateRun, *, burst: int = 1) -> None:
    """*n* instant jobs through ``WorkerPool(rate=rate, burst=burst)`` (no size limit)."""
    starts = out.starts

    async def job() -> None:
        starts.append(anyio.current_time())

    async with WorkerPool(rate=rate, burst=burst) as pool:
        out.t_submit = anyio.current_time()
        for _ in range(n):
            pool.start_soon(job)


@dataclass(frozen=True)
class RateContender:
    key: str
    label: str
    func: Callable[[float, int, RateRun], Awaitable[None]]
    backends: tuple[Backend, ...]
    needs: str | None = None
    burst: int = 1  # what its windows are judged against: ceil(W * rate) + burst - 1


CONTENDERS = (
    RateContender(
        "werkpool", "**werkpool** `WorkerPool(rate=r)`", werkpool_rate, (ASYNCIO, UVLOOP, TRIO)
    ),
    RateContender(
        "werkpool_b2",
        "**werkpool** `WorkerPool(rate=r, burst=2)`",
        partial(werkpool_rate, burst=2),
        (ASYNCIO, UVLOOP, TRIO),
        burst=2,
    ),
    RateContender(
        "aiometer",
        "`aiometer.run_on_each(max_per_second=r)`",
        baselines.aiometer_rate,
        (ASYNCIO, TRIO),
        needs="aiometer",
    ),
    RateContender(
        "aiolimiter",
        "`aiolimiter.AsyncLimiter(1, 1/r)` (burst 1)",
        baselines.aiolimiter_rate,
        (ASYNCIO,),
        needs="aiolimiter",
    ),
    RateContender(
        "aiolimiter_1s",
        "`aiolimiter.AsyncLimiter(r, 1)` (a second's burst)",
        partial(baselines.aiolimiter_rate, whole_second=True),
        (ASYNCIO,),
        needs="aiolimiter",
    ),
)


def metrics(times: list[float], rate: float, t_submit: float, burst: int = 1) -> dict[str, float]:
    """Judge one run's start times (any order) against *rate* and the contract for *burst*."""
    ordered = sorted(times)
    n = len(ordered)
    out: dict[str, float] = {"n": n, "achieved": (n - 1) / (ordered[-1] - ordered[0]) / rate}
    gaps = [b - a for a, b in itertools.pairwise(ordered)]
    # Within the clocks' resolution of 1/rate is not shorter: `k / rate` rounds in floats.
    short = sum(g < 1.0 / rate - CLOCK_RESOLUTION for g in gaps)
    out["min_gap_ms"] = min(gaps) * 1e3
    out["short_gaps"] = short
    out["short_gap_share"] = short / len(gaps)
    for width in WINDOWS:
        limit = contract_limit(width, rate, burst)
        best, over = window_counts(ordered, width, limit)
        out[f"limit_{width:g}s"] = limit
        out[f"max_{width:g}s"] = best
        out[f"over_{width:g}s"] = over
    # The ideal schedule starts at the first start: how long the hand-over took (submitting
    # 30,000 jobs is not instant) is reported apart, as first_start_ms.
    first = ordered[0]
    lateness = [ordered[k] - (first + k / rate) for k in range(n)]
    out["first_start_ms"] = (first - t_submit) * 1e3
    out["lateness_p50_ms"] = percentile(lateness, 0.5) * 1e3
    out["lateness_p99_ms"] = percentile(lateness, 0.99) * 1e3
    out["lateness_max_ms"] = max(lateness) * 1e3
    return out


async def _capped(
    func: Callable[[float, int, RateRun], Awaitable[None]], rate: float, n: int, cap: float
) -> RateRun:
    """Run *func*, cutting it off after *cap* seconds: the starts so far are judged."""
    out = RateRun(anyio.current_time(), [])
    with anyio.move_on_after(cap):
        await func(rate, n, out)
    return out


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def collect(
    cfg: Config, rates: tuple[float, ...], repeats: int
) -> dict[tuple[float, str, str], list[RateRun]]:
    """Run every contender at every rate *repeats* times; shuffled within each round."""
    rng = random.Random(cfg.seed + 1)
    labels = {b.label for b in cfg.backends}
    plan = [
        (c, b)
        for c in CONTENDERS
        if c.needs is None or installed(c.needs)
        for b in c.backends
        if b.label in labels
    ]
    runs: dict[tuple[float, str, str], list[RateRun]] = {}
    cap = CUTOFF * cfg.rate_seconds
    for r in range(repeats):
        for rate in rates:
            n = round(rate * cfg.rate_seconds) + 1
            order = list(plan)
            rng.shuffle(order)
            _log(f"  rate: {rate:g}/s, round {r + 1}/{repeats}, {len(order)} runs of {n:,} jobs")
            for c, backend in order:
                run_ = backend.run(partial(_capped, c.func, rate, n, cap))
                if not 2 <= len(run_.starts) <= n:
                    raise AssertionError(f"{c.key} started {len(run_.starts)} of {n} jobs")
                runs.setdefault((rate, c.key, backend.label), []).append(run_)
    return runs


def run(cfg: Config) -> tuple[ScenarioResult, dict[tuple[float, str, str], list[RateRun]]]:
    runs = collect(cfg, cfg.rates, cfg.rate_repeats)
    contenders = {c.key: c for c in CONTENDERS}
    rows: list[list[str]] = []
    targets: list[Target] = []
    data: list[dict[str, Any]] = []
    order = {c.key: i for i, c in enumerate(CONTENDERS)}
    backend_order = {b.label: i for i, b in enumerate(cfg.backends)}
    keys = sorted(runs, key=lambda k: (k[0], order[k[1]], backend_order[k[2]]))
    for rate, key, backend in keys:
        group = runs[(rate, key, backend)]
        burst = contenders[key].burst
        per_run = [metrics(r.starts, rate, r.t_submit, burst) for r in group]
        agg = _aggregate(per_run)
        data.append(
            {
                "rate": rate,
                "implementation": key,
                "backend": backend,
                "burst": burst,
                "runs": per_run,
                "summary": agg,
            }
        )
        rows.append(
            [
                f"{rate:,g}/s",
                contenders[key].label,
                backend,
                _started(per_run, round(rate * cfg.rate_seconds) + 1, cfg.rate_seconds),
                f"{agg['achieved_median'] * 100:.2f} % (min {agg['achieved_min'] * 100:.2f})",
                f"{agg['max_1s']:,} / {agg['limit_1s']:,}",
                f"{agg['over_1s']:,}",
                f"{agg['max_0.1s']:,} / {agg['limit_0.1s']:,}",
                f"{agg['over_0.1s']:,}",
                f"{agg['min_gap_ms']:.3f}",
                f"{agg['short_gap_share'] * 100:.1f} %",
                f"{agg['lateness_p50_ms']:.2f} / {agg['lateness_p99_ms']:.2f}",
            ]
        )
        if key == "werkpool":
            over = agg["over_1s"] + agg["over_0.1s"]
            targets.append(
                Target(
                    "rate",
                    f"burst 1 at {rate:,g}/s, {backend}: windows over the contract, gaps < 1/rate",
                    "0 and 0 (job starts, every repeat)",
                    f"{over:,} and {agg['short_gaps']:,}",
                    over == 0 and agg["short_gaps"] == 0,
                )
            )
        if key == "werkpool_b2" and rate >= 1_000:
            over = agg["over_1s"] + agg["over_0.1s"]
            targets.append(
                Target(
                    "rate",
                    f"burst 2 at {rate:,g}/s, {backend}: achieved rate; windows over the contract",
                    ">= 99 % of the target; 0 (job starts, every repeat)",
                    f"{agg['achieved_min'] * 100:.2f} %; {over:,}",
                    agg["achieved_min"] >= 0.99 and over == 0,
                )
            )
    repeats = cfg.rate_repeats
    markdown = (
        f"`rate * {cfg.rate_seconds:g} s + 1` instant jobs handed over at once; "
        f"{repeats} repeat{'s' if repeats > 1 else ''}. Every time is a job start on the jobs' "
        "own clock (`anyio.current_time()` on the job's first line). Achieved rate: median over "
        "repeats (and the lowest). Fullest window / contract limit `ceil(W * rate) + burst - 1`, "
        "and windows over it: worst repeat and total over repeats. Shortest gap between "
        "consecutive starts (any repeat) and the share of gaps shorter than `1 / rate` (median "
        "over repeats). Lateness of the k-th start behind `first start + k / rate`: median over "
        "repeats of each run's p50 / p99, in ms. A run still going at "
        f"{CUTOFF:g}x its ideal length is cut off there and judged on the starts it made.\n\n"
        + md_table(
            [
                "rate",
                "implementation",
                "backend",
                "started",
                "achieved rate",
                "fullest 1 s / limit",
                "1 s windows over",
                "fullest 100 ms / limit",
                "100 ms windows over",
                "shortest gap (ms)",
                "gaps < 1/rate",
                "lateness p50 / p99 (ms)",
            ],
            rows,
        )
    )
    result = ScenarioResult(
        "rate",
        markdown,
        targets,
        {"seconds": cfg.rate_seconds, "repeats": repeats, "results": data},
    )
    return result, runs


def _started(per_run: list[dict[str, float]], handed: int, seconds: float) -> str:
    """All of them, or how many the slowest repeat started before its cut-off."""
    fewest = int(min(m["n"] for m in per_run))
    if fewest == handed:
        return f"all {handed:,}"
    return f"{fewest:,} (cut at {CUTOFF * seconds:g} s)"


def _aggregate(per_run: list[dict[str, float]]) -> dict[str, Any]:
    agg: dict[str, Any] = {
        "achieved_median": median([m["achieved"] for m in per_run]),
        "achieved_min": min(m["achieved"] for m in per_run),
        "lateness_p50_ms": median([m["lateness_p50_ms"] for m in per_run]),
        "lateness_p99_ms": median([m["lateness_p99_ms"] for m in per_run]),
        "lateness_max_ms": max(m["lateness_max_ms"] for m in per_run),
        "first_start_ms": median([m["first_start_ms"] for m in per_run]),
        "min_gap_ms": min(m["min_gap_ms"] for m in per_run),
        "short_gaps": int(sum(m["short_gaps"] for m in per_run)),
        "short_gap_share": median([m["short_gap_share"] for m in per_run]),
    }
    for width in WINDOWS:
        w = f"{width:g}s"
        agg[f"limit_{w}"] = int(per_run[0][f"limit_{w}"])
        agg[f"max_{w}"] = int(max(m[f"max_{w}"] for m in per_run))
        agg[f"over_{w}"] = int(sum(m[f"over_{w}"] for m in per_run))
    return agg
