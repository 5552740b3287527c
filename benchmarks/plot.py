"""Scenario 5, the picture: job starts on the jobs' own clock at one target rate, beside the ideal.

Drawn from the rate scenario's first repeat on asyncio (or from a run of its own when the rate
scenario is not selected). Every time is ``anyio.current_time()`` read on the job's first line:

* top: each job's start, in seconds after the jobs were handed over, against its index, with the
  ideal line ``k / rate``;
* middle: how far each start is from that line, in ms (symmetric log scale: early is negative);
* bottom: the distribution of the gaps between consecutive starts (the share of gaps at most x
  ms long), with ``1 / rate`` marked: at burst 1 every gap should lie right of that line; the
  legend gives each series' shortest gap and its share of gaps shorter than ``1 / rate``.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from .common import RateRun

#: (implementation key in rate.CONTENDERS, legend label, colour)
SERIES = (
    ("werkpool", "werkpool WorkerPool(rate=r)", "tab:blue"),
    ("werkpool_b2", "werkpool WorkerPool(rate=r, burst=2)", "tab:purple"),
    ("aiometer", "aiometer run_on_each(max_per_second=r)", "tab:orange"),
    ("aiolimiter", "aiolimiter AsyncLimiter(1, 1/r)", "tab:green"),
    ("aiolimiter_1s", "aiolimiter AsyncLimiter(r, 1)", "tab:red"),
)
#: Gaps are drawn on a log scale; a zero gap (two starts at one clock reading) sits here.
FLOOR_MS = 1e-4


def draw(runs: dict[str, RateRun], rate: float, path: Path, backend: str) -> None:
    """Write the PNG to *path*; *runs* maps an implementation key to one of its runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(9, 10.5))
    grid = fig.add_gridspec(3, 1, height_ratios=(3, 2, 2.4), hspace=0.32)
    top = fig.add_subplot(grid[0])
    middle = fig.add_subplot(grid[1], sharex=top)
    bottom = fig.add_subplot(grid[2])
    slot_ms = 1e3 / rate
    longest = 0
    for key, label, colour in SERIES:
        run = runs.get(key)
        if run is None:
            continue
        starts = [t - run.t_submit for t in sorted(run.starts)]
        index = range(len(starts))
        longest = max(longest, len(starts))
        layer = 3 if key.startswith("werkpool") else 2
        top.plot(index, starts, color=colour, linewidth=1.6, label=label, zorder=layer)
        behind = [(t - k / rate) * 1e3 for k, t in zip(index, starts, strict=True)]
        middle.plot(index, behind, color=colour, linewidth=1.0, zorder=layer)
        gaps = sorted((b - a) * 1e3 for a, b in itertools.pairwise(starts))
        if not gaps:
            continue
        # Within the clocks' resolution (1 ns) of 1/rate is not shorter: k / rate rounds.
        short = sum(g < slot_ms - 1e-6 for g in gaps) / len(gaps)
        share = [(k + 1) / len(gaps) for k in range(len(gaps))]
        bottom.step(
            [max(g, FLOOR_MS) for g in gaps],
            share,
            where="post",
            color=colour,
            linewidth=1.4,
            zorder=layer,
            label=f"{label}: shortest {gaps[0]:.3f} ms, {short * 100:.1f} % < 1/r",
        )
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
    middle.axhline(0.0, color="black", linestyle="--", linewidth=1.0)
    top.set_ylabel("start time after hand-over (s)")
    top.set_title(
        f"Job starts on the jobs' own clock at {rate:,g} starts/s ({backend}, one run each)"
    )
    top.legend(loc="upper left", fontsize=8)
    top.grid(alpha=0.3)
    top.tick_params(labelbottom=False)
    middle.set_yscale("symlog", linthresh=1.0)
    middle.set_ylabel("start - ideal (ms, symlog)")
    middle.set_xlabel("job index")
    middle.grid(alpha=0.3)
    bottom.axvline(slot_ms, color="black", linestyle="--", linewidth=1.0)
    bottom.annotate(
        f"1 / r = {slot_ms:g} ms",
        (slot_ms, 0.04),
        textcoords="offset points",
        xytext=(4, 0),
        fontsize=8,
    )
    bottom.set_xscale("log")
    bottom.set_xlabel(f"gap between consecutive starts (ms, log; 0 drawn at {FLOOR_MS:g})")
    bottom.set_ylabel("share of gaps <= x")
    # Below the panel: inside it the legend would hide the curves of the shortest gaps.
    bottom.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=7)
    bottom.grid(alpha=0.3, which="both")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
