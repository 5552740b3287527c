"""The progress bar without rich: one plain line, rewritten in place with ``"\\r"``.

On a terminal the line is redrawn only when its text changes, padded to erase the last one and
cut to the terminal's width (a line that wraps could not be rewritten). Elsewhere (a log, a
file, with ``force=True``) only the final state is written, as one whole line.
"""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING, Final, TextIO, final

from ._display import parts

if TYPE_CHECKING:
    from ._display import Snapshot

__all__ = ["BAR_WIDTH", "PlainRenderer"]

#: Characters of the bar.
BAR_WIDTH: Final = 20


@final
class PlainRenderer:
    """One line, rewritten in place with ``"\\r"`` on a terminal; only the last one elsewhere."""

    def __init__(self, stream: TextIO, description: str | None, live: bool) -> None:
        self.stream = stream
        self.prefix = f"{description} " if description else ""
        self.live = live
        self.last = ""

    def line(self, snap: Snapshot) -> str:
        """The line that shows *snap*: the label, the bar and its percentage, the counts."""
        if snap.total > 0:
            done = min(snap.done, snap.total)
            # Rounded down, in integers: full, and "100%", only when every job is done.
            filled = done * BAR_WIDTH // snap.total
            percent = done * 100 // snap.total
            bar = f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {percent:3d}% "
        else:
            bar = ""
        text = self.prefix + bar + ", ".join(text for text, _ in parts(snap))
        if not self.live:
            return text  # a line in a log or a file: never cut
        # A line that wraps could not be rewritten by "\r": keep it within the terminal.
        return text[: max(1, _columns(self.stream) - 1)]

    def _write(self, line: str, end: str) -> None:
        pad = " " * max(0, len(self.last) - len(line))  # erase what the last line had more
        self.stream.write(f"\r{line}{pad}{end}")
        self.stream.flush()
        self.last = line

    def show(self, snap: Snapshot) -> None:
        """Rewrite the line, on a terminal, if its text changed."""
        if self.live:
            line = self.line(snap)
            if line != self.last:
                self._write(line, "")

    def close(self, snap: Snapshot) -> None:
        """Write the final line and end it."""
        if self.live:
            self._write(self.line(snap), "\n")
        else:
            self.stream.write(self.line(snap) + "\n")
            self.stream.flush()

    def abandon(self) -> None:
        """Nothing to undo: it changed nothing but its own line."""


def _columns(stream: TextIO) -> int:
    """The width of the terminal *stream* writes to (``COLUMNS`` first, as :mod:`shutil` reads
    it; then the stream's own terminal, which may not be stdout's; else stdout's, or 80)."""
    if "COLUMNS" not in os.environ:
        try:
            return os.get_terminal_size(stream.fileno()).columns
        except (AttributeError, OSError, ValueError):  # no file descriptor, or no terminal
            pass
    return shutil.get_terminal_size().columns
