"""The store of shared limits: :class:`RedisStore`, one process's connection to them in Redis.

One Lua script per admission (see ``lua/admit.lua``) decides every shared limit of an attempt at
once, atomically, on Redis' own clock (``TIME``): client clocks never enter, so clock skew between
hosts cannot break a limit. It takes credit in all of them or in none, and a refusal says exactly
how long to wait (a rate's or window's next credit) or that a concurrency limit is full (then a
release, announced by pub/sub, or the first lease's expiry ends the wait).

The store runs the scripts (:meth:`RedisStore.call`: the script cache, the timeout, the outage
and restart recovery), keeps this process's leases (renewed, re-added if the server lost them,
released again if a release failed) and listens for releases (pub/sub). Each pool binds its
shared limits to it as one :class:`~werkpool.redis._shared.SharedLimit`.

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
admission or renewal of every store that knew it notices and recovers (see ``lua/recover.lua``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
import uuid
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast, final

import anyio
import coredis
import coredis.exceptions

from .._core._exceptions import SharedLimitError
from ._batch import Admissions
from ._scripts import EPOCH_CHANGED, EPOCHED, SCRIPTS, UNAVAILABLE, Unavailable, text
from ._shared import SharedLimit

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Sequence
    from types import TracebackType

    from anyio.abc import TaskGroup

    from .._core._remote_limit import Chain
    from .._core._specs import Shared

__all__ = ["RedisStore", "StoreStatistics"]

_logger = logging.getLogger("werkpool")


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
        local rate or window), or 1 for the exact order. With more, two jobs whose requests
        are in flight together may start in either order (trio runs ready tasks in random
        order, so there they do). With 1, jobs start exactly in submission order (per key),
        and still up to 16 admissions of a pool are in flight, as a chain: the script stops at
        the first one it refuses and asks none after it, and the granted ones start in order.
        The admissions that wait while the store's call is in flight go together in its next
        call.

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
        #: The ADMIT calls: admissions that come while one is in flight share the next call.
        self._admissions = Admissions(self, self.restart_key, lambda: self.clock())
        #: The client was not entered by the caller: the store enters it, and leaves it on exit.
        self._owns_client = False
        #: The pools' shared limits, weakly: a pool that ended leaves nothing behind in the store.
        self._shared: weakref.WeakSet[SharedLimit] = weakref.WeakSet()
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
        #: The running loop's clock, as :func:`anyio.current_time` reads it, without anyio's
        #: lookup of the backend on each call (set as the store is entered; #24).
        self.clock: Callable[[], float] = anyio.current_time
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
        self.clock = _loop_clock()
        tg.start_soon(self._admissions.run)
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
        self._shared.clear()
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
    ) -> SharedLimit:
        """The remote limit deciding one pool's shared limits (called as the pool starts)."""
        if self._tg is None:
            raise RuntimeError(
                f"{self!r} is not running: enter it (`async with store:`) around the pools "
                "whose limits it keeps"
            )
        shared = SharedLimit(self, limits, per_key, wake)
        self._shared.add(shared)
        return shared

    # -- the leases of the admissions (StoreLink, for SharedLimit) --------------------------------

    def granted(self, holder: str, leases: list[tuple[str, str]]) -> None:
        """The server granted an admission: count it, and hold its *leases* (renewed)."""
        self._granted += 1
        if leases:
            self._leases[holder] = leases

    def refused(self) -> None:
        """The server refused an admission: count it."""
        self._refused += 1

    def granted_locally(self, holder: str, leases: list[tuple[str, str]]) -> None:
        """The local share granted an admission while the server was unavailable: its *leases*
        are put in at the next contact (see :meth:`_check_restart`), so that the attempt counts
        there for as long as it runs (#21 item 11)."""
        if leases:
            self._unasserted[holder] = leases
            self._unchecked = True
        self._local += 1

    async def give_back(
        self, holder: str, leases: list[tuple[str, str]], *, answered: bool
    ) -> None:
        """An attempt ended: remove its *leases* from the server and announce them freed. A
        release that fails is retried by the renewal task (meanwhile the lease, no longer
        renewed, expires on its own); it is logged if *answered* (the admission got an answer,
        so the leases likely exist)."""
        if self._unasserted.pop(holder, None) is not None:
            return  # its leases never reached the server: nothing to give back there
        # Else they were put in when the server came back: released as any lease.
        self._leases.pop(holder, None)
        if not leases:
            return
        try:
            await self.call(
                "release", [k for k, _ in leases], [self.channel, *(m for _, m in leases)]
            )
        except (Unavailable, SharedLimitError) as exc:
            now = anyio.current_time()
            self._orphans.extend((key, member, now) for key, member in leases)
            if answered:
                _logger.warning("werkpool: releasing %r in %r failed: %s", leases, self, exc)

    # -- requests ---------------------------------------------------------------------------------

    async def admit(
        self,
        keys: Sequence[str],
        args: Sequence[str | float],
        chain: Chain | None = None,
        link: int = 0,
    ) -> Any:
        """One attempt's ADMIT reply; admissions that come while a call is in flight share the
        next call (see :mod:`._batch`); a *chain*'s links keep its order."""
        if self._tg is None:
            raise RuntimeError(f"{self!r} is not running: enter it (`async with store:`)")
        return await self._admissions.admit(keys, args, chain, link)

    @property
    def arrived(self) -> float:
        """When the replies of the last admission call came back (the store's clock)."""
        return self._admissions.arrived

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
        ``NOSCRIPT``, as a restarted server has none); raise :class:`Unavailable` if the server
        does not answer within ``call_timeout``, :exc:`SharedLimitError` if it answers an error.

        Before its first request, after a ``NOSCRIPT`` or an epoch error (the server lost its
        scripts or its keys: restarted, or flushed), and after an outage during which the local
        share admitted attempts, the store first checks with the server and recovers (see
        :meth:`_check_restart`); every other request of the store waits for that meanwhile.
        """
        client = self.client
        clock = self.clock
        began = clock()
        try:
            # A bare cancel scope with a deadline, not anyio.fail_after: the same timeout without
            # fail_after's generator-based context manager, a few µs per request (#24).
            with anyio.CancelScope(deadline=began + self.call_timeout) as scope:
                for _ in range(3):
                    while self._unchecked and not recovering:  # bounded: call_timeout
                        await self._check_restart()  # (again, if another's check failed)
                    sha = self._shas.get(script)
                    if sha is None:
                        loaded = await client.script_load(SCRIPTS[script])
                        sha = self._shas[script] = text(loaded)
                    if script in EPOCHED:
                        sent_keys = [*keys, self.epoch_key]
                        sent_args = [*args, self._epoch or ""]
                    else:
                        sent_keys, sent_args = list(keys), list(args)
                    # By hand rather than through coredis's register_script (which reloads a
                    # missing script and retries by itself): a NOSCRIPT is this store's signal
                    # that the server restarted, and the restart must be checked (leases put
                    # back, new ones held; see _check_restart) before any script runs again.
                    try:
                        reply = await client.evalsha(sha, keys=sent_keys, args=sent_args)
                    except coredis.exceptions.NoScriptError:
                        # The server lost them all: it restarted (the epoch tells if empty).
                        self._shas.clear()
                        self._unchecked = True
                        continue
                    except coredis.exceptions.ResponseError as exc:
                        if EPOCH_CHANGED not in str(exc) or recovering:
                            raise
                        # Flushed (FLUSHALL, FLUSHDB) or restarted empty with the scripts
                        # cached: no NOSCRIPT came, but the leases are gone (#21 item 12).
                        self._unchecked = True
                        continue
                    break
                else:  # pragma: no cover - the server lost its state again and again
                    raise Unavailable(f"the server lost its state again and again ({script})")
                # Answered: the reply is returned from inside the scope. Past the scope there is
                # none: only its deadline leads there (the scope caught its cancellation).
                self.down_since = None
                took = clock() - began
                self.rtt = took if self.rtt == 0.0 else 0.8 * self.rtt + 0.2 * took
                return reply
            assert scope.cancelled_caught  # only its deadline cancels it
            raise TimeoutError(f"no answer within call_timeout ({self.call_timeout:g} s)")
        except UNAVAILABLE as exc:
            self._unavailable += 1
            if self.down_since is None:
                self.down_since = anyio.current_time()
            raise Unavailable(f"{type(exc).__name__}: {exc}") from exc
        except coredis.exceptions.ResponseError as exc:
            message = str(exc)
            if "WERKPOOL " in message:
                message = message[message.index("WERKPOOL ") + 9 :].split(" script:")[0]
                raise SharedLimitError(message) from exc
            if "BUSY" in message or "LOADING" in message:
                self._unavailable += 1
                if self.down_since is None:
                    self.down_since = anyio.current_time()
                raise Unavailable(message) from exc
            raise SharedLimitError(
                f"Redis answered the {script} script for the keys {list(keys)!r} with an "
                f"error: {message}"
            ) from exc

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
            epoch, held_for = text(reply[0]), float(text(reply[1]))
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
            for shared in list(self._shared):
                shared.sweep(now)
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
                        for shared in self._shared:
                            shared.freed(key)
            except Exception as exc:  # the connection failed: listen again, with a backoff
                _logger.debug("werkpool: the pub/sub listener of %r failed: %s", self, exc)
                await anyio.sleep(delay)
                delay = min(delay * 2, 2.0)


def _loop_clock() -> Callable[[], float]:
    """The running loop's clock: the function :func:`anyio.current_time` calls, looked up once."""
    try:
        return asyncio.get_running_loop().time
    except RuntimeError:  # not asyncio: trio (anyio's only other backend)
        import trio

        return trio.current_time


def _only(group: BaseExceptionGroup[BaseException], exc: BaseException) -> bool:
    """True if *group* holds *exc* and nothing else (in nested groups too)."""
    for inner in group.exceptions:
        if isinstance(inner, BaseExceptionGroup):
            if not _only(inner, exc):  # pyright: ignore[reportUnknownArgumentType]
                return False
        elif inner is not exc:
            return False
    return True
