"""A hook that keeps a pool's metrics in prometheus_client counters, gauges and a histogram.

Needs ``prometheus-client`` (``pip install "werkpool[prometheus]"``). The metrics mirror those of
:class:`werkpool.otel.OpenTelemetryHook`, named the Prometheus way.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final, TypeVar, cast, final

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from .._observe._metrics import LATENCY_BUCKETS, MetricsFeed

if TYPE_CHECKING:
    from .._core._events import JobEvent, Outcome
    from .._observe._metrics import Scope

__all__ = ["PrometheusHook"]

_M = TypeVar("_M", Counter, Gauge, Histogram)

#: Label names the hook sets itself.
_OWN_LABELS: Final = frozenset({"outcome", "scope"})


@final
class _Families:
    """The metric families of one namespace in one registry, shared by the hooks that use it.

    prometheus_client refuses a second metric of the same name in a registry: a hook per pool
    (each with its own label values) must write to the same families.
    """

    __slots__ = (
        "finished",
        "labelnames",
        "latency",
        "paused",
        "queued",
        "retries",
        "running",
        "started",
        "submitted",
    )

    def __init__(
        self, registry: CollectorRegistry, namespace: str, labelnames: tuple[str, ...]
    ) -> None:
        self.labelnames = labelnames
        # Every metric is made unregistered first (prometheus_client checks its names then),
        # and registered only once all eight exist: a name refused midway would otherwise
        # leave the first ones registered, and every later hook of the registry would fail
        # with DuplicateTimeseries.
        self.submitted = Counter(
            "jobs_submitted",
            "Jobs submitted to the pool.",
            labelnames,
            namespace,
            registry=None,
        )
        self.started = Counter(
            "attempts_started",
            "Attempts started (admitted by every limit), retries included.",
            labelnames,
            namespace,
            registry=None,
        )
        self.finished = Counter(
            "jobs_finished",
            "Jobs finished, by outcome (completed, failed, cancelled).",
            (*labelnames, "outcome"),
            namespace,
            registry=None,
        )
        self.retries = Counter(
            "retries",
            "Attempts that failed and will be retried (pushbacks included).",
            labelnames,
            namespace,
            registry=None,
        )
        # Moved by deltas, so several pools with the same labels add up; "livesum" sums the
        # live processes in prometheus_client's multiprocess mode.
        self.queued = Gauge(
            "jobs_queued",
            "Jobs waiting to start (not those sleeping in a backoff).",
            labelnames,
            namespace,
            registry=None,
            multiprocess_mode="livesum",
        )
        self.running = Gauge(
            "attempts_running",
            "Attempts running.",
            labelnames,
            namespace,
            registry=None,
            multiprocess_mode="livesum",
        )
        self.latency = Histogram(
            "admission_latency_seconds",
            "How long each attempt waited for its limits before it started.",
            labelnames,
            namespace,
            registry=None,
            buckets=(*LATENCY_BUCKETS, float("inf")),
        )
        self.paused = Counter(
            "paused_seconds",
            "Seconds paused, by scope (pool, or key: summed over keys), counted when each "
            "pause is over.",
            (*labelnames, "scope"),
            namespace,
            registry=None,
        )
        registered: list[Counter | Gauge | Histogram] = []
        try:
            for metric in (
                self.submitted,
                self.started,
                self.finished,
                self.retries,
                self.queued,
                self.running,
                self.latency,
                self.paused,
            ):
                registry.register(metric)
                registered.append(metric)
        except BaseException:
            # A name the registry already has (a metric of the user's, say): take back what
            # was registered, so that the registry is as it was.
            for metric in reversed(registered):
                registry.unregister(metric)
            raise


#: The families made so far, per registry and namespace.
_FAMILIES: Final[weakref.WeakKeyDictionary[CollectorRegistry, dict[str, _Families]]] = (
    weakref.WeakKeyDictionary()
)
_FAMILIES_LOCK: Final = threading.Lock()


def _families(
    registry: CollectorRegistry, namespace: str, labelnames: tuple[str, ...]
) -> _Families:
    with _FAMILIES_LOCK:
        known = _FAMILIES.setdefault(registry, {})
        families = known.get(namespace)
        if families is None:
            families = known[namespace] = _Families(registry, namespace, labelnames)
        elif families.labelnames != labelnames:
            raise ValueError(
                f"the werkpool metrics of namespace {namespace!r} in this registry have the "
                f"labels {list(families.labelnames)}, not {list(labelnames)}: give every "
                "PrometheusHook of a namespace the same label names"
            )
        return families


def _checked_labels(labels: Mapping[str, str] | None) -> dict[str, str]:
    """*labels* as a dict, once every name is known to be usable.

    All checked here, before any metric is made: a name refused by prometheus_client midway
    (``le`` is refused by the histogram only, the 7th metric) would leave the first metrics
    registered.
    """
    given = cast("object", labels)  # checked at run time: untyped callers pass anything
    if given is None:
        return {}
    if not isinstance(given, Mapping):
        raise TypeError(
            f"labels must be a mapping of label names to values, not {type(given).__name__}"
        )
    checked: dict[str, str] = {}
    for name, value in cast("Mapping[object, str]", given).items():
        if not isinstance(name, str):
            raise TypeError(f"labels must map str names to values, not {type(name).__name__}")
        checked[name] = value
    taken = sorted(_OWN_LABELS.intersection(checked))
    if taken:
        raise ValueError(f"labels must not name {taken}: the hook sets them itself")
    if "le" in checked:
        raise ValueError(
            "labels must not name 'le': prometheus_client reserves it for a histogram's buckets"
        )
    for name in sorted(checked):
        if name.startswith("__"):
            raise ValueError(
                f"labels must not name {name!r}: "
                "names that begin with '__' are reserved by Prometheus"
            )
    return checked


def _child(metric: _M, values: tuple[str, ...]) -> _M:
    return metric.labels(*values) if values else metric


@final
class _Series:
    """The time series of one hook (its label values), as a :class:`MetricSink`."""

    __slots__ = (
        "_latency",
        "_outcomes",
        "_queued",
        "_retries",
        "_running",
        "_scopes",
        "_started",
        "_submitted",
    )

    def __init__(self, families: _Families, values: tuple[str, ...]) -> None:
        self._submitted = _child(families.submitted, values)
        self._started = _child(families.started, values)
        self._retries = _child(families.retries, values)
        self._queued = _child(families.queued, values)
        self._running = _child(families.running, values)
        self._latency = _child(families.latency, values)
        # Every labelled child made now, so each shows 0 from the first scrape.
        outcomes: tuple[Outcome, ...] = ("completed", "failed", "cancelled")
        self._outcomes = {o: families.finished.labels(*values, o) for o in outcomes}
        scopes: tuple[Scope, ...] = ("pool", "key")
        self._scopes = {s: families.paused.labels(*values, s) for s in scopes}

    def submitted(self) -> None:
        self._submitted.inc()

    def started(self, waited: float | None) -> None:
        self._started.inc()
        if waited is not None:
            self._latency.observe(waited)

    def retried(self) -> None:
        self._retries.inc()

    def finished(self, outcome: Outcome) -> None:
        self._outcomes[outcome].inc()

    def counts(self, queued: int, running: int) -> None:
        if queued:
            self._queued.inc(queued)
        if running:
            self._running.inc(running)

    def paused(self, scope: Scope, seconds: float) -> None:
        self._scopes[scope].inc(seconds)


@final
class PrometheusHook:
    """
    A hook that keeps a pool's metrics in prometheus_client metrics.

    With the default *namespace*:

    - counters ``werkpool_jobs_submitted_total``, ``werkpool_attempts_started_total``,
      ``werkpool_jobs_finished_total`` (label ``outcome``: ``completed``, ``failed`` or
      ``cancelled``) and ``werkpool_retries_total``;
    - gauges ``werkpool_jobs_queued`` (jobs waiting to start) and ``werkpool_attempts_running``;
    - a histogram ``werkpool_admission_latency_seconds`` (how long each attempt waited for its
      limits);
    - a counter ``werkpool_paused_seconds_total`` (label ``scope``: ``pool``, or ``key`` for the
      keys' pauses summed): a pause counts from its ``"paused"`` event to the earlier of its end
      (extensions included) and ``resume()``, and is added once it is over, at the next event
      of the pool (a pause still running is not counted yet).

    Use one hook per pool, with *labels* to tell the pools apart (``{"pool": "crawler"}``):
    the hooks of one registry and namespace share the metrics (every hook there must use the
    same label names), and the gauges of hooks with the same labels add up.

    :param registry: where the metrics are registered (default: prometheus_client's
        ``REGISTRY``)
    :param namespace: the prefix of the metrics' names
    :param labels: constant labels of this hook's series (not ``outcome`` or ``scope``, which
        the hook sets, nor ``le`` or a name that begins with ``__``, which Prometheus reserves)
    :raises TypeError: if *labels* is not a mapping with str names, or *namespace* not a str
    :raises ValueError: if a label name is invalid or taken, or the namespace's metrics in this
        registry have other label names (or a name one of them would take). Nothing is
        registered then: the registry is left as it was.

    .. versionadded:: 0.3
    """

    __slots__ = ("_feed", "labels", "namespace", "registry")

    def __init__(
        self,
        *,
        registry: CollectorRegistry | None = None,
        namespace: str = "werkpool",
        labels: Mapping[str, str] | None = None,
    ) -> None:
        labels = _checked_labels(labels)
        given = cast("object", namespace)  # checked at run time: untyped callers pass anything
        if not isinstance(given, str):
            raise TypeError(f"namespace must be a str, not {type(given).__name__}")
        #: Where the metrics are registered.
        self.registry = REGISTRY if registry is None else registry
        #: The prefix of the metrics' names.
        self.namespace = namespace
        #: This hook's constant labels.
        self.labels = labels
        names = tuple(sorted(labels))  # {"a", "b"} and {"b", "a"} are the same label names
        families = _families(self.registry, namespace, names)
        self._feed = MetricsFeed(_Series(families, tuple(labels[name] for name in names)))

    def __repr__(self) -> str:
        return f"PrometheusHook(namespace={self.namespace!r}, labels={self.labels!r})"

    def __call__(self, event: JobEvent, /) -> None:
        """Update the metrics for *event*."""
        self._feed(event)
