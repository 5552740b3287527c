"""Every Python example in README.md runs, on virtual time."""

from __future__ import annotations

import asyncio
import random
import re
from pathlib import Path
from typing import Any

import pytest
from support import run_on_virtual_time

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


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
    test_command = "python3 -m pip install nox && python3 -m nox -s tests lint typing docs package"
    assert test_command in text
    assert test_command in (README.parent / ".ci" / "run").read_text(encoding="utf-8")


#: A fenced code block: its body, with the fence's indentation.
FENCE = re.compile(
    r"^(?P<indent>[ \t]*)(?P<fence>```+|~~~+)(?P<info>[^\n]*)\n"
    r"(?P<body>.*?)^(?P=indent)(?P=fence)[ \t]*$",
    re.M | re.S,
)
LINK = re.compile(r"(?P<image>!?)\[(?:[^\]\[]|\[[^\]]*\])*\]\((?P<target>[^)\s]+)")
REPOSITORY = "https://github.com/werkpool/werkpool"
RAW = "https://raw.githubusercontent.com/werkpool/werkpool/main/"
#: The width of the documentation site's code column, and of the package index's.
CODE_WIDTH = 88


def test_readme_links_are_absolute() -> None:
    """The README renders on the package index too, where a relative link or image leads
    nowhere: every link is a URL, and every image is the repository's file on GitHub."""
    text = FENCE.sub("", README.read_text(encoding="utf-8"))
    relative, images = [], []
    for match in LINK.finditer(text):
        target = match["target"]
        if not re.match(r"^https?://", target):
            relative.append(target)
        elif match["image"]:
            images.append(target)
    assert not relative, f"relative links in README.md: {relative}"
    assert images, "the README shows the rate picture"
    for image in images:
        assert image.startswith(RAW), image
        assert (README.parent / image.removeprefix(RAW)).is_file(), f"no such file: {image}"
    for path in re.findall(rf"{re.escape(REPOSITORY)}/(?:blob|tree)/main/([^)#\s]+)", text):
        assert (README.parent / path).exists(), f"a link to a missing file: {path}"


def test_readme_code_fits_the_column() -> None:
    """No line of a README code block is wider than the 88 columns a page shows."""
    text = README.read_text(encoding="utf-8")
    wide = [
        line
        for match in FENCE.finditer(text)
        for line in match["body"].splitlines()
        if len(line) - len(match["indent"]) > CODE_WIDTH
    ]
    assert not wide, f"README code lines over {CODE_WIDTH} columns:\n" + "\n".join(wide)


def test_readme_install_works_before_the_release() -> None:
    """Until 0.3.0 is on the index (which has only 0.2.0, without extras), the Install
    section installs from a clone; the extras are quoted everywhere (zsh expands brackets)."""
    text = README.read_text(encoding="utf-8")
    install = text.split("\n## Install\n", 1)[1].split("\n## ", 1)[0]
    assert "git clone https://github.com/werkpool/werkpool.git" in install
    assert 'python3 -m pip install ".[redis]"' in install
    unquoted = re.findall(r"pip install [^\s`\"']*werkpool\[", text)
    assert not unquoted, f"unquoted extras in README.md: {unquoted}"
