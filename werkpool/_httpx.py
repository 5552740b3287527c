"""An httpx transport that sends every request of a client through a :class:`WorkerPool`.

Each request is one job of the pool: its attempts take the pool's size, rate and key slots, are
retried by the pool's policy, and a 429 or 503 with ``Retry-After`` is the pool's pushback. The
attempt ends only when the response is closed, so that ``size`` counts a streaming response
while its body is read, as the server sees it.

The hand-over: the caller submits the job and waits until the attempt has a final response (or
the job is over); the attempt hands that response over with its stream wrapped, and waits until
the stream is closed. The caller never waits for the job itself.
"""

from __future__ import annotations

import math
import time
from collections.abc import Hashable, Iterable, Mapping
from datetime import timezone
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Final, cast, final

import anyio
import httpx

from ._exceptions import FutureCancelled, RetryAfter
from ._options import default_backoff
from ._pool import WorkerPool, check_max_retry_after
from ._scheduler import DEFAULT_MAX_RETRY_AFTER
from ._validate import check_backoff, check_retries, check_retryable, check_timeout

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from types import TracebackType

    from ._futures import JobFuture

__all__ = ["IDEMPOTENT_METHODS", "PoolTransport", "by_host", "retry_after_seconds"]

#: The methods that are safe to send twice (RFC 9110, 9.2.2): the only ones retried by default.
IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})

#: The statuses that push back (the server asks for a pause): 429 Too Many Requests and
#: 503 Service Unavailable.
_PUSHBACK: Final = frozenset({429, 503})


def by_host(request: httpx.Request) -> str:
    """The default key of a request: its host, with the port when it is not the scheme's
    default (``"api.example.com"``, ``"127.0.0.1:8000"``)."""
    url = request.url
    port = url.port
    return url.host if port is None else f"{url.host}:{port}"


def retry_after_seconds(response: httpx.Response, now: float | None = None) -> float | None:
    """The delay a response's ``Retry-After`` asks for, in seconds (>= 0), or None.

    Both forms of RFC 9110 (10.2.3) are read: a number of seconds (decimals are accepted), or an
    HTTP date, counted from *now* (default: :func:`time.time`). A date in the past gives 0; a
    missing or unreadable header gives None.
    """
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:  # "-0000": UTC by RFC 5322
            when = when.replace(tzinfo=timezone.utc)
        seconds = when.timestamp() - (time.time() if now is None else now)
        return max(seconds, 0.0)
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


class _ClampedRetryAfter(RetryAfter):
    """The server's pushback, clamped to the transport's ``max_retry_after``: the pool pauses
    that long, and its paused event reports what the server asked (``clamped_from``)."""

    def __init__(self, seconds: float, asked: float) -> None:
        super().__init__(
            seconds, f"the server asked to retry after {asked:g} s; clamped to {seconds:g} s"
        )
        #: The delay the server asked for (the scheduler reads it for the paused event).
        self.clamped_from = asked


class _StatusRetry(Exception):
    """An attempt answered with a status that is retried (and has retries left)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"the server answered {status}: retried")
        self.status = status


@final
class _HeldStream(httpx.AsyncByteStream):
    """A response's body stream that frees its request's slot when closed."""

    __slots__ = ("_closed", "_stream")

    def __init__(self, stream: httpx.AsyncByteStream, closed: anyio.Event) -> None:
        self._stream = stream
        self._closed = closed

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            self._closed.set()


@final
class _Exchange:
    """One request through the pool: its attempts, and the hand-over of its response."""

    __slots__ = ("attempts", "key", "ready", "request", "response", "retries", "transport")

    def __init__(
        self, transport: PoolTransport, request: httpx.Request, key: Hashable, retries: int
    ) -> None:
        self.transport = transport
        self.request = request
        self.key = key
        self.retries = retries
        self.attempts = 0
        #: Set when the caller may go on: a response was handed over, or the job is over.
        self.ready = anyio.Event()
        #: The response handed over (its slot held until it is closed).
        self.response: httpx.Response | None = None

    def job_done(self, future: object) -> None:
        self.ready.set()

    async def attempt(self) -> None:
        """One attempt: send the request, decide on its status, hand the response over."""
        transport = self.transport
        self.attempts += 1
        last = self.attempts > self.retries
        response = await self._send()
        status = response.status_code
        delay = None
        if status in _PUSHBACK:
            delay = retry_after_seconds(response)
            if delay is None and status == 429:
                # "Too many" without a delay: still a pushback, as long as the job's backoff.
                delay = transport.backoff(self.attempts)
        asked = None
        if delay is not None and delay > transport.max_retry_after:
            # A Retry-After of 1e308 s or a date in year 9999 must not stop the host for good.
            asked, delay = delay, transport.max_retry_after
        if not last and status in transport.retry_statuses:
            await response.aclose()  # the body is never read: the connection is freed
            if delay is not None:
                # The pool pauses (no longer than its own max_retry_after either), then retries.
                raise RetryAfter(delay) if asked is None else _ClampedRetryAfter(delay, asked)
            raise _StatusRetry(status)
        if delay is not None:
            # Not retried (the last attempt, or a status not retried): the pool still hears the
            # pushback (it pauses, its adaptive rates slow down), and the caller gets this
            # response as the server sent it, holding its slot like any other.
            transport.pool._push_back(delay, self.key, asked)
        if response.is_closed:
            # Read and closed already (a response built with its content, as MockTransport's
            # are): no connection is held, so neither is the slot.
            self.response = response
            self.ready.set()
            return
        closed = anyio.Event()
        stream = response.stream
        assert isinstance(stream, httpx.AsyncByteStream)
        response.stream = _HeldStream(stream, closed)
        self.response = response
        self.ready.set()
        try:
            await closed.wait()  # the slot is held while the caller reads the body
        except BaseException:
            # The pool stops the job (kill, or the caller was cancelled before it took the
            # response): close the connection so no body is left half read.
            with anyio.CancelScope(shield=True):
                await stream.aclose()
            raise

    async def _send(self) -> httpx.Response:
        transport = self.transport
        timeout = transport.timeout
        if timeout is None:
            return await transport.transport.handle_async_request(self.request)
        with anyio.move_on_after(timeout) as scope:
            return await transport.transport.handle_async_request(self.request)
        assert scope.cancelled_caught
        raise httpx.TimeoutException(
            f"no response within {timeout:g} s (the transport's per-attempt timeout)",
            request=self.request,
        )


@final
class PoolTransport(httpx.AsyncBaseTransport):
    """
    An httpx transport that sends each request through *pool*, under its limits.

    ``httpx.AsyncClient(transport=PoolTransport(pool))`` makes every request of the client a job
    of the pool: each attempt takes the pool's size and rate slots (and its key's, with the
    pool's ``per_key=`` limits: the key is the request's host by default), and the pool's
    pushbacks, pauses and statistics see it. The pool must be running (``async with`` it around
    the client's use).

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
      transport never reads a body itself (a retried response is closed unread).

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

    .. versionadded:: 0.3
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

    def __repr__(self) -> str:
        return f"<werkpool.httpx.PoolTransport pool={self.pool!r} transport={self.transport!r}>"

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send *request* through the pool; return its response once its headers are in."""
        key = None if self.key is None else self.key(request)
        cost = None if self.cost is None else self.cost(request)
        retries = self.retries if self._may_retry(request) else 0
        exchange = _Exchange(self, request, key, retries)
        future: JobFuture[None] = await self.pool.submit(
            exchange.attempt,
            retries=retries,
            retryable_exceptions=self._retryable,
            backoff=self.backoff,
            key=key,
            cost=cost,
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
