"""A hook that writes a pool's events to a stdlib :mod:`logging` logger (``werkpool`` by default).

Retries are warnings, jobs that failed for good are errors with their traceback, the rest is
debug. Each record carries the :class:`~werkpool._core._events.JobEvent` and its fields in ``extra``
(``record.werkpool_event``, ``record.werkpool_kind``, ...), for structured handlers.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final, final

from .._core._events import FINISHED, PAUSED, RESUMED, RETRYING, STARTED, SUBMITTED

if TYPE_CHECKING:
    from .._core._events import JobEvent

__all__ = ["LoggingHook"]

_INF: Final = float("inf")


def _check_level(level: object, name: str) -> int | None:
    # bool is an int, but ``failed_level=False`` is a mistake, not level 0 (NOTSET).
    if level is None or (isinstance(level, int) and not isinstance(level, bool)):
        return level
    raise TypeError(f"{name} must be a logging level (an int) or None, not {type(level).__name__}")


def _check_logger(logger: object) -> logging.Logger:
    # Checked at run time too: untyped callers pass anything (a LoggerAdapter would replace
    # the records' ``extra`` with its own before Python 3.13, so it is not accepted).
    if isinstance(logger, logging.Logger):
        return logger
    raise TypeError(f"logger must be a logging.Logger, not {type(logger).__name__}")


@final
class LoggingHook:
    """
    A hook that logs each event of a pool to a stdlib :mod:`logging` logger.

    - ``"retrying"``: at *retry_level*, with the attempt, how long it ran, the error's repr and
      the delay before the next attempt (no traceback: the job goes on);
    - ``"finished"`` with ``"failed"``: at *failed_level*, with the error and its traceback;
    - everything else (submitted, started, completed, cancelled, paused, resumed): at *level*.

    A job's message names it by its number and its label (``name=``, or a short repr of its
    first argument), with its key if it has one: ``job 4 ('https://example.com/a')``, so a
    line maps back to its input.

    Each record's ``extra`` holds the event as ``werkpool_event`` and its fields flat, for
    structured handlers: ``werkpool_kind``, ``werkpool_job``, ``werkpool_name``, ``werkpool_key``,
    ``werkpool_attempt``, ``werkpool_outcome``, ``werkpool_error``, ``werkpool_delay``,
    ``werkpool_waited``, ``werkpool_duration``, ``werkpool_elapsed``, ``werkpool_until``,
    ``werkpool_queued``, ``werkpool_running`` and ``werkpool_time``.

    The hook adds no handler and sets no level: where its records go is the application's
    logging configuration. A level the logger does not enable costs one cached
    :meth:`~logging.Logger.isEnabledFor` test per event and builds nothing. (With no logging
    configured at all, Python's last-resort handler prints warnings and errors to stderr, as it
    does for any library.)

    :param logger: the logger to write to (default: ``logging.getLogger("werkpool")``)
    :param retry_level: the level of a retry (None: retries are not logged)
    :param failed_level: the level of a job that failed for good (None: not logged)
    :param level: the level of every other event (None: not logged)

    .. versionadded:: 0.3
    """

    __slots__ = ("_failed_level", "_level", "_retry_level", "logger")

    def __init__(
        self,
        logger: logging.Logger | None = None,
        *,
        retry_level: int | None = logging.WARNING,
        failed_level: int | None = logging.ERROR,
        level: int | None = logging.DEBUG,
    ) -> None:
        #: Where the records go.
        self.logger = logging.getLogger("werkpool") if logger is None else _check_logger(logger)
        self._retry_level = _check_level(retry_level, "retry_level")
        self._failed_level = _check_level(failed_level, "failed_level")
        self._level = _check_level(level, "level")

    def __repr__(self) -> str:
        names = [
            None if level is None else logging.getLevelName(level)
            for level in (self._retry_level, self._failed_level, self._level)
        ]
        return (
            f"LoggingHook({self.logger.name!r}, retry_level={names[0]}, "
            f"failed_level={names[1]}, level={names[2]})"
        )

    def __call__(self, event: JobEvent, /) -> None:
        """Log *event* at its level, if the logger enables that level."""
        kind = event.kind
        if kind == RETRYING:
            level = self._retry_level
        elif kind == FINISHED and event.outcome == "failed":
            level = self._failed_level
        else:
            level = self._level
        if level is None or not self.logger.isEnabledFor(level):
            return
        message, args = _message(event)
        error = event.error
        self.logger.log(
            level,
            message,
            *args,
            # The traceback only where the job is over: a retry's error is in the message.
            exc_info=error if kind == FINISHED and error is not None else None,
            extra={
                "werkpool_event": event,
                "werkpool_kind": kind,
                "werkpool_time": event.time,
                "werkpool_job": event.job,
                "werkpool_name": event.name,
                "werkpool_key": event.key,
                "werkpool_attempt": event.attempt,
                "werkpool_outcome": event.outcome,
                "werkpool_error": error,
                "werkpool_delay": event.delay,
                "werkpool_waited": event.waited,
                "werkpool_duration": event.duration,
                "werkpool_elapsed": event.elapsed,
                "werkpool_until": event.until,
                "werkpool_queued": event.queued,
                "werkpool_running": event.running,
            },
        )


def _message(event: JobEvent) -> tuple[str, tuple[object, ...]]:
    """A %-style template and its arguments (a template per kind, so log tools can group)."""
    kind = event.kind
    if kind in (PAUSED, RESUMED):
        who = "the pool" if event.key is None else f"key {event.key!r}"
        if kind == RESUMED:
            return "%s resumed", (who,)
        until = _INF if event.until is None else event.until
        if until == _INF:
            return "%s paused until resume()", (who,)
        return "%s paused for %.3f s", (who, max(0.0, until - event.time))
    # The label maps the line back to the input: "job 4 ('https://...')", not "job 4" alone.
    about = [] if event.name is None else [event.name]
    if event.key is not None:
        about.append(f"key {event.key!r}")
    job = f"job {event.job} ({', '.join(about)})" if about else f"job {event.job}"
    if kind == SUBMITTED:
        return "%s submitted (%d queued)", (job, event.queued)
    if kind == STARTED:
        if event.waited is None:  # the hook came after the job was submitted
            return "%s attempt %d started", (job, event.attempt)
        return "%s attempt %d started after waiting %.3f s", (job, event.attempt, event.waited)
    if kind == RETRYING:
        return "%s attempt %d failed after %.3f s: %r; retrying in %.3f s", (
            job,
            event.attempt,
            event.duration or 0.0,
            event.error,
            event.delay or 0.0,
        )
    # FINISHED
    outcome = event.outcome
    where = "before its first attempt" if event.attempt == 0 else f"on attempt {event.attempt}"
    template = "%s %s %s" if event.elapsed is None else "%s %s %s, %.3f s after it was submitted"
    args: tuple[object, ...] = (job, outcome, where)
    if event.elapsed is not None:
        args = (*args, event.elapsed)
    if outcome == "failed":
        return template + ": %r", (*args, event.error)
    return template, args
