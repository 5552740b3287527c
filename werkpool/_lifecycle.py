"""The lifecycle of a WorkerPool: admission, starting, supervising, draining and stopping.

``_Lifecycle`` is the third class of the chain that makes up WorkerPool (see ``_pool_state.py``):
it decides whether a caller may submit (binding and starting the pool on its first use), runs the
pool's task groups and their supervisor, cancels everything on kill() or failure, and leaves the
task groups at the end, raising the pool's own failure as it was raised.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING, NoReturn, cast

import anyio

from ._exceptions import PoolClosedError
from ._pool_state import _CLOSED, _CLOSING, _KILLED, _NEW, _OPEN
from ._scheduler import RUNNING, PlainJob
from ._workers import IDLE_RETIRE, _Workers

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    from anyio.abc import TaskGroup, TaskStatus

    from ._scheduler import Scheduler


def _as_group(error: BaseException) -> BaseExceptionGroup[BaseException] | None:
    """*error* as an exception group (with its member type spelled out), or None."""
    if isinstance(error, BaseExceptionGroup):
        return cast("BaseExceptionGroup[BaseException]", error)
    return None


def _reraise_unchanged(error: BaseException) -> NoReturn:
    """Raise *error* keeping its __cause__ and __context__ (a plain raise in an except block
    would overwrite __context__ with the exception being handled)."""
    cause, context, suppress = error.__cause__, error.__context__, error.__suppress_context__
    try:
        raise error
    finally:
        error.__cause__, error.__context__ = cause, context
        error.__suppress_context__ = suppress


class _Lifecycle(_Workers):
    """Admission and the lifecycle of a WorkerPool, from its binding to its exit."""

    __slots__ = ()

    # -- admission --------------------------------------------------------------------------------

    def _accepting(self) -> Scheduler:
        """Return the scheduler if this caller may submit now, or raise why not."""
        sched = self._sched
        if self._state != _OPEN:
            return self._admission_check()
        loop = self._loop
        if loop is None or asyncio._get_running_loop() is not loop:
            self._check_loop()  # on trio, or from the wrong loop or thread
        assert sched is not None
        return sched

    def _accepting_after_wait(self) -> Scheduler:
        """Claim the room reserved by _wait_for_room() and check the pool still accepts."""
        if self._max_pending is not None:
            self._space_reserved -= 1
        try:
            return self._accepting()
        except BaseException:
            if self._space_waiting:
                self._give_room()  # our room goes unused: the next waiter must learn why
            raise

    def _job_failed(self, error: BaseException) -> None:
        """A start_soon() job failed: cancel everything and let the supervisor raise the error."""
        if error not in self._errors:  # by identity: one object raised by several jobs is one
            self._errors.append(error)
        if self._state < _KILLED:
            # Running jobs are cancelled through their scopes, their futures left pending: one
            # that fails at the same moment fails its future and is reported with this error
            # (several failures are raised together); one that returns ends cancelled.
            self._abort(cancel_running_futures=False)

    def _admission_check(self) -> Scheduler:
        """The slow path of :meth:`run` when the pool is not simply open."""
        state = self._state
        if state == _NEW:
            sched = self._bind()
            self._start_host()
            return sched
        if self._sched is not None:
            self._check_loop()
        if state == _CLOSING and self._in_worker():
            assert self._drained is not None
            assert self._sched is not None
            if not self._drained.is_set():
                # A job of this pool may still submit follow-up work while draining: its
                # workers stay until the last accepted job ends, so this one will run.
                return self._sched
            # The drain is over (the last job ended, and a task it started outlived it): the
            # workers are leaving, so the job could never run. Refuse it here (R52).
            raise PoolClosedError(
                "this WorkerPool no longer accepts jobs: its drain is complete (every accepted "
                "job ended before this follow-up was submitted)"
            )
        reason = {
            _CLOSING: "shutdown() has begun",
            _KILLED: "kill() has begun or the pool failed",
            _CLOSED: "the pool has exited",
        }[state]
        raise PoolClosedError(f"this WorkerPool no longer accepts jobs: {reason}")

    # -- lifecycle --------------------------------------------------------------------------------

    async def _supervise(self, *, task_status: TaskStatus[None]) -> None:
        assert self._stopped is not None
        assert self._drained is not None
        try:
            with anyio.CancelScope() as self._kill_scope:
                async with anyio.create_task_group() as tg:
                    self._tg = tg
                    task_status.started()
                    assert self._started is not None
                    self._started.set()
                    sched = self._sched
                    assert sched is not None
                    if sched.has_queued() and not self._waking:
                        self._kick(None)  # jobs submitted before the pool started
                    await self._retire_idle_workers_until_drained()
                    self._tg = None
        except BaseException as exc:
            if not isinstance(exc, self._cancelled_exc):
                self._crashed(exc)
            raise
        finally:
            self._tg = None
            self._stopped.set()
        # Failed start_soon() jobs fail the pool, as failed tasks fail a task group.
        errors = self._errors
        if len(errors) == 1:
            raise errors[0]
        if errors:
            raise BaseExceptionGroup("several jobs started with start_soon() failed", errors)

    async def _retire_idle_workers_until_drained(self) -> None:
        """Wait for the drain; meanwhile, while workers are parked, reap them every round.

        One timer for the whole pool, and only while some worker is idle: a busy pool and a
        pool at rest (its idle workers retired) keep none.
        """
        drained = self._drained
        assert drained is not None
        while not drained.is_set():
            if self._parked:
                with anyio.move_on_after(IDLE_RETIRE):
                    await drained.wait()
                if not drained.is_set():
                    self._reap()
            else:
                try:
                    with anyio.CancelScope() as self._reap_scope:
                        await drained.wait()  # or until a worker parks (it cancels the scope)
                finally:
                    self._reap_scope = None

    def _abort(self, *, cancel_running_futures: bool = True) -> None:
        """Cancel everything, synchronously: the first half of kill()."""
        if self._state == _NEW:
            self._state = _CLOSED
            return
        if self._state < _KILLED:
            self._state = _KILLED
        sched = self._sched
        assert sched is not None
        self._close_maps()
        for job in sched.drop_all():
            self._cancel_job(job)
        for worker in self._workers if cancel_running_futures else ():
            running = worker.job
            if running is not None and running.state == RUNNING:
                # Cancelled now, not when the job stops: a job that swallows its cancellation
                # and returns cannot resolve its future any more.
                if isinstance(running, PlainJob):
                    self._cancel_owned(running)
                else:
                    running.cancel()
        if self._kill_scope is not None:
            self._kill_scope.cancel()
        assert self._drained is not None
        self._drained.set()
        self._wake_all()
        if self._space_waiting:
            self._give_room()  # they wake to find the pool closed

    def _begin_closing(self) -> None:
        if self._state == _OPEN:
            self._state = _CLOSING
            if self._space_waiting:
                self._give_room()  # they wake to find the pool closed

    def _close_maps(self) -> None:
        """Close the maps still open: their jobs are cancelled, their input is no longer read."""
        for results in list(self._maps):
            results._close_by_pool()

    async def _start(self) -> None:
        tg = anyio.create_task_group()
        await tg.__aenter__()
        try:
            await tg.start(self._supervise)
        except BaseException:
            self._abort()
            await tg.__aexit__(*sys.exc_info())
            raise
        self._outer_tg = tg

    async def _finish(self, exc: BaseException | None) -> None:
        """Leave the pool's task group: drain after a normal exit, cancel everything otherwise."""
        tg = self._outer_tg
        assert tg is not None
        assert self._drained is not None
        if exc is None:
            self._close_maps()  # nobody iterates them any more: do not wait for their jobs
            self._begin_closing()
            sched = self._sched
            assert sched is not None
            if sched.pending == 0:
                self._set_drained()
            try:
                await self._drained.wait()
            except BaseException as waiting_error:
                self._abort()
                await self._exit_task_group(tg, waiting_error)
                raise
        else:
            self._abort()
        await self._exit_task_group(tg, exc)
        self._state = _CLOSED

    async def _exit_task_group(self, tg: TaskGroup, body_error: BaseException | None) -> None:
        """Exit the outer task group; raise the pool's own failure, if any, as it was raised.

        *body_error* is what the ``async with`` body raised (None if nothing): a genuine error
        of the body and a failure of the pool are raised together, in an ExceptionGroup.
        """
        self._outer_tg = None
        try:
            await tg.__aexit__(None, None, None)
        except BaseExceptionGroup as group:
            self._state = _CLOSED
            # The pool's own two task groups nest a lone error twice: unwrap it.
            error: BaseException = group
            nested = _as_group(error)
            while nested is not None and len(nested.exceptions) == 1:
                error = nested.exceptions[0]
                nested = _as_group(error)
            cancelled = self._cancelled_exc
            only_cancelled = isinstance(error, cancelled) or (
                nested is not None and nested.split(cancelled)[1] is None  # only cancellations
            )
            if only_cancelled:
                # An enclosing scope was cancelled and reached the pool's tasks too: that is not
                # a failure of the pool. Raise the body's own exception if it has one (the
                # cancellation is delivered again at the next checkpoint), else the cancellation.
                _reraise_unchanged(body_error if body_error is not None else error)
            if body_error is not None and not isinstance(body_error, cancelled):
                raise BaseExceptionGroup(
                    "the body of 'async with WorkerPool' and the pool both failed",
                    [body_error, error],
                ) from None
            _reraise_unchanged(error)

    def _start_host(self) -> None:
        """Run the pool in a background task, for use without ``async with``."""
        self._hosted = True
        self._host_stop = anyio.Event()
        self._host_done = anyio.Event()
        if self._backend == "asyncio":
            assert self._loop is not None
            # Keep a reference: the event loop holds only weak references to tasks.
            self._host_task = self._loop.create_task(self._host(), name="werkpool host")
        else:
            import trio

            trio.lowlevel.spawn_system_task(self._host, name="werkpool host")

    async def _host(self) -> None:
        assert self._host_stop is not None
        assert self._host_done is not None
        try:
            await self._start()
            try:
                await self._host_stop.wait()
            except BaseException as exc:
                await self._finish(exc)
                raise
            await self._finish(None)
        except BaseException as exc:  # a system task must not raise; shutdown() re-raises it
            if not isinstance(exc, self._cancelled_exc):
                self._host_error = exc
        finally:
            self._host_done.set()
