"""The loop-free limit set (werkpool._core._limitset.LimitSet), driven by hand: no event loop,
no clock. The pool's own behaviour under these values is tested in tests/contract/."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any, cast

import pytest

from werkpool import Concurrency, Rate, Window
from werkpool._core._limitset import LimitSet
from werkpool._core._rate_limit import RateLimit
from werkpool._core._window_limit import WindowLimit


def test_size_is_the_smallest_of_size_and_the_unitless_concurrency_values() -> None:
    assert LimitSet(8, None, 1, (Concurrency(3),)).size == 3
    assert LimitSet(2, None, 1, (Concurrency(3),)).size == 2
    assert LimitSet(None, None, 1, (Concurrency(5), Concurrency(4))).size == 4
    assert LimitSet(None, None, 1, (Concurrency(5, unit="gb"),)).size is None
    assert LimitSet(None, 10.0, 1).size is None


def test_build_makes_the_shorthand_and_the_values_but_not_the_size() -> None:
    config = LimitSet(4, 10.0, 2, (Concurrency(3), Window(5, per=1.0), Concurrency(7, unit="u")))
    built = config.build()
    assert [type(limit).__name__ for limit in built] == ["RateLimit", "WindowLimit", "CountLimit"]
    rate = built[0]
    assert isinstance(rate, RateLimit)
    assert (rate.rate, rate.burst) == (10.0, 2)
    # Each call makes new live limits: they keep state, never shared between pools or keys.
    assert config.build()[0] is not rate


def test_per_key_factory_makes_new_limits_for_each_key() -> None:
    config = LimitSet(None, None, 1, per_key=(Rate(5), Window(2, per=1.0)))
    make = config.per_key_factory()
    first, second = make(), make()
    assert [type(limit) for limit in first] == [RateLimit, WindowLimit]
    assert all(a is not b for a, b in zip(first, second, strict=True))
    assert config.dates_per_key()
    assert LimitSet(None, None, 1).per_key_factory()() == ()
    assert not LimitSet(None, None, 1, per_key=(Concurrency(2),)).dates_per_key()


def _state(limit: object) -> dict[str, object]:
    """Every slot of *limit* (its class's and its bases'), by name."""
    names = {name for cls in type(limit).__mro__ for name in getattr(cls, "__slots__", ())}
    return {name: getattr(limit, name) for name in sorted(names) if hasattr(limit, name)}


@pytest.mark.parametrize(
    "values",
    [
        (Rate(5),),
        (Rate(10**9, burst=10**6), Concurrency(100)),
        (Rate(5, burst=4, initial=1, margin=0.01), Rate(7, unit="tok", burst=9, adaptive=True)),
        (Concurrency(3, unit="gb"), Window(2, per=1.0), Rate(3, per=60.0, burst=2)),
    ],
)
def test_per_key_factory_makes_what_build_makes(values: tuple[Any, ...]) -> None:
    """A key's limits are copied from a template (fresh()), not built: each is, slot for slot,
    what build() makes of its value, with dicts of its own."""
    from werkpool._core._limits import build

    make = LimitSet(None, None, 1, per_key=values).per_key_factory()
    first, second = make(), make()
    assert len(first) == len(values)
    for made, again, spec in zip(first, second, values, strict=True):
        built = build(spec)
        assert type(made) is type(built)
        assert _state(made) == _state(built)
        assert _state(made).keys() == _state(built).keys()  # every slot set
        for name, value in _state(made).items():
            if isinstance(value, (dict, list)) and value is not getattr(built, name):
                assert value is not getattr(again, name), name  # nothing shared between keys


class TestCheckCost:
    def test_none_costs_nothing_and_builds_nothing(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """check_cost(None) is the common case of a pool with rate=: no spec is made per call
        (it made and validated a Rate on every submit() before, 3.4 µs)."""
        config = LimitSet(None, 10.0, 1)
        made: list[object] = []
        monkeypatch.setattr(Rate, "__init__", lambda *args, **kwargs: made.append(args))
        for _ in range(3):
            assert config.check_cost(None) is None
        assert made == []

    def test_a_fitting_dict_takes_the_fast_path(self) -> None:
        config = LimitSet(
            None, None, 1, (Rate(100, unit="tok", burst=50), Concurrency(8, unit="u"))
        )
        assert config.check_cost({"tok": 50, "u": 2.5}) == {"tok": 50, "u": 2.5}
        assert config.check_cost({}) is None

    def test_the_fast_path_keeps_a_copy(self) -> None:
        """The job keeps its own dict: a caller that reuses its cost dict and changes it after
        the submission changes nothing of what the limits count."""
        config = LimitSet(None, None, 1, (Rate(100, unit="tok", burst=50),))
        given = {"tok": 5}
        checked = config.check_cost(given)
        given["tok"] = 40
        assert checked == {"tok": 5}

    @pytest.mark.parametrize(
        ("cost", "error", "message"),
        [
            ({"tok": 51}, ValueError, "tok"),
            ({"nope": 1}, ValueError, "nope"),
            ({"tok": -1}, ValueError, "finite number >= 0"),
            ({"tok": math.nan}, ValueError, "finite number >= 0"),
            ({"tok": "1"}, TypeError, "finite number >= 0"),
            ([("tok", 1)], TypeError, "cost must be None or a mapping"),
        ],
    )
    def test_anything_else_gets_the_full_check(
        self, cost: object, error: type[Exception], message: str
    ) -> None:
        config = LimitSet(None, None, 1, (Rate(100, unit="tok", burst=50),))
        with pytest.raises(error, match=message):
            config.check_cost(cost)

    def test_again_lets_units_no_longer_counted_pass(self) -> None:
        config = LimitSet(None, None, 1, (Rate(100, unit="tok", burst=50),))
        config.replace(None, 1, (), (), 0.0)
        with pytest.raises(ValueError, match="tok"):
            config.check_cost({"tok": 1})
        assert config.check_cost({"tok": 1}, again=True) == {"tok": 1.0}

    def test_caps_follow_a_change_of_values(self) -> None:
        config = LimitSet(None, None, 1, (Rate(100, unit="tok", burst=50),))
        config.replace(None, 1, (Rate(100, unit="tok", burst=10),), (), 0.0)
        with pytest.raises(ValueError, match="tok"):
            config.check_cost({"tok": 20})
        assert [spec.unit for spec in config.all_specs()] == ["tok"]


def test_set_size_replaces_the_unitless_concurrency_values() -> None:
    config = LimitSet(None, None, 1, (Concurrency(3), Rate(5)))
    config.set_size(10)
    assert config.size == 10
    assert config.specs == (Rate(5),)
    config.set_size(None)
    assert config.size is None


def test_check_waiting_refuses_limits_that_could_never_admit_a_job() -> None:
    config = LimitSet(None, None, 1)
    job = cast("Any", SimpleNamespace(cost={"tok": 30.0}))
    config.check_waiting(None, 1, (Rate(100, unit="tok", burst=30),), [job])
    with pytest.raises(ValueError, match=r"could never admit a pending job of cost\['tok'\]=30"):
        config.check_waiting(None, 1, (Rate(100, unit="tok", burst=29),), [job])


def test_replace_carries_the_schedule_over_so_no_credit_appears() -> None:
    """A new rate continues the old one's bucket: after two starts at t=0 under 1/s, a new
    rate of 2/s (burst 1) admits the next start no earlier than the old schedule allows, at
    its own spacing; a window remembers the starts of the old one."""
    config = LimitSet(None, 1.0, 2, (Window(2, per=10.0),))
    old = config.build()
    for limit in old:
        limit.admit(None, 0.0)  # type: ignore[arg-type]
        limit.admit(None, 0.0)  # type: ignore[arg-type]
    new = config.replace(2.0, 1, (Window(3, per=10.0),), old, 0.0)
    rate, window = new
    assert isinstance(rate, RateLimit)
    assert isinstance(window, WindowLimit)
    assert rate.earliest(None, 0.0) > 0.0  # type: ignore[arg-type]  # the bucket was empty
    fresh = LimitSet(None, 2.0, 1).build()[0]
    assert fresh.earliest(None, 0.0) == -math.inf  # type: ignore[arg-type]  # what it would be
    window.admit(None, 0.0)  # type: ignore[arg-type]  # the third start in the window
    assert window.earliest(None, 0.0) == 10.0  # type: ignore[arg-type]
    assert (config.rate, config.burst, config.specs) == (2.0, 1, (Window(3, per=10.0),))


def test_snapshots_put_the_size_first() -> None:
    config = LimitSet(3, 5.0, 1)
    snaps = config.snapshots(config.build(), 3.0, 0.0)
    assert [snap.kind for snap in snaps] == ["concurrency", "rate"]
    assert (snaps[0].count, snaps[0].in_use, snaps[0].next_free) == (3, 3.0, math.inf)
    assert config.snapshots([], 1.0, 0.0)[0].next_free == -math.inf
    assert LimitSet(None, None, 1).snapshots([], 0.0, 0.0) == ()


def test_strict_rates_when_some_rate_has_burst_one() -> None:
    """A rate with burst 1 (the shorthand, a value, a key's, a shared one) makes the workers
    keep starts on their slots; bursts above 1, windows and concurrency limits do not."""
    from werkpool._core._specs import Shared

    class _Store:
        def bind(self, *args: object) -> object:  # never bound: the values only name it
            raise AssertionError

    store = cast("Any", _Store())
    assert LimitSet(None, 10.0, 1).strict_rates()
    assert not LimitSet(None, 10.0, 2).strict_rates()
    assert not LimitSet(4, None, 1).strict_rates()
    assert LimitSet(None, None, 1, (Rate(5),)).strict_rates()
    assert not LimitSet(None, None, 1, (Rate(5, burst=3), Window(5, 1.0))).strict_rates()
    assert LimitSet(None, None, 1, per_key=(Rate(2),)).strict_rates()
    assert not LimitSet(None, None, 1, (Concurrency(3),), (Rate(2, burst=2),)).strict_rates()
    shared = Rate(100).shared(store, "api")
    assert isinstance(shared, Shared)
    assert LimitSet(None, None, 1, shared=(shared,)).strict_rates()
    assert not LimitSet(
        None, None, 1, shared=(Rate(100, burst=2).shared(store, "api"),)
    ).strict_rates()
