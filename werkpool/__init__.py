"""werkpool: run many async jobs under a concurrency limit, a rate limit, or both.

Works on asyncio and trio through AnyIO. See :class:`WorkerPool`.
"""

from __future__ import annotations

from ._events import Event as Event
from ._events import Hook as Hook
from ._exceptions import FutureCancelled as FutureCancelled
from ._exceptions import FutureNotFinished as FutureNotFinished
from ._exceptions import LimitUnavailableError as LimitUnavailableError
from ._exceptions import PoolClosedError as PoolClosedError
from ._exceptions import PoolFullError as PoolFullError
from ._exceptions import RetryAfter as RetryAfter
from ._exceptions import SharedLimitError as SharedLimitError
from ._futures import Future as Future
from ._futures import JobFuture as JobFuture
from ._logging import LoggingHook as LoggingHook
from ._map import MapIterator as MapIterator
from ._options import BACKOFF_CAP as BACKOFF_CAP
from ._options import default_backoff as default_backoff
from ._pool import WorkerPool as WorkerPool
from ._pool import settle as settle
from ._pool import worker_pool as worker_pool
from ._progress import ProgressBar as ProgressBar
from ._progress import progress as progress
from ._specs import Concurrency as Concurrency
from ._specs import Rate as Rate
from ._specs import Shared as Shared
from ._specs import Window as Window
from ._statistics import LimitStatistics as LimitStatistics
from ._statistics import PoolStatistics as PoolStatistics

__all__ = [
    "BACKOFF_CAP",
    "Concurrency",
    "Event",
    "Future",
    "FutureCancelled",
    "FutureNotFinished",
    "Hook",
    "JobFuture",
    "LimitStatistics",
    "LimitUnavailableError",
    "LoggingHook",
    "MapIterator",
    "PoolClosedError",
    "PoolFullError",
    "PoolStatistics",
    "ProgressBar",
    "Rate",
    "RetryAfter",
    "Shared",
    "SharedLimitError",
    "Window",
    "WorkerPool",
    "default_backoff",
    "progress",
    "settle",
    "worker_pool",
]


def _fix_module_names() -> None:
    """Re-exported objects say where users import them from, in reprs, tracebacks and docs."""
    namespace = globals()
    for name in __all__:
        obj = namespace[name]
        if getattr(obj, "__module__", "").startswith("werkpool._"):
            obj.__module__ = __name__


_fix_module_names()
del _fix_module_names


def __getattr__(name: str) -> str:
    if name == "__version__":
        from importlib.metadata import version

        return version("werkpool")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
