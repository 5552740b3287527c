"""Back-references to a pool's lifecycle that are weak, so that an exited pool is freed at once.

A part that the lifecycle holds, and that must call the lifecycle back (the scheduler's
``on_drained``, the owner of the ``start_soon()`` jobs), would close a reference cycle if it held
the lifecycle strongly: every exited pool would then be left to the cyclic garbage collector
(issue #21 item 17, R53). These two hold it through weak references instead.
"""

# R53 here is a reliability requirement: docs/reliability.md lists them.

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Protocol, final

if TYPE_CHECKING:
    from collections.abc import Callable

    from .._core._job import Job

__all__ = ["FailureSink", "StartSoonOwner", "weakly"]


class FailureSink(Protocol):
    """Who fails when a start_soon() job fails: the pool's lifecycle."""

    def start_soon_failed(self, error: BaseException) -> None: ...


def weakly(method: Callable[[], None]) -> Callable[[], None]:
    """Call the bound *method* through a weak reference to its object (nothing once it is gone).

    For a callback a part keeps that points back at its owner, such as the scheduler's
    ``on_drained``: held strongly it would close a reference cycle, and every exited pool would be
    left to the cyclic garbage collector (issue #21 item 17).
    """
    ref = weakref.WeakMethod(method)

    def call() -> None:
        bound = ref()
        if bound is not None:
            bound()

    return call


@final
class StartSoonOwner:
    """Reports the failure of a start_soon() job to its pool's lifecycle (the jobs' owner).

    It holds the lifecycle weakly: the lifecycle holds it, and a cycle would leave every pool to
    the cyclic garbage collector (R53). Its jobs cannot outlive the pool's run anyway.
    """

    __slots__ = ("_life",)

    notify_success = False  # only failures fail the pool

    def __init__(self, life: FailureSink) -> None:
        self._life = weakref.ref(life)

    def job_settled(self, job: Job) -> None:
        """A start_soon() job is settled: if it failed, the pool fails."""
        if job.cancelled():
            return
        error = job.exception()  # also marks an asyncio future's exception as retrieved
        life = self._life()
        if error is not None and life is not None:
            life.start_soon_failed(error)
