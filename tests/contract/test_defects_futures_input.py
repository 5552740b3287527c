"""Regressions for issue 9, items 9, 12 and 13 (validation part): the trio-side future's tracebacks,
weak references and reference cycles, non-``Exception`` retryable classes, and huge numbers.

Each test is named after the requirement the defect broke (R17, R22, R41, R42, R43, R53).
"""

from __future__ import annotations

import contextlib
import re
import traceback
import weakref
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from anyio.lowlevel import checkpoint
from support import Boom, approx, echo, submit_by

from werkpool import Future, WorkerPool, worker_pool

if TYPE_CHECKING:
    from types import TracebackType

METHODS = ["run", "start_soon", "submit", "call", "map"]

TIMEOUT_RULE = "timeout must be None or a finite number of seconds >= 0"
BACKOFF_RULE = "expected a finite number of seconds >= 0"


def frames(tb: TracebackType | None) -> list[str]:
    """The function names in a traceback, outermost first."""
    return [frame.f_code.co_name for frame, _ in traceback.walk_tb(tb)]


def raised_boom() -> Boom:
    """A Boom with a traceback (of this function only), as a failed job's exception has one."""
    try:
        raise Boom("job failed")
    except Boom as exc:
        return exc  # the except clause unbinds exc: this frame keeps no reference to it


def untouched(pool: WorkerPool) -> None:
    """A call rejected at the call left nothing behind."""
    s = pool.statistics()
    assert (s.submitted, s.queued) == (0, 0), s


# -- item 9: werkpool.Future re-raises with the original traceback, is weak-referenceable, and
#    holds no reference cycle ------------------------------------------------------------------


def test_r53_a_failed_future_reraises_with_its_original_traceback_on_every_read() -> None:
    """result() raises with the traceback set at failure each time: it does not grow per read."""
    future: Future[None] = Future()
    future.set_exception(raised_boom())
    seen = []
    for _ in range(5):
        with pytest.raises(Boom) as caught:
            future.result()
        seen.append(frames(caught.value.__traceback__))
        del caught
    expected = [
        "test_r53_a_failed_future_reraises_with_its_original_traceback_on_every_read",
        "result",
        "raised_boom",
    ]
    assert seen == [expected] * 5
    error = future.exception()
    assert error is not None
    assert frames(error.__traceback__)[-1] == "raised_boom"


async def test_r22_each_awaiter_of_a_failed_future_sees_only_its_own_frames() -> None:
    """Two tasks await a failed job's future, then it is read again: no one sees another's frames.

    On asyncio, pool.run() returns an asyncio.Future, which behaves so too: the same test, parity.
    """
    tracebacks: dict[str, list[str]] = {}

    async def first_awaiter(future: Any) -> None:
        try:
            await future
        except Boom as exc:
            tracebacks["first"] = frames(exc.__traceback__)

    async def second_awaiter(future: Any) -> None:
        await anyio.sleep(1)  # after the first one read it
        try:
            await future
        except Boom as exc:
            tracebacks["second"] = frames(exc.__traceback__)

    async def failing_job() -> None:
        await checkpoint()
        raise Boom("job failed")

    async with WorkerPool() as pool:
        future = pool.run(failing_job)
        async with anyio.create_task_group() as tg:
            tg.start_soon(first_awaiter, future)
            tg.start_soon(second_awaiter, future)
        depths = []
        for _ in range(3):
            with pytest.raises(Boom) as caught:
                future.result()
            depths.append(len(frames(caught.value.__traceback__)))
            del caught
    assert "first_awaiter" in tracebacks["first"]
    assert "second_awaiter" not in tracebacks["first"]
    assert "second_awaiter" in tracebacks["second"]
    assert "first_awaiter" not in tracebacks["second"]
    assert len(set(depths)) == 1  # reading again does not grow the traceback
    assert tracebacks["first"][-1] == "failing_job"
    if isinstance(future, Future):
        # werkpool.Future keeps the job's own frames for every reader (CPython's C asyncio.Future
        # forgets them after the first read: later readers see only their own frames).
        assert tracebacks["second"][-1] == "failing_job"


def test_r53_futures_are_weakly_referenceable() -> None:
    """weakref.ref(werkpool.Future()) works, as for asyncio.Future."""
    future: Future[int] = Future()
    ref = weakref.ref(future)
    assert ref() is future
    del future
    assert ref() is None


class _Waiter:
    """Someone who keeps the future and is told when it resolves (a cycle until it does)."""

    def __init__(self, future: Future[Any]) -> None:
        self.future = future
        self.calls = 0
        future.add_done_callback(self.on_done)

    def on_done(self, future: Future[Any]) -> None:
        self.calls += 1


@pytest.mark.usefixtures("no_gc")
async def test_r53_a_failed_future_read_every_way_is_freed_by_reference_counting_alone() -> None:
    """With the cyclic GC off, a failed future read by result(), by await (also while pending) and
    by exception(), with a done callback, and then dropped is freed at once, with its exception."""
    future: Future[None] = Future()
    waiter = _Waiter(future)

    async def awaiter(future: Future[None]) -> None:
        with contextlib.suppress(Boom):
            await future

    async with anyio.create_task_group() as tg:
        tg.start_soon(awaiter, future)  # waits on the future's event while it is pending
        await anyio.sleep(1)
        future.set_exception(raised_boom())
    assert waiter.calls == 1
    for _ in range(2):
        with contextlib.suppress(Boom):
            future.result()
        with contextlib.suppress(Boom):
            await future
    assert isinstance(future.exception(), Boom)
    future_ref = weakref.ref(future)
    error_ref = weakref.ref(future.exception())
    del future, waiter
    assert future_ref() is None
    assert error_ref() is None


# -- item 12: retryable_exceptions holds only Exception subclasses -----------------------------


class Abort(BaseException):
    """A BaseException of the user's own that is not an Exception (the issue's example)."""


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    ("retryable", "name"),
    [
        (Abort, "Abort"),
        ([Abort], "Abort"),
        (BaseException, "BaseException"),
        (KeyboardInterrupt, "KeyboardInterrupt"),
        ((ValueError, SystemExit), "SystemExit"),
        ([GeneratorExit], "GeneratorExit"),
    ],
    ids=["custom", "custom-in-list", "BaseException", "KeyboardInterrupt", "in-tuple", "list"],
)
async def test_r43_retryable_exceptions_rejects_non_exception_classes(
    method: str, retryable: Any, name: str
) -> None:
    """A class that is not an Exception subclass is a TypeError at the call, naming the argument."""
    pattern = (
        rf"^retryable_exceptions must contain only subclasses of Exception, not {name}: "
        r"a job's KeyboardInterrupt, SystemExit or other non-Exception error is never retried, "
        r"it stops the pool$"
    )
    async with WorkerPool() as pool:
        with pytest.raises(TypeError, match=pattern):
            await submit_by(pool, method, echo, 1, retries=2, retryable_exceptions=retryable)
        untouched(pool)
        assert await pool.call(echo, "still fine") == "still fine"


@pytest.mark.parametrize("method", METHODS)
async def test_r43_cancellation_classes_keep_their_own_error(method: str) -> None:
    """Cancellation classes (BaseExceptions too) keep their ValueError, not the new TypeError."""
    async with WorkerPool() as pool:
        with pytest.raises(ValueError, match=r"^retryable_exceptions must not contain \w+: "):
            await submit_by(
                pool, method, echo, 1, retryable_exceptions=anyio.get_cancelled_exc_class()
            )
        untouched(pool)


# -- item 13: huge numbers are rejected or normalised at the call ------------------------------


@pytest.mark.parametrize(
    "burst", [2**53 + 1, 10**400, 10**5000], ids=["2**53+1", "10**400", "10**5000"]
)
def test_r41_a_burst_above_2_53_is_rejected_at_the_call(burst: int) -> None:
    """burst > 2**53 is a ValueError naming burst (it used to crash the first admission)."""
    shown = f"an int of {burst.bit_length()} bits" if burst == 10**5000 else str(burst)
    message = f"burst must be an int <= 2**53 (9007199254740992), got {shown}"
    for factory in (WorkerPool, worker_pool):
        with pytest.raises(ValueError, match=rf"^{re.escape(message)}$"):
            factory(rate=1, burst=burst)
        with pytest.raises(ValueError, match=rf"^{re.escape(message)}$"):
            factory(burst=burst)  # checked with or without a rate, like every other argument


async def test_r41_the_largest_burst_works() -> None:
    """burst=2**53: the first starts go back to back, and nothing overflows."""
    async with WorkerPool(rate=1, burst=2**53) as pool:
        start = anyio.current_time()
        assert [await f for f in [pool.run(echo, i) for i in range(20)]] == list(range(20))
        assert anyio.current_time() - start == approx(0)


def fails_once() -> Any:
    """A job that fails with Boom on its first attempt, and would succeed on its second."""
    calls: list[int] = []

    async def job() -> str:
        calls.append(1)
        await checkpoint()
        if len(calls) == 1:
            raise Boom("first attempt")
        return "second attempt"

    return job


@pytest.mark.parametrize(
    ("delay", "shown"),
    [
        (10**400, str(10**400)),
        (10**5000, f"an int of {(10**5000).bit_length()} bits"),
        (Fraction(10**400), repr(Fraction(10**400))),
        (-(10**400), str(-(10**400))),
    ],
    ids=["10**400", "10**5000", "Fraction", "-10**400"],
)
async def test_r17_a_backoff_beyond_float_range_fails_the_job_with_value_error(
    delay: Any, shown: str
) -> None:
    """A backoff returning a number too large for a float fails the job with a ValueError naming
    backoff, chained to the attempt's error (it was a bare OverflowError); the pool goes on."""
    message = f"backoff(1) returned {shown}; {BACKOFF_RULE}"
    async with WorkerPool() as pool:
        future = pool.run(
            fails_once(), retries=1, retryable_exceptions=Boom, backoff=lambda n: delay
        )
        with pytest.raises(ValueError, match=rf"^{re.escape(message)}$") as caught:
            await future
        assert isinstance(caught.value.__cause__, Boom)
        assert await pool.call(echo, "still fine") == "still fine"
    assert pool.statistics().failed == 1


async def test_r17_a_backoff_returning_negative_zero_is_a_zero_delay() -> None:
    """-0.0 is a valid delay of zero: the retry starts at once."""
    async with WorkerPool() as pool:
        start = anyio.current_time()
        assert (
            await pool.run(
                fails_once(), retries=1, retryable_exceptions=Boom, backoff=lambda n: -0.0
            )
            == "second attempt"
        )
        assert anyio.current_time() - start == approx(0)


@pytest.mark.parametrize("method", ["run", "submit", "call", "map"])
async def test_r42_a_negative_zero_timeout_is_normalised_to_zero(method: str) -> None:
    """timeout=-0.0 is timeout=0: the attempt times out at once, "after 0 s" (not "-0 s")."""

    async def slow(*_: object) -> None:
        await anyio.sleep(1)

    async with WorkerPool() as pool:
        with pytest.raises(TimeoutError, match=r"^the attempt timed out after 0 s$"):
            outcome = await submit_by(pool, method, slow, timeout=-0.0)
            if method in ("run", "submit"):
                await outcome


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("seconds", [10**400, -(10**400), Fraction(10**400)])
async def test_r42_a_timeout_beyond_float_range_is_a_value_error_naming_timeout(
    method: str, seconds: object
) -> None:
    """A timeout too large for a float is a ValueError at the call, never an OverflowError."""
    message = f"{TIMEOUT_RULE}, got {seconds!r}"
    async with WorkerPool() as pool:
        with pytest.raises(ValueError, match=rf"^{re.escape(message)}$"):
            await submit_by(pool, method, echo, 1, timeout=seconds)
        untouched(pool)
