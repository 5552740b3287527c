"""Shared limits across processes, on a real redis-server (issue #13, "Tests").

Each test starts worker processes (``tests/shared_worker.py``, on the backend under test) that
share limits kept in one Redis server, and checks what they report: the union of their grants,
dated by Redis TIME, against the rate contract; the peak of a counter every job INCRs in Redis
against a concurrency limit; every job's outcome. Faults: a holder killed with SIGKILL, the
server restarted mid-run and paused with SIGSTOP, one client's clocks 10 s fast.

The rate contract checked on the grants: in any half-open window of length ``W``, at most
``ceil(W * rate) + burst - 1`` starts, allowing 1e-6 s for the 6-decimal Redis times. For a
sorted list of starts it is equivalent to ``t[i + m] - t[i] >= (m - burst + 1) / rate`` for every
``i`` and every ``m >= burst``, which :func:`contract_violations` checks exhaustively.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from support import BACKENDS

if TYPE_CHECKING:
    from collections.abc import Iterator

    from redis_server import RedisServer

pytestmark = pytest.mark.realclock

WORKER = Path(__file__).resolve().parent.parent / "shared_worker.py"
ROOT = WORKER.parent.parent

#: The longest a worker may take to start and connect (s): generous, CI machines are slow.
START = 30.0
#: Rounding of Redis times (6 decimals) allowed in the contract.
EPSILON = 1e-6

backends = pytest.mark.parametrize("backend", BACKENDS)


# -- worker processes ----------------------------------------------------------------------------


class Worker:
    """A ``tests/shared_worker.py`` process: JSON lines out, commands in."""

    def __init__(
        self,
        scenario: str,
        server: RedisServer,
        prefix: str,
        backend: str,
        stderr: Path,
        **options: float,
    ) -> None:
        command = [sys.executable, str(WORKER), scenario, "--port", str(server.port)]
        command += ["--prefix", prefix, "--backend", backend]
        for name, value in options.items():
            command += [f"--{name.replace('_', '-')}", repr(value)]
        self.scenario = scenario
        self.stderr_path = stderr
        with stderr.open("wb") as err:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                cwd=ROOT,
                text=True,
            )
        self.pid = self.process.pid
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        try:
            for line in stdout:
                self.lines.put(line)
        except (OSError, ValueError):  # the pipe was closed under us (stop())
            pass
        finally:
            self.lines.put(None)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-4000:]

    def expect(self, event: str, timeout: float) -> dict[str, Any]:
        """The worker's next message, which must be *event*, within *timeout* s."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(
                f"{self.scenario} worker {self.pid} sent no {event!r} within {timeout:g} s; "
                f"stderr:\n{self.stderr()}"
            )
        if line is None:
            code = self.process.wait(timeout=10)
            pytest.fail(
                f"{self.scenario} worker {self.pid} exited with {code} before {event!r}; "
                f"stderr:\n{self.stderr()}"
            )
        message: dict[str, Any] = json.loads(line)
        assert message["event"] == event, (message, self.stderr())
        return message

    def send(self, line: str) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        stdin.write(line + "\n")
        stdin.flush()

    def finish(self, timeout: float = 15.0) -> None:
        """Wait for the worker to exit on its own; it must exit with 0."""
        code = self.process.wait(timeout=timeout)
        assert code == 0, f"{self.scenario} worker {self.pid} exited with {code}:\n{self.stderr()}"

    def stop(self) -> None:
        """Kill the worker (by its pid) if it still runs, reap it, close its pipes."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self.reader.join(timeout=10)
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


@contextlib.contextmanager
def workers() -> Iterator[list[Worker]]:
    """A list to start workers into; every one is stopped at the end, whatever happens."""
    started: list[Worker] = []
    try:
        yield started
    finally:
        for worker in started:
            worker.stop()


def start(
    started: list[Worker],
    scenario: str,
    server: RedisServer,
    prefix: str,
    backend: str,
    tmp_path: Path,
    **options: float,
) -> Worker:
    stderr = tmp_path / f"{scenario}-{len(started)}.err"
    worker = Worker(scenario, server, prefix, backend, stderr, **options)
    started.append(worker)
    return worker


def run_all(started: list[Worker], seconds: float) -> list[dict[str, Any]]:
    """Wait until every worker is ready, let them go at once, collect their results."""
    for worker in started:
        worker.expect("ready", START)
    for worker in started:
        worker.send("go")
    results = [worker.expect("result", seconds + 30) for worker in started]
    for worker in started:
        worker.finish()
    return results


# -- checks --------------------------------------------------------------------------------------


def contract_violations(times: list[float], rate: float, burst: int = 1) -> list[str]:
    """Windows with more starts than the rate contract allows (at most a few, described)."""
    times = sorted(times)
    found: list[str] = []
    for m in range(burst, len(times)):
        least = (m - burst + 1) / rate - EPSILON
        for i, (first, last) in enumerate(zip(times, times[m:], strict=False)):
            if last - first < least:
                window = (m - burst + 1) / rate
                found.append(
                    f"{m + 1} starts in [{first:.6f}, {last:.6f}] (span {last - first:.6f} s): "
                    f"a window of {window:g} s allows {math.ceil(window * rate) + burst - 1}"
                    f" (index {i})"
                )
                if len(found) >= 5:
                    return found
    return found


def steady_rate(times: list[float], margin: float = 0.5) -> float:
    """Starts per second between the first start + margin and the last start - margin."""
    times = sorted(times)
    low, high = times[0] + margin, times[-1] - margin
    assert high - low > 0.5, f"too short a run to measure a rate: {times[0]}..{times[-1]}"
    inside = sum(1 for t in times if low <= t < high)
    return inside / (high - low)


def peak(intervals: list[tuple[float, float]]) -> int:
    """The most intervals overlapping at one instant (an end before a start at the same time)."""
    events = sorted([(b, 1) for b, _ in intervals] + [(e, -1) for _, e in intervals])
    running = most = 0
    for _, change in events:
        running += change
        most = max(most, running)
    return most


def all_resolved(result: dict[str, Any]) -> None:
    """Every job the worker submitted resolved, and none failed."""
    assert result["ok"] + sum(result["errors"].values()) == result["submitted"], result
    assert result["errors"] == {}, result["errors"]
    assert result["ok"] > 0, result


# -- the tests -----------------------------------------------------------------------------------


@backends
def test_four_processes_share_one_rate(
    backend: str, redis_server: RedisServer, redis_prefix: str, tmp_path: Path
) -> None:
    """4 processes share Rate(200) for 5 s: the union of their grants (Redis TIME) keeps the
    window contract and reaches >= 97 % of the rate in the steady state."""
    rate, seconds = 200, 5.0
    with workers() as started:
        for _ in range(4):
            start(
                started,
                "rate",
                redis_server,
                redis_prefix,
                backend,
                tmp_path,
                rate=rate,
                seconds=seconds,
                size=20,
                max_pending=4,
            )
        results = run_all(started, seconds)
    for result in results:
        all_resolved(result)
        assert len(result["grants"]) == result["submitted"]
        assert result["grants"], "a process got no grant at all"
    times = [t for result in results for t in result["grants"]]
    assert contract_violations(times, rate) == []
    achieved = steady_rate(times)
    assert achieved >= 0.97 * rate, f"{achieved:.1f}/s of {rate}/s"


@backends
def test_concurrency_across_four_processes(
    backend: str, redis_server: RedisServer, redis_prefix: str, tmp_path: Path
) -> None:
    """Concurrency(5) shared by 4 processes: a counter every running job holds up in Redis
    (INCR at its start, DECR at its end) never goes above 5, and reaches 5."""
    n, seconds = 5, 2.0
    with workers() as started:
        for _ in range(4):
            start(
                started,
                "concurrency",
                redis_server,
                redis_prefix,
                backend,
                tmp_path,
                n=n,
                seconds=seconds,
                size=5,
                max_pending=5,
                sleep=0.03,
            )
        results = run_all(started, seconds)
    seen = [v for result in results for v in result["seen"]]
    for result in results:
        all_resolved(result)
        assert len(result["seen"]) == result["ok"]
    assert max(seen) <= n, sorted(seen)[-20:]
    assert max(seen) == n
    assert min(seen) >= 1


@backends
def test_killed_holder_slots_come_back_within_a_lease(
    backend: str, redis_server: RedisServer, redis_prefix: str, tmp_path: Path
) -> None:
    """A process holding all n slots (lease 1 s) is killed with SIGKILL: another process that
    waits for them gets all n within about one lease, and the dead holder's leases are gone."""
    n, lease, recheck = 3, 1.0, 1.0
    options: dict[str, float] = {"n": n, "lease": lease, "recheck": recheck}
    with workers() as started:
        holder = start(started, "hold", redis_server, redis_prefix, backend, tmp_path, **options)
        holding = holder.expect("holding", START)
        dead = holding["id"]
        assert len(holding["members"]) == n
        assert all(m.startswith(dead + ":") for m in holding["members"]), holding
        taker = start(started, "take", redis_server, redis_prefix, backend, tmp_path, **options)
        waiting = taker.expect("waiting", START)
        assert waiting["running"] == 0, "the taker ran while the holder held every slot"
        assert waiting["refused"] >= 1
        os.kill(holder.pid, signal.SIGKILL)
        holder.process.wait(timeout=10)
        taker.send("go")
        result = taker.expect("result", lease + recheck + 5 + 15)
        taker.finish()
    assert result["acquired"], result
    assert result["running"] == n
    assert result["ok"] == n
    members = result["members"]
    assert len(members) == n, members
    assert all(m.startswith(result["id"] + ":") for m in members), members
    assert not any(m.startswith(dead + ":") for m in members), members


@backends
def test_a_client_clock_ten_seconds_fast_changes_nothing(
    backend: str, redis_server: RedisServer, redis_prefix: str, tmp_path: Path
) -> None:
    """Two processes share Rate(100) for 3 s, one with every clock 10 s fast: the union keeps
    the contract and each process gets a fair share (35-65 %) of the starts."""
    rate, seconds = 100, 3.0
    with workers() as started:
        for skew in (0.0, 10.0):
            start(
                started,
                "rate",
                redis_server,
                redis_prefix,
                backend,
                tmp_path,
                rate=rate,
                seconds=seconds,
                size=20,
                max_pending=4,
                skew=skew,
            )
        results = run_all(started, seconds)
    normal, fast = results
    # The worker's clocks really were skewed (time.time() against the server's TIME).
    assert abs(normal["skew"]) < 1.0, normal["skew"]
    assert 9.0 < fast["skew"] < 11.0, fast["skew"]
    for result in results:
        all_resolved(result)
    times = [t for result in results for t in result["grants"]]
    assert contract_violations(times, rate) == []
    for result in results:
        share = len(result["grants"]) / len(times)
        assert 0.35 <= share <= 0.65, [len(r["grants"]) for r in results]


@backends
def test_redis_restarted_mid_run(
    backend: str, private_redis: RedisServer, redis_prefix: str, tmp_path: Path
) -> None:
    """Redis is killed and restarted (empty, same port) while 2 processes run jobs under a shared
    Rate and Concurrency: no process crashes, every job resolves (none fails: the store's
    timeout rides the restart), the grants after the restart keep the rate, and never more
    than n jobs run at once, across the restart too (the holders add their leases back and
    admissions wait a grace of lease/3 + call_timeout = 1 s)."""
    rate, n, seconds = 100, 5, 4.0
    with workers() as started:
        for _ in range(2):
            start(
                started,
                "mixed",
                private_redis,
                redis_prefix,
                backend,
                tmp_path,
                rate=rate,
                n=n,
                seconds=seconds,
                size=10,
                max_pending=4,
                sleep=0.05,
                timeout=10.0,
                lease=1.5,
                call_timeout=0.5,
            )
        for worker in started:
            worker.expect("ready", START)
        for worker in started:
            worker.send("go")
        time.sleep(1.5)
        private_redis.restart()
        restarted = time.time()  # the server's TIME runs on this clock (same host)
        results = [worker.expect("result", seconds + 30) for worker in started]
        for worker in started:
            worker.finish()
    for result in results:
        all_resolved(result)
    after = [t for result in results for t in result["grants"] if t > restarted]
    assert len(after) >= 50, f"only {len(after)} grants after the restart"
    assert contract_violations(after, rate) == []
    # Never more than n jobs ran at once, before, across or after the restart: the wall-clock
    # interval of each job (one clock on this host) lies inside its lease, taken before the
    # job's code begins and released after it ends.
    intervals = [(b, e) for result in results for b, e in result["intervals"]]
    assert len(intervals) == sum(result["ok"] for result in results)
    assert peak(intervals) <= n


@backends
def test_admissions_after_a_restart_wait_for_the_recovery(
    backend: str, private_redis: RedisServer, redis_prefix: str, tmp_path: Path
) -> None:
    """A pool holds both slots of Concurrency(2) when Redis restarts; then 4 other pools of the
    same store ask at once, and the first request's recovery (it met NOSCRIPT: it adds the
    running leases back and holds admissions for the grace) is slow. The others must wait for
    it: never more than 2 jobs run at once."""
    n = 2
    with workers() as started:
        worker = start(
            started,
            "recover",
            private_redis,
            redis_prefix,
            backend,
            tmp_path,
            n=n,
            pools=4,
            lease=3.0,
            hold=2.5,
            delay=0.5,
        )
        worker.expect("holding", START)
        private_redis.restart()
        worker.send("go")
        result = worker.expect("result", 30)
        worker.finish()
    all_resolved(result)
    assert result["delayed"], "the fault was not injected (no NOSCRIPT after the restart?)"
    assert result["most"] <= n, result


@backends
def test_redis_paused_admissions_wait_then_fail(
    backend: str, private_redis: RedisServer, redis_prefix: str, tmp_path: Path
) -> None:
    """Redis is paused (SIGSTOP): admissions wait for the store's timeout, then fail with
    LimitUnavailableError; after SIGCONT new jobs run again."""
    timeout, jobs = 1.0, 5
    with workers() as started:
        worker = start(
            started,
            "pause",
            private_redis,
            redis_prefix,
            backend,
            tmp_path,
            rate=50,
            n=2,
            jobs=jobs,
            timeout=timeout,
            call_timeout=0.3,
        )
        phase1 = worker.expect("phase1", START)
        assert phase1["ok"] == jobs, phase1
        private_redis.pause()
        try:
            worker.send("paused")
            phase2 = worker.expect("phase2", timeout + 30)
        finally:
            private_redis.resume()
        worker.send("resumed")
        phase3 = worker.expect("phase3", 30)
        worker.expect("result", 30)
        worker.finish()
    assert phase2["ok"] == 0, phase2
    assert phase2["errors"] == {"LimitUnavailableError": jobs}, phase2
    # They waited for the store's timeout before failing (a lower bound: the policy's wait).
    assert phase2["elapsed"] >= timeout, phase2
    assert phase3 == {"event": "phase3", "ok": jobs, "errors": {}}
