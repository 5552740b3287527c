"""#22 items 1 and 4: pushback scoped to what refused, the adaptive control law, and cost
settled after the call (refunded on a refusal).

Every test runs on asyncio and trio, on virtual time.

Which refusal pauses what:

- a key's refusal (``RetryAfter`` from a job with a key, or ``scope="key"``) pauses that key and
  slows only its adaptive limits;
- a pool's refusal (``scope="pool"``, or a job without a key) pauses the pool and slows the
  pool's adaptive limits;
- a named limit's refusal (``scope=<name>``) holds that limit only.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import anyio
import pytest
from anyio.lowlevel import checkpoint
from support import approx

import werkpool
from werkpool import Concurrency, Rate, RetryAfter, Window, WorkerPool, settle


class Jobs:
    """Jobs that record their start times by label, and may sleep, settle or refuse."""

    def __init__(self) -> None:
        self.starts: dict[object, list[float]] = {}

    async def job(
        self,
        label: object,
        error: BaseException | None = None,
        duration: float = 0.0,
        actual: dict[str, float] | None = None,
    ) -> object:
        self.starts.setdefault(label, []).append(anyio.current_time())
        if actual is not None:
            settle(cost=actual)
        if duration:
            await anyio.sleep(duration)
        else:
            await checkpoint()
        if error is not None and len(self.starts[label]) == 1:
            raise error
        return label

    def first(self, label: object, t0: float) -> float:
        return self.starts[label][0] - t0


def rate_of(pool: WorkerPool, unit: str | None = None) -> float | None:
    """The effective rate of the pool's rate limit counting *unit*."""
    (stats,) = [s for s in pool.statistics().limits if s.kind == "rate" and s.unit == unit]
    return stats.effective_rate


# -- scope rules ---------------------------------------------------------------------------------


async def test_a_keys_refusal_pauses_only_that_key_and_slows_only_its_adaptive_limits() -> None:
    """A key's 429 (the default scope of a job with a key): key a waits out its 1 s pause, key b
    starts at once, and the pool's adaptive rate keeps its 10/s (it used to halve)."""
    jobs = Jobs()
    t0 = anyio.current_time()
    async with WorkerPool(
        limits=[Rate(100, per=10, burst=10, adaptive=True)],
        per_key=[Rate(10, burst=10, adaptive=True)],
    ) as pool:
        with pytest.raises(RetryAfter):
            await pool.run(jobs.job, "a1", RetryAfter(1), key="a")
        assert rate_of(pool) == 10
        assert not pool.paused
        pool.run(jobs.job, "a2", key="a")
        pool.run(jobs.job, "b", key="b")
    assert jobs.first("b", t0) == approx(0)
    assert jobs.first("a2", t0) == approx(1)


async def test_a_refusal_of_a_job_without_a_key_pauses_the_pool() -> None:
    jobs = Jobs()
    t0 = anyio.current_time()
    async with WorkerPool(limits=[Rate(100, per=10, burst=10, adaptive=True)]) as pool:
        with pytest.raises(RetryAfter):
            await pool.run(jobs.job, "x", RetryAfter(1))
        assert rate_of(pool) == approx(5)
        pool.run(jobs.job, "b", key="b")
    assert jobs.first("b", t0) == approx(1)


async def test_a_pool_refusal_from_a_keyed_job_pauses_the_whole_pool() -> None:
    """``RetryAfter(1, scope="pool")`` from key a: key b waits too, and the pool's adaptive
    rate halves (the key's adaptive rate does not)."""
    jobs = Jobs()
    t0 = anyio.current_time()
    async with WorkerPool(
        limits=[Rate(100, per=10, burst=10, adaptive=True)],
        per_key=[Rate(10, burst=10, adaptive=True)],
    ) as pool:
        with pytest.raises(RetryAfter):
            await pool.run(jobs.job, "a", RetryAfter(1, scope="pool"), key="a")
        assert rate_of(pool) == approx(5)
        assert pool.paused
        pool.run(jobs.job, "b", key="b")
    assert jobs.first("b", t0) == approx(1)


async def test_a_named_rate_refusal_holds_only_that_rate() -> None:
    """``scope="tpm"``: the token rate is held for 2 s (and halves, adaptive); a job that costs
    no tokens starts at once, one that costs tokens waits for the end of the hold."""
    jobs = Jobs()
    t0 = anyio.current_time()
    async with WorkerPool(
        limits=[
            Rate(100, per=10, burst=10, name="rpm"),
            Rate(1000, burst=1000, unit="tokens", adaptive=True, name="tpm"),
        ]
    ) as pool:
        with pytest.raises(RetryAfter):
            await pool.run(jobs.job, "x", RetryAfter(2, scope="tpm"), cost={"tokens": 10})
        assert not pool.paused
        assert rate_of(pool, "tokens") == approx(500)
        assert rate_of(pool) == approx(10)
        pool.run(jobs.job, "free")
        pool.run(jobs.job, "tokens", cost={"tokens": 10})
    assert jobs.first("free", t0) == approx(0)
    # One token fits as the hold ends, then the rate (500/s, regrowing): 9 more take < 0.02 s.
    assert 2 < jobs.first("tokens", t0) < 2.02


@pytest.mark.parametrize("kind", ["window", "concurrency"])
async def test_a_named_window_or_concurrency_refusal_holds_only_it(kind: str) -> None:
    """A window or a concurrency limit named by a pushback admits nothing that counts in it
    for the pause; jobs that cost nothing in its unit go on."""
    limit = (
        Window(1000, per=1, unit="tokens", name="tpm")
        if kind == "window"
        else Concurrency(1000, unit="tokens", name="tpm")
    )
    jobs = Jobs()
    t0 = anyio.current_time()
    async with WorkerPool(limits=[Rate(100, burst=10), limit]) as pool:
        with pytest.raises(RetryAfter):
            await pool.run(jobs.job, "x", RetryAfter(3, scope="tpm"), cost={"tokens": 10})
        pool.run(jobs.job, "free")
        pool.run(jobs.job, "tokens", cost={"tokens": 10})
    assert jobs.first("free", t0) == approx(0)
    assert jobs.first("tokens", t0) == approx(3)


async def test_a_named_per_key_limit_refusal_holds_only_that_keys_limit() -> None:
    """``per_key=[Rate(..., name="kt")]``: ``scope="kt"`` from key a holds a's token rate only."""
    jobs = Jobs()
    t0 = anyio.current_time()
    async with WorkerPool(per_key=[Rate(1000, burst=1000, unit="tokens", name="kt")]) as pool:
        with pytest.raises(RetryAfter):
            await pool.run(jobs.job, "x", RetryAfter(2, scope="kt"), key="a", cost={"tokens": 5})
        pool.run(jobs.job, "a-free", key="a")
        pool.run(jobs.job, "a-tokens", key="a", cost={"tokens": 5})
        pool.run(jobs.job, "b-tokens", key="b", cost={"tokens": 5})
    assert jobs.first("a-free", t0) == approx(0)
    assert jobs.first("b-tokens", t0) == approx(0)
    assert jobs.first("a-tokens", t0) == approx(2.004)  # 1 token at 2 s, then 4 at 1000/s


async def test_a_scope_that_names_no_limit_fails_the_job_with_a_value_error() -> None:
    jobs = Jobs()
    async with WorkerPool(limits=[Rate(10, name="rpm")]) as pool:
        future = pool.run(jobs.job, "x", RetryAfter(1, scope="tpm"))
        with pytest.raises(ValueError, match=r"scope 'tpm' names no limit.*'rpm'") as caught:
            await future
        assert isinstance(caught.value.__cause__, RetryAfter)
        assert not pool.paused


async def test_retry_after_may_return_a_retry_after_with_a_scope() -> None:
    """``retry_after=`` returning ``RetryAfter(1, scope="pool")`` for a keyed job's error."""

    class TooMany(Exception):
        pass

    jobs = Jobs()
    t0 = anyio.current_time()
    async with WorkerPool(
        retry_after=lambda error: (
            RetryAfter(1, scope="pool") if isinstance(error, TooMany) else None
        )
    ) as pool:
        with pytest.raises(TooMany):
            await pool.run(jobs.job, "a", TooMany(), key="a")
        pool.run(jobs.job, "b", key="b")
    assert jobs.first("b", t0) == approx(1)


async def test_push_back_with_a_scope() -> None:
    """``pool.push_back(scope=)``: "key" pauses the key only, a name holds that limit only."""
    jobs = Jobs()
    async with WorkerPool(
        limits=[Rate(1000, burst=1000, unit="tokens", name="tpm", adaptive=True)]
    ) as pool:
        t0 = anyio.current_time()
        pool.push_back(1, key="a", scope="key")
        pool.push_back(2, scope="tpm")
        assert not pool.paused
        assert rate_of(pool, "tokens") == approx(500)
        pool.run(jobs.job, "a", key="a")
        pool.run(jobs.job, "b", key="b")
        pool.run(jobs.job, "b-tokens", key="b", cost={"tokens": 1})
    assert jobs.first("a", t0) == approx(1)
    assert jobs.first("b", t0) == approx(0)
    assert jobs.first("b-tokens", t0) == approx(2)


# -- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scope", "error", "match"),
    [
        (3, TypeError, "RetryAfter: scope must be .* not int"),
        ("", ValueError, "RetryAfter: scope must be .* got ''"),
        ("x" * 101, ValueError, "at most 100 characters"),
    ],
)
def test_retry_after_checks_its_scope(scope: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        RetryAfter(1, scope=scope)


@pytest.mark.parametrize("kind", [Rate, Window, Concurrency])
@pytest.mark.parametrize(
    ("name", "error", "match"),
    [
        (3, TypeError, "name must be None or a str, not int"),
        ("", ValueError, "name must be a non-empty str"),
        ("x" * 101, ValueError, "name must be a non-empty str of at most 100 characters"),
        ("key", ValueError, "name must not be 'key'"),
        ("pool", ValueError, "name must not be 'pool'"),
    ],
)
def test_limit_values_check_their_name(
    kind: Any, name: Any, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=f"{kind.__name__}: {match}"):
        kind(10, 1, name=name) if kind is not Concurrency else kind(10, name=name)


def test_a_name_shows_in_the_repr_and_two_limits_may_not_share_one() -> None:
    assert repr(Rate(10, name="rpm")) == "Rate(10, per=1, burst=1, name='rpm')"
    assert repr(Window(10, per=1, name="w")) == "Window(10, per=1, name='w')"
    assert repr(Concurrency(2, name="c")) == "Concurrency(2, name='c')"
    with pytest.raises(ValueError, match="limits names two limits 'rpm'"):
        WorkerPool(limits=[Rate(10, name="rpm"), Window(100, per=10, name="rpm")])


async def test_push_back_checks_its_scope() -> None:
    async with WorkerPool(limits=[Rate(10, name="rpm")]) as pool:
        with pytest.raises(TypeError, match=r"push_back: scope must be .* not int"):
            pool.push_back(1, scope=3)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="scope='key' needs key="):
            pool.push_back(1, scope="key")
        with pytest.raises(ValueError, match="scope 'tpm' names no limit"):
            pool.push_back(1, scope="tpm")
        assert not pool.paused


async def test_settle_checks_its_argument_and_where_it_is_called() -> None:
    with pytest.raises(RuntimeError, match="inside a running job"):
        settle(cost={"tokens": 1})
    seen: list[BaseException] = []

    async def job(cost: Any) -> None:
        try:
            settle(cost=cost)
        except (TypeError, ValueError) as error:
            seen.append(error)

    async with WorkerPool(limits=[Rate(100, burst=100, unit="tokens")]) as pool:
        for bad in (5, {1: 2}, {"tokens": "x"}, {"tokens": -1}, {"tokens": float("nan")}, {"t": 1}):
            await pool.run(job, bad)
    messages = [f"{type(e).__name__}: {e}" for e in seen]
    assert messages == [
        "TypeError: settle: cost must be a mapping of unit names to numbers, not int",
        "TypeError: settle: cost's units must be str, not int",
        "TypeError: settle: cost['tokens'] must be a finite number >= 0, not str",
        "ValueError: settle: cost['tokens'] must be a finite number >= 0, got -1",
        "ValueError: settle: cost['tokens'] must be a finite number >= 0, got nan",
        "ValueError: settle: cost names the unit 't', which no limit of this job counts "
        "(units counted: 'tokens')",
    ]
    assert werkpool.settle is settle


async def test_settle_from_a_thread_the_job_started_is_refused() -> None:
    """The limits live on the pool's event loop: a worker thread (which inherits the job's
    context) may not settle; the error says where to call it."""

    async def job() -> str:
        def in_thread() -> str:
            try:
                settle(cost={"tokens": 1})
            except RuntimeError as error:
                return str(error)
            return "settled"

        return await anyio.to_thread.run_sync(in_thread)

    async with WorkerPool(limits=[Rate(100, burst=100, unit="tokens")]) as pool:
        message = await pool.run(job, cost={"tokens": 5})
    assert "not from a thread the job started" in message


# -- adaptive control: one decrease per episode, and recovery ------------------------------------


async def test_refusals_of_attempts_in_flight_are_the_same_news() -> None:
    """Two attempts admitted at 0: the first refused at 0.5 (a 0.1 s pause) halves the rate; the
    second, refused at 1.0 (after that pause ended, but admitted before the decrease), is the
    same news: no second decrease."""
    jobs = Jobs()
    async with WorkerPool(limits=[Rate(10_000, per=1000, burst=2, adaptive=True)]) as pool:
        first = pool.run(partial(jobs.job, duration=0.5), "first", RetryAfter(0.1))
        second = pool.run(partial(jobs.job, duration=1.0), "second", RetryAfter(0.1))
        with pytest.raises(RetryAfter):
            await first
        assert rate_of(pool) == pytest.approx(5, rel=1e-3)
        with pytest.raises(RetryAfter):
            await second
        assert rate_of(pool) == pytest.approx(5, rel=1e-3)  # not halved again
        # The stale refusal paused until 1.1: after one more pause-length of quiet, the last
        # good rate.
        await anyio.sleep(0.25)
        assert rate_of(pool) == pytest.approx(9, rel=1e-3)


async def test_a_lone_jitter_refusal_costs_a_few_percent_of_throughput() -> None:
    """``Rate(120, per=10, adaptive=True)`` with a steady queue: one 429 of 0.1 s (a start-up
    jitter refusal) loses fewer than 5 % of the starts of the next 20 s (it lost about a quarter
    when the rate halved and regrew over ``per``)."""
    jobs = Jobs()
    async with WorkerPool(limits=[Rate(120, per=10, adaptive=True)]) as pool:
        for i in range(10):
            pool.run(jobs.job, i)
        refused = pool.run(jobs.job, "refused", RetryAfter(0.1))
        for i in range(10, 400):
            pool.run(jobs.job, i)
        with pytest.raises(RetryAfter):
            await refused
        t1 = anyio.current_time()
        await anyio.sleep(20)
        await pool.kill()
    starts = [t for times in jobs.starts.values() for t in times if t1 < t <= t1 + 20]
    assert len(starts) >= 0.95 * 20 * 12


# -- cost settled after the call -----------------------------------------------------------------


async def test_settling_less_on_a_rate_gives_the_difference_back() -> None:
    """``Rate(1000, burst=1000, unit="tokens")``: a job announced 1000 and settles 200: one
    of 800 starts at once (it would wait 0.8 s)."""
    jobs = Jobs()
    t0 = anyio.current_time()
    async with WorkerPool(limits=[Rate(1000, burst=1000, unit="tokens")]) as pool:
        await pool.run(partial(jobs.job, actual={"tokens": 200}), "a", cost={"tokens": 1000})
        pool.run(jobs.job, "b", cost={"tokens": 800})
    assert jobs.first("b", t0) == approx(0)


async def test_settling_more_on_a_rate_charges_the_difference() -> None:
    """Announced 100, settled 1000: the bucket is full, one of 100 waits 0.1 s."""
    jobs = Jobs()
    t0 = anyio.current_time()
    async with WorkerPool(limits=[Rate(1000, burst=1000, unit="tokens")]) as pool:
        await pool.run(partial(jobs.job, actual={"tokens": 1000}), "a", cost={"tokens": 100})
        pool.run(jobs.job, "b", cost={"tokens": 100})
    assert jobs.first("b", t0) == approx(0.1)


async def test_settling_on_a_window_replaces_the_starts_cost() -> None:
    """``Window(1000, per=10, unit="tokens")``: settling 300 of 1000 lets 700 start at once;
    settling 900 of 100 makes a job of 200 wait until that start leaves the window."""
    jobs = Jobs()
    t0 = anyio.current_time()
    async with WorkerPool(limits=[Window(1000, per=10, unit="tokens")]) as pool:
        await pool.run(partial(jobs.job, actual={"tokens": 300}), "a", cost={"tokens": 1000})
        await pool.run(partial(jobs.job, actual={"tokens": 700}), "b", cost={"tokens": 100})
        pool.run(jobs.job, "c", cost={"tokens": 200})
    assert jobs.first("b", t0) == approx(0)
    assert jobs.first("c", t0) == approx(10)  # a's 300 leave the window then


async def test_settling_on_a_concurrency_limit_holds_the_new_amount_while_it_runs() -> None:
    """``Concurrency(1000, unit="tokens")``: a job of 600 that settles 100 lets one of 800 run
    beside it; one that settles 900 (of 100) keeps one of 200 out until it ends."""
    jobs = Jobs()
    t0 = anyio.current_time()
    async with WorkerPool(limits=[Concurrency(1000, unit="tokens")]) as pool:
        pool.run(partial(jobs.job, actual={"tokens": 100}, duration=1), "a", cost={"tokens": 600})
        await anyio.sleep(0.1)
        pool.run(partial(jobs.job, duration=1), "b", cost={"tokens": 800})
        await anyio.sleep(2)
        pool.run(partial(jobs.job, actual={"tokens": 900}, duration=1), "c", cost={"tokens": 100})
        await anyio.sleep(0.1)
        pool.run(jobs.job, "d", cost={"tokens": 200})
    assert jobs.first("b", t0) == approx(0.1)
    assert jobs.first("d", t0) == approx(3.1)
    (stats,) = [s for s in pool.statistics().limits if s.unit == "tokens"]
    assert stats.in_use == 0


async def test_settling_from_a_keyed_job_corrects_the_keys_limits_and_the_pools() -> None:
    jobs = Jobs()
    t0 = anyio.current_time()
    async with WorkerPool(
        limits=[Rate(2000, burst=2000, unit="tokens")],
        per_key=[Rate(1000, burst=1000, unit="tokens")],
    ) as pool:
        await pool.run(
            partial(jobs.job, actual={"tokens": 100}), "a", key="k", cost={"tokens": 1000}
        )
        pool.run(jobs.job, "b", key="k", cost={"tokens": 900})
        pool.run(jobs.job, "c", key="j", cost={"tokens": 1000})
    assert jobs.first("b", t0) == approx(0)
    assert jobs.first("c", t0) == approx(0)


@pytest.mark.parametrize(
    "limit",
    [Rate(1000, burst=1000, unit="tokens"), Window(1000, per=10, unit="tokens")],
    ids=["rate", "window"],
)
async def test_a_refused_attempt_gets_its_cost_back(limit: Any) -> None:
    """Key a's attempt of 1000 tokens is refused (a key's 429: the provider charged nothing):
    key b's job of 1000 starts at once, not after the bucket refilled (or the window passed)."""
    jobs = Jobs()
    t0 = anyio.current_time()
    async with WorkerPool(limits=[limit]) as pool:
        with pytest.raises(RetryAfter):
            await pool.run(jobs.job, "a", RetryAfter(5), key="a", cost={"tokens": 1000})
        pool.run(jobs.job, "b", key="b", cost={"tokens": 1000})
    assert jobs.first("b", t0) == approx(0)


async def test_a_refused_attempt_that_settled_gets_its_settled_cost_back() -> None:
    """Announced 100, settled 1000, then refused: all 1000 come back."""
    jobs = Jobs()
    t0 = anyio.current_time()
    async with WorkerPool(limits=[Rate(1000, burst=1000, unit="tokens")]) as pool:
        with pytest.raises(RetryAfter):
            await pool.run(
                partial(jobs.job, actual={"tokens": 1000}),
                "a",
                RetryAfter(5),
                key="a",
                cost={"tokens": 100},
            )
        pool.run(jobs.job, "b", key="b", cost={"tokens": 1000})
    assert jobs.first("b", t0) == approx(0)
