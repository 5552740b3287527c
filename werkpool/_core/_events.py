"""What the pool tells its hooks: one frozen :class:`JobEvent` per transition of a job or a pause.

A hook is any callable that takes a :class:`JobEvent` (:class:`Hook`). The pool calls its hooks
synchronously, in its event loop, once the transition is complete: a hook must be quick and
must not block (hand the event to a queue if it has I/O to do). A hook that raises an
:class:`Exception` is logged once (logger ``werkpool``) and never breaks the pool; one that
raises a :class:`BaseException` (``sys.exit()``) stops the pool as a job raising it would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal, Protocol

if TYPE_CHECKING:
    from collections.abc import Hashable

__all__ = [
    "FINISHED",
    "PAUSED",
    "RESUMED",
    "RETRYING",
    "STARTED",
    "SUBMITTED",
    "EventKind",
    "Hook",
    "JobEvent",
    "Outcome",
]

#: A job was accepted (``run``, ``start_soon``, ``call``, ``submit``, one item of a ``map``).
SUBMITTED: Final = "submitted"
#: An attempt of a job started (admitted by every limit).
STARTED: Final = "started"
#: An attempt failed and the job will be tried again after ``delay`` seconds.
RETRYING: Final = "retrying"
#: The job is over: ``outcome`` says how.
FINISHED: Final = "finished"
#: The pool (``key`` None) or a key starts nothing until ``until`` (a pause or a pushback; a
#: pushback longer than ``max_retry_after`` is clamped, and ``clamped_from`` says what it asked).
PAUSED: Final = "paused"
#: ``resume()`` ended the pauses early. A timed pause ends at its ``until`` with no event.
RESUMED: Final = "resumed"

EventKind = Literal["submitted", "started", "retrying", "finished", "paused", "resumed"]
Outcome = Literal["completed", "failed", "cancelled"]


@dataclass(frozen=True, slots=True)
class JobEvent:
    """
    One transition of a job, or of a pause, as a pool's hooks see it.

    Times are on the pool's clock (:func:`anyio.current_time`); durations are in seconds.

    Renamed from ``Event`` after 0.3.0 (see the changelog): user code that also uses
    ``anyio.Event``, ``asyncio.Event`` or ``trio.Event`` had to import it under another name.
    ``werkpool.Event`` still works for one release, with a :exc:`DeprecationWarning`.

    .. versionadded:: 0.3
    """

    #: What happened: ``"submitted"``, ``"started"``, ``"retrying"``, ``"finished"``,
    #: ``"paused"`` or ``"resumed"``.
    kind: EventKind
    #: When it happened.
    time: float
    #: The job's number in its pool (1, 2, ... in submission order); None for a pause event.
    job: int | None
    #: The job's key (``key=``), or the paused key; None: none (the whole pool, for a pause).
    key: Hashable
    #: The attempt the event is about (1 for the first; 0 before any, as when submitted or
    #: cancelled while waiting).
    attempt: int = 0
    #: ``"finished"``: ``"completed"``, ``"failed"`` or ``"cancelled"``.
    outcome: Outcome | None = None
    #: ``"retrying"``: the attempt's error; ``"finished"`` with ``"failed"``: the job's error.
    error: BaseException | None = None
    #: ``"retrying"``: the seconds until the next attempt may start (its backoff, or the
    #: pushback's pause).
    delay: float | None = None
    #: ``"started"``: the seconds the attempt waited for its limits (since the job was submitted,
    #: or since its backoff ended): the admission latency.
    waited: float | None = None
    #: ``"retrying"`` and ``"finished"``: how long the attempt that just ended ran; None if no
    #: attempt was running (a job cancelled while it waited, or during its backoff).
    duration: float | None = None
    #: ``"finished"``: the seconds since the job was submitted.
    elapsed: float | None = None
    #: ``"paused"``: the end of the pause (``inf``: until ``resume()``).
    until: float | None = None
    #: Jobs waiting to start (first attempts and retries due), right after the transition.
    queued: int = 0
    #: Attempts running, right after the transition.
    running: int = 0
    #: ``"paused"`` by a pushback that asked for more than ``max_retry_after`` (the pool's, or
    #: the httpx transport's): the seconds it asked for, while ``until`` is the clamped end.
    #: None: nothing was clamped.
    clamped_from: float | None = None
    #: The job's label: its ``name=`` (a map's ``name(item)``, or ``"prefix[i]"``); without
    #: one, a short repr of its first argument (at most 40 characters), or its function's
    #: ``__qualname__`` if it has none. None for a pause event.
    name: str | None = None


class Hook(Protocol):
    """What a hook is: a callable that takes a :class:`JobEvent` and returns nothing.

    Called synchronously in the pool's event loop at each transition: keep it quick and
    non-blocking. An :class:`Exception` it raises is logged once per hook (logger
    ``werkpool``) and otherwise ignored; a :class:`BaseException` (``KeyboardInterrupt``,
    ``SystemExit``) stops the pool as a job raising it would, and leaves ``async with``.

    .. versionadded:: 0.3
    """

    def __call__(self, event: JobEvent, /) -> None: ...
