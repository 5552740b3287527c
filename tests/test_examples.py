"""The examples/ files run, print what the seed README promises, and take the time limits imply.

The examples are the original README's code, which calls ``asyncio.run(main())`` at module level,
so these tests are asyncio-only by nature (plain sync tests, not parametrized by ``anyio_backend``):
each runs an example file with ``runpy`` under an ``asyncio.run`` patched to use a looptime
virtual-time loop whose clock starts at 0, so the elapsed virtual time is exact and a 3-minute
example takes milliseconds. One test runs the Quick Start file on trio, with ``asyncio.run``
patched to ``trio.run``, to show that the same user code works there.
"""

from __future__ import annotations

import asyncio
import random
import re
import runpy
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import looptime
import pytest
from support import HAS_TRIO

if TYPE_CHECKING:
    from collections.abc import Coroutine

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SEED_README = ROOT.parent / "shared" / "seed" / "000_693b2218ab2683d6.txt"

#: Real seconds after which an example counts as stalled. On virtual time each takes milliseconds,
#: but a livelock stops virtual time, so only a real-time watchdog can end it with a clear failure.
STALL_AFTER = 10.0


class VirtualRun:
    """A stand-in for ``asyncio.run`` on a fresh looptime loop; records the virtual time taken."""

    def __init__(self) -> None:
        self.elapsed: float | None = None

    def __call__(self, coro: Coroutine[Any, Any, Any]) -> Any:
        # A 1 ns tick, as in conftest.py: sums of sleeps stay exact (looptime counts integer ticks).
        loop = looptime.new_event_loop(resolution=1e-9)
        assert loop.time() == 0.0
        stalled = threading.Event()
        try:
            asyncio.set_event_loop(loop)
            main = loop.create_task(coro)

            def stop() -> None:
                stalled.set()
                main.cancel()

            watchdog = threading.Timer(STALL_AFTER, loop.call_soon_threadsafe, [stop])
            watchdog.start()
            try:
                result = loop.run_until_complete(main)
            except asyncio.CancelledError:
                if not stalled.is_set():
                    raise
            finally:
                watchdog.cancel()
            self.elapsed = loop.time()
            # What asyncio.run() does on the way out: nothing may be left running.
            pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            assert not stalled.is_set(), (
                f"the example stalled: virtual time stuck at {self.elapsed!r} "
                f"for {STALL_AFTER:g} real seconds"
            )
            assert pending == [], f"the example left tasks running: {pending}"
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            return result
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def run_example(name: str, monkeypatch: pytest.MonkeyPatch) -> float:
    """Run examples/<name> as ``python examples/<name>`` would, on virtual time; return its time."""
    runner = VirtualRun()
    monkeypatch.setattr(asyncio, "run", runner)
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    assert runner.elapsed is not None, "the example never called asyncio.run()"
    return runner.elapsed


# -- the Quick Start -------------------------------------------------------------------------------


def test_quickstart_on_asyncio(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """asyncio: the Quick Start prints the job's result, at once (no sleep, rate 100/s unused)."""
    elapsed = run_example("quickstart.py", monkeypatch)
    assert capsys.readouterr().out == "Data from https://example.com\n"
    assert elapsed == 0.0


@pytest.mark.skipif(not HAS_TRIO, reason="trio is not installed")
def test_quickstart_on_trio(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """trio: the same Quick Start file, with asyncio.run swapped for trio.run, prints the result."""
    import trio
    import trio.testing

    clock = trio.testing.MockClock(autojump_threshold=0)

    async def await_it(coro: Coroutine[Any, Any, Any]) -> Any:
        return await coro

    def trio_run(coro: Coroutine[Any, Any, Any]) -> Any:
        return trio.run(await_it, coro, clock=clock)

    monkeypatch.setattr(asyncio, "run", trio_run)
    runpy.run_path(str(EXAMPLES / "quickstart.py"), run_name="__main__")
    assert capsys.readouterr().out == "Data from https://example.com\n"
    assert clock.current_time() == 0.0


# -- the five seed examples (asyncio only: they call asyncio.run and asyncio.sleep) ----------------


def test_seed_1_rate_high_on_asyncio(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """asyncio: 1000 jobs at rate=100 complete; the last starts at 9.99 s and ends 0.01 s later."""
    elapsed = run_example("seed_1_rate_high.py", monkeypatch)
    assert capsys.readouterr().out == "Completed 1000 tasks\n"
    assert elapsed == pytest.approx(999 / 100 + 0.01, abs=1e-6)


def test_seed_2_rate_low_on_asyncio(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """asyncio: 10 jobs at rate=0.05 start 20 s apart: 9 intervals of 20 s plus the last 0.1 s."""
    elapsed = run_example("seed_2_rate_low.py", monkeypatch)
    assert capsys.readouterr().out == "All statuses checked: 10 items\n"
    assert elapsed == pytest.approx(9 * 20 + 0.1, abs=1e-6)


def test_seed_3_size_on_asyncio(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """asyncio: 50 jobs of 0.5 s with size=5 run in 10 waves: 5.0 s, neither more nor less."""
    elapsed = run_example("seed_3_size.py", monkeypatch)
    assert capsys.readouterr().out == "Processed 50 files\n"
    assert elapsed == pytest.approx(50 / 5 * 0.5, abs=1e-6)


def test_seed_4_size_and_rate_on_asyncio(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """asyncio: 100 jobs of 0.2 s, size=5, rate=10: the rate rules, last start 9.9 s, end 10.1 s."""
    elapsed = run_example("seed_4_size_and_rate.py", monkeypatch)
    assert capsys.readouterr().out == "Scraped 100 pages successfully\n"
    assert elapsed == pytest.approx(99 / 10 + 0.2, abs=1e-6)


# Seeds of the global `random` module that the example (and the default backoff's jitter) draws
# from, found by trying seeds in order; each outcome is checked below, so a wrong seed fails loudly.
SEED_FIRST_TRY = 0  # the first attempt succeeds
SEED_ONE_RETRY = 1  # the first attempt fails with ConnectionError, the second succeeds
SEED_LAST_TRY = 8  # the first 3 attempts fail, the 4th and last (1 + retries=3) succeeds
SEED_ALL_FAIL = 45  # all 4 attempts fail


@pytest.mark.parametrize(
    ("seed", "output", "low", "high"),
    [
        # The attempt sleeps 0.1 s and succeeds.
        (SEED_FIRST_TRY, "Success: Data from /data\n", 0.1, 0.1),
        # One default backoff (2-3 s before retry 1), then the 0.1 s attempt.
        (SEED_ONE_RETRY, "Success: Data from /data\n", 2 + 0.1, 3 + 0.1),
        # Three backoffs (2-3 s, 4-5 s, 8-9 s), then the 0.1 s attempt.
        (SEED_LAST_TRY, "Success: Data from /data\n", 2 + 4 + 8 + 0.1, 3 + 5 + 9 + 0.1),
        # Three backoffs; failing attempts raise before sleeping.
        (SEED_ALL_FAIL, "Failed after retries: Network error\n", 2 + 4 + 8, 3 + 5 + 9),
    ],
    ids=["first-try", "one-retry", "last-try", "all-fail"],
)
def test_seed_5_retries_on_asyncio(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    seed: int,
    output: str,
    low: float,
    high: float,
) -> None:
    """asyncio: the retry example, made deterministic by seeding random, prints its outcome."""
    state = random.getstate()
    try:
        random.seed(seed)
        elapsed = run_example("seed_5_retries.py", monkeypatch)
    finally:
        random.setstate(state)
    assert capsys.readouterr().out == output
    assert low - 1e-6 <= elapsed <= high + 1e-6


# -- the examples are the seed's code --------------------------------------------------------------

EXAMPLE_FILES = [
    ("quickstart.py", "## Quick Start"),
    ("seed_1_rate_high.py", "### 1. Rate-Limited Pool (High Throughput)"),
    ("seed_2_rate_low.py", "### 2. Rate-Limited Pool (Low Throughput)"),
    ("seed_3_size.py", "### 3. Worker-Limited Pool"),
    ("seed_4_size_and_rate.py", "### 4. Combined Rate and Worker Limiting"),
    ("seed_5_retries.py", "### 5. Advanced: Retries and Timeouts"),
]


def code_lines(source: str) -> list[str]:
    """Compare-ready lines: no blank lines, trailing spaces or trailing commas (ruff's layout)."""
    return [line.rstrip().rstrip(",") for line in source.splitlines() if line.strip()]


@pytest.mark.skipif(not SEED_README.exists(), reason="the seed README (../shared/seed) is absent")
@pytest.mark.parametrize(("name", "heading"), EXAMPLE_FILES, ids=[n for n, _ in EXAMPLE_FILES])
def test_example_is_the_seed_code(name: str, heading: str) -> None:
    """Each example file is its seed README block, but for the marked corrections and layout."""
    readme = SEED_README.read_text(encoding="utf-8")
    section = readme[readme.index(heading) :]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None
    seed = code_lines(match.group(1))
    ours = [
        line
        for line in code_lines((EXAMPLES / name).read_text(encoding="utf-8"))
        # The header comments, the added __future__ import and lines marked as corrections.
        if not line.startswith("#")
        and line != "from __future__ import annotations"
        and "Correction" not in line
    ]
    assert ours == seed
