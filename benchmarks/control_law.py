"""The adaptive rate's control law, drawn from a real pool (docs/assets/control_law.png).

A pool with ``Rate(10, adaptive=True)`` sends 600 jobs to an in-process server that admits 7 a
second (a GCRA, burst 1) and refuses the rest with the exact wait as its ``Retry-After``: a
server 30 % stricter than the client was told. Each refusal is a :exc:`werkpool.RetryAfter`;
the refused job is retried. It runs on trio's virtual clock
(``MockClock(autojump_threshold=0)``), so the picture is the control law's alone, the same on
every machine, and takes a second.

Drawn: the starts per second (admitted and refused) against time, the configured rate, the
server's rate, and the pool's effective rate as :meth:`werkpool.WorkerPool.statistics` reports
it, sampled every 0.1 s. Printed: the episodes (the time of each decrease) and the share of the
server's rate the client got after the first one.

Run: ``python3 -m benchmarks.control_law [--out PATH]`` (needs matplotlib and trio: the
``bench`` extra).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import trio
import trio.testing

from werkpool import Rate, RetryAfter, WorkerPool

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE.parent / "docs" / "assets" / "control_law.png"

CONFIGURED = 10.0  # the client's Rate
SERVER = 7.0  # what the server really admits, per second
JOBS = 600


class Server:
    """A GCRA of SERVER per second, burst 1: admits or refuses each request as it arrives."""

    def __init__(self) -> None:
        self.tat = -1.0
        self.admitted: list[float] = []
        self.refused: list[float] = []

    def request(self, now: float) -> None:
        if now < self.tat - 1e-9:
            self.refused.append(now)
            raise RetryAfter(self.tat - now)  # the exact wait, as a GCRA server says
        self.tat = max(self.tat, now) + 1 / SERVER
        self.admitted.append(now)


async def _run(server: Server, samples: list[tuple[float, float]]) -> None:
    pool = WorkerPool(limits=[Rate(CONFIGURED, adaptive=True)])

    async def call() -> None:
        server.request(trio.current_time())
        await trio.sleep(0.05)

    async def sample() -> None:
        while True:
            limits = pool.statistics().limits
            samples.append((trio.current_time(), limits[0].effective_rate or CONFIGURED))
            await trio.sleep(0.1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sample)
        async with pool:
            for _ in range(JOBS):
                pool.run(call, retries=50)
        nursery.cancel_scope.cancel()


def collect() -> tuple[Server, list[tuple[float, float]]]:
    server = Server()
    samples: list[tuple[float, float]] = []
    trio.run(_run, server, samples, clock=trio.testing.MockClock(autojump_threshold=0))
    return server, samples


def per_second(times: list[float], end: float) -> list[int]:
    counts = [0] * (int(end) + 1)
    for t in times:
        counts[int(t)] += 1
    return counts


def draw(server: Server, samples: list[tuple[float, float]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    end = max(server.admitted)
    admitted = per_second(server.admitted, end)
    refused = per_second(server.refused, end)
    seconds = list(range(len(admitted)))
    fig, ax = plt.subplots(figsize=(9, 4), dpi=110)
    ax.bar(seconds, admitted, width=1.0, align="edge", color="#9ecae1", label="admitted / s")
    ax.bar(
        seconds,
        refused,
        width=1.0,
        align="edge",
        bottom=admitted,
        color="#fb6a4a",
        label="refused (429) / s",
    )
    times = [t for t, _ in samples]
    ax.step(
        times,
        [r for _, r in samples],
        where="post",
        color="#08519c",
        lw=1.6,
        label="the pool's effective rate",
    )
    ax.axhline(CONFIGURED, color="#555555", ls="--", lw=1, label=f"configured: {CONFIGURED:g}/s")
    ax.axhline(SERVER, color="#a50f15", ls=":", lw=1.2, label=f"the server admits {SERVER:g}/s")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("starts per second")
    ax.set_xlim(0, end + 1)
    ax.set_ylim(0, CONFIGURED * 1.35)
    ax.set_title(
        f"Rate({CONFIGURED:g}, adaptive=True) against a server that admits {SERVER:g}/s",
        fontsize=10,
    )
    ax.legend(loc="upper right", fontsize=8, ncol=3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m benchmarks.control_law", description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the PNG to write")
    args = parser.parse_args(argv)
    server, samples = collect()
    end = max(server.admitted)
    decreases = [t for (t, r), (_, before) in zip(samples[1:], samples, strict=False) if r < before]
    after = [t for t in server.admitted if t >= 10]
    print(f"{JOBS} jobs in {end:.1f} s; {len(server.refused)} refused (429)")
    print("decreases at: " + ", ".join(f"{t:.1f} s" for t in decreases))
    if after:
        got = len(after) / (end - 10)
        print(f"after 10 s: {got:.2f}/s, {got / SERVER:.0%} of the server's {SERVER:g}/s")
    draw(server, samples, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
