"""A process of the multi-process tests of shared limits: tests/contract/test_shared_processes.py.

Run as ``python tests/shared_worker.py SCENARIO --port P --prefix X --backend asyncio|trio ...``.
It talks to the test through lines of JSON: it prints ``{"event": ...}`` lines on stdout (the
last one, ``"result"``, carries what it measured) and reads plain commands (``go``, ``paused``,
``resumed``) from stdin. Every wait here is bounded, so a worker whose test died ends by itself.

Scenarios:

- ``rate``: a pool under the shared ``Rate(--rate)`` submits no-op jobs for ``--seconds`` after
  ``go``; reports the Redis time of every grant (``store.on_grant``).
- ``concurrency``: a pool under the shared ``Concurrency(--n)`` runs jobs sleeping ``--sleep`` s for
  ``--seconds``; each job INCRs a counter key (through a second client) as it starts and DECRs it
  as it ends; reports every value the INCR returned.
- ``hold``: takes all ``--n`` slots of the shared ``Concurrency(--n)`` with jobs that never end,
  prints ``holding`` with its store id, then waits to be killed.
- ``take``: asks for all ``--n`` slots while another process holds them, prints ``waiting``; on
  ``go`` waits (bounded) until it holds them all, then reports the leases in the zset.
- ``mixed``: shared ``Rate(--rate)`` and ``Concurrency(--n)``, jobs sleeping ``--sleep`` s, for
  ``--seconds`` after ``go``; reports grants, each job's wall-clock interval, and the outcome of
  every job (results and error type names).
- ``recover``: one pool holds all ``--n`` slots of the shared ``Concurrency(--n)`` with jobs of
  ``--hold`` s and prints ``holding``; on ``go`` (the server was restarted meanwhile) ``--pools``
  other pools of the same store each run one job at once. Fault injected: the first SCRIPT LOAD
  after the server answered NOSCRIPT takes ``--delay`` s longer. Reports the most jobs running at
  once in this process.
- ``pause``: a few jobs, then ``phase1``; on ``paused`` (the server is stopped) submits jobs and
  reports how they failed (``phase2``); on ``resumed`` submits jobs again and reports them.

``--skew S`` makes every clock of this process (time.time, time.monotonic, time.perf_counter and
their _ns forms) run S seconds ahead, before anyio, trio or asyncio is imported: asyncio's loop
reads time.monotonic, trio reads time.perf_counter (bound at its import).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import datetime
    from collections.abc import Callable

#: No wait of a worker lasts longer than this (s): a worker whose test died ends by itself.
LONGEST = 60.0


def skew_clocks(seconds: float) -> None:
    """Make every clock of the process run *seconds* ahead (call before importing trio)."""
    nanos = round(seconds * 1e9)

    def ahead(clock: Callable[[], float]) -> Callable[[], float]:
        return lambda: clock() + seconds

    def ahead_ns(clock: Callable[[], int]) -> Callable[[], int]:
        return lambda: clock() + nanos

    time.time = ahead(time.time)
    time.monotonic = ahead(time.monotonic)
    time.perf_counter = ahead(time.perf_counter)
    time.time_ns = ahead_ns(time.time_ns)
    time.monotonic_ns = ahead_ns(time.monotonic_ns)
    time.perf_counter_ns = ahead_ns(time.perf_counter_ns)


def say(event: str, **fields: Any) -> None:
    """One line of JSON for the test."""
    print(json.dumps({"event": event, **fields}), flush=True)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "scenario",
        choices=["rate", "concurrency", "hold", "take", "mixed", "recover", "pause"],
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--backend", choices=["asyncio", "trio"], required=True)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--n", type=int, default=5)
    parser.add_argument("--size", type=int, default=20)
    parser.add_argument("--max-pending", type=int, default=4)
    parser.add_argument("--sleep", type=float, default=0.02)
    parser.add_argument("--lease", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--call-timeout", type=float, default=1.0)
    parser.add_argument("--recheck", type=float, default=1.0)
    parser.add_argument("--jobs", type=int, default=5)
    parser.add_argument("--skew", type=float, default=0.0)
    parser.add_argument("--pools", type=int, default=4)
    parser.add_argument("--hold", type=float, default=2.5)
    parser.add_argument("--delay", type=float, default=0.5)
    return parser.parse_args(argv)


def main(argv: list[str]) -> None:
    args = parse(argv)
    if args.skew:
        skew_clocks(args.skew)
    import anyio  # only now: trio binds time.perf_counter as it is imported

    anyio.run(run, args, backend=args.backend)


async def run(args: argparse.Namespace) -> None:
    import coredis

    from werkpool.redis import RedisStore

    async with (
        coredis.Redis(host="127.0.0.1", port=args.port) as client,
        coredis.Redis(host="127.0.0.1", port=args.port) as probe,
        RedisStore(
            client,
            prefix=args.prefix,
            lease=args.lease,
            timeout=args.timeout,
            call_timeout=args.call_timeout,
            recheck=args.recheck,
        ) as store,
    ):
        await client.ping()
        await probe.ping()
        scenario = SCENARIOS[args.scenario]
        await scenario(args, client, probe, store)


async def command(expected: str) -> None:
    """Wait (bounded) for the line *expected* on stdin; exit if stdin ends or says otherwise."""
    import anyio

    with anyio.fail_after(LONGEST):
        line = await anyio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
    if line.strip() != expected:
        raise SystemExit(f"expected {expected!r} on stdin, got {line!r}")


def outcomes(futures: list[Any]) -> tuple[int, dict[str, int]]:
    """How many futures returned, and the type names of the errors of the others."""
    ok = 0
    errors: dict[str, int] = {}
    for future in futures:
        assert future.done(), "a job's future is still pending after its pool closed"
        if future.cancelled():
            errors["cancelled"] = errors.get("cancelled", 0) + 1
        elif future.exception() is not None:
            name = type(future.exception()).__name__
            errors[name] = errors.get(name, 0) + 1
        else:
            ok += 1
    return ok, errors


async def noop() -> None:
    pass


async def keep_submitting(pool: Any, func: Callable[[], Any], seconds: float) -> list[Any]:
    """Submit *func* again and again (waiting for room under max_pending) for *seconds*."""
    import anyio

    futures: list[Any] = []
    with anyio.move_on_after(seconds):
        for _ in range(1_000_000):  # bounded: far more than any limit here lets start
            future = await pool.submit(func)
            futures.append(future)
    return futures


async def redis_skew(client: Any) -> float:
    """This process's time.time() less the server's TIME (about --skew)."""
    server: datetime.datetime = await client.time()
    return time.time() - server.timestamp()


# -- scenarios -----------------------------------------------------------------------------------


async def scenario_rate(args: argparse.Namespace, client: Any, probe: Any, store: Any) -> None:

    from werkpool import Rate, WorkerPool

    grants: list[float] = []
    store.on_grant = grants.append
    skew = await redis_skew(client)
    limits = [Rate(args.rate).shared(store, "api")]
    async with WorkerPool(size=args.size, max_pending=args.max_pending, limits=limits) as pool:
        say("ready")
        await command("go")
        futures = await keep_submitting(pool, noop, args.seconds)
    ok, errors = outcomes(futures)
    say("result", grants=grants, submitted=len(futures), ok=ok, errors=errors, skew=skew)


async def scenario_concurrency(
    args: argparse.Namespace, client: Any, probe: Any, store: Any
) -> None:
    import anyio

    from werkpool import Concurrency, WorkerPool

    counter = f"{args.prefix}:probe:running"
    seen: list[int] = []

    async def job() -> None:
        seen.append(await probe.incr(counter))
        try:
            await anyio.sleep(args.sleep)
        finally:
            with anyio.CancelScope(shield=True):
                await probe.decr(counter)

    limits = [Concurrency(args.n).shared(store, "conn")]
    async with WorkerPool(size=args.size, max_pending=args.max_pending, limits=limits) as pool:
        say("ready")
        await command("go")
        futures = await keep_submitting(pool, job, args.seconds)
    ok, errors = outcomes(futures)
    say("result", seen=seen, submitted=len(futures), ok=ok, errors=errors)


async def scenario_hold(args: argparse.Namespace, client: Any, probe: Any, store: Any) -> None:
    import anyio

    from werkpool import Concurrency, WorkerPool

    running = 0
    all_in = anyio.Event()

    async def job() -> None:
        nonlocal running
        running += 1
        if running == args.n:
            all_in.set()
        await anyio.sleep(LONGEST)  # "forever": the test kills this process long before

    limits = [Concurrency(args.n).shared(store, "conn")]
    async with WorkerPool(limits=limits) as pool:
        for _ in range(args.n):
            pool.run(job)
        with anyio.fail_after(LONGEST):
            await all_in.wait()
        members = await client.zrange(f"{args.prefix}:conn:concurrency", 0, -1)
        say("holding", id=store.id, members=[m.decode() for m in members])
        await anyio.sleep(LONGEST)
        raise SystemExit("the holder was not killed")  # cancels the jobs


async def scenario_take(args: argparse.Namespace, client: Any, probe: Any, store: Any) -> None:
    import anyio

    from werkpool import Concurrency, WorkerPool

    running = 0
    all_in = anyio.Event()
    done = anyio.Event()

    async def job() -> None:
        nonlocal running
        running += 1
        if running == args.n:
            all_in.set()
        with anyio.fail_after(LONGEST):
            await done.wait()

    limits = [Concurrency(args.n).shared(store, "conn")]
    futures: list[Any] = []
    async with WorkerPool(limits=limits) as pool:
        futures = [pool.run(job) for _ in range(args.n)]
        with anyio.fail_after(10):
            for _ in range(1000):  # bounded: 10 ms each
                if store.statistics().refused >= 1:
                    break
                await anyio.sleep(0.01)
        say("waiting", running=running, refused=store.statistics().refused)
        await command("go")
        began = anyio.current_time()
        acquired = False
        with anyio.move_on_after(args.lease + args.recheck + 5):
            await all_in.wait()
            acquired = True
        elapsed = anyio.current_time() - began
        members = await client.zrange(f"{args.prefix}:conn:concurrency", 0, -1)
        done.set()
    ok, errors = outcomes(futures)
    say(
        "result",
        id=store.id,
        acquired=acquired,
        running=running,
        elapsed=elapsed,
        members=[m.decode() for m in members],
        ok=ok,
        errors=errors,
    )


async def scenario_mixed(args: argparse.Namespace, client: Any, probe: Any, store: Any) -> None:
    import anyio

    from werkpool import Concurrency, Rate, WorkerPool

    grants: list[float] = []
    store.on_grant = grants.append
    intervals: list[tuple[float, float]] = []

    async def job() -> None:
        began = time.time()  # the wall clock: Redis TIME on this host
        try:
            await anyio.sleep(args.sleep)
        finally:
            intervals.append((began, time.time()))

    limits = [Rate(args.rate).shared(store, "api"), Concurrency(args.n).shared(store, "conn")]
    async with WorkerPool(size=args.size, max_pending=args.max_pending, limits=limits) as pool:
        say("ready")
        await command("go")
        futures = await keep_submitting(pool, job, args.seconds)
    ok, errors = outcomes(futures)
    say(
        "result",
        grants=grants,
        intervals=intervals,
        submitted=len(futures),
        ok=ok,
        errors=errors,
        statistics=str(store.statistics()),
    )


async def scenario_recover(args: argparse.Namespace, client: Any, probe: Any, store: Any) -> None:
    from contextlib import AsyncExitStack

    import anyio
    import coredis.exceptions

    from werkpool import Concurrency, WorkerPool

    running = most = 0
    all_in = anyio.Event()

    async def job(seconds: float) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        if running == args.n:
            all_in.set()
        try:
            await anyio.sleep(seconds)
        finally:
            running -= 1

    # The fault: the first SCRIPT LOAD after the server lost its scripts is slow (a latency
    # spike on one request). It is the load of whichever request met NOSCRIPT first.
    lost = delayed = False
    evalsha, script_load = client.evalsha, client.script_load

    async def watched_evalsha(*a: Any, **kw: Any) -> Any:
        nonlocal lost
        try:
            return await evalsha(*a, **kw)
        except coredis.exceptions.NoScriptError:
            lost = True
            raise

    async def slow_script_load(script: Any) -> Any:
        nonlocal delayed
        if lost and not delayed:
            delayed = True
            await anyio.sleep(args.delay)
        return await script_load(script)

    client.evalsha, client.script_load = watched_evalsha, slow_script_load

    def limits() -> list[Any]:
        return [Concurrency(args.n).shared(store, "conn")]

    async with AsyncExitStack() as stack:
        holder = await stack.enter_async_context(WorkerPool(limits=limits()))
        pools = [
            await stack.enter_async_context(WorkerPool(limits=limits())) for _ in range(args.pools)
        ]
        futures = [holder.run(job, args.hold) for _ in range(args.n)]
        with anyio.fail_after(LONGEST):
            await all_in.wait()
        say("holding")
        await command("go")
        futures += [pool.run(job, 0.2) for pool in pools]
    ok, errors = outcomes(futures)
    say(
        "result",
        most=most,
        delayed=delayed,
        ok=ok,
        errors=errors,
        submitted=len(futures),
        statistics=str(store.statistics()),
    )


async def scenario_pause(args: argparse.Namespace, client: Any, probe: Any, store: Any) -> None:
    import anyio

    from werkpool import Concurrency, Rate, WorkerPool

    limits = [Rate(args.rate).shared(store, "api"), Concurrency(args.n).shared(store, "conn")]

    async def batch(pool: WorkerPool) -> tuple[int, dict[str, int], float]:
        """Run --jobs jobs; wait (bounded) until every one resolves."""
        began = anyio.current_time()
        futures = [pool.run(noop) for _ in range(args.jobs)]
        with anyio.fail_after(args.timeout + args.call_timeout + 10):
            for future in futures:
                with contextlib.suppress(Exception):  # counted below, by type name
                    await future
        elapsed = anyio.current_time() - began
        ok, errors = outcomes(futures)
        return ok, errors, elapsed

    async with WorkerPool(limits=limits) as pool:
        ok, errors, _ = await batch(pool)
        say("phase1", ok=ok, errors=errors)
        await command("paused")
        ok, errors, elapsed = await batch(pool)
        say("phase2", ok=ok, errors=errors, elapsed=elapsed)
        await command("resumed")
        ok, errors, _ = await batch(pool)
        say("phase3", ok=ok, errors=errors)
    say("result", statistics=str(store.statistics()))


SCENARIOS = {
    "rate": scenario_rate,
    "concurrency": scenario_concurrency,
    "hold": scenario_hold,
    "take": scenario_take,
    "mixed": scenario_mixed,
    "recover": scenario_recover,
    "pause": scenario_pause,
}

if __name__ == "__main__":
    main(sys.argv[1:])
