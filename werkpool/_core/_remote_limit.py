"""Remote limits: a limit kept outside the process, say in Redis, and its "not now".

Asking a remote limit takes I/O and it may refuse. The scheduler never awaits it. Once the
local limits admit the head job, the scheduler hands a worker a
:class:`~werkpool._core._scheduler.Reservation` to perform (httpcore's shape: the state change is
synchronous and returns the I/O to do); the worker awaits :meth:`RemoteLimit.acquire` and reports
the answer back, and gives the credit back (:meth:`RemoteLimit.release`, shielded) when the
attempt ends or the request is cancelled.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol, final, runtime_checkable

if TYPE_CHECKING:
    from ._job import Job

__all__ = ["INTACT", "NOT_ASKED", "Chain", "OrderedRemoteLimit", "Refusal", "RemoteLimit"]


@final
@dataclass(frozen=True, slots=True)
class Refusal:
    """A remote limit's "not now": the attempt may ask again from *retry_at* (the pool's clock).

    With *key* set, only the job's key was refused (a per-key shared limit): the other keys'
    jobs may still ask meanwhile, so a saturated key holds up no one else.
    """

    retry_at: float
    key: bool = False


#: The answer to a link of a :class:`Chain` after an earlier link was not granted: nothing was
#: asked or taken, and nothing holds the job back (it waits again at the head of its line).
NOT_ASKED: Final = Refusal(-math.inf)


#: :attr:`Chain.broken` while every link was granted (or is still in flight).
INTACT: Final = sys.maxsize


@final
class Chain:
    """Reservations of one pool that must start in the order they were made, though several
    are in flight at once (``pipeline=1`` with a store that asks them in order).

    Its links are numbered in that order. Once one is not granted (refused, failed, or sent
    back), a later link is not asked (:data:`NOT_ASKED`): each link is granted only as if it had
    waited for every answer before it, so that a later job never starts before an earlier one
    that was refused. The pool then makes a new chain once every link of this one answered.
    """

    __slots__ = ("broken",)

    def __init__(self) -> None:
        #: The first link that was not granted (:data:`INTACT`: none yet).
        self.broken = INTACT

    def asks(self, link: int) -> bool:
        """Whether *link* may still be asked (no earlier link failed)."""
        return link <= self.broken

    def fail(self, link: int) -> None:
        """*link* was not granted: the later links are not asked any more."""
        if link < self.broken:
            self.broken = link


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


@runtime_checkable
class OrderedRemoteLimit(RemoteLimit, Protocol):
    """A remote limit that can keep a chain's order with several requests in flight: with
    ``pipeline`` 1, the pool then sends its reservations as links of a :class:`Chain` instead
    of one at a time, and starts the granted ones in the order they were made."""

    async def acquire_in_order(self, job: Job, chain: Chain, link: int) -> float | Refusal:
        """As :meth:`~RemoteLimit.acquire`, as *link* of *chain*.

        The requests reach the store in the order of the calls, and the store grants a link
        only if every earlier link of the chain was granted; else (or if :meth:`Chain.asks`
        says so before the request goes out) it returns :data:`NOT_ASKED`, having taken
        nothing. A link that is not granted fails the chain (:meth:`Chain.fail`) before the
        next request goes out.
        """
        ...
