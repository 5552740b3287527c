# Example 2 of the werkpool 0.2 README, "Rate-Limited Pool (Low Throughput)", unchanged
# except:
#
# Correction 1 (import lines): `from __future__ import annotations` added; the
#   repository's ruff configuration requires it first in every module. The seed's own
#   imports are unchanged.
# Correction 2 (layout only): `ruff format` removed the trailing spaces of the seed's
#   blank lines and put two blank lines between top-level definitions.
#
# Run it with werkpool installed:
#     python examples/seed_2_rate_low.py (3 minutes: 10 jobs, one per 20 s)
from __future__ import annotations

import asyncio

from werkpool import WorkerPool


async def check_status(resource_id):
    # Expensive or rate-limited operation
    await asyncio.sleep(0.1)
    return f"Status of {resource_id}"


async def main():
    pool = WorkerPool(rate=0.05)  # 0.05 per second = 1 request per 20 seconds

    futures = []
    for i in range(10):
        future = pool.run(lambda i=i: check_status(i))
        futures.append(future)

    results = await asyncio.gather(*futures)
    print(f"All statuses checked: {len(results)} items")

    await pool.shutdown()


asyncio.run(main())
