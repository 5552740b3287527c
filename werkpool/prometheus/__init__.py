"""A pool's metrics for Prometheus via prometheus_client (``pip install "werkpool[prometheus]"``).

:class:`PrometheusHook` is a hook: pass it to a pool, and its counters, gauges and admission
latency histogram are kept in a prometheus_client registry, served by whatever exposes that
registry (``prometheus_client.start_http_server``, an ASGI app)::

    from werkpool import WorkerPool
    from werkpool.prometheus import PrometheusHook

    hook = PrometheusHook(labels={"pool": "crawler"})
    async with WorkerPool(size=10, hooks=[hook]) as pool:
        ...

.. versionadded:: 0.3
"""

from __future__ import annotations

from .._extras import needs_extra

with needs_extra(__name__, "prometheus", "prometheus_client"):
    from ._hook import PrometheusHook as PrometheusHook

__all__ = ["PrometheusHook"]

PrometheusHook.__module__ = __name__
