"""Bad input raises at the call that made it, with a message that names the argument and the rule.

Constructor checks are plain sync tests (a pool is built with no event loop); the checks of
``pool.run()`` run on both backends, inside an open pool, and each one also proves that the rejected
call left nothing behind: no phantom job, and the pool still runs a good job.
"""

from __future__ import annotations

import gc
import math
import re
import threading
import warnings
from contextlib import contextmanager
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import pytest
from anyio.lowlevel import checkpoint

import werkpool
from werkpool import Concurrency, PoolClosedError, Rate, Window, WorkerPool, worker_pool
from werkpool._core._validate import check_count, check_number

if TYPE_CHECKING:
    from collections.abc import Iterator

NAN = float("nan")

SIZE_RULE = "size must be None or an int >= 1"
RATE_RULE = "rate must be None or a finite number > 0"
BURST_RULE = "burst must be an int >= 1"
RETRIES_RULE = "retries must be an int >= 0"
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
    return repr(pool), pool.statistics().submitted


async def assert_untouched(pool: WorkerPool, before: tuple[str, int]) -> None:
    """Check that a rejected call queued nothing and that the pool still runs a good job."""
    assert snapshot(pool) == before
    assert pool.statistics().queued == 0
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


class TestNumberChecks:
    """The one "finite number" check and the one "int >= n" check (#23: they replace about ten
    hand-written copies; the messages stay as the arguments' own checks wrote them)."""

    @pytest.mark.parametrize(
        ("kwargs", "value", "error", "message"),
        [
            ({}, "1", TypeError, "x must be a finite number > 0, not str"),
            ({}, True, TypeError, "x must be a finite number > 0, not bool"),
            ({}, 0, ValueError, "x must be a finite number > 0, got 0"),
            ({}, float("nan"), ValueError, "x must be a finite number > 0, got nan"),
            ({}, 10**400, ValueError, f"x must be a finite number > 0, got {10**400}"),
            ({"strict": False}, -1e-9, ValueError, "x must be a finite number >= 0, got -1e-09"),
            ({"seconds": True}, math.inf, ValueError, "finite number of seconds > 0, got inf"),
            ({"or_none": True}, "a", TypeError, "x must be None or a finite number > 0, not str"),
            ({"kinds": (int, float)}, Fraction(1, 2), TypeError, "not Fraction"),
        ],
    )
    def test_refusals_name_the_argument_and_the_rule(
        self, kwargs: dict[str, Any], value: object, error: type[Exception], message: str
    ) -> None:
        with pytest.raises(error, match=re.escape(message)):
            check_number(value, "x", **kwargs)

    @pytest.mark.parametrize(("value", "expected"), [(1, 1.0), (0.5, 0.5), (Fraction(1, 4), 0.25)])
    def test_accepted_numbers_come_back_as_floats(self, value: object, expected: float) -> None:
        result = check_number(value, "x")
        assert result == expected
        assert type(result) is float

    def test_counts_take_any_int_and_none(self) -> None:
        assert check_count(None, "size") is None
        assert check_count(10**400, "size") == 10**400  # no float is made of it
        assert check_count(0, "retries", low=0, or_none=False) == 0
        with pytest.raises(ValueError, match=re.escape("size must be None or an int >= 1, got 0")):
            check_count(0, "size")
        with pytest.raises(TypeError, match=re.escape("retries must be an int >= 0, not float")):
            check_count(1.0, "retries", low=0, or_none=False)

    @pytest.mark.parametrize("value", [Rate(5, burst=3), Window(7, 1), Concurrency(2)])
    def test_every_limit_value_has_one_capacity_and_shared(self, value: Any) -> None:
        """shared() and capacity are written once, for the three values (duplicate D2)."""
        assert value.capacity == {Rate: 3.0, Window: 7.0, Concurrency: 2.0}[type(value)]

        class Store:
            def bind(self, *args: object) -> None: ...

        shared = value.shared(Store(), "name")
        assert shared.limit is value
        assert shared.capacity == value.capacity


class TestSize:
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

    def test_worker_pool_returns_a_configured_pool(self) -> None:
        """worker_pool(...) is WorkerPool(...) for use with async with."""
        pool = worker_pool(size=5, rate=10, burst=2)
        assert isinstance(pool, WorkerPool)
        assert (pool.size, pool.rate, pool.burst) == (5, 10.0, 2)


# -- pool.run(): per-job options -------------------------------------------------------------------


class TestTimeout:
    @pytest.mark.parametrize("seconds", [5, 0.5, Fraction(1, 2)])
    async def test_accepts_finite_positive_reals(self, seconds: Any) -> None:
        """Ints, floats and fractions are accepted as seconds."""
        async with WorkerPool() as pool:
            assert await pool.run(echo, "ok", timeout=seconds) == "ok"


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


class TestRetryableExceptions:
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
    async def test_default_argument_lambda_binds_early(self) -> None:
        """The seed README's idiom, lambda i=i: f(i), also binds each i at submission."""
        async with WorkerPool(size=3) as pool:
            futures = [pool.run(lambda i=i: echo(i)) for i in range(10)]
            assert [await future for future in futures] == list(range(10))

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
