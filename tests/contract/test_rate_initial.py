"""``Rate(..., initial=)``: how many units a fresh bucket lets start at once.

``Rate(6, burst=2, initial=1)``: a fresh bucket's first start goes at once and the next one a
whole interval later (no back-to-back pair at the start, which fresh connections deliver out
of order to a server with the same burst); afterwards the burst lets a start that came late
catch up, as any ``burst=2`` does. Each key's bucket is fresh when the key is first seen.
Both backends, virtual time.
"""

from __future__ import annotations

import anyio
import pytest
from support import rate_violation

from werkpool import Rate, WorkerPool

pytestmark = pytest.mark.anyio


async def _starts(limit: Rate, delays: dict[int, float], n: int = 8) -> list[float]:
    """Start times of *n* jobs of one key under ``per_key=[limit]``; the job whose index is in
    *delays* is submitted that long after the others (it comes late)."""
    times: list[float] = []

    async def job() -> None:
        times.append(anyio.current_time())

    async with WorkerPool(per_key=[limit]) as pool:
        t0 = anyio.current_time()
        for i in range(n):
            if i in delays:
                await anyio.sleep(t0 + delays[i] - anyio.current_time())
            pool.run(job, key="k")
    return [t - t0 for t in times]


async def test_a_fresh_bucket_with_initial_1_starts_one_then_the_rate() -> None:
    """``Rate(6, burst=2, initial=1)``: 0, 1/6, 2/6... (with ``burst=2`` alone: 0, 0, 1/6...)."""
    with_initial = await _starts(Rate(6, burst=2, initial=1), {})
    assert with_initial == pytest.approx([i / 6 for i in range(8)])
    plain = await _starts(Rate(6, burst=2), {})
    assert plain == pytest.approx([0.0, 0.0] + [i / 6 for i in range(1, 7)])


async def test_the_burst_still_lets_a_late_start_catch_up() -> None:
    """The 4th job is submitted 0.2 s late (its slot was 0.5 s, it comes at 0.7 s): the
    5th follows at once, and from there the rate; any window holds the burst of 2 at most."""
    times = await _starts(Rate(6, burst=2, initial=1), {3: 0.7})
    assert times[:3] == pytest.approx([0.0, 1 / 6, 2 / 6])
    assert times[3] == pytest.approx(0.7)
    assert times[4] == pytest.approx(0.7)  # caught up: the burst's second unit
    assert times[5] == pytest.approx(0.7 + 1 / 6)
    assert rate_violation(times, 6, 2) is None


async def test_initial_applies_to_each_new_key() -> None:
    """Two keys, each fresh when first seen: each starts one at once, then its rate."""
    times: dict[str, list[float]] = {"a": [], "b": []}

    async def job(key: str) -> None:
        times[key].append(anyio.current_time())

    async with WorkerPool(per_key=[Rate(6, burst=2, initial=1)]) as pool:
        for key in ("a", "b"):
            for _ in range(3):
                pool.run(job, key, key=key)
    for key in ("a", "b"):
        assert times[key] == pytest.approx([0.0, 1 / 6, 2 / 6]), key


async def test_a_unit_rate_holds_back_the_rest_of_its_burst() -> None:
    """``Rate(1000, burst=1000, unit="tokens", initial=400)``: 400 tokens at once, then the
    next 300 wait until the bucket drained enough (0.3 s: 700 of 1000 in the bucket)."""
    times: list[float] = []

    async def job() -> None:
        times.append(anyio.current_time())

    limit = Rate(1000, burst=1000, unit="tokens", initial=400)
    async with WorkerPool(limits=[limit]) as pool:
        pool.run(job, cost={"tokens": 400})
        pool.run(job, cost={"tokens": 300})
    assert times == pytest.approx([0.0, 0.3])


def test_initial_is_shown_and_kept() -> None:
    limit = Rate(6, burst=2, initial=1)
    assert limit.initial == 1
    assert repr(limit) == "Rate(6, per=1, burst=2, initial=1)"
    assert Rate(6, burst=2).initial is None


def test_a_shared_rate_refuses_initial() -> None:
    class Store:
        def bind(self) -> None: ...

    with pytest.raises(ValueError, match="initial"):
        Rate(6, burst=2, initial=1).shared(Store(), "x")  # type: ignore[arg-type]
