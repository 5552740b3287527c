"""werkpool: run many async jobs under a concurrency limit, a rate limit, or both.

Works on asyncio and trio through AnyIO. See :class:`WorkerPool`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING as _TYPE_CHECKING

from ._core._events import Hook as Hook
from ._core._events import JobEvent as JobEvent
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
from ._facade._settle import settle as settle
from ._observe._logging import LoggingHook as LoggingHook
from ._observe._progress import ProgressBar as ProgressBar
from ._observe._progress import progress as progress
from ._pool import WorkerPool as WorkerPool
from ._pool import worker_pool as worker_pool
from ._runtime._futures import Future as Future
from ._runtime._futures import JobFuture as JobFuture
from ._runtime._map import MapIterator as MapIterator

__all__ = [
    "BACKOFF_CAP",
    "Concurrency",
    "Future",
    "FutureCancelled",
    "FutureNotFinished",
    "Hook",
    "JobEvent",
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


if _TYPE_CHECKING:
    # What __getattr__ gives, for type checkers. ``werkpool.Event``, the deprecated alias, still
    # checks in an annotation; at run time it is not in the namespace, so that each access warns.
    __version__: str
    Event = JobEvent


def __getattr__(name: str) -> object:
    if name == "__version__":
        from importlib.metadata import version

        return version("werkpool")
    if name == "Event":
        # Renamed in 0.4: "Event" collided with anyio.Event, asyncio.Event and trio.Event in
        # code that uses both. The alias goes in the release after.
        import warnings

        warnings.warn(
            "werkpool.Event is deprecated; use werkpool.JobEvent (the same class)",
            DeprecationWarning,
            stacklevel=2,
        )
        return JobEvent
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
