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

import inspect
import math
import time
from collections import deque
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timezone
from email.utils import parsedate_to_datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, Literal, cast, final

import anyio
import httpx

from .._core._exceptions import FutureCancelled, RetryAfter
from .._core._options import default_backoff
from .._core._ratelimit_headers import HeaderReport, less_sent, parse_headers
from .._core._scheduler import DEFAULT_MAX_RETRY_AFTER
from .._core._validate import check_backoff, check_retries, check_retryable, check_timeout
from .._pool import WorkerPool, check_max_retry_after

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable
    from types import TracebackType

    from .._runtime._futures import JobFuture

__all__ = [
    "IDEMPOTENT_METHODS",
    "PoolTransport",
    "RequestStatistics",
    "TransportStatistics",
    "by_host",
    "default_classify",
    "retry_after_seconds",
]

#: The methods that are safe to send twice (RFC 9110, 9.2.2): the only ones retried by default.
IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})

#: The statuses that push back (the server asks for a pause): 429 Too Many Requests and
#: 503 Service Unavailable.
_PUSHBACK: Final = frozenset({429, 503})

#: The largest body (its ``Content-Length``, in bytes) read for ``classify=`` before a retry:
#: a refusal's body is small (``{"limits": ["tpm"]}``); a bigger or unsized one is not read.
CLASSIFY_BODY_LIMIT: Final = 64 * 1024


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


def default_classify(response: httpx.Response) -> RetryAfter | None:
    """The pushback a response asks for, as :class:`PoolTransport` reads it by default.

    - A 429 or 503 with a readable ``Retry-After`` (seconds or an HTTP date): a pushback of
      that delay;
    - a 429 without one, whose rate-limit headers show a budget exhausted (``remaining`` 0)
      with a reset: a pushback until the latest such reset;
    - else None (the transport still pushes back on a 429, for as long as the backoff says).

    Its scope is None: the request's key if it has one, else the pool. Only the headers are
    read, never the body. Wrap it to scope a refusal by what the server said::

        def classify(response):
            pushback = default_classify(response)
            if pushback is not None and response.json().get("limits") == ["tpm"]:
                return RetryAfter(pushback.seconds, scope="tpm")
            return pushback

    .. versionadded:: 0.3
    """
    status = response.status_code
    if status not in _PUSHBACK:
        return None
    delay = retry_after_seconds(response)
    if delay is None and status == 429:
        # On a clock of 0: each reset_at is then the delay to it.
        report = parse_headers(response.headers, 0.0, time.time())
        resets = [
            budget.reset_at
            for budget in report.budgets
            if budget.remaining < 1 and budget.reset_at is not None
        ]
        if resets:
            delay = max(resets)
    return None if delay is None else RetryAfter(delay)


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

    def __init__(self, seconds: float, asked: float, scope: str | None = None) -> None:
        super().__init__(
            seconds,
            f"the server asked to retry after {asked:g} s; clamped to {seconds:g} s",
            scope=scope,
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

    __slots__ = (
        "attempts",
        "cost",
        "key",
        "mark",
        "pushbacks",
        "ready",
        "request",
        "response",
        "retries",
        "transport",
        "waited",
    )

    def __init__(
        self,
        transport: PoolTransport,
        request: httpx.Request,
        key: Hashable,
        retries: int,
        cost: Mapping[str, float] | None = None,
    ) -> None:
        self.transport = transport
        self.request = request
        self.key = key
        self.cost = cost
        self.retries = retries
        self.attempts = 0
        self.pushbacks = 0
        #: The seconds spent waiting for the pool so far, and since when it waits again.
        self.waited = 0.0
        self.mark = anyio.current_time()
        #: Set when the caller may go on: a response was handed over, or the job is over.
        self.ready = anyio.Event()
        #: The response handed over (its slot held until it is closed).
        self.response: httpx.Response | None = None

    def job_done(self, future: object) -> None:
        self.ready.set()

    async def attempt(self) -> None:
        """One attempt: send the request, decide on its status, hand the response over."""
        transport = self.transport
        self.waited += anyio.current_time() - self.mark
        self.attempts += 1
        transport._attempts += 1
        last = self.attempts > self.retries
        sent = transport._sending(self.cost)
        try:
            response = await self._send()
            if transport.headers:
                # The server's budgets, from every response (a 200's too): what other clients
                # of the same budget took is in them.
                now = anyio.current_time()
                report = parse_headers(response.headers, now, time.time())
                transport._observe(report, self.key, sent)
        finally:
            transport._sent(sent)
            self.mark = anyio.current_time()  # waiting for the pool again, if it retries
        status = response.status_code
        retried_status = not last and status in transport.retry_statuses
        try:
            pushback = await self._classify(response, retried_status)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await response.aclose()  # classify failed: nobody gets this response
            raise
        delay = scope = asked = None
        if pushback is not None:
            delay, scope = pushback.seconds, pushback.scope
            if delay > transport.max_retry_after:
                # A Retry-After of 1e308 s or a date in year 9999 must not stop the host for
                # good.
                asked, delay = delay, transport.max_retry_after
            self.pushbacks += 1
            transport._pushed_back(scope, self.key)
        if retried_status:
            await response.aclose()  # the connection is freed (the body read, if classify's)
            if pushback is not None and delay is not None:
                # The pool pauses (no longer than its own max_retry_after either), then retries.
                if asked is not None:
                    raise _ClampedRetryAfter(delay, asked, scope)
                raise pushback
            raise _StatusRetry(status)
        if pushback is not None and delay is not None:
            # Not retried (the last attempt, or a status not retried): the pool still hears the
            # pushback (it pauses, its adaptive rates slow down), and the caller gets this
            # response as the server sent it, holding its slot like any other.
            _push_back(transport.pool, delay, self.key, scope, asked)
        response.extensions["werkpool"] = RequestStatistics(
            self.attempts, self.pushbacks, self.waited
        )
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

    async def _classify(self, response: httpx.Response, retried: bool) -> RetryAfter | None:
        """The pushback *response* asks for, by the transport's ``classify=`` (or the default:
        a 429 without a delay still pushes back, as long as the job's backoff)."""
        transport = self.transport
        classify = transport.classify
        if classify is None:
            pushback = default_classify(response)
            if pushback is None and response.status_code == 429:
                pushback = RetryAfter(transport.backoff(self.attempts))
            return pushback
        if retried and _small_body(response):
            # A refusal that is retried is never handed back: its body may be read, so that
            # classify can see what the server named ({"limits": ["tpm"]}).
            await response.aread()
        result: object = classify(response)
        if inspect.isawaitable(result):
            result = await result
        if result is not None and not isinstance(result, RetryAfter):
            raise TypeError(
                f"classify must return None or a werkpool.RetryAfter, not {type(result).__name__}"
            )
        return result

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


def _label(request: httpx.Request) -> str:
    """The job label of *request*: ``"GET https://example.com/a"``, without the URL's user
    info or query (a label goes to logs and spans, and API keys often travel in a query
    string: ``?key=...``)."""
    url = request.url
    if url.userinfo or url.query:
        url = url.copy_with(username=None, password=None, query=None)
    return f"{request.method} {url}"


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
    lines, spans and events (:attr:`werkpool.JobEvent.name`) say which request they are about.

    - **Pushback.** A 429 or 503 with ``Retry-After`` (seconds or an HTTP date) pauses the pool,
      or the request's key, for that long, and slows its adaptive rates down; a 429 without it
      pauses as long as the backoff says. The request is retried after the pause if it may be
      (or at once, after :meth:`WorkerPool.resume`). A delay beyond *max_retry_after* (or the
      pool's own) is clamped to it, and the pool's ``"paused"`` event says what the server
      asked (:attr:`werkpool.JobEvent.clamped_from`).
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
            name=_label(request),
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


def _small_body(response: httpx.Response) -> bool:
    """True if *response* states a body of at most :data:`CLASSIFY_BODY_LIMIT` bytes."""
    length = response.headers.get("content-length", "")
    return length.isdigit() and int(length) <= CLASSIFY_BODY_LIMIT


def _push_back(
    pool: WorkerPool, delay: float, key: Hashable, scope: str | None, asked: float | None
) -> None:
    """The pool hears a pushback of *scope* that fails no job (the last response, handed back):
    ``"pool"`` pauses the pool, ``"key"`` or None the request's key (the pool without one), a
    limit's name that limit."""
    if scope == "key" and key is None:
        scope = None  # a request without a key: its key is the pool
    pool._push_back(delay, key, asked, scope)


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
