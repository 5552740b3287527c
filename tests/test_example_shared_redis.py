"""examples/shared_redis.py: three processes share one ``Rate(50)`` on a real Redis.

The example runs as ``python examples/shared_redis.py`` would, in a subprocess of its own (which
starts the three worker processes), against the session's redis-server, on both backends. Its
output is checked against the rate's contract: in any half-open window of W seconds, at most
``ceil(W * 50)`` starts (burst 1), the starts dated by Redis TIME.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import random
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from support import BACKENDS

if TYPE_CHECKING:
    from types import ModuleType

    from redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "shared_redis.py"
RATE = 50
#: How long each worker process runs: short, yet 60-odd starts at the shared rate.
SECONDS = 1.5

pytestmark = [pytest.mark.timeout(90), pytest.mark.serial]

SUMMARY = re.compile(
    r"combined: (\d+) starts in ([\d.]+) s of Redis time = ([\d.]+)/s \(the limit: 50/s\)"
)
PROCESS = re.compile(r"process (\d) \(pid (\d+)\): (\d+) starts, (\d+) % of them")
BUSIEST = re.compile(r"busiest second: (\d+) starts \(the limit allows 50\)")


def run_example(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the example with *args*; stop it by its pid if it outlasts a minute."""
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLE), "--seconds", str(SECONDS), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def check_output(out: str, backend: str) -> None:
    """Three processes, each with starts; the combined rate within the contract and near it."""
    lines = out.splitlines()
    assert f"3 processes share Rate(50) named 'demo-api' ({backend}, {SECONDS:g} s)" in lines
    processes = [PROCESS.fullmatch(line) for line in lines if line.startswith("process ")]
    assert len(processes) == 3, out
    assert all(match is not None for match in processes), out
    counts = [int(match[3]) for match in processes if match is not None]
    pids = {int(match[2]) for match in processes if match is not None}
    assert len(pids) == 3, f"three distinct processes: {out}"
    assert all(count >= 1 for count in counts), f"every process started jobs: {out}"
    summary = SUMMARY.search(out)
    busiest = BUSIEST.search(out)
    assert summary is not None, out
    assert busiest is not None, out
    starts, span, rate = int(summary[1]), float(summary[2]), float(summary[3])
    assert starts == sum(counts)
    # The contract in a window of 1 s, and in one just longer than the whole run (the span is
    # printed to the millisecond, the Redis times to the microsecond).
    assert int(busiest[1]) <= math.ceil(1.0 * RATE), out
    assert starts <= math.ceil((span + 0.0005 + 1e-6) * RATE), out
    # Near the limit: the processes kept the shared budget busy (a loaded machine may delay a
    # request past a slot now and then, so not exactly 50/s).
    assert rate >= 0.9 * RATE, out
    assert (starts - 1) / span == pytest.approx(rate, abs=0.1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_three_processes_share_one_rate(redis_server: RedisServer, backend: str) -> None:
    """``--redis-url`` (the test's server) and ``--backend``: the union of the three processes'
    starts, dated by Redis TIME, keeps the shared rate's contract and reaches >= 90 % of it."""
    result = run_example("--redis-url", redis_server.url, "--backend", backend)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    check_output(result.stdout, backend)


def test_a_private_server_is_started_and_stopped() -> None:
    """Without ``--redis-url`` the example starts its own redis-server and stops it at the end
    (the server is gone, its port closed)."""
    from redis_server import need_redis_server

    need_redis_server()  # fail under CI, skip elsewhere, without one
    result = run_example()
    started = re.search(r"started redis-server \(pid (\d+)\) on port (\d+)", result.stdout)
    assert started is not None, result.stdout + result.stderr
    pid, port = int(started[1]), int(started[2])
    try:
        assert result.returncode == 0, result.stderr
        check_output(result.stdout, "asyncio")
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        with (
            pytest.raises(ConnectionRefusedError),
            socket.create_connection(("127.0.0.1", port), timeout=1),
        ):
            pass
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # only if the example left it running


def test_no_redis_is_a_clear_error(tmp_path: Path) -> None:
    """Neither ``--redis-url`` nor a redis-server on PATH: a one-line message, no traceback."""
    env = {**os.environ, "PATH": str(tmp_path)}
    result = run_example(env=env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "redis-server is not on PATH" in result.stderr
    assert "--redis-url" in result.stderr


def test_readme_redis_block_runs(redis_server: RedisServer) -> None:
    """The README's Redis example (fenced ``py``, so tests/test_readme.py, which runs the
    ``python`` blocks on virtual time without a server, leaves it to this test) runs against the
    test's server: 50 calls, each admitted once."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Limits shared across processes (Redis)") :]
    match = re.search(r"```py\n(.*?)```", section, flags=re.S)
    assert match is not None
    env = {**os.environ, "REDIS_URL": redis_server.url}
    result = subprocess.run(
        [sys.executable, "-c", match[1]], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "50 calls, 50 admissions granted\n"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("shared_redis_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_busiest_window_counts_like_the_contract() -> None:
    """The example's "busiest second" is the most starts in any half-open window of 1 s (less
    the 1 µs of the times' rounding), as a brute force over every window start finds it."""
    busiest = load_example().busiest
    rng = random.Random(13)
    assert busiest([0.0, 0.5, 0.999998, 1.0, 1.5], 1.0) == 3  # 1.0 is outside [0, 1)
    assert busiest([0.0, 0.9999995], 1.0) == 1  # within the 1 µs allowance
    for _ in range(200):
        times = sorted(round(rng.uniform(0, 3), 6) for _ in range(rng.randint(1, 40)))
        # A window [s, s + 1 - 1e-6) holding the most starts can begin at a start.
        brute = max(sum(1 for u in times if t <= u < t + 1.0 - 1e-6) for t in times)
        assert busiest(times, 1.0) == brute
