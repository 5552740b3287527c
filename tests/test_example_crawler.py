"""examples/crawler.py: a crawler over an httpx client whose transport sends through a pool.

The example's fake web (an ASGI app, in-process) refuses with 429 + Retry-After any request
that comes sooner than its host allows; gamma.test allows less than the crawler's per-host rate.
On virtual time (both backends) the outcome is exact: every page crawled once with a 200, every
429 retried once after its pause, the crawler's per-host rate kept at every request the server
saw, and the two hosts that were not pushed back finished long before the one that was. One real
run per backend, as ``python examples/crawler.py --backend B``, checks the script itself.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from support import BACKENDS, import_example

if TYPE_CHECKING:
    from types import ModuleType

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "crawler.py"

pytestmark = pytest.mark.timeout(60)

SUMMARY = re.compile(
    r"crawled (\d+) pages from http://alpha\.test/ in ([\d.]+) s \((\w+)\): "
    r"(\d+) got 200, (\d+) otherwise"
)
HOST = re.compile(
    r"  ([a-z]+\.test): (\d+) pages, the last at ([\d.]+) s; "
    r"the server allows (\d+)/s and refused (\d+) with 429"
)
POOL = re.compile(r"pool: (\d+) attempts, (\d+) retries, (\d+) requests completed, (\d+) failed")


@pytest.fixture(scope="module")
def example() -> ModuleType:
    """The example, imported as a module (its ``main()`` does not run)."""
    return import_example(EXAMPLE)


def virtual_run(real_run: Any) -> Any:
    """``anyio.run`` on a virtual clock: looptime on asyncio, MockClock on trio."""

    def run(func: Any, *args: Any, backend: str, **kwargs: Any) -> Any:
        if backend == "trio":
            import trio.testing

            options: dict[str, Any] = {"clock": trio.testing.MockClock(autojump_threshold=0)}
        else:
            import looptime

            options = {"loop_factory": lambda: looptime.new_event_loop(resolution=1e-9)}
        return real_run(func, *args, backend=backend, backend_options=options, **kwargs)

    return run


def check_summary(out: str, backend: str) -> dict[str, tuple[int, float, int]]:
    """The printed summary: every page answered 200, retries = 429s; returns, per host,
    (pages, the last page's time, 429s)."""
    lines = out.splitlines()
    assert len(lines) == 5, out
    # The docs show this output in a code block: no line wider than its 88 columns.
    assert max(map(len, lines)) <= 88, out
    summary = SUMMARY.fullmatch(lines[0])
    assert summary is not None, out
    assert summary[3] == backend
    assert int(summary[1]) == int(summary[4]) == 36
    assert int(summary[5]) == 0
    hosts = {}
    for line in lines[1:4]:
        match = HOST.fullmatch(line)
        assert match is not None, out
        hosts[match[1]] = (int(match[2]), float(match[3]), int(match[5]))
    assert list(hosts) == ["alpha.test", "beta.test", "gamma.test"]
    assert all(pages == 12 for pages, _, _ in hosts.values()), out
    pool = POOL.fullmatch(lines[4])
    assert pool is not None, out
    attempts, retries, completed, failed = map(int, pool.groups())
    refused = sum(r for _, _, r in hosts.values())
    assert refused > 0, "gamma.test allows less than the crawler sends: some 429s"
    assert retries == refused, "each 429 retried once (none failed)"
    assert attempts == 36 + retries
    assert (completed, failed) == (36, 0)
    return hosts


@pytest.mark.parametrize("backend", BACKENDS)
def test_crawl_on_virtual_time(
    example: ModuleType,
    backend: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The whole fake web crawled once, all 200s, through 429s on gamma.test only; the
    crawler's per-host rate held at the server; the other hosts were never held up."""
    monkeypatch.setattr(anyio, "run", virtual_run(anyio.run))
    report = example.main(["--backend", backend])
    hosts = check_summary(capsys.readouterr().out, backend)

    # Every page of the fake web, each fetched once and answered 200.
    expected = {
        f"http://{host}/" + ("" if page == 0 else f"page/{page}")
        for host in example.HOSTS
        for page in range(example.PAGES_PER_HOST)
    }
    assert set(report.statuses) == expected
    assert set(report.statuses.values()) == {200}
    web = report.web.hosts
    assert [host.served for host in web.values()] == [12, 12, 12]

    # Pushback: only the strict host refused, and every refusal was retried.
    alpha, beta, gamma = web.values()
    assert (alpha.refused, beta.refused) == (0, 0)
    assert gamma.refused > 0
    assert report.stats.retries == gamma.refused
    assert len(gamma.arrivals) == 12 + gamma.refused

    # The crawler's per-host Rate(10): no two requests to a host less than 0.1 s apart, but
    # for the retry of a refused one. A 429 charged nothing, so its slot is given back (#22):
    # the retry comes when its Retry-After says, at the server's next slot, never sooner.
    for host in web.values():
        last_accepted = -math.inf
        refused = False
        for before, after in itertools.pairwise(host.arrivals):
            if before >= last_accepted + 1 / host.rate - 1e-6:
                last_accepted, refused = before, False
            else:
                refused = True
            if refused:
                assert after >= last_accepted + 1 / host.rate - 1e-6, "retried too soon"
            else:
                assert after - before >= 0.1 - 1e-6, "closer than the client's rate"

    # Per-key limits: gamma's pauses held up only gamma. alpha and beta, at 10/s, took about
    # 1.1 s for 12 pages each; gamma, at 5/s at best, took more than twice as long.
    assert max(alpha.done, beta.done) - report.start < 1.5
    assert gamma.done - report.start > 2.2
    assert hosts["gamma.test"][1] == pytest.approx(gamma.done - report.start, abs=0.05)
    assert report.elapsed == pytest.approx(gamma.done - report.start, abs=0.05)


@pytest.mark.realclock
@pytest.mark.parametrize("backend", BACKENDS)
def test_crawler_script_runs(backend: str) -> None:
    """``python examples/crawler.py --backend B`` on the real clock: the same summary, every
    page 200 through the 429s."""
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLE), "--backend", backend],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        out, err = process.communicate(timeout=40)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    assert process.returncode == 0, err
    assert "Traceback" not in err
    hosts = check_summary(out, backend)
    assert hosts["gamma.test"][2] > 0
    # The slower host finished last: its pauses did not hold up the others.
    assert hosts["gamma.test"][1] > max(hosts["alpha.test"][1], hosts["beta.test"][1])


def test_readme_httpx_block_prints_its_claims(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's httpx example (run by tests/test_readme.py too) prints what its comments
    claim, on virtual time: all 200s through one 429 per host, each host paused 1.5 s, then
    2 a second (5 requests to a.example: 1.5 + 4 x 0.5 s), one retry per 429."""
    import asyncio

    import looptime

    readme = (EXAMPLE.parent.parent / "README.md").read_text(encoding="utf-8")
    start = readme.index("\n## HTTP requests through a pool (httpx)\n")
    end = readme.index("\n## ", start + 1)
    code = re.findall(r"```python\n(.*?)```", readme[start:end], flags=re.S)[0]  # the first

    def run(coro: Any) -> Any:
        loop = looptime.new_event_loop(resolution=1e-9)
        try:
            return loop.run_until_complete(coro)
        finally:
            loop.close()

    monkeypatch.setattr(asyncio, "run", run)
    exec(compile(code, "README.md", "exec"), {"__name__": "__main__"})
    assert capsys.readouterr().out == (
        "[200, 200, 200, 200, 200, 200, 200, 200] b'a.example/big' in 3.5 s\n"
        "2 retries: one per 429\n"
    )
