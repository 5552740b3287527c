"""LoggingHook: a pool's events as stdlib log records, on both backends under virtual time.

A retry is one WARNING with the attempt, how long it ran, the error and the delay; a job that
failed for good is one ERROR with its traceback; the rest is DEBUG. Every record carries the
event and its fields in ``extra``. Levels are configurable (None: not logged), and a level the
logger does not enable builds no record at all.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest
from anyio.lowlevel import checkpoint
from support import Boom, approx

import werkpool._observe._logging
from werkpool import JobEvent, RetryAfter, WorkerPool
from werkpool._observe._logging import LoggingHook

pytestmark = pytest.mark.anyio

#: Every flat field a record carries, with the JobEvent attribute it copies.
FIELDS = {
    "werkpool_kind": "kind",
    "werkpool_time": "time",
    "werkpool_job": "job",
    "werkpool_key": "key",
    "werkpool_attempt": "attempt",
    "werkpool_outcome": "outcome",
    "werkpool_error": "error",
    "werkpool_delay": "delay",
    "werkpool_waited": "waited",
    "werkpool_duration": "duration",
    "werkpool_elapsed": "elapsed",
    "werkpool_until": "until",
    "werkpool_queued": "queued",
    "werkpool_running": "running",
}


def two_seconds(retry: int) -> float:
    return 2.0


class Script:
    """Jobs whose attempts fail as told: ``fails[label]`` attempts fail before one succeeds."""

    def __init__(self, **fails: int) -> None:
        self.fails = fails
        self.attempts: dict[str, int] = {}

    async def job(self, label: str, duration: float = 1.0) -> str:
        self.attempts[label] = attempt = self.attempts.get(label, 0) + 1
        await anyio.sleep(duration)
        if attempt <= self.fails.get(label, 0):
            raise Boom(f"{label} attempt {attempt}")
        return label


def records(caplog: pytest.LogCaptureFixture, name: str = "werkpool") -> list[Any]:
    """The records of logger *name* (hooks' own records only: those with an event)."""
    return [r for r in caplog.records if r.name == name and hasattr(r, "werkpool_event")]


def at(caplog: pytest.LogCaptureFixture, level: int) -> list[Any]:
    return [r for r in records(caplog) if r.levelno == level]


class TestLevels:
    async def test_a_retry_is_one_warning_with_attempt_delay_and_error(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A job that fails once then succeeds logs one WARNING, and no ERROR."""
        script = Script(a=1)
        caplog.set_level(logging.DEBUG, logger="werkpool")
        async with WorkerPool(size=1, hooks=[LoggingHook()]) as pool:
            assert await pool.call(script.job, "a", retries=1, backoff=two_seconds) == "a"
        (warning,) = at(caplog, logging.WARNING)
        assert warning.getMessage() == (
            "job 1 ('a') attempt 1 failed after 1.000 s: Boom('a attempt 1'); retrying in 2.000 s"
        )
        assert warning.werkpool_kind == "retrying"
        assert warning.werkpool_attempt == 1
        assert warning.werkpool_delay == 2.0
        assert isinstance(warning.werkpool_error, Boom)
        assert str(warning.werkpool_error) == "a attempt 1"
        assert warning.exc_info is None  # the job goes on: no traceback
        assert at(caplog, logging.ERROR) == []
        debug = [r.getMessage() for r in at(caplog, logging.DEBUG)]
        assert debug == [
            "job 1 ('a') submitted (1 queued)",
            "job 1 ('a') attempt 1 started after waiting 0.000 s",
            "job 1 ('a') attempt 2 started after waiting 0.000 s",
            "job 1 ('a') completed on attempt 2, 4.000 s after it was submitted",
        ]

    async def test_a_job_that_fails_for_good_is_one_error_with_its_traceback(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Failed after its retries: one ERROR whose exc_info is the job's error."""
        script = Script(a=5)
        caplog.set_level(logging.DEBUG, logger="werkpool")
        async with WorkerPool(hooks=[LoggingHook()]) as pool:
            with pytest.raises(Boom) as caught:
                await pool.call(script.job, "a", retries=1, backoff=two_seconds)
        (error,) = at(caplog, logging.ERROR)
        assert error.getMessage() == (
            "job 1 ('a') failed on attempt 2, 4.000 s after it was submitted: Boom('a attempt 2')"
        )
        assert error.exc_info is not None
        assert error.exc_info[1] is caught.value
        assert error.werkpool_outcome == "failed"
        assert error.werkpool_error is caught.value
        assert "Traceback" in caplog.text  # the handler rendered it
        assert len(at(caplog, logging.WARNING)) == 1  # the first attempt's retry

    async def test_levels_are_configurable(self, caplog: pytest.LogCaptureFixture) -> None:
        """retry_level, failed_level and level pick each record's level."""
        script = Script(a=1, b=9)
        hook = LoggingHook(retry_level=logging.INFO, failed_level=logging.CRITICAL, level=15)
        caplog.set_level(1, logger="werkpool")
        async with WorkerPool(hooks=[hook]) as pool:
            pool.run(script.job, "a", retries=1, backoff=two_seconds)
            with pytest.raises(Boom):
                await pool.call(script.job, "b")
        levels = {(r.werkpool_kind, r.werkpool_outcome): r.levelno for r in records(caplog)}
        assert levels == {
            ("submitted", None): 15,
            ("started", None): 15,
            ("retrying", None): logging.INFO,
            ("finished", "completed"): 15,
            ("finished", "failed"): logging.CRITICAL,
        }

    async def test_failed_level_none_logs_no_failure(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """failed_level=None: a failed job leaves no record; the retries are still logged."""
        script = Script(a=9)
        caplog.set_level(logging.DEBUG, logger="werkpool")
        async with WorkerPool(hooks=[LoggingHook(failed_level=None)]) as pool:
            with pytest.raises(Boom):
                await pool.call(script.job, "a", retries=2, backoff=two_seconds)
        kinds = [(r.werkpool_kind, r.werkpool_outcome) for r in records(caplog)]
        assert ("finished", "failed") not in kinds
        assert len(at(caplog, logging.WARNING)) == 2
        assert at(caplog, logging.ERROR) == []

    async def test_none_turns_each_kind_off(self, caplog: pytest.LogCaptureFixture) -> None:
        """retry_level=None and level=None: only the failure is left."""
        script = Script(a=9)
        caplog.set_level(logging.DEBUG, logger="werkpool")
        hook = LoggingHook(retry_level=None, level=None)
        async with WorkerPool(hooks=[hook]) as pool:
            with pytest.raises(Boom):
                await pool.call(script.job, "a", retries=2, backoff=two_seconds)
        assert [(r.levelno, r.werkpool_kind) for r in records(caplog)] == [
            (logging.ERROR, "finished")
        ]

    async def test_a_disabled_level_builds_no_record(
        self, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A logger that enables none of the levels is asked once per event, and logs nothing."""
        logger = logging.getLogger("test_logging_hook.off")
        logger.setLevel(logging.CRITICAL)
        made: list[Any] = []
        monkeypatch.setattr(logger, "_log", lambda *args, **kwargs: made.append(args))
        # Not even the message is built.
        monkeypatch.setattr(
            werkpool._observe._logging, "_message", lambda event: made.append(event)
        )
        script = Script(a=1, b=9)
        async with WorkerPool(hooks=[LoggingHook(logger)]) as pool:
            pool.run(script.job, "a", retries=1, backoff=two_seconds)
            with pytest.raises(Boom):
                await pool.call(script.job, "b")
        assert made == []
        assert [r for r in caplog.records if r.name == logger.name] == []

    async def test_a_disabled_logger_logs_nothing(self, caplog: pytest.LogCaptureFixture) -> None:
        """logger.disabled: no records, at any level."""
        logger = logging.getLogger("test_logging_hook.disabled")
        logger.setLevel(logging.DEBUG)
        logger.disabled = True
        try:
            async with WorkerPool(hooks=[LoggingHook(logger)]) as pool:
                with pytest.raises(Boom):
                    await pool.call(Script(a=9).job, "a", retries=1, backoff=two_seconds)
        finally:
            logger.disabled = False
        assert [r for r in caplog.records if r.name == logger.name] == []

    async def test_the_records_go_to_the_given_logger(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """LoggingHook(logger) writes to that logger, not to "werkpool"."""
        logger = logging.getLogger("test_logging_hook.mine")
        caplog.set_level(logging.DEBUG, logger=logger.name)
        caplog.set_level(logging.DEBUG, logger="werkpool")
        async with WorkerPool(hooks=[LoggingHook(logger)]) as pool:
            await pool.call(Script().job, "a")
        assert [r.werkpool_kind for r in records(caplog, logger.name)] == [
            "submitted",
            "started",
            "finished",
        ]
        assert records(caplog) == []


class TestExtra:
    async def test_every_record_carries_the_event_and_its_fields(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """``werkpool_event`` is the event; the flat fields are its attributes."""
        seen: list[JobEvent] = []
        script = Script(a=1, b=9)
        caplog.set_level(logging.DEBUG, logger="werkpool")
        async with WorkerPool(size=1, hooks=[seen.append, LoggingHook()]) as pool:
            pool.run(script.job, "a", retries=1, backoff=two_seconds, key="k")
            pool.pause_for(0.5)
            with pytest.raises(Boom):
                await pool.call(script.job, "b")
        logged = records(caplog)
        assert [r.werkpool_event for r in logged] == seen
        assert {e.kind for e in seen} == {"submitted", "started", "retrying", "finished", "paused"}
        for record in logged:
            event = record.werkpool_event
            assert isinstance(event, JobEvent)
            for name, attribute in FIELDS.items():
                assert getattr(record, name) == getattr(event, attribute), name
        retry = next(r for r in logged if r.werkpool_kind == "retrying")
        assert (retry.werkpool_key, retry.werkpool_duration) == ("k", approx(1.0))

    async def test_keys_pauses_and_resume_have_their_messages(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A key in the job's message; pauses of the pool and of a key; resume; a cancel."""
        caplog.set_level(logging.DEBUG, logger="werkpool")
        async with WorkerPool(size=1, hooks=[LoggingHook()]) as pool:
            pool.pause_for(1.5)
            pool.push_back(3, key="api")
            pool.pause()
            waiting = pool.run(Script().job, "a", key="api")
            await anyio.sleep(1)
            waiting.cancel()
            await checkpoint()  # the cancellation lands
            pool.resume()
        assert [r.getMessage() for r in records(caplog)] == [
            "the pool paused for 1.500 s",
            "key 'api' paused for 3.000 s",
            "the pool paused until resume()",
            "job 1 ('a', key 'api') submitted (1 queued)",
            "job 1 ('a', key 'api') cancelled before its first attempt, "
            "1.000 s after it was submitted",
            "the pool resumed",
            "key 'api' resumed",
        ]

    async def test_a_pushback_retry_says_its_pause(self, caplog: pytest.LogCaptureFixture) -> None:
        """A RetryAfter is a retry like any other: a WARNING with the pushback's delay."""
        attempts = 0

        async def pushed_back() -> str:
            nonlocal attempts
            attempts += 1
            if attempts == 1:
                raise RetryAfter(5)
            return "ok"

        caplog.set_level(logging.DEBUG, logger="werkpool")
        async with WorkerPool(hooks=[LoggingHook()]) as pool:
            assert await pool.call(pushed_back, retries=1) == "ok"
        (warning,) = at(caplog, logging.WARNING)
        assert warning.getMessage().endswith("; retrying in 5.000 s")
        assert warning.werkpool_delay == 5.0
        messages = [r.getMessage() for r in records(caplog)]
        assert messages.index("the pool paused for 5.000 s") < messages.index(warning.getMessage())


class TestConstruction:
    def test_defaults(self) -> None:
        """The "werkpool" logger; WARNING, ERROR and DEBUG."""
        hook = LoggingHook()
        assert hook.logger is logging.getLogger("werkpool")
        assert repr(hook) == (
            "LoggingHook('werkpool', retry_level=WARNING, failed_level=ERROR, level=DEBUG)"
        )
        assert repr(LoggingHook(failed_level=None)) == (
            "LoggingHook('werkpool', retry_level=WARNING, failed_level=None, level=DEBUG)"
        )

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"logger": "werkpool"}, r"^logger must be a logging.Logger, not str$"),
            (
                {"retry_level": "WARNING"},
                r"^retry_level must be a logging level \(an int\) or None, not str$",
            ),
            (
                {"failed_level": False},
                r"^failed_level must be a logging level \(an int\) or None, not bool$",
            ),
            ({"level": 1.5}, r"^level must be a logging level \(an int\) or None, not float$"),
        ],
    )
    def test_rejects_what_is_not_a_logger_or_a_level(
        self, kwargs: dict[str, Any], message: str
    ) -> None:
        """TypeError, naming the argument."""
        with pytest.raises(TypeError, match=message):
            LoggingHook(**kwargs)
