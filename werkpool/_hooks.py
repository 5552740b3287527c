"""A pool's hooks: the scheduler's :class:`~werkpool._scheduler.EventSink` when it has any.

:class:`Hooks` turns each transition the scheduler reports into a frozen
:class:`~werkpool._events.Event` (times, durations, the admission latency) and hands it to every
hook in turn. A hook that raises is logged once, with its traceback, on the ``werkpool`` logger,
and is called again at the next event (it is the hook's to fix, not the pool's to drop).

A pool without hooks has no :class:`Hooks` at all: the scheduler's sink is None and each
transition costs one attribute test.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final, final

from ._events import FINISHED, RETRYING, STARTED, SUBMITTED, Event

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable

    from ._events import EventKind, Hook, Outcome
    from ._job import Job
    from ._scheduler import Scheduler

__all__ = ["Hooks", "check_hook"]

logger: Final = logging.getLogger("werkpool")

_NAN: Final = float("nan")


def check_hook(hook: object, where: str) -> None:
    """Reject what cannot be a hook, at the call that passed it."""
    if not callable(hook):
        raise TypeError(
            f"{where}: a hook must be a callable taking a werkpool.Event, not {type(hook).__name__}"
        )


@final
class Hooks:
    """Builds the events of one pool and calls its hooks.

    :param hooks: the hooks, called in this order
    :param clock: the pool's clock (:func:`anyio.current_time` of its loop)
    """

    __slots__ = ("_broken", "_times", "clock", "hooks", "sched")

    def __init__(self, hooks: tuple[Hook, ...], clock: Callable[[], float]) -> None:
        self.hooks = hooks
        self.clock = clock
        #: Set by the pool once its scheduler exists: the counts each event carries.
        self.sched: Scheduler | None = None
        #: Per job in flight (by its number): [submitted at, ready since, attempt started at].
        self._times: dict[int, list[float]] = {}
        #: The hooks that raised already (logged once each).
        self._broken: set[int] = set()

    def emit(self, event: Event) -> None:
        """Hand *event* to every hook; a hook's exception is logged once and goes no further."""
        for hook in self.hooks:
            try:
                hook(event)
            except Exception:
                if id(hook) not in self._broken:
                    self._broken.add(id(hook))
                    logger.exception(
                        "werkpool hook %r raised on a %r event; the pool goes on (this hook's "
                        "later errors are not logged)",
                        hook,
                        event.kind,
                    )

    # -- EventSink --------------------------------------------------------------------------------

    def job_event(
        self,
        kind: EventKind,
        job: Job,
        outcome: Outcome | None = None,
        *,
        error: BaseException | None = None,
        delay: float | None = None,
    ) -> None:
        now = self.clock()
        seq = job.seq
        times = self._times
        waited = duration = elapsed = None
        if kind == SUBMITTED:
            times[seq] = [now, now, _NAN]
        elif kind == STARTED:
            mark = times.get(seq)
            if mark is not None:
                waited = max(0.0, now - mark[1])
                mark[2] = now
        elif kind == RETRYING:
            mark = times.get(seq)
            if mark is not None:
                duration = now - mark[2]
                mark[1] = now + (delay or 0.0)  # ready again once its backoff is over
                mark[2] = _NAN  # no attempt runs
        elif kind == FINISHED:
            mark = times.pop(seq, None)
            if mark is not None:
                elapsed = now - mark[0]
                if mark[2] == mark[2]:  # an attempt ran until now (NaN: none ran)
                    duration = now - mark[2]
        lane = job.lane
        sched = self.sched
        self.emit(
            Event(
                kind,
                now,
                seq,
                None if lane is None else lane.key,
                job.attempts,
                outcome,
                error,
                delay,
                waited,
                duration,
                elapsed,
                None,
                0 if sched is None else sched.queued,
                0 if sched is None else sched.running,
            )
        )

    def pause_event(self, kind: EventKind, key: Hashable, until: float | None) -> None:
        sched = self.sched
        self.emit(
            Event(
                kind,
                self.clock(),
                None,
                key,
                until=until,
                queued=0 if sched is None else sched.queued,
                running=0 if sched is None else sched.running,
            )
        )
