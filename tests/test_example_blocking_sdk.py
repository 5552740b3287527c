"""examples/blocking_sdk.py: a blocking "vendor SDK" run in the pool's threads under size and rate.

The SDK blocks in ``time.sleep``, which a virtual clock cannot skip (the loop's clock would jump
past a timeout while the thread still sleeps), so the example runs on the real clock, in this
process, once per backend (about 3 s each). What it promises, checked from the SDK's own
lock-protected counts: never more than ``size`` threads inside the SDK at once (a timed-out
call keeps its slot until it returns), never more than ``rate`` calls begun in any second,
every report fetched through the transient errors and the timeouts.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from support import BACKENDS, import_example

if TYPE_CHECKING:
    from types import ModuleType

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "blocking_sdk.py"

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def example() -> ModuleType:
    """The example, imported as a module (its ``main()`` does not run)."""
    return import_example(EXAMPLE)


@pytest.mark.realclock
@pytest.mark.parametrize("backend", BACKENDS)
def test_blocking_sdk_example(
    example: ModuleType, backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``python examples/blocking_sdk.py --backend B``: every report, at most ``size`` threads
    in the SDK and ``rate`` calls begun per second, the failures retried; the summary says so."""
    report = example.main(["--backend", backend])
    sdk, stats = report.sdk, report.stats
    size, rate = example.SIZE, example.RATE

    # Every account's report, each once, and the login.
    assert sorted(report.reports, key=lambda r: r["balance"]) == [
        {"account": f"acct-{n}", "balance": 100 * n} for n in range(40)
    ]
    assert sdk.tries["login"] == 1
    assert (stats.completed, stats.failed, stats.cancelled) == (41, 0, 0)

    # The failures the SDK staged on first tries: 5 transient errors, 3 hangs past the timeout
    # (accounts 7, 17 and 37; 27 fails first). Each was retried, and succeeded.
    assert sdk.outcomes["TransientError"] == 5
    timed_out = report.timed_out
    assert timed_out >= 3  # a loaded machine may add a slow one
    assert stats.retries == 5 + timed_out
    assert stats.attempts == len(sdk.starts) == 41 + stats.retries
    assert sdk.inside == 0  # no thread left in the SDK after the pool's exit

    # size: never more threads inside at once, even while a timed-out call still runs; and
    # the pool did use them (the hangs fill the slots).
    assert sdk.most_inside == size
    # rate: at most RATE calls begun in any second (the SDK's clock reads each start a little
    # after the pool dates it: the example allows 10 ms for a thread's start-up), and on average.
    assert report.busiest_second <= math.ceil((1.0 - example.THREAD_START) * rate)
    assert report.achieved_rate <= rate
    # ... and the rate was the bound most of the time: 49-odd calls did not take much longer
    # than the rate needs (at 20/s, 2.4 s) plus the last hang.
    assert report.elapsed < (len(sdk.starts) - 1) / rate + example.HANG + 1.5

    out = capsys.readouterr().out.splitlines()
    assert len(out) == 5
    assert re.fullmatch(
        rf"40 reports in [\d.]+ s \({backend}\): {len(sdk.starts)} SDK calls in \d+ threads, "
        rf"5 transient errors, {stats.retries} retries",
        out[0],
    )
    assert out[1].startswith(f"timeouts: {timed_out} calls outlived the 0.4 s timeout")
    assert out[2] == f"most threads inside the SDK at once: {size} (size {size})"
    assert re.fullmatch(
        rf"calls begun: [\d.]+/s on average, at most {report.busiest_second} in any second "
        rf"\(rate {rate}\)",
        out[3],
    )
    assert out[4] == f"pool: {stats.attempts} attempts, 41 completed, 0 failed"
    # The docs show this output in a code block: no line wider than its 88 columns.
    assert max(map(len, out)) <= 88


def test_busiest_window(example: ModuleType) -> None:
    """The example's "busiest second" counts starts in half-open windows."""
    busiest = example.busiest
    assert busiest([0.0, 0.5, 0.999, 1.0, 1.5], 1.0) == 3  # 1.0 is outside [0, 1)
    assert busiest([0.0, 0.5, 0.995], 1.0) == 3
    assert busiest([0.0, 0.5, 0.995], 0.99) == 2  # the allowance for a thread's start-up
    assert busiest([2.0, 0.0, 1.0], 1.0) == 1  # unsorted input
    assert busiest([0.0] * 4, 1.0) == 4


def readme_blocks(section: str) -> list[str]:
    """The ``python`` blocks of the README section titled *section*."""
    readme = (EXAMPLE.parent.parent / "README.md").read_text(encoding="utf-8")
    start = readme.index(f"\n## {section}\n")
    end = readme.index("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", readme[start:end], flags=re.S)


@pytest.mark.realclock
def test_readme_thread_blocks_on_the_real_clock() -> None:
    """The README's thread examples print what they claim on the real clock too (tests/
    test_readme.py runs them on virtual time, which jumps while a thread sleeps): ``size``
    caps the threads in the call, each staged failure is retried once, and a timed-out thread
    that checks for cancellation stops and frees its slot."""
    first, second = readme_blocks("Blocking functions in threads")
    outputs = [
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
        )
        for code in (first, second)
    ]
    for result in outputs:
        assert result.returncode == 0, result.stderr
    # 40 rows, 6 of them (3, 10, ..., 38) failing once, and one more call.
    assert outputs[0].stdout == (
        "40 rows and 'customer 99': 47 calls\nat most 4 threads in lookup() at once (size 4)\n"
    )
    assert outputs[1].stdout == (
        "10 rows exported\ntimed out: the thread stopped at its next check\n0 running\n"
    )
