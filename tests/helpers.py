"""Transitional: the old home of ``rate_contract_holds``; the shared helpers are in support.py.

test_scheduler.py and test_limits.py still import it from here, while the package restructure
(issue #11) edits them. It now runs the exact checker. Delete this module once they import
``rate_violation`` from :mod:`support`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from support import rate_violation

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["rate_contract_holds"]


def rate_contract_holds(times: Sequence[float], rate: float, burst: int) -> bool:
    """Assert :func:`support.rate_violation` finds no window over the contract; return True."""
    violation = rate_violation(times, rate, burst)
    assert violation is None, violation
    return True
