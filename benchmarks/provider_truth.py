"""Scenario 12 (#22): the referee's provider-shaped server, each client as its users write it.

The server (:func:`app`, plain ASGI) runs on uvicorn in a subprocess (``python -m
benchmarks.provider_truth --serve``: it binds ``127.0.0.1`` on a free port, prints it, and is
stopped by its own pid). Per window ``W`` = 10 s (times the ``--scale``; ``--quick`` runs at
0.25) it keeps:

* a bucket of 120 requests and one of 200,000 tokens (a request's cost: its ``X-Tokens``
  header), each refilled continuously at a window's worth per ``W`` and starting full;
* per key (the ``X-Key`` header) a GCRA of 6/s with burst 2.

A request (dated on arrival) is admitted only if all three have room, decided atomically (one
event loop, no await between the check and the charge); otherwise it gets a 429 at once with
``Retry-After`` = the longest wait among the refusing limits (fractional seconds) and a JSON body
naming them, ``{"limits": ["key"|"rpm"|"tpm", ...]}``; nothing is charged. An admitted request
is answered after 50-200 ms (times the scale; drawn from the seed, its id and its attempt).

The workload: 400 requests, every one submitted at t = 0, each client on a fresh httpx client
(new connections, no warm-up: the start-up jitter is in it), costs drawn from a fixed-seed
log-normal of mean about 1,670 tokens. At most 50 attempts per request.

* **A**: 20 keys, the server as advertised;
* **B**: the same, the server enforcing 80 % of the advertised requests and tokens (the clients
  are told the advertised numbers);
* **C**: half the requests on one hot key;
* **H** (headers): A's workload; the server also sends OpenAI-style
  ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` (resets as Go durations, ``6.5s``)
  on every answer, and a second client in the server process spends 30 % of the same budget
  behind the clients' back (paced, polite: it waits out its own 429s).

``t_min`` is analytic (as in scenario 9): for each bucket of capacity C refilled at r per second
the last of U units cannot start before ``(U - C) / r``; for a key's GCRA the last of its n
requests cannot start before ``(n - burst) / rate``; in H the refill left to the clients is 70 %.
The largest, plus the shortest latency, is the bound.

Clients, side by side in one run, on asyncio; on trio werkpool's recipe, and with
``--all-on-trio`` (the default of ``--quick``; a full run stays under 15 minutes without it) its
PoolTransport and aiometer too (aiolimiter and PyrateLimiter are asyncio-only):

* **werkpool, recipe**: :func:`recipe_pool`, the configuration of docs/recipes/llm-api.md (the
  referee's, but for the keys' burst): ``Rate(120, per=W, burst=120, adaptive=True)``,
  ``Rate(200_000, per=W, burst=200_000, unit="tokens", adaptive=True)``, ``per_key=[Rate(6,
  burst=2, initial=1)]`` (the referee's ``burst=2`` had each key refused once at the start: its
  first two requests reached the server late on their new connections, the third on time;
  ``initial=1`` starts a fresh key's bucket with one start, and keeps the burst to catch up),
  ``size=32``, ``retry_after=`` mapping a 429 to its ``Retry-After``; ``pool.run(send, r,
  key=, cost=)``.
  Where this werkpool has them (detected, so the scenario runs on older code too) it names the
  limits (``name="rpm"``/``"tpm"``), scopes the pushback by the body's limits
  (``RetryAfter(s, scope="key"|"rpm"|"tpm"|"pool")``, raised by the job), takes the keys in
  submission order (``key_order="submitted"``: a batch) and, in H, reports each answer's
  headers to the pool (``pool.observe_headers``);
* **werkpool, PoolTransport**: the same pool under ``httpx.AsyncClient(transport=PoolTransport(
  pool, key=, cost=, retries=49, retry_methods=("POST",)))`` and, where it has them,
  ``classify=`` (the body's limits to a scoped pushback) and ``headers=``;
* **aiolimiter**: three ``AsyncLimiter`` by hand (per key ``AsyncLimiter(2, 2/6 s)``, requests,
  ``acquire(tokens)``), a 429 sleeps its ``Retry-After`` and acquires again;
* **PyrateLimiter**: the same with three ``Limiter(StateBucket([Rate], TokenBucket()))``;
* **aiometer**: ``run_on_each(max_per_second=q)``, the one rate it can take: the lower of the
  requests' and the tokens' over the mean cost; no keys.

Every client's httpx client sends through a recording transport (the same for all), which dates
each request's first attempt and its successful answer and counts the 429s. Reported per
scenario, backend and client: makespan (hand-over to the last answer) / t_min, 429s (and the
refusing limits, as the server counted them), lost requests (refused 50 times, failed, or
unanswered at the cut-off of 2 x t_min + 5 s), p50 / p99 latency (first attempt's start to
success), the cold keys' p99 in C, and the targets of #22's "Done means" (latency targets times
the scale).

Run alone with ``python3 -m benchmarks.provider_truth [--quick]``, or in ``python3 -m nox -s
bench`` (``--only provider_truth``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import inspect
import json
import math
import os
import random
import re
import sys
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

if __package__ in (None, ""):  # run as a script: python3 benchmarks/provider_truth.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "benchmarks"

import anyio

from .common import ASYNCIO, TRIO, Backend, ScenarioResult, Target, installed, md_table
from .common import percentile as _percentile
from .provider import _commit, _load, _versions, provider_server

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# -- the numbers ------------------------------------------------------------------------

REQUESTS = 400
KEYS = 20
HOT_KEY = 0
WINDOW = 10.0  # seconds, at scale 1
RPM = 120  # requests per window
TPM = 200_000  # tokens per window
KEY_RATE = 6.0  # per second, at scale 1
KEY_BURST = 2
COST_MEAN = 1_670
COST_SIGMA = 0.8
COST_MIN, COST_MAX = 50, 20_000
LATENCY = (0.050, 0.200)  # seconds, at scale 1
MAX_ATTEMPTS = 50
STRICTER = 0.8  # scenario B: the server enforces this share of the advertised rpm and tpm
OTHER = 0.3  # scenario H: the share of the budget a second client spends behind the pool's back
RECIPE_SIZE = 32  # the recipe's (and the referee's) pool size
FULL_SCALE = 1.0
QUICK_SCALE = 0.25
CUTOFF = 2.0  # a run still going at CUTOFF x t_min + 5 s (scaled) is cut off
README_START = "<!-- provider-truth:start -->"
README_END = "<!-- provider-truth:end -->"

# Targets (#22, "Done means"); latencies in seconds at scale 1.
A_RATIO = 1.03
A_P99 = 1.0
B_RATIO = 1.05
B_REFUSED = 25
C_RATIO = 1.03
C_COLD_P99 = 1.0
H_REFUSED_SHARE = 0.02


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the workload and its bound -----------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """A provider's limits at some time scale: counts per window, a key's GCRA per second."""

    requests: float
    tokens: float
    window: float
    key_rate: float
    key_burst: int

    @classmethod
    def advertised(cls, scale: float) -> Limits:
        return cls(RPM, TPM, WINDOW * scale, KEY_RATE / scale, KEY_BURST)

    def enforced(self, share: float) -> Limits:
        """The requests and tokens times *share* (the per-key GCRA stays)."""
        return replace(self, requests=self.requests * share, tokens=self.tokens * share)


@dataclass(frozen=True)
class Request:
    id: int
    key: int
    tokens: int


def costs(seed: int, n: int = REQUESTS) -> list[int]:
    """Log-normal token costs of mean about :data:`COST_MEAN` (clipped, fixed seed)."""
    rng = random.Random(seed)
    mu = math.log(COST_MEAN) - COST_SIGMA**2 / 2  # the mean of a log-normal is e^(mu + s^2/2)
    drawn = [rng.lognormvariate(mu, COST_SIGMA) for _ in range(n)]
    # 400 draws miss the mean by several percent: bring the sample's mean to COST_MEAN.
    factor = COST_MEAN * n / sum(drawn)
    return [min(COST_MAX, max(COST_MIN, round(x * factor))) for x in drawn]


def workload(seed: int, *, hot: bool) -> list[Request]:
    """400 requests over 20 keys (or half of them on one hot key), in a fixed shuffled order."""
    tokens = costs(seed)
    if hot:
        half = REQUESTS // 2
        keys = [HOT_KEY] * half + [1 + i % (KEYS - 1) for i in range(REQUESTS - half)]
    else:
        keys = [i % KEYS for i in range(REQUESTS)]
    random.Random(seed + 1).shuffle(keys)
    return [Request(i, k, c) for i, (k, c) in enumerate(zip(keys, tokens, strict=True))]


def bounds(requests: list[Request], server: Limits, other: float = 0.0) -> dict[str, float]:
    """Seconds before the last unit of each limit can start (>= 0); *other*: the share of the
    refill a second client takes."""
    left = 1.0 - other

    def bucket(units: float, capacity: float) -> float:
        return max(0.0, units - capacity) / (capacity / server.window * left)

    per_key: dict[int, int] = {}
    for r in requests:
        per_key[r.key] = per_key.get(r.key, 0) + 1
    return {
        "rpm": bucket(len(requests), server.requests),
        "tpm": bucket(sum(r.tokens for r in requests), server.tokens),
        "key": max(max(0, n - server.key_burst) / server.key_rate for n in per_key.values()),
    }


def t_min(requests: list[Request], server: Limits, scale: float, other: float = 0.0) -> float:
    found = bounds(requests, server, other)
    return max(found.values()) + LATENCY[0] * scale


@dataclass(frozen=True)
class Case:
    key: str
    title: str
    share: float  # the server enforces this share of the advertised requests and tokens
    hot: bool = False
    headers: bool = False  # the server sends x-ratelimit-* and a second client spends OTHER


CASES = (
    Case("A", "A: 20 keys, the server as advertised", 1.0),
    Case("B", f"B: the server enforces {STRICTER:.0%} of what it advertises", STRICTER),
    Case("C", "C: half the requests on one hot key", 1.0, hot=True),
    Case(
        "H",
        f"H: OpenAI-style rate-limit headers, a second client spending {OTHER:.0%} of the budget",
        1.0,
        headers=True,
    ),
)


# -- the server -----------------------------------------------------------------------------------


class Bucket:
    """A continuously refilling bucket holding *capacity*, refilled at *rate* per second."""

    __slots__ = ("capacity", "last", "level", "rate")

    def __init__(self, capacity: float, rate: float, now: float) -> None:
        self.capacity = capacity
        self.rate = rate
        self.level = capacity
        self.last = now

    def refill(self, now: float) -> None:
        if now > self.last:
            self.level = min(self.capacity, self.level + (now - self.last) * self.rate)
            self.last = now

    def wait(self, cost: float) -> float:
        """Seconds until the bucket holds *cost* (call refill() first)."""
        return 0.0 if self.level >= cost else (cost - self.level) / self.rate

    def reset(self) -> float:
        """Seconds until the bucket is full again."""
        return (self.capacity - self.level) / self.rate


def go_duration(seconds: float) -> str:
    """*seconds* as OpenAI writes a reset: ``20ms``, ``6.5s``, ``1m0.25s``."""
    if seconds < 1.0:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    minutes, rest = divmod(seconds, 60.0)
    text = f"{rest:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(minutes)}m{text}" if minutes else text


class ServerRun:
    """One client's run: fresh buckets and GCRAs, the server's own counts."""

    def __init__(self, config: dict[str, Any], now: float) -> None:
        window = float(config["window"])
        self.requests = Bucket(config["requests"], config["requests"] / window, now)
        self.tokens = Bucket(config["tokens"], config["tokens"] / window, now)
        self.interval = 1.0 / float(config["key_rate"])  # GCRA emission interval
        self.tau = (int(config["key_burst"]) - 1) * self.interval
        self.tat: dict[str, float] = {}
        self.scale = float(config["scale"])
        self.seed = int(config["seed"])
        self.headers = bool(config.get("headers"))
        self.start = now
        self.attempts: dict[int, int] = {}
        self.accepted = 0
        self.refused = 0
        self.refused_by = {"key": 0, "rpm": 0, "tpm": 0}
        self.other_accepted = 0
        self.other_refused = 0
        self.ended = False
        #: Each request's first arrival (time.monotonic(), the clock of the clients'
        #: perf_counter on Linux): how long the client's own HTTP stack held it shows.
        self.arrived: dict[int, float] = {}

    def admit(self, key: str | None, tokens: float, now: float) -> tuple[float, list[str]]:
        """Charge every limit and return (0, []), or return (Retry-After, the refusing limits)
        having charged nothing. *key* None: no per-key limit (the second client)."""
        self.requests.refill(now)
        self.tokens.refill(now)
        waits: dict[str, float] = {}
        if key is not None:
            allowed_at = self.tat.get(key, now) - self.tau
            if allowed_at > now:
                waits["key"] = allowed_at - now
        w = self.requests.wait(1.0)
        if w > 0:
            waits["rpm"] = w
        w = self.tokens.wait(tokens)
        if w > 0:
            waits["tpm"] = w
        if waits:
            return max(waits.values()), sorted(waits)
        if key is not None:
            self.tat[key] = max(self.tat.get(key, now), now) + self.interval
        self.requests.level -= 1.0
        self.tokens.level -= tokens
        return 0.0, []

    def rate_headers(self) -> list[tuple[bytes, bytes]]:
        """OpenAI's ``x-ratelimit-*`` for the shared requests and tokens budgets."""
        out = []
        for name, b in (("requests", self.requests), ("tokens", self.tokens)):
            out += [
                (f"x-ratelimit-limit-{name}".encode(), f"{b.capacity:.0f}".encode()),
                (f"x-ratelimit-remaining-{name}".encode(), f"{math.floor(b.level)}".encode()),
                (f"x-ratelimit-reset-{name}".encode(), go_duration(b.reset()).encode()),
            ]
        return out

    def latency(self, request_id: int) -> float:
        attempt = self.attempts.get(request_id, 0)
        self.attempts[request_id] = attempt + 1
        rng = random.Random(self.seed * 1_000_003 + request_id * 101 + attempt)
        return (LATENCY[0] + (LATENCY[1] - LATENCY[0]) * rng.random()) * self.scale

    async def other_client(self, share: float, limit_s: float) -> None:
        """The second client of scenario H: *share* of the requests and tokens budgets, paced
        evenly (a request of the mean size at *share* of the request rate), waiting out its
        own 429s; it stops when the run ends, or after *limit_s*."""
        interval = 1.0 / (share * self.requests.rate)
        cost = self.tokens.capacity / self.requests.capacity
        due = self.start + interval
        deadline = self.start + limit_s
        while not self.ended and time.monotonic() < deadline:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            wait, _ = self.admit(None, cost, time.monotonic())
            if wait > 0:
                self.other_refused += 1
                await asyncio.sleep(wait)
                continue
            self.other_accepted += 1
            due += interval

    def stats(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "refused": self.refused,
            "refused_by": self.refused_by,
            "other_accepted": self.other_accepted,
            "other_refused": self.other_refused,
            "arrived": self.arrived,
        }


RUNS: dict[str, ServerRun] = {}
TASKS: set[asyncio.Task[None]] = set()
_JSON = [(b"content-type", b"application/json")]


async def _body(receive: Callable[[], Awaitable[dict[str, Any]]]) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _answer(
    send: Callable[[dict[str, Any]], Awaitable[None]],
    status: int,
    payload: Any,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    await send(
        {"type": "http.response.start", "status": status, "headers": _JSON + (headers or [])}
    )
    await send({"type": "http.response.body", "body": json.dumps(payload).encode()})


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for k, v in scope["headers"]:
        if k == name:
            return str(v.decode("latin-1"))
    return None


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``POST /v1/{run}/chat`` (headers ``X-Key``, ``X-Tokens``, ``X-Request-Id``); ``POST /runs``
    sets up a run, ``POST /runs/{run}/end`` ends it, ``GET /runs/{run}`` reads its counts;
    ``GET /warm`` answers at once (the readiness probe)."""
    if scope["type"] != "http":
        return
    now = time.monotonic()  # the request is dated as it arrives
    path: str = scope["path"]
    body = await _body(receive)
    parts = path.split("/")
    if path.startswith("/v1/"):
        run = RUNS.get(parts[2])
        if run is None:
            await _answer(send, 404, {"error": "no such run"})
            return
        key = _header(scope, b"x-key") or ""
        tokens = float(_header(scope, b"x-tokens") or 0)
        request_id = int(_header(scope, b"x-request-id") or 0)
        run.arrived.setdefault(request_id, now)
        wait, refusing = run.admit(key, tokens, now)
        extra = run.rate_headers() if run.headers else []
        if wait > 0:
            run.refused += 1
            for name in refusing:
                run.refused_by[name] += 1
            retry = f"{math.ceil(wait * 1000) / 1000:.3f}".encode()
            await _answer(send, 429, {"limits": refusing}, [(b"retry-after", retry), *extra])
            return
        run.accepted += 1
        await asyncio.sleep(run.latency(request_id))
        await _answer(send, 200, {"id": request_id, "usage": {"total_tokens": tokens}}, extra)
    elif path == "/runs" and scope["method"] == "POST":
        config = json.loads(body)
        name = str(len(RUNS) + 1)
        run = RUNS[name] = ServerRun(config, time.monotonic())
        if config.get("other"):
            task = asyncio.create_task(
                run.other_client(float(config["other"]), float(config["other_limit_s"]))
            )
            TASKS.add(task)
            task.add_done_callback(TASKS.discard)
        await _answer(send, 200, {"run": name})
    elif len(parts) == 4 and parts[1] == "runs" and parts[3] == "end":
        run = RUNS.get(parts[2])
        if run is not None:
            run.ended = True
        await _answer(send, 200 if run else 404, {})
    elif path.startswith("/runs/"):
        run = RUNS.get(parts[2])
        await _answer(send, 200 if run else 404, run.stats() if run else {})
    elif path == "/warm":
        await _answer(send, 200, {})
    else:
        await _answer(send, 404, {"error": "not found"})


def serve() -> None:
    """The server's process: bind 127.0.0.1 on a free port, print it, serve until SIGTERM."""
    import socket

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    print(sock.getsockname()[1], flush=True)
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_level="warning",
        access_log=False,
        timeout_keep_alive=600,
        server_header=False,
        date_header=False,
    )
    uvicorn.Server(config).run(sockets=[sock])


def truth_server() -> contextlib.AbstractContextManager[str]:
    """Start this scenario's server (provider.py's launcher, with this module's ``--serve``)."""
    return provider_server("benchmarks.provider_truth")


# -- what every client shares -------------------------------------------------------------------


@dataclass
class Record:
    """Per request (by id): first attempt's start, success, status, attempts; 429s in all."""

    n: int
    first: list[float] = field(default_factory=list)
    done: list[float] = field(default_factory=list)
    status: list[int] = field(default_factory=list)
    attempts: list[int] = field(default_factory=list)
    refused: int = 0
    errors: int = 0
    failures: list[str] = field(default_factory=list)  # the first errors of lost requests

    def __post_init__(self) -> None:
        nan = math.nan
        self.first = [nan] * self.n
        self.done = [nan] * self.n
        self.status = [0] * self.n
        self.attempts = [0] * self.n


def recording_transport(record: Record) -> httpx.AsyncBaseTransport:
    """A fresh connection pool that dates and counts every attempt (the same for every client,
    werkpool's PoolTransport sends its attempts through it too)."""
    import httpx

    # httpx's default connection limits, spelled out: what a user's client has.
    inner = httpx.AsyncHTTPTransport(
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20)
    )
    perf = time.perf_counter

    class Recording(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            i = int(request.headers["x-request-id"])
            if record.first[i] != record.first[i]:
                record.first[i] = perf()
            record.attempts[i] += 1
            try:
                response = await inner.handle_async_request(request)
            except httpx.TransportError:
                record.errors += 1
                raise
            if response.status_code == 429:
                record.refused += 1
            else:
                record.status[i] = response.status_code
                if response.status_code == 200:
                    record.done[i] = perf()
            return response

        async def aclose(self) -> None:
            await inner.aclose()

    return Recording()


@dataclass
class Setup:
    """What a client gets: the limits it is told, the requests, where to send them."""

    limits: Limits
    requests: list[Request]
    url: str
    record: Record
    headers: bool = False  # apply the server's rate-limit headers (where werkpool can)
    mean_cost: float = COST_MEAN

    def request_headers(self, r: Request) -> dict[str, str]:
        return {"x-key": f"k{r.key}", "x-tokens": str(r.tokens), "x-request-id": str(r.id)}


BODY = b'{"model": "bench", "messages": [{"role": "user", "content": "hi"}]}'


def retry_after_of(response: httpx.Response) -> float:
    try:
        return max(0.0, float(response.headers.get("retry-after", "1")))
    except ValueError:
        return 1.0


def refusing_limits(response: httpx.Response) -> list[str]:
    """The limits a 429's body names (``[]`` if it names none)."""
    try:
        found = response.json().get("limits", [])
    except (ValueError, AttributeError):
        return []
    return [str(x) for x in found] if isinstance(found, list) else []


# -- werkpool, as the recipe says -----------------------------------------------------------------


def _has_param(obj: Any, name: str) -> bool:
    try:
        return name in inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return False


def features() -> dict[str, bool]:
    """Which of #22's features this werkpool has (the scenario runs with or without them)."""
    import werkpool

    transport: Any = None
    with contextlib.suppress(ImportError):  # the httpx extra missing
        from werkpool.httpx import PoolTransport

        transport = PoolTransport
    return {
        "names": _has_param(werkpool.Rate, "name"),
        "scopes": _has_param(werkpool.RetryAfter, "scope"),
        "settle": hasattr(werkpool, "settle"),
        "observe": _observer_name() is not None,
        "classify": transport is not None and _has_param(transport, "classify"),
        "transport_headers": transport is not None and _has_param(transport, "headers"),
        "key_order": _has_param(werkpool.WorkerPool, "key_order"),
        "initial": _has_param(werkpool.Rate, "initial"),
    }


FEATURES: dict[str, bool] | None = None


def _features() -> dict[str, bool]:
    global FEATURES
    if FEATURES is None:
        FEATURES = features()
    return FEATURES


class RateLimited(Exception):
    """The recipe's "your client's 429 error": the Retry-After and the limits that refused."""

    def __init__(self, retry_after: float, limits: list[str]) -> None:
        super().__init__(f"429 Too Many Requests (Retry-After: {retry_after} s, {limits})")
        self.retry_after = retry_after
        self.limits = limits


def scope_for(limits: list[str]) -> str:
    """Which scope a 429 naming *limits* pauses: the one provider-wide limit that refused (by
    its name), the pool when both did, the key when only the key did."""
    shared = [name for name in ("rpm", "tpm") if name in limits]
    if len(shared) == 2:
        return "pool"
    if shared:
        return shared[0] if _features()["names"] else "pool"
    return "key" if limits else "pool"


def recipe_pushback(seconds: float, limits: list[str]) -> Any:
    """The pushback for a 429: a scoped ``RetryAfter`` where werkpool has scopes, else the
    bare delay (the recipe's ``retry_after=`` today)."""
    from werkpool import RetryAfter

    if _features()["scopes"]:
        return RetryAfter(seconds, scope=scope_for(limits))  # type: ignore[call-arg,unused-ignore]
    return seconds


def refused(response: httpx.Response) -> Exception:
    """What the recipe's job raises on a 429: where werkpool has scopes, the scoped
    ``RetryAfter`` itself (a job may raise it; the pool's ``retry_after=`` does not yet take a
    ``RetryAfter`` on every werkpool that has scopes), else the recipe's own error, which
    ``retry_after=`` maps to its delay."""
    seconds, limits = retry_after_of(response), refusing_limits(response)
    if _features()["scopes"]:
        pushback: Exception = recipe_pushback(seconds, limits)
        return pushback
    return RateLimited(seconds, limits)


def recipe_retry_after(error: BaseException) -> Any:
    """The recipe's ``retry_after=``: 429s are pushbacks, any other error an ordinary one."""
    if isinstance(error, RateLimited):
        return recipe_pushback(error.retry_after, error.limits)
    return None


def recipe_pool(lim: Limits, *, retry_after: bool = True) -> Any:
    """The pool of docs/recipes/llm-api.md for these limits (the referee's configuration).

    Switch it here when the recipe changes; ``retry_after=False`` for the PoolTransport, which
    maps the 429s itself.
    """
    from werkpool import Rate, WorkerPool

    feats = _features()
    named = feats["names"]
    rpm: dict[str, Any] = {"name": "rpm"} if named else {}
    tpm: dict[str, Any] = {"name": "tpm"} if named else {}
    # A batch: the oldest request first, whatever its key, keeps every key's own limit busy.
    order: dict[str, Any] = {"key_order": "submitted"} if feats["key_order"] else {}
    if feats["initial"]:
        key_rate = Rate(lim.key_rate, burst=lim.key_burst, initial=1)
    else:
        key_rate = Rate(lim.key_rate)
    return WorkerPool(
        size=RECIPE_SIZE,
        limits=[
            Rate(
                round(lim.requests), per=lim.window, burst=round(lim.requests), adaptive=True, **rpm
            ),
            Rate(
                lim.tokens,
                per=lim.window,
                burst=lim.tokens,
                unit="tokens",
                adaptive=True,
                **tpm,
            ),
        ],
        # The server's burst, but a fresh key starts one request, not two back to back:
        # those reach it out of order on fresh connections (burst 1 where initial= is missing).
        per_key=[key_rate],
        retry_after=recipe_retry_after if retry_after else None,
        **order,
    )


def _observer_name() -> str | None:
    """The pool's method that takes a response's rate-limit headers, if this werkpool has one
    (``observe_headers``; ``observe`` as #22's design note first sketched it)."""
    from werkpool import WorkerPool

    for name in ("observe_headers", "observe"):
        if hasattr(WorkerPool, name):
            return name
    return None


def report_headers(pool: Any, response: httpx.Response) -> None:
    """Hand an answer's rate-limit headers to the pool, where werkpool can take them. The
    server's budgets are the provider's, shared by every key: reported without a key."""
    name = _observer_name()
    if name is not None:
        getattr(pool, name)(response.headers)


async def werkpool_recipe(setup: Setup) -> None:
    """werkpool as the recipe says: the pool, ``pool.run`` with key= and cost=, a 429 raised
    as the recipe's error."""
    import httpx

    async with (
        httpx.AsyncClient(transport=recording_transport(setup.record), timeout=60.0) as http,
        recipe_pool(setup.limits) as pool,
    ):

        async def send(r: Request) -> None:
            response = await http.post(setup.url, content=BODY, headers=setup.request_headers(r))
            if setup.headers:
                report_headers(pool, response)
            if response.status_code == 429:
                raise refused(response)
            response.raise_for_status()

        futures = [
            pool.run(send, r, key=r.key, cost={"tokens": r.tokens}, retries=MAX_ATTEMPTS - 1)
            for r in setup.requests
        ]
        for future in futures:
            try:
                await future
            except Exception as error:  # failed for good: keep a few for the report
                if len(setup.record.failures) < 5:
                    setup.record.failures.append(repr(error)[:300])


async def transport_classify(response: httpx.Response) -> Any:
    """PoolTransport's ``classify=``: a 429 is a pushback scoped by the limits its body names."""
    if response.status_code != 429:
        return None
    await response.aread()
    return recipe_pushback(retry_after_of(response), refusing_limits(response))


async def werkpool_transport(setup: Setup) -> None:
    """werkpool's PoolTransport: key=, cost=, retries (POST added to retry_methods), and
    classify= / headers= where this werkpool has them."""
    import httpx

    from werkpool.httpx import PoolTransport

    feats = _features()
    extra: dict[str, Any] = {}
    if feats["classify"]:
        extra["classify"] = transport_classify
    if feats["transport_headers"]:
        extra["headers"] = setup.headers
    async with recipe_pool(setup.limits, retry_after=False) as pool:
        transport = PoolTransport(
            pool,
            recording_transport(setup.record),
            key=lambda request: request.headers["x-key"],
            cost=lambda request: {"tokens": float(request.headers["x-tokens"])},
            retries=MAX_ATTEMPTS - 1,
            retry_methods=("POST",),
            **extra,
        )
        async with httpx.AsyncClient(transport=transport, timeout=60.0) as http:

            async def one(r: Request) -> None:
                try:
                    await http.post(setup.url, content=BODY, headers=setup.request_headers(r))
                except Exception as error:  # failed for good: keep a few for the report
                    if len(setup.record.failures) < 5:
                        setup.record.failures.append(repr(error)[:300])

            async with anyio.create_task_group() as tg:
                for r in setup.requests:
                    tg.start_soon(one, r)


# -- the peers ------------------------------------------------------------------------------------


async def _retrying(
    http: httpx.AsyncClient,
    setup: Setup,
    r: Request,
    acquire: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Acquire (if given), send; on a 429 sleep its Retry-After and start over; 50 at most."""
    import httpx

    for _ in range(MAX_ATTEMPTS):
        if acquire is not None:
            await acquire()
        try:
            response = await http.post(setup.url, content=BODY, headers=setup.request_headers(r))
        except httpx.HTTPError:
            return
        if response.status_code != 429:
            return
        await anyio.sleep(retry_after_of(response))


async def aiolimiter_client(setup: Setup) -> None:
    import httpx
    from aiolimiter import AsyncLimiter

    lim = setup.limits
    requests = AsyncLimiter(lim.requests, lim.window)
    tokens = AsyncLimiter(lim.tokens, lim.window)
    per_key: dict[int, AsyncLimiter] = {}

    async with httpx.AsyncClient(transport=recording_transport(setup.record), timeout=60.0) as http:

        async def one(r: Request) -> None:
            async def acquire() -> None:
                limiter = per_key.get(r.key)
                if limiter is None:
                    # burst 2 at 6/s: a bucket of 2 that drains in 2/6 s
                    limiter = per_key[r.key] = AsyncLimiter(
                        lim.key_burst, lim.key_burst / lim.key_rate
                    )
                await limiter.acquire()
                await requests.acquire()
                await tokens.acquire(r.tokens)

            await _retrying(http, setup, r, acquire)

        await asyncio.gather(*(one(r) for r in setup.requests))


async def pyrate_client(setup: Setup) -> None:
    import httpx
    from pyrate_limiter import Limiter, StateBucket, TokenBucket
    from pyrate_limiter import Rate as PyrateRate

    lim = setup.limits

    def limiter(count: float, seconds: float) -> Limiter:
        ms = max(1, round(seconds * 1000))
        return Limiter(StateBucket([PyrateRate(round(count), ms)], TokenBucket()))

    requests = limiter(lim.requests, lim.window)
    tokens = limiter(lim.tokens, lim.window)
    per_key: dict[int, Limiter] = {}

    async with httpx.AsyncClient(transport=recording_transport(setup.record), timeout=60.0) as http:

        async def one(r: Request) -> None:
            async def acquire() -> None:
                key_limiter = per_key.get(r.key)
                if key_limiter is None:
                    key_limiter = per_key[r.key] = limiter(
                        lim.key_burst, lim.key_burst / lim.key_rate
                    )
                await key_limiter.try_acquire_async(f"k{r.key}")
                await requests.try_acquire_async("requests")
                await tokens.try_acquire_async("tokens", weight=r.tokens)

            await _retrying(http, setup, r, acquire)

        await asyncio.gather(*(one(r) for r in setup.requests))


async def aiometer_client(setup: Setup) -> None:
    import aiometer
    import httpx

    lim = setup.limits
    rate = min(lim.requests / lim.window, lim.tokens / lim.window / setup.mean_cost)
    async with httpx.AsyncClient(transport=recording_transport(setup.record), timeout=60.0) as http:
        await aiometer.run_on_each(
            partial(_retrying, http, setup), setup.requests, max_per_second=rate
        )


@dataclass(frozen=True)
class Client:
    key: str
    label: str
    func: Callable[[Setup], Awaitable[None]]
    trio: bool = False  # runs on trio too
    needs: str | None = None
    werkpool: bool = False
    headers: bool = False  # in scenario H: apply the server's headers
    cases: tuple[str, ...] = ("A", "B", "C")


CLIENTS = (
    Client("recipe", "**werkpool**, recipe", werkpool_recipe, trio=True, werkpool=True),
    Client("transport", "**werkpool** PoolTransport", werkpool_transport, trio=True, werkpool=True),
    Client("aiolimiter", "aiolimiter, 3 limiters by hand", aiolimiter_client, needs="aiolimiter"),
    Client("pyrate", "PyrateLimiter, 3 limiters by hand", pyrate_client, needs="pyrate_limiter"),
    Client("aiometer", "aiometer `max_per_second`", aiometer_client, trio=True, needs="aiometer"),
    # Scenario H: the same configuration with and without the server's headers.
    Client(
        "recipe+headers",
        "**werkpool**, recipe, headers reported",
        werkpool_recipe,
        trio=True,
        werkpool=True,
        headers=True,
        cases=("H",),
    ),
    Client(
        "recipe",
        "**werkpool**, recipe, headers not reported",
        werkpool_recipe,
        trio=True,
        werkpool=True,
        cases=("H",),
    ),
    Client(
        "transport+headers",
        "**werkpool** PoolTransport, `headers=True`",
        werkpool_transport,
        trio=True,
        werkpool=True,
        headers=True,
        cases=("H",),
    ),
)


def _planned(
    case: Case, backend: Backend, all_on_trio: bool, only: tuple[str, ...] | None = None
) -> list[Client]:
    out = []
    for c in CLIENTS:
        if only is not None and c.key not in only:
            continue
        if case.key not in c.cases or (c.needs is not None and not installed(c.needs)):
            continue
        if backend.name == "trio" and not (c.trio and (c.key.startswith("recipe") or all_on_trio)):
            continue
        out.append(c)
    return out


# -- one run --------------------------------------------------------------------------------------


async def run_client(
    client: Client,
    case: Case,
    base: str,
    requests: list[Request],
    advertised: Limits,
    server: Limits,
    bound: float,
    scale: float,
    seed: int,
) -> dict[str, Any]:
    """One run: a fresh server run, a fresh httpx client, the 400 requests handed over at once."""
    import httpx

    record = Record(max(r.id for r in requests) + 1)
    cutoff = CUTOFF * bound + 5.0 * scale
    async with httpx.AsyncClient(timeout=30.0, trust_env=False) as control:
        config = {
            "requests": server.requests,
            "tokens": server.tokens,
            "window": server.window,
            "key_rate": server.key_rate,
            "key_burst": server.key_burst,
            "scale": scale,
            "seed": seed,
            "headers": case.headers,
            "other": OTHER if case.headers else 0.0,
            "other_limit_s": cutoff + 10.0,
        }
        run_id = (await control.post(f"{base}/runs", json=config)).json()["run"]
        mean = sum(r.tokens for r in requests) / len(requests)
        setup = Setup(
            advertised, requests, f"{base}/v1/{run_id}/chat", record, client.headers, mean
        )
        cpu = time.process_time()
        t0 = time.perf_counter()
        with anyio.move_on_after(cutoff) as scope:
            await client.func(setup)
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu
        await control.post(f"{base}/runs/{run_id}/end")
        stats = (await control.get(f"{base}/runs/{run_id}")).json()
    return _metrics(record, requests, t0, elapsed, cpu, scope.cancelled_caught, stats)


def _metrics(
    record: Record,
    requests: list[Request],
    t0: float,
    elapsed: float,
    cpu: float,
    cut: bool,
    stats: dict[str, Any],
) -> dict[str, Any]:
    ok = [r for r in requests if record.status[r.id] == 200]
    latencies = [record.done[r.id] - record.first[r.id] for r in ok]
    cold = [record.done[r.id] - record.first[r.id] for r in ok if r.key != HOT_KEY]
    done = [record.done[r.id] for r in ok]
    arrived = stats.pop("arrived", {})
    # From the first attempt's start (in the client) to its arrival at the server: the time
    # the client's HTTP stack held it (on Linux both clocks are CLOCK_MONOTONIC).
    held = [arrived[str(r.id)] - record.first[r.id] for r in requests if str(r.id) in arrived]
    return {
        # the makespan: hand-over to the last answer (the cut-off if one is missing)
        "elapsed_s": (max(done) - t0) if len(ok) == len(requests) else elapsed,
        "run_s": elapsed,
        "cut_off": cut,
        "refused": record.refused,
        "errors": record.errors,
        "lost": len(requests) - len(ok),
        "attempts": sum(record.attempts[r.id] for r in requests),
        "p50_s": _percentile(latencies, 0.5),
        "p99_s": _percentile(latencies, 0.99),
        "cold_p99_s": _percentile(cold, 0.99),
        "cpu_s": cpu,
        "client_held_p99_s": _percentile(held, 0.99),
        "client_held_max_s": max(held) if held else math.nan,
        "failures": record.failures,
        # the five slowest successes: (latency s, attempts, key, first attempt s after t0)
        "slowest": sorted(
            (
                (
                    round(record.done[r.id] - record.first[r.id], 4),
                    record.attempts[r.id],
                    r.key,
                    round(record.first[r.id] - t0, 4),
                )
                for r in ok
            ),
            reverse=True,
        )[:5],
        "server": stats,
    }


# -- the scenario ---------------------------------------------------------------------------------


def collect(
    base: str,
    cases: tuple[Case, ...],
    backends: list[Backend],
    scale: float,
    seed: int,
    all_on_trio: bool,
    clients: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for case in cases:
        requests = workload(seed, hot=case.hot)
        advertised = Limits.advertised(scale)
        server = advertised.enforced(case.share)
        other = OTHER if case.headers else 0.0
        bound = t_min(requests, server, scale, other)
        found = bounds(requests, server, other)
        entry: dict[str, Any] = {
            "title": case.title,
            "advertised": advertised.__dict__,
            "server": server.__dict__,
            "t_min_s": bound,
            "binding": max(found, key=found.__getitem__),
            "bounds_s": found,
            "tokens": sum(r.tokens for r in requests),
            "rows": [],
        }
        for backend in backends:
            for client in _planned(case, backend, all_on_trio, clients):
                _log(
                    f"  provider_truth: {case.key}, {client.key}, {backend.label} "
                    f"(t_min {bound:.1f} s)"
                )
                m = backend.run(
                    partial(
                        run_client,
                        client,
                        case,
                        base,
                        requests,
                        advertised,
                        server,
                        bound,
                        scale,
                        seed,
                    )
                )
                m["x_t_min"] = m["elapsed_s"] / bound
                m.update(client=client.key, label=client.label, backend=backend.label)
                m["werkpool"] = client.werkpool
                m["headers"] = client.headers
                _log(
                    f"    {m['x_t_min']:.3f}x t_min, {m['refused']} 429s "
                    f"({_by(m['server']['refused_by'])}), {m['lost']} lost, "
                    f"p99 {m['p99_s']:.2f} s (held by httpx: p99 {m['client_held_p99_s']:.2f} s)"
                    + (f", cold keys' p99 {m['cold_p99_s']:.2f} s" if case.hot else "")
                )
                for failure in m["failures"]:
                    _log(f"    failed: {failure}")
                entry["rows"].append(m)
        out[case.key] = entry
    return out


def _by(refused_by: dict[str, int]) -> str:
    shown = [f"{k} {v}" for k, v in refused_by.items() if v]
    return ", ".join(shown) if shown else "none"


def _s(x: float) -> str:
    return "n/a" if x != x else f"{x:.2f} s" if x >= 1 else f"{x * 1e3:.0f} ms"


def report(data: dict[str, Any], scale: float) -> tuple[str, list[Target]]:
    sections: list[str] = []
    targets: list[Target] = []
    for key, entry in data.items():
        hot = key == "C"
        headers = ["client", "backend", "makespan ÷ t_min", "429s (refused by)", "lost"]
        headers += ["p50 latency", "p99 latency", "of which held in httpx (p99)"]
        if hot:
            headers.append("cold keys' p99")
        if key == "H":
            headers.append("the other client: served / refused")
        rows = []
        for m in entry["rows"]:
            row = [
                m["label"],
                m["backend"],
                f"{m['x_t_min']:.3f}x" + (" (cut off)" if m["cut_off"] else ""),
                f"{m['refused']} ({_by(m['server']['refused_by'])})",
                str(m["lost"]),
                _s(m["p50_s"]),
                _s(m["p99_s"]),
                _s(m["client_held_p99_s"]),
            ]
            if hot:
                row.append(_s(m["cold_p99_s"]))
            if key == "H":
                row.append(f"{m['server']['other_accepted']} / {m['server']['other_refused']}")
            rows.append(row)
            if m["werkpool"]:
                targets += _targets(key, m, scale)
        b = entry["bounds_s"]
        srv = entry["server"]
        intro = (
            f"**{entry['title']}.** Server: {srv['requests']:g} requests and "
            f"{srv['tokens']:,.0f} tokens per {srv['window']:.3g} s, a key "
            f"{srv['key_rate']:.3g}/s burst {srv['key_burst']}; {entry['tokens']:,} tokens in "
            f"all. t_min {entry['t_min_s']:.2f} s, set by {entry['binding']} (rpm "
            f"{b['rpm']:.2f} s, tpm {b['tpm']:.2f} s, the busiest key {b['key']:.2f} s, "
            f"+ {LATENCY[0] * scale * 1e3:.1f} ms latency)."
        )
        sections.append(f"{intro}\n\n{md_table(headers, rows)}")
    feats = _features() if installed("werkpool") else {}
    have = ", ".join(k for k, v in feats.items() if v) or "none"
    markdown = (
        f"{REQUESTS} requests, all submitted at t = 0 on fresh connections, against the #22 "
        f"server on uvicorn; time scale {scale:g} (windows of {WINDOW * scale:g} s, latencies "
        f"{LATENCY[0] * scale * 1e3:.1f}-{LATENCY[1] * scale * 1e3:.0f} ms); at most "
        f"{MAX_ATTEMPTS} attempts per request; one run per client and backend. Makespan: "
        "hand-over to the last answer. Latency: first attempt's start to success. Lost: never "
        f"answered 200. #22 features found in this werkpool: {have}.\n\n" + "\n\n".join(sections)
    )
    return markdown, targets


def _targets(case: str, m: dict[str, Any], scale: float) -> list[Target]:
    who = f"{m['client']}, {m['backend']}"
    lost = Target("provider_truth", f"{case}, {who}: lost", "0", str(m["lost"]), m["lost"] == 0)
    x = m["x_t_min"]
    if case == "A":
        return [
            Target(
                "provider_truth",
                f"A, {who}: makespan",
                f"<= {A_RATIO}x t_min",
                f"{x:.3f}x",
                x <= A_RATIO,
            ),
            Target(
                "provider_truth",
                f"A, {who}: p99 latency",
                f"<= {_s(A_P99 * scale)}",
                _s(m["p99_s"]),
                m["p99_s"] <= A_P99 * scale,
            ),
            lost,
        ]
    if case == "B":
        return [
            Target(
                "provider_truth",
                f"B, {who}: makespan",
                f"<= {B_RATIO}x t_min",
                f"{x:.3f}x",
                x <= B_RATIO,
            ),
            Target(
                "provider_truth",
                f"B, {who}: 429s",
                f"<= {B_REFUSED}",
                str(m["refused"]),
                m["refused"] <= B_REFUSED,
            ),
            lost,
        ]
    if case == "C":
        return [
            Target(
                "provider_truth",
                f"C, {who}: makespan",
                f"<= {C_RATIO}x t_min",
                f"{x:.3f}x",
                x <= C_RATIO,
            ),
            Target(
                "provider_truth",
                f"C, {who}: cold keys' p99",
                f"<= {_s(C_COLD_P99 * scale)}",
                _s(m["cold_p99_s"]),
                m["cold_p99_s"] <= C_COLD_P99 * scale,
            ),
            lost,
        ]
    if not m["headers"]:
        return []  # the row without headers is the comparison
    share = m["refused"] / REQUESTS
    return [
        Target(
            "provider_truth",
            f"H, {who}: refused",
            f"<= {H_REFUSED_SHARE:.0%} of {REQUESTS}",
            f"{m['refused']} ({share:.1%})",
            share <= H_REFUSED_SHARE,
        ),
        lost,
    ]


# -- entry points ---------------------------------------------------------------------------------


def _missing() -> str | None:
    for module in ("uvicorn", "httpx", "werkpool"):
        if not installed(module):
            return f"{module} is not installed (it is in the `bench` dependency group)"
    return None


def run(
    *,
    quick: bool,
    scale: float | None = None,
    cases: tuple[str, ...] | None = None,
    backends: list[Backend] | None = None,
    all_on_trio: bool | None = None,
    clients: tuple[str, ...] | None = None,
    out: Path = HERE / "results",
    readme: bool = True,
    command: str = "",
    seed: int = 20251128,
) -> ScenarioResult:
    """Run the scenario; write ``provider_truth.md`` and ``.json`` into *out*."""
    missing = _missing()
    if missing is not None:
        _log(f"  provider_truth: SKIPPED, {missing}")
        return ScenarioResult("provider_truth", f"Skipped: {missing}.", [], {"skipped": missing})
    scale = scale or (QUICK_SCALE if quick else FULL_SCALE)
    if all_on_trio is None:
        all_on_trio = quick
    if backends is None:
        backends = [ASYNCIO] + ([TRIO] if installed("trio") else [])
    backends = [b for b in backends if not b.uvloop]
    chosen = tuple(c for c in CASES if cases is None or c.key in cases)
    started = time.perf_counter()
    with truth_server() as base:
        _log(f"  provider_truth: uvicorn at {base}; werkpool features: {_features()}")
        data = collect(base, chosen, backends, scale, seed, all_on_trio, clients)
    markdown, targets = report(data, scale)
    elapsed = time.perf_counter() - started
    header = (
        f"`{command}`\n\n{'quick' if quick else 'full'} run, "
        f"{datetime.date.today().isoformat()}, {elapsed / 60:.1f} min; commit {_commit()}; "
        f"{_versions()}; load average {_load()} after (1 / 5 / 15 min)."
    )
    missed = sum(not t.ok for t in targets)
    body = (
        f"{header}\n\n#### Targets: {len(targets) - missed} met, {missed} missed\n\n"
        + md_table(
            ["what", "target", "measured", ""],
            [[t.what, t.goal, t.measured, "met" if t.ok else "**missed**"] for t in targets],
        )
        + f"\n\n#### Results\n\n{markdown}\n"
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "provider_truth.md").write_text(body, encoding="utf-8")
    payload = {
        "command": command,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "mode": "quick" if quick else "full",
        "scale": scale,
        "elapsed_s": elapsed,
        "features": _features(),
        "targets": [t.__dict__ for t in targets],
        "cases": data,
    }
    (out / "provider_truth.json").write_text(
        json.dumps(payload, indent=1, default=str) + "\n", encoding="utf-8"
    )
    if readme and not quick and cases is None and clients is None:
        _update_readme(body)
    _log(f"  provider_truth: wrote {out / 'provider_truth.md'} and provider_truth.json")
    return ScenarioResult("provider_truth", markdown, targets, {"scale": scale, "cases": data})


def _update_readme(body: str) -> None:
    readme = HERE / "README.md"
    text = readme.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(README_START) + ".*?" + re.escape(README_END), re.DOTALL)
    if pattern.search(text):
        block = f"{README_START}\n{body.rstrip()}\n{README_END}"
        readme.write_text(pattern.sub(lambda _: block, text), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m benchmarks.provider_truth",
        description="#22: werkpool and its peers against the referee's provider-shaped server.",
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"time scale {QUICK_SCALE} (about 4 minutes)"
    )
    parser.add_argument("--scale", type=float, help="time scale (1: W = 10 s, the issue's)")
    parser.add_argument("--cases", nargs="+", choices=[c.key for c in CASES], help="only these")
    parser.add_argument("--backends", nargs="+", choices=("asyncio", "trio"), help="only these")
    parser.add_argument(
        "--clients", nargs="+", choices=sorted({c.key for c in CLIENTS}), help="only these"
    )
    parser.add_argument(
        "--all-on-trio",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run PoolTransport and aiometer on trio too (default: with --quick only; "
        "+2.5 min at full size)",
    )
    parser.add_argument("--out", type=Path, default=HERE / "results", help="where to write")
    parser.add_argument(
        "--no-readme", action="store_true", help="leave benchmarks/README.md's section alone"
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve()
        return 0
    if args.scale is not None and not (0 < args.scale <= 10):
        parser.error("--scale must be in (0, 10]")
    argv_shown = sys.argv[1:] if argv is None else argv
    backends = None
    if args.backends:
        backends = [b for b in (ASYNCIO, TRIO) if b.label in args.backends]
    result = run(
        quick=args.quick,
        scale=args.scale,
        cases=tuple(args.cases) if args.cases else None,
        backends=backends,
        all_on_trio=args.all_on_trio,
        clients=tuple(args.clients) if args.clients else None,
        out=args.out,
        readme=not args.no_readme and args.out == HERE / "results",
        command=os.environ.get("WERKPOOL_BENCH_COMMAND")
        or " ".join(["python3", "-m", "benchmarks.provider_truth", *argv_shown]),
    )
    print(result.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
