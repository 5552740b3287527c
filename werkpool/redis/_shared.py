"""One pool's shared limits in one store: :class:`SharedLimit`, the pool's remote limit.

The pool's scheduler sees a :class:`~werkpool._core._limits.RemoteLimit`. Its
:meth:`~SharedLimit.acquire` asks the ADMIT script for every shared limit of an attempt at once
(the pool's, and its key's per-key ones) and turns the answer into a start time, or into a
:class:`~werkpool._core._limits.Refusal` that says when to ask again; its
:meth:`~SharedLimit.release` gives the attempt's leases back. While the server is unavailable it
waits for it (up to the store's ``timeout``), or admits under the local shares of degraded mode
(:mod:`._degraded`). A refusal by a full concurrency limit waits for a release message (pub/sub,
heard by the store), which :meth:`~SharedLimit.freed` turns into a wake-up of the pool.

It reaches the store only through :class:`StoreLink`, the store's small interface for it: the
requests, the leases it registers, and the counters it bumps.
"""

# R56 here is a reliability requirement: docs/reliability.md lists them.

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Protocol, final

import anyio

from .._core._exceptions import LimitUnavailableError
from .._core._limit import Limit
from .._core._limit import cost_of as _cost
from .._core._remote_limit import NOT_ASKED, Refusal
from ._degraded import LocalShares
from ._scripts import AHEAD, Unavailable, script_args

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Sequence

    from .._core._job import Job
    from .._core._remote_limit import Chain
    from .._core._specs import Shared

__all__ = ["SharedLimit", "StoreLink"]

_INF = math.inf


class StoreLink(Protocol):
    """What a :class:`SharedLimit` needs of its store (:class:`~werkpool.redis.RedisStore`)."""

    prefix: str
    pipeline: int
    lease: float
    timeout: float
    recheck: float
    local_share: float | None
    #: When the current outage began (the pool's clock), or None.
    down_since: float | None
    #: A moving average of one request's round trip (s).
    rtt: float
    on_grant: Callable[[float], None] | None
    #: The running loop's clock (:func:`anyio.current_time`, looked up once).
    clock: Callable[[], float]

    @property
    def arrived(self) -> float:
        """When the replies of the last admission call came back (on :attr:`clock`)."""
        ...

    def holder(self) -> str:
        """A new holder id, unique across processes."""
        ...

    async def call(self, script: str, keys: Sequence[str], args: Sequence[str | float]) -> Any:
        """Run one of the store's scripts (raises :class:`Unavailable` if it does not answer)."""
        ...

    async def admit(
        self,
        keys: Sequence[str],
        args: Sequence[str | float],
        chain: Chain | None = None,
        link: int = 0,
    ) -> Any:
        """One attempt's ADMIT reply (*keys*: its limits' keys; *args*: its holder, lease,
        horizon and five per key); concurrent ones share a call, a *chain*'s links in its order
        (raises :class:`Unavailable` if the server does not answer)."""
        ...

    def granted(self, holder: str, leases: list[tuple[str, str]]) -> None:
        """The server granted an admission: count it, and hold its *leases* (renewed)."""
        ...

    def refused(self) -> None:
        """The server refused an admission: count it."""
        ...

    def granted_locally(self, holder: str, leases: list[tuple[str, str]]) -> None:
        """The local share granted an admission: its *leases* go to the server at its next
        contact, so that it counts there for as long as it runs."""
        ...

    async def give_back(
        self, holder: str, leases: list[tuple[str, str]], *, answered: bool
    ) -> None:
        """An attempt ended: remove its *leases* (retried by the store if that fails; logged if
        *answered*, that is if the admission got an answer, so that the leases likely exist)."""
        ...


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


#: A shared limit as one admission asks it: its Redis key, value, script arguments, per-key.
_Entry = tuple[str, "Shared", tuple[str, float, float], bool]

#: How many keys' admission arguments are kept at most (then the cache starts again empty).
_ASKS_KEPT = 4096


@final
class _Asks:
    """What every admission of one key sends, worked out once per key (#24): the Redis keys,
    and the script's arguments after the holder, lease and horizon when no limit counts a unit
    (then every attempt costs 1 in each)."""

    __slots__ = ("entries", "fixed", "keys", "leased", "watched")

    def __init__(self, entries: list[_Entry]) -> None:
        self.entries = entries
        self.keys = [name for name, _, _, _ in entries]
        fixed: list[str | float] = []
        for _, _spec, (code, a, b), keyed in entries:
            fixed += [code, a, b, "1.0", "1" if keyed else "0"]
        unitless = all(spec.unit is None for _, spec, _, _ in entries)
        self.fixed = fixed if unitless else None
        #: The concurrency limits (name, per-key), whose releases end a refusal's wait.
        self.watched = [(name, keyed) for name, _, (code, _, _), keyed in entries if code == "c"]
        #: The concurrency limits' names when every attempt takes a lease in each (no units).
        self.leased = [name for name, _ in self.watched] if unitless else None


@final
class SharedLimit:
    """One pool's shared limits in one store: the pool's :class:`RemoteLimit`."""

    __slots__ = (
        "__weakref__",
        "_asks",
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
        store: StoreLink,
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
        #: The local shares (degraded mode), made on first use.
        self._local = LocalShares(limits, per_key, store.local_share or 1.0)
        prefix = store.prefix
        self._specs = [
            (f"{prefix}:{spec.name}:{spec.kind}", spec, script_args(spec)) for spec in limits
        ]
        #: The per-key limits' script arguments, worked out once (not per job).
        self._keyed_args = [(spec, script_args(spec)) for spec in per_key]
        #: Each key's admission arguments (None: the pool's own), made on first use.
        self._asks: dict[Hashable | None, _Asks] = {}

    def __repr__(self) -> str:
        return f"<shared limits {[*self.limits, *self.keyed]!r} in {self.store!r}>"

    def _entries(self, key: Hashable | None) -> list[_Entry]:
        entries = [(name, spec, args, False) for name, spec, args in self._specs]
        if key is not None and self.keyed:
            suffix = key if isinstance(key, str) else repr(key)
            prefix = self.store.prefix
            entries += [
                (f"{prefix}:{spec.name}:{spec.kind}:{suffix}", spec, args, True)
                for spec, args in self._keyed_args
            ]
        return entries

    def _asks_of(self, key: Hashable | None) -> _Asks:
        """*key*'s admission arguments, made on first use."""
        asks = self._asks
        if len(asks) >= _ASKS_KEPT:
            asks.clear()  # many keys: keep the memory bounded (a key's are remade in µs)
        made = asks[key] = _Asks(self._entries(key))
        return made

    def holds(self, job: Job) -> bool:
        """True if *job*'s attempt may hold credit that :meth:`release` gives back (a lease, a
        local share); False lets the pool skip the shielded give-back (#24)."""
        return job in self._grants

    async def acquire(self, job: Job) -> float | Refusal:
        """Take credit in every shared limit of *job*'s attempt at once, or in none."""
        return await self.acquire_in_order(job, None, 0)

    async def acquire_in_order(self, job: Job, chain: Chain | None, link: int) -> float | Refusal:
        """As :meth:`acquire`, as *link* of *chain* (if not None): its request goes out in the
        order of the calls, and the ADMIT script grants it only if the chain's earlier links
        were granted (else :data:`NOT_ASKED`, see :class:`~._batch.Admissions`)."""
        if chain is not None and not chain.asks(link):
            return NOT_ASKED
        store = self.store
        key = job.key
        asks = self._asks.get(key)
        if asks is None:
            asks = self._asks_of(key)
        entries = asks.entries
        if not entries:
            return -_INF
        holder = store.holder()
        clock = store.clock
        asked = clock()
        # The horizon within which a grant may be for later: a round trip and a timer's
        # lateness, so that a request sent early by that much is granted, not refused.
        ahead = store.rtt + AHEAD
        args: list[str | float] = [holder, store.lease, ahead]
        grant = _Grant(holder, key)
        fixed = asks.fixed
        if fixed is not None:  # every attempt costs 1 in each limit: the arguments are known
            args += fixed
            if asks.leased:
                member = f"{holder}|1.0"
                grant.leases = [(name, member) for name in asks.leased]
                for name, keyed in asks.watched:
                    # A release of this limit ends the hold of a refusal: the key's, or the
                    # pool's. (Kept until a release comes, or sweep(): a wake with no hold costs
                    # nothing.)
                    self._watch[name] = (key if keyed else None, asked)
        else:
            for name, spec, (code, a, b), keyed in entries:
                cost = _cost(job, spec.unit)
                args += [code, a, b, repr(float(cost)), "1" if keyed else "0"]
                if code == "c" and cost > 0:
                    grant.leases.append((name, f"{holder}|{float(cost)!r}"))
                    self._watch[name] = (key if keyed else None, asked)
        keys = asks.keys
        releases = self._releases  # a release seen while the request is in flight counts
        # Registered before the request: if it is cancelled or its answer lost, release() still
        # removes whatever it may have taken (a lease of this holder). An attempt that takes no
        # lease holds nothing to give back (a rate's or window's credit stays spent): then it
        # is registered only if the local share admits it.
        if grant.leases:
            self._grants[job] = grant
        delay = 0.05
        while True:
            if (
                store.down_since is not None
                and store.local_share is not None
                and clock() - store.down_since < 1.0
            ):
                # Degraded mode: meanwhile, ask the server again at most once per second.
                return self._acquire_locally(job, key, grant, chain, link)
            try:
                reply = await store.admit(keys, args, chain, link)
            except Unavailable as exc:
                if store.local_share is not None:
                    return self._acquire_locally(job, key, grant, chain, link)
                now = clock()
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
        # When the answer arrived, not when this task resumed (later: after the store's sending
        # task and the batch's other callers): a start granted for later waits from there.
        now = store.arrived
        granted = int(reply[0])
        if granted == 2:  # a chain's link after one not granted: nothing asked, nothing taken
            self._grants.pop(job, None)
            return NOT_ASKED
        if granted == 1:
            grant.confirmed = True
            store.granted(holder, grant.leases)
            if store.on_grant is not None:
                store.on_grant(int(reply[1]) / 1e6)
            wait = int(reply[2]) / 1e6  # (whole microseconds)
            # The slot is `wait` after the server read its clock, which was about half a round
            # trip before this answer arrived.
            return now + wait - store.rtt / 2 if wait > 0 else now
        self._grants.pop(job, None)
        store.refused()
        # Ask again early enough to land inside the next request's horizon: then that one is
        # granted for the credit's time, and the start is on time.
        wait = max(float(reply[1]) - AHEAD / 2, 0.0)
        if int(reply[2]):  # a concurrency limit is full: a release (pub/sub) or its hint
            if self._releases != releases:
                # A slot was released while the request was in flight: its message may have
                # found no hold to end yet, so ask again now instead of waiting for the next.
                wait = max(wait, 0.0)
            else:
                wait = max(wait, min(store.recheck, max(float(reply[4]), 0.0)))
            for name, keyed in asks.watched:  # wait for the next release of any of them
                self._watch[name] = (key if keyed else None, now)
        return Refusal(now + wait, key=not int(reply[3]))

    def _acquire_locally(
        self,
        job: Job,
        key: Hashable | None,
        grant: _Grant,
        chain: Chain | None = None,
        link: int = 0,
    ) -> float | Refusal:
        """Degraded mode: admit *job* under the local share of each shared limit (as *link*
        of *chain*, if not None: a refusal fails the chain for the links after it)."""
        store = self.store
        try:
            answer = self._local.admit(job, key, anyio.current_time(), store.recheck)
        except BaseException:
            self._grants.pop(job, None)
            if chain is not None:
                chain.fail(link)
            raise
        if isinstance(answer, Refusal):
            self._grants.pop(job, None)
            if chain is not None:
                chain.fail(link)
            return answer
        self._grants[job] = grant  # its local shares are given back, leases or not
        grant.local = True
        grant.locals_ = self._local.limits_of(key)
        # The server does not know of this attempt: its leases are put in at the next contact,
        # so that it counts there for as long as it runs (#21 item 11).
        store.granted_locally(grant.holder, grant.leases)
        return answer

    async def release(self, job: Job) -> None:
        """The attempt ended (or never ran): give its leases back."""
        grant = self._grants.pop(job, None)
        if grant is None:
            return
        if grant.local:
            for limit in grant.locals_:
                limit.release(job)
            self.wake(None)
            if grant.key is not None:
                self.wake(grant.key)
            self._local.let_go(grant.key, anyio.current_time())
        elif not grant.leases:
            return  # a rate's or a window's credit is never given back
        await self.store.give_back(
            grant.holder, grant.leases, answered=grant.confirmed or grant.local
        )

    def freed(self, name: str) -> None:
        """A slot of the concurrency limit *name* was released (by any process)."""
        self._releases += 1
        if name in self._watch:
            self.wake(self._watch.pop(name)[0])

    def sweep(self, now: float) -> None:
        """Let go of what idle keys hold, so that they cost no memory (R56, #21 item 16): the
        local shares at rest, and the watches that no refusal waits on any more (a refused
        request asks again within ``recheck``, and watches anew if refused again)."""
        self._local.sweep(now)
        if self._watch:
            edge = now - self.store.recheck
            for name, (_, since) in list(self._watch.items()):
                if since < edge:
                    del self._watch[name]
