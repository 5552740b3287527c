"""Scenarios 7 and 8: what several limits and many keys cost per job, and what a key holds.

* **Three limits** (scenario 7): the jobs of scenario 1 (trivial, and yielding once) through
  ``start_soon()``, at most 100 at once, under one limit (``WorkerPool(size=100)``) and under
  three: the same size plus a rate of requests and a rate of tokens that the jobs state in
  their ``cost=`` (the shape of an LLM provider's limits), both far above what the loop can
  start so that nothing waits: what is timed is the bookkeeping of admitting a job under each
  limit, not a wait. Target (issue #12): at most 1.5x the time under one limit. Beside them,
  two limits (the size and the rate of requests, no cost), to show where the step is.
* **Many keys** (scenario 8): the same jobs with ``per_key=[Rate(...), Concurrency(100)]``
  (again never binding), all handed over at once, with a single key and with 10,000 keys
  (``key=i % 10,000``, so 10,000 keys are active at once). Target: at most 2x a single key.
  Beside them, for scale, the same jobs with no key at all.
* **Memory per key** (scenario 8): 10,000 jobs with ``per_key=[Rate(2), Concurrency(4)]`` (the
  issue's example) behind ``size=10``, each with a key of its own, against the same 10,000
  jobs with no key: the difference in :mod:`tracemalloc`'s traced memory per key is what an
  active key holds (target <= 1 KB). Then the jobs end, the keys rest and are dropped
  (``statistics().keys`` reaches 0), and the traced memory is compared with what it was
  before the keys existed (target: 0 bytes per dropped key, within 1 byte per key of
  allocator noise); a second batch of 10,000 new keys shows whether memory follows the keys
  in use or the keys ever seen.

Each timing round runs every contender once, shuffled, on a fresh loop (as in scenario 1); the
report gives the ratio of the medians and the range of the per-round ratios.
"""

from __future__ import annotations

import gc
import random
import sys
import tracemalloc
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

from .common import Backend, Config, ScenarioResult, Target, fmt_bytes, md_table, median, timed_run
from .overhead import JOBS, SIZE, _job_source

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    Job = Callable[[int], Awaitable[int]]

#: Targets of issue #12.
THREE_LIMITS_BUDGET = 1.5
MANY_KEYS_BUDGET = 2.0
KEY_BYTES_BUDGET = 1024
#: "0 bytes" after the keys are dropped, give or take this much allocator noise per key.
DROPPED_KEY_NOISE = 1.0
KEYS = 10_000
#: Rates far above what one loop can start (about 10^6 jobs/s at best): they never bind.
HUGE_RATE = 10**9
HUGE_BURST = 10**6
TOKENS_PER_JOB = 100
COST = {"tokens": TOKENS_PER_JOB}


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def three_limits() -> list[Any]:
    from werkpool import Rate

    return [
        Rate(HUGE_RATE, burst=HUGE_BURST),
        Rate(HUGE_RATE * TOKENS_PER_JOB, burst=HUGE_BURST * TOKENS_PER_JOB, unit="tokens"),
    ]


def per_key_limits() -> list[Any]:
    from werkpool import Concurrency, Rate

    return [Rate(HUGE_RATE, burst=HUGE_BURST), Concurrency(SIZE)]


# -- the contenders: async def f(job, n, size) -> jobs completed ----------------------------------


async def one_limit(job: Job, n: int, size: int) -> int:
    """``WorkerPool(size=100)``: scenario 1's ``start_soon()`` row."""
    from werkpool import WorkerPool

    async with WorkerPool(size=size) as pool:
        for i in range(n):
            pool.start_soon(job, i)
    return pool.statistics().completed


async def three_limit(job: Job, n: int, size: int) -> int:
    """``size=100`` plus a rate of requests and a rate of tokens, each job costing 100 tokens."""
    from werkpool import WorkerPool

    async with WorkerPool(size=size, limits=three_limits()) as pool:
        for i in range(n):
            pool.start_soon(job, i, cost=COST)
    return pool.statistics().completed


async def two_limit(job: Job, n: int, size: int) -> int:
    """``size=100`` plus the rate of requests (no cost): where the step from one limit is."""
    from werkpool import WorkerPool

    async with WorkerPool(size=size, limits=three_limits()[:1]) as pool:
        for i in range(n):
            pool.start_soon(job, i)
    return pool.statistics().completed


async def single_key(job: Job, n: int, size: int) -> int:
    from werkpool import WorkerPool

    async with WorkerPool(size=size, per_key=per_key_limits()) as pool:
        for i in range(n):
            pool.start_soon(job, i, key=0)
    return pool.statistics().completed


async def many_keys(job: Job, n: int, size: int) -> int:
    from werkpool import WorkerPool

    async with WorkerPool(size=size, per_key=per_key_limits()) as pool:
        for i in range(n):
            pool.start_soon(job, i, key=i % KEYS)
    return pool.statistics().completed


@dataclass(frozen=True)
class Contender:
    key: str
    label: str
    func: Callable[[Job, int, int], Awaitable[int]]


ONE = Contender("one_limit", "`WorkerPool(size=100)`: one limit", one_limit)
THREE = Contender(
    "three_limits",
    "`WorkerPool(size=100, limits=[Rate(requests), Rate(tokens, unit='tokens')])`, "
    f"`cost={{'tokens': {TOKENS_PER_JOB}}}`: three limits",
    three_limit,
)
TWO = Contender(
    "two_limits", "`WorkerPool(size=100, limits=[Rate(requests)])`: two limits", two_limit
)
NO_KEY = Contender("no_key", "no key, no `per_key=` (scenario 1's `start_soon()`)", one_limit)
SINGLE = Contender("single_key", "`per_key=[Rate, Concurrency]`, a single key", single_key)
MANY = Contender(
    "many_keys", f"`per_key=[Rate, Concurrency]`, {KEYS:,} keys (`key=i % {KEYS:,}`)", many_keys
)


def measure(
    backend: Backend,
    contenders: list[Contender],
    job: Job,
    n: int,
    repeats: int,
    rng: random.Random,
) -> dict[str, list[float]]:
    """Time every contender *repeats* times, in shuffled rounds, after a warm-up at n / 10."""
    for c in contenders:
        timed_run(backend, partial(c.func, job, max(n // 10, 1), SIZE))
    times: dict[str, list[float]] = {c.key: [] for c in contenders}
    for _ in range(repeats):
        order = list(contenders)
        rng.shuffle(order)
        for c in order:
            seconds, count = timed_run(backend, partial(c.func, job, n, SIZE))
            if count != n:
                raise AssertionError(f"{c.key} on {backend.label} completed {count} of {n} jobs")
            times[c.key].append(seconds)
    return times


def _ratio(times: dict[str, list[float]], key: str, base: str) -> tuple[float, float, float]:
    per_round = [a / b for a, b in zip(times[key], times[base], strict=True)]
    return median(times[key]) / median(times[base]), min(per_round), max(per_round)


def _timing_section(
    name: str,
    cfg: Config,
    contenders: list[Contender],
    base: Contender,
    subject: Contender,
    budget: float,
    what: str,
) -> tuple[str, list[Target], dict[str, Any]]:
    n = cfg.overhead_jobs
    rng = random.Random(cfg.seed + 7)
    raw: dict[str, dict[str, dict[str, list[float]]]] = {}
    rows: list[list[str]] = []
    targets: list[Target] = []
    for kind, job in JOBS.items():
        raw[kind] = {}
        for backend in cfg.backends:
            _log(f"  {name}: {kind} jobs on {backend.label} ({cfg.repeats} rounds of {n:,})")
            times = measure(backend, contenders, job, n, cfg.repeats, rng)
            raw[kind][backend.label] = times
            for c in contenders:
                ratio, lo, hi = _ratio(times, c.key, base.key)
                per_job = median(times[c.key]) / n * 1e9
                rows.append(
                    [
                        kind,
                        backend.label,
                        c.label,
                        f"{per_job:,.0f} ns",
                        f"{ratio:.2f}x ({lo:.2f}-{hi:.2f})",
                    ]
                )
            ratio = _ratio(times, subject.key, base.key)[0]
            targets.append(
                Target(
                    name,
                    f"{what}, {kind} jobs, {backend.label}",
                    f"<= {budget:g}x",
                    f"{ratio:.2f}x",
                    ratio <= budget,
                )
            )
    table = md_table(
        ["job", "backend", "pool", "time per job (median)", f"÷ {base.key.replace('_', ' ')}"],
        rows,
    )
    jobs = "; ".join(f"{kind}: `{_job_source(kind)}`" for kind in JOBS)
    intro = (
        f"{n:,} jobs through `start_soon()`, at most {SIZE} at once, median of {cfg.repeats} "
        f"rounds ({jobs}); time per job, and the ratio of the medians to the "
        f"{base.key.replace('_', ' ')} pool (per-round range):"
    )
    return f"{intro}\n\n{table}", targets, {"jobs": n, "rounds": cfg.repeats, "seconds": raw}


def run_three_limits(cfg: Config) -> ScenarioResult:
    markdown, targets, data = _timing_section(
        "limits",
        cfg,
        [ONE, TWO, THREE],
        ONE,
        THREE,
        THREE_LIMITS_BUDGET,
        "a job under three limits vs one",
    )
    note = (
        f"The rates are `Rate({HUGE_RATE:.0e}, burst={HUGE_BURST:.0e})` and the same times "
        f"{TOKENS_PER_JOB} in tokens: far above what the loop can start, so that no job waits "
        "and the time is the admission's bookkeeping."
    )
    return ScenarioResult("limits", f"{markdown}\n\n{note}", targets, data)


# -- memory per key -------------------------------------------------------------------------------


async def _settle() -> None:
    for _ in range(3):
        await anyio.lowlevel.checkpoint()


async def _block(event: anyio.Event) -> None:
    await event.wait()


def _traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def _wait_no_keys(pool: Any, seconds: float = 5.0) -> bool:
    """Poll ``statistics().keys`` until the pool holds no key (at most *seconds*)."""
    with anyio.move_on_after(seconds):
        while pool.statistics().keys:  # noqa: ASYNC110 - polling the pool's own count
            await anyio.sleep(0.05)
        return True
    return False


async def key_memory(k: int) -> dict[str, float]:
    """Traced bytes per active key, and what is left after the keys are dropped (two batches)."""
    from werkpool import Concurrency, Rate, WorkerPool

    futures: list[Any] = [None] * k
    out: dict[str, float] = {}
    async with WorkerPool(size=10, per_key=[Rate(2), Concurrency(4)]) as pool:
        # A first job per key type, so that the code paths' lazy allocations are done.
        release = anyio.Event()
        release.set()
        await pool.run(_block, release)
        await pool.run(_block, release, key=-1)
        if not await _wait_no_keys(pool):
            raise AssertionError("the warm-up key was never dropped")
        await _settle()
        tracemalloc.start()
        try:
            # No key: what k waiting jobs hold without keys.
            release = anyio.Event()
            base = _traced()
            for i in range(k):
                futures[i] = pool.run(_block, release)
            await _settle()
            unkeyed = _traced() - base
            release.set()
            for f in futures:
                await f
            futures = [None] * k
            await _settle()
            before = _traced()
            out["unkeyed_per_job"] = unkeyed / k
            for batch in (1, 2):
                release = anyio.Event()
                start = _traced()
                offset = batch * k
                for i in range(k):
                    futures[i] = pool.run(_block, release, key=offset + i)
                await _settle()
                active = _traced() - start
                out[f"active_keys_{batch}"] = pool.statistics().keys
                out[f"per_key_{batch}"] = (active - unkeyed) / k
                release.set()
                for f in futures:
                    await f
                futures = [None] * k
                dropped = await _wait_no_keys(pool)
                await _settle()
                out[f"dropped_{batch}"] = float(dropped)
                out[f"after_drop_{batch}"] = float(_traced())
            out["residual_per_key"] = (out["after_drop_1"] - before) / k
            out["ever_seen_per_key"] = (out["after_drop_2"] - out["after_drop_1"]) / k
        finally:
            tracemalloc.stop()
    return out


def run_many_keys(cfg: Config) -> ScenarioResult:
    markdown, targets, data = _timing_section(
        "keys",
        cfg,
        [NO_KEY, SINGLE, MANY],
        SINGLE,
        MANY,
        MANY_KEYS_BUDGET,
        f"a job with {KEYS:,} active keys vs a single key",
    )
    rows: list[list[str]] = []
    memory: dict[str, Any] = {}
    for backend in cfg.backends:
        if backend.uvloop:
            continue  # the same Python objects as on asyncio
        _log(f"  keys: memory of {KEYS:,} keys on {backend.label}")
        m = backend.run(partial(key_memory, KEYS))
        memory[backend.label] = m
        per_key = max(m["per_key_1"], m["per_key_2"])
        dropped = bool(m["dropped_1"] and m["dropped_2"])
        rows.append(
            [
                backend.label,
                fmt_bytes(m["unkeyed_per_job"]),
                f"{fmt_bytes(m['per_key_1'])} / {fmt_bytes(m['per_key_2'])}",
                "yes" if dropped else "**no**",
                f"{m['residual_per_key']:.1f} B",
                f"{m['ever_seen_per_key']:.1f} B",
            ]
        )
        targets += [
            Target(
                "keys",
                f"traced bytes per active key, {backend.label}",
                f"<= {KEY_BYTES_BUDGET} B",
                f"{per_key:.0f} B",
                per_key <= KEY_BYTES_BUDGET,
            ),
            Target(
                "keys",
                f"bytes left per key once dropped, {backend.label}",
                f"0 (within {DROPPED_KEY_NOISE:g} B per key)",
                f"{m['residual_per_key']:.1f} B" + ("" if dropped else " (keys not all dropped)"),
                dropped and abs(m["residual_per_key"]) <= DROPPED_KEY_NOISE,
            ),
            Target(
                "keys",
                f"bytes per key ever seen (a second batch of new keys), {backend.label}",
                f"0 (within {DROPPED_KEY_NOISE:g} B per key)",
                f"{m['ever_seen_per_key']:.1f} B",
                dropped and abs(m["ever_seen_per_key"]) <= DROPPED_KEY_NOISE,
            ),
        ]
    mem_md = md_table(
        [
            "backend",
            "per waiting job, no key",
            "per active key (batch 1 / 2)",
            "all keys dropped",
            "left per key after the drop",
            "growth per key, 2nd batch",
        ],
        rows,
    )
    mem_intro = (
        f"Memory (`tracemalloc`): {KEYS:,} jobs behind `size=10` with "
        "`per_key=[Rate(2), Concurrency(4)]`, each with a key of its own, minus the same jobs "
        "without a key, per key; then, once the jobs ended and `statistics().keys` is 0, the "
        "traced memory against what it was before the first batch (left per key), and after a "
        "second batch of as many new keys against after the first (growth per key ever seen):"
    )
    data["memory"] = memory
    return ScenarioResult("keys", f"{markdown}\n\n{mem_intro}\n\n{mem_md}", targets, data)


# -- profiling ------------------------------------------------------------------------------------

PROFILES = {"three-limits": (THREE, ONE), "many-keys": (MANY, SINGLE)}


def profile(which: str, kind: str, n: int, top: int = 30) -> str:
    """cProfile *which* ("three-limits" or "many-keys") on asyncio, after timing it against its
    one-limit / single-key counterpart with the cyclic GC on and off."""
    import cProfile
    import io
    import pstats

    from . import overhead
    from .common import ASYNCIO

    subject, base = PROFILES[which]
    job = JOBS[kind]
    timed_run(ASYNCIO, partial(subject.func, job, max(n // 10, 1), SIZE))
    timed_run(ASYNCIO, partial(base.func, job, max(n // 10, 1), SIZE))
    floor = overhead.Contender(base.key, base.label, base.func)
    shares = overhead.gc_share(subject.func, floor, job, n, ASYNCIO)
    profiler = cProfile.Profile()
    profiler.enable()
    seconds, _ = timed_run(ASYNCIO, partial(subject.func, job, n, SIZE))
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    return (
        f"{subject.label} with {n:,} {kind} jobs on asyncio, against {base.label} "
        f"(no profiler; 'floor' is the latter):\n{shares}\n\n"
        f"cProfile ({seconds:.2f} s under the profiler), top {top} by own time\n" + out.getvalue()
    )
