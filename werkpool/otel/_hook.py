"""A hook that reports a pool's work to OpenTelemetry: a span per attempt, and metrics.

Needs ``opentelemetry-api`` (``pip install "werkpool[otel]"``); an SDK, configured by the
application, decides where spans and metrics go. Without one, every call is OpenTelemetry's
no-op.
"""

from __future__ import annotations

import importlib.metadata
import time
from typing import TYPE_CHECKING, Final, final

from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode

from .._core._events import FINISHED, RETRYING, STARTED
from .._observe._metrics import LATENCY_BUCKETS, MetricsFeed

if TYPE_CHECKING:
    from collections.abc import Mapping

    from opentelemetry.trace import Span
    from opentelemetry.util.types import AttributeValue

    from .._core._events import JobEvent, Outcome
    from .._observe._metrics import Scope

__all__ = ["SPAN_NAME", "OpenTelemetryHook"]

#: The name of every attempt's span.
SPAN_NAME: Final = "werkpool attempt"

# An empty context: an attempt's span is a root span. The event that starts an attempt is
# emitted in whichever task made room for it (often another job's worker), so the span current
# there is no parent of this attempt.
_ROOT: Final = Context()


def _version() -> str:
    try:
        return importlib.metadata.version("werkpool")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a bare checkout
        return ""  # OpenTelemetry's "unknown"


@final
class _Instruments:
    """The OpenTelemetry instruments a :class:`~werkpool._observe._metrics.MetricsFeed` updates."""

    __slots__ = (
        "_attributes",
        "_finished",
        "_latency",
        "_outcomes",
        "_paused",
        "_queued",
        "_retries",
        "_running",
        "_scopes",
        "_started",
        "_submitted",
    )

    def __init__(self, meter: metrics.Meter, attributes: Mapping[str, AttributeValue]) -> None:
        self._submitted = meter.create_counter(
            "werkpool.jobs.submitted", unit="{job}", description="Jobs submitted to the pool."
        )
        self._started = meter.create_counter(
            "werkpool.attempts.started",
            unit="{attempt}",
            description="Attempts started (admitted by every limit), retries included.",
        )
        self._finished = meter.create_counter(
            "werkpool.jobs.finished",
            unit="{job}",
            description="Jobs finished, by werkpool.outcome (completed, failed, cancelled).",
        )
        self._retries = meter.create_counter(
            "werkpool.retries",
            unit="{retry}",
            description="Attempts that failed and will be retried (pushbacks included).",
        )
        self._queued = meter.create_up_down_counter(
            "werkpool.jobs.queued",
            unit="{job}",
            description="Jobs waiting to start (not those sleeping in a backoff).",
        )
        self._running = meter.create_up_down_counter(
            "werkpool.attempts.running", unit="{attempt}", description="Attempts running."
        )
        self._latency = meter.create_histogram(
            "werkpool.admission.latency",
            unit="s",
            description="How long each attempt waited for its limits before it started.",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS,
        )
        self._paused = meter.create_counter(
            "werkpool.paused.time",
            unit="s",
            description="Seconds paused, by werkpool.scope (pool, or key: summed over keys), "
            "counted when each pause is over.",
        )
        self._attributes = dict(attributes)
        # Built once: the attribute sets of the labelled points.
        outcomes: tuple[Outcome, ...] = ("completed", "failed", "cancelled")
        self._outcomes = {o: {**attributes, "werkpool.outcome": o} for o in outcomes}
        scopes: tuple[Scope, ...] = ("pool", "key")
        self._scopes = {s: {**attributes, "werkpool.scope": s} for s in scopes}

    def submitted(self) -> None:
        self._submitted.add(1, self._attributes)

    def started(self, waited: float | None) -> None:
        self._started.add(1, self._attributes)
        if waited is not None:
            self._latency.record(waited, self._attributes)

    def retried(self) -> None:
        self._retries.add(1, self._attributes)

    def finished(self, outcome: Outcome) -> None:
        self._finished.add(1, self._outcomes[outcome])

    def counts(self, queued: int, running: int) -> None:
        if queued:
            self._queued.add(queued, self._attributes)
        if running:
            self._running.add(running, self._attributes)

    def paused(self, scope: Scope, seconds: float) -> None:
        self._paused.add(seconds, self._scopes[scope])


@final
class OpenTelemetryHook:
    """
    A hook that reports a pool's work to OpenTelemetry: a span per attempt, and metrics.

    **Spans.** Each attempt is a root span named ``"werkpool attempt"`` (kind INTERNAL), from
    its ``"started"`` event to its ``"retrying"`` or ``"finished"`` event, with the attributes
    ``werkpool.job``, ``werkpool.job.name`` (the job's label, :attr:`werkpool.JobEvent.name`),
    ``werkpool.key`` (its ``str``, if the job has a key), ``werkpool.attempt`` and
    ``werkpool.waited`` (the admission latency, seconds). A failed attempt records its
    exception and has status ERROR; one that will be retried also gets a ``"retry"`` event
    (``werkpool.attempt``, ``werkpool.delay``, ``werkpool.error``). The last attempt's span
    carries ``werkpool.outcome``. A span starts at the wall-clock time of its ``"started"``
    event and lasts as long as the pool's clock says (so it is exact under a virtual clock).

    **Metrics** (every point carries *attributes*):

    - counters ``werkpool.jobs.submitted``, ``werkpool.attempts.started``,
      ``werkpool.jobs.finished`` (attribute ``werkpool.outcome``: ``completed``, ``failed`` or
      ``cancelled``) and ``werkpool.retries``;
    - up-down counters ``werkpool.jobs.queued`` (jobs waiting to start) and
      ``werkpool.attempts.running``, moved by each event's counts;
    - a histogram ``werkpool.admission.latency`` (seconds each attempt waited for its limits);
    - a counter ``werkpool.paused.time`` (seconds, attribute ``werkpool.scope``: ``pool`` or
      ``key``, the keys' pauses summed): a pause counts from its ``"paused"`` event to the
      earlier of its end (extensions included) and ``resume()``, and is added once it is over,
      at the next event of the pool (a pause still running is not counted yet).

    Use one hook per pool: events do not say which pool they come from. Give each pool its own
    *attributes* (``{"werkpool.pool": "crawler"}``) to tell them apart.

    :param tracer_provider: where the spans go (default: the global tracer provider)
    :param meter_provider: where the metrics go (default: the global meter provider)
    :param name: the instrumentation scope's name (of the tracer and the meter)
    :param attributes: attributes for every span and metric point

    .. versionadded:: 0.3
    """

    __slots__ = ("_attributes", "_feed", "_spans", "_tracer")

    def __init__(
        self,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        name: str = "werkpool",
        attributes: Mapping[str, AttributeValue] | None = None,
    ) -> None:
        version = _version()
        attributes = {} if attributes is None else dict(attributes)
        self._attributes = attributes
        self._tracer = trace.get_tracer(name, version, tracer_provider)
        meter = metrics.get_meter(name, version, meter_provider)
        self._feed = MetricsFeed(_Instruments(meter, attributes))
        #: The attempts running, by job number: (span, its start in ns, its event time).
        self._spans: dict[int, tuple[Span, int, float]] = {}

    def __repr__(self) -> str:
        return f"OpenTelemetryHook({len(self._spans)} spans open)"

    def __call__(self, event: JobEvent, /) -> None:
        """Update the metrics for *event*; start or end an attempt's span."""
        self._feed(event)
        kind = event.kind
        job = event.job
        if job is None:  # a pause: metrics only
            return
        if kind == STARTED:
            self._start(event, job)
        elif kind in (RETRYING, FINISHED):
            opened = self._spans.pop(job, None)
            if opened is not None:
                self._end(event, *opened)

    def _start(self, event: JobEvent, job: int) -> None:
        attributes: dict[str, AttributeValue] = {
            **self._attributes,
            "werkpool.job": job,
            "werkpool.attempt": event.attempt,
        }
        if event.key is not None:
            attributes["werkpool.key"] = str(event.key)
        if event.name is not None:
            attributes["werkpool.job.name"] = event.name
        if event.waited is not None:
            attributes["werkpool.waited"] = event.waited
        start = time.time_ns()
        span = self._tracer.start_span(
            SPAN_NAME, _ROOT, SpanKind.INTERNAL, attributes, start_time=start
        )
        stale = self._spans.get(job)
        if stale is not None:  # pragma: no cover - the pool ends an attempt before the next
            stale[0].end()
        self._spans[job] = (span, start, event.time)

    def _end(self, event: JobEvent, span: Span, start: int, started: float) -> None:
        end = start + max(0, round((event.time - started) * 1e9))
        error = event.error
        if event.kind == RETRYING:
            span.add_event(
                "retry",
                {
                    "werkpool.attempt": event.attempt,
                    "werkpool.delay": event.delay or 0.0,
                    "werkpool.error": repr(error),
                },
                end,
            )
        elif event.outcome is not None:
            span.set_attribute("werkpool.outcome", event.outcome)
        if error is not None:
            span.record_exception(error, timestamp=end)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        span.end(end)
