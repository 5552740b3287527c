"""Per-job options (timeout and retry policy) and the default backoff; pure, no I/O."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from numbers import Real
from typing import TYPE_CHECKING, Final, final

from ._validate import show_value

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["BACKOFF_CAP", "JobOptions", "default_backoff", "next_delay"]

#: Upper bound, in seconds, of :func:`default_backoff`.
BACKOFF_CAP: Final = 60.0


def default_backoff(retry: int) -> float:
    """
    Return the default delay in seconds before retry number *retry* (1, 2, ...).

    Exponential with jitter, as in werkpool 0.2 (``2 ** retry`` plus up to one second), but capped
    at 60 seconds: 2-3 s before the first retry, 4-5 s before the second, ..., then 60 s.

    .. versionadded:: 0.3
    """
    return min(BACKOFF_CAP, 2.0 ** min(retry, 64) + random.uniform(0.0, 1.0))


@final
@dataclass(frozen=True, slots=True)
class JobOptions:
    """The validated per-job options; one shared instance serves all jobs with the defaults."""

    timeout: float | None
    retries: int
    retryable: tuple[type[BaseException], ...]
    backoff: Callable[[int], float]


def next_delay(options: JobOptions, retry: int) -> float:
    """Call the job's backoff for retry number *retry* and check what it returned.

    :raises ValueError: if the backoff returned a number that is not finite and >= 0 (an int too
        large for a float included)
    :raises TypeError: if the backoff returned something that is not a number
    """
    delay: object = options.backoff(retry)  # user code: trust nothing about the result
    if isinstance(delay, bool) or not isinstance(delay, Real):
        raise TypeError(
            f"backoff({retry}) returned {show_value(delay)}; "
            "expected a finite number of seconds >= 0"
        )
    try:
        value = float(delay)
    except OverflowError:  # an int (or Fraction) beyond float range: as bad as inf, not a crash
        value = math.inf
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            f"backoff({retry}) returned {show_value(delay)}; "
            "expected a finite number of seconds >= 0"
        )
    return value + 0.0  # -0.0 becomes 0.0 (IEEE 754), a plain zero delay
