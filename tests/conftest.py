"""Shared fixtures: every async test runs on asyncio and trio, under virtual time."""

from __future__ import annotations

import gc
import importlib.metadata
import weakref
from typing import TYPE_CHECKING, Any

import looptime
import pytest
from support import BACKENDS

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Iterator
    from pathlib import Path

    from redis_server import RedisServer

# Every virtual-time asyncio loop, so no_asyncio_noise can reach it after the test.
_LOOPS: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()

# Substrings of asyncio log records that mean a task or future was leaked or dropped.
ASYNCIO_NOISE = (
    "exception was never retrieved",
    "Task was destroyed but it is pending",
    "was never awaited",
)


@pytest.fixture(params=BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """Run on each backend with a virtual clock that jumps straight to the next deadline.

    Tests marked ``@pytest.mark.realclock`` run on the real clock instead.

    The clock is built here, in the fixture body, so that every test gets a fresh one that
    starts at 0; a clock object created in ``params`` would be shared by all tests.
    """
    name: str = request.param
    if request.node.get_closest_marker("realclock") is not None:
        return name, {}
    if name == "trio":
        import trio.testing  # optional dependency: import only when selected

        return name, {"clock": trio.testing.MockClock(autojump_threshold=0)}
    return name, {"loop_factory": _new_looptime_loop}


def _backport_looptime_issue_35() -> None:
    """Give looptime 0.7 (the last release for Python 3.10) the fix of looptime 0.9.

    looptime moves its integer clock by ``round(timeout / tick)``; a timer less than half a tick
    away moves it by 0 ticks while asyncio keeps finding the timer not quite due, so a deadline
    that is not a whole number of ticks (a backoff of 2.123456789123 s, say) never arrives and
    the loop spins (looptime issue #35). 0.9 adds one tick to such sub-tick waits; so do we.
    """
    from looptime._internal.loops import LoopTimeEventLoop

    if not importlib.metadata.version("looptime").startswith("0.7"):
        return
    original = LoopTimeEventLoop._LoopTimeEventLoop__sync  # type: ignore[attr-defined]

    def sync(
        self: Any, timeout: float | None, step: int | None = None, end: int | None = None
    ) -> tuple[float | None, int, bool]:
        new_timeout, real_step, overtime = original(self, timeout, step, end)
        tick = self._LoopTimeEventLoop__int2time(1)
        if not overtime and real_step is not None and timeout is not None and 0 < timeout < tick:
            real_step += 1
        return new_timeout, real_step, overtime

    LoopTimeEventLoop._LoopTimeEventLoop__sync = sync  # type: ignore[attr-defined]


_backport_looptime_issue_35()


def _new_looptime_loop() -> asyncio.AbstractEventLoop:
    """Make an asyncio loop whose clock starts at 0.0 and, when idle, jumps to the next timer.

    looptime counts time in integer ticks, so sums of sleeps stay exact (trio's MockClock
    adds floats: ten ``sleep(0.1)`` there give 0.9999999999999999).
    """
    # A tick of 1 ns (looptime's default is 1 µs) equals asyncio's own clock resolution, below
    # which asyncio treats a timer as due. With coarser ticks, looptime 0.7 (the last release
    # for Python 3.10) rounds a sleep shorter than one tick to zero and spins forever
    # (looptime issue #35, fixed in 0.9).
    loop = looptime.new_event_loop(resolution=1e-9)
    _LOOPS.add(loop)
    return loop


def pytest_collection_finish(session: pytest.Session) -> None:
    """Move everything that exists once the tests are collected (modules, Hypothesis, the
    collected items) out of the cyclic collector's reach, for the rest of the session.

    Every test ends with a full collection (:func:`no_asyncio_noise`), and CPython's automatic
    ones run during it too: without this each walked the whole heap of the session, about 40 ms
    a test here, twice the run time of the suite. Frozen objects are never collected and never
    freed, so the collection before the freeze frees what is garbage already; what a test
    creates is not frozen, so its leaks and cycles are found as before.
    """
    # Hypothesis imported before the freeze: on import it runs trio's plugin, whose
    # register_random() checks with gc.get_referrers(), blind to frozen objects, that trio's
    # Random is referenced, and warns (an error here) when it sees no referrer.
    import hypothesis  # noqa: F401

    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def no_asyncio_noise(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fail a test that leaks an unretrieved exception, a pending task or an unawaited call."""
    yield
    # anyio's test runner routes loop errors into the test, but once its loop is closed it
    # swallows them; restore the default handler (which logs to "asyncio"), then collect, so
    # futures and tasks dropped in a reference cycle complain here and not silently later.
    for loop in list(_LOOPS):
        loop.set_exception_handler(None)
    gc.collect()
    noise = [
        record.getMessage()
        for when in ("setup", "call", "teardown")
        for record in caplog.get_records(when)
        if record.name == "asyncio" and any(text in record.getMessage() for text in ASYNCIO_NOISE)
    ]
    if noise:
        pytest.fail("asyncio reported:\n" + "\n".join(noise), pytrace=False)


@pytest.fixture
def no_gc() -> Iterator[None]:
    """Only reference counting frees objects during the test (the cyclic GC is off)."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


# -- Redis (werkpool.redis): a private redis-server, see tests/redis_server.py ----------------


def _serve_redis(directory: Path) -> Iterator[RedisServer]:
    """A redis-server kept in *directory*, stopped when the fixture that yields it ends."""
    from redis_server import RedisServer

    server = RedisServer(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session's Redis tests (those that do not stop it)."""
    yield from _serve_redis(tmp_path_factory.mktemp("redis"))


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own, which it may kill, restart or pause."""
    yield from _serve_redis(tmp_path)


@pytest.fixture
def redis_prefix(request: pytest.FixtureRequest) -> str:
    """A key prefix of the test's own, so tests sharing the session's server never meet."""
    import uuid

    return f"t{uuid.uuid4().hex[:12]}"
