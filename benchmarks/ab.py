"""A/B: werkpool's per-job overhead on this tree against another git ref, in one run.

``python3 -m benchmarks.ab --ref 16a7ead`` exports the ref's ``werkpool/`` with ``git archive``
into a temporary directory and times the same cases on both trees, each run in a fresh Python
process with ``PYTHONPATH`` pointing at its tree, the trees interleaved (A B, then B A, ...), so
that a slow phase of a busy machine hits both. Each case reports the best CPU time per job of
each tree (``time.process_time``: the machine's other load counts less than in wall time) and
their ratio. Best-of is what a comparison on a shared machine can trust; the spread is printed
too.

Cases (50,000 trivial jobs by default, ``size=100``): ``map``, ``map-rate`` (``rate=1e9``),
``map-three`` (size, two rates, a cost), ``map-keyed`` (a key and a per-key rate),
``start_soon`` and ``run`` (awaiting each future), on asyncio; ``map-trio`` and
``start_soon-trio`` on trio; ``map-uvloop`` and ``start_soon-uvloop`` on asyncio with uvloop.
``python3 -m nox -s bench -- --ab REF [--cases ...] [--repeats N]`` runs this module.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CASES = (
    "map",
    "map-rate",
    "map-three",
    "map-keyed",
    "start_soon",
    "run",
    "map-trio",
    "start_soon-trio",
    "map-uvloop",
    "start_soon-uvloop",
)

#: One measurement, run in a child process: prints the CPU seconds per job in microseconds.
CHILD = r"""
import sys, time
import anyio
import werkpool
from werkpool import Rate, WorkerPool

n, case = int(sys.argv[1]), sys.argv[2]
backend = "trio" if case.endswith("-trio") else "asyncio"
options = {"use_uvloop": True} if case.endswith("-uvloop") else {}
kind = case.removesuffix("-trio").removesuffix("-uvloop")


async def job(i=0):
    return i


def pool():
    if kind == "map-rate":
        return WorkerPool(size=100, rate=1e9)
    if kind == "map-three":
        return WorkerPool(
            size=100,
            limits=[Rate(10**9, burst=10**6), Rate(10**11, burst=10**8, unit="tokens")],
        )
    if kind == "map-keyed":
        return WorkerPool(size=100, per_key=[Rate(10**9, burst=10**6)])
    return WorkerPool(size=100)


async def main():
    options = {}
    if kind == "map-three":
        options = {"cost": lambda i: {"tokens": 100}}
    elif kind == "map-keyed":
        options = {"key": lambda i: 0}
    async with pool() as p:
        started = time.process_time()
        if kind == "start_soon":
            for i in range(n):
                p.start_soon(job, i)
            await p.shutdown()
        elif kind == "run":
            futures = [p.run(job, i) for i in range(n)]
            for future in futures:
                await future
        else:
            count = 0
            async for _ in p.map(job, range(n), **options):
                count += 1
            assert count == n
        spent = time.process_time() - started
    print(spent / n * 1e6, werkpool.__file__)


anyio.run(main, backend=backend, backend_options=options)
"""


def export(ref: str, into: Path) -> Path:
    """``werkpool/`` of *ref*, unpacked under *into*; return the directory to put on the path."""
    archive = into / "werkpool.tar"
    with archive.open("wb") as out:
        subprocess.run(["git", "archive", ref, "werkpool"], cwd=ROOT, stdout=out, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into


def measure(tree: Path, case: str, jobs: int) -> float:
    """One run of *case* on the werkpool of *tree*: CPU µs per job."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    # From *tree*: ``python -c`` puts its working directory first on sys.path, before
    # PYTHONPATH, so run from the checkout both sides would import the checkout's werkpool.
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(jobs), case],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if done.returncode:
        raise SystemExit(f"{case} on {tree} failed:\n{done.stderr}")
    spent, imported = done.stdout.split(maxsplit=1)
    if not Path(imported.strip()).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"{case}: the child imported {imported.strip()}, not the tree {tree}")
    return float(spent)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ref", required=True, help="the git ref to compare against (B)")
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="werkpool-ab-") as tmp:
        trees = {"this tree": ROOT, args.ref: export(args.ref, Path(tmp))}
        print(
            f"{'case':16} {'this tree':>10} {args.ref:>10} {'ratio':>6}   (CPU µs per job, best of "
            f"{args.repeats}; all runs in brackets)"
        )
        for case in args.cases:
            runs: dict[str, list[float]] = {name: [] for name in trees}
            order = list(trees)
            for repeat in range(args.repeats):
                for name in order if repeat % 2 == 0 else order[::-1]:
                    runs[name].append(measure(trees[name], case, args.jobs))
            a, b = (min(runs[name]) for name in order)
            spread = "  ".join(f"[{' '.join(f'{x:.2f}' for x in runs[name])}]" for name in order)
            print(f"{case:16} {a:10.2f} {b:10.2f} {a / b:6.2f}   {spread}")


if __name__ == "__main__":
    main()
