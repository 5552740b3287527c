"""werkpool.prometheus.PrometheusHook: a pool's metrics in prometheus_client, read back with
``registry.get_sample_value`` from a fresh CollectorRegistry, on both backends under virtual
time.

The main run (:func:`run_the_story`) is that of tests/test_otel_hook.py: a job that completes,
one that fails once, one that fails for good, one pushed back (the pool pauses 5 s) and one
cancelled while it waits; every attempt lasts 1 s.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from prometheus_client import REGISTRY, CollectorRegistry
from support import Boom, Script, approx

import werkpool.prometheus
from werkpool import RetryAfter, WorkerPool
from werkpool._observe._metrics import LATENCY_BUCKETS
from werkpool.prometheus import PrometheusHook

pytestmark = pytest.mark.anyio

POOL = {"pool": "test"}


def two_seconds(retry: int) -> float:
    return 2.0


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, {**POOL, **labels})


def gauges(registry: CollectorRegistry) -> tuple[float | None, float | None]:
    return sample(registry, "werkpool_jobs_queued"), sample(registry, "werkpool_attempts_running")


async def run_the_story(registry: CollectorRegistry) -> dict[str, Any]:
    """t=0: four jobs start; t=1: "ok" completes, "flaky" and "doomed" fail (retry in 2 s),
    "pushed" is pushed back (the pool pauses until t=6); t=2: "late" is submitted, and cancelled
    at t=3; t=6: three retries start; t=7: "flaky" and "pushed" complete, "doomed" fails."""
    script = Script(flaky=[Boom("once")], doomed=[Boom("1"), Boom("2")], pushed=[RetryAfter(5)])
    seen: dict[str, Any] = {}
    hook = PrometheusHook(registry=registry, labels=POOL)
    async with WorkerPool(hooks=[hook]) as pool:
        pool.run(script.job, "ok")
        pool.run(script.job, "flaky", retries=1, backoff=two_seconds)
        doomed = pool.run(script.job, "doomed", retries=1, backoff=two_seconds)
        pool.run(script.job, "pushed", retries=1)
        await anyio.sleep(0.5)
        seen["t=0.5"] = gauges(registry)
        await anyio.sleep(1.5)
        late = pool.run(script.job, "late")
        await anyio.sleep(0.5)
        seen["t=2.5"] = gauges(registry)
        seen["paused at t=2.5"] = sample(registry, "werkpool_paused_seconds_total", scope="pool")
        await anyio.sleep(0.5)
        late.cancel()
    assert late.cancelled()
    assert isinstance(doomed.exception(), Boom)
    return seen


class TestMetrics:
    async def test_counters_after_retries_failures_and_a_pushback(
        self, registry: CollectorRegistry
    ) -> None:
        """Submitted, started, finished by outcome, retries; the gauges back at 0."""
        await run_the_story(registry)
        assert sample(registry, "werkpool_jobs_submitted_total") == 5
        assert sample(registry, "werkpool_attempts_started_total") == 7
        assert sample(registry, "werkpool_retries_total") == 3
        finished = "werkpool_jobs_finished_total"
        assert sample(registry, finished, outcome="completed") == 3
        assert sample(registry, finished, outcome="failed") == 1
        assert sample(registry, finished, outcome="cancelled") == 1
        assert gauges(registry) == (0, 0)

    async def test_the_gauges_follow_the_pool(self, registry: CollectorRegistry) -> None:
        """Four running at t=0.5; at t=2.5 (paused) one queued and none running."""
        seen = await run_the_story(registry)
        assert seen["t=0.5"] == (0, 4)
        assert seen["t=2.5"] == (1, 0)

    async def test_admission_latency_histogram(self, registry: CollectorRegistry) -> None:
        """Seven observations adding up to 6 s: four of 0 s (and the retries' 0 and 3 s)."""
        await run_the_story(registry)
        name = "werkpool_admission_latency_seconds"
        assert sample(registry, f"{name}_count") == 7
        assert sample(registry, f"{name}_sum") == approx(6.0)
        assert sample(registry, f"{name}_bucket", le="0.005") == 5
        assert sample(registry, f"{name}_bucket", le="2.5") == 5
        assert sample(registry, f"{name}_bucket", le="5.0") == 7
        assert sample(registry, f"{name}_bucket", le="3600.0") == 7
        assert sample(registry, f"{name}_bucket", le="+Inf") == 7
        bounds = [
            s.labels["le"]
            for metric in registry.collect()
            if metric.name == name
            for s in metric.samples
            if s.name.endswith("_bucket")
        ]
        assert bounds == [str(b) for b in LATENCY_BUCKETS] + ["+Inf"]

    async def test_paused_seconds_count_the_pushback_once_it_is_over(
        self, registry: CollectorRegistry
    ) -> None:
        """Nothing while the 5 s pause runs; 5 s at the starts that follow it."""
        seen = await run_the_story(registry)
        assert seen["paused at t=2.5"] == 0
        paused = "werkpool_paused_seconds_total"
        assert sample(registry, paused, scope="pool") == approx(5.0)
        assert sample(registry, paused, scope="key") == 0

    async def test_paused_seconds_of_keys_and_of_pause_resume(
        self, registry: CollectorRegistry
    ) -> None:
        """A key's pushback counts under scope "key"; pause() until resume() under "pool"."""
        async with WorkerPool(hooks=[PrometheusHook(registry=registry, labels=POOL)]) as pool:
            pool.push_back(3, key="k")
            await pool.call(anyio.sleep, 1, key="k")
            pool.pause()
            await anyio.sleep(4)
            pool.resume()
        paused = "werkpool_paused_seconds_total"
        assert sample(registry, paused, scope="key") == approx(3.0)
        assert sample(registry, paused, scope="pool") == approx(4.0)

    async def test_a_hook_added_to_a_busy_pool_starts_from_its_counts(
        self, registry: CollectorRegistry
    ) -> None:
        """add_hook on a running pool: the gauges jump to the pool's counts at the next event."""
        async with WorkerPool(size=2) as pool:
            for _ in range(5):
                pool.run(anyio.sleep, 1)
            await anyio.sleep(0.5)
            pool.add_hook(PrometheusHook(registry=registry, labels=POOL))
            pool.run(anyio.sleep, 1)
            assert gauges(registry) == (4, 2)
        assert gauges(registry) == (0, 0)
        assert sample(registry, "werkpool_jobs_finished_total", outcome="completed") == 6


class TestSeveralPools:
    async def test_pools_with_their_own_labels_share_the_metrics(
        self, registry: CollectorRegistry
    ) -> None:
        """Two hooks of one registry and namespace: no clash, a series each."""
        a = PrometheusHook(registry=registry, labels={"pool": "a"})
        b = PrometheusHook(registry=registry, labels={"pool": "b"})
        async with WorkerPool(hooks=[a]) as pa, WorkerPool(hooks=[b]) as pb:
            for _ in range(3):
                pa.run(anyio.sleep, 1)
            pb.run(anyio.sleep, 1)
            await anyio.sleep(0.5)
            running = "werkpool_attempts_running"
            assert registry.get_sample_value(running, {"pool": "a"}) == 3
            assert registry.get_sample_value(running, {"pool": "b"}) == 1
        submitted = "werkpool_jobs_submitted_total"
        assert registry.get_sample_value(submitted, {"pool": "a"}) == 3
        assert registry.get_sample_value(submitted, {"pool": "b"}) == 1

    async def test_the_gauges_of_pools_with_the_same_labels_add_up(
        self, registry: CollectorRegistry
    ) -> None:
        """Deltas, not sets: two pools' running attempts sum in one series."""
        async with (
            WorkerPool(hooks=[PrometheusHook(registry=registry)]) as pa,
            WorkerPool(hooks=[PrometheusHook(registry=registry)]) as pb,
        ):
            for _ in range(3):
                pa.run(anyio.sleep, 2)
            pb.run(anyio.sleep, 1)
            await anyio.sleep(0.5)
            assert registry.get_sample_value("werkpool_attempts_running") == 4
            await anyio.sleep(1)
            assert registry.get_sample_value("werkpool_attempts_running") == 3
        assert registry.get_sample_value("werkpool_attempts_running") == 0

    def test_label_names_must_agree_within_a_namespace(self, registry: CollectorRegistry) -> None:
        """Other label names in the same namespace: ValueError; another namespace is apart."""
        PrometheusHook(registry=registry, labels={"pool": "a", "host": "x"})
        PrometheusHook(registry=registry, labels={"host": "y", "pool": "b"})  # same names
        with pytest.raises(
            ValueError,
            match=r"^the werkpool metrics of namespace 'werkpool' in this registry have the "
            r"labels \['host', 'pool'\], not \['pool'\]: give every PrometheusHook of a "
            r"namespace the same label names$",
        ):
            PrometheusHook(registry=registry, labels={"pool": "c"})
        PrometheusHook(registry=registry, namespace="other", labels={"pool": "c"})
        assert registry.get_sample_value("other_jobs_submitted_total", {"pool": "c"}) == 0


class TestSetup:
    def test_every_series_exists_from_the_start(self, registry: CollectorRegistry) -> None:
        """A new hook's series read 0 before any event (each outcome and scope too)."""
        PrometheusHook(registry=registry, labels=POOL)
        for name in (
            "werkpool_jobs_submitted_total",
            "werkpool_attempts_started_total",
            "werkpool_retries_total",
            "werkpool_jobs_queued",
            "werkpool_attempts_running",
            "werkpool_admission_latency_seconds_count",
        ):
            assert sample(registry, name) == 0, name
        for outcome in ("completed", "failed", "cancelled"):
            assert sample(registry, "werkpool_jobs_finished_total", outcome=outcome) == 0
        for scope in ("pool", "key"):
            assert sample(registry, "werkpool_paused_seconds_total", scope=scope) == 0

    def test_the_default_registry_and_a_namespace(self) -> None:
        """registry=None is prometheus_client's REGISTRY; namespace prefixes every name."""
        hook = PrometheusHook(namespace="werkpool_test_default")
        assert hook.registry is REGISTRY
        assert REGISTRY.get_sample_value("werkpool_test_default_retries_total") == 0
        assert repr(hook) == "PrometheusHook(namespace='werkpool_test_default', labels={})"
        assert PrometheusHook.__module__ == "werkpool.prometheus"
        assert werkpool.prometheus.__all__ == ["PrometheusHook"]

    @pytest.mark.parametrize("label", ["outcome", "scope"])
    def test_the_hooks_own_labels_are_refused(
        self, registry: CollectorRegistry, label: str
    ) -> None:
        """outcome and scope are the hook's to set."""
        with pytest.raises(
            ValueError, match=rf"^labels must not name \['{label}'\]: the hook sets them itself$"
        ):
            PrometheusHook(registry=registry, labels={label: "x"})


class TestNothingRegisteredOnError:
    """#21 item 18: a hook refused at construction leaves its registry as it found it."""

    @staticmethod
    def names(registry: CollectorRegistry) -> list[str]:
        return sorted(metric.name for metric in registry.collect())

    @pytest.mark.parametrize(
        ("labels", "message"),
        [
            (
                {"le": "x"},
                r"^labels must not name 'le': prometheus_client reserves it for a "
                r"histogram's buckets$",
            ),
            (
                {"__x": "x"},
                r"^labels must not name '__x': names that begin with '__' are "
                r"reserved by Prometheus$",
            ),
        ],
    )
    def test_a_reserved_label_registers_nothing(
        self, registry: CollectorRegistry, labels: dict[str, str], message: str
    ) -> None:
        """Refused before any metric is registered: a later hook of the registry works."""
        with pytest.raises(ValueError, match=message):
            PrometheusHook(registry=registry, labels=labels)
        assert self.names(registry) == []
        PrometheusHook(registry=registry, labels=POOL)  # no DuplicateTimeseries
        assert sample(registry, "werkpool_jobs_submitted_total") == 0

    def test_a_label_name_that_is_no_str_is_refused(self, registry: CollectorRegistry) -> None:
        """A TypeError naming the argument, and nothing registered."""
        with pytest.raises(TypeError, match=r"^labels must map str names to values, not int$"):
            PrometheusHook(registry=registry, labels={1: "x"})  # type: ignore[dict-item]
        assert self.names(registry) == []

    @pytest.mark.parametrize(
        ("arguments", "message"),
        [
            (
                {"labels": [("a", "x")]},
                r"^labels must be a mapping of label names to values, not list$",
            ),
            ({"namespace": 1}, r"^namespace must be a str, not int$"),
        ],
    )
    def test_an_argument_of_the_wrong_type_is_refused(
        self, registry: CollectorRegistry, arguments: dict[str, Any], message: str
    ) -> None:
        """Checked at run time, whatever the annotations say (untyped callers pass anything):
        a TypeError naming the argument, and nothing registered."""
        with pytest.raises(TypeError, match=message):
            PrometheusHook(registry=registry, **arguments)
        assert self.names(registry) == []

    def test_a_failure_midway_unregisters_what_was_registered(
        self, registry: CollectorRegistry
    ) -> None:
        """A name the registry already has (the 5th of the 8 metrics): the first 4 go again."""
        from prometheus_client import Gauge

        theirs = Gauge("werkpool_jobs_queued", "someone else's", registry=registry)
        with pytest.raises(ValueError, match="Duplicated timeseries"):
            PrometheusHook(registry=registry, labels=POOL)
        assert self.names(registry) == ["werkpool_jobs_queued"]
        registry.unregister(theirs)
        PrometheusHook(registry=registry, labels=POOL)  # the namespace is free again
        assert sample(registry, "werkpool_jobs_queued") == 0
