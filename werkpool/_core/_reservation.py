"""A reservation: the I/O that the scheduler hands a worker before a job may start.

A job whose local limits admitted it must still get its remote limits (a store shared with other
processes, say Redis). The scheduler never awaits: :meth:`Scheduler.poll
<werkpool._core._scheduler.Scheduler.poll>` returns a :class:`Reservation`, the worker performs it
(:mod:`werkpool._runtime._remote`) and reports the answer back (httpcore's shape: the state change
is synchronous and returns the I/O to do).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, final

from ._remote_limit import Chain

if TYPE_CHECKING:
    from ._job import Job
    from ._remote_limit import RemoteLimit

__all__ = ["Reservation", "Turns", "Waiter"]


class Waiter(Protocol):
    """What waits for a turn (the runtime's event)."""

    def set(self) -> None:
        """Wake the one waiting."""
        ...


@final
class Turns:
    """The exact start order of a pool's chained reservations (``pipeline=1``, several in
    flight): each has a ticket, in the order made, and starts only in its turn, once every
    earlier ticket has passed (its attempt started, or its reservation ended without one).

    The answers to one call come back together, and the loop (trio's, in particular) resumes
    their workers in any order: this puts them back in order. The scheduler issues tickets; the
    workers wait for their turn (:attr:`waiting`) and pass it on (:meth:`passed`).
    """

    __slots__ = ("chain", "issued", "passed_early", "turn", "waiting")

    def __init__(self) -> None:
        #: The chain new reservations join (a new one once a link failed: Scheduler.poll).
        self.chain = Chain()
        #: The next ticket.
        self.issued = 0
        #: The lowest ticket that has not passed: its holder may start.
        self.turn = 0
        #: Tickets above the turn that passed already (ended without waiting for their turn).
        self.passed_early: set[int] = set()
        #: Ticket -> who waits for its turn (set by the runtime).
        self.waiting: dict[int, Waiter] = {}

    def issue(self) -> int:
        """The next ticket."""
        ticket = self.issued
        self.issued = ticket + 1
        return ticket

    def passed(self, ticket: int) -> None:
        """*ticket*'s attempt starts now, or its reservation ended: the next turn may come (and
        its waiter is woken)."""
        if ticket != self.turn:
            if ticket > self.turn:
                self.passed_early.add(ticket)
            return
        early = self.passed_early
        ticket += 1
        while ticket in early:
            early.discard(ticket)
            ticket += 1
        self.turn = ticket
        waiter = self.waiting.pop(ticket, None)
        if waiter is not None:
            waiter.set()


@final
class Reservation:
    """I/O that :meth:`Scheduler.poll` hands to a worker: ask *limits* for an attempt of *job*.

    The job is ``RESERVING`` and holds its local limits meanwhile. The worker reports the answer
    with :meth:`Scheduler.granted`, :meth:`Scheduler.refused` or :meth:`Scheduler.abandoned`.
    """

    __slots__ = ("chain", "job", "limits", "pipelined", "ticket", "turns")

    def __init__(
        self,
        job: Job,
        limits: tuple[RemoteLimit, ...],
        pipelined: bool = False,
        turns: Turns | None = None,
    ) -> None:
        self.job = job
        self.limits = limits
        #: Sent while several could be in flight (``depth > 1``: no local limit dated admissions).
        self.pipelined = pipelined
        #: The start order this reservation keeps (a chained one), or None.
        self.turns = turns
        #: Its chain and its ticket there (a chained reservation's; else None and -1).
        self.chain: Chain | None = None
        self.ticket = -1
        if turns is not None:
            self.chain = turns.chain
            self.ticket = turns.issue()

    def __repr__(self) -> str:
        return f"<Reservation for {self.job!r}>"
