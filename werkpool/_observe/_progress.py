"""A live progress bar for a pool's work in a terminal: ``async with werkpool.progress(pool):``.

:class:`ProgressBar` is a hook on the pool: each :class:`~werkpool.JobEvent` only moves a counter
(jobs done, failed, retried, attempts started, pauses), so a pool with 100,000 jobs pays a few
attribute updates per job. A task of its own, in the pool's event loop, draws the bar every
``refresh`` seconds from those counters and the clock: the start rate comes from the last 5
seconds, so it keeps moving while nothing happens (a pause counts down, a stalled rate falls to
0); the time to go from an exponentially weighted finish rate (``_rates``), so that it
counts down smoothly rather than jumping with each job. While the bar is off (not a terminal)
it still counts.

This module is the bar itself: the hook, the drawing task, the time to go, and the choice of a
renderer. Two renderers draw the ``Snapshot`` (``_display``) it hands them: rich's
(``_rich_renderer``, ``pip install "werkpool[progress]"``) when it can be imported, and a
plain one that rewrites a single line with ``"\\r"`` (``_plain_renderer``). Both draw from
the loop, with no thread: a render is one short write to the terminal, and the same code runs
on asyncio, on trio and on the virtual clocks of the tests.
"""

from __future__ import annotations

import logging
import math
import sys
from typing import TYPE_CHECKING, Any, Final, Protocol, TextIO, cast, final

import anyio

from .._core._events import FINISHED, PAUSED, RESUMED, RETRYING, STARTED, SUBMITTED
from ._display import Snapshot
from ._plain_renderer import PlainRenderer
from ._rates import WINDOW, Pace, Recent
from ._rich_renderer import rich_console_type, rich_log_renderer, rich_renderer

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

    from anyio.abc import TaskGroup
    from rich.console import Console

    from .._core._events import Hook, JobEvent
    from .._core._statistics import PoolStatistics
    from ._display import Renderer

__all__ = ["ObservablePool", "ProgressBar", "progress"]

logger: Final = logging.getLogger("werkpool")

#: The time to go shown counts down with the clock and eases toward the estimate over
#: _ETA_EASE seconds; it rises only for an estimate above it by more than the lag, the larger of
#: _ETA_LAG seconds and _ETA_LAG_FRACTION of the time shown (less is the noise of single jobs).
#: See ProgressBar._time_to_go.
_ETA_EASE: Final = 1.0
_ETA_LAG: Final = WINDOW
_ETA_LAG_FRACTION: Final = 0.2


class ObservablePool(Protocol):
    """What :func:`progress` needs of a pool: hooks and a statistics snapshot
    (:class:`werkpool.WorkerPool` has them).

    .. versionadded:: 0.3
    """

    def add_hook(self, hook: Hook, /) -> None: ...

    def remove_hook(self, hook: Hook, /) -> None: ...

    def statistics(self) -> PoolStatistics: ...


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
        self._starts = Recent()
        self._finishes = Pace(0.0)
        self._eta: tuple[float | None, float] = (None, 0.0)  # the time to go shown last, when
        self._began = 0.0
        self._renderer: Renderer | None = None
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

    def _on_event(self, event: JobEvent, /) -> None:
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

    def _snapshot(self, final: bool) -> Snapshot:
        now = anyio.current_time()
        elapsed = now - self._began
        total = self.total
        if final:
            start_rate = self.attempts / elapsed if elapsed > 0 else 0.0
            eta = None
        else:
            start_rate = self._starts.rate(now, self._began)
            eta = self._time_to_go(now, total) if self._given_total is not None else None
        return Snapshot(
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

        The estimate is what is left over the finish rate (``_rates.Pace``), counted down since
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

    def _choose(self) -> Callable[[Snapshot], Renderer] | None:
        """How to draw on the console (rich or plain), or None when the bar is off."""
        console = self._console
        description = self._description
        console_type = rich_console_type()
        if console_type is not None and isinstance(console, console_type):
            rich_console: Console = console
            if not (console.is_terminal if self._force is None else self._force):
                return None
            if not console.is_terminal:  # forced: the final state, as one line of a log
                return lambda first: rich_log_renderer(rich_console, description)
            return lambda first: rich_renderer(rich_console, description, first)
        stream = cast("TextIO", sys.stderr if console is None else console)
        terminal = _isatty(stream)
        if not (terminal if self._force is None else self._force):
            return None
        if console_type is not None:
            if not terminal:
                return lambda first: rich_log_renderer(console_type(file=stream), description)
            return lambda first: rich_renderer(console_type(file=stream), description, first)
        return lambda first: PlainRenderer(stream, description, live=terminal)

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
        self._finishes = Pace(self._began)
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
