"""An httpx transport that sends every request of a client through a :class:`WorkerPool`:
:class:`PoolTransport`, its settings and counts, and the submission of each request as one job.

Each request is one job of the pool: its attempts take the pool's size, rate and key slots, are
retried by the pool's policy, and a 429 or 503 with ``Retry-After`` is the pool's pushback. The
attempt ends only when the response is closed, so that ``size`` counts a streaming response
while its body is read, as the server sees it. The job's attempts and the hand-over of the
response are :mod:`._exchange`'s; what is read from a request and a response is
:mod:`._messages`'.

The transport also keeps the log of the attempts sent and still awaiting their response's
headers: the units sent after the attempt a response answers are taken off the budgets it states.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal, cast, final

import httpx

from .._core._exceptions import FutureCancelled
from .._core._options import default_backoff
from .._core._ratelimit_headers import less_sent
from .._core._scheduler import DEFAULT_MAX_RETRY_AFTER
from .._core._validate import check_backoff, check_retries, check_retryable, check_timeout
from .._pool import WorkerPool, check_max_retry_after
from ._exchange import _Exchange, _StatusRetry
from ._messages import IDEMPOTENT_METHODS, by_host, request_label
from ._statistics import TransportStatistics

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Hashable, Mapping
    from types import TracebackType

    from .._core._exceptions import RetryAfter
    from .._core._ratelimit_headers import HeaderReport
    from .._runtime._futures import JobFuture

__all__ = ["PoolTransport"]


@final
class PoolTransport(httpx.AsyncBaseTransport):
    """
    An httpx transport that sends each request through *pool*, under its limits.

    ``httpx.AsyncClient(transport=PoolTransport(pool))`` makes every request of the client a job
    of the pool: each attempt takes the pool's size and rate slots (and its key's, with the
    pool's ``per_key=`` limits: the key is the request's host by default), and the pool's
    pushbacks, pauses and statistics see it. The pool must be running (``async with`` it around
    the client's use). Each request's job is labelled ``"METHOD url"`` (``"GET
    https://example.com/a"``, without user info or query string) for the pool's hooks: its log
    lines, spans and events (:attr:`werkpool.Event.name`) say which request they are about.

    - **Pushback.** A 429 or 503 with ``Retry-After`` (seconds or an HTTP date) pauses the pool,
      or the request's key, for that long, and slows its adaptive rates down; a 429 without it
      pauses as long as the backoff says. The request is retried after the pause if it may be
      (or at once, after :meth:`WorkerPool.resume`). A delay beyond *max_retry_after* (or the
      pool's own) is clamped to it, and the pool's ``"paused"`` event says what the server
      asked (:attr:`werkpool.Event.clamped_from`).
    - **Retries** (``retries=``, off by default) are for the methods in *retry_methods* (the
      idempotent ones) with a body that can be sent again: a connection error or timeout
      (*retry_exceptions*) or a status in *retry_statuses*. Other requests are sent once. Once
      the retries are spent, the last response is returned as the server sent it (a 429 too),
      or the last error raised.
    - **Slots.** An attempt holds its slot until its response is closed: while a streamed body
      is read (``client.stream(...)``), and until you close a response you never read. The
      transport never reads the body of a response it returns (a retried one is closed unread,
      or read first for a *classify* of yours, see below).
    - **Which limit refused** (*classify*): ``classify(response)`` (sync or async) returns a
      :class:`werkpool.RetryAfter`, whose ``scope`` says what pauses (``"key"``, ``"pool"`` or
      a limit's ``name=``; None: the key if the request has one, else the pool), or None for no
      pushback. By default (:func:`default_classify`) a 429 or 503 with ``Retry-After`` is a
      pushback of the request's key (of the pool with ``key=None``). Before a retry, the body
      of a response with a ``Content-Length`` up to 64 KiB is read for a classify of yours
      (``response.json()`` works there); the last response's body is not. Only the statuses
      in *retry_statuses* are retried; a pushback on another response pauses, and the
      response is returned.
    - **The server's budgets** (*headers*): the rate-limit headers of every response (OpenAI,
      Anthropic, GitHub, the IETF drafts: see :meth:`WorkerPool.observe_headers`) lower the
      pool's limits of the same unit until their reset, so that what other clients of the
      same API key took is not sent into a 429. They apply to the pool's limits (an API key's
      budget is shared by everything it sends), or with ``headers="key"`` to the request's
      key's ``per_key=`` limits (when your key function maps requests to API keys). The units
      of the requests sent after the one a response answers are taken off its budget (the
      server had not counted them). Malformed ones are ignored and counted (:meth:`statistics`).
    - **What each request went through**: ``response.extensions["werkpool"]`` is a
      :class:`RequestStatistics` (attempts, pushbacks, seconds waited for the pool), and
      :meth:`statistics` sums up the transport's.

    :param pool: the pool to send through
    :param transport: the transport that sends each attempt (default: a new
        :class:`httpx.AsyncHTTPTransport` with no connection limit of its own, closed with this
        one). Give yours ``limits=httpx.Limits(max_connections=None)`` or at least the pool's
        size: a request the pool admitted would otherwise wait for a connection after its start
        was dated, which a server sees as a burst.
    :param key: ``key(request)`` gives the request's key (default :func:`by_host`); None: no
        key (pushbacks pause the whole pool)
    :param cost: ``cost(request)`` gives the request's cost per unit (``{"tokens": 500}``) for
        the pool's limits that count a unit, or None
    :param retries: how many times a request may be retried after its first attempt
    :param backoff: the seconds before retry ``n`` (without a pushback)
    :param timeout: the seconds each attempt may wait for the response's headers (its body is
        not timed here: httpx's own timeouts apply to it); over it, the attempt fails with
        :exc:`httpx.TimeoutException`. None: no limit of the pool's.
    :param retry_methods: the methods that may be retried (default: :data:`IDEMPOTENT_METHODS`)
    :param retry_statuses: the statuses retried (default: 429 and 503)
    :param retry_exceptions: the errors retried (default: :exc:`httpx.TransportError`, which
        covers connection errors and timeouts)
    :param max_retry_after: the longest pause a server's ``Retry-After`` may cause, in seconds
        (default 900, 15 minutes; ``math.inf``: no cap of the transport's)
    :param classify: ``classify(response)`` gives the pushback a response asks for (a
        :class:`werkpool.RetryAfter` with its delay and scope) or None; it may be async.
        None: :func:`default_classify`, and a 429 without a delay pushes back as long as the
        backoff says.
    :param headers: apply the servers' rate-limit headers to the pool's limits (True or
        ``"pool"``), to the request's key's limits (``"key"``), or not at all (False)

    .. versionadded:: 0.3
    .. versionchanged:: 0.3 ``classify``, ``headers``, ``response.extensions["werkpool"]``,
        :meth:`statistics`
    """

    def __init__(
        self,
        pool: WorkerPool,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        key: Callable[[httpx.Request], Hashable] | None = by_host,
        cost: Callable[[httpx.Request], Mapping[str, float] | None] | None = None,
        retries: int = 0,
        backoff: Callable[[int], float] = default_backoff,
        timeout: float | None = None,
        retry_methods: Iterable[str] = IDEMPOTENT_METHODS,
        retry_statuses: Iterable[int] = (429, 503),
        retry_exceptions: type[Exception] | Iterable[type[Exception]] = httpx.TransportError,
        max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
        classify: Callable[[httpx.Response], Awaitable[RetryAfter | None] | RetryAfter | None]
        | None = None,
        headers: bool | Literal["pool", "key"] = True,
    ) -> None:
        if not isinstance(cast("object", pool), WorkerPool):  # untyped callers pass anything
            raise TypeError(f"pool must be a werkpool.WorkerPool, not {type(pool).__name__}")
        if transport is None:
            # No connection cap of httpx's own (its default is 100): the pool's size is the cap,
            # and one below it would hold back requests the pool has admitted and dated.
            transport = httpx.AsyncHTTPTransport(
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=100)
            )
        elif not isinstance(cast("object", transport), httpx.AsyncBaseTransport):
            raise TypeError(
                f"transport must be None or an httpx.AsyncBaseTransport, not "
                f"{type(transport).__name__}"
            )
        for name, fn in (("key", key), ("cost", cost)):
            if fn is not None and not callable(fn):
                raise TypeError(
                    f"{name} must be None or a callable taking an httpx.Request, not "
                    f"{type(fn).__name__}"
                )
        if classify is not None and not callable(classify):
            raise TypeError(
                f"classify must be None or a callable taking an httpx.Response, not "
                f"{type(classify).__name__}"
            )
        given = cast("object", headers)
        if type(given) is not bool and given not in ("pool", "key"):
            raise (ValueError if isinstance(given, str) else TypeError)(
                f"headers must be True, False, 'pool' or 'key', got {given!r}"
            )
        self.pool = pool
        self.transport = transport
        self.key = key
        self.cost = cost
        self.retries = check_retries(retries)
        self.backoff = check_backoff(backoff)
        self.timeout = check_timeout(timeout)
        self.retry_methods = _methods(retry_methods)
        self.retry_statuses = _statuses(retry_statuses)
        self._retryable = (*check_retryable(retry_exceptions), _StatusRetry)
        self.max_retry_after = check_max_retry_after(max_retry_after)
        self.classify = classify
        #: Where the servers' budgets go: "pool", "key", or None (not read).
        self.headers: Literal["pool", "key"] | None = (
            "pool" if headers is True else None if headers is False else headers
        )
        self._requests = 0
        self._attempts = 0
        self._pushbacks: dict[str, int] = {}
        self._applied = 0
        self._ignored = 0
        # The attempts sent, in order, as (number, cost), from the oldest still awaiting its
        # response's headers on; and the numbers of those awaiting them. See _observe.
        self._sent_log: deque[tuple[int, Mapping[str, float] | None]] = deque()
        self._awaiting: dict[int, None] = {}
        self._sent_count = 0

    def statistics(self) -> TransportStatistics:
        """The transport's counts so far: requests, attempts, pushbacks (by scope), the
        servers' budgets applied and the rate-limit header fields ignored as malformed.

        .. versionadded:: 0.3
        """
        by_scope = dict(self._pushbacks)
        return TransportStatistics(
            requests=self._requests,
            attempts=self._attempts,
            pushbacks=sum(by_scope.values()),
            pushbacks_by_scope=MappingProxyType(by_scope),
            budgets_applied=self._applied,
            headers_ignored=self._ignored,
        )

    def _sending(self, cost: Mapping[str, float] | None) -> int:
        """An attempt of *cost* is sent: its number, for :meth:`_observe` and :meth:`_sent`."""
        self._sent_count += 1
        number = self._sent_count
        self._sent_log.append((number, cost))
        self._awaiting[number] = None
        return number

    def _sent(self, number: int) -> None:
        """Attempt *number* has its response's headers (or failed): forget the attempts sent
        before the oldest one still awaiting its headers."""
        del self._awaiting[number]
        log = self._sent_log
        oldest = next(iter(self._awaiting), None)  # numbers go in increasing: the first
        if oldest is None:
            log.clear()
        else:
            while log and log[0][0] < oldest:
                log.popleft()

    def _observe(self, report: HeaderReport, key: Hashable, number: int) -> None:
        """Apply a response's budgets to the pool's limits (or *key*'s), and count.

        The server counted what it received before it answered attempt *number*, not the
        attempts sent after it: their units are taken off each budget's remaining (else every
        response in flight would hand out the same units again)."""
        self._ignored += report.ignored
        budgets = report.budgets
        if not budgets:
            return
        later = [cost for sent, cost in self._sent_log if sent > number]
        if later:
            budgets = tuple(less_sent(budget, later) for budget in budgets)
        self._applied += self.pool._observe(budgets, key if self.headers == "key" else None)

    def _pushed_back(self, scope: str | None, key: Hashable) -> None:
        """Count a pushback under the scope it has (None: the key, or the pool)."""
        name = scope if scope is not None else "pool" if key is None else "key"
        self._pushbacks[name] = self._pushbacks.get(name, 0) + 1

    def __repr__(self) -> str:
        return f"<werkpool.httpx.PoolTransport pool={self.pool!r} transport={self.transport!r}>"

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send *request* through the pool; return its response once its headers are in."""
        self._requests += 1
        key = None if self.key is None else self.key(request)
        cost = None if self.cost is None else self.cost(request)
        retries = self.retries if self._may_retry(request) else 0
        exchange = _Exchange(self, request, key, retries, cost)
        future: JobFuture[None] = await self.pool.submit(
            exchange.attempt,
            retries=retries,
            retryable_exceptions=self._retryable,
            backoff=self.backoff,
            key=key,
            cost=cost,
            name=request_label(request),
        )
        future.add_done_callback(exchange.job_done)
        try:
            await exchange.ready.wait()
        except BaseException:
            # The caller gives up: the job stops (an attempt that already handed a response
            # over closes it; nobody will).
            future.cancel()
            raise
        response = exchange.response
        if response is not None:
            return response
        if future.cancelled():
            raise FutureCancelled("the pool cancelled the request (by kill())")
        error = future.exception()
        assert error is not None
        raise error

    def _may_retry(self, request: httpx.Request) -> bool:
        """True if *request* may be sent again: its method allows it and its body can be
        replayed (bytes, not a stream that is read once)."""
        return (
            self.retries > 0
            and request.method in self.retry_methods
            and isinstance(request.stream, httpx.ByteStream)
        )

    async def aclose(self) -> None:
        """Close the wrapped transport (the pool is yours to stop)."""
        await self.transport.aclose()

    async def __aenter__(self) -> PoolTransport:
        await self.transport.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.transport.__aexit__(exc_type, exc_value, traceback)


def _methods(methods: object) -> frozenset[str]:
    if isinstance(methods, str) or not isinstance(methods, Iterable):
        raise TypeError(
            f"retry_methods must be an iterable of method names, not {type(methods).__name__}"
        )
    names: set[str] = set()
    for method in cast("Iterable[object]", methods):
        if not isinstance(method, str):
            raise TypeError(f"retry_methods must hold str, not {type(method).__name__}")
        names.add(method.upper())
    return frozenset(names)


def _statuses(statuses: object) -> frozenset[int]:
    if isinstance(statuses, (str, bytes)) or not isinstance(statuses, Iterable):
        raise TypeError(
            f"retry_statuses must be an iterable of status codes, not {type(statuses).__name__}"
        )
    codes: set[int] = set()
    for status in cast("Iterable[object]", statuses):
        if isinstance(status, bool) or not isinstance(status, int):
            raise TypeError(f"retry_statuses must hold int, not {type(status).__name__}")
        if not 100 <= status <= 599:
            raise ValueError(f"retry_statuses must hold status codes 100-599, got {status!r}")
        codes.add(status)
    return frozenset(codes)
