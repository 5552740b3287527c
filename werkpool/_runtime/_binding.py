"""Which event loop a pool belongs to: found on first use, checked on every later call."""

# R49 here is a reliability requirement: docs/reliability.md lists them.

from __future__ import annotations

import asyncio
import math
import selectors
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

#: On asyncio's epoll loop with a strict rate: how far before a slot a worker's timer is aimed
#: at least, on a whole millisecond (see :meth:`LoopBinding.aim`): what remains of a timer's
#: lateness once the millisecond rounding is taken out (the kernel's timer slack, and the cancel
#: scope's deadline delivered through two turns of the loop: 0.45-0.5 ms measured). With 0.5 ms,
#: 95/s and 200/s ran at 98.4-99.4 %; with 0.75 ms, 99.1-99.7 % of 72-200/s, for 13-23 % of a
#: core (WorkerPool(size=8, rate=R), no-op jobs).
_WHOLE_MS_LEAD = 0.00075

#: Beyond this (seconds), a millisecond late does not matter: the timer is aimed as elsewhere.
_WHOLE_MS_MOST = 60.0


def _epoll_ms(k: int) -> int:
    """How many milliseconds asyncio's :class:`selectors.EpollSelector` waits for a timeout of
    *k* whole milliseconds: it passes ``ceil(t * 1e3) * 1e-3`` seconds to ``epoll.poll()``,
    which rounds that float up to nanoseconds, then up to milliseconds. ``9 * 1e-3`` is
    0.009000000000000001, so 9 ms waits 10 (as do 13, 18, 26, 36, ...: a millisecond late)."""
    ns = math.ceil(k * 1e-3 * 1e9)
    return -(-ns // 1_000_000)


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
        "strict",
        "thread",
        "trio_token",
        "whole_ms",
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
        #: Set by :meth:`pace`: some rate has burst 1 (a late start loses rate for good).
        self.strict = False
        #: The loop's timers wait on epoll, which counts whole milliseconds (see :meth:`aim`).
        self.whole_ms = False
        if self.backend == "asyncio":
            loop = self.loop = asyncio.get_running_loop()
            self.whole_ms = isinstance(getattr(loop, "_selector", None), selectors.EpollSelector)
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
        self.strict = strict

    def aim(self, slot: float, now: float) -> float:
        """When a worker's timer should wake it for a rate *slot* (it yields the rest of the
        way): :attr:`spin` before it; but with a strict rate on asyncio's epoll loop, at a whole
        number of milliseconds after *now*, at least ``_WHOLE_MS_LEAD`` before the slot.

        That loop rounds each timer's timeout up to whole milliseconds, and a few whole values
        up by one more (:func:`_epoll_ms`): a timer aimed :data:`STRICT_SPIN` early still woke
        up to 0.5 ms after the slot, so ``rate=100`` (burst 1) ran at 95 % of its rate, and
        ``rate=105`` at 90 %. A timeout that is already whole, and waits as long as it says, is
        not rounded: the timer wakes within the kernel's slack of its aim.
        """
        if not (self.whole_ms and self.strict) or slot - now > _WHOLE_MS_MOST:
            return slot - self.spin  # (also a slot at infinity: only a wake-up ends that wait)
        k = math.floor((slot - now - _WHOLE_MS_LEAD) * 1000.0)
        while k > 0 and _epoll_ms(k) > k:
            k -= 1
        return now + k / 1000.0 if k > 0 else slot - self.spin

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
