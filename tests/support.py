"""Helpers shared by every test module, in tests/ and tests/contract/ alike.

Imported as ``from support import ...``: pyproject.toml puts tests/ on ``sys.path``.
Nothing here is collected as a test.
"""

from __future__ import annotations

import asyncio
import importlib.util
import math
import random
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import looptime
import pytest
from anyio.lowlevel import checkpoint

import werkpool
from werkpool import Concurrency, Shared
from werkpool._core._limit import Limit
from werkpool._core._remote_limit import Refusal

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Hashable, Iterator, Sequence
    from types import FrameType, ModuleType

    from werkpool import WorkerPool
    from werkpool._core._job import Job

HAS_TRIO = importlib.util.find_spec("trio") is not None

#: The backends every test runs on: the conftest's ``anyio_backend`` fixture for async tests, and
#: a ``backend`` parameter for the sync tests that run an event loop of their own.
BACKENDS = ["asyncio", "trio"] if HAS_TRIO else ["asyncio"]

#: Run a test on asyncio only (asyncio-only features such as ``asyncio.wait_for``): the conftest's
#: ``anyio_backend`` fixture reads this plain string as its parameter.
asyncio_only = pytest.mark.parametrize("anyio_backend", ["asyncio"], indirect=True)
#: Run a test on trio only (the trio-side ``werkpool.Future`` surface).
trio_only = pytest.mark.parametrize("anyio_backend", ["trio"], indirect=True)

#: Task names werkpool gives its internal tasks (workers, host, map feeder, supervisor).
INTERNAL_TASK_MARKERS = ("werkpool", "WorkerPool")


class Boom(Exception):
    """A job's own error."""


def import_example(path: Path) -> ModuleType:
    """Import ``examples/<name>.py`` as a module, without running its ``main()``."""
    spec = importlib.util.spec_from_file_location(f"{path.stem}_example", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def case_id(value: object) -> str | None:
    """pytest ids for parametrized cases: "msg" for expected messages, the default otherwise."""
    if isinstance(value, str) and " " in value:
        return "msg"
    return None


def approx(value: float) -> Any:
    """Equality on virtual time: trio's MockClock adds floats, looptime counts integer ns."""
    return pytest.approx(value, abs=1e-6)


async def echo(value: object) -> object:
    return value


async def sleep_echo(delay: float, value: object) -> object:
    await anyio.sleep(delay)
    return value


async def sleep_echo_1(value: int) -> int:
    """Sleep 1 s, then return *value* (a map's job)."""
    await anyio.sleep(1)
    return value


async def fail_after_sleep(delay: float, message: str = "boom") -> None:
    await anyio.sleep(delay)
    raise Boom(message)


# -- pool accounting -----------------------------------------------------------------------------


def stats_add_up(pool: WorkerPool) -> bool:
    """``submitted == queued + running + backoff + completed + failed + cancelled``."""
    s = pool.statistics()
    return s.submitted == s.queued + s.running + s.backoff + s.completed + s.failed + s.cancelled


def borrowed(pool: WorkerPool) -> int:
    """The places under ``size`` taken now, as the size's snapshot in statistics() counts them
    (0 for a pool without ``size``)."""
    s = pool.statistics()
    if pool.size is None:
        return 0
    size = s.limits[0]
    assert size.kind == "concurrency", size
    assert size.unit is None, size
    assert s.borrowed_tokens == size.in_use, s
    return int(size.in_use)


def assert_consistent(pool: WorkerPool, running: int | None = None) -> None:
    """The counters add up, and the size counts exactly one place per executing attempt."""
    s = pool.statistics()
    assert stats_add_up(pool), s
    if pool.size is not None:
        assert s.running <= pool.size, s
        assert borrowed(pool) == s.running, s
    if running is not None:
        assert s.running == running, (s, running)


def assert_idle(pool: WorkerPool) -> None:
    """No job running or waiting, no slot lent, and the counters add up."""
    s = pool.statistics()
    assert (s.queued, s.running, s.backoff, s.borrowed_tokens) == (0, 0, 0, 0), s
    assert borrowed(pool) == 0
    assert s.submitted == s.completed + s.failed + s.cancelled, s


def internal_tasks() -> list[str]:
    """Names of the running tasks that belong to some werkpool pool."""
    return [
        task.name
        for task in anyio.get_running_tasks()
        if task.name and any(marker in task.name for marker in INTERNAL_TASK_MARKERS)
    ]


# -- a probe: jobs that record what they do ------------------------------------------------------


@dataclass
class Probe:
    """Jobs that record each attempt's start and end, and check ``size`` from the inside."""

    limit: int | None = None
    starts: list[float] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)
    order: list[object] = field(default_factory=list)
    attempts: dict[object, int] = field(default_factory=dict)
    running: int = 0
    peak: int = 0
    violations: list[str] = field(default_factory=list)

    def enter(self, label: object) -> None:
        self.starts.append(anyio.current_time())
        self.order.append(label)
        self.attempts[label] = self.attempts.get(label, 0) + 1
        self.running += 1
        self.peak = max(self.peak, self.running)
        if self.limit is not None and self.running > self.limit:
            self.violations.append(f"{self.running} attempts executing with size={self.limit}")
        assert self.limit is None or self.running <= self.limit, self.violations[-1]

    def leave(self) -> None:
        self.running -= 1
        self.ends.append(anyio.current_time())

    async def job(
        self, label: object, duration: float = 0.0, fail: bool = False, cleanup: float = 0.0
    ) -> object:
        """Sleep *duration*, then return *label* or raise :class:`Boom` (*fail*).

        If cancelled, run *cleanup* seconds of shielded cleanup first: the attempt (and its slot)
        lasts until the cleanup is over.
        """
        self.enter(label)
        try:
            if duration:
                await anyio.sleep(duration)
            else:
                await checkpoint()
            if fail:
                raise Boom(label)
            return label
        except anyio.get_cancelled_exc_class():
            if cleanup:
                with anyio.CancelScope(shield=True):
                    await anyio.sleep(cleanup)
            raise
        finally:
            self.leave()


class Script:
    """Jobs that do, per attempt, what their plan says: return, or raise the error given.

    ``Script(flaky=[Boom("once")])``: the first attempt of ``job("flaky")`` raises, the next
    ones return ``"flaky"``; each attempt takes 1 s.
    """

    def __init__(self, **plans: list[BaseException | None]) -> None:
        self.plans = plans
        self.attempts: dict[str, int] = {}

    async def job(self, label: str) -> str:
        self.attempts[label] = attempt = self.attempts.get(label, 0) + 1
        await anyio.sleep(1)
        plan = self.plans.get(label, [])
        error = plan[attempt - 1] if attempt <= len(plan) else None
        if error is not None:
            raise error
        return label


# -- a stand-in for a limit --------------------------------------------------------------------


class Holders(Limit):
    """A concurrency limit of *total* that remembers which jobs hold it (a test's stand-in for
    the scheduler's size count, to see who holds a place)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.borrowers: set[object] = set()

    def earliest(self, job: Job, now: float) -> float:
        return -math.inf if len(self.borrowers) < self.total else math.inf

    def admit(self, job: Job, at: float) -> None:
        assert job not in self.borrowers
        assert len(self.borrowers) < self.total
        self.borrowers.add(job)

    def refund(self, job: Job) -> None:
        self.borrowers.remove(job)

    def release(self, job: Job) -> None:
        self.borrowers.remove(job)


# -- the rate contract, checked exactly ----------------------------------------------------------


def rate_violation(times: Sequence[float], rate: float, burst: int) -> str | None:
    """Describe the first window that holds more than ``ceil(W * rate) + burst - 1`` starts.

    Exact, not sampled: a half-open window that holds the starts ``i..i+k`` (sorted) has a length
    just over ``t[i+k] - t[i]``, and may then hold at most ``floor((t[i+k] - t[i]) * rate) + burst``
    starts. So the contract is ``t[i+k] - t[i] >= (k + 1 - burst) / rate`` for every ``i`` and
    ``k >= burst``. The same bound, ``burst + floor(W * rate)``, is the checklist's R6 form.
    1 µs of slack absorbs float clocks.
    """
    ordered = sorted(times)
    n = len(ordered)
    for i in range(n):
        for k in range(burst, n - i):
            need = (k + 1 - burst) / rate
            gap = ordered[i + k] - ordered[i]
            if gap < need - 1e-6:
                return (
                    f"{k + 1} starts within {gap:.9f} s (from t={ordered[i]:.9f}); "
                    f"rate={rate}, burst={burst} allows them no closer than {need:.9f} s"
                )
    return None


def max_starts_in(times: Sequence[float], width: float) -> int:
    """The most of *times* in any half-open window of length *width* (exact)."""
    ordered = sorted(times)
    best = 0
    j = 0
    for i, start in enumerate(ordered):
        j = max(j, i)
        while j < len(ordered) and ordered[j] < start + width - 1e-9:
            j += 1
        best = max(best, j - i)
    return best


def r6_bound(width: float, rate: float, burst: int) -> int:
    """The checklist's bound for a window of length *width*: ``burst + floor(width * rate)``."""
    return burst + math.floor(width * rate + 1e-9)


# -- running an event loop of our own, on virtual time -------------------------------------------


def virtual_backend_options(backend: str) -> dict[str, Any]:
    """backend_options for :func:`anyio.run` with a virtual clock that starts at 0."""
    if backend == "trio":
        import trio.testing

        return {"clock": trio.testing.MockClock(autojump_threshold=0)}
    return {"loop_factory": lambda: looptime.new_event_loop(resolution=1e-9)}


def run_virtual(backend: str, fn: Callable[[], Awaitable[Any]], seed: int | None = None) -> Any:
    """Run *fn* in a fresh event loop of *backend* on virtual time.

    On trio, *seed* seeds the scheduler's own random tie-breaking (trio shuffles tasks that
    become runnable together), so a run is replayable; asyncio's ready queue is FIFO already.
    """
    trio_run: Any = None
    saved = None
    if backend == "trio" and seed is not None:
        import trio._core._run as trio_run  # private: trio's tie-breaking RNG

        saved = trio_run._r
        trio_run._r = random.Random(seed)
    try:
        return anyio.run(fn, backend=backend, backend_options=virtual_backend_options(backend))
    finally:
        if saved is not None:
            trio_run._r = saved


def run_on_virtual_time(coro: Any) -> Any:
    """Stand-in for :func:`asyncio.run` (documentation examples call it): a looptime loop, so
    the examples' sleeps take no real time."""
    loop = looptime.new_event_loop(resolution=1e-9)
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def asyncio_tasks() -> set[asyncio.Task[Any]]:
    """The asyncio tasks alive now (empty on trio)."""
    try:
        return asyncio.all_tasks()
    except RuntimeError:
        return set()


# -- counting the package's own work (deterministic, unlike wall time) ---------------------------

_PACKAGE_DIR = str(Path(werkpool.__file__).resolve().parent)


@dataclass
class CallCount:
    """Python calls made into werkpool's modules, and C calls made from them, by name."""

    python: int = 0
    c_calls: dict[str, int] = field(default_factory=dict)


@contextmanager
def count_werkpool_calls() -> Iterator[CallCount]:
    """Count, with :func:`sys.setprofile`, the function calls that execute werkpool's own code.

    A deterministic measure of the work the pool does: it grows with a busy loop or an O(n)
    scan written in Python, and names each C function werkpool calls (``remove``, ``index``...).
    """
    count = CallCount()
    package = _PACKAGE_DIR
    c_calls = count.c_calls

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            if frame.f_code.co_filename.startswith(package):
                count.python += 1
        elif event == "c_call" and frame.f_code.co_filename.startswith(package):
            name = str(getattr(arg, "__qualname__", None) or getattr(arg, "__name__", "?"))
            c_calls[name] = c_calls.get(name, 0) + 1

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        yield count
    finally:
        sys.setprofile(previous)


# -- late wake-ups on virtual time ---------------------------------------------------------------


def jump_clock(seconds: float) -> None:
    """Move the current virtual clock forward by *seconds* without running anything.

    What a busy or late event loop does to a waiting task: its timer fires, but it runs
    *seconds* after it was due. trio's ``MockClock.jump`` does it; looptime has no public call for
    it, so its integer clock is moved directly (tests only; conftest's loops tick in ns).
    """
    if sys.modules.get("trio") is not None:
        import trio

        try:
            clock = trio.lowlevel.current_clock()
        except RuntimeError:
            pass
        else:
            clock.jump(seconds)  # type: ignore[attr-defined]
            return
    loop = asyncio.get_running_loop()
    assert isinstance(loop, looptime.LoopTimeEventLoop), "needs the virtual-time test loop"
    loop._LoopTimeEventLoop__now += loop._LoopTimeEventLoop__time2int(seconds)  # type: ignore[attr-defined]


# -- submitting through every entry point ---------------------------------------------------------


async def submit_by(pool: WorkerPool, method: str, task: Any, *args: Any, **options: Any) -> Any:
    """Submit through *method* and return what it gives (for map, its first result, so that the
    job actually runs)."""
    if method == "run":
        return pool.run(task, *args, **options)
    if method == "start_soon":
        return pool.start_soon(task, *args, **options)
    if method == "submit":
        return await pool.submit(task, *args, **options)
    if method == "call":
        return await pool.call(task, *args, **options)
    results = pool.map(task, args or [None], **options)
    try:
        return await results.__anext__()
    finally:
        await results.aclose()


# -- a fake remote limit (the shape Redis limits will take) --------------------------------------


class FakeRemoteLimit:
    """A remote concurrency limit with a latency and random refusals: at most *capacity* attempts
    hold its credit at once, across everything that shares it.

    It checks the remote-limit protocol from the other side: every grant is released exactly
    once (``held`` returns to 0, no double release), a cancelled request gives back what it took,
    and the pool never holds more than *capacity*. *start_delay* grants a start that far in the
    future (a reservation-style rate limit answers so).
    """

    #: One request at a time: the random refusals would reorder pipelined ones.
    pipeline = 1

    def __init__(
        self,
        capacity: int = 1_000_000,
        *,
        latency: float = 0.0,
        refuse: float = 0.0,
        retry_after: float = 0.05,
        start_delay: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.capacity = capacity
        self.latency = latency
        self.refuse = refuse
        self.retry_after = retry_after
        self.start_delay = start_delay
        self.rng = random.Random(seed)
        self.holders: set[int] = set()  # id() of the jobs holding credit
        self.peak = 0
        self.grants = 0
        self.refusals = 0
        self.releases = 0
        self.requests = 0
        self.errors: list[str] = []
        #: The jobs (by id()) whose request is out and not yet answered, or was interrupted and
        #: is being released: what the pool counts as reserving, seen from this side.
        self.asking: set[int] = set()
        self._interrupted: set[int] = set()  # of those, the interrupted ones

    @property
    def held(self) -> int:
        return len(self.holders)

    def holds(self, job: Any) -> bool:
        # Always released: also after a request that was cancelled midway (the protocol's
        # "when unsure, True"), which this fake checks gives back what it took.
        return True

    async def acquire(self, job: Any) -> float | Refusal:
        self.requests += 1
        self.asking.add(id(job))
        if self.latency:
            try:
                await anyio.sleep(self.latency)  # the request is out: the answer comes later
            except BaseException:
                self._interrupted.add(id(job))  # it asks until the release that follows ends
                raise
        self.asking.discard(id(job))
        now = anyio.current_time()
        if self.rng.random() < self.refuse or len(self.holders) >= self.capacity:
            self.refusals += 1
            return Refusal(now + self.retry_after)
        if id(job) in self.holders:
            self.errors.append(f"{job!r} acquired twice without a release")
        self.holders.add(id(job))
        self.peak = max(self.peak, len(self.holders))
        self.grants += 1
        return now + self.start_delay

    async def release(self, job: Any) -> None:
        # Called for a granted attempt, and for a request cancelled midway (which may have taken
        # nothing): a store's release is idempotent, so is this one.
        interrupted = id(job) in self._interrupted  # (not a release of an earlier attempt's)
        self._interrupted.discard(id(job))
        if id(job) in self.holders:
            self.holders.discard(id(job))
            self.releases += 1
        if self.latency:
            await anyio.sleep(self.latency / 2)
        if interrupted:
            self.asking.discard(id(job))


class _GivenStore:
    """A store (werkpool's ``Store`` protocol) that binds to a remote limit given in advance:
    a pool binds it through its shared limits, as it binds a ``RedisStore``."""

    def __init__(self, limit: Any) -> None:
        self.limit = limit

    def bind(self, limits: Any, per_key: Any, wake: Callable[[Hashable | None], None]) -> Any:
        return self.limit

    def __repr__(self) -> str:
        return f"<store of {self.limit!r}>"


def remote_limits(*limits: Any) -> list[Shared]:
    """``limits=`` values that make a pool ask each of *limits* (remote limits, such as
    :class:`FakeRemoteLimit`) for every attempt: each through a store of its own, bound as the
    pool binds a ``RedisStore``. Pass them to ``set_limits()`` too (shared limits stay)."""
    return [
        Concurrency(1_000_000).shared(_GivenStore(limit), f"remote{i}")
        for i, limit in enumerate(limits)
    ]
