"""One request's way through the pool: :class:`_Exchange`, the job of one request, whose attempts
send it, decide on each response's status (retry, pushback, or hand it over), and hold the
request's slot until the caller closes the response (:class:`_HeldStream`).

The hand-over: the caller submits the job and waits until the attempt has a final response (or
the job is over); the attempt hands that response over with its stream wrapped, and waits until
the stream is closed. The caller never waits for the job itself.

The transport is a layer above: an exchange reaches it through :class:`ExchangeHost`, which
:class:`~werkpool.httpx.PoolTransport` implements and passes in as itself.
"""

from __future__ import annotations

import inspect
import time
from typing import TYPE_CHECKING, Literal, Protocol, cast, final

import anyio
import httpx

from .._core._exceptions import RetryAfter
from .._core._ratelimit_headers import parse_headers
from ._messages import default_classify, small_body
from ._statistics import RequestStatistics

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Mapping

    from .._core._ratelimit_headers import HeaderReport
    from .._pool import WorkerPool

__all__ = ["ExchangeHost"]


class ExchangeHost(Protocol):
    """What an exchange needs of its transport: the settings it sends by, and the counts and
    the log of attempts sent (for the servers' budgets) it keeps."""

    @property
    def pool(self) -> WorkerPool: ...
    @property
    def transport(self) -> httpx.AsyncBaseTransport: ...
    @property
    def timeout(self) -> float | None: ...
    @property
    def backoff(self) -> Callable[[int], float]: ...
    @property
    def retry_statuses(self) -> frozenset[int]: ...
    @property
    def max_retry_after(self) -> float: ...
    @property
    def classify(
        self,
    ) -> Callable[[httpx.Response], Awaitable[RetryAfter | None] | RetryAfter | None] | None: ...
    @property
    def headers(self) -> Literal["pool", "key"] | None: ...

    #: The attempts sent so far, each counted as it starts.
    _attempts: int

    def _sending(self, cost: Mapping[str, float] | None) -> int: ...
    def _sent(self, number: int) -> None: ...
    def _observe(self, report: HeaderReport, key: Hashable, number: int) -> None: ...
    def _pushed_back(self, scope: str | None, key: Hashable) -> None: ...


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
        transport: ExchangeHost,
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
        if retried and small_body(response):
            # A refusal that is retried is never handed back: its body may be read, so that
            # classify can see what the server named ({"limits": ["tpm"]}).
            await response.aread()
        # Checked at run time: a user's classify may return anything, whatever its annotation.
        result = cast("object", classify(response))
        if inspect.isawaitable(result):
            result = cast("object", await result)
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


def _push_back(
    pool: WorkerPool, delay: float, key: Hashable, scope: str | None, asked: float | None
) -> None:
    """The pool hears a pushback of *scope* that fails no job (the last response, handed back):
    ``"pool"`` pauses the pool, ``"key"`` or None the request's key (the pool without one), a
    limit's name that limit."""
    if scope == "key" and key is None:
        scope = None  # a request without a key: its key is the pool
    pool._push_back(delay, key, asked, scope)
