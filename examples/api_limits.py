"""Call an API that limits requests and tokens per minute; recover when it is stricter.

An in-process fake of an LLM provider enforces 500 requests/min and 90,000 tokens/min,
each as a continuously refilling bucket (it holds a minute's worth and refills at 1/60
of it per second), and answers an overshoot as an HTTP 429 would: an error that says how
long to wait (Retry-After). Every request costs 1 request and its token count. Two runs
of the same 800 requests:

- the client's limits match the server's: werkpool spends the server's budget without a
  single pushback, and finishes close to the fastest any client could (the "bound");
- the server is 20 % stricter than it advertises: the client still sends at the
  advertised limits, gets pushed back, pauses for the Retry-After and slows its
  adaptive rates, and still finishes every request.

Run: python examples/api_limits.py [--backend asyncio|trio] [--scale 120]

The runs are time-scaled: with ``--scale N`` an API minute lasts ``60 / N`` real seconds
(the server's latency shrinks with it), so the default takes about two seconds. The
output counts in API time, the same at any scale. The tests run it unscaled, on virtual
time.
"""

from __future__ import annotations

import argparse
import math
import random
from dataclasses import dataclass, field
from functools import partial

import anyio

from werkpool import Rate, WorkerPool

REQUESTS_PER_MIN = 500
TOKENS_PER_MIN = 90_000
JOBS = 800


class RateLimited(Exception):
    """The fake API's "429 Too Many Requests": retry after ``retry_after`` seconds."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"429 Too Many Requests (Retry-After: {retry_after:.3f} s)")
        self.retry_after = retry_after


class Bucket:
    """A refilling bucket: holds at most ``capacity``, regains it in ``per`` s."""

    def __init__(self, capacity: float, per: float) -> None:
        self.capacity = capacity
        self.refill = capacity / per  # units per second
        self.level = capacity
        self.stamp = 0.0

    def wait_for(self, amount: float, now: float) -> float:
        """Seconds until the bucket holds *amount* (0: it does now)."""
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.refill)
        self.stamp = now
        # A nanounit of slack: the client's arithmetic and ours may round differently.
        return max(0.0, (amount - self.level - 1e-9) / self.refill)


@dataclass
class FakeAPI:
    """A provider that limits requests and tokens per minute, on anyio's clock."""

    requests_per_min: float
    tokens_per_min: float
    minute: float  # seconds in an API minute (60 unscaled)
    rng: random.Random = field(default_factory=lambda: random.Random(429))
    #: (time, tokens) of every request accepted, to check the limits afterwards.
    accepted: list[tuple[float, float]] = field(default_factory=list)
    refused: int = 0

    def __post_init__(self) -> None:
        self.requests = Bucket(self.requests_per_min, self.minute)
        self.tokens = Bucket(self.tokens_per_min, self.minute)

    async def complete(self, tokens: int) -> str:
        """Answer a prompt of *tokens* tokens after 50-200 ms, or refuse it at once."""
        now = anyio.current_time()
        wait = max(self.requests.wait_for(1, now), self.tokens.wait_for(tokens, now))
        if wait > 0:
            self.refused += 1
            # Like a real Retry-After, rounded up (to a millisecond of API time).
            ms = self.minute / 60_000
            raise RateLimited(math.ceil(wait / ms) * ms)
        self.requests.level -= 1
        self.tokens.level -= tokens
        self.accepted.append((now, tokens))
        await anyio.sleep(self.rng.uniform(0.05, 0.2) * self.minute / 60)
        return f"{tokens} tokens answered"


def retry_after(error: Exception) -> float | None:
    """Tell werkpool which errors are pushbacks, and for how long: 429s only."""
    return error.retry_after if isinstance(error, RateLimited) else None


@dataclass
class Report:
    """What one run did, in API time."""

    name: str
    jobs: int
    finished: int
    failed: int
    pushbacks: int
    elapsed: float  # API seconds
    bound: float  # API seconds: the fastest any client could finish against this server
    requests_per_min: float  # accepted after the first minute
    tokens_per_min: float
    lowest_tokens_per_min: float  # the client's adaptive token rate at its lowest

    def lines(self) -> list[str]:
        # Three lines of at most 88 characters: the docs show them in a code block.
        return [
            f"{self.name}: {self.finished}/{self.jobs} jobs finished, "
            f"{self.failed} failed, {self.pushbacks} pushbacks",
            f"  {self.elapsed:.1f} s ({self.elapsed / self.bound:.2f}x the bound of "
            f"{self.bound:.1f} s); adaptive token rate at its lowest: "
            f"{self.lowest_tokens_per_min:,.0f}/min",
            f"  after the first minute: {self.requests_per_min:,.0f} requests/min, "
            f"{self.tokens_per_min:,.0f} tokens/min",
        ]


async def watch_token_rate(
    pool: WorkerPool, minute: float, lowest: list[float]
) -> None:
    """Every API second, note the lowest adaptive token rate in the statistics."""
    while True:
        for limit in pool.statistics().limits:
            if limit.unit == "tokens" and limit.effective_rate is not None:
                lowest[0] = min(lowest[0], limit.effective_rate * minute)
        await anyio.sleep(minute / 60)


async def run_once(
    name: str, server: tuple[float, float], costs: list[int], minute: float
) -> tuple[Report, FakeAPI]:
    """Send one request per cost through a pool set to the advertised limits."""
    api = FakeAPI(*server, minute=minute)
    pool = WorkerPool(
        limits=[
            Rate(REQUESTS_PER_MIN, per=minute, burst=REQUESTS_PER_MIN, adaptive=True),
            Rate(
                TOKENS_PER_MIN,
                per=minute,
                burst=TOKENS_PER_MIN,
                unit="tokens",
                adaptive=True,
            ),
        ],
        retry_after=retry_after,  # a 429 pauses the pool for its Retry-After
    )
    lowest = [float(TOKENS_PER_MIN)]
    start = anyio.current_time()
    async with pool, anyio.create_task_group() as watcher:
        watcher.start_soon(watch_token_rate, pool, minute, lowest)
        results = pool.map(
            api.complete,
            costs,
            cost=lambda tokens: {"tokens": tokens},  # each request pays its tokens
            retries=10,  # a pushback retries the request after the pause
            return_exceptions=True,
        )
        outcomes = [outcome async for outcome in results]
        watcher.cancel_scope.cancel()
    elapsed = anyio.current_time() - start
    failed = sum(isinstance(outcome, BaseException) for outcome in outcomes)
    late = [tokens for at, tokens in api.accepted if at - start >= minute]
    minutes_after_first = max(elapsed - minute, 1e-9) / minute
    # A full bucket at once, then the refill rate, for whichever limit binds.
    requests, tokens = server
    bound = 60 * max((len(costs) - requests) / requests, (sum(costs) - tokens) / tokens)
    report = Report(
        name=name,
        jobs=len(costs),
        finished=len(outcomes) - failed,
        failed=failed,
        pushbacks=api.refused,
        elapsed=elapsed * 60 / minute,
        bound=bound,
        requests_per_min=len(late) / minutes_after_first,
        tokens_per_min=sum(late) / minutes_after_first,
        lowest_tokens_per_min=lowest[0],
    )
    return report, api


async def demo(scale: float = 1.0) -> list[tuple[Report, FakeAPI]]:
    """Both runs, printed; returns what they did (for the tests)."""
    minute = 60 / scale
    rng = random.Random(12)
    costs = [rng.randint(20, 580) for _ in range(JOBS)]  # 300 tokens on average
    print(
        f"{JOBS} requests, {sum(costs):,} tokens; the client allows {REQUESTS_PER_MIN} "
        f"requests/min and {TOKENS_PER_MIN:,} tokens/min"
    )
    runs = []
    for name, server in [
        ("server as advertised", (REQUESTS_PER_MIN, TOKENS_PER_MIN)),
        ("server 20 % stricter", (REQUESTS_PER_MIN * 0.8, TOKENS_PER_MIN * 0.8)),
    ]:
        report, api = await run_once(name, server, costs, minute)
        print("\n".join(report.lines()))
        runs.append((report, api))
    return runs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument(
        "--scale",
        type=float,
        default=120.0,
        help="API time runs this many times faster",
    )
    args = parser.parse_args(argv)
    anyio.run(partial(demo, args.scale), backend=args.backend)


if __name__ == "__main__":
    main()
