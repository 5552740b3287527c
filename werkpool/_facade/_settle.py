"""``werkpool.settle()``: a job reports, from inside its running attempt, what it really cost.

The job's announced cost was charged when the attempt started; the correction goes to the
scheduler, which has each limit that counts a named unit charge or take back the difference.
Found through the running worker's context, so it needs no reference to the pool.
"""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING, Final, cast

from .._core._job import RUNNING
from .._core._validate import show_value
from .._runtime._workers import running_in, running_worker

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["settle"]

_INF: Final = float("inf")


def settle(*, cost: Mapping[str, float]) -> None:
    """
    Report, from inside a job, what its running attempt really cost.

    A job states its cost when submitted (``cost={"tokens": 2000}``), before it knows it; once
    the provider said what it charged (a usage field, say), ``werkpool.settle(cost={"tokens":
    812})`` corrects it. Each limit that counts a unit named here charges or takes back the
    difference with what it counted, at once: a :class:`Rate` adds the units to its bucket, or
    takes back those that have not drained yet (never letting a start come closer than the rate
    permits for what was really spent); a :class:`Window` counts the start's new cost while it
    is in the window; a ``Concurrency(unit=...)`` holds the new amount until the attempt ends.
    Units not named keep their announced cost. A second call replaces the first. A later retry
    is charged its announced cost again.

    An attempt that raises :exc:`RetryAfter` needs no settlement: its cost is given back.

    Call it from the job's own code (its task), while the attempt runs.

    :param cost: units to their actual amounts (finite numbers >= 0), each a unit some limit of
        the pool (or of its ``per_key=``) counts
    :raises RuntimeError: if called outside a job's running attempt
    :raises TypeError: if *cost* is not a mapping of str to numbers
    :raises ValueError: if an amount is negative or not finite, or names a unit no limit counts

    .. versionadded:: 0.3
    """
    runner = running_in.get()
    worker = running_worker.get()
    job = None if worker is None else worker.job
    if runner is None or job is None or job.state != RUNNING:
        raise RuntimeError("werkpool.settle() must be called from inside a running job")
    if threading.get_ident() != runner.thread:
        # The limits live on the pool's event loop; a worker thread the job started (its
        # context copied) must not change them from elsewhere.
        raise RuntimeError(
            "werkpool.settle() must be called from the job's own code on the pool's event loop, "
            "not from a thread the job started"
        )
    sched = runner.sched
    lane = job.lane
    specs = tuple(getattr(limit, "spec", None) for limit in sched.limits)
    if lane is not None:
        specs += tuple(getattr(limit, "spec", None) for limit in lane.limits)
    units = {unit for unit in (getattr(spec, "unit", None) for spec in specs) if unit is not None}
    if not hasattr(cost, "items"):
        raise TypeError(
            f"settle: cost must be a mapping of unit names to numbers, not {type(cost).__name__}"
        )
    checked: dict[str, float] = {}
    for unit, amount in list(cast("Mapping[object, object]", cost).items()):
        if not isinstance(unit, str):
            raise TypeError(f"settle: cost's units must be str, not {type(unit).__name__}")
        if isinstance(amount, bool) or not isinstance(amount, (int, float)):
            raise TypeError(
                f"settle: cost[{unit!r}] must be a finite number >= 0, not {type(amount).__name__}"
            )
        try:
            value = float(amount)
        except OverflowError:
            value = _INF
        if not math.isfinite(value) or value < 0:
            raise ValueError(
                f"settle: cost[{unit!r}] must be a finite number >= 0, got {show_value(amount)}"
            )
        if unit not in units:
            raise ValueError(
                f"settle: cost names the unit {unit!r}, which no limit of this job counts "
                f"(units counted: {', '.join(map(repr, sorted(units))) or 'none'})"
            )
        checked[unit] = amount if type(amount) is int else value
    if checked:
        now = runner.binding.clock()  # the pool's clock (precise on uvloop)
        sched.settle(job, checked, now)
        runner.crew.wake_sleeper_before(now)  # a take-back may let the head start now
