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
    "check_key",
    "check_max_pending",
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


def _is_real(value: object) -> bool:
    # bool is a Real at run time (pyright's number stubs think otherwise).
    return isinstance(value, Real) and not isinstance(value, bool)  # pyright: ignore[reportUnnecessaryIsInstance]


def _to_float(value: object, name: str, rule: str) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except OverflowError:  # an int too large for a float: a bad value, not a crash
        raise ValueError(f"{name} must be {rule}, got {show_value(value)}") from None


def check_size(size: object) -> int | None:
    if size is None:
        return None
    if not _is_int(size):
        raise TypeError(f"size must be None or an int >= 1, not {_type_name(size)}")
    assert isinstance(size, int)
    if size < 1:
        raise ValueError(f"size must be None or an int >= 1, got {show_value(size)}")
    return size


def check_rate(rate: object) -> float | None:
    if rate is None:
        return None
    if not _is_real(rate):
        raise TypeError(f"rate must be None or a finite number > 0, not {_type_name(rate)}")
    value = _to_float(rate, "rate", "None or a finite number > 0")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"rate must be None or a finite number > 0, got {show_value(rate)}")
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
    if max_pending is None:
        return None
    if not _is_int(max_pending):
        raise TypeError(f"max_pending must be None or an int >= 1, not {_type_name(max_pending)}")
    assert isinstance(max_pending, int)
    if max_pending < 1:
        raise ValueError(f"max_pending must be None or an int >= 1, got {show_value(max_pending)}")
    return max_pending


#: The largest ``burst`` accepted. The rate limit computes ``(starts - burst + 1) / rate`` in float
#: arithmetic, exact only up to 2**53; a larger burst would lose starts to rounding (and past
#: ~1.8e308 overflow), and already means "no burst limit" for any run a computer can make.
MAX_BURST = 2**53


def check_burst(burst: object) -> int:
    """Check ``burst``: an int from 1 to :data:`MAX_BURST` (2**53)."""
    if not _is_int(burst):
        raise TypeError(f"burst must be an int >= 1, not {_type_name(burst)}")
    assert isinstance(burst, int)
    if burst < 1:
        raise ValueError(f"burst must be an int >= 1, got {show_value(burst)}")
    if burst > MAX_BURST:
        raise ValueError(f"burst must be an int <= 2**53 ({MAX_BURST}), got {show_value(burst)}")
    return burst


def check_timeout(timeout: object) -> float | None:
    if timeout is None:
        return None
    if not _is_real(timeout):
        raise TypeError(
            f"timeout must be None or a finite number of seconds >= 0, not {_type_name(timeout)}"
        )
    value = _to_float(timeout, "timeout", "None or a finite number of seconds >= 0")
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            f"timeout must be None or a finite number of seconds >= 0, got {show_value(timeout)}"
        )
    # -0.0 passes "value < 0"; adding 0.0 makes it 0.0 (IEEE 754: -0.0 + 0.0 == +0.0), so that
    # messages say "timed out after 0 s", not "-0 s".
    return value + 0.0


def check_seconds(seconds: object) -> float:
    """Check a delay such as ``pause_for(seconds)``: a finite number >= 0."""
    if not _is_real(seconds):
        raise TypeError(f"seconds must be a finite number >= 0, not {_type_name(seconds)}")
    value = _to_float(seconds, "seconds", "a finite number >= 0")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"seconds must be a finite number >= 0, got {show_value(seconds)}")
    return value + 0.0


def check_retries(retries: object) -> int:
    if not _is_int(retries):
        raise TypeError(f"retries must be an int >= 0, not {_type_name(retries)}")
    assert isinstance(retries, int)
    if retries < 0:
        raise ValueError(f"retries must be an int >= 0, got {show_value(retries)}")
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
