"""The progress bar with rich (``pip install "werkpool[progress]"``): rich's progress display.

rich is imported only here, and only when a bar is drawn (:func:`rich_console_type` says
whether it can be). The display never starts rich's refresh thread: the bar's own task in the
event loop asks for each draw. On a terminal, rich's ``Live`` replaces ``sys.stdout`` and
``sys.stderr`` with proxies that print above the bar; the renderer puts them back whatever
fails. On a console that is no terminal only the final state is printed, as one line.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Final, final

from ._display import parts

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

    from ._display import Renderer, Snapshot

__all__ = ["rich_console_type", "rich_log_renderer", "rich_renderer"]

#: Characters of rich's bar.
RICH_BAR_WIDTH: Final = 24


def rich_renderer(console: Console, description: str | None, snap: Snapshot) -> Renderer:
    """A rich.progress display with the bar and the counts; drawn only when asked (no thread)."""
    from rich.file_proxy import FileProxy
    from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn

    class StatsColumn(ProgressColumn):
        """The counts, the rate and the time to go, each in its colour."""

        def render(self, task: Task) -> Text:
            return _rich_parts(task.fields["snapshot"])

    columns: list[ProgressColumn] = []
    if description:
        columns.append(TextColumn("{task.description}", markup=False))
    columns += [BarColumn(bar_width=RICH_BAR_WIDTH), StatsColumn()]
    # auto_refresh=False: no refresh thread; the ProgressBar's task draws, from the loop.
    display = Progress(*columns, console=console, auto_refresh=False, transient=False)

    @final
    class RichRenderer:
        def __init__(self) -> None:
            self.task = display.add_task(
                description or "", total=snap.total or None, completed=snap.done, snapshot=snap
            )
            # On a terminal, rich's Live replaces sys.stdout and sys.stderr with proxies that
            # print above the bar, until it stops: they are put back here whatever happens.
            self.streams = (sys.stdout, sys.stderr)
            try:
                display.start()
            except BaseException:
                self.abandon()
                raise

        def show(self, snap: Snapshot) -> None:
            # total None (no job known yet) draws rich's pulsing bar rather than a full one.
            display.update(self.task, total=snap.total or None, completed=snap.done, snapshot=snap)
            display.refresh()

        def close(self, snap: Snapshot) -> None:
            try:
                display.update(
                    self.task, total=snap.total or None, completed=snap.done, snapshot=snap
                )
            finally:
                try:
                    display.stop()  # draws the final bar, leaves it on screen, ends its line
                finally:
                    self.restore()

        def abandon(self) -> None:
            try:
                display.stop()  # its final draw fails too on a broken terminal
            except Exception:  # the failure that brought us here is logged
                pass
            finally:
                self.restore()

        def restore(self) -> None:
            """Put back sys.stdout and sys.stderr if rich's proxies are still in their place
            (Live.stop restores them only if it gets that far); a stream the program set
            itself since is left alone."""
            stdout, stderr = self.streams
            if sys.stdout is not stdout and isinstance(sys.stdout, FileProxy):
                sys.stdout = stdout
            if sys.stderr is not stderr and isinstance(sys.stderr, FileProxy):
                sys.stderr = stderr

    return RichRenderer()


def _rich_parts(snap: Snapshot) -> Text:
    """The text after rich's bar: the counts, the rate and the time to go, each in its colour."""
    from rich.text import Text

    text = Text()
    for i, (piece, style) in enumerate(parts(snap)):
        if i:
            text.append(" · ", style="dim")
        text.append(piece, style=style)
    return text


def rich_log_renderer(console: Console, description: str | None) -> Renderer:
    """The final state as one line of a console that is no terminal (a log, a file): rich's
    bar and the counts, never wrapped or cut to the console's width (rich's Live would)."""
    from rich.progress_bar import ProgressBar as RichBar
    from rich.text import Text

    @final
    class RichLogRenderer:
        def show(self, snap: Snapshot) -> None:
            pass  # no one watches a log: only the final state is written

        def close(self, snap: Snapshot) -> None:
            line = Text(f"{description} " if description else "")
            bar = RichBar(total=snap.total or None, completed=snap.done, width=RICH_BAR_WIDTH)
            options = console.options.update(width=RICH_BAR_WIDTH)
            for segment in console.render_lines(bar, options, pad=False)[0]:
                line.append(segment.text, segment.style)
            line.append(" ")
            line.append_text(_rich_parts(snap))
            console.print(line, soft_wrap=True)  # soft_wrap: neither wrapped nor cropped

        def abandon(self) -> None:
            pass  # it changed nothing

    return RichLogRenderer()


def rich_console_type() -> type[Console] | None:
    """rich's Console class, or None when rich cannot be imported (the plain renderer then)."""
    try:
        from rich.console import Console

        importlib.import_module("rich.progress")  # the renderer's module must be there too
    except ImportError:
        return None
    return Console
