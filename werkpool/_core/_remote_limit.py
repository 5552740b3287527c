"""Remote limits: a limit kept outside the process, say in Redis, and its "not now".

Asking a remote limit takes I/O and it may refuse. The scheduler never awaits it. Once the
local limits admit the head job, the scheduler hands a worker a
:class:`~werkpool._core._scheduler.Reservation` to perform (httpcore's shape: the state change is
synchronous and returns the I/O to do); the worker awaits :meth:`RemoteLimit.acquire` and reports
the answer back, and gives the credit back (:meth:`RemoteLimit.release`, shielded) when the
attempt ends or the request is cancelled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, final

if TYPE_CHECKING:
    from ._job import Job

__all__ = ["Refusal", "RemoteLimit"]


@final
@dataclass(frozen=True, slots=True)
class Refusal:
    """A remote limit's "not now": the attempt may ask again from *retry_at* (the pool's clock).

    With *key* set, only the job's key was refused (a per-key shared limit): the other keys'
    jobs may still ask meanwhile, so a saturated key holds up no one else.
    """

    retry_at: float
    key: bool = False


class RemoteLimit(Protocol):
    """A limit kept outside the process: asking it is I/O, and it may refuse.

    The pool asks the remote limits of a job one after the other, only once the local limits
    admitted it, and one job at a time (so FIFO holds across the pool's workers), or up to
    :attr:`pipeline` jobs at a time if the pool has no local rate or window. An attempt takes
    credit in every remote limit or in none: when one refuses, the ones that granted are
    released.
    """

    @property
    def pipeline(self) -> int:
        """How many requests may be in flight at once (in submission order); 1 keeps FIFO
        exact. A store whose requests reach it in the order sent (one connection) may say more:
        a later job then starts before an earlier one only if the store refused the earlier
        one and granted the later one in between."""
        ...

    async def acquire(self, job: Job) -> float | Refusal:
        """Take credit for one attempt of *job*.

        :return: the time (on the pool's clock, :func:`anyio.current_time`) from which the
            attempt may start, now or later; or a :class:`Refusal`, having taken nothing
        """
        ...

    def holds(self, job: Job) -> bool:
        """Whether *job*'s attempt may hold credit here that :meth:`release` would give back.

        False lets the pool skip the release, and the shielded scope around it, when the attempt
        ends (a rate's or window's credit stays spent: nothing to give back). When unsure, True:
        the release then runs, as it must after an :meth:`acquire` that was cancelled midway.
        """
        ...

    async def release(self, job: Job) -> None:
        """Give back what :meth:`acquire` took for *job*'s attempt (it ended, or was never run).

        Called shielded from cancellation, also after an :meth:`acquire` that was cancelled
        midway (it must then give back whatever that request took, if anything).
        """
        ...
