"""#22 items 3 and 5: PoolTransport's ``classify=``, ``headers=``, per-request extensions and
statistics.

An :class:`httpx.MockTransport` answers from a script, on virtual time on both backends:
``classify`` says which limit refused (the server names it in a small JSON body, read before a
retry); the servers' rate-limit headers lower the pool's limits (malformed ones are counted,
never raised); each response carries what its request went through
(``response.extensions["werkpool"]``), and ``transport.statistics()`` sums it up.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import httpx
import pytest
from support import approx

from werkpool import Rate, RetryAfter, WorkerPool
from werkpool.httpx import (
    PoolTransport,
    RequestStatistics,
    TransportStatistics,
    default_classify,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

A = "http://a.example"
B = "http://b.example"

Script = dict[str, list[httpx.Response]]


class Server:
    """Answers each path from its script (then 200), and records when each call came."""

    def __init__(self, script: Script | None = None, always: dict[str, str] | None = None) -> None:
        self.script = script or {}
        self.always = always or {}  # headers on every 200
        self.calls: list[tuple[float, str, str]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append((anyio.current_time(), request.url.host, request.url.path))
        answers = self.script.get(request.url.path)
        if answers:
            return answers.pop(0)
        return httpx.Response(200, headers=self.always, text="ok")

    def times(self, t0: float, host: str | None = None) -> list[float]:
        return sorted(t - t0 for t, h, _ in self.calls if host is None or h == host)


def refusal(seconds: str, *limits: str) -> httpx.Response:
    """The #22 server's 429: Retry-After, and a JSON body naming the refusing limits."""
    return httpx.Response(429, headers={"Retry-After": seconds}, json={"limits": list(limits)})


BODY = b'{"limits": ["rpm"]}'


class UnreadBody(httpx.AsyncByteStream):
    """A body not read yet (a MockTransport response built with content is read already)."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield BODY


def unread_refusal() -> httpx.Response:
    headers = {"Retry-After": "0", "Content-Length": str(len(BODY))}
    return httpx.Response(429, headers=headers, stream=UnreadBody())


def by_body(response: httpx.Response) -> RetryAfter | None:
    """A classify: a refusal naming "key" pauses the key, any other the pool."""
    if response.status_code != 429:
        return None
    pushback = default_classify(response)
    assert pushback is not None
    limits = json.loads(response.content)["limits"]
    return RetryAfter(pushback.seconds, scope="key" if limits == ["key"] else "pool")


def client(pool: WorkerPool, server: Server, **options: Any) -> httpx.AsyncClient:
    inner = httpx.MockTransport(server)
    return httpx.AsyncClient(transport=PoolTransport(pool, inner, **options))


async def get_all(http: httpx.AsyncClient, urls: list[str]) -> list[httpx.Response]:
    responses: dict[int, httpx.Response] = {}

    async def get(index: int, url: str) -> None:
        responses[index] = await http.get(url)

    async with anyio.create_task_group() as tg:
        for index, url in enumerate(urls):
            tg.start_soon(get, index, url)
            await anyio.lowlevel.checkpoint()  # in this order
    return [responses[index] for index in range(len(urls))]


def transport_of(http: httpx.AsyncClient) -> PoolTransport:
    transport = http._transport  # the transport given, to read its statistics
    assert isinstance(transport, PoolTransport)
    return transport


# -- classify ---------------------------------------------------------------------------------


class TestClassify:
    @pytest.mark.parametrize(
        ("limits", "scope"), [(["key"], "key"), (["rpm"], "pool")], ids=["key", "rpm"]
    )
    async def test_the_body_says_which_limit_refused(self, limits: list[str], scope: str) -> None:
        """The first attempt gets a 429 naming *limits*, Retry-After 1: retried at 1, and
        counted under the scope classify gave."""
        server = Server({"/x": [refusal("1", *limits)]})
        t0 = anyio.current_time()
        async with (
            WorkerPool() as pool,
            client(pool, server, retries=1, classify=by_body) as http,
        ):
            assert (await http.get(f"{A}/x")).status_code == 200
            stats = transport_of(http).statistics()
        assert server.times(t0, "a.example") == [0, approx(1)]
        assert stats.pushbacks_by_scope == {scope: 1}

    @pytest.mark.parametrize("scope", ["key", "pool"])
    async def test_a_pool_scope_holds_the_other_hosts_too(self, scope: str) -> None:
        """Host a is refused at 0 (Retry-After 1, scope *scope*); host b's request, sent at
        0.5, goes at once if only the key paused, at 1 if the pool did."""
        limits = ["key"] if scope == "key" else ["tpm"]
        server = Server({"/x": [refusal("1", *limits)]})
        t0 = anyio.current_time()
        async with (
            WorkerPool() as pool,
            client(pool, server, retries=1, classify=by_body) as http,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(http.get, f"{A}/x")
            await anyio.sleep(0.5)
            await http.get(f"{B}/y")
        assert server.times(t0, "b.example") == [approx(0.5 if scope == "key" else 1)]

    async def test_a_limits_name_holds_that_limit_only(self) -> None:
        """A refusal naming the tokens limit ("tpm"), Retry-After 1, on a request that costs
        tokens: it is retried at 1, while a request that costs no tokens goes at 0.5."""

        def by_name(response: httpx.Response) -> RetryAfter | None:
            pushback = default_classify(response)
            if pushback is None:
                return None
            (name,) = json.loads(response.content)["limits"]
            return RetryAfter(pushback.seconds, scope=name)

        server = Server({"/x": [refusal("1", "tpm")]})
        limits = [Rate(200_000, per=10, burst=200_000, unit="tokens", name="tpm")]
        tokens: dict[str, float] = {"tokens": 1000}
        t0 = anyio.current_time()
        async with (
            WorkerPool(limits=limits) as pool,
            client(
                pool,
                server,
                retries=1,
                classify=by_name,
                cost=lambda r: tokens if r.url.path == "/x" else None,
            ) as h,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(h.get, f"{A}/x")
            await anyio.sleep(0.5)
            await h.get(f"{A}/y")
            stats = transport_of(h).statistics()
        first, other, retry = server.times(t0)
        assert (first, other) == (0, approx(0.5))
        # After the pause, the held bucket lets one unit start at once (Rate.pushback): a cost
        # of 1,000 tokens waits for 999 more to drain at 20,000/s.
        assert retry == approx(1 + 999 / 20_000)
        assert stats.pushbacks_by_scope == {"tpm": 1}

    async def test_an_async_classify(self) -> None:
        seen: list[int] = []

        async def classify(response: httpx.Response) -> RetryAfter | None:
            await anyio.lowlevel.checkpoint()
            seen.append(response.status_code)
            return RetryAfter(2, scope="pool") if response.status_code == 429 else None

        server = Server({"/x": [httpx.Response(429, text="slow down")]})
        t0 = anyio.current_time()
        async with WorkerPool() as pool, client(pool, server, retries=1, classify=classify) as h:
            assert (await h.get(f"{A}/x")).status_code == 200
        assert seen == [429, 200]
        assert server.times(t0) == [0, approx(2)]

    async def test_the_body_is_read_for_classify_only_before_a_retry(self) -> None:
        """The retried 429's body is read for classify; the last one's is not (it is the
        caller's)."""
        bodies: list[bytes | None] = []

        def classify(response: httpx.Response) -> RetryAfter | None:
            try:
                bodies.append(response.content)
            except httpx.ResponseNotRead:
                bodies.append(None)
            return None

        server = Server({"/x": [unread_refusal(), unread_refusal()]})
        async with WorkerPool() as pool, client(pool, server, retries=1, classify=classify) as h:
            response = await h.get(f"{A}/x")
            assert response.status_code == 429
            assert await response.aread() == BODY  # the caller's to read
        assert bodies == [BODY, None]

    async def test_none_from_classify_is_no_pushback(self) -> None:
        """A 429 that classify does not call a pushback is retried after the backoff, and
        pauses nothing."""
        server = Server({"/x": [refusal("30", "rpm")]})
        t0 = anyio.current_time()
        async with (
            WorkerPool() as pool,
            client(pool, server, retries=1, classify=lambda r: None, backoff=lambda n: 0.25) as h,
        ):
            response = await h.get(f"{A}/x")
            assert not pool.paused
            stats = transport_of(h).statistics()
        assert server.times(t0) == [0, approx(0.25)]
        assert response.extensions["werkpool"].pushbacks == 0
        assert stats.pushbacks == 0

    async def test_a_bad_classify_result_is_a_type_error(self) -> None:
        server = Server()
        async with (
            WorkerPool() as pool,
            client(pool, server, classify=lambda r: 5) as h,
        ):
            with pytest.raises(TypeError, match=r"^classify must return None or a werkpool"):
                await h.get(f"{A}/x")

    async def test_a_pushback_on_the_last_response_pauses_its_scope(self) -> None:
        """Not retried (no retries): the caller gets the 429, and the pool, as its scope says,
        is paused for the Retry-After."""
        server = Server({"/x": [refusal("3", "tpm")]})
        t0 = anyio.current_time()
        async with WorkerPool() as pool, client(pool, server, classify=by_body) as h:
            assert (await h.get(f"{A}/x")).status_code == 429
            await h.get(f"{B}/y")
        assert server.times(t0, "b.example") == [approx(3)]

    def test_invalid_arguments(self) -> None:
        pool = WorkerPool()
        mock = httpx.MockTransport(Server())
        with pytest.raises(TypeError, match=r"^classify must be None or a callable"):
            PoolTransport(pool, mock, classify=5)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"^headers must be True, False, 'pool' or 'key'"):
            PoolTransport(pool, mock, headers="all")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"^headers must be True, False, 'pool' or 'key'"):
            PoolTransport(pool, mock, headers=1)  # type: ignore[arg-type]


class TestDefaultClassify:
    def test_retry_after(self) -> None:
        response = httpx.Response(503, headers={"Retry-After": "2.5"})
        pushback = default_classify(response)
        assert pushback is not None
        assert (pushback.seconds, pushback.scope) == (2.5, None)

    def test_an_exhausted_budget_without_retry_after(self) -> None:
        """A 429 with no Retry-After but a budget at 0: until its reset."""
        response = httpx.Response(
            429, headers={"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6s"}
        )
        pushback = default_classify(response)
        assert pushback is not None
        assert pushback.seconds == approx(6)

    @pytest.mark.parametrize("status", [200, 404, 500])
    def test_other_statuses(self, status: int) -> None:
        assert default_classify(httpx.Response(status, headers={"Retry-After": "1"})) is None

    def test_a_429_without_any_delay(self) -> None:
        assert default_classify(httpx.Response(429)) is None


# -- the servers' budgets ----------------------------------------------------------------------


OPENAI_LOW = {
    "x-ratelimit-limit-requests": "120",
    "x-ratelimit-remaining-requests": "0",
    "x-ratelimit-reset-requests": "10s",
    "x-ratelimit-limit-tokens": "200000",
    "x-ratelimit-remaining-tokens": "150000",
    "x-ratelimit-reset-tokens": "2.5s",
}


class TestHeaders:
    @pytest.mark.parametrize("headers", [True, False])
    async def test_a_200s_budget_lowers_the_pools_rate(self, headers: bool) -> None:
        """Another client used the requests budget: the first response says 0 of 120 remain.
        With headers, the next four go at the rate (1/12 s apart); without, as a burst."""
        server = Server({"/first": [httpx.Response(200, headers=OPENAI_LOW)]})
        limits = [Rate(120, per=10, burst=120), Rate(200_000, per=10, burst=200_000, unit="tokens")]
        t0 = anyio.current_time()
        async with (
            WorkerPool(limits=limits) as pool,
            client(pool, server, headers=headers) as h,
        ):
            await h.get(f"{A}/first")
            await get_all(h, [f"{A}/{i}" for i in range(4)])
            stats = transport_of(h).statistics()
        if headers:
            assert server.times(t0)[1:] == [approx(i / 12) for i in range(1, 5)]
            assert stats.budgets_applied == 2
        else:
            assert server.times(t0) == [0] * 5
            assert stats.budgets_applied == 0

    async def test_key_headers_go_to_the_keys_limits(self) -> None:
        """headers="key": a's budget (IETF, 0 left for 2 s) holds host a, not host b."""
        low = {"RateLimit": '"default";r=0;t=2'}
        server = Server({"/first": [httpx.Response(200, headers=low)]})
        t0 = anyio.current_time()
        async with (
            WorkerPool(per_key=[Rate(10, burst=10)]) as pool,
            client(pool, server, headers="key") as h,
        ):
            await h.get(f"{A}/first")
            await get_all(h, [f"{A}/1", f"{B}/1"])
        assert server.times(t0, "a.example") == [0, approx(2)]
        assert server.times(t0, "b.example") == [0]

    async def test_the_requests_sent_after_are_taken_off_the_budget(self) -> None:
        """/slow is sent at 0 and answered at 1: 5 left (IETF, reset in 10 s), as the server
        counted at 0. Three requests sent at 0.5 came after: 2 are left, not 5. Of five more
        requests at 1, two go at once, three at the reset."""

        async def slow(request: httpx.Request) -> httpx.Response:
            await anyio.sleep(1)
            return httpx.Response(200, headers={"RateLimit": '"default";r=5;t=9'})

        calls: list[tuple[float, str]] = []

        async def server(request: httpx.Request) -> httpx.Response:
            calls.append((anyio.current_time() - t0, request.url.path))
            if request.url.path == "/slow":
                return await slow(request)
            return httpx.Response(200, text="ok")

        t0 = anyio.current_time()
        async with (
            WorkerPool(limits=[Rate(100, burst=100)]) as pool,
            httpx.AsyncClient(transport=PoolTransport(pool, httpx.MockTransport(server))) as h,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(h.get, f"{A}/slow")
            await anyio.sleep(0.5)
            await get_all(h, [f"{A}/fast{i}" for i in range(3)])
            await anyio.sleep(0.5)
            await anyio.wait_all_tasks_blocked()
            await get_all(h, [f"{A}/after{i}" for i in range(5)])
        after = sorted(t for t, path in calls if path.startswith("/after"))
        assert after[:2] == [approx(1), approx(1)]
        assert after[2:] == [approx(10)] * 3

    async def test_malformed_headers_are_counted_never_raised(self) -> None:
        hostile = {
            "x-ratelimit-remaining-requests": "NaN",
            "x-ratelimit-reset-requests": "1e999s",
            "RateLimit": '"default";r=-5;t=1',
            "anthropic-ratelimit-tokens-remaining": "1" * 5000,
            "Retry-After": "soon",
        }
        server = Server(always=hostile)
        async with WorkerPool(limits=[Rate(10, burst=10)]) as pool, client(pool, server) as h:
            responses = await get_all(h, [f"{A}/{i}" for i in range(3)])
            stats = transport_of(h).statistics()
        assert [r.status_code for r in responses] == [200] * 3
        assert stats.headers_ignored == 3 * 5
        assert stats.budgets_applied == 0


# -- what each request went through, and the sums ------------------------------------------------


class TestExtensionsAndStatistics:
    async def test_attempts_pushbacks_and_waiting(self) -> None:
        """Two 503s (Retry-After 1, then 2), then a 200: three attempts, two pushbacks, three
        seconds waited for the pool."""
        server = Server({"/x": [refusal("1", "rpm"), refusal("2", "rpm")]})
        async with WorkerPool() as pool, client(pool, server, retries=3) as h:
            response = await h.get(f"{A}/x")
            plain = await h.get(f"{A}/y")
            stats = transport_of(h).statistics()
        record = response.extensions["werkpool"]
        assert isinstance(record, RequestStatistics)
        assert (record.attempts, record.pushbacks) == (3, 2)
        assert record.waited == approx(3)
        assert plain.extensions["werkpool"] == RequestStatistics(1, 0, 0.0)
        assert stats == TransportStatistics(
            requests=2,
            attempts=4,
            pushbacks=2,
            pushbacks_by_scope={"key": 2},
            budgets_applied=0,
            headers_ignored=0,
        )

    async def test_waiting_for_the_rate(self) -> None:
        """rate=2: the third request waited a second for its start."""
        server = Server()
        async with WorkerPool(rate=2) as pool, client(pool, server) as h:
            responses = await get_all(h, [f"{A}/{i}" for i in range(3)])
        waited = [r.extensions["werkpool"].waited for r in responses]
        assert waited == [0, approx(0.5), approx(1)]

    async def test_a_pool_without_key_counts_its_pushbacks_as_the_pools(self) -> None:
        server = Server({"/x": [refusal("1", "key")]})
        async with WorkerPool() as pool, client(pool, server, key=None, retries=1) as h:
            await h.get(f"{A}/x")
            assert transport_of(h).statistics().pushbacks_by_scope == {"pool": 1}
