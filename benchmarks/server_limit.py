"""Scenario 6, a real server-side limiter: how many requests does nginx's ``limit_req`` refuse?

A client set to a server's published rate is only right if the server agrees. This scenario starts
a private nginx (``-p DIR -c nginx.conf``, ``daemon off;``, one process, ``127.0.0.1`` on a free
port), whose ``limit_req`` is a leaky bucket with millisecond accounting that nobody here wrote,
and sends it N requests with httpx at R per second through each client, side by side in one run:

* **strict** locations, ``limit_req zone=rR;`` with no burst: nginx accepts a request only if at
  least ``1000 / R`` whole milliseconds passed since the last one it accepted. Clients:
  werkpool at its defaults (``WorkerPool(rate=R)``, burst 1), ``aiometer.run_on_each(
  max_per_second=R)`` and ``aiolimiter.AsyncLimiter(1, 1 / R)``.
* **tolerant** locations, ``limit_req zone=rR burst=5 nodelay;``: up to 5 requests beyond the
  rate are let through at once. Clients: werkpool with ``burst=2`` and ``burst=5``, aiometer and
  aiolimiter as above.

Reported per location, client, backend and rate (medians over the repeats): the 429s, the accepted
rate (accepted requests / wall time of the run / R), the fraction of gaps between consecutive
request starts shorter than ``1 / R`` (the starts as the job's own code reads
``anyio.current_time()`` on its first line, before the request is sent), the shortest such gap,
and the process CPU time per request. nginx's own CPU is not in it (another process).

Run alone with ``python3 -m benchmarks.server_limit [--quick]``, or as part of
``python3 -m nox -s bench`` (the session installs nginx with apt when it is missing and may).
Without nginx the scenario is skipped with a message saying why.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import itertools
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

if __package__ in (None, ""):  # run as a script: python3 benchmarks/server_limit.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "benchmarks"

import anyio

from werkpool import WorkerPool

from .common import (
    ASYNCIO,
    TRIO,
    UVLOOP,
    Backend,
    ScenarioResult,
    Target,
    available_backends,
    installed,
    md_table,
    median,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

    import httpx

HERE = Path(__file__).resolve().parent
RATES = (10.0, 100.0, 500.0)
#: Requests per run at each rate: the issue's sizes (about 10 s, 10 s and 6 s of requests).
REQUESTS = {10.0: 100, 100.0: 1_000, 500.0: 3_000}
QUICK_REQUESTS = {10.0: 20, 100.0: 200, 500.0: 600}
REPEATS = 3
SERVER_BURST = 5  # the tolerant locations' `burst=`
#: Concurrent warm-up requests to an unlimited location before each run, so that the timed
#: requests find open keep-alive connections and do not pay (uneven) connection set-up.
WARM_CONNECTIONS = 8
#: A run still going at this multiple of its ideal length (plus a few seconds) is cut off.
CUTOFF = 2.0
#: Two instants closer than this are one to the loops' clocks (see common.CLOCK_RESOLUTION).
RESOLUTION = 1e-9
#: "At least aiometer's" accepted rate is judged with this much slack (percentage points): the
#: spread between repeats of one client is about that large.
ACCEPTED_SLACK = 0.005
README_START = "<!-- server-limit:start -->"
README_END = "<!-- server-limit:end -->"


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the server ------------------------------------------------------------------------------------


def find_nginx() -> str | None:
    """The nginx binary: on PATH, or where Debian puts it (``/usr/sbin`` is not always on PATH)."""
    found = shutil.which("nginx")
    if found:
        return found
    for candidate in ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def _zone(rate: float) -> str:
    return f"r{rate:g}".replace(".", "_")


def nginx_conf(prefix: Path, port: int, rates: tuple[float, ...]) -> str:
    """The whole configuration: one zone per rate, a strict and a tolerant location for each.

    ``return 200`` alone runs before the phase in which ``limit_req`` acts, so every limited
    location goes through ``try_files`` to the named location that answers. One process
    (``master_process off``) so that the benchmark's own pid is the whole server.
    """
    zones = "\n".join(
        f"    limit_req_zone $server_name zone={_zone(r)}:1m rate={r:g}r/s;" for r in rates
    )
    locations = "\n".join(
        f"        location = /strict/{r:g} {{ limit_req zone={_zone(r)}; "
        "try_files /nonexistent @ok; }\n"
        f"        location = /tolerant/{r:g} {{ limit_req zone={_zone(r)} "
        f"burst={SERVER_BURST} nodelay; try_files /nonexistent @ok; }}"
        for r in rates
    )
    tmp = prefix / "tmp"
    return f"""\
daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
{zones}
    limit_req_status 429;
    # Refusals are counted by the client; logging each one would only cost the server time.
    limit_req_log_level info;
    server {{
        listen 127.0.0.1:{port};
        root {prefix}/html;
        keepalive_requests 1000000;
        keepalive_timeout 60s;
{locations}
        location = /warm {{ try_files /nonexistent @ok; }}
        location @ok {{ return 200 "ok"; }}
    }}
}}
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the server by its own pid: SIGTERM (nginx's fast shutdown), then SIGKILL."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def _wait_listening(proc: subprocess.Popen[bytes], port: int, seconds: float = 5.0) -> bool:
    """Poll the port until nginx accepts a connection, at most *seconds*; False if it exited."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return True
        time.sleep(0.05)
    return False


@contextlib.contextmanager
def nginx_server(nginx: str, rates: tuple[float, ...]) -> Iterator[str]:
    """Start a private nginx on a free loopback port; yield its base URL; stop it by its pid.

    Picking a free port and binding it are two steps, so another process may take the port in
    between: nginx then exits at once and a new port is tried (three attempts in all).
    """
    with tempfile.TemporaryDirectory(prefix="werkpool-nginx-") as tmp:
        prefix = Path(tmp)
        (prefix / "tmp").mkdir()
        (prefix / "html").mkdir()
        last_error = ""
        for _attempt in range(3):
            port = _free_port()
            (prefix / "nginx.conf").write_text(nginx_conf(prefix, port, rates), encoding="utf-8")
            proc = subprocess.Popen(
                [nginx, "-p", str(prefix), "-c", "nginx.conf", "-e", str(prefix / "error.log")],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            try:
                if _wait_listening(proc, port):
                    yield f"http://127.0.0.1:{port}"
                    return
                last_error = _error_text(proc, prefix)
            finally:
                _stop(proc)
        raise RuntimeError(f"nginx did not start: {last_error}")


def _error_text(proc: subprocess.Popen[bytes], prefix: Path) -> str:
    log = prefix / "error.log"
    text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
    if proc.poll() is not None and proc.stderr is not None:
        text += proc.stderr.read().decode(errors="replace")
    return text.strip()[-2000:] or f"exit code {proc.poll()}"


# -- the clients -----------------------------------------------------------------------------------


@dataclass
class Run:
    """What one client's run produced: each request's start and status, in submission order."""

    t_submit: float
    t_end: float
    cpu_s: float
    starts: list[float]  # anyio.current_time(), the jobs' own clock
    #: time.perf_counter() at the same line: uvloop's loop clock is libuv's, cached once per loop
    #: iteration in whole milliseconds, so its gaps are rounded; this one is not.
    precise: list[float]
    statuses: list[int]  # 0: not finished before the cut-off; -1: a transport error


def _recorder(client: httpx.AsyncClient, url: str, run: Run) -> Callable[[int], Awaitable[None]]:
    """The job every client runs: read the clock on its first line, then send the request."""
    import httpx

    starts = run.starts
    precise = run.precise
    statuses = run.statuses

    async def send(i: int) -> None:
        starts[i] = anyio.current_time()
        precise[i] = time.perf_counter()
        try:
            response = await client.get(url)
        except httpx.TransportError:
            statuses[i] = -1
        else:
            statuses[i] = response.status_code

    return send


async def werkpool_client(
    send: Callable[[int], Awaitable[None]], n: int, rate: float, burst: int
) -> None:
    async with WorkerPool(rate=rate, burst=burst) as pool:
        for i in range(n):
            pool.start_soon(send, i)


async def aiometer_client(
    send: Callable[[int], Awaitable[None]], n: int, rate: float, burst: int
) -> None:
    import aiometer

    await aiometer.run_on_each(send, range(n), max_per_second=rate)


async def aiolimiter_client(
    send: Callable[[int], Awaitable[None]], n: int, rate: float, burst: int
) -> None:
    """A gathered task per request, each inside ``async with AsyncLimiter(1, 1 / rate)``."""
    from aiolimiter import AsyncLimiter

    limiter = AsyncLimiter(1.0, 1.0 / rate)

    async def one(i: int) -> None:
        async with limiter:
            await send(i)

    await asyncio.gather(*[one(i) for i in range(n)])


@dataclass(frozen=True)
class Client:
    key: str
    label: str
    location: str  # "strict" or "tolerant"
    func: Callable[[Callable[[int], Awaitable[None]], int, float, int], Awaitable[None]]
    backends: tuple[Backend, ...]
    burst: int = 1
    needs: str | None = None


CLIENTS = (
    Client(
        "werkpool",
        "**werkpool** `WorkerPool(rate=R)`",
        "strict",
        werkpool_client,
        (ASYNCIO, UVLOOP, TRIO),
    ),
    Client(
        "aiometer",
        "`aiometer.run_on_each(max_per_second=R)`",
        "strict",
        aiometer_client,
        (ASYNCIO, TRIO),
        needs="aiometer",
    ),
    Client(
        "aiolimiter",
        "`aiolimiter.AsyncLimiter(1, 1/R)`",
        "strict",
        aiolimiter_client,
        (ASYNCIO,),
        needs="aiolimiter",
    ),
    Client(
        "werkpool_b2",
        "**werkpool** `WorkerPool(rate=R, burst=2)`",
        "tolerant",
        werkpool_client,
        (ASYNCIO, UVLOOP, TRIO),
        burst=2,
    ),
    Client(
        "werkpool_b5",
        "**werkpool** `WorkerPool(rate=R, burst=5)`",
        "tolerant",
        werkpool_client,
        (ASYNCIO, UVLOOP, TRIO),
        burst=5,
    ),
    Client(
        "aiometer",
        "`aiometer.run_on_each(max_per_second=R)`",
        "tolerant",
        aiometer_client,
        (ASYNCIO, TRIO),
        needs="aiometer",
    ),
    Client(
        "aiolimiter",
        "`aiolimiter.AsyncLimiter(1, 1/R)`",
        "tolerant",
        aiolimiter_client,
        (ASYNCIO,),
        needs="aiolimiter",
    ),
)


def _planned(backends: list[Backend]) -> list[tuple[Client, Backend]]:
    labels = {b.label for b in backends}
    return [
        (c, b)
        for c in CLIENTS
        if c.needs is None or installed(c.needs)
        for b in c.backends
        if b.label in labels
    ]


async def _warm(http: httpx.AsyncClient, url: str) -> None:
    """Open :data:`WARM_CONNECTIONS` keep-alive connections with concurrent unlimited requests."""
    statuses: list[int] = []

    async def one() -> None:
        statuses.append((await http.get(url)).status_code)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for _ in range(WARM_CONNECTIONS):
                tg.start_soon(one)
    if statuses != [200] * WARM_CONNECTIONS:
        raise RuntimeError(f"nginx answered the warm-up with {statuses}")


async def run_client(client: Client, base: str, rate: float, n: int) -> Run:
    """One run: a fresh httpx client, warmed up, then *n* requests through *client* at *rate*.

    The CPU time and the wall time cover the hand-over of the requests to the last response,
    not the client's creation nor the warm-up. A run still going at :data:`CUTOFF` times its
    ideal length (plus 5 s) is cut off; its unfinished requests count as status 0.
    """
    import httpx

    run = Run(0.0, 0.0, 0.0, [float("nan")] * n, [float("nan")] * n, [0] * n)
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    # trust_env=False: a proxy set in the environment must not sit between us and nginx.
    async with httpx.AsyncClient(limits=limits, timeout=10.0, trust_env=False) as http:
        await _warm(http, f"{base}/warm")
        send = _recorder(http, f"{base}/{client.location}/{rate:g}", run)
        cpu = time.process_time()
        run.t_submit = anyio.current_time()
        with anyio.move_on_after(CUTOFF * n / rate + 5.0):
            await client.func(send, n, rate, client.burst)
        run.t_end = anyio.current_time()
        run.cpu_s = time.process_time() - cpu
    return run


def metrics(run: Run, rate: float) -> dict[str, float]:
    """The numbers of one run (see the module docstring); gaps are on the jobs' own clock."""
    n = len(run.statuses)
    order = sorted((t, i) for i, t in enumerate(run.starts) if t == t)  # NaN: never started
    starts = [t for t, _ in order]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    slot = 1.0 / rate - RESOLUTION
    short = [g < slot for g in gaps]
    precise = sorted(t for t in run.precise if t == t)
    precise_gaps = [b - a for a, b in itertools.pairwise(precise)]
    statuses = run.statuses
    accepted = sum(s == 200 for s in statuses)
    refused = sum(s == 429 for s in statuses)
    elapsed = run.t_end - run.t_submit
    return {
        "n": n,
        "started": len(starts),
        "accepted": accepted,
        "refused": refused,
        "errors": sum(s == -1 for s in statuses),
        "unfinished": sum(s == 0 for s in statuses),
        "other": n - accepted - refused - sum(s in (-1, 0) for s in statuses),
        "elapsed_s": elapsed,
        "accepted_rate": accepted / elapsed / rate,
        "short_gaps": sum(short) / len(gaps) if gaps else 0.0,
        "min_gap_ms": min(gaps) * 1e3 if gaps else float("nan"),
        "short_gaps_perf_counter": (
            sum(g < slot for g in precise_gaps) / len(precise_gaps) if precise_gaps else 0.0
        ),
        "min_gap_ms_perf_counter": min(precise_gaps) * 1e3 if precise_gaps else float("nan"),
        # How many refusals came right after a start closer than 1/R to the one before it.
        "refused_after_short_gap": sum(
            statuses[order[k + 1][1]] == 429 for k, is_short in enumerate(short) if is_short
        ),
        "cpu_ms_per_request": run.cpu_s / n * 1e3,
        "first_start_ms": (starts[0] - run.t_submit) * 1e3 if starts else float("nan"),
    }


def _pause(rate: float) -> float:
    """Time between runs for the zone's bucket to drain (a shared zone per rate): burst + 1."""
    return max(0.2, (SERVER_BURST + 1) / rate + 0.1)


def collect(
    nginx: str,
    backends: list[Backend],
    rates: tuple[float, ...],
    requests: dict[float, int],
    repeats: int,
    seed: int,
) -> dict[tuple[str, str, str, float], list[dict[str, float]]]:
    """Every client on every backend at every rate, *repeats* times; shuffled in each round.

    Keys: (location, client key, backend label, rate); values: the metrics of each repeat.
    """
    rng = random.Random(seed + 6)
    plan = _planned(backends)
    out: dict[tuple[str, str, str, float], list[dict[str, float]]] = {}
    with nginx_server(nginx, rates) as base:
        _log(f"  server: nginx at {base}")
        for r in range(repeats):
            for rate in rates:
                n = requests[rate]
                order = list(plan)
                rng.shuffle(order)
                _log(
                    f"  server: {rate:g}/s, round {r + 1}/{repeats}, {len(order)} runs of "
                    f"{n:,} requests (about {len(order) * (n / rate + _pause(rate)):.0f} s)"
                )
                for client, backend in order:
                    time.sleep(_pause(rate))
                    run_ = backend.run(partial(run_client, client, base, rate, n))
                    m = metrics(run_, rate)
                    out.setdefault((client.location, client.key, backend.label, rate), []).append(m)
    return out


# -- the report ------------------------------------------------------------------------------------


def summarise(per_run: list[dict[str, float]]) -> dict[str, float]:
    """Medians over the repeats, and the extremes where a median would hide them."""
    keys = (
        "refused",
        "accepted_rate",
        "short_gaps",
        "short_gaps_perf_counter",
        "cpu_ms_per_request",
        "first_start_ms",
    )
    out = {k: median([m[k] for m in per_run]) for k in keys}
    out["refused_min"] = min(m["refused"] for m in per_run)
    out["refused_max"] = max(m["refused"] for m in per_run)
    out["min_gap_ms"] = min(m["min_gap_ms"] for m in per_run)
    out["min_gap_ms_perf_counter"] = min(m["min_gap_ms_perf_counter"] for m in per_run)
    out["failed"] = sum(m["errors"] + m["unfinished"] + m["other"] for m in per_run)
    out["refused_after_short_gap"] = sum(m["refused_after_short_gap"] for m in per_run)
    out["refused_total"] = sum(m["refused"] for m in per_run)
    return out


def _fmt_refused(s: dict[str, float], n: int) -> str:
    text = f"{s['refused']:,.0f} of {n:,}"
    if s["refused_min"] != s["refused_max"]:
        text += f" ({s['refused_min']:,.0f}-{s['refused_max']:,.0f})"
    return text


def _order(backends: list[Backend]) -> Callable[[tuple[str, str, str, float]], tuple[Any, ...]]:
    clients = {(c.location, c.key): i for i, c in enumerate(CLIENTS)}
    labels = {b.label: i for i, b in enumerate(backends)}
    locations = {"strict": 0, "tolerant": 1}
    return lambda k: (locations[k[0]], k[3], clients[(k[0], k[1])], labels[k[2]])


def report(
    runs: dict[tuple[str, str, str, float], list[dict[str, float]]],
    backends: list[Backend],
    requests: dict[float, int],
    repeats: int,
) -> tuple[str, list[Target], list[dict[str, Any]]]:
    """The markdown tables (one per location), the issue's targets and the raw data."""
    labels = {(c.location, c.key): c.label for c in CLIENTS}
    summary = {k: summarise(v) for k, v in runs.items()}
    sections: list[str] = []
    data: list[dict[str, Any]] = []
    for location, title in (
        ("strict", "strict: `limit_req zone=...;` (no burst)"),
        ("tolerant", f"tolerant: `limit_req zone=... burst={SERVER_BURST} nodelay;`"),
    ):
        rows: list[list[str]] = []
        for key in sorted((k for k in runs if k[0] == location), key=_order(backends)):
            _, client, backend, rate = key
            s = summary[key]
            data.append(
                {
                    "location": location,
                    "client": client,
                    "backend": backend,
                    "rate": rate,
                    "requests": requests[rate],
                    "runs": runs[key],
                    "summary": s,
                }
            )
            rows.append(
                [
                    f"{rate:g}/s",
                    labels[(location, client)],
                    backend,
                    _fmt_refused(s, requests[rate]),
                    f"{s['accepted_rate'] * 100:.1f} %",
                    f"{s['short_gaps'] * 100:.1f} % / {s['short_gaps_perf_counter'] * 100:.1f} %",
                    f"{s['min_gap_ms']:.2f} / {s['min_gap_ms_perf_counter']:.2f}",
                    f"{s['cpu_ms_per_request']:.3f}",
                ]
                + ([f"**{s['failed']:.0f}**"] if any(v["failed"] for v in summary.values()) else [])
            )
        headers = [
            "rate R",
            "client",
            "backend",
            "429s (range)",
            "accepted rate",
            "gaps < 1/R: loop clock / perf_counter",
            "shortest gap (ms): loop / perf_counter",
            "CPU ms / request",
        ]
        if any(v["failed"] for v in summary.values()):
            headers.append("errors / unfinished")
        sections.append(f"**{title}**\n\n" + md_table(headers, rows))
    sizes = ", ".join(f"{n:,} at {r:g}/s" for r, n in requests.items())
    markdown = (
        f"nginx `limit_req` on loopback, httpx, {sizes}; median of {repeats} "
        f"repeat{'s' if repeats > 1 else ''} (429s: median, and the range over the repeats). "
        "Accepted rate: accepted requests ÷ wall time from the hand-over to the last response ÷ R "
        "(a client that starts at once and keeps exactly to 1/R gets `N / (N - 1)`, a little over "
        "100 %, and one with burst b about `N / (N - b)`). Gaps: between consecutive request "
        "starts as the job's first line reads them, the share shorter than 1/R and the shortest "
        "of any repeat, on the loop's clock (`anyio.current_time()`, the jobs' own clock) and on "
        "`time.perf_counter()` read at the same line (uvloop's loop clock is libuv's, rounded to "
        "whole milliseconds once per loop iteration). CPU: this process's CPU time from the "
        "hand-over to the last response ÷ N (nginx's own is not counted).\n\n"
        + "\n\n".join(sections)
    )
    return markdown, _targets(summary, backends, requests), data


def _targets(
    summary: dict[tuple[str, str, str, float], dict[str, float]],
    backends: list[Backend],
    requests: dict[float, int],
) -> list[Target]:
    """The issue's targets, werkpool against aiometer on the same loop (trio's, or asyncio's)."""
    targets: list[Target] = []
    rates = sorted({k[3] for k in summary})
    at = f"at {' / '.join(f'{r:g}' for r in rates)}/s"

    def per_rate(location: str, client: str, backend: str, field: str) -> list[float] | None:
        found = [summary.get((location, client, backend, r)) for r in rates]
        return [f[field] for f in found if f is not None] if None not in found else None

    for backend in backends:
        mine = f"werkpool burst=1, {backend.label}"
        peer = TRIO.label if backend.label == TRIO.label else ASYNCIO.label
        against = f"aiometer on {peer}"
        checks: tuple[
            tuple[str, str, str, Callable[[list[float]], str], Callable[[float, float], bool]],
            ...,
        ] = (
            ("refused", "429s", "no more than", _ints, _at_most),
            (
                "accepted_rate",
                "accepted rate",
                f"(within {ACCEPTED_SLACK * 100:g} points) at least",
                _pcts,
                _at_least,
            ),
            ("cpu_ms_per_request", "CPU ms per request", "no more than", _ms, _at_most),
        )
        for field, what, goal, fmt, ok in checks:
            ours = per_rate("strict", "werkpool", backend.label, field)
            theirs = per_rate("strict", "aiometer", peer, field)
            if ours is None or theirs is None:
                continue
            targets.append(
                Target(
                    "server",
                    f"strict server, {mine}: {what} {at}",
                    f"{goal} {against}'s",
                    f"{fmt(ours)} vs {fmt(theirs)}",
                    all(ok(a, b) for a, b in zip(ours, theirs, strict=True)),
                )
            )
        at_100 = summary.get(("strict", "werkpool", backend.label, 100.0))
        if at_100 is not None:
            targets.append(
                Target(
                    "server",
                    f"strict server, {mine}: accepted rate at 100/s",
                    ">= 95 % (the issue's aim)",
                    _pcts([at_100["accepted_rate"]]),
                    at_100["accepted_rate"] >= 0.95,
                )
            )
        for key in ("werkpool_b2", "werkpool_b5"):
            accepted = per_rate("tolerant", key, backend.label, "accepted_rate")
            refused = per_rate("tolerant", key, backend.label, "refused")
            if accepted is None or refused is None:
                continue
            few = all(x <= 0.001 * requests[r] for x, r in zip(refused, rates, strict=True))
            targets.append(
                Target(
                    "server",
                    f"tolerant server, werkpool burst={key[-1]}, {backend.label}: {at}",
                    ">= 99 % accepted, <= 0.1 % refused",
                    f"{_pcts(accepted)}; 429s {_ints(refused)}",
                    min(accepted) >= 0.99 and few,
                )
            )
    return targets


def _at_most(ours: float, theirs: float) -> bool:
    return ours <= theirs


def _at_least(ours: float, theirs: float) -> bool:
    return ours >= theirs - ACCEPTED_SLACK


def _ms(xs: list[float]) -> str:
    return " / ".join(f"{x:.3f}" for x in xs)


def _ints(xs: list[float]) -> str:
    return " / ".join(f"{x:,.0f}" for x in xs)


def _pcts(xs: list[float]) -> str:
    return " / ".join(f"{x * 100:.1f} %" for x in xs)


# -- entry points ----------------------------------------------------------------------------------


def nginx_version(nginx: str) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            [nginx, "-v"], capture_output=True, text=True, timeout=10, check=False
        )
        found = re.search(r"nginx/(\S+)", done.stderr + done.stdout)
        if found:
            return found.group(1)
    return "unknown"


def run(
    backends: list[Backend],
    *,
    quick: bool,
    repeats: int | None = None,
    rates: tuple[float, ...] = RATES,
    out: Path = HERE / "results",
    readme: bool = True,
    command: str = "",
    seed: int = 20251128,
) -> ScenarioResult:
    """Run the scenario; write ``server_limit.md`` and ``.json`` into *out*; return its result.

    *readme*: also replace the section of benchmarks/README.md between its markers, which only
    a full-size run (not ``quick``) does. Without nginx or httpx the scenario is skipped: the
    result then says why and no file is written.
    """
    nginx = find_nginx()
    missing = None
    if nginx is None:
        missing = (
            "nginx is not installed (`apt-get install -y nginx` as root; `python3 -m nox -s "
            "bench` does that itself when it may)"
        )
    elif not installed("httpx"):
        missing = "httpx is not installed (it is in the `bench` dependency group)"
    if nginx is None or missing is not None:
        _log(f"  server: SKIPPED, {missing}")
        return ScenarioResult("server", f"Skipped: {missing}.", [], {"skipped": missing})
    repeats = repeats or (1 if quick else REPEATS)
    sizes = QUICK_REQUESTS if quick else REQUESTS
    requests = {r: sizes.get(r, round(r * (2 if quick else 10))) for r in rates}
    started = time.perf_counter()
    runs = collect(nginx, backends, rates, requests, repeats, seed)
    markdown, targets, data = report(runs, backends, requests, repeats)
    version = nginx_version(nginx)
    result = ScenarioResult(
        "server",
        markdown,
        targets,
        {
            "nginx": version,
            "server_burst": SERVER_BURST,
            "repeats": repeats,
            "requests": {f"{r:g}": n for r, n in requests.items()},
            "results": data,
        },
    )
    elapsed = time.perf_counter() - started
    header = (
        f"`{command}`\n\n{'quick' if quick else 'full'} run, "
        f"{datetime.date.today().isoformat()}, {elapsed / 60:.1f} min; nginx {version}, "
        f"{_versions()}; load average {_load()} after (1 / 5 / 15 min)."
    )
    missed = sum(not t.ok for t in targets)
    body = (
        f"{header}\n\n#### Targets: {len(targets) - missed} met, {missed} missed\n\n"
        + md_table(
            ["what", "target", "measured", ""],
            [[t.what, t.goal, t.measured, "ok" if t.ok else "**MISSED**"] for t in targets],
        )
        + f"\n\n#### Results\n\n{markdown}\n"
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "server_limit.md").write_text(body, encoding="utf-8")
    payload = {
        "command": command,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "mode": "quick" if quick else "full",
        "elapsed_s": elapsed,
        "targets": [t.__dict__ for t in targets],
        **result.data,
    }
    (out / "server_limit.json").write_text(
        json.dumps(payload, indent=1, default=str) + "\n", encoding="utf-8"
    )
    if readme and not quick:
        _update_readme(body)
    _log(f"  server: wrote {out / 'server_limit.md'} and server_limit.json")
    return result


def _versions() -> str:
    import importlib.metadata

    found = []
    for name in ("werkpool", "anyio", "httpx", "trio", "uvloop", "aiometer", "aiolimiter"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found.append(f"{name} {importlib.metadata.version(name)}")
    return ", ".join(found)


def _load() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except (AttributeError, OSError):
        return "n/a"


def _update_readme(body: str) -> None:
    readme = HERE / "README.md"
    text = readme.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(README_START) + ".*?" + re.escape(README_END), re.DOTALL)
    if pattern.search(text):
        block = f"{README_START}\n{body.rstrip()}\n{README_END}"
        readme.write_text(pattern.sub(lambda _: block, text), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m benchmarks.server_limit",
        description="werkpool, aiometer and aiolimiter against nginx's limit_req, side by side.",
    )
    parser.add_argument("--quick", action="store_true", help="fewer requests, one repeat")
    parser.add_argument("--repeats", type=int, help=f"repeats (default {REPEATS}, quick 1)")
    parser.add_argument(
        "--rates", type=float, nargs="+", default=list(RATES), help="requests per second"
    )
    parser.add_argument("--backends", nargs="+", metavar="BACKEND", help="limit to these")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="where to write")
    parser.add_argument(
        "--no-readme", action="store_true", help="leave benchmarks/README.md's section alone"
    )
    args = parser.parse_args(argv)
    backends = available_backends()
    if args.backends:
        backends = [b for b in backends if b.label in args.backends]
    argv_shown = sys.argv[1:] if argv is None else argv
    result = run(
        backends,
        quick=args.quick,
        repeats=args.repeats,
        rates=tuple(args.rates),
        out=args.out,
        readme=not args.no_readme and args.out == HERE / "results",
        command=os.environ.get("WERKPOOL_BENCH_COMMAND")
        or " ".join(["python3", "-m", "benchmarks.server_limit", *argv_shown]),
    )
    print(result.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
