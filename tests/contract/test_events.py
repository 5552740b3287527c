"""Contract #15, part 1: the events a pool hands its hooks, and the hooks themselves.

Every transition of a job is one frozen :class:`werkpool.JobEvent`: ``submitted``, ``started`` (an
attempt, with ``waited``: the seconds since it was submitted or since its backoff ended),
``retrying`` (the attempt's error, ``delay`` until the next attempt may start, the attempt's
``duration``), ``finished`` (``outcome``, the job's error if it failed, the last attempt's
``duration``, ``elapsed`` since it was submitted). Pauses are ``paused`` (``job`` None, ``key``
None for the pool, ``until``: ``inf`` for ``pause()``) and ``resumed`` (only by ``resume()``).
Each event carries the ``queued`` and ``running`` counts right after its transition.

Each job's events form a word of its state machine, ``submitted (started retrying)* started?
finished``, with attempts numbered 1, 2, ... and every duration, wait and elapsed time exact on
the virtual clock. :class:`Recorder` checks on every event that the counts equal
``pool.statistics()`` at that moment and that the hook runs in the pool's event loop thread;
:meth:`Recorder.check` checks the words, the job ids (1, 2, ... in submission order), the time
arithmetic and, once the pool is closed, that the finished events by outcome are the
statistics' ``completed``, ``failed`` and ``cancelled``.

Hooks are called in order; ``add_hook`` on a running pool starts the events from the next
transition, ``remove_hook`` stops them (ValueError for a hook the pool does not have), adding a
hook twice is a no-op; a hook that raises is logged once (logger ``werkpool``, with its
traceback) and neither the pool nor its jobs notice. A random-program property (Hypothesis)
closes the file.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import math
import os
import re
import threading
import tracemalloc
from typing import TYPE_CHECKING, Any
from unittest.mock import ANY

import anyio
import pytest
from anyio.lowlevel import checkpoint
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import BACKENDS, Boom, approx, echo, run_virtual, submit_by

import werkpool
from werkpool import JobEvent, RetryAfter, WorkerPool, worker_pool

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Iterator

pytestmark = pytest.mark.anyio

INF = math.inf
FIELDS = tuple(field.name for field in dataclasses.fields(JobEvent))
#: Fields that hold seconds or a time: compared with 1 µs of slack (trio's clock adds floats).
TIMES = ("time", "delay", "waited", "duration", "elapsed", "until")
#: One letter per job event kind, and the words a job's events may form.
LETTER = {"submitted": "s", "started": "b", "retrying": "r", "finished": "f"}
WORD = re.compile(r"s(?:br)*b?f")
UNFINISHED = re.compile(r"s(?:br)*b?")


class Is:
    """Equal to this very object only (the error a job raised, not an equal copy)."""

    def __init__(self, obj: object) -> None:
        self.obj = obj

    def __eq__(self, other: object) -> bool:
        return other is self.obj

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Is({self.obj!r})"


class Kind:
    """Equal to any instance of *cls* with the message *text*."""

    def __init__(self, cls: type[BaseException], text: str | None = None) -> None:
        self.cls = cls
        self.text = text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, self.cls) and (self.text is None or str(other) == self.text)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Kind({self.cls.__name__}, {self.text!r})"


def expect(
    kind: str,
    time: float,
    job: int | None,
    key: Hashable = None,
    *,
    queued: Any = ANY,
    running: Any = ANY,
    **fields: Any,
) -> dict[str, Any]:
    """The whole event expected, as a dict: fields not given must hold their defaults.

    ``queued`` and ``running`` are checked against ``statistics()`` on every event by the
    :class:`Recorder`; give them here to pin them as well.
    """
    expected: dict[str, Any] = {
        "kind": kind,
        "time": time,
        "job": job,
        "key": key,
        "attempt": 0,
        "outcome": None,
        "error": None,
        "delay": None,
        "waited": None,
        "duration": None,
        "elapsed": None,
        "until": None,
        "queued": queued,
        "running": running,
        "clamped_from": None,
        # A job's label (tests/contract/test_job_labels.py checks it); a pause has none.
        "name": ANY if job is not None else None,
    }
    unknown = set(fields) - set(expected)
    assert not unknown, unknown
    expected.update(fields)
    for name in TIMES:
        value = expected[name]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            expected[name] = approx(value) if math.isfinite(value) else value
    return expected


def as_dict(event: JobEvent) -> dict[str, Any]:
    return {name: getattr(event, name) for name in FIELDS}


class Recorder:
    """A hook that keeps every event, and checks each against the pool as it arrives."""

    def __init__(self) -> None:
        self.events: list[JobEvent] = []
        self.pool: WorkerPool | None = None
        self.thread = threading.get_ident()
        self.problems: list[str] = []

    def __call__(self, event: JobEvent) -> None:
        self.events.append(event)
        if threading.get_ident() != self.thread:
            self.problems.append(f"{event} delivered in another thread")
        if not isinstance(event, JobEvent) or hash(event) != hash(dataclasses.replace(event)):
            self.problems.append(f"{event!r} is not a hashable werkpool.JobEvent")
        pool = self.pool
        if pool is not None:
            stats = pool.statistics()
            if (event.queued, event.running) != (stats.queued, stats.running):
                self.problems.append(
                    f"{event.kind} of job {event.job}: queued={event.queued} "
                    f"running={event.running}, statistics() says queued={stats.queued} "
                    f"running={stats.running}"
                )

    def of(self, job: int) -> list[dict[str, Any]]:
        """The events of job *job*, as dicts (for comparison with :func:`expect`)."""
        return [as_dict(e) for e in self.events if e.job == job]

    def pauses(self) -> list[dict[str, Any]]:
        """The pause events (``paused`` and ``resumed``), as dicts."""
        return [as_dict(e) for e in self.events if e.job is None]

    def kinds(self, job: int) -> list[str]:
        return [e.kind for e in self.events if e.job == job]

    def check(self, pool: WorkerPool | None = None, *, closed: bool = True) -> None:
        """Every job's events are a word of the state machine with consistent numbers.

        With *closed* (the pool has exited), every job finished, and the finished events by
        outcome are the statistics' counters.
        """
        assert self.problems == [], "\n".join(self.problems)
        times = [e.time for e in self.events]
        assert times == sorted(times), "events out of time order"
        jobs: dict[int, list[JobEvent]] = {}
        for event in self.events:
            if event.job is None:
                assert event.kind in ("paused", "resumed"), event
                assert event.attempt == 0, event
                assert (event.until is not None) == (event.kind == "paused"), event
                continue
            assert event.kind not in ("paused", "resumed"), event
            jobs.setdefault(event.job, []).append(event)
        # Ids: 1, 2, ... in the order the jobs were submitted (the first events are theirs).
        firsts = [history[0] for history in jobs.values()]
        assert [e.job for e in firsts] == list(range(1, len(jobs) + 1)), list(jobs)
        for number, history in jobs.items():
            word = "".join(LETTER[e.kind] for e in history)
            pattern = WORD if closed else UNFINISHED
            assert pattern.fullmatch(word) or (not closed and WORD.fullmatch(word)), (
                number,
                word,
            )
            check_numbers(history)
        if closed and pool is not None:
            outcomes = [h[-1].outcome for h in jobs.values()]
            stats = pool.statistics()
            assert len(jobs) == stats.submitted, (len(jobs), stats)
            assert outcomes.count("completed") == stats.completed, stats
            assert outcomes.count("failed") == stats.failed, stats
            assert outcomes.count("cancelled") == stats.cancelled, stats
            started = [e for e in self.events if e.kind == "started"]
            assert len(started) == stats.attempts, stats
            assert sum(e.attempt > 1 for e in started) == stats.retries, stats


def check_numbers(history: list[JobEvent]) -> None:
    """The attempts, durations, waits and elapsed times of one job's events agree."""
    submitted = history[0]
    assert submitted.attempt == 0, submitted
    assert submitted.outcome is submitted.error is submitted.waited is None, submitted
    assert submitted.duration is submitted.elapsed is submitted.delay is None, submitted
    ready = submitted.time  # since when the job may start
    attempt = 0
    began: float | None = None  # the running attempt's start
    for event in history[1:]:
        assert event.key == submitted.key, (event, submitted)
        assert event.until is None, event
        if event.kind == "started":
            attempt += 1
            assert event.attempt == attempt, event
            assert event.waited == approx(max(0.0, event.time - ready)), (event, ready)
            assert event.error is event.delay is event.duration is event.elapsed is None, event
            began = event.time
        elif event.kind == "retrying":
            assert event.attempt == attempt, event
            assert began is not None, event
            assert event.duration == approx(event.time - began), event
            assert isinstance(event.error, BaseException), event
            assert event.delay is not None, event
            assert event.delay >= 0, event
            assert event.waited is event.elapsed is event.outcome is None, event
            ready = event.time + event.delay
            began = None
        else:
            assert event.kind == "finished", event
            assert event.attempt == attempt, event
            assert event.outcome in ("completed", "failed", "cancelled"), event
            assert (event.error is not None) == (event.outcome == "failed"), event
            assert event.elapsed == approx(event.time - submitted.time), event
            if began is None:
                assert event.duration is None, event
            else:
                assert event.duration == approx(event.time - began), event
            assert event.delay is event.waited is None, event


def recording(**options: Any) -> tuple[WorkerPool, Recorder]:
    """A pool whose only hook is a fresh :class:`Recorder`."""
    recorder = Recorder()
    pool = WorkerPool(hooks=[recorder], **options)
    recorder.pool = pool
    return pool, recorder


class Flaky:
    """Jobs that fail their first attempts: ``job(label, fails, duration)`` raises a new
    :class:`Boom` in each of its first *fails* attempts, after *duration* seconds, then returns
    *label*. Keeps every error raised and every attempt's start."""

    def __init__(self) -> None:
        self.errors: dict[object, list[BaseException]] = {}
        self.starts: dict[object, list[float]] = {}

    async def job(self, label: object, fails: int = 0, duration: float = 0.0) -> object:
        starts = self.starts.setdefault(label, [])
        starts.append(anyio.current_time())
        if duration:
            await anyio.sleep(duration)
        else:
            await checkpoint()
        if len(starts) <= fails:
            error = Boom(f"{label} #{len(starts)}")
            self.errors.setdefault(label, []).append(error)
            raise error
        return label


async def sleeper(seconds: float) -> float:
    await anyio.sleep(seconds)
    return seconds


def tens(retry: int) -> float:
    """A backoff of 10 s before retry 1, 20 s before retry 2, ..."""
    return 10.0 * retry


# -- a job's life ----------------------------------------------------------------------------------


async def test_a_job_that_completes() -> None:
    """submitted, started, finished completed: the second job of a size-1 pool waits 2 s for
    its slot (``waited``), runs 3 s (``duration``), and is over 5 s after it was submitted."""
    pool, rec = recording(size=1)
    t0 = anyio.current_time()
    async with pool:
        await anyio.sleep(1)
        first = pool.run(sleeper, 2.0)
        second = pool.run(sleeper, 3.0)
        assert await first == 2.0
        assert await second == 3.0
    assert rec.of(1) == [
        expect("submitted", t0 + 1, 1, queued=1, running=0),
        expect("started", t0 + 1, 1, attempt=1, waited=0.0, queued=1, running=1),
        expect(
            "finished",
            t0 + 3,
            1,
            attempt=1,
            outcome="completed",
            duration=2.0,
            elapsed=2.0,
            queued=1,
            running=0,
        ),
    ]
    assert rec.of(2) == [
        expect("submitted", t0 + 1, 2, queued=2, running=0),
        expect("started", t0 + 3, 2, attempt=1, waited=2.0, queued=0, running=1),
        expect(
            "finished",
            t0 + 6,
            2,
            attempt=1,
            outcome="completed",
            duration=3.0,
            elapsed=5.0,
            queued=0,
            running=0,
        ),
    ]
    assert rec.pauses() == []
    rec.check(pool)


async def test_a_job_retried_after_failures() -> None:
    """Two failures, then success: each ``retrying`` has the attempt's own error, its number,
    its duration and ``delay`` = the backoff; each next ``started`` measures ``waited`` from the
    end of the backoff (3 s here: a 5 s job holds the only slot); ``finished`` has attempt 3."""
    flaky = Flaky()
    pool, rec = recording(size=1)
    t0 = anyio.current_time()
    async with pool:
        future = pool.run(flaky.job, "f", 2, 1.0, retries=3, backoff=tens)
        await anyio.sleep(12)  # the first retry runs 11..12 and fails; the next is due at 32
        pool.run(sleeper, 23.0)  # holds the slot from 12 to 35: the retry waits 3 s for it
        assert await future == "f"
    errors = flaky.errors["f"]
    assert flaky.starts["f"] == [approx(t0), approx(t0 + 11), approx(t0 + 35)]
    assert rec.of(1) == [
        expect("submitted", t0, 1),
        expect("started", t0, 1, attempt=1, waited=0.0),
        expect("retrying", t0 + 1, 1, attempt=1, error=Is(errors[0]), delay=10.0, duration=1.0),
        expect("started", t0 + 11, 1, attempt=2, waited=0.0),
        expect("retrying", t0 + 12, 1, attempt=2, error=Is(errors[1]), delay=20.0, duration=1.0),
        expect("started", t0 + 35, 1, attempt=3, waited=3.0),
        expect(
            "finished",
            t0 + 36,
            1,
            attempt=3,
            outcome="completed",
            duration=1.0,
            elapsed=36.0,
            queued=0,
            running=0,
        ),
    ]
    rec.check(pool)


async def test_the_default_backoff_is_the_delay_of_the_retrying_event() -> None:
    """With the default backoff (jittered), ``delay`` is what the pool waits: the retry starts
    ``delay`` seconds after the ``retrying`` event, with ``waited`` 0."""
    flaky = Flaky()
    pool, rec = recording()
    async with pool:
        assert await pool.run(flaky.job, "j", 2, retries=2) == "j"
    events = rec.events
    assert [e.kind for e in events] == ["submitted"] + ["started", "retrying"] * 2 + [
        "started",
        "finished",
    ]
    for retrying, started in [(events[2], events[3]), (events[4], events[5])]:
        assert retrying.delay is not None
        assert 2**retrying.attempt <= retrying.delay <= 2**retrying.attempt + 1
        assert started.time == approx(retrying.time + retrying.delay)
        assert started.waited == approx(0.0)
    rec.check(pool)


async def test_a_job_that_fails_for_good() -> None:
    """No retry left: ``finished`` with ``failed`` and the job's own error (the future's)."""
    flaky = Flaky()
    pool, rec = recording()
    t0 = anyio.current_time()
    async with pool:
        once = pool.run(flaky.job, "once", 5, 2.0)
        twice = pool.run(flaky.job, "twice", 5, 1.0, retries=1, backoff=lambda _: 4.0)
        with pytest.raises(Boom):
            await once
        with pytest.raises(Boom):
            await twice
    assert rec.of(1) == [
        expect("submitted", t0, 1),
        expect("started", t0, 1, attempt=1, waited=0.0),
        expect(
            "finished",
            t0 + 2,
            1,
            attempt=1,
            outcome="failed",
            error=Is(once.exception()),
            duration=2.0,
            elapsed=2.0,
        ),
    ]
    first, last = flaky.errors["twice"]
    assert twice.exception() is last
    assert rec.of(2) == [
        expect("submitted", t0, 2),
        expect("started", t0, 2, attempt=1, waited=0.0),
        expect("retrying", t0 + 1, 2, attempt=1, error=Is(first), delay=4.0, duration=1.0),
        expect("started", t0 + 5, 2, attempt=2, waited=0.0),
        expect(
            "finished",
            t0 + 6,
            2,
            attempt=2,
            outcome="failed",
            error=Is(last),
            duration=1.0,
            elapsed=6.0,
        ),
    ]
    rec.check(pool)


async def test_a_timeout_is_the_error_of_retrying_and_finished() -> None:
    """Each attempt times out after 2 s: ``retrying`` and then ``finished`` ``failed`` carry
    the TimeoutError, with the attempt's 2 s as ``duration``."""
    pool, rec = recording()
    t0 = anyio.current_time()
    timed_out = Kind(TimeoutError, "the attempt timed out after 2 s")
    async with pool:
        future = pool.run(sleeper, 5.0, timeout=2, retries=1, backoff=lambda _: 1.0)
        with pytest.raises(TimeoutError):
            await future
    assert rec.of(1) == [
        expect("submitted", t0, 1),
        expect("started", t0, 1, attempt=1, waited=0.0),
        expect("retrying", t0 + 2, 1, attempt=1, error=timed_out, delay=1.0, duration=2.0),
        expect("started", t0 + 3, 1, attempt=2, waited=0.0),
        expect(
            "finished",
            t0 + 5,
            1,
            attempt=2,
            outcome="failed",
            error=Is(future.exception()),
            duration=2.0,
            elapsed=5.0,
        ),
    ]
    assert rec.events[-1].error == timed_out
    rec.check(pool)


# -- cancellation and kill() -----------------------------------------------------------------------


async def test_cancelled_while_queued_running_or_in_backoff() -> None:
    """A cancelled job ends with ``finished`` ``cancelled``: while queued, attempt 0 and no
    duration; while running, the attempt's duration so far; in its backoff, the attempt that
    failed is its number, and none runs (no duration)."""
    flaky = Flaky()
    pool, rec = recording(size=2)
    t0 = anyio.current_time()
    async with pool:
        running = pool.run(sleeper, 10.0)
        backing_off = pool.run(flaky.job, "b", 1, 1.0, retries=1, backoff=lambda _: 10.0)
        queued = pool.run(sleeper, 1.0)
        queued_too = pool.run(sleeper, 1.0)
        await anyio.sleep(0.5)
        queued_too.cancel()  # waiting for a slot: both run
        await anyio.sleep(2.5)  # "b" failed at 1 and is in its backoff; "queued" ran 1..2
        backing_off.cancel()
        running.cancel()
        await anyio.sleep(1)
    assert queued.done()
    assert not queued.cancelled()
    assert rec.of(4) == [
        expect("submitted", t0, 4),
        expect("finished", t0 + 0.5, 4, attempt=0, outcome="cancelled", elapsed=0.5, running=2),
    ]
    assert rec.of(1)[-1] == expect(
        "finished", t0 + 3, 1, attempt=1, outcome="cancelled", duration=3.0, elapsed=3.0
    )
    assert rec.of(2)[-2:] == [
        expect(
            "retrying",
            t0 + 1,
            2,
            attempt=1,
            error=Is(flaky.errors["b"][0]),
            delay=10.0,
            duration=1.0,
        ),
        expect("finished", t0 + 3, 2, attempt=1, outcome="cancelled", elapsed=3.0),
    ]
    rec.check(pool)


async def stubborn(seconds: float, fail: bool) -> str:
    """Runs *seconds* whatever happens (shielded), then returns or raises :class:`Boom`."""
    with anyio.CancelScope(shield=True):
        await anyio.sleep(seconds)
    if fail:
        raise Boom("after cancel")
    return "returned anyway"


@pytest.mark.parametrize("fail", [False, True], ids=["returns", "raises"])
@pytest.mark.parametrize("how", ["future", "call", "kill"])
async def test_a_job_cancelled_while_it_runs_is_cancelled_when_it_ends(
    how: str, fail: bool
) -> None:
    """Cancelled at 1 s (its future, its caller, or kill()) while its shielded code runs on:
    the job's ``finished`` comes when its code ends, at 3 s, ``cancelled`` (not completed,
    not failed, whatever the code did), with the attempt's 3 s as ``duration``."""
    pool, rec = recording()
    t0 = anyio.current_time()
    async with pool, anyio.create_task_group() as tg:
        if how == "call":
            scope = anyio.CancelScope()

            async def caller() -> None:
                with scope:
                    await pool.call(stubborn, 3.0, fail)

            tg.start_soon(caller)
        else:
            future = pool.run(stubborn, 3.0, fail)
        await anyio.sleep(1)
        if how == "call":
            scope.cancel()
        elif how == "future":
            future.cancel()
        else:
            await pool.kill()
    if how != "call":
        assert future.cancelled()
    assert rec.of(1)[-1] == expect(
        "finished", t0 + 3, 1, attempt=1, outcome="cancelled", duration=3.0, elapsed=3.0
    )
    rec.check(pool)


async def test_a_cancelled_call_ends_cancelled() -> None:
    """Cancelling ``call()``'s caller cancels its job: ``finished`` ``cancelled`` at once."""
    pool, rec = recording()
    t0 = anyio.current_time()
    async with pool:
        with anyio.move_on_after(2):
            await pool.call(sleeper, 10.0)
    assert rec.of(1) == [
        expect("submitted", t0, 1),
        expect("started", t0, 1, attempt=1, waited=0.0),
        expect("finished", t0 + 2, 1, attempt=1, outcome="cancelled", duration=2.0, elapsed=2.0),
    ]
    rec.check(pool)


async def test_kill_finishes_every_job_cancelled() -> None:
    """kill(): every job, running, in its backoff or queued, gets its ``finished``
    ``cancelled`` at once, each with its own attempt number and duration."""
    flaky = Flaky()
    pool, rec = recording(size=2)
    t0 = anyio.current_time()
    async with pool:
        pool.run(sleeper, 5.0)  # 1: runs
        pool.run(flaky.job, "b", 1, retries=1, backoff=lambda _: 10.0)  # 2: in its backoff
        pool.run(sleeper, 5.0)  # 3: runs once 2 has failed
        pool.run(sleeper, 5.0)  # 4: queued
        await anyio.sleep(1)
        await pool.kill()
        assert anyio.current_time() == approx(t0 + 1)
    finished = {e.job: as_dict(e) for e in rec.events if e.kind == "finished"}
    cancelled: dict[str, Any] = {"outcome": "cancelled", "elapsed": 1.0}
    assert finished == {
        1: expect("finished", t0 + 1, 1, attempt=1, duration=1.0, **cancelled),
        2: expect("finished", t0 + 1, 2, attempt=1, **cancelled),
        3: expect("finished", t0 + 1, 3, attempt=1, duration=1.0, **cancelled),
        4: expect("finished", t0 + 1, 4, attempt=0, **cancelled),
    }
    assert rec.events[-1].queued == rec.events[-1].running == 0
    rec.check(pool)


async def test_a_failing_start_soon_job_fails_and_the_others_are_cancelled() -> None:
    """A ``start_soon`` job that fails stops the pool: its ``finished`` is ``failed`` with
    its error, the other jobs' are ``cancelled``."""
    flaky = Flaky()
    pool, rec = recording()
    t0 = anyio.current_time()
    with pytest.raises(Boom):
        async with pool:
            pool.start_soon(sleeper, 10.0)
            pool.start_soon(flaky.job, "x", 1, 2.0)
    assert rec.of(2)[-1] == expect(
        "finished",
        t0 + 2,
        2,
        attempt=1,
        outcome="failed",
        error=Is(flaky.errors["x"][0]),
        duration=2.0,
        elapsed=2.0,
    )
    assert rec.of(1)[-1] == expect(
        "finished", t0 + 2, 1, attempt=1, outcome="cancelled", duration=2.0, elapsed=2.0
    )
    rec.check(pool)


# -- pushback and pauses ---------------------------------------------------------------------------


class TooManyRequests(Exception):
    """An HTTP client's 429, with its Retry-After."""

    def __init__(self, delay: float) -> None:
        super().__init__(f"429, retry after {delay} s")
        self.delay = delay


def http_retry_after(error: BaseException) -> float | None:
    return error.delay if isinstance(error, TooManyRequests) else None


class Pushy:
    """A job whose first attempt pushes back with *error*, after 1 s; later ones succeed."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.calls = 0

    async def job(self) -> str:
        self.calls += 1
        await anyio.sleep(1)
        if self.calls == 1:
            raise self.error
        return "done"


@pytest.mark.parametrize("key", [None, "api.example"])
@pytest.mark.parametrize("how", ["RetryAfter", "retry_after="])
async def test_a_pushback_pauses_then_the_job_is_retrying(key: str | None, how: str) -> None:
    """A job that pushes back for 5 s (``RetryAfter(5)``, or an error ``retry_after=`` maps to
    5): ``paused`` (no job; the job's key, None for the pool's pause; ``until`` = now + 5),
    just before the job's ``retrying`` with ``delay`` = 5; the retry starts when it is over."""
    error: Exception = RetryAfter(5) if how == "RetryAfter" else TooManyRequests(5)
    pushy = Pushy(error)
    options: dict[str, Any] = {} if how == "RetryAfter" else {"retry_after": http_retry_after}
    pool, rec = recording(**options)
    t0 = anyio.current_time()
    async with pool:
        assert await pool.run(pushy.job, retries=1, key=key) == "done"
    assert [as_dict(e) for e in rec.events] == [
        expect("submitted", t0, 1, key),
        expect("started", t0, 1, key, attempt=1, waited=0.0),
        expect("paused", t0 + 1, None, key, until=t0 + 6, queued=0, running=0),
        expect("retrying", t0 + 1, 1, key, attempt=1, error=Is(error), delay=5.0, duration=1.0),
        expect("started", t0 + 6, 1, key, attempt=2, waited=0.0),
        expect(
            "finished",
            t0 + 7,
            1,
            key,
            attempt=2,
            outcome="completed",
            duration=1.0,
            elapsed=7.0,
        ),
    ]
    rec.check(pool)


async def test_a_pushback_without_retries_left_pauses_and_fails() -> None:
    """No retry left: ``paused``, then ``finished`` ``failed`` with the RetryAfter."""
    error = RetryAfter(3)
    pool, rec = recording()
    t0 = anyio.current_time()
    async with pool:
        future = pool.run(Pushy(error).job)
        with pytest.raises(RetryAfter):
            await future
    assert [e.kind for e in rec.events] == ["submitted", "started", "paused", "finished"]
    assert as_dict(rec.events[2]) == expect("paused", t0 + 1, None, until=t0 + 4)
    assert rec.events[3].error is error
    assert rec.events[3].outcome == "failed"
    rec.check(pool)


async def test_pause_pause_for_and_push_back_emit_paused() -> None:
    """``pause_for()`` and ``push_back()`` (of the pool or of a key) emit ``paused`` with the
    pause's end, ``pause()`` with ``inf``; only a pause that starts or grows does (a shorter
    one is kept out, and says nothing)."""
    pool, rec = recording()
    t0 = anyio.current_time()
    async with pool:
        pool.pause_for(5)
        pool.pause_for(3)  # shorter: kept out
        pool.pause_for(5)  # the same end: nothing new
        await anyio.sleep(1)
        pool.push_back(6)  # now until 7
        pool.pause_for(2, key="a")
        pool.push_back(4, key="b")
        pool.push_back(1, key="a")  # shorter than a's pause
        pool.pause()
        pool.pause()  # paused already, for good
        pool.pause_for(100)  # shorter than inf
        pool.resume()
    assert rec.pauses() == [
        expect("paused", t0, None, until=t0 + 5, queued=0, running=0),
        expect("paused", t0 + 1, None, until=t0 + 7),
        expect("paused", t0 + 1, None, "a", until=t0 + 3),
        expect("paused", t0 + 1, None, "b", until=t0 + 5),
        expect("paused", t0 + 1, None, until=INF),
        expect("resumed", t0 + 1, None),
        expect("resumed", t0 + 1, None, "a"),
        expect("resumed", t0 + 1, None, "b"),
    ]
    rec.check(pool)


async def test_resume_emits_resumed_for_the_pool_and_each_paused_key() -> None:
    """``resume()`` emits ``resumed`` for the pool if paused and for each paused key, before
    the jobs the pauses held start; with nothing paused it emits nothing."""
    pool, rec = recording()
    t0 = anyio.current_time()
    async with pool:
        pool.resume()  # nothing paused
        pool.pause()
        pool.pause_for(10, key="k")
        pool.run(echo, 1, key="k")
        await anyio.sleep(2)
        pool.resume()
        await anyio.sleep(1)
        pool.resume()  # nothing paused any more
    kinds = [(e.kind, e.job, e.key) for e in rec.events]
    assert kinds == [
        ("paused", None, None),
        ("paused", None, "k"),
        ("submitted", 1, "k"),
        ("resumed", None, None),
        ("resumed", None, "k"),
        ("started", 1, "k"),
        ("finished", 1, "k"),
    ]
    assert rec.pauses()[2:] == [
        expect("resumed", t0 + 2, None, queued=1, running=0),
        expect("resumed", t0 + 2, None, "k", queued=1, running=0),
    ]
    assert rec.of(1)[1] == expect("started", t0 + 2, 1, "k", attempt=1, waited=2.0)
    rec.check(pool)


async def test_resume_after_a_timed_pause_ended_emits_nothing() -> None:
    """A timed pause ends at its ``until`` with no event; a later ``resume()`` ends no pause
    (``pool.paused`` is False), so it says nothing either."""
    pool, rec = recording()
    async with pool:
        pool.pause_for(1)
        pool.pause_for(1, key="k")
        await anyio.sleep(2)
        assert not pool.paused
        pool.resume()
    assert [e.kind for e in rec.events] == ["paused", "paused"]


async def test_a_pool_paused_before_it_starts_emits_paused_when_it_starts() -> None:
    """``pause()`` before ``async with``: the pause begins with the pool, and so its event."""
    pool, rec = recording()
    pool.pause()
    t0 = anyio.current_time()
    async with pool:
        pool.run(echo, 1)
        await anyio.sleep(3)
        pool.resume()
    assert [as_dict(e) for e in rec.events[:2]] == [
        expect("paused", t0, None, until=INF, queued=0, running=0),
        expect("submitted", t0, 1),
    ]
    assert rec.of(1)[1] == expect("started", t0 + 3, 1, attempt=1, waited=3.0)
    rec.check(pool)


# -- every way in ----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["run", "start_soon", "submit", "call", "map"])
async def test_every_entry_point_emits_the_same_events(method: str) -> None:
    """``run``, ``start_soon``, ``submit``, ``call`` and ``map``: the same three events."""
    pool, rec = recording()
    t0 = anyio.current_time()
    async with pool:
        await anyio.sleep(1)
        result = await submit_by(pool, method, sleeper, 2.0)
        if method in ("run", "start_soon", "submit"):
            result = await result
        assert result == 2.0
    assert rec.of(1) == [
        expect("submitted", t0 + 1, 1),
        expect("started", t0 + 1, 1, attempt=1, waited=0.0),
        expect("finished", t0 + 3, 1, attempt=1, outcome="completed", duration=2.0, elapsed=2.0),
    ]
    rec.check(pool)


async def test_a_map_emits_one_job_per_item_in_order() -> None:
    """``map()`` with size 2: jobs 1, 2, ... in item order, each started as a slot frees
    (``waited``: how long it waited for it)."""
    flaky = Flaky()
    pool, rec = recording(size=2)
    t0 = anyio.current_time()
    async with pool:
        results = pool.map(flaky.job, ["a", "b", "c", "d", "e"], ordered=True)
        got = [item async for item in results]
        assert got == ["a", "b", "c", "d", "e"]
    started = [(e.job, e.time) for e in rec.events if e.kind == "started"]
    assert started == [(1, t0), (2, t0), (3, t0), (4, t0), (5, t0)]
    assert [e.job for e in rec.events if e.kind == "submitted"] == [1, 2, 3, 4, 5]
    rec.check(pool)

    pool, rec = recording(size=2)
    t1 = anyio.current_time()
    async with pool:
        durations = [3.0, 1.0, 1.0, 2.0]
        finished = [d async for d in pool.map(sleeper, durations, ordered=False)]
        assert finished == [1.0, 1.0, 3.0, 2.0]
    assert [(e.job, e.time, e.waited) for e in rec.events if e.kind == "started"] == [
        (1, approx(t1), approx(0.0)),
        (2, approx(t1), approx(0.0)),
        (3, approx(t1 + 1), approx(1.0)),
        (4, approx(t1 + 2), approx(2.0)),
    ]
    rec.check(pool)


async def test_a_map_with_failures_and_retries() -> None:
    """A map's items are retried and fail like any job: ``retrying``, ``finished`` ``failed``
    with the error the iteration raises."""
    flaky = Flaky()
    fails = {"ok": 0, "late": 1, "bad": 3}

    async def item(label: str) -> object:
        return await flaky.job(label, fails[label])

    pool, rec = recording()
    async with pool:
        results = pool.map(item, ["ok", "late"], retries=1, backoff=lambda _: 1.0)
        assert [x async for x in results] == ["ok", "late"]
        with pytest.raises(Boom) as raised:
            async for _ in pool.map(item, ["bad"]):
                pass
    assert [rec.kinds(n) for n in (1, 2, 3)] == [
        ["submitted", "started", "finished"],
        ["submitted", "started", "retrying", "started", "finished"],
        ["submitted", "started", "finished"],
    ]
    assert rec.of(2)[2]["error"] is flaky.errors["late"][0]
    assert rec.events[-1].outcome == "failed"
    assert rec.events[-1].error is raised.value is flaky.errors["bad"][0]
    rec.check(pool)


def blocking_square(x: int) -> int:
    return x * x


class BlockingFlaky:
    """A blocking function that fails its first call (in its thread)."""

    def __init__(self) -> None:
        self.calls = 0
        self.errors: list[Boom] = []

    def __call__(self, x: int) -> int:
        self.calls += 1
        if self.calls == 1:
            self.errors.append(Boom("thread"))
            raise self.errors[-1]
        return -x


async def test_thread_jobs_emit_their_events_in_the_loop_thread() -> None:
    """``run_sync``, ``call_sync``, ``submit_sync``, ``start_soon_sync``, ``map_sync``: the
    same events as any job, given to the hooks in the event loop's thread (the Recorder checks
    it on each), with a retry for the error the function raised in its thread."""
    flaky = BlockingFlaky()
    pool, rec = recording(size=2)
    async with pool:
        assert await pool.run_sync(blocking_square, 2) == 4  # 1
        assert await pool.call_sync(blocking_square, 3) == 9  # 2
        assert await (await pool.submit_sync(blocking_square, 4)) == 16  # 3
        assert await pool.start_soon_sync(blocking_square, 5) == 25  # 4
        assert [r async for r in pool.map_sync(blocking_square, [6, 7])] == [36, 49]  # 5, 6
        assert await pool.run_sync(flaky, 8, retries=1, backoff=lambda _: 1.0, key="k") == -8
    for job in range(1, 7):
        assert rec.kinds(job) == ["submitted", "started", "finished"], job
        assert rec.events[-1].outcome == "completed"
    retried = rec.of(7)
    assert [e["kind"] for e in retried] == [
        "submitted",
        "started",
        "retrying",
        "started",
        "finished",
    ]
    assert {e["key"] for e in retried} == {"k"}
    assert retried[2]["error"] is flaky.errors[0]
    assert retried[2]["delay"] == approx(1.0)
    rec.check(pool)


async def test_keyed_jobs_carry_their_key_on_every_event() -> None:
    flaky = Flaky()
    pool, rec = recording(size=1, per_key=[werkpool.Concurrency(1)])
    async with pool:
        a = pool.run(flaky.job, "a", 1, 1.0, retries=1, backoff=lambda _: 1.0, key="host-a")
        b = pool.run(flaky.job, "b", 0, 1.0, key=("host", 2))
        c = pool.run(flaky.job, "c", 0, 1.0)
        assert [await a, await b, await c] == ["a", "b", "c"]
    assert {e.key for e in rec.events if e.job == 1} == {"host-a"}
    assert {e.key for e in rec.events if e.job == 2} == {("host", 2)}
    assert {e.key for e in rec.events if e.job == 3} == {None}
    assert rec.kinds(1) == ["submitted", "started", "retrying", "started", "finished"]
    rec.check(pool)


async def test_a_rate_spaces_the_started_events() -> None:
    """rate=2: the ``started`` events are 0.5 s apart, at the times the jobs themselves start,
    each with the ``waited`` that its rate slot cost."""
    flaky = Flaky()
    pool, rec = recording(rate=2)
    t0 = anyio.current_time()
    async with pool:
        for i in range(5):
            pool.run(flaky.job, i)
    started = [e for e in rec.events if e.kind == "started"]
    assert [e.time for e in started] == [approx(t0 + 0.5 * i) for i in range(5)]
    assert [e.waited for e in started] == [approx(0.5 * i) for i in range(5)]
    assert [e.time for e in started] == [flaky.starts[i][0] for i in range(5)]
    rec.check(pool)


async def test_job_ids_are_unique_and_in_submission_order() -> None:
    """Ids 1, 2, ... in the order the jobs were submitted, whatever the entry point and key,
    in the order their ``submitted`` events come."""
    pool, rec = recording(size=1)
    async with pool:
        pool.run(echo, "run")
        pool.run(echo, "keyed", key="k")
        await pool.submit(echo, "submit")
        pool.start_soon(echo, "start_soon")
        async with anyio.create_task_group() as tg:
            tg.start_soon(pool.call, echo, "call")
        assert [x async for x in pool.map(echo, ["map1", "map2"])] == ["map1", "map2"]
        pool.run_sync(blocking_square, 1)
        pool.run(echo, "last", key="k")
    submitted = [e.job for e in rec.events if e.kind == "submitted"]
    assert submitted == list(range(1, 10))
    rec.check(pool)


async def test_counts_in_events_are_the_statistics_at_that_moment() -> None:
    """A busy mix (size 2, failures, retries, cancellations, keys, a rate): on every event
    ``queued`` and ``running`` equal ``statistics()`` (the Recorder checks each), and the
    finished events by outcome are the final counters."""
    flaky = Flaky()
    pool, rec = recording(size=2, rate=4, burst=2)
    async with pool:
        futures = [
            pool.run(
                flaky.job,
                i,
                i % 3,
                0.25 * (i % 4),
                retries=i % 2 * 2,
                backoff=lambda r: 0.3 * r,
                key=None if i % 5 else "k",
            )
            for i in range(12)
        ]
        await anyio.sleep(1.1)
        futures[7].cancel()
        futures[11].cancel()
    for future in futures:
        if not future.cancelled():
            future.exception()  # retrieved
    assert {e.kind for e in rec.events} == {"submitted", "started", "retrying", "finished"}
    assert len(rec.events) >= 40
    rec.check(pool)


# -- hooks -----------------------------------------------------------------------------------------


async def test_hooks_are_called_in_order_for_every_event() -> None:
    calls: list[tuple[str, str]] = []

    def hook(name: str) -> Callable[[JobEvent], None]:
        def record(event: JobEvent) -> None:
            calls.append((name, event.kind))

        return record

    a, b, c = hook("a"), hook("b"), hook("c")
    pool = WorkerPool(hooks=iter([a, b, c]))  # any iterable
    assert pool.hooks == (a, b, c)
    async with pool:
        await pool.call(echo, 1)
    kinds = ["submitted", "started", "finished"]
    assert calls == [(name, kind) for kind in kinds for name in "abc"]

    pool = worker_pool(hooks=[c, a])
    assert pool.hooks == (c, a)
    calls.clear()
    async with pool:
        pool.pause_for(1)
    assert calls == [("c", "paused"), ("a", "paused")]


async def test_add_hook_on_a_running_pool_starts_from_the_next_transition() -> None:
    """A hook added while jobs run gets the next transitions of those jobs (not the past
    ones), and every event of the jobs submitted after."""
    rec = Recorder()
    pool = WorkerPool(size=1)
    assert pool.hooks == ()
    async with pool:
        pool.run(sleeper, 2.0)  # 1: running when the hook comes
        pool.run(sleeper, 1.0)  # 2: queued
        await anyio.sleep(1)
        rec.pool = pool
        pool.add_hook(rec)
        assert pool.hooks == (rec,)
        pool.run(sleeper, 1.0)  # 3
    assert [(e.kind, e.job) for e in rec.events] == [
        ("submitted", 3),
        ("finished", 1),
        ("started", 2),
        ("finished", 2),
        ("started", 3),
        ("finished", 3),
    ]
    assert rec.problems == []
    assert as_dict(rec.events[0]) == expect("submitted", 1, 3, queued=2, running=1)


async def test_add_hook_before_the_pool_starts() -> None:
    rec = Recorder()
    pool = WorkerPool()
    pool.add_hook(rec)
    rec.pool = pool
    async with pool:
        await pool.call(echo, 1)
    assert [e.kind for e in rec.events] == ["submitted", "started", "finished"]
    rec.check(pool)


async def test_remove_hook_stops_its_events_and_only_its() -> None:
    stay, leave = Recorder(), Recorder()
    pool = WorkerPool(hooks=[leave, stay])
    async with pool:
        await pool.call(echo, 1)
        pool.remove_hook(leave)
        assert pool.hooks == (stay,)
        await pool.call(echo, 2)
        pool.remove_hook(stay)
        assert pool.hooks == ()
        await pool.call(echo, 3)
        pool.pause_for(1)
    assert [(e.kind, e.job) for e in leave.events] == [
        ("submitted", 1),
        ("started", 1),
        ("finished", 1),
    ]
    assert [e.job for e in stay.events] == [1, 1, 1, 2, 2, 2]


async def test_removing_an_absent_hook_raises_value_error() -> None:
    rec = Recorder()
    pool = WorkerPool()
    with pytest.raises(ValueError, match="not a hook of this pool"):
        pool.remove_hook(rec)
    async with pool:
        pool.add_hook(rec)
        pool.remove_hook(rec)
        with pytest.raises(ValueError, match="not a hook of this pool"):
            pool.remove_hook(rec)
        await pool.call(echo, 1)
    assert rec.events == []


async def test_adding_a_hook_twice_is_a_no_op() -> None:
    rec = Recorder()
    pool = WorkerPool(hooks=[rec])
    pool.add_hook(rec)
    assert pool.hooks == (rec,)
    async with pool:
        pool.add_hook(rec)
        assert pool.hooks == (rec,)
        await pool.call(echo, 1)
        pool.remove_hook(rec)
        assert pool.hooks == ()
        await pool.call(echo, 2)
    assert [(e.kind, e.job) for e in rec.events] == [
        ("submitted", 1),
        ("started", 1),
        ("finished", 1),
    ]


class HookObject:
    """A hook as a callable object (with a method hook too): equality is identity."""

    def __init__(self) -> None:
        self.kinds: list[str] = []

    def __call__(self, event: JobEvent) -> None:
        self.kinds.append(event.kind)

    def on_event(self, event: JobEvent) -> None:
        self.kinds.append("method:" + event.kind)


async def test_callable_objects_and_bound_methods_are_hooks() -> None:
    """A bound method, made anew at each attribute access, is the same hook (it compares
    equal): added twice it is called once, and removing a fresh one removes it."""
    obj = HookObject()
    pool = WorkerPool(hooks=[obj])
    async with pool:
        pool.add_hook(obj.on_event)
        pool.add_hook(obj.on_event)
        assert len(pool.hooks) == 2
        await pool.call(echo, 1)
        pool.remove_hook(obj.on_event)
        await pool.call(echo, 2)
    kinds = ["submitted", "started", "finished"]
    assert obj.kinds == [k for kind in kinds for k in (kind, "method:" + kind)] + kinds


@pytest.mark.parametrize(
    ("hooks", "message"),
    [
        (5, r"^hooks must be an iterable of callables .*not int$"),
        (print, r"^hooks must be an iterable of callables .*\(hooks=\[hook\]\).*"),
        ("print", r"^hooks must be an iterable of callables .*not str$"),
        (None, r"^hooks must be an iterable of callables .*not NoneType$"),
        ([5], r"^hooks: a hook must be a callable taking a werkpool.JobEvent, not int$"),
        ([print, "x"], r"^hooks: a hook must be a callable .*not str$"),
    ],
    ids=["int", "bare-callable", "str", "None", "list-of-int", "list-with-str"],
)
async def test_bad_hooks_are_refused_with_type_error(hooks: Any, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        WorkerPool(hooks=hooks)
    with pytest.raises(TypeError, match=message):
        worker_pool(hooks=hooks)


class IterableHook:
    """A hook that can also be iterated (over what it saw): still one hook, not a list."""

    def __init__(self) -> None:
        self.seen: list[JobEvent] = []

    def __call__(self, event: JobEvent) -> None:
        self.seen.append(event)

    def __iter__(self) -> Iterator[JobEvent]:
        return iter(self.seen)


async def test_a_bare_hook_is_refused_even_if_it_is_iterable() -> None:
    """``hooks=hook`` (no list) is a TypeError naming ``hooks=[hook]``, even for a hook that
    is iterable and empty (taken as a list, it would silently mean no hook at all)."""
    with pytest.raises(TypeError, match=r"^hooks must be an iterable .*\(hooks=\[hook\]\)"):
        WorkerPool(hooks=IterableHook())
    hook = IterableHook()
    async with WorkerPool(hooks=[hook]) as pool:
        await pool.call(echo, 1)
    assert [e.kind for e in hook] == ["submitted", "started", "finished"]


async def test_add_hook_refuses_what_is_not_callable() -> None:
    pool = WorkerPool()
    async with pool:
        for bad in (5, None, "print", [print]):
            with pytest.raises(TypeError, match=r"^add_hook\(\): a hook must be a callable"):
                pool.add_hook(bad)
        assert pool.hooks == ()


async def test_a_hook_that_raises_is_logged_once_and_changes_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two hooks that raise at every event, around one that records: each is logged once
    (logger ``werkpool``, ERROR, with its traceback), each keeps being called, the recorder
    sees every event, and every job's result, error and the counters are what they would be."""
    caplog.set_level(logging.DEBUG, logger="werkpool")
    raised: dict[str, list[BaseException]] = {"first": [], "second": []}

    def raising(name: str) -> Callable[[JobEvent], None]:
        def hook(event: JobEvent) -> None:
            error = RuntimeError(f"{name} hook broken at {event.kind}")
            raised[name].append(error)
            raise error

        return hook

    first, second = raising("first"), raising("second")
    flaky = Flaky()
    rec = Recorder()
    pool = WorkerPool(size=2, hooks=[first, rec, second])
    rec.pool = pool
    async with pool:
        ok = pool.run(flaky.job, "ok", 1, 1.0, retries=1, backoff=lambda _: 1.0)
        bad = pool.run(flaky.job, "bad", 1, 1.0)
        assert await pool.call(echo, "call") == "call"
        assert [x async for x in pool.map(echo, [1, 2])] == [1, 2]
        pool.pause_for(1)
        assert await ok == "ok"
        with pytest.raises(Boom):
            await bad
    assert bad.exception() is flaky.errors["bad"][0]
    stats = pool.statistics()
    assert (stats.completed, stats.failed, stats.cancelled) == (4, 1, 0)
    assert len(raised["first"]) == len(raised["second"]) == len(rec.events) > 10
    records = [r for r in caplog.records if r.name == "werkpool"]
    assert len(records) == 2, [r.getMessage() for r in records]
    for record, name in zip(records, ("first", "second"), strict=True):
        assert record.levelno == logging.ERROR
        assert record.exc_info is not None
        assert record.exc_info[1] is raised[name][0]
        assert "submitted" in record.getMessage()
        assert "raised" in record.getMessage()
    rec.check(pool)


# -- the events themselves -------------------------------------------------------------------------


async def test_events_are_frozen_hashable_and_equal_by_value() -> None:
    rec = Recorder()
    async with WorkerPool(hooks=[rec]) as pool:
        await pool.call(echo, 1, key="k")
    event = rec.events[1]
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.kind = "finished"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.waited = 1.0  # type: ignore[misc]
    with pytest.raises((AttributeError, TypeError)):
        event.extra = 1  # type: ignore[attr-defined]
    assert not hasattr(event, "__dict__")
    copy = dataclasses.replace(event)
    assert copy == event
    assert copy is not event
    assert hash(copy) == hash(event)
    assert len(set(rec.events) | {copy}) == 3
    assert dataclasses.replace(event, time=event.time + 1) != event
    assert isinstance(event, werkpool.JobEvent)
    assert werkpool.JobEvent.__module__ == "werkpool"
    assert event.kind == "started"
    assert "started" in repr(event)


async def test_a_plain_function_is_a_hook() -> None:
    """Anything that takes a JobEvent is a :class:`werkpool.Hook` (a Protocol): statically and
    at run time a function passes."""
    seen: list[str] = []

    def hook(event: JobEvent) -> None:
        seen.append(event.kind)

    typed: werkpool.Hook = hook
    async with WorkerPool(hooks=[typed]) as pool:
        await pool.call(echo, 1)
    assert seen == ["submitted", "started", "finished"]


# -- regressions (fixed in dc30397) ----------------------------------------------------------------


async def test_a_hook_added_again_measures_waited_from_the_backoff_end() -> None:
    """A job retried while the pool had no hook: once a hook is back, its next start's
    ``waited`` is the time since its backoff ended (0 here), or None (unknown to the new
    hook, as for any job in flight when a hook is added), never the time since submission."""
    flaky = Flaky()
    rec = Recorder()
    pool = WorkerPool(hooks=[rec])
    async with pool:
        future = pool.run(flaky.job, "j", 1, 1.0, retries=1, backoff=lambda _: 2.0)
        await anyio.sleep(0.5)
        pool.remove_hook(rec)  # the attempt fails at 1, unheard; its retry is due at 3
        await anyio.sleep(2)
        pool.add_hook(rec)
        assert await future == "j"
    started = [e for e in rec.events if e.kind == "started"]
    assert [(e.attempt, e.time) for e in started] == [(1, approx(0.0)), (2, approx(3.0))]
    assert started[1].waited in (None, approx(0.0)), started[1]


async def test_jobs_finished_without_hooks_leave_nothing_behind() -> None:
    """The timings a pool keeps for its hooks go with its last hook: jobs in flight when it
    is removed leave nothing behind, even once a hook is added again (a leak per job, say
    with a progress bar added and removed around each batch). Measured as the memory the
    module that calls the hooks holds (tracemalloc), so the pool's internals are not read."""
    kinds: list[str] = []

    def hook(event: JobEvent) -> None:
        kinds.append(event.kind)  # (keeps no event: only what the pool holds is measured)

    tracemalloc.start()
    try:
        pool = WorkerPool(hooks=[hook])
        async with pool:
            base = _held_by_hooks()
            for _ in range(50):
                pool.run(sleeper, 1.0)
            await anyio.sleep(0.5)
            # The measure sees each job's timings while it is in flight.
            assert _held_by_hooks() - base >= 50
            pool.remove_hook(hook)
            await anyio.sleep(1)
            pool.add_hook(hook)
            await pool.call(echo, 1)
            kept = _held_by_hooks() - base
            assert kept < 10, f"{kept} blocks kept for the jobs that finished without hooks"
            for _ in range(50):
                pool.run(sleeper, 1.0)
            await anyio.sleep(0.5)
            pool.remove_hook(hook)  # the last one, with the jobs in flight: they finish unheard
        kept = _held_by_hooks() - base
        assert kept < 10, f"{kept} blocks kept for the jobs that finished without hooks"
    finally:
        tracemalloc.stop()
    assert kinds.count("finished") == 1  # echo's: the hook heard nothing while it was removed


def _held_by_hooks() -> int:
    """How many memory blocks allocated by werkpool's module that calls the hooks are still
    held (after a full collection, which also empties CPython's free lists)."""
    gc.collect()
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(True, "*/werkpool/*/_hooks.py")]
    )
    return sum(stat.count for stat in snapshot.statistics("filename"))


# -- random programs (Hypothesis) ------------------------------------------------------------------

#: How many random programs per backend: a few seconds in CI, more with the nightly profile.
EXAMPLES = 1000 if os.environ.get("WERKPOOL_HYPOTHESIS_PROFILE") == "nightly" else 100

job_specs = st.tuples(
    st.sampled_from([0.0, 0.5, 1.0]),  # submitted at
    st.sampled_from([0.0, 0.5, 1.0, 2.0]),  # each attempt's duration
    st.integers(0, 3),  # attempts that fail
    st.integers(0, 2),  # retries
    st.sampled_from([None, 1.5]),  # timeout per attempt
    st.sampled_from([0.0, 0.25, 1.0]),  # backoff
    st.sampled_from([None, 0.25, 1.0, 2.5, 4.0]),  # cancelled at
    st.sampled_from([None, "a", "b"]),  # key
    st.sampled_from(["run", "call"]),
)
programs = st.tuples(
    st.sampled_from([None, 1, 2, 3]),  # size
    st.sampled_from([None, 2.0]),  # rate
    st.lists(job_specs, min_size=1, max_size=8),
    st.integers(0, 2**16),  # trio's tie-breaking seed
)


def run_events_program(backend: str, program: tuple[Any, ...]) -> None:
    size, rate, specs, seed = program
    rec = Recorder()
    flaky = Flaky()
    outcomes: dict[int, tuple[str, object]] = {}
    calls: set[int] = set()  # the jobs submitted by call()

    async def main() -> None:
        rec.thread = threading.get_ident()
        pool = WorkerPool(size=size, rate=rate, hooks=[rec])
        rec.pool = pool
        t0 = anyio.current_time()
        order = sorted(range(len(specs)), key=lambda i: specs[i][0])

        async def by_call(n: int, spec: tuple[Any, ...], scope: anyio.CancelScope) -> None:
            _, duration, fails, retries, timeout, backoff, _, key, _ = spec
            with scope:
                try:
                    value = await pool.call(
                        flaky.job,
                        n,
                        fails,
                        duration,
                        retries=retries,
                        timeout=timeout,
                        backoff=lambda _: backoff,
                        key=key,
                    )
                except Exception as error:  # the outcome is what is checked
                    outcomes[n] = ("failed", error)
                else:
                    outcomes[n] = ("completed", value)
                return
            outcomes[n] = ("cancelled", None)

        async def cancel_at(when: float, cancel: Callable[[], object]) -> None:
            await anyio.sleep_until(t0 + when)
            cancel()

        futures: dict[int, Any] = {}
        async with pool, anyio.create_task_group() as tg:
            for n, i in enumerate(order, 1):
                spec = specs[i]
                at, duration, fails, retries, timeout, backoff, cancelled_at, key, how = spec
                await anyio.sleep_until(t0 + at)
                if how == "run":
                    future = pool.run(
                        flaky.job,
                        n,
                        fails,
                        duration,
                        retries=retries,
                        timeout=timeout,
                        backoff=lambda _, b=backoff: b,
                        key=key,
                    )
                    futures[n] = future
                    if cancelled_at is not None:
                        tg.start_soon(cancel_at, cancelled_at, future.cancel)
                else:
                    scope = anyio.CancelScope()
                    calls.add(n)
                    tg.start_soon(by_call, n, spec, scope)
                    for _ in range(100):  # the call submits job n before the next one
                        if pool.statistics().submitted == n:
                            break
                        await checkpoint()
                    assert pool.statistics().submitted == n
                    if cancelled_at is not None:
                        tg.start_soon(cancel_at, cancelled_at, scope.cancel)
        for n, future in futures.items():
            if future.cancelled():
                outcomes[n] = ("cancelled", None)
            elif future.exception() is not None:
                outcomes[n] = ("failed", future.exception())
            else:
                outcomes[n] = ("completed", future.result())
        rec.check(pool)

    run_virtual(backend, main, seed=seed)
    # Each job's finished event says what its future or caller got.
    for n, (outcome, value) in outcomes.items():
        last = [e for e in rec.events if e.job == n][-1]
        assert last.kind == "finished"
        if outcome == "cancelled" and n in calls and last.outcome != "cancelled":
            # The caller was cancelled as its job settled (at the same instant): the caller
            # sees its cancellation, the pool the job's own end.
            continue
        assert last.outcome == outcome, (n, last, outcome, value)
        if outcome == "failed":
            assert last.error is value, (n, last, value)
        started = [e for e in rec.events if e.job == n and e.kind == "started"]
        assert len(started) == len(flaky.starts.get(n, [])), n
        assert [e.time for e in started] == [approx(t) for t in flaky.starts.get(n, [])]


@pytest.mark.parametrize("backend", BACKENDS)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    print_blob=True,
)
@given(program=programs)
def test_random_programs_emit_valid_words_that_add_up(
    backend: str, program: tuple[Any, ...]
) -> None:
    """Random jobs (succeed, fail n times, time out, retried or not, cancelled at some point,
    with keys, under size and rate; by ``run`` or ``call``): every job's events are a word of
    ``submitted (started retrying)* started? finished`` with consistent numbers, the counts
    match ``statistics()`` at each event, the finished events by outcome are the counters, and
    each job's ``finished`` says what its future or caller got."""
    run_events_program(backend, program)
