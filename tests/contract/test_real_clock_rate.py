"""The rate contract on the real monotonic clock, as a server sees it, on every supported loop.

Issue #21, items 1 and 2:

* Item 1: uvloop's ``loop.time()`` is libuv's ``uv_now()``, whole milliseconds cached at the
  start of each loop iteration. A pool that dated and spaced its starts on it let two starts come
  up to 0.9 ms closer than ``1/rate`` on the real clock (12 of 99 gaps short at 100/s). The pool
  now reads the precise monotonic clock of the same origin on such a loop.
* Item 2: the pool dates a start the instant before the job's first line runs and keeps its dated
  starts at least ``1/rate`` apart, exactly; a job that reads the clock itself reads it a little
  later (entering the coroutine; or much later if the OS preempts the process or the GC runs in
  between), so the gaps it sees may be shorter by that difference. The README states this; the
  tests hold the pool's dating to the exact bound and the jobs' own readings to
  :data:`READ_TOLERANCE`.

The jobs read :func:`time.perf_counter` (``CLOCK_MONOTONIC`` on Linux: the clock a server's
timestamps follow) on their first line; the pool's dating is read by wrapping
:meth:`Scheduler.restamp`. Real clock, so ``realclock``; asyncio, trio, and uvloop where it can
be installed.
"""

from __future__ import annotations

import gc
import itertools
import math
import sys
import time
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from support import BACKENDS

from werkpool import Rate, WorkerPool
from werkpool._core._scheduler import Scheduler

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.realclock

#: How much shorter than the pool's spacing a gap between two jobs' own readings of the clock
#: may be in these tests: the time between the pool dating a start and the job's first line
#: reading the clock varies by microseconds, by more when the machine is busy (the tests run
#: beside others on 2 cores). Before the fix, uvloop's gaps were up to 0.9 ms short.
READ_TOLERANCE = 0.0003

#: Float rounding of the dated times (seconds since boot, around 1e5 s: 1e-11 s resolution).
EPS = 1e-9

LOOPS = [*BACKENDS, "uvloop"]


@pytest.fixture(params=LOOPS)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """asyncio, trio and uvloop, on the real clock (skipped where uvloop cannot be imported)."""
    name: str = request.param
    if name == "uvloop":
        uvloop = pytest.importorskip("uvloop", reason="uvloop is not installed for this Python")
        return "asyncio", {"loop_factory": uvloop.new_event_loop}
    return name, {}


@pytest.fixture(autouse=True)
def _no_gc_pauses() -> Iterator[None]:
    """No collection of the cyclic GC while the jobs read the clock: a full collection of the
    test process's heap takes milliseconds, and landing between the pool's dating of a start
    and the job's read of the clock it shows as a short gap that the pool did not make."""
    gc.collect()
    gc.disable()
    yield
    gc.enable()


class Record:
    """The pool's dating of each start, and each job's own reading of the real clock."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.dated: list[float] = []
        self.read: list[float] = []
        self.loop_read: list[float] = []
        restamp = Scheduler.restamp
        dated = self.dated

        def recording(sched: Scheduler, job: Any, at: float) -> None:
            dated.append(at)
            restamp(sched, job, at)

        monkeypatch.setattr(Scheduler, "restamp", recording)

    async def job(self) -> None:
        """Read the clocks on its first line, as a request would leave."""
        self.read.append(time.perf_counter())
        self.loop_read.append(anyio.current_time())


def _gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


def _short(times: list[float], bound: float) -> list[float]:
    return [round(g * 1e3, 4) for g in _gaps(times) if g < bound]


def _check(record: Record, interval: float, *, same_clock: bool) -> None:
    """The pool's dated starts are *interval* apart or more, exactly; it dates them on the real
    clock (where the test can compare the two: asyncio and uvloop), never after the job began;
    and the jobs' own readings of the real clock keep *interval* too, less READ_TOLERANCE, but
    for the odd gap that the OS made (the process preempted between the dating and the read:
    at most 2 %)."""
    assert _short(record.dated, interval - EPS) == [], "dated gaps (ms) short"
    if same_clock:  # asyncio and uvloop: the pool's clock is CLOCK_MONOTONIC, as perf_counter
        latency = sorted(r - d for d, r in zip(record.dated, record.read, strict=True))
        assert latency[0] >= -EPS, "a start dated after its job's code began"
        # uvloop's own clock trails the real one by 0.5 ms on average: not the pool's clock.
        median = latency[len(latency) // 2]
        assert median < 0.0001, f"median dating-to-read {median * 1e3:.3f} ms"
    short = _short(record.read, interval - READ_TOLERANCE)
    assert len(short) <= len(record.read) // 50, f"real-clock gaps (ms) short: {short}"


def _same_clock(anyio_backend: tuple[str, dict[str, Any]]) -> bool:
    return anyio_backend[0] == "asyncio" and sys.platform == "linux"


@pytest.mark.parametrize("rate", [100, 500])
async def test_no_two_starts_closer_than_one_over_rate_on_the_real_clock(
    rate: int, monkeypatch: pytest.MonkeyPatch, anyio_backend: tuple[str, dict[str, Any]]
) -> None:
    """``WorkerPool(rate=R)``, R/2 jobs: the real-clock gaps between starts are all ``1/R`` or
    more. On uvloop, before the fix, 12 % of the gaps at 100/s were short, down to 9.33 ms."""
    record = Record(monkeypatch)
    async with WorkerPool(rate=rate) as pool:
        for _ in range(rate // 2):
            pool.run(record.job)
    assert len(record.dated) == rate // 2
    _check(record, 1 / rate, same_clock=_same_clock(anyio_backend))


async def test_a_margin_spaces_starts_by_the_interval_plus_the_margin(
    monkeypatch: pytest.MonkeyPatch, anyio_backend: tuple[str, dict[str, Any]]
) -> None:
    """``Rate(200, margin=0.001)``: on the real clock every gap is 6 ms or more."""
    record = Record(monkeypatch)
    async with WorkerPool(limits=[Rate(200, margin=0.001)]) as pool:
        for _ in range(60):
            pool.run(record.job)
    _check(record, 0.006, same_clock=_same_clock(anyio_backend))


async def test_the_contract_holds_on_a_busy_loop(
    monkeypatch: pytest.MonkeyPatch, anyio_backend: tuple[str, dict[str, Any]]
) -> None:
    """``WorkerPool(rate=200)``, 200 jobs, and a task that blocks the loop for 1 ms every 7 ms
    (item 2's setup): the dated starts are 5 ms apart or more, and so are the jobs' readings of
    the real clock and of :func:`anyio.current_time` (but on uvloop, whose loop clock counts
    whole milliseconds), less READ_TOLERANCE."""
    record = Record(monkeypatch)

    async def hog(stop: anyio.Event) -> None:
        while not stop.is_set():
            until = time.perf_counter() + 0.001
            while time.perf_counter() < until:  # blocks the loop: no await
                pass
            await anyio.sleep(0.006)

    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(hog, stop)
        async with WorkerPool(rate=200) as pool:
            for _ in range(200):
                pool.run(record.job)
        stop.set()
    _check(record, 0.005, same_clock=_same_clock(anyio_backend))
    if "loop_factory" not in anyio_backend[1]:  # not uvloop
        # As for the real clock (_check): the odd gap the OS made, the process preempted
        # between the dating and the job's read (this failed once in a while on trio beside
        # other tests on 2 cores; the dated starts above are checked exactly).
        short = _short(record.loop_read, 0.005 - READ_TOLERANCE)
        assert len(short) <= len(record.loop_read) // 50, f"loop-clock gaps (ms) short: {short}"


async def test_the_workers_leave_the_timer_early_only_where_a_late_start_costs_rate(
    anyio_backend: tuple[str, dict[str, Any]],
) -> None:
    """The binding's spin: SPIN on asyncio's own loop and on trio (an identity test of
    ``loop.time`` once took every asyncio loop for a coarse one: 1.25 ms), a millisecond more on
    uvloop (its clock's lag) until paced; once paced, STRICT_SPIN for a rate with burst 1 (it
    covers the lag), and SPIN for rates with a burst (it makes up the lag's lateness)."""
    from werkpool._runtime._binding import SPIN, STRICT_SPIN, LoopBinding

    binding = LoopBinding()
    lag = 0.001 if anyio_backend[1].get("loop_factory") is not None else 0.0
    assert binding.spin == pytest.approx(SPIN + lag)
    binding.pace(True)
    assert binding.spin == pytest.approx(STRICT_SPIN)
    binding.pace(False)
    assert binding.spin == pytest.approx(SPIN)


@pytest.mark.parametrize(("burst", "most"), [(2, 20), (1, None)])
async def test_a_burst_lets_the_workers_wait_on_timers_not_yields(
    burst: int,
    most: int | None,
    monkeypatch: pytest.MonkeyPatch,
    anyio_backend: tuple[str, dict[str, Any]],
) -> None:
    """``WorkerPool(rate=500, burst=2)``, 300 jobs: a late start costs no rate (the burst makes
    it up), so the workers wait on timers and yield to the loop only near a slot: at most 20
    yields per start on average (before, asyncio's workers yielded the whole 2 ms between slots:
    hundreds). With burst=1 they do yield (a late start would lose rate): the contract holds."""
    from werkpool._runtime import _workers

    yields = 0
    checkpoint = _workers.checkpoint

    async def counted() -> None:
        nonlocal yields
        yields += 1
        await checkpoint()

    monkeypatch.setattr(_workers, "checkpoint", counted)
    record = Record(monkeypatch)
    async with WorkerPool(size=4, rate=500, burst=burst) as pool:
        for _ in range(300):
            pool.run(record.job)
    assert len(record.dated) == 300
    if most is not None:
        assert yields / 300 <= most, f"{yields / 300:.1f} yields per start"
    else:
        assert _short(record.dated, 1 / 500 - EPS) == []


async def test_a_strict_timer_on_asyncios_epoll_is_aimed_at_a_whole_millisecond_epoll_keeps(
    anyio_backend: tuple[str, dict[str, Any]],
) -> None:
    """asyncio's EpollSelector rounds a timer's timeout up to whole milliseconds, and 9 ms (as
    13, 18, 26, ...) up to 10: ``9 * 1e-3`` is 0.009000000000000001, which ``epoll.poll()``
    rounds up to 9.000001 ms, then 10. With a strict rate the binding aims its timers at a
    whole number of milliseconds that epoll waits as said, at least 0.75 ms before
    the slot; otherwise its spin before it, as before (and so on trio and uvloop, whose timers
    are not epoll's milliseconds)."""
    from werkpool._runtime._binding import LoopBinding, _epoll_ms

    assert [k for k in range(1, 40) if _epoll_ms(k) > k] == [9, 13, 18, 26, 36]
    assert _epoll_ms(8) == 8
    binding = LoopBinding()
    plain_asyncio = anyio_backend == ("asyncio", {})
    assert binding.whole_ms is (plain_asyncio and sys.platform == "linux")
    binding.pace(True)
    if not binding.whole_ms:
        assert binding.aim(10.0100, 10.0) == pytest.approx(10.0100 - binding.spin)
        binding.whole_ms = True  # the arithmetic, as on asyncio's loop on Linux
    # 10 ms to the slot: 9.25 ms floors to 9, which epoll waits as 10: 8.
    assert binding.aim(10.0100, 10.0) == pytest.approx(10.008)
    # 14.9 ms to the slot: 14 ms, which epoll keeps.
    assert binding.aim(10.0149, 10.0) == pytest.approx(10.014)
    assert binding.aim(math.inf, 10.0) == math.inf  # no slot: only a wake-up ends the wait
    binding.pace(False)  # a burst makes up a late start: SPIN early, as on every loop
    assert binding.aim(10.0100, 10.0) == pytest.approx(10.0100 - binding.spin)


async def test_a_strict_rate_of_100_keeps_its_slots_on_every_loop(
    monkeypatch: pytest.MonkeyPatch, anyio_backend: tuple[str, dict[str, Any]]
) -> None:
    """``WorkerPool(rate=100)`` (burst 1): 120 starts, 10 ms apart. The workers' timers aimed
    1.25 ms early on asyncio woke up to 1.7 ms late (epoll's rounding, see the test above): the
    starts came 10.5 ms apart (95 % of the rate). They come within a fifth of a millisecond of
    their slots now: the median gap is under 10.2 ms."""
    record = Record(monkeypatch)
    async with WorkerPool(size=4, rate=100) as pool:
        for _ in range(120):
            pool.run(record.job)
    gaps = sorted(_gaps(record.dated))
    assert gaps[0] >= 0.01 - EPS
    median = gaps[len(gaps) // 2]
    assert median < 0.0102, f"median gap {median * 1e3:.3f} ms"
