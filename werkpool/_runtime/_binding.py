"""Which event loop a pool belongs to: found on first use, checked on every later call."""

# R49 here is a reliability requirement: docs/reliability.md lists them.

from __future__ import annotations

import asyncio
import sys
import threading
import time
from typing import TYPE_CHECKING, Final, final

import anyio

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["SPIN", "STRICT_SPIN", "LoopBinding", "precise_clock"]

#: How close to a rate slot (seconds) a worker stops waiting on a timer and yields to the loop
#: until the slot comes, when a late start costs nothing: the pool's rates have a burst to make
#: it up. The loops' timers wake up to a millisecond or more late (epoll counts whole
#: milliseconds); a burst absorbs that, so the timer does the waiting and the yields stay short.
#: Measured (100 to 1,000/s, burst=2, asyncio): 99.3-100.4 % of the rate for 3-26 % of a core.
SPIN: Final = 0.00025
#: The same when a late start loses rate for good: some rate of the pool has burst 1, so its next
#: slot counts from the late start (a start can never be dated back, R49). The worker leaves the
#: timer this early and yields the rest of the way, so that starts land on their slots: 99 % of
#: 200-1,000/s with burst=1 on asyncio and trio, against 80-92 % with SPIN. The price is a busy
#: loop near each slot: about a fifth of a core at 200/s, a whole core from about 400/s (every
#: slot is then nearer than 2 * STRICT_SPIN). ``burst=2`` is the cheap way to the full rate.
STRICT_SPIN: Final = 0.00125

#: Event loops whose ``time()`` is coarse: uvloop's is libuv's ``uv_now()``, whole milliseconds
#: cached at the start of each loop iteration (winloop is its Windows port). Pacing starts on it
#: lets two starts come up to a millisecond closer than ``1/rate`` on the real clock.
_COARSE_LOOPS = frozenset({"uvloop", "winloop"})
#: How far a coarse loop's clock trails the real one at most (whole milliseconds, truncated).
_COARSE_LAG = 0.001


def _detect_backend() -> str:
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            trio.lowlevel.current_task()
        except RuntimeError:
            pass
        else:
            return "trio"
    if asyncio._get_running_loop() is not None:
        return "asyncio"
    raise RuntimeError(
        "werkpool: a WorkerPool must be used from inside a running asyncio or trio event loop"
    )


def precise_clock(loop: asyncio.AbstractEventLoop) -> Callable[[], float]:
    """The clock a pool on *loop* dates and spaces its starts by: the real monotonic clock.

    It is ``loop.time`` wherever that is precise: asyncio's own loops read
    :func:`time.monotonic` on each call, and a virtual clock (looptime) must be kept. On uvloop
    it is :func:`time.monotonic` itself: libuv's clock has the same origin (``CLOCK_MONOTONIC``)
    but counts whole milliseconds and is cached per loop iteration, so it trails the real clock
    by up to a millisecond. Timers stay the loop's: a deadline on this clock is a deadline on
    the loop's (same origin), which wakes within the loop's timer lateness, and the pool spins
    the rest of the way on this clock.
    """
    if type(loop).__module__.partition(".")[0] in _COARSE_LOOPS:
        return time.monotonic
    return loop.time


@final
class LoopBinding:
    """The running event loop (asyncio) or trio run a pool was first used in.

    Made in the first call that needs the loop (``async with`` or the first submission), so that a
    pool may be built at import time with no loop running.
    """

    __slots__ = (
        "backend",
        "cancelled_exc",
        "clock",
        "loop",
        "spin",
        "thread",
        "trio_token",
    )

    def __init__(self, spin: float = SPIN) -> None:
        self.backend = _detect_backend()
        #: The thread the loop runs in: a future cancelled from elsewhere hands over to it.
        self.thread = threading.get_ident()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.trio_token: object = None
        #: The pool's clock: the one :func:`anyio.current_time` reads (without anyio's lookup of
        #: the backend on each call: the worker reads it twice per job under a rate), except on
        #: a loop whose clock is coarse (uvloop), where it is the precise monotonic clock of the
        #: same origin (:func:`precise_clock`).
        self.clock: Callable[[], float]
        #: How long before a rate slot a worker stops waiting on a timer and yields to the loop
        #: until the slot comes (:data:`SPIN`, or :data:`STRICT_SPIN`: see :meth:`pace`); until
        #: paced, plus the loop clock's lag on a coarse loop.
        self.spin = spin
        if self.backend == "asyncio":
            loop = self.loop = asyncio.get_running_loop()
            self.clock = precise_clock(loop)
            # `!=`, not `is not`: each read of loop.time makes a new bound method, so an identity
            # test took every loop for a coarse one (asyncio's workers yielded 1.25 ms before
            # each slot, whatever the burst: a whole core from 400/s even with burst=2).
            if self.clock != loop.time:
                # The loop's timers count its coarse clock, which trails this one by up to a
                # millisecond: they wake that much later, so a worker aims them that much
                # earlier (and yields the rest of the way, as it does for SPIN).
                self.spin = spin + _COARSE_LAG
        else:
            import trio

            self.trio_token = trio.lowlevel.current_trio_token()
            self.clock = trio.current_time
        self.cancelled_exc: type[BaseException] = anyio.get_cancelled_exc_class()

    def pace(self, strict: bool) -> None:
        """Set :attr:`spin` for the pool's rates: *strict* if a late start loses rate for good
        (some rate has burst 1): :data:`STRICT_SPIN`, which covers a coarse clock's lag as well
        (uvloop: 98.5-99.2 % of 100-500/s against a strict server); else :data:`SPIN`, since the
        burst makes up that lateness (on uvloop at 500/s, burst=2: 100 % of the rate for 37 % of
        a core, against a whole core with the lag added)."""
        self.spin = STRICT_SPIN if strict else SPIN

    def is_current(self) -> bool:
        """True if the caller runs in this loop (cheap on asyncio)."""
        if self.backend == "asyncio":
            return asyncio._get_running_loop() is self.loop
        trio = sys.modules["trio"]
        try:
            return bool(trio.lowlevel.current_trio_token() is self.trio_token)
        except RuntimeError:
            return False

    def check(self) -> None:
        """Raise RuntimeError unless the caller runs in this loop."""
        if self.is_current():
            return
        where = "thread" if threading.get_ident() != self.thread else "event loop"
        raise RuntimeError(
            f"this WorkerPool belongs to another {where}: use it only from the event loop "
            "that started it"
        )

    def call_soon_threadsafe(self, fn: Callable[[], object]) -> None:
        """Run ``fn()`` soon on this loop, from any thread (RuntimeError once the loop is over)."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(fn)
        else:
            self.trio_token.run_sync_soon(fn)  # type: ignore[attr-defined]
