"""Shared limits kept in a real Redis (werkpool.redis.RedisStore), with every pool in this process.

Several pools, each with a RedisStore (and a coredis client) of its own, stand for several
processes sharing one budget: the union of their starts, dated by Redis ``TIME`` through
``store.on_grant``, must keep each limit's contract; concurrency is counted from inside the jobs.
The failure policy runs on a private server the test stops, pauses and restarts.

Every test runs on asyncio and trio, on the real clock (``realclock``): the assertions are the
contracts (counts, windows of Redis-dated grants, peaks, every future resolved), never a duration
measured on the real clock. Every wait is bounded by :func:`anyio.fail_after`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import coredis
import pytest
from redis_server import stores
from support import echo, rate_violation

import werkpool
from werkpool import (
    Concurrency,
    LimitUnavailableError,
    Rate,
    SharedLimitError,
    Window,
    WorkerPool,
)
from werkpool.redis import RedisStore

if TYPE_CHECKING:
    from collections.abc import Hashable, Sequence

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

#: The slack of a Redis time: the script formats times with 6 decimals.
SLACK = 1e-6


# -- helpers -------------------------------------------------------------------------------------


def weighted_violation(
    grants: Sequence[tuple[float, float]], count: float, per: float, burst: float
) -> str | None:
    """The first run of grants (time, units) that holds more units than the weighted contract
    allows: a half-open window just longer than ``t[j] - t[i]`` may hold at most
    ``ceil(W * count / per) + burst - 1``, i.e. ``floor((t[j] - t[i]) * rate) + burst`` units."""
    ordered = sorted(grants)
    rate = count / per
    for i in range(len(ordered)):
        units = 0.0
        for j in range(i, len(ordered)):
            units += ordered[j][1]
            gap = ordered[j][0] - ordered[i][0]
            allowed = math.floor((gap + SLACK) * rate + 1e-9) + burst
            if units > allowed + 1e-9:
                return (
                    f"{units:g} units within {gap:.6f} s (from t={ordered[i][0]:.6f}); "
                    f"Rate({count}, {per}, burst={burst}) allows {allowed:g}"
                )
    return None


def window_violation(times: Sequence[float], count: int, per: float) -> str | None:
    """The first ``count + 1`` grants closer together than ``per`` (a window holding them)."""
    ordered = sorted(times)
    for i in range(len(ordered) - count):
        gap = ordered[i + count] - ordered[i]
        if gap < per - SLACK:
            return (
                f"{count + 1} grants within {gap:.6f} s (from t={ordered[i]:.6f}); "
                f"Window({count}, {per})"
            )
    return None


def most_in(times: Sequence[float], width: float) -> int:
    """The most of *times* in any half-open window of length *width* (Redis times are floats
    near 1.8e9, good to a few 1e-7 s: a time less than ``SLACK`` past the window is outside)."""
    ordered = sorted(times)
    best = j = 0
    for i, start in enumerate(ordered):
        j = max(j, i)
        while j < len(ordered) and ordered[j] < start + width - SLACK:
            j += 1
        best = max(best, j - i)
    return best


@dataclass
class Gauge:
    """Counts the attempts running now (all of them, and per key), with their peaks."""

    running: int = 0
    peak: int = 0
    by_key: dict[Hashable, int] = field(default_factory=dict)
    key_peak: dict[Hashable, int] = field(default_factory=dict)
    waiters: list[tuple[int, anyio.Event]] = field(default_factory=list)

    async def wait_running(self, n: int) -> None:
        """Until *n* attempts run at once (bound it with fail_after)."""
        if self.running < n:
            event = anyio.Event()
            self.waiters.append((n, event))
            await event.wait()

    def enter(self, key: Hashable = None) -> None:
        self.running += 1
        self.peak = max(self.peak, self.running)
        for n, event in self.waiters:
            if self.running >= n:
                event.set()
        if key is not None:
            n = self.by_key[key] = self.by_key.get(key, 0) + 1
            self.key_peak[key] = max(self.key_peak.get(key, 0), n)

    def leave(self, key: Hashable = None) -> None:
        self.running -= 1
        if key is not None:
            self.by_key[key] -= 1

    async def job(self, value: object, duration: float = 0.0, key: Hashable = None) -> object:
        self.enter(key)
        try:
            await anyio.sleep(duration)
        finally:
            self.leave(key)
        return value


def results(futures: Sequence[Any]) -> list[Any]:
    assert all(f.done() for f in futures)
    return [f.result() for f in futures]


def errors(futures: Sequence[Any]) -> list[BaseException | None]:
    assert all(f.done() for f in futures)
    return [f.exception() for f in futures]


async def zcard(client: coredis.Redis[bytes], key: str) -> int:
    return int(await client.zcard(key))


# -- 1, 2: rates and windows shared by two pools through two stores --------------------------------


@pytest.mark.parametrize(
    ("count", "burst", "jobs"),
    # 1/300 s has no 6-decimal form: the stored schedule must not drift ahead of the rate.
    [(100, 1, 60), (50, 3, 40), (300, 1, 150)],
)
async def test_a_shared_rate_holds_across_two_stores(
    redis_server: RedisServer, redis_prefix: str, count: int, burst: int, jobs: int
) -> None:
    """Two pools, two stores, one Rate: the union of the Redis-dated grants keeps the contract."""
    grants: list[float] = []
    started = {"a": 0, "b": 0}

    async def job(name: str, i: int) -> tuple[str, int]:
        started[name] += 1
        return name, i

    limit = Rate(count, burst=burst)
    async with stores(redis_server, redis_prefix) as (_, (one, two)):
        one.on_grant = two.on_grant = grants.append
        with anyio.fail_after(30):
            async with (
                WorkerPool(size=8, limits=[limit.shared(one, "api")]) as a,
                WorkerPool(size=8, limits=[limit.shared(two, "api")]) as b,
            ):
                futures = [
                    pool.run(job, name, i)
                    for i in range(jobs // 2)
                    for name, pool in (("a", a), ("b", b))
                ]
    assert results(futures) == [(name, i) for i in range(jobs // 2) for name in "ab"]
    assert len(grants) == jobs
    assert rate_violation(grants, count, burst) is None
    assert started["a"] > 0
    assert started["b"] > 0
    assert one.statistics().granted + two.statistics().granted == jobs


async def test_a_shared_window_holds_across_two_stores(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """Window(10, 0.2) through two stores: never more than 10 grants in any 0.2 s."""
    grants: list[float] = []
    started = {"a": 0, "b": 0}

    async def job(name: str, i: int) -> int:
        started[name] += 1
        return i

    limit = Window(10, 0.2)
    async with stores(redis_server, redis_prefix) as (_, (one, two)):
        one.on_grant = two.on_grant = grants.append
        with anyio.fail_after(30):
            async with (
                WorkerPool(size=6, limits=[limit.shared(one, "win")]) as a,
                WorkerPool(size=6, limits=[limit.shared(two, "win")]) as b,
            ):
                futures = [
                    pool.run(job, name, n) for n in range(20) for name, pool in (("a", a), ("b", b))
                ]
    assert results(futures) == [n for n in range(20) for _ in "ab"]
    assert len(grants) == 40
    assert window_violation(grants, 10, 0.2) is None
    assert most_in(grants, 0.2) == 10  # the window is used to the full
    assert started["a"] > 0
    assert started["b"] > 0


# -- 3: concurrency shared by two pools ------------------------------------------------------------


async def test_a_shared_concurrency_holds_across_two_stores(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """Concurrency(3) through two stores: never more than 3 running, 3 under load; no lease left."""
    gauge = Gauge()
    async with stores(redis_server, redis_prefix) as (admin, (one, two)):
        with anyio.fail_after(30):
            async with (
                WorkerPool(size=4, limits=[Concurrency(3).shared(one, "conn")]) as a,
                WorkerPool(size=4, limits=[Concurrency(3).shared(two, "conn")]) as b,
            ):
                futures = [
                    pool.run(gauge.job, (name, i), 0.02 + 0.01 * (i % 3))
                    for i in range(15)
                    for name, pool in (("a", a), ("b", b))
                ]
        assert await zcard(admin, f"{redis_prefix}:conn:concurrency") == 0
        assert await admin.exists([f"{redis_prefix}:conn:concurrency"]) == 0
    assert results(futures) == [(name, i) for i in range(15) for name in "ab"]
    assert gauge.peak == 3
    assert one.statistics().leases == two.statistics().leases == 0
    assert one.statistics().granted + two.statistics().granted == 30


# -- 4: weighted cost ------------------------------------------------------------------------------


async def test_a_shared_weighted_rate_counts_units(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """Rate(300 tokens/s, burst=300) through two stores, costs 1..60: the units of every window
    keep the weighted contract; a cost over the burst is refused at run(), naming the limit."""
    # Costs of 1/300 s per token that no 6-decimal time holds exactly (1, 4, 7, ... round down).
    costs = [1, 4, 60, 7, 25, 10, 40, 13]
    # The grant a worker task got last (the attempt it runs next is that grant's).
    last_grant: dict[int, float] = {}
    dated: list[tuple[float, float]] = []

    def on_grant(at: float) -> None:
        last_grant[anyio.get_current_task().id] = at

    async def job(i: int, cost: int) -> int:
        dated.append((last_grant.pop(anyio.get_current_task().id), cost))
        return i

    limit = Rate(300, unit="tokens", burst=300)
    async with stores(redis_server, redis_prefix) as (_, (one, two)):
        one.on_grant = two.on_grant = on_grant
        with anyio.fail_after(30):
            async with (
                WorkerPool(size=6, limits=[limit.shared(one, "tok")]) as a,
                WorkerPool(size=6, limits=[limit.shared(two, "tok")]) as b,
            ):
                with pytest.raises(ValueError, match="tok") as caught:
                    a.run(job, -1, 301, cost={"tokens": 301})
                assert "301" in str(caught.value)
                futures = [
                    pool.run(job, i, costs[i % len(costs)], cost={"tokens": costs[i % len(costs)]})
                    for i in range(16)
                    for pool in (a, b)
                ]
    assert results(futures) == [i for i in range(16) for _ in "ab"]
    assert len(dated) == 32
    assert sum(cost for _, cost in dated) == 4 * sum(costs) == 640  # 340 beyond the burst
    assert weighted_violation(dated, 300, 1.0, 300) is None


# -- 5: a local size and a shared rate together ----------------------------------------------------


async def test_a_local_size_and_a_shared_rate_hold_together(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """size=2 locally in each pool, Rate(200) shared: at most 2 running per pool, 2 reached; the
    union keeps the rate."""
    gauges = {"a": Gauge(), "b": Gauge()}
    grants: list[float] = []
    async with stores(redis_server, redis_prefix) as (_, (one, two)):
        one.on_grant = two.on_grant = grants.append
        with anyio.fail_after(30):
            async with (
                WorkerPool(size=2, limits=[Rate(200).shared(one, "mixed")]) as a,
                WorkerPool(size=2, limits=[Rate(200).shared(two, "mixed")]) as b,
            ):
                futures = [
                    pool.run(gauges[name].job, i, 0.004 * (i % 4))
                    for i in range(40)
                    for name, pool in (("a", a), ("b", b))
                ]
    assert results(futures) == [i for i in range(40) for _ in "ab"]
    assert gauges["a"].peak == gauges["b"].peak == 2
    assert len(grants) == 80
    assert rate_violation(grants, 200, 1) is None


# -- 6: per-key shared limits ----------------------------------------------------------------------


async def test_a_shared_per_key_concurrency_holds_per_key_across_stores(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """per_key Concurrency(1) through two stores: never 2 of one key at once, keys side by side;
    the keys' lease sets are gone once the pools end."""
    gauge = Gauge()
    keys = ["a", "b", "c"]
    async with stores(redis_server, redis_prefix) as (admin, (one, two)):
        with anyio.fail_after(30):
            async with (
                WorkerPool(size=4, per_key=[Concurrency(1).shared(one, "host")]) as p,
                WorkerPool(size=4, per_key=[Concurrency(1).shared(two, "host")]) as q,
            ):
                futures = [
                    pool.run(gauge.job, (k, i), 0.02, k, key=k)
                    for i in range(5)
                    for k in keys
                    for pool in (p, q)
                ]
        assert await admin.exists([f"{redis_prefix}:host:concurrency:{k}" for k in keys]) == 0
    assert results(futures) == [(k, i) for i in range(5) for k in keys for _ in "pq"]
    assert gauge.key_peak == {"a": 1, "b": 1, "c": 1}
    assert gauge.peak >= 2


async def test_a_saturated_key_does_not_hold_up_other_keys(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """A hot key with long jobs under a shared per-key Concurrency(1): the other keys' jobs all
    finish while the hot key still has jobs waiting; kill() gives the hot key's lease back."""
    others_done = anyio.Event()
    done = {"hot": 0, "cold": 0}

    async def job(key: str, duration: float) -> str:
        await anyio.sleep(duration)
        done["hot" if key == "hot" else "cold"] += 1
        if done["cold"] == 8:
            others_done.set()
        return key

    async with stores(redis_server, redis_prefix, 1, lease=30) as (admin, (store,)):
        with anyio.fail_after(30):
            async with WorkerPool(size=4, per_key=[Concurrency(1).shared(store, "host")]) as pool:
                hot = [pool.run(job, "hot", 5.0, key="hot") for _ in range(3)]
                cold = [pool.run(job, k, 0.01, key=k) for _ in range(4) for k in ("x", "y")]
                await others_done.wait()
                assert done["hot"] == 0
                assert not any(f.done() for f in hot)
                assert await zcard(admin, f"{redis_prefix}:host:concurrency:hot") == 1
                await pool.kill()
        # The lease is 30 s: only the release can have removed it.
        assert await admin.exists([f"{redis_prefix}:host:concurrency:hot"]) == 0
    assert results(cold) == ["x", "y"] * 4
    assert all(f.cancelled() for f in hot)
    assert store.statistics().leases == 0


async def test_idle_per_key_rate_keys_expire(redis_server: RedisServer, redis_prefix: str) -> None:
    """A shared per-key Rate keeps one key per limit key (a str verbatim, else its repr), and
    each expires once its rate is at rest."""
    async with stores(redis_server, redis_prefix, 1) as (admin, (store,)):
        with anyio.fail_after(30):
            async with WorkerPool(size=4, per_key=[Rate(20).shared(store, "prk")]) as pool:
                futures = [pool.run(anyio.sleep, 0, key=k) for _ in range(3) for k in ("x", 7)]
        names = [f"{redis_prefix}:prk:rate:x", f"{redis_prefix}:prk:rate:7"]
        assert await admin.exists(names) == 2
        ttl = max([int(await admin.pttl(name)) for name in names])
        # The script's expiry: ceil((tat - now) * 1000) + 1000 ms, tat at most 2/20 s ahead.
        assert 0 < ttl <= 1100
        await anyio.sleep(ttl / 1000 + 0.1)
        assert await admin.exists(names) == 0
    assert results(futures) == [None] * 6


# -- 7: FIFO ---------------------------------------------------------------------------------------


async def test_jobs_start_in_submission_order_under_a_shared_rate(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """With pipeline=1 (the exact order: a pool's requests go as a chain), each pool's jobs
    start in submission order under a shared Rate, while the other pool competes for it."""
    order: dict[str, list[int]] = {"a": [], "b": []}
    grants: list[float] = []

    async def job(name: str, i: int) -> int:
        order[name].append(i)
        return i

    async with stores(redis_server, redis_prefix, pipeline=1) as (_, (one, two)):
        one.on_grant = two.on_grant = grants.append
        with anyio.fail_after(30):
            async with (
                WorkerPool(size=8, limits=[Rate(500).shared(one, "fifo")]) as a,
                WorkerPool(size=8, limits=[Rate(500).shared(two, "fifo")]) as b,
            ):
                futures = [
                    pool.run(job, name, i)
                    for i in range(100)
                    for name, pool in (("a", a), ("b", b))
                ]
    assert results(futures) == [i for i in range(100) for _ in "ab"]
    # Each pool's 100 attempts were granted by the shared rate once each. (Whether a pool was
    # ever refused on the way depends on the timing of the other's requests: not asserted, it
    # failed this test on a busy machine where every request found a slot.)
    assert one.statistics().granted == 100
    assert two.statistics().granted == 100
    assert order == {"a": list(range(100)), "b": list(range(100))}
    assert rate_violation(grants, 500, 1) is None


async def test_pipeline_one_keeps_the_start_order_under_a_full_shared_concurrency_limit(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """With pipeline=1 the pool sends its admissions as a chain, several in one call: a
    refused link stops the later ones (the script does not ask them), and the granted ones
    start in submission order though one reply wakes their workers together (trio in any
    order). Two pools compete for Concurrency(2); each pool's jobs start in submission order,
    and far fewer ADMIT calls than admissions went out."""
    order: dict[str, list[int]] = {"a": [], "b": []}
    running = 0
    peak = 0

    async def job(name: str, i: int) -> int:
        nonlocal running, peak
        order[name].append(i)
        running += 1
        peak = max(peak, running)
        await anyio.sleep(0.001 * (i % 4))
        running -= 1
        return i

    async with stores(redis_server, redis_prefix, pipeline=1) as (_, (one, two)):
        with anyio.fail_after(60):
            async with (
                WorkerPool(size=8, limits=[Concurrency(2).shared(one, "order")]) as a,
                WorkerPool(size=8, limits=[Concurrency(2).shared(two, "order")]) as b,
            ):
                futures = [
                    pool.run(job, name, i) for i in range(60) for name, pool in (("a", a), ("b", b))
                ]
    assert results(futures) == [i for i in range(60) for _ in "ab"]
    assert order == {"a": list(range(60)), "b": list(range(60))}
    assert peak <= 2
    # The chains were cut short by full-limit refusals, and the pools asked again.
    assert one.statistics().refused + two.statistics().refused > 0
    assert one.statistics().granted == two.statistics().granted == 60


async def test_pipeline_one_sends_a_chain_of_admissions_per_call(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """pipeline=1 under a shared rate that never binds: 400 jobs start in submission order,
    with fewer than half as many ADMIT calls (EVALSHA, counted by the server) as admissions."""
    order: list[int] = []

    async def job(i: int) -> None:
        order.append(i)

    async with stores(redis_server, redis_prefix, 1, pipeline=1) as (admin, (store,)):

        async def evalsha_calls() -> int:
            stats = await admin.info("commandstats")
            return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))

        before = await evalsha_calls()
        with anyio.fail_after(60):
            async with WorkerPool(size=32, limits=[Rate(1e6).shared(store, "api")]) as pool:
                for i in range(400):
                    pool.start_soon(job, i)
        calls = await evalsha_calls() - before
    assert order == list(range(400))
    assert store.statistics().granted == 400
    assert calls < 200, f"{calls} EVALSHA calls for 400 admissions"


# -- 8: the failure policy, on a server of the test's own ------------------------------------------


def shared_pair(store: RedisStore) -> list[Any]:
    return [Rate(10).shared(store, "api"), Concurrency(2).shared(store, "conn")]


async def test_a_stopped_server_fails_attempts_then_a_retry_succeeds_once_it_is_back(
    private_redis: RedisServer, redis_prefix: str
) -> None:
    """Server down: attempts fail with LimitUnavailableError naming the limits, and no job code
    runs; with the error retryable, a retry after the server came back succeeds."""
    ran: list[int] = []

    async def job(i: int) -> int:
        ran.append(i)
        return i

    async with (
        coredis.Redis(host="127.0.0.1", port=private_redis.port) as client,
        RedisStore(client, prefix=redis_prefix, timeout=0.5, call_timeout=0.2) as store,
    ):
        private_redis.stop()
        with anyio.fail_after(20):
            async with WorkerPool(size=4, limits=shared_pair(store)) as pool:
                futures = [pool.run(job, i) for i in range(3)]
        failures = errors(futures)
        assert all(isinstance(e, LimitUnavailableError) for e in failures), failures
        message = str(failures[0])
        assert "'api'" in message
        assert "'conn'" in message
        assert "0.5" in message
        assert ran == []
        stats = store.statistics()
        assert stats.down
        assert stats.unavailable > 0
        assert stats.granted == 0

        failed = anyio.Event()

        def backoff(retry: int) -> float:
            failed.set()  # an attempt failed: the server comes back during its backoff
            return 0.3

        with anyio.fail_after(20):
            async with WorkerPool(size=4, limits=shared_pair(store)) as pool:
                future = pool.run(
                    job,
                    7,
                    retries=5,
                    retryable_exceptions=(LimitUnavailableError,),
                    backoff=backoff,
                )
                await failed.wait()
                assert ran == []
                await anyio.to_thread.run_sync(private_redis.start)
        assert future.result() == 7
        assert ran == [7]
        stats = store.statistics()
        assert not stats.down
        assert stats.granted == 1
        assert stats.leases == 0


async def test_a_paused_server_makes_admissions_wait_then_fail(
    private_redis: RedisServer, redis_prefix: str
) -> None:
    """SIGSTOP: every request times out; the attempts wait, then fail with
    LimitUnavailableError, no job code running. Once resumed, the store works again."""
    ran: list[int] = []

    async def job(i: int) -> int:
        ran.append(i)
        return i

    async with (
        coredis.Redis(host="127.0.0.1", port=private_redis.port) as client,
        RedisStore(client, prefix=redis_prefix, timeout=0.5, call_timeout=0.2) as store,
    ):
        with anyio.fail_after(20):
            async with WorkerPool(size=4, limits=shared_pair(store)) as pool:
                assert await pool.run(job, 0) == 0  # connected, scripts loaded
            private_redis.pause()
            try:
                async with WorkerPool(size=4, limits=shared_pair(store)) as pool:
                    futures = [pool.run(job, i) for i in range(1, 4)]
                stats = store.statistics()
            finally:
                private_redis.resume()
            failures = errors(futures)
            assert all(isinstance(e, LimitUnavailableError) for e in failures), failures
            assert "timeout is 0.5 s" in str(failures[0])
            assert ran == [0]
            assert stats.down
            assert stats.unavailable > 0
            assert stats.granted == 1

            async with WorkerPool(size=4, limits=shared_pair(store)) as pool:
                futures = [pool.run(job, i) for i in range(4, 7)]
        assert results(futures) == [4, 5, 6]
        assert not store.statistics().down


async def test_a_restart_mid_run_resolves_every_future_and_the_limits_hold_again(
    private_redis: RedisServer, redis_prefix: str
) -> None:
    """The server restarts (empty: no keys, no scripts) while two pools run under a shared Rate
    and Concurrency: nothing crashes, every future resolves, and the grants after the restart
    keep the rate (the script is loaded again after NOSCRIPT)."""
    grants: list[float] = []
    twenty = anyio.Event()

    def on_grant(at: float) -> None:
        grants.append(at)
        if len(grants) == 20:
            twenty.set()

    gauge = Gauge()
    options = {"lease": 0.6, "timeout": 5.0, "call_timeout": 0.3}
    async with stores(private_redis, redis_prefix, **options) as (admin, (one, two)):
        one.on_grant = two.on_grant = on_grant
        with anyio.fail_after(30):
            limits = [Rate(100).shared(one, "api"), Concurrency(3).shared(one, "conn")]
            others = [Rate(100).shared(two, "api"), Concurrency(3).shared(two, "conn")]
            async with (
                WorkerPool(size=6, limits=limits) as a,
                WorkerPool(size=6, limits=others) as b,
            ):
                futures = [
                    pool.run(gauge.job, i, 0.01 * (i % 4)) for i in range(25) for pool in (a, b)
                ]
                await twenty.wait()
                await anyio.to_thread.run_sync(private_redis.restart)
                restarted_at = (await admin.time()).timestamp()
        assert all(f.done() for f in futures)
        outcomes = [f.exception() or f.result() for f in futures]
        assert all(
            isinstance(o, LimitUnavailableError) or o == i
            for o, i in zip(outcomes, [i for i in range(25) for _ in "ab"], strict=True)
        ), outcomes
        after = [t for t in grants if t > restarted_at]
        assert after, "nothing was granted after the restart"
        assert rate_violation(after, 100, 1) is None
        assert one.statistics().leases == two.statistics().leases == 0
        assert await zcard(admin, f"{redis_prefix}:conn:concurrency") == 0


@pytest.mark.parametrize("b_used_it_before", [True, False], ids=["b-warm", "b-fresh"])
async def test_a_restart_does_not_let_a_shared_concurrency_overshoot(
    private_redis: RedisServer, redis_prefix: str, b_used_it_before: bool
) -> None:
    """Concurrency(3) held by pool A's 3 long attempts when the server restarts (empty): pool B,
    asking right after, must not get a 4th slot ("none granted twice"), whether B's store
    already used the server (it finds its scripts gone) or not (a process started since)."""
    gauge = Gauge()
    async with stores(private_redis, redis_prefix, lease=0.9, call_timeout=0.3) as (_, (one, two)):
        with anyio.fail_after(30):
            async with (
                WorkerPool(size=3, limits=[Concurrency(3).shared(one, "conn")]) as a,
                WorkerPool(size=3, limits=[Concurrency(3).shared(two, "conn")]) as b,
            ):
                if b_used_it_before:
                    assert await b.run(gauge.job, "warm") == "warm"
                held = [a.run(gauge.job, ("a", i), 1.0) for i in range(3)]
                await gauge.wait_running(3)
                await anyio.to_thread.run_sync(private_redis.restart)
                later = [b.run(gauge.job, ("b", i), 0.05) for i in range(3)]
        assert results(held) == [("a", i) for i in range(3)]
        assert results(later) == [("b", i) for i in range(3)]
        assert gauge.peak == 3, f"{gauge.peak} attempts ran under a shared Concurrency(3)"


async def test_the_degraded_mode_runs_jobs_under_the_local_share(
    private_redis: RedisServer, redis_prefix: str
) -> None:
    """local_share=0.5 with the server down: the jobs run, admitted locally, and a shared
    Concurrency(4) becomes at most 2 at once (2 reached)."""
    gauge = Gauge()
    async with (
        coredis.Redis(host="127.0.0.1", port=private_redis.port) as client,
        RedisStore(
            client, prefix=redis_prefix, timeout=0.5, call_timeout=0.2, local_share=0.5
        ) as store,
    ):
        private_redis.stop()
        with anyio.fail_after(20):
            async with WorkerPool(size=8, limits=[Concurrency(4).shared(store, "conn")]) as pool:
                futures = [pool.run(gauge.job, i, 0.02) for i in range(12)]
    assert results(futures) == list(range(12))
    assert gauge.peak == 2
    stats = store.statistics()
    assert stats.local == 12
    assert stats.granted == 0
    assert stats.down
    assert stats.leases == 0


# -- 9: a key of the wrong type --------------------------------------------------------------------


async def test_a_key_of_another_type_fails_the_attempt_naming_it(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """The rate's key holds a hash (another program uses the name): the attempt fails with
    SharedLimitError naming the key, the job never runs, and the hash is left as it was."""
    ran: list[str] = []

    async def job(name: str) -> str:
        ran.append(name)
        return name

    rate_key = f"{redis_prefix}:api:rate"
    conn_key = f"{redis_prefix}:conn:concurrency"
    async with stores(redis_server, redis_prefix, 1) as (admin, (store,)):
        await admin.hset(rate_key, {"x": "1"})
        await admin.set(conn_key, "1")
        with anyio.fail_after(20):
            async with (
                WorkerPool(limits=[Rate(10).shared(store, "api")]) as rated,
                WorkerPool(limits=[Concurrency(2).shared(store, "conn")]) as limited,
                WorkerPool(limits=[Rate(10).shared(store, "fine")]) as fine,
            ):
                futures = [rated.run(job, "rate"), limited.run(job, "conn"), fine.run(job, "ok")]
        assert await admin.hgetall(rate_key) == {b"x": b"1"}
        assert await admin.get(conn_key) == b"1"
    first, second, third = errors(futures)
    assert isinstance(first, SharedLimitError)
    assert rate_key in str(first)
    assert "hash" in str(first)
    assert isinstance(second, SharedLimitError)
    assert conn_key in str(second)
    assert third is None
    assert futures[2].result() == "ok"
    assert ran == ["ok"]


# -- 10: validation --------------------------------------------------------------------------------


async def test_shared_limit_values_are_checked(redis_server: RedisServer) -> None:
    """An adaptive rate, an empty name or a store that is not one are refused when shared; a
    kind and name given twice in one argument is refused by the pool."""
    async with coredis.Redis(host="127.0.0.1", port=redis_server.port) as client:
        store = RedisStore(client)
        with pytest.raises(ValueError, match="adaptive"):
            Rate(5, adaptive=True).shared(store, "x")
        with pytest.raises(ValueError, match="name"):
            Rate(5).shared(store, "")
        with pytest.raises(ValueError, match="name"):
            Window(5, 1.0).shared(store, "n" * 201)
        with pytest.raises(TypeError, match="store"):
            Rate(5).shared(object(), "x")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="name"):
            Concurrency(2).shared(store, 7)  # type: ignore[arg-type]
        shared = Rate(5).shared(store, "x")
        assert isinstance(shared, werkpool.Shared)
        assert (shared.limit, shared.store, shared.name, shared.kind) == (
            Rate(5),
            store,
            "x",
            "rate",
        )
        with pytest.raises(ValueError, match="twice"):
            WorkerPool(limits=[Rate(5).shared(store, "x"), Rate(7).shared(store, "x")])
        with pytest.raises(ValueError, match="twice"):
            WorkerPool(
                per_key=[Concurrency(1).shared(store, "h"), Concurrency(2).shared(store, "h")]
            )
        # Another kind under the same name is another limit.
        WorkerPool(limits=[Rate(5).shared(store, "x"), Window(5, 1.0).shared(store, "x")])


@pytest.mark.parametrize(
    ("options", "error", "names"),
    [
        ({"lease": 0}, ValueError, "lease"),
        ({"lease": "1"}, TypeError, "lease"),
        ({"timeout": -1}, ValueError, "timeout"),
        ({"call_timeout": math.inf}, ValueError, "call_timeout"),
        ({"recheck": math.nan}, ValueError, "recheck"),
        ({"local_share": 2}, ValueError, "local_share"),
        ({"local_share": 0}, ValueError, "local_share"),
        ({"prefix": "a b"}, ValueError, "prefix"),
        ({"prefix": ""}, ValueError, "prefix"),
    ],
)
async def test_store_arguments_are_checked(
    redis_server: RedisServer, options: dict[str, Any], error: type[Exception], names: str
) -> None:
    async with coredis.Redis(host="127.0.0.1", port=redis_server.port) as client:
        with pytest.raises(error, match=names):
            RedisStore(client, **options)


async def test_a_store_needs_a_coredis_client_and_must_be_entered(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """Not a client: TypeError. A pool whose store is not entered: RuntimeError at its start,
    saying to enter the store; entering a store twice: RuntimeError."""
    with pytest.raises(TypeError, match="coredis"):
        RedisStore("redis://127.0.0.1")  # type: ignore[arg-type]
    async with coredis.Redis(host="127.0.0.1", port=redis_server.port) as client:
        store = RedisStore(client, prefix=redis_prefix)
        pool = WorkerPool(limits=[Rate(5).shared(store, "x")])
        with pytest.raises(RuntimeError, match="enter it"):
            async with pool:
                pass
        async with store:
            with pytest.raises(RuntimeError, match="already running"):
                async with store:
                    pass
            async with WorkerPool(limits=[Rate(5).shared(store, "x")]) as pool:
                assert await pool.run(echo, 1) == 1


async def test_set_limits_keeps_the_shared_limits(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """set_limits() may change the local limits, but must name the shared ones as they are:
    dropping or changing one is a ValueError and changes nothing."""
    async with stores(redis_server, redis_prefix, 1) as (_, (store,)):
        shared = Rate(50).shared(store, "api")
        async with WorkerPool(size=2, limits=[Window(100, 1.0), shared]) as pool:
            before = pool.limits
            assert set(before) == {Window(100, 1.0), shared}
            cases: list[list[Window | werkpool.Shared]] = [
                [Window(100, 1.0)],  # dropped
                [Window(100, 1.0), Rate(60).shared(store, "api")],  # changed
                [Window(100, 1.0), Rate(50).shared(store, "other")],  # renamed
                [Window(100, 1.0), shared, Concurrency(3).shared(store, "more")],  # added
            ]
            for wrong in cases:
                with pytest.raises(ValueError, match="shared"):
                    pool.set_limits(wrong)
                assert pool.limits == before
            pool.set_limits([Window(200, 1.0), shared])
            assert set(pool.limits) == {Window(200, 1.0), shared}
            assert await pool.run(echo, 2) == 2


# -- 11: leases ------------------------------------------------------------------------------------


async def test_a_long_attempt_keeps_its_lease_by_renewal(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """lease=0.5 s, an attempt of 1.5 s under a shared Concurrency(1): its lease is renewed (never
    re-added), so another pool, through another store, never gets in while it runs."""
    name = f"{redis_prefix}:solo:concurrency"
    holding = {"a": False}
    seen: list[bool] = []
    began = anyio.Event()

    async def long() -> str:
        holding["a"] = True
        began.set()
        try:
            await anyio.sleep(1.5)
        finally:
            holding["a"] = False
        return "a"

    async def other(i: int) -> int:
        seen.append(holding["a"])
        return i

    async with stores(redis_server, redis_prefix, lease=0.5) as (admin, (one, two)):
        with anyio.fail_after(30):
            async with (
                WorkerPool(limits=[Concurrency(1).shared(one, "solo")]) as a,
                WorkerPool(limits=[Concurrency(1).shared(two, "solo")]) as b,
            ):
                first = a.run(long)
                await began.wait()
                others = [b.run(other, i) for i in range(3)]
                await anyio.sleep(1.0)  # two leases: only renewals keep it
                assert one.statistics().leases == 1
                assert await zcard(admin, name) == 1
                assert seen == []
                assert not any(f.done() for f in others)
        assert await admin.exists([name]) == 0
    assert first.result() == "a"
    assert results(others) == [0, 1, 2]
    assert seen == [False, False, False]
    for store in (one, two):
        stats = store.statistics()
        assert stats.leases == 0
        assert stats.reasserted == 0
        assert stats.orphans == 0


@pytest.mark.parametrize("how", ["kill", "cancel"])
async def test_killing_a_pool_releases_its_leases(
    redis_server: RedisServer, redis_prefix: str, how: str
) -> None:
    """kill(), or a cancelled `async with pool`, while 3 attempts hold shared slots: the slots
    are released at once (the lease is 30 s, so not by expiry)."""
    gauge = Gauge()
    name = f"{redis_prefix}:conn:concurrency"
    async with stores(redis_server, redis_prefix, 1, lease=30) as (admin, (store,)):
        with anyio.fail_after(20):
            with anyio.CancelScope() as scope:
                async with WorkerPool(limits=[Concurrency(3).shared(store, "conn")]) as pool:
                    futures = [pool.run(gauge.job, i, 30) for i in range(5)]
                    await gauge.wait_running(3)
                    assert await zcard(admin, name) == 3
                    assert store.statistics().leases == 3
                    if how == "kill":
                        await pool.kill()
                    else:
                        scope.cancel()
            assert scope.cancel_called == (how == "cancel")
        assert await admin.exists([name]) == 0
    assert all(f.cancelled() for f in futures)
    assert gauge.peak == 3
    assert gauge.running == 0
    assert store.statistics().leases == 0
    assert store.statistics().orphans == 0


# -- 12: pub/sub wakes a waiter --------------------------------------------------------------------


async def test_a_release_wakes_a_waiter_in_another_process(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """recheck=30 and lease=30: only a release message can wake B's refused job in time. A holds
    Concurrency(1) for 0.3 s; B's job starts right after, having asked only a few times."""
    began = anyio.Event()
    order: list[str] = []

    async def hold() -> str:
        began.set()
        await anyio.sleep(0.3)
        order.append("a")
        return "a"

    async def after() -> str:
        order.append("b")
        return "b"

    options = {"recheck": 30.0, "lease": 30.0}
    async with stores(redis_server, redis_prefix, **options) as (_, (one, two)):
        with anyio.fail_after(10):  # the fallback (30 s) would blow it
            async with (
                WorkerPool(limits=[Concurrency(1).shared(one, "one")]) as a,
                WorkerPool(limits=[Concurrency(1).shared(two, "one")]) as b,
            ):
                first = a.run(hold)
                await began.wait()
                second = b.run(after)
                assert await second == "b"
    assert first.result() == "a"
    assert order == ["a", "b"]
    assert 1 <= two.statistics().refused <= 3
    assert two.statistics().granted == 1


async def test_releases_wake_the_waiters_of_a_busy_limit(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """recheck=30 and lease=30, Concurrency(2) shared by two pools with many short jobs: releases
    come while refused requests are in flight; none may be lost (a lost one stalls a pool 30 s)."""
    gauge = Gauge()
    options = {"recheck": 30.0, "lease": 30.0}
    async with stores(redis_server, redis_prefix, **options) as (_, (one, two)):
        with anyio.fail_after(5):
            async with (
                WorkerPool(size=4, limits=[Concurrency(2).shared(one, "busy")]) as a,
                WorkerPool(size=4, limits=[Concurrency(2).shared(two, "busy")]) as b,
            ):
                futures = [
                    pool.run(gauge.job, i, 0.001 * (i % 3)) for i in range(30) for pool in (a, b)
                ]
    assert results(futures) == [i for i in range(30) for _ in "ab"]
    assert gauge.peak == 2
