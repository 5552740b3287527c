"""The Lua scripts of :mod:`werkpool.redis` and how a store calls them.

The scripts live beside this module, in ``lua/*.lua`` (each file says its KEYS, ARGV and reply),
and are read once, at import, through :mod:`importlib.resources`, so that they work from a wheel
or a zip as well as from a source tree. This module also holds what both the store and the
shared-limit binding need to speak to them: the arguments of a limit value, the scripts that
check the store's epoch, the error marker of a lost epoch, and the exception of a server that
does not answer.
"""

from __future__ import annotations

from importlib import resources
from typing import Final

import coredis.exceptions

from .._core._specs import Rate, Shared, Window

__all__ = [
    "AHEAD",
    "EPOCHED",
    "EPOCH_CHANGED",
    "SCRIPTS",
    "UNAVAILABLE",
    "Unavailable",
    "script_args",
    "text",
]


#: This module's package, ``werkpool.redis``, which holds the scripts (from ``__name__``:
#: ``__package__`` is typed ``str | None``).
_PACKAGE: Final = __name__.rpartition(".")[0]


def _read(name: str) -> str:
    """The source of the script ``lua/{name}.lua``."""
    return (
        resources.files(_PACKAGE)
        .joinpath("lua")
        .joinpath(f"{name}.lua")
        .read_text(encoding="utf-8")
    )


#: Each script's name -> its Lua source: ``admit`` (one admission, every shared limit of an
#: attempt at once), ``release`` (an attempt's leases, announced by pub/sub), ``renew`` (the
#: leases held), ``reassert`` (leases the server lost, added back) and ``recover`` (the epoch
#: adopted after a restart or a flush, the running leases put back).
SCRIPTS: Final = {
    name: _read(name) for name in ("admit", "release", "renew", "reassert", "recover")
}

#: The scripts that check the store's epoch: :meth:`RedisStore.call` adds the epoch key as their
#: last key and the epoch the store knows as their last argument.
EPOCHED: Final = frozenset({"admit", "renew"})
#: How ADMIT and RENEW say that the epoch is not the store's (the server lost its keys).
EPOCH_CHANGED: Final = "WERKPOOL_EPOCH"

#: Beyond a round trip, how far ahead a grant may be (s): more than a timer's lateness (the
#: event loops round a wait up to the millisecond) and a busy host's scheduling delay. A refused
#: request asks again AHEAD / 2 before the credit; one that arrives after it loses the time in
#: between for good (a rate's credit does not wait for a late asker). At 3 ms, 4 processes on a
#: busy 2-core machine reached 96.5-98 % of a shared Rate(200); at 10 ms, 99.4-100 %.
AHEAD: Final = 0.010

#: What an unreachable, slow or restarting server raises (anyio's fail_after: TimeoutError).
UNAVAILABLE: Final = (
    coredis.exceptions.ConnectionError,
    coredis.exceptions.ClusterDownError,
    coredis.exceptions.TryAgainError,
    TimeoutError,
    OSError,
)


class Unavailable(Exception):
    """The store did not answer in time (or the connection failed)."""


def script_args(spec: Shared) -> tuple[str, float, float]:
    """The ADMIT script's kind code and two numbers for *spec* (see ``lua/admit.lua``)."""
    limit = spec.limit
    if isinstance(limit, Rate):
        return "r", limit.per / limit.count, float(limit.burst)
    if isinstance(limit, Window):
        return "w", limit.per, float(limit.count)
    return "c", float(limit.n), 0.0


def text(value: object) -> str:
    """A Redis reply's bytes or str as a str."""
    return value.decode() if isinstance(value, bytes) else str(value)
