"""The live limit of each limit value: :func:`build`, from a ``Rate``, ``Window`` or
``Concurrency`` to the :class:`~werkpool._core._limit.Limit` the scheduler drives.

The family, one concept per module: the base and its defaults (``_limit``), the GCRA rate
(``_rate_limit``), the sliding window (``_window_limit``), the counts of running attempts
(``_count_limit``), a server's budget held by a rate or window (``_budget_hold``), and the
limits kept outside the process (``_remote_limit``).
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from ._count_limit import CountLimit
from ._rate_limit import RateLimit
from ._specs import Rate, Window
from ._window_limit import WindowLimit

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._limit import Limit
    from ._specs import LimitSpec

__all__ = ["build", "maker"]


def build(spec: LimitSpec) -> Limit:
    """The live limit for the value *spec* (a fresh one: each key gets its own)."""
    if isinstance(spec, Rate):
        return RateLimit(
            spec.count / spec.per,
            spec.burst,
            unit=spec.unit,
            adaptive=spec.adaptive,
            per=spec.per,
            margin=spec.margin,
            initial=spec.initial,
            spec=spec,
        )
    if isinstance(spec, Window):
        return WindowLimit(spec.count, spec.per, unit=spec.unit, spec=spec)
    return CountLimit(spec.n, unit=spec.unit, spec=spec)


def maker(spec: LimitSpec) -> Callable[[], Limit]:
    """What makes a fresh live limit for the value *spec* at each call, as :func:`build` does,
    the quickest way its kind has: a new key makes one per ``per_key=`` value (10,000 keys
    make 10,000), so a rate or a count is copied from a limit that never admitted a start."""
    limit = build(spec)
    if isinstance(limit, (RateLimit, CountLimit)):
        return limit.fresh
    return partial(build, spec)
