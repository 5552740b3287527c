"""The background host: runs a pool used without ``async with`` in a task of its own.

A pool's first ``run()`` outside ``async with`` binds it to the caller's loop and starts it here:
an asyncio task (kept referenced: the loop keeps only weak references) or a trio system task
(no nursery is at hand). The task enters the pool as ``async with`` would, waits until
``shutdown()`` or ``kill()`` asks it to finish, and leaves it. A system task must not raise, so
the pool's failure is kept and raised once by :meth:`BackgroundHost.stop`, as ``async with``
raises it once.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any, Protocol, final

import anyio

from ._exits import without_frames_of

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ._binding import LoopBinding

__all__ = ["BackgroundHost", "Hosted"]


class Hosted(Protocol):
    """What the host runs: the two halves of ``async with``."""

    async def start(self) -> None: ...

    async def finish(self, exc: BaseException | None) -> None: ...


@final
class BackgroundHost:
    """Runs one pool in a background task; see the module docstring.

    :param hosted: the pool's lifecycle, held weakly (it holds this host; its task holds it
        strongly while it runs)
    :param binding: the loop the pool is bound to
    :param modules: the ``globals()`` of the pool's own modules, whose frames are taken off a
        kept failure's traceback (see :func:`~werkpool._runtime._exits.without_frames_of`)
    """

    __slots__ = ("_binding", "_done", "_error", "_hosted", "_modules", "_stop", "_task")

    def __init__(
        self, hosted: Hosted, binding: LoopBinding, modules: tuple[Mapping[str, Any], ...]
    ) -> None:
        self._hosted = weakref.ref(hosted)
        self._binding = binding
        self._modules = (*modules, globals())
        self._stop = anyio.Event()
        self._done = anyio.Event()
        self._error: BaseException | None = None
        self._task: Any = None

    def start(self) -> None:
        """Start the pool's task."""
        hosted = self._hosted()
        assert hosted is not None  # the caller holds it
        loop = self._binding.loop
        if loop is not None:
            # Keep a reference: the event loop holds only weak references to tasks.
            self._task = loop.create_task(self._run(hosted), name="werkpool host")
        else:
            import trio

            trio.lowlevel.spawn_system_task(self._run, hosted, name="werkpool host")

    async def _run(self, hosted: Hosted) -> None:
        """The task: run the pool until :meth:`stop` asks it to finish."""
        try:
            await hosted.start()
            try:
                await self._stop.wait()
            except BaseException as exc:
                await hosted.finish(exc)
                raise
            await hosted.finish(None)
        except BaseException as exc:  # a system task must not raise; stop() re-raises it
            if not isinstance(exc, self._binding.cancelled_exc):
                self._error = without_frames_of(exc, *self._modules)
        finally:
            del hosted  # the task's frame is done with the pool
            self._done.set()

    async def stop(self, *, reraise: bool = True) -> None:
        """Tell the task to finish, and wait for it; re-raise the pool's failure.

        The failure is raised once, as ``async with`` raises it once: it is then forgotten, for
        its traceback holds the frames that raise it, the caller's among them, which hold the
        pool (kept, it would make a reference cycle: issue #21 item 17).
        """
        self._stop.set()
        await self._done.wait()
        if reraise and self._error is not None:
            error, self._error = self._error, None
            try:
                raise error
            finally:
                del error
