"""Shared limits across processes and hosts, kept in Redis (``pip install "werkpool[redis]"``).

A limit value bound to a :class:`RedisStore` and a name is shared by every pool that names it,
wherever the pools run::

    import coredis
    from werkpool import Concurrency, Rate, WorkerPool
    from werkpool.redis import RedisStore

    async with coredis.Redis(host="127.0.0.1") as client, RedisStore(client) as store:
        limits = [Concurrency(10), Rate(100).shared(store, "api.example.com")]
        async with WorkerPool(limits=limits) as pool:
            ...

It needs `coredis <https://coredis.readthedocs.io>`_, which runs on asyncio and trio alike.

.. versionadded:: 0.3
"""

from __future__ import annotations

from .._extras import needs_extra

with needs_extra(__name__, "redis", "coredis"):
    from ._store import RedisStore as RedisStore
    from ._store import StoreStatistics as StoreStatistics

__all__ = ["RedisStore", "StoreStatistics"]

RedisStore.__module__ = StoreStatistics.__module__ = __name__
