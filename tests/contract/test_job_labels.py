"""Job labels (#25 item 7): ``name=`` on every submission method, a map's prefix or label
function, and the default label (a short repr of the first argument, or the function's name),
as the events, the LoggingHook's lines, the OpenTelemetry spans and the progress bar carry it.

Every test runs on asyncio and trio under virtual time.
"""

from __future__ import annotations

import io
import logging
import re
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from support import Boom

import werkpool
import werkpool._runtime._hooks
from werkpool import JobEvent, LoggingHook, WorkerPool
from werkpool.httpx import PoolTransport
from werkpool.otel import SPAN_NAME, OpenTelemetryHook

if TYPE_CHECKING:
    from collections.abc import Callable


async def fetch(url: object) -> object:
    await anyio.sleep(1)
    return url


async def nothing() -> None:
    await anyio.sleep(1)


async def fail(item: object) -> None:
    await anyio.sleep(1)
    raise Boom(f"{item} failed")


def blocking(value: object) -> object:
    return value


def blocking_nothing() -> None:
    return None


class Service:
    async def ping(self) -> str:
        return "pong"


def labels(events: list[JobEvent]) -> dict[int, set[str | None]]:
    """The labels each job's events carried, by job number (a job's events agree on one)."""
    found: dict[int, set[str | None]] = {}
    for event in events:
        if event.job is not None:
            found.setdefault(event.job, set()).add(event.name)
    return found


def by_job(events: list[JobEvent]) -> list[str | None]:
    """The one label of each job, in job order."""
    found = labels(events)
    assert all(len(names) == 1 for names in found.values()), found
    return [next(iter(found[job])) for job in sorted(found)]


ASYNC_METHODS = ["run", "start_soon", "submit", "call"]
SYNC_METHODS = ["run_sync", "start_soon_sync", "submit_sync", "call_sync"]


async def submit_one(pool: WorkerPool, method: str, fn: Any, *args: Any, **options: Any) -> None:
    """Submit through *method* and wait until the job is over."""
    submit = getattr(pool, method)
    if method.startswith("call"):
        await submit(fn, *args, **options)
        return
    outcome = submit(fn, *args, **options)
    if method.startswith("submit"):
        outcome = await outcome
    await outcome


class TestName:
    @pytest.mark.parametrize("method", ASYNC_METHODS + SYNC_METHODS)
    async def test_every_event_of_the_job_carries_its_name(self, method: str) -> None:
        events: list[JobEvent] = []
        fn = blocking if method.endswith("_sync") else fetch
        async with WorkerPool(size=1, hooks=[events.append]) as pool:
            await submit_one(pool, method, fn, "https://example.com/a", name="page a")
        assert [e.kind for e in events] == ["submitted", "started", "finished"]
        assert {e.name for e in events} == {"page a"}

    @pytest.mark.parametrize("method", ASYNC_METHODS + SYNC_METHODS)
    async def test_without_a_name_the_label_is_the_first_arguments_repr(self, method: str) -> None:
        events: list[JobEvent] = []
        fn = blocking if method.endswith("_sync") else fetch
        async with WorkerPool(size=1, hooks=[events.append]) as pool:
            await submit_one(pool, method, fn, "https://example.com/a")
            await submit_one(pool, method, fn, 42, key="api")
        assert by_job(events) == ["'https://example.com/a'", "42"]

    async def test_a_retried_and_failed_job_keeps_its_label(self) -> None:
        events: list[JobEvent] = []
        async with WorkerPool(hooks=[events.append]) as pool:
            with pytest.raises(Boom):
                await pool.call(fail, "x", retries=1, backoff=lambda retry: 1.0)
        assert [e.kind for e in events] == [
            "submitted",
            "started",
            "retrying",
            "started",
            "finished",
        ]
        assert {e.name for e in events} == {"'x'"}

    async def test_a_pause_event_has_no_label(self) -> None:
        events: list[JobEvent] = []
        async with WorkerPool(hooks=[events.append]) as pool:
            pool.pause_for(1)
            pool.push_back(1, key="api")
        assert [(e.kind, e.name) for e in events] == [("paused", None), ("paused", None)]


class TestDefaultLabel:
    async def test_a_long_argument_is_cut_to_40_characters(self) -> None:
        events: list[JobEvent] = []
        url = "https://example.com/" + "a" * 100
        async with WorkerPool(hooks=[events.append]) as pool:
            await pool.call(fetch, url)
            await pool.call(fetch, list(range(1000)))
            await pool.call(fetch, {"query": "q" * 100, "page": 2})
        long_str, long_list, long_dict = by_job(events)
        assert long_str is not None
        assert long_list is not None
        assert long_dict is not None
        assert len(long_str) <= 40
        assert long_str.startswith("'https://example.c")
        assert "..." in long_str
        assert long_list == "[0, 1, 2, 3, 4, 5, ...]"
        assert len(long_dict) <= 40
        assert long_dict.startswith("{'page': 2")

    async def test_a_job_without_arguments_is_labelled_by_its_function(self) -> None:
        events: list[JobEvent] = []
        async with WorkerPool(hooks=[events.append]) as pool:
            await pool.call(nothing)
            await pool.call(Service().ping)
            await pool.call_sync(blocking_nothing)  # the function, not the thread wrapper
        assert by_job(events) == ["nothing", "Service.ping", "blocking_nothing"]

    async def test_a_repr_that_raises_gives_a_label_and_the_job_runs(self) -> None:
        class Broken:
            def __repr__(self) -> str:
                raise RuntimeError("no repr")

        events: list[JobEvent] = []
        item = Broken()
        async with WorkerPool(hooks=[events.append]) as pool:
            assert await pool.call(fetch, item) is item
        (label,) = by_job(events)
        assert label is not None
        assert "Broken" in label

    async def test_no_label_is_made_without_hooks(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A pool without hooks never reprs its jobs' arguments; with hooks, once per job."""
        made: list[tuple[object, ...]] = []

        def counting(fn: Callable[..., object], args: tuple[object, ...]) -> str:
            made.append(args)
            return "counted"

        monkeypatch.setattr(werkpool._runtime._hooks, "default_label", counting)
        async with WorkerPool(size=2) as pool:
            await pool.call(fetch, "a")
            results = [r async for r in pool.map(fetch, ["b", "c"])]
        assert results == ["b", "c"]
        assert made == []
        events: list[JobEvent] = []
        async with WorkerPool(size=2, hooks=[events.append]) as pool:
            await pool.call(fetch, "a", retries=1)
            await pool.call(fetch, "b", name="given")
        assert made == [("a",)]  # made at its first event, kept for the others
        assert by_job(events) == ["counted", "given"]

    async def test_a_hook_added_while_the_job_waits_sees_its_label(self) -> None:
        events: list[JobEvent] = []
        async with WorkerPool(size=1) as pool:
            first = pool.run(fetch, "first")
            second = pool.run(fetch, "second")
            pool.add_hook(events.append)
            await first
            await second
        assert by_job(events) == ["'first'", "'second'"]


class TestMap:
    async def test_a_str_name_is_a_prefix_numbered_in_input_order(self) -> None:
        events: list[JobEvent] = []
        async with WorkerPool(size=2, hooks=[events.append]) as pool:
            results = [r async for r in pool.map(fetch, ["a", "b", "c"], name="fetch")]
        assert results == ["a", "b", "c"]
        assert by_job(events) == ["fetch[0]", "fetch[1]", "fetch[2]"]

    async def test_a_label_function_gets_each_item(self) -> None:
        events: list[JobEvent] = []

        async def items() -> Any:
            for item in ["a", "b"]:
                yield item

        async with WorkerPool(size=2, hooks=[events.append]) as pool:
            mapped = pool.map(fetch, ["x", "y"], name=lambda item: f"item {item}", key=str)
            results = [r async for r in mapped]
            from_async = [r async for r in pool.map(fetch, items(), name=str.upper)]
        assert (results, from_async) == (["x", "y"], ["a", "b"])
        assert by_job(events) == ["item x", "item y", "A", "B"]

    async def test_without_a_name_each_item_is_its_label(self) -> None:
        events: list[JobEvent] = []
        async with WorkerPool(size=2, hooks=[events.append]) as pool:
            _ = [r async for r in pool.map(fetch, ["a", 2])]
            _ = [r async for r in pool.map_sync(blocking, [3])]
            _ = [r async for r in pool.map_sync(blocking, [4, 5], name="b")]
        assert by_job(events) == ["'a'", "2", "3", "b[0]", "b[1]"]

    async def test_a_label_function_that_raises_stops_the_map(self) -> None:
        def label(item: str) -> str:
            if item == "bad":
                raise Boom("no label")
            return item

        async with WorkerPool(size=1) as pool:
            seen: list[object] = []
            with pytest.raises(Boom, match="no label"):
                async for result in pool.map(fetch, ["a", "bad", "c"], name=label):
                    seen.append(result)  # noqa: PERF401 - what came before the error
        assert seen == ["a"]

    async def test_a_label_function_must_return_a_str(self) -> None:
        async with WorkerPool() as pool:
            with pytest.raises(TypeError, match=r"name\(item\) must return a str.*not int"):
                _ = [r async for r in pool.map(fetch, ["a"], name=len)]


class TestValidation:
    @pytest.mark.parametrize("method", ASYNC_METHODS + SYNC_METHODS)
    @pytest.mark.parametrize("bad", [3, b"bytes", str.upper])
    async def test_a_name_that_is_not_a_str_is_a_type_error(self, method: str, bad: object) -> None:
        fn = blocking if method.endswith("_sync") else fetch
        async with WorkerPool() as pool:
            with pytest.raises(TypeError, match=r"^name must be None or a str"):
                await submit_one(pool, method, fn, "a", name=bad)
            assert pool.statistics().submitted == 0

    @pytest.mark.parametrize("method", ["map", "map_sync"])
    async def test_a_map_name_must_be_a_str_or_a_callable(self, method: str) -> None:
        fn = blocking if method == "map_sync" else fetch
        async with WorkerPool() as pool:
            with pytest.raises(TypeError, match=r"^name must be None, a str .* or a callable"):
                getattr(pool, method)(fn, ["a"], name=3)


class TestLogging:
    async def test_each_line_names_the_job_by_its_label(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG, logger="werkpool")
        async with WorkerPool(size=1, hooks=[LoggingHook()]) as pool:
            _ = [r async for r in pool.map(fetch, ["https://example.com/a"], name="fetch")]
            await pool.call(fetch, "https://example.com/b", key="example.com")
            with pytest.raises(Boom):
                await pool.call(fail, "c", retries=1, backoff=lambda retry: 1.0)
        lines = [r.getMessage() for r in caplog.records if hasattr(r, "werkpool_event")]
        assert lines == [
            "job 1 (fetch[0]) submitted (1 queued)",
            "job 1 (fetch[0]) attempt 1 started after waiting 0.000 s",
            "job 1 (fetch[0]) completed on attempt 1, 1.000 s after it was submitted",
            "job 2 ('https://example.com/b', key 'example.com') submitted (1 queued)",
            "job 2 ('https://example.com/b', key 'example.com') attempt 1 started after "
            "waiting 0.000 s",
            "job 2 ('https://example.com/b', key 'example.com') completed on attempt 1, "
            "1.000 s after it was submitted",
            "job 3 ('c') submitted (1 queued)",
            "job 3 ('c') attempt 1 started after waiting 0.000 s",
            "job 3 ('c') attempt 1 failed after 1.000 s: Boom('c failed'); retrying in 1.000 s",
            "job 3 ('c') attempt 2 started after waiting 0.000 s",
            "job 3 ('c') failed on attempt 2, 3.000 s after it was submitted: Boom('c failed')",
        ]
        names = [r.werkpool_name for r in caplog.records if hasattr(r, "werkpool_event")]
        assert names[0] == "fetch[0]"
        assert names[-1] == "'c'"


class TestOpenTelemetry:
    async def test_each_attempts_span_has_the_jobs_name(self) -> None:
        spans = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(spans))
        try:
            hook = OpenTelemetryHook(tracer_provider=provider)
            async with WorkerPool(size=1, hooks=[hook]) as pool:
                await pool.call(fetch, "a", name="first")
                _ = [r async for r in pool.map(fetch, ["b"])]
            found = sorted(
                (span.attributes or {}).get("werkpool.job.name")
                for span in spans.get_finished_spans()
                if span.name == SPAN_NAME
            )
        finally:
            provider.shutdown()
        assert found == ["'b'", "first"]


class TestProgressBar:
    async def test_the_summary_names_the_last_failure(self) -> None:
        stream = io.StringIO()
        async with (
            WorkerPool(size=1) as pool,
            werkpool.progress(pool, console=stream, force=True, description="jobs") as bar,
        ):
            outcomes = [r async for r in pool.map(fail, ["a", "b"], return_exceptions=True)]
            await pool.call(fetch, "c")
        assert all(isinstance(o, Boom) for o in outcomes)
        assert (bar.failed, bar.last_failed) == (2, "'b'")
        last = stream.getvalue().splitlines()[-1]  # rich's log line, or the plain one
        assert re.search(r"3/3(,| ·) 2 failed \(last: 'b'\)(,| ·) 0 retries", last), last

    async def test_a_long_name_is_cut_in_the_summary(self) -> None:
        stream = io.StringIO()
        async with (
            WorkerPool() as pool,
            werkpool.progress(pool, console=stream, force=True) as bar,
        ):
            with pytest.raises(Boom):
                await pool.call(fail, "x", name="n" * 100)
        assert bar.last_failed == "n" * 100  # the attribute keeps it whole
        assert re.search(r"1 failed \(last: n{37}\.\.\.\)(,| ·) ", stream.getvalue())


class TestHttpx:
    async def test_a_request_is_labelled_by_its_method_and_url(self) -> None:
        events: list[JobEvent] = []
        inner = httpx.MockTransport(lambda request: httpx.Response(200))
        async with (
            WorkerPool(hooks=[events.append]) as pool,
            httpx.AsyncClient(transport=PoolTransport(pool, inner)) as client,
        ):
            await client.get("https://example.com/a?page=2")
            await client.post("https://user:secret@example.com/b", content=b"x")
        assert by_job(events) == [
            "GET https://example.com/a",  # no query: API keys often travel there
            "POST https://example.com/b",
        ]
