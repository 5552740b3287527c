"""A pool's hooks: the scheduler's :class:`~werkpool._core._scheduler.EventSink` when it has any.

:class:`Hooks` turns each transition the scheduler reports into a frozen
:class:`~werkpool._core._events.JobEvent` (times, durations, the admission latency) and hands it
to every hook in turn. A hook that raises an :exc:`Exception` is logged once, with its traceback, on
the ``werkpool`` logger, and is called again at the next event (it is the hook's to fix, not the
pool's to drop). One that raises a KeyboardInterrupt, a SystemExit or another BaseException stops
the pool as a job raising it would (:class:`Stopper`); it never escapes into the transition that
called the hook, which is complete by then anyway.

A pool without hooks has no :class:`Hooks` at all: the scheduler's sink is None and each
transition costs one attribute test.
"""

from __future__ import annotations

import logging
import weakref
from typing import TYPE_CHECKING, Final, Protocol, final

from .._core._events import FINISHED, RETRYING, STARTED, SUBMITTED, JobEvent
from .._core._job import spent
from .._core._options import default_label

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable

    from .._core._events import EventKind, Hook, Outcome
    from .._core._job import Job
    from .._core._scheduler import Scheduler

__all__ = ["Hooks", "Stopper", "check_hook"]

logger: Final = logging.getLogger("werkpool")

_NAN: Final = float("nan")


def check_hook(hook: object, where: str) -> None:
    """Reject what cannot be a hook, at the call that passed it."""
    if not callable(hook):
        raise TypeError(
            f"{where}: a hook must be a callable taking a werkpool.JobEvent, "
            f"not {type(hook).__name__}"
        )


class Stopper(Protocol):
    """Who stops the pool when a hook raises what no pool may swallow (the pool's lifecycle)."""

    def hook_raised(self, error: BaseException) -> bool:
        """A hook raised *error*, a BaseException that is not an Exception (KeyboardInterrupt,
        SystemExit...): stop the pool and let it raise *error*, as when a job raises it, and
        return True; or return False if no running pool can raise it (the caller then does)."""
        ...


@final
class Hooks:
    """Builds the events of one pool and calls its hooks.

    :param hooks: the hooks, called in this order
    :param clock: the pool's clock (:func:`anyio.current_time` of its loop)
    :param stopper: stops the pool when a hook raises a BaseException that is not an Exception
        (held weakly: the pool holds its hooks); None: such an error is raised to the caller
    """

    __slots__ = (
        "_broken",
        "_labels",
        "_stopper",
        "_times",
        "_unweakrefable",
        "clock",
        "hooks",
        "sched",
    )

    def __init__(
        self, hooks: tuple[Hook, ...], clock: Callable[[], float], stopper: Stopper | None = None
    ) -> None:
        self.hooks = hooks
        self.clock = clock
        self._stopper = None if stopper is None else weakref.ref(stopper)
        #: Set by the pool once its scheduler exists: the counts each event carries.
        self.sched: Scheduler | None = None
        #: Per job in flight (by its number): [submitted at, ready since, attempt started at].
        self._times: dict[int, list[float]] = {}
        #: Per job in flight without a ``name=``: its default label, made once (a repr of user
        #: data may be slow) at its first event.
        self._labels: dict[int, str] = {}
        #: The hooks that raised already (logged once each), by identity: keyed by id() but
        #: holding the hook itself, weakly, so that a dead hook's entry goes with it and a new
        #: hook at its address is not taken for it. Made at the first failure.
        self._broken: weakref.WeakValueDictionary[int, Hook] | None = None
        #: The same for the failed hooks that take no weak reference, held strongly (so their
        #: id cannot be reused) while they are hooks of the pool.
        self._unweakrefable: dict[int, Hook] = {}

    def emit(self, event: JobEvent) -> None:
        """Hand *event* to every hook; a hook's exception is logged once and goes no further.

        A hook's KeyboardInterrupt, SystemExit or other BaseException is handed to the stopper
        once every hook had the event (or raised here if no pool can raise it).
        """
        fatal: BaseException | None = None
        for hook in self.hooks:
            try:
                hook(event)
            except Exception:
                if self._first_failure(hook):
                    logger.exception(
                        "werkpool hook %r raised on a %r event; the pool goes on (this hook's "
                        "later errors are not logged)",
                        hook,
                        event.kind,
                    )
            except BaseException as exc:
                if fatal is None:
                    fatal = exc
        if fatal is not None:
            stopper = None if self._stopper is None else self._stopper()
            try:
                if stopper is None or not stopper.hook_raised(fatal):
                    raise fatal
            finally:
                # The error's traceback holds this frame, whose variable holds the error: a
                # cycle that would keep the pool alive until the cyclic GC ran (#21 item 17).
                del fatal, stopper

    def _first_failure(self, hook: Hook) -> bool:
        """Remember *hook* as broken; return False if it was already."""
        key = id(hook)
        broken = self._broken
        if broken is None:
            broken = self._broken = weakref.WeakValueDictionary()
        if broken.get(key) is hook or self._unweakrefable.get(key) is hook:
            return False
        try:
            broken[key] = hook
        except TypeError:  # no weak reference to it (a class with __slots__, a builtin)
            # Keep only the ones still in use: a dropped hook's address may be reused, and the
            # new hook there must be logged.
            hooks = self.hooks
            kept = self._unweakrefable
            for old in [k for k, h in kept.items() if not any(h is x for x in hooks)]:
                del kept[old]
            kept[key] = hook
        return True

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
        name = job.options.name
        if name is None:
            labels = self._labels
            name = labels.pop(seq, None) if kind == FINISHED else labels.get(seq)
            if name is None and job.fn is not spent:  # spent: settled before a hook saw it
                name = default_label(job.fn, job.args)
                if kind != FINISHED:
                    labels[seq] = name
        lane = job.lane
        sched = self.sched
        self.emit(
            JobEvent(
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
                None,
                name,
            )
        )

    def pause_event(
        self,
        kind: EventKind,
        key: Hashable,
        until: float | None,
        clamped_from: float | None = None,
    ) -> None:
        sched = self.sched
        self.emit(
            JobEvent(
                kind,
                self.clock(),
                None,
                key,
                until=until,
                clamped_from=clamped_from,
                queued=0 if sched is None else sched.queued,
                running=0 if sched is None else sched.running,
            )
        )
