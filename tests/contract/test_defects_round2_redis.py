"""Regression tests for the Redis defects of issue #21 (items 10, 11, 12, 16) and #25 (item 5).

Every test runs on asyncio and trio, on the real clock (``realclock``), against a redis-server
of the test's own (tests/redis_server.py) when it stops, flushes or pauses it. The assertions are
contracts (peaks of running attempts, leases in Redis, the window of starts, the exception that
leaves ``async with``), never a duration; every wait is bounded by :func:`anyio.fail_after`.
"""

from __future__ import annotations

import socket
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import coredis
import coredis.exceptions
import pytest
from support import echo

from werkpool import Concurrency, LimitUnavailableError, Rate, WorkerPool
from werkpool.redis import RedisStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from redis_server import RedisServer

pytestmark = [
    pytest.mark.realclock,
    # coredis 6.9 leaves the memory streams of a connection that failed to connect unclosed
    # (a ResourceWarning when it is collected): the tests that stop the server see them.
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in. <function MemoryObject"
        ":pytest.PytestUnraisableExceptionWarning"
    ),
    pytest.mark.filterwarnings("ignore:Unclosed <MemoryObject:ResourceWarning"),
]


# -- helpers --------------------------------------------------------------------------------------


@dataclass
class Gauge:
    """Counts the attempts running now, and their peak."""

    running: int = 0
    peak: int = 0
    waiters: list[tuple[int, anyio.Event]] = field(default_factory=list)

    async def job(self, value: object, duration: float = 0.0) -> object:
        self.running += 1
        self.peak = max(self.peak, self.running)
        for n, event in self.waiters:
            if self.running >= n:
                event.set()
        try:
            await anyio.sleep(duration)
        finally:
            self.running -= 1
        return value

    async def wait_running(self, n: int) -> None:
        """Until *n* attempts run at once (bound it with fail_after)."""
        if self.running < n:
            event = anyio.Event()
            self.waiters.append((n, event))
            await event.wait()


@asynccontextmanager
async def stores(
    server: RedisServer, prefix: str, count: int = 1, /, **options: Any
) -> AsyncIterator[tuple[coredis.Redis[bytes], list[RedisStore]]]:
    """An admin client, and *count* entered stores, each on a client of its own (a process's)."""
    async with AsyncExitStack() as stack:
        admin = await stack.enter_async_context(coredis.Redis(host="127.0.0.1", port=server.port))
        made: list[RedisStore] = []
        for _ in range(count):
            client = await stack.enter_async_context(
                coredis.Redis(host="127.0.0.1", port=server.port)
            )
            made.append(
                await stack.enter_async_context(RedisStore(client, prefix=prefix, **options))
            )
        yield admin, made


def results(futures: list[Any]) -> list[Any]:
    assert all(f.done() for f in futures)
    return [f.result() for f in futures]


def free_port() -> int:
    """A loopback port nothing listens on (taken, then let go)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- #21 item 12: FLUSHALL / FLUSHDB --------------------------------------------------------------


@pytest.mark.parametrize("command", ["FLUSHALL", "FLUSHDB"])
async def test_item12_a_flush_is_noticed_and_no_slot_is_granted_twice(
    private_redis: RedisServer, redis_prefix: str, command: str
) -> None:
    """A shared Concurrency(2) held by pool A's 2 long attempts when the server is flushed (the
    leases go, the scripts stay: no NOSCRIPT): pool B, through another store that used the
    server before, asks right after. No third attempt may start while A's run; A's leases are
    back in Redis."""
    gauge = Gauge()
    name = f"{redis_prefix}:conn:concurrency"
    options = {"lease": 0.9, "call_timeout": 0.3}
    async with stores(private_redis, redis_prefix, 2, **options) as (admin, (one, two)):
        with anyio.fail_after(30):
            async with (
                WorkerPool(size=2, limits=[Concurrency(2).shared(one, "conn")]) as a,
                WorkerPool(size=2, limits=[Concurrency(2).shared(two, "conn")]) as b,
            ):
                assert await b.run(gauge.job, "warm") == "warm"  # B knows the server
                held = [a.run(gauge.job, ("a", i), 1.2) for i in range(2)]
                await gauge.wait_running(2)
                assert int(await admin.zcard(name)) == 2
                await (admin.flushall() if command == "FLUSHALL" else admin.flushdb())
                assert int(await admin.zcard(name)) == 0
                later = [b.run(gauge.job, ("b", i), 0.05) for i in range(2)]
                await anyio.sleep(0.6)  # A renewed (every 0.3 s): its leases are back
                assert gauge.running == 2
                assert int(await admin.zcard(name)) == 2
        assert await admin.exists([name]) == 0
    assert results(held) == [("a", i) for i in range(2)]
    assert results(later) == [("b", i) for i in range(2)]
    assert gauge.peak == 2, f"{gauge.peak} attempts ran under a shared Concurrency(2)"


# -- #21 item 11: the degraded mode's attempts count in Redis once it is back ---------------------


@pytest.mark.parametrize("outage", ["pause", "restart"])
async def test_item11_attempts_the_local_share_admitted_count_in_redis_once_it_is_back(
    private_redis: RedisServer, redis_prefix: str, outage: str
) -> None:
    """local_share=0.5 and a shared Concurrency(4), one process: 2 long attempts admitted by the
    local share during an outage (a hung server, or a stopped one that comes back empty) are
    put in Redis as leases when it is back, so that at most 2 more start meanwhile; they are
    released when they end."""
    gauge = Gauge()
    name = f"{redis_prefix}:conn:concurrency"
    options = {"lease": 0.9, "call_timeout": 0.2, "timeout": 5.0, "local_share": 0.5}
    async with stores(private_redis, redis_prefix, 1, **options) as (admin, (store,)):
        with anyio.fail_after(30):
            async with WorkerPool(size=8, limits=[Concurrency(4).shared(store, "conn")]) as pool:
                assert await pool.run(gauge.job, "warm") == "warm"  # scripts and epoch known
                while await admin.exists([name]):  # noqa: ASYNC110 - its release is under way
                    await anyio.sleep(0.01)
                if outage == "pause":
                    private_redis.pause()
                else:
                    private_redis.stop()
                try:
                    local = [pool.run(gauge.job, ("local", i), 3.0) for i in range(2)]
                    await gauge.wait_running(2)
                    assert store.statistics().local == 2
                finally:
                    if outage == "pause":
                        private_redis.resume()
                    else:
                        await anyio.to_thread.run_sync(private_redis.start)
                later = [pool.run(gauge.job, ("later", i), 0.3) for i in range(4)]
                for future in later:
                    await future
                assert gauge.running == 2  # the local ones run on
                async with coredis.Redis(host="127.0.0.1", port=private_redis.port) as fresh:
                    assert int(await fresh.zcard(name)) == 2  # and Redis counts them
                assert store.statistics().leases == 2
        async with coredis.Redis(host="127.0.0.1", port=private_redis.port) as fresh:
            assert await fresh.exists([name]) == 0
    del admin  # its connection went with a stopped server: a fresh client checks
    assert results(local) == [("local", i) for i in range(2)]
    assert results(later) == [("later", i) for i in range(4)]
    assert gauge.peak == 4, f"{gauge.peak} attempts ran under a shared Concurrency(4)"
    stats = store.statistics()
    assert stats.leases == 0
    assert stats.reasserted >= 2


# -- #21 item 16: keys seen during an outage cost nothing once idle -------------------------------


async def test_item16_keys_seen_during_an_outage_cost_nothing_once_idle(
    private_redis: RedisServer, redis_prefix: str
) -> None:
    """A per-key shared Concurrency with local_share, the server down: 200 keys run under their
    local shares. Once they are idle (and the server is back), the pool's binding keeps no local
    share and no watch for any of them (R56)."""
    options = {"lease": 0.6, "call_timeout": 0.2, "local_share": 0.5, "recheck": 0.3}
    async with stores(private_redis, redis_prefix, 1, **options) as (_, (store,)):
        private_redis.stop()
        with anyio.fail_after(30):
            async with WorkerPool(size=8, per_key=[Concurrency(2).shared(store, "host")]) as pool:
                (binding,) = list(store._bindings)  # the pool's shared limits in the store
                futures = [pool.run(echo, i, key=f"k{i}") for i in range(200)]
                for future in futures:
                    await future
                assert store.statistics().local == 200
                await anyio.to_thread.run_sync(private_redis.start)
                await anyio.sleep(1.0)  # the degraded mode asks the server once a second
                assert await pool.run(echo, "back", key="back") == "back"
                assert store.statistics().granted == 1  # the server admitted it: it is back
                # The store lets go of idle keys at its renewals (every lease / 3).
                deadline = anyio.current_time() + 3.0
                while (binding._local or binding._watch) and anyio.current_time() < deadline:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
                assert len(binding._local) == 0, f"{len(binding._local)} local shares kept"
                assert len(binding._watch) == 0, f"{len(binding._watch)} watches kept"
    assert results(futures) == list(range(200))


# -- #25 item 5: no server, one clear error -------------------------------------------------------


@pytest.mark.parametrize("how", ["call", "run", "map"])
async def test_25_item5_no_server_leaves_async_with_as_one_clear_error(how: str) -> None:
    """No Redis server at all: the exception that leaves `async with RedisStore(client)` (the
    store enters the client) is the LimitUnavailableError itself, not coredis's ExceptionGroup
    around it, and its cause is the client's connection error."""
    client: coredis.Redis[bytes] = coredis.Redis(host="127.0.0.1", port=free_port())
    with anyio.fail_after(20), pytest.raises(LimitUnavailableError) as caught:
        async with (
            RedisStore(client, timeout=0.3, call_timeout=0.2) as store,
            WorkerPool(limits=[Rate(5).shared(store, "api")]) as pool,
        ):
            if how == "call":
                await pool.call(echo, 1)
            elif how == "run":
                await pool.run(echo, 1)
            else:
                async with pool.map(echo, range(3)) as outcomes:
                    async for _ in outcomes:
                        pass
    error = caught.value
    assert type(error) is LimitUnavailableError
    assert "unavailable" in str(error)
    assert isinstance(error.__cause__, coredis.exceptions.ConnectionError), error.__cause__


async def test_25_item5_a_store_enters_and_leaves_a_client_it_was_given_unentered(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """`async with RedisStore(coredis.Redis(...))`: the store enters the client and leaves it on
    exit; the client stays usable by the caller afterwards only if entered again."""
    client: coredis.Redis[bytes] = coredis.Redis(host="127.0.0.1", port=redis_server.port)
    with anyio.fail_after(20):
        async with RedisStore(client, prefix=redis_prefix) as store:
            async with WorkerPool(limits=[Concurrency(2).shared(store, "conn")]) as pool:
                assert await pool.call(echo, 1) == 1
            with pytest.raises(ValueError, match="mine"):
                async with WorkerPool(limits=[Concurrency(2).shared(store, "conn")]) as pool:
                    raise ValueError("mine")  # a body's error leaves as it is, too
    with pytest.raises(RuntimeError):
        _ = client.connection_pool.task_group  # left
