"""Issue #21, round 2 of outside testing: the limits' arithmetic and their arguments.

* Item 3: fractional costs summed in floats left a residue (0.2 + 0.4 + 0.3 taken back is
  1.7e-16), so a job whose cost equals a ``Concurrency``'s or ``Window``'s capacity never started.
* Item 15: the same residue kept a per-key weighted ``Concurrency``'s key for good.
* Item 19: out-of-range numbers raised ``OverflowError``, or were accepted and failed later.

And issue #26: ``Rate(margin=)``, seconds added to the interval after each start.

Every pool test runs on asyncio and trio, on virtual time.
"""

from __future__ import annotations

import gc
import itertools
import random
import weakref

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import Probe, approx, rate_violation

from werkpool import Concurrency, Rate, RetryAfter, Window, WorkerPool
from werkpool._core._count_limit import CountLimit
from werkpool._core._limits import build
from werkpool._core._rate_limit import RateLimit
from werkpool._core._window_limit import WindowLimit

COSTS = (0.2, 0.4, 0.3)  # their float sum, taken back one by one, is 1.7e-16, not 0


class _Job:
    """The part of a job a limit reads: its cost, and its number (#22 item 4: a limit keeps each
    attempt's place by it, to settle its cost later)."""

    made = 0

    def __init__(self, cost: dict[str, float] | None) -> None:
        self.cost = cost
        _Job.made += 1
        self.seq = _Job.made


# -- item 3: fractional costs return to exactly 0 ---------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [Concurrency(1, unit="u"), Window(1, per=1, unit="u")],
    ids=["concurrency", "window"],
)
async def test_a_cost_equal_to_the_capacity_starts_after_fractional_ones(
    spec: Concurrency | Window,
) -> None:
    """Jobs of cost 0.2, 0.4 and 0.3 run side by side and end in that order; then a job of
    cost 1 starts, and in-use is exactly 0 (1.7e-16 before the fix: it never started)."""
    async with WorkerPool(limits=[spec]) as pool:
        for i, cost in enumerate(COSTS):
            pool.run(anyio.sleep, 0.1 * (i + 1), cost={"u": cost})
        await anyio.sleep(1.5)  # all ended, and the window forgot them
        stats = pool.statistics().limits[0]
        assert stats.in_use == 0.0
        with anyio.fail_after(5):  # never started before the fix
            await pool.call(anyio.sleep, 0, cost={"u": 1})


@settings(max_examples=200, deadline=None)
@given(
    costs=st.lists(
        st.floats(min_value=0, max_value=1, allow_nan=False, allow_infinity=False),
        min_size=1,
        max_size=30,
    ),
    seed=st.integers(0, 2**32 - 1),
)
def test_any_fractional_costs_return_every_limit_to_exactly_zero(
    costs: list[float], seed: int
) -> None:
    """Hypothesis: attempts of any fractional costs start, some are refunded, the rest end in
    any order: a concurrency limit's in-use is exactly 0 after, so is a window's once its
    period passed, and a job of the full capacity fits again."""
    rng = random.Random(seed)
    count = CountLimit(len(costs), unit="u")
    window = WindowLimit(len(costs), 1.0, unit="u")
    jobs = [_Job({"u": cost}) for cost in costs]
    running: list[_Job] = []
    for i, job in enumerate(jobs):
        for limit in (count, window):
            assert limit.earliest(job, 0.0) == -float("inf")
            limit.admit(job, i * 1e-3)
        if rng.random() < 0.2:
            count.refund(job)
            window.refund(job)
        else:
            running.append(job)
    rng.shuffle(running)
    for job in running:
        count.release(job)
    assert count.in_use == 0
    assert count.rest_at() == -float("inf")  # a key with this limit may be dropped
    full = _Job({"u": float(len(costs))})
    assert count.earliest(full, 5.0) == -float("inf")
    assert window.earliest(full, 5.0) == -float("inf")
    assert window.snapshot(5.0).in_use == 0.0


# -- item 15: a per-key weighted concurrency lets its key go ------------------------------------


async def test_keys_that_ran_fractional_costs_are_dropped() -> None:
    """200 keys, each running jobs of 0.2, 0.4 and 0.3 under ``per_key=[Concurrency(1,
    unit="u")]``: once they are done, no key is kept (200 were, before the fix)."""
    async with WorkerPool(per_key=[Concurrency(1, unit="u")]) as pool:
        async with anyio.create_task_group() as tg:
            for key in range(200):
                for cost in COSTS:
                    tg.start_soon(
                        lambda k=key, c=cost: pool.call(anyio.sleep, 0.1, key=k, cost={"u": c})
                    )
        await anyio.sleep(1)
        assert pool.statistics().keys == 0


# -- item 19: out-of-range numbers --------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Rate(1, per=10**400), r"Rate: per must be a finite number of seconds > 0"),
        (lambda: Window(1, per=10**400), r"Window: per must be a finite number of seconds > 0"),
        (lambda: RetryAfter(10**400), r"RetryAfter: seconds must be a finite number >= 0"),
        (lambda: Rate(1, margin=10**400), r"Rate: margin must be a finite number of seconds"),
        (lambda: WorkerPool(rate=1e16), r"rate must be <= 2\*\*53"),
        (lambda: WorkerPool(rate=2**60), r"rate must be <= 2\*\*53"),
    ],
    ids=["rate-per", "window-per", "retry-after", "margin", "pool-rate", "pool-rate-int"],
)
def test_out_of_range_numbers_raise_value_error_at_the_call(make: object, match: str) -> None:
    """Each raises ValueError naming the argument (OverflowError, or an error only at
    ``async with``, before the fix)."""
    with pytest.raises(ValueError, match=match):
        make()  # type: ignore[operator]


async def test_a_huge_cost_raises_value_error_at_the_call() -> None:
    """``cost={"tokens": 10**400}`` raises ValueError naming ``cost['tokens']``."""
    async with WorkerPool(limits=[Rate(10, burst=10, unit="tokens")]) as pool:
        with pytest.raises(ValueError, match=r"cost\['tokens'\] must be a finite number >= 0"):
            pool.run(anyio.sleep, 0, cost={"tokens": 10**400})


async def test_setting_a_huge_rate_on_a_pool_is_refused() -> None:
    """``pool.rate = 1e16`` raises ValueError and leaves the pool as it was."""
    async with WorkerPool(rate=10) as pool:
        with pytest.raises(ValueError, match=r"rate must be <= 2\*\*53"):
            pool.rate = 1e16
        assert pool.rate == 10


# -- issue #26: Rate(margin=) -------------------------------------------------------------------


async def test_a_margin_is_added_to_each_interval() -> None:
    """``Rate(10, margin=0.02)``: starts 0.12 s apart, not 0.1."""
    probe = Probe()
    async with WorkerPool(limits=[Rate(10, margin=0.02)]) as pool:
        t0 = anyio.current_time()
        for i in range(5):
            pool.run(probe.job, i)
    assert [t - t0 for t in probe.starts] == [approx(0.12 * i) for i in range(5)]


async def test_a_margin_keeps_the_burst_and_the_window_bound() -> None:
    """``Rate(10, burst=3, margin=0.01)``: three at once, then one every 0.11 s; the rate
    contract of ``Rate(10, burst=3)`` holds all the more."""
    probe = Probe()
    async with WorkerPool(limits=[Rate(10, burst=3, margin=0.01)]) as pool:
        t0 = anyio.current_time()
        for i in range(8):
            pool.run(probe.job, i)
    starts = [t - t0 for t in probe.starts]
    assert starts[:3] == [approx(0)] * 3
    assert [b - a for a, b in itertools.pairwise(starts[2:])] == [approx(0.11)] * 5
    assert rate_violation(probe.starts, 10, 3) is None


def test_the_default_margin_is_zero_and_repr_shows_a_margin() -> None:
    """The default keeps the exact schedule; a margin shows in the repr and reaches the live
    limit."""
    assert Rate(10).margin == 0.0
    assert repr(Rate(10)) == "Rate(10, per=1, burst=1)"
    assert repr(Rate(10, margin=0.0005)) == "Rate(10, per=1, burst=1, margin=0.0005)"
    limit = build(Rate(100, margin=0.001))
    assert isinstance(limit, RateLimit)
    limit.admit(None, 0.0)
    assert limit.earliest(None, 0.0) == approx(0.011)


@pytest.mark.parametrize(
    ("margin", "error", "match"),
    [
        ("1ms", TypeError, r"Rate: margin must be a finite number of seconds >= 0, not str"),
        (True, TypeError, r"Rate: margin must be a finite number of seconds >= 0, not bool"),
        (-0.001, ValueError, r"Rate: margin must be a finite number of seconds >= 0, got"),
        (float("nan"), ValueError, r"Rate: margin must be a finite number of seconds >= 0"),
        (2.0, ValueError, r"Rate: margin must be at most per \(1 s\), got 2.0 s"),
    ],
)
def test_a_bad_margin_is_refused(margin: object, error: type[Exception], match: str) -> None:
    """A margin is a number of seconds from 0 to ``per``."""
    with pytest.raises(error, match=match):
        Rate(10, margin=margin)  # type: ignore[arg-type]


def test_a_shared_rate_cannot_have_a_margin() -> None:
    """The store spaces a shared rate by its own clock: a margin there would be ignored, so it
    is refused at the call."""

    class Store:
        def bind(self, *args: object) -> object:
            return None

    with pytest.raises(ValueError, match=r"cannot be shared: the store spaces"):
        Rate(10, margin=0.001).shared(Store(), "api")  # type: ignore[arg-type]


# -- item 6, follow-up: resume() keeps the workers' view of the backoffs -------------------------


async def test_resume_leaves_no_settled_job_behind() -> None:
    """``size=1``: a job pushed back for 60 s, ``resume()`` at 1 s: it is retried at once and
    done, and nothing keeps its record (R53). Before the fix resume() gave the scheduler a new
    backoff list while each worker kept reading the old one, which held the job for good."""

    async def job(attempts: list[float]) -> str:
        attempts.append(anyio.current_time())
        if len(attempts) == 1:
            raise RetryAfter(60)
        return "done"

    async with WorkerPool(size=1) as pool:
        t0 = anyio.current_time()
        attempts: list[float] = []
        future = pool.run(job, attempts, retries=1)
        await anyio.sleep(1)
        pool.resume()
        assert await future == "done"
        assert [t - t0 for t in attempts] == [approx(0), approx(1)]
        gone = weakref.ref(future)
        del future
        await anyio.sleep(0.1)  # the loop runs the callbacks the future's completion queued
        gc.collect()
        assert gone() is None, "the settled job is still referenced"
        assert await pool.call(anyio.sleep, 0) is None  # the pool goes on
