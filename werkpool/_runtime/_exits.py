"""What leaves a pool when it stops: its own failure, raised as it was raised.

A pool runs its workers in two nested task groups (the supervisor's, and the workers' inside
it), so a lone failure arrives wrapped twice, beside cancellations that only say the pool
stopped. :func:`failure_to_raise` unwraps it and decides what leaves ``async with``: the pool's
failure, the body's own error, or both together. :func:`reraise_unchanged` raises it keeping its
``__cause__`` and ``__context__``; :func:`without_frames_of` makes a failure fit to be kept until
it is raised. Each of them takes care that no frame of the pool holds the error it raises: such
a frame joins the error's traceback, and a reference cycle through it would leave every failed
pool to the cyclic garbage collector (issue #21 item 17).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, NoReturn, cast

from .._core._exceptions import FutureCancelled, PoolClosedError

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    from collections.abc import Mapping
    from types import TracebackType

__all__ = ["failure_to_raise", "reraise_unchanged", "without_frames_of"]


def _as_group(error: BaseException) -> BaseExceptionGroup[BaseException] | None:
    """*error* as an exception group (with its member type spelled out), or None."""
    if isinstance(error, BaseExceptionGroup):
        return cast("BaseExceptionGroup[BaseException]", error)
    return None


def reraise_unchanged(error: BaseException) -> NoReturn:
    """Raise *error* keeping its __cause__ and __context__ (a plain raise in an except block
    would overwrite __context__ with the exception being handled)."""
    cause, context, suppress = error.__cause__, error.__context__, error.__suppress_context__
    try:
        raise error
    finally:
        error.__cause__, error.__context__ = cause, context
        error.__suppress_context__ = suppress
        # This frame joins the error's traceback: holding the error (or its cause or context,
        # which may lead back to it) would make a reference cycle (issue #21 item 17).
        del error, cause, context


def without_frames_of(error: BaseException, *modules: Mapping[str, Any]) -> BaseException:
    """*error*, caught by the caller, made fit to be kept on the pool until it is raised.

    Its traceback holds the frames of the pool's own *modules* (their ``globals()``) that it went
    through, which hold the pool (through their variables, and on Python 3.12+ through
    ``f_back`` even once cleared): kept as they are, they would make a reference cycle, and a
    pool dropped before its failure was raised would be left to the cyclic GC (issue #21 item
    17). They are unlinked from the traceback (the pool's plumbing, no part of the story of the
    failure); the frames of the job that failed stay as they are.
    """
    kept: list[TracebackType] = []
    tb = error.__traceback__
    while tb is not None:
        frame_globals = tb.tb_frame.f_globals
        if not any(frame_globals is own for own in modules):
            kept.append(tb)
        tb = tb.tb_next
    head: TracebackType | None = None
    for entry in reversed(kept):
        entry.tb_next = head
        head = entry
    error.__traceback__ = head
    return error


def failure_to_raise(
    group: BaseExceptionGroup[BaseException],
    body_error: BaseException | None,
    cancelled: type[BaseException],
) -> BaseException | None:
    """What leaves ``async with`` once the supervisor's task group raised *group*: the pool's
    own failure, as it was raised; or None for *body_error* itself.

    *body_error* is what the ``async with`` body raised (None if nothing): a genuine error of
    the body and a failure of the pool are raised together, in an ExceptionGroup. The pool's
    error alone is raised if the body's is that very error (a ``call()`` whose job raised a
    SystemExit), or only says that the pool's stop cancelled what the body waited for while the
    pool stopped on a KeyboardInterrupt, a SystemExit or the like: as on asyncio, where the
    event loop delivers such an error to the body itself. *cancelled* is the backend's
    cancellation exception.
    """
    # The pool's own two task groups nest a lone error twice: unwrap it.
    error: BaseException = group
    nested = _as_group(error)
    while nested is not None and len(nested.exceptions) == 1:
        error = nested.exceptions[0]
        nested = _as_group(error)
    only_cancelled = isinstance(error, cancelled) or (
        nested is not None and nested.split(cancelled)[1] is None  # only cancellations
    )
    if only_cancelled:
        # An enclosing scope was cancelled and reached the pool's tasks too: that is not a
        # failure of the pool. Raise the body's own exception if it has one (the cancellation
        # is delivered again at the next checkpoint), else the cancellation.
        return None if body_error is not None else error
    if body_error is error:
        return None
    if (
        body_error is not None
        and not isinstance(body_error, cancelled)
        and not (
            not isinstance(error, Exception)
            and nested is None
            and isinstance(body_error, (FutureCancelled, PoolClosedError))
        )
    ):
        both = BaseExceptionGroup(
            "the body of 'async with WorkerPool' and the pool both failed",
            [body_error, error],
        )
        both.__suppress_context__ = True  # raised "from None"
        return both
    return error
