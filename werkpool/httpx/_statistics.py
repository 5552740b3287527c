"""The transport's statistics records: :class:`RequestStatistics` (what one request went through,
on its response) and :class:`TransportStatistics` (a transport's counts since it was made).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, final

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["RequestStatistics", "TransportStatistics"]


@final
@dataclass(frozen=True, slots=True)
class RequestStatistics:
    """What one request went through in the pool: ``response.extensions["werkpool"]`` of each
    response a :class:`PoolTransport` returns.

    .. versionadded:: 0.3
    """

    #: The attempts sent (1 without retries).
    attempts: int
    #: The attempts the server pushed back (a 429 or 503 with ``Retry-After``, or what
    #: ``classify=`` called a pushback), the returned one included.
    pushbacks: int
    #: The seconds the request waited for the pool, before its attempts: in the queue, for
    #: its limits, its backoffs and pauses (not the attempts' own time).
    waited: float


@final
@dataclass(frozen=True, slots=True)
class TransportStatistics:
    """A :class:`PoolTransport`'s counts since it was made (:meth:`PoolTransport.statistics`).

    .. versionadded:: 0.3
    """

    #: The requests sent through the transport.
    requests: int = 0
    #: Their attempts (more than *requests* with retries).
    attempts: int = 0
    #: The pushbacks heard (see :attr:`RequestStatistics.pushbacks`).
    pushbacks: int = 0
    #: The pushbacks by scope: ``"key"``, ``"pool"``, or a limit's name (a scope of None is
    #: counted as what it means: ``"key"`` for a request with a key, else ``"pool"``).
    pushbacks_by_scope: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    #: The servers' budgets (rate-limit headers) that lowered a limit of the pool.
    budgets_applied: int = 0
    #: The rate-limit header fields ignored as malformed or hostile.
    headers_ignored: int = 0
