"""Limits as values: :class:`Rate`, :class:`Window` and :class:`Concurrency`.

A limit value says what a provider allows ("500 requests per minute", "90,000 tokens per minute",
"4 connections"); it holds no state. The pool builds a live limit from each value (``_limits``),
one for the pool and, for ``per_key=`` values, one per key. Values are frozen and hashable, so
the same value may be given to several pools, and they validate their arguments when made.
"""

from __future__ import annotations

import math
from dataclasses import KW_ONLY, dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, cast, final

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Iterable, Mapping

from ._validate import MAX_BURST, check_number, show_value

__all__ = [
    "Concurrency",
    "LimitSpec",
    "Rate",
    "Shared",
    "Store",
    "Window",
    "check_cost",
    "check_limits",
    "split_shared",
]


def _number(value: object, name: str, owner: str, *, integral: bool) -> float:
    """Check a count: an int >= 1 if *integral* (a limit that counts attempts), else a finite
    number > 0 (a limit that counts a unit, such as tokens)."""
    if integral:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{owner}: {name} must be an int >= 1, not {type(value).__name__}")
        if not isinstance(value, int):
            raise TypeError(
                f"{owner}: {name} must be an int >= 1 when the limit counts attempts "
                f"(unit=None), not {type(value).__name__}"
            )
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not number >= 1 or number == math.inf:
            raise ValueError(f"{owner}: {name} must be an int >= 1, got {show_value(value)}")
    else:
        number = check_number(value, f"{owner}: {name}", kinds=(int, float))
    if number > MAX_BURST:
        # Float arithmetic in the limits is exact up to 2**53 units; beyond, starts are lost.
        raise ValueError(f"{owner}: {name} must be <= 2**53, got {show_value(value)}")
    return number


def _per(value: object, owner: str) -> float:
    return check_number(value, f"{owner}: per", seconds=True, kinds=(int, float))


def _margin(value: object, per: float) -> float:
    number = check_number(value, "Rate: margin", strict=False, seconds=True, kinds=(int, float))
    if number > per:
        # A cushion against jitter is a fraction of the interval; more than a whole period
        # per start is a misplaced unit (ms for s), not a margin.
        raise ValueError(
            f"Rate: margin must be at most per ({_show(per)} s), got {show_value(value)} s"
        )
    return number


def _unit(value: object, owner: str) -> None:
    if value is not None and not (isinstance(value, str) and value):
        raise TypeError(f"{owner}: unit must be None or a non-empty str, not {value!r}")


#: The scopes a pushback may name besides a limit's name: a limit may not be named so.
RESERVED_SCOPES = ("key", "pool")


def check_name(value: object, owner: str) -> None:
    """Check a limit value's ``name=``: None, or a non-empty str of at most 100 characters that
    is not ``"key"`` or ``"pool"`` (the scopes a :exc:`werkpool.RetryAfter` names besides)."""
    if value is None:
        return
    if not isinstance(value, str):
        raise TypeError(f"{owner}: name must be None or a str, not {type(value).__name__}")
    if not value or len(value) > 100:
        raise ValueError(
            f"{owner}: name must be a non-empty str of at most 100 characters, got {value!r}"
        )
    if value in RESERVED_SCOPES:
        meaning = "the job's key" if value == "key" else "the whole pool"
        raise ValueError(
            f"{owner}: name must not be {value!r}: a pushback's scope {value!r} means {meaning}"
        )


def _show(number: float) -> str:
    return f"{number:g}" if isinstance(number, float) else str(number)


class _LimitValue:
    """What every limit value has: :meth:`shared` and :attr:`capacity`."""

    __slots__ = ()

    #: The field that bounds one start's cost (``burst``, ``count``, ``n``).
    _capacity_field: ClassVar[str]

    def shared(self, store: Store, name: str) -> Shared:
        """This limit kept in *store* under *name*: every pool, in any process or host, that
        names it shares one budget (see :class:`werkpool.redis.RedisStore`).

        .. versionadded:: 0.3
        """
        return Shared(cast("LimitSpec", self), store, name)

    @property
    def capacity(self) -> float:
        """The largest cost one attempt may have: a :class:`Rate`'s ``burst``, a
        :class:`Window`'s ``count``, a :class:`Concurrency`'s ``n``."""
        return float(getattr(self, self._capacity_field))


@final
@dataclass(frozen=True, slots=True, repr=False)
class Rate(_LimitValue):
    """
    A rate limit: at most ``count`` units per ``per`` seconds, ``burst`` of them back to back.

    A leaky bucket (GCRA): in any half-open window of length ``W`` seconds the units admitted
    (a job of cost ``c`` counts ``c`` at its start) are at most ``ceil(W * count / per) + burst
    - 1``, and unused credit never grows beyond ``burst``.

    :param count: units per ``per`` seconds (an int >= 1 for attempts; any number > 0 with a unit)
    :param per: the period in seconds (default 1)
    :param burst: how many units may go back to back (default 1; at least the largest cost)
    :param unit: ``None`` to count one per attempt, or the name of a unit that jobs state in
        their ``cost=`` (``"tokens"``); a job that names no cost in that unit costs 0 of it
    :param adaptive: halve the effective rate at each pushback from the provider
        (:exc:`werkpool.RetryAfter`), and let it regrow linearly, back from half to ``count``
        within ``per`` seconds without pushback, never above ``count`` (AIMD)
    :param margin: seconds added to the interval after each start (default 0): with burst 1,
        two starts are at least ``per / count + margin`` apart. A cushion against the jitter
        between your clock and a strict server's (one that refuses a request that comes sooner
        than ``1/rate`` after the last, such as nginx's ``limit_req`` without ``burst``): see
        "Choosing burst" in the README for the measured refusals. A number from 0 to ``per``.
    :param name: a name for the limit (``"rpm"``, ``"tpm"``), so that a pushback may name it as
        its scope (``RetryAfter(2, scope="tpm")`` holds this limit only); a non-empty str of at
        most 100 characters, not ``"key"`` or ``"pool"``; unique among a pool's ``limits=``
        (and among its ``per_key=``)
    :param initial: the units a fresh bucket lets start at once (default ``None``: ``burst``).
        ``Rate(6, burst=2, initial=1)``: the first start goes at once, the next one ``1/6`` s
        later, and the burst only lets a start that came late catch up. Requests sent back to
        back on new connections reach a server out of order; against a server whose own burst
        is the same, they then look too close. A number > 0, at most ``burst``; an int without
        a unit. Applies to a bucket's first start (each key gets a fresh bucket when first
        seen, and again after it was dropped idle).

    .. versionadded:: 0.3
    .. versionchanged:: 0.3 ``name``; an adaptive rate decreases once per episode of pushback and
       regrows at once to its last good rate after one pause-length of quiet
    """

    count: float
    per: float = 1.0
    _: KW_ONLY
    burst: float = 1
    unit: str | None = None
    adaptive: bool = False
    margin: float = 0.0
    name: str | None = None
    initial: float | None = None

    _capacity_field: ClassVar[str] = "burst"

    def __post_init__(self) -> None:
        _unit(self.unit, "Rate")
        check_name(self.name, "Rate")
        integral = self.unit is None
        _number(self.count, "count", "Rate", integral=False)
        object.__setattr__(self, "per", _per(self.per, "Rate"))
        _number(self.burst, "burst", "Rate", integral=integral)
        adaptive = cast("object", self.adaptive)
        if not isinstance(adaptive, bool):
            raise TypeError(f"Rate: adaptive must be a bool, not {type(self.adaptive).__name__}")
        object.__setattr__(self, "margin", _margin(self.margin, self.per))
        if self.initial is not None:
            _number(self.initial, "initial", "Rate", integral=integral)
            if self.initial > self.burst:
                raise ValueError(
                    f"Rate: initial must be at most burst ({_show(self.burst)}), "
                    f"got {show_value(self.initial)}"
                )

    def __repr__(self) -> str:
        text = f"Rate({_show(self.count)}, per={_show(self.per)}, burst={_show(self.burst)}"
        if self.unit is not None:
            text += f", unit={self.unit!r}"
        if self.adaptive:
            text += ", adaptive=True"
        if self.margin:
            text += f", margin={_show(self.margin)}"
        if self.name is not None:
            text += f", name={self.name!r}"
        if self.initial is not None:
            text += f", initial={_show(self.initial)}"
        return text + ")"


@final
@dataclass(frozen=True, slots=True, repr=False)
class Window(_LimitValue):
    """
    A strict sliding window: at most ``count`` units in any window of ``per`` seconds.

    For providers that count a log of requests rather than a bucket: credit comes back as old
    starts leave the window, one by one, never all at once.

    :param count: units per window (an int >= 1 for attempts; any number > 0 with a unit)
    :param per: the window's length in seconds
    :param unit: as for :class:`Rate`
    :param name: as for :class:`Rate` (a pushback naming it holds this window only)

    .. versionadded:: 0.3
    .. versionchanged:: 0.3 ``name``
    """

    count: float
    per: float
    _: KW_ONLY
    unit: str | None = None
    name: str | None = None

    _capacity_field: ClassVar[str] = "count"

    def __post_init__(self) -> None:
        _unit(self.unit, "Window")
        check_name(self.name, "Window")
        _number(self.count, "count", "Window", integral=self.unit is None)
        object.__setattr__(self, "per", _per(self.per, "Window"))

    def __repr__(self) -> str:
        unit = "" if self.unit is None else f", unit={self.unit!r}"
        if self.name is not None:
            unit += f", name={self.name!r}"
        return f"Window({_show(self.count)}, per={_show(self.per)}{unit})"


@final
@dataclass(frozen=True, slots=True, repr=False)
class Concurrency(_LimitValue):
    """
    A concurrency limit: the summed cost of the attempts running at once is at most ``n``.

    :param n: an int >= 1 to count attempts; any number > 0 with a unit
    :param unit: as for :class:`Rate` (``Concurrency(16, unit="gpu_gb")``)
    :param name: as for :class:`Rate` (a pushback naming it holds this limit only)

    .. versionadded:: 0.3
    .. versionchanged:: 0.3 ``name``
    """

    n: float
    _: KW_ONLY
    unit: str | None = None
    name: str | None = None

    _capacity_field: ClassVar[str] = "n"

    def __post_init__(self) -> None:
        _unit(self.unit, "Concurrency")
        check_name(self.name, "Concurrency")
        _number(self.n, "n", "Concurrency", integral=self.unit is None)

    def __repr__(self) -> str:
        unit = "" if self.unit is None else f", unit={self.unit!r}"
        if self.name is not None:
            unit += f", name={self.name!r}"
        return f"Concurrency({_show(self.n)}{unit})"


LimitSpec = Rate | Window | Concurrency


class Store(Protocol):
    """Where shared limits are kept (:class:`werkpool.redis.RedisStore`), as the pool sees it.

    Declared here, below the pool, so that a limit value can name its store; the store itself
    lives in an optional module (it needs a client library the core does not depend on).
    """

    def bind(
        self,
        limits: tuple[Shared, ...],
        per_key: tuple[Shared, ...],
        wake: Callable[[Hashable | None], None],
    ) -> Any:  # a werkpool._core._remote_limit.RemoteLimit (a layer above this module)
        """Make the remote limit that decides one pool's shared *limits* and *per_key* limits
        in one request per attempt; *wake* (a key, or None for the pool's limits) is called
        when another holder released credit that a refused request waits for."""
        ...


@final
@dataclass(frozen=True, slots=True, repr=False)
class Shared:
    """
    A limit value bound to a store and a name: made by ``Rate(...).shared(store, name)``.

    Every pool that names the same store and name shares the limit's budget, wherever it runs.
    The limit must be given the same value everywhere it is named.

    :param limit: the limit value (an adaptive :class:`Rate` cannot be shared)
    :param store: where it is kept
    :param name: its name in the store (a non-empty str of at most 200 characters)

    .. versionadded:: 0.3
    """

    limit: LimitSpec
    store: Store
    name: str

    def __post_init__(self) -> None:
        limit = cast("object", self.limit)
        if not isinstance(limit, (Rate, Window, Concurrency)):
            raise TypeError(
                f"Shared: limit must be a werkpool.Rate, Window or Concurrency, "
                f"not {type(limit).__name__}"
            )
        if isinstance(limit, Rate) and limit.adaptive:
            raise ValueError(
                f"{limit!r} cannot be shared: an adaptive rate halves on its own pushbacks, "
                "which other processes do not see (share a plain Rate)"
            )
        if isinstance(limit, Rate) and limit.initial is not None:
            raise ValueError(
                f"{limit!r} cannot be shared: the store's bucket is one for every process, "
                "fresh only once (give initial= to a local Rate beside it)"
            )
        if isinstance(limit, Rate) and limit.margin:
            raise ValueError(
                f"{limit!r} cannot be shared: the store spaces a shared rate's starts by its own "
                "clock, without a margin (give the margin to a local Rate beside it)"
            )
        if not callable(getattr(self.store, "bind", None)):
            raise TypeError(
                f"Shared: store must be a werkpool.redis.RedisStore (or another Store), "
                f"not {type(self.store).__name__}"
            )
        name = cast("object", self.name)
        if not isinstance(name, str):
            raise TypeError(f"Shared: name must be a str, not {type(name).__name__}")
        if not name or len(name) > 200:
            raise ValueError(
                f"Shared: name must be a non-empty str of at most 200 characters, got {name!r}"
            )

    @property
    def kind(self) -> str:
        """``"rate"``, ``"window"`` or ``"concurrency"`` (a part of its key in the store)."""
        limit = self.limit
        return (
            "rate"
            if isinstance(limit, Rate)
            else ("window" if isinstance(limit, Window) else "concurrency")
        )

    @property
    def unit(self) -> str | None:
        """The unit its limit counts."""
        return self.limit.unit

    @property
    def capacity(self) -> float:
        """The largest cost one attempt may have (its limit's)."""
        return self.limit.capacity

    def __repr__(self) -> str:
        return f"{self.limit!r}.shared({self.store!r}, {self.name!r})"


def check_limits(limits: object, name: str) -> tuple[LimitSpec | Shared, ...]:
    """Check a ``limits=`` or ``per_key=`` argument: an iterable of limit values, local or
    shared; a shared limit may be named once per kind in each argument."""
    if isinstance(limits, (str, bytes)) or not hasattr(limits, "__iter__"):
        raise TypeError(
            f"{name} must be an iterable of werkpool.Rate, Window or Concurrency, "
            f"not {type(limits).__name__}"
        )
    specs = tuple(cast("Iterable[object]", limits))
    seen: dict[tuple[int, str, str], Shared] = {}
    names: dict[str, object] = {}
    for spec in specs:
        label = getattr(spec.limit if isinstance(spec, Shared) else spec, "name", None)
        if isinstance(label, str):
            if label in names:
                raise ValueError(
                    f"{name} names two limits {label!r} ({names[label]!r} and {spec!r}): "
                    "a pushback's scope must say which one it holds"
                )
            names[label] = spec
        if isinstance(spec, Shared):
            same = (id(spec.store), spec.name, spec.kind)
            if same in seen:
                raise ValueError(
                    f"{name} names the shared {spec.kind} {spec.name!r} twice "
                    f"({seen[same]!r} and {spec!r}): give each shared limit its own name"
                )
            seen[same] = spec
        elif not isinstance(spec, (Rate, Window, Concurrency)):
            raise TypeError(
                f"{name} must hold werkpool.Rate, Window or Concurrency values, "
                f"not {type(spec).__name__}: {spec!r}"
            )
    return cast("tuple[LimitSpec | Shared, ...]", specs)


def split_shared(
    specs: tuple[LimitSpec | Shared, ...],
) -> tuple[tuple[LimitSpec, ...], tuple[Shared, ...]]:
    """Split checked limit values into the local ones and the shared ones."""
    local = tuple(spec for spec in specs if not isinstance(spec, Shared))
    shared = tuple(spec for spec in specs if isinstance(spec, Shared))
    return local, shared


def check_cost(
    cost: object, specs: tuple[LimitSpec | Shared, ...], *, known_units: bool = True
) -> dict[str, float] | None:
    """Check a job's ``cost=`` against the limits that will count it; return it as a dict.

    :raises TypeError: if *cost* is not a mapping of str to numbers
    :raises ValueError: if an amount is negative or not finite, names a unit no limit counts
        (if *known_units*: a typo guard at the call, not for a check again after the limits
        changed), or can never fit a limit (above its ``burst``, ``count`` or ``n``)
    """
    if cost is None:
        return None
    if not hasattr(cost, "items"):
        raise TypeError(
            f"cost must be None or a mapping of unit names to numbers, not {type(cost).__name__}"
        )
    checked: dict[str, float] = {}
    items = list(cast("Mapping[object, object]", cost).items())
    for unit, amount in items:
        if not isinstance(unit, str):
            raise TypeError(f"cost: unit names must be str, not {type(unit).__name__} ({unit!r})")
        # The usual amounts pass without a call (this runs for every job with a cost=).
        if type(amount) is float and 0 <= amount < math.inf:
            value = amount
        elif type(amount) is int and 0 <= amount <= MAX_BURST:
            value = float(amount)
        else:
            value = check_number(amount, f"cost[{unit!r}]", strict=False, kinds=(int, float))
        counting = [spec for spec in specs if spec.unit == unit]
        if not counting and known_units:
            units = sorted({spec.unit for spec in specs if spec.unit is not None})
            raise ValueError(
                f"cost names the unit {unit!r}, which no limit of this pool counts "
                f"(units counted: {', '.join(map(repr, units)) or 'none'})"
            )
        for spec in counting:
            if value > spec.capacity:
                raise ValueError(
                    f"cost[{unit!r}]={amount!r} can never fit the limit {spec!r}: "
                    f"it admits at most {_show(spec.capacity)} at once"
                )
        checked[unit] = value
    return checked or None
