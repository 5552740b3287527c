"""The live limit of each limit value: :func:`build`, from a ``Rate``, ``Window`` or
``Concurrency`` to the :class:`~werkpool._core._limit.Limit` the scheduler drives.

The family, one concept per module: the base and its defaults (``_limit``), the GCRA rate
(``_rate_limit``), the sliding window (``_window_limit``), the counts of running attempts
(``_count_limit``), a server's budget held by a rate or window (``_budget_hold``), and the
limits kept outside the process (``_remote_limit``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._count_limit import CountLimit
from ._rate_limit import RateLimit
from ._specs import Rate, Window
from ._window_limit import WindowLimit

if TYPE_CHECKING:
    from ._limit import Limit
    from ._specs import LimitSpec

__all__ = ["build"]


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
