"""A polite crawler: each httpx request goes through a pool with per-host limits.

The web it crawls is fake and in this file, so the example runs offline: an ASGI app
answers for three hosts (``http://alpha.test``, ``http://beta.test``,
``http://gamma.test``, told apart by the ``Host`` header) with small HTML pages that
link to each other, and it enforces a rate per host as a strict server would: a request
that comes sooner than its host allows gets ``429 Too Many Requests`` with a
``Retry-After``. gamma.test allows less than the crawler sends.

The crawler sends through ``httpx.AsyncClient(transport=PoolTransport(pool, inner))``:
each request is a job of ``WorkerPool(size=6, per_key=[Rate(10, adaptive=True),
Concurrency(2)])``, keyed by its host, so each host gets its own rate and at most two
requests in flight. A 429 pauses only that host's requests for its Retry-After, slows
that host's rate, and the request is retried: the crawl completes, every page with a
200, and the other hosts never wait for it.

Run: python examples/crawler.py [--backend asyncio|trio]   (about 4 s)

Needs ``pip install "werkpool[httpx]"`` (and ``werkpool[trio]`` for trio).
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections import Counter
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urldefrag, urljoin, urlsplit

import anyio

from werkpool import Concurrency, Rate, WorkerPool

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    import httpx

    from werkpool import PoolStatistics

#: The fake web: each host and the requests per second it accepts.
HOSTS = {"alpha.test": 20.0, "beta.test": 20.0, "gamma.test": 5.0}
PAGES_PER_HOST = 12
START = "http://alpha.test/"
#: The crawler never fetches more than this many pages, however big the web.
MAX_PAGES = 50
#: What the crawler sends to each host: 10 a second (more than gamma.test accepts), 2 at
#: once.
PER_HOST: list[Rate | Concurrency] = [Rate(10, adaptive=True), Concurrency(2)]
SIZE = 6  # requests in flight, all hosts together
RETRIES = 5  # per request; a 429 is retried after its Retry-After

LINK = re.compile(r'href="([^"]+)"')

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


# -- the fake web: an ASGI app that serves three hosts, refusing requests too fast -----


@dataclass
class HostLog:
    """What one host of the fake web saw."""

    rate: float  # accepted requests per second
    last: float = -math.inf  # when it last accepted a request
    served: int = 0
    refused: int = 0  # 429s sent
    done: float = -math.inf  # when it last answered 200
    arrivals: list[float] = field(default_factory=list)  # when each request came


@dataclass
class FakeWeb:
    """An ASGI app for the hosts of :data:`HOSTS`, each with its own strict rate."""

    hosts: dict[str, HostLog] = field(
        default_factory=lambda: {name: HostLog(rate) for name, rate in HOSTS.items()}
    )

    async def __call__(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        assert scope["type"] == "http"
        headers = dict(scope["headers"])
        name = headers.get(b"host", b"").decode().partition(":")[0]
        host = self.hosts.get(name)
        if host is None:
            await respond(send, 404, "text/plain", "no such host")
            return
        now = anyio.current_time()
        host.arrivals.append(now)
        wait = host.last + 1 / host.rate - now
        if wait > 1e-6:  # a microsecond of slack for the clocks' rounding
            # Too soon: say when to come back, rounded up to a millisecond. (RFC 9110
            # gives Retry-After in whole seconds; werkpool accepts decimals too.)
            host.refused += 1
            retry_after = f"{math.ceil(wait * 1000) / 1000:.3f}"
            await respond(
                send, 429, "text/plain", "slow down", ((b"retry-after", retry_after),)
            )
            return
        host.last = now
        page = page_number(scope["path"])
        if page is None:
            await respond(send, 404, "text/plain", "no such page")
            return
        host.served += 1
        await anyio.sleep(0.02)  # the server's work
        await respond(send, 200, "text/html", render(name, page))
        host.done = anyio.current_time()


def page_number(path: str) -> int | None:
    """``/`` is page 0, ``/page/N`` page N (for N below :data:`PAGES_PER_HOST`)."""
    if path == "/":
        return 0
    match = re.fullmatch(r"/page/(\d+)", path)
    if match is None or not 0 < int(match[1]) < PAGES_PER_HOST:
        return None
    return int(match[1])


def render(host: str, page: int) -> str:
    """Page *page* of *host*: links to three pages of its own host, to the same page of
    the next host, and (on the home pages) to a site outside the crawl."""
    names = list(HOSTS)
    other = names[(names.index(host) + 1) % len(names)]
    links = [
        f"/page/{n}"
        for n in (page + 1, 2 * page + 1, 2 * page + 2)
        if n < PAGES_PER_HOST
    ]
    links.append(f"http://{other}/" if page == 0 else f"http://{other}/page/{page}")
    if page == 0:
        links.append("https://www.example.org/about")
    items = "".join(f'<li><a href="{link}">{link}</a></li>' for link in links)
    return f"<html><body><h1>{host} page {page}</h1><ul>{items}</ul></body></html>"


async def respond(
    send: Callable[[Message], Awaitable[None]],
    status: int,
    content_type: str,
    body: str,
    headers: tuple[tuple[bytes, str], ...] = (),
) -> None:
    """Send a whole response: its status and headers, then its body."""
    raw = [(b"content-type", content_type.encode())]
    raw += [(name, value.encode()) for name, value in headers]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body.encode()})


# -- the crawler -----------------------------------------------------------------------


@dataclass
class Report:
    """What a crawl did."""

    statuses: dict[str, int]  # url -> the status the crawler got
    web: FakeWeb
    stats: PoolStatistics
    start: float  # when the crawl began, on anyio's clock
    elapsed: float  # seconds

    def pages(self) -> Counter[str]:
        return Counter(urlsplit(url).hostname or "" for url in self.statuses)

    def lines(self, backend: str) -> list[str]:
        count = Counter(self.statuses.values())
        ok = count[200]
        lines = [
            f"crawled {len(self.statuses)} pages from {START} in {self.elapsed:.1f} s "
            f"({backend}): {ok} got 200, {len(self.statuses) - ok} otherwise"
        ]
        pages = self.pages()
        for name, host in self.web.hosts.items():
            lines.append(
                f"  {name}: {pages[name]} pages, "
                f"the last at {host.done - self.start:.1f} s; "
                f"the server allows {host.rate:g}/s and refused {host.refused} with 429"
            )
        stats = self.stats
        lines.append(
            f"pool: {stats.attempts} attempts, {stats.retries} retries, "
            f"{stats.completed} requests completed, {stats.failed} failed"
        )
        return lines


def in_scope(url: str) -> bool:
    """Crawl only the fake web's hosts, over http."""
    parts = urlsplit(url)
    return parts.scheme == "http" and parts.hostname in HOSTS


async def crawl(
    client: httpx.AsyncClient, start: str, statuses: MutableMapping[str, int]
) -> None:
    """Fetch *start* and every in-scope page it leads to, each URL once, at most
    :data:`MAX_PAGES`.

    The visits run in a task group of their own, not as jobs of the pool: a visit waits
    for its request, which is the pool's job, and a job that waits for another job of
    its pool could hold the very slot that one needs.
    """
    seen = {start}

    async def visit(url: str) -> None:
        response = await client.get(url)  # read and closed: its slot is free again
        statuses[url] = response.status_code
        if response.status_code != 200:
            return
        for href in LINK.findall(response.text):
            link = urldefrag(urljoin(url, href)).url
            if in_scope(link) and link not in seen and len(seen) < MAX_PAGES:
                seen.add(link)
                visits.start_soon(visit, link)

    async with anyio.create_task_group() as visits:
        visits.start_soon(visit, start)


async def demo() -> Report:
    """Crawl the fake web through a pool with per-host limits; report what happened."""
    import httpx

    from werkpool.httpx import PoolTransport

    web = FakeWeb()
    statuses: dict[str, int] = {}
    start = anyio.current_time()
    async with WorkerPool(size=SIZE, per_key=PER_HOST) as pool:
        # PoolTransport keys each request by its host (werkpool.httpx.by_host).
        inner = httpx.ASGITransport(app=web)
        # headers="key": a host's rate-limit headers describe that host's own limits.
        transport = PoolTransport(pool, inner, retries=RETRIES, headers="key")
        async with httpx.AsyncClient(transport=transport) as client:
            await crawl(client, START, statuses)
    return Report(statuses, web, pool.statistics(), start, anyio.current_time() - start)


def main(argv: list[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    args = parser.parse_args(argv)
    try:
        import httpx  # noqa: F401
    except ImportError:
        sys.exit('This example needs httpx: pip install "werkpool[httpx]"')
    report = anyio.run(demo, backend=args.backend)
    print("\n".join(report.lines(args.backend)))
    return report


if __name__ == "__main__":
    main()
