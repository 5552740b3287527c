"""Contract #12: runtime control of a running pool.

``pool.size = n`` grows at once and shrinks by letting the running attempts finish (no new
start until fewer than ``n`` run); ``pool.rate = r`` and ``pool.set_limits([...])`` replace
limits without ever handing out banked credit (a new rate takes over the units in the old
bucket, which drain at the new rate; a new window keeps counting the old one's starts);
``pause()``, ``resume()`` and ``pause_for()`` stop every start while paused, a
``pause_for`` extends a pause and never shortens it, and ``resume()`` ends every pause.
"""

from __future__ import annotations

import math
import random
import re
from typing import Any

import anyio
import pytest
from support import Probe, approx, assert_idle, max_starts_in, rate_violation

from werkpool import Concurrency, Rate, Window, WorkerPool

INF = math.inf


async def at(t0: float, when: float) -> None:
    """Sleep until *when* seconds after *t0*."""
    await anyio.sleep_until(t0 + when)


def since(probe: Probe, t0: float) -> list[float]:
    return [t - t0 for t in probe.starts]


# -- pool.size -----------------------------------------------------------------------------------

#: A rate that never binds but puts the size among the admission checks (the other code path).
LOOSE_RATE = [{}, {"rate": 1000, "burst": 1000}]
LOOSE_IDS = ["size-only", "with-rate"]


@pytest.mark.parametrize("extra", LOOSE_RATE, ids=LOOSE_IDS)
async def test_shrinking_lets_running_attempts_finish(extra: dict[str, Any]) -> None:
    """size 3 -> 1 at 0.5 s with three 1 s jobs running: all three finish (none cancelled),
    and then the other six run one at a time."""
    probe = Probe()
    t0 = anyio.current_time()
    async with WorkerPool(size=3, **extra) as pool:
        futures = [pool.run(probe.job, i, 1.0) for i in range(9)]
        await at(t0, 0.5)
        pool.size = 1
        assert pool.size == 1
        assert pool.statistics().running == 3
        await at(t0, 1.5)
        assert pool.statistics().running == 1
    assert [await f for f in futures] == list(range(9))
    assert since(probe, t0) == [approx(t) for t in (0, 0, 0, 1, 2, 3, 4, 5, 6)]
    assert pool.statistics().size == 1
    assert_idle(pool)


@pytest.mark.parametrize("extra", LOOSE_RATE, ids=LOOSE_IDS)
async def test_after_shrinking_nothing_starts_until_fewer_than_size_run(
    extra: dict[str, Any],
) -> None:
    """size 3 -> 2 with jobs of 1, 2 and 3 s running: when the first ends at 1, two still run,
    so nothing starts; the next starts at 2, and two at 3 when both running ones end."""
    probe = Probe()
    t0 = anyio.current_time()
    async with WorkerPool(size=3, **extra) as pool:
        for i, duration in enumerate([1.0, 2.0, 3.0, 1.0, 1.0, 1.0, 1.0]):
            pool.run(probe.job, i, duration)
        await at(t0, 0.5)
        pool.size = 2
    assert since(probe, t0) == [approx(t) for t in (0, 0, 0, 2, 3, 3, 4)]


@pytest.mark.parametrize("extra", LOOSE_RATE, ids=LOOSE_IDS)
async def test_growing_starts_waiting_jobs_at_once(extra: dict[str, Any]) -> None:
    """size 1 -> 3 at 0.5 s: two waiting jobs start at 0.5, the fourth when the first ends."""
    probe = Probe()
    t0 = anyio.current_time()
    async with WorkerPool(size=1, **extra) as pool:
        for i in range(4):
            pool.run(probe.job, i, 1.0)
        await at(t0, 0.5)
        pool.size = 3
        assert pool.size == 3
    assert since(probe, t0) == [approx(t) for t in (0, 0.5, 0.5, 1.0)]
    assert probe.peak == 3


async def test_size_none_lifts_the_bound() -> None:
    """size 1 -> None: every waiting job starts at once."""
    probe = Probe()
    t0 = anyio.current_time()
    async with WorkerPool(size=1) as pool:
        for i in range(5):
            pool.run(probe.job, i, 1.0)
        await at(t0, 0.5)
        pool.size = None
        assert pool.size is None
    assert since(probe, t0) == [approx(t) for t in (0, 0.5, 0.5, 0.5, 0.5)]


async def test_a_pool_without_size_can_be_given_one() -> None:
    """None -> 2 while five 1 s jobs run: no new start until fewer than two run."""
    probe = Probe()
    t0 = anyio.current_time()
    async with WorkerPool(rate=1000, burst=1000) as pool:
        for i in range(5):
            pool.run(probe.job, i, 1.0)
        await at(t0, 0.5)
        for i in range(5, 8):
            pool.run(probe.job, i, 1.0)
        pool.size = 2
    assert since(probe, t0) == [approx(t) for t in (0,) * 5 + (1, 1, 2)]


# -- pool.rate -----------------------------------------------------------------------------------


async def test_a_faster_rate_keeps_the_units_in_the_bucket() -> None:
    """rate 1 -> 100 at 2.5 s, a start at 2.0 still half in the bucket: that half unit drains at
    the new rate (5 ms), so the next start is at 2.505, not 2.5 as a fresh bucket would allow;
    then one every 10 ms."""
    probe = Probe()
    t0 = anyio.current_time()
    async with WorkerPool(rate=1) as pool:
        for i in range(6):
            pool.run(probe.job, i)
        await at(t0, 2.5)
        pool.rate = 100
        assert (pool.rate, pool.statistics().rate) == (100, 100)
    assert since(probe, t0) == [approx(t) for t in (0, 1, 2, 2.505, 2.515, 2.525)]


async def test_a_faster_rate_on_an_idle_pool_gives_no_early_start() -> None:
    """rate 1, one start at 0; rate -> 10 at 0.2: the 0.8 unit left in the bucket drains in
    0.08 s, so a new job starts at 0.28, not 0.2 as a fresh bucket would allow."""
    probe = Probe()
    t0 = anyio.current_time()
    async with WorkerPool(rate=1) as pool:
        await pool.run(probe.job, "first")
        await at(t0, 0.2)
        pool.rate = 10
        for i in range(3):
            pool.run(probe.job, i)
    assert since(probe, t0) == [approx(t) for t in (0, 0.28, 0.38, 0.48)]


async def test_a_slower_rate_drains_the_bucket_at_the_new_rate() -> None:
    """rate 10 -> 1 at 0.05 s: the half unit in the bucket drains at 1/s (0.55), then one per
    second; keeping the old end time (0.1) would free half a slot the new rate never gave."""
    probe = Probe()
    t0 = anyio.current_time()
    async with WorkerPool(rate=10) as pool:
        for i in range(4):
            pool.run(probe.job, i)
        await at(t0, 0.05)
        pool.rate = 1
    assert since(probe, t0) == [approx(t) for t in (0, 0.55, 1.55, 2.55)]


async def test_rate_keeps_its_burst_and_banks_no_more() -> None:
    """rate=1, burst=3, idle for 10 s, then rate -> 2: three go at once (the burst), then one
    every 0.5 s."""
    probe = Probe()
    t0 = anyio.current_time()
    async with WorkerPool(rate=1, burst=3) as pool:
        await at(t0, 10)
        pool.rate = 2
        assert pool.burst == 3
        for i in range(5):
            pool.run(probe.job, i)
    assert since(probe, t0) == [approx(t) for t in (10, 10, 10, 10.5, 11)]
    assert rate_violation(probe.starts, 2, 3) is None


async def test_rate_none_lifts_the_rate() -> None:
    """rate 1 -> None at 1.5 s: every waiting job starts at once."""
    probe = Probe()
    t0 = anyio.current_time()
    async with WorkerPool(rate=1) as pool:
        for i in range(5):
            pool.run(probe.job, i)
        await at(t0, 1.5)
        pool.rate = None
        assert pool.rate is None
    assert since(probe, t0) == [approx(t) for t in (0, 1, 1.5, 1.5, 1.5)]


# -- set_limits ----------------------------------------------------------------------------------


async def test_set_limits_replaces_a_rate_without_banked_credit() -> None:
    """``[Rate(1)]`` -> ``[Rate(4)]`` at 1.5 s: the half unit left by the start at 1.0 drains at
    4/s (1.625), then one every 0.25 s."""
    probe = Probe()
    t0 = anyio.current_time()
    async with WorkerPool(limits=[Rate(1)]) as pool:
        for i in range(6):
            pool.run(probe.job, i)
        await at(t0, 1.5)
        pool.set_limits([Rate(4)])
        assert pool.limits == (Rate(4),)
    assert since(probe, t0) == [approx(t) for t in (0, 1, 1.625, 1.875, 2.125, 2.375)]


async def test_set_limits_replaces_a_window_that_keeps_counting() -> None:
    """``[Window(2, per=1)]`` -> ``[Window(3, per=1)]`` at 0.5 s: the two starts at 0 still
    count, so one more starts at 0.5, two at 1.0 (as those leave) and one at 1.5."""
    probe = Probe()
    t0 = anyio.current_time()
    async with WorkerPool(limits=[Window(2, per=1)]) as pool:
        for i in range(6):
            pool.run(probe.job, i)
        await at(t0, 0.5)
        pool.set_limits([Window(3, per=1)])
    assert since(probe, t0) == [approx(t) for t in (0, 0, 0.5, 1, 1, 1.5)]
    assert max_starts_in(probe.starts, 1.0) == 3


async def test_set_limits_keeps_the_shorthands() -> None:
    """``rate=4, limits=[Concurrency(1)]`` -> ``set_limits([])`` at 1.5 s with 1 s jobs: the
    concurrency bound goes, ``rate=4`` stays (1.5, 1.75, 2.0)."""
    probe = Probe()
    t0 = anyio.current_time()
    async with WorkerPool(rate=4, limits=[Concurrency(1)]) as pool:
        for i in range(5):
            pool.run(probe.job, i, 1.0)
        await at(t0, 1.5)
        pool.set_limits([])
        assert (pool.size, pool.rate, pool.limits) == (None, 4, ())
    assert since(probe, t0) == [approx(t) for t in (0, 1, 1.5, 1.75, 2.0)]


async def test_a_new_concurrency_counts_the_attempts_running_now() -> None:
    """Three 1 GB jobs run until 2 s; ``set_limits([Concurrency(2, unit="gb")])`` at 0.5: the
    waiting 1 GB job starts at 2 (when they end), not at once."""
    probe = Probe()
    t0 = anyio.current_time()
    async with WorkerPool(limits=[Concurrency(4, unit="gb")]) as pool:
        for i in range(3):
            pool.run(probe.job, i, 2.0, cost={"gb": 1})
        await at(t0, 0.5)
        pool.run(probe.job, 3, 1.0, cost={"gb": 1})  # still fits under the old limit...
        pool.set_limits([Concurrency(2, unit="gb")])  # ...but it is replaced before it starts
    assert since(probe, t0) == [approx(t) for t in (0, 0, 0, 2)]


@pytest.mark.parametrize(
    ("limits", "error"),
    [(5, TypeError), ("Rate(1)", TypeError), ([Rate(1), 2], TypeError), ([Rate], TypeError)],
    ids=["int", "str", "list-with-int", "class"],
)
async def test_set_limits_refuses_what_is_not_limit_values(
    limits: object, error: type[Exception]
) -> None:
    """``set_limits`` checks its argument as ``limits=`` does, and changes nothing then."""
    async with WorkerPool(limits=[Rate(3)]) as pool:
        with pytest.raises(error, match=r"\blimits\b"):
            pool.set_limits(limits)  # type: ignore[arg-type]
        assert pool.limits == (Rate(3),)


@pytest.mark.parametrize(
    ("attribute", "value", "error"),
    [
        ("size", 0, ValueError),
        ("size", -1, ValueError),
        ("size", 1.5, TypeError),
        ("size", "2", TypeError),
        ("rate", 0, ValueError),
        ("rate", -2.0, ValueError),
        ("rate", math.nan, ValueError),
        ("rate", math.inf, ValueError),
        ("rate", "2", TypeError),
    ],
)
async def test_bad_size_or_rate_is_refused_naming_it(
    attribute: str, value: object, error: type[Exception]
) -> None:
    """``pool.size = 0`` and the like: the error names the attribute; nothing changes."""
    async with WorkerPool(size=2, rate=5) as pool:
        with pytest.raises(error, match=rf"\b{attribute}\b"):
            setattr(pool, attribute, value)
        assert (pool.size, pool.rate) == (2, 5)


# -- pause, resume, pause_for --------------------------------------------------------------------


async def test_pause_stops_starts_until_resume_and_lets_running_attempts_finish() -> None:
    """pause() at 0.5 with a 2 s job running: it finishes at 2; the queued jobs start at 5, when
    resume() is called, and not before."""
    probe = Probe()
    t0 = anyio.current_time()
    async with WorkerPool(size=1) as pool:
        running = pool.run(probe.job, "running", 2.0)
        for i in range(3):
            pool.run(probe.job, i)
        await at(t0, 0.5)
        pool.pause()
        assert pool.paused
        assert pool.statistics().paused_until == INF
        await at(t0, 4.0)
        assert running.done()
        assert pool.statistics().queued == 3
        await at(t0, 5.0)
        pool.resume()
        assert not pool.paused
        assert pool.statistics().paused_until is None
    assert since(probe, t0) == [approx(t) for t in (0, 5, 5, 5)]
    assert probe.ends[0] - t0 == approx(2.0)


async def test_pause_for_ends_by_itself() -> None:
    """pause_for(3) at 1: jobs queued meanwhile start at 4; paused_until says when."""
    probe = Probe()
    t0 = anyio.current_time()
    async with WorkerPool() as pool:
        await at(t0, 1.0)
        pool.pause_for(3)
        assert pool.statistics().paused_until == approx(t0 + 4)
        for i in range(2):
            pool.run(probe.job, i)
        await at(t0, 3.9)
        assert pool.paused
        await at(t0, 4.0)
    assert since(probe, t0) == [approx(4), approx(4)]
    assert not pool.paused


async def test_pause_for_extends_a_pause_and_never_shortens_it() -> None:
    """pause_for(10) at 0, then pause_for(3) at 2 (would end at 5): still paused until 10; then
    pause_for(4) at 8 extends it to 12."""
    probe = Probe()
    t0 = anyio.current_time()
    async with WorkerPool() as pool:
        pool.pause_for(10)
        pool.run(probe.job, "a")
        await at(t0, 2.0)
        pool.pause_for(3)
        assert pool.statistics().paused_until == approx(t0 + 10)
        await at(t0, 8.0)
        assert probe.starts == []
        pool.pause_for(4)
        assert pool.statistics().paused_until == approx(t0 + 12)
        pool.run(probe.job, "b")
    assert since(probe, t0) == [approx(12), approx(12)]


async def test_pause_for_never_shortens_an_open_ended_pause() -> None:
    """pause() then pause_for(3): still paused at 4 (paused_until stays inf) until resume()."""
    probe = Probe()
    t0 = anyio.current_time()
    async with WorkerPool() as pool:
        pool.pause()
        pool.pause_for(3)
        pool.run(probe.job, "a")
        await at(t0, 4.0)
        assert pool.paused
        assert pool.statistics().paused_until == INF
        assert probe.starts == []
        await at(t0, 6.0)
        pool.resume()
    assert since(probe, t0) == [approx(6)]


async def test_resume_ends_timed_pauses_and_key_pauses_too() -> None:
    """pause_for(100) and pause_for(100, key="a"): resume() at 2 ends both."""
    probe = Probe()
    t0 = anyio.current_time()
    async with WorkerPool(per_key=[Rate(10)]) as pool:
        pool.pause_for(100)
        pool.pause_for(100, key="a")
        pool.run(probe.job, ("a", 0), key="a")
        pool.run(probe.job, (None, 0))
        await at(t0, 2.0)
        pool.resume()
    assert since(probe, t0) == [approx(2), approx(2)]


@pytest.mark.parametrize("per_key", [[], [Concurrency(10)]], ids=["no-per-key", "per-key"])
async def test_pause_for_a_key_holds_only_that_key(per_key: list[Any]) -> None:
    """pause_for(5, key="a"): a's jobs wait until 5; b's and unkeyed jobs start at once; the
    pool is not paused."""
    probe = Probe()
    t0 = anyio.current_time()
    async with WorkerPool(per_key=per_key) as pool:
        pool.pause_for(5, key="a")
        assert not pool.paused
        assert pool.statistics().paused_until is None
        for key in ("a", "b", None):
            pool.run(probe.job, key, key=key)
    starts = dict(zip(probe.order, since(probe, t0), strict=True))
    assert starts == {"a": approx(5), "b": approx(0), None: approx(0)}


async def test_a_pause_banks_no_rate_credit_beyond_burst() -> None:
    """rate=1, burst=2, paused for 10 s with six jobs waiting: two at 10, then one per second."""
    probe = Probe()
    t0 = anyio.current_time()
    async with WorkerPool(rate=1, burst=2) as pool:
        pool.pause_for(10)
        for i in range(6):
            pool.run(probe.job, i)
    assert since(probe, t0) == [approx(t) for t in (10, 10, 11, 12, 13, 14)]


async def test_pause_for_zero_changes_nothing() -> None:
    """pause_for(0) leaves the pool unpaused: a job starts at once."""
    probe = Probe()
    t0 = anyio.current_time()
    async with WorkerPool() as pool:
        pool.pause_for(0)
        assert not pool.paused
        await pool.run(probe.job, 0)
    assert since(probe, t0) == [approx(0)]


@pytest.mark.parametrize(
    ("seconds", "error"),
    [(-1, ValueError), (math.nan, ValueError), (math.inf, ValueError), ("1", TypeError)],
    ids=["negative", "nan", "inf", "str"],
)
async def test_pause_for_refuses_a_bad_delay_naming_seconds(
    seconds: object, error: type[Exception]
) -> None:
    """pause_for(seconds) takes a finite number >= 0."""
    async with WorkerPool() as pool:
        with pytest.raises(error, match=r"\bseconds\b"):
            pool.pause_for(seconds)  # type: ignore[arg-type]
        assert not pool.paused


async def test_pause_for_refuses_an_unhashable_key() -> None:
    """pause_for(1, key=[...]): TypeError naming ``key``."""
    async with WorkerPool() as pool:
        with pytest.raises(TypeError, match=re.escape("key")):
            pool.pause_for(1, key=["a"])


@pytest.mark.parametrize("seed", range(4))
async def test_no_attempt_starts_inside_a_pause(seed: int) -> None:
    """Random pause(), pause_for() and resume() calls over a stream of jobs under a size and a
    rate: no start falls inside a pause, replayed from the calls made; ``paused`` agrees with
    that replay whenever it is read."""
    rng = random.Random(seed)
    probe = Probe(limit=3)
    calls: list[tuple[float, str, float]] = []

    def paused_until(t: float, *, including_t: bool = False) -> float:
        """The pause in force from the calls made before *t* (or at *t* too)."""
        until = -INF
        for when, kind, seconds in calls:
            if when > t + 1e-9 or (not including_t and when >= t - 1e-9):
                break
            if kind == "pause":
                until = INF
            elif kind == "resume":
                until = -INF
            else:
                until = max(until, when + seconds)
        return until

    def inside_a_pause(t: float) -> bool:
        """Paused both before *t* and after the calls made at *t* (a call in the same instant
        may come before or after the start: a resume at *t* lets it start, a pause at *t* may
        follow it)."""
        return min(paused_until(t), paused_until(t, including_t=True)) > t + 1e-9

    async def control(pool: WorkerPool) -> None:
        for _ in range(25):
            await anyio.sleep(rng.choice([0.05, 0.3, 0.7, 1.5]))
            now = anyio.current_time()
            assert pool.paused == (paused_until(now, including_t=True) > now), now
            kind = rng.choice(["pause_for", "pause_for", "pause_for", "pause", "resume"])
            seconds = rng.choice([0.1, 0.5, 1.0, 3.0])
            calls.append((now, kind, seconds))
            if kind == "pause":
                pool.pause()
            elif kind == "resume":
                pool.resume()
            else:
                pool.pause_for(seconds)
        calls.append((anyio.current_time(), "resume", 0))
        pool.resume()

    async with WorkerPool(size=3, rate=8, burst=2) as pool, anyio.create_task_group() as tg:
        tg.start_soon(control, pool)
        for i in range(80):
            await anyio.sleep(rng.choice([0.0, 0.1, 0.25]))
            pool.run(probe.job, i, rng.choice([0.0, 0.2, 0.6]))
    assert len(probe.starts) == 80
    inside = [t for t in probe.starts if inside_a_pause(t)]
    assert inside == []
    assert rate_violation(probe.starts, 8, 2) is None
    assert probe.peak <= 3
    assert_idle(pool)
