"""A blocking vendor SDK under a pool's ``size`` and ``rate``, each call in a thread.

The "SDK" is blocking code the event loop must not run itself (simulated here with
``time.sleep``): a call takes 50-200 ms, some calls fail with a transient error on their
first try, and a few hang on their first try for longer than the timeout. The pool runs
every call in a thread of its own limiter, as many threads as ``size`` (anyio's default
of 40 threads never caps it), starts at most ``rate`` calls a second, times each attempt
out and retries it.

The SDK counts, under a lock, how many of its calls run at once and when each begins, so
the summary shows what the vendor saw: never more than ``size`` threads inside at once,
and never more than ``rate`` calls begun in any second.

A timed-out attempt shows what a timeout can and cannot do to a thread: nothing can
interrupt ``time.sleep``, so the attempt waits for the call to return, keeps its slot
until then (``size`` counts every running thread), and then fails with ``TimeoutError``
and is retried.

Run: python examples/blocking_sdk.py [--backend asyncio|trio]   (about 3 s)
"""

from __future__ import annotations

import argparse
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import anyio

from werkpool import PoolStatistics, WorkerPool

SIZE = 4  # threads inside the SDK at once, at most
RATE = 20  # SDK calls begun per second, at most
ACCOUNTS = 40
TIMEOUT = 0.4  # seconds per attempt
RETRIES = 2
HANG = 0.6  # how long a hanging call blocks: longer than TIMEOUT
#: Starts are timed inside the threads, a little after the pool dates them: the busiest
#: window is counted over a second less this allowance for a thread's start-up.
THREAD_START = 0.01


class TransientError(Exception):
    """The SDK's "try again" error (a dropped connection, a 502 from the vendor)."""


@dataclass
class VendorSDK:
    """A blocking client, as a vendor ships it; it counts what it sees, under a lock."""

    rng: random.Random = field(default_factory=lambda: random.Random(14))
    lock: threading.Lock = field(default_factory=threading.Lock)
    inside: int = 0  # calls running now
    most_inside: int = 0  # the most calls ever running at once
    starts: list[float] = field(default_factory=list)  # time.monotonic() of each call
    tries: Counter[str] = field(default_factory=Counter)  # calls per account
    outcomes: Counter[str] = field(default_factory=Counter)
    threads: set[int] = field(default_factory=set)  # the threads that ran calls

    def authenticate(self) -> str:
        """Log in: a blocking call that returns a session token."""
        with self._call("login"):
            time.sleep(0.1)
            return "token-1234"

    def fetch_report(self, account: str) -> dict[str, object]:
        """Fetch one account's report: blocks 50-200 ms. Some accounts fail or hang on
        their first try (each account always does the same, so runs are comparable)."""
        with self._call(account) as first_try:
            number = int(account.removeprefix("acct-"))
            if first_try and number % 8 == 3:
                time.sleep(0.05)
                raise TransientError(f"connection reset while fetching {account}")
            if first_try and number % 10 == 7:
                # The vendor's server hangs; nothing can interrupt this.
                time.sleep(HANG)
            else:
                with self.lock:
                    pause = self.rng.uniform(0.05, 0.2)
                time.sleep(pause)
            return {"account": account, "balance": 100 * number}

    def _call(self, name: str) -> _Inside:
        return _Inside(self, name)


class _Inside:
    """Counts a call as running from start to end; yields whether it is its first."""

    def __init__(self, sdk: VendorSDK, name: str) -> None:
        self.sdk = sdk
        self.name = name

    def __enter__(self) -> bool:
        sdk = self.sdk
        with sdk.lock:
            sdk.starts.append(time.monotonic())
            sdk.inside += 1
            sdk.most_inside = max(sdk.most_inside, sdk.inside)
            sdk.tries[self.name] += 1
            sdk.threads.add(threading.get_ident())
            return sdk.tries[self.name] == 1

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        sdk = self.sdk
        with sdk.lock:
            sdk.inside -= 1
            sdk.outcomes["ok" if kind is None else kind.__name__] += 1


def busiest(times: list[float], window: float) -> int:
    """The most of *times* in any half-open window of *window* seconds."""
    times = sorted(times)
    first = 0
    most = 0
    for last, t in enumerate(times):
        while times[first] <= t - window:
            first += 1
        most = max(most, last - first + 1)
    return most


@dataclass
class Report:
    """What a run did: the SDK's counts and the pool's."""

    sdk: VendorSDK
    reports: list[dict[str, object]]
    stats: PoolStatistics
    elapsed: float  # seconds

    @property
    def achieved_rate(self) -> float:
        """Calls begun per second, from the first to the last, as the SDK saw them."""
        starts = self.sdk.starts
        return (len(starts) - 1) / (max(starts) - min(starts))

    @property
    def timed_out(self) -> int:
        """Calls that returned after their attempt timed out (their results dropped)."""
        return self.sdk.outcomes["ok"] - self.stats.completed

    @property
    def busiest_second(self) -> int:
        return busiest(self.sdk.starts, 1.0 - THREAD_START)

    def lines(self, backend: str) -> list[str]:
        sdk, stats = self.sdk, self.stats
        outcomes = sdk.outcomes
        return [
            f"{len(self.reports)} reports in {self.elapsed:.1f} s ({backend}): "
            f"{len(sdk.starts)} SDK calls in {len(sdk.threads)} threads, "
            f"{outcomes['TransientError']} transient errors, {stats.retries} retries",
            f"timeouts: {self.timed_out} calls outlived the {TIMEOUT:g} s timeout "
            f"(each kept its slot, then was retried)",
            f"most threads inside the SDK at once: {sdk.most_inside} (size {SIZE})",
            f"calls begun: {self.achieved_rate:.1f}/s on average, "
            f"at most {self.busiest_second} in any second (rate {RATE})",
            f"pool: {stats.attempts} attempts, {stats.completed} completed, "
            f"{stats.failed} failed",
        ]


async def demo() -> Report:
    """Log in with ``call_sync``, then fetch each account's report with ``map_sync``."""
    sdk = VendorSDK()
    accounts = [f"acct-{n}" for n in range(ACCOUNTS)]
    start = anyio.current_time()
    async with WorkerPool(size=SIZE, rate=RATE) as pool:
        # One call, its result here: the caller waits, the thread is the pool's.
        token = await pool.call_sync(sdk.authenticate, timeout=TIMEOUT, retries=RETRIES)
        assert token.startswith("token-")
        # Many calls, read lazily, in the order they finish: a hanging call holds up
        # nothing (in input order, the map would stop feeding once ``window`` results
        # wait behind it).
        reports = [
            report
            async for report in pool.map_sync(
                sdk.fetch_report,
                accounts,
                ordered=False,
                timeout=TIMEOUT,
                retries=RETRIES,
                retryable_exceptions=[TransientError, TimeoutError],
                backoff=lambda n: 0.05 * n,
            )
        ]
    return Report(sdk, reports, pool.statistics(), anyio.current_time() - start)


def main(argv: list[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    args = parser.parse_args(argv)
    report = anyio.run(demo, backend=args.backend)
    print("\n".join(report.lines(args.backend)))
    return report


if __name__ == "__main__":
    main()
