"""Every request of an httpx client through a pool (``pip install "werkpool[httpx]"``).

:class:`PoolTransport` wraps another transport (httpx's own by default) and sends each request
as a job of a :class:`werkpool.WorkerPool`: under its size, rates and per-host limits, with its
retries, with 429/503 ``Retry-After`` answers as the pool's pushbacks (``classify=`` says which
limit refused), and with the servers' rate-limit headers lowering the pool's limits::

    import httpx
    from werkpool import Rate, WorkerPool
    from werkpool.httpx import PoolTransport

    async with WorkerPool(size=10, per_key=[Rate(5)]) as pool:
        async with httpx.AsyncClient(transport=PoolTransport(pool, retries=3)) as client:
            response = await client.get("https://example.com/")

It works on asyncio and trio alike (httpx runs on both through anyio).

.. versionadded:: 0.3
"""

from __future__ import annotations

from .._extras import needs_extra

with needs_extra(__name__, "httpx", "httpx"):
    from ._messages import IDEMPOTENT_METHODS as IDEMPOTENT_METHODS
    from ._messages import by_host as by_host
    from ._messages import default_classify as default_classify
    from ._messages import retry_after_seconds as retry_after_seconds
    from ._statistics import RequestStatistics as RequestStatistics
    from ._statistics import TransportStatistics as TransportStatistics
    from ._transport import PoolTransport as PoolTransport

__all__ = [
    "IDEMPOTENT_METHODS",
    "PoolTransport",
    "RequestStatistics",
    "TransportStatistics",
    "by_host",
    "default_classify",
    "retry_after_seconds",
]

for _name in ("PoolTransport", "RequestStatistics", "TransportStatistics"):
    globals()[_name].__module__ = __name__
by_host.__module__ = default_classify.__module__ = retry_after_seconds.__module__ = __name__
del _name
