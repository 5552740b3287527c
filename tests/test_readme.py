"""Every Python example in README.md runs, on virtual time."""

from __future__ import annotations

import asyncio
import random
import re
from pathlib import Path
from typing import Any

import looptime
import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def run_on_virtual_time(coro: Any) -> Any:
    """Stand-in for asyncio.run: a looptime loop, so the examples' sleeps take no real time."""
    loop = looptime.new_event_loop(resolution=1e-9)
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_example_runs(code: str, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    """The README block runs to completion and prints what it promises."""
    monkeypatch.setattr(asyncio, "run", run_on_virtual_time)
    if "import trio" in code:
        import trio
        import trio.testing

        real_run = trio.run
        monkeypatch.setattr(
            trio,
            "run",
            lambda fn, *args: real_run(
                fn, *args, clock=trio.testing.MockClock(autojump_threshold=0)
            ),
        )
    random.seed(1234)
    exec(compile(code, str(README), "exec"), {"__name__": "__main__"})
    out = capsys.readouterr().out
    if "print(" in code:
        assert out.strip(), "the example printed nothing"
    assert "Traceback" not in out


def test_readme_gives_the_two_newcomer_commands() -> None:
    """README shows the command that runs the example and the one CI runs for the tests."""
    text = README.read_text(encoding="utf-8")
    assert "python3 -m pip install -e . && python3 examples/main_job.py" in text
    test_command = "python3 -m pip install nox && python3 -m nox -s tests lint typing docs"
    assert test_command in text
    assert test_command in (README.parent / ".ci" / "run").read_text(encoding="utf-8")
