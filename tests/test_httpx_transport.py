"""werkpool.httpx.PoolTransport: every request of an httpx client is a job of the pool.

The requests go to an :class:`httpx.MockTransport` whose handler (:class:`Server`) records when
each attempt reaches it and answers from a script, on virtual time on both backends: the pool's
size, rates, per-host keys and costs are read off the handler's clock; a 429 or 503 with
``Retry-After`` must pause the request's key (or the pool, with ``key=None``) and be retried
after the pause; only idempotent methods with a replayable body are retried; a response's slot is
held until the response is closed, and the transport never reads a body itself.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any, ClassVar

import anyio
import httpx
import pytest
from support import approx, assert_idle, echo, rate_violation

import werkpool
import werkpool.httpx
from werkpool import FutureCancelled, Rate, WorkerPool
from werkpool.httpx import IDEMPOTENT_METHODS, PoolTransport, by_host, retry_after_seconds

A = "http://a.example"
B = "http://b.example"


# Constant backoffs, so that retry times are exact on the virtual clock.
def half_second(retry: int) -> float:
    return 0.5


def two_seconds(retry: int) -> float:
    return 2.0


# -- a scripted server behind httpx.MockTransport --------------------------------------------------


Answer = httpx.Response | Exception | Callable[[httpx.Request], Awaitable[httpx.Response]]


@dataclass
class Call:
    """One attempt as the server saw it."""

    time: float
    method: str
    host: str
    path: str
    body: bytes


@dataclass
class Server:
    """A MockTransport handler: answers each path from its script (then 200 "ok"), records every
    call, and counts the calls in progress at once (and those cancelled midway)."""

    script: dict[str, list[Answer]] = field(default_factory=dict)
    #: How long each call takes before it answers.
    duration: float = 0.0
    calls: list[Call] = field(default_factory=list)
    running: int = 0
    peak: int = 0
    cancelled: int = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        self.calls.append(
            Call(
                anyio.current_time(), request.method, url.netloc.decode(), url.path, request.content
            )
        )
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            if self.duration:
                await anyio.sleep(self.duration)
            answers = self.script.get(url.path)
            answer = answers.pop(0) if answers else httpx.Response(200, text="ok")
            if isinstance(answer, Exception):
                raise answer
            if isinstance(answer, httpx.Response):
                return answer
            return await answer(request)
        except anyio.get_cancelled_exc_class():
            self.cancelled += 1
            raise
        finally:
            self.running -= 1

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)

    def times(self, t0: float, path: str | None = None, host: str | None = None) -> list[float]:
        """When the calls (to *path* / *host*, if given) arrived, from *t0*, sorted."""
        return sorted(
            call.time - t0
            for call in self.calls
            if (path is None or call.path == path) and (host is None or call.host == host)
        )


class RecordingStream(httpx.AsyncByteStream):
    """A response body that records how often it is read from and whether it was closed."""

    def __init__(self, *chunks: bytes, delay: float = 0.0) -> None:
        self.chunks = chunks or (b"slow ", b"down")
        self.delay = delay
        self.reads = 0
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            if self.delay:
                await anyio.sleep(self.delay)
            self.reads += 1
            yield chunk

    async def aclose(self) -> None:
        self.closed = True


def answer(
    status: int,
    retry_after: str | None = None,
    stream: httpx.AsyncByteStream | None = None,
    **headers: str,
) -> httpx.Response:
    """A response with *status*, an optional ``Retry-After``, more headers (``X_Attempt="2"``
    is ``X-Attempt: 2``) and an optional unread body."""
    headers = {name.replace("_", "-"): value for name, value in headers.items()}
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    if stream is None:
        return httpx.Response(status, headers=headers, text=f"status {status}")
    return httpx.Response(status, headers=headers, stream=stream)


def after(seconds: float, response: httpx.Response) -> Answer:
    """An answer that comes *seconds* after the request."""

    async def slow(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(seconds)
        return response

    return slow


def client_for(pool: WorkerPool, server: Server, **options: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=PoolTransport(pool, server.transport, **options))


async def get_all(client: httpx.AsyncClient, urls: list[str]) -> list[httpx.Response]:
    """GET every URL at once; the responses in the order of *urls*."""
    responses: dict[int, httpx.Response] = {}

    async def get(index: int, url: str) -> None:
        responses[index] = await client.get(url)

    async with anyio.create_task_group() as tg:
        for index, url in enumerate(urls):
            tg.start_soon(get, index, url)
    return [responses[index] for index in range(len(urls))]


async def settle() -> None:
    """Let the pool's tasks see what just happened (a closed response ends its attempt one
    checkpoint later). On asyncio, anyio polls every 0.1 s here: the virtual clock moves."""
    await anyio.wait_all_tasks_blocked()


# -- every request goes through the pool ----------------------------------------------------------


class TestThroughThePool:
    async def test_size_bounds_the_requests_in_progress(self) -> None:
        """size=2, five requests of 1 s each: never more than 2 in the handler, 2 by 2."""
        server = Server(duration=1.0)
        t0 = anyio.current_time()
        async with WorkerPool(size=2) as pool, client_for(pool, server) as client:
            responses = await get_all(client, [f"{A}/{i}" for i in range(5)])
        assert [r.status_code for r in responses] == [200] * 5
        assert server.peak == 2
        assert server.times(t0) == [0, 0, approx(1), approx(1), approx(2)]
        assert_idle(pool)

    async def test_rate_spaces_the_starts(self) -> None:
        """rate=4: five requests reach the handler 0.25 s apart, never closer."""
        server = Server()
        t0 = anyio.current_time()
        async with WorkerPool(rate=4) as pool, client_for(pool, server) as client:
            await get_all(client, [f"{A}/{i}" for i in range(5)])
        starts = server.times(t0)
        assert starts == [approx(0.25 * i) for i in range(5)]
        assert rate_violation(starts, 4, 1) is None

    async def test_each_request_is_one_job_of_the_pool(self) -> None:
        """Three requests: three jobs, three attempts, all completed; the responses are the
        server's (status, headers, body)."""
        server = Server({"/teapot": [httpx.Response(418, headers={"X-Tea": "1"}, text="tea")]})
        async with WorkerPool() as pool, client_for(pool, server) as client:
            ok = await client.get(f"{A}/x")
            teapot = await client.get(f"{A}/teapot")
            await client.post(f"{A}/y", content=b"data")
            stats = pool.statistics()
        assert (ok.status_code, ok.text) == (200, "ok")
        assert (teapot.status_code, teapot.headers["X-Tea"], teapot.text) == (418, "1", "tea")
        assert (stats.submitted, stats.attempts, stats.completed) == (3, 3, 3)
        assert [c.method for c in server.calls] == ["GET", "GET", "POST"]
        assert server.calls[2].body == b"data"


# -- keys: the request's host by default ----------------------------------------------------------


class TestKeys:
    URLS: ClassVar[list[str]] = [
        f"{A}/1",
        f"{B}/1",
        f"{A}/2",
        f"{B}/2",
        f"{A}/3",
        f"{B}/3",
        "http://a.example:8080/1",
    ]

    async def test_each_host_has_its_own_per_key_limits(self) -> None:
        """per_key=[Rate(1)]: a.example and b.example each get 1 request per second, side by
        side; a.example:8080 is another key and starts at once."""
        server = Server()
        t0 = anyio.current_time()
        async with WorkerPool(per_key=[Rate(1)]) as pool, client_for(pool, server) as client:
            await get_all(client, self.URLS)
        assert server.times(t0, host="a.example") == [0, approx(1), approx(2)]
        assert server.times(t0, host="b.example") == [0, approx(1), approx(2)]
        assert server.times(t0, host="a.example:8080") == [0]

    async def test_key_none_puts_no_request_under_the_per_key_limits(self) -> None:
        """key=None: the requests have no key, so per_key=[Rate(1)] holds none of them back."""
        server = Server()
        t0 = anyio.current_time()
        async with WorkerPool(per_key=[Rate(1)]) as pool:
            async with client_for(pool, server, key=None) as client:
                await get_all(client, self.URLS)
            assert pool.statistics().keys == 0
        assert server.times(t0) == [0] * len(self.URLS)

    async def test_a_key_function_of_ones_own(self) -> None:
        """key= a callable: requests are keyed by its answer (here a query parameter), not by
        host; it gets each request."""
        server = Server()
        seen: list[str] = []

        def by_user(request: httpx.Request) -> str:
            seen.append(str(request.url))
            return request.url.params["user"]

        urls = [f"{A}/x?user=u1", f"{B}/x?user=u1", f"{A}/y?user=u2"]
        t0 = anyio.current_time()
        async with (
            WorkerPool(per_key=[Rate(1)]) as pool,
            client_for(pool, server, key=by_user) as client,
        ):
            await get_all(client, urls)
        assert sorted(seen) == sorted(urls)
        assert sorted(server.times(t0, path="/x")) == [0, approx(1)]  # u1, on two hosts
        assert server.times(t0, path="/y") == [0]  # u2

    @pytest.mark.parametrize(
        ("url", "key"),
        [
            ("http://a.example/x", "a.example"),
            ("http://a.example:80/x", "a.example"),
            ("https://a.example:443/", "a.example"),
            ("https://a.example:8443/", "a.example:8443"),
            ("http://127.0.0.1:8000/", "127.0.0.1:8000"),
            ("http://A.Example/", "a.example"),
        ],
    )
    def test_by_host(self, url: str, key: str) -> None:
        """The host, with the port only when it is not the scheme's default."""
        assert by_host(httpx.Request("GET", url)) == key


# -- cost -----------------------------------------------------------------------------------------


class TestCost:
    @staticmethod
    def tokens(request: httpx.Request) -> dict[str, float] | None:
        value = request.headers.get("X-Tokens")
        return None if value is None else {"tokens": float(value)}

    async def test_the_cost_hook_prices_each_request(self) -> None:
        """limits=[Rate(100, unit="tokens", burst=100)]: requests of 100 tokens go 1 s apart;
        five of 10 tokens, and one without a cost, go at once."""
        server = Server()
        limits = [Rate(100, unit="tokens", burst=100)]
        t0 = anyio.current_time()
        async with (
            WorkerPool(limits=limits) as pool,
            client_for(pool, server, cost=self.tokens) as client,
        ):
            for _ in range(5):
                await client.get(f"{A}/cheap", headers={"X-Tokens": "10"})
            await client.get(f"{A}/free")
            await anyio.sleep(1)  # the bucket drains
            t1 = anyio.current_time()
            for _ in range(3):
                await client.get(f"{A}/dear", headers={"X-Tokens": "100"})
        assert server.times(t0, path="/cheap") == [0] * 5
        assert server.times(t0, path="/free") == [0]
        assert server.times(t1, path="/dear") == [0, approx(1), approx(2)]

    async def test_a_cost_no_limit_can_admit_is_refused_at_the_call(self) -> None:
        """A request priced above the limit's burst: ValueError from the pool, never sent."""
        server = Server()
        async with (
            WorkerPool(limits=[Rate(100, unit="tokens", burst=100)]) as pool,
            client_for(pool, server, cost=self.tokens) as client,
        ):
            with pytest.raises(ValueError, match=r"can never fit the limit"):
                await client.get(f"{A}/x", headers={"X-Tokens": "500"})
        assert server.calls == []


# -- Retry-After ----------------------------------------------------------------------------------


class TestRetryAfterSeconds:
    NOW = 1_700_000_000.0  # a fixed wall time

    @pytest.mark.parametrize(
        ("value", "seconds"),
        [
            ("5", 5.0),
            ("0", 0.0),
            ("2.5", 2.5),
            (" 7 ", 7.0),
            ("-1", None),
            ("nan", None),
            ("inf", None),
            ("soon", None),
            ("", None),
        ],
    )
    def test_seconds(self, value: str, seconds: float | None) -> None:
        """A number of seconds (decimals accepted); negative, not finite or unreadable: None."""
        response = httpx.Response(429, headers={"Retry-After": value})
        assert retry_after_seconds(response, now=self.NOW) == seconds

    def test_missing(self) -> None:
        assert retry_after_seconds(httpx.Response(429), now=self.NOW) is None

    @pytest.mark.parametrize("usegmt", [True, False], ids=["GMT", "-0000"])
    @pytest.mark.parametrize(("offset", "seconds"), [(30, 30.0), (-30, 0.0)])
    def test_http_date(self, usegmt: bool, offset: int, seconds: float) -> None:
        """An HTTP date counts from *now*; a date in the past gives 0."""
        date = formatdate(self.NOW + offset, usegmt=usegmt)
        response = httpx.Response(503, headers={"Retry-After": date})
        assert retry_after_seconds(response, now=self.NOW) == seconds

    def test_http_date_counts_from_the_wall_clock_by_default(self) -> None:
        date = formatdate(math.ceil(time.time()) + 60, usegmt=True)
        delay = retry_after_seconds(httpx.Response(429, headers={"Retry-After": date}))
        assert delay is not None
        assert 55 < delay <= 61


# -- pushback: 429 and 503 ------------------------------------------------------------------------


class TestPushback:
    @pytest.mark.parametrize("status", [429, 503])
    @pytest.mark.parametrize(("header", "delay"), [("5", 5.0), ("2.5", 2.5)])
    async def test_retry_after_pauses_the_host_and_the_request_is_retried(
        self, status: int, header: str, delay: float
    ) -> None:
        """A 429/503 with Retry-After at 0: a.example's requests wait out the delay (the retry
        and one sent at 1 s), b.example's do not; the pool itself is not paused."""
        server = Server({"/pushed": [answer(status, header)]})
        t0 = anyio.current_time()
        results: list[int] = []
        async with WorkerPool() as pool, client_for(pool, server, retries=1) as client:
            async with anyio.create_task_group() as tg:

                async def get(url: str) -> None:
                    results.append((await client.get(url)).status_code)

                tg.start_soon(get, f"{A}/pushed")
                await anyio.sleep(1)
                assert not pool.paused
                assert pool.statistics().paused_until is None
                tg.start_soon(get, f"{A}/later")
                tg.start_soon(get, f"{B}/other")
            stats = pool.statistics()
        assert results == [200, 200, 200]
        assert server.times(t0, path="/pushed") == [0, approx(delay)]
        assert server.times(t0, path="/later") == [approx(delay)]
        assert server.times(t0, path="/other") == [approx(1)]
        assert (stats.attempts, stats.retries) == (4, 1)

    async def test_with_key_none_a_pushback_pauses_the_whole_pool(self) -> None:
        """key=None: a 429 with Retry-After 5 pauses the pool (paused_until), so another host's
        request sent at 1 s waits until 5 s too."""
        server = Server({"/pushed": [answer(429, "5")]})
        t0 = anyio.current_time()
        async with (
            WorkerPool() as pool,
            client_for(pool, server, key=None, retries=1) as client,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(client.get, f"{A}/pushed")
            await anyio.sleep(1)
            assert pool.paused
            assert pool.statistics().paused_until == approx(t0 + 5)
            tg.start_soon(client.get, f"{B}/other")
        assert server.times(t0, path="/pushed") == [0, approx(5)]
        assert server.times(t0, path="/other") == [approx(5)]

    async def test_retry_after_as_an_http_date(self) -> None:
        """Retry-After as an HTTP date some 3 s ahead of the wall clock: the retry comes that
        long after the 429 on the pool's clock (HTTP dates have whole seconds: 2.5-4 s)."""

        async def date_ahead(request: httpx.Request) -> httpx.Response:
            return answer(429, formatdate(math.ceil(time.time()) + 3, usegmt=True))

        server = Server({"/pushed": [date_ahead]})
        t0 = anyio.current_time()
        async with WorkerPool() as pool, client_for(pool, server, retries=1) as client:
            response = await client.get(f"{A}/pushed")
        assert response.status_code == 200
        first, retry = server.times(t0, path="/pushed")
        assert first == 0
        assert 2.5 <= retry <= 4.0

    async def test_429_without_retry_after_pauses_the_host_for_the_backoff(self) -> None:
        """A 429 without Retry-After is still a pushback, as long as backoff(1) = 2 s: the
        retry and a request to the same host sent at 1 s go at 2 s; another host's at once."""
        server = Server({"/pushed": [answer(429)]})
        t0 = anyio.current_time()
        async with (
            WorkerPool() as pool,
            client_for(pool, server, retries=1, backoff=two_seconds) as client,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(client.get, f"{A}/pushed")
            await anyio.sleep(1)
            tg.start_soon(client.get, f"{A}/later")
            tg.start_soon(client.get, f"{B}/other")
        assert server.times(t0, path="/pushed") == [0, approx(2)]
        assert server.times(t0, path="/later") == [approx(2)]
        assert server.times(t0, path="/other") == [approx(1)]

    async def test_503_without_retry_after_is_retried_after_its_backoff_without_a_pause(
        self,
    ) -> None:
        """A 503 without Retry-After: the request waits out its backoff (2 s), but its host is
        not paused (a request sent at 1 s goes at once)."""
        server = Server({"/pushed": [answer(503)]})
        t0 = anyio.current_time()
        async with (
            WorkerPool() as pool,
            client_for(pool, server, retries=1, backoff=two_seconds) as client,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(client.get, f"{A}/pushed")
            await anyio.sleep(1)
            assert pool.statistics().backoff == 1
            tg.start_soon(client.get, f"{A}/later")
        assert server.times(t0, path="/pushed") == [0, approx(2)]
        assert server.times(t0, path="/later") == [approx(1)]

    async def test_an_adaptive_rate_halves_on_a_pushback(self) -> None:
        """limits=[Rate(10, adaptive=True)]: a 429 (Retry-After 1) halves its effective rate."""
        server = Server({"/pushed": [answer(429, "1")]})
        async with (
            WorkerPool(limits=[Rate(10, adaptive=True)]) as pool,
            client_for(pool, server, key=None) as client,
        ):

            def effective() -> float | None:
                (rate,) = [s for s in pool.statistics().limits if s.kind == "rate"]
                return rate.effective_rate

            await client.get(f"{A}/x")
            assert effective() == approx(10)
            response = await client.get(f"{A}/pushed")
            assert response.status_code == 429
            assert effective() == approx(5)

    async def test_an_adaptive_rate_halves_on_a_429_that_is_not_retried(self) -> None:
        """retry_statuses=(503,), retries left: the 429 (Retry-After 1) is handed back, and is
        still a pushback: the pool pauses 1 s and its adaptive rate halves."""
        server = Server({"/pushed": [answer(429, "1")]})
        t0 = anyio.current_time()
        async with (
            WorkerPool(limits=[Rate(10, adaptive=True)]) as pool,
            client_for(pool, server, key=None, retries=2, retry_statuses=(503,)) as client,
        ):
            response = await client.get(f"{A}/pushed")
            assert response.status_code == 429
            assert pool.statistics().paused_until == approx(t0 + 1)
            (rate,) = [s for s in pool.statistics().limits if s.kind == "rate"]
            assert rate.effective_rate == approx(5)

    @pytest.mark.parametrize("adaptive", [False, True])
    async def test_an_adaptive_per_key_rate_slows_its_host_down(self, adaptive: bool) -> None:
        """per_key=[Rate(100, per=100)] (1/s; if adaptive, it regrows over 100 s): after a 429
        with Retry-After 1 at 0, the host's next two requests wait out the pause, then go 1 s
        apart; adaptive, the first waits at half the rate (until 2 s), and the second follows
        at the last good rate (0.9/s) it regrew to at once after one pause-length of quiet."""
        server = Server({"/pushed": [answer(429, "1")]})
        t0 = anyio.current_time()
        async with (
            WorkerPool(per_key=[Rate(100, per=100, adaptive=adaptive)]) as pool,
            client_for(pool, server) as client,
        ):
            assert (await client.get(f"{A}/pushed")).status_code == 429
            await get_all(client, [f"{A}/1", f"{A}/2"])
        first, second = sorted(server.times(t0, path="/1") + server.times(t0, path="/2"))
        if adaptive:
            assert first == approx(2)
            assert second - first == approx(1 / 0.9)
        else:
            assert (first, second) == (approx(1), approx(2))


# -- retries --------------------------------------------------------------------------------------


class TestRetries:
    async def test_a_post_is_sent_once_and_its_429_returned_unread(self) -> None:
        """POST with retries=3: one attempt; the caller gets the 429 with its body unread by
        the transport, and the host's pushback holds (a GET sent then waits 1 s)."""
        body = RecordingStream()
        server = Server({"/post": [answer(429, "1", body), answer(200)]})
        t0 = anyio.current_time()
        async with WorkerPool() as pool, client_for(pool, server, retries=3) as client:
            async with client.stream("POST", f"{A}/post", content=b"payload") as response:
                assert response.status_code == 429
                assert response.headers["Retry-After"] == "1"
                assert body.reads == 0
                assert await response.aread() == b"slow down"
            await client.get(f"{A}/later")
        assert server.times(t0, path="/post") == [0]
        assert server.times(t0, path="/later") == [approx(1)]

    @pytest.mark.parametrize("methods", [{"GET", "POST"}, ["post"]])
    async def test_a_post_is_retried_when_retry_methods_names_it(self, methods: Any) -> None:
        """retry_methods with POST (any case): the 429 is retried, the body sent again."""
        server = Server({"/post": [answer(429, "1")]})
        t0 = anyio.current_time()
        async with (
            WorkerPool() as pool,
            client_for(pool, server, retries=1, retry_methods=methods) as client,
        ):
            response = await client.post(f"{A}/post", content=b"payload")
        assert response.status_code == 200
        assert server.times(t0) == [0, approx(1)]
        assert [c.body for c in server.calls] == [b"payload", b"payload"]

    async def test_a_streamed_request_body_is_never_retried(self) -> None:
        """PUT (idempotent) with a body from an async generator, which cannot be sent twice:
        one attempt, its 503 returned."""

        async def chunks() -> AsyncIterator[bytes]:
            yield b"pay"
            yield b"load"

        server = Server({"/put": [answer(503, "1")]})
        async with WorkerPool() as pool, client_for(pool, server, retries=3) as client:
            response = await client.put(f"{A}/put", content=chunks())
        assert response.status_code == 503
        assert [c.body for c in server.calls] == [b"payload"]

    async def test_once_the_retries_are_spent_the_last_429_is_returned_as_sent(self) -> None:
        """retries=2, three 429s (Retry-After 1): attempts at 0, 1, 2; the caller gets the third
        response, body unread; its pushback holds until 3."""
        bodies = [RecordingStream(b"attempt ", str(n).encode()) for n in (1, 2, 3)]
        script: list[Answer] = [
            answer(429, "1", body, X_Attempt=str(n)) for n, body in enumerate(bodies, 1)
        ]
        server = Server({"/pushed": script})
        t0 = anyio.current_time()
        async with WorkerPool() as pool, client_for(pool, server, retries=2) as client:
            async with client.stream("GET", f"{A}/pushed") as response:
                assert response.status_code == 429
                assert response.headers["X-Attempt"] == "3"
                assert bodies[2].reads == 0
                assert await response.aread() == b"attempt 3"
            assert anyio.current_time() == approx(t0 + 2)
            await client.get(f"{A}/later")
            stats = pool.statistics()
        assert server.times(t0, path="/pushed") == [0, approx(1), approx(2)]
        assert server.times(t0, path="/later") == [approx(3)]
        assert (stats.attempts, stats.retries) == (4, 2)
        # The retried ones were closed unread.
        assert [(b.reads, b.closed) for b in bodies[:2]] == [(0, True), (0, True)]

    async def test_once_the_retries_are_spent_the_last_503_is_returned(self) -> None:
        server = Server({"/busy": [answer(503), answer(503, X_Attempt="2")]})
        t0 = anyio.current_time()
        async with (
            WorkerPool() as pool,
            client_for(pool, server, retries=1, backoff=half_second) as client,
        ):
            response = await client.get(f"{A}/busy")
        assert (response.status_code, response.headers["X-Attempt"]) == (503, "2")
        assert server.times(t0) == [0, approx(0.5)]

    async def test_statuses_not_in_retry_statuses_are_returned_at_once(self) -> None:
        """retry_statuses=(503,): a 429 is returned, not retried (its pushback still holds)."""
        server = Server({"/pushed": [answer(429, "2")]})
        t0 = anyio.current_time()
        async with (
            WorkerPool() as pool,
            client_for(pool, server, retries=3, retry_statuses=(503,)) as client,
        ):
            response = await client.get(f"{A}/pushed")
            assert response.status_code == 429
            await client.get(f"{A}/later")
        assert server.times(t0, path="/pushed") == [0]
        assert server.times(t0, path="/later") == [approx(2)]

    @pytest.mark.parametrize(("method", "calls"), [("GET", 2), ("DELETE", 2), ("POST", 1)])
    async def test_a_connection_error_is_retried_for_idempotent_methods(
        self, method: str, calls: int
    ) -> None:
        """ConnectError on the first attempt: GET and DELETE are retried after the backoff and
        succeed; POST is not, and raises it."""
        error = httpx.ConnectError("connection refused")
        server = Server({"/x": [error]})
        t0 = anyio.current_time()
        async with (
            WorkerPool() as pool,
            client_for(pool, server, retries=2, backoff=half_second) as client,
        ):
            if calls == 1:
                with pytest.raises(httpx.ConnectError) as caught:
                    await client.request(method, f"{A}/x")
                assert caught.value is error
            else:
                assert (await client.request(method, f"{A}/x")).status_code == 200
        assert server.times(t0) == [0, approx(0.5)][:calls]

    async def test_once_the_retries_are_spent_the_last_error_is_raised(self) -> None:
        errors = [httpx.ConnectError("refused 1"), httpx.ReadError("reset 2")]
        server = Server({"/x": list(errors)})
        async with (
            WorkerPool() as pool,
            client_for(pool, server, retries=1, backoff=half_second) as client,
        ):
            with pytest.raises(httpx.ReadError) as caught:
                await client.get(f"{A}/x")
        assert caught.value is errors[1]
        assert len(server.calls) == 2

    async def test_retry_exceptions_narrows_what_is_retried(self) -> None:
        """retry_exceptions=httpx.ConnectError: a ReadError is raised at once."""
        server = Server({"/x": [httpx.ReadError("reset")]})
        async with (
            WorkerPool() as pool,
            client_for(pool, server, retries=2, retry_exceptions=httpx.ConnectError) as client,
        ):
            with pytest.raises(httpx.ReadError):
                await client.get(f"{A}/x")
        assert len(server.calls) == 1

    async def test_the_timeout_is_per_attempt_and_a_timed_out_get_is_retried(self) -> None:
        """timeout=1: the first attempt (which would answer at 10 s) is cancelled at 1 s and
        retried after the backoff (0.5 s); the retry answers at once."""
        server = Server({"/x": [after(10, answer(200, X_Slow="yes"))]})
        t0 = anyio.current_time()
        async with (
            WorkerPool() as pool,
            client_for(pool, server, timeout=1, retries=1, backoff=half_second) as client,
        ):
            response = await client.get(f"{A}/x")
        assert response.status_code == 200
        assert "X-Slow" not in response.headers
        assert server.times(t0) == [0, approx(1.5)]
        assert server.cancelled == 1

    @pytest.mark.parametrize(("method", "retries"), [("GET", 0), ("POST", 2)])
    async def test_a_timeout_without_a_retry_raises_httpx_timeout(
        self, method: str, retries: int
    ) -> None:
        """timeout=1 and no retry (none allowed, or a POST): httpx.TimeoutException at 1 s."""
        server = Server({"/x": [after(10, answer(200))]})
        t0 = anyio.current_time()
        async with (
            WorkerPool() as pool,
            client_for(pool, server, timeout=1, retries=retries) as client,
        ):
            with pytest.raises(
                httpx.TimeoutException,
                match=r"^no response within 1 s \(the transport's per-attempt timeout\)$",
            ):
                await client.request(method, f"{A}/x")
            assert anyio.current_time() == approx(t0 + 1)
        assert len(server.calls) == 1
        assert server.cancelled == 1

    async def test_the_timeout_does_not_cover_the_body(self) -> None:
        """timeout=1 runs up to the headers: a body that takes 4 s to stream is read whole."""
        body = RecordingStream(b"a", b"b", delay=2)
        server = Server({"/x": [answer(200, stream=body)]})
        t0 = anyio.current_time()
        async with WorkerPool() as pool, client_for(pool, server, timeout=1) as client:
            response = await client.get(f"{A}/x")
        assert response.content == b"ab"
        assert anyio.current_time() == approx(t0 + 4)


# -- streaming: the slot is held until the response is closed ------------------------------------


class TestStreaming:
    @pytest.mark.parametrize("read", [True, False], ids=["read", "closed-unread"])
    async def test_a_streamed_response_holds_its_slot_until_closed(self, read: bool) -> None:
        """size=1: while the first response is open (5 s), the second request waits and the
        first body is unread; once it is read (or closed unread), the second goes."""
        body = RecordingStream()
        server = Server({"/stream": [answer(200, stream=body)]})
        t0 = anyio.current_time()
        async with (
            WorkerPool(size=1) as pool,
            client_for(pool, server) as client,
            anyio.create_task_group() as tg,
        ):
            request = client.build_request("GET", f"{A}/stream")
            response = await client.send(request, stream=True)
            tg.start_soon(client.get, f"{A}/next")
            await anyio.sleep(5)
            stats = pool.statistics()
            assert (stats.running, stats.queued) == (1, 1)
            assert server.times(t0, path="/next") == []
            assert (body.reads, body.closed) == (0, False)
            if read:
                assert await response.aread() == b"slow down"
            else:
                await response.aclose()
            assert (body.reads, body.closed) == ((2 if read else 0), True)
        assert server.times(t0, path="/next") == [approx(5)]
        assert_idle(pool)

    @pytest.mark.parametrize(
        ("method", "retries"), [("POST", 3), ("GET", 0), ("GET", 1)], ids=["post", "none", "spent"]
    )
    async def test_a_returned_429_holds_its_slot_until_closed(
        self, method: str, retries: int
    ) -> None:
        """size=1: a 429 handed to the caller unread holds its slot like any open response: a
        request to another host waits until it is closed (5 s)."""
        bodies = [RecordingStream() for _ in range(retries + 1)]
        server = Server({"/pushed": [answer(429, "1", body) for body in bodies]})
        async with (
            WorkerPool(size=1) as pool,
            client_for(pool, server, retries=retries) as client,
            anyio.create_task_group() as tg,
        ):
            request = client.build_request(method, f"{A}/pushed")
            response = await client.send(request, stream=True)
            assert response.status_code == 429
            t1 = anyio.current_time()
            tg.start_soon(client.get, f"{B}/other")
            await anyio.sleep(5)
            assert bodies[-1].reads == 0
            await response.aclose()
        assert server.times(t1, path="/other") == [approx(5)]

    async def test_a_response_read_at_once_frees_its_slot(self) -> None:
        """Responses read whole (client.get) free their slot once read: size=1 lets three
        streamed bodies (1 s each) go one after the other, each read as the server sent it."""
        bodies = [RecordingStream(str(n).encode(), delay=1) for n in range(3)]
        server = Server({"/s": [answer(200, stream=body) for body in bodies]})
        t0 = anyio.current_time()
        async with WorkerPool(size=1) as pool, client_for(pool, server) as client:
            responses = await get_all(client, [f"{A}/s"] * 3)
        assert sorted(r.content for r in responses) == [b"0", b"1", b"2"]
        assert server.times(t0) == [0, approx(1), approx(2)]
        assert all(b.closed for b in bodies)

    async def test_a_retried_response_is_closed_unread(self) -> None:
        body = RecordingStream()
        server = Server({"/x": [answer(429, "1", body)]})
        async with WorkerPool() as pool, client_for(pool, server, retries=1) as client:
            response = await client.get(f"{A}/x")
        assert response.status_code == 200
        assert (body.reads, body.closed) == (0, True)


# -- cancellation and kill ------------------------------------------------------------------------


class TestCancellation:
    async def test_a_caller_cancelled_while_its_request_waits_cancels_the_job(self) -> None:
        """size=1, busy for 10 s: a request given up at 1 s is cancelled, never sent."""
        server = Server({"/busy": [after(10, answer(200))]})
        t0 = anyio.current_time()
        async with (
            WorkerPool(size=1) as pool,
            client_for(pool, server) as client,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(client.get, f"{A}/busy")
            await anyio.wait_all_tasks_blocked()
            with anyio.move_on_after(1) as scope:
                await client.get(f"{A}/given-up")
            assert scope.cancelled_caught
            await settle()
            stats = pool.statistics()
            assert (stats.cancelled, stats.queued, stats.running) == (1, 0, 1)
        assert server.times(t0, path="/given-up") == []
        assert server.times(t0, path="/busy") == [0]
        assert_idle(pool)

    async def test_a_caller_cancelled_during_its_attempt_frees_the_slot(self) -> None:
        """size=1: a request given up at 1 s while the server works on it (10 s) is cancelled
        there, and the next request starts at 1 s."""
        server = Server({"/slow": [after(10, answer(200))]})
        t0 = anyio.current_time()
        async with WorkerPool(size=1) as pool, client_for(pool, server) as client:
            with anyio.move_on_after(1):
                await client.get(f"{A}/slow")
            assert (await client.get(f"{A}/next")).status_code == 200
            stats = pool.statistics()
        assert server.cancelled == 1
        assert server.times(t0, path="/next") == [approx(1)]
        assert (stats.cancelled, stats.completed) == (1, 1)

    async def test_a_caller_cancelled_during_a_pushback_pause_cancels_the_retry(self) -> None:
        """A 429 with Retry-After 10, retries=1: the caller gives up at 2 s; the retry is never
        sent, and the job ends cancelled."""
        server = Server({"/pushed": [answer(429, "10")]})
        t0 = anyio.current_time()
        async with WorkerPool() as pool, client_for(pool, server, retries=1) as client:
            with anyio.move_on_after(2) as scope:
                await client.get(f"{A}/pushed")
            assert scope.cancelled_caught
            await settle()
            stats = pool.statistics()
            assert (stats.cancelled, stats.queued, stats.backoff, stats.running) == (1, 0, 0, 0)
        assert server.times(t0) == [0]

    async def test_kill_cancels_requests_running_and_waiting(self) -> None:
        """size=1: kill() at 1 s; the running request and the waiting one both raise
        werkpool.FutureCancelled; the waiting one was never sent."""
        server = Server({"/slow": [after(10, answer(200))]})
        errors: dict[str, BaseException] = {}
        t0 = anyio.current_time()
        async with WorkerPool(size=1) as pool, client_for(pool, server) as client:

            async def get(path: str) -> None:
                try:
                    await client.get(f"{A}{path}")
                except Exception as error:
                    errors[path] = error

            async with anyio.create_task_group() as tg:
                tg.start_soon(get, "/slow")
                await anyio.wait_all_tasks_blocked()
                tg.start_soon(get, "/waiting")
                await anyio.sleep(1)
                killed_at = anyio.current_time()
                await pool.kill()
                assert anyio.current_time() == approx(killed_at)  # nothing to wait for
        assert sorted(errors) == ["/slow", "/waiting"]
        assert all(isinstance(e, FutureCancelled) for e in errors.values()), errors
        assert server.times(t0) == [0]
        assert server.cancelled == 1


# -- construction and closing ---------------------------------------------------------------------


class ClosingTransport(httpx.MockTransport):
    """A MockTransport that records whether it was entered and closed."""

    def __init__(self) -> None:
        super().__init__(lambda request: httpx.Response(200))
        self.entered = False
        self.closed = False

    async def __aenter__(self) -> ClosingTransport:
        self.entered = True
        return self

    async def aclose(self) -> None:
        self.closed = True


def _mock() -> httpx.MockTransport:
    return httpx.MockTransport(lambda request: httpx.Response(200))


def _not_a_pool() -> Any:
    return "pool"


class TestConstruction:
    POOL = WorkerPool()  # legal outside an event loop; never started

    @pytest.mark.parametrize(
        ("options", "error", "message"),
        [
            ({"transport": "x"}, TypeError, r"^transport must be None or an httpx\.AsyncBase"),
            ({"key": 1}, TypeError, r"^key must be None or a callable taking an httpx.Request"),
            ({"cost": "x"}, TypeError, r"^cost must be None or a callable taking an httpx"),
            ({"retries": -1}, ValueError, r"^retries must be an int >= 0, got -1$"),
            ({"retries": 1.5}, TypeError, r"^retries must be an int >= 0, not float$"),
            ({"backoff": 2}, TypeError, r"^backoff must be a callable"),
            ({"timeout": -1}, ValueError, r"^timeout must be None or a finite number"),
            ({"timeout": "1"}, TypeError, r"^timeout must be None or a finite number"),
            ({"retry_methods": "GET"}, TypeError, r"^retry_methods must be an iterable of"),
            ({"retry_methods": [1]}, TypeError, r"^retry_methods must hold str, not int$"),
            ({"retry_statuses": 429}, TypeError, r"^retry_statuses must be an iterable of"),
            ({"retry_statuses": [True]}, TypeError, r"^retry_statuses must hold int, not bool$"),
            ({"retry_statuses": [600]}, ValueError, r"^retry_statuses must hold status codes"),
            ({"retry_exceptions": "x"}, TypeError, r"^retryable_exceptions must be an exception"),
        ],
    )
    def test_invalid_arguments(
        self, options: dict[str, Any], error: type[Exception], message: str
    ) -> None:
        """Each bad argument is refused, with a message naming it."""
        options = {"transport": _mock(), **options}
        with pytest.raises(error, match=message):
            PoolTransport(self.POOL, **options)

    def test_the_pool_must_be_a_worker_pool(self) -> None:
        with pytest.raises(TypeError, match=r"^pool must be a werkpool.WorkerPool, not str$"):
            PoolTransport(_not_a_pool())

    def test_defaults(self) -> None:
        transport = PoolTransport(self.POOL, _mock())
        assert (transport.retries, transport.timeout, transport.key) == (0, None, by_host)
        assert transport.retry_methods == IDEMPOTENT_METHODS
        assert {"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"} == IDEMPOTENT_METHODS
        assert transport.retry_statuses == {429, 503}
        assert repr(transport).startswith("<werkpool.httpx.PoolTransport pool=<werkpool.")
        assert PoolTransport.__module__ == "werkpool.httpx"
        assert set(werkpool.httpx.__all__) == {
            "IDEMPOTENT_METHODS",
            "PoolTransport",
            "RequestStatistics",
            "TransportStatistics",
            "by_host",
            "default_classify",
            "retry_after_seconds",
        }

    async def test_the_default_inner_transport_is_httpx_own(self) -> None:
        async with WorkerPool() as pool, PoolTransport(pool) as transport:
            assert isinstance(transport.transport, httpx.AsyncHTTPTransport)

    async def test_async_with_enters_and_closes_the_inner_transport(self) -> None:
        """``async with PoolTransport(...)`` enters and closes the wrapped transport; the pool
        keeps running."""
        inner = ClosingTransport()
        async with WorkerPool() as pool:
            async with PoolTransport(pool, inner) as transport:
                assert isinstance(transport, PoolTransport)
                assert (inner.entered, inner.closed) == (True, False)
            assert inner.closed
            assert await pool.call(echo, "still running") == "still running"

    async def test_aclose_and_the_client_close_the_inner_transport(self) -> None:
        async with WorkerPool() as pool:
            inner = ClosingTransport()
            await PoolTransport(pool, inner).aclose()
            assert inner.closed
            inner = ClosingTransport()
            async with httpx.AsyncClient(transport=PoolTransport(pool, inner)) as client:
                assert (await client.get(f"{A}/x")).status_code == 200
            assert inner.closed
