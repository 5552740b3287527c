"""Transitional: the old home of the shared test helpers, now tests/support.py.

test_stateful.py and test_errors_isolation.py still import from here, while the package
restructure (issue #11) edits them. Delete this module once they import from :mod:`support`.
"""

from __future__ import annotations

from support import (
    BACKENDS,
    Boom,
    Probe,
    approx,
    assert_idle,
    asyncio_only,
    borrowed,
    echo,
    fail_after_sleep,
    internal_tasks,
    jump_clock,
    rate_violation,
    run_virtual,
    sleep_echo,
    stats_add_up,
)

__all__ = [
    "BACKENDS",
    "Boom",
    "Probe",
    "approx",
    "assert_idle",
    "asyncio_only",
    "borrowed",
    "echo",
    "fail_after_sleep",
    "internal_tasks",
    "jump_clock",
    "rate_violation",
    "run_virtual",
    "sleep_echo",
    "stats_add_up",
]
