"""Per-job options: the keywords that declare them, their validated form, the default backoff.

The options a submission method takes are declared once, as the TypedDicts below, and the
methods take them as ``**options`` (:pep:`692`): type checkers check each keyword against them,
and the pool checks the names at run time against the same declaration. Pure, no I/O.
"""

from __future__ import annotations

import math
import random
import reprlib
import sys
from dataclasses import dataclass
from numbers import Real
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar, final

from ._validate import (
    check_backoff,
    check_retries,
    check_retryable,
    check_task,
    check_timeout,
    show_value,
)

if sys.version_info >= (3, 11):
    from typing import TypedDict
else:  # pragma: no cover - a generic TypedDict needs typing_extensions before 3.11
    from typing_extensions import TypedDict

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Iterable, Mapping

__all__ = [
    "BACKOFF_CAP",
    "DEFAULT_OPTIONS",
    "DEFAULT_RETRYABLE",
    "LABEL_WIDTH",
    "MAP_OPTIONS",
    "SUBMIT_OPTIONS",
    "JobOptions",
    "MapOptions",
    "SubmitOptions",
    "check_names",
    "default_backoff",
    "default_label",
    "job_options",
    "next_delay",
    "read_item_options",
    "read_options",
]

U = TypeVar("U")


class RetryOptions(TypedDict, total=False):
    """The options of every job: its timeout and retry policy (their werkpool 0.2 names)."""

    timeout: float | None
    retries: int
    retryable_exceptions: type[Exception] | Iterable[type[Exception]]
    backoff: Callable[[int], float]


class SubmitOptions(RetryOptions, total=False):
    """The keyword options of one job (``run``, ``start_soon``, ``call``, ``submit`` and their
    ``_sync`` twins); the methods' docstrings say what each does."""

    key: Hashable
    cost: Mapping[str, float] | None
    name: str | None


class MapOptions(RetryOptions, Generic[U], total=False):
    """The keyword options of ``map`` and ``map_sync``: those of :class:`SubmitOptions`, with the
    key, cost and label given per item by a function of the item."""

    key: Callable[[U], Hashable] | None
    cost: Callable[[U], Mapping[str, float] | None] | None
    name: str | Callable[[U], str] | None


#: The keywords :class:`SubmitOptions` declares, checked at run time (untyped callers).
SUBMIT_OPTIONS: Final[frozenset[str]] = SubmitOptions.__optional_keys__

#: The keywords :class:`MapOptions` declares.
MAP_OPTIONS: Final[frozenset[str]] = MapOptions.__optional_keys__

#: The options a job of a keyed or weighted pool is usually given alone: they need no
#: :class:`JobOptions` of their own (the pool checks them against its limits).
_KEY_AND_COST: Final = frozenset(("key", "cost"))

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


#: The exceptions a job retries by default (``retryable_exceptions=``).
DEFAULT_RETRYABLE: Final[tuple[type[Exception], ...]] = (Exception,)

#: The options of a job given none: one instance for all of them.
DEFAULT_OPTIONS: Final = JobOptions(None, 0, DEFAULT_RETRYABLE, default_backoff)


def check_names(method: str, options: Mapping[str, object], names: frozenset[str]) -> None:
    """Reject a keyword *method* does not take, as Python does for a named parameter."""
    for name in options:
        if name not in names:
            raise TypeError(f"WorkerPool.{method}() got an unexpected keyword argument {name!r}")


def read_options(
    method: str, task: object, options: Mapping[str, Any], *, per_item: bool = False
) -> tuple[JobOptions, Any, Any]:
    """Check a submission's keywords (:class:`SubmitOptions`, or :class:`MapOptions` for
    *per_item*), then its callable, then the options' values, in the order of the days they
    were named parameters. Return them validated, with the key and the cost as given (the pool
    checks those against its limits)."""
    if not per_item and options.keys() <= _KEY_AND_COST:
        # Only a key and a cost, once per job on a keyed or weighted pool: the default options,
        # without binding the keywords to job_options() (a third of this call's time).
        if not callable(task):
            check_task(task)
        return DEFAULT_OPTIONS, options.get("key"), options.get("cost")
    names = MAP_OPTIONS if per_item else SUBMIT_OPTIONS
    if not options.keys() <= names:  # one set comparison on the way of every job with options
        check_names(method, options, names)
    if not callable(task):
        check_task(task)
    if per_item:  # map's name= labels each item (read_item_options)
        given = {option: options[option] for option in options if option != "name"}
        return job_options(**given), None, None
    # Python binds the keywords and fills in the defaults.
    return job_options(**options), options.get("key"), options.get("cost")


def job_options(
    *,
    timeout: float | None = None,
    retries: int = 0,
    retryable_exceptions: type[Exception] | Iterable[type[Exception]] = DEFAULT_RETRYABLE,
    backoff: Callable[[int], float] = default_backoff,
    name: str | None = None,
    key: object = None,
    cost: object = None,
) -> JobOptions:
    """Validate per-job options (the *key* and *cost*, which the pool checks against its limits,
    aside); the defaults share one instance (no work, no memory per job).

    Its parameters are the keys of :class:`SubmitOptions` with their defaults (the API reference
    shows them in the methods' signatures, docs/griffe_rest.py).
    """
    if (
        timeout is None
        and retries.__class__ is int
        and retries == 0
        and retryable_exceptions is DEFAULT_RETRYABLE
        and backoff is default_backoff
        and name is None
    ):
        return DEFAULT_OPTIONS
    return JobOptions(
        check_timeout(timeout),
        check_retries(retries),
        check_retryable(retryable_exceptions),
        check_backoff(backoff),
        _check_name(name),
    )


def read_item_options(options: Mapping[str, Any]) -> tuple[Any, Any, Any]:
    """Check ``map``'s per-item *key*, *cost* and *name* (functions of the item); return them."""
    key = options.get("key")
    cost = options.get("cost")
    for argument, fn in (("key", key), ("cost", cost)):
        if fn is not None and not callable(fn):
            raise TypeError(
                f"{argument} must be None or a callable taking an item, not {type(fn).__name__}"
            )
    name = options.get("name")
    if name is not None and not isinstance(name, str) and not callable(name):
        raise TypeError(
            "name must be None, a str (a prefix: 'fetch' labels the items 'fetch[0]', "
            f"'fetch[1]', ...) or a callable taking an item, not {type(name).__name__}"
        )
    return key, cost, name


def _check_name(name: object) -> str | None:
    if name is None or isinstance(name, str):
        return name
    raise TypeError(f"name must be None or a str (the job's label), not {type(name).__name__}")


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
