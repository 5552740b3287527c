"""What werkpool is measured against: hand-written floors and the libraries people reach for.

Every overhead baseline has the shape ``async def baseline(job, n, size) -> int``: run ``job(i)``
for ``i`` in ``range(n)``, at most *size* at once where the pattern has a limit, and return how
many results it collected (checked against *n* outside the timed region).
"""

from __future__ import annotations

import asyncio
import gc
import math
import tracemalloc
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from anyio.streams.memory import MemoryObjectReceiveStream

    from .common import RateRun

    Job = Callable[[int], Awaitable[int]]


# -- overhead: floors -----------------------------------------------------------------------------


async def asyncio_queue_floor(job: Job, n: int, size: int) -> int:
    """The hand-written pattern: *size* workers drain an ``asyncio.Queue``; ``join()``; cancel."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    results: list[Any] = [None] * n
    for i in range(n):
        queue.put_nowait(i)

    async def worker() -> None:
        while True:
            i = await queue.get()
            results[i] = await job(i)
            queue.task_done()

    workers = [asyncio.create_task(worker()) for _ in range(size)]
    await queue.join()
    for task in workers:
        task.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    return sum(r is not None for r in results)


async def asyncio_future_floor(job: Job, n: int, size: int) -> int:
    """The floor for ``run()`` + gather: *size* workers complete one ``asyncio.Future`` per job."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[int, asyncio.Future[int]]] = asyncio.Queue()
    futures: list[asyncio.Future[int]] = []
    for i in range(n):
        future = loop.create_future()
        queue.put_nowait((i, future))
        futures.append(future)

    async def worker() -> None:
        while True:
            i, future = await queue.get()
            future.set_result(await job(i))

    workers = [asyncio.create_task(worker()) for _ in range(size)]
    results = await asyncio.gather(*futures)
    for task in workers:
        task.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    return len(results)


async def stream_floor(job: Job, n: int, size: int) -> int:
    """The floor on trio (and any AnyIO loop): *size* workers read an AnyIO memory stream."""
    send, receive = anyio.create_memory_object_stream[int](math.inf)
    results: list[Any] = [None] * n

    async def worker(items: MemoryObjectReceiveStream[int]) -> None:
        async with items:
            async for i in items:
                results[i] = await job(i)

    async with anyio.create_task_group() as tg:
        for _ in range(size):
            tg.start_soon(worker, receive.clone())
        receive.close()
        with send:
            for i in range(n):
                send.send_nowait(i)
    return sum(r is not None for r in results)


# -- overhead: common alternatives ----------------------------------------------------------------


async def bare_gather(job: Job, n: int, size: int) -> int:
    """``asyncio.gather`` of every job at once: no limit, a task per job."""
    results = await asyncio.gather(*[job(i) for i in range(n)])
    return len(results)


async def semaphore_gather(job: Job, n: int, size: int) -> int:
    """``asyncio.Semaphore(size)`` around each job, all gathered: a task per job."""
    semaphore = asyncio.Semaphore(size)

    async def one(i: int) -> int:
        async with semaphore:
            return await job(i)

    results = await asyncio.gather(*[one(i) for i in range(n)])
    return len(results)


async def aiometer_amap(job: Job, n: int, size: int) -> int:
    """``aiometer.amap(..., max_at_once=size)``, iterating over its results."""
    import aiometer

    count = 0
    async with aiometer.amap(job, range(n), max_at_once=size) as results:
        async for _ in results:
            count += 1
    return count


async def aiometer_run_on_each(job: Job, n: int, size: int) -> int:
    """``aiometer.run_on_each(..., max_at_once=size)``: fire and forget, like ``start_soon``."""
    import aiometer

    await aiometer.run_on_each(job, range(n), max_at_once=size)
    return n


# -- rate accuracy --------------------------------------------------------------------------------


async def aiometer_rate(rate: float, n: int, out: RateRun) -> None:
    """``aiometer.run_on_each(job, items, max_per_second=rate)`` over *n* instant jobs."""
    import aiometer

    starts = out.starts

    async def job(_: int) -> None:
        starts.append(anyio.current_time())

    out.t_submit = anyio.current_time()
    await aiometer.run_on_each(job, range(n), max_per_second=rate)


async def aiolimiter_rate(rate: float, n: int, out: RateRun, *, whole_second: bool = False) -> None:
    """*n* gathered tasks, each doing ``async with limiter:`` on an ``aiolimiter.AsyncLimiter``.

    By default ``AsyncLimiter(1, 1 / rate)``: a bucket of one, burst 1 like the other pools here.
    ``whole_second=True`` builds ``AsyncLimiter(rate, 1)``, the way its README writes "rate per
    second", which lets a whole second's worth of starts through at once.
    """
    from aiolimiter import AsyncLimiter

    limiter = AsyncLimiter(rate, 1.0) if whole_second else AsyncLimiter(1.0, 1.0 / rate)
    starts = out.starts

    async def job() -> None:
        async with limiter:
            starts.append(anyio.current_time())

    out.t_submit = anyio.current_time()
    await asyncio.gather(*[job() for _ in range(n)])


# -- memory per pending job -----------------------------------------------------------------------


async def _settle() -> None:
    for _ in range(3):
        await anyio.lowlevel.checkpoint()


async def queue_future_pending_bytes(n: int, size: int) -> float:
    """Bytes per job queued behind *size* workers in the asyncio.Queue + Future floor."""
    loop = asyncio.get_running_loop()
    release = asyncio.Event()
    queue: asyncio.Queue[tuple[asyncio.Event, asyncio.Future[None]]] = asyncio.Queue()
    futures: list[Any] = [None] * n

    async def worker() -> None:
        while True:
            event, future = await queue.get()
            await event.wait()
            future.set_result(None)

    workers = [asyncio.create_task(worker()) for _ in range(size)]
    await _settle()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            future = futures[i] = loop.create_future()
            queue.put_nowait((release, future))
        await _settle()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    for task in workers:
        task.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    return (after - before) / n


async def semaphore_pending_bytes(n: int, size: int) -> float:
    """Bytes per job waiting on ``asyncio.Semaphore(size)`` in the Semaphore + gather pattern."""
    release = asyncio.Event()
    semaphore = asyncio.Semaphore(size)
    tasks: list[Any] = [None] * n

    async def one(event: asyncio.Event) -> None:
        async with semaphore:
            await event.wait()

    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            tasks[i] = asyncio.ensure_future(one(release))
        await _settle()  # every task has run up to its semaphore wait
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return (after - before) / n
