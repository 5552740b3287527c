"""The I/O half of remote limits: performing a :class:`~werkpool._core._scheduler.Reservation`.

The scheduler decides *when* a job asks its remote limits and what the answer does to the job;
this module only performs the asking (one await per remote limit) and the giving back, shielded
from cancellation, so that no credit taken in a remote store outlives the attempt it was for.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, cast

import anyio

from .._core._remote_limit import Refusal

if TYPE_CHECKING:
    from .._core._remote_limit import OrderedRemoteLimit, RemoteLimit
    from .._core._reservation import Reservation

__all__ = ["give_back", "perform"]

_logger = logging.getLogger("werkpool")


async def perform(reservation: Reservation) -> float | Refusal:
    """Ask each remote limit in turn; all grant (the latest start time is returned) or none holds.

    If a limit refuses, those that granted are released (shielded) and the refusal returned. If
    the request is cancelled midway, everything asked so far, the interrupted one included, is
    released (shielded) before the cancellation propagates.
    """
    job = reservation.job
    chain = reservation.chain
    if chain is not None:
        # A link of a chain: its one remote limit keeps the chain's order (Holds.set_depth).
        ordered = cast("OrderedRemoteLimit", reservation.limits[0])
        try:
            return await ordered.acquire_in_order(job, chain, reservation.ticket)
        except BaseException:
            await give_back(reservation)
            raise
    start = -math.inf
    asked: list[RemoteLimit] = []
    try:
        for limit in reservation.limits:
            asked.append(limit)
            answer = await limit.acquire(job)
            if isinstance(answer, Refusal):
                asked.pop()  # a refusal took nothing
                await give_back(reservation, asked)
                return answer
            if answer > start:
                start = answer
    except BaseException:
        await give_back(reservation, asked)
        raise
    return start


async def give_back(reservation: Reservation, limits: list[RemoteLimit] | None = None) -> None:
    """Release the credit *limits* (default: all of the reservation's) hold for its job.

    Shielded: a cancellation waits until the store has it back. A release that fails is logged
    and not retried: the job's outcome stands, and the store's own expiry (a lease's TTL) is the
    backstop.
    """
    job = reservation.job
    # Only the limits that may hold credit for the job: a limit that says it holds none (as
    # werkpool.redis's rate-only attempts) costs no shielded scope and no await (#24: the
    # give-back of every attempt was part of each admission's cost).
    held = [
        limit
        for limit in reversed(limits if limits is not None else reservation.limits)
        if limit.holds(job)
    ]
    if not held:
        return
    with anyio.CancelScope(shield=True):
        for limit in held:
            try:
                await limit.release(job)
            except Exception:
                _logger.exception("werkpool: releasing %r for %r failed", limit, job)
