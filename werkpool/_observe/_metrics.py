"""What a pool's events mean as metrics, for any metrics library (OpenTelemetry, Prometheus).

:class:`MetricsFeed` is a hook that turns events into the updates of a small
:class:`MetricSink`: counts to add, gauge deltas, an admission latency to record and seconds of
pause. The rules live here once, with no metrics library imported; the adapters only say how an
update is written.

**Paused time** is counted per scope, ``"pool"`` (the pool's pauses) or ``"key"`` (the keys'
pauses, summed over keys), once it is known: a pause runs from its ``"paused"`` event to its
``until`` (moved later by each extension) or to ``resume()``, whichever comes first, and its
seconds are added when it is over, at the first event the pool emits at or after its end (a
pause is followed by a start as soon as it ends if work waits) or at its ``"resumed"``. A pause
still running, or one whose end no event follows, is not counted yet.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Literal, Protocol, final

from .._core._events import FINISHED, PAUSED, RESUMED, RETRYING, STARTED, SUBMITTED

if TYPE_CHECKING:
    from collections.abc import Hashable

    from .._core._events import JobEvent, Outcome

__all__ = ["LATENCY_BUCKETS", "MetricSink", "MetricsFeed", "Scope"]

_INF: Final = float("inf")

#: What a paused time is about: the whole pool, or one of its keys.
Scope = Literal["pool", "key"]

#: Histogram bucket bounds for the admission latency, in seconds: from a few milliseconds (a
#: pool with room) to an hour (a long queue under a slow rate).
LATENCY_BUCKETS: Final = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
)


class MetricSink(Protocol):
    """The metric updates a :class:`MetricsFeed` makes."""

    def submitted(self) -> None:
        """A job was submitted."""

    def started(self, waited: float | None) -> None:
        """An attempt started after waiting *waited* seconds for its limits (None: unknown)."""

    def retried(self) -> None:
        """An attempt failed and its job will be retried."""

    def finished(self, outcome: Outcome) -> None:
        """A job finished with *outcome*."""

    def counts(self, queued: int, running: int) -> None:
        """Add *queued* to the jobs waiting to start and *running* to the running attempts
        (either may be negative or zero)."""

    def paused(self, scope: Scope, seconds: float) -> None:
        """A pause of *scope* is over; it lasted *seconds* (> 0)."""


@final
class MetricsFeed:
    """A hook that turns a pool's events into updates of *sink*.

    The gauges move by the difference between each event's ``queued``/``running`` and the
    previous event's, so that a feed added to a running pool starts from the pool's counts, and
    several feeds (one per pool) writing to the same gauges add up. One feed serves one pool:
    its events are the only ones it can tell apart.

    :param sink: where the updates go
    """

    __slots__ = ("_next_end", "_pauses", "_queued", "_running", "sink")

    def __init__(self, sink: MetricSink) -> None:
        self.sink = sink
        self._queued = 0
        self._running = 0
        #: The pauses not yet counted, by key (None: the pool's): [start, end].
        self._pauses: dict[Hashable, list[float]] = {}
        #: The earliest end among them (a lower bound: an extension only moves an end later).
        self._next_end = _INF

    def __call__(self, event: JobEvent, /) -> None:
        """Update the sink for *event*."""
        kind = event.kind
        sink = self.sink
        if kind == SUBMITTED:
            sink.submitted()
        elif kind == STARTED:
            sink.started(event.waited)
        elif kind == RETRYING:
            sink.retried()
        elif kind == FINISHED and event.outcome is not None:
            sink.finished(event.outcome)
        queued = event.queued - self._queued
        running = event.running - self._running
        if queued or running:
            self._queued = event.queued
            self._running = event.running
            sink.counts(queued, running)
        if kind in (PAUSED, RESUMED) or event.time >= self._next_end:
            self._pause_time(event)

    def _pause_time(self, event: JobEvent) -> None:
        """Count the pauses over by *event*'s time; open, extend or end (resume) a pause."""
        now = event.time
        pauses = self._pauses
        if now >= self._next_end:
            for key, (start, end) in list(pauses.items()):
                if end <= now:
                    del pauses[key]
                    self._count(key, end - start)
            self._next_end = min((end for _, end in pauses.values()), default=_INF)
        if event.kind == RESUMED:  # resume() emits one per scope it ends: the pool, each key
            pause = pauses.pop(event.key, None)
            if pause is not None:
                self._count(event.key, min(now, pause[1]) - pause[0])
        elif event.kind == PAUSED:
            until = _INF if event.until is None else event.until
            pause = pauses.get(event.key)
            if pause is None:
                pauses[event.key] = [now, until]
            elif until > pause[1]:  # an extension; a shorter pause changes nothing
                pause[1] = until
            self._next_end = min(self._next_end, until)

    def _count(self, key: Hashable, seconds: float) -> None:
        if seconds > 0.0:
            self.sink.paused("pool" if key is None else "key", seconds)
