"""Contract #12: limits as values (``Rate``, ``Window``, ``Concurrency``) given through ``limits=``.

Each value holds on a running pool exactly as the issue states it; the ``size=``/``rate=``/
``burst=`` shorthands are limits too and combine with ``limits=`` by AND; a value is frozen,
hashable and checked when made, and every bad argument is refused with an error that names it.
"""

from __future__ import annotations

import dataclasses
import math
import re

import anyio
import pytest
from support import Probe, approx, assert_idle, max_starts_in, rate_violation

from werkpool import Concurrency, Rate, Window, WorkerPool


async def _starts(pool: WorkerPool, probe: Probe, n: int, duration: float = 0.0) -> list[float]:
    """Run *n* jobs of *duration* on *pool* (already entered); return their starts from now."""
    t0 = anyio.current_time()
    futures = [pool.run(probe.job, i, duration) for i in range(n)]
    for future in futures:
        await future
    return [t - t0 for t in probe.starts]


# -- each value on its own -----------------------------------------------------------------------


class TestRate:
    async def test_burst_then_exact_spacing(self) -> None:
        """``Rate(8, burst=4)``: four start together, then one every 1/8 s, FIFO."""
        probe = Probe()
        async with WorkerPool(limits=[Rate(8, burst=4)]) as pool:
            starts = await _starts(pool, probe, 10)
        assert starts == [approx(t) for t in (0, 0, 0, 0, 1 / 8, 2 / 8, 3 / 8, 4 / 8, 5 / 8, 6 / 8)]
        assert probe.order == list(range(10))
        assert rate_violation(probe.starts, 8, 4) is None

    async def test_per_stretches_the_period(self) -> None:
        """``Rate(3, per=2)``: 3 starts per 2 s, i.e. one every 2/3 s."""
        probe = Probe()
        async with WorkerPool(limits=[Rate(3, per=2)]) as pool:
            starts = await _starts(pool, probe, 5)
        assert starts == [approx(k * 2 / 3) for k in range(5)]
        assert rate_violation(probe.starts, 1.5, 1) is None

    async def test_no_credit_banked_beyond_burst(self) -> None:
        """After 100 s idle, ``Rate(2, burst=3)`` lets exactly three go at once, not more."""
        probe = Probe()
        async with WorkerPool(limits=[Rate(2, burst=3)]) as pool:
            await pool.run(probe.job, "warm-up")
            await anyio.sleep(100)
            probe.starts.clear()
            starts = await _starts(pool, probe, 6)
        assert starts == [approx(t) for t in (0, 0, 0, 0.5, 1.0, 1.5)]


class TestWindow:
    async def test_strict_sliding_window(self) -> None:
        """``Window(3, per=1)``: a slot frees exactly ``per`` after the start that took it.

        Starts at 0, 0.5 and 0.9 fill the window; the next three start at 1.0, 1.5 and 1.9 (as
        each old start leaves), not at 1.0 all together as a fixed window would let them.
        """
        probe = Probe()
        t0 = anyio.current_time()
        async with WorkerPool(limits=[Window(3, per=1)]) as pool:
            for delay in (0.0, 0.5, 0.4):
                await anyio.sleep(delay)
                pool.run(probe.job, "early")
            for i in range(3):
                pool.run(probe.job, i)
        starts = [t - t0 for t in probe.starts]
        assert starts == [approx(t) for t in (0, 0.5, 0.9, 1.0, 1.5, 1.9)]
        assert max_starts_in(probe.starts, 1.0) == 3

    async def test_window_never_admits_a_second_burst_at_its_edge(self) -> None:
        """``Window(4, per=2)`` with 12 queued jobs: 4 at 0, 4 at 2, 4 at 4; never 5 in 2 s."""
        probe = Probe()
        async with WorkerPool(limits=[Window(4, per=2)]) as pool:
            starts = await _starts(pool, probe, 12)
        assert starts == [approx(t) for t in [0] * 4 + [2] * 4 + [4] * 4]
        assert max_starts_in(probe.starts, 2.0) == 4


class TestConcurrency:
    async def test_at_most_n_attempts_run(self) -> None:
        """``Concurrency(2)`` with six 1 s jobs: two at a time, each pair as the last ends."""
        probe = Probe(limit=2)
        async with WorkerPool(limits=[Concurrency(2)]) as pool:
            assert pool.size == 2
            starts = await _starts(pool, probe, 6, 1.0)
        assert starts == [approx(t) for t in (0, 0, 1, 1, 2, 2)]
        assert probe.peak == 2
        assert_idle(pool)

    def test_size_is_the_smallest_unitless_concurrency(self) -> None:
        """``pool.size``: the smallest of ``size=`` and the unit-less Concurrency values."""
        assert WorkerPool(size=5, limits=[Concurrency(3), Concurrency(4)]).size == 3
        assert WorkerPool(size=2, limits=[Concurrency(3)]).size == 2
        assert WorkerPool(limits=[Concurrency(1, unit="gb"), Rate(3)]).size is None
        assert WorkerPool(limits=[Concurrency(7), Concurrency(1, unit="gb")]).size == 7


# -- shorthands and limits= together: AND --------------------------------------------------------


async def test_size_rate_and_window_all_hold_together() -> None:
    """``size=2, rate=10`` with ``limits=[Window(3, per=1)]`` and 0.25 s jobs: each one binds.

    Rate spaces the first two (0, 0.1), size holds the third until the first ends (0.25), the
    window holds the fourth until the first start leaves it (1.0); and so on each second.
    """
    probe = Probe(limit=2)
    async with WorkerPool(size=2, rate=10, limits=[Window(3, per=1)]) as pool:
        assert (pool.size, pool.rate, pool.burst, pool.limits) == (2, 10, 1, (Window(3, per=1),))
        starts = await _starts(pool, probe, 9, 0.25)
    assert starts == [approx(t) for t in (0, 0.1, 0.25, 1, 1.1, 1.25, 2, 2.1, 2.25)]
    assert max_starts_in(probe.starts, 1.0) == 3
    assert rate_violation(probe.starts, 10, 1) is None


async def test_two_rates_and_the_shorthand_rate_all_hold() -> None:
    """``rate=2`` and ``Rate(3, per=10, burst=3)``: 0, 0.5, 1.0 by the shorthand, then the
    slow rate's schedule: 10/3 and 20/3 (its tolerance allows a start at tat - 2 * 10/3)."""
    probe = Probe()
    async with WorkerPool(rate=2, limits=[Rate(3, per=10, burst=3)]) as pool:
        starts = await _starts(pool, probe, 5)
    assert starts == [approx(t) for t in (0, 0.5, 1.0, 10 / 3, 20 / 3)]


async def test_size_shorthand_and_a_larger_concurrency_value() -> None:
    """``size=1`` with ``limits=[Concurrency(3)]``: the smaller binds, one at a time."""
    probe = Probe(limit=1)
    async with WorkerPool(size=1, limits=[Concurrency(3)]) as pool:
        assert pool.size == 1
        starts = await _starts(pool, probe, 3, 1.0)
    assert starts == [approx(t) for t in (0, 1, 2)]


async def test_one_value_serves_several_pools_independently() -> None:
    """A value holds no state: the same ``Rate(1)`` in two pools gives each its own bucket."""
    shared = Rate(1)
    probes = [Probe(), Probe()]
    t0 = anyio.current_time()
    async with WorkerPool(limits=[shared]) as first, WorkerPool(limits=[shared]) as second:
        for k in range(3):
            first.run(probes[0].job, k)
            second.run(probes[1].job, k)
    for probe in probes:
        assert [t - t0 for t in probe.starts] == [approx(t) for t in (0, 1, 2)]


# -- the values themselves ------------------------------------------------------------------------


class TestValues:
    def test_frozen_hashable_and_equal_by_value(self) -> None:
        """Values compare by value, hash, and cannot be changed."""
        assert Rate(2, per=3, burst=2) == Rate(2, per=3, burst=2)
        assert len({Rate(2), Rate(2), Window(2, per=1), Concurrency(2), Concurrency(2)}) == 3
        assert Rate(2) != Rate(2, unit="tokens")
        with pytest.raises(dataclasses.FrozenInstanceError):
            Rate(2).count = 3  # type: ignore[misc]
        with pytest.raises(dataclasses.FrozenInstanceError):
            Window(2, per=1).per = 3  # type: ignore[misc]
        with pytest.raises(dataclasses.FrozenInstanceError):
            Concurrency(2).n = 3  # type: ignore[misc]

    def test_defaults(self) -> None:
        """``Rate(count)``: per 1 s, burst 1, attempts, not adaptive; the others count attempts."""
        rate = Rate(5)
        assert (rate.per, rate.burst, rate.unit, rate.adaptive) == (1.0, 1, None, False)
        assert Window(5, per=2).unit is None
        assert Concurrency(5).unit is None

    def test_repr_is_the_call_that_makes_it(self) -> None:
        """Error messages name a limit by its repr, so it reads as the call that made it."""
        assert repr(Rate(100, per=60, burst=100, unit="tokens")) == (
            "Rate(100, per=60, burst=100, unit='tokens')"
        )
        assert eval(repr(Rate(2.5, per=0.5, burst=3, adaptive=True))) == Rate(
            2.5, per=0.5, burst=3, adaptive=True
        )
        assert eval(repr(Window(10, per=60, unit="tokens"))) == Window(10, 60, unit="tokens")
        assert eval(repr(Concurrency(4))) == Concurrency(4)

    def test_a_unit_allows_fractional_counts(self) -> None:
        """With a unit, counts are any finite number > 0 (tokens, gigabytes...)."""
        assert Rate(0.5, unit="gb", burst=2.5).burst == 2.5
        assert Window(1.5, per=1, unit="gb").count == 1.5
        assert Concurrency(0.5, unit="gb").n == 0.5


# -- validation: the error names the argument ----------------------------------------------------

#: The namespace the calls below are evaluated in (as strings, so each reads as its test id).
CALLS = {
    "Rate": Rate,
    "Window": Window,
    "Concurrency": Concurrency,
    "WorkerPool": WorkerPool,
    "NAN": math.nan,
    "INF": math.inf,
}


def _call(source: str) -> object:
    return eval(source, dict(CALLS))


BAD_VALUES = [
    # (call, exception type, the argument the message must name)
    ("Rate(0)", ValueError, "count"),
    ("Rate(-1)", ValueError, "count"),
    ("Rate(NAN)", ValueError, "count"),
    ("Rate(INF)", ValueError, "count"),
    ('Rate("5")', TypeError, "count"),
    ("Rate(None)", TypeError, "count"),
    ("Rate(True)", TypeError, "count"),
    ("Rate(1, per=0)", ValueError, "per"),
    ("Rate(1, per=-2)", ValueError, "per"),
    ("Rate(1, per=NAN)", ValueError, "per"),
    ("Rate(1, per=INF)", ValueError, "per"),
    ('Rate(1, per="1")', TypeError, "per"),
    ("Rate(1, burst=0)", ValueError, "burst"),
    ("Rate(1, burst=-3)", ValueError, "burst"),
    ("Rate(1, burst=1.5)", TypeError, "burst"),  # counting attempts: an int
    ('Rate(1, burst="2")', TypeError, "burst"),
    ('Rate(1, burst=NAN, unit="tokens")', ValueError, "burst"),
    ('Rate(1, unit="")', TypeError, "unit"),
    ("Rate(1, unit=3)", TypeError, "unit"),
    ("Rate(1, adaptive=1)", TypeError, "adaptive"),
    ('Rate(1, adaptive="yes")', TypeError, "adaptive"),
    ("Rate(1, burst=2, initial=0)", ValueError, "initial"),
    ("Rate(1, burst=2, initial=3)", ValueError, "initial"),
    ("Rate(1, burst=2, initial=1.5)", TypeError, "initial"),  # counting attempts: an int
    ('Rate(1, burst=2, initial="1")', TypeError, "initial"),
    ('Rate(1, burst=9, unit="tokens", initial=NAN)', ValueError, "initial"),
    ("Window(0, per=1)", ValueError, "count"),
    ("Window(1.5, per=1)", TypeError, "count"),  # counting attempts: an int
    ('Window("3", per=1)', TypeError, "count"),
    ('Window(-1, per=1, unit="tokens")', ValueError, "count"),
    ("Window(3, per=0)", ValueError, "per"),
    ("Window(3, per=NAN)", ValueError, "per"),
    ("Window(3, per=None)", TypeError, "per"),
    ('Window(3, per=1, unit=b"tokens")', TypeError, "unit"),
    ("Concurrency(0)", ValueError, "n"),
    ("Concurrency(-2)", ValueError, "n"),
    ("Concurrency(2.5)", TypeError, "n"),  # counting attempts: an int
    ("Concurrency(True)", TypeError, "n"),
    ('Concurrency(INF, unit="gb")', ValueError, "n"),
    ('Concurrency(0, unit="gb")', ValueError, "n"),
    ('Concurrency(2, unit="")', TypeError, "unit"),
]


@pytest.mark.parametrize(("call", "error", "name"), BAD_VALUES, ids=[c[0] for c in BAD_VALUES])
def test_a_bad_value_is_refused_naming_its_argument(
    call: str, error: type[Exception], name: str
) -> None:
    """Each bad argument of a value: TypeError for a wrong type, ValueError for a bad value,
    with the argument's name in the message."""
    with pytest.raises(error, match=rf"\b{re.escape(name)}\b"):
        _call(call)


BAD_POOLS = [
    ("WorkerPool(limits=5)", TypeError, "limits"),
    ('WorkerPool(limits="Rate(1)")', TypeError, "limits"),
    ("WorkerPool(limits=[5])", TypeError, "limits"),
    ('WorkerPool(limits=[Rate(1), "Window(1, 1)"])', TypeError, "limits"),
    ("WorkerPool(limits=[Rate])", TypeError, "limits"),
    ("WorkerPool(per_key=3)", TypeError, "per_key"),
    ("WorkerPool(per_key=[None])", TypeError, "per_key"),
    ("WorkerPool(retry_after=5)", TypeError, "retry_after"),
    ("WorkerPool(size=0, limits=[Rate(1)])", ValueError, "size"),
    ("WorkerPool(rate=-1, limits=[Rate(1)])", ValueError, "rate"),
    ("WorkerPool(rate=1, burst=0, limits=[Rate(1)])", ValueError, "burst"),
]


@pytest.mark.parametrize(("call", "error", "name"), BAD_POOLS, ids=[c[0] for c in BAD_POOLS])
def test_a_bad_pool_argument_is_refused_naming_it(
    call: str, error: type[Exception], name: str
) -> None:
    """``limits=`` and ``per_key=`` take only limit values; ``retry_after=`` a callable."""
    with pytest.raises(error, match=rf"\b{re.escape(name)}\b"):
        _call(call)


def test_limits_accepts_any_iterable_and_keeps_the_values() -> None:
    """A tuple, a list or a generator of values; ``pool.limits`` gives them back."""
    values = (Rate(2), Window(5, per=3), Concurrency(4, unit="gb"))
    assert WorkerPool(limits=list(values)).limits == values
    assert WorkerPool(limits=iter(values)).limits == values
    assert WorkerPool(per_key=values).per_key == values
    assert WorkerPool().limits == ()
