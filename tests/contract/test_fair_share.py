"""Issue #22 item 2: the keys share the pool-wide limits fairly (start-time fair queuing).

Among the keys whose head may start, each gets the pool-wide slots in proportion to its weight
(``key_weight=``, default 1), however many jobs it queued first; the jobs without a key are one
more flow of weight 1; within a key, jobs start in submission order; a key held back by its own
limits never holds back the others. Both backends, virtual time.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from typing import Any, cast

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import BACKENDS, assert_idle, rate_violation, run_virtual

from werkpool import Rate, WorkerPool

pytestmark = pytest.mark.anyio


class Starts:
    """Records each job's label and start time, in start order."""

    def __init__(self) -> None:
        self.order: list[tuple[Any, int]] = []
        self.times: list[float] = []

    async def job(self, key: Any, index: int, seconds: float = 0.0) -> None:
        self.order.append((key, index))
        self.times.append(anyio.current_time())
        if seconds:
            await anyio.sleep(seconds)


def _slots_of(starts: Starts) -> dict[Any, list[int]]:
    """Each key's start slots (indexes in the pool's start order), in its own start order."""
    slots: dict[Any, list[int]] = defaultdict(list)
    for slot, (key, _) in enumerate(starts.order):
        slots[key].append(slot)
    return dict(slots)


def _fifo_within_each_key(starts: Starts) -> bool:
    by_key: dict[Any, list[int]] = defaultdict(list)
    for key, index in starts.order:
        by_key[key].append(index)
    return all(indexes == sorted(indexes) for indexes in by_key.values())


# -- a hot key gets its share, not the whole pool ------------------------------------------------


async def test_cold_keys_start_within_their_share_while_a_hot_key_queued_200_first() -> None:
    """``rate=10``: a hot key queues 200 jobs, then 10 cold keys 5 each. The slots go round
    robin: every cold key's 5 jobs start within the first 11 x 5 = 55 slots (before the fix the
    hot key's 200 went first: the cold keys' jobs took slots 200 to 249); the hot key gets one
    slot per round meanwhile; within each key, submission order; the pool's rate holds."""
    starts = Starts()
    cold = [f"cold{i}" for i in range(10)]
    async with WorkerPool(rate=10) as pool:
        for i in range(200):
            pool.run(starts.job, "hot", i, key="hot")
        for key in cold:
            for i in range(5):
                pool.run(starts.job, key, i, key=key)
    slots = _slots_of(starts)
    assert len(starts.order) == 250
    for key in cold:
        assert max(slots[key]) < 55, (key, slots[key])
    # One slot per round of 11 flows while the cold keys wait: 5 of the first 55.
    assert Counter(key for key, _ in starts.order[:55])["hot"] == 5
    assert _fifo_within_each_key(starts)
    assert rate_violation(starts.times, 10, 1) is None
    assert_idle(pool)


async def test_weights_give_proportional_shares() -> None:
    """``key_weight``: a (3), b (1), c (default-like 1.0 by the callable), 60 jobs each, all
    queued before any start: in every prefix of the start order the counts follow 3:1:1 (up to
    one round), and ``key_weight`` is asked once per key, never for the jobs without a key."""
    starts = Starts()
    asked: list[object] = []

    def weight(key: object) -> float:
        asked.append(key)
        return 3.0 if key == "a" else 1.0

    async with WorkerPool(rate=100, key_weight=weight) as pool:
        for key in "abc":
            for i in range(60):
                pool.run(starts.job, key, i, key=key)
    assert sorted(map(str, asked)) == ["a", "b", "c"]
    counts: Counter[Any] = Counter()
    for n, (key, _) in enumerate(starts.order[:100], 1):
        counts[key] += 1
        assert abs(counts["a"] - 3 * n / 5) <= 3, (n, counts)
        assert abs(counts["b"] - n / 5) <= 1, (n, counts)
        assert abs(counts["c"] - n / 5) <= 1, (n, counts)
    assert _fifo_within_each_key(starts)


async def test_jobs_without_a_key_are_one_more_flow() -> None:
    """100 jobs without a key queued first, then 5 of key k: k's jobs take every other slot
    (the jobs without a key are one flow of weight 1), not the slots after the 100."""
    starts = Starts()
    async with WorkerPool(rate=10) as pool:
        for i in range(100):
            pool.run(starts.job, None, i)
        for i in range(5):
            pool.run(starts.job, "k", i, key="k")
    assert _slots_of(starts)["k"] == [1, 3, 5, 7, 9]
    assert _fifo_within_each_key(starts)


async def test_a_key_that_was_held_back_banks_no_credit() -> None:
    """``rate=10``: key "late" queues 20 jobs first but is paused for 1 s; "hot" queues 40.
    Hot takes the slots meanwhile (a held key blocks no one); when late's pause ends, the two
    take turns: late does not take 10 slots in a row to catch up (before the fix its older jobs
    took the next 20 slots)."""
    starts = Starts()
    async with WorkerPool(rate=10) as pool:
        pool.pause_for(1.0, key="late")
        for i in range(20):
            pool.run(starts.job, "late", i, key="late")
        for i in range(40):
            pool.run(starts.job, "hot", i, key="hot")
    keys = [key for key, _ in starts.order]
    assert keys[:10] == ["hot"] * 10
    after = keys[10:50]
    # A flow that comes back starts at the current virtual time, level with the others: it may
    # go twice before the round turns, never more.
    assert all(len(set(after[i : i + 3])) == 2 for i in range(len(after) - 2)), after
    assert max(_slots_of(starts)["late"]) <= 51
    assert rate_violation(starts.times, 10, 1) is None
    assert _fifo_within_each_key(starts)


# -- key_weight= is checked ----------------------------------------------------------------------


async def test_key_weight_must_be_a_callable() -> None:
    with pytest.raises(TypeError, match="key_weight must be None or a callable"):
        WorkerPool(key_weight=3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("weight", "error", "message"),
    [
        (0, ValueError, "finite number > 0"),
        (-1.0, ValueError, "finite number > 0"),
        (math.nan, ValueError, "finite number > 0"),
        (math.inf, ValueError, "finite number > 0"),
        (1e-320, ValueError, "finite number > 0"),  # its inverse overflows
        pytest.param(10**400, ValueError, "finite number > 0", id="10**400"),
        ("2", TypeError, "must return a number > 0, not str"),
        (True, TypeError, "must return a number > 0, not bool"),
        (None, TypeError, "must return a number > 0, not NoneType"),
    ],
)
async def test_a_bad_weight_raises_at_the_keys_first_job_and_changes_nothing(
    weight: object, error: type[Exception], message: str
) -> None:
    starts = Starts()

    def key_weight(key: object) -> float:
        return 1.0 if key == "good" else cast("float", weight)  # a bad value, on purpose

    async with WorkerPool(rate=10, key_weight=key_weight) as pool:
        with pytest.raises(error, match=message) as caught:
            pool.run(starts.job, "bad", 0, key="bad")
        assert "key_weight('bad')" in str(caught.value)
        pool.run(starts.job, "good", 0, key="good")
        pool.run(starts.job, None, 0)
        assert pool.statistics().queued == 2
    assert starts.order == [("good", 0), (None, 0)]
    assert_idle(pool)


# -- no starvation, the rate holds, every job runs (Hypothesis) ----------------------------------

_BATCH = st.tuples(
    st.floats(min_value=0.0, max_value=3.0),  # wait before the batch
    st.lists(
        st.tuples(
            st.sampled_from([None, "a", "b", "c", "d", "e"]),  # key
            st.integers(min_value=1, max_value=12),  # how many jobs
            st.sampled_from([0.0, 0.05, 0.3]),  # each job's duration
        ),
        min_size=1,
        max_size=4,
    ),
)


@pytest.mark.parametrize("backend", BACKENDS)
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    print_blob=True,
)
@given(
    batches=st.lists(_BATCH, min_size=1, max_size=5),
    rate=st.sampled_from([5.0, 20.0]),
    burst=st.sampled_from([1, 3]),
    weighted=st.booleans(),
)
def test_random_submissions_never_starve_a_key(
    backend: str, batches: list[Any], rate: float, burst: int, weighted: bool
) -> None:
    """Random batches of jobs across keys (and without a key), submitted over time under a pool
    Rate: every job runs; the rate contract holds; within a key, submission order; and a job
    starts at most ``2 x flows`` slots (weighted by the largest weight) after it became the
    head of its key (submitted, and every earlier job of its key started)."""
    weights = {"a": 1.0, "b": 2.0, "c": 0.5, "d": 1.0, "e": 4.0}

    def key_weight(key: object) -> float:
        return weights[key] if weighted else 1.0  # type: ignore[index]

    starts = Starts()
    heads: dict[tuple[Any, int], int] = {}  # label -> starts seen when it was submitted
    total = 0

    async def main() -> None:
        nonlocal total
        async with WorkerPool(limits=[Rate(rate, burst=burst)], key_weight=key_weight) as pool:
            counters: Counter[Any] = Counter()
            for wait, batch in batches:
                await anyio.sleep(wait)
                for key, count, seconds in batch:
                    for _ in range(count):
                        label = (key, counters[key])
                        counters[key] += 1
                        heads[label] = len(starts.order)
                        pool.run(starts.job, key, label[1], seconds, key=key)
                        total += 1
        assert_idle(pool)

    run_virtual(backend, main, seed=22)
    assert len(starts.order) == total  # all jobs ran, once
    assert rate_violation(starts.times, rate, burst) is None
    assert _fifo_within_each_key(starts)
    flows = {key for key, _ in starts.order}
    ratio = max(weights.values()) / min(weights.values()) if weighted else 1.0
    bound = math.ceil(2 * len(flows) * ratio) + 1
    slot_of = {label: slot for slot, label in enumerate(starts.order)}
    for (key, index), slot in slot_of.items():
        became_head = heads[(key, index)]
        if index:
            became_head = max(became_head, slot_of[(key, index - 1)] + 1)
        assert slot - became_head <= bound, ((key, index), slot, became_head, bound)


# -- key_order="submitted": the oldest waiting job first, whatever its key -----------------------


async def test_in_submission_order_the_hot_keys_200_go_first_without_a_limit_of_their_own() -> None:
    """``key_order="submitted"``, the same queue as the fair-share test above: the pool-wide
    slots go by submission, so the hot key's 200 jobs take slots 0 to 199 and the cold keys'
    follow in their own submission order; the pool's rate holds."""
    starts = Starts()
    cold = [f"cold{i}" for i in range(10)]
    async with WorkerPool(rate=10, key_order="submitted") as pool:
        for i in range(200):
            pool.run(starts.job, "hot", i, key="hot")
        for key in cold:
            for i in range(5):
                pool.run(starts.job, key, i, key=key)
    assert starts.order == [("hot", i) for i in range(200)] + [
        (key, i) for key in cold for i in range(5)
    ]
    assert rate_violation(starts.times, 10, 1) is None
    assert_idle(pool)


@pytest.mark.parametrize("key_order", ["fair", "submitted"])
async def test_a_key_held_by_its_own_rate_holds_up_no_other_key(key_order: str) -> None:
    """A hot key limited to 5/s by ``per_key=`` queues 100 jobs first, then 10 cold keys 10
    each, under a pool-wide ``rate=10``. Either way the cold keys take the slots the hot key's
    own rate leaves (no head-of-line blocking): all 200 start by 20 s. In submission order the
    hot key keeps its own pace from the start (its 100 by 19.8 s, the fastest its rate
    allows); in fair share it gets one slot in 11 while the cold keys wait (its 100th later)."""
    starts = Starts()
    cold = [f"cold{i}" for i in range(10)]
    pool = WorkerPool(rate=10, per_key=[Rate(5)], key_order=key_order)  # type: ignore[arg-type]
    async with pool:
        for i in range(100):
            pool.run(starts.job, "hot", i, key="hot")
        for key in cold:
            for i in range(10):
                pool.run(starts.job, key, i, key=key)
    hot = [t for (key, _), t in zip(starts.order, starts.times, strict=True) if key == "hot"]
    assert len(starts.order) == 200
    assert _fifo_within_each_key(starts)
    assert rate_violation(starts.times, 10, 1) is None
    assert rate_violation(hot, 5, 1) is None
    if key_order == "submitted":
        assert hot[-1] == pytest.approx(99 / 5)  # its own pace, from the first start
        assert max(starts.times) == pytest.approx(199 / 10)
    else:
        assert hot[-1] > 99 / 5 + 5  # held to a fair share while the cold keys wait
    assert_idle(pool)


async def test_in_submission_order_a_retried_job_keeps_its_place() -> None:
    """``key_order="submitted"``: a job that fails once is retried before the jobs submitted
    after it (of any key), as soon as its backoff is over."""
    starts = Starts()
    failed: set[int] = set()

    async def flaky(key: str, index: int) -> None:
        await starts.job(key, index)
        if index == 0 and key == "a" and index not in failed:
            failed.add(index)
            raise OSError("once")

    async with WorkerPool(rate=10, key_order="submitted") as pool:
        futures = [pool.run(flaky, "a", 0, key="a", retries=1, backoff=lambda n: 0.05)]
        futures += [pool.run(flaky, "b", i, key="b") for i in range(20)]
    for future in futures:
        assert future.done()
        assert future.exception() is None
    # Its backoff is over at 0.05 s: the retry takes the next slot (0.1 s), before b's jobs.
    assert starts.order[:3] == [("a", 0), ("a", 0), ("b", 0)]
    assert starts.times[:3] == pytest.approx([0.0, 0.1, 0.2])
    assert_idle(pool)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"key_order": "fifo"}, ValueError, "key_order must be 'fair' or 'submitted', not 'fifo'"),
        ({"key_order": None}, TypeError, "key_order must be 'fair' or 'submitted', not NoneType"),
        (
            {"key_order": "submitted", "key_weight": lambda key: 2},
            ValueError,
            "key_weight= weighs the keys' fair share: it needs key_order='fair'",
        ),
    ],
)
async def test_bad_key_order_raises_at_the_call(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=re.escape(message)):
        WorkerPool(**kwargs)
