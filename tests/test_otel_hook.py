"""werkpool.otel.OpenTelemetryHook: spans per attempt and metrics, read from the OpenTelemetry
SDK's in-memory span exporter and metric reader, on both backends under virtual time.

The main run (:func:`run_the_story`) has a job that completes, one that fails once, one that
fails for good, one that is pushed back (the pool pauses 5 s) and one cancelled while it waits;
every attempt lasts 1 s, so each span's length, each wait and the paused time are exact.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from support import Boom, Script, approx

import werkpool.otel
from werkpool import RetryAfter, WorkerPool
from werkpool._observe._metrics import LATENCY_BUCKETS
from werkpool.otel import SPAN_NAME, OpenTelemetryHook

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.anyio

POOL = {"werkpool.pool": "test"}


def two_seconds(retry: int) -> float:
    return 2.0


@dataclass
class Otel:
    """A hook wired to in-memory exporters, and readers of what it sent."""

    hook: OpenTelemetryHook
    spans: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracer_provider: TracerProvider

    def attempts(self) -> list[ReadableSpan]:
        """The attempts' spans, by job and attempt."""
        found = [s for s in self.spans.get_finished_spans() if s.name == SPAN_NAME]
        return sorted(found, key=lambda s: (attr(s, "werkpool.job"), attr(s, "werkpool.attempt")))

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        assert data is not None
        return [
            point
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]

    def value(self, name: str, **labels: str) -> Any:
        """The value (or histogram point) of *name* whose attributes are POOL and *labels*."""
        wanted = {**POOL, **{k.replace("_", "."): v for k, v in labels.items()}}
        matching = [p for p in self.points(name) if dict(p.attributes) == wanted]
        assert len(matching) <= 1, matching
        if not matching:
            return None
        point = matching[0]
        return point if hasattr(point, "bucket_counts") else point.value


def attr(span: ReadableSpan, name: str) -> Any:
    assert span.attributes is not None
    return span.attributes.get(name)


@pytest.fixture
def otel() -> Iterator[Otel]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    hook = OpenTelemetryHook(
        tracer_provider=tracer_provider, meter_provider=meter_provider, attributes=POOL
    )
    yield Otel(hook, spans, reader, tracer_provider)
    meter_provider.shutdown()
    tracer_provider.shutdown()


async def run_the_story(otel: Otel, check_midway: bool = False) -> dict[str, Any]:
    """t=0: four jobs start; t=1: "ok" completes, "flaky" and "doomed" fail (retry in 2 s),
    "pushed" is pushed back (the pool pauses until t=6); t=2: "late" is submitted, and cancelled
    at t=3; t=6: three retries start; t=7: "flaky" and "pushed" complete, "doomed" fails."""
    script = Script(flaky=[Boom("once")], doomed=[Boom("1"), Boom("2")], pushed=[RetryAfter(5)])
    tracer = otel.tracer_provider.get_tracer("the user")
    seen: dict[str, Any] = {}
    async with WorkerPool(hooks=[otel.hook]) as pool:
        # A span current where the jobs are submitted is no parent of their attempts.
        with tracer.start_as_current_span("user"):
            futures = {
                "ok": pool.run(script.job, "ok", key=("host", 1)),
                "flaky": pool.run(script.job, "flaky", retries=1, backoff=two_seconds),
                "doomed": pool.run(script.job, "doomed", retries=1, backoff=two_seconds),
                "pushed": pool.run(script.job, "pushed", retries=1),
            }
        await anyio.sleep(0.5)
        if check_midway:
            seen["t=0.5"] = (
                otel.value("werkpool.jobs.queued"),
                otel.value("werkpool.attempts.running"),
            )
        await anyio.sleep(1.5)
        late = pool.run(script.job, "late")
        await anyio.sleep(0.5)
        if check_midway:
            seen["t=2.5"] = (
                otel.value("werkpool.jobs.queued"),
                otel.value("werkpool.attempts.running"),
            )
            seen["paused at t=2.5"] = otel.value("werkpool.paused.time", werkpool_scope="pool")
        await anyio.sleep(0.5)
        late.cancel()
    assert late.cancelled()
    seen["doomed"] = futures["doomed"].exception()
    return seen


class TestSpans:
    async def test_a_root_span_per_attempt_with_its_status(self, otel: Otel) -> None:
        """Seven attempts, seven parent-less spans of 1 s; failed attempts are ERRORs."""
        await run_the_story(otel)
        spans = otel.attempts()
        assert [(attr(s, "werkpool.job"), attr(s, "werkpool.attempt")) for s in spans] == [
            (1, 1),
            (2, 1),
            (2, 2),
            (3, 1),
            (3, 2),
            (4, 1),
            (4, 2),
        ]
        assert all(s.parent is None for s in spans)
        assert len({s.context.trace_id for s in spans if s.context is not None}) == 7
        for span in spans:
            assert span.start_time is not None
            assert span.end_time is not None
            assert (span.end_time - span.start_time) / 1e9 == approx(1.0)
            assert attr(span, "werkpool.pool") == "test"
        statuses = [s.status.status_code for s in spans]
        assert statuses == [
            StatusCode.UNSET,  # ok
            StatusCode.ERROR,  # flaky, retried
            StatusCode.UNSET,
            StatusCode.ERROR,  # doomed, retried
            StatusCode.ERROR,  # doomed, failed for good
            StatusCode.ERROR,  # pushed back
            StatusCode.UNSET,
        ]
        assert spans[4].status.description == "Boom: 2"
        outcomes = [attr(s, "werkpool.outcome") for s in spans]
        assert outcomes == ["completed", None, "completed", None, "failed", None, "completed"]

    async def test_span_attributes_key_and_wait(self, otel: Otel) -> None:
        """werkpool.key is the key's str (absent without one); werkpool.waited the wait."""
        await run_the_story(otel)
        spans = otel.attempts()
        assert attr(spans[0], "werkpool.key") == "('host', 1)"
        assert all(attr(s, "werkpool.key") is None for s in spans[1:])
        waited = [attr(s, "werkpool.waited") for s in spans]
        # The retries of flaky and doomed were ready at t=3 but the pushback held them to t=6.
        assert waited == [approx(w) for w in (0, 0, 3, 0, 3, 0, 0)]

    async def test_retries_are_span_events_and_errors_are_recorded(self, otel: Otel) -> None:
        """A retried attempt has a "retry" event (attempt, delay, error) and the exception."""
        await run_the_story(otel)
        spans = otel.attempts()
        events = {
            (attr(s, "werkpool.job"), attr(s, "werkpool.attempt")): [e.name for e in s.events]
            for s in spans
        }
        assert events == {
            (1, 1): [],
            (2, 1): ["retry", "exception"],
            (2, 2): [],
            (3, 1): ["retry", "exception"],
            (3, 2): ["exception"],
            (4, 1): ["retry", "exception"],
            (4, 2): [],
        }
        retries = {
            attr(s, "werkpool.job"): dict(s.events[0].attributes or {})
            for s in spans
            if s.events and s.events[0].name == "retry"
        }
        assert retries == {
            2: {"werkpool.attempt": 1, "werkpool.delay": 2.0, "werkpool.error": "Boom('once')"},
            3: {"werkpool.attempt": 1, "werkpool.delay": 2.0, "werkpool.error": "Boom('1')"},
            4: {
                "werkpool.attempt": 1,
                "werkpool.delay": 5.0,
                "werkpool.error": repr(RetryAfter(5)),
            },
        }
        exception = spans[4].events[0].attributes or {}
        assert exception["exception.type"] == "support.Boom"
        assert exception["exception.message"] == "2"
        assert "Traceback" in str(exception["exception.stacktrace"])

    async def test_a_job_cancelled_while_waiting_has_no_span(self, otel: Otel) -> None:
        """No attempt, no span (job 5 was cancelled before it started)."""
        await run_the_story(otel)
        assert {attr(s, "werkpool.job") for s in otel.attempts()} == {1, 2, 3, 4}

    async def test_a_cancelled_attempt_ends_its_span(self, otel: Otel) -> None:
        """An attempt cancelled while it runs: its span ends there, outcome cancelled."""
        async with WorkerPool(hooks=[otel.hook]) as pool:
            future = pool.run(anyio.sleep, 10)
            await anyio.sleep(4)
            future.cancel()
        (span,) = otel.attempts()
        assert attr(span, "werkpool.outcome") == "cancelled"
        assert span.status.status_code == StatusCode.UNSET
        assert span.start_time is not None
        assert span.end_time is not None
        assert (span.end_time - span.start_time) / 1e9 == approx(4.0)
        assert repr(otel.hook) == "OpenTelemetryHook(0 spans open)"


class TestMetrics:
    async def test_counters_after_retries_failures_and_a_pushback(self, otel: Otel) -> None:
        """Submitted, started, finished by outcome, retries; the gauges back at 0."""
        await run_the_story(otel)
        assert otel.value("werkpool.jobs.submitted") == 5
        assert otel.value("werkpool.attempts.started") == 7
        assert otel.value("werkpool.retries") == 3
        assert otel.value("werkpool.jobs.finished", werkpool_outcome="completed") == 3
        assert otel.value("werkpool.jobs.finished", werkpool_outcome="failed") == 1
        assert otel.value("werkpool.jobs.finished", werkpool_outcome="cancelled") == 1
        assert otel.value("werkpool.jobs.queued") == 0
        assert otel.value("werkpool.attempts.running") == 0

    async def test_the_gauges_follow_the_pool(self, otel: Otel) -> None:
        """Four running at t=0.5; at t=2.5 (paused) one queued and none running."""
        seen = await run_the_story(otel, check_midway=True)
        assert seen["t=0.5"] == (0, 4)
        assert seen["t=2.5"] == (1, 0)

    async def test_admission_latency_histogram(self, otel: Otel) -> None:
        """One point per attempt; the waits add up to 6 s; seconds-sized buckets."""
        await run_the_story(otel)
        point = otel.value("werkpool.admission.latency")
        assert point.count == 7
        assert point.sum == approx(6.0)
        assert list(point.explicit_bounds) == list(LATENCY_BUCKETS)
        assert (point.min, point.max) == (approx(0.0), approx(3.0))

    async def test_paused_time_counts_the_pushback_once_it_is_over(self, otel: Otel) -> None:
        """The 5 s pushback: nothing while it runs, 5 s at the starts that follow it."""
        seen = await run_the_story(otel, check_midway=True)
        assert seen["paused at t=2.5"] is None
        assert otel.value("werkpool.paused.time", werkpool_scope="pool") == approx(5.0)
        assert otel.value("werkpool.paused.time", werkpool_scope="key") is None

    async def test_paused_time_of_keys_and_of_pause_resume(self, otel: Otel) -> None:
        """A key's pushback counts under scope "key"; pause() until resume() under "pool"."""
        async with WorkerPool(hooks=[otel.hook]) as pool:
            pool.push_back(3, key="k")
            await pool.call(anyio.sleep, 1, key="k")  # waits for the key's pause, then runs
            pool.pause()
            await anyio.sleep(4)
            pool.resume()
        assert otel.value("werkpool.paused.time", werkpool_scope="key") == approx(3.0)
        assert otel.value("werkpool.paused.time", werkpool_scope="pool") == approx(4.0)

    async def test_a_hook_added_to_a_busy_pool_starts_from_its_counts(self, otel: Otel) -> None:
        """add_hook on a running pool: the gauges jump to the pool's counts at the next event."""
        async with WorkerPool(size=2) as pool:
            for _ in range(5):
                pool.run(anyio.sleep, 1)
            await anyio.sleep(0.5)
            pool.add_hook(otel.hook)
            pool.run(anyio.sleep, 1)
            assert otel.value("werkpool.jobs.queued") == 4
            assert otel.value("werkpool.attempts.running") == 2
        assert otel.value("werkpool.jobs.queued") == 0
        assert otel.value("werkpool.attempts.running") == 0
        assert otel.value("werkpool.jobs.finished", werkpool_outcome="completed") == 6


class TestSetup:
    async def test_without_an_sdk_the_hook_is_a_quiet_no_op(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The global providers (no SDK set): the pool runs, the hook never raises."""
        caplog.set_level(logging.DEBUG, logger="werkpool")
        async with WorkerPool(hooks=[OpenTelemetryHook()]) as pool:
            await pool.call(anyio.sleep, 1)
            with pytest.raises(Boom):
                await pool.call(Script(a=[Boom(), Boom()]).job, "a", retries=1)
        assert [r for r in caplog.records if r.name == "werkpool"] == []

    def test_the_scope_is_werkpool_and_its_version(self, otel: Otel) -> None:
        """The tracer and meter are named after the package (``name=``), with its version."""
        assert OpenTelemetryHook.__module__ == "werkpool.otel"
        assert werkpool.otel.__all__ == ["SPAN_NAME", "OpenTelemetryHook"]
        spans = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(spans))
        hook = OpenTelemetryHook(tracer_provider=provider, name="mine")
        hook(werkpool.JobEvent("started", 0.0, 1, None, 1, waited=0.0))
        hook(werkpool.JobEvent("finished", 1.0, 1, None, 1, "completed"))
        (span,) = spans.get_finished_spans()
        assert span.instrumentation_scope is not None
        assert span.instrumentation_scope.name == "mine"
        assert span.instrumentation_scope.version == werkpool.__version__
