"""Scenario 11, where users call from (#14): httpx requests and blocking functions in threads.

**httpx against a strict nginx.** A private nginx (the one of scenario 6, ``limit_req`` with no
burst: a request is accepted only if ``1000 / R`` whole milliseconds passed since the last accepted
one) gets N requests at R per second from each client, side by side in one run:

* ``werkpool.httpx.PoolTransport(WorkerPool(rate=R))``: every ``client.get`` through the pool;
* werkpool by hand: ``pool.start_soon(send)`` with ``send`` calling ``client.get`` (scenario 6);
* ``aiolimiter.AsyncLimiter(1, 1 / R)`` around each ``client.get`` (asyncio only).

Each request's start is read where it reaches httpx's own transport (a wrapper around it), the
same point for every client. Reported: the 429s, the accepted rate, CPU time per request.

**Blocking functions in threads.**

* *Size*: 100 calls of ``time.sleep(0.2)`` with a concurrency limit of 100: werkpool's
  ``map_sync(size=100)``, ``aiometer.amap(max_at_once=100)`` over ``anyio.to_thread.run_sync``
  (anyio's default limiter: 40 threads), and ``asyncio.to_thread`` under a semaphore of 100
  (the default executor: ``min(32, cpus + 4)`` threads). Reported: the most calls inside the
  function at once, and the wall time.
* *Rate*: 600 calls at 200/s; each reads ``time.perf_counter()`` on its first line, in its
  thread: werkpool's ``run_sync`` (``rate=200``), aiolimiter and aiometer
  (``max_per_second=200``) over ``anyio.to_thread.run_sync``. Reported: the most starts in any
  1 s window (the bound is 200), the shortest gap, the achieved rate.
* *Overhead*: 5,000 calls of a no-op with 8 at a time: werkpool's ``map_sync(size=8)`` against
  a bare task group over ``anyio.to_thread.run_sync`` with a ``CapacityLimiter(8)``.

Run with ``python3 -m benchmarks.adapters [--quick]`` (about 1.5 min; it writes
``benchmarks/results/adapters.md`` and ``.json``). Without nginx the httpx part is skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import itertools
import json
import os
import sys
import threading
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

if __package__ in (None, ""):  # run as a script: python3 benchmarks/adapters.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "benchmarks"

import anyio
import anyio.to_thread

from werkpool import WorkerPool

from .common import ASYNCIO, TRIO, Backend, installed, md_table, median
from .server_limit import find_nginx, nginx_server

if TYPE_CHECKING:
    import httpx

HERE = Path(__file__).resolve().parent
BACKENDS = (ASYNCIO, TRIO)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- httpx against nginx ---------------------------------------------------------------------------


def _recording_transport(starts: list[float]) -> httpx.AsyncBaseTransport:
    """httpx's own transport, noting ``time.perf_counter()`` as each request reaches it."""
    import httpx

    class Recording(httpx.AsyncBaseTransport):
        def __init__(self) -> None:
            limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
            self.inner = httpx.AsyncHTTPTransport(limits=limits)

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.path != "/warm":
                starts.append(time.perf_counter())
            return await self.inner.handle_async_request(request)

        async def aclose(self) -> None:
            await self.inner.aclose()

    return Recording()


async def _http_run(kind: str, url: str, rate: float, n: int) -> dict[str, float]:
    import httpx

    from werkpool.httpx import PoolTransport

    starts: list[float] = []
    statuses: list[int] = []
    inner = _recording_transport(starts)
    warm_url = url.rsplit("/", 2)[0] + "/warm"
    pool = WorkerPool(rate=rate)
    async with pool:
        transport: httpx.AsyncBaseTransport = (
            PoolTransport(pool, inner, key=None) if kind == "transport" else inner
        )
        async with httpx.AsyncClient(transport=transport, timeout=10.0, trust_env=False) as http:
            async with anyio.create_task_group() as tg:  # warm keep-alive connections, unlimited
                for _ in range(20):
                    tg.start_soon(inner.handle_async_request, httpx.Request("GET", warm_url))
            await anyio.sleep(0.5)

            async def get(_: int = 0) -> None:
                statuses.append((await http.get(url)).status_code)

            cpu = time.process_time()
            t0 = time.perf_counter()
            if kind == "transport":
                async with anyio.create_task_group() as tg:
                    for _ in range(n):
                        tg.start_soon(get)
            elif kind == "by hand":
                for i in range(n):
                    pool.start_soon(get, i)
                await pool.shutdown()
            else:
                from aiolimiter import AsyncLimiter

                limiter = AsyncLimiter(1.0, 1.0 / rate)

                async def limited() -> None:
                    async with limiter:
                        await get()

                await asyncio.gather(*[limited() for _ in range(n)])
            elapsed = time.perf_counter() - t0
            cpu = time.process_time() - cpu
    accepted = statuses.count(200)
    return {
        "refused": statuses.count(429),
        "accepted_rate": accepted / elapsed / rate,
        "cpu_ms": cpu / n * 1e3,
        "n": n,
    }


def http_part(backends: list[Backend], rates: tuple[float, ...], n_of: dict[float, int]) -> str:
    nginx = find_nginx()
    if nginx is None or not installed("httpx"):
        return "Skipped: nginx or httpx is not installed.\n"
    rows = []
    with nginx_server(nginx, rates) as base:
        for rate in rates:
            for backend in backends:
                kinds = ["transport", "by hand"] + (["aiolimiter"] if backend is ASYNCIO else [])
                for kind in kinds:
                    time.sleep(1.0)
                    url = f"{base}/strict/{rate:g}"
                    _log(f"  adapters: httpx {kind} on {backend.label} at {rate:g}/s")
                    m = backend.run(partial(_http_run, kind, url, rate, n_of[rate]))
                    label = {
                        "transport": "**werkpool** `PoolTransport(WorkerPool(rate=R))`",
                        "by hand": "**werkpool** `pool.start_soon(send)` (scenario 6)",
                        "aiolimiter": "`aiolimiter.AsyncLimiter(1, 1/R)` around `client.get`",
                    }[kind]
                    rows.append(
                        [
                            f"{rate:g}/s",
                            backend.label,
                            label,
                            f"{m['refused']:,.0f} of {m['n']:,.0f}",
                            f"{m['accepted_rate'] * 100:.1f} %",
                            f"{m['cpu_ms']:.3f}",
                        ]
                    )
    return md_table(
        ["rate", "backend", "client", "429s", "accepted rate", "CPU ms / request"], rows
    )


# -- threads ---------------------------------------------------------------------------------------


class _Inside:
    """Counts the calls inside a blocking function, and the most at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            time.sleep(seconds)
        finally:
            with self.lock:
                self.now -= 1


async def _size_run(kind: str, n: int, size: int, seconds: float) -> tuple[int, float]:
    inside = _Inside()
    t0 = time.perf_counter()
    if kind == "werkpool":
        async with WorkerPool(size=size) as pool:
            async for _ in pool.map_sync(inside.sleep, [seconds] * n):
                pass
    elif kind == "aiometer":
        import aiometer

        async def one(s: float) -> None:
            await anyio.to_thread.run_sync(inside.sleep, s)

        async with aiometer.amap(one, [seconds] * n, max_at_once=size) as results:
            async for _ in results:
                pass
    else:
        sem = asyncio.Semaphore(size)

        async def one_asyncio(s: float) -> None:
            async with sem:
                await asyncio.to_thread(inside.sleep, s)

        await asyncio.gather(*[one_asyncio(seconds) for _ in range(n)])
    return inside.most, time.perf_counter() - t0


async def _rate_run(kind: str, n: int, rate: float) -> list[float]:
    starts: list[float] = []

    def call() -> None:
        starts.append(time.perf_counter())

    if kind == "werkpool":
        async with WorkerPool(rate=rate) as pool:
            for _ in range(n):
                pool.run_sync(call)
    elif kind == "aiometer":
        import aiometer

        async def one(_: int) -> None:
            await anyio.to_thread.run_sync(call)

        await aiometer.run_on_each(one, range(n), max_per_second=rate)
    else:
        from aiolimiter import AsyncLimiter

        limiter = AsyncLimiter(1.0, 1.0 / rate)

        async def limited() -> None:
            async with limiter:
                await anyio.to_thread.run_sync(call)

        await asyncio.gather(*[limited() for _ in range(n)])
    return sorted(starts)


def _fullest(starts: list[float], width: float = 1.0) -> int:
    most = 0
    j = 0
    for i, t in enumerate(starts):
        while starts[j] <= t - width:
            j += 1
        most = max(most, i - j + 1)
    return most


async def _overhead_run(kind: str, n: int, size: int) -> float:
    def noop(x: int) -> int:
        return x

    t0 = time.perf_counter()
    if kind == "werkpool":
        async with WorkerPool(size=size) as pool:
            async for _ in pool.map_sync(noop, range(n), ordered=False):
                pass
    else:
        limiter = anyio.CapacityLimiter(size)
        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(lambda i=i: anyio.to_thread.run_sync(noop, i, limiter=limiter))  # type: ignore[misc]
    return n / (time.perf_counter() - t0)


def thread_part(backends: list[Backend], quick: bool) -> tuple[str, dict[str, Any]]:
    data: dict[str, Any] = {}
    size_rows = []
    for backend in backends:
        kinds = ["werkpool"] + (["aiometer"] if installed("aiometer") else [])
        kinds += ["asyncio.to_thread"] if backend is ASYNCIO else []
        for kind in kinds:
            most, wall = backend.run(partial(_size_run, kind, 100, 100, 0.2))
            data[f"size/{backend.label}/{kind}"] = {"most": most, "wall_s": wall}
            size_rows.append([backend.label, kind, f"{most}", f"{wall:.2f} s"])
    rate_rows = []
    n = 200 if quick else 600
    for backend in backends:
        kinds = ["werkpool"] + (["aiometer"] if installed("aiometer") else [])
        kinds += ["aiolimiter"] if backend is ASYNCIO and installed("aiolimiter") else []
        for kind in kinds:
            starts = backend.run(partial(_rate_run, kind, n, 200.0))
            gaps = [b - a for a, b in itertools.pairwise(starts)]
            fullest = _fullest(starts)
            achieved = (len(starts) - 1) / (starts[-1] - starts[0])
            data[f"rate/{backend.label}/{kind}"] = {
                "fullest": fullest,
                "min_gap_ms": min(gaps) * 1e3,
                "achieved": achieved,
            }
            rate_rows.append(
                [
                    backend.label,
                    kind,
                    f"{fullest} (bound 200)",
                    f"{min(gaps) * 1e3:.2f} ms (slot 5 ms)",
                    f"{achieved:.1f}/s",
                ]
            )
    over_rows = []
    n = 2_000 if quick else 5_000
    for backend in backends:
        for kind in ("werkpool", "bare anyio"):
            rates = [
                backend.run(partial(_overhead_run, kind, n, 8)) for _ in range(1 if quick else 3)
            ]
            data[f"overhead/{backend.label}/{kind}"] = median(rates)
            over_rows.append([backend.label, kind, f"{median(rates):,.0f} calls/s"])
    text = (
        "**Size** (100 calls of `time.sleep(0.2)`, a limit of 100):\n\n"
        + md_table(["backend", "client", "most at once", "wall time"], size_rows)
        + "\n\n**Rate** (starts read in the thread, 200/s):\n\n"
        + md_table(["backend", "client", "most in 1 s", "shortest gap", "achieved"], rate_rows)
        + "\n\n**Overhead** (no-op calls, 8 at a time):\n\n"
        + md_table(["backend", "client", "throughput"], over_rows)
    )
    return text, data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m benchmarks.adapters")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    backends = [b for b in BACKENDS if b is ASYNCIO or installed("trio")]
    started = time.perf_counter()
    rates = (100.0, 500.0)
    n_of = {100.0: 200 if args.quick else 500, 500.0: 500 if args.quick else 1_500}
    http = http_part(backends, rates, n_of)
    threads, data = thread_part(backends, args.quick)
    elapsed = time.perf_counter() - started
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    body = (
        f"`python3 -m benchmarks.adapters{' --quick' if args.quick else ''}`: "
        f"{datetime.date.today().isoformat()}, {elapsed / 60:.1f} min, load {load} after.\n\n"
        f"#### httpx against a strict nginx (`limit_req`, no burst)\n\n{http}\n\n"
        f"#### Blocking functions in threads\n\n{threads}\n"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "adapters.md").write_text(body, encoding="utf-8")
    (args.out / "adapters.json").write_text(
        json.dumps({"elapsed_s": elapsed, "threads": data}, indent=1) + "\n", encoding="utf-8"
    )
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
