"""Which event loop a pool belongs to: found on first use, checked on every later call."""

from __future__ import annotations

import asyncio
import sys
import threading
from typing import TYPE_CHECKING, final

import anyio

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["LoopBinding"]


def _detect_backend() -> str:
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            trio.lowlevel.current_task()
        except RuntimeError:
            pass
        else:
            return "trio"
    if asyncio._get_running_loop() is not None:
        return "asyncio"
    raise RuntimeError(
        "werkpool: a WorkerPool must be used from inside a running asyncio or trio event loop"
    )


@final
class LoopBinding:
    """The running event loop (asyncio) or trio run a pool was first used in.

    Made in the first call that needs the loop (``async with`` or the first submission), so that a
    pool may be built at import time with no loop running.
    """

    __slots__ = ("backend", "cancelled_exc", "clock", "loop", "thread", "trio_token")

    def __init__(self) -> None:
        self.backend = _detect_backend()
        #: The thread the loop runs in: a future cancelled from elsewhere hands over to it.
        self.thread = threading.get_ident()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.trio_token: object = None
        #: The loop's clock, the one :func:`anyio.current_time` reads, without anyio's lookup of
        #: the backend on each call (the worker reads it twice per job under a rate).
        self.clock: Callable[[], float]
        if self.backend == "asyncio":
            loop = self.loop = asyncio.get_running_loop()
            self.clock = loop.time
        else:
            import trio

            self.trio_token = trio.lowlevel.current_trio_token()
            self.clock = trio.current_time
        self.cancelled_exc: type[BaseException] = anyio.get_cancelled_exc_class()

    def is_current(self) -> bool:
        """True if the caller runs in this loop (cheap on asyncio)."""
        if self.backend == "asyncio":
            return asyncio._get_running_loop() is self.loop
        trio = sys.modules["trio"]
        try:
            return bool(trio.lowlevel.current_trio_token() is self.trio_token)
        except RuntimeError:
            return False

    def check(self) -> None:
        """Raise RuntimeError unless the caller runs in this loop."""
        if self.is_current():
            return
        where = "thread" if threading.get_ident() != self.thread else "event loop"
        raise RuntimeError(
            f"this WorkerPool belongs to another {where}: use it only from the event loop "
            "that started it"
        )

    def call_soon_threadsafe(self, fn: Callable[[], object]) -> None:
        """Run ``fn()`` soon on this loop, from any thread (RuntimeError once the loop is over)."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(fn)
        else:
            self.trio_token.run_sync_soon(fn)  # type: ignore[attr-defined]
