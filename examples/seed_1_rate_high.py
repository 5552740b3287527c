# Example 1 of the werkpool 0.2 README, "Rate-Limited Pool (High Throughput)", unchanged
# except:
#
# Correction 1 (import lines): `from __future__ import annotations` added; the
#   repository's ruff configuration requires it first in every module. The seed's own
#   imports are unchanged.
# Correction 2 (layout only): `ruff format` put two blank lines between top-level
#   definitions.
#
# Run it with werkpool installed:
#     python examples/seed_1_rate_high.py (about 10 s: 1000 jobs at 100/s)
from __future__ import annotations

import asyncio

from werkpool import worker_pool


async def call_api(item_id):
    # Simulated API call
    await asyncio.sleep(0.01)
    return f"Processed {item_id}"


async def main():
    async with worker_pool(rate=100) as pool:  # 100 tasks per second
        tasks = [pool.run(lambda i=i: call_api(i)) for i in range(1000)]
        results = await asyncio.gather(*tasks)
        print(f"Completed {len(results)} tasks")


asyncio.run(main())
