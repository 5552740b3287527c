"""Per-job options (timeout, retry policy, label) and the default backoff; pure, no I/O."""

from __future__ import annotations

import math
import random
import reprlib
from dataclasses import dataclass
from numbers import Real
from typing import TYPE_CHECKING, Final, final

from ._validate import show_value

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "BACKOFF_CAP",
    "LABEL_WIDTH",
    "JobOptions",
    "default_backoff",
    "default_label",
    "next_delay",
]

#: Upper bound, in seconds, of :func:`default_backoff`.
BACKOFF_CAP: Final = 60.0

#: The most characters of a default job label (a log line must stay a line, whatever the input).
LABEL_WIDTH: Final = 40


def _short_repr() -> reprlib.Repr:
    short = reprlib.Repr()
    short.maxstring = LABEL_WIDTH
    short.maxother = LABEL_WIDTH
    short.maxlevel = 2
    return short


_SHORT: Final = _short_repr()


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
    #: The job's label (``name=``), or None: the hooks make the default one, only if a pool has
    #: hooks (see ``_hooks.default_label``), so an unnamed job pays nothing for it.
    name: str | None = None


def default_label(fn: Callable[..., object], args: tuple[object, ...]) -> str:
    """The label of a job given no ``name=``: a short repr of its first argument (at most
    :data:`LABEL_WIDTH` characters), or the function's ``__qualname__`` if it has no argument.

    Made only by a pool with hooks, when an event is built: a pool without hooks never reprs
    its jobs' arguments. A ``__repr__`` that raises gives ``<Type object>``: a label must not
    fail the event that carries it.
    """
    if args:
        arg = args[0]
        try:
            text = _SHORT.repr(arg)
        except Exception:  # a broken __repr__ (reprlib guards only some of them)
            text = f"<{type(arg).__qualname__} object>"
        if len(text) > LABEL_WIDTH:
            text = text[: LABEL_WIDTH - 3] + "..."
        return text
    # A thread job's callable (InThread) or a decorated function names its wrapped function.
    inner = getattr(fn, "__wrapped__", fn)
    name = getattr(inner, "__qualname__", None)
    return name if isinstance(name, str) else type(inner).__qualname__


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
