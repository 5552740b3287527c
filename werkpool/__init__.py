"""werkpool: run many async jobs under a concurrency limit, a rate limit, or both.

Works on asyncio and trio through AnyIO. See :class:`WorkerPool`.
"""

from __future__ import annotations

from ._core._events import Event as Event
from ._core._events import Hook as Hook
from ._core._exceptions import FutureCancelled as FutureCancelled
from ._core._exceptions import FutureNotFinished as FutureNotFinished
from ._core._exceptions import LimitUnavailableError as LimitUnavailableError
from ._core._exceptions import PoolClosedError as PoolClosedError
from ._core._exceptions import PoolFullError as PoolFullError
from ._core._exceptions import RetryAfter as RetryAfter
from ._core._exceptions import SharedLimitError as SharedLimitError
from ._core._options import BACKOFF_CAP as BACKOFF_CAP
from ._core._options import default_backoff as default_backoff
from ._core._specs import Concurrency as Concurrency
from ._core._specs import Rate as Rate
from ._core._specs import Shared as Shared
from ._core._specs import Window as Window
from ._core._statistics import LimitStatistics as LimitStatistics
from ._core._statistics import PoolStatistics as PoolStatistics
from ._observe._logging import LoggingHook as LoggingHook
from ._observe._progress import ProgressBar as ProgressBar
from ._observe._progress import progress as progress
from ._pool import WorkerPool as WorkerPool
from ._pool import settle as settle
from ._pool import worker_pool as worker_pool
from ._runtime._futures import Future as Future
from ._runtime._futures import JobFuture as JobFuture
from ._runtime._map import MapIterator as MapIterator

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
