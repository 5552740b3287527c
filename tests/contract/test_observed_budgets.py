"""#22 item 3: the server's rate-limit headers lower the pool's limits until their reset.

``pool.observe_headers(headers, key=None)``: a budget the server states ("R of L left, reset
at T") lowers the matching local limit: at most R units start before T (plus, for OpenAI's
and Anthropic's budgets, which refill continuously, the (L - R)/(T - now) units per second
they regain), and a rate's bucket holds at most R at once. It never makes a limit looser than
configured, never changes the configured rate, ends at the reset (clamped to
``max_retry_after``), and a malformed header changes nothing and raises nothing. Recorded
header sets of each dialect, on both backends, on virtual time.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

import anyio
import pytest
from support import approx

from werkpool import Rate, WorkerPool
from werkpool._core._rate_limit import RateLimit
from werkpool._core._window_limit import WindowLimit


def rfc3339(seconds_from_now: float) -> str:
    """An RFC 3339 date *seconds_from_now* on the wall clock (Anthropic's resets)."""
    when = datetime.fromtimestamp(time.time() + seconds_from_now, tz=timezone.utc)
    return when.isoformat().replace("+00:00", "Z")


async def start_times(
    pool: WorkerPool, count: int, *, key: Any = None, cost: dict[str, float] | None = None
) -> list[float]:
    """Submit *count* jobs at once; when each started, from now, in order."""
    t0 = anyio.current_time()
    starts: list[float] = []

    async def job() -> None:
        starts.append(anyio.current_time() - t0)

    futures = [await pool.submit(job, key=key, cost=cost) for _ in range(count)]
    for future in futures:
        await future
    return sorted(starts)


# -- the limits on their own (no event loop) ------------------------------------------------------


class TestRateLimitObserve:
    def test_only_the_remaining_units_start_before_the_reset(self) -> None:
        """Rate 12/s, burst 120, fresh: the server says 10 remain until t=5. Ten fit at 0, the
        eleventh waits for the reset, though the bucket alone would take it at once."""
        limit = RateLimit(12, 120)
        limit.observe(10, 5.0, 0.0)
        for _ in range(10):
            assert limit.earliest(None, 0.0) <= 0.0
            limit.admit(None, 0.0)
        assert limit.earliest(None, 0.0) == 5.0
        assert limit.rate == limit.configured == 12  # the configured rate is untouched

    def test_the_bucket_holds_at_most_the_remaining_at_once(self) -> None:
        """A budget with no reset (no hold): the bucket is filled so that 2 fit at once, then
        the rate refills it (one per 1/12 s), not the burst of 120."""
        limit = RateLimit(12, 120)
        limit.observe(2, 0.0, 0.0)
        for _ in range(2):
            assert limit.earliest(None, 0.0) <= 0.0
            limit.admit(None, 0.0)
        assert limit.earliest(None, 0.0) == pytest.approx(1 / 12)

    def test_a_budget_above_the_room_left_changes_nothing(self) -> None:
        """Never looser: 100 remain by the server, the bucket has 20 left: still 20."""
        limit = RateLimit(12, 120)
        for _ in range(100):
            limit.admit(None, 0.0)
        before = limit.earliest(None, 0.0)
        limit.observe(100, 5.0, 0.0)
        for _ in range(20):
            limit.admit(None, 0.0)
        assert limit.earliest(None, 0.0) > 0.0
        assert before <= 0.0

    def test_the_hold_ends_at_the_reset(self) -> None:
        limit = RateLimit(12, 120)
        limit.observe(0, 5.0, 0.0)
        assert limit.earliest(None, 4.9) == 5.0
        assert limit.earliest(None, 5.0) <= 5.0
        assert limit.rest_at() == 10.0  # the bucket it filled (120 units) drained at 12/s

    def test_a_refilling_budget_paces_the_starts_until_the_reset(self) -> None:
        """None left, 2 units a second regained until 10: the starts go 0.5 s apart (the
        local rate would allow 12/s), and after 10 the local rule alone."""
        limit = RateLimit(12, 120)
        limit.observe(0, 10.0, 0.0, refill=2.0)
        at = 0.0
        for expected in (0.5, 1.0, 1.5):
            at = limit.earliest(None, at)
            assert at == pytest.approx(expected)
            limit.admit(None, at)
        assert limit.earliest(None, 10.0) <= 10.0

    def test_a_refund_gives_back_no_more_than_the_server_said(self) -> None:
        limit = RateLimit(12, 120)
        limit.observe(1, 5.0, 0.0)
        limit.admit(None, 0.0)
        assert limit.earliest(None, 0.0) == 5.0
        limit.refund(None)
        assert limit.earliest(None, 0.0) <= 0.0
        limit.refund(None)  # a second refund (of an older start) leaves still just 1
        limit.admit(None, 0.0)
        assert limit.earliest(None, 0.0) == 5.0


class TestWindowLimitObserve:
    def test_only_the_remaining_units_start_before_the_reset(self) -> None:
        limit = WindowLimit(100, 10)
        limit.observe(3, 4.0, 0.0)
        for _ in range(3):
            assert limit.earliest(None, 0.0) == -float("inf")
            limit.admit(None, 0.0)
        assert limit.earliest(None, 1.0) == 4.0
        assert limit.earliest(None, 4.0) == -float("inf")  # the window's own rule again
        assert limit.rest_at() == 10.0


# -- through a running pool, on both backends -----------------------------------------------------


REQUESTS = Rate(120, per=10, burst=120)
TOKENS = Rate(200_000, per=10, burst=200_000, unit="tokens")


class TestRecordedHeaders:
    async def test_openai(self) -> None:
        """OpenAI: 3 requests of 120 left, the budget full again in 9.75 s (it refills at
        12/s). Three start at once, then one per 1/12 s, not all ten at once."""
        headers = {
            "x-ratelimit-limit-requests": "120",
            "x-ratelimit-remaining-requests": "3",
            "x-ratelimit-reset-requests": "9.75s",
            "x-ratelimit-limit-tokens": "200000",
            "x-ratelimit-remaining-tokens": "199000",
            "x-ratelimit-reset-tokens": "50ms",
        }
        async with WorkerPool(limits=[REQUESTS, TOKENS]) as pool:
            assert pool.observe_headers(headers) == 2
            starts = await start_times(pool, 6)
        assert starts == [0, 0, 0, approx(1 / 12), approx(2 / 12), approx(3 / 12)]

    async def test_a_stricter_server_paces_the_pool_to_its_refill(self) -> None:
        """Scenario B of #22: the client is told 12/s, the server allows 9.6/s (96 per 10 s)
        and has none left, full again in 10 s: the starts go 1/9.6 s apart, not 1/12."""
        headers = {
            "x-ratelimit-limit-requests": "96",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "10s",
        }
        async with WorkerPool(limits=[REQUESTS]) as pool:
            assert pool.observe_headers(headers) == 1
            starts = await start_times(pool, 4)
        assert starts == [approx(i / 9.6) for i in range(1, 5)]

    async def test_without_headers_the_burst_goes_at_once(self) -> None:
        """The control: the same pool, no headers observed: all six at 0."""
        async with WorkerPool(limits=[REQUESTS, TOKENS]) as pool:
            assert await start_times(pool, 6) == [0] * 6

    async def test_anthropic_tokens(self) -> None:
        """Anthropic: 2,500 tokens of 200,000 left: jobs of 1,000 tokens, two at once, the
        third once the tokens rate (20,000/s) drained 500 more units (0.025 s)."""
        headers = {
            "anthropic-ratelimit-tokens-limit": "200000",
            "anthropic-ratelimit-tokens-remaining": "2500",
            "anthropic-ratelimit-tokens-reset": rfc3339(10),
            "anthropic-ratelimit-requests-limit": "4000",
            "anthropic-ratelimit-requests-remaining": "3999",
            "anthropic-ratelimit-requests-reset": rfc3339(1),
        }
        async with WorkerPool(limits=[REQUESTS, TOKENS]) as pool:
            assert pool.observe_headers(headers) == 2
            starts = await start_times(pool, 3, cost={"tokens": 1000})
        assert starts[:2] == [0, 0]
        # 500 more tokens: at the budget's refill, (200,000 - 2,500) / 10 s, a little slower
        # than the local rate's 20,000/s.
        assert abs(starts[2] - 500 / 19_750) < 1e-3

    async def test_github_holds_until_the_reset(self) -> None:
        """GitHub's fixed window: 2 left, reset 30 s from now (epoch seconds): two at once,
        the third at the reset."""
        reset = int(time.time()) + 30
        headers = {
            "x-ratelimit-limit": "60",
            "x-ratelimit-remaining": "2",
            "x-ratelimit-used": "58",
            "x-ratelimit-reset": str(reset),
            "x-ratelimit-resource": "core",
        }
        async with WorkerPool(limits=[Rate(60, per=60, burst=60)]) as pool:
            expected = reset - time.time()
            assert pool.observe_headers(headers) == 1
            starts = await start_times(pool, 3)
        assert starts[:2] == [0, 0]
        assert abs(starts[2] - expected) < 0.1

    async def test_ietf_picks_the_limit_of_the_budgets_window(self) -> None:
        """IETF draft: policies of 60 s and a day; the 60 s one has 1 left for 5 s. It lowers
        the 60 s limit (a 1/day rate's bucket filled would hold the third start for 86 s)."""
        headers = {
            "RateLimit-Policy": '"minute";q=100;w=60, "day";q=1000;w=86400',
            "RateLimit": '"minute";r=1;t=5',
        }
        limits = [Rate(1000, per=86400, burst=1000), Rate(100, per=60, burst=100)]
        async with WorkerPool(limits=limits) as pool:
            assert pool.observe_headers(headers) == 1
            starts = await start_times(pool, 3)
        assert starts[:2] == [0, approx(5)]
        assert starts[2] < 10

    async def test_ietf_draft_old(self) -> None:
        headers = {"RateLimit-Limit": "10", "RateLimit-Remaining": "0", "RateLimit-Reset": "2"}
        async with WorkerPool(limits=[Rate(10, burst=10)]) as pool:
            assert pool.observe_headers(headers) == 1
            assert await start_times(pool, 1) == [approx(2)]

    async def test_a_reset_far_away_is_clamped_to_max_retry_after(self) -> None:
        """A reset in year 9999 holds no longer than the pool's max_retry_after (60 s)."""
        headers = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "253402300799"}
        async with WorkerPool(limits=[Rate(10, burst=10)], max_retry_after=60) as pool:
            assert pool.observe_headers(headers) == 1
            assert await start_times(pool, 1) == [approx(60)]

    async def test_a_hold_ends_at_the_reset_and_the_rate_is_unchanged(self) -> None:
        headers = {"RateLimit": '"default";r=0;t=3'}
        async with WorkerPool(limits=[Rate(10, burst=10)]) as pool:
            pool.observe_headers(headers)
            assert await start_times(pool, 4) == [approx(3)] * 4  # then the burst of 10 is back
            (rate,) = [s for s in pool.statistics().limits if s.kind == "rate"]
            assert rate.effective_rate == approx(10)

    async def test_malformed_headers_change_nothing_and_raise_nothing(self) -> None:
        headers = {
            "x-ratelimit-remaining-requests": "nan",
            "x-ratelimit-reset-requests": "forever",
            "RateLimit": "garbage((",
            "x-ratelimit-remaining": "-1",
            "anthropic-ratelimit-tokens-remaining": "9" * 2000,
        }
        async with WorkerPool(limits=[REQUESTS, TOKENS]) as pool:
            assert pool.observe_headers(headers) == 0
            assert await start_times(pool, 5) == [0] * 5

    async def test_a_budget_of_a_unit_the_pool_does_not_count_is_not_applied(self) -> None:
        headers = {"anthropic-ratelimit-output-tokens-remaining": "0"}
        async with WorkerPool(limits=[REQUESTS]) as pool:
            assert pool.observe_headers(headers) == 0

    async def test_input_tokens_match_a_unit_written_with_an_underscore(self) -> None:
        headers = {
            "anthropic-ratelimit-input-tokens-remaining": "0",
            "anthropic-ratelimit-input-tokens-reset": rfc3339(1000),
        }
        async with WorkerPool(limits=[Rate(1000, unit="input_tokens", burst=1000)]) as pool:
            assert pool.observe_headers(headers) == 1


class TestScope:
    async def test_a_keys_budget_holds_that_key_only(self) -> None:
        """key="k1": its per_key rate is held 3 s; k2 goes at once."""
        headers = {"RateLimit": '"default";r=0;t=3'}
        async with WorkerPool(per_key=[Rate(6, burst=2)]) as pool:
            assert pool.observe_headers(headers, key="k1") == 1
            k1 = await start_times(pool, 1, key="k1")
            k2 = await start_times(pool, 1, key="k2")
        assert k1 == [approx(3)]
        assert k2 == [0]

    async def test_without_key_the_pools_limits(self) -> None:
        headers = {"RateLimit": '"default";r=0;t=3'}
        async with WorkerPool(per_key=[Rate(6, burst=2)]) as pool:
            assert pool.observe_headers(headers) == 0  # the pool counts no requests itself
            assert await start_times(pool, 1, key="k1") == [0]


class TestValidation:
    async def test_headers_must_be_a_mapping(self) -> None:
        async with WorkerPool() as pool:
            with pytest.raises(TypeError, match=r"^headers must be a mapping"):
                pool.observe_headers("x-ratelimit-remaining: 0")  # type: ignore[arg-type]

    async def test_the_key_must_be_hashable(self) -> None:
        async with WorkerPool() as pool:
            with pytest.raises(TypeError, match="hashable"):
                pool.observe_headers({}, key=[])  # type: ignore[arg-type]


class TestObservedFromInsideAJob:
    """A job reports its response's headers while later attempts of the pool are in flight:
    the server had not counted those when it answered, so they are taken off its budget (as
    the httpx transport does), else each response in flight hands out the same units again."""

    pytestmark = pytest.mark.anyio

    async def test_attempts_admitted_later_and_running_are_taken_off(self) -> None:
        """``Rate(100, per=10, burst=100)`` requests; job 0 starts, then jobs 1-4 (running, a
        second each); job 0's response says 6 of 100 are left (refill 9.4/s until 10 s): the 4
        sent after it leave 2 for the next jobs at once, then the refill (not 6 at once)."""
        headers = {
            "x-ratelimit-limit-requests": "100",
            "x-ratelimit-remaining-requests": "6",
            "x-ratelimit-reset-requests": "10s",
        }
        others_started = anyio.Event()
        started: list[float] = []

        async def first(pool: WorkerPool) -> int:
            await others_started.wait()
            return pool.observe_headers(headers)

        async def other() -> None:
            started.append(anyio.current_time())
            if len(started) == 4:
                others_started.set()
            await anyio.sleep(1)

        async with WorkerPool(limits=[Rate(100, per=10, burst=100)]) as pool:
            applied = pool.run(first, pool)
            for _ in range(4):
                pool.run(other)
            assert await applied == 1
            t0 = anyio.current_time()
            starts = await start_times(pool, 4)
        assert started == [0.0] * 4
        assert t0 == 0.0
        # 6 left less the 4 in flight: 2 at once, then the server's refill of 9.4/s.
        assert starts[:2] == [0, 0]
        assert starts[2] > 0.05

    async def test_outside_a_job_nothing_is_taken_off(self) -> None:
        """The same budget reported from outside any job: 6 start at once."""
        headers = {
            "x-ratelimit-limit-requests": "100",
            "x-ratelimit-remaining-requests": "6",
            "x-ratelimit-reset-requests": "10s",
        }
        async with WorkerPool(limits=[Rate(100, per=10, burst=100)]) as pool:
            assert pool.observe_headers(headers) == 1
            starts = await start_times(pool, 7)
        assert starts[:6] == [0] * 6
        assert starts[6] > 0.05
