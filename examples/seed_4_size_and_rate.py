# Example 4 of the werkpool 0.2 README, "Combined Rate and Worker Limiting", unchanged
# except:
#
# Correction 1 (import lines): `from __future__ import annotations` added; the
#   repository's ruff configuration requires it first in every module. The seed's own
#   imports are unchanged.
# Correction 2 (layout only): `ruff format` removed the trailing spaces of the seed's
#   blank lines and put two blank lines between top-level definitions.
#
# Run it with werkpool installed:
#     python examples/seed_4_size_and_rate.py (about 10 s: 100 jobs at 10/s)
from __future__ import annotations

import asyncio

from werkpool import WorkerPool


async def scrape_page(url):
    # Simulated web scraping
    await asyncio.sleep(0.2)
    return f"Content from {url}"


async def main():
    # Max 5 concurrent requests, but only 10 requests per second
    pool = WorkerPool(size=5, rate=10)

    urls = [f"https://example.com/page/{i}" for i in range(100)]

    futures = [pool.run(lambda u=u: scrape_page(u)) for u in urls]
    results = await asyncio.gather(*futures)

    print(f"Scraped {len(results)} pages successfully")

    await pool.shutdown()


asyncio.run(main())
