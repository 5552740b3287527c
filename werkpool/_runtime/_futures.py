"""The futures that :meth:`WorkerPool.run` returns: a real :class:`asyncio.Future` on asyncio, and
:class:`Future`, with the same surface, on trio."""

# R54 here is a reliability requirement: docs/reliability.md lists them.

from __future__ import annotations

import asyncio
import logging
import threading
from enum import Enum
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, final

import anyio

from .._core._exceptions import FutureCancelled, FutureNotFinished
from .._core._job import JOB_SLOTS, Job

if TYPE_CHECKING:
    from collections.abc import Callable, Generator
    from types import TracebackType

__all__ = ["Future", "JobFuture"]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

_logger = logging.getLogger("werkpool")


class JobFuture(Protocol[T_co]):
    """
    What :meth:`WorkerPool.run` returns, on either backend: an awaitable with asyncio's future API.

    On asyncio the object is a real :class:`asyncio.Future` (so :func:`asyncio.wait` and friends
    accept it; ``typing.cast`` it to ``asyncio.Future[T]`` if your type checker insists); on trio
    it is a :class:`werkpool.Future`.

    .. versionadded:: 0.3
    """

    def __await__(self) -> Generator[Any, None, T_co]:
        """Wait for the job and return its result (or raise its exception)."""
        ...

    def done(self) -> bool:
        """Return True once the job has a result, an exception, or was cancelled."""
        ...

    def cancelled(self) -> bool:
        """Return True if the future was cancelled."""
        ...

    def result(self) -> T_co:
        """Return the job's result, or raise its exception (or the cancellation)."""
        ...

    def exception(self) -> BaseException | None:
        """Return the job's exception, or None if it succeeded."""
        ...

    def cancel(self, msg: Any | None = None) -> bool:
        """Cancel the future and its job; return False if it had already resolved."""
        ...

    def add_done_callback(self, fn: Callable[[Any], object], /) -> None:
        """Call ``fn(future)`` once the future resolves."""
        ...


class AsyncioFuture(asyncio.Future[T], Job):
    """A real :class:`asyncio.Future` that is also its job's record, and whose :meth:`cancel`
    cancels that job.

    Overriding ``cancel`` (rather than adding a done callback) tells the pool synchronously, so a
    cancelled queued job can never start in between, and costs nothing for jobs never cancelled.
    """

    __slots__ = JOB_SLOTS

    # No __init__ of its own: asyncio's runs in C, then the pool fills in the job's fields.

    def cancel(self, msg: Any | None = None) -> bool:
        host = self.host
        if host is not None and threading.get_ident() != host.thread:
            # From another thread: asyncio's futures are not thread-safe, so the whole
            # cancellation (the future's and the job's) is handed to the loop's thread (R54).
            if self.done():
                return False
            try:
                self.get_loop().call_soon_threadsafe(self.cancel, msg)
            except RuntimeError:  # the loop is closed: refuse, changing nothing
                return False
            return True
        if not super().cancel(msg):
            return False
        if host is not None:
            host.job_cancelled(self)
        return True


@final
class Future(Job, Generic[T]):
    """
    The result of a job run by a pool on trio, with the surface of :class:`asyncio.Future`.

    Await it (any number of tasks may) to get the job's return value or exception; or read it with
    :meth:`result` and :meth:`exception` once :meth:`done`. :meth:`cancel` cancels the job: a queued
    job never starts, a running one is cancelled at its next checkpoint. Awaiting or reading a
    cancelled future raises :exc:`werkpool.FutureCancelled`. Done callbacks run synchronously when
    the future resolves (or at once if it already has).

    As with :class:`asyncio.Future`, a failed future raises its exception with the traceback it
    had when the job failed, on every read: one reader's frames never show up in another's, and
    reading it again and again does not grow it. A future can be weakly referenced, and holds no
    reference cycle of its own, so a dropped one is freed at once, even with the cyclic GC off.

    .. versionadded:: 0.3
    """

    class Status(Enum):
        """The state of a :class:`Future`."""

        PENDING = "pending"
        FINISHED = "finished"
        FAILED = "failed"
        CANCELLED = "cancelled"

    __slots__ = (
        *JOB_SLOTS,
        "__weakref__",
        "_callbacks",
        "_event",
        "_exception",
        "_result",
        "_status",
        "_traceback",
    )

    def __init__(self) -> None:
        self._status = Future.Status.PENDING
        self._result: T | None = None
        self._exception: BaseException | None = None
        # The exception's traceback when it was set: each read re-raises with this one, since a
        # raise appends the reader's frames to the (shared) exception's __traceback__.
        self._traceback: TracebackType | None = None
        self._callbacks: list[Callable[[Future[T]], object]] | None = None
        self._event: anyio.Event | None = None
        self.host = None  # a pool sets this, and the job's fields, when it runs one for it

    @property
    def status(self) -> Future.Status:
        """The current :class:`Future.Status`."""
        return self._status

    def done(self) -> bool:
        """Return True if the future has a result, an exception, or was cancelled."""
        return self._status is not Future.Status.PENDING

    def cancelled(self) -> bool:
        """Return True if the future was cancelled."""
        return self._status is Future.Status.CANCELLED

    def result(self) -> T:
        """
        Return the job's return value.

        :raises werkpool.FutureNotFinished: if the future is still pending
        :raises werkpool.FutureCancelled: if it was cancelled
        :raises BaseException: the job's own exception, if it failed
        """
        status = self._status
        if status is Future.Status.FINISHED:
            return self._result  # type: ignore[return-value]
        if status is Future.Status.FAILED:
            assert self._exception is not None
            try:
                raise self._exception.with_traceback(self._traceback)
            finally:
                # The traceback now holds this frame, and the frame holds self, which holds the
                # exception: without this, a failed future read once were freed only by the
                # cyclic GC (as concurrent.futures.Future.__get_result does).
                del self
        if status is Future.Status.CANCELLED:
            raise FutureCancelled("the job was cancelled")
        raise FutureNotFinished("the job has not finished yet")

    def exception(self) -> BaseException | None:
        """
        Return the job's exception, or None if it succeeded.

        :raises werkpool.FutureNotFinished: if the future is still pending
        :raises werkpool.FutureCancelled: if it was cancelled
        """
        status = self._status
        if status is Future.Status.PENDING:
            raise FutureNotFinished("the job has not finished yet")
        if status is Future.Status.CANCELLED:
            raise FutureCancelled("the job was cancelled")
        return self._exception

    def cancel(self, msg: Any | None = None) -> bool:
        """
        Cancel the future and its job; return False if it had already resolved.

        *msg* is accepted for compatibility with :meth:`asyncio.Future.cancel` and ignored.
        """
        if self._status is not Future.Status.PENDING:
            return False
        self._resolve(Future.Status.CANCELLED)
        host = self.host
        if host is not None:
            host.job_cancelled(self)
        return True

    def add_done_callback(self, fn: Callable[[Future[T]], object], /) -> None:
        """Call ``fn(future)`` when the future resolves, or now if it already has."""
        if self._status is not Future.Status.PENDING:
            self._call(fn)
        elif self._callbacks is None:
            self._callbacks = [fn]
        else:
            self._callbacks.append(fn)

    def remove_done_callback(self, fn: Callable[[Future[T]], object], /) -> int:
        """Remove every registration of *fn*; return how many there were."""
        if not self._callbacks:
            return 0
        before = len(self._callbacks)
        self._callbacks = [cb for cb in self._callbacks if cb != fn]
        return before - len(self._callbacks)

    async def wait(self) -> None:
        """Wait until the future resolves, whatever the outcome (it does not raise it)."""
        if self._status is Future.Status.PENDING:
            if self._event is None:
                self._event = anyio.Event()
            await self._event.wait()

    def __await__(self) -> Generator[Any, None, T]:
        if self._status is Future.Status.PENDING:
            yield from self.wait().__await__()
        try:
            return self.result()
        finally:
            del self  # this frame joins a raised exception's traceback: see result()

    # -- resolution, used by the pool -------------------------------------------------------------

    def set_result(self, result: T) -> None:
        """Resolve with *result* (the pool calls this)."""
        if self._status is not Future.Status.PENDING:
            raise RuntimeError(f"{self!r} is already resolved")
        self._result = result
        self._resolve(Future.Status.FINISHED)

    def set_exception(self, exception: BaseException) -> None:
        """Resolve with *exception* (the pool calls this)."""
        if self._status is not Future.Status.PENDING:
            raise RuntimeError(f"{self!r} is already resolved")
        self._exception = exception
        self._traceback = exception.__traceback__
        self._resolve(Future.Status.FAILED)

    def _resolve(self, status: Future.Status) -> None:
        self._status = status
        # Drop the event and the callbacks once used: a resolved future needs neither, and a
        # callback (a bound method of whoever waits for the job) may well refer back to it.
        event, self._event = self._event, None
        if event is not None:
            event.set()
        callbacks, self._callbacks = self._callbacks, None
        if callbacks:
            for fn in callbacks:
                self._call(fn)

    def _call(self, fn: Callable[[Future[T]], object]) -> None:
        try:
            fn(self)
        except Exception:
            # Like concurrent.futures: a faulty callback must not break the pool or other callbacks.
            _logger.exception("exception calling callback for %r", self)

    def __repr__(self) -> str:
        return f"<werkpool.Future {self._status.value}>"
