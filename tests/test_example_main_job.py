"""examples/main_job.py, the README's first command: its summary's promises, on both backends.

On virtual time, so every count is exact; the tmux test (test_progress_terminal.py) runs it for
real, in a terminal, with its progress bar.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from support import BACKENDS, approx, import_example, rate_violation, virtual_backend_options

if TYPE_CHECKING:
    from types import ModuleType

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "main_job.py"

pytestmark = [pytest.mark.timeout(60), pytest.mark.serial]

JOBS = 300
#: Items that fail once with a 500: 7, 36, ..., 297 (none of them missing).
FLAKY = [item for item in range(JOBS) if item % 29 == 7]


@pytest.fixture(scope="module")
def example() -> ModuleType:
    """The example, imported as a module (its ``main()`` does not run)."""
    return import_example(EXAMPLE)


async def test_summary_promises(
    example: ModuleType, capsys: pytest.CaptureFixture[str], anyio_backend: Any
) -> None:
    """All 300 done (3 404s failed, not retried), the 500s and the 429s retried, one pause of
    the Retry-After, and the API's limits never exceeded, by its own log."""
    summary = await example.main_job(JOBS)
    api, watch = summary.api, summary.watch
    assert len(FLAKY) == 11
    assert not set(FLAKY) & example.MISSING
    # Every request answered: 297 completed, the 3 missing items failed at their first 404.
    assert (summary.completed, summary.failed) == (JOBS - 3, 3)
    assert set(api.calls) == set(range(JOBS))
    assert all(api.calls[item] == 1 for item in example.MISSING)
    assert all(api.calls[item] == 2 for item in FLAKY)
    # Retries: one per 500, one per 429; attempts add up.
    shed = api.refused["load shedding"]
    assert watch.retries == {"500": len(FLAKY), "429": shed}
    assert summary.attempts == JOBS + len(FLAKY) + shed
    assert len(api.accepted) == JOBS + len(FLAKY)  # a 429 is refused before it is served
    # The API's limits: never over the rate or the concurrency; the only 429s while it shed load,
    # which paused the pool once, for the Retry-After.
    assert api.refused["over the rate"] == 0
    assert api.refused["over the concurrency"] == 0
    assert 1 <= shed <= 3
    assert watch.pauses == 1
    assert watch.paused == approx(example.SHED_FOR)
    assert rate_violation(api.accepted, example.RATE, 1) is None
    assert summary.most_in_any_second() == example.RATE
    assert api.most_in_flight == example.AT_ONCE
    # Close to the rate outside the pause, and done within ~15 s (13 here, on virtual time).
    assert summary.elapsed < 13.0
    rate_outside = (len(api.accepted) - 1) / (api.accepted[-1] - api.accepted[0] - watch.paused)
    assert rate_outside >= 0.9 * example.RATE

    out, err = capsys.readouterr()
    assert err == ""  # not a terminal: no progress bar
    lines = out.splitlines()
    assert lines[0] == "300 requests to an API that allows 30 requests/s and 10 at once"
    assert lines[1] == "  done        297 completed, 3 failed (404 Not Found: not retried)"
    assert (
        lines[2] == f"  attempts    {summary.attempts}: 11 retries after a 500, {shed} after a 429"
    )
    assert lines[3] == "  pauses      1 (1.5 s, the API's Retry-After)"
    assert re.fullmatch(r"  start rate  [\d.]+/s on average, [\d.]+/s outside pauses", lines[4])
    assert lines[5] == "  busiest     at most 30 in any second (the API's limit: 30/s)"
    assert lines[6] == "  at once     at most 10 (the API's limit: 10)"
    assert lines[7] == (
        f"  API's 429s  {shed}: {shed} while it shed load, 0 over the rate, 0 over the concurrency"
    )
    assert lines[8].startswith("  took        12.")
    assert len(lines) == 9
    # The docs show the summary in a code block: no line wider than its 88 columns.
    assert max(map(len, lines)) <= 88


@pytest.mark.parametrize("backend", BACKENDS)
def test_main_command_line(
    example: ModuleType,
    backend: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``python examples/main_job.py --backend B --jobs N`` runs on B (on virtual time here)."""
    real_run = anyio.run

    def virtual_run(func: Any, *args: Any, backend: str, **kwargs: Any) -> Any:
        options = virtual_backend_options(backend)
        return real_run(func, *args, backend=backend, backend_options=options, **kwargs)

    monkeypatch.setattr(anyio, "run", virtual_run)
    example.main(["--backend", backend, "--jobs", "60"])
    out = capsys.readouterr().out
    assert out.startswith("60 requests to an API that allows 30 requests/s and 10 at once\n")
    assert "  done        59 completed, 1 failed (404 Not Found: not retried)\n" in out
    assert ", 0 over the rate, 0 over the concurrency\n" in out
