"""Spans and metrics of a pool for OpenTelemetry (``pip install "werkpool[otel]"``).

:class:`OpenTelemetryHook` is a hook: pass it to a pool, and each attempt becomes a span and
the pool's counts become metrics, sent wherever the application's OpenTelemetry SDK sends
them::

    from werkpool import WorkerPool
    from werkpool.otel import OpenTelemetryHook

    async with WorkerPool(size=10, rate=5, hooks=[OpenTelemetryHook()]) as pool:
        ...

The extra installs only ``opentelemetry-api``: without an SDK, which the application installs
(``opentelemetry-sdk``) and configures, every call is a no-op. A hook with the default providers
follows the global ones, so an SDK configured later gets its spans and metrics.

.. versionadded:: 0.3
"""

from __future__ import annotations

from .._extras import needs_extra

with needs_extra(__name__, "otel", "opentelemetry"):
    from ._hook import SPAN_NAME as SPAN_NAME
    from ._hook import OpenTelemetryHook as OpenTelemetryHook

__all__ = ["SPAN_NAME", "OpenTelemetryHook"]

OpenTelemetryHook.__module__ = __name__
