"""werkpool.progress: a live progress bar fed by a pool's events, on asyncio and trio.

Drawn to a recording rich console (a terminal of 100 columns writing to a StringIO), or, with
rich hidden, by the plain renderer to a fake terminal stream; on virtual time throughout.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import logging
import random
import re
import sys
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from rich.console import Console
from support import Boom, fail_after_sleep

import werkpool
from werkpool import WorkerPool
from werkpool._observe._display import Snapshot
from werkpool._observe._plain_renderer import PlainRenderer
from werkpool._observe._rates import SLOTS, WINDOW, Recent

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.anyio


def recording_console(terminal: bool = True) -> Console:
    return Console(record=True, force_terminal=terminal, width=100, file=io.StringIO())


def frames(console: Console, label: str = "jobs") -> list[str]:
    """Each drawing of the bar, in order, as plain text (rich moves the cursor between them)."""
    return [
        label + " " + frame.strip()
        for frame in console.export_text(clear=False).split(label + " ")[1:]
    ]


class FakeTTY(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def no_rich(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """rich cannot be imported: werkpool.progress falls back to its plain line."""
    for name in ("rich", "rich.console", "rich.progress"):
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setenv("COLUMNS", "200")  # no truncation of the line
    return


class Flaky:
    """Items ``% 10 == 3`` fail for good; items ``% 7 == 0`` fail their first attempt only."""

    def __init__(self) -> None:
        self.calls: dict[int, int] = {}

    async def __call__(self, item: int) -> int:
        self.calls[item] = self.calls.get(item, 0) + 1
        await anyio.sleep(0.2)
        if item % 10 == 3:
            raise Boom(f"item {item} for good")
        if item % 7 == 0 and self.calls[item] == 1:
            raise Boom(f"item {item} once")
        return item


async def run_flaky(pool: WorkerPool, items: int) -> list[object]:
    results = pool.map(
        Flaky(), range(items), retries=2, backoff=lambda retry: 0.5, return_exceptions=True
    )
    return [outcome async for outcome in results]


# 40 items: 3, 13, 23, 33 fail for good after 2 retries each; 0, 7, 14, 21, 28, 35 fail once and
# succeed on their retry: 4 failed, 4 * 2 + 6 = 14 retries, 54 attempts.
FAILED, RETRIES = 4, 14


class TestRich:
    async def test_counts_after_a_run_with_retries_and_failures(self) -> None:
        """The final bar shows 40/40, the failures and the retries; frames showed them grow."""
        console = recording_console()
        async with (
            WorkerPool(size=4, rate=20) as pool,
            werkpool.progress(pool, total=40, description="jobs", console=console) as bar,
        ):
            outcomes = await run_flaky(pool, 40)
        assert sum(isinstance(o, Boom) for o in outcomes) == FAILED
        assert bar.enabled
        assert (bar.done, bar.failed, bar.retries, bar.attempts) == (
            40,
            FAILED,
            RETRIES,
            40 + RETRIES,
        )
        shown = frames(console)
        assert len(shown) >= 10  # drawn while it ran, every 0.1 s
        last = " ".join(shown[-1].split())  # the failed job's label may wrap it at 100 columns
        assert re.search(
            r" 40/40 · 4 failed \(last: 33\) · 14 retries · [\d.]+ starts/s avg · took 0:0\d$",
            last,
        )
        # While it ran: a time to go, the recent start rate, counts that only grow.
        assert any(
            re.search(r"/40 · \d failed · \d retr\w+ · [\d.]+ starts/s · ETA ", f) for f in shown
        )
        done = [int(re.search(r" (\d+)/40 ", f).group(1)) for f in shown]  # type: ignore[union-attr]
        assert done == sorted(done)
        assert done[0] < 40

    async def test_total_counts_jobs_in_flight_and_submitted(self) -> None:
        """total=None: the jobs in flight when the block begins plus those submitted in it."""
        console = recording_console()
        async with WorkerPool(size=2) as pool:
            for _ in range(3):
                pool.run(anyio.sleep, 1.0)
            await anyio.sleep(0.5)
            async with werkpool.progress(pool, description="jobs", console=console) as bar:
                assert bar.total == 3
                for _ in range(5):
                    pool.run(anyio.sleep, 1.0)
                assert bar.total == 8
                await anyio.sleep(0.15)
                assert " 0/8 · " in frames(console)[-1]
                await anyio.sleep(10)
        last = frames(console)[-1]
        assert " 8/8 · 0 failed · 0 retries · " in last
        # No time to go without a given total: the time elapsed instead.
        assert not any("ETA" in frame for frame in frames(console))
        assert any("elapsed" in frame for frame in frames(console))

    async def test_start_rate_and_time_to_go(self) -> None:
        """The rate of the last WINDOW seconds, and the time to go at the rate jobs finish."""
        console = recording_console()
        async with (
            WorkerPool(rate=10) as pool,
            werkpool.progress(pool, total=100, console=console) as bar,
        ):
            for _ in range(100):
                pool.run(anyio.sleep, 0)
            await anyio.sleep(WINDOW + 0.05)
            snap = bar._snapshot(final=False)
            assert snap.start_rate == pytest.approx(10.0, rel=0.05)
            assert snap.done == pytest.approx(51, abs=1)
            assert snap.eta == pytest.approx(4.9, rel=0.05)
            assert "10.0 starts/s · ETA 0:05" in console.export_text()

    async def test_pause_shown_while_it_lasts(self) -> None:
        """A pause shows "paused" with the time left, then counts among the pauses."""
        console = recording_console()
        async with (
            WorkerPool(size=1) as pool,
            werkpool.progress(pool, total=2, description="jobs", console=console) as bar,
        ):
            pool.run(anyio.sleep, 0.5)
            await anyio.sleep(0.5)
            pool.pause_for(3.0)
            pool.run(anyio.sleep, 0.5)
            await anyio.sleep(4.0)
        assert bar.pauses == 1
        shown = frames(console)
        assert any("· 1 pause · paused 2.9 s · " in frame for frame in shown)
        assert " 2/2 · 0 failed · 0 retries · 1 pause · " in shown[-1]
        assert "paused" not in shown[-1]

    async def test_resume_ends_the_paused_display(self) -> None:
        """pause() shows "paused until resumed" until resume()."""
        console = recording_console()
        async with (
            WorkerPool() as pool,
            werkpool.progress(pool, total=1, description="jobs", console=console),
        ):
            pool.pause()
            pool.run(anyio.sleep, 0)
            await anyio.sleep(1.0)
            assert "paused until resumed" in frames(console)[-1]
            pool.resume()
            await anyio.sleep(0.15)
            assert "paused" not in frames(console)[-1]

    async def test_hook_removed_on_exit(self) -> None:
        """The bar is a hook while the block runs, and none after; nothing is drawn after."""
        console = recording_console()
        async with WorkerPool() as pool:
            assert pool.hooks == ()
            async with werkpool.progress(pool, console=console) as bar:
                assert pool.hooks == (bar._hook,)
                await anyio.sleep(0.3)
            assert pool.hooks == ()
            drawn = console.export_text(clear=False)
            await anyio.sleep(1.0)
            assert console.export_text(clear=False) == drawn

    async def test_hook_removed_and_error_unchanged_on_error(self) -> None:
        """An error in the block leaves it as it is (not in a group); the hook is gone."""
        console = recording_console()
        async with WorkerPool() as pool:
            with pytest.raises(Boom, match=r"^inside$"):
                async with werkpool.progress(pool, total=3, description="jobs", console=console):
                    pool.run(anyio.sleep, 0)
                    await anyio.sleep(0.25)
                    raise Boom("inside")
            assert pool.hooks == ()
        assert " 1/3 · 0 failed · " in frames(console)[-1]  # the final state, drawn

    async def test_hook_removed_on_cancellation(self) -> None:
        """A cancelled block: cancelled as usual, hook removed."""
        console = recording_console()
        async with WorkerPool() as pool:
            with anyio.move_on_after(0.35) as scope:
                async with werkpool.progress(pool, console=console):
                    await anyio.sleep(10)
            assert scope.cancelled_caught
            assert pool.hooks == ()

    async def test_hook_removed_by_the_user_first(self) -> None:
        """A hook the user removed in the block is not removed twice."""
        async with WorkerPool() as pool:
            async with werkpool.progress(pool, console=recording_console()) as bar:
                pool.remove_hook(bar._hook)
            assert pool.hooks == ()

    async def test_around_the_pools_block(self) -> None:
        """Entered before the pool starts and left after it closed: it follows the pool's life."""
        console = recording_console()
        pool = WorkerPool(size=2)
        async with (
            werkpool.progress(pool, description="jobs", console=console) as bar,
            pool,
        ):
            for _ in range(4):
                pool.run(anyio.sleep, 0.5)
        assert (bar.done, bar.total) == (4, 4)
        assert pool.hooks == ()
        assert " 4/4 · 0 failed · 0 retries · " in frames(console)[-1]

    async def test_other_hooks_kept(self) -> None:
        """Only the bar's hook goes at exit."""
        seen: list[str] = []

        def other(event: werkpool.JobEvent) -> None:
            seen.append(event.kind)

        async with WorkerPool(hooks=[other]) as pool:
            async with werkpool.progress(pool, console=recording_console()):
                await pool.call(anyio.sleep, 0)
            assert pool.hooks == (other,)
        assert seen == ["submitted", "started", "finished"]


class BrokenTerminal(io.StringIO):
    """A terminal that takes *room* characters, then fails every write (it went away)."""

    def __init__(self, room: int) -> None:
        super().__init__()
        self.room = room

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if self.tell() + len(text) > self.room:
            raise OSError("the terminal went away")
        return super().write(text)


class TestRichTerminalFailure:
    """#21 item 8: rich's Live redirects sys.stdout and sys.stderr while it runs; a terminal that
    fails must not leave them redirected to the bar's (broken) console."""

    @pytest.mark.parametrize("when", ["at-start", "mid-run", "at-end"])
    async def test_the_streams_are_restored_after_a_failed_write(
        self, when: str, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
    ) -> None:
        """Whenever the terminal fails (at the first write, while jobs run, or at the final
        draw), the block ends with the program's own stdout and stderr back, the failure logged
        once, and every job done."""
        stdout, stderr = sys.stdout, sys.stderr
        terminal = BrokenTerminal({"at-start": 0, "mid-run": 400, "at-end": 10**9}[when])
        console = Console(file=terminal, force_terminal=True, width=100)

        async def job(item: int) -> int:
            await anyio.sleep(0.1)
            if when == "at-end" and item == 9:
                terminal.room = terminal.tell()  # nothing more fits: the final draw fails
            return item

        with caplog.at_level(logging.ERROR, logger="werkpool"):
            async with (
                WorkerPool(rate=10) as pool,
                werkpool.progress(pool, total=10, console=console) as bar,
            ):
                outcomes = [x async for x in pool.map(job, range(10))]
        assert outcomes == list(range(10))
        assert bar.done == 10
        assert (sys.stdout, sys.stderr) == (stdout, stderr)
        print("the program's own output")
        print("and its errors", file=sys.stderr)
        captured = capsys.readouterr()
        assert captured.out == "the program's own output\n"
        assert captured.err == "and its errors\n"
        records = [r for r in caplog.records if r.name == "werkpool"]
        assert len(records) == 1
        assert "drawing failed" in records[0].getMessage()


class TestOff:
    async def test_off_when_not_a_terminal(self) -> None:
        """A console that is not a terminal: no task, no output (the counters count, see
        TestDetails)."""
        console = recording_console(terminal=False)
        async with WorkerPool() as pool, werkpool.progress(pool, total=5, console=console) as bar:
            for _ in range(5):
                pool.run(anyio.sleep, 0.1)
            await anyio.sleep(1)
        assert not bar.enabled
        assert bar.done == 5
        assert console.export_text() == ""
        assert console.file.getvalue() == ""  # type: ignore[attr-defined]

    async def test_off_on_a_plain_stream_and_on_captured_stderr(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A stream that is no terminal, or the default (sys.stderr, captured here): silent."""
        stream = io.StringIO()
        async with WorkerPool() as pool:
            async with werkpool.progress(pool, console=stream) as first:
                await pool.call(anyio.sleep, 0.5)
            async with werkpool.progress(pool) as second:
                await pool.call(anyio.sleep, 0.5)
        assert not first.enabled
        assert not second.enabled
        assert stream.getvalue() == ""
        assert capsys.readouterr() == ("", "")

    async def test_force_false_on_a_terminal(self) -> None:
        """force=False: off even on a terminal."""
        console = recording_console()
        async with (
            WorkerPool() as pool,
            werkpool.progress(pool, console=console, force=False) as bar,
        ):
            await pool.call(anyio.sleep, 0.5)
        assert not bar.enabled
        assert console.export_text() == ""

    async def test_force_true_on_a_non_terminal_gives_the_final_state(self) -> None:
        """force=True where no terminal is: only the final bar, once."""
        console = recording_console(terminal=False)
        async with (
            WorkerPool() as pool,
            werkpool.progress(
                pool, total=2, description="jobs", console=console, force=True
            ) as bar,
        ):
            pool.run(anyio.sleep, 0.5)
            pool.run(anyio.sleep, 1.0)
            await anyio.sleep(1.5)
        assert bar.enabled
        text = console.export_text()
        assert text.count("jobs") == 1
        assert " 2/2 · 0 failed · 0 retries · " in text


@pytest.mark.usefixtures("no_rich")
class TestPlain:
    async def test_line_rewritten_in_place(self) -> None:
        """Without rich: one line, rewritten with "\\r", at most every refresh seconds, and
        ended by a newline with the final state."""
        stream = FakeTTY()
        async with WorkerPool(size=4, rate=20) as pool:
            async with werkpool.progress(
                pool, total=40, description="jobs", console=stream, refresh=0.5
            ) as bar:
                await run_flaky(pool, 40)
            elapsed = bar._snapshot(final=True).elapsed
        out = stream.getvalue()
        assert out.startswith("\r")
        assert out.endswith("\n")
        assert out.count("\n") == 1
        lines = out[1:-1].split("\r")
        assert len(lines) <= elapsed / 0.5 + 2  # at most one draw per refresh, plus the last
        assert len(lines) >= 3
        assert re.fullmatch(
            r"jobs \[#{20}\] 100% 40/40, 4 failed \(last: 33\), 14 retries, [\d.]+ starts/s avg, "
            r"took 0:0\d *",
            lines[-1],
        )
        assert any(
            re.search(r"^jobs \[#*-+\] +\d+% \d+/40, .*, ETA 0:0\d *$", line) for line in lines
        )
        # A shorter line is padded with blanks, so nothing of the longer one before stays.
        assert all(len(b) >= len(a.rstrip()) for a, b in itertools.pairwise(lines))

    async def test_same_line_not_written_again(self) -> None:
        """A draw that would write the same line writes nothing (a quiet pool, a quiet line)."""
        stream = FakeTTY()
        async with WorkerPool() as pool:
            async with werkpool.progress(pool, total=1, console=stream, refresh=0.5):
                await pool.call(anyio.sleep, 0.2)
                await anyio.sleep(2 * WINDOW)  # done, and no start left in the window
            lines = stream.getvalue()[1:-1].split("\r")
        assert all(a != b for a, b in itertools.pairwise(lines))
        assert len(lines) < WINDOW / 0.5 + 3

    async def test_line_kept_within_the_terminal(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A line longer than the terminal is cut (a wrapped line could not be rewritten)."""
        monkeypatch.setenv("COLUMNS", "40")
        stream = FakeTTY()
        async with WorkerPool() as pool:
            async with werkpool.progress(pool, total=3, description="jobs", console=stream):
                for _ in range(3):
                    pool.run(anyio.sleep, 1.0)
                await anyio.sleep(1.5)
            lines = stream.getvalue()[1:-1].split("\r")
        assert lines[-1] == "jobs [####################] 100% 3/3, 0"
        assert all(len(line) <= 39 for line in lines)

    async def test_forced_on_a_non_terminal_writes_one_line(self) -> None:
        """force=True on a stream that is no terminal: the final line only, no "\\r"."""
        stream = io.StringIO()
        async with (
            WorkerPool() as pool,
            werkpool.progress(pool, total=1, console=stream, force=True),
        ):
            await pool.call(anyio.sleep, 1.0)
        out = stream.getvalue()
        assert "\r" not in out
        assert re.fullmatch(
            r"\[#{20}\] 100% 1/1, 0 failed, 0 retries, 1.0 starts/s avg, took 0:01\n", out
        )

    async def test_off_when_not_a_terminal(self) -> None:
        """The plain renderer is off on a stream that is no terminal."""
        stream = io.StringIO()
        async with WorkerPool() as pool, werkpool.progress(pool, console=stream) as bar:
            await pool.call(anyio.sleep, 1.0)
        assert not bar.enabled
        assert stream.getvalue() == ""

    async def test_drawing_failure_logged_once_work_goes_on(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A terminal that breaks mid-run: logged once, the bar stops drawing, the jobs finish."""

        class Breaks(FakeTTY):
            def write(self, text: str) -> int:
                if self.tell() > 100:
                    raise OSError("the terminal went away")
                return super().write(text)

        with caplog.at_level(logging.ERROR, logger="werkpool"):
            async with WorkerPool(rate=10) as pool:
                async with werkpool.progress(pool, total=30, console=Breaks()) as bar:
                    outcomes = [x async for x in pool.map(anyio.sleep, [0.1] * 30)]
                assert pool.hooks == ()
        assert len(outcomes) == 30
        assert bar.done == 30
        records = [r for r in caplog.records if r.name == "werkpool"]
        assert len(records) == 1
        assert "drawing failed" in records[0].getMessage()


class TestValidation:
    @pytest.mark.parametrize(
        ("options", "error", "message"),
        [
            ({"total": -1}, ValueError, "total must be >= 0, got -1"),
            ({"total": 2.5}, TypeError, "total must be None or an int, not float"),
            ({"total": True}, TypeError, "total must be None or an int, not bool"),
            ({"refresh": 0}, ValueError, "refresh must be a finite number > 0, got 0"),
            ({"refresh": float("nan")}, ValueError, "refresh must be a finite number > 0, got nan"),
            ({"refresh": "1"}, TypeError, "refresh must be a number of seconds, not str"),
            ({"force": 1}, TypeError, "force must be None, True or False, not int"),
            ({"description": 3}, TypeError, "description must be None or a str, not int"),
        ],
    )
    def test_bad_arguments(
        self, options: dict[str, Any], error: type[Exception], message: str
    ) -> None:
        """Rejected at the call, with the argument named."""
        with pytest.raises(error, match=f"^{re.escape(message)}$"):
            werkpool.progress(WorkerPool(), **options)

    async def test_one_block_only(self) -> None:
        """A ProgressBar cannot be entered twice."""
        async with WorkerPool() as pool:
            bar = werkpool.progress(pool, console=recording_console())
            async with bar:
                pass
            with pytest.raises(
                RuntimeError, match=r"^a ProgressBar can be used in one async with block only$"
            ):
                async with bar:
                    pass

    def test_made_without_an_event_loop(self) -> None:
        """progress() needs no running loop (only entering it does)."""
        bar = werkpool.progress(WorkerPool(), total=3)
        assert repr(bar) == "<werkpool.ProgressBar off done=0/3>"


class TestRecent:
    def test_counts_only_the_last_window(self) -> None:
        """Events older than the window drop out of the rate."""
        recent = Recent()
        for i in range(100):  # 10 per second for 10 s
            recent.add(i / 10)
        assert recent.rate(10.0, since=0.0) == pytest.approx(10.0, rel=0.06)
        assert recent.rate(20.0, since=0.0) == 0.0
        young = Recent()
        for i in range(6):
            young.add(i / 10)
        assert young.rate(0.55, since=0.0) == pytest.approx(6.0)  # over one second at least
        assert young.rate(2.5, since=0.0) == pytest.approx(6 / 2.5)  # from *since* only

    def test_memory_bounded(self) -> None:
        """However long the run, only the buckets of the last window are kept."""
        recent = Recent()
        for i in range(10_000):  # 100 per second for 100 s
            recent.add(i / 100)
        assert len(recent._buckets) <= SLOTS


class TestDetails:
    """#25 item 9: a log line never cut, counts while off, a smooth time to go, a full bar only
    at 100 %."""

    async def test_a_forced_log_line_is_never_cut_without_rich(
        self, no_rich: None, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """force=True on a stream that is no terminal: the whole final line, however narrow the
        terminal COLUMNS (or the fallback of 80) says."""
        monkeypatch.setenv("COLUMNS", "40")
        stream = io.StringIO()
        async with (
            WorkerPool() as pool,
            werkpool.progress(
                pool, total=1, description="a rather long label", console=stream, force=True
            ),
        ):
            await pool.call(anyio.sleep, 1.0)
        assert re.fullmatch(
            r"a rather long label \[#{20}\] 100% 1/1, 0 failed, 0 retries, 1.0 starts/s avg, "
            r"took 0:01\n",
            stream.getvalue(),
        )

    @pytest.mark.parametrize("given", ["console", "stream"])
    async def test_a_forced_log_line_is_never_cut_with_rich(
        self, given: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The same with rich, on a rich console that is no terminal (40 columns) and on a
        plain stream: one line, whole, not wrapped."""
        monkeypatch.setenv("COLUMNS", "40")
        stream = io.StringIO()
        console: Console | io.StringIO = (
            Console(file=stream, force_terminal=False, width=40) if given == "console" else stream
        )
        async with (
            WorkerPool() as pool,
            werkpool.progress(
                pool, total=1, description="a rather long label", console=console, force=True
            ),
        ):
            await pool.call(anyio.sleep, 1.0)
        assert re.fullmatch(
            r"a rather long label ━{24} 1/1 · 0 failed · 0 retries · 1.0 starts/s avg · "
            r"took 0:01\n",
            stream.getvalue(),
        ), stream.getvalue()

    @pytest.mark.parametrize("force", [None, False])
    async def test_the_counts_are_kept_while_the_bar_is_off(self, force: bool | None) -> None:
        """Off (no terminal, or force=False): nothing drawn, but the counters count; the hook
        goes when the block ends."""
        console = recording_console(terminal=force is False)
        async with WorkerPool() as pool:
            async with werkpool.progress(pool, total=5, console=console, force=force) as bar:
                futures = [
                    pool.run(fail_after_sleep if i == 2 else anyio.sleep, 0.1) for i in range(5)
                ]
                await anyio.sleep(1)
                assert pool.hooks == (bar._hook,)
            assert pool.hooks == ()
        assert isinstance(futures[2].exception(), Boom)
        assert not bar.enabled
        assert (bar.done, bar.failed, bar.submitted, bar.attempts) == (5, 1, 5, 5)
        assert repr(bar) == "<werkpool.ProgressBar off done=5/5>"
        assert console.file.getvalue() == ""  # type: ignore[attr-defined]

    async def test_the_time_to_go_never_rises_under_a_steady_rate_with_noise(self) -> None:
        """Two workers, jobs of 0.5 s +- 30 % (seeded): the ETA read every 0.1 s only falls,
        and stays near the time the work actually took to finish."""
        rng = random.Random(7)
        durations = [0.5 * rng.uniform(0.7, 1.3) for _ in range(160)]
        seen: list[tuple[float, float]] = []
        async with (
            WorkerPool(size=2) as pool,
            werkpool.progress(pool, total=len(durations), console=recording_console()) as bar,
        ):
            for d in durations:
                pool.run(anyio.sleep, d)
            while bar.done < len(durations):
                await anyio.sleep(0.1)
                eta = bar._snapshot(final=False).eta
                if eta is not None:
                    seen.append((anyio.current_time(), eta))
            end = anyio.current_time()
        assert len(seen) > 300
        rises = [(t, a, b) for (_, a), (t, b) in itertools.pairwise(seen) if b > a]
        assert not rises, rises[:5]
        # Not a frozen number: after the first seconds, within 15 % (or 1 s) of the truth.
        for t, eta in seen:
            if t > 3:
                assert abs(eta - (end - t)) <= max(1.0, 0.15 * (end - t)), (t, eta, end)

    @pytest.mark.parametrize(("done", "total", "shown"), [(49, 50, "  98% "), (199, 200, "  99% ")])
    def test_the_plain_bar_is_full_only_at_100_percent(
        self, done: int, total: int, shown: str
    ) -> None:
        """98 % or 99.5 % done: one '-' left, and no "100%"."""
        renderer = PlainRenderer(FakeTTY(), None, live=True)
        snap = Snapshot(
            done=done,
            total=total,
            failed=0,
            cancelled=0,
            retries=0,
            pauses=0,
            paused_for=0.0,
            start_rate=1.0,
            eta=None,
            elapsed=1.0,
            final=False,
        )
        line = renderer.line(snap)
        assert line.startswith("[###################-]" + shown), line
        full = renderer.line(dataclasses.replace(snap, done=total))
        assert full.startswith("[####################] 100% "), full
