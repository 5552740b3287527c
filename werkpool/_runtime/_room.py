"""The ``max_pending`` line: producers that wait, first come first served, for room in the queue.

Shaped like trio's ``ParkingLot`` behind ``CapacityLimiter``: a non-blocking check
(:meth:`Room.full`), a fair FIFO wait (:meth:`Room.wait`), and a hand-on when room appears
(:meth:`Room.give`). Room is counted against the scheduler's queued jobs plus the room already
promised to woken producers that have not submitted yet, so producers woken in the same tick
cannot overfill the queue.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol, final

import anyio
from anyio.lowlevel import checkpoint

__all__ = ["EmptyQueue", "Queue", "Room"]


class Queue(Protocol):
    """What the room counts: the jobs waiting to start (the scheduler)."""

    queued: int


@final
class EmptyQueue:
    """The queue of a pool not yet bound to its loop: nothing waits in it."""

    __slots__ = ()
    queued = 0


@final
class Room:
    """At most *limit* jobs wait to start; producers beyond that wait in line for room.

    :param limit: how many jobs may wait to start
    :param queue: where the waiting jobs are counted (replaced by the scheduler when the pool
        binds to its loop; until then nothing is queued)
    """

    __slots__ = ("_abandoned", "_waiters", "closed", "limit", "queue", "reserved", "waiting")

    def __init__(self, limit: int, queue: Queue) -> None:
        self.limit = limit
        self.queue = queue
        self._waiters: deque[anyio.Event] = deque()  # FIFO, some abandoned
        #: How many producers still wait in line (the deque may hold abandoned ones too).
        self.waiting = 0
        #: Cancelled while waiting: skipped when reached (removing from the middle is O(n)).
        self._abandoned: set[anyio.Event] = set()
        #: Room promised to producers (woken, or passed at once) that have not submitted yet.
        self.reserved = 0
        #: The pool no longer accepts jobs: every waiter is woken to find that out.
        self.closed = False

    def full(self) -> bool:
        """True if a producer that cannot wait must be refused now (someone waits, or no room)."""
        return bool(self.waiting) or self.queue.queued + self.reserved >= self.limit

    async def wait(self) -> None:
        """Wait in line until there is room, and reserve it; always a checkpoint.

        The caller then submits (:meth:`claim`) or gives the room up (:meth:`forfeit`).
        """
        if self.closed or (not self.waiting and self.queue.queued + self.reserved < self.limit):
            # Closed: pass at once, so the caller learns it from the pool instead of waiting.
            # Reserve before the checkpoint, so producers that pass here in the same tick
            # cannot overfill the queue between the check and the submission.
            self.reserved += 1
            try:
                await checkpoint()
            except BaseException:
                self.forfeit()
                raise
            return
        event = anyio.Event()
        self._waiters.append(event)
        self.waiting += 1
        try:
            await event.wait()
        except BaseException:
            if event.is_set():
                self.forfeit()  # we were given room: hand it on
            else:
                self.waiting -= 1
                if self.waiting:
                    self._abandoned.add(event)
                else:  # nobody waits any more: everything still in line was abandoned
                    self._waiters.clear()
                    self._abandoned.clear()
            raise

    def claim(self) -> None:
        """The reserved room becomes a queued job (counted by the queue from now on)."""
        self.reserved -= 1

    def forfeit(self) -> None:
        """The reserved room goes unused: hand it to the next in line."""
        self.reserved -= 1
        if self.waiting:
            self.give()

    def give(self) -> None:
        """Wake waiters, in order, while there is room for them (or all, once closed)."""
        waiters = self._waiters
        abandoned = self._abandoned
        queue = self.queue
        while self.waiting and (queue.queued + self.reserved < self.limit or self.closed):
            event = waiters.popleft()
            if abandoned and event in abandoned:
                abandoned.discard(event)  # its producer was cancelled while waiting
                continue
            self.waiting -= 1
            self.reserved += 1
            event.set()
        if not self.waiting and abandoned:
            waiters.clear()  # only abandoned waiters are left: keep nothing of them
            abandoned.clear()

    def close(self) -> None:
        """The pool stops accepting jobs: wake every waiter (each then learns why)."""
        self.closed = True
        if self.waiting:
            self.give()
