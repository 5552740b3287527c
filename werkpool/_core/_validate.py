"""Argument checks shared by the pool's constructor and its submission methods.

Each check raises at the call that passed the bad value, with a message that names the argument and
states the rule: :class:`TypeError` for a wrong type, :class:`ValueError` for a bad value.
"""

from __future__ import annotations

import asyncio
import math
import sys
from collections.abc import Callable, Iterable
from numbers import Real
from typing import Any, cast

__all__ = [
    "MAX_BURST",
    "check_backoff",
    "check_burst",
    "check_count",
    "check_key",
    "check_max_pending",
    "check_number",
    "check_rate",
    "check_retries",
    "check_retryable",
    "check_seconds",
    "check_size",
    "check_task",
    "check_timeout",
    "show_value",
]


def show_value(value: object) -> str:
    """repr() for a message, even of an int too long for Python to print."""
    try:
        return repr(value)
    except ValueError:  # int max str digits
        if not isinstance(value, int):
            raise
        return f"an int of {value.bit_length()} bits"


def _type_name(value: object) -> str:
    return type(value).__name__


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_number(
    value: object,
    name: str,
    *,
    low: float = 0,
    strict: bool = True,
    seconds: bool = False,
    or_none: bool = False,
    kinds: type | tuple[type, ...] = Real,
) -> float:
    """Check a finite number above *low* (``> low`` if *strict*, else ``>= low``) and return it
    as a float. The one check of every "finite number" argument.

    :param name: the argument as the messages name it (``"rate"``, ``"Rate: per"``)
    :param seconds: the rule says "a finite number of seconds"
    :param or_none: the rule says "None or ..." (the caller took None already)
    :param kinds: the types accepted (default :class:`numbers.Real`; bool never)
    :raises TypeError: for a value of another type, naming *name* and the rule
    :raises ValueError: for a value out of range, infinite, NaN or too large for a float
    """
    # bool is an int, and a Real at run time (pyright's number stubs think otherwise): refused.
    if isinstance(value, bool) or not isinstance(value, kinds):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise TypeError(
            f"{name} must be {_rule(low, strict, seconds, or_none)}, not {_type_name(value)}"
        )
    try:
        number = float(value)  # type: ignore[arg-type]
    except OverflowError:  # an int too large for a float: a bad value, not a crash
        number = math.inf
    if not math.isfinite(number) or number < low or (strict and number == low):
        raise ValueError(
            f"{name} must be {_rule(low, strict, seconds, or_none)}, got {show_value(value)}"
        )
    return number


def _rule(low: float, strict: bool, seconds: bool, or_none: bool) -> str:
    """What :func:`check_number` asks for, in words (made only for a message)."""
    return (
        f"{'None or ' if or_none else ''}a finite number{' of seconds' if seconds else ''} "
        f"{'>' if strict else '>='} {low:g}"
    )


def check_count(value: object, name: str, *, low: int = 1, or_none: bool = True) -> int | None:
    """Check an int >= *low* (None passes if *or_none*): ``size=``, ``max_pending=``, ``burst``,
    ``retries``. Any int, however large: no float is made of it.

    :raises TypeError: for a value that is not an int (a bool neither)
    :raises ValueError: for an int below *low*
    """
    if value is None and or_none:
        return None
    rule = f"{'None or ' if or_none else ''}an int >= {low}"
    if not _is_int(value):
        raise TypeError(f"{name} must be {rule}, not {_type_name(value)}")
    assert isinstance(value, int)
    if value < low:
        raise ValueError(f"{name} must be {rule}, got {show_value(value)}")
    return value


def check_size(size: object) -> int | None:
    """Check ``size=``: None or an int >= 1."""
    return check_count(size, "size")


def check_rate(rate: object) -> float | None:
    """Check ``rate=``: None or a finite number > 0, at most 2**53."""
    if rate is None:
        return None
    value = check_number(rate, "rate", or_none=True)
    if value > MAX_BURST:
        # The limit counts starts in float arithmetic, exact up to 2**53 (see MAX_BURST): say
        # so here, at the call, not at the first `async with`.
        raise ValueError(f"rate must be <= 2**53 ({MAX_BURST}) starts per second, got {rate!r}")
    return value


def check_key(key: object) -> None:
    """A job's key must be hashable: each key's limits are found by it."""
    if key is not None:
        try:
            hash(key)
        except TypeError:
            raise TypeError(f"key must be hashable, not {_type_name(key)}") from None


def check_max_pending(max_pending: object) -> int | None:
    """Check ``max_pending=``: None or an int >= 1."""
    return check_count(max_pending, "max_pending")


#: The largest ``burst`` accepted. The rate limit computes ``(starts - burst + 1) / rate`` in float
#: arithmetic, exact only up to 2**53; a larger burst would lose starts to rounding (and past
#: ~1.8e308 overflow), and already means "no burst limit" for any run a computer can make.
MAX_BURST = 2**53


def check_burst(burst: object) -> int:
    """Check ``burst``: an int from 1 to :data:`MAX_BURST` (2**53)."""
    burst = check_count(burst, "burst", or_none=False)
    assert burst is not None
    if burst > MAX_BURST:
        raise ValueError(f"burst must be an int <= 2**53 ({MAX_BURST}), got {show_value(burst)}")
    return burst


def check_timeout(timeout: object) -> float | None:
    if timeout is None:
        return None
    value = check_number(timeout, "timeout", strict=False, seconds=True, or_none=True)
    # -0.0 passes "value < 0"; adding 0.0 makes it 0.0 (IEEE 754: -0.0 + 0.0 == +0.0), so that
    # messages say "timed out after 0 s", not "-0 s".
    return value + 0.0


def check_seconds(seconds: object) -> float:
    """Check a delay such as ``pause_for(seconds)``: a finite number >= 0."""
    return check_number(seconds, "seconds", strict=False) + 0.0


def check_retries(retries: object) -> int:
    retries = check_count(retries, "retries", low=0, or_none=False)
    assert retries is not None
    return retries


def _cancellation_classes() -> tuple[type[BaseException], ...]:
    classes: list[type[BaseException]] = [asyncio.CancelledError]
    trio = sys.modules.get("trio")
    if trio is not None:
        classes.append(trio.Cancelled)
    return tuple(classes)


def _check_exception_class(value: object) -> type[Exception]:
    if not (isinstance(value, type) and issubclass(value, BaseException)):
        raise TypeError(
            "retryable_exceptions must be an exception class or a sequence of exception classes, "
            f"got {value!r}"
        )
    # Cancellation first: asyncio.CancelledError and trio.Cancelled are BaseExceptions too, and
    # keep their own, more telling, error.
    if issubclass(value, _cancellation_classes()):
        raise ValueError(
            f"retryable_exceptions must not contain {value.__name__}: cancellation is never retried"
        )
    if not issubclass(value, Exception):
        raise TypeError(
            "retryable_exceptions must contain only subclasses of Exception, "
            f"not {value.__name__}: a job's KeyboardInterrupt, SystemExit or other non-Exception "
            "error is never retried, it stops the pool"
        )
    return value


def check_retryable(value: object) -> tuple[type[Exception], ...]:
    """Normalise ``retryable_exceptions`` to a tuple usable with :func:`isinstance`.

    Only subclasses of :exc:`Exception` can be retried. A job that raises any other
    :exc:`BaseException` (``KeyboardInterrupt``, ``SystemExit``, a custom one) fails its future and
    ends the pool, retry or not, so naming such a class (``BaseException`` itself included) is a
    mistake, rejected with :exc:`TypeError`. Cancellation is never retried either (the pool checks
    for it first), so the backend's cancellation class, or a subclass of it, is rejected with
    :exc:`ValueError`.

    :raises TypeError: for what is not an exception class or an iterable of them, and for
        classes that are not subclasses of :exc:`Exception`
    :raises ValueError: for cancellation classes
    """
    if isinstance(value, type):
        return (_check_exception_class(value),)
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(
            "retryable_exceptions must be an exception class or a sequence of exception classes, "
            f"got {value!r}"
        )
    items: Iterable[object] = value  # pyright: ignore[reportUnknownVariableType]
    return tuple(_check_exception_class(item) for item in items)


def check_backoff(backoff: object) -> Callable[[int], float]:
    if not callable(backoff):
        raise TypeError(
            "backoff must be a callable taking the retry number (1, 2, ...) and returning seconds, "
            f"not {_type_name(backoff)}"
        )
    return cast("Callable[[int], float]", backoff)  # its return value is checked per retry


def check_task(task: object) -> Callable[..., Any]:
    """Reject what is not a callable, with a hint for the common coroutine-object mistake."""
    if callable(task):
        return task
    close = getattr(task, "close", None)
    if hasattr(task, "__await__") or hasattr(task, "cr_frame"):
        if close is not None and hasattr(task, "cr_frame"):
            close()  # a coroutine object: close it so Python does not warn "never awaited"
        raise TypeError(
            f"task must be a callable that returns an awaitable, not the awaitable {task!r}: "
            "pass the function and its arguments, e.g. pool.run(fetch, url), "
            "or a lambda, e.g. pool.run(lambda: fetch(url))"
        )
    raise TypeError(f"task must be a callable that returns an awaitable, not {_type_name(task)}")
