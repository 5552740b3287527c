"""Contract R48 (and R1, R4, R6, R11, R21, R23, R37 as invariants; #12's limits): random programs.

Hypothesis generates a *program*: a pool configuration, then a list of operations (submit a job
through run / submit / start_soon / call / map with random durations, failures, timeouts,
retries and backoffs; cancel a random future or caller; advance virtual time, or stall the
loop so that every timer fires late), then an ending
(shutdown, kill, or leaving ``async with``). Each program runs in a fresh event loop on virtual
time, on asyncio and on trio (trio's own tie-breaking is seeded too, so every run is replayable),
and shrinks to a minimal failing program.

After every step the driver checks: attempts executing <= size (also asserted inside each job);
the limiter lends exactly one token per executing attempt; the counters add up; every window of
attempt starts obeys ``ceil(W * rate) + burst - 1``. At the end: every future resolved exactly
once, with an outcome its job's history explains; no job code running; no werkpool task alive;
the pool idle; and the program finished (no stall) within a generous virtual-time bound.

Issue #12's programs (``test_r48_programs_with_limits_keys_pauses_and_pushback``) draw more: a
pool with several limits (``Rate`` with a burst, ``Window``, ``Concurrency``, some counting a
unit that jobs pay for with ``cost=``, some adaptive), per-key limits and a key for each job,
pauses (``pause()``, ``resume()``, ``pause_for()``, of the pool or of a key), resizes
(``pool.size = n``), rate changes (``pool.rate = r``, ``set_limits()``), and pushbacks (jobs that
raise ``RetryAfter(d)``, or a ``retry_after=`` callable that maps their error to a delay). The
jobs record when each attempt starts and what it costs; from that record the driver checks, at
each start and after every step:

* Rate: every half-open window of length ``W`` holds at most ``ceil(W * count / per) + burst -
  1`` units (checked exactly, as: the starts ``i..j`` hold at most ``burst + (t_j - t_i) *
  count / per`` units, the same bound for whole costs, and GCRA's for fractional ones), over
  each stretch of the program in which the limit is in force without a break (a rate change or
  ``set_limits()`` ends the stretch of the limits it drops); an adaptive rate by its ``count``;
* Window: every half-open window of length ``per`` holds at most ``count`` units (likewise);
* across changes, no banked credit: while some rate of a unit is in force, the starts obey the
  loosest of those rates (the largest burst at the highest rate); while some window of a unit
  and period is, no window of that period holds more than the largest count;
* Concurrency: a start never takes the running cost above ``n``, and no attempt starts while
  ``size`` attempts run (after a shrink, the ones above it finish first);
* each key's own limits, on its own starts (they never change);
* no attempt starts inside a pause: the pool's (``pause()``, ``pause_for()``, a pushback of a job
  without a key) or its key's (``pause_for(key=)``, a pushback of a job of the key), until it
  ends or ``resume()``;
* a ``cost=`` that can never fit (or names a unit no limit counts) is refused at the call with
  a ValueError, and only then; ``set_limits()`` refuses limits a waiting job could never fit;
* ``pool.size``, ``pool.rate``, ``pool.paused`` and ``statistics()`` (its ``limits``, their
  ``in_use`` for concurrency, ``paused_until``) say what the program set and what runs; every
  future resolves, the counters add up and nothing accepted is lost (as above).

This is the "program" form of a state machine (a RuleBasedStateMachine is synchronous, and an
event loop cannot be paused between its rules deterministically on both backends); the program
is the machine's rule sequence, and the checks are its invariants.

Profiles: ``WERKPOOL_HYPOTHESIS_PROFILE=ci`` (default), ``versions`` (set by ``nox -s tests``
on all but the newest interpreter) or ``nightly`` (set by ``nox -s tests_nightly``): see
``settings.register_profile`` below.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from anyio.lowlevel import checkpoint, checkpoint_if_cancelled
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import (
    BACKENDS,
    Boom,
    FakeRemoteLimit,
    borrowed,
    internal_tasks,
    jump_clock,
    rate_violation,
    remote_limits,
    run_virtual,
    stats_add_up,
)

from werkpool import (
    Concurrency,
    FutureCancelled,
    PoolClosedError,
    PoolFullError,
    Rate,
    RetryAfter,
    Shared,
    Window,
    WorkerPool,
)

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    from collections.abc import Hashable, Iterator, Sequence

# -- profiles ------------------------------------------------------------------------------------

_COMMON: dict[str, Any] = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    "print_blob": True,
}
settings.register_profile("ci", max_examples=3000, **_COMMON)
#: For the interpreters besides the newest in CI (noxfile.py's ``tests``): the programs run the
#: same state machine on every version, so the first few hundred examples find what a version
#: changes (frames, gc, asyncio's APIs) as well as three thousand would; the newest runs "ci".
settings.register_profile("versions", max_examples=600, **_COMMON)
settings.register_profile("nightly", max_examples=20_000, **_COMMON)
PROFILE = settings.get_profile(os.environ.get("WERKPOOL_HYPOTHESIS_PROFILE", "ci"))
#: The R11 property needs fewer examples than the programs to cover its small space.
PROPERTY = settings(PROFILE, max_examples=max(20, PROFILE.max_examples // 3))
#: #12's programs: each runs longer (more jobs wait for their limits), so fewer of them.
LIMITED = settings(PROFILE, max_examples=max(20, PROFILE.max_examples // 2))

#: Virtual seconds a program may take before it counts as stalled.
STALL_LIMIT = 100_000.0
#: Slack for float clocks (trio's MockClock adds floats; looptime counts ns).
EPS = 1e-6
#: The one unit #12's programs count (besides attempts).
TOK = "tok"
_INF = math.inf


# -- programs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobSpec:
    duration: float
    fails: int  # the first `fails` attempts raise Boom (or RetryAfter, with `pushback`)
    timeout: float | None
    retries: int
    backoff: float
    cleanup: float  # shielded cleanup when cancelled
    swallow: bool  # catches its cancellation and returns instead
    key: str | None = None  # #12: the job's key
    cost: float | None = None  # #12: cost={TOK: cost} (None: no cost=)
    pushback: float | None = None  # #12: failing attempts raise RetryAfter(pushback)

    def options(self) -> dict[str, Any]:
        backoff = self.backoff
        options: dict[str, Any] = {
            "timeout": self.timeout,
            "retries": self.retries,
            "backoff": lambda n: backoff,
        }
        if self.key is not None:
            options["key"] = self.key
        if self.cost is not None:
            options["cost"] = {TOK: self.cost}
        return options

    def units(self, unit: str | None) -> float:
        """What one attempt costs in *unit* (None: attempts)."""
        if unit is None:
            return 1
        return self.cost or 0


job_specs = st.builds(
    JobSpec,
    duration=st.sampled_from([0.0, 0.05, 0.3, 1.0, 2.5]),
    fails=st.sampled_from([0, 0, 0, 1, 2, 99]),
    timeout=st.sampled_from([None, None, None, 0.0, 0.2, 1.5]),
    retries=st.sampled_from([0, 0, 1, 2]),
    backoff=st.sampled_from([0.0, 0.1, 1.0, 3.0]),
    cleanup=st.sampled_from([0.0, 0.0, 0.2]),
    swallow=st.sampled_from([False] * 7 + [True]),
)

operations = st.one_of(
    st.tuples(
        st.just("submit"), st.sampled_from(["run", "submit", "start_soon", "call"]), job_specs
    ),
    st.tuples(st.just("map"), st.lists(job_specs, min_size=1, max_size=3)),
    st.tuples(st.just("cancel_future"), st.integers(0, 63)),
    st.tuples(st.just("cancel_caller"), st.integers(0, 63)),
    st.tuples(st.just("advance"), st.sampled_from([0.0, 0.05, 0.3, 1.0, 4.0])),
    # A busy loop: the clock moves on with nothing run, so every timer then fires late (R49).
    st.tuples(st.just("stall"), st.sampled_from([0.001, 0.003, 0.02, 0.3])),
)

configs = st.fixed_dictionaries(
    {
        "size": st.sampled_from([None, 1, 2, 3]),
        "rate": st.sampled_from([None, None, 1.0, 4.0, 20.0]),
        "burst": st.sampled_from([1, 2, 3]),
        "max_pending": st.sampled_from([None, None, 2, 5]),
        # A fake remote limit (capacity, latency, refusal rate), as Redis limits will be: the
        # reservation protocol under every program (issue #11).
        "remote": st.sampled_from([None, None, None, (2, 0.0, 0.3), (1, 0.05, 0.0), (3, 0.2, 0.5)]),
    }
)

programs = st.tuples(
    configs,
    st.lists(operations, max_size=24),
    st.sampled_from(["shutdown", "kill", "exit"]),
    st.integers(0, 2**32 - 1),  # seeds trio's scheduler
)

# -- #12's programs: limits as values, keys, costs, pauses, runtime changes, pushback -------------

#: The pool's limits. Capacities in TOK of 2 (below the largest fitting cost, 4) make some costs
#: not fit: refused at the call, and by set_limits() while such a job waits.
pool_limits = st.one_of(
    st.builds(
        Rate,
        st.sampled_from([1, 2, 5]),
        per=st.sampled_from([0.5, 1.0, 2.0]),
        burst=st.sampled_from([1, 2, 3]),
        adaptive=st.sampled_from([False, False, True]),
    ),
    st.builds(
        Rate,
        st.sampled_from([2.0, 4.0, 10.0]),
        per=st.sampled_from([1.0, 2.0]),
        burst=st.sampled_from([2, 4, 6]),
        unit=st.just(TOK),
        adaptive=st.sampled_from([False, False, True]),
    ),
    st.builds(Window, st.sampled_from([1, 2, 3]), per=st.sampled_from([0.5, 1.0, 2.0])),
    st.builds(
        Window, st.sampled_from([2.0, 4.0, 8.0]), per=st.sampled_from([1.0, 2.0]), unit=st.just(TOK)
    ),
    st.builds(Concurrency, st.sampled_from([1, 2, 3])),
    st.builds(Concurrency, st.sampled_from([2.0, 4.0, 6.0]), unit=st.just(TOK)),
)
key_limits = st.one_of(
    st.builds(
        Rate,
        st.sampled_from([1, 3]),
        per=st.sampled_from([0.5, 1.0]),
        burst=st.sampled_from([1, 2]),
        adaptive=st.sampled_from([False, True]),
    ),
    st.builds(Rate, st.just(4.0), burst=st.just(4), unit=st.just(TOK)),
    st.builds(Window, st.sampled_from([1, 2]), per=st.sampled_from([0.5, 1.0])),
    st.builds(Window, st.just(4.0), per=st.just(1.0), unit=st.just(TOK)),
    st.builds(Concurrency, st.sampled_from([1, 2])),
    st.builds(Concurrency, st.just(4.0), unit=st.just(TOK)),
)
KEYS = [None, None, "a", "b", "c"]

job_specs_12 = st.builds(
    JobSpec,
    duration=st.sampled_from([0.0, 0.05, 0.3, 1.0, 2.5]),
    fails=st.sampled_from([0, 0, 0, 1, 2, 99]),
    timeout=st.sampled_from([None, None, None, None, 0.0, 0.2, 1.5]),
    retries=st.sampled_from([0, 0, 1, 2]),
    backoff=st.sampled_from([0.0, 0.1, 1.0]),
    cleanup=st.sampled_from([0.0, 0.0, 0.2]),
    swallow=st.sampled_from([False] * 7 + [True]),
    key=st.sampled_from(KEYS),
    # 2.5: a cost that is not a whole number; 9: never fits (a ValueError at the call).
    cost=st.sampled_from([None] * 8 + [0, 1, 1, 2, 2, 2.5, 4, 9]),
    pushback=st.sampled_from([None, None, 0.0, 0.1, 0.5, 2.0]),
)

#: set_limits(limits) leaves the rate shorthand as it is; set_limits(limits, rate=r) changes it.
KEEP = "keep"

#: Each kind of operation, and how often a program draws it (a weighted choice: one_of would
#: draw each strategy equally often).
OPERATIONS_12: dict[str, tuple[int, st.SearchStrategy[tuple[Any, ...]]]] = {
    "submit": (
        4,
        st.tuples(
            st.just("submit"),
            st.sampled_from(["run", "submit", "start_soon", "call"]),
            job_specs_12,
        ),
    ),
    # Several jobs alike at once: the limits' windows fill up.
    "submit_many": (
        4,
        st.tuples(
            st.just("submit_many"),
            st.sampled_from(["run", "submit", "start_soon", "call"]),
            job_specs_12,
            st.integers(2, 6),
        ),
    ),
    "map": (1, st.tuples(st.just("map"), st.lists(job_specs_12, min_size=1, max_size=3))),
    "cancel_future": (1, st.tuples(st.just("cancel_future"), st.integers(0, 63))),
    "cancel_caller": (1, st.tuples(st.just("cancel_caller"), st.integers(0, 63))),
    "advance": (3, st.tuples(st.just("advance"), st.sampled_from([0.0, 0.05, 0.3, 1.0, 4.0]))),
    "stall": (1, st.tuples(st.just("stall"), st.sampled_from([0.001, 0.003, 0.02, 0.3]))),
    "pause": (1, st.tuples(st.just("pause"))),
    "resume": (1, st.tuples(st.just("resume"))),
    "pause_for": (
        1,
        st.tuples(
            st.just("pause_for"), st.sampled_from([0.0, 0.1, 0.5, 2.0]), st.sampled_from(KEYS)
        ),
    ),
    "resize": (1, st.tuples(st.just("resize"), st.sampled_from([None, 1, 2, 3, 4]))),
    "set_rate": (1, st.tuples(st.just("set_rate"), st.sampled_from([None, 0.5, 1.0, 4.0, 20.0]))),
    "set_limits": (
        1,
        st.tuples(
            st.just("set_limits"),
            st.lists(pool_limits, max_size=3).map(tuple),
            st.sampled_from([KEEP, KEEP, None, 1.0, 4.0]),
        ),
    ),
}
operations_12 = st.sampled_from(
    [kind for kind, (weight, _) in OPERATIONS_12.items() for _ in range(weight)]
).flatmap(lambda kind: OPERATIONS_12[kind][1])

configs_12 = st.fixed_dictionaries(
    {
        "size": st.sampled_from([None, None, 1, 2, 3]),
        "rate": st.sampled_from([None, None, 1.0, 4.0, 20.0]),
        "burst": st.sampled_from([1, 2, 3]),
        "max_pending": st.sampled_from([None, None, None, 3]),
        "remote": st.sampled_from([None] * 8 + [(2, 0.0, 0.3), (1, 0.05, 0.0)]),
        "limits": st.lists(pool_limits, max_size=3).map(tuple),
        "per_key": st.lists(key_limits, max_size=2).map(tuple),
        # retry_after=: a Boom of a job with an even label is a pushback of this many seconds.
        "retry_after": st.sampled_from([None, None, 0.0, 0.3, 1.0]),
    }
)

programs_12 = st.tuples(
    configs_12,
    st.lists(operations_12, min_size=4, max_size=30),
    st.sampled_from(["shutdown", "kill", "exit"]),
    st.integers(0, 2**32 - 1),
)


# -- the model of the pool's limits (what the program set) ---------------------------------------


@dataclass(frozen=True)
class Limits:
    """The pool's limits as the program set them: the shorthands and ``limits=``."""

    size: int | None  # the size= shorthand
    rate: float | None
    burst: int
    limits: tuple[Any, ...]

    @property
    def folded_size(self) -> int | None:
        """``pool.size``: the smallest of size= and the unit-less Concurrency values."""
        sizes = [int(s.n) for s in self.limits if isinstance(s, Concurrency) and s.unit is None]
        if self.size is not None:
            sizes.append(self.size)
        return min(sizes) if sizes else None

    def specs(self) -> tuple[Any, ...]:
        """Every limit value in force (the rate shorthand as a Rate; the size is checked apart)."""
        shorthand = () if self.rate is None else (Rate(self.rate, burst=self.burst),)
        return shorthand + self.limits


def _fits(cost: float, specs: Sequence[Any]) -> bool:
    return all(cost <= _capacity(s) for s in specs if s.unit == TOK)


def _capacity(spec: Any) -> float:
    return float(
        spec.burst if isinstance(spec, Rate) else spec.count if isinstance(spec, Window) else spec.n
    )


@dataclass(frozen=True)
class Start:
    """One attempt's start, as its job's code saw it."""

    at: float
    label: int
    key: str | None
    spec: JobSpec


# -- the model's record of what happened ---------------------------------------------------------


@dataclass
class Job:
    label: int
    kind: str
    spec: JobSpec
    future: Any = None
    attempts: int = 0
    running: int = 0
    started_at: float = 0.0  # the current attempt's start
    ok: bool = False
    cancelled_by_us: bool = False
    attempts_when_cancelled: int | None = None
    resolved: int = 0
    caller_outcome: str | None = None
    accepted: bool = False  # submitted, or being submitted (its call has not raised)
    raised: list[BaseException] = field(default_factory=list)  # errors its attempts raised


@dataclass
class World:
    config: dict[str, Any]
    pool: WorkerPool
    remote: FakeRemoteLimit | None = None
    jobs: dict[int, Job] = field(default_factory=dict)
    futures: list[Job] = field(default_factory=list)  # jobs with a user-visible future
    callers: list[anyio.CancelScope] = field(default_factory=list)
    caller_jobs: list[list[int]] = field(default_factory=list)
    caller_done: list[bool] = field(default_factory=list)
    producers: list[int] = field(default_factory=list)  # the callers of submit() and call()
    starts: list[float] = field(default_factory=list)
    running: int = 0
    violations: list[str] = field(default_factory=list)
    killed_at: float | None = None
    aborted: bool = False
    next_label: int = 0
    # -- #12: the limits in force, and every start with its cost and key --
    extended: bool = False
    limits: Limits = field(default_factory=lambda: Limits(None, None, 1, ()))
    per_key: tuple[Any, ...] = ()
    #: (index into `records` of the first start under it, the limits), oldest first.
    history: list[tuple[int, Limits]] = field(default_factory=list)
    records: list[Start] = field(default_factory=list)
    key_records: dict[str, list[Start]] = field(default_factory=dict)
    #: #22 item 4: the starts the provider refused (a pushback the pool saw): their cost is given
    #: back, so the limits' contracts hold for the other starts (ids of Start records).
    refused: set[int] = field(default_factory=set)
    checked: int = 0  # records[:checked] have had their windows checked
    breached: set[tuple[Any, Any]] = field(default_factory=set)  # bounds found broken
    running_tok: float = 0.0
    key_running: dict[str, list[float]] = field(default_factory=dict)  # key: [attempts, TOK]
    paused_until: float = -_INF  # the pool's pause as the program made it
    key_paused_until: dict[Hashable, float] = field(default_factory=dict)

    def fail(self, message: str) -> None:
        self.violations.append(f"t={anyio.current_time():.6f}: {message}")

    def pool_failed(self) -> bool:
        """True once some start_soon() job has failed (which fails the pool)."""
        return any(
            job.kind == "start_soon"
            and job.future.done()
            and not job.future.cancelled()
            and job.future.exception() is not None
            for job in self.futures
        )

    def new_job(self, kind: str, spec: JobSpec) -> Job:
        job = Job(self.next_label, kind, spec)
        self.next_label += 1
        self.jobs[job.label] = job
        return job

    # -- #12: the model's side of runtime control ------------------------------------------------

    def set_limits_model(self, limits: Limits) -> None:
        self.limits = limits
        self.history.append((len(self.records), limits))

    def paused_model(self, until: float, key: Hashable) -> None:
        """The pool (key None) or *key* starts nothing before *until* (never shortened)."""
        if key is None:
            self.paused_until = max(self.paused_until, until)
        else:
            self.key_paused_until[key] = max(self.key_paused_until.get(key, -_INF), until)

    def resumed_model(self) -> None:
        self.paused_until = -_INF
        self.key_paused_until.clear()

    def retry_after(self, delay: float) -> Any:
        """The pool's retry_after=: a Boom of a job with an even label is a pushback."""

        def pushback(error: BaseException) -> float | None:
            if isinstance(error, Boom) and error.args[0] % 2 == 0:
                job = self.jobs[error.args[0]]
                self.paused_model(anyio.current_time() + delay, job.spec.key)
                # Its attempt was refused: its cost is given back (#22 item 4).
                for record in reversed(self.records):
                    if record.label == error.args[0]:
                        self.refused.add(id(record))
                        break
                return delay
            return None

        return pushback

    def cost_verdict(self, spec: JobSpec, limits: Limits | None = None) -> str:
        """Whether a call with *spec*'s cost must raise ValueError ("raise"), may ("either": a
        cost that only a per-key limit refuses, for a job without a key), or must not."""
        if spec.cost is None:
            return "accept"
        pool_specs = (limits or self.limits).specs()
        if not any(s.unit == TOK for s in pool_specs + self.per_key):
            return "raise"  # a unit no limit counts (the typo guard)
        applicable = pool_specs + (self.per_key if spec.key is not None else ())
        if not _fits(spec.cost, applicable):
            return "raise"
        if not _fits(spec.cost, self.per_key):
            return "either"
        return "accept"

    # -- the job every program submits -----------------------------------------------------------

    def _check_start(self, job: Job, now: float) -> None:
        """#12: the attempt *job* starts now: no limit or pause in force may forbid it."""
        spec = job.spec
        size = self.limits.folded_size
        if size is not None and self.running >= size:
            self.fail(f"job {job.label} started while {self.running} attempts run, size={size}")
        cost = spec.cost or 0
        for limit in self.limits.limits:
            if (
                isinstance(limit, Concurrency)
                and limit.unit == TOK
                and self.running_tok + cost > limit.n + EPS
            ):
                self.fail(
                    f"job {job.label} (cost {cost}) started with {self.running_tok} {TOK} "
                    f"running: {limit!r}"
                )
        if now < self.paused_until - EPS:
            self.fail(f"job {job.label} started while the pool is paused until {self.paused_until}")
        key = spec.key
        if key is None:
            return
        if now < self.key_paused_until.get(key, -_INF) - EPS:
            self.fail(
                f"job {job.label} started while its key {key!r} is paused until "
                f"{self.key_paused_until[key]}"
            )
        count, tok = self.key_running.get(key, (0, 0.0))
        for limit in self.per_key:
            if isinstance(limit, Concurrency):
                used, units = (count, 1) if limit.unit is None else (tok, cost)
                if used + units > limit.n + EPS:
                    self.fail(
                        f"job {job.label} of key {key!r} started with {used} running "
                        f"(its cost {units}): per-key {limit!r}"
                    )

    async def body(self, label: int) -> object:
        job = self.jobs[label]
        now = anyio.current_time()
        if self.killed_at is not None:
            self.fail(f"job {label} started an attempt after kill() returned")
        if self.extended:
            self._check_start(job, now)
            record = Start(now, label, job.spec.key, job.spec)
            self.records.append(record)
            if job.spec.key is not None:
                self.key_records.setdefault(job.spec.key, []).append(record)
                running = self.key_running.setdefault(job.spec.key, [0, 0.0])
                running[0] += 1
                running[1] += job.spec.cost or 0
            self.running_tok += job.spec.cost or 0
        job.attempts += 1
        job.running += 1
        job.started_at = now
        self.running += 1
        self.starts.append(now)
        size = self.config["size"]
        if not self.extended and size is not None and self.running > size:
            self.fail(f"{self.running} attempts executing with size={size}")
        if job.attempts_when_cancelled is not None:
            self.fail(f"job {label} started attempt {job.attempts} after it was cancelled")
        try:
            try:
                if job.spec.duration:
                    await anyio.sleep(job.spec.duration)
                else:
                    await checkpoint()
                if job.attempts <= job.spec.fails and job.spec.pushback is not None:
                    # A cancellation already asked for lands here, not as a pushback the pool
                    # would ignore (it settles a cancelled job as cancelled).
                    await checkpoint_if_cancelled()
            except anyio.get_cancelled_exc_class():
                if job.spec.cleanup:
                    with anyio.CancelScope(shield=True):
                        await anyio.sleep(job.spec.cleanup)
                if job.spec.swallow:
                    return "swallowed"
                raise
            if job.attempts <= job.spec.fails:
                error: Exception
                if job.spec.pushback is not None:
                    error = RetryAfter(job.spec.pushback)
                    now = anyio.current_time()
                    timeout = job.spec.timeout
                    # At its deadline the pool may see a timeout instead (no pushback then).
                    if timeout is None or now < job.started_at + timeout - EPS:
                        self.paused_model(now + job.spec.pushback, job.spec.key)
                        if self.extended:
                            self.refused.add(id(record))
                else:
                    error = Boom(label)
                job.raised.append(error)
                raise error
            job.ok = True
            return label
        finally:
            job.running -= 1
            self.running -= 1
            if self.extended:
                self.running_tok -= job.spec.cost or 0
                if job.spec.key is not None:
                    running = self.key_running[job.spec.key]
                    running[0] -= 1
                    running[1] -= job.spec.cost or 0

    async def body_item(self, label: int) -> object:
        return await self.body(label)

    # -- invariants after every step -------------------------------------------------------------

    def check_step(self) -> None:
        pool = self.pool
        s = pool.statistics()
        if not stats_add_up(pool):
            self.fail(f"statistics do not add up: {s}")
        if s.running != self.running:
            self.fail(f"statistics().running={s.running}, but {self.running} attempts execute")
        # A job that asks the remote limit holds its place under the size meanwhile (not yet
        # running): the fake remote limit sees which ask.
        reserving = 0 if self.remote is None else len(self.remote.asking)
        if pool.size is not None and borrowed(pool) != s.running + reserving:
            self.fail(f"the size counts {borrowed(pool)} places for {s.running} running attempts")
        remote = self.remote
        if remote is not None and remote.held > remote.capacity:
            self.fail(f"{remote.held} hold the remote limit of capacity {remote.capacity}")
        if self.extended:
            self.check_limits()
            return
        if pool.size is not None and self.running > pool.size:
            self.fail(f"{self.running} attempts executing with size={pool.size}")
        rate = self.config["rate"]
        if rate is not None:
            violation = rate_violation(self.starts, rate, self.config["burst"])
            if violation:
                self.fail(f"rate contract: {violation}")

    def check_limits(self) -> None:
        """#12: the limits' contracts on the starts since the last check, and the pool's state."""
        pool = self.pool
        if pool.size != self.limits.folded_size:
            self.fail(f"pool.size={pool.size}, but the program set {self.limits}")
        if pool.rate != self.limits.rate:
            self.fail(f"pool.rate={pool.rate}, but the program set {self.limits}")
        if anyio.current_time() < self.paused_until - EPS:
            until = pool.statistics().paused_until
            if not pool.paused or until is None or until < self.paused_until - EPS:
                self.fail(
                    f"pool.paused is {pool.paused}, statistics().paused_until={until}, but the "
                    f"pool is paused until {self.paused_until}"
                )
        self._check_statistics()
        records = self.records
        refused = self.refused
        for j in range(self.checked, len(records)):
            if id(records[j]) in refused:
                continue  # refused: the windows that end at it hold what the others spent
            for spec, lo, what in self._in_force(j):
                spent = [r for r in records[lo : j + 1] if id(r) not in refused]
                breach = _breach(spent, spec)
                if breach and (spec, what) not in self.breached:
                    self.breached.add((spec, what))  # once is enough
                    self.fail(f"{spec!r} ({what}, from start {lo}): {breach}")
            key = records[j].key
            if key is not None:
                own = self.key_records[key]
                # By identity, as `refused` is: two starts may be equal in value (same time,
                # same job shape), and .index() would stop at the first, a refused one maybe.
                upto = next(n for n, r in enumerate(own) if r is records[j]) + 1
                for spec in self.per_key:
                    if isinstance(spec, Concurrency):
                        continue  # checked at each start
                    breach = _breach([r for r in own[:upto] if id(r) not in refused], spec)
                    if breach and (spec, key) not in self.breached:
                        self.breached.add((spec, key))
                        self.fail(f"per-key {spec!r} of key {key!r}: {breach}")
        self.checked = len(records)

    def _check_statistics(self) -> None:
        """statistics().limits: the limits the program set, and the cost they count running."""
        pool = self.pool
        stats = pool.statistics()
        snaps = stats.limits
        size = self.limits.folded_size
        shown = sorted(
            (snap.kind, snap.unit or "", snap.per or 0.0, round(snap.count, 9)) for snap in snaps
        )
        wanted = [("concurrency", "", 0.0, float(size))] if size is not None else []
        for spec in self.limits.specs():
            if isinstance(spec, Rate):
                wanted.append(("rate", spec.unit or "", spec.per, round(spec.count, 9)))
            elif isinstance(spec, Window):
                wanted.append(("window", spec.unit or "", spec.per, float(spec.count)))
            elif spec.unit is not None:
                wanted.append(("concurrency", spec.unit, 0.0, float(spec.n)))
        if shown != sorted(wanted):
            self.fail(f"statistics().limits show {shown}, but the program set {sorted(wanted)}")
        if self.remote is not None and self.remote.asking:
            return  # a job asking a remote limit holds its local limits, yet does not run
        for snap in snaps:
            if snap.kind == "concurrency":
                running = self.running if snap.unit is None else self.running_tok
                if abs(snap.in_use - running) > EPS:
                    self.fail(f"statistics() show {snap} while {running} run")

    def _in_force(self, j: int) -> Iterator[tuple[Any, int, str]]:
        """The bounds on the pool's starts up to start *j*: each with the first start it covers,
        and what it is.

        Each rate and window in force at start *j*, from the first start of the stretch of
        configurations that has had it in force without a break. And across changes (a change
        never hands out banked credit: each new rate or window carries on from an old one of
        its unit): while some rate of a unit is in force, no window holds more than the
        loosest of those rates allows (the largest burst at the highest rate); while some
        window of a unit and period is, no window of that period holds more than the largest
        count.
        """
        history = self.history
        at = max(i for i, (first, _) in enumerate(history) if first <= j)
        specs = history[at][1].specs()
        for spec in specs:
            if isinstance(spec, Concurrency):
                continue
            i = at
            while i > 0 and spec in history[i - 1][1].specs():
                i -= 1
            yield spec, history[i][0], "in force"
        for unit in dict.fromkeys(spec.unit for spec in specs if isinstance(spec, Rate)):

            def rates(i: int, unit: str | None = unit) -> list[Rate]:
                return [s for s in history[i][1].specs() if isinstance(s, Rate) and s.unit == unit]

            i = at
            while i > 0 and rates(i - 1):
                i -= 1
            spanned = [rate for k in range(i, at + 1) for rate in rates(k)]
            if len(set(spanned)) > 1:  # (else the same as the one in force)
                loosest = Rate(
                    max(rate.count / rate.per for rate in spanned),
                    burst=max(rate.burst for rate in spanned),
                    unit=unit,
                )
                yield loosest, history[i][0], f"the loosest of {sorted(set(map(repr, spanned)))}"
        for unit, per in dict.fromkeys((s.unit, s.per) for s in specs if isinstance(s, Window)):

            def windows(i: int, unit: str | None = unit, per: float = per) -> list[Window]:
                return [
                    s
                    for s in history[i][1].specs()
                    if isinstance(s, Window) and s.unit == unit and s.per == per
                ]

            i = at
            while i > 0 and windows(i - 1):
                i -= 1
            spanned = [window for k in range(i, at + 1) for window in windows(k)]
            if len(set(spanned)) > 1:
                loosest = Window(max(w.count for w in spanned), per, unit=unit)
                yield loosest, history[i][0], f"the loosest of {sorted(set(map(repr, spanned)))}"


def _breach(starts: Sequence[Start], spec: Any) -> str | None:
    """Check the windows of *starts* (in time order) that end at the last one against *spec*
    (a Rate or Window); describe the first window over it."""
    last = starts[-1].at
    units = 0.0
    if isinstance(spec, Rate):
        rate = spec.count / spec.per
        for start in reversed(starts):
            units += start.spec.units(spec.unit)
            gap = last - start.at
            # Whole costs: the same as ceil(W * rate) + burst - 1 for every W just above gap.
            if units > spec.burst + gap * rate + EPS * rate + 1e-9:
                return (
                    f"{units:g} units started within {gap:.9f} s (t={start.at:.9f}.."
                    f"{last:.9f}); at most {spec.burst + gap * rate:g} may"
                )
    else:
        for start in reversed(starts):
            if last - start.at >= spec.per - EPS:
                break
            units += start.spec.units(spec.unit)
            if units > spec.count + 1e-9:
                return (
                    f"{units:g} units started within {last - start.at:.9f} s "
                    f"(t={start.at:.9f}..{last:.9f}), a window of {spec.per:g} s"
                )
    return None


def _count(job: Job) -> Any:
    def done(_: Any) -> None:
        job.resolved += 1

    return done


def _cost_refused(world: World, job: Job, verdict: str, *, awaited: bool = False) -> None:
    """A call raised ValueError for *job*'s cost: it must have been one that cannot fit.

    With *awaited* (submit(), call()), the cost is checked again after the call's await, against
    the limits in force then: a set_limits() meanwhile may have made it unfittable.
    """
    job.caller_outcome = "ValueError"
    job.accepted = False
    if verdict == "accept" and awaited:
        verdict = world.cost_verdict(job.spec)  # the limits when the job would have been queued
    if verdict == "accept":
        world.fail(f"job {job.label}: ValueError for cost={job.spec.cost} that fits the limits")


def _cost_accepted(world: World, job: Job, verdict: str) -> None:
    job.accepted = True
    if verdict == "raise":
        world.fail(f"job {job.label}: cost={job.spec.cost} accepted, but it can never fit")


async def _caller_call(world: World, job: Job, scope: anyio.CancelScope) -> None:
    try:
        await _call(world, job, scope)
    finally:
        world.caller_done[world.callers.index(scope)] = True


async def _call(world: World, job: Job, scope: anyio.CancelScope) -> None:
    cancelled_exc = anyio.get_cancelled_exc_class()
    verdict = world.cost_verdict(job.spec)
    job.accepted = True  # (or waits for room: set_limits() may see it waiting)
    with scope:
        try:
            result = await world.pool.call(world.body, job.label, **job.spec.options())
            job.caller_outcome = f"result {result!r}"
            if result != job.label:
                world.fail(f"call() of job {job.label} returned {result!r}")
        except cancelled_exc:
            job.attempts_when_cancelled = job.attempts
            if job.running:
                world.fail(f"call() of job {job.label} returned while its job still runs (R23)")
            raise
        except ValueError:
            _cost_refused(world, job, verdict, awaited=True)
            return
        except (Boom, TimeoutError, RetryAfter, FutureCancelled, PoolClosedError) as exc:
            job.caller_outcome = type(exc).__name__
        if job.caller_outcome != "PoolClosedError":
            _cost_accepted(world, job, verdict)
    if scope.cancelled_caught:
        job.caller_outcome = "caller cancelled"


async def _caller_submit(world: World, job: Job, scope: anyio.CancelScope) -> None:
    verdict = world.cost_verdict(job.spec)
    job.accepted = True
    with scope:
        try:
            future = await world.pool.submit(world.body, job.label, **job.spec.options())
        except PoolClosedError:
            job.caller_outcome = "PoolClosedError"
            return
        except ValueError:
            _cost_refused(world, job, verdict, awaited=True)
            return
        finally:
            world.caller_done[world.callers.index(scope)] = True
        _cost_accepted(world, job, verdict)
        job.future = future
        future.add_done_callback(_count(job))
        world.futures.append(job)


async def _caller_map(world: World, labels: list[int], scope: anyio.CancelScope) -> None:
    spec = world.jobs[labels[0]].spec
    options = {
        "timeout": spec.timeout,
        "retries": spec.retries,
        "backoff": spec.options()["backoff"],
    }
    if world.extended:
        # map takes a callable for each: the item (a label) names its job's key and cost.
        options["key"] = lambda label: world.jobs[label].spec.key
        options["cost"] = lambda label: world.jobs[label].spec.options().get("cost")
    seen = [world.limits]  # the limits in force while the map reads its items
    for label in labels:
        world.jobs[label].accepted = True  # once read; a refused cost stops the map there
    with scope:
        try:
            async with world.pool.map(
                world.body_item, labels, return_exceptions=True, **options
            ) as results:
                got = [r async for r in results]
        except PoolClosedError:
            return
        except ValueError as exc:
            seen += [limits for _, limits in world.history]
            if not any(
                world.cost_verdict(world.jobs[label].spec, limits) != "accept"
                for label in labels
                for limits in seen
            ):
                world.fail(f"map of {labels} raised {exc!r}, but every cost fits")
            return
        finally:
            world.caller_done[world.callers.index(scope)] = True
    if scope.cancelled_caught:
        return
    for label, result in zip(labels, got, strict=True):
        if isinstance(result, BaseException):
            if not isinstance(result, (Boom, TimeoutError, RetryAfter)):
                world.fail(f"map item {label} yielded {result!r}")
        elif result != label:
            world.fail(f"map item {label} yielded {result!r}")


def _waiting_future(job: Job) -> bool:
    """A job with a future that waits to start (queued, or in its backoff)."""
    return job.future is not None and not job.future.done() and not job.running


def _set_limits(world: World, new: Limits, rate: Any) -> None:
    """set_limits(), and the model's check of its refusal."""
    pool = world.pool
    new_specs = new.specs()
    misfits = [
        job
        for job in world.jobs.values()
        if job.accepted and job.spec.cost is not None and not _fits(job.spec.cost, new_specs)
    ]
    limits = [*new.limits, *(spec for spec in pool.limits if isinstance(spec, Shared))]
    try:
        if rate is KEEP:
            pool.set_limits(limits)
        else:
            pool.set_limits(limits, rate=rate)
    except ValueError as exc:
        if not misfits:
            world.fail(f"set_limits({new}) raised {exc!r}, but no job has a cost it cannot fit")
        return
    if world.remote is None:  # (a job asking a remote limit is neither waiting nor running)
        waiting = [job.label for job in misfits if _waiting_future(job)]
        if waiting:
            world.fail(f"set_limits({new}) accepted, but jobs {waiting} wait and can never fit")
    world.set_limits_model(new)


def _producers_in_line(world: World) -> bool:
    """Whether a producer may wait in line for room, or hold room it was given, now: a caller
    of submit() that has not returned, or of call() whose job has not begun an attempt (queued,
    it is counted in statistics().queued too)."""
    for index in world.producers:
        if world.caller_done[index]:
            continue
        labels = world.caller_jobs[index]
        if not labels or all(world.jobs[label].attempts == 0 for label in labels):
            return True
    return False


async def _apply(world: World, op: tuple[Any, ...], callers: Any) -> None:
    pool = world.pool
    kind = op[0]
    if kind == "submit":
        method, spec = op[1], op[2]
        job = world.new_job(method, spec)
        if method in ("run", "start_soon"):
            verdict = world.cost_verdict(spec)
            try:
                future = getattr(pool, method)(world.body, job.label, **spec.options())
            except ValueError:
                _cost_refused(world, job, verdict)
                return
            except PoolFullError:
                job.caller_outcome = "PoolFullError"
                # run() never overtakes producers that wait in submit()/call() or hold room
                # they were given: the queue counts as full for it then (documented).
                stats = pool.statistics()
                full = _producers_in_line(world) or stats.queued >= (stats.max_pending or 0)
                if method != "run" or not full:
                    world.fail(f"{method}() raised PoolFullError with room in the queue")
                return
            except PoolClosedError:
                # Legitimate only once the pool failed (a start_soon job failed): the body runs
                # on until its next checkpoint, where it is cancelled.
                job.caller_outcome = "PoolClosedError"
                if not world.pool_failed():
                    world.fail(f"{method}() raised PoolClosedError on a pool that had not failed")
                return
            _cost_accepted(world, job, verdict)
            job.future = future
            future.add_done_callback(_count(job))
            world.futures.append(job)
        else:
            scope = anyio.CancelScope()
            world.callers.append(scope)
            # Cancelling a call() cancels its job; cancelling a submit() only stops its wait for
            # room (the job, once submitted, belongs to its future).
            world.caller_jobs.append([job.label] if method == "call" else [])
            world.caller_done.append(False)
            world.producers.append(len(world.callers) - 1)
            runner = _caller_call if method == "call" else _caller_submit
            callers.start_soon(runner, world, job, scope)
    elif kind == "submit_many":
        for _ in range(op[3]):
            await _apply(world, ("submit", op[1], op[2]), callers)
    elif kind == "map":
        labels = [world.new_job("map", spec).label for spec in op[1]]
        first = world.jobs[labels[0]].spec
        for label in labels:  # map applies one set of options to every item
            world.jobs[label].spec = replace(
                world.jobs[label].spec,
                timeout=first.timeout,
                retries=first.retries,
                backoff=first.backoff,
            )
        scope = anyio.CancelScope()
        world.callers.append(scope)
        world.caller_jobs.append(labels)
        world.caller_done.append(False)
        callers.start_soon(_caller_map, world, labels, scope)
    elif kind == "cancel_future":
        if world.futures:
            job = world.futures[op[1] % len(world.futures)]
            if job.future.cancel():
                job.cancelled_by_us = True
                if job.attempts_when_cancelled is None:
                    job.attempts_when_cancelled = job.attempts
    elif kind == "cancel_caller":
        if world.callers:
            index = op[1] % len(world.callers)
            if not world.caller_done[index]:
                world.callers[index].cancel()
                for label in world.caller_jobs[index]:
                    world.jobs[label].cancelled_by_us = True
    elif kind == "stall":
        jump_clock(op[1])
        await checkpoint()
    elif kind == "pause":
        pool.pause()
        world.paused_model(_INF, None)
    elif kind == "resume":
        pool.resume()
        world.resumed_model()
    elif kind == "pause_for":
        seconds, key = op[1], op[2]
        pool.pause_for(seconds, key=key)
        world.paused_model(anyio.current_time() + seconds, key)
    elif kind == "resize":
        pool.size = op[1]
        limits = world.limits
        kept = tuple(
            s for s in limits.limits if not (isinstance(s, Concurrency) and s.unit is None)
        )
        world.set_limits_model(replace(limits, size=op[1], limits=kept))
    elif kind == "set_rate":
        new = replace(world.limits, rate=op[1])
        pool.rate = op[1]  # (the shorthand counts attempts: no cost can misfit it)
        world.set_limits_model(new)
    elif kind == "set_limits":
        limits, rate = op[1], op[2]
        new = replace(world.limits, limits=limits)
        if rate is not KEEP:
            new = replace(new, rate=rate)
        _set_limits(world, new, rate)
    else:
        delay = op[1]
        if delay:
            await anyio.sleep(delay)
        else:
            await checkpoint()


# -- the end-of-program checks -------------------------------------------------------------------


def _leaves(error: BaseException) -> Iterator[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from _leaves(inner)
    else:
        yield error


def _check_outcomes(world: World, ending: str, pool_error: BaseException | None) -> None:
    failed_start_soon = [
        job.future.exception()
        for job in world.futures
        if job.kind == "start_soon"
        and job.future.done()
        and not job.future.cancelled()
        and job.future.exception() is not None
    ]
    if pool_error is None:
        if failed_start_soon:
            world.fail(f"start_soon jobs failed ({failed_start_soon!r}) but the pool did not raise")
    else:
        # What leaves the block: every failed start_soon() job's error, and possibly the error of
        # a start_soon() job that failed while the pool was being torn down (its future then
        # stays cancelled; as in a task group, that error is still reported). Nothing else.
        leaves = {id(e) for e in _leaves(pool_error)}
        raised_by_start_soon = {
            id(e) for job in world.futures if job.kind == "start_soon" for e in job.raised
        }
        failed = {id(e) for e in failed_start_soon}
        if not failed <= leaves <= failed | raised_by_start_soon:
            world.fail(
                f"the pool raised {pool_error!r}; failed start_soon jobs: {failed_start_soon!r}"
            )
    killed = ending == "kill" or pool_error is not None
    for job in world.futures:
        future = job.future
        if not future.done():
            world.fail(f"job {job.label} ({job.kind}): its future never resolved")
            continue
        if job.resolved != 1:
            world.fail(f"job {job.label} ({job.kind}): future resolved {job.resolved} times")
        if job.attempts > job.spec.retries + 1:
            world.fail(f"job {job.label}: {job.attempts} attempts with retries={job.spec.retries}")
        if future.cancelled():
            if not (job.cancelled_by_us or killed):
                world.fail(f"job {job.label} ({job.kind}) was cancelled, but nobody cancelled it")
            continue
        error = future.exception()
        if error is None:
            result = future.result()
            if result != job.label:
                world.fail(f"job {job.label} ({job.kind}) resolved with {result!r}")
            if job.cancelled_by_us:
                world.fail(f"job {job.label} ({job.kind}): cancel() returned True, then a result")
        elif isinstance(error, (Boom, TimeoutError, RetryAfter)):
            if not killed and not job.cancelled_by_us and job.attempts != job.spec.retries + 1:
                world.fail(
                    f"job {job.label} failed with {error!r} after {job.attempts} attempts "
                    f"(retries={job.spec.retries})"
                )
        else:
            world.fail(f"job {job.label} ({job.kind}) failed with {error!r}")
    for job in world.jobs.values():
        if job.running:
            world.fail(f"job {job.label} still runs after the pool exited")
        if job.attempts_when_cancelled is not None and job.attempts > job.attempts_when_cancelled:
            world.fail(f"job {job.label} started another attempt after it was cancelled")
    s = world.pool.statistics()
    if (s.queued, s.running, s.backoff, borrowed(world.pool)) != (0, 0, 0, 0):
        world.fail(f"the pool is not idle after exit: {s}")
    if not stats_add_up(world.pool):
        world.fail(f"statistics do not add up after exit: {s}")
    if (
        ending != "kill"
        and pool_error is None
        and s.submitted != s.completed + s.failed + s.cancelled
    ):
        world.fail(f"jobs lost: {s}")


def run_program(backend: str, program: tuple[Any, ...]) -> list[str]:
    """Run one generated program; return the violations found (empty: all invariants held)."""
    config, ops, ending, seed = program
    outcome: dict[str, Any] = {}

    async def main() -> None:
        options = {key: value for key, value in config.items() if key != "remote"}
        holder: list[World] = []
        if "retry_after" in config:  # #12's programs
            delay = options.pop("retry_after")
            if delay is not None:
                options["retry_after"] = lambda error: holder[0].retry_after(delay)(error)
        remote = None
        if config["remote"] is not None:
            capacity, latency, refuse = config["remote"]
            remote = FakeRemoteLimit(capacity, latency=latency, refuse=refuse, seed=seed)
            options["limits"] = (*options.get("limits", ()), *remote_limits(remote))
        pool = WorkerPool(**options)
        world = World(config, pool, remote)
        holder.append(world)
        if "limits" in config:
            world.extended = True
            world.per_key = config["per_key"]
            world.set_limits_model(
                Limits(config["size"], config["rate"], config["burst"], config["limits"])
            )
        outcome["world"] = world
        pool_error: BaseException | None = None
        with anyio.CancelScope(deadline=anyio.current_time() + STALL_LIMIT) as stall:
            try:
                async with pool, anyio.create_task_group() as callers:
                    for op in ops:
                        await _apply(world, op, callers)
                        world.check_step()
                    if world.paused_until == _INF and ending != "kill":
                        pool.resume()  # else the pool waits for its jobs forever, as it should
                        world.resumed_model()
                    if ending == "shutdown":
                        await pool.shutdown()
                        for job in world.futures:
                            if not job.future.done():
                                world.fail(f"shutdown() returned before job {job.label} ended")
                        if world.running:
                            world.fail("shutdown() returned while jobs still run")
                    elif ending == "kill":
                        await pool.kill()
                        world.killed_at = anyio.current_time()
                        if world.running:
                            world.fail("kill() returned while job code still runs")
                    world.check_step()
            except (Exception, BaseExceptionGroup) as exc:
                pool_error = exc
        if stall.cancelled_caught:
            world.fail(f"the program stalled: not finished after {STALL_LIMIT} virtual seconds")
            return
        for _ in range(3):
            await checkpoint()  # asyncio runs done callbacks soon, not at once
        world.check_step()
        leftover = internal_tasks()
        if leftover:
            world.fail(f"werkpool tasks still alive after exit: {leftover}")
        _check_outcomes(world, ending, pool_error)
        if remote is not None and (remote.held or remote.errors):
            world.fail(f"remote credit leaked: {remote.held} held, {remote.errors}")
        for job in world.futures:  # retrieved: asyncio must not log them as lost
            if job.future.done() and not job.future.cancelled():
                job.future.exception()

    run_virtual(backend, main, seed=seed)
    return outcome["world"].violations


# -- the tests -----------------------------------------------------------------------------------


#: pytest-timeout's 120 s (pyproject.toml) is for one test that hangs; thousands of programs in
#: one test take 60-160 s of CPU by themselves (a loaded machine measured 158 s here), and a hang
#: still ends the run at this bound.
MANY_PROGRAMS = pytest.mark.timeout(900)


@MANY_PROGRAMS
@pytest.mark.parametrize("backend", BACKENDS)
@PROFILE
@given(program=programs)
def test_r48_random_programs_keep_every_invariant(backend: str, program: tuple[Any, ...]) -> None:
    """R48: random submit/cancel/advance/shutdown/kill programs; R1, R4, R6, R21, R37 hold."""
    violations = run_program(backend, program)
    assert violations == [], "\n".join(violations)


@MANY_PROGRAMS
@pytest.mark.parametrize("backend", BACKENDS)
@LIMITED
@given(program=programs_12)
def test_r48_programs_with_limits_keys_pauses_and_pushback(
    backend: str, program: tuple[Any, ...]
) -> None:
    """#12: programs with several limits, costs, keys, pauses, resizes, rate changes and
    pushbacks keep every limit's contract, every pause, and R48's invariants."""
    violations = run_program(backend, program)
    assert violations == [], "\n".join(violations)


@pytest.mark.parametrize("backend", BACKENDS)
@PROPERTY
@given(
    size=st.integers(1, 6),
    rate=st.sampled_from([0.25, 1.0, 3.0, 10.0, 100.0]),
    burst=st.integers(1, 4),
    durations=st.lists(st.sampled_from([0.0, 0.01, 0.1, 0.5, 1.0, 2.0]), min_size=1, max_size=40),
)
def test_r11_every_job_ends_within_the_analytical_bound(
    backend: str, size: int, rate: float, burst: int, durations: list[float]
) -> None:
    """R11 as a property: with size and rate both set, job k starts by k * max(1/rate, D/size)."""
    longest = max(durations)
    step = max(1 / rate, longest / size)
    record: dict[str, Any] = {}

    async def main() -> None:
        starts: list[float] = []

        async def job(i: int) -> int:
            starts.append(anyio.current_time())
            await anyio.sleep(durations[i])
            return i

        t0 = anyio.current_time()
        with anyio.move_on_after(STALL_LIMIT) as stall:
            async with WorkerPool(size=size, rate=rate, burst=burst) as pool:
                futures = [pool.run(job, i) for i in range(len(durations))]
        record["stalled"] = stall.cancelled_caught
        record["results"] = [f.result() for f in futures if f.done() and not f.cancelled()]
        record["starts"] = [t - t0 for t in starts]
        record["end"] = anyio.current_time() - t0

    run_virtual(backend, main, seed=11)
    assert not record["stalled"]
    assert record["results"] == list(range(len(durations)))
    for k, start in enumerate(record["starts"]):
        assert start <= k * step + 1e-6, (k, start, step)
    assert record["end"] <= (len(durations) - 1) * step + longest + 1e-6
    assert rate_violation(record["starts"], rate, burst) is None
    assert math.isfinite(record["end"])


def test_r48_profiles_are_registered() -> None:
    """The ci, versions and nightly profiles exist; WERKPOOL_HYPOTHESIS_PROFILE picks one
    (default ci)."""
    assert settings.get_profile("ci").max_examples == 3000
    assert 100 <= settings.get_profile("versions").max_examples < 3000
    assert settings.get_profile("nightly").max_examples >= 1000
    assert settings.get_profile("ci").deadline is None
    wanted = os.environ.get("WERKPOOL_HYPOTHESIS_PROFILE", "ci")
    assert PROFILE.max_examples == settings.get_profile(wanted).max_examples
