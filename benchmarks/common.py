"""Shared pieces of the benchmark suite: backends, timing, statistics and the report types."""

from __future__ import annotations

import gc
import importlib.util
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

T = TypeVar("T")

#: Two instants closer than this are one instant to every clock the loops use (1 ns).
CLOCK_RESOLUTION = 1e-9


@dataclass(frozen=True)
class Backend:
    """An event loop to run a benchmark on, as AnyIO names it."""

    label: str  # "asyncio", "asyncio+uvloop" or "trio"
    name: str  # AnyIO's backend name
    uvloop: bool = False

    @property
    def is_asyncio(self) -> bool:
        return self.name == "asyncio"

    def run(self, func: Callable[[], Awaitable[T]]) -> T:
        """Run ``func()`` to completion on a fresh event loop of this backend."""
        options: dict[str, Any] = {"use_uvloop": True} if self.uvloop else {}
        return anyio.run(func, backend=self.name, backend_options=options)


ASYNCIO = Backend("asyncio", "asyncio")
UVLOOP = Backend("asyncio+uvloop", "asyncio", uvloop=True)
TRIO = Backend("trio", "trio")


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def available_backends() -> list[Backend]:
    """asyncio always; uvloop and trio where they are installed."""
    backends = [ASYNCIO]
    if installed("uvloop"):
        backends.append(UVLOOP)
    if installed("trio"):
        backends.append(TRIO)
    return backends


@dataclass
class Config:
    """What one run of the suite measures; ``--quick`` shrinks every size and repeat count."""

    quick: bool
    backends: list[Backend]
    repeats: int  # timed rounds of the overhead scenario
    overhead_jobs: int
    rate_repeats: int
    rate_seconds: float  # how long each rate run lasts at its target rate
    rates: tuple[float, ...]
    plot_rate: float
    memory_jobs: int
    memory_baseline_jobs: int
    map_lengths: tuple[int, ...]
    idle_seconds: float
    seed: int = 20251128

    @classmethod
    def make(cls, *, quick: bool, backends: list[Backend]) -> Config:
        if quick:
            return cls(
                quick=True,
                backends=backends,
                repeats=3,
                overhead_jobs=20_000,
                rate_repeats=1,
                rate_seconds=1.0,
                rates=(200.0, 1_000.0, 10_000.0),
                plot_rate=1_000.0,
                memory_jobs=100_000,
                memory_baseline_jobs=20_000,
                map_lengths=(1_000, 10_000, 100_000),
                idle_seconds=1.0,
            )
        return cls(
            quick=False,
            backends=backends,
            repeats=4,
            overhead_jobs=100_000,
            rate_repeats=2,
            rate_seconds=3.0,
            rates=(200.0, 1_000.0, 10_000.0),
            plot_rate=1_000.0,
            memory_jobs=1_000_000,
            memory_baseline_jobs=100_000,
            map_lengths=(10_000, 100_000, 1_000_000),
            idle_seconds=5.0,
        )


@dataclass
class Target:
    """One line of the issue's targets, checked against this run."""

    scenario: str
    what: str
    goal: str
    measured: str
    ok: bool


@dataclass
class ScenarioResult:
    """What a scenario hands back to run.py: markdown for the report, targets, raw data."""

    name: str
    markdown: str
    targets: list[Target] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)


def timed_run(backend: Backend, func: Callable[[], Awaitable[T]]) -> tuple[float, T]:
    """Collect garbage, then run ``func()`` on a fresh loop; return (seconds inside it, result).

    The clock starts and stops inside the loop, so loop creation and teardown are not counted.
    """
    gc.collect()

    async def main() -> tuple[float, T]:
        start = time.perf_counter()
        result = await func()
        return time.perf_counter() - start, result

    return backend.run(main)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], q: float) -> float:
    """The *q*-quantile (0..1) with linear interpolation between ranks (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    pos = (len(ordered) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def window_counts(times: Sequence[float], width: float, limit: int) -> tuple[int, int]:
    """Count starts in every half-open window ``[t, t + width)`` that begins at a start.

    The fullest window of any placement begins at a start, so the first number is the largest
    count in any window of that width. The second is how many of those windows hold more than
    *limit* starts. Times must be sorted. Instants within :data:`CLOCK_RESOLUTION` of a window's
    end count as at its end (outside), so float rounding in ``origin + k / rate`` is not a start.
    """
    best = 0
    over = 0
    j = 0
    n = len(times)
    for i in range(n):
        end = times[i] + width - CLOCK_RESOLUTION
        if j < i:
            j = i
        while j < n and times[j] < end:
            j += 1
        count = j - i
        if count > best:
            best = count
        if count > limit:
            over += 1
    return best, over


def contract_limit(width: float, rate: float, burst: int = 1) -> int:
    """The rate contract: at most ``ceil(W * rate) + burst - 1`` starts in a window of ``W``."""
    return math.ceil(width * rate - CLOCK_RESOLUTION) + burst - 1


def md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def fmt_ratio(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.2f}x"


def fmt_bytes(x: float) -> str:
    if abs(x) >= 1024 * 1024:
        return f"{x / (1024 * 1024):.1f} MiB"
    if abs(x) >= 1024:
        return f"{x / 1024:.1f} KiB"
    return f"{x:.0f} B"


@dataclass
class RateRun:
    """The start times one rate-limited run produced, on the jobs' own clock."""

    t_submit: float  # when the jobs were handed over, all at once
    starts: list[float]  # anyio.current_time() read on each job's first line, by start order
