"""Wake-ups with keys: a key whose limits free up is started on time, whatever else waits.

The pool keeps one worker waiting for the clock (the sleeper). With per-key limits a key may
become due earlier than what the sleeper waits for, at a moment only another worker sees (one of
the key's attempts ended and its rate now says "in 0.5 s"). These tests pin that such a key is
never held until the sleeper's later deadline. Both backends, virtual time.
"""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from werkpool import Concurrency, Rate, WorkerPool

pytestmark = pytest.mark.anyio


async def test_a_key_freed_by_a_release_starts_at_its_rate_slot_not_at_the_sleepers_deadline() -> (
    None
):
    starts: list[tuple[str, float]] = []
    t0 = anyio.current_time()

    async def job(tag: str, seconds: float) -> None:
        starts.append((tag, anyio.current_time() - t0))
        await anyio.sleep(seconds)

    async with WorkerPool(per_key=[Rate(1), Concurrency(1)]) as pool:
        pool.pause_for(10, key="S")  # a worker waits for the clock until 10 for key S
        pool.run(job, "X1", 0.5, key="X")
        pool.run(job, "X2", 0, key="X")  # waits for X1 to end (0.5), then for X's slot (1.0)
        pool.run(job, "S", 0, key="S")
    assert starts == [("X1", 0.0), ("X2", pytest.approx(1.0)), ("S", pytest.approx(10.0))]


async def test_a_pushback_on_one_key_leaves_the_others_running_at_their_rate() -> None:
    """Key A is pushed back for 30 s; key B's jobs go on at B's rate meanwhile."""
    from werkpool import RetryAfter

    starts: list[tuple[str, float]] = []
    t0 = anyio.current_time()
    refused = False

    async def job(tag: str) -> None:
        nonlocal refused
        starts.append((tag, anyio.current_time() - t0))
        if tag == "A0" and not refused:
            refused = True
            raise RetryAfter(30)

    async with WorkerPool(per_key=[Rate(2)]) as pool:
        for i in range(3):
            pool.run(job, f"A{i}", key="A", retries=1)
        for i in range(4):
            pool.run(job, f"B{i}", key="B")
    times = {tag: t for tag, t in starts if tag.startswith("B")}
    assert times == {f"B{i}": pytest.approx(i * 0.5) for i in range(4)}
    a_times = [t for tag, t in starts if tag.startswith("A")]
    # A0 at 0, refused: A0 again, A1, A2 once the 30 s are over, at A's rate, no burst.
    assert a_times == [0.0, pytest.approx(30.0), pytest.approx(30.5), pytest.approx(31.0)]


async def test_set_limits_gives_every_new_window_the_starts_it_must_count() -> None:
    """Bug I of the program test: a window kept across ``set_limits`` next to a new window of
    the same unit and period must not start empty (each new window copies the old starts)."""
    from werkpool import Window

    starts: list[float] = []
    t0 = anyio.current_time()

    async def job() -> None:
        starts.append(anyio.current_time() - t0)

    async with WorkerPool(limits=[Window(1, per=0.5)]) as pool:
        for _ in range(3):
            pool.run(job)
        await anyio.lowlevel.checkpoint()
        await anyio.lowlevel.checkpoint()
        pool.set_limits([Window(2, per=0.5), Window(1, per=0.5)])
    assert starts == [0.0, pytest.approx(0.5), pytest.approx(1.0)]
