"""A precise alarm clock: wakes a task at a deadline, to a tenth of a millisecond, from a thread.

Why a thread: epoll, under asyncio's and trio's default loops, counts whole milliseconds, so a
loop's timer wakes up to a millisecond late. A strict rate (burst 1) loses that lateness for
good, so a worker used to yield to the loop for the last 1.25 ms before each slot (a busy wait):
about a fifth of a core at 200/s, a whole core from 400/s, and with several processes on a
shared rate, enough load to make every process's starts late. A thread sleeps on the operating
system's fine timers instead (:meth:`threading.Condition.wait`, tens of microseconds late) and
hands the wake-up to the loop (``call_soon_threadsafe``, trio's ``run_sync_soon``), which hears
it at once on its wake-up file descriptor. The worker then yields only the last
:attr:`Alarm.lead` to its slot, which follows how late the wake-ups come.

Only for a real clock: under a virtual one (trio's ``MockClock``, looptime) the thread's clock is
not the loop's, and the loop's own timers are exact anyway.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
import weakref
from typing import TYPE_CHECKING, Final, final

import anyio

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["ALARM_LEAD", "Alarm"]

#: How far before its slot a worker asks the alarm to wake it at first; it yields to the loop
#: the rest of the way. The alarm then follows its own lateness (see :attr:`Alarm.lead`): the
#: thread wakes within the kernel's timer slack (50 µs by default; 110-120 µs measured on a
#: 2-core VM) and the loop hears it within one of its turns (about as much again).
ALARM_LEAD: Final = 0.0003
#: The least and most :attr:`Alarm.lead` becomes. The most is well under the 1.25 ms a worker
#: yielded before the alarm: on a busy machine (where the wake-ups come late) yielding longer
#: takes the CPU the other processes need, and their lateness is the machine's anyway.
_LEAD_LEAST: Final = 0.0001
_LEAD_MOST: Final = 0.0005
#: The lead tracks the 90th percentile of the wake-ups' lateness (a stochastic estimate: up by
#: 9 steps when a wake-up was later, down by 1 when it was not), plus a margin.
_STEP: Final = 0.000005
_MARGIN: Final = 0.00005

#: How long the thread stays with nothing to do before it ends (a new deadline starts another).
_LINGER: Final = 1.0


@final
class Alarm:
    """Wakes the tasks of one event loop at their deadlines, from one daemon thread.

    :param deliver: runs a callable in the loop's thread, from another thread (asyncio's
        ``loop.call_soon_threadsafe``, trio's ``TrioToken.run_sync_soon``); it may raise
        RuntimeError once the loop is closed (the wake-up is then dropped)
    """

    __slots__ = ("_cond", "_deliver", "_heap", "_late", "_seq", "_thread", "lead")

    def __init__(self, deliver: Callable[[Callable[[], object]], object]) -> None:
        #: *deliver*, held weakly if it is a bound method (the loop's): the loop owns its alarm
        #: (LoopBinding keeps one per loop, weakly by the loop), not the other way round.
        self._deliver: Callable[[], Callable[[Callable[[], object]], object] | None]
        try:
            self._deliver = weakref.WeakMethod(deliver)
        except TypeError:
            self._deliver = lambda: deliver
        self._cond = threading.Condition(threading.Lock())
        #: [deadline on time.monotonic, sequence number, wake-up or None once it ended]
        self._heap: list[list[object]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        #: How far before a slot to ask for a wake-up: the 90th percentile of the wake-ups'
        #: lateness so far (:attr:`_late`) plus a margin, within [_LEAD_LEAST, _LEAD_MOST].
        self.lead = ALARM_LEAD
        self._late = ALARM_LEAD - _MARGIN

    async def sleep_until(self, when: float, clock: Callable[[], float]) -> None:
        """Sleep until *when* on *clock* (the loop's real clock): no yield at all if it passed."""
        delay = when - clock()
        if delay <= 0:
            return
        event = anyio.Event()
        entry: list[object] = [time.monotonic() + delay, next(self._seq), event.set]
        with self._cond:
            heapq.heappush(self._heap, entry)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="werkpool-alarm", daemon=True
                )
                self._thread.start()
            elif self._heap[0] is entry:
                self._cond.notify()  # the thread sleeps until a later deadline
        try:
            await event.wait()
        finally:
            # Ended (woken, or cancelled): the thread skips it. Without the lock: a wake-up the
            # thread took just before this sets an event nobody waits on, which is harmless.
            entry[2] = None
        self.learn(clock() - when)

    def learn(self, late: float) -> None:
        """A wake-up came *late* (s) after its deadline: move :attr:`lead` towards the 90th
        percentile of the lateness, plus a margin, within its bounds."""
        estimate = self._late
        estimate += 9 * _STEP if late > estimate else -_STEP
        # Kept within what the bounds let the lead use, so that it turns at once when the
        # lateness does.
        self._late = min(max(estimate, _LEAD_LEAST - _MARGIN), _LEAD_MOST - _MARGIN)
        self.lead = self._late + _MARGIN

    def _run(self) -> None:
        """The thread: deliver each wake-up when its deadline comes; end after _LINGER idle."""
        cond, heap = self._cond, self._heap
        with cond:
            while True:
                while heap and heap[0][2] is None:
                    heapq.heappop(heap)
                if not heap:
                    cond.wait(_LINGER)
                    if not heap:
                        self._thread = None
                        return
                    continue
                delay = heap[0][0] - time.monotonic()  # type: ignore[operator]
                if delay > 0:
                    cond.wait(delay)
                    continue
                wake = heapq.heappop(heap)[2]
                if wake is None:
                    continue
                deliver = self._deliver()
                if deliver is None:  # the loop is gone: nobody is left to wake
                    continue
                cond.release()  # new deadlines come in meanwhile
                try:
                    deliver(wake)  # type: ignore[arg-type]
                except RuntimeError:
                    pass  # the loop closed: nobody is left to wake
                finally:
                    del deliver, wake  # nothing of the loop kept while the thread lingers
                    cond.acquire()
