"""Scenario 6, a real server-side limiter: how many requests does nginx's ``limit_req`` refuse?

A client set to a server's published rate is only right if the server agrees. This scenario starts
a private nginx (``-p DIR -c nginx.conf``, ``daemon off;``, one process, ``127.0.0.1`` on a free
port), whose ``limit_req`` is a leaky bucket with millisecond accounting that nobody here wrote,
and sends it N requests with httpx at R per second through each client, side by side in one run
(each round shuffles the runs of one rate):

* **strict** locations, ``limit_req zone=rR;`` with no burst: nginx accepts a request only if at
  least ``1000 / R`` whole milliseconds passed since the last one it accepted. Clients:
  werkpool at its defaults (``WorkerPool(rate=R)``, burst 1), werkpool with a spacing margin
  (``WorkerPool(limits=[Rate(R, margin=m)])`` for each ``m`` of :data:`MARGINS`, ``--margins``),
  ``aiometer.run_on_each(max_per_second=R)`` and ``aiolimiter.AsyncLimiter(1, 1 / R)``.
* **strict, busy loop**: the same clients at the same location, at :data:`BUSY_RATE` only, with a
  task in the client's own loop that blocks it :data:`BUSY_S` in every :data:`BUSY_PERIOD_S`
  (a busy-wait on ``time.perf_counter()``, then a sleep of the rest); ``--no-busy`` leaves it out.
* **tolerant** locations, ``limit_req zone=rR burst=5 nodelay;``: up to 5 requests beyond the
  rate are let through at once. Clients: werkpool with ``burst=2`` (:data:`TOLERANT_BURSTS`),
  aiometer and aiolimiter as above.

Reported per section, client, backend and rate (medians over the repeats): the 429s, each one
attributed, the accepted rate (accepted requests / wall time of the run / R), the fraction of gaps
between consecutive request starts shorter than ``1 / R`` (the starts as the job's own code reads
``anyio.current_time()`` on its first line, before the request is sent), the shortest such gap,
and the process CPU time per request (in the busy section it includes the busy-waits). nginx's own
CPU is not in it (another process).

A 429 is attributed by the client-side gap from the start of the last request before it (in start
order, on ``time.perf_counter()`` read on the job's first line) that nginx accepted, since
``limit_req`` compares a request with the last one it accepted: a gap under ``1 / R`` is the
client's fault, any other gap (or no accepted request before it in the run) is transit jitter,
the request travelling to nginx's whole-millisecond clock unevenly.

Full-size run: 3 repeats of 30 requests at 10/s, 1,000 at 100/s and 3,000 at 500/s, and 1,000 at
100/s in the busy section; about 32 minutes on 2 cores (the busy section is 8.5 of them). To stay
within 35 minutes beside the margin clients and the busy section, the full run sends 30 requests
at 10/s (the issue sent 100: at 10/s a 100 ms slot dwarfs any jitter and refusals are rarest, the
telling rates are 100 and 500/s) and the tolerant location runs werkpool with burst 2 only
(burst 5 was measured before: add it to :data:`TOLERANT_BURSTS` to run it again, about 3.5
minutes more). ``--quick``: 20, 200 and 600 requests, one repeat, about 3.5 minutes (4 on a
loaded machine).

Run alone with ``python3 -m benchmarks.server_limit [--quick] [--margins S ...] [--no-busy]``, or
as part of ``python3 -m nox -s bench`` (the session installs nginx with apt when it is missing and
may). Without nginx the scenario is skipped with a message saying why.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import itertools
import json
import math
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

from werkpool import Rate, WorkerPool

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
    from collections.abc import Awaitable, Callable, Iterator, Sequence

    import httpx

HERE = Path(__file__).resolve().parent
RATES = (10.0, 100.0, 500.0)
#: Requests per run at each rate (about 3 s, 10 s and 6 s of requests). The issue sent 100 at
#: 10/s; 30 keep the full run within 35 minutes (see the module docstring).
REQUESTS = {10.0: 30, 100.0: 1_000, 500.0: 3_000}
QUICK_REQUESTS = {10.0: 20, 100.0: 200, 500.0: 600}
REPEATS = 3
#: The spacing margins (seconds) of the extra strict werkpool clients,
#: ``WorkerPool(limits=[Rate(R, margin=m)])``, beside werkpool at its defaults (margin 0, always
#: run). ``--margins`` replaces them for one run.
MARGINS = (0.0001, 0.00025, 0.0005)
#: The tolerant location's werkpool bursts (burst 5 left out to keep the full run short).
TOLERANT_BURSTS = (2,)
#: The busy-loop section: at this rate only (when it is among the rates), every strict client
#: runs beside a task of its loop that busy-waits BUSY_S, then sleeps BUSY_PERIOD_S - BUSY_S.
BUSY_RATE = 100.0
BUSY_S = 0.003
BUSY_PERIOD_S = 0.010
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
#: The report's sections: key, title; a key is also the first element of every result's key.
SECTIONS = ("strict", "busy", "tolerant")
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
    send: Callable[[int], Awaitable[None]], n: int, rate: float, client: Client
) -> None:
    """werkpool at ``rate=R`` (and the client's burst), or ``limits=[Rate(R, margin=m)]``."""
    if client.margin:
        pool = WorkerPool(limits=[Rate(rate, burst=client.burst, margin=client.margin)])
    else:
        pool = WorkerPool(rate=rate, burst=client.burst)
    async with pool:
        for i in range(n):
            pool.start_soon(send, i)


async def aiometer_client(
    send: Callable[[int], Awaitable[None]], n: int, rate: float, client: Client
) -> None:
    import aiometer

    await aiometer.run_on_each(send, range(n), max_per_second=rate)


async def aiolimiter_client(
    send: Callable[[int], Awaitable[None]], n: int, rate: float, client: Client
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
    func: Callable[[Callable[[int], Awaitable[None]], int, float, Client], Awaitable[None]]
    backends: tuple[Backend, ...]
    burst: int = 1
    margin: float = 0.0  # seconds, werkpool only
    needs: str | None = None


def margin_key(margin: float) -> str:
    """The key of the strict werkpool client with *margin* (seconds): ``werkpool_m<µs>``."""
    return "werkpool" if margin == 0 else f"werkpool_m{margin * 1e6:g}"


def make_clients(
    margins: Sequence[float] = MARGINS, tolerant_bursts: Sequence[int] = TOLERANT_BURSTS
) -> tuple[Client, ...]:
    """Every client of the run, strict ones first (werkpool by growing margin), then tolerant."""
    every = (ASYNCIO, UVLOOP, TRIO)
    peers: list[tuple[str, str, Any, tuple[Backend, ...]]] = [
        ("aiometer", "`aiometer.run_on_each(max_per_second=R)`", aiometer_client, (ASYNCIO, TRIO)),
        ("aiolimiter", "`aiolimiter.AsyncLimiter(1, 1/R)`", aiolimiter_client, (ASYNCIO,)),
    ]
    strict = [
        Client("werkpool", "**werkpool** `WorkerPool(rate=R)`", "strict", werkpool_client, every)
    ]
    strict += [
        Client(
            margin_key(m),
            f"**werkpool** `WorkerPool(limits=[Rate(R, margin={m:g})])`",
            "strict",
            werkpool_client,
            every,
            margin=m,
        )
        for m in sorted(set(margins))
        if m > 0  # margin 0 is werkpool at its defaults, always run
    ]
    tolerant = [
        Client(
            f"werkpool_b{b}",
            f"**werkpool** `WorkerPool(rate=R, burst={b})`",
            "tolerant",
            werkpool_client,
            every,
            burst=b,
        )
        for b in tolerant_bursts
    ]
    for location, group in (("strict", strict), ("tolerant", tolerant)):
        group += [
            Client(key, label, location, func, backends, needs=key)
            for key, label, func, backends in peers
        ]
    return (*strict, *tolerant)


#: The clients of a run with the default margins and bursts.
CLIENTS = make_clients()


def _planned(clients: Sequence[Client], backends: list[Backend]) -> list[tuple[Client, Backend]]:
    labels = {b.label for b in backends}
    return [
        (c, b)
        for c in clients
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


async def _busy_loop() -> None:
    """Block the loop :data:`BUSY_S` in every :data:`BUSY_PERIOD_S`, until cancelled.

    A busy-wait, not ``time.sleep``: it is CPU work the loop cannot interrupt, as a parser or
    a hash in a job would be.
    """
    while True:
        until = time.perf_counter() + BUSY_S
        while time.perf_counter() < until:
            pass
        await anyio.sleep(BUSY_PERIOD_S - BUSY_S)


async def run_client(client: Client, base: str, rate: float, n: int, *, busy: bool = False) -> Run:
    """One run: a fresh httpx client, warmed up, then *n* requests through *client* at *rate*.

    The CPU time and the wall time cover the hand-over of the requests to the last response,
    not the client's creation nor the warm-up. A run still going at :data:`CUTOFF` times its
    ideal length (plus 5 s) is cut off; its unfinished requests count as status 0. *busy*: a
    task of the same loop blocks it (:func:`_busy_loop`) from just before the hand-over to the
    last response.
    """
    import httpx

    run = Run(0.0, 0.0, 0.0, [float("nan")] * n, [float("nan")] * n, [0] * n)
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    # trust_env=False: a proxy set in the environment must not sit between us and nginx.
    async with httpx.AsyncClient(limits=limits, timeout=10.0, trust_env=False) as http:
        await _warm(http, f"{base}/warm")
        send = _recorder(http, f"{base}/{client.location}/{rate:g}", run)
        async with anyio.create_task_group() as tg:
            if busy:
                tg.start_soon(_busy_loop)
            cpu = time.process_time()
            run.t_submit = anyio.current_time()
            with anyio.move_on_after(CUTOFF * n / rate + 5.0):
                await client.func(send, n, rate, client)
            run.t_end = anyio.current_time()
            run.cpu_s = time.process_time() - cpu
            tg.cancel_scope.cancel()
    return run


def metrics(run: Run, rate: float) -> dict[str, Any]:
    """The numbers of one run (see the module docstring); gaps are on the jobs' own clock, the
    attribution of the 429s on ``time.perf_counter()``."""
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
    faults, jitter, refused_gaps = attribute(run.precise, statuses, rate)
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
        "refused_client_fault": faults,
        "refused_jitter": jitter,
        # The client-side gap from the last accepted start, of each 429 (ms; inf: none before).
        "refused_gaps_ms": [g * 1e3 for g in refused_gaps],
        "cpu_ms_per_request": run.cpu_s / n * 1e3,
        "first_start_ms": (starts[0] - run.t_submit) * 1e3 if starts else float("nan"),
    }


def attribute(
    precise: Sequence[float], statuses: Sequence[int], rate: float
) -> tuple[int, int, list[float]]:
    """Split the 429s into the client's faults and transit jitter: ``(faults, jitter, gaps)``.

    nginx's ``limit_req`` compares a request with the last one it *accepted*, so each 429 is
    judged by the client-side gap (*precise*, the jobs' ``time.perf_counter()`` readings) from
    the start of the last accepted request started before it. A gap under ``1 / rate`` is the
    client's fault; otherwise the client kept to the rate and the request's way to nginx's
    clock (loopback, the server's event loop, its whole milliseconds) shortened the gap: jitter.
    A 429 with no accepted request before it in the run counts as jitter (gap ``inf``).
    """
    slot = 1.0 / rate - RESOLUTION
    last_accepted = -math.inf
    faults = jitter = 0
    gaps: list[float] = []
    for t, i in sorted((t, i) for i, t in enumerate(precise) if t == t):
        if statuses[i] == 200:
            last_accepted = t
        elif statuses[i] == 429:
            gap = t - last_accepted
            gaps.append(gap)
            if gap < slot:
                faults += 1
            else:
                jitter += 1
    return faults, jitter, gaps


def _pause(rate: float) -> float:
    """Time between runs for the zone's bucket to drain (a shared zone per rate): burst + 1."""
    return max(0.2, (SERVER_BURST + 1) / rate + 0.1)


Results = dict[tuple[str, str, str, float], list[dict[str, Any]]]


def _round(
    plan: list[tuple[Client, Backend]], rate: float, busy: bool
) -> list[tuple[Client, Backend, bool]]:
    """The runs of one round at *rate*: every planned pair, and the busy section at its rate."""
    order = [(c, b, False) for c, b in plan]
    if busy and rate == BUSY_RATE:
        order += [(c, b, True) for c, b in plan if c.location == "strict"]
    return order


def estimate_s(
    plan: list[tuple[Client, Backend]],
    rates: Sequence[float],
    requests: dict[float, int],
    repeats: int,
    busy: bool,
) -> float:
    """A rough length of the whole run: each run's ideal length, plus 10 % for the clients'
    lateness, the pause and 0.3 s of loop start and warm-up."""
    per_round = sum(
        len(_round(plan, rate, busy)) * (1.1 * requests[rate] / rate + _pause(rate) + 0.3)
        for rate in rates
    )
    return per_round * repeats


def collect(
    nginx: str,
    clients: Sequence[Client],
    backends: list[Backend],
    rates: tuple[float, ...],
    requests: dict[float, int],
    repeats: int,
    seed: int,
    *,
    busy: bool = True,
) -> Results:
    """Every client on every backend at every rate, *repeats* times; shuffled in each round.

    Keys: (section, client key, backend label, rate), the section one of :data:`SECTIONS`;
    values: the metrics of each repeat.
    """
    rng = random.Random(seed + 6)
    plan = _planned(clients, backends)
    out: Results = {}
    with nginx_server(nginx, rates) as base:
        _log(
            f"  server: nginx at {base}; about "
            f"{estimate_s(plan, rates, requests, repeats, busy) / 60:.0f} min in all"
        )
        for r in range(repeats):
            for rate in rates:
                n = requests[rate]
                order = _round(plan, rate, busy)
                rng.shuffle(order)
                _log(
                    f"  server: {rate:g}/s, round {r + 1}/{repeats}, {len(order)} runs of "
                    f"{n:,} requests (about {len(order) * (n / rate + _pause(rate)):.0f} s)"
                )
                for client, backend, busy_run in order:
                    time.sleep(_pause(rate))
                    run_ = backend.run(partial(run_client, client, base, rate, n, busy=busy_run))
                    section = "busy" if busy_run else client.location
                    out.setdefault((section, client.key, backend.label, rate), []).append(
                        metrics(run_, rate)
                    )
    return out


# -- the report ------------------------------------------------------------------------------------


def summarise(per_run: list[dict[str, Any]]) -> dict[str, float]:
    """Medians over the repeats, and the extremes and sums where a median would hide them."""
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
    out["refused_client_fault"] = sum(m["refused_client_fault"] for m in per_run)
    out["refused_jitter"] = sum(m["refused_jitter"] for m in per_run)
    gaps = [g for m in per_run for g in m["refused_gaps_ms"]]
    out["min_refused_gap_ms"] = min(gaps) if gaps else math.nan
    return out


def _fmt_refused(s: dict[str, float], n: int) -> str:
    text = f"{s['refused']:,.0f} of {n:,}"
    if s["refused_min"] != s["refused_max"]:
        text += f" ({s['refused_min']:,.0f}-{s['refused_max']:,.0f})"
    return text


def _fmt_gap(ms: float) -> str:
    if math.isnan(ms):
        return "-"
    return "none before" if math.isinf(ms) else f"{ms:.2f}"


def _order(
    clients: Sequence[Client], backends: list[Backend]
) -> Callable[[tuple[str, str, str, float]], tuple[Any, ...]]:
    index = {(c.location, c.key): i for i, c in enumerate(clients)}
    labels = {b.label: i for i, b in enumerate(backends)}
    return lambda k: (SECTIONS.index(k[0]), k[3], index[(_location(k[0]), k[1])], labels[k[2]])


def _location(section: str) -> str:
    return "strict" if section == "busy" else section


def _peer(backend: str) -> str:
    """The backend whose aiometer a werkpool client on *backend* is held against."""
    return TRIO.label if backend == TRIO.label else ASYNCIO.label


def report(
    runs: Results,
    clients: Sequence[Client],
    backends: list[Backend],
    requests: dict[float, int],
    repeats: int,
) -> tuple[str, list[Target], list[dict[str, Any]]]:
    """The markdown (the margins against aiometer, then one table per section), the issue's
    targets and the raw data."""
    labels = {(c.location, c.key): c.label for c in clients}
    summary = {k: summarise(v) for k, v in runs.items()}
    failed = any(v["failed"] for v in summary.values())
    titles = {
        "strict": "strict: `limit_req zone=...;` (no burst)",
        "busy": (
            f"strict, busy loop: the same location at {BUSY_RATE:g}/s, a task of the client's loop "
            f"blocking it {BUSY_S * 1e3:g} ms in every {BUSY_PERIOD_S * 1e3:g} ms"
        ),
        "tolerant": f"tolerant: `limit_req zone=... burst={SERVER_BURST} nodelay;`",
    }
    sections: list[str] = []
    data: list[dict[str, Any]] = []
    for section in SECTIONS:
        rows: list[list[str]] = []
        for key in sorted((k for k in runs if k[0] == section), key=_order(clients, backends)):
            _, client, backend, rate = key
            s = summary[key]
            data.append(
                {
                    "section": section,
                    "location": _location(section),
                    "busy": section == "busy",
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
                    labels[(_location(section), client)],
                    backend,
                    _fmt_refused(s, requests[rate]),
                    f"{s['refused_client_fault']:,.0f} / {s['refused_jitter']:,.0f}",
                    _fmt_gap(s["min_refused_gap_ms"]),
                    f"{s['accepted_rate'] * 100:.1f} %",
                    f"{s['short_gaps'] * 100:.1f} % / {s['short_gaps_perf_counter'] * 100:.1f} %",
                    f"{s['min_gap_ms']:.2f} / {s['min_gap_ms_perf_counter']:.2f}",
                    f"{s['cpu_ms_per_request']:.3f}",
                ]
                + ([f"**{s['failed']:.0f}**"] if failed else [])
            )
        if not rows:
            continue
        headers = [
            "rate R",
            "client",
            "backend",
            "429s (range)",
            "429s, all repeats: client fault / jitter",
            "shortest client gap before a 429 (ms)",
            "accepted rate",
            "gaps < 1/R: loop clock / perf_counter",
            "shortest gap (ms): loop / perf_counter",
            "CPU ms / request",
        ] + (["errors / unfinished"] if failed else [])
        sections.append(f"**{titles[section]}**\n\n" + md_table(headers, rows))
    sizes = ", ".join(f"{n:,} at {r:g}/s" for r, n in requests.items())
    markdown = (
        f"nginx `limit_req` on loopback, httpx, {sizes}; median of {repeats} "
        f"repeat{'s' if repeats > 1 else ''} (429s: median, and the range over the repeats). "
        "A 429 is the client's fault when the client-side gap (`time.perf_counter()` on the job's "
        "first line) from the last accepted request started before it is under 1/R (nginx "
        "compares with the last request it accepted), else transit jitter; both are summed over "
        "the repeats, with the shortest such gap of any 429. "
        "Accepted rate: accepted requests ÷ wall time from the hand-over to the last response ÷ R "
        "(a client that starts at once and keeps exactly to 1/R gets `N / (N - 1)`, a little over "
        "100 %, and one with burst b about `N / (N - b)`). Gaps: between consecutive request "
        "starts as the job's first line reads them, the share shorter than 1/R and the shortest "
        "of any repeat, on the loop's clock (`anyio.current_time()`, the jobs' own clock) and on "
        "`time.perf_counter()` read at the same line (uvloop's loop clock is libuv's, rounded to "
        "whole milliseconds once per loop iteration). CPU: this process's CPU time from the "
        "hand-over to the last response ÷ N (nginx's own is not counted; in the busy section it "
        "includes the busy-waits).\n\n"
        + _margin_table(summary, clients, backends)
        + "\n\n"
        + "\n\n".join(sections)
    )
    return markdown, _targets(summary, clients, backends, requests), data


def _werkpool_strict(clients: Sequence[Client]) -> list[Client]:
    return [c for c in clients if c.location == "strict" and c.func is werkpool_client]


def _margin_table(
    summary: dict[tuple[str, str, str, float], dict[str, float]],
    clients: Sequence[Client],
    backends: list[Backend],
) -> str:
    """werkpool at each margin against aiometer on the same loop, every rate and the busy loop:
    the table from which the default or recommended margin is read off."""
    rates = sorted({k[3] for k in summary if k[0] == "strict"})
    if not rates:
        return ""
    parts = [("strict", rates)]
    if any(k[0] == "busy" for k in summary):
        parts.append(("busy", [BUSY_RATE]))
    rows: list[list[str]] = []
    for client in _werkpool_strict(clients):
        for backend in backends:
            if backend not in client.backends:
                continue
            peer = _peer(backend.label)
            cells: list[str] = []
            verdicts: list[str] = []
            faults = jitter = 0.0
            for section, section_rates in parts:
                ours = [summary.get((section, client.key, backend.label, r)) for r in section_rates]
                theirs = [summary.get((section, "aiometer", peer, r)) for r in section_rates]
                if any(o is None for o in ours):
                    cells += ["-", "-"]
                    continue
                mine = [o for o in ours if o is not None]
                faults += sum(o["refused_client_fault"] for o in mine)
                jitter += sum(o["refused_jitter"] for o in mine)
                refused = _ints([o["refused"] for o in mine])
                accepted = _pcts([o["accepted_rate"] for o in mine])
                if any(t is None for t in theirs):
                    cells += [refused, accepted]
                    continue
                peers = [t for t in theirs if t is not None]
                cells += [
                    f"{refused} ({_ints([t['refused'] for t in peers])})",
                    f"{accepted} ({_pcts([t['accepted_rate'] for t in peers])})",
                ]
                ok = all(
                    _at_most(o["refused"], t["refused"])
                    and _at_least(o["accepted_rate"], t["accepted_rate"])
                    for o, t in zip(mine, peers, strict=True)
                )
                verdicts.append(f"{'idle' if section == 'strict' else 'busy'}: {_yes(ok)}")
            rows.append(
                [
                    f"{client.margin * 1e3:g} ms",
                    backend.label,
                    *cells,
                    f"{faults:,.0f} / {jitter:,.0f}",
                    "; ".join(verdicts) or "-",
                ]
            )
    at = " / ".join(f"{r:g}" for r in rates)
    headers = [
        "werkpool margin",
        "backend",
        f"429s at {at}/s (aiometer's)",
        f"accepted rate at {at}/s (aiometer's)",
    ]
    if len(parts) > 1:
        headers += [
            f"busy loop, {BUSY_RATE:g}/s: 429s (aiometer's)",
            "busy loop: accepted rate (aiometer's)",
        ]
    headers += [
        "429s, all: client fault / jitter",
        "429s <= aiometer's and accepted >= aiometer's at every rate",
    ]
    return (
        "**werkpool's margins against aiometer** on the same loop (trio's for trio, asyncio's "
        "otherwise), medians, strict location; the accepted rate within "
        f"{ACCEPTED_SLACK * 100:g} points\n\n" + md_table(headers, rows)
    )


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _targets(
    summary: dict[tuple[str, str, str, float], dict[str, float]],
    clients: Sequence[Client],
    backends: list[Backend],
    requests: dict[float, int],
) -> list[Target]:
    """The issue's targets, werkpool against aiometer on the same loop (trio's, or asyncio's):
    at its defaults (429s, accepted rate, CPU; >= 95 % at 100/s), at each margin (429s and
    accepted rate), and with each burst at the tolerant location."""
    targets: list[Target] = []
    rates = sorted({k[3] for k in summary if k[0] != "busy"})
    at = f"at {' / '.join(f'{r:g}' for r in rates)}/s"

    def per_rate(location: str, client: str, backend: str, field: str) -> list[float] | None:
        found = [summary.get((location, client, backend, r)) for r in rates]
        return [f[field] for f in found if f is not None] if None not in found else None

    checks: tuple[
        tuple[str, str, str, Callable[[list[float]], str], Callable[[float, float], bool]], ...
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
    for backend in backends:
        peer = _peer(backend.label)
        against = f"aiometer on {peer}"
        for client in _werkpool_strict(clients):
            if backend not in client.backends:
                continue
            default = client.margin == 0
            mine = (
                f"werkpool burst=1 margin=0, {backend.label}"
                if default
                else f"werkpool margin={client.margin:g}, {backend.label}"
            )
            # The CPU is compared at the defaults only: a margin does not change the work.
            for field, what, goal, fmt, ok in checks if default else checks[:2]:
                ours = per_rate("strict", client.key, backend.label, field)
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
            at_100 = summary.get(("strict", client.key, backend.label, 100.0))
            if default and at_100 is not None:
                targets.append(
                    Target(
                        "server",
                        f"strict server, {mine}: accepted rate at 100/s",
                        ">= 95 % (the issue's aim)",
                        _pcts([at_100["accepted_rate"]]),
                        at_100["accepted_rate"] >= 0.95,
                    )
                )
        for client in clients:
            if client.location != "tolerant" or client.func is not werkpool_client:
                continue
            accepted = per_rate("tolerant", client.key, backend.label, "accepted_rate")
            refused = per_rate("tolerant", client.key, backend.label, "refused")
            if accepted is None or refused is None:
                continue
            few = all(x <= 0.001 * requests[r] for x, r in zip(refused, rates, strict=True))
            targets.append(
                Target(
                    "server",
                    f"tolerant server, werkpool burst={client.burst}, {backend.label}: {at}",
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
    margins: Sequence[float] = MARGINS,
    busy: bool = True,
) -> ScenarioResult:
    """Run the scenario; write ``server_limit.md`` and ``.json`` into *out*; return its result.

    *readme*: also replace the section of benchmarks/README.md between its markers, which only
    a full-size run (not ``quick``) does. *margins*: of the extra strict werkpool clients, in
    seconds (werkpool at margin 0 always runs). *busy*: run the busy-loop section (at
    :data:`BUSY_RATE`, when it is among *rates*). Without nginx or httpx the scenario is
    skipped: the result then says why and no file is written.
    """
    for m in margins:
        if not 0 <= m < 1 / max(rates):
            raise ValueError(
                f"margins: each must be >= 0 and under 1/R = {1 / max(rates):g} s, not {m!r}"
            )
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
    clients = make_clients(margins)
    busy = busy and BUSY_RATE in rates
    runs = collect(nginx, clients, backends, rates, requests, repeats, seed, busy=busy)
    markdown, targets, data = report(runs, clients, backends, requests, repeats)
    version = nginx_version(nginx)
    result = ScenarioResult(
        "server",
        markdown,
        targets,
        {
            "nginx": version,
            "server_burst": SERVER_BURST,
            "margins": sorted({m for m in margins if m > 0}),
            "tolerant_bursts": list(TOLERANT_BURSTS),
            "busy": (
                {"rate": BUSY_RATE, "busy_s": BUSY_S, "period_s": BUSY_PERIOD_S} if busy else None
            ),
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
        "--margins",
        type=float,
        nargs="*",
        metavar="SECONDS",
        default=list(MARGINS),
        help="margins of the extra strict werkpool clients, in seconds (default "
        f"{' '.join(f'{m:g}' for m in MARGINS)}; none: werkpool at margin 0 only)",
    )
    parser.add_argument(
        "--no-busy",
        action="store_true",
        help=f"leave out the busy-loop section (strict location at {BUSY_RATE:g}/s)",
    )
    parser.add_argument(
        "--no-readme", action="store_true", help="leave benchmarks/README.md's section alone"
    )
    args = parser.parse_args(argv)
    top = 1 / max(args.rates)
    bad = [m for m in args.margins if not 0 <= m < top]
    if bad:
        parser.error(f"--margins: each must be >= 0 and under 1/R = {top:g} s, not {bad[0]:g}")
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
        margins=tuple(args.margins),
        busy=not args.no_busy,
    )
    print(result.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
