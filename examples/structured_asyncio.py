"""Structured concurrency on asyncio: map, call, submit and start_soon in one pool.

Run: python examples/structured_asyncio.py
"""

from __future__ import annotations

import asyncio

from werkpool import WorkerPool

SITE = {
    "/": ["/docs", "/blog"],
    "/docs": ["/docs/api", "/docs/faq"],
    "/blog": ["/blog/1"],
    "/docs/api": [],
    "/docs/faq": [],
    "/blog/1": [],
}


async def fetch(url: str) -> str:
    await asyncio.sleep(0.05)  # stands in for an HTTP request
    return f"<html>{url}</html>"


async def main() -> None:
    # At most 4 requests in flight and 20 started per second, whatever the entry point.
    async with WorkerPool(size=4, rate=20, max_pending=100) as pool:
        # map: results in input order, input read lazily.
        pages = [page async for page in pool.map(fetch, ["/", "/docs", "/blog"])]
        print(f"map fetched {len(pages)} pages")

        # call: one job, its result (or error) right here.
        print("call:", await pool.call(fetch, "/docs/faq", timeout=5, retries=2))

        # submit: like run(), but waits when 100 jobs already wait to start.
        futures = [await pool.submit(fetch, f"/blog/{i}") for i in range(5)]
        print("submit:", len(await asyncio.gather(*futures)), "pages")

        # start_soon: fire and forget inside the block; a failure would fail the block.
        seen: list[str] = []

        async def crawl(url: str) -> None:
            seen.append(url)
            await fetch(url)
            for link in SITE[url]:
                pool.start_soon(crawl, link)

        pool.start_soon(crawl, "/")
    # Leaving the block waited for the whole crawl.
    print(f"crawled {len(seen)} pages:", ", ".join(sorted(seen)))
    stats = pool.statistics()
    print(
        f"{stats.completed} jobs completed, {stats.failed} failed, "
        f"{stats.attempts} attempts"
    )


if __name__ == "__main__":
    asyncio.run(main())
