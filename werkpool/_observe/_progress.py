"""A live progress bar for a pool's work in a terminal: ``async with werkpool.progress(pool):``.

:class:`ProgressBar` is a hook on the pool: each :class:`~werkpool.Event` only moves a counter
(jobs done, failed, retried, attempts started, pauses), so a pool with 100,000 jobs pays a few
attribute updates per job. A task of its own, in the pool's event loop, draws the bar every
``refresh`` seconds from those counters and the clock: the start rate comes from the last 5
seconds, so it keeps moving while nothing happens (a pause counts down, a stalled rate falls to
0); the time to go from an exponentially weighted finish rate, so that it counts down smoothly
rather than jumping with each job. While the bar is off (not a terminal) it still counts.

Two renderers: rich's (``pip install "werkpool[progress]"``) when it can be imported, and a
plain one that rewrites a single line with ``"\\r"``. Both draw from the loop, with no thread: a
render is one short write to the terminal, and the same code runs on asyncio, on trio and on
the virtual clocks of the tests.
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import shutil
import sys
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol, TextIO, cast, final

import anyio

from .._core._events import FINISHED, PAUSED, RESUMED, RETRYING, STARTED, SUBMITTED

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

    from anyio.abc import TaskGroup
    from rich.console import Console
    from rich.text import Text

    from .._core._events import Event, Hook
    from .._core._statistics import PoolStatistics

__all__ = ["WINDOW", "ObservablePool", "ProgressBar", "progress"]

logger: Final = logging.getLogger("werkpool")

#: The seconds of recent history behind the start rate and the time to go.
WINDOW: Final = 5.0
#: Buckets per :data:`WINDOW`: the recent counts cost O(1) per event and bounded memory.
_SLOTS: Final = 20
#: Characters of the plain renderer's bar, and of rich's.
_BAR_WIDTH: Final = 20
_RICH_BAR_WIDTH: Final = 24
#: The time to go shown counts down with the clock and eases toward the estimate over
#: _ETA_EASE seconds; it rises only for an estimate above it by more than the lag, the larger of
#: _ETA_LAG seconds and _ETA_LAG_FRACTION of the time shown (less is the noise of single jobs).
#: See ProgressBar._time_to_go.
_ETA_EASE: Final = 1.0
_ETA_LAG: Final = WINDOW
_ETA_LAG_FRACTION: Final = 0.2
#: The finish rate behind the time to go averages over at least this many jobs.
_PACE_EVENTS: Final = 20


class ObservablePool(Protocol):
    """What :func:`progress` needs of a pool: hooks and a statistics snapshot
    (:class:`werkpool.WorkerPool` has them).

    .. versionadded:: 0.3
    """

    def add_hook(self, hook: Hook, /) -> None: ...

    def remove_hook(self, hook: Hook, /) -> None: ...

    def statistics(self) -> PoolStatistics: ...


# -- counting --------------------------------------------------------------------------------------


@final
class _Recent:
    """How many events happened in the last :data:`WINDOW` seconds, in fixed time buckets."""

    __slots__ = ("_buckets", "_width")

    def __init__(self) -> None:
        self._width = WINDOW / _SLOTS
        #: [bucket number, events in it], oldest first; only the last _SLOTS buckets are kept.
        self._buckets: deque[list[int]] = deque()

    def add(self, time: float) -> None:
        number = math.floor(time / self._width)
        buckets = self._buckets
        if buckets and buckets[-1][0] == number:
            buckets[-1][1] += 1
            return
        buckets.append([number, 1])
        while buckets[0][0] <= number - _SLOTS:
            buckets.popleft()

    def rate(self, now: float, since: float) -> float:
        """Events per second over the buckets of the last :data:`WINDOW` (not before *since*).

        Over one second at least: the first few starts of a run would otherwise read as a
        spike (two starts in the first 0.1 s are not 20 per second).
        """
        first = math.floor(now / self._width) - _SLOTS + 1
        count = sum(n for number, n in self._buckets if number >= first)
        return count / max(1.0, now - max(since, first * self._width))


@final
class _Pace:
    """The rate of events, exponentially weighted over the last :data:`WINDOW` seconds or the
    last :data:`_PACE_EVENTS` events, whichever is longer, as of the last event.

    A ratio of two decayed sums, the events and the time they took: exact for a steady pace from
    the first event on (one event at 2 s is 0.5 per second, ten at once at 1 s are 10 per
    second), and the noise of single jobs averaged over many, even when jobs are slow.

    Between events the rate is held, not decayed (a rate that fell after each event and rose at
    the next would make the time to go jump), until the next event is overdue: from then on it
    is the rate as if the event came now, which falls smoothly while nothing happens (to 0 in a
    stall) and is the very rate the event brings when it comes.
    """

    __slots__ = ("_count", "_last", "_time")

    def __init__(self, began: float) -> None:
        self._last = began
        self._count = 0.0  # events, each weighted by the decay since
        self._time = 0.0  # the seconds between them (from the beginning), weighted alike

    @property
    def last(self) -> float:
        """The time of the last event (the beginning before any)."""
        return self._last

    @staticmethod
    def _keep(gap: float) -> float:
        """How much of the past an event *gap* seconds after the last keeps: the slower decay
        of the two, a memory of WINDOW seconds and one of _PACE_EVENTS events."""
        return max(math.exp(-gap / WINDOW), 1.0 - 1.0 / _PACE_EVENTS)

    def add(self, time: float) -> None:
        gap = max(0.0, time - self._last)
        keep = self._keep(gap)
        self._count = self._count * keep + 1.0
        self._time = self._time * keep + gap
        self._last = max(self._last, time)

    def rate(self, now: float) -> float:
        """Events per second (0.0 before the first event)."""
        if self._count == 0.0:
            return 0.0
        # Over one second at least, as _Recent: two jobs done in the first 0.1 s are not 20
        # per second.
        rate = self._count / max(1.0, self._time)
        gap = now - self._last
        if gap * rate > 1.0:  # the next event is overdue
            keep = self._keep(gap)
            rate = (self._count * keep + 1.0) / max(1.0, self._time * keep + gap)
        return rate


@final
@dataclass(frozen=True, slots=True)
class _Snapshot:
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


def _clock(seconds: float) -> str:
    """``0:07``, ``12:30``, ``1:02:03``."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


#: The most characters of a failed job's label the summary shows.
_LABEL_SHOWN: Final = 40


def _parts(snap: _Snapshot) -> list[tuple[str, str]]:
    """The bar's text after the bar, as (text, rich style) pieces in display order."""

    def plural(n: int, word: str) -> str:
        return f"{n} {word}" if n == 1 else f"{n} {word}s"

    parts = [(f"{snap.done}/{snap.total}", "bold")]
    failed = f"{snap.failed} failed"
    if snap.final and snap.failed and snap.last_failed is not None:
        # In the summary only: the live bar keeps its width, the last line says where to look.
        label = snap.last_failed
        if len(label) > _LABEL_SHOWN:
            label = label[: _LABEL_SHOWN - 3] + "..."
        failed += f" (last: {label})"
    parts.append((failed, "red" if snap.failed else ""))
    if snap.cancelled:
        parts.append((f"{snap.cancelled} cancelled", "yellow"))
    parts.append((f"{snap.retries} retries" if snap.retries != 1 else "1 retry", ""))
    if snap.pauses:
        parts.append((plural(snap.pauses, "pause"), ""))
    if snap.paused_for > 0 and not snap.final:
        left = snap.paused_for
        if math.isinf(left):
            parts.append(("paused until resumed", "yellow"))
        else:
            parts.append(
                (f"paused {left:.1f} s" if left < 60 else f"paused {_clock(left)}", "yellow")
            )
    if snap.final:
        parts.append((f"{snap.start_rate:.1f} starts/s avg", "cyan"))
        parts.append((f"took {_clock(snap.elapsed)}", ""))
    else:
        parts.append((f"{snap.start_rate:.1f} starts/s", "cyan"))
        if snap.eta is not None:
            parts.append((f"ETA {_clock(snap.eta)}", "green"))
        else:
            parts.append((f"{_clock(snap.elapsed)} elapsed", ""))
    return parts


# -- renderers -------------------------------------------------------------------------------------


class _Renderer(Protocol):
    def show(self, snap: _Snapshot) -> None: ...

    def close(self, snap: _Snapshot) -> None:
        """Draw the final state and stop; whatever fails, undo what the renderer changed."""

    def abandon(self) -> None:
        """Stop at once after a failed draw, undoing what the renderer changed (rich's
        redirection of sys.stdout and sys.stderr); never raises an Exception."""


@final
class _PlainRenderer:
    """One line, rewritten in place with ``"\\r"`` on a terminal; only the last one elsewhere."""

    def __init__(self, stream: TextIO, description: str | None, live: bool) -> None:
        self.stream = stream
        self.prefix = f"{description} " if description else ""
        self.live = live
        self.last = ""

    def line(self, snap: _Snapshot) -> str:
        if snap.total > 0:
            done = min(snap.done, snap.total)
            # Rounded down, in integers: full, and "100%", only when every job is done.
            filled = done * _BAR_WIDTH // snap.total
            percent = done * 100 // snap.total
            bar = f"[{'#' * filled}{'-' * (_BAR_WIDTH - filled)}] {percent:3d}% "
        else:
            bar = ""
        text = self.prefix + bar + ", ".join(text for text, _ in _parts(snap))
        if not self.live:
            return text  # a line in a log or a file: never cut
        # A line that wraps could not be rewritten by "\r": keep it within the terminal.
        return text[: max(1, _columns(self.stream) - 1)]

    def _write(self, line: str, end: str) -> None:
        pad = " " * max(0, len(self.last) - len(line))  # erase what the last line had more
        self.stream.write(f"\r{line}{pad}{end}")
        self.stream.flush()
        self.last = line

    def show(self, snap: _Snapshot) -> None:
        if self.live:
            line = self.line(snap)
            if line != self.last:
                self._write(line, "")

    def close(self, snap: _Snapshot) -> None:
        if self.live:
            self._write(self.line(snap), "\n")
        else:
            self.stream.write(self.line(snap) + "\n")
            self.stream.flush()

    def abandon(self) -> None:
        pass  # it changed nothing but its own line


def _rich_renderer(console: Console, description: str | None, snap: _Snapshot) -> _Renderer:
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
    columns += [BarColumn(bar_width=_RICH_BAR_WIDTH), StatsColumn()]
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

        def show(self, snap: _Snapshot) -> None:
            # total None (no job known yet) draws rich's pulsing bar rather than a full one.
            display.update(self.task, total=snap.total or None, completed=snap.done, snapshot=snap)
            display.refresh()

        def close(self, snap: _Snapshot) -> None:
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


def _rich_parts(snap: _Snapshot) -> Text:
    """The text after rich's bar: the counts, the rate and the time to go, each in its colour."""
    from rich.text import Text

    text = Text()
    for i, (piece, style) in enumerate(_parts(snap)):
        if i:
            text.append(" · ", style="dim")
        text.append(piece, style=style)
    return text


def _rich_log_renderer(console: Console, description: str | None) -> _Renderer:
    """The final state as one line of a console that is no terminal (a log, a file): rich's
    bar and the counts, never wrapped or cut to the console's width (rich's Live would)."""
    from rich.progress_bar import ProgressBar as RichBar
    from rich.text import Text

    @final
    class RichLogRenderer:
        def show(self, snap: _Snapshot) -> None:
            pass  # no one watches a log: only the final state is written

        def close(self, snap: _Snapshot) -> None:
            line = Text(f"{description} " if description else "")
            bar = RichBar(total=snap.total or None, completed=snap.done, width=_RICH_BAR_WIDTH)
            options = console.options.update(width=_RICH_BAR_WIDTH)
            for segment in console.render_lines(bar, options, pad=False)[0]:
                line.append(segment.text, segment.style)
            line.append(" ")
            line.append_text(_rich_parts(snap))
            console.print(line, soft_wrap=True)  # soft_wrap: neither wrapped nor cropped

        def abandon(self) -> None:
            pass  # it changed nothing

    return RichLogRenderer()


def _rich_console_type() -> type[Console] | None:
    """rich's Console class, or None when rich cannot be imported (the plain renderer then)."""
    try:
        from rich.console import Console

        importlib.import_module("rich.progress")  # the renderer's module must be there too
    except ImportError:
        return None
    return Console


def _columns(stream: TextIO) -> int:
    """The width of the terminal *stream* writes to (``COLUMNS`` first, as :mod:`shutil` reads
    it; then the stream's own terminal, which may not be stdout's; else stdout's, or 80)."""
    if "COLUMNS" not in os.environ:
        try:
            return os.get_terminal_size(stream.fileno()).columns
        except (AttributeError, OSError, ValueError):  # no file descriptor, or no terminal
            pass
    return shutil.get_terminal_size().columns


def _isatty(stream: object) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (OSError, ValueError):  # a closed or detached stream
        return False


def _log_failure(error: Exception) -> None:
    logger.error(
        "werkpool progress bar: drawing failed; the bar is off from now on", exc_info=error
    )


# -- the bar ---------------------------------------------------------------------------------------


@final
class ProgressBar:
    """
    A progress bar that follows a pool's jobs while an ``async with`` block runs.

    Made by :func:`progress`, which documents it. Its counters tell what happened since the
    block began, whether the bar is shown or off (not a terminal, or ``force=False``).

    .. versionadded:: 0.3
    """

    def __init__(
        self,
        pool: ObservablePool,
        *,
        total: int | None,
        description: str | None,
        console: Console | TextIO | None,
        refresh: float,
        force: bool | None,
    ) -> None:
        self._pool = pool
        self._given_total = total
        self._description = description
        self._console = console
        self._refresh = refresh
        self._force = force
        #: Whether the bar is shown (decided when the block begins).
        self.enabled = False
        #: Jobs over since the block began: completed, failed or cancelled.
        self.done = 0
        #: Of these, the jobs that failed.
        self.failed = 0
        #: The label of the last job that failed (its ``name=``, or a short repr of its first
        #: argument), shown in the final summary; None: none failed.
        self.last_failed: str | None = None
        #: Of these, the jobs cancelled.
        self.cancelled = 0
        #: Jobs submitted since the block began.
        self.submitted = 0
        #: Attempts started, and attempts that failed and will be retried.
        self.attempts = 0
        self.retries = 0
        #: Pauses of the pool or of a key that began or were extended (pushbacks included).
        self.pauses = 0
        self._in_flight_at_start = 0
        self._paused_until = -math.inf
        self._starts = _Recent()
        self._finishes = _Pace(0.0)
        self._eta: tuple[float | None, float] = (None, 0.0)  # the time to go shown last, when
        self._began = 0.0
        self._renderer: _Renderer | None = None
        self._group: TaskGroup | None = None
        self._entered = False
        self._hooked = False  # the hook was added (removed again by _close)
        # One bound method, so that remove_hook() finds the very hook add_hook() got.
        self._hook: Hook = self._on_event

    def __repr__(self) -> str:
        state = "on" if self.enabled else "off"
        return f"<werkpool.ProgressBar {state} done={self.done}/{self.total}>"

    @property
    def total(self) -> int:
        """The jobs to wait for: ``total=`` if given, else those in flight when the block began
        plus those submitted since."""
        if self._given_total is not None:
            return self._given_total
        return self._in_flight_at_start + self.submitted

    # -- the hook -------------------------------------------------------------------------------

    def _on_event(self, event: Event, /) -> None:
        kind = event.kind
        if kind == FINISHED:
            self.done += 1
            outcome = event.outcome
            if outcome == "failed":
                self.failed += 1
                self.last_failed = event.name
            elif outcome == "cancelled":
                self.cancelled += 1
            self._finishes.add(event.time)
        elif kind == STARTED:
            self.attempts += 1
            self._starts.add(event.time)
        elif kind == SUBMITTED:
            self.submitted += 1
        elif kind == RETRYING:
            self.retries += 1
        elif kind == PAUSED:
            self.pauses += 1
            if event.key is None and event.until is not None:
                self._paused_until = max(self._paused_until, event.until)
        elif kind == RESUMED:
            self._paused_until = -math.inf  # resume() ends every pause

    # -- drawing --------------------------------------------------------------------------------

    def _snapshot(self, final: bool) -> _Snapshot:
        now = anyio.current_time()
        elapsed = now - self._began
        total = self.total
        if final:
            start_rate = self.attempts / elapsed if elapsed > 0 else 0.0
            eta = None
        else:
            start_rate = self._starts.rate(now, self._began)
            eta = self._time_to_go(now, total) if self._given_total is not None else None
        return _Snapshot(
            done=self.done,
            total=total,
            failed=self.failed,
            cancelled=self.cancelled,
            retries=self.retries,
            pauses=self.pauses,
            paused_for=max(0.0, self._paused_until - now),
            start_rate=start_rate,
            eta=eta,
            elapsed=elapsed,
            final=final,
            last_failed=self.last_failed,
        )

    def _time_to_go(self, now: float, total: int) -> float | None:
        """The seconds to go shown now: None until a job finishes, 0.0 once all are done.

        The estimate is what is left over the finish rate (:class:`_Pace`), counted down since
        the last finish. What is shown follows it smoothly. Within the lag of it (the noise of
        single jobs), it counts down with the clock and eases toward the estimate over
        :data:`_ETA_EASE` seconds, without ever rising for it. Further below (a faster pace, or
        the first rough estimates), it falls to the estimate at once; further above (a slower
        pace), it rises toward it, eased in over the lag.
        """
        left = max(0, total - self.done)
        rate = self._finishes.rate(now)
        if left == 0 or rate == 0.0:
            self._eta = (None if left else 0.0, now)
            return self._eta[0]
        # Never below what is left once the next job is done: one job late by a little is noise.
        estimate = max(left / rate - (now - self._finishes.last), (left - 1) / rate)
        shown, then = self._eta
        if shown is not None:
            elapsed = now - then
            lag = max(_ETA_LAG, _ETA_LAG_FRACTION * shown)
            if estimate > shown + lag:
                estimate = shown + min(1.0, elapsed / lag) * (estimate - shown)
            elif estimate >= shown - lag:  # noise: eased, and never a rise
                counted = max(0.0, shown - elapsed)
                eased = counted + min(1.0, elapsed / _ETA_EASE) * (estimate - counted)
                estimate = min(shown, eased)
        self._eta = (estimate, now)
        return estimate

    def _draw(self, final: bool) -> None:
        renderer = self._renderer
        if renderer is None:
            return
        try:
            snap = self._snapshot(final)
            if final:
                self._renderer = None
                renderer.close(snap)
            else:
                renderer.show(snap)
        except Exception as error:
            # The display must never break the work it shows: log once, draw no more. The
            # renderer undoes what it changed first, so that the log goes to the real stderr.
            self._renderer = None
            renderer.abandon()
            _log_failure(error)

    async def _tick(self) -> None:
        while True:
            await anyio.sleep(self._refresh)
            self._draw(final=False)

    def _choose(self) -> Callable[[_Snapshot], _Renderer] | None:
        """How to draw on the console (rich or plain), or None when the bar is off."""
        console = self._console
        description = self._description
        console_type = _rich_console_type()
        if console_type is not None and isinstance(console, console_type):
            rich_console: Console = console
            if not (console.is_terminal if self._force is None else self._force):
                return None
            if not console.is_terminal:  # forced: the final state, as one line of a log
                return lambda first: _rich_log_renderer(rich_console, description)
            return lambda first: _rich_renderer(rich_console, description, first)
        stream = cast("TextIO", sys.stderr if console is None else console)
        terminal = _isatty(stream)
        if not (terminal if self._force is None else self._force):
            return None
        if console_type is not None:
            if not terminal:
                return lambda first: _rich_log_renderer(console_type(file=stream), description)
            return lambda first: _rich_renderer(console_type(file=stream), description, first)
        return lambda first: _PlainRenderer(stream, description, live=terminal)

    async def __aenter__(self) -> ProgressBar:
        if self._entered:
            raise RuntimeError("a ProgressBar can be used in one async with block only")
        self._entered = True
        start_renderer = self._choose()
        statistics = self._pool.statistics()
        self._in_flight_at_start = (
            statistics.submitted - statistics.completed - statistics.failed - statistics.cancelled
        )
        self._began = anyio.current_time()
        self._finishes = _Pace(self._began)
        # The hook even when the bar is off: its counters are useful without a display.
        self._pool.add_hook(self._hook)
        self._hooked = True
        if start_renderer is None:
            return self  # off: no task, no output
        try:
            try:
                self._renderer = start_renderer(self._snapshot(final=False))
            except Exception as error:
                # A terminal that fails at once: as after a later failed draw, the bar is off
                # and counts on; the work goes on.
                _log_failure(error)
                return self
            self.enabled = True
            group = anyio.create_task_group()
            await group.__aenter__()
            self._group = group
            group.start_soon(self._tick, name="werkpool progress bar")
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._hooked:
            await self._close()

    async def _close(self) -> None:
        """Stop the drawing task, remove the hook, draw the final state; each whatever fails."""
        group = self._group
        self._group = None
        try:
            if group is not None:
                # The block's own exception is left out of the task group's exit, so that it
                # propagates as it is (not wrapped in an ExceptionGroup).
                group.cancel_scope.cancel()
                await group.__aexit__(None, None, None)
        finally:
            try:
                self._pool.remove_hook(self._hook)
            except ValueError:
                pass  # the user removed it already
            finally:
                self._draw(final=True)


def progress(
    pool: ObservablePool,
    *,
    total: int | None = None,
    description: str | None = None,
    console: Console | TextIO | None = None,
    refresh: float = 0.1,
    force: bool | None = None,
) -> ProgressBar:
    """
    Show a live progress bar of *pool*'s jobs while an ``async with`` block runs.

    ::

        async with WorkerPool(size=10, rate=20) as pool:
            async with werkpool.progress(pool, total=len(urls), description="fetching"):
                async for page in pool.map(fetch, urls):
                    ...

    The bar shows the jobs done (completed, failed or cancelled) out of the total, the failures,
    the retries, the pauses (pushbacks included; "paused 0:03" while the pool is paused), the
    start rate over the last 5 seconds, and the time to go, from the rate at which jobs finish
    (exponentially weighted, over about the same seconds: it counts down smoothly, and rises for
    a slower pace, not for the noise of single jobs). When the block ends it draws the final
    state (the average start rate and the time it took) and stays on screen; it counts only
    what happens inside the block.

    The bar is a hook on the pool (:meth:`WorkerPool.add_hook`), removed when the block ends,
    however it ends; it is drawn every *refresh* seconds by a task in the pool's event loop (no
    thread; asyncio and trio alike). With rich installed (``pip install "werkpool[progress]"``)
    it is a rich progress display; without, one plain line rewritten with ``"\\r"``.

    It is on only where someone watches: when the output is a terminal. Elsewhere (a pipe, a
    file, a CI log, captured output) it draws nothing (no task, no output), but its counters
    still count. To get the final state as one line in a log, never cut to a width, pass
    ``force=True``.

    :param pool: the pool to follow
    :param total: how many jobs the bar waits for (an int >= 0); None: the jobs in flight when
        the block begins plus those submitted in it (then no time to go is shown)
    :param description: a label before the bar
    :param console: where to draw: a :class:`rich.console.Console`, or a text stream (default
        :data:`sys.stderr`, so that the program's output on stdout stays clean)
    :param refresh: the seconds between two draws (> 0)
    :param force: True: draw even when the output is not a terminal (only the final state is
        written there); False: never draw; None: draw on a terminal only
    :return: an async context manager; ``async with ... as bar`` gives the :class:`ProgressBar`,
        whose counters (``bar.done``, ``bar.failed``, ``bar.retries``, ...) tell what happened
    :raises TypeError: if *total*, *refresh* or *force* has the wrong type
    :raises ValueError: if *total* is negative or *refresh* is not a finite number > 0

    .. versionadded:: 0.3
    """
    given: Any = total
    if given is not None and (isinstance(given, bool) or not isinstance(given, int)):
        raise TypeError(f"total must be None or an int, not {type(given).__name__}")
    if given is not None and given < 0:
        raise ValueError(f"total must be >= 0, got {given!r}")
    every: Any = refresh
    if isinstance(every, bool) or not isinstance(every, (int, float)):
        raise TypeError(f"refresh must be a number of seconds, not {type(every).__name__}")
    if not math.isfinite(every) or every <= 0:
        raise ValueError(f"refresh must be a finite number > 0, got {every!r}")
    flag: Any = force
    if flag is not None and not isinstance(flag, bool):
        raise TypeError(f"force must be None, True or False, not {type(flag).__name__}")
    label: Any = description
    if label is not None and not isinstance(label, str):
        raise TypeError(f"description must be None or a str, not {type(label).__name__}")
    return ProgressBar(
        pool,
        total=total,
        description=description,
        console=console,
        refresh=float(refresh),
        force=force,
    )
