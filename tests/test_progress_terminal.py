"""The progress bar in a real terminal: examples/main_job.py run inside tmux, its screen read.

Each test starts a private tmux server (its own socket in a temporary directory, ``tmux -S``;
short, as a socket path must be) with one session of 120x30,
runs the example there, reads the screen with ``tmux capture-pane -p`` while it runs and after,
and kills the session by name at the end. Waits are bounded.

Without tmux the tests skip, except under ``CI`` (set by CI runs), where they fail: ``.ci/run``
installs tmux with apt.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from support import HAS_TRIO

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "main_job.py"

#: The longest the example may take here (90 jobs take about 4.5 s).
RUN_TIMEOUT = 60.0
JOBS = 90

pytestmark = [pytest.mark.timeout(120), pytest.mark.serial]


def need_tmux() -> str:
    """The path of tmux; fail under CI, skip elsewhere, if it is missing."""
    path = shutil.which("tmux")
    if path is None:
        reason = "tmux is not installed (apt-get install -y tmux)"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set and {reason}", pytrace=False)
        pytest.skip(reason)
    return path


class Terminal:
    """One tmux session on a private server, running one command."""

    def __init__(self, tmux: str, name: str, socket: Path) -> None:
        self.tmux = tmux
        self.name = name
        self.socket = socket  # a server of our own: nothing of the user's tmux is touched

    def _tmux(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.tmux, "-S", str(self.socket), *args],
            capture_output=True,
            text=True,
            timeout=10,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    def start(self, command: str) -> None:
        # COLUMNS and LINES, if the test process has them (a pytest run can have 80 and 24),
        # would outrank the pane's real size. The shell prints the exit status, then keeps the
        # pane (and its screen) until killed.
        shell = f'unset COLUMNS LINES; {command}; echo "[exit $?]"; sleep {int(RUN_TIMEOUT) * 2}'
        done = self._tmux(
            "new-session", "-d", "-s", self.name, "-x", "120", "-y", "30", "sh", "-c", shell
        )
        if done.returncode != 0:
            message = f"tmux could not start a session: {done.stderr.strip()}"
            if os.environ.get("CI"):
                pytest.fail(message, pytrace=False)
            pytest.skip(message)

    def screen(self) -> str:
        done = self._tmux("capture-pane", "-p", "-t", self.name)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def kill(self) -> None:
        self._tmux("kill-session", "-t", self.name)


def run_in_tmux(command: str, name: str, live_pattern: str) -> tuple[list[str], str]:
    """Run *command* in a fresh terminal of its own; see :func:`watch` for what it returns."""
    tmux = need_tmux()
    with tempfile.TemporaryDirectory(prefix="wp-tmux-") as directory:
        terminal = Terminal(tmux, name, Path(directory) / "sock")
        terminal.start(command)
        try:
            return watch(terminal, live_pattern)
        finally:
            terminal.kill()


def watch(terminal: Terminal, live_pattern: str) -> tuple[list[str], str]:
    """The screens that matched *live_pattern* while the command ran (a look every 0.1 s, for
    RUN_TIMEOUT at most), and the screen once it exited."""
    live: list[str] = []
    deadline = time.monotonic() + RUN_TIMEOUT
    while True:
        screen = terminal.screen()
        if "[exit " in screen:
            return live, screen
        if re.search(live_pattern, screen, flags=re.M):
            live.append(screen)
        if time.monotonic() > deadline:
            pytest.fail(f"the example did not finish in {RUN_TIMEOUT} s; screen:\n{screen}")
        time.sleep(0.1)


def check_summary(screen: str) -> None:
    """The example's summary, as main_job prints it for JOBS requests."""
    assert "[exit 0]" in screen, screen
    assert f"{JOBS} requests to an API that allows 30 requests/s and 10 at once" in screen
    # Item 42 is the only missing one among 0..89: one 404, every other request completed.
    assert f"done        {JOBS - 1} completed, 1 failed (404 Not Found: not retried)" in screen
    assert re.search(r"pauses      1 \(1\.5 s, the API's Retry-After\)", screen), screen
    assert re.search(r"at once     at most 10 \(the API's limit: 10\)", screen), screen
    assert re.search(r"API's 429s  \d+: \d+ while it shed load, 0 over the rate, 0 over", screen)
    assert "Traceback" not in screen


def bar_lines(screen: str) -> list[str]:
    return [line for line in screen.splitlines() if line.startswith("requests ")]


def test_rich_bar_in_a_terminal() -> None:
    """With rich: a live bar that moves while the jobs run, one final bar, then the summary."""
    command = shlex.join([sys.executable, str(EXAMPLE), "--jobs", str(JOBS)])
    live, screen = run_in_tmux(command, "werkpool-progress-rich", r"^requests .* · ETA \d+:\d\d")
    assert live, f"no live bar seen; final screen:\n{screen}"
    moving = {re.search(rf" (\d+)/{JOBS} ", bar_lines(s)[0]).group(1) for s in live}  # type: ignore[union-attr]
    assert len(moving) >= 2, moving  # the count grew while we looked
    bars = bar_lines(screen)
    assert len(bars) == 1, screen  # drawn in place, not line after line
    assert re.fullmatch(
        rf"requests [━╸ ]+ {JOBS}/{JOBS} · 1 failed \(last: 42\) · \d+ retries · 1 pause · "
        r"[\d.]+ starts/s avg · took \d+:\d\d",
        bars[0].rstrip(),
    ), bars[0]
    check_summary(screen)
    # The bar (stderr) comes before the summary (stdout) on the screen.
    assert screen.index(bars[0]) < screen.index(f"{JOBS} requests to an API")


@pytest.mark.skipif(not HAS_TRIO, reason="trio is not installed")
def test_plain_bar_in_a_terminal_on_trio(tmp_path: Path) -> None:
    """Without rich (hidden from the example), on trio: one plain line rewritten in place."""
    hidden = tmp_path / "hide-rich" / "rich"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text('raise ImportError("rich is hidden for this test")\n')
    # In front of the PYTHONPATH the example would have had anyway.
    path = os.pathsep.join(filter(None, [str(hidden.parent), os.environ.get("PYTHONPATH")]))
    command = "PYTHONPATH={} {}".format(
        shlex.quote(path),
        shlex.join([sys.executable, str(EXAMPLE), "--backend", "trio", "--jobs", str(JOBS)]),
    )
    live, screen = run_in_tmux(
        command, "werkpool-progress-plain", r"^requests \[[#-]+\] .*ETA \d+:\d\d"
    )
    assert live, f"no live bar seen; final screen:\n{screen}"
    bars = bar_lines(screen)
    assert len(bars) == 1, screen
    assert re.fullmatch(
        rf"requests \[#{{20}}\] 100% {JOBS}/{JOBS}, 1 failed \(last: 42\), \d+ retries, 1 pause, "
        r"[\d.]+ starts/s avg, took \d+:\d\d",
        bars[0].rstrip(),
    ), bars[0]
    check_summary(screen)
