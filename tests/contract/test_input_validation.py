"""Contract R38-R44: input validation, at the call that made the mistake, for every entry point."""

from __future__ import annotations

import asyncio
import gc
import inspect
import math
import re
import warnings
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.lowlevel import checkpoint
from support import asyncio_only, case_id, echo, submit_by

from werkpool import Future, WorkerPool, worker_pool

README = Path(__file__).resolve().parents[2] / "README.md"

METHODS = ["run", "start_soon", "submit", "call", "map"]

TASK_RULE = "task must be a callable that returns an awaitable"
SIZE_RULE = "size must be None or an int >= 1"
RATE_RULE = "rate must be None or a finite number > 0"
TIMEOUT_RULE = "timeout must be None or a finite number of seconds >= 0"
RETRIES_RULE = "retries must be an int >= 0"
RETRYABLE_RULE = (
    "retryable_exceptions must be an exception class or a sequence of exception classes"
)


async def fetch(url: str) -> str:
    await checkpoint()
    return url


class Awaitable:
    """An awaitable that is neither a coroutine nor callable."""

    def __await__(self) -> Any:
        yield


def untouched(pool: WorkerPool, submitted: int) -> None:
    s = pool.statistics()
    assert s.submitted == submitted, s
    assert s.queued == 0, s


# -- R38: what is passed as the task -------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
async def test_r38_a_coroutine_object_is_rejected_with_a_hint_and_closed(method: str) -> None:
    """pool.<method>(fetch(url)) raises TypeError naming the fix, and closes the coroutine."""
    async with WorkerPool() as pool:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            coro = fetch("https://example.com")
            pattern = (
                rf"^{re.escape(TASK_RULE)}, not the awaitable "
                r"<coroutine object .*fetch at 0x[0-9a-f]+>: "
                r"pass the function and its arguments, e\.g\. pool\.run\(fetch, url\), "
                r"or a lambda, e\.g\. pool\.run\(lambda: fetch\(url\)\)$"
            )
            with pytest.raises(TypeError, match=pattern):
                await submit_by(pool, method, coro)
            assert coro.cr_frame is None  # closed: Python will not warn it was never awaited
            del coro
            gc.collect()
        assert [str(w.message) for w in caught] == []
        untouched(pool, 0)
        assert await pool.run(fetch, "still fine") == "still fine"


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("task", [3, None, "fetch", [echo], Awaitable(), Future()])
async def test_r38_non_callables_and_other_awaitables_are_rejected(method: str, task: Any) -> None:
    """Anything that is not a callable, awaitables included, raises TypeError at submission.

    The message names the type, or for an awaitable gives the hint of the coroutine case.
    """
    if inspect.isawaitable(task):
        pattern = rf"^{re.escape(TASK_RULE)}, not the awaitable .*: pass the function"
    else:
        pattern = rf"^{re.escape(TASK_RULE)}, not {type(task).__name__}$"
    async with WorkerPool() as pool:
        with pytest.raises(TypeError, match=pattern):
            await submit_by(pool, method, task)
        untouched(pool, 0)


@asyncio_only
async def test_r38_an_asyncio_future_is_rejected_too() -> None:
    """An asyncio.Future passed as the task is an awaitable, not a callable: TypeError."""
    task = asyncio.get_running_loop().create_future()
    async with WorkerPool() as pool:
        with pytest.raises(TypeError, match=rf"^{re.escape(TASK_RULE)}, not the awaitable"):
            pool.run(task)
        untouched(pool, 0)
    task.cancel()


# -- R39: a callable that returns a non-awaitable ------------------------------------------------


@pytest.mark.parametrize("method", ["run", "submit", "call", "map"])
@pytest.mark.parametrize("value", [5, None, "text", [1]])
async def test_r39_a_non_awaitable_return_fails_with_type_error_and_no_retry(
    method: str, value: object
) -> None:
    """The job fails with TypeError after one call, even with TypeError retryable."""
    calls: list[object] = []

    def not_async(*_: object) -> object:
        calls.append(value)
        return value

    pattern = (
        rf"^the job's callable {re.escape(repr(not_async))} returned {type(value).__name__}, "
        r"not an awaitable: pass an async function \(or a callable returning an awaitable\)$"
    )
    async with WorkerPool(size=1) as pool:
        with pytest.raises(TypeError, match=pattern):
            outcome = await submit_by(
                pool, method, not_async, retries=3, retryable_exceptions=TypeError
            )
            if method in ("run", "submit"):
                await outcome
        assert await pool.call(echo, "slot is free") == "slot is free"
    assert calls == [value]
    s = pool.statistics()
    assert (s.failed, s.attempts, s.retries) == (1, 2, 0)


# -- R40: size -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "error", "message"),
    [
        (0, ValueError, f"{SIZE_RULE}, got 0"),
        (-1, ValueError, f"{SIZE_RULE}, got -1"),
        (-(10**30), ValueError, f"{SIZE_RULE}, got {-(10**30)}"),
        (True, TypeError, f"{SIZE_RULE}, not bool"),
        (False, TypeError, f"{SIZE_RULE}, not bool"),
        (2.0, TypeError, f"{SIZE_RULE}, not float"),
        (2.5, TypeError, f"{SIZE_RULE}, not float"),
        (math.nan, TypeError, f"{SIZE_RULE}, not float"),
        (math.inf, TypeError, f"{SIZE_RULE}, not float"),
        ("3", TypeError, f"{SIZE_RULE}, not str"),
        (Decimal(3), TypeError, f"{SIZE_RULE}, not Decimal"),
        (Fraction(3), TypeError, f"{SIZE_RULE}, not Fraction"),
    ],
    ids=case_id,
)
def test_r40_size_accepts_only_none_or_an_int_of_at_least_one(
    size: Any, error: type[Exception], message: str
) -> None:
    """Wrong types (bool, every float, NaN and inf included) are TypeError; ints < 1 ValueError.

    inf is not "unlimited": None is. The same error from WorkerPool() and worker_pool().
    """
    for factory in (WorkerPool, worker_pool):
        with pytest.raises(error, match=rf"^{re.escape(message)}$"):
            factory(size=size)
        with pytest.raises(error, match=rf"^{re.escape(message)}$"):
            factory(size)


@pytest.mark.parametrize("size", [None, 1, 2, 10**6])
def test_r40_size_accepts_none_and_positive_ints(size: int | None) -> None:
    assert WorkerPool(size=size).size == size


# -- R41: rate -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "error", "message"),
    [
        (0, ValueError, f"{RATE_RULE}, got 0"),
        (0.0, ValueError, f"{RATE_RULE}, got 0.0"),
        (-1, ValueError, f"{RATE_RULE}, got -1"),
        (-0.5, ValueError, f"{RATE_RULE}, got -0.5"),
        (math.nan, ValueError, f"{RATE_RULE}, got nan"),
        (math.inf, ValueError, f"{RATE_RULE}, got inf"),
        (-math.inf, ValueError, f"{RATE_RULE}, got -inf"),
        pytest.param(10**400, ValueError, f"{RATE_RULE}, got {10**400}", id="int-too-large"),
        (True, TypeError, f"{RATE_RULE}, not bool"),
        (False, TypeError, f"{RATE_RULE}, not bool"),
        (Fraction(0), ValueError, f"{RATE_RULE}, got Fraction(0, 1)"),
        ("10", TypeError, f"{RATE_RULE}, not str"),
        (1j, TypeError, f"{RATE_RULE}, not complex"),
        (Decimal(10), TypeError, f"{RATE_RULE}, not Decimal"),
        ([10], TypeError, f"{RATE_RULE}, not list"),
    ],
    ids=case_id,
)
def test_r41_rate_accepts_only_none_or_a_finite_real_above_zero(
    rate: Any, error: type[Exception], message: str
) -> None:
    """0, negatives, NaN, +-inf, too-large ints, strings and bools are all rejected."""
    for factory in (WorkerPool, worker_pool):
        with pytest.raises(error, match=rf"^{re.escape(message)}$"):
            factory(rate=rate)


# -- R42: timeout --------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    ("seconds", "error", "message"),
    [
        (math.nan, ValueError, f"{TIMEOUT_RULE}, got nan"),
        (-1, ValueError, f"{TIMEOUT_RULE}, got -1"),
        (-1e-9, ValueError, f"{TIMEOUT_RULE}, got -1e-09"),
        (math.inf, ValueError, f"{TIMEOUT_RULE}, got inf"),
        (-math.inf, ValueError, f"{TIMEOUT_RULE}, got -inf"),
        ("5", TypeError, f"{TIMEOUT_RULE}, not str"),
        (b"5", TypeError, f"{TIMEOUT_RULE}, not bytes"),
        ([5], TypeError, f"{TIMEOUT_RULE}, not list"),
        (True, TypeError, f"{TIMEOUT_RULE}, not bool"),
    ],
    ids=case_id,
)
async def test_r42_bad_timeouts_raise_at_submission_on_both_backends(
    method: str, seconds: Any, error: type[Exception], message: str
) -> None:
    """NaN, negative, infinite and non-number timeouts raise at the call, identically."""
    async with WorkerPool() as pool:
        with pytest.raises(error, match=rf"^{re.escape(message)}$"):
            await submit_by(pool, method, echo, timeout=seconds)
        untouched(pool, 0)
        assert await submit_by(pool, "call", echo, "ok", timeout=0.5) == "ok"


# -- R43: retries and retryable_exceptions -------------------------------------------------------


def _cancellation_classes() -> list[tuple[Any, str]]:
    """(retryable_exceptions, the class the error names)."""
    import trio

    class MyCancelled(asyncio.CancelledError):
        pass

    return [
        (asyncio.CancelledError, "CancelledError"),
        (trio.Cancelled, "Cancelled"),
        (MyCancelled, "MyCancelled"),
        ((ValueError, asyncio.CancelledError), "CancelledError"),
        ([KeyError, trio.Cancelled], "Cancelled"),
    ]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    ("retries", "error", "message"),
    [
        (-1, ValueError, f"{RETRIES_RULE}, got -1"),
        (True, TypeError, f"{RETRIES_RULE}, not bool"),
        (False, TypeError, f"{RETRIES_RULE}, not bool"),
        (1.0, TypeError, f"{RETRIES_RULE}, not float"),
        (0.0, TypeError, f"{RETRIES_RULE}, not float"),
        ("1", TypeError, f"{RETRIES_RULE}, not str"),
        (None, TypeError, f"{RETRIES_RULE}, not NoneType"),
    ],
    ids=case_id,
)
async def test_r43_retries_is_an_int_of_at_least_zero(
    method: str, retries: Any, error: type[Exception], message: str
) -> None:
    async with WorkerPool() as pool:
        with pytest.raises(error, match=rf"^{re.escape(message)}$"):
            await submit_by(pool, method, echo, retries=retries)
        untouched(pool, 0)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    ("retryable", "shown"),
    [
        ("ValueError", "ValueError"),
        (b"OSError", b"OSError"),
        (ValueError("an instance"), ValueError("an instance")),
        (42, 42),
        (None, None),
        (int, int),
        ([ValueError, "x"], "x"),
        ((ValueError, 3), 3),
        ([ValueError()], ValueError()),
    ],
    ids=[
        "str",
        "bytes",
        "instance",
        "int",
        "None",
        "non-exception-class",
        "list-with-str",
        "tuple-with-int",
        "list-with-instance",
    ],
)
async def test_r43_retryable_exceptions_must_be_exception_classes(
    method: str, retryable: Any, shown: object
) -> None:
    """Strings, instances and non-exception classes raise TypeError at submission, showing the
    offending value (the item itself when it is inside a sequence)."""
    pattern = rf"^{re.escape(RETRYABLE_RULE)}, got {re.escape(repr(shown))}$"
    async with WorkerPool() as pool:
        with pytest.raises(TypeError, match=pattern):
            await submit_by(pool, method, echo, retries=1, retryable_exceptions=retryable)
        untouched(pool, 0)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("index", range(5))
async def test_r43_cancellation_classes_are_rejected(method: str, index: int) -> None:
    """Cancellation is never retried, so naming a cancellation class is refused (ValueError)."""
    retryable, name = _cancellation_classes()[index]
    async with WorkerPool() as pool:
        with pytest.raises(
            ValueError,
            match=rf"^retryable_exceptions must not contain {name}: cancellation is never retried$",
        ):
            await submit_by(pool, method, echo, retries=1, retryable_exceptions=retryable)
        with pytest.raises(ValueError, match=r"cancellation is never retried"):
            pool.run(echo, 1, retryable_exceptions=anyio.get_cancelled_exc_class())
        untouched(pool, 0)


# -- R44: argument binding -----------------------------------------------------------------------


@pytest.mark.parametrize("method", ["run", "start_soon", "submit", "call"])
async def test_r44_arguments_are_bound_at_submission(method: str) -> None:
    """pool.<method>(fn, i) in a loop: each job sees the i it was submitted with."""
    results: list[Any] = []
    async with WorkerPool(size=2) as pool:
        for i in range(10):
            outcome = await submit_by(pool, method, echo, i)
            results.append(outcome)
        i = 99  # rebinding the name afterwards changes nothing
        values = [r if method == "call" else await r for r in results]
    assert values == list(range(10))
    assert i == 99


async def test_r44_the_late_binding_hazard_is_real_and_documented() -> None:
    """lambda: f(i) sees only the last i; the README says so and recommends pool.run(f, i)."""
    async with WorkerPool(size=1) as pool:
        futures = [pool.run(lambda: echo(i)) for i in range(5)]  # noqa: B023 - the hazard
        assert [await f for f in futures] == [4] * 5
    text = " ".join(README.read_text(encoding="utf-8").split())
    assert (
        '`pool.run(fetch_data, "https://example.com")` does the same and binds the argument at '
        "once: prefer it inside loops, where `lambda: fetch_data(url)` would see only the loop's "
        "last `url`" in text
    )
    doc = " ".join((WorkerPool.run.__doc__ or "").split())
    assert "binds ``url`` now" in doc
    assert "which binds late" in doc
