"""What holds the starts back: the pool's and the keys' limits, the pauses, a provider's word.

:class:`Holds` is the state that a job's admission reads, and everything that changes it without
changing a job's state: the pool's local and remote limits and each key's lane (made on first
use), the pool's and the keys' pauses, a remote limit's refusal held until another process
frees credit, and what a provider says back, applied to them: a pushback (:exc:`RetryAfter`,
or the ``retry_after=`` callable: which scope it names, how long it pauses, the refused
attempt's cost given back, the adaptive rates slowed down), a server's budgets read from its
headers (the matching limit lowered until the reset), and an attempt's real cost
(:meth:`Holds.settle`). The :class:`~werkpool._core._scheduler.Scheduler` extends it
with the jobs: their line and every change of their state. Like it, sans-I/O: every method
takes ``now``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Final, cast

from ._events import PAUSED, RESUMED
from ._exceptions import RetryAfter
from ._job import RESERVING
from ._lanes import Keys, Lane, MainLane
from ._rate_limit import RateLimit
from ._remote_limit import OrderedRemoteLimit
from ._reservation import Turns
from ._window_limit import WindowLimit

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Iterable, Sequence

    from ._budgets import Budget
    from ._event_sink import EventSink
    from ._job import Job
    from ._lanes import KeyOrder, LimitGroup
    from ._limit import Limit
    from ._remote_limit import RemoteLimit

__all__ = ["DEFAULT_MAX_RETRY_AFTER", "ORDERED_DEPTH", "TICK", "Holds"]

#: A wait shorter than this (1 ns, the resolution of the event loops' clocks) is no wait: the
#: start is admitted at once and dated at its slot, less than a tick *after* now (never before:
#: see :meth:`Scheduler.poll`). Without it a rate of 1e12/s would ask the loop for sleeps of
#: 1e-12 s, which some clocks round to zero and spin on.
TICK: Final = 1e-9

#: The longest pushback the pool honours by default (``max_retry_after=``): 15 minutes. A
#: ``Retry-After`` of 1e308 s or a date in year 9999 would otherwise stop a pool or key for good.
DEFAULT_MAX_RETRY_AFTER: Final = 900.0

#: How many chained reservations may be in flight at once (``pipeline=1`` with a store that
#: keeps their order, see :class:`~werkpool._core._remote_limit.OrderedRemoteLimit`). They go to
#: the store together, so more of them admit more per round trip; each holds a worker while it
#: waits, and the store's own call takes at most 64 admissions.
ORDERED_DEPTH: Final = 16

_INF = math.inf


class Holds:
    """The limits, lanes and pauses that hold the starts back (see the module docstring).

    The :class:`~werkpool._core._scheduler.Scheduler` sets the configuration (its parameters)
    and calls :meth:`_hold_nothing` to start.
    """

    #: Makes a new key's own limits (the pool's ``per_key=``).
    per_key: Callable[[], tuple[Limit, ...]]
    #: A key's weight in the fair share of the pool-wide limits (None: equal weights).
    key_weight: Callable[[Hashable], float] | None
    #: How the keys share the pool-wide limits: "fair" or "submitted" (the pool's option).
    key_order: KeyOrder
    #: Maps a job's error to a pushback delay in seconds, or None (the pool's retry_after=).
    retry_after: Callable[[Exception], float | RetryAfter | None] | None
    #: The longest pause a pushback may cause, in seconds (the pool's ``max_retry_after=``).
    max_retry_after: float
    #: The jobs waiting to start (the scheduler counts them).
    queued: int

    def _hold_nothing(self, limits: Sequence[Limit], remote: Sequence[RemoteLimit]) -> None:
        """Start with the local *limits* and the *remote* ones: no key, pause or pushback."""
        self.limits: tuple[Limit, ...] = tuple(limits)
        #: The lane of the jobs without a key: no limit of its own, never paused or held by
        #: itself (the pool's pause and hold are the pool's), and not among :attr:`keys`.
        self.main = MainLane()
        self.main.taken = self.limits
        self.remote: tuple[RemoteLimit, ...] = tuple(remote)
        #: How many reservations may be in flight at once: 1 keeps FIFO exact; more (a store
        #: that pipelines requests, and no local limit that dates its latest admission, see
        #: :meth:`Scheduler.restamp`) keeps it up to the ones in flight, or exactly if they are
        #: chained (:attr:`turns`).
        self.depth = 1
        #: The start order of chained reservations (``pipeline=1`` with a store that keeps it,
        #: several in flight: :meth:`use_remote`), or None.
        self.turns: Turns | None = None
        #: A remote limit refused: no reservation before this time (a key's: its lane's).
        self._hold_until = -_INF
        #: The lanes of the keys in use (made when the first job with a key comes).
        self.keys: Keys | None = None
        #: No attempt starts before this time (pause(), pause_for(), a pushback).
        self.paused_until = -_INF
        self.timed = False
        self.unlimited = False
        self.local = False
        self._configure()
        self.pushbacks = 0
        #: What running attempts reported they really cost (:meth:`settle`), by job number.
        self.settled: dict[int, dict[str, float]] = {}
        #: Told of every transition when the pool has hooks; None (the common case): no work.
        self.sink: EventSink | None = None

    def _new_keys(self) -> Keys:
        """The keys' bookkeeping, made when the first key is used (or the keys were cleared)."""
        fair = self.key_order == "fair"
        return Keys(self.per_key, TICK, self.key_weight, fair, self.main, self.limits)

    def _configure(self) -> None:
        """Work out the fast paths after a change of limits, keys or pause."""
        #: True if some limit depends on the clock: only then does the pool read it per job. A
        #: remote limit does (a refusal holds starts until a time, a grant may be for later), and
        #: so do keys (their limits, their pauses) and a pause.
        self.timed = (
            bool(self.remote)
            or self.keys is not None
            or self.paused_until != -_INF
            or any(limit.timed for limit in self.limits)
        )
        plain = not self.remote and self.keys is None and self.paused_until == -_INF
        #: No limit, key or pause at all (a size-only pool: its workers bound the concurrency):
        #: poll() then takes the head of the line without asking any limit (the fast path).
        self.unlimited = plain and not self.limits
        #: Local limits, and no key, remote limit or pause: poll() asks the limits of the main
        #: line's head and admits it without the rest of the general path (its second fast path).
        self.local = plain and bool(self.limits)

    def earliest_start(self, now: float) -> float:
        """When the local limits would next admit a start, whatever the job (for a map's pace)."""
        earliest = self.paused_until
        for limit in self.limits:
            t = limit.earliest(None, now)  # type: ignore[arg-type]
            if t > earliest:
                earliest = t
        return earliest

    def _pushback(
        self,
        job: Job,
        error: BaseException,
        now: float,
        settled: dict[str, float] | None = None,
    ) -> float | None:
        """If *error* is a provider's pushback, pause what it names (its scope: the job's key,
        the pool, or one limit), slow its adaptive rates down, and give the refused attempt's
        cost (*settled*, if it reported one) back to its limits; return the end of the pause,
        or None (no pushback).

        :raises Exception: what the ``retry_after`` callable raised, or a TypeError or
            ValueError if it returned something that is not a delay, or the scope names no limit
        """
        # What was asked when something before the pool clamped it already: the httpx transport
        # raises a RetryAfter clamped to its own max_retry_after, with ``clamped_from`` set.
        asked: object = None
        scope: str | None = None
        if isinstance(error, RetryAfter):
            delay: object = error.seconds
            asked = getattr(error, "clamped_from", None)
            scope = getattr(error, "scope", None)
        else:
            assert self.retry_after is not None
            assert isinstance(error, Exception)
            delay = cast("object", self.retry_after(error))
            if delay is None:
                return None
            if isinstance(delay, RetryAfter):  # a delay with a scope
                scope = delay.scope
                delay = delay.seconds
            if isinstance(delay, bool) or not isinstance(delay, (int, float)):
                raise TypeError(
                    f"retry_after must return None, a finite number of seconds >= 0 or a "
                    f"werkpool.RetryAfter, not {type(delay).__name__}"
                )
            if not math.isfinite(delay) or delay < 0:
                raise ValueError(
                    f"retry_after must return None or a finite number of seconds >= 0, "
                    f"got {delay!r}"
                )
        seconds = float(delay)  # type: ignore[arg-type]
        clamped_from = None
        if isinstance(asked, float) and asked > seconds:
            clamped_from = asked
        if seconds > self.max_retry_after:
            if clamped_from is None:
                clamped_from = seconds
            seconds = self.max_retry_after
        until = now + seconds
        key = job.lane.key
        self.check_scope(scope, key)
        # The provider charged nothing for the refused attempt: its cost comes back to every
        # limit that counted it (before the pushback fills the bucket of what it holds).
        self._take_back_all(job, settled if settled is not None else job.cost, now)
        self.push_back(key, now, until, clamped_from, scope, job)
        return until

    def _take_back_all(self, job: Job, cost: dict[str, float] | None, now: float) -> None:
        """Give back what *job*'s refused attempt was charged in the rates and windows (a
        concurrency limit was released as the attempt ended)."""
        for limit in job.lane.taken:
            if isinstance(limit, (RateLimit, WindowLimit)):
                unit = limit.unit
                amount = 1 if unit is None else (0 if cost is None else cost.get(unit, 0))
                if amount:
                    limit.take_back(job, amount, now)

    def settle(self, job: Job, cost: dict[str, float], now: float) -> None:
        """*job*'s running attempt really cost *cost* (units it names; the others as announced):
        each limit counting a unit charges or takes back the difference with what it counted.
        A second call replaces the first."""
        counted = self.settled.get(job.seq)
        if counted is None:
            counted = dict(job.cost) if job.cost else {}
        lane: Lane = job.lane
        lane.group.settle(job, cost, counted, now)
        counted.update(cost)
        self.settled[job.seq] = counted
        if lane is not self.main:
            self.keys.look_again(lane)  # type: ignore[union-attr]  # its limits may admit sooner (or later) now

    def _group(self, key: Hashable) -> LimitGroup:
        """The limits an attempt of *key* takes (the pool's only, for a key with no lane)."""
        keys = self.keys
        lane = None if key is None or keys is None else keys.lanes.get(key)
        return (self.main if lane is None else lane).group

    def limit_names(self, key: Hashable = None) -> set[str]:
        """The names of the pool's limits (and *key*'s, if it has a lane)."""
        return self._group(key).names()

    def check_scope(self, scope: str | None, key: Hashable) -> None:
        """Raise a ValueError if *scope* names no limit of the pool (nor of *key*)."""
        if scope is None or scope in ("key", "pool"):
            return
        names = self.limit_names(key)
        if scope not in names:
            raise ValueError(
                f"a pushback's scope {scope!r} names no limit of this pool (scopes: 'key', "
                f"'pool'{''.join(', ' + repr(name) for name in sorted(names))})"
            )

    def push_back(
        self,
        key: Hashable,
        now: float,
        until: float,
        clamped_from: float | None = None,
        scope: str | None = None,
        job: Job | None = None,
    ) -> None:
        """A provider pushed back at *now*: start nothing of what *scope* names before *until*,
        and slow its adaptive rates down. A job's :exc:`RetryAfter` comes here (*job*: the
        refused attempt's), and so does a pushback heard without failing a job (a last 429
        handed to its caller).

        Which refusal pauses what: scope ``"key"`` (the default with a *key*) pauses *key* and
        slows its adaptive limits only; ``"pool"`` (the default without) pauses the pool and
        slows the pool's adaptive limits only; a limit's name holds that limit only (the pool's,
        and *key*'s of that name), and slows it if adaptive. Check a name with
        :meth:`check_scope` first.

        *until* is at most ``max_retry_after`` away (the caller clamped it); *clamped_from*: the
        seconds the provider asked for, if more (the paused event reports it).
        """
        if scope is None or (scope == "key" and key is None):
            scope = "pool" if key is None else "key"
        self.pushbacks += 1
        if scope == "pool":
            for limit in self.limits:
                limit.pushback(now, until, True, job)
            self.pause(until, clamped_from)
        elif scope == "key":
            keys = self.keys
            lane = None if keys is None else keys.lanes.get(key)
            if lane is not None:
                for limit in lane.limits:
                    limit.pushback(now, until, True, job)
            self.pause_key(key, until, clamped_from)
        else:
            for limit in self._group(key).named(scope):
                limit.pushback(now, until, True, job)
            if key is not None and self.keys is not None:
                lane = self.keys.lanes.get(key)
                if lane is not None:
                    self.keys.look_again(lane)  # it waits for the clock now
            self._configure()  # a held concurrency limit reads the clock from now on

    def observe(self, budgets: Iterable[Budget], key: Hashable, now: float) -> int:
        """A server's budgets, read at *now* from its rate-limit headers (#22 item 3): each
        lowers the matching limit of the pool (*key* None) or of *key* until its reset
        (:meth:`RateLimit.observe`); return how many budgets found a limit.

        A budget matches a local :class:`RateLimit` or :class:`WindowLimit` of its unit (None,
        requests: the limits that count attempts; ``"tokens"``: ``unit="tokens"``; ``"input-
        tokens"`` also matches ``unit="input_tokens"``); among several of the unit, the one
        whose ``per`` is nearest the budget's window, else whose count is nearest its limit,
        else the first. A reset further than ``max_retry_after`` away is clamped to it.
        """
        if key is None:
            limits: tuple[Limit, ...] = self.limits
            lane = None
        else:
            keys = self.keys
            lane = None if keys is None else keys.lanes.get(key)
            if lane is None:
                if not any(type(limit) in _OBSERVING for limit in self.per_key()):
                    return 0  # no limit of a key could take it: no lane made for nothing
                if keys is None:
                    keys = self.keys = self._new_keys()
                    self._configure()
                lane = keys.lane(key)
            limits = lane.limits
        applied = 0
        for budget in budgets:
            limit = _match(budget, limits)
            if limit is not None:
                until, refill = _hold(budget, now, self.max_retry_after)
                limit.observe(budget.remaining, until, now, refill)
                applied += 1
        if lane is not None and not lane.pending:
            assert self.keys is not None
            self.keys.rest(lane)  # a key held with no job: dropped once its hold is over
        return applied

    def remote_freed(self, key: Hashable | None = None) -> bool:
        """A remote limit has credit again (another process released a slot): end the hold of
        a refusal, the pool's (*key* None) or *key*'s, so the head asks again now rather than
        at its fallback time. Return True if some job may ask now (the caller wakes a worker).
        """
        if key is None:
            if self._hold_until == -_INF:
                return False
            self._hold_until = -_INF
            return self.queued > 0
        keys = self.keys
        lane = None if keys is None else keys.lanes.get(key)
        if lane is None or lane.held_until == -_INF:
            return False
        lane.held_until = -_INF
        assert keys is not None
        keys.look_again(lane)
        return lane.head() is not None

    def pause(self, until: float, clamped_from: float | None = None) -> None:
        """Start nothing before *until* (``inf``: until :meth:`resume`); never shortens a pause.
        *clamped_from*: see :meth:`push_back`."""
        if until > self.paused_until:
            self.paused_until = until
            self._configure()
            if self.sink is not None:
                if clamped_from is None:
                    self.sink.pause_event(PAUSED, None, until)
                else:
                    self.sink.pause_event(PAUSED, None, until, clamped_from)

    def pause_key(self, key: Hashable, until: float, clamped_from: float | None = None) -> None:
        """Start no job of *key* before *until*; never shortens the key's pause."""
        if self.keys is None:
            self.keys = self._new_keys()
            self._configure()
        keys = self.keys
        lane = keys.lane(key)
        if until > lane.paused_until:
            lane.paused_until = until
            keys.look_again(lane)  # it waits for the clock now
            if self.sink is not None:
                if clamped_from is None:
                    self.sink.pause_event(PAUSED, key, until)
                else:
                    self.sink.pause_event(PAUSED, key, until, clamped_from)
        if not lane.pending:
            keys.rest(lane)  # a key paused with no job: dropped once the pause is over

    def resume(self, now: float = -_INF) -> None:
        """End every pause and pushback, the pool's and its keys', at *now*.

        The hooks hear of each pause that was still running at *now* (one whose end already
        passed ended then, with no event). The rates a pushback filled hold again only what the
        real starts left (:meth:`RateLimit.end_pushback`): the next attempt starts as soon as
        the limits allow, never closer than the rate permits (the scheduler makes the jobs
        waiting out a pushback due at once).
        """
        sink = self.sink
        if sink is not None and self.paused_until > now:
            sink.pause_event(RESUMED, None, None)
        self.paused_until = -_INF
        for limit in self.limits:
            if type(limit) is RateLimit:
                limit.end_pushback(now)
        if self.keys is not None:
            for lane in self.keys.lanes.values():
                for limit in lane.limits:
                    if type(limit) is RateLimit:
                        limit.end_pushback(now)
                if lane.paused_until != -_INF:
                    if sink is not None and lane.paused_until > now:
                        sink.pause_event(RESUMED, lane.key, None)
                    lane.paused_until = -_INF
                    self.keys.look_again(lane)
        self._configure()

    def use_remote(self, remote: Sequence[RemoteLimit], dated: bool) -> None:
        """Ask the *remote* limits after the local ones from now on (the pool binds them to
        their stores when it binds to a loop); *dated*: see :meth:`set_depth`."""
        self.remote = tuple(remote)
        self.set_depth(dated)
        self._configure()

    def set_depth(self, dated: bool) -> None:
        """Work out how many reservations may be in flight at once.

        One if a local limit is *dated* (a rate or window, the pool's or a key's, which must date
        each start before the next is admitted: :meth:`Scheduler.restamp`). Else the remote
        limits' ``pipeline``; but a pipeline of 1 (the exact start order) with a single remote
        limit that keeps a chain's order sends up to :data:`ORDERED_DEPTH` as a chain, started
        in the order made (:attr:`turns`): the same order, without a round trip per start.
        """
        remote = self.remote
        pipeline = min(limit.pipeline for limit in remote) if remote else 1
        if (
            not dated
            and pipeline == 1
            and len(remote) == 1
            and isinstance(remote[0], OrderedRemoteLimit)
        ):
            self.depth = ORDERED_DEPTH
            if self.turns is None:
                self.turns = Turns()
        else:
            self.depth = 1 if dated else pipeline
            self.turns = None

    def replace_limits(
        self, limits: Sequence[Limit], running: Iterable[Job], now: float = 0.0
    ) -> None:
        """Use *limits* from now on (the caller carried state over from the old ones).

        :param running: the jobs whose attempts (or reservations) run now: they release into
            the new limits, which count them as taken. A job whose remote reservation is in
            flight is admitted into every new limit at *now*: the answer re-dates it there
            (granted) or takes it back (refused).
        """
        for job in running:
            for limit in limits:
                if limit not in self.limits and (job.state == RESERVING or not limit.timed):
                    limit.admit(job, now)
        self.limits = self.main.taken = tuple(limits)
        if self.keys is not None:
            self.keys.share(self.limits)
        self._configure()

    def sweep_keys(self, now: float) -> int:
        """Drop the idle keys at rest by *now*; return how many keys remain."""
        if self.keys is None:
            return 0
        self.keys.sweep(now)
        return len(self.keys.lanes)


# -- a server's budgets (#22 item 3) ---------------------------------------------------------------

#: The limits a server's budget can lower.
_OBSERVING: Final = (RateLimit, WindowLimit)

#: The dialects whose budgets refill continuously ("reset" is when the budget is full again):
#: OpenAI's and Anthropic's. The others (GitHub, the IETF drafts) count a fixed window that
#: resets whole at its end.
_REFILLING: Final = frozenset({"openai", "anthropic"})


def _unit_name(unit: str | None) -> str | None:
    """A unit's name compared: ``input_tokens`` and ``Input-Tokens`` are ``input-tokens``."""
    return None if unit is None else unit.lower().replace("_", "-")


def _match(budget: Budget, limits: Iterable[Limit]) -> RateLimit | WindowLimit | None:
    """The local limit *budget* speaks of (see :meth:`Scheduler.observe`), or None."""
    unit = _unit_name(budget.unit)
    found = [
        limit
        for limit in limits
        if isinstance(limit, _OBSERVING) and _unit_name(limit.unit) == unit
    ]
    if len(found) <= 1:
        return found[0] if found else None
    window = budget.window
    if window is not None and window > 0:
        return min(found, key=lambda limit: abs(math.log(limit.per / window)))
    size = budget.limit
    if size is not None and size > 0:
        return min(found, key=lambda limit: abs(math.log(_count(limit) / size)))
    return found[0]


def _count(limit: RateLimit | WindowLimit) -> float:
    """The units a limit lets start per its ``per`` (> 0)."""
    return limit.configured * limit.per if isinstance(limit, RateLimit) else limit.count


def _hold(budget: Budget, now: float, longest: float) -> tuple[float, float]:
    """Until when *budget* holds (its reset, at most *longest* seconds away; *now*, no hold,
    without a reset), and the units per second it regains meanwhile: for a budget that refills
    continuously to full at its reset, ``(limit - remaining) / (reset - now)``; for a fixed
    window, or without a stated limit, none (only the remaining units until the reset)."""
    reset = budget.reset_at
    if reset is None or reset <= now:
        return now, 0.0
    size = budget.limit
    refill = 0.0
    if budget.source in _REFILLING and size is not None and size > budget.remaining:
        refill = (size - budget.remaining) / (reset - now)
    return min(reset, now + longest), refill
