"""werkpool.httpx end to end: a real httpx transport against a rate-limited uvicorn server.

The server (``tests/http_server.py``) accepts one request per ``1/rate`` seconds in each bucket
and answers any closer one ``429`` with ``Retry-After: 1``. A client pool set below that rate must
never be refused; set above it, every request must still end ``200``, through the pauses its
429s cause, and the server's count of refusals must equal the pool's retries (each refusal was
retried once, nothing else was). Real sockets, so the real clock (``realclock``); both backends.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import anyio
import httpx
import pytest
from http_server import HttpServer

from werkpool import Rate, WorkerPool
from werkpool.httpx import PoolTransport

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.realclock

#: The server's limit in these tests, in accepted requests per second.
SERVER_RATE = 20


@pytest.fixture(scope="session")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    """One uvicorn server for this module's tests (each test has its own bucket)."""
    server = HttpServer(tmp_path_factory.mktemp("uvicorn"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def bucket() -> str:
    """A bucket of the test's own on the shared server."""
    return uuid.uuid4().hex[:12]


async def server_stats(server: HttpServer, bucket: str) -> dict[str, int]:
    """What the server saw of *bucket*, asked directly (not through a pool)."""
    async with httpx.AsyncClient() as client:
        response = await client.get(server.url("/stats", bucket=bucket))
        response.raise_for_status()
        counts: dict[str, int] = response.json()
        return counts


async def get_all(client: httpx.AsyncClient, urls: list[str]) -> list[int]:
    """GET every URL at once; their statuses."""
    statuses: list[int] = []

    async def get(url: str) -> None:
        statuses.append((await client.get(url)).status_code)

    async with anyio.create_task_group() as tg:
        for url in urls:
            tg.start_soon(get, url)
    return statuses


async def test_a_client_below_the_servers_rate_is_never_refused(
    http_server: HttpServer, bucket: str
) -> None:
    """rate=10 against a server that takes 20/s: 20 requests, all 200, no 429 at all (the
    server refused none, the pool retried none)."""
    url = http_server.url("/work", bucket=bucket, rate=SERVER_RATE)
    async with WorkerPool(rate=10) as pool:
        transport = PoolTransport(pool, httpx.AsyncHTTPTransport(), retries=5)
        async with httpx.AsyncClient(transport=transport) as client:
            statuses = await get_all(client, [url] * 20)
        stats = pool.statistics()
    seen = await server_stats(http_server, bucket)
    assert statuses == [200] * 20
    assert (seen["accepted"], seen["refused"]) == (20, 0)
    assert (stats.attempts, stats.retries) == (20, 0)


async def test_an_adaptive_client_above_the_servers_rate_gets_every_request_through(
    http_server: HttpServer, bucket: str
) -> None:
    """The host's adaptive Rate of 40/s (regrowing over 10 s) against 20/s: 30 requests with
    retries=5 all end 200; the server refused some, and each refusal was retried once."""
    url = http_server.url("/work", bucket=bucket, rate=SERVER_RATE)
    async with WorkerPool(per_key=[Rate(400, per=10, adaptive=True)]) as pool:
        transport = PoolTransport(pool, httpx.AsyncHTTPTransport(), retries=5)
        async with httpx.AsyncClient(transport=transport) as client:
            statuses = await get_all(client, [url] * 30)
        stats = pool.statistics()
    seen = await server_stats(http_server, bucket)
    assert statuses == [200] * 30
    assert seen["accepted"] == 30
    assert seen["refused"] > 0
    assert stats.retries == seen["refused"]
    assert stats.attempts == 30 + seen["refused"]


async def test_a_plain_client_above_the_servers_rate_gets_every_request_through(
    http_server: HttpServer, bucket: str
) -> None:
    """rate=40 (not adaptive) against 20/s: each 429 pauses the host for 1 s, so few requests
    (5, retries=5: at least one goes through per pause); all end 200."""
    url = http_server.url("/work", bucket=bucket, rate=SERVER_RATE)
    async with WorkerPool(rate=40) as pool:
        transport = PoolTransport(pool, httpx.AsyncHTTPTransport(), retries=5)
        async with httpx.AsyncClient(transport=transport) as client:
            statuses = await get_all(client, [url] * 5)
        stats = pool.statistics()
    seen = await server_stats(http_server, bucket)
    assert statuses == [200] * 5
    assert seen["accepted"] == 5
    assert seen["refused"] > 0
    assert stats.retries == seen["refused"]


async def test_size_bounds_what_the_server_sees_in_progress(
    http_server: HttpServer, bucket: str
) -> None:
    """size=3, 12 requests that take 0.1 s each (rate=inf: the server
    refuses none): the server
    never has more than 3 in progress, and has 3 at some point."""
    url = http_server.url("/work", bucket=bucket, rate="inf", delay=0.1)
    async with (
        WorkerPool(size=3) as pool,
        httpx.AsyncClient(transport=PoolTransport(pool)) as client,
    ):
        statuses = await get_all(client, [url] * 12)
    seen = await server_stats(http_server, bucket)
    assert statuses == [200] * 12
    assert (seen["accepted"], seen["refused"], seen["max_concurrent"]) == (12, 0, 3)
