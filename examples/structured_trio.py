"""Structured concurrency on trio: a pool in a nursery-style block, an endless input.

Run: python examples/structured_trio.py   (needs: pip install "werkpool[trio]")
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from werkpool import WorkerPool

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


async def sensor_readings() -> AsyncIterator[int]:
    """An endless source: map reads it lazily, so memory stays bounded."""
    reading = 0
    while True:
        await trio.sleep(0.01)
        yield reading
        reading += 1


async def calibrate(reading: int) -> float:
    await trio.sleep(0.1)
    return reading * 1.5


async def main() -> None:
    async with WorkerPool(size=3, rate=50) as pool:
        total = 0.0
        async with pool.map(calibrate, sensor_readings()) as results:
            async for value in results:
                total += value
                if value >= 30:
                    break  # leaving the `async with` cancels the map's unfinished jobs
        print(f"sum of calibrated readings: {total}")
        print("one more:", await pool.call(calibrate, 100))
        print(pool)


if __name__ == "__main__":
    trio.run(main)
