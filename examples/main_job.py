"""What werkpool is for: many requests to an API with limits, all done, none refused.

An in-process fake API (no network) allows 30 requests per second, no two closer than
1/30 s, and 10 requests at once; a request over either limit is refused with a "429 Too
Many Requests" and a Retry-After. It also behaves like a real one: a few requests fail
once with a "500" and succeed when retried, three ask for items that do not exist
("404"), and once, a third of the way through, it sheds load for 1.5 seconds, refusing
everything with a 429 and a Retry-After.

The client is a WorkerPool with the API's limits (size=10, rate=30): it never goes over
them, retries the 500s after a backoff, pauses for the Retry-After when told to
(``retry_after=``), and leaves the 404s failed. A progress bar shows the work (in a
terminal; rich's if installed, else one plain line), and a summary what the API saw.

Run: python examples/main_job.py [--backend asyncio|trio] [--jobs 300]

It needs only werkpool (and anyio); 300 jobs take about 12 seconds. The tests run it on
virtual time.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from functools import partial

import anyio

import werkpool

RATE = 30  # requests per second the API allows: no two closer than 1/RATE s
AT_ONCE = 10  # requests the API serves at once
SHED_FOR = 1.5  # seconds of load shedding, a third of the way through
MISSING = frozenset({42, 142, 242})  # items the API does not have: 404


class TooManyRequests(Exception):
    """The API's 429: come back after ``retry_after`` seconds."""

    def __init__(self, reason: str, retry_after: float) -> None:
        super().__init__(
            f"429 Too Many Requests ({reason}; Retry-After: {retry_after:.3f} s)"
        )
        self.reason = reason
        self.retry_after = retry_after


class ServerError(Exception):
    """The API's 500: a transient failure, fine on a retry."""


class NotFound(Exception):
    """The API's 404: retrying will not help."""


@dataclass
class FakeAPI:
    """A strict API on anyio's clock: a rate (GCRA, no burst), a cap, load shedding."""

    jobs: int
    #: When the next request may come (the rate's theoretical arrival time).
    next_allowed: float = -math.inf
    in_flight: int = 0
    most_in_flight: int = 0
    shed_until: float = -math.inf
    shed_at: int = 0  # shed load once this many requests were accepted
    #: The time of every accepted request, and the 429s sent, by reason.
    accepted: list[float] = field(default_factory=list)
    refused: dict[str, int] = field(
        default_factory=lambda: {
            "load shedding": 0,
            "over the rate": 0,
            "over the concurrency": 0,
        }
    )
    calls: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.shed_at = self.jobs // 3

    def refuse(self, reason: str, retry_after: float) -> TooManyRequests:
        self.refused[reason] += 1
        return TooManyRequests(reason, retry_after)

    async def get(self, item: int) -> str:
        """Answer after 0.1-0.5 s (each item has its own latency), or refuse at once."""
        now = anyio.current_time()
        if now < self.shed_until:
            raise self.refuse("load shedding", self.shed_until - now)
        if (
            len(self.accepted) == self.shed_at
        ):  # a third of the way: shed load for a while
            self.shed_until = now + SHED_FOR
            self.shed_at = -1
            raise self.refuse("load shedding", SHED_FOR)
        # 1 ms of tolerance: on a real clock, the client's and the server's readings of
        # the same moment differ by microseconds (on the tests' virtual clock they are
        # equal).
        if now < self.next_allowed - 1e-3:
            raise self.refuse("over the rate", self.next_allowed - now)
        if self.in_flight >= AT_ONCE:
            raise self.refuse("over the concurrency", 0.1)
        self.next_allowed = max(self.next_allowed, now) + 1 / RATE
        self.accepted.append(now)
        self.calls[item] = self.calls.get(item, 0) + 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await anyio.sleep(0.1 + 0.4 * (item * 7919 % 100) / 100)
            if item in MISSING:
                raise NotFound(f"404 Not Found: item {item}")
            if item % 29 == 7 and self.calls[item] == 1:  # fails once, then fine
                raise ServerError(f"500 Internal Server Error: item {item}")
            return f"item {item}"
        finally:
            self.in_flight -= 1


@dataclass
class Watch:
    """A hook on the pool: retries by cause and pauses, from the pool's events."""

    retries: dict[str, int] = field(default_factory=dict)
    pauses: int = 0
    paused: float = 0.0  # seconds paused, overlaps counted once
    paused_until: float = -math.inf

    def __call__(self, event: werkpool.JobEvent) -> None:
        if event.kind == "retrying":
            cause = "429" if isinstance(event.error, TooManyRequests) else "500"
            self.retries[cause] = self.retries.get(cause, 0) + 1
        elif event.kind == "paused" and event.key is None and event.until is not None:
            if event.time >= self.paused_until:  # a new pause, not one made longer
                self.pauses += 1
            self.paused += max(0.0, event.until - max(event.time, self.paused_until))
            self.paused_until = max(self.paused_until, event.until)


@dataclass
class Summary:
    """What the run did, as the client and the API saw it."""

    jobs: int
    completed: int
    failed: int
    attempts: int
    watch: Watch
    api: FakeAPI
    elapsed: float

    def most_in_any_second(self) -> int:
        times = self.api.accepted
        best = first = 0
        for last, at in enumerate(times):  # accepted in time order
            while times[first] <= at - 1.0 + 1e-6:  # a µs for float clocks
                first += 1
            best = max(best, last - first + 1)
        return best

    def lines(self) -> list[str]:
        api, watch = self.api, self.watch
        times = api.accepted
        span = times[-1] - times[0] if len(times) > 1 else 0.0
        rate = (len(times) - 1) / span if span > 0 else 0.0
        unpaused = (
            (len(times) - 1) / (span - watch.paused) if span > watch.paused else 0.0
        )
        refused = sum(api.refused.values())
        return [
            f"{self.jobs} requests to an API that allows {RATE} requests/s "
            f"and {AT_ONCE} at once",
            f"  done        {self.completed} completed, {self.failed} failed "
            f"(404 Not Found: not retried)",
            f"  attempts    {self.attempts}: "
            f"{watch.retries.get('500', 0)} retries after a 500, "
            f"{watch.retries.get('429', 0)} after a 429",
            f"  pauses      {watch.pauses} "
            f"({watch.paused:.1f} s, the API's Retry-After)",
            f"  start rate  {rate:.1f}/s on average, {unpaused:.1f}/s outside pauses",
            f"  busiest     at most {self.most_in_any_second()} in any second "
            f"(the API's limit: {RATE}/s)",
            f"  at once     at most {api.most_in_flight} (the API's limit: {AT_ONCE})",
            f"  API's 429s  {refused}: "
            f"{api.refused['load shedding']} while it shed load, "
            f"{api.refused['over the rate']} over the rate, "
            f"{api.refused['over the concurrency']} over the concurrency",
            f"  took        {self.elapsed:.1f} s",
        ]


async def main_job(jobs: int = 300) -> Summary:
    """Send *jobs* requests through a pool with the API's limits; print the summary.

    Return the summary too (the tests read it)."""
    api = FakeAPI(jobs)
    watch = Watch()
    started = anyio.current_time()
    async with werkpool.WorkerPool(
        size=AT_ONCE,
        rate=RATE,
        # A 429 pauses the whole pool for its Retry-After; the request is then retried.
        retry_after=lambda error: (
            error.retry_after if isinstance(error, TooManyRequests) else None
        ),
        hooks=[watch],
    ) as pool:
        async with werkpool.progress(pool, total=jobs, description="requests"):
            results = pool.map(
                api.get,
                range(jobs),
                retries=3,
                retryable_exceptions=ServerError,  # a 404 fails at once
                backoff=lambda retry: 0.25 * 2 ** (retry - 1),
                return_exceptions=True,
                ordered=False,  # results as they come: a slow one holds up no other
            )
            outcomes = [outcome async for outcome in results]
        statistics = pool.statistics()
    failed = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    summary = Summary(
        jobs=jobs,
        completed=statistics.completed,
        failed=len(failed),
        attempts=statistics.attempts,
        watch=watch,
        api=api,
        elapsed=anyio.current_time() - started,
    )
    print("\n".join(summary.lines()))
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument(
        "--jobs", type=int, default=300, help="how many requests (default 300)"
    )
    args = parser.parse_args(argv)
    anyio.run(partial(main_job, args.jobs), backend=args.backend)


if __name__ == "__main__":
    main()
