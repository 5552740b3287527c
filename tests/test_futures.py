"""The futures that ``pool.run()`` returns.

``werkpool.Future`` (the trio-side future) is unit-tested on its own: its synchronous surface with
no event loop at all, and awaiting it on both backends (it needs only an ``anyio.Event``). Then the
pool-level facade: an ``asyncio.Future`` on asyncio, usable with asyncio's own helpers, and a
``werkpool.Future`` on trio.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import anyio
import pytest
from support import HAS_TRIO, Boom, asyncio_only

import werkpool
from werkpool import Future, FutureCancelled, FutureNotFinished, WorkerPool

NOT_FINISHED = r"^the job has not finished yet$"
CANCELLED = r"^the job was cancelled$"


# -- werkpool.Future, synchronous surface (no event loop) ------------------------------------------


class TestStatus:
    def test_a_new_future_is_pending(self) -> None:
        """A new future is pending: not done, not cancelled."""
        future: Future[int] = Future()
        assert future.status is Future.Status.PENDING
        assert not future.done()
        assert not future.cancelled()

    def test_set_result_finishes(self) -> None:
        """set_result() moves it to FINISHED; result() returns the value, exception() None."""
        future: Future[int] = Future()
        future.set_result(42)
        assert future.status is Future.Status.FINISHED
        assert future.done()
        assert not future.cancelled()
        assert future.result() == 42
        assert future.exception() is None

    def test_set_result_none_is_a_result(self) -> None:
        """A None result is a result like any other."""
        future: Future[None] = Future()
        future.set_result(None)
        assert future.status is Future.Status.FINISHED
        assert future.result() is None

    def test_set_exception_fails(self) -> None:
        """set_exception() moves it to FAILED; result() raises that very exception."""
        future: Future[int] = Future()
        error = Boom("bad")
        future.set_exception(error)
        assert future.status is Future.Status.FAILED
        assert future.done()
        assert not future.cancelled()
        assert future.exception() is error
        with pytest.raises(Boom, match=r"^bad$") as info:
            future.result()
        assert info.value is error

    def test_cancel_cancels(self) -> None:
        """cancel() moves it to CANCELLED; it is done and cancelled."""
        future: Future[int] = Future()
        assert future.cancel() is True
        assert future.status is Future.Status.CANCELLED
        assert future.done()
        assert future.cancelled()

    def test_status_values(self) -> None:
        """Future.Status has the four states, with lower-case values."""
        assert [status.value for status in Future.Status] == [
            "pending",
            "finished",
            "failed",
            "cancelled",
        ]

    def test_is_exported_as_werkpool_future(self) -> None:
        """The class is werkpool.Future, generic, and says so in its module."""
        assert werkpool.Future is Future
        assert Future.__module__ == "werkpool"
        assert Future[int] is not None


class TestReading:
    def test_result_while_pending_raises_not_finished(self) -> None:
        """result() on a pending future raises FutureNotFinished."""
        with pytest.raises(FutureNotFinished, match=NOT_FINISHED):
            Future().result()

    def test_exception_while_pending_raises_not_finished(self) -> None:
        """exception() on a pending future raises FutureNotFinished."""
        with pytest.raises(FutureNotFinished, match=NOT_FINISHED):
            Future().exception()

    def test_result_when_cancelled_raises_future_cancelled(self) -> None:
        """result() on a cancelled future raises FutureCancelled."""
        future: Future[int] = Future()
        future.cancel()
        with pytest.raises(FutureCancelled, match=CANCELLED):
            future.result()

    def test_exception_when_cancelled_raises_future_cancelled(self) -> None:
        """exception() on a cancelled future raises FutureCancelled."""
        future: Future[int] = Future()
        future.cancel()
        with pytest.raises(FutureCancelled, match=CANCELLED):
            future.exception()

    def test_exceptions_are_plain_exceptions(self) -> None:
        """FutureCancelled and FutureNotFinished are Exceptions, not cancellation BaseExceptions."""
        assert issubclass(FutureCancelled, Exception)
        assert issubclass(FutureNotFinished, Exception)
        assert not issubclass(FutureCancelled, asyncio.CancelledError)


class TestAnyioExceptions:
    def test_subclasses_of_anyios_classes_of_the_same_names(self) -> None:
        """``except anyio.FutureCancelled`` / ``anyio.FutureNotFinished`` catch werkpool's (and
        werkpool's keep their Exception base, and their own names)."""
        assert issubclass(FutureCancelled, anyio.FutureCancelled)
        assert issubclass(FutureNotFinished, anyio.FutureNotFinished)
        assert FutureCancelled is not anyio.FutureCancelled
        assert FutureNotFinished is not anyio.FutureNotFinished
        assert issubclass(FutureCancelled, Exception)
        assert issubclass(FutureNotFinished, Exception)
        assert not issubclass(FutureCancelled, FutureNotFinished)
        assert not issubclass(FutureNotFinished, FutureCancelled)
        assert (FutureCancelled.__module__, FutureNotFinished.__module__) == ("werkpool",) * 2

    def test_except_anyio_catches_a_standalone_futures_errors(self) -> None:
        """A werkpool.Future's result(), pending or cancelled, is caught by anyio's classes."""
        with pytest.raises(anyio.FutureNotFinished, match=NOT_FINISHED) as pending:
            Future().result()
        assert type(pending.value) is FutureNotFinished
        future: Future[int] = Future()
        future.cancel()
        with pytest.raises(anyio.FutureCancelled, match=CANCELLED) as cancelled:
            future.exception()
        assert type(cancelled.value) is FutureCancelled

    @pytest.mark.parametrize(
        "catch", [anyio.FutureCancelled, FutureCancelled], ids=["anyio", "werkpool"]
    )
    async def test_call_of_a_killed_pool_is_caught_by_anyio_and_werkpool(
        self, catch: type[Exception]
    ) -> None:
        """``await pool.call(...)`` whose job the pool cancelled (kill()) raises werkpool's
        FutureCancelled, which ``except anyio.FutureCancelled`` catches too (both backends)."""
        caught: list[BaseException] = []

        async def caller(pool: WorkerPool) -> None:
            try:
                await pool.call(double, 1, 100)
            except catch as exc:
                caught.append(exc)

        async with WorkerPool(size=1) as pool, anyio.create_task_group() as tg:
            tg.start_soon(caller, pool)
            await anyio.sleep(1)
            await pool.kill()
        assert len(caught) == 1
        assert type(caught[0]) is FutureCancelled
        assert str(caught[0]) == "the job was cancelled"


class TestResolvingTwice:
    def test_cancel_returns_true_once_then_false(self) -> None:
        """The first cancel() returns True, later ones False."""
        future: Future[int] = Future()
        assert future.cancel() is True
        assert future.cancel() is False
        assert future.cancel("again") is False
        assert future.status is Future.Status.CANCELLED

    def test_cancel_accepts_a_message(self) -> None:
        """cancel(msg) is accepted, as asyncio.Future.cancel(msg) is."""
        future: Future[int] = Future()
        assert future.cancel("stop") is True
        with pytest.raises(FutureCancelled, match=CANCELLED):
            future.result()

    def test_cancel_after_set_result_returns_false(self) -> None:
        """Cancelling a finished future is a no-op that returns False."""
        future: Future[int] = Future()
        future.set_result(1)
        assert future.cancel() is False
        assert future.status is Future.Status.FINISHED
        assert future.result() == 1

    def test_cancel_after_set_exception_returns_false(self) -> None:
        """Cancelling a failed future is a no-op that returns False."""
        future: Future[int] = Future()
        future.set_exception(Boom())
        assert future.cancel() is False
        assert future.status is Future.Status.FAILED

    def test_set_result_twice_raises(self) -> None:
        """A second set_result() raises RuntimeError and keeps the first result."""
        future: Future[int] = Future()
        future.set_result(1)
        with pytest.raises(
            RuntimeError, match=r"^<werkpool\.Future finished> is already resolved$"
        ):
            future.set_result(2)
        assert future.result() == 1

    def test_set_exception_after_set_result_raises(self) -> None:
        """set_exception() on a finished future raises RuntimeError."""
        future: Future[int] = Future()
        future.set_result(1)
        with pytest.raises(
            RuntimeError, match=r"^<werkpool\.Future finished> is already resolved$"
        ):
            future.set_exception(Boom())
        assert future.exception() is None

    def test_set_result_after_set_exception_raises(self) -> None:
        """set_result() on a failed future raises RuntimeError."""
        future: Future[int] = Future()
        future.set_exception(Boom())
        with pytest.raises(RuntimeError, match=r"^<werkpool\.Future failed> is already resolved$"):
            future.set_result(1)

    @pytest.mark.parametrize("method", ["set_result", "set_exception"])
    def test_setting_a_cancelled_future_raises(self, method: str) -> None:
        """Setting the outcome of a cancelled future raises RuntimeError; it stays cancelled."""
        future: Future[Any] = Future()
        future.cancel()
        pattern = r"^<werkpool\.Future cancelled> is already resolved$"
        with pytest.raises(RuntimeError, match=pattern):
            getattr(future, method)(Boom())
        assert future.cancelled()


class TestDoneCallbacks:
    @pytest.mark.parametrize("outcome", ["result", "exception", "cancel"])
    def test_called_once_synchronously_with_the_future(self, outcome: str) -> None:
        """Every callback is called once, with the future, inside the call that resolved it."""
        future: Future[int] = Future()
        calls: list[tuple[str, Future[int]]] = []
        future.add_done_callback(lambda f: calls.append(("first", f)))
        future.add_done_callback(lambda f: calls.append(("second", f)))
        assert calls == []
        if outcome == "result":
            future.set_result(1)
        elif outcome == "exception":
            future.set_exception(Boom())
        else:
            future.cancel()
        assert calls == [("first", future), ("second", future)]
        # Nothing resolves it again, so nothing calls them again.
        future.cancel()
        with pytest.raises(RuntimeError, match=r"already resolved$"):
            future.set_result(2)
        assert len(calls) == 2

    def test_sees_the_final_state(self) -> None:
        """A callback can read the outcome: the future is resolved before callbacks run."""
        future: Future[int] = Future()
        seen: list[Any] = []
        future.add_done_callback(lambda f: seen.append((f.status, f.result())))
        future.set_result(7)
        assert seen == [(Future.Status.FINISHED, 7)]

    def test_added_after_resolution_is_called_immediately(self) -> None:
        """A callback added to a resolved future is called at once, synchronously."""
        future: Future[int] = Future()
        future.set_result(3)
        calls: list[Future[int]] = []
        future.add_done_callback(calls.append)
        assert calls == [future]

    def test_the_same_callback_twice_is_called_twice(self) -> None:
        """Registering one function twice calls it twice, as asyncio does."""
        future: Future[int] = Future()
        calls: list[Future[int]] = []
        future.add_done_callback(calls.append)
        future.add_done_callback(calls.append)
        future.set_result(1)
        assert calls == [future, future]

    def test_a_raising_callback_is_logged_and_others_still_run(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A callback that raises is logged on the "werkpool" logger; the next ones still run."""
        future: Future[int] = Future()
        calls: list[str] = []

        def faulty(f: Future[int]) -> None:
            calls.append("faulty")
            raise Boom("in callback")

        future.add_done_callback(faulty)
        future.add_done_callback(lambda f: calls.append("after"))
        with caplog.at_level(logging.ERROR, logger="werkpool"):
            future.set_result(1)
        assert calls == ["faulty", "after"]
        assert future.result() == 1
        records = [r for r in caplog.records if r.name == "werkpool"]
        assert len(records) == 1
        assert records[0].levelno == logging.ERROR
        assert (
            records[0].getMessage() == "exception calling callback for <werkpool.Future finished>"
        )
        assert records[0].exc_info is not None
        assert isinstance(records[0].exc_info[1], Boom)

    def test_a_raising_callback_added_late_is_logged(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A raising callback added after resolution is logged, not raised at the caller."""
        future: Future[int] = Future()
        future.cancel()

        def faulty(f: Future[int]) -> None:
            raise Boom

        with caplog.at_level(logging.ERROR, logger="werkpool"):
            future.add_done_callback(faulty)
        messages = [r.getMessage() for r in caplog.records if r.name == "werkpool"]
        assert messages == ["exception calling callback for <werkpool.Future cancelled>"]

    def test_remove_done_callback(self) -> None:
        """remove_done_callback() removes every registration and returns how many there were."""
        future: Future[int] = Future()
        removed: list[Future[int]] = []
        kept: list[Future[int]] = []
        future.add_done_callback(removed.append)
        future.add_done_callback(kept.append)
        future.add_done_callback(removed.append)
        assert future.remove_done_callback(removed.append) == 2
        assert future.remove_done_callback(removed.append) == 0
        future.set_result(1)
        assert removed == []
        assert kept == [future]

    def test_remove_unknown_callback_returns_zero(self) -> None:
        """Removing a callback that was never added returns 0, pending or resolved."""
        future: Future[int] = Future()
        assert future.remove_done_callback(print) == 0
        future.set_result(1)
        assert future.remove_done_callback(print) == 0

    def test_add_after_removing_all(self) -> None:
        """A callback added after all others were removed is still called."""
        future: Future[int] = Future()
        calls: list[Future[int]] = []
        future.add_done_callback(print)
        future.remove_done_callback(print)
        future.add_done_callback(calls.append)
        future.set_result(1)
        assert calls == [future]


class TestRepr:
    def test_repr_shows_the_status(self) -> None:
        """The repr is short and names the status."""
        future: Future[int] = Future()
        assert repr(future) == "<werkpool.Future pending>"
        future.set_result(1)
        assert repr(future) == "<werkpool.Future finished>"
        failed: Future[int] = Future()
        failed.set_exception(Boom())
        assert repr(failed) == "<werkpool.Future failed>"
        cancelled: Future[int] = Future()
        cancelled.cancel()
        assert repr(cancelled) == "<werkpool.Future cancelled>"


# -- werkpool.Future, awaited (both backends) ------------------------------------------------------


class TestAwaiting:
    async def test_await_a_finished_future(self) -> None:
        """Awaiting a finished future returns its result at once."""
        future: Future[int] = Future()
        future.set_result(5)
        assert await future == 5

    async def test_await_a_failed_future(self) -> None:
        """Awaiting a failed future raises its exception."""
        future: Future[int] = Future()
        error = Boom("failed")
        future.set_exception(error)
        with pytest.raises(Boom, match=r"^failed$") as info:
            await future
        assert info.value is error

    async def test_await_a_cancelled_future(self) -> None:
        """Awaiting a cancelled future raises FutureCancelled."""
        future: Future[int] = Future()
        future.cancel()
        with pytest.raises(FutureCancelled, match=CANCELLED):
            await future

    async def test_many_awaiters_all_get_the_result(self) -> None:
        """Every task awaiting a pending future gets the result when it is set."""
        future: Future[str] = Future()
        results: list[str] = []

        async def waiter() -> None:
            results.append(await future)

        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            assert results == []
            future.set_result("value")
        assert results == ["value"] * 10

    async def test_many_awaiters_all_get_the_exception(self) -> None:
        """Every task awaiting a pending future gets the very same exception."""
        future: Future[str] = Future()
        error = Boom("shared")
        caught: list[BaseException] = []

        async def waiter() -> None:
            try:
                await future
            except Boom as exc:
                caught.append(exc)

        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            future.set_exception(error)
        assert len(caught) == 10
        assert all(exc is error for exc in caught)

    async def test_awaiters_of_a_future_cancelled_meanwhile_raise(self) -> None:
        """Tasks awaiting a future that gets cancelled raise FutureCancelled."""
        future: Future[str] = Future()
        caught: list[str] = []

        async def waiter() -> None:
            with pytest.raises(FutureCancelled, match=CANCELLED):
                await future
            caught.append("cancelled")

        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            assert future.cancel() is True
        assert caught == ["cancelled"] * 3

    async def test_wait_does_not_raise(self) -> None:
        """wait() returns when the future resolves, whatever the outcome."""
        future: Future[str] = Future()
        async with anyio.create_task_group() as tg:
            tg.start_soon(future.wait)
            await anyio.wait_all_tasks_blocked()
            future.set_exception(Boom())
        await future.wait()
        assert future.status is Future.Status.FAILED

    async def test_cancelling_an_awaiter_leaves_the_future_pending(self) -> None:
        """A task that stops awaiting (its scope is cancelled) does not resolve the future."""
        future: Future[str] = Future()
        with anyio.move_on_after(1) as scope:
            await future
        assert scope.cancelled_caught
        assert future.status is Future.Status.PENDING
        future.set_result("later")
        assert await future == "later"


# -- the futures pool.run() returns ----------------------------------------------------------------


async def double(x: int, delay: float = 0) -> int:
    """A job: returns 2x after *delay* seconds."""
    await anyio.sleep(delay)
    return 2 * x


class TestPoolFutureType:
    async def test_run_returns_the_backends_future(self, anyio_backend_name: str) -> None:
        """pool.run() returns an asyncio.Future on asyncio and a werkpool.Future on trio."""
        async with WorkerPool(size=2) as pool:
            future = pool.run(double, 21)
            if anyio_backend_name == "asyncio":
                assert isinstance(future, asyncio.Future)
                assert not isinstance(future, Future)
            else:
                assert isinstance(future, Future)
            assert not future.done()
            assert await future == 42
            assert future.done()
            assert future.result() == 42
            assert future.exception() is None


@asyncio_only
class TestAsyncioInterop:
    async def test_gather(self) -> None:
        """asyncio.gather() accepts pool futures and returns results in submission order."""
        async with WorkerPool(size=3) as pool:
            futures = [pool.run(double, i, 1 - i / 10) for i in range(10)]
            assert await asyncio.gather(*futures) == [2 * i for i in range(10)]

    async def test_gather_return_exceptions(self) -> None:
        """asyncio.gather(return_exceptions=True) collects a failed job's exception."""

        async def fail() -> None:
            raise Boom("x")

        async with WorkerPool() as pool:
            results = await asyncio.gather(
                pool.run(double, 1), pool.run(fail), return_exceptions=True
            )
        assert results[0] == 2
        assert isinstance(results[1], Boom)

    async def test_wait_first_completed(self) -> None:
        """asyncio.wait(FIRST_COMPLETED) returns as soon as the quickest job ends."""
        async with WorkerPool() as pool:
            quick = pool.run(double, 1, 1)
            slow = pool.run(double, 2, 5)
            start = anyio.current_time()
            done, pending = await asyncio.wait({quick, slow}, return_when=asyncio.FIRST_COMPLETED)
            assert anyio.current_time() - start == pytest.approx(1)
            assert done == {quick}
            assert pending == {slow}
            done, pending = await asyncio.wait({slow})
            assert done == {slow}
            assert slow.result() == 4

    async def test_wait_for_success(self) -> None:
        """asyncio.wait_for() on a pool future returns the result when in time."""
        async with WorkerPool() as pool:
            assert await asyncio.wait_for(pool.run(double, 3, 1), timeout=2) == 6

    async def test_as_completed(self) -> None:
        """asyncio.as_completed() yields pool results in completion order."""
        async with WorkerPool() as pool:
            futures = [pool.run(double, i, delay) for i, delay in enumerate([3, 1, 2])]
            order = [await next_done for next_done in asyncio.as_completed(futures)]
        assert order == [2, 4, 0]

    async def test_cancelled_future_raises_cancelled_error(self) -> None:
        """Awaiting a cancelled pool future raises asyncio.CancelledError, as asyncio does."""
        async with WorkerPool(size=1) as pool:
            blocker = pool.run(double, 0, 5)
            future = pool.run(double, 1)
            assert future.cancel() is True
            with pytest.raises(asyncio.CancelledError):
                await future
            assert await blocker == 0


@pytest.mark.skipif(not HAS_TRIO, reason="trio is not installed")
@pytest.mark.parametrize("anyio_backend", ["trio"], indirect=True)
class TestTrioFacade:
    async def test_repr_of_a_pool_future(self) -> None:
        """A pool future on trio has the werkpool.Future repr."""
        async with WorkerPool() as pool:
            future = pool.run(double, 1)
            assert re.fullmatch(r"<werkpool\.Future pending>", repr(future))
            await future
            assert repr(future) == "<werkpool.Future finished>"

    async def test_pool_futures_errors_are_caught_by_anyios_classes(self) -> None:
        """On trio a pool future's result(), pending or cancelled, raises werkpool's classes,
        which ``except anyio.FutureNotFinished`` / ``anyio.FutureCancelled`` catch."""
        async with WorkerPool(size=1) as pool:
            blocker = pool.run(double, 0, 5)
            future = pool.run(double, 1)
            with pytest.raises(anyio.FutureNotFinished, match=NOT_FINISHED) as pending:
                future.result()
            assert isinstance(pending.value, FutureNotFinished)
            assert future.cancel() is True
            with pytest.raises(anyio.FutureCancelled, match=CANCELLED) as cancelled:
                future.result()
            assert isinstance(cancelled.value, FutureCancelled)
            with pytest.raises(anyio.FutureCancelled, match=CANCELLED):
                await future
            assert await blocker == 0

    async def test_done_callback_runs_on_resolution(self) -> None:
        """On trio a pool future's callback has already run, synchronously, when awaiters resume."""
        calls: list[tuple[object, bool]] = []
        async with WorkerPool() as pool:
            future = pool.run(double, 1)
            future.add_done_callback(lambda f: calls.append((f, f.done())))
            assert await future == 2
            assert calls == [(future, True)]
