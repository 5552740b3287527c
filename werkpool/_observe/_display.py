"""What one draw of the progress bar shows, and what a renderer does with it.

The bar hands a frozen :class:`Snapshot` of its counters to a :class:`Renderer` (rich's or the
plain line); :func:`parts` turns it into the text after the bar, as (text, rich style) pieces,
so that both renderers say the same words and only their looks differ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Protocol, final

__all__ = ["Renderer", "Snapshot", "clock", "parts"]

#: The most characters of a failed job's label the summary shows.
LABEL_SHOWN: Final = 40


@final
@dataclass(frozen=True, slots=True)
class Snapshot:
    """What one render shows."""

    done: int
    total: int  # 0 when no job is known yet
    failed: int
    cancelled: int
    retries: int
    pauses: int
    paused_for: float  # seconds left of the pool's pause (0: not paused; inf: until resume())
    start_rate: float  # recent starts per second; the average over the run when final
    eta: float | None  # seconds to go (None: unknown, or no total given)
    elapsed: float
    final: bool
    last_failed: str | None = None  # the label of the last job that failed


class Renderer(Protocol):
    """What the bar needs of a display: draw a snapshot, draw the last one, or give up."""

    def show(self, snap: Snapshot) -> None:
        """Draw *snap* (a renderer may skip a draw that would change nothing)."""

    def close(self, snap: Snapshot) -> None:
        """Draw the final state and stop; whatever fails, undo what the renderer changed."""

    def abandon(self) -> None:
        """Stop at once after a failed draw, undoing what the renderer changed (rich's
        redirection of sys.stdout and sys.stderr); never raises an Exception."""


def clock(seconds: float) -> str:
    """``0:07``, ``12:30``, ``1:02:03``."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def parts(snap: Snapshot) -> list[tuple[str, str]]:
    """The bar's text after the bar, as (text, rich style) pieces in display order."""

    def plural(n: int, word: str) -> str:
        return f"{n} {word}" if n == 1 else f"{n} {word}s"

    pieces = [(f"{snap.done}/{snap.total}", "bold")]
    failed = f"{snap.failed} failed"
    if snap.final and snap.failed and snap.last_failed is not None:
        # In the summary only: the live bar keeps its width, the last line says where to look.
        label = snap.last_failed
        if len(label) > LABEL_SHOWN:
            label = label[: LABEL_SHOWN - 3] + "..."
        failed += f" (last: {label})"
    pieces.append((failed, "red" if snap.failed else ""))
    if snap.cancelled:
        pieces.append((f"{snap.cancelled} cancelled", "yellow"))
    pieces.append((f"{snap.retries} retries" if snap.retries != 1 else "1 retry", ""))
    if snap.pauses:
        pieces.append((plural(snap.pauses, "pause"), ""))
    if snap.paused_for > 0 and not snap.final:
        left = snap.paused_for
        if math.isinf(left):
            pieces.append(("paused until resumed", "yellow"))
        else:
            pieces.append(
                (f"paused {left:.1f} s" if left < 60 else f"paused {clock(left)}", "yellow")
            )
    if snap.final:
        pieces.append((f"{snap.start_rate:.1f} starts/s avg", "cyan"))
        pieces.append((f"took {clock(snap.elapsed)}", ""))
    else:
        pieces.append((f"{snap.start_rate:.1f} starts/s", "cyan"))
        if snap.eta is not None:
            pieces.append((f"ETA {clock(snap.eta)}", "green"))
        else:
            pieces.append((f"{clock(snap.elapsed)} elapsed", ""))
    return pieces
