"""Who hears of the scheduler's transitions: the event sink, and the events held back meanwhile.

The scheduler tells an :class:`EventSink` (the pool's hooks, :mod:`werkpool._runtime._hooks`) of
every transition once it is complete. A transition made of several steps, each of which has
something to tell, records its calls in :class:`HeldEvents` and replays them at the end, so that
a hook never sees a half-made change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, final

if TYPE_CHECKING:
    from collections.abc import Hashable
    from typing import Any

    from ._events import EventKind, Outcome
    from ._job import Job

__all__ = ["EventSink", "HeldEvents", "SinkHolder", "hold_events", "replay_events"]


class EventSink(Protocol):
    """Who hears of every transition, when the pool has hooks (``_hooks.Hooks`` implements it).

    Called synchronously once the transition is complete: the scheduler's counters, the job's
    state and its future are what they will stay (a hook may act on the pool from there). An
    attempt's start is told by :meth:`Scheduler.began`, once its worker owns it.
    """

    def job_event(
        self,
        kind: EventKind,
        job: Job,
        outcome: Outcome | None = None,
        *,
        error: BaseException | None = None,
        delay: float | None = None,
    ) -> None:
        """*job* was submitted, started an attempt, will be retried, or finished."""
        ...

    def pause_event(
        self,
        kind: EventKind,
        key: Hashable,
        until: float | None,
        clamped_from: float | None = None,
    ) -> None:
        """The pool (*key* None) or *key* paused until *until*, or resume() ended the pause.
        *clamped_from*: the pushback asked for that many seconds, more than ``max_retry_after``,
        and *until* is the clamped end."""
        ...


@final
class HeldEvents:
    """Stands in for the sink while a transition is made of several steps, each of which tells
    the hooks something: the calls are recorded, and replayed once the whole is complete."""

    __slots__ = ("calls", "sink")

    def __init__(self, sink: EventSink) -> None:
        self.sink = sink
        self.calls: list[tuple[Any, ...]] = []

    def job_event(
        self,
        kind: EventKind,
        job: Job,
        outcome: Outcome | None = None,
        *,
        error: BaseException | None = None,
        delay: float | None = None,
    ) -> None:
        self.calls.append((kind, job, outcome, error, delay))

    def pause_event(
        self,
        kind: EventKind,
        key: Hashable,
        until: float | None,
        clamped_from: float | None = None,
    ) -> None:
        self.calls.append((kind, key, until, clamped_from))

    def replay(self) -> None:
        """Tell the sink, in order, what was recorded."""
        sink = self.sink
        for call in self.calls:
            if len(call) == 5:
                kind, job, outcome, error, delay = call
                sink.job_event(kind, job, outcome, error=error, delay=delay)
            else:
                sink.pause_event(*call)


class SinkHolder(Protocol):
    """Who tells a sink (the scheduler): its sink, or None when the pool has no hooks."""

    sink: EventSink | None


def hold_events(holder: SinkHolder) -> HeldEvents | None:
    """Record what *holder* tells from now on, until :func:`replay_events`: the steps of one
    transition are told once it is complete. None: no hooks (or held already)."""
    sink = holder.sink
    if sink is None or type(sink) is HeldEvents:
        return None
    held = HeldEvents(sink)
    holder.sink = held
    return held


def replay_events(holder: SinkHolder, held: HeldEvents | None) -> None:
    """Tell the hooks what was held, in order (a hook may start another transition)."""
    if held is not None:
        if holder.sink is held:
            holder.sink = held.sink
        held.replay()
