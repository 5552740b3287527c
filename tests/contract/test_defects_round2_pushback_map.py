"""Issue #21, items 6 and 7: ``resume()`` and long pushbacks; a map's key and cost functions.

Item 6. ``resume()`` ends every pause and every pushback's hold: the rates a pushback filled are
usable at once (but hold what the real starts left, so the rate contract holds across the
resume), and a pushed-back job is retried at once instead of at the end of the pause it no
longer waits for. A pushback longer than ``max_retry_after`` (the pool's, the httpx transport's;
15 minutes by default) is clamped, and the ``"paused"`` event says so (``clamped_from``).

Item 7. A ``StopIteration`` raised by a map's ``key=`` or ``cost=`` function is an error of the
map, raised from its iteration as a :exc:`RuntimeError` (as :pep:`479` does), never the end of its
input: nothing after it is silently dropped.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest
from anyio.lowlevel import checkpoint
from support import approx, echo, rate_violation

from werkpool import Concurrency, JobEvent, Rate, RetryAfter, WorkerPool
from werkpool.httpx import PoolTransport

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable, Iterator

INF = math.inf
A = "http://a.example"


class Pushy:
    """Jobs that push back: the listed attempts raise the given error, the others succeed."""

    def __init__(self) -> None:
        self.starts: dict[object, list[float]] = {}

    async def job(self, label: object, errors: dict[int, BaseException] | None = None) -> object:
        """Attempt ``n`` (1, 2, ...) records its start, then raises ``errors[n]`` if given."""
        attempts = self.starts.setdefault(label, [])
        attempts.append(anyio.current_time())
        await checkpoint()
        error = (errors or {}).get(len(attempts))
        if error is not None:
            raise error
        return label

    def all_starts(self) -> list[float]:
        return sorted(t for times in self.starts.values() for t in times)


async def at(t0: float, when: float) -> None:
    await anyio.sleep_until(t0 + when)


def paused_events(events: list[JobEvent]) -> list[JobEvent]:
    return [event for event in events if event.kind == "paused"]


# -- item 6: resume() ends a pushback -------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"rate": 10}, None),
        ({"size": 2}, None),
        ({"per_key": [Rate(10)]}, "a"),
        ({"rate": 10, "per_key": [Rate(10)]}, "a"),
    ],
    ids=["pool-rate", "pool-size", "key-rate", "pool-and-key-rate"],
)
async def test_resume_ends_a_pushback_and_retries_the_pushed_back_job_at_once(
    options: dict[str, Any], key: str | None
) -> None:
    """``RetryAfter(60)`` at 0, ``resume()`` at 2: nothing is paused, the pushed-back job is
    retried at 2 (not at 60), and a job submitted after ``resume()`` starts right after it
    (1/rate later under a rate of 10)."""
    jobs = Pushy()
    t0 = anyio.current_time()
    async with WorkerPool(**options) as pool:
        pushed = pool.run(jobs.job, "pushed", {1: RetryAfter(60)}, retries=1, key=key)
        await at(t0, 2)
        assert pool.paused if key is None else not pool.paused
        pool.resume()
        assert not pool.paused
        later = pool.run(jobs.job, "later", key=key)
        await at(t0, 3)
        assert pushed.done()
        assert later.done()
    gap = 0.0 if options.get("size") else 0.1
    assert jobs.starts == {"pushed": [approx(t0), approx(t0 + 2)], "later": [approx(t0 + 2 + gap)]}


@pytest.mark.parametrize("key", [None, "a"], ids=["pool", "key"])
async def test_resume_right_after_a_pushback_keeps_the_rate_contract(key: str | None) -> None:
    """burst=1, rate=10: the refused attempt started at 0, ``resume()`` comes at 0.01. The
    pushback's hold is dropped, and the refused attempt charged nothing (#22 item 4: its unit
    was given back), so the retry starts at once, and the jobs after it follow at the rate."""
    jobs = Pushy()
    t0 = anyio.current_time()
    options: dict[str, Any] = {"rate": 10} if key is None else {"per_key": [Rate(10)]}
    async with WorkerPool(**options) as pool:
        pool.run(jobs.job, "pushed", {1: RetryAfter(60)}, retries=1, key=key)
        await at(t0, 0.01)
        pool.resume()
        for i in range(3):
            pool.run(jobs.job, i, key=key)
    assert jobs.starts["pushed"] == [approx(t0), approx(t0 + 0.01)]
    assert [jobs.starts[i] for i in range(3)] == [[approx(t0 + 0.01 + 0.1 * n)] for n in (1, 2, 3)]
    assert rate_violation(jobs.all_starts()[1:], 10, 1) is None  # all but the refused start


async def test_resume_banks_no_credit_beyond_burst() -> None:
    """burst=3, rate=10: three starts at 0 use the burst, one of them pushes back (and charges
    nothing, #22 item 4); ``resume()`` at 0.05 gives back only what the two real starts left:
    one start at 0.05, then from 0.1 one every 0.1 s (a bucket simply emptied would let three
    more go at 0.05)."""
    jobs = Pushy()
    t0 = anyio.current_time()
    async with WorkerPool(rate=10, burst=3) as pool:
        for i in range(2):
            pool.run(jobs.job, f"first-{i}")
        pool.run(jobs.job, "pushed", {1: RetryAfter(60)}, retries=1)
        await at(t0, 0.05)
        pool.resume()
        for i in range(4):
            pool.run(jobs.job, i)
    starts = jobs.all_starts()
    assert starts == [approx(t0 + t) for t in (0, 0, 0, 0.05, 0.1, 0.2, 0.3, 0.4)]
    assert rate_violation(starts[1:], 10, 3) is None  # all but the refused start


async def test_resume_ends_a_push_back_that_failed_no_job() -> None:
    """``push_back(60)`` on a pool with a rate, then ``resume()`` at 1: the next job starts at
    once (the rate's bucket is not left full until the pushback's end)."""
    jobs = Pushy()
    t0 = anyio.current_time()
    async with WorkerPool(rate=10) as pool:
        pool.push_back(60)
        await at(t0, 1)
        pool.resume()
        pool.run(jobs.job, "after")
    assert jobs.starts == {"after": [approx(t0 + 1)]}


async def test_resume_leaves_an_ordinary_backoff_alone() -> None:
    """Only a pushback's hold ends at ``resume()``: a job in its own backoff (5 s) still waits
    for it."""
    jobs = Pushy()
    t0 = anyio.current_time()
    async with WorkerPool(size=2) as pool:
        pool.run(jobs.job, "boom", {1: ValueError("no")}, retries=1, backoff=lambda n: 5.0)
        pool.run(jobs.job, "pushed", {1: RetryAfter(60)}, retries=1, key="a")
        await at(t0, 1)
        pool.resume()
    assert jobs.starts == {
        "boom": [approx(t0), approx(t0 + 5)],
        "pushed": [approx(t0), approx(t0 + 1)],
    }


async def test_a_pushback_after_resume_pauses_again() -> None:
    """A pushback after a ``resume()`` is heard as usual: a new hold, retried at its end."""
    jobs = Pushy()
    t0 = anyio.current_time()
    async with WorkerPool(rate=10) as pool:
        pushed = pool.run(jobs.job, "pushed", {1: RetryAfter(60), 2: RetryAfter(3)}, retries=2)
        await at(t0, 1)
        pool.resume()
        assert await pushed == "pushed"
    assert jobs.starts["pushed"] == [approx(t0), approx(t0 + 1), approx(t0 + 4)]


# -- item 6: max_retry_after ----------------------------------------------------------------------


@pytest.mark.parametrize("key", [None, "a"], ids=["pool", "key"])
@pytest.mark.parametrize(
    ("cap", "expected"), [(None, 900.0), (30, 30.0)], ids=["default-900", "cap-30"]
)
@pytest.mark.parametrize("asked", [1e308, 10_000.0])
async def test_a_pushback_longer_than_max_retry_after_is_clamped_and_reported(
    key: str | None, cap: float | None, expected: float, asked: float
) -> None:
    """``RetryAfter(asked)`` beyond the cap pauses the pool (or key) for the cap only; the
    ``"paused"`` event carries the clamped ``until`` and ``clamped_from`` = what was asked;
    the retry comes at the cap."""
    jobs = Pushy()
    events: list[JobEvent] = []
    t0 = anyio.current_time()
    options: dict[str, Any] = {} if cap is None else {"max_retry_after": cap}
    async with WorkerPool(rate=10, hooks=[events.append], **options) as pool:
        pushed = pool.run(jobs.job, "pushed", {1: RetryAfter(asked)}, retries=1, key=key)
        await at(t0, 1)
        if key is None:
            assert pool.statistics().paused_until == approx(t0 + expected)
        assert await pushed == "pushed"
    assert jobs.starts["pushed"] == [approx(t0), approx(t0 + expected)]
    [paused] = paused_events(events)
    assert (paused.key, paused.until, paused.clamped_from) == (key, approx(t0 + expected), asked)
    [retrying] = [event for event in events if event.kind == "retrying"]
    assert retrying.delay == approx(expected)


async def test_a_pushback_within_max_retry_after_is_not_reported_as_clamped() -> None:
    events: list[JobEvent] = []
    t0 = anyio.current_time()
    async with WorkerPool(max_retry_after=5, hooks=[events.append]) as pool:
        pool.push_back(5)
        pool.push_back(3, key="a")
    assert [(e.key, e.until, e.clamped_from) for e in paused_events(events)] == [
        (None, approx(t0 + 5), None),
        ("a", approx(t0 + 3), None),
    ]


@pytest.mark.parametrize("key", [None, "a"], ids=["pool", "key"])
async def test_push_back_and_retry_after_callables_are_clamped_too(key: str | None) -> None:
    """``pool.push_back(1e308)`` and a ``retry_after=`` callable's 1e9 are clamped to the cap."""
    events: list[JobEvent] = []
    jobs = Pushy()
    t0 = anyio.current_time()

    async with WorkerPool(
        max_retry_after=20, retry_after=lambda error: 1e9, hooks=[events.append]
    ) as pool:
        pool.push_back(1e308, key=key)
        await at(t0, 1)
        pool.resume()
        pushed = pool.run(jobs.job, "pushed", {1: ValueError("429")}, retries=1, key=key)
        assert await pushed == "pushed"
    assert jobs.starts["pushed"] == [approx(t0 + 1), approx(t0 + 21)]
    assert [(e.until, e.clamped_from) for e in paused_events(events)] == [
        (approx(t0 + 20), 1e308),
        (approx(t0 + 21), 1e9),
    ]


async def test_a_pushback_clamped_before_the_pool_runs_is_clamped_too() -> None:
    """``push_back()`` on a pool that does not run yet is clamped as well."""
    pool = WorkerPool(max_retry_after=10)
    pool.push_back(1e308)
    t0 = anyio.current_time()
    async with pool:
        assert pool.statistics().paused_until == approx(t0 + 10)


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("900", TypeError),
        (True, TypeError),
        (None, TypeError),
        (-1, ValueError),
        (math.nan, ValueError),
    ],
)
def test_max_retry_after_is_validated(value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="max_retry_after"):
        WorkerPool(max_retry_after=value)  # type: ignore[arg-type]
    server = httpx.MockTransport(lambda request: httpx.Response(200))
    with pytest.raises(error, match="max_retry_after"):
        PoolTransport(WorkerPool(), server, max_retry_after=value)  # type: ignore[arg-type]


def test_max_retry_after_accepts_inf_and_zero() -> None:
    assert WorkerPool(max_retry_after=INF).max_retry_after == INF
    assert WorkerPool(max_retry_after=0).max_retry_after == 0
    assert WorkerPool().max_retry_after == 900


# -- item 6: through the httpx transport ----------------------------------------------------------


class Server:
    """A MockTransport handler: the first call to /pushed answers 429 with *retry_after*."""

    def __init__(self, retry_after: str) -> None:
        self.retry_after = retry_after
        self.calls: list[tuple[float, str]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        first = not any(p == path for _, p in self.calls)
        self.calls.append((anyio.current_time(), path))
        if path == "/pushed" and first:
            return httpx.Response(429, headers={"Retry-After": self.retry_after})
        return httpx.Response(200, text="ok")

    def times(self, t0: float, path: str) -> list[float]:
        return [t - t0 for t, p in self.calls if p == path]


YEAR_9999 = "Fri, 31 Dec 9999 23:59:59 GMT"


@pytest.mark.parametrize("header", ["1e308", YEAR_9999], ids=["1e308", "year-9999"])
@pytest.mark.parametrize(
    ("pool_cap", "transport_cap", "expected"),
    [(None, None, 900.0), (None, 5, 5.0), (7, None, 7.0), (7, 5, 5.0)],
    ids=["defaults", "transport-5", "pool-7", "both"],
)
async def test_the_transport_clamps_a_huge_retry_after(
    header: str, pool_cap: float | None, transport_cap: float | None, expected: float
) -> None:
    """A 429 with ``Retry-After: 1e308`` or a date in year 9999, on a host under a rate: the
    host pauses for the smaller cap only (the pool's, the transport's, 900 s by default), the
    retry comes then, and the paused event says what the server asked."""
    server = Server(header)
    events: list[JobEvent] = []
    t0 = anyio.current_time()
    pool_options: dict[str, Any] = {} if pool_cap is None else {"max_retry_after": pool_cap}
    transport_options: dict[str, Any] = (
        {} if transport_cap is None else {"max_retry_after": transport_cap}
    )
    async with (
        WorkerPool(per_key=[Rate(10)], hooks=[events.append], **pool_options) as pool,
        httpx.AsyncClient(
            transport=PoolTransport(
                pool, httpx.MockTransport(server), retries=1, **transport_options
            )
        ) as client,
    ):
        response = await client.get(f"{A}/pushed")
    assert response.status_code == 200
    assert server.times(t0, "/pushed") == [0, approx(expected)]
    [paused] = paused_events(events)
    assert paused.key == "a.example"
    assert paused.until == approx(t0 + expected)
    assert paused.clamped_from is not None
    assert paused.clamped_from > 1e11  # what the server asked: 1e308 s, or ~8000 years


async def test_a_returned_429_with_a_huge_retry_after_is_clamped() -> None:
    """The last attempt's 429 is handed to the caller; its pushback is clamped all the same."""
    server = Server("1e308")
    events: list[JobEvent] = []
    t0 = anyio.current_time()
    async with (
        WorkerPool(hooks=[events.append]) as pool,
        httpx.AsyncClient(
            transport=PoolTransport(pool, httpx.MockTransport(server), max_retry_after=60)
        ) as client,
    ):
        response = await client.get(f"{A}/pushed")
        assert response.status_code == 429
        [paused] = paused_events(events)
        assert (paused.key, paused.until, paused.clamped_from) == (
            "a.example",
            approx(t0 + 60),
            1e308,
        )


@pytest.mark.parametrize("header", ["1e308", YEAR_9999], ids=["1e308", "year-9999"])
async def test_resume_unblocks_a_host_the_transport_paused(header: str) -> None:
    """No cap at all (``inf``): a 429 asking for ever pauses the host; ``resume()`` at 1 s lets
    the retry and a later request of the host go at once (1/rate apart)."""
    server = Server(header)
    t0 = anyio.current_time()
    async with (
        WorkerPool(per_key=[Rate(10)], max_retry_after=INF) as pool,
        httpx.AsyncClient(
            transport=PoolTransport(
                pool, httpx.MockTransport(server), retries=1, max_retry_after=INF
            )
        ) as client,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(client.get, f"{A}/pushed")
        await at(t0, 1)
        pool.resume()
        tg.start_soon(client.get, f"{A}/later")
        await at(t0, 2)
        assert server.times(t0, "/pushed") == [0, approx(1)]
        assert server.times(t0, "/later") == [approx(1.1)]


# -- item 7: StopIteration from a map's key= or cost= ---------------------------------------------


def _source(kind: str, items: list[int]) -> Iterable[int] | AsyncIterator[int]:
    if kind == "list":
        return items

    def generator() -> Iterator[int]:
        yield from items

    async def async_generator() -> AsyncIterator[int]:
        for item in items:
            yield item

    return generator() if kind == "generator" else async_generator()


@pytest.mark.parametrize("which", ["key", "cost"])
@pytest.mark.parametrize("kind", ["list", "generator", "async"])
@pytest.mark.parametrize("options", [{"size": 2}, {"rate": 10}, {}], ids=["size", "rate", "none"])
async def test_stop_iteration_from_key_or_cost_raises_from_the_map(
    which: str, kind: str, options: dict[str, Any]
) -> None:
    """Item 3's ``key``/``cost`` raises StopIteration: items 0-2 are yielded, then the map
    raises a RuntimeError from it (naming the function), not a silent end."""

    def fn(item: int) -> Any:
        if item == 3:
            raise StopIteration("not the end")
        return "k" if which == "key" else {"u": 1}

    seen: list[object] = []
    async with WorkerPool(limits=[Concurrency(10, unit="u")], **options) as pool:
        results = pool.map(echo, _source(kind, list(range(8))), **{which: fn})
        with pytest.raises(RuntimeError, match=f"{which} function") as info:
            async for result in results:
                seen.append(result)  # noqa: PERF401  # the items before the error, one by one
    assert seen == [0, 1, 2]
    assert isinstance(info.value.__cause__, StopIteration)
    assert str(info.value.__cause__) == "not the end"


@pytest.mark.parametrize("which", ["key", "cost"])
async def test_stop_async_iteration_from_key_or_cost_raises_from_the_map(which: str) -> None:
    def fn(item: int) -> Any:
        raise StopAsyncIteration

    async with WorkerPool(size=2) as pool:
        with pytest.raises(RuntimeError, match=f"{which} function") as info:
            async for _ in pool.map(echo, [1, 2], **{which: fn}):
                pass
    assert isinstance(info.value.__cause__, StopAsyncIteration)
