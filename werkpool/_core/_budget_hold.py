"""A server's word on its budget, held by a rate or a window until the budget resets.

A limit that reads a server's rate-limit headers (#22 item 3) keeps what they said in a
:class:`BudgetHold`: at most so many more units until a time, so a reading never loosens the
configured limit and never outlives the server's window.
"""

from __future__ import annotations

import math
from typing import final

__all__ = ["BudgetHold"]

_INF = math.inf


@final
class BudgetHold:
    """
    A server's word on its budget (#22 item 3): until :attr:`until` (the pool's clock), at most
    :attr:`left` more units start, plus :attr:`refill` units per second since :attr:`since` (a
    budget that refills continuously; 0 for a window that resets whole at its end). A limit
    that holds one admits a start only if both its own rule and the hold allow it; once *until*
    passes the hold is gone, so a server's reading never changes the configured limit for good,
    and never lets more through than it allows.
    """

    __slots__ = ("left", "refill", "remaining", "since", "until")

    def __init__(self, left: float, until: float, refill: float = 0.0, since: float = 0.0) -> None:
        #: The units that may still start (at :attr:`since`, less what started since).
        self.left = left
        #: What the server said remained (a refund never gives back more).
        self.remaining = left
        #: When the hold ends.
        self.until = until
        #: The units per second the budget regains (0: none before :attr:`until`).
        self.refill = refill
        #: When the server's reading was taken.
        self.since = since

    def take(self, cost: float, at: float) -> None:
        """A start of *cost* at *at*: it uses the budget if the hold still runs then."""
        if at < self.until:
            self.left -= cost

    def give_back(self, cost: float) -> None:
        """A start taken back (it never happened): its units are left again (never more than
        the server said remained)."""
        self.left = min(self.left + cost, self.remaining)

    def earliest(self, cost: float, now: float) -> float:
        """``-inf`` if a start of *cost* fits in the hold at *now*, else when it fits (at the
        latest, the hold's end)."""
        if now >= self.until:
            return -_INF
        missing = cost - self.left
        if missing <= 0:
            return -_INF
        refill = self.refill
        if refill <= 0:
            return self.until
        at = self.since + missing / refill
        return -_INF if at <= now else min(at, self.until)
