"""Three processes share one rate limit kept in Redis and print their combined rate.

Each process runs its own pool with a local ``size=4`` and the shared ``Rate(50)`` named
"demo-api": together they start at most 50 jobs a second, whichever process asks. Each
start is dated by its slot on Redis' own clock (``store.on_grant``), the clock the limit
is kept on.

Run: python examples/shared_redis.py [--redis-url URL] [--backend asyncio|trio]
                                      [--seconds 3]

Without ``--redis-url`` it starts a private ``redis-server`` (if one is on PATH) on a
free loopback port in a temporary directory, and stops it at the end. Needs
``pip install "werkpool[redis]"`` (and ``werkpool[trio]`` for trio).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import TYPE_CHECKING

import anyio

from werkpool import Rate, WorkerPool

if TYPE_CHECKING:
    from collections.abc import Iterator

RATE = 50  # starts per second, shared by all the processes
NAME = "demo-api"  # the limit's name in Redis: every pool that names it shares it
PROCESSES = 3


async def call_api(i: int) -> int:
    await anyio.sleep(0.01)  # stands in for the request the limit protects
    return i


async def worker(url: str, seconds: float) -> None:
    """One process: a pool under the shared rate, busy *seconds* after the "go"."""
    import coredis

    from werkpool.redis import RedisStore

    grants: list[float] = []
    async with RedisStore(coredis.Redis.from_url(url)) as store:
        store.on_grant = grants.append  # the Redis time of each start's slot
        await store.client.ping()
        async with WorkerPool(size=4, limits=[Rate(RATE).shared(store, NAME)]) as pool:
            print("ready", flush=True)
            # Wait for the parent's "go".
            await anyio.to_thread.run_sync(sys.stdin.readline)
            with anyio.move_on_after(seconds):
                async with pool.map(call_api, itertools.count()) as results:
                    async for _ in results:
                        pass
    print(json.dumps(grants), flush=True)


def busiest(times: list[float], window: float) -> int:
    """The most starts in any half-open window of *window* seconds (less 1 µs: Redis
    times are given to the microsecond)."""
    times = sorted(times)
    first = 0
    most = 0
    for last, t in enumerate(times):
        while times[first] <= t - window + 1e-6:
            first += 1
        most = max(most, last - first + 1)
    return most


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    """A redis-server of our own on a free loopback port, in a temporary directory."""
    executable = shutil.which("redis-server")
    if executable is None:
        sys.exit(
            "No --redis-url given and redis-server is not on PATH: install Redis "
            "(apt-get install redis-server) or pass --redis-url redis://HOST:PORT"
        )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as directory:
        options = ["--port", str(port), "--bind", "127.0.0.1"]
        options += ["--save", "", "--dir", directory]
        server = subprocess.Popen([executable, *options], stdout=subprocess.DEVNULL)
        try:
            for _ in range(200):  # up to 10 s for it to answer
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection(("127.0.0.1", port)),
                ):
                    break
                time.sleep(0.05)
            print(f"started redis-server (pid {server.pid}) on port {port}")
            yield f"redis://127.0.0.1:{port}"
        finally:
            os.kill(server.pid, signal.SIGTERM)
            server.wait(timeout=10)


def run_processes(url: str, backend: str, seconds: float) -> None:
    """Start the worker processes, let them go at once, report what Redis granted."""
    command = [sys.executable, __file__, "--worker", "--redis-url", url]
    command += ["--backend", backend, "--seconds", str(seconds)]
    processes = [
        subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for _ in range(PROCESSES)
    ]

    def answer(process: subprocess.Popen[str]) -> str:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            sys.exit(f"worker {process.pid} failed (see its error above)")
        return line

    try:
        for process in processes:
            answer(process)  # "ready"
        for process in processes:  # "go", to all of them at once
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        grants = [json.loads(answer(process)) for process in processes]
        for process in processes:
            process.wait(timeout=30)
    finally:
        for process in processes:  # only after a failure: stop the others
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
    print(
        f"{PROCESSES} processes share Rate({RATE}) named {NAME!r} "
        f"({backend}, {seconds:g} s)"
    )
    times = sorted(t for mine in grants for t in mine)
    for n, (process, mine) in enumerate(zip(processes, grants, strict=True), 1):
        share = len(mine) / max(len(times), 1)
        print(
            f"process {n} (pid {process.pid}): {len(mine)} starts, "
            f"{100 * share:.0f} % of them"
        )
    if len(times) < 2:
        sys.exit("too few starts to measure a rate")
    span = times[-1] - times[0]
    print(
        f"combined: {len(times)} starts in {span:.3f} s of Redis time = "
        f"{(len(times) - 1) / span:.1f}/s (the limit: {RATE}/s)"
    )
    print(f"busiest second: {busiest(times, 1.0)} starts (the limit allows {RATE})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--redis-url", help="default: a private redis-server, started here"
    )
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument(
        "--seconds", type=float, default=3.0, help="how long each process runs"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        import coredis  # noqa: F401
    except ImportError:
        sys.exit('This example needs coredis: pip install "werkpool[redis]"')
    if args.worker:
        anyio.run(worker, args.redis_url, args.seconds, backend=args.backend)
    elif args.redis_url:
        run_processes(args.redis_url, args.backend, args.seconds)
    else:
        with private_redis() as url:
            run_processes(url, args.backend, args.seconds)


if __name__ == "__main__":
    main()
