"""The ADMIT script of werkpool.redis against a model, on a real redis-server.

Hypothesis draws shared limits (rates, windows, concurrency limits, weighted or not) and a run of
admissions with costs, some attempts ending; each admission is sent to the script the way a pool
sends it, three at a time (the first alone, the other two sharing the next call). Whatever the
timing, the starts the script grants (dated by Redis TIME, at the slot it gives them) must keep
every limit's contract:

- a rate: in any half-open window of length W, at most W * count / per + burst units (GCRA);
- a window: at most ``count`` units in any window of ``per`` seconds;
- a concurrency limit: at most ``n`` units held at once;

and a refusal takes nothing, answering a wait that is not negative.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import coredis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from werkpool import Concurrency, Rate, Window
from werkpool.redis import RedisStore
from werkpool.redis._scripts import script_args as _args

if TYPE_CHECKING:
    from redis_server import RedisServer

pytestmark = pytest.mark.realclock

EPS = 1e-5  # Redis times travel as strings with 6 decimals
#: Admissions sent at once (the first alone, the others batched into the next call).
GROUP = 3

LimitValue = Rate | Window | Concurrency


def limits() -> st.SearchStrategy[LimitValue]:
    weighted = st.sampled_from([None, "tokens"])
    rate = st.builds(
        lambda count, per, burst, unit: Rate(
            count if unit else int(count) or 1, per, burst=burst if unit else int(burst), unit=unit
        ),
        st.integers(50, 2000),
        st.sampled_from([0.05, 0.1, 0.5]),
        st.integers(1, 5),
        weighted,
    )
    window = st.builds(
        lambda count, per, unit: Window(count, per, unit=unit),
        st.integers(2, 8),
        st.sampled_from([0.02, 0.05, 0.1]),
        weighted,
    )
    concurrency = st.builds(lambda n, unit: Concurrency(n, unit=unit), st.integers(1, 5), weighted)
    return st.one_of(rate, window, concurrency)


@dataclass
class Run:
    specs: list[LimitValue]
    #: Each step: (cost in "tokens", hold the lease for this many later steps).
    steps: list[tuple[int, int]] = field(default_factory=list)


runs = st.builds(
    Run,
    st.lists(limits(), min_size=1, max_size=3),
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 4)), min_size=5, max_size=40),
)


async def drive(port: int, prefix: str, run: Run) -> None:
    async with (
        coredis.Redis(host="127.0.0.1", port=port) as client,
        RedisStore(client, prefix=prefix, lease=30) as store,
    ):
        keys = [f"{prefix}:{i}" for i in range(len(run.specs))]
        grants: list[tuple[float, list[float]]] = []  # (start, cost per limit)
        held: list[tuple[int, list[tuple[str, str]]]] = []  # (release at step, leases)
        limit_keys = keys

        async def admit(step: int, tokens: int, hold: int) -> None:
            holder = store.holder()
            args: list[Any] = [holder, store.lease, 0.004]
            costs: list[float] = []
            leases: list[tuple[str, str]] = []
            for key, spec in zip(limit_keys, run.specs, strict=True):
                code, a, b = _args(spec.shared(store, "x"))
                cost = 1.0 if spec.unit is None else float(min(tokens, spec.capacity))
                costs.append(cost)
                args += [code, a, b, repr(cost), "0"]
                if code == "c" and cost > 0:
                    leases.append((key, f"{holder}|{cost!r}"))
            reply = await store.admit(keys, args)
            if int(reply[0]) == 1:
                grants.append((int(reply[1]) / 1e6, costs))
                if leases:
                    held.append((step + 1 + hold, leases))
            else:
                assert float(reply[1]) >= 0  # the wait for a rate or window
                assert float(reply[4]) >= 0  # the wait for a lease to end

        # The steps go in groups of GROUP at once: while the first of a group is in flight, the
        # others wait and go together, in one call of the script (as a pool's pipeline sends).
        for first in range(0, len(run.steps), GROUP):
            for due, ended in [h for h in held if h[0] <= first]:
                held.remove((due, ended))
                await store.call(
                    "release", [k for k, _ in ended], [store.channel, *(m for _, m in ended)]
                )
            async with anyio.create_task_group() as tg:
                for step in range(first, min(first + GROUP, len(run.steps))):
                    tg.start_soon(admit, step, *run.steps[step])
            if first % 2 == 0:
                await anyio.sleep(0.002)
        # Concurrency: the leases held never add up beyond n (checked in Redis itself).
        for key, spec in zip(limit_keys, run.specs, strict=True):
            if isinstance(spec, Concurrency):
                members = await client.zrange(key, 0, -1)
                held_units = sum(float(m.decode().rsplit("|", 1)[1]) for m in members)
                assert held_units <= spec.n + EPS
        check_contract(run.specs, grants)


def check_contract(specs: list[LimitValue], grants: list[tuple[float, list[float]]]) -> None:
    grants.sort(key=lambda g: g[0])
    for i, spec in enumerate(specs):
        starts = [(t, costs[i]) for t, costs in grants if costs[i] > 0]
        if isinstance(spec, Rate):
            for a in range(len(starts)):
                units = 0.0
                for b in range(a, len(starts)):
                    units += starts[b][1]
                    span = starts[b][0] - starts[a][0]
                    bound = span * spec.count / spec.per + spec.burst
                    assert units <= bound + EPS * spec.count / spec.per + 1e-9, (spec, starts)
        elif isinstance(spec, Window):
            for a in range(len(starts)):
                units = sum(c for t, c in starts[a:] if t < starts[a][0] + spec.per - EPS)
                assert units <= spec.count + 1e-9, (spec, starts)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(run=runs)
def test_the_script_keeps_every_limits_contract(
    redis_server: RedisServer, anyio_backend: Any, run: Run
) -> None:
    import uuid

    name, options = anyio_backend
    prefix = f"h{uuid.uuid4().hex[:10]}"
    anyio.run(drive, redis_server.port, prefix, run, backend=name, backend_options=options)


async def test_a_pools_concurrent_admissions_share_script_calls(
    redis_server: RedisServer, anyio_backend: Any
) -> None:
    """A pool with a shared rate and the default pipeline (8 admissions in flight): 400 jobs
    all run, with fewer EVALSHA calls than admissions (the ones that wait while a call is in
    flight go together), and the store counts 400 grants."""
    import uuid

    from werkpool import WorkerPool

    prefix = f"b{uuid.uuid4().hex[:10]}"
    async with (
        coredis.Redis(host="127.0.0.1", port=redis_server.port) as client,
        RedisStore(client, prefix=prefix) as store,
    ):

        async def evalsha_calls() -> int:
            stats = await client.info("commandstats")
            return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))

        ran = 0

        async def job() -> None:
            nonlocal ran
            ran += 1

        before = await evalsha_calls()
        async with WorkerPool(size=32, limits=[Rate(1e6).shared(store, "api")]) as pool:
            for _ in range(400):
                pool.start_soon(job)
        calls = await evalsha_calls() - before
        assert ran == 400
        assert store.statistics().granted == 400
        assert calls < 300, f"{calls} EVALSHA calls for 400 admissions"


async def test_a_chain_stops_at_its_first_refusal_within_one_call(
    redis_server: RedisServer, anyio_backend: Any
) -> None:
    """One ADMIT call, four attempts: chain x's first is refused (its concurrency limit is
    full); x's second, which its rate alone would grant, is not asked ({2}) and takes nothing;
    an attempt of no chain and one of chain y in the same call are asked as usual."""
    import uuid

    prefix = f"k{uuid.uuid4().hex[:10]}"
    async with (
        coredis.Redis(host="127.0.0.1", port=redis_server.port) as client,
        RedisStore(client, prefix=prefix) as store,
    ):
        full, rate = f"{prefix}:full", f"{prefix}:rate"
        await client.zadd(full, {"other|1.0": 1e12})  # another holder's lease, far from ending
        conc = _args(Concurrency(1).shared(store, "c"))
        every = _args(Rate(1000).shared(store, "r"))

        def attempt(chain: str, holder: str, kind: tuple[str, float, float]) -> list[Any]:
            return [1, chain, holder, store.lease, 0.004, *kind, "1.0", "0"]

        keys = [full, rate, rate, rate, f"{prefix}:restarted"]
        args = [
            4,
            *attempt("x", "h1", conc),
            *attempt("x", "h2", every),
            *attempt("-", "h3", every),
            *attempt("y", "h4", every),
        ]
        replies = await store.call("admit", keys, args)
        assert [int(reply[0]) for reply in replies] == [0, 2, 1, 1]
        assert len(replies[1]) == 1  # not asked: nothing else said
        # The rate granted two starts (h3, h4), not three: x's second took no slot.
        tat = int(await client.get(rate) or 0)
        first = int(replies[2][1])
        assert tat == pytest.approx(first + 2 * 1000, abs=2)


async def test_no_lease_is_taken_while_the_leases_are_put_back(
    redis_server: RedisServer, anyio_backend: Any
) -> None:
    """After a restart (the store's restart key says until when its running leases are put
    back), an attempt that would take a lease is refused, full and of the pool, with the time
    left as its hint, and takes nothing, not even the slot of a rate named before its
    concurrency limit; an attempt of rates alone is granted meanwhile."""
    import uuid

    prefix = f"k{uuid.uuid4().hex[:10]}"
    async with (
        coredis.Redis(host="127.0.0.1", port=redis_server.port) as client,
        RedisStore(client, prefix=prefix) as store,
    ):
        rate, slots, restarted = f"{prefix}:rate", f"{prefix}:slots", f"{prefix}:restarted"
        now = (await client.time()).timestamp()
        await client.set(restarted, repr(now + 5.0))
        every = _args(Rate(1000).shared(store, "r"))
        conc = _args(Concurrency(3).shared(store, "c"))

        def attempt(holder: str, *kinds: tuple[str, float, float]) -> list[Any]:
            per_key = [x for kind in kinds for x in (*kind, "1.0", "0")]
            return [len(kinds), "-", holder, store.lease, 0.004, *per_key]

        replies = await store.call(
            "admit", [rate, slots, restarted], [1, *attempt("h1", every, conc)]
        )
        assert int(replies[0][0]) == 0
        assert (int(replies[0][2]), int(replies[0][3])) == (1, 1)  # full, the pool's
        assert 4.0 < float(replies[0][4]) <= 5.0  # until the leases are back
        assert await client.get(rate) is None  # the rate's slot was not taken
        assert await client.zcard(slots) == 0
        replies = await store.call("admit", [rate, restarted], [1, *attempt("h2", every)])
        assert int(replies[0][0]) == 1
        assert await client.get(rate) is not None
