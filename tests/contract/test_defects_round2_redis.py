"""Regression tests for the Redis defects of issue #21 (items 10, 11, 12, 16) and #25 (item 5).

Every test runs on asyncio and trio. Those with Redis run on the real clock (``realclock``),
against a redis-server of the test's own (tests/redis_server.py) when they stop, flush or pause
it, or behind a proxy that delays every byte (a distant server); the one with a fake remote limit
runs on virtual time. The assertions are contracts (peaks of running attempts, leases in Redis,
the window of starts, the exception that leaves ``async with``), never a duration; every wait
is bounded by :func:`anyio.fail_after`.
"""

from __future__ import annotations

import itertools
import math
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import coredis
import coredis.exceptions
import pytest
from redis_server import stores
from support import FakeRemoteLimit, echo, remote_limits

from werkpool import Concurrency, LimitUnavailableError, Rate, Window, WorkerPool
from werkpool.redis import RedisStore

if TYPE_CHECKING:
    from collections.abc import Sequence

    from anyio.abc import SocketStream
    from redis_server import RedisServer

pytestmark = [
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


def results(futures: list[Any]) -> list[Any]:
    assert all(f.done() for f in futures)
    return [f.result() for f in futures]


class DelayProxy:
    """A TCP proxy on 127.0.0.1 that delays every byte by *one_way* seconds in each direction:
    a Redis server that far away (a round trip of ``2 * one_way``), in order."""

    def __init__(self, upstream_port: int, one_way: float) -> None:
        self.upstream_port = upstream_port
        self.one_way = one_way
        self.port = 0

    async def _pump(self, source: SocketStream, sink: SocketStream) -> None:
        send, receive = anyio.create_memory_object_stream[tuple[float, bytes]](math.inf)

        async def deliver() -> None:
            async with receive:
                async for due, data in receive:
                    await anyio.sleep(max(due - anyio.current_time(), 0.0))
                    await sink.send(data)

        async with anyio.create_task_group() as tg:
            tg.start_soon(deliver)
            async with send:
                try:
                    while True:
                        data = await source.receive()
                        await send.send((anyio.current_time() + self.one_way, data))
                except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                    pass
        with anyio.CancelScope(shield=True):
            await sink.aclose()

    async def _serve_one(self, client: SocketStream) -> None:
        async with client:
            try:
                upstream = await anyio.connect_tcp("127.0.0.1", self.upstream_port)
            except OSError:
                return
            async with upstream, anyio.create_task_group() as tg:
                tg.start_soon(self._pump, client, upstream)
                tg.start_soon(self._pump, upstream, client)

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        async with listener:
            self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
            task_status.started()
            await listener.serve(self._serve_one)


def crowded(starts: Sequence[float], count: int, per: float, slack: float = 0.001) -> str | None:
    """The first ``count + 1`` starts within less than *per* (a Window(count, per) broken), with
    *slack* for the moment a job reads the clock after its start was dated."""
    ordered = sorted(starts)
    for i in range(len(ordered) - count):
        gap = ordered[i + count] - ordered[i]
        if gap < per - slack:
            return f"{count + 1} starts within {gap:.4f} s (from t={ordered[i]:.4f})"
    return None


def free_port() -> int:
    """A loopback port nothing listens on (taken, then let go)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- #21 item 12: FLUSHALL / FLUSHDB --------------------------------------------------------------


@pytest.mark.realclock
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


@pytest.mark.realclock
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


@pytest.mark.realclock
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
                (binding,) = list(store._shared)  # the pool's shared limits in the store
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


@pytest.mark.realclock
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


@pytest.mark.realclock
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


# -- #21 item 10: set_limits() on a pool that pipelines its Redis requests ------------------------


@pytest.mark.realclock
@pytest.mark.parametrize(
    ("change", "round_trip"),
    [("window", 0.2), ("window", 0.5), ("rate", 0.2)],
    ids=["window-200ms", "window-500ms", "rate-200ms"],
)
async def test_item10_a_rate_or_window_given_by_set_limits_holds_with_a_distant_redis(
    redis_server: RedisServer, redis_prefix: str, change: str, round_trip: float
) -> None:
    """A pool with only a shared Concurrency keeps up to 8 requests in flight (Redis 200 or
    500 ms away). set_limits() adds Window(4, per=0.5) (or `pool.rate = 8`) while 8 are in
    flight: every job runs once, and the starts from then on keep the new limit, those whose
    requests were in flight at the change included (they ask again under it)."""
    starts: list[float] = []

    async def job(i: int) -> int:
        starts.append(anyio.current_time())
        await anyio.sleep(0.3)
        return i

    with anyio.fail_after(60):
        async with anyio.create_task_group() as proxies:
            proxy = DelayProxy(redis_server.port, round_trip / 2)
            await proxies.start(proxy.serve)
            client: coredis.Redis[bytes] = coredis.Redis(host="127.0.0.1", port=proxy.port)
            async with RedisStore(
                client, prefix=redis_prefix, call_timeout=5 * round_trip
            ) as store:
                shared = Concurrency(100).shared(store, "conn")
                async with WorkerPool(size=16, limits=[shared]) as pool:
                    assert await pool.run(job, -1) == -1  # connected, scripts loaded
                    futures = []
                    for i in range(12):
                        futures.append(pool.run(job, i))
                        await anyio.lowlevel.checkpoint()  # a worker sends its request
                    await anyio.sleep(round_trip / 4)  # 8 requests are on their way
                    changed_at = anyio.current_time()
                    if change == "window":
                        pool.set_limits([Window(4, per=0.5), shared])
                    else:
                        pool.rate = 8
            proxies.cancel_scope.cancel()
    assert results(futures) == list(range(12))
    after = [t for t in starts if t >= changed_at]
    assert len(after) == 12
    assert crowded(after, 4, 0.5) is None  # Window(4, 0.5); rate=8 allows no more either
    if change == "rate":
        ordered = sorted(after)
        gaps = [b - a for a, b in itertools.pairwise(ordered)]
        assert min(gaps) >= 0.125 - 0.001, f"starts {min(gaps):.4f} s apart under rate=8"


@pytest.mark.realclock
async def test_item10_a_window_shorter_than_the_round_trip_does_not_crash(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """Window(3, per=0.05) locally, a shared Concurrency(1) in a Redis 200 ms away, jobs coming
    in one by one: an admission leaves the window while its request is in flight, then is
    granted (its start counts from then) or refused (nothing to take back). No job fails with an
    IndexError of the window, every job runs once, and the window holds."""
    starts: list[float] = []

    async def job(i: int) -> int:
        starts.append(anyio.current_time())
        await anyio.sleep(0.02)
        return i

    with anyio.fail_after(60):
        async with anyio.create_task_group() as proxies:
            proxy = DelayProxy(redis_server.port, 0.1)
            await proxies.start(proxy.serve)
            client: coredis.Redis[bytes] = coredis.Redis(host="127.0.0.1", port=proxy.port)
            async with RedisStore(client, prefix=redis_prefix, call_timeout=1.0) as store:
                limits = [Window(3, per=0.05), Concurrency(1).shared(store, "conn")]
                async with WorkerPool(size=4, limits=limits) as pool:
                    futures = []
                    for i in range(10):
                        futures.append(pool.run(job, i))
                        await anyio.sleep(0.03)
            proxies.cancel_scope.cancel()
    assert results(futures) == list(range(10))
    assert crowded(starts, 3, 0.05) is None


class PipelinedRemote(FakeRemoteLimit):
    """A fake remote limit that, like a RedisStore, lets 8 requests be in flight at once."""

    pipeline = 8

    def __init__(self, latency: float) -> None:
        super().__init__(latency=latency)
        self.in_flight = 0
        self.most_in_flight = 0

    async def acquire(self, job: Any) -> Any:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            return await super().acquire(job)
        finally:
            self.in_flight -= 1


async def test_item10_set_limits_switches_pipelining_off_and_on() -> None:
    """Virtual time, a remote limit 0.2 s away that pipelines: adding a Window by set_limits()
    while 8 requests are in flight makes the pool ask one at a time (the 8 ask again under the
    window, which holds); taking it away lets it pipeline again. Every credit comes back."""
    remote = PipelinedRemote(latency=0.2)
    starts: list[float] = []

    async def job(i: int) -> int:
        starts.append(anyio.current_time())
        await anyio.sleep(0.3)
        return i

    shared = remote_limits(remote)  # (set_limits() keeps a pool's shared limits as they are)
    pool = WorkerPool(size=16, limits=shared)
    async with pool:
        assert await pool.run(job, -1) == -1
        futures = []
        for i in range(12):
            futures.append(pool.run(job, i))
            await anyio.lowlevel.checkpoint()
        await anyio.sleep(0.05)
        in_flight = remote.in_flight
        assert in_flight > 4  # more than the window allows at once
        changed_at = anyio.current_time()
        pool.set_limits([Window(4, per=0.5), *shared])
        for future in futures:
            await future
        remote.most_in_flight = 0
        pool.set_limits(shared)
        again = []
        for i in range(12):
            again.append(pool.run(job, i))
            await anyio.lowlevel.checkpoint()
        for future in again:
            await future
    assert results(futures) == list(range(12))
    assert results(again) == list(range(12))
    after = [t for t in starts if t >= changed_at]
    assert crowded(after[:12], 4, 0.5, slack=0.0) is None
    assert remote.most_in_flight > 4  # pipelining again
    assert (remote.held, remote.errors) == (0, [])
    # The ones in flight at the change were granted twice (the first grant given back).
    assert remote.grants == remote.releases == 1 + in_flight + 12 + 12
