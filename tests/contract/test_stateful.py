"""Contract R48 (and R1, R4, R6, R11, R21, R23, R37 as invariants): random programs.

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

This is the "program" form of a state machine (a RuleBasedStateMachine is synchronous, and an
event loop cannot be paused between its rules deterministically on both backends); the program
is the machine's rule sequence, and the checks are its invariants.

Profiles: ``WERKPOOL_HYPOTHESIS_PROFILE=ci`` (default) or ``nightly`` (set by
``nox -s tests_nightly``): see ``settings.register_profile`` below.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from anyio.lowlevel import checkpoint
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import (
    BACKENDS,
    FakeRemoteLimit,
    add_remote_limit,
    borrowed,
    internal_tasks,
    jump_clock,
    rate_violation,
    run_virtual,
    stats_add_up,
)

from werkpool import FutureCancelled, PoolClosedError, PoolFullError, WorkerPool

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    from collections.abc import Iterator

# -- profiles ------------------------------------------------------------------------------------

_COMMON: dict[str, Any] = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    "print_blob": True,
}
settings.register_profile("ci", max_examples=3000, **_COMMON)
settings.register_profile("nightly", max_examples=20_000, **_COMMON)
PROFILE = settings.get_profile(os.environ.get("WERKPOOL_HYPOTHESIS_PROFILE", "ci"))
#: The R11 property needs fewer examples than the programs to cover its small space.
PROPERTY = settings(PROFILE, max_examples=max(20, PROFILE.max_examples // 3))

#: Virtual seconds a program may take before it counts as stalled.
STALL_LIMIT = 100_000.0


class Boom(Exception):
    """A job's own failure."""


# -- programs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobSpec:
    duration: float
    fails: int  # the first `fails` attempts raise Boom
    timeout: float | None
    retries: int
    backoff: float
    cleanup: float  # shielded cleanup when cancelled
    swallow: bool  # catches its cancellation and returns instead

    def options(self) -> dict[str, Any]:
        backoff = self.backoff
        return {
            "timeout": self.timeout,
            "retries": self.retries,
            "backoff": lambda n: backoff,
        }


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


# -- the model's record of what happened ---------------------------------------------------------


@dataclass
class Job:
    label: int
    kind: str
    spec: JobSpec
    future: Any = None
    attempts: int = 0
    running: int = 0
    ok: bool = False
    cancelled_by_us: bool = False
    attempts_when_cancelled: int | None = None
    resolved: int = 0
    caller_outcome: str | None = None
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
    starts: list[float] = field(default_factory=list)
    running: int = 0
    violations: list[str] = field(default_factory=list)
    killed_at: float | None = None
    aborted: bool = False
    next_label: int = 0

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

    # -- the job every program submits -----------------------------------------------------------

    async def body(self, label: int) -> object:
        job = self.jobs[label]
        if self.killed_at is not None:
            self.fail(f"job {label} started an attempt after kill() returned")
        job.attempts += 1
        job.running += 1
        self.running += 1
        self.starts.append(anyio.current_time())
        size = self.config["size"]
        if size is not None and self.running > size:
            self.fail(f"{self.running} attempts executing with size={size}")
        if job.attempts_when_cancelled is not None:
            self.fail(f"job {label} started attempt {job.attempts} after it was cancelled")
        try:
            try:
                if job.spec.duration:
                    await anyio.sleep(job.spec.duration)
                else:
                    await checkpoint()
            except anyio.get_cancelled_exc_class():
                if job.spec.cleanup:
                    with anyio.CancelScope(shield=True):
                        await anyio.sleep(job.spec.cleanup)
                if job.spec.swallow:
                    return "swallowed"
                raise
            if job.attempts <= job.spec.fails:
                error = Boom(label)
                job.raised.append(error)
                raise error
            job.ok = True
            return label
        finally:
            job.running -= 1
            self.running -= 1

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
        # A job that asks the remote limit holds its local token meanwhile (not yet running).
        sched = pool._life.sched
        reserving = 1 if sched is not None and sched.reserving is not None else 0
        if pool.size is not None and borrowed(pool) != s.running + reserving:
            self.fail(f"limiter lends {borrowed(pool)} tokens for {s.running} running attempts")
        remote = self.remote
        if remote is not None and remote.held > remote.capacity:
            self.fail(f"{remote.held} hold the remote limit of capacity {remote.capacity}")
        if pool.size is not None and self.running > pool.size:
            self.fail(f"{self.running} attempts executing with size={pool.size}")
        rate = self.config["rate"]
        if rate is not None:
            violation = rate_violation(self.starts, rate, self.config["burst"])
            if violation:
                self.fail(f"rate contract: {violation}")


def _count(job: Job) -> Any:
    def done(_: Any) -> None:
        job.resolved += 1

    return done


async def _caller_call(world: World, job: Job, scope: anyio.CancelScope) -> None:
    try:
        await _call(world, job, scope)
    finally:
        world.caller_done[world.callers.index(scope)] = True


async def _call(world: World, job: Job, scope: anyio.CancelScope) -> None:
    cancelled_exc = anyio.get_cancelled_exc_class()
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
        except (Boom, TimeoutError, FutureCancelled, PoolClosedError) as exc:
            job.caller_outcome = type(exc).__name__
    if scope.cancelled_caught:
        job.caller_outcome = "caller cancelled"


async def _caller_submit(world: World, job: Job, scope: anyio.CancelScope) -> None:
    with scope:
        try:
            future = await world.pool.submit(world.body, job.label, **job.spec.options())
        except PoolClosedError:
            job.caller_outcome = "PoolClosedError"
            return
        finally:
            world.caller_done[world.callers.index(scope)] = True
        job.future = future
        future.add_done_callback(_count(job))
        world.futures.append(job)


async def _caller_map(world: World, labels: list[int], scope: anyio.CancelScope) -> None:
    spec = world.jobs[labels[0]].spec
    with scope:
        try:
            async with world.pool.map(
                world.body_item, labels, return_exceptions=True, **spec.options()
            ) as results:
                got = [r async for r in results]
        except PoolClosedError:
            return
        finally:
            world.caller_done[world.callers.index(scope)] = True
    if scope.cancelled_caught:
        return
    for label, result in zip(labels, got, strict=True):
        if isinstance(result, BaseException):
            if not isinstance(result, (Boom, TimeoutError)):
                world.fail(f"map item {label} yielded {result!r}")
        elif result != label:
            world.fail(f"map item {label} yielded {result!r}")


async def _apply(world: World, op: tuple[Any, ...], callers: Any) -> None:
    pool = world.pool
    kind = op[0]
    if kind == "submit":
        method, spec = op[1], op[2]
        job = world.new_job(method, spec)
        if method in ("run", "start_soon"):
            try:
                future = getattr(pool, method)(world.body, job.label, **spec.options())
            except PoolFullError:
                job.caller_outcome = "PoolFullError"
                # run() never overtakes producers that wait in submit()/call() or hold room
                # they were given: the queue counts as full for it then (documented).
                stats = pool.statistics()
                full = bool(pool._life.room.waiting) or (
                    stats.queued + pool._life.room.reserved >= (stats.max_pending or 0)
                )
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
            runner = _caller_call if method == "call" else _caller_submit
            callers.start_soon(runner, world, job, scope)
    elif kind == "map":
        labels = [world.new_job("map", spec).label for spec in op[1]]
        first = world.jobs[labels[0]].spec
        for label in labels:  # map applies one set of options to every item
            world.jobs[label].spec = JobSpec(
                world.jobs[label].spec.duration,
                world.jobs[label].spec.fails,
                first.timeout,
                first.retries,
                first.backoff,
                world.jobs[label].spec.cleanup,
                world.jobs[label].spec.swallow,
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
        elif isinstance(error, (Boom, TimeoutError)):
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
        pool = WorkerPool(**options)
        remote = None
        if config["remote"] is not None:
            capacity, latency, refuse = config["remote"]
            remote = FakeRemoteLimit(capacity, latency=latency, refuse=refuse, seed=seed)
            add_remote_limit(pool, remote)
        world = World(config, pool, remote)
        outcome["world"] = world
        pool_error: BaseException | None = None
        with anyio.CancelScope(deadline=anyio.current_time() + STALL_LIMIT) as stall:
            try:
                async with pool, anyio.create_task_group() as callers:
                    for op in ops:
                        await _apply(world, op, callers)
                        world.check_step()
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


@pytest.mark.parametrize("backend", BACKENDS)
@PROFILE
@given(program=programs)
def test_r48_random_programs_keep_every_invariant(backend: str, program: tuple[Any, ...]) -> None:
    """R48: random submit/cancel/advance/shutdown/kill programs; R1, R4, R6, R21, R37 hold."""
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
    """The ci and nightly profiles exist; WERKPOOL_HYPOTHESIS_PROFILE picks one (default ci)."""
    assert settings.get_profile("ci").max_examples == 3000
    assert settings.get_profile("nightly").max_examples >= 1000
    assert settings.get_profile("ci").deadline is None
    wanted = os.environ.get("WERKPOOL_HYPOTHESIS_PROFILE", "ci")
    assert PROFILE.max_examples == settings.get_profile(wanted).max_examples
