"""The structured-concurrency examples run, on virtual time, and print what they promise."""

from __future__ import annotations

import asyncio
import runpy
from pathlib import Path

import pytest
from support import run_on_virtual_time

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

pytestmark = pytest.mark.timeout(30)


def test_structured_asyncio_example(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """examples/structured_asyncio.py: map, call, submit and a start_soon crawl."""
    monkeypatch.setattr(asyncio, "run", run_on_virtual_time)
    runpy.run_path(str(EXAMPLES / "structured_asyncio.py"), run_name="__main__")
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "map fetched 3 pages",
        "call: <html>/docs/faq</html>",
        "submit: 5 pages",
        "crawled 6 pages: /, /blog, /blog/1, /docs, /docs/api, /docs/faq",
        "15 jobs completed, 0 failed, 15 attempts",
    ]


def test_structured_trio_example(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """examples/structured_trio.py: an endless async input through map, on trio."""
    trio = pytest.importorskip("trio")
    testing = pytest.importorskip("trio.testing")

    real_run = trio.run
    monkeypatch.setattr(
        trio,
        "run",
        lambda fn, *args: real_run(fn, *args, clock=testing.MockClock(autojump_threshold=0)),
    )
    runpy.run_path(str(EXAMPLES / "structured_trio.py"), run_name="__main__")
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "sum of calibrated readings: 315.0"
    assert out[1] == "one more: 150.0"
    assert out[2].startswith(
        "<werkpool.WorkerPool open size=3 rate=50.0 burst=1 queued=0 running=0"
    )
