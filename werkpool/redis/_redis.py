"""Shared limits kept in Redis: :class:`RedisStore` and the remote limit it binds for a pool.

One Lua script per admission decides every shared limit of an attempt at once, atomically, on
Redis' own clock (``TIME``): client clocks never enter, so clock skew between hosts cannot break
a limit. It takes credit in all of them or in none, and a refusal says exactly how long to wait
(a rate's or window's next credit) or that a concurrency limit is full (then a release, announced
by pub/sub, or the first lease's expiry ends the wait). The pool performs the I/O through the
remote-limit protocol of :mod:`werkpool._core._limits`: this module knows Redis, not the scheduler.

Keys, all under the store's prefix (``{prefix}:{name}:{kind}``, then ``:{key}`` for a per-key
limit), expire once at rest, so idle keys vanish:

- a rate is a string, its GCRA "theoretical arrival time" in Redis seconds;
- a window is a sorted set of the starts it remembers (score: the start; member: the holder and
  its cost);
- a concurrency limit is a sorted set of leases (score: the lease's end; member: the holder and
  its cost), renewed by the store while the attempt runs, removed when it ends.

Two more keys: ``{prefix}:restarted`` holds new leases for a while after the server lost its
keys, and ``{prefix}:epoch`` (a few bytes, kept for good) names the server's current life under
the prefix: a flush (``FLUSHALL``, ``FLUSHDB``) or an empty restart drops it, and the next
admission or renewal of every store that knew it notices and recovers (see RECOVER).
"""

from __future__ import annotations

import logging
import math
import sys
import uuid
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, cast, final

import anyio
import coredis
import coredis.exceptions

from .._core._exceptions import LimitUnavailableError, SharedLimitError
from .._core._limits import Limit, Refusal, _cost, build
from .._core._specs import Concurrency, LimitSpec, Rate, Shared, Window

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Sequence
    from types import TracebackType

    from anyio.abc import TaskGroup

    from .._core._job import Job

__all__ = ["RedisStore", "StoreStatistics"]

_logger = logging.getLogger("werkpool")
_INF: Final = math.inf

# KEYS: one per shared limit of the attempt, then the store's restart key (see RECOVER), then its
# epoch key (RedisStore.call adds it, and the epoch the store knows as the last ARGV).
# ARGV: the holder, the lease (s), the horizon (s),
# then five per key: kind (r, w, c), a, b, cost, keyed (1 or 0). For a rate a = seconds per unit,
# b = burst; for a window a = per, b = count; for a concurrency limit a = n.
# A start whose rates and windows have credit within the horizon is granted for that time (its
# slot is taken now, and dated there): the client waits the rest on its own clock, so it starts
# on time instead of asking again one round trip (and a timer's lateness) after the credit.
# Replies: {1, start, wait} granted from start (Redis time), wait (s) from now; {0, wait, full,
# pool, hint} refused: wait (s) until the rates and windows have credit; full = 1 if a
# concurrency limit is full, hint (s) until its first lease ends; pool = 1 if a limit of the
# pool (not only per-key ones) refused. Numbers go back as strings: Redis would truncate a Lua
# number to an integer. An epoch other than the store's is an error reply (see _EPOCH_CHANGED).
ADMIT: Final = """
if redis.call('GET', KEYS[#KEYS]) ~= ARGV[#ARGV] then
  return redis.error_reply('WERKPOOL_EPOCH the server lost its keys (flushed or restarted)')
end
local t = redis.call('TIME')
-- Rates count whole microseconds (exact integers in a double up to 2^53), the rest seconds.
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now = now_us / 1000000
local holder = ARGV[1]
local lease, ahead = tonumber(ARGV[2]), tonumber(ARGV[3])
local wait, full, pool, hint = 0, 0, 0, lease
local late = {}
local function cost_of(member)
  return tonumber(string.match(member, '|([^|]*)$'))
end
local n = #KEYS - 2
local recovering = tonumber(redis.call('GET', KEYS[#KEYS - 1]) or '0') or 0
if now < recovering then
  -- After a restart, leases may still be put back: no new lease until then (rates and
  -- windows hold no lease, so they go on).
  for i = 1, n do
    local j = 3 + (i - 1) * 5
    if ARGV[j + 1] == 'c' and tonumber(ARGV[j + 4]) > 0 then
      return {0, '0', 1, 1, string.format('%.6f', recovering - now)}
    end
  end
end
for i = 1, n do
  local key = KEYS[i]
  local j = 3 + (i - 1) * 5
  local kind = ARGV[j + 1]
  local a, b, cost = tonumber(ARGV[j + 2]), tonumber(ARGV[j + 3]), tonumber(ARGV[j + 4])
  local want = 'zset'
  if kind == 'r' then want = 'string' end
  local found = redis.call('TYPE', key)['ok']
  if found ~= 'none' and found ~= want then
    return redis.error_reply('WERKPOOL the key ' .. key .. ' holds a ' .. found ..
      ', not the ' .. want .. ' of a werkpool shared limit')
  end
  local w = 0
  if kind == 'r' then
    local tat = tonumber(redis.call('GET', key) or '0') or 0
    w = (tat - (b - cost) * a * 1000000 - now_us) / 1000000
  elseif kind == 'w' then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now - a)
    local starts = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
    local total = 0
    for k = 1, #starts, 2 do total = total + cost_of(starts[k]) end
    if total + cost > b + 1e-9 then
      w = math.huge
      local left = total
      for k = 1, #starts, 2 do
        left = left - cost_of(starts[k])
        if left + cost <= b + 1e-9 then
          w = tonumber(starts[k + 1]) + a - now
          break
        end
      end
    end
  else
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    local leases = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
    local total = 0
    for k = 1, #leases, 2 do
      if string.sub(leases[k], 1, #holder + 1) ~= holder .. '|' then
        total = total + cost_of(leases[k])
      end
    end
    if total + cost > a + 1e-9 then
      full = 1
      if #leases >= 2 then
        local h = tonumber(leases[2]) - now
        if h < hint then hint = h end
      end
      if ARGV[j + 5] == '0' then pool = 1 end
    end
  end
  if w > 1e-9 then
    if w > wait then wait = w end
    late[#late + 1] = ARGV[j + 5]
  end
end
if full == 1 or wait > ahead then
  for _, keyed in ipairs(late) do
    if keyed == '0' then pool = 1 end
  end
  return {0, string.format('%.6f', wait), full, pool, string.format('%.6f', hint)}
end
-- Whole microseconds: a rate's schedule never runs ahead of its slots by a rounding.
local start_us = now_us + math.ceil(wait * 1000000)
local start = start_us / 1000000
for i = 1, n do
  local key = KEYS[i]
  local j = 3 + (i - 1) * 5
  local kind = ARGV[j + 1]
  local a, cost = tonumber(ARGV[j + 2]), tonumber(ARGV[j + 4])
  if cost > 0 then
    local member = holder .. '|' .. ARGV[j + 4]
    if kind == 'r' then
      -- tat: when the bucket is empty again, in whole microseconds, each start's share rounded
      -- up (a rate may fall short of its count by under a microsecond per start, never over).
      local tat = tonumber(redis.call('GET', key) or '0') or 0
      if tat < start_us then tat = start_us end
      tat = tat + math.ceil(cost * a * 1000000 - 1e-6)
      redis.call('SET', key, string.format('%d', tat),
        'PX', math.ceil((tat - now_us) / 1000) + 1000)
    elseif kind == 'w' then
      redis.call('ZADD', key, start, member)
      redis.call('PEXPIRE', key, math.ceil((a + wait) * 1000) + 1000)
    else
      redis.call('ZADD', key, start + lease, member)
      redis.call('PEXPIRE', key, math.ceil((lease + wait) * 2000) + 1000)
    end
  end
end
return {1, string.format('%.6f', start), string.format('%.6f', (start_us - now_us) / 1000000)}
"""

# KEYS: concurrency keys; ARGV[1]: the channel, then each key's lease member. Removes the leases
# and tells the waiters (of every process) which limit has room again.
RELEASE: Final = """
for i = 1, #KEYS do
  if redis.call('ZREM', KEYS[i], ARGV[i + 1]) == 1 then
    redis.call('PUBLISH', ARGV[1], KEYS[i])
  end
end
return 1
"""

# KEYS: concurrency keys, then the epoch key; ARGV[1]: the lease (s), then each key's lease
# member, then the epoch (both added by RedisStore.call, as for ADMIT). Extends the leases that
# exist; returns the (1-based) indexes of those that do not (expired, or lost with a restarted
# server), which the store re-adds if it still holds them.
RENEW: Final = """
if redis.call('GET', KEYS[#KEYS]) ~= ARGV[#ARGV] then
  return redis.error_reply('WERKPOOL_EPOCH the server lost its keys (flushed or restarted)')
end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local lease = tonumber(ARGV[1])
local missing = {}
for i = 1, #KEYS - 1 do
  if redis.call('ZADD', KEYS[i], 'XX', 'CH', now + lease, ARGV[i + 1]) == 0 then
    if not redis.call('ZSCORE', KEYS[i], ARGV[i + 1]) then
      missing[#missing + 1] = i
    end
  end
  redis.call('PEXPIRE', KEYS[i], math.ceil(lease * 2000) + 1000)
end
return missing
"""

# KEYS: concurrency keys; ARGV[1]: the lease (s), then members: add them back, whatever the
# count (they run now: the count must say so, and others wait until it is below n again).
REASSERT: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local lease = tonumber(ARGV[1])
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], now + lease, ARGV[i + 1])
  redis.call('PEXPIRE', KEYS[i], math.ceil(lease * 2000) + 1000)
end
return #KEYS
"""

# KEYS: the restart key, the epoch key, then concurrency keys. ARGV: the epoch the client knew
# ('' at its first contact), the grace (s), a hold (s), the lease (s), the client's id, then each
# key's lease member. Run by a client at its first contact with the server, after its scripts
# were gone (NOSCRIPT), after an epoch error, and after an outage during which its local share
# admitted attempts. It adopts the epoch (making one, dated now, if there is none) and adds its
# running leases (back), whatever the count: they run now, so the count must say so, and others
# wait until it is below n again. If the epoch is not the one the client knew, the server lost
# its keys (flushed, or restarted empty) at about the epoch's date: every new lease is held until
# a grace after it, the time every other live client needs to notice too (its renewal comes within
# a third of a lease) and add its own back, so that none is granted twice. The hold is also kept
# for at least ARGV[3] (a server that started moments ago, see RedisStore._check_restart).
# Returns the epoch and the hold left (s).
RECOVER: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local known, grace = ARGV[1], tonumber(ARGV[2])
local hold, lease = tonumber(ARGV[3]), tonumber(ARGV[4])
local epoch = redis.call('GET', KEYS[2])
local born = now
if epoch then
  born = tonumber(string.match(epoch, '@([^@]*)$') or '') or now
else
  epoch = ARGV[5] .. '@' .. string.format('%.6f', now)
  redis.call('SET', KEYS[2], epoch)
end
local hold_until = now + hold
if known ~= '' and epoch ~= known and born + grace > hold_until then
  hold_until = born + grace
end
if hold_until > now then
  local held = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
  if hold_until > held then
    redis.call('SET', KEYS[1], string.format('%.6f', hold_until), 'PX',
      math.ceil((hold_until - now) * 1000) + 1)
  end
else
  hold_until = now
end
for i = 3, #KEYS do
  redis.call('ZADD', KEYS[i], now + lease, ARGV[i + 3])
  redis.call('PEXPIRE', KEYS[i], math.ceil(lease * 2000) + 1000)
end
return {epoch, string.format('%.6f', hold_until - now)}
"""

_SCRIPTS: Final = {
    "admit": ADMIT,
    "release": RELEASE,
    "renew": RENEW,
    "reassert": REASSERT,
    "recover": RECOVER,
}

#: What an unreachable, slow or restarting server raises (anyio's fail_after: TimeoutError).
_UNAVAILABLE: Final = (
    coredis.exceptions.ConnectionError,
    coredis.exceptions.ClusterDownError,
    coredis.exceptions.TryAgainError,
    TimeoutError,
    OSError,
)

#: Beyond a round trip, how far ahead a grant may be (s): more than a timer's lateness (the
#: event loops round a wait up to the millisecond).
_AHEAD: Final = 0.003

#: The scripts that check the store's epoch: :meth:`RedisStore.call` adds the epoch key as their
#: last key and the epoch the store knows as their last argument.
_EPOCHED: Final = frozenset({"admit", "renew"})
#: How ADMIT and RENEW say that the epoch is not the store's (the server lost its keys).
_EPOCH_CHANGED: Final = "WERKPOOL_EPOCH"


class _Unavailable(Exception):
    """The store did not answer in time (or the connection failed)."""


@final
@dataclass(frozen=True, slots=True)
class StoreStatistics:
    """Counters of a :class:`RedisStore`, for every pool that uses it (see
    :meth:`RedisStore.statistics`).

    .. versionadded:: 0.3
    """

    #: Admissions the store granted (each one script call).
    granted: int
    #: Admissions it refused (a rate, window or concurrency limit had no credit yet).
    refused: int
    #: Requests that failed because the server was unreachable, slow or restarting.
    unavailable: int
    #: Admissions granted by the local share while the server was unavailable (``local_share``).
    local: int
    #: Leases held now (attempts running under a shared concurrency limit).
    leases: int
    #: Leases found missing at renewal (the server restarted, or the process stalled past the
    #: lease) and added back.
    reasserted: int
    #: Releases that failed and wait to be retried by the renewal task.
    orphans: int
    #: True while the server is unavailable (from the first failure to the next success).
    down: bool


@final
class _Grant:
    """What one attempt holds in the store: its holder id and its leases."""

    __slots__ = ("confirmed", "holder", "key", "leases", "local", "locals_")

    def __init__(self, holder: str, key: Hashable | None) -> None:
        self.holder = holder
        #: The job's key (a local share's release wakes it).
        self.key = key
        #: (key, member) of each lease (a shared concurrency limit with a cost > 0).
        self.leases: list[tuple[str, str]] = []
        #: True if the local share granted it (the store was down).
        self.local = False
        #: True once the store granted it (before, a lease may or may not exist).
        self.confirmed = False
        self.locals_: tuple[Limit, ...] = ()


def _check_positive(value: object, name: str, *, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"RedisStore: {name} must be a finite number of seconds > 0, not {type(value).__name__}"
        )
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise ValueError(
            f"RedisStore: {name} must be a finite number of seconds > 0, got {value!r}"
        )
    return number


@final
class RedisStore:
    """
    Keeps shared limits in Redis (or Valkey), so that pools in many processes and hosts share
    one budget: ``Rate(100).shared(store, "api.example.com")``.

    Use it as an async context manager around the pools that use it: it runs a task that
    renews the leases of the attempts running under a shared :class:`~werkpool.Concurrency`, and
    one that listens (pub/sub) for the slots other processes release::

        async with RedisStore(coredis.Redis(host="127.0.0.1")) as store:
            async with WorkerPool(limits=[Rate(100).shared(store, "api")]) as pool:
                ...

    :param client: a :class:`coredis.Redis` or :class:`coredis.RedisCluster` (its AUTH, ACL,
        TLS and timeouts are used as given). If the caller did not enter it, the store enters
        it and leaves it on exit: then an error of the body (a
        :exc:`~werkpool.LimitUnavailableError` when there is no server) leaves ``async with``
        as it is, where the client's own ``async with`` would wrap it in an ExceptionGroup
    :param prefix: every key and the pub/sub channel start with ``{prefix}:``
    :param lease: a lease's time to live in seconds: a killed process's concurrency slots come
        back within it (renewed every third of it while the attempt runs)
    :param timeout: how long an admission waits for an unavailable server before its attempt
        fails with :exc:`werkpool.LimitUnavailableError`
    :param call_timeout: the longest one request may take before the server counts as
        unavailable (a paused or overloaded server)
    :param local_share: ``None`` (the default) never starts an attempt without the server; a
        fraction in (0, 1] is the degraded mode: while the server is unavailable, each shared
        limit is replaced by a local one of that fraction of its budget (``Rate(100)`` with
        0.1: ``Rate(10)`` in each process), so work goes on at a reduced, still bounded, rate
    :param recheck: the longest a request refused by a full concurrency limit waits before
        asking again, if no release message arrives (a lost message, or a lease that expired)
    :param pipeline: how many admissions one pool may have in flight at once (when it has no
        local rate or window). More admit more per second; 1 keeps the order of starts exactly
        the order of submission. With more, two jobs whose requests are in flight together may
        start in either order (trio runs ready tasks in random order, so there they do).

    .. versionadded:: 0.3
    """

    def __init__(
        self,
        client: coredis.Redis[Any] | coredis.RedisCluster[Any],
        *,
        prefix: str = "werkpool",
        lease: float = 5.0,
        timeout: float = 10.0,
        call_timeout: float = 1.0,
        local_share: float | None = None,
        recheck: float = 1.0,
        pipeline: int = 8,
    ) -> None:
        if not isinstance(client, (coredis.Redis, coredis.RedisCluster)):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise TypeError(
                "RedisStore: client must be a coredis.Redis or coredis.RedisCluster, "
                f"not {type(client).__name__}"
            )
        given_prefix = cast("object", prefix)  # checked at run time: untyped callers pass anything
        if not isinstance(given_prefix, str) or not prefix or any(c.isspace() for c in prefix):
            raise ValueError(
                f"RedisStore: prefix must be a non-empty str without whitespace, got {prefix!r}"
            )
        self.client = client
        self.prefix = prefix
        self.lease = _check_positive(lease, "lease") or 0.0
        self.timeout = _check_positive(timeout, "timeout") or 0.0
        self.call_timeout = _check_positive(call_timeout, "call_timeout") or 0.0
        self.recheck = _check_positive(recheck, "recheck") or 0.0
        share = cast("object", local_share)
        if share is not None:
            if isinstance(share, bool) or not isinstance(share, (int, float)):
                raise TypeError(
                    "RedisStore: local_share must be None or a fraction in (0, 1], "
                    f"not {type(share).__name__}"
                )
            if not 0 < float(share) <= 1:
                raise ValueError(
                    f"RedisStore: local_share must be None or a fraction in (0, 1], got {share!r}"
                )
        self.local_share = None if local_share is None else float(local_share)
        depth = cast("object", pipeline)
        if isinstance(depth, bool) or not isinstance(depth, int):
            raise TypeError(f"RedisStore: pipeline must be an int >= 1, not {type(depth).__name__}")
        if depth < 1:
            raise ValueError(f"RedisStore: pipeline must be an int >= 1, got {pipeline!r}")
        self.pipeline = pipeline
        self.channel = f"{prefix}:freed"
        #: Set by a client that found the server restarted: no admission until its time.
        self.restart_key = f"{prefix}:restarted"
        #: Names the server's current life under the prefix (see RECOVER): ``{id}@{Redis time}``.
        self.epoch_key = f"{prefix}:epoch"
        #: The epoch this store knows (None before its first contact with the server).
        self._epoch: str | None = None
        #: The next request must first run _check_restart: the first contact, a NOSCRIPT, an
        #: epoch error, or leases the local share granted while the server was unavailable.
        self._unchecked = True
        self._checking: anyio.Event | None = None
        #: Identifies this store's holders: a process's leases are ``{id}:{n}|{cost}``.
        self.id = uuid.uuid4().hex[:16]
        self._count = 0
        self._shas: dict[str, str] = {}
        self._tg: TaskGroup | None = None
        #: The client was not entered by the caller: the store enters it, and leaves it on exit.
        self._owns_client = False
        #: The pools' bindings, weakly: a pool that ended leaves nothing behind in the store.
        self._bindings: weakref.WeakSet[_Binding] = weakref.WeakSet()
        #: The leases held now: holder -> its (key, member) pairs.
        self._leases: dict[str, list[tuple[str, str]]] = {}
        #: The leases of attempts that the local share admitted while the server was unavailable:
        #: unknown to the server, they are added at the next contact (see _check_restart).
        self._unasserted: dict[str, list[tuple[str, str]]] = {}
        #: Leases whose release failed: removed by the renewal task once the server answers.
        self._orphans: list[tuple[str, str, float]] = []  # (key, member, when it failed)
        #: The time (anyio's clock) of the first failure of the current outage, or None.
        self.down_since: float | None = None
        #: A moving average of one request's round trip (s): a refused request asks again that
        #: much before the credit it waits for, so that it reaches the server on time.
        self.rtt = 0.0
        self._granted = self._refused = self._unavailable = self._local = self._reasserted = 0
        #: Called with the Redis time of each grant (tests and benchmarks date starts with it).
        self.on_grant: Callable[[float], None] | None = None

    def __repr__(self) -> str:
        return f"RedisStore(prefix={self.prefix!r})"

    # -- lifetime ---------------------------------------------------------------------------------

    async def __aenter__(self) -> RedisStore:
        if self._tg is not None:
            raise RuntimeError("this RedisStore is already running (enter it once)")
        pool = getattr(self.client, "connection_pool", None)
        try:
            _ = None if pool is None else pool.task_group  # raises if the client is not entered
        except RuntimeError:
            # Not entered: the store enters it and leaves it on exit, so that an error of the
            # body leaves `async with RedisStore(coredis.Redis(...))` as it is (see __aexit__).
            await self.client.__aenter__()
            self._owns_client = True
        tg = anyio.create_task_group()
        try:
            await tg.__aenter__()
        except BaseException as exc:  # pragma: no cover - it fails only if cancelled
            await self._leave_client(type(exc), exc, exc.__traceback__)
            raise
        self._tg = tg
        tg.start_soon(self._renew_leases)
        tg.start_soon(self._listen)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        tg = self._tg
        assert tg is not None
        tg.cancel_scope.cancel()
        self._tg = None
        self._bindings.clear()
        # The background tasks log their errors and never raise, so the task group has nothing
        # to report: an error of the body propagates as it is (not in an ExceptionGroup).
        try:
            await tg.__aexit__(None, None, None)
        finally:
            await self._leave_client(exc_type, exc, tb)
        return None

    async def _leave_client(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Leave the client if the store entered it. Its connection pool's task group wraps
        the body's error in an ExceptionGroup (#25 item 5: a hundred lines of group around a
        LimitUnavailableError): that error alone then propagates, as it is."""
        if not self._owns_client:
            return
        self._owns_client = False
        try:
            await self.client.__aexit__(exc_type, exc, tb)
        except BaseExceptionGroup as group:
            if exc is None or not _only(group, exc):
                raise
            # Returning lets Python re-raise `exc` itself, with its own traceback and cause.

    def statistics(self) -> StoreStatistics:
        """The store's counters, for every pool that uses it."""
        return StoreStatistics(
            granted=self._granted,
            refused=self._refused,
            unavailable=self._unavailable,
            local=self._local,
            leases=sum(len(leases) for leases in self._leases.values()),
            reasserted=self._reasserted,
            orphans=len(self._orphans),
            down=self.down_since is not None,
        )

    def bind(
        self,
        limits: tuple[Shared, ...],
        per_key: tuple[Shared, ...],
        wake: Callable[[Hashable | None], None],
    ) -> _Binding:
        """The remote limit deciding one pool's shared limits (called as the pool starts)."""
        if self._tg is None:
            raise RuntimeError(
                f"{self!r} is not running: enter it (`async with store:`) around the pools "
                "whose limits it keeps"
            )
        binding = _Binding(self, limits, per_key, wake)
        self._bindings.add(binding)
        return binding

    # -- requests ---------------------------------------------------------------------------------

    def holder(self) -> str:
        """A new holder id, unique across processes (one per admission)."""
        self._count += 1
        return f"{self.id}:{self._count}"

    async def call(
        self,
        script: str,
        keys: Sequence[str],
        args: Sequence[str | float],
        *,
        recovering: bool = False,
    ) -> Any:
        """Run one of the store's scripts by its SHA (loading it on first use and after a
        ``NOSCRIPT``, as a restarted server has none); raise :class:`_Unavailable` if the server
        does not answer within ``call_timeout``, :exc:`SharedLimitError` if it answers an error.

        Before its first request, after a ``NOSCRIPT`` or an epoch error (the server lost its
        scripts or its keys: restarted, or flushed), and after an outage during which the local
        share admitted attempts, the store first checks with the server and recovers (see
        :meth:`_check_restart`); every other request of the store waits for that meanwhile.
        """
        client = self.client
        began = anyio.current_time()
        try:
            with anyio.fail_after(self.call_timeout):
                for _ in range(3):
                    while self._unchecked and not recovering:  # bounded: call_timeout
                        await self._check_restart()  # (again, if another's check failed)
                    sha = self._shas.get(script)
                    if sha is None:
                        loaded = await client.script_load(_SCRIPTS[script])
                        sha = self._shas[script] = _text(loaded)
                    sent_keys, sent_args = list(keys), list(args)
                    if script in _EPOCHED:
                        sent_keys.append(self.epoch_key)
                        sent_args.append(self._epoch or "")
                    try:
                        reply = await client.evalsha(sha, keys=sent_keys, args=sent_args)
                    except coredis.exceptions.NoScriptError:
                        # The server lost them all: it restarted (the epoch tells if empty).
                        self._shas.clear()
                        self._unchecked = True
                        continue
                    except coredis.exceptions.ResponseError as exc:
                        if _EPOCH_CHANGED not in str(exc) or recovering:
                            raise
                        # Flushed (FLUSHALL, FLUSHDB) or restarted empty with the scripts
                        # cached: no NOSCRIPT came, but the leases are gone (#21 item 12).
                        self._unchecked = True
                        continue
                    break
                else:  # pragma: no cover - the server lost its state again and again
                    raise _Unavailable(f"the server lost its state again and again ({script})")
        except _UNAVAILABLE as exc:
            self._unavailable += 1
            if self.down_since is None:
                self.down_since = anyio.current_time()
            raise _Unavailable(f"{type(exc).__name__}: {exc}") from exc
        except coredis.exceptions.ResponseError as exc:
            message = str(exc)
            if "WERKPOOL " in message:
                message = message[message.index("WERKPOOL ") + 9 :].split(" script:")[0]
                raise SharedLimitError(message) from exc
            if "BUSY" in message or "LOADING" in message:
                self._unavailable += 1
                if self.down_since is None:
                    self.down_since = anyio.current_time()
                raise _Unavailable(message) from exc
            raise SharedLimitError(
                f"Redis answered the {script} script for the keys {list(keys)!r} with an "
                f"error: {message}"
            ) from exc
        self.down_since = None
        took = anyio.current_time() - began
        self.rtt = took if self.rtt == 0.0 else 0.8 * self.rtt + 0.2 * took
        return reply

    async def _check_restart(self) -> None:
        """Adopt the server's epoch, put this store's running leases in, and hold new leases
        while other clients put theirs back (see RECOVER).

        The server may have lost leases held under the prefix if its epoch is not the one this
        store knew (it was flushed, or restarted empty: its epoch went with its keys), or if, at
        this store's first contact, it started less than a grace (``lease / 3 + call_timeout``:
        the time every live client needs to notice at its next renewal) ago. Then every new
        lease (a shared concurrency limit's) under the prefix is held (``{prefix}:restarted``)
        until the grace has passed since then, so that no slot still held is granted twice.
        The leases this store holds are put in whatever happened, those of the attempts the
        local share admitted while the server was unavailable included: they run, so the server
        must count them (#21 item 11). One request of the store does this; the others wait for
        it. If it fails, the next request tries again.
        """
        checking = self._checking
        if checking is not None:
            await checking.wait()
            return
        checking = self._checking = anyio.Event()
        try:
            grace = self.lease / 3 + self.call_timeout
            known = self._epoch
            hold = await self._young_server(grace) if known is None else 0.0
            local = dict(self._unasserted)
            held = [pair for leases in self._leases.values() for pair in leases]
            pairs = held + [pair for leases in local.values() for pair in leases]
            reply = await self.call(
                "recover",
                [self.restart_key, self.epoch_key, *(k for k, _ in pairs)],
                [known or "", grace, hold, self.lease, self.id, *(m for _, m in pairs)],
                recovering=True,
            )
            epoch, held_for = _text(reply[0]), float(_text(reply[1]))
            self._epoch = epoch
            lost = known is not None and epoch != known
            now = anyio.current_time()
            for holder, leases in local.items():
                if self._unasserted.pop(holder, None) is not None:
                    self._leases[holder] = leases  # in the server now: renewed and released
                else:  # released while RECOVER was in flight: the lease it added is an orphan
                    self._orphans.extend((key, member, now) for key, member in leases)
            if lost or local:
                self._reasserted += (len(held) if lost else 0) + sum(map(len, local.values()))
            if lost or local or held_for > 0:
                _logger.log(
                    logging.WARNING if lost else logging.INFO,
                    "werkpool: %r: %s: put %d running lease(s) in; new leases wait %.3g s for "
                    "the other clients to put theirs back",
                    self,
                    "the server lost its keys (flushed, or restarted empty)"
                    if lost
                    else "the server started moments ago"
                    if held_for > 0
                    else "the server is back after an outage",
                    len(pairs),
                    held_for,
                )
            # Attempts the local share admitted meanwhile: the next request puts them in too.
            self._unchecked = bool(self._unasserted)
        finally:
            self._checking = None
            checking.set()

    async def _young_server(self, grace: float) -> float:
        """How much of *grace* is left since the server started (0 if it is older, or its
        ``INFO`` is not allowed to this client)."""
        try:
            info = await self.client.info("server")  # before any script: nothing to wait for
        except coredis.exceptions.ResponseError:  # an ACL without INFO: cannot tell
            return 0.0
        uptime = info.get("uptime_in_seconds")
        if not isinstance(uptime, (int, float, str, bytes)):
            return 0.0
        # Whole seconds: the server may be up to one second older than it says.
        return max(grace - float(uptime), 0.0)

    # -- background tasks -------------------------------------------------------------------------

    async def _renew_leases(self) -> None:
        """Renew every lease held, each third of the lease; retry the failed releases; let go
        of the pools' idle keys."""
        while True:
            await anyio.sleep(self.lease / 3)
            now = anyio.current_time()
            for binding in list(self._bindings):
                binding.sweep(now)
            try:
                await self.renew_now()
            except Exception as exc:  # the next renewal tries again; the task must not die
                _logger.warning("werkpool: renewing the leases in %r failed: %s", self, exc)

    async def renew_now(self) -> None:
        """Renew the leases held now, re-add the ones the server lost, retry failed releases."""
        if self._unasserted:
            # Attempts the local share admitted while the server was unavailable: a request puts
            # their leases in first (see call), even if no other request comes.
            await self.call("renew", [], [self.lease])
        if self._orphans:
            # A lease not renewed is gone after `lease` seconds anyway: only younger ones matter
            # (so an outage's failed releases do not pile up).
            since = anyio.current_time() - self.lease
            orphans = [(k, m, t) for k, m, t in self._orphans if t > since]
            self._orphans = []
            if orphans:
                try:
                    await self.call(
                        "release",
                        [k for k, _, _ in orphans],
                        [self.channel, *(m for _, m, _ in orphans)],
                    )
                except BaseException:
                    self._orphans.extend(orphans)
                    raise
        pairs = [pair for leases in self._leases.values() for pair in leases]
        for start in range(0, len(pairs), 500):
            chunk = pairs[start : start + 500]
            missing = await self.call(
                "renew", [k for k, _ in chunk], [self.lease, *(m for _, m in chunk)]
            )
            if missing:
                held = {pair for leases in self._leases.values() for pair in leases}
                lost = [chunk[int(i) - 1] for i in missing]
                lost = [pair for pair in lost if pair in held]  # not released meanwhile
                if lost:
                    self._reasserted += len(lost)
                    _logger.warning(
                        "werkpool: %d lease(s) were missing in %r (a restarted server, or a "
                        "stall longer than the lease): added back",
                        len(lost),
                        self,
                    )
                    await self.call(
                        "reassert", [k for k, _ in lost], [self.lease, *(m for _, m in lost)]
                    )

    async def _listen(self) -> None:
        """Wake the refused requests waiting for a concurrency limit when any process releases
        a slot of it (a message on the store's channel names the limit's key)."""
        delay = 0.1
        while True:
            try:
                async with self.client.pubsub(channels=[self.channel]) as pubsub:
                    delay = 0.1
                    async for message in pubsub:
                        if message["type"] != "message":
                            continue
                        data = message["data"]
                        key = data.decode() if isinstance(data, bytes) else str(data)
                        for binding in self._bindings:
                            binding.freed(key)
            except Exception as exc:  # the connection failed: listen again, with a backoff
                _logger.debug("werkpool: the pub/sub listener of %r failed: %s", self, exc)
                await anyio.sleep(delay)
                delay = min(delay * 2, 2.0)


#: A shared limit as one admission asks it: its Redis key, value, script arguments, per-key.
_Entry = tuple[str, Shared, tuple[str, float, float], bool]


@final
class _Binding:
    """One pool's shared limits in one store: the pool's :class:`RemoteLimit`."""

    __slots__ = (
        "__weakref__",
        "_grants",
        "_keyed_args",
        "_local",
        "_releases",
        "_specs",
        "_watch",
        "keyed",
        "limits",
        "pipeline",
        "store",
        "wake",
    )

    def __init__(
        self,
        store: RedisStore,
        limits: tuple[Shared, ...],
        per_key: tuple[Shared, ...],
        wake: Callable[[Hashable | None], None],
    ) -> None:
        self.store = store
        #: Admissions in flight at once for the pool (see RemoteLimit.pipeline).
        self.pipeline = store.pipeline
        self.limits = limits
        self.keyed = per_key
        self.wake = wake
        self._grants: dict[Job, _Grant] = {}
        #: The keys of the concurrency limits a refused request waits for -> its key (or None),
        #: and when it began to wait (see sweep).
        self._watch: dict[str, tuple[Hashable | None, float]] = {}
        #: Release messages seen (a refusal checks whether one came while it was in flight).
        self._releases = 0
        #: The local shares (degraded mode), made on first use: None -> the pool's, key -> its.
        self._local: dict[Hashable | None, tuple[tuple[LimitSpec, ...], tuple[Limit, ...]]] = {}
        prefix = store.prefix
        self._specs = [(f"{prefix}:{spec.name}:{spec.kind}", spec, _args(spec)) for spec in limits]
        #: The per-key limits' script arguments, worked out once (not per job).
        self._keyed_args = [(spec, _args(spec)) for spec in per_key]

    def __repr__(self) -> str:
        return f"<shared limits {[*self.limits, *self.keyed]!r} in {self.store!r}>"

    def _entries(
        self, key: Hashable | None
    ) -> list[tuple[str, Shared, tuple[str, float, float], bool]]:
        entries = [(name, spec, args, False) for name, spec, args in self._specs]
        if key is not None and self.keyed:
            suffix = key if isinstance(key, str) else repr(key)
            prefix = self.store.prefix
            entries += [
                (f"{prefix}:{spec.name}:{spec.kind}:{suffix}", spec, args, True)
                for spec, args in self._keyed_args
            ]
        return entries

    async def acquire(self, job: Job) -> float | Refusal:
        """Take credit in every shared limit of *job*'s attempt at once, or in none."""
        store = self.store
        lane = job.lane
        key: Hashable | None = None if lane is None else lane.key
        entries = self._entries(key)
        if not entries:
            return -_INF
        holder = store.holder()
        asked = anyio.current_time()
        keys: list[str] = []
        # The horizon within which a grant may be for later: a round trip and a timer's
        # lateness, so that a request sent early by that much is granted, not refused.
        ahead = store.rtt + _AHEAD
        args: list[str | float] = [holder, store.lease, ahead]
        grant = _Grant(holder, key)
        for name, spec, (code, a, b), keyed in entries:
            cost = _cost(job, spec.unit)
            keys.append(name)
            args += [code, a, b, repr(float(cost)), "1" if keyed else "0"]
            if code == "c" and cost > 0:
                grant.leases.append((name, f"{holder}|{float(cost)!r}"))
                # A release of this limit ends the hold of a refusal: the key's, or the pool's.
                # (Kept until a release comes, or sweep(): a wake with no hold costs nothing.)
                self._watch[name] = (key if keyed else None, asked)
        keys.append(store.restart_key)
        releases = self._releases  # a release seen while the request is in flight counts
        # Registered before the request: if it is cancelled or its answer lost, release() still
        # removes whatever it may have taken (a lease of this holder).
        self._grants[job] = grant
        delay = 0.05
        while True:
            if (
                store.down_since is not None
                and store.local_share is not None
                and anyio.current_time() - store.down_since < 1.0
            ):
                # Degraded mode: meanwhile, ask the server again at most once per second.
                return self._acquire_locally(job, key, grant)
            try:
                reply = await store.call("admit", keys, args)
            except _Unavailable as exc:
                if store.local_share is not None:
                    return self._acquire_locally(job, key, grant)
                now = anyio.current_time()
                down_since = store.down_since if store.down_since is not None else now
                if now - down_since >= store.timeout:
                    # Chained to the client's own error, not to the store's private wrapper.
                    raise LimitUnavailableError(
                        f"the shared limits {[spec for _, spec, _, _ in entries]!r} were "
                        f"unavailable for {now - down_since:.3g} s (the store's timeout is "
                        f"{store.timeout:g} s): {exc}"
                    ) from (exc.__cause__ or exc)
                await anyio.sleep(min(delay, down_since + store.timeout - now))
                delay = min(delay * 2, 1.0)
                continue
            break
        now = anyio.current_time()
        if int(reply[0]) == 1:
            store._granted += 1
            grant.confirmed = True
            if grant.leases:
                store._leases[holder] = grant.leases
            if store.on_grant is not None:
                store.on_grant(float(reply[1]))
            wait = float(reply[2])
            # The slot is `wait` after the server read its clock, which was about half a round
            # trip before this answer arrived.
            return now + wait - store.rtt / 2 if wait > 0 else now
        del self._grants[job]
        store._refused += 1
        # Ask again early enough to land inside the next request's horizon: then that one is
        # granted for the credit's time, and the start is on time.
        wait = max(float(reply[1]) - _AHEAD / 2, 0.0)
        if int(reply[2]):  # a concurrency limit is full: a release (pub/sub) or its hint
            if self._releases != releases:
                # A slot was released while the request was in flight: its message may have
                # found no hold to end yet, so ask again now instead of waiting for the next.
                wait = max(wait, 0.0)
            else:
                wait = max(wait, min(store.recheck, max(float(reply[4]), 0.0)))
            for name, _spec, (code, _, _), keyed in entries:
                if code == "c":  # wait for the next release of any of them
                    self._watch[name] = (key if keyed else None, now)
        return Refusal(now + wait, key=not int(reply[3]))

    def _acquire_locally(self, job: Job, key: Hashable | None, grant: _Grant) -> float | Refusal:
        """Degraded mode: admit *job* under the local share of each shared limit."""
        store = self.store
        share = store.local_share
        assert share is not None
        local = self._local.get(key)
        if local is None:
            specs = self.limits + (self.keyed if key is not None else ())
            scaled = [_scaled(s.limit, share) for s in specs]
            local = self._local[key] = (tuple(scaled), tuple(build(spec) for spec in scaled))
        shares, limits = local
        for spec in shares:
            if _cost(job, spec.unit) > spec.capacity:
                del self._grants[job]
                raise LimitUnavailableError(
                    f"the store is unavailable, and the local share {spec!r} (local_share="
                    f"{share:g}) can never admit this job's cost {job.cost!r}"
                )
        now = anyio.current_time()
        earliest = -_INF
        for limit in limits:
            t = limit.earliest(job, now)
            if t > earliest:
                earliest = t
        if earliest > now:
            del self._grants[job]
            # A full local concurrency share frees when a local attempt ends (release wakes).
            return Refusal(now + store.recheck if earliest == _INF else earliest)
        for limit in limits:
            limit.admit(job, now)
        grant.local = True
        grant.locals_ = limits
        if grant.leases:
            # The server does not know of this attempt: its leases are put in at the next
            # contact, so that it counts there for as long as it runs (#21 item 11).
            store._unasserted[grant.holder] = grant.leases
            store._unchecked = True
        store._local += 1
        return now

    async def release(self, job: Job) -> None:
        """The attempt ended (or never ran): give its leases back."""
        grant = self._grants.pop(job, None)
        if grant is None:
            return
        store = self.store
        if grant.local:
            for limit in grant.locals_:
                limit.release(job)
            self.wake(None)
            if grant.key is not None:
                self.wake(grant.key)
            self._let_go(grant.key, anyio.current_time())
            if store._unasserted.pop(grant.holder, None) is not None:
                return  # its leases never reached the server: nothing to give back there
            # Else they were put in when the server came back: released as any lease.
        store._leases.pop(grant.holder, None)
        if not grant.leases:
            return
        leases = grant.leases
        try:
            await store.call(
                "release", [k for k, _ in leases], [store.channel, *(m for _, m in leases)]
            )
        except (_Unavailable, SharedLimitError) as exc:
            # The renewal task retries; meanwhile the lease expires on its own (not renewed).
            now = anyio.current_time()
            store._orphans.extend((key, member, now) for key, member in leases)
            if grant.confirmed or grant.local:  # else the admission got no answer: likely none
                _logger.warning("werkpool: releasing %r in %r failed: %s", leases, store, exc)

    def freed(self, name: str) -> None:
        """A slot of the concurrency limit *name* was released (by any process)."""
        self._releases += 1
        if name in self._watch:
            self.wake(self._watch.pop(name)[0])

    def _let_go(self, key: Hashable | None, now: float) -> None:
        """Drop *key*'s local shares if they are at rest (a fresh one behaves the same)."""
        local = self._local.get(key)
        if local is not None and all(limit.rest_at() <= now for limit in local[1]):
            del self._local[key]

    def sweep(self, now: float) -> None:
        """Let go of what idle keys hold, so that they cost no memory (R56, #21 item 16): the
        local shares at rest, and the watches that no refusal waits on any more (a refused
        request asks again within ``recheck``, and watches anew if refused again)."""
        for key in list(self._local):
            self._let_go(key, now)
        if self._watch:
            edge = now - self.store.recheck
            for name, (_, since) in list(self._watch.items()):
                if since < edge:
                    del self._watch[name]


def _only(group: BaseExceptionGroup[BaseException], exc: BaseException) -> bool:
    """True if *group* holds *exc* and nothing else (in nested groups too)."""
    for inner in group.exceptions:
        if isinstance(inner, BaseExceptionGroup):
            if not _only(inner, exc):  # pyright: ignore[reportUnknownArgumentType]
                return False
        elif inner is not exc:
            return False
    return True


def _text(value: object) -> str:
    """A Redis reply's bytes or str as a str."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _args(spec: Shared) -> tuple[str, float, float]:
    """The script's kind code and two numbers for *spec* (see ADMIT)."""
    limit = spec.limit
    if isinstance(limit, Rate):
        return "r", limit.per / limit.count, float(limit.burst)
    if isinstance(limit, Window):
        return "w", limit.per, float(limit.count)
    return "c", float(limit.n), 0.0


def _scaled(limit: Rate | Window | Concurrency, share: float) -> Rate | Window | Concurrency:
    """*limit* with *share* of its budget (at least one unit at once, for attempts)."""
    whole = limit.unit is None
    if isinstance(limit, Rate):
        burst = limit.burst * share
        return Rate(
            limit.count * share,
            limit.per,
            burst=max(1, math.floor(burst)) if whole else max(burst, 1e-9),
            unit=limit.unit,
        )
    if isinstance(limit, Window):
        count = limit.count * share
        return Window(max(1, math.floor(count)) if whole else count, limit.per, unit=limit.unit)
    n = limit.n * share
    return Concurrency(max(1, math.floor(n)) if whole else n, unit=limit.unit)
