"""Bad input raises at the call that made it, with a message that names the argument and the rule.

Constructor checks are plain sync tests (a pool is built with no event loop); the checks of
``pool.run()`` run on both backends, inside an open pool, and each one also proves that the rejected
call left nothing behind: no phantom job, and the pool still runs a good job.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import re
import threading
import warnings
from contextlib import contextmanager
from decimal import Decimal
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import pytest
from anyio.lowlevel import checkpoint

import werkpool
from werkpool import PoolClosedError, WorkerPool, worker_pool

if TYPE_CHECKING:
    from collections.abc import Iterator

NAN = float("nan")
INF = float("inf")

SIZE_RULE = "size must be None or an int >= 1"
RATE_RULE = "rate must be None or a finite number > 0"
BURST_RULE = "burst must be an int >= 1"
TIMEOUT_RULE = "timeout must be None or a finite number of seconds >= 0"
RETRIES_RULE = "retries must be an int >= 0"
RETRYABLE_RULE = (
    "retryable_exceptions must be an exception class or a sequence of exception classes"
)
BACKOFF_RULE = (
    "backoff must be a callable taking the retry number (1, 2, ...) and returning seconds"
)
TASK_RULE = "task must be a callable that returns an awaitable"


def type_error(rule: str, value: object) -> str:
    """The anchored pattern of a TypeError message: '<rule>, not <type name>'."""
    return rf"^{re.escape(rule)}, not {type(value).__name__}$"


def value_error(rule: str, value: object) -> str:
    """The anchored pattern of a ValueError message: '<rule>, got <value>'."""
    return rf"^{re.escape(rule)}, got {re.escape(str(value))}$"


def value_error_repr(rule: str, value: object) -> str:
    """Like :func:`value_error`, for the checks that show the value with ``repr()``."""
    return rf"^{re.escape(rule)}, got {re.escape(repr(value))}$"


async def fetch(url: str) -> str:
    """A job: returns its argument after one checkpoint."""
    await checkpoint()
    return url


async def echo(value: Any) -> Any:
    """A job: returns its argument after one checkpoint."""
    await checkpoint()
    return value


def snapshot(pool: WorkerPool) -> tuple[str, int]:
    """The pool's repr (state and job counts) and how many jobs it has ever accepted."""
    assert pool._sched is not None
    return repr(pool), pool._sched.submitted


async def assert_untouched(pool: WorkerPool, before: tuple[str, int]) -> None:
    """Check that a rejected call queued nothing and that the pool still runs a good job."""
    assert snapshot(pool) == before
    assert pool._sched is not None
    assert pool._sched.queued == 0
    assert await pool.run(echo, "still works") == "still works"


@contextmanager
def real_time_guard(seconds: float) -> Iterator[anyio.CancelScope]:
    """Cancel the block after *seconds* of real time: a livelock stops virtual time, so only a
    real-time watchdog ends it (and the test then fails with a message, instead of hanging)."""
    token = anyio.lowlevel.current_token()
    with anyio.CancelScope() as scope:
        timer = threading.Timer(
            seconds, lambda: anyio.from_thread.run_sync(scope.cancel, token=token)
        )
        timer.start()
        try:
            yield scope
        finally:
            timer.cancel()


# -- the constructor -------------------------------------------------------------------------------


class TestSize:
    @pytest.mark.parametrize("size", [None, 1, 7, 10**6])
    def test_accepts_none_and_positive_ints(self, size: int | None) -> None:
        """size may be None or any int >= 1, and is kept as given."""
        assert WorkerPool(size=size).size == size

    @pytest.mark.parametrize("size", [True, False, 2.0, "3", NAN, INF, Decimal(3), Fraction(3)])
    def test_rejects_non_ints(self, size: object) -> None:
        """A bool, a float (even a whole one), a string or another number type is a TypeError."""
        with pytest.raises(TypeError, match=type_error(SIZE_RULE, size)):
            WorkerPool(size=size)  # type: ignore[arg-type]

    @pytest.mark.parametrize("size", [0, -1, -(10**20)])
    def test_rejects_ints_below_one(self, size: int) -> None:
        """An int below 1 is a ValueError that shows the value."""
        with pytest.raises(ValueError, match=value_error(SIZE_RULE, size)):
            WorkerPool(size=size)

    def test_is_positional(self) -> None:
        """size is the first positional argument, as in werkpool 0.2."""
        assert WorkerPool(3).size == 3


class TestRate:
    @pytest.mark.parametrize(
        ("rate", "stored"),
        [
            (None, None),
            (100, 100.0),
            (0.05, 0.05),
            (Fraction(1, 20), 0.05),
            (1e-9, 1e-9),
            (1e12, 1e12),
        ],
    )
    def test_accepts_finite_positive_reals(self, rate: Any, stored: float | None) -> None:
        """Ints, floats and fractions.Fraction are accepted and stored as a float."""
        pool = WorkerPool(rate=rate)
        assert pool.rate == stored
        assert pool.rate is None or type(pool.rate) is float

    @pytest.mark.parametrize("rate", [True, False, "10", Decimal(10), 1j, [10]])
    def test_rejects_non_reals(self, rate: object) -> None:
        """A bool, a string, a Decimal (not a numbers.Real) or a complex is a TypeError."""
        with pytest.raises(TypeError, match=type_error(RATE_RULE, rate)):
            WorkerPool(rate=rate)  # type: ignore[arg-type]

    @pytest.mark.parametrize("rate", [0, 0.0, -1, -0.5, NAN, INF, -INF, Fraction(0)])
    def test_rejects_zero_negative_and_non_finite(self, rate: Any) -> None:
        """Zero, a negative rate, NaN and infinities are ValueErrors that show the value."""
        with pytest.raises(ValueError, match=value_error_repr(RATE_RULE, rate)):
            WorkerPool(rate=rate)

    def test_rejects_an_int_too_large_for_a_float(self) -> None:
        """An int beyond float range is a ValueError naming rate, not a bare OverflowError."""
        with pytest.raises(ValueError, match=value_error_repr(RATE_RULE, 10**400)):
            WorkerPool(rate=10**400)

    def test_is_positional(self) -> None:
        """rate is the second positional argument, as in werkpool 0.2."""
        assert WorkerPool(None, 2).rate == 2.0


class TestBurst:
    @pytest.mark.parametrize("burst", [1, 5, 10**6, 2**53])
    def test_accepts_positive_ints(self, burst: int) -> None:
        """burst may be any int from 1 to 2**53."""
        assert WorkerPool(rate=1, burst=burst).burst == burst

    def test_defaults_to_one(self) -> None:
        """Without burst, starts are spaced 1/rate apart (burst=1)."""
        assert WorkerPool(rate=1).burst == 1

    @pytest.mark.parametrize("burst", [True, 1.0, "2", None, NAN])
    def test_rejects_non_ints(self, burst: object) -> None:
        """A bool, a float, a string or None is a TypeError."""
        with pytest.raises(TypeError, match=type_error(BURST_RULE, burst)):
            WorkerPool(rate=1, burst=burst)  # type: ignore[arg-type]

    @pytest.mark.parametrize("burst", [0, -3])
    def test_rejects_ints_below_one(self, burst: int) -> None:
        """An int below 1 is a ValueError that shows the value."""
        with pytest.raises(ValueError, match=value_error(BURST_RULE, burst)):
            WorkerPool(rate=1, burst=burst)

    def test_is_keyword_only(self) -> None:
        """burst cannot be passed positionally."""
        with pytest.raises(TypeError, match=r"^.*takes from 1 to 3 positional arguments but 4"):
            WorkerPool(None, 1, 2)  # type: ignore[misc]


class TestConstructorMisc:
    def test_needs_no_event_loop(self) -> None:
        """A pool is built, and its repr read, with no event loop running."""
        pool = WorkerPool(size=2, rate=1.5, burst=3)
        assert repr(pool) == "<werkpool.WorkerPool new size=2 rate=1.5 burst=3>"

    def test_first_bad_argument_wins(self) -> None:
        """The arguments are checked in order: size before rate before burst."""
        with pytest.raises(ValueError, match=r"^size "):
            WorkerPool(size=0, rate=0, burst=0)
        with pytest.raises(ValueError, match=r"^rate "):
            WorkerPool(size=1, rate=0, burst=0)

    @pytest.mark.parametrize(
        ("kwargs", "rule"),
        [
            ({"size": -(10**5000)}, SIZE_RULE),
            ({"rate": 10**5000}, RATE_RULE),
            ({"rate": 1, "burst": -(10**5000)}, BURST_RULE),
        ],
        ids=["size", "rate", "burst"],
    )
    def test_an_int_too_long_to_print_still_names_the_argument(
        self, kwargs: dict[str, Any], rule: str
    ) -> None:
        """An int past Python's 4300-digit str() limit is a ValueError that names the argument."""
        with pytest.raises(ValueError, match=rf"^{re.escape(rule)}, got "):
            WorkerPool(**kwargs)

    @pytest.mark.parametrize(
        ("kwargs", "error", "pattern"),
        [
            ({"size": -1}, ValueError, value_error(SIZE_RULE, -1)),
            ({"size": 1.5}, TypeError, type_error(SIZE_RULE, 1.5)),
            ({"rate": "x"}, TypeError, type_error(RATE_RULE, "x")),
            ({"rate": -2}, ValueError, value_error_repr(RATE_RULE, -2)),
            ({"burst": 0}, ValueError, value_error(BURST_RULE, 0)),
        ],
    )
    def test_worker_pool_checks_at_the_call(
        self, kwargs: dict[str, Any], error: type[Exception], pattern: str
    ) -> None:
        """worker_pool() raises the same error as WorkerPool() at once (never UnboundLocalError)."""
        with pytest.raises(error, match=pattern):
            worker_pool(**kwargs)

    def test_worker_pool_returns_a_configured_pool(self) -> None:
        """worker_pool(...) is WorkerPool(...) for use with async with."""
        pool = worker_pool(size=5, rate=10, burst=2)
        assert isinstance(pool, WorkerPool)
        assert (pool.size, pool.rate, pool.burst) == (5, 10.0, 2)


# -- pool.run(): per-job options -------------------------------------------------------------------


class TestTimeout:
    @pytest.mark.parametrize("seconds", [NAN, -1, -0.001, INF, -INF])
    async def test_rejects_negative_and_non_finite(self, seconds: float) -> None:
        """A negative, NaN or infinite timeout is a ValueError; the pool is unaffected."""
        async with WorkerPool() as pool:
            before = snapshot(pool)
            with pytest.raises(ValueError, match=value_error_repr(TIMEOUT_RULE, seconds)):
                pool.run(echo, 1, timeout=seconds)
            await assert_untouched(pool, before)

    @pytest.mark.parametrize("seconds", ["5", True, b"5", [5]])
    async def test_rejects_non_numbers(self, seconds: object) -> None:
        """A string, a bool or a list is a TypeError; the pool is unaffected."""
        async with WorkerPool() as pool:
            before = snapshot(pool)
            with pytest.raises(TypeError, match=type_error(TIMEOUT_RULE, seconds)):
                pool.run(echo, 1, timeout=seconds)  # type: ignore[call-overload]
            await assert_untouched(pool, before)

    async def test_rejects_an_int_too_large_for_a_float(self) -> None:
        """An int beyond float range is a ValueError naming timeout, not a bare OverflowError."""
        async with WorkerPool() as pool:
            before = snapshot(pool)
            with pytest.raises(ValueError, match=value_error_repr(TIMEOUT_RULE, 10**400)):
                pool.run(echo, 1, timeout=10**400)
            await assert_untouched(pool, before)

    async def test_accepts_zero_which_times_out_at_once(self) -> None:
        """timeout=0 is accepted, and the attempt times out at its first checkpoint."""
        async with WorkerPool() as pool:
            future = pool.run(echo, 1, timeout=0)
            with pytest.raises(TimeoutError, match=r"^the attempt timed out after 0 s$"):
                await future

    @pytest.mark.parametrize("seconds", [5, 0.5, Fraction(1, 2)])
    async def test_accepts_finite_positive_reals(self, seconds: Any) -> None:
        """Ints, floats and fractions are accepted as seconds."""
        async with WorkerPool() as pool:
            assert await pool.run(echo, "ok", timeout=seconds) == "ok"


class TestRetries:
    @pytest.mark.parametrize("retries", [-1, -100])
    async def test_rejects_negative(self, retries: int) -> None:
        """A negative retry count is a ValueError; the pool is unaffected."""
        async with WorkerPool() as pool:
            before = snapshot(pool)
            with pytest.raises(ValueError, match=value_error(RETRIES_RULE, retries)):
                pool.run(echo, 1, retries=retries)
            await assert_untouched(pool, before)

    @pytest.mark.parametrize("retries", [True, 1.5, "1", None, 2.0])
    async def test_rejects_non_ints(self, retries: object) -> None:
        """A bool, a float, a string or None is a TypeError; the pool is unaffected."""
        async with WorkerPool() as pool:
            before = snapshot(pool)
            with pytest.raises(TypeError, match=type_error(RETRIES_RULE, retries)):
                pool.run(echo, 1, retries=retries)  # type: ignore[call-overload]
            await assert_untouched(pool, before)

    @pytest.mark.parametrize("retries", [False, 0.0])
    async def test_rejects_non_ints_equal_to_zero(self, retries: object) -> None:
        """False and 0.0 are TypeErrors too, even though they compare equal to the default 0."""
        async with WorkerPool() as pool:
            before = snapshot(pool)
            with pytest.raises(TypeError, match=type_error(RETRIES_RULE, retries)):
                pool.run(echo, 1, retries=retries)  # type: ignore[call-overload]
            await assert_untouched(pool, before)


class FlakyJob:
    """A job that raises ``errors[n]`` on call n (while there are any), then returns "done"."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        await checkpoint()
        if self.errors:
            raise self.errors.pop(0)
        return "done"


def no_wait(retry: int) -> float:
    """A backoff with no delay."""
    return 0


class CancelledSubclass(asyncio.CancelledError):
    """A subclass of asyncio's cancellation exception."""


class NotAnException(BaseException):
    """A BaseException of the user's own that is not an Exception."""


class TestRetryableExceptions:
    @pytest.mark.parametrize(
        ("value", "shown"),
        [
            ("ValueError", "ValueError"),
            (b"ValueError", b"ValueError"),
            (ValueError(), ValueError()),
            (3, 3),
            (None, None),
            (int, int),
            ([ValueError, 3], 3),
            ((ValueError, "OSError"), "OSError"),
            ([ValueError()], ValueError()),
        ],
        ids=[
            "str",
            "bytes",
            "instance",
            "int",
            "None",
            "non-exception-class",
            "list-with-int",
            "tuple-with-str",
            "list-with-instance",
        ],
    )
    async def test_rejects_what_is_not_exception_classes(
        self, value: object, shown: object
    ) -> None:
        """Anything but an exception class or an iterable of them is a TypeError showing it."""
        async with WorkerPool() as pool:
            before = snapshot(pool)
            with pytest.raises(TypeError, match=value_error_repr(RETRYABLE_RULE, shown)):
                pool.run(echo, 1, retryable_exceptions=value)  # type: ignore[call-overload]
            await assert_untouched(pool, before)

    @pytest.mark.parametrize(
        ("value", "name"),
        [
            (asyncio.CancelledError, "CancelledError"),
            ([ValueError, asyncio.CancelledError], "CancelledError"),
            ((CancelledSubclass,), "CancelledSubclass"),
        ],
        ids=["class", "in-list", "subclass-in-tuple"],
    )
    async def test_rejects_asyncio_cancellation(self, value: Any, name: str) -> None:
        """asyncio.CancelledError (or a subclass) is a ValueError: cancellation is never retried."""
        async with WorkerPool() as pool:
            before = snapshot(pool)
            pattern = (
                rf"^retryable_exceptions must not contain {name}: cancellation is never retried$"
            )
            with pytest.raises(ValueError, match=pattern):
                pool.run(echo, 1, retryable_exceptions=value)
            await assert_untouched(pool, before)

    @pytest.mark.parametrize(
        ("value", "name"),
        [
            (BaseException, "BaseException"),
            ([ValueError, KeyboardInterrupt], "KeyboardInterrupt"),
            ((SystemExit,), "SystemExit"),
            (GeneratorExit, "GeneratorExit"),
            (NotAnException, "NotAnException"),
        ],
        ids=["BaseException", "in-list", "in-tuple", "GeneratorExit", "custom"],
    )
    async def test_rejects_base_exceptions_that_are_not_exceptions(
        self, value: Any, name: str
    ) -> None:
        """A BaseException subclass that is not an Exception is never retried: TypeError."""
        async with WorkerPool() as pool:
            before = snapshot(pool)
            pattern = (
                rf"^retryable_exceptions must contain only subclasses of Exception, not {name}: "
                r"a job's KeyboardInterrupt, SystemExit or other non-Exception error is never "
                r"retried, it stops the pool$"
            )
            with pytest.raises(TypeError, match=pattern):
                pool.run(echo, 1, retryable_exceptions=value)
            await assert_untouched(pool, before)

    async def test_rejects_trio_cancellation(self) -> None:
        """trio.Cancelled is a ValueError too, on either backend, once trio is imported."""
        trio = pytest.importorskip("trio")
        async with WorkerPool() as pool:
            before = snapshot(pool)
            pattern = (
                r"^retryable_exceptions must not contain Cancelled: cancellation is never retried$"
            )
            with pytest.raises(ValueError, match=pattern):
                pool.run(echo, 1, retryable_exceptions=[OSError, trio.Cancelled])
            await assert_untouched(pool, before)

    @pytest.mark.parametrize(
        "value",
        [
            ValueError,
            [ValueError],
            (OSError, ValueError),
            [LookupError, ValueError],
            Exception,
            frozenset({ValueError}),
        ],
        ids=["class", "list", "tuple", "list-of-two", "Exception", "frozenset"],
    )
    async def test_accepts_a_class_or_an_iterable_of_classes(self, value: Any) -> None:
        """A class, a list, a tuple or a set of classes is accepted and used to pick retries."""
        job = FlakyJob(ValueError("first"), ValueError("second"))
        async with WorkerPool() as pool:
            future = pool.run(job, retries=2, retryable_exceptions=value, backoff=no_wait)
            assert await future == "done"
        assert job.calls == 3

    async def test_accepts_a_generator_once(self) -> None:
        """A one-shot iterable (a generator) is read once at the call and used for every retry."""
        job = FlakyJob(KeyError("a"), KeyError("b"))
        async with WorkerPool() as pool:
            classes = (cls for cls in [KeyError])
            future = pool.run(job, retries=2, retryable_exceptions=classes, backoff=no_wait)
            assert await future == "done"
        assert job.calls == 3

    async def test_accepts_an_empty_list_meaning_no_retries(self) -> None:
        """An empty list is accepted: nothing is retried."""
        job = FlakyJob(ValueError("boom"))
        async with WorkerPool() as pool:
            future = pool.run(job, retries=3, retryable_exceptions=[], backoff=no_wait)
            with pytest.raises(ValueError, match=r"^boom$"):
                await future
        assert job.calls == 1


class TestBackoff:
    @pytest.mark.parametrize("backoff", [1, 0.5, None, "exponential", [1, 2]])
    async def test_rejects_non_callables(self, backoff: object) -> None:
        """A backoff that is not callable is a TypeError; the pool is unaffected."""
        async with WorkerPool() as pool:
            before = snapshot(pool)
            with pytest.raises(TypeError, match=type_error(BACKOFF_RULE, backoff)):
                pool.run(echo, 1, retries=1, backoff=backoff)  # type: ignore[call-overload]
            await assert_untouched(pool, before)

    async def test_is_checked_even_without_retries(self) -> None:
        """backoff is checked at the call even when retries=0 would never call it."""
        async with WorkerPool() as pool:
            with pytest.raises(TypeError, match=type_error(BACKOFF_RULE, 1)):
                pool.run(echo, 1, backoff=1)  # type: ignore[call-overload]

    @pytest.mark.parametrize("delay", [0, 0.5, 2.1234567891234567, 1e-9, 59.999999999999])
    async def test_accepted_delays_of_any_precision_are_honoured(self, delay: float) -> None:
        """Any finite delay >= 0 is accepted, and the retry starts exactly that much later."""
        job = FlakyJob(OSError("once"))
        with real_time_guard(10) as guard:
            async with WorkerPool() as pool:
                start = anyio.current_time()
                assert await pool.run(job, retries=1, backoff=lambda retry: delay) == "done"
                assert anyio.current_time() - start == pytest.approx(delay, abs=1e-6)
        assert not guard.cancelled_caught, (
            f"the pool stalled: virtual time stuck at {anyio.current_time()!r} for 10 real seconds"
        )
        assert job.calls == 2


# -- pool.run(): the task --------------------------------------------------------------------------


class NotACoroutine:
    """An awaitable that is not a coroutine, with a fixed repr."""

    def __await__(self) -> Any:
        yield

    def __repr__(self) -> str:
        return "<NotACoroutine>"


class TestTask:
    @pytest.mark.parametrize("task", [3, None, "fetch", [echo]])
    async def test_rejects_non_callables(self, task: object) -> None:
        """A task that is not callable is a TypeError; the pool is unaffected."""
        async with WorkerPool() as pool:
            before = snapshot(pool)
            with pytest.raises(TypeError, match=type_error(TASK_RULE, task)):
                pool.run(task)  # type: ignore[call-overload]
            await assert_untouched(pool, before)

    async def test_rejects_a_coroutine_object_with_a_hint(self) -> None:
        """pool.run(fetch(url)) is a TypeError suggesting pool.run(fetch, url) or a lambda."""
        async with WorkerPool() as pool:
            before = snapshot(pool)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                coro = fetch("https://example.com")
                pattern = (
                    rf"^{re.escape(TASK_RULE)}, not the awaitable <coroutine object fetch at "
                    r"0x[0-9a-f]+>: pass the function and its arguments, e\.g\. "
                    r"pool\.run\(fetch, url\), or a lambda, "
                    r"e\.g\. pool\.run\(lambda: fetch\(url\)\)$"
                )
                with pytest.raises(TypeError, match=pattern):
                    pool.run(coro)  # type: ignore[call-overload]
                assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
                del coro
                gc.collect()
            assert [str(w.message) for w in caught] == []
            await assert_untouched(pool, before)

    async def test_rejects_another_awaitable_with_the_same_hint(self) -> None:
        """An awaitable that is not a coroutine gets the same hint."""
        async with WorkerPool() as pool:
            before = snapshot(pool)
            pattern = rf"^{re.escape(TASK_RULE)}, not the awaitable <NotACoroutine>: pass the "
            with pytest.raises(TypeError, match=pattern):
                pool.run(NotACoroutine())  # type: ignore[call-overload]
            await assert_untouched(pool, before)

    async def test_checks_the_task_before_the_pool_state(self) -> None:
        """A coroutine passed to a closed pool is still closed, with the TypeError, not leaked."""
        async with WorkerPool() as pool:
            pass
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            coro = fetch("x")
            with pytest.raises(TypeError, match=rf"^{re.escape(TASK_RULE)}, not the awaitable"):
                pool.run(coro)  # type: ignore[call-overload]
            del coro
            gc.collect()
        assert [str(w.message) for w in caught] == []

    @pytest.mark.parametrize("value", [5, None, "text"])
    async def test_a_non_awaitable_return_fails_the_job_without_retries(
        self, value: object
    ) -> None:
        """A callable returning a non-awaitable fails its future with TypeError, never retried."""
        calls = 0

        def sync_job() -> object:
            nonlocal calls
            calls += 1
            return value

        async with WorkerPool() as pool:
            future = pool.run(
                sync_job,  # type: ignore[arg-type]
                retries=3,
                retryable_exceptions=[TypeError],
                backoff=no_wait,
            )
            pattern = (
                rf"^the job's callable {re.escape(repr(sync_job))} returned "
                rf"{type(value).__name__}, not an awaitable: pass an async function "
                r"\(or a callable returning an awaitable\)$"
            )
            with pytest.raises(TypeError, match=pattern):
                await future
            assert calls == 1
            assert await pool.run(echo, "next") == "next"

    async def test_a_lambda_returning_five_fails_the_job(self) -> None:
        """pool.run(lambda: 5) fails its future with TypeError and leaves the pool working."""
        async with WorkerPool(size=1) as pool:
            with pytest.raises(TypeError, match=r"^the job's callable <function .*<lambda>"):
                await pool.run(lambda: 5)  # type: ignore[arg-type,return-value]
            assert pool._limiter is not None
            assert pool._limiter.borrowed_tokens == 0
            assert await pool.run(echo, "next") == "next"


# -- pool.run() on a pool that no longer accepts work ----------------------------------------------


def closed_pattern(reason: str) -> str:
    return rf"^this WorkerPool no longer accepts jobs: {re.escape(reason)}$"


class TestClosedPool:
    def test_pool_closed_error_is_a_runtime_error(self) -> None:
        """PoolClosedError subclasses RuntimeError and is exported from werkpool."""
        assert issubclass(PoolClosedError, RuntimeError)
        assert werkpool.PoolClosedError is PoolClosedError
        assert PoolClosedError.__module__ == "werkpool"

    async def test_run_after_shutdown_in_async_with(self) -> None:
        """run() from outside the pool after shutdown() raises PoolClosedError saying why."""
        async with WorkerPool() as pool:
            assert await pool.run(echo, 1) == 1
            await pool.shutdown()
            before = snapshot(pool)
            with pytest.raises(PoolClosedError, match=closed_pattern("shutdown() has begun")):
                pool.run(echo, 2)
            assert snapshot(pool) == before

    async def test_run_after_kill_in_async_with(self) -> None:
        """run() after kill() raises PoolClosedError saying why."""
        async with WorkerPool() as pool:
            await pool.kill()
            before = snapshot(pool)
            pattern = closed_pattern("kill() has begun or the pool failed")
            with pytest.raises(PoolClosedError, match=pattern):
                pool.run(echo, 2)
            assert snapshot(pool) == before

    async def test_run_after_async_with_exits(self) -> None:
        """run() after the async with block raises PoolClosedError: the pool has exited."""
        async with WorkerPool() as pool:
            assert await pool.run(echo, 1) == 1
        with pytest.raises(PoolClosedError, match=closed_pattern("the pool has exited")):
            pool.run(echo, 2)

    async def test_run_after_shutdown_of_a_hosted_pool(self) -> None:
        """A pool used without async with and shut down raises PoolClosedError: it has exited."""
        pool = WorkerPool(size=2)
        assert await pool.run(echo, 1) == 1
        await pool.shutdown()
        with pytest.raises(PoolClosedError, match=closed_pattern("the pool has exited")):
            pool.run(echo, 2)

    async def test_run_after_kill_of_a_hosted_pool(self) -> None:
        """A pool used without async with and killed raises PoolClosedError."""
        pool = WorkerPool(size=2)
        assert await pool.run(echo, 1) == 1
        await pool.kill()
        with pytest.raises(PoolClosedError, match=r"^this WorkerPool no longer accepts jobs: "):
            pool.run(echo, 2)

    async def test_run_after_shutdown_of_a_never_started_pool(self) -> None:
        """shutdown() of a pool that never ran closes it: run() then raises PoolClosedError."""
        pool = WorkerPool()
        await pool.shutdown()
        with pytest.raises(PoolClosedError, match=closed_pattern("the pool has exited")):
            pool.run(echo, 1)

    async def test_run_after_kill_of_a_never_started_pool(self) -> None:
        """kill() of a pool that never ran closes it: run() then raises PoolClosedError."""
        pool = WorkerPool()
        await pool.kill()
        with pytest.raises(PoolClosedError, match=closed_pattern("the pool has exited")):
            pool.run(echo, 1)

    async def test_validation_comes_before_the_closed_check(self) -> None:
        """A bad option on a closed pool reports the bad option (the caller's first mistake)."""
        async with WorkerPool() as pool:
            pass
        with pytest.raises(ValueError, match=value_error(RETRIES_RULE, -1)):
            pool.run(echo, 1, retries=-1)


# -- argument binding ------------------------------------------------------------------------------


class TestArgumentBinding:
    async def test_args_are_bound_at_submission(self) -> None:
        """pool.run(f, i) in a loop binds each i when submitted: results are 0..9."""
        async with WorkerPool(size=3) as pool:
            futures = [pool.run(echo, i) for i in range(10)]
            assert [await future for future in futures] == list(range(10))

    async def test_default_argument_lambda_binds_early(self) -> None:
        """The seed README's idiom, lambda i=i: f(i), also binds each i at submission."""
        async with WorkerPool(size=3) as pool:
            futures = [pool.run(lambda i=i: echo(i)) for i in range(10)]
            assert [await future for future in futures] == list(range(10))

    async def test_plain_lambda_binds_late(self) -> None:
        """The documented trap: lambda: f(i) reads i when the job starts, after the loop ended."""
        async with WorkerPool(size=3) as pool:
            futures = [pool.run(lambda: echo(i)) for i in range(10)]  # noqa: B023 - the trap
            assert [await future for future in futures] == [9] * 10

    async def test_keyword_options_are_not_passed_to_the_task(self) -> None:
        """timeout, retries, retryable_exceptions and backoff go to the pool, not to the task."""
        received: list[tuple[Any, ...]] = []

        async def record(*args: Any) -> None:
            received.append(args)

        async with WorkerPool() as pool:
            await pool.run(
                record, 1, 2, timeout=5, retries=1, retryable_exceptions=OSError, backoff=no_wait
            )
        assert received == [(1, 2)]

    async def test_the_callable_is_called_once_per_attempt(self) -> None:
        """Each retry calls the task again with the same arguments, making a fresh coroutine."""
        seen: list[int] = []

        async def fails_twice(n: int) -> int:
            seen.append(n)
            if len(seen) < 3:
                raise OSError("again")
            return n * 2

        async with WorkerPool() as pool:
            assert await pool.run(fails_twice, 21, retries=2, backoff=no_wait) == 42
        assert seen == [21, 21, 21]
