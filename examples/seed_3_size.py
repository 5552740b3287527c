# Example 3 of the werkpool 0.2 README, "Worker-Limited Pool", unchanged except:
#
# Correction 1 (import lines): `from __future__ import annotations` added; the
#   repository's ruff configuration requires it first in every module. The seed's own
#   imports are unchanged.
# Correction 2 (layout only): `ruff format` removed the trailing spaces of the seed's
#   blank lines and put two blank lines between top-level definitions.
#
# Run it with werkpool installed:
#     python examples/seed_3_size.py (5 s: 50 jobs of 0.5 s, 5 at a time)
from __future__ import annotations

import asyncio

from werkpool import worker_pool


async def process_file(filename):
    # Memory or I/O intensive operation
    await asyncio.sleep(0.5)
    return f"Processed {filename}"


async def main():
    # Maximum 5 concurrent tasks at any time
    async with worker_pool(size=5) as pool:
        files = [f"file_{i}.txt" for i in range(50)]

        tasks = [pool.run(lambda f=f: process_file(f)) for f in files]
        results = await asyncio.gather(*tasks)

        print(f"Processed {len(results)} files")


asyncio.run(main())
