"""Scenario 5, the picture: start time against job index at one target rate, beside the ideal.

Drawn from the rate scenario's first repeat on asyncio (or from a run of its own when the rate
scenario is not selected): the upper panel is each job's start, in seconds after the jobs were
handed over, against its index, with the ideal line ``k / rate``; the lower panel is how far each
start is from that line, in ms (symmetric log scale: early starts are negative).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from .common import RateRun

#: (implementation key in rate.CONTENDERS, legend label, colour)
SERIES = (
    ("werkpool", "werkpool WorkerPool(rate=r)", "tab:blue"),
    ("aiometer", "aiometer run_on_each(max_per_second=r)", "tab:orange"),
    ("aiolimiter", "aiolimiter AsyncLimiter(1, 1/r)", "tab:green"),
    ("aiolimiter_1s", "aiolimiter AsyncLimiter(r, 1)", "tab:red"),
)


def draw(runs: dict[str, RateRun], rate: float, path: Path, backend: str) -> None:
    """Write the PNG to *path*; *runs* maps an implementation key to one of its runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(9, 7.5), sharex=True, gridspec_kw={"height_ratios": (3, 2)}
    )
    longest = 0
    for key, label, colour in SERIES:
        run = runs.get(key)
        if run is None:
            continue
        starts = [t - run.t_submit for t in sorted(run.starts)]
        index = range(len(starts))
        longest = max(longest, len(starts))
        layer = 3 if key == "werkpool" else 2
        top.plot(index, starts, color=colour, linewidth=1.6, label=label, zorder=layer)
        behind = [(t - k / rate) * 1e3 for k, t in zip(index, starts, strict=True)]
        bottom.plot(index, behind, color=colour, linewidth=1.0, zorder=layer)
    ideal_x = [0, max(longest - 1, 1)]
    top.plot(
        ideal_x,
        [x / rate for x in ideal_x],
        color="black",
        linestyle=":",
        linewidth=1.2,
        zorder=4,
        label=f"ideal: job k starts at k / {rate:,g} s",
    )
    bottom.axhline(0.0, color="black", linestyle="--", linewidth=1.0)
    top.set_ylabel("start time after hand-over (s)")
    top.set_title(f"Start time against job index at {rate:,g} starts/s, burst 1 ({backend})")
    top.legend(loc="upper left", fontsize=9)
    top.grid(alpha=0.3)
    bottom.set_yscale("symlog", linthresh=1.0)
    bottom.set_ylabel("start - ideal (ms, symlog)")
    bottom.set_xlabel("job index")
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
