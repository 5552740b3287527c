"""Contract #12: weighted cost (``unit=`` on a limit, ``cost=`` on a job).

A limit with a unit counts what each attempt's ``cost=`` says in that unit (0 if it names none);
a limit without one counts 1 per attempt. The bounds are those of the unweighted limits with a
job of cost ``c`` counting ``c`` at its start; each retry pays again; a big job at the head is
never overtaken by smaller ones behind it; and a cost that could never fit, or that names a unit
no limit counts, is refused at the call with a ValueError that names the limit (or the unit).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from anyio.lowlevel import checkpoint
from support import Boom, approx, assert_idle, submit_by

from werkpool import Concurrency, Rate, Window, WorkerPool

ENTRY_POINTS = ["run", "start_soon", "submit", "call", "map"]


# -- recording weighted attempts and checking the bounds exactly ---------------------------------


@dataclass
class Ledger:
    """Jobs that record each attempt's start time and cost, and the cost running at once."""

    unit: str = "tokens"
    #: Checked inside each job: the summed cost of running attempts never exceeds it.
    limit: float | None = None
    starts: list[tuple[float, float]] = field(default_factory=list)
    order: list[object] = field(default_factory=list)
    attempts: dict[object, int] = field(default_factory=dict)
    running: float = 0.0
    peak: float = 0.0

    async def job(
        self, label: object, cost: float, duration: float = 0.0, failures: int = 0
    ) -> object:
        """Take *duration* seconds; fail the first *failures* attempts with :class:`Boom`."""
        self.starts.append((anyio.current_time(), cost))
        self.order.append(label)
        self.attempts[label] = self.attempts.get(label, 0) + 1
        self.running += cost
        self.peak = max(self.peak, self.running)
        assert self.limit is None or self.running <= self.limit + 1e-9, (self.running, label)
        try:
            if duration:
                await anyio.sleep(duration)
            else:
                await checkpoint()
            if self.attempts[label] <= failures:
                raise Boom(label)
            return label
        finally:
            self.running -= cost

    def times(self, since: float = 0.0) -> list[float]:
        return [t - since for t, _ in self.starts]


def weighted_rate_violation(
    starts: list[tuple[float, float]], rate: float, burst: float
) -> str | None:
    """The first run of starts that a weighted GCRA of *rate* units/s and *burst* would refuse.

    A bucket admits a start of cost ``c`` at ``a`` only if ``tat - (burst - c) / rate <= a``, and
    then ``tat = max(tat, a) + c / rate``; so starts ``i..j`` (by time) of summed cost ``S``
    satisfy ``t_j - t_i >= (S - burst) / rate``. For whole costs that is the issue's bound: at
    most ``ceil(W * rate) + burst - 1`` units in any half-open window of length ``W``.
    """
    ordered = sorted(starts)
    for i in range(len(ordered)):
        total = 0.0
        for j in range(i, len(ordered)):
            total += ordered[j][1]
            gap = ordered[j][0] - ordered[i][0]
            if gap < (total - burst) / rate - 1e-6:
                return f"{total} units within {gap:.9f} s from t={ordered[i][0]:.9f}"
    return None


def window_violation(starts: list[tuple[float, float]], count: float, per: float) -> str | None:
    """The first half-open window of length *per* holding more than *count* units."""
    ordered = sorted(starts)
    for i, (begin, _) in enumerate(ordered):
        total = sum(c for t, c in ordered[i:] if t < begin + per - 1e-9)
        if total > count + 1e-9:
            return f"{total} units in [{begin:.9f}, {begin + per:.9f})"
    return None


# -- each limit counts the unit ------------------------------------------------------------------


async def test_weighted_rate_moves_by_cost_over_rate() -> None:
    """``Rate(10, burst=10, unit="tokens")``, costs 4 4 4 2 6 1: starts 0 0 0.2 0.4 1.0 1.1.

    A start of cost ``c`` fits once the bucket holds ``burst - c`` or less; each takes ``c/10``
    seconds of the schedule.
    """
    ledger = Ledger()
    t0 = anyio.current_time()
    async with WorkerPool(limits=[Rate(10, burst=10, unit="tokens")]) as pool:
        for i, cost in enumerate([4, 4, 4, 2, 6, 1]):
            pool.run(ledger.job, i, cost, cost={"tokens": cost})
    assert ledger.times(t0) == [approx(t) for t in (0, 0, 0.2, 0.4, 1.0, 1.1)]
    assert ledger.order == list(range(6))
    assert weighted_rate_violation(ledger.starts, 10, 10) is None


async def test_weighted_rate_with_per_counts_units_per_period() -> None:
    """``Rate(600, per=60, burst=30, unit="tokens")`` (10 tokens/s): costs of 30 go every 3 s."""
    ledger = Ledger()
    t0 = anyio.current_time()
    async with WorkerPool(limits=[Rate(600, per=60, burst=30, unit="tokens")]) as pool:
        for i in range(4):
            pool.run(ledger.job, i, 30, cost={"tokens": 30})
    assert ledger.times(t0) == [approx(t) for t in (0, 3, 6, 9)]


async def test_weighted_window_returns_credit_as_old_units_leave() -> None:
    """``Window(10, per=1, unit="tokens")``: 6 at 0 and 3 at 0.5 fill 9; a 4 waits for the 6
    to leave (1.0), a 2 joins it; a 5 needs the 3 *and* the 4 gone: 2.0, not 1.5."""
    ledger = Ledger()
    t0 = anyio.current_time()
    async with WorkerPool(limits=[Window(10, per=1, unit="tokens")]) as pool:
        pool.run(ledger.job, "a", 6, cost={"tokens": 6})
        await anyio.sleep(0.5)
        pool.run(ledger.job, "b", 3, cost={"tokens": 3})
        await anyio.sleep(0.1)
        for label, cost in (("c", 4), ("d", 2), ("e", 5)):
            pool.run(ledger.job, label, cost, cost={"tokens": cost})
    assert ledger.times(t0) == [approx(t) for t in (0, 0.5, 1.0, 1.0, 2.0)]
    assert window_violation(ledger.starts, 10, 1) is None


async def test_weighted_concurrency_sums_the_running_costs() -> None:
    """``Concurrency(10, unit="gb")``, 1 s jobs of 6, 5, 4, 1 GB: the 6 runs alone, then 5+4+1."""
    ledger = Ledger(unit="gb", limit=10)
    t0 = anyio.current_time()
    async with WorkerPool(limits=[Concurrency(10, unit="gb")]) as pool:
        for i, cost in enumerate([6, 5, 4, 1]):
            pool.run(ledger.job, i, cost, 1.0, cost={"gb": cost})
    assert ledger.times(t0) == [approx(t) for t in (0, 1, 1, 1)]
    assert ledger.peak == 10
    assert_idle(pool)


async def test_a_unitless_limit_counts_one_per_attempt_whatever_the_cost() -> None:
    """``Rate(2)`` beside a loose token rate: jobs of 50 tokens still go every 0.5 s."""
    ledger = Ledger()
    t0 = anyio.current_time()
    async with WorkerPool(limits=[Rate(2), Rate(1000, burst=1000, unit="tokens")]) as pool:
        for i in range(3):
            pool.run(ledger.job, i, 50, cost={"tokens": 50})
    assert ledger.times(t0) == [approx(t) for t in (0, 0.5, 1.0)]


async def test_a_job_naming_no_cost_in_a_unit_costs_zero_of_it() -> None:
    """1 s jobs without a "tokens" cost ignore a tight token rate, and one without a "gb" cost
    ignores ``Concurrency(2, unit="gb")``: only the jobs that name the unit are counted."""
    ledger = Ledger(unit="gb")
    t0 = anyio.current_time()
    limits = [Rate(1, unit="tokens"), Concurrency(2, unit="gb")]
    async with WorkerPool(limits=limits) as pool:
        for i in range(3):
            pool.run(ledger.job, i, 1, 1.0, cost={"gb": 1})  # 0 tokens: only "gb" binds
        pool.run(ledger.job, "free", 0, 1.0)  # no cost at all: bound by neither
    # FIFO: "free" waits behind job 2 (it does not overtake), then starts with it at 1.0.
    assert ledger.times(t0) == [approx(t) for t in (0, 0, 1, 1)]
    assert ledger.order == [0, 1, 2, "free"]


# -- FIFO: a big head is not overtaken -----------------------------------------------------------


async def test_a_big_head_is_not_overtaken_under_a_rate() -> None:
    """After a 10-token job empties ``Rate(10, burst=10)``, the next 10-token job waits until
    1.0; the 1-token jobs behind it (each would fit sooner) follow it at 1.1, 1.2, ..."""
    ledger = Ledger()
    t0 = anyio.current_time()
    async with WorkerPool(limits=[Rate(10, burst=10, unit="tokens")]) as pool:
        pool.run(ledger.job, "first", 10, cost={"tokens": 10})
        pool.run(ledger.job, "big", 10, cost={"tokens": 10})
        for i in range(5):
            pool.run(ledger.job, i, 1, cost={"tokens": 1})
    assert ledger.order == ["first", "big", 0, 1, 2, 3, 4]
    assert ledger.times(t0) == [approx(t) for t in (0, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5)]


async def test_a_big_head_is_not_overtaken_under_a_window() -> None:
    """``Window(5, per=1, unit="tokens")`` holding 3: a 5 waits for 1.0; the 1s behind it (which
    would fit at once) wait for it, and then for the window to clear it: all at 2.0."""
    ledger = Ledger()
    t0 = anyio.current_time()
    async with WorkerPool(limits=[Window(5, per=1, unit="tokens")]) as pool:
        pool.run(ledger.job, "first", 3, cost={"tokens": 3})
        pool.run(ledger.job, "big", 5, cost={"tokens": 5})
        for i in range(5):
            pool.run(ledger.job, i, 1, cost={"tokens": 1})
    assert ledger.order == ["first", "big", 0, 1, 2, 3, 4]
    assert ledger.times(t0) == [approx(t) for t in (0, 1, 2, 2, 2, 2, 2)]


async def test_a_big_head_is_not_overtaken_under_a_weighted_concurrency() -> None:
    """``Concurrency(4, unit="gb")`` with a 3 GB job running: a 4 GB job waits for it, and the
    1 GB jobs behind it (one would fit beside the 3) start only after the 4 GB one ends."""
    ledger = Ledger(unit="gb", limit=4)
    t0 = anyio.current_time()
    async with WorkerPool(limits=[Concurrency(4, unit="gb")]) as pool:
        pool.run(ledger.job, "first", 3, 1.0, cost={"gb": 3})
        pool.run(ledger.job, "big", 4, 1.0, cost={"gb": 4})
        for i in range(4):
            pool.run(ledger.job, i, 1, 1.0, cost={"gb": 1})
    assert ledger.order == ["first", "big", 0, 1, 2, 3]
    assert ledger.times(t0) == [approx(t) for t in (0, 1, 2, 2, 2, 2)]


# -- retries pay again ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "cost", "expected"),
    [
        (Rate(10, burst=10, unit="tokens"), 10, (0, 1, 2)),
        (Rate(10, burst=10, unit="tokens"), 5, (0, 0, 0.5)),
        (Window(10, per=1, unit="tokens"), 6, (0, 1, 2)),
        (Window(10, per=1, unit="tokens"), 5, (0, 0, 1)),
    ],
    ids=["rate-10", "rate-5", "window-6", "window-5"],
)
async def test_each_retry_pays_its_cost_again(
    limit: Rate | Window, cost: float, expected: tuple[float, ...]
) -> None:
    """A job that fails twice (zero backoff) takes its cost at each of its three attempts."""
    ledger = Ledger()
    t0 = anyio.current_time()
    async with WorkerPool(limits=[limit]) as pool:
        future = pool.run(
            ledger.job,
            "flaky",
            cost,
            0.0,
            2,
            retries=2,
            backoff=lambda n: 0.0,
            cost={"tokens": cost},
        )
    assert await future == "flaky"
    assert ledger.times(t0) == [approx(t) for t in expected]
    assert pool.statistics().attempts == 3


async def test_a_retry_holds_its_weighted_concurrency_again() -> None:
    """``Concurrency(3, unit="gb")``: a 2 GB job's retry and a 2 GB job never run together."""
    ledger = Ledger(unit="gb", limit=3)
    t0 = anyio.current_time()
    async with WorkerPool(limits=[Concurrency(3, unit="gb")]) as pool:
        pool.run(ledger.job, "flaky", 2, 1.0, 1, retries=1, backoff=lambda n: 0.0, cost={"gb": 2})
        pool.run(ledger.job, "other", 2, 1.0, cost={"gb": 2})
    # flaky 0-1 (fails); its retry keeps the job's place in line (submission order), so it
    # runs 1-2 and "other" 2-3: at no time 4 GB at once.
    assert ledger.order == ["flaky", "flaky", "other"]
    assert ledger.times(t0) == [approx(t) for t in (0, 1, 2)]


# -- the bounds hold on random programs ----------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
async def test_weighted_bounds_hold_on_random_programs(seed: int) -> None:
    """Random costs, arrivals, durations, failures and retries under four limits at once:
    tokens by a rate and a window, gigabytes by a concurrency, attempts by a rate."""
    rng = random.Random(seed)
    tokens = Ledger("tokens")
    gb = Ledger("gb", limit=10)
    count = 0

    async def job(label: int, t: float, g: float, duration: float, fail: bool) -> int:
        nonlocal count
        count += 1
        tokens.starts.append((anyio.current_time(), t))
        await gb.job(label, g, duration, 1 if fail else 0)
        return label

    limits = [
        Rate(20, per=2, burst=8, unit="tokens"),
        Window(12, per=1.5, unit="tokens"),
        Concurrency(10, unit="gb"),
        Rate(8),
    ]
    futures: list[Any] = []
    async with WorkerPool(limits=limits) as pool:
        for i in range(40):
            if rng.random() < 0.3:
                await anyio.sleep(rng.choice([0.1, 0.5, 2.0]))
            t = rng.choice([0, 1, 2.5, 4, 8])
            g = rng.choice([0, 1, 3, 5, 10])
            cost = {"tokens": t, "gb": g}
            fail = rng.random() < 0.2
            duration = rng.choice([0.0, 0.2, 1.0])
            futures.append(
                pool.run(job, i, t, g, duration, fail, retries=1, backoff=lambda n: 0.1, cost=cost)
            )
    assert [await f for f in futures] == list(range(40))
    assert count == len(tokens.starts) == len(gb.starts) > 40  # retries are attempts too
    assert weighted_rate_violation(tokens.starts, 10, 8) is None
    assert window_violation(tokens.starts, 12, 1.5) is None
    assert gb.peak <= 10
    attempts = [(t, 1.0) for t, _ in tokens.starts]
    assert weighted_rate_violation(attempts, 8, 1) is None
    assert_idle(pool)


# -- map takes a cost function -------------------------------------------------------------------


async def test_map_costs_each_item_by_its_cost_function() -> None:
    """``map(..., cost=lambda item: ...)``: the same schedule as run() with those costs."""
    ledger = Ledger()
    t0 = anyio.current_time()
    items = [4, 4, 4, 2, 6, 1]
    async with WorkerPool(limits=[Rate(10, burst=10, unit="tokens")]) as pool:
        results = [
            r
            async for r in pool.map(lambda c: ledger.job(c, c), items, cost=lambda c: {"tokens": c})
        ]
    assert results == items
    assert ledger.times(t0) == [approx(t) for t in (0, 0, 0.2, 0.4, 1.0, 1.1)]


# -- refused at the call -------------------------------------------------------------------------

NEVER_FITS = [
    # (limits=, per_key=, the cost, the limit the message names)
    (
        [Rate(100, per=60, burst=100, unit="tokens")],
        [],
        101,
        "Rate(100, per=60, burst=100, unit='tokens')",
    ),
    ([Window(5, per=1, unit="tokens")], [], 5.5, "Window(5, per=1, unit='tokens')"),
    ([Concurrency(2, unit="tokens")], [], 3, "Concurrency(2, unit='tokens')"),
    ([], [Rate(4, burst=4, unit="tokens")], 5, "Rate(4, per=1, burst=4, unit='tokens')"),
    (
        [Rate(1000, burst=1000, unit="tokens"), Window(50, per=1, unit="tokens")],
        [],
        60,
        "Window(50, per=1, unit='tokens')",
    ),
]


@pytest.mark.parametrize("method", ENTRY_POINTS)
@pytest.mark.parametrize(
    ("limits", "per_key", "cost", "named"),
    NEVER_FITS,
    ids=["rate", "window", "concurrency", "per-key", "second"],
)
async def test_a_cost_that_never_fits_is_refused_naming_the_limit(
    method: str, limits: list[Any], per_key: list[Any], cost: float, named: str
) -> None:
    """A cost above a limit's burst, count or n: ValueError at the call (map: when it reads the
    item), naming the limit by its repr; nothing is queued and the pool goes on."""
    key = "k" if per_key else None
    # Virtual seconds: a job queued that can never start fails the test at once, not by hanging.
    with anyio.fail_after(1000):
        await _refused_at_the_call(method, limits, per_key, cost, named, key)


async def _refused_at_the_call(
    method: str, limits: list[Any], per_key: list[Any], cost: float, named: str, key: str | None
) -> None:
    async with WorkerPool(limits=limits, per_key=per_key) as pool:
        if method == "map":
            results = pool.map(
                checkpoint_echo,
                [1, 2, cost, 3],
                key=lambda item: key,
                cost=lambda item: {"tokens": item},
            )
            async with results:
                # The items before it are run and yielded, then the map raises the error.
                assert [await results.__anext__(), await results.__anext__()] == [1, 2]
                with pytest.raises(ValueError, match=re.escape(named)):
                    await results.__anext__()
            assert pool.statistics().submitted == 2
        else:
            with pytest.raises(ValueError, match=re.escape(named)):
                await submit_by(
                    pool, method, checkpoint_echo, "never", key=key, cost={"tokens": cost}
                )
            assert pool.statistics().submitted == 0
        # The pool works on.
        assert await pool.call(checkpoint_echo, "ok", key=key, cost={"tokens": 1}) == "ok"


async def checkpoint_echo(value: object) -> object:
    await checkpoint()
    return value


@pytest.mark.parametrize("method", ENTRY_POINTS)
async def test_a_unit_no_limit_counts_is_refused(method: str) -> None:
    """``cost={"tokns": 5}`` (a typo) with only a "tokens" limit: ValueError naming the unit."""
    async with WorkerPool(limits=[Rate(10, burst=10, unit="tokens")]) as pool:
        with pytest.raises(ValueError, match=r"'tokns'"):
            if method == "map":
                async for _ in pool.map(checkpoint_echo, [1], cost=lambda item: {"tokns": 5}):
                    pass
            else:
                await submit_by(pool, method, checkpoint_echo, 1, cost={"tokns": 5})
        assert pool.statistics().submitted == 0


async def test_a_cost_in_a_pool_without_units_is_refused() -> None:
    """A pool whose limits count attempts only: any cost unit is a typo guard error too."""
    async with WorkerPool(size=2, rate=5, limits=[Window(3, per=1)]) as pool:
        with pytest.raises(ValueError, match=r"'tokens'"):
            pool.run(checkpoint_echo, 1, cost={"tokens": 1})


BAD_COSTS = [
    ({"tokens": -1}, ValueError),
    ({"tokens": float("nan")}, ValueError),
    ({"tokens": float("inf")}, ValueError),
    ({"tokens": "5"}, TypeError),
    ({"tokens": None}, TypeError),
    ({"tokens": True}, TypeError),
    ({5: 1}, TypeError),
    ([("tokens", 1)], TypeError),
    (5, TypeError),
    ("tokens", TypeError),
]


@pytest.mark.parametrize(("cost", "error"), BAD_COSTS, ids=[repr(c) for c, _ in BAD_COSTS])
async def test_a_bad_cost_is_refused_naming_cost(cost: object, error: type[Exception]) -> None:
    """Amounts are finite numbers >= 0 and units str, in a mapping: else TypeError or
    ValueError naming ``cost``, raised at the call, with nothing queued."""
    async with WorkerPool(limits=[Rate(10, burst=10, unit="tokens")]) as pool:
        with pytest.raises(error, match=r"\bcost\b"):
            pool.run(checkpoint_echo, 1, cost=cost)  # type: ignore[arg-type]
        with pytest.raises(error, match=r"\bcost\b"):
            await pool.call(checkpoint_echo, 1, cost=cost)  # type: ignore[arg-type]
        assert pool.statistics().submitted == 0


async def test_zero_and_fractional_costs_are_accepted() -> None:
    """A cost of 0 (free) or 2.5 tokens is valid: ``Rate(10, burst=5)`` spaces 2.5s by 0.25 s."""
    ledger = Ledger()
    t0 = anyio.current_time()
    async with WorkerPool(limits=[Rate(10, burst=5, unit="tokens")]) as pool:
        pool.run(ledger.job, "free", 0, cost={"tokens": 0})
        for i in range(4):
            pool.run(ledger.job, i, 2.5, cost={"tokens": 2.5})
    assert ledger.times(t0) == [approx(t) for t in (0, 0, 0, 0.25, 0.5)]
