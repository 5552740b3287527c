"""Contract #12: per-key limits (``per_key=`` on the pool, ``key=`` on each job).

Each key gets its own instances of the ``per_key=`` limits, and they hold for that key alone; the
pool's own limits still hold for every job; a job of a saturated key never delays a job of
another key (no head-of-line blocking); jobs start in submission order within a key, and the keys
that may start share the pool-wide limits by fair round robin (issue #22 item 2, see
test_fair_share.py: at equal shares the oldest head goes first, as below); and a key is
dropped once it is idle and its limits are at rest, so ``statistics().keys`` counts the keys in
use only.
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

import anyio
import pytest
from support import Probe, approx, assert_idle, max_starts_in, rate_violation, submit_by

from werkpool import Concurrency, Rate, Window, WorkerPool

ENTRY_POINTS = ["run", "start_soon", "submit", "call", "map"]


def starts_by_key(probe: Probe, t0: float) -> dict[object, list[float]]:
    """Each key's start times (labels are ``(key, index)``), from *t0*."""
    by_key: dict[object, list[float]] = defaultdict(list)
    for (key, _), t in zip(probe.order, probe.starts, strict=True):
        by_key[key].append(t - t0)
    return dict(by_key)


# -- each key's limits hold for that key ---------------------------------------------------------


async def test_each_key_has_its_own_rate() -> None:
    """``per_key=[Rate(2)]``, three keys with three jobs each: every key starts at 0, 0.5, 1."""
    probe = Probe()
    t0 = anyio.current_time()
    async with WorkerPool(per_key=[Rate(2)]) as pool:
        for i in range(3):
            for key in "abc":
                pool.run(probe.job, (key, i), key=key)
    assert starts_by_key(probe, t0) == {k: [approx(t) for t in (0, 0.5, 1.0)] for k in "abc"}


async def test_each_key_has_its_own_concurrency() -> None:
    """``per_key=[Concurrency(1)]``, 1 s jobs: one at a time per key, the keys side by side."""
    probe = Probe(limit=2)
    t0 = anyio.current_time()
    async with WorkerPool(per_key=[Concurrency(1)]) as pool:
        for i in range(3):
            for key in "ab":
                pool.run(probe.job, (key, i), 1.0, key=key)
    assert starts_by_key(probe, t0) == {k: [approx(t) for t in (0, 1, 2)] for k in "ab"}
    assert probe.peak == 2


async def test_each_key_has_its_own_window_and_weighted_rate() -> None:
    """``per_key=[Window(2, per=1), Rate(10, burst=10, unit="tokens")]``: per key, two starts
    per second, and a 10-token job empties that key's bucket only."""
    probe = Probe()
    t0 = anyio.current_time()
    per_key = [Window(2, per=1), Rate(10, burst=10, unit="tokens")]
    async with WorkerPool(per_key=per_key) as pool:
        for key in "ab":
            pool.run(probe.job, (key, "big"), key=key, cost={"tokens": 10})
        for i in range(3):
            for key in "ab":
                pool.run(probe.job, (key, i), key=key, cost={"tokens": 1})
    # Per key: big at 0; the window admits a second start at 0, but the bucket is empty until
    # 0.1 (a 1-token start fits at tat - 0.9); then the window: the next two at 1.0 and 1.1.
    assert starts_by_key(probe, t0) == {k: [approx(t) for t in (0, 0.1, 1.0, 1.1)] for k in "ab"}


async def test_per_key_limits_with_a_key_function_in_map() -> None:
    """``map(..., key=fn)``: ``per_key=[Rate(1)]`` holds per key of the items."""
    probe = Probe()
    t0 = anyio.current_time()
    items = [("a", 0), ("a", 1), ("b", 0), ("a", 2), ("b", 1)]
    async with WorkerPool(per_key=[Rate(1)]) as pool:
        results = [r async for r in pool.map(probe.job, items, key=lambda item: item[0])]
    assert results == items
    assert starts_by_key(probe, t0) == {
        "a": [approx(t) for t in (0, 1, 2)],
        "b": [approx(t) for t in (0, 1)],
    }


# -- no head-of-line blocking --------------------------------------------------------------------


async def test_a_saturated_key_never_delays_another_key() -> None:
    """Key A at ``Rate(1)`` with 100 jobs queued: a job of key B starts at once, at 0 and again
    at 10.5 (A still has 89 waiting), and so does a job without a key; A keeps its pace."""
    probe = Probe()
    t0 = anyio.current_time()
    async with WorkerPool(per_key=[Rate(1)]) as pool:
        for i in range(100):
            pool.run(probe.job, ("A", i), key="A")
        pool.run(probe.job, ("B", 0), key="B")
        pool.run(probe.job, (None, 0))
        await anyio.sleep(10.5)
        assert pool.statistics().queued == 89
        late = [pool.run(probe.job, ("B", 1), key="B"), pool.run(probe.job, (None, 1))]
        for future in late:
            await future
        assert anyio.current_time() - t0 == approx(10.5)
        await pool.kill()  # A's other 89 jobs: their pace is checked already
    by_key = starts_by_key(probe, t0)
    assert by_key["B"] == [approx(0), approx(10.5)]
    assert by_key[None] == [approx(0), approx(10.5)]
    assert by_key["A"] == [approx(k) for k in range(11)]


async def test_a_key_at_its_concurrency_never_holds_a_pool_slot_from_another_key() -> None:
    """``size=2, per_key=[Concurrency(1)]``: key A's 50 long jobs hold one slot; a job of key B
    takes the other at once instead of queuing behind A's 49."""
    probe = Probe(limit=2)
    t0 = anyio.current_time()
    async with WorkerPool(size=2, per_key=[Concurrency(1)]) as pool:
        for i in range(50):
            pool.run(probe.job, ("A", i), 10.0, key="A")
        b = pool.run(probe.job, ("B", 0), 1.0, key="B")
        await b
        assert anyio.current_time() - t0 == approx(1.0)
        await pool.kill()
    assert starts_by_key(probe, t0) == {"A": [approx(0)], "B": [approx(0)]}


# -- FIFO ----------------------------------------------------------------------------------------


async def test_fifo_within_a_key_and_among_ready_keys() -> None:
    """``size=1, per_key=[Rate(1)]``: while x0 holds the slot, b0, a0, a1, b1 wait. At 3 the
    ready keys, level in the fair share, go in submission order (b0 before a0); a1 and b1 are
    ready together at 4, level again, and go in submission order too (a1 before b1); within a
    key, always in submission order."""
    probe = Probe(limit=1)
    t0 = anyio.current_time()
    async with WorkerPool(size=1, per_key=[Rate(1)]) as pool:
        pool.run(probe.job, ("x", 0), 3.0, key="x")
        for key, i in [("b", 0), ("a", 0), ("a", 1), ("b", 1)]:
            pool.run(probe.job, (key, i), key=key)
    assert probe.order == [("x", 0), ("b", 0), ("a", 0), ("a", 1), ("b", 1)]
    assert [t - t0 for t in probe.starts] == [approx(t) for t in (0, 3, 3, 4, 4)]


async def test_ready_keys_share_the_pool_rate_in_submission_order() -> None:
    """``rate=10, per_key=[Rate(1)]``, submitted a0 a1 a2 b0 b1 c0: the pool's slots go round
    robin among the keys that are ready (the oldest head first among keys level in the share):
    a0, b0, c0 at 0, 0.1, 0.2; a1 at 1.0, b1 at 1.1, a2 at 2.0."""
    probe = Probe()
    t0 = anyio.current_time()
    async with WorkerPool(rate=10, per_key=[Rate(1)]) as pool:
        for key, i in [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1), ("c", 0)]:
            pool.run(probe.job, (key, i), key=key)
    assert probe.order == [("a", 0), ("b", 0), ("c", 0), ("a", 1), ("b", 1), ("a", 2)]
    assert [t - t0 for t in probe.starts] == [approx(t) for t in (0, 0.1, 0.2, 1.0, 1.1, 2.0)]


async def test_a_retry_keeps_its_place_within_its_key() -> None:
    """``per_key=[Concurrency(1)]``: a0 fails once (no backoff) and is retried before a1."""
    probe = Probe()
    t0 = anyio.current_time()
    async with WorkerPool(per_key=[Concurrency(1)]) as pool:
        first = pool.run(_fails_once, probe, ("a", 0), retries=1, backoff=lambda n: 0.0, key="a")
        pool.run(probe.job, ("a", 1), 1.0, key="a")
    assert await first == ("a", 0)
    assert probe.order == [("a", 0), ("a", 0), ("a", 1)]
    assert [t - t0 for t in probe.starts] == [approx(t) for t in (0, 1, 2)]


async def _fails_once(probe: Probe, label: object) -> object:
    fail = label not in probe.attempts
    return await probe.job(label, 1.0, fail)


# -- the pool's own limits hold for every key ----------------------------------------------------


async def test_pool_limits_still_apply_to_every_key() -> None:
    """``rate=2`` with ``per_key=[Rate(10)]``: six jobs of three keys go one every 0.5 s, in
    submission order; the keys' looser rates give nothing beyond the pool's."""
    probe = Probe()
    t0 = anyio.current_time()
    async with WorkerPool(rate=2, per_key=[Rate(10)]) as pool:
        for i in range(2):
            for key in "abc":
                pool.run(probe.job, (key, i), key=key)
    assert [t - t0 for t in probe.starts] == [approx(k / 2) for k in range(6)]
    assert probe.order == [(k, i) for i in range(2) for k in "abc"]


async def test_pool_size_and_window_hold_across_keys() -> None:
    """``size=2, limits=[Window(3, per=2)], per_key=[Concurrency(2)]``, 1 s jobs of four keys:
    never more than two running, never more than three starts in any 2 s."""
    probe = Probe(limit=2)
    async with WorkerPool(size=2, limits=[Window(3, per=2)], per_key=[Concurrency(2)]) as pool:
        for i in range(3):
            for key in "abcd":
                pool.run(probe.job, (key, i), 1.0, key=key)
    assert probe.peak == 2
    assert max_starts_in(probe.starts, 2.0) == 3
    assert len(probe.starts) == 12
    assert_idle(pool)


async def test_a_job_without_a_key_is_subject_to_the_pool_limits_only() -> None:
    """``per_key=[Concurrency(1)]`` binds keyed jobs only: three 1 s jobs without a key run
    together, three of one key one after the other."""
    probe = Probe()
    t0 = anyio.current_time()
    async with WorkerPool(per_key=[Concurrency(1)]) as pool:
        for i in range(3):
            pool.run(probe.job, (None, i), 1.0)
            pool.run(probe.job, ("k", i), 1.0, key="k")
    assert starts_by_key(probe, t0) == {
        None: [approx(0)] * 3,
        "k": [approx(t) for t in (0, 1, 2)],
    }


@pytest.mark.parametrize("seed", range(3))
async def test_random_keyed_programs_keep_every_limit(seed: int) -> None:
    """Random keys, arrivals and durations: each key's rate and concurrency hold for it, and the
    pool's rate and size for all."""
    rng = random.Random(seed)
    probe = Probe(limit=4)
    running: dict[object, int] = defaultdict(int)
    peaks: dict[object, int] = defaultdict(int)

    async def job(key: object, i: int, duration: float) -> None:
        running[key] += 1
        peaks[key] = max(peaks[key], running[key])
        try:
            await probe.job((key, i), duration)
        finally:
            running[key] -= 1

    t0 = anyio.current_time()
    async with WorkerPool(size=4, rate=20, per_key=[Rate(2, burst=2), Concurrency(2)]) as pool:
        for i in range(60):
            if rng.random() < 0.3:
                await anyio.sleep(rng.choice([0.05, 0.3, 1.0]))
            key = rng.choice(["a", "a", "a", "b", "c", "d", "e"])
            pool.run(job, key, i, rng.choice([0.0, 0.2, 1.5]), key=key)
    assert len(probe.starts) == 60
    assert rate_violation(probe.starts, 20, 1) is None
    for key, starts in starts_by_key(probe, t0).items():
        assert rate_violation(starts, 2, 2) is None, key
        assert peaks[key] <= 2
    # Within a key, in submission order.
    for key in "abcde":
        labels = [i for k, i in probe.order if k == key]
        assert labels == sorted(labels)
    assert_idle(pool)


# -- idle keys are dropped -----------------------------------------------------------------------


async def test_idle_keys_are_dropped_once_their_limits_are_at_rest() -> None:
    """50 keys under ``per_key=[Rate(1)]`` with one job each: 50 keys while their buckets
    refill (until 1 s after their start), then none."""
    async with WorkerPool(per_key=[Rate(1)]) as pool:
        assert pool.statistics().keys == 0
        futures = [pool.run(anyio.sleep, 0, key=k) for k in range(50)]
        for future in futures:
            await future
        await anyio.sleep(0.5)
        assert pool.statistics().keys == 50
        await anyio.sleep(0.6)
        assert pool.statistics().keys == 0


async def test_a_key_stays_while_it_has_work_and_goes_after() -> None:
    """``per_key=[Concurrency(1)]``: a key with a running or queued job counts; once its jobs
    are done it is gone."""
    async with WorkerPool(per_key=[Concurrency(1)]) as pool:
        pool.run(anyio.sleep, 2.0, key="a")
        pool.run(anyio.sleep, 1.0, key="a")
        pool.run(anyio.sleep, 1.0, key="b")
        await anyio.sleep(0.5)
        assert pool.statistics().keys == 2
        await anyio.sleep(1.0)  # b is done; a runs its first job, the second waits
        assert pool.statistics().keys == 1
        await anyio.sleep(2.0)
        assert pool.statistics().keys == 0


async def test_keys_ever_seen_do_not_accumulate() -> None:
    """300 keys, one job each, one key every 2 s under ``per_key=[Rate(1)]``: at most one key
    is ever held (the one in use), so memory follows the keys in use, not the keys seen."""
    async with WorkerPool(per_key=[Rate(1)]) as pool:
        for k in range(300):
            await pool.call(anyio.sleep, 0, key=("host", k))
            assert pool.statistics().keys == 1
            await anyio.sleep(2.0)
            assert pool.statistics().keys == 0


async def test_a_dropped_key_comes_back_with_fresh_limits() -> None:
    """A key dropped at rest and used again behaves as a new key: ``Rate(1, burst=2)`` lets two
    start at once again."""
    probe = Probe()
    async with WorkerPool(per_key=[Rate(1, burst=2)]) as pool:
        for i in range(2):
            pool.run(probe.job, ("a", i), key="a")
        await anyio.sleep(5)
        assert pool.statistics().keys == 0
        t0 = anyio.current_time()
        for i in range(3):
            pool.run(probe.job, ("a", i), key="a")
    assert [t - t0 for t in probe.starts[2:]] == [approx(t) for t in (0, 0, 1)]


# -- key must be hashable ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method",
    ENTRY_POINTS,
)
async def test_an_unhashable_key_is_refused_naming_key(method: str) -> None:
    """``key=[1]``: TypeError naming ``key`` at the call (map: when it reads the item)."""

    async def job(item: object) -> object:
        return item

    async with WorkerPool(per_key=[Rate(1)]) as pool:
        with pytest.raises(TypeError, match=r"\bkey\b"):
            if method == "map":
                async for _ in pool.map(job, [1], key=lambda item: [item]):
                    pass
            else:
                await submit_by(pool, method, job, 1, key=[1])
        assert pool.statistics().submitted == 0


@pytest.mark.parametrize("key", [0, "", (), ("host", 443), frozenset({1})])
async def test_any_hashable_is_a_key(key: Any) -> None:
    """Falsy and composite hashables are keys like any other (only None means no key)."""
    probe = Probe()
    t0 = anyio.current_time()
    async with WorkerPool(per_key=[Rate(1)]) as pool:
        for i in range(2):
            pool.run(probe.job, (key, i), key=key)
    assert [t - t0 for t in probe.starts] == [approx(0), approx(1)]
