"""examples/api_limits.py: a fake LLM API with request and token limits, on both backends.

The example runs unscaled (an API minute is a minute) on virtual time, so its output is exact.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from support import BACKENDS, import_example

if TYPE_CHECKING:
    from collections.abc import Iterable
    from types import ModuleType

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "api_limits.py"

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def example() -> ModuleType:
    """The example, imported as a module (its ``main()`` does not run)."""
    return import_example(EXAMPLE)


def max_overdraft(log: Iterable[tuple[float, float]], capacity: float, per: float) -> float:
    """How far the accepted units exceed a bucket of *capacity* refilled over *per* seconds.

    A log conforms to the bucket iff every stretch ``[t_i, t_j]`` holds at most
    ``capacity + (t_j - t_i) * capacity / per`` units. With prefix sums ``S`` this is
    ``S_j - S_(i-1) - r * (t_j - t_i) <= capacity``, so one pass that keeps the largest
    ``r * t_i - S_(i-1)`` finds the worst stretch. Returns the worst excess (<= 0: conforms).
    """
    refill = capacity / per
    total = 0.0
    best_start = -float("inf")
    worst = -float("inf")
    for at, units in log:
        best_start = max(best_start, refill * at - total)
        total += units
        worst = max(worst, total - refill * at + best_start - capacity)
    return worst


def check_runs(runs: list[tuple[Any, Any]], jobs: int) -> None:
    """The properties the example claims, and the server's limits, checked from its own log."""
    (matching, matching_api), (strict, strict_api) = runs
    # Limits as the server's: not a single pushback, and within 2 % of the fastest possible.
    assert matching.pushbacks == 0
    assert matching.finished == jobs
    assert matching.failed == 0
    assert matching.elapsed <= 1.02 * matching.bound
    # A stricter server: pushed back, yet every job finishes, each accepted exactly once.
    assert strict.pushbacks >= 1
    assert strict.finished == jobs
    assert strict.failed == 0
    assert strict.lowest_tokens_per_min < 90_000  # the adaptive rate came down
    # The targets for a server 20 % stricter: at most 20 refusals per 400 requests,
    # within 1.05x the bound.
    assert strict.pushbacks <= 20 * jobs / 400
    assert strict.elapsed <= 1.05 * strict.bound
    for api in (matching_api, strict_api):
        assert len(api.accepted) == jobs
        assert api.refused == (0 if api is matching_api else strict.pushbacks)
        # Never over the server's limits, as continuously refilling buckets.
        requests = [(at, 1.0) for at, _ in api.accepted]
        assert max_overdraft(requests, api.requests_per_min, api.minute) <= 1e-6
        assert max_overdraft(api.accepted, api.tokens_per_min, api.minute) <= 1e-6


async def test_api_limits_example(
    example: ModuleType, capsys: pytest.CaptureFixture[str], anyio_backend: Any
) -> None:
    """Matching limits: no pushback; a stricter server: pushbacks, pause, slower rate, all done."""
    runs = await example.demo(scale=1.0)
    check_runs(runs, example.JOBS)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (
        "800 requests, 245,330 tokens; the client allows 500 requests/min and 90,000 tokens/min"
    )
    assert out[1] == "server as advertised: 800/800 jobs finished, 0 failed, 0 pushbacks"
    assert out[2].startswith("  103.6 s (1.00x the bound of 103.6 s); ")
    assert out[4].startswith("server 20 % stricter: 800/800 jobs finished, 0 failed, ")
    assert len(out) == 7
    # The docs show this output in a code block: no line wider than its 88 columns.
    assert max(map(len, out)) <= 88


@pytest.mark.parametrize("backend", BACKENDS)
def test_api_limits_main(
    example: ModuleType,
    backend: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``python examples/api_limits.py --backend B --scale N`` runs on B; time scaling changes
    nothing in what it prints (in API time), here on a virtual clock."""
    real_run = anyio.run

    def virtual_run(func: Any, *args: Any, backend: str, **kwargs: Any) -> Any:
        if backend == "trio":
            import trio.testing

            options: dict[str, Any] = {"clock": trio.testing.MockClock(autojump_threshold=0)}
        else:
            import looptime

            options = {"loop_factory": lambda: looptime.new_event_loop(resolution=1e-9)}
        return real_run(func, *args, backend=backend, backend_options=options, **kwargs)

    monkeypatch.setattr(anyio, "run", virtual_run)
    example.main(["--backend", backend])
    scaled = capsys.readouterr().out
    example.main(["--backend", backend, "--scale", "1"])
    unscaled = capsys.readouterr().out
    assert scaled.splitlines()[:4] == unscaled.splitlines()[:4]
    assert "800/800 jobs finished, 0 failed, 0 pushbacks" in scaled
