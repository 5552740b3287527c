"""User-style calls, checked by ``mypy --strict`` (nox -s typing) and never run."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from typing_extensions import assert_type

import werkpool
from werkpool import JobFuture, WorkerPool, worker_pool
from werkpool._core._events import EventKind

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


async def fetch(url: str, retries: int = 0) -> bytes:
    return url.encode()


async def no_args() -> int:
    return 1


async def asyncio_user() -> None:
    async with worker_pool(size=10, rate=100) as pool:
        assert_type(pool, WorkerPool)
        future = pool.run(fetch, "https://example.com")
        assert_type(future, JobFuture[bytes])
        data: bytes = await future
        lam = pool.run(lambda: fetch("x"), timeout=5, retries=3)
        assert_type(await lam, bytes)
        number = pool.run(
            no_args,
            retryable_exceptions=[ConnectionError, TimeoutError],
            backoff=lambda n: 0.5 * n,
        )
        assert_type(await number, int)
        results = await asyncio.gather(future, lam)
        assert_type(results, tuple[bytes, bytes])
        del data


async def unscoped() -> None:
    pool = WorkerPool(size=5, rate=10, burst=2)
    future = pool.run(no_args, retryable_exceptions=ConnectionError)
    assert future.done() or not future.cancelled()
    await pool.shutdown()
    await pool.kill()
    size: int | None = pool.size
    rate: float | None = pool.rate
    burst: int = pool.burst
    del size, rate, burst


def trio_future(future: werkpool.Future[int]) -> None:
    assert_type(future.status, werkpool.Future.Status)
    if future.done() and not future.cancelled():
        assert_type(future.result(), int)
    future.add_done_callback(lambda f: None)


async def structured_user() -> None:
    async with WorkerPool(size=4, max_pending=100) as pool:
        handle = pool.start_soon(fetch, "https://example.com")
        assert_type(handle, JobFuture[bytes])
        assert_type(await pool.call(fetch, "x", retries=2), bytes)
        assert_type(await pool.submit(no_args), JobFuture[int])
        async for data in pool.map(fetch, ["a", "b"]):
            assert_type(data, bytes)
        async with pool.map(fetch, ["a"], ordered=False, return_exceptions=True) as results:
            async for outcome in results:
                assert_type(outcome, bytes | BaseException)
        assert_type(pool.statistics().running, int)


async def numbers() -> AsyncIterator[int]:
    yield 1


async def double(n: int) -> int:
    return 2 * n


async def map_over_an_async_iterable(pool: WorkerPool) -> list[int]:
    return [n async for n in pool.map(double, numbers())]


async def map_items_must_fit_the_function(pool: WorkerPool) -> None:
    pool.map(double, ["not", "ints"])  # type: ignore[arg-type]


def default_backoff_is_typed() -> float:
    return werkpool.default_backoff(3) + werkpool.BACKOFF_CAP


async def shared_limits_user() -> None:
    import coredis

    from werkpool import Concurrency, Rate, Shared
    from werkpool.redis import RedisStore, StoreStatistics

    async with coredis.Redis(host="127.0.0.1") as client, RedisStore(client) as store:
        assert_type(store, RedisStore)
        shared = Rate(100).shared(store, "api")
        assert_type(shared, Shared)
        limits: list[Concurrency | Shared] = [Concurrency(4), shared]
        limits.append(Concurrency(2).shared(store, "conn"))
        async with WorkerPool(limits=limits, per_key=[Rate(5).shared(store, "host")]) as pool:
            future = pool.run(fetch, "https://example.com", key="example.com")
            assert_type(await future, bytes)
        assert_type(store.statistics(), StoreStatistics)


def blocking_square(n: int) -> int:
    return n * n


def blocking_text(text: str, times: int) -> str:
    return text * times


async def threads_user() -> None:
    from werkpool import MapIterator

    async with WorkerPool(size=4, rate=20) as pool:
        assert_type(pool.run_sync(blocking_square, 3), JobFuture[int])
        assert_type(pool.run_sync(blocking_text, "a", 2, timeout=1.0, retries=2), JobFuture[str])
        assert_type(pool.start_soon_sync(blocking_square, 3, key="host"), JobFuture[int])
        number = await pool.call_sync(blocking_square, 3, abandon_on_cancel=True)
        assert_type(number, int)
        assert_type(await pool.submit_sync(blocking_text, "b", 3), JobFuture[str])
        assert_type(pool.map_sync(blocking_square, [1, 2]), MapIterator[int])
        async for square in pool.map_sync(blocking_square, range(3), key=str, ordered=False):
            assert_type(square, int)
        outcomes = pool.map_sync(blocking_square, [1], return_exceptions=True)
        assert_type(outcomes, MapIterator[int | BaseException])


async def threads_arguments_must_fit(pool: WorkerPool) -> None:
    pool.run_sync(blocking_square, "not an int")  # type: ignore[arg-type]
    pool.map_sync(blocking_square, ["not", "ints"])  # type: ignore[arg-type]


async def httpx_user() -> None:
    import httpx

    from werkpool import Rate
    from werkpool.httpx import IDEMPOTENT_METHODS, PoolTransport, by_host, retry_after_seconds

    async with WorkerPool(size=10, per_key=[Rate(5)]) as pool:
        transport = PoolTransport(
            pool,
            httpx.AsyncHTTPTransport(),
            retries=3,
            timeout=5.0,
            backoff=lambda n: 0.5 * n,
            cost=lambda request: {"tokens": float(len(request.content))},
            retry_methods=IDEMPOTENT_METHODS | {"POST"},
            retry_statuses=[429, 502, 503],
        )
        assert_type(transport, PoolTransport)
        assert_type(PoolTransport(pool, key=None), PoolTransport)
        async with httpx.AsyncClient(transport=transport) as client:
            response = await client.get("https://example.com/")
            assert_type(retry_after_seconds(response), float | None)
            assert_type(by_host(response.request), str)


async def progress_api(pool: werkpool.WorkerPool) -> None:
    async with werkpool.progress(pool, total=10, description="jobs", refresh=0.2) as bar:
        assert_type(bar, werkpool.ProgressBar)
        assert_type(bar.done, int)
        assert_type(bar.total, int)
        assert_type(bar.enabled, bool)


def hooks_api(event: werkpool.JobEvent) -> None:
    seen: list[werkpool.JobEvent] = []
    pool = WorkerPool(hooks=[seen.append, werkpool.LoggingHook()])
    pool.add_hook(seen.append)
    assert_type(event.kind, EventKind)
    assert_type(event.job, int | None)


def deprecated_event_alias(event: werkpool.Event) -> werkpool.JobEvent:
    # werkpool.Event warns at run time, but still checks as JobEvent in annotations; the module
    # __getattr__ behind it leaves __version__ a str.
    assert_type(werkpool.__version__, str)
    return event


async def job_labels(pool: WorkerPool, event: werkpool.JobEvent) -> None:
    assert_type(event.name, str | None)
    assert_type(pool.run(fetch, "https://example.com", name="home"), JobFuture[bytes])
    assert_type(await pool.call(fetch, "x", name="x"), bytes)
    assert_type(pool.map(fetch, ["a"], name="fetch"), werkpool.MapIterator[bytes])
    assert_type(pool.map(double, [1, 2], name=lambda n: f"double {n}"), werkpool.MapIterator[int])
    assert_type(pool.run_sync(blocking_square, 3, name="square"), JobFuture[int])
    assert_type(pool.map_sync(blocking_square, [1], name=str), werkpool.MapIterator[int])
    pool.run(fetch, "x", name=3)  # type: ignore[arg-type]
    pool.map(double, [1], name=lambda n: n)  # type: ignore[arg-type,return-value]


async def progress_last_failed(bar: werkpool.ProgressBar) -> None:
    assert_type(bar.last_failed, str | None)


async def each_option_is_typed(pool: WorkerPool) -> None:
    # The options are declared once (SubmitOptions, MapOptions): a wrong type or name for any of
    # them is still caught, on every submission method.
    pool.run(no_args, timeout="5")  # type: ignore[arg-type]
    pool.run(no_args, retries=1.5)  # type: ignore[arg-type]
    pool.run(no_args, retryable_exceptions=ValueError())  # type: ignore[arg-type]
    pool.run(no_args, backoff=blocking_text)  # type: ignore[arg-type]
    pool.run(no_args, key=["not hashable"])  # type: ignore[arg-type]
    pool.run(no_args, cost={"tokens": "many"})  # type: ignore[dict-item]
    pool.run(no_args, name=b"label")  # type: ignore[arg-type]
    pool.run(no_args, tiemout=5)  # type: ignore[call-arg]
    pool.run(no_args, abandon_on_cancel=True)  # type: ignore[call-arg]
    pool.start_soon(no_args, retries="3")  # type: ignore[arg-type]
    await pool.call(no_args, timeout="5")  # type: ignore[arg-type]
    await pool.submit(no_args, key=["not hashable"])  # type: ignore[arg-type]
    pool.map(double, [1], key="not a function")  # type: ignore[call-overload]
    pool.map(double, [1], cost=lambda n: n)  # type: ignore[arg-type,return-value]
    pool.map(double, [1], retries=None)  # type: ignore[call-overload]
    pool.map(double, [1], ordered=True, tiemout=5)  # type: ignore[call-overload]
    pool.run_sync(blocking_square, 3, timeout="5")  # type: ignore[arg-type]
    pool.run_sync(blocking_square, 3, abandon_on_cancel="yes")  # type: ignore[arg-type]
    pool.start_soon_sync(blocking_square, 3, cost=3)  # type: ignore[arg-type]
    await pool.call_sync(blocking_square, 3, name=3)  # type: ignore[arg-type]
    await pool.submit_sync(blocking_square, 3, backoff=3)  # type: ignore[arg-type]
    pool.map_sync(blocking_square, [1], key=3)  # type: ignore[call-overload]
    pool.map_sync(blocking_square, [1], tiemout=5)  # type: ignore[call-overload]
