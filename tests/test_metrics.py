"""werkpool._observe._metrics.MetricsFeed: the metric rules shared by the OpenTelemetry and
Prometheus hooks, fed hand-made events (no event loop): counts, gauge deltas, and paused time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from werkpool import JobEvent
from werkpool._observe._metrics import LATENCY_BUCKETS, MetricsFeed, Scope

if TYPE_CHECKING:
    from collections.abc import Hashable

INF = float("inf")


class Sink:
    """Records every update as a tuple."""

    def __init__(self) -> None:
        self.updates: list[tuple[Any, ...]] = []

    def submitted(self) -> None:
        self.updates.append(("submitted",))

    def started(self, waited: float | None) -> None:
        self.updates.append(("started", waited))

    def retried(self) -> None:
        self.updates.append(("retried",))

    def finished(self, outcome: str) -> None:
        self.updates.append(("finished", outcome))

    def counts(self, queued: int, running: int) -> None:
        self.updates.append(("counts", queued, running))

    def paused(self, scope: Scope, seconds: float) -> None:
        self.updates.append(("paused", scope, seconds))

    def pauses(self) -> list[tuple[Any, ...]]:
        return [u for u in self.updates if u[0] == "paused"]


def feed() -> tuple[MetricsFeed, Sink]:
    sink = Sink()
    return MetricsFeed(sink), sink


def paused(time: float, until: float, key: Hashable = None) -> JobEvent:
    return JobEvent("paused", time, None, key, until=until)


def resumed(time: float, key: Hashable = None) -> JobEvent:
    return JobEvent("resumed", time, None, key)


def tick(time: float) -> JobEvent:
    """Any job event at *time* (a submission with nothing queued)."""
    return JobEvent("submitted", time, 1, None)


class TestCounts:
    def test_each_kind_is_its_update(self) -> None:
        """submitted, started (with its wait), retried, finished (with its outcome)."""
        hook, sink = feed()
        hook(JobEvent("submitted", 0.0, 1, None, queued=1))
        hook(JobEvent("started", 0.5, 1, None, 1, waited=0.5, running=1))
        hook(JobEvent("retrying", 1.5, 1, None, 1, error=ValueError(), delay=2.0))
        hook(JobEvent("started", 3.5, 1, None, 2, waited=0.0, running=1))
        hook(JobEvent("finished", 4.0, 1, None, 2, "completed"))
        assert sink.updates == [
            ("submitted",),
            ("counts", 1, 0),
            ("started", 0.5),
            ("counts", -1, 1),
            ("retried",),
            ("counts", 0, -1),
            ("started", 0.0),
            ("counts", 0, 1),
            ("finished", "completed"),
            ("counts", 0, -1),
        ]

    def test_the_gauges_start_from_the_first_events_counts(self) -> None:
        """A feed added to a busy pool moves its gauges to the pool's counts at once."""
        hook, sink = feed()
        hook(JobEvent("finished", 9.0, 7, None, 1, "failed", queued=40, running=9))
        hook(JobEvent("paused", 9.0, None, None, until=INF, queued=40, running=9))
        assert sink.updates == [("finished", "failed"), ("counts", 40, 9)]

    def test_latency_buckets_grow(self) -> None:
        """Sorted, positive bounds from milliseconds to an hour."""
        assert list(LATENCY_BUCKETS) == sorted(set(LATENCY_BUCKETS))
        assert LATENCY_BUCKETS[0] > 0
        assert LATENCY_BUCKETS[-1] == 3600.0


class TestPausedTime:
    def test_a_timed_pause_counts_at_the_first_event_after_its_end(self) -> None:
        """Nothing while it runs; its whole length once an event comes at or after its end."""
        hook, sink = feed()
        hook(paused(10.0, 15.0))
        hook(tick(14.0))
        assert sink.pauses() == []
        hook(tick(15.0))
        assert sink.pauses() == [("paused", "pool", 5.0)]
        hook(tick(30.0))
        assert sink.pauses() == [("paused", "pool", 5.0)]  # counted once

    def test_an_extension_moves_the_end_and_a_shorter_pause_does_not(self) -> None:
        """paused again while paused: the later end wins."""
        hook, sink = feed()
        hook(paused(0.0, 5.0))
        hook(paused(2.0, 8.0))
        hook(paused(3.0, 4.0))
        hook(tick(6.0))
        assert sink.pauses() == []
        hook(tick(9.0))
        assert sink.pauses() == [("paused", "pool", 8.0)]

    def test_resume_ends_a_pause_early(self) -> None:
        """From the pause to the resume, not to its planned end; pause() ends only so."""
        hook, sink = feed()
        hook(paused(1.0, INF))
        hook(tick(1000.0))
        assert sink.pauses() == []
        hook(resumed(8.0 + 1000.0))
        assert sink.pauses() == [("paused", "pool", 1007.0)]

    def test_resume_after_the_end_counts_up_to_the_end(self) -> None:
        """A pause over before the resume counts to its end, once."""
        hook, sink = feed()
        hook(paused(0.0, 5.0))
        hook(resumed(7.0))
        assert sink.pauses() == [("paused", "pool", 5.0)]

    def test_each_resumed_event_ends_its_own_scope(self) -> None:
        """resume() emits one event per scope: a key's leaves the pool's pause running."""
        hook, sink = feed()
        hook(paused(0.0, INF))
        hook(paused(0.0, INF, key="a"))
        hook(resumed(3.0, key="a"))
        assert sink.pauses() == [("paused", "key", 3.0)]
        hook(resumed(4.0))
        assert sink.pauses() == [("paused", "key", 3.0), ("paused", "pool", 4.0)]

    def test_keys_are_counted_apart_and_summed_under_key(self) -> None:
        """Two keys' pauses are two additions to scope "key"; the pool's pause is apart."""
        hook, sink = feed()
        hook(paused(0.0, 3.0, key="a"))
        hook(paused(1.0, 4.0, key=("b", 1)))
        hook(paused(1.0, 2.0))
        hook(tick(10.0))
        assert sorted(sink.pauses()) == [
            ("paused", "key", 3.0),
            ("paused", "key", 3.0),
            ("paused", "pool", 1.0),
        ]

    def test_a_new_pause_after_one_ended_is_a_second_pause(self) -> None:
        """The gap between two pauses of a scope is not paused time."""
        hook, sink = feed()
        hook(paused(0.0, 2.0, key="a"))
        hook(paused(5.0, 6.0, key="a"))
        assert sink.pauses() == [("paused", "key", 2.0)]
        hook(tick(7.0))
        assert sink.pauses() == [("paused", "key", 2.0), ("paused", "key", 1.0)]

    @pytest.mark.parametrize("until", [3.0, 2.0])
    def test_a_pause_of_no_length_counts_nothing(self, until: float) -> None:
        """pause_for(0), or an end already past, adds no zero or negative seconds."""
        hook, sink = feed()
        hook(paused(3.0, until))
        hook(tick(4.0))
        hook(resumed(5.0))
        assert sink.pauses() == []
