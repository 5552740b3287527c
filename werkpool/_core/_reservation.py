"""A reservation: the I/O that the scheduler hands a worker before a job may start.

A job whose local limits admitted it must still get its remote limits (a store shared with other
processes, say Redis). The scheduler never awaits: :meth:`Scheduler.poll
<werkpool._core._scheduler.Scheduler.poll>` returns a :class:`Reservation`, the worker performs it
(:mod:`werkpool._runtime._remote`) and reports the answer back (httpcore's shape: the state change
is synchronous and returns the I/O to do).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, final

if TYPE_CHECKING:
    from ._job import Job
    from ._remote_limit import RemoteLimit

__all__ = ["Reservation"]


@final
class Reservation:
    """I/O that :meth:`Scheduler.poll` hands to a worker: ask *limits* for an attempt of *job*.

    The job is ``RESERVING`` and holds its local limits meanwhile. The worker reports the answer
    with :meth:`Scheduler.granted`, :meth:`Scheduler.refused` or :meth:`Scheduler.abandoned`.
    """

    __slots__ = ("job", "limits", "pipelined")

    def __init__(self, job: Job, limits: tuple[RemoteLimit, ...], pipelined: bool = False) -> None:
        self.job = job
        self.limits = limits
        #: Sent while several could be in flight (``depth > 1``: no local limit dated admissions).
        self.pipelined = pipelined

    def __repr__(self) -> str:
        return f"<Reservation for {self.job!r}>"
