"""Lines of jobs per key, each with its own limits and pause, and which key may start next.

A :class:`Lane` is one key's line: its first attempts in submission order, its retries whose
backoff is over (by submission order too), the key's own limit instances and its pause. The
jobs without a key have a lane too, with no limits of its own (the scheduler's ``main`` lane,
never in :class:`Keys`' bookkeeping: it is the one flow that no limit of its own holds back).

Each lane's :attr:`Lane.taken` is every local limit an attempt of the lane takes: the pool's,
then the key's own. The scheduler admits, re-dates and releases an attempt in one loop over it,
not a loop over the pool's limits and another over the key's; it refunds and settles an attempt,
and asks which limits bear a name, through the :class:`LimitGroup` of those limits.

:class:`Keys` holds the lanes of the keys in use and answers the scheduler's question "which key's
head job may start now?" without looking at every key: lanes that may start are in a heap by
their fair-share tag (below), lanes waiting for the clock (a rate slot, a window, a pause) in a
heap by that time, and lanes waiting for one of their attempts to end (a concurrency limit) in
neither. So a saturated key is never looked at until its time comes, and never delays another
key (no head-of-line blocking). A key whose jobs are all settled and whose limits are back at
rest is dropped: memory follows the keys in use, not the keys ever seen.

**Fair share.** The pool-wide limits are shared among the keys that may start by start-time
fair queuing (Goyal, Vin and Cheng 1996), a weighted round robin in O(log keys) per job. Each
key is a flow, and the jobs without a key are one more flow (weight 1). A flow's head gets a
virtual start tag, ``max(V, F)``, when the flow becomes ready (its first job, or its own limits
let it go again): ``V`` is the tag of the last job admitted and ``F`` the flow's finish tag,
raised by ``1 / weight`` for each attempt it starts. The ready flow with the smallest tag (then
the oldest head) goes next. So a hot key whose 200 jobs came first takes one slot per round,
as each cold key does, rather than all the slots before them; a key that waited for its own
limits, or had no job, banks no credit (``max(V, F)``); within a key, jobs start in submission
order. Shares are counted in attempts, whatever a job's ``cost=``: the pool-wide limits may
count several units (requests, tokens), and the one attempt every limit counts is the share
every key can read. A key's tags live in its lane, and go with it when the key is dropped.
"""

from __future__ import annotations

import math
import reprlib
from collections import deque
from heapq import heappop, heappush, heapreplace
from itertools import islice
from typing import TYPE_CHECKING, Final, Literal, TypeAlias, cast, final

from ._job import QUEUED

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Iterator

    from ._job import Job
    from ._limit import Limit

__all__ = ["BLOCKED", "IDLE", "KEY_ORDERS", "KeyOrder", "Keys", "Lane", "LimitGroup", "weight_step"]

_INF: Final = math.inf

#: How the keys share the pool-wide limits (the pool's ``key_order=``): ``"fair"``, the fair
#: share below; ``"submitted"``, the oldest waiting job first, whatever its key.
KeyOrder: TypeAlias = Literal["fair", "submitted"]
KEY_ORDERS: Final[tuple[KeyOrder, ...]] = ("fair", "submitted")

# Where a lane is in Keys' bookkeeping (the scheduler reads IDLE and BLOCKED, once per job of a
# key: a first attempt joining an idle lane, an attempt ending in a blocked one, call
# Keys.look_again()).
IDLE: Final = 0  # no job waits (or not looked at yet)
_READY: Final = 1  # in the ready heap: its head may start, as far as its own limits know
_CLOCK: Final = 2  # in the clock heap: its own limits or pause hold it until a time
BLOCKED: Final = 3  # waits for one of its attempts to end (a concurrency limit of the key)

#: The retries of a key's lane that never had one: one empty list for them all, never changed
#: (:meth:`Lane.requeue` gives a lane its own first), so that a new key makes one list fewer.
_NO_RETRIES: Final[list[tuple[int, Job]]] = []


def _name(limit: Limit) -> object:
    """The ``name=`` of *limit*'s value (None if it has none)."""
    return getattr(getattr(limit, "spec", None), "name", None)


@final
class LimitGroup:
    """Every local limit an attempt of one lane takes (all of them: AND), the pool's first.

    One loop over :attr:`limits` (or one call) replaces the two loops, the pool's limits then
    the key's, at each step of an attempt: the scheduler writes the three that run once per job
    (admit, restamp, release) as that loop over :attr:`Lane.taken`, the others are methods of
    :attr:`Lane.group`. The pool's limits may change while it runs: :meth:`Keys.share` regroups.
    """

    __slots__ = ("limits",)

    def __init__(self, limits: tuple[Limit, ...]) -> None:
        self.limits = limits

    def earliest(self, job: Job, now: float) -> float:
        """From when every limit lets *job* start (``-inf``: no limit; ``inf``: only an
        attempt's end can tell). The scheduler's poll() writes this loop out, with the pause
        and the remote hold; Redis's degraded mode calls it."""
        earliest = -_INF
        for limit in self.limits:
            t = limit.earliest(job, now)
            if t > earliest:
                earliest = t
        return earliest

    def admit(self, job: Job, at: float) -> None:
        """*job*'s attempt starts at *at*: every limit counts it (poll() writes this out)."""
        for limit in self.limits:
            limit.admit(job, at)

    def refund(self, job: Job) -> None:
        """Take back *job*'s admission: its attempt never started (:meth:`Limit.refund`)."""
        for limit in self.limits:
            limit.refund(job)

    def settle(
        self, job: Job, cost: dict[str, float], counted: dict[str, float], now: float
    ) -> None:
        """*job*'s attempt really cost *cost* where *counted* was charged: each limit counting
        a unit of *cost* charges or takes back the difference at *now*."""
        for limit in self.limits:
            unit = limit.unit
            if unit is None or unit not in cost:
                continue
            delta = cost[unit] - counted.get(unit, 0)
            if delta > 0:
                limit.charge(job, delta, now)
            elif delta < 0:
                limit.take_back(job, -delta, now)

    def named(self, name: str) -> list[Limit]:
        """The limits whose value is named *name*."""
        return [limit for limit in self.limits if _name(limit) == name]

    def names(self) -> set[str]:
        """The names of the limits' values (those that have one)."""
        return {name for name in map(_name, self.limits) if isinstance(name, str)}


class Lane:
    """One key's line of jobs, its limits and its pause (see the module docstring)."""

    __slots__ = (
        "finish",
        "first",
        "held_until",
        "key",
        "limits",
        "paused_until",
        "pending",
        "queue",
        "retry_ready",
        "step",
        "tag",
        "taken",
        "ticket",
        "where",
    )

    def __init__(
        self,
        key: Hashable,
        limits: tuple[Limit, ...],
        step: float = 1.0,
        shared: tuple[Limit, ...] = (),
    ) -> None:
        self.key = key
        #: The key's own limits (the pool's are *shared*).
        self.limits = limits
        #: What an attempt of the lane takes: the pool's limits, then the key's (the key's own
        #: tuple itself while the pool has none: a key makes no object for it).
        self.taken = shared + limits
        #: The fair share's virtual time one attempt of this key costs: ``1 / weight``.
        self.step = step
        #: The virtual finish tag of the key's last admitted attempt (see the module docstring).
        self.finish = 0.0
        #: The virtual start tag of the head while the lane is in the ready heap.
        self.tag = 0.0
        #: First attempts, in submission order, from index ``first`` on: a key's in a list and
        #: an index (an empty deque takes 600 bytes, and most keys hold a few jobs); the main
        #: lane's in a deque (:class:`MainLane`).
        self.queue: list[Job] | deque[Job] = []
        self.first = 0
        #: Retries whose backoff is over, as a heap by submission order (the shared empty
        #: one until the first).
        self.retry_ready: list[tuple[int, Job]] = _NO_RETRIES
        #: No attempt of this key starts before this time.
        self.paused_until = -_INF
        #: A remote per-key limit refused this key: no reservation of it before this time.
        self.held_until = -_INF
        #: Jobs of this key accepted and not settled.
        self.pending = 0
        self.where = IDLE
        #: Identifies the lane's one live entry in Keys' heaps (older entries are skipped).
        self.ticket = 0

    @property
    def group(self) -> LimitGroup:
        """The limits an attempt of the lane takes (:attr:`taken`), for the steps that are not
        once per job: refund, settle, the names."""
        return LimitGroup(self.taken)

    def head(self) -> Job | None:
        """The next job of this key to start (a due retry or the oldest queued one)."""
        queue = self.queue
        first = self.first
        end = len(queue)
        while first < end and queue[first].state != QUEUED:
            first += 1  # cancelled while queued: skipped here
        if first != self.first:
            self.advance(first)
            first = self.first
        ready = self.retry_ready
        while ready and ready[0][1].state != QUEUED:
            heappop(ready)
        waiting = first < len(queue)
        if ready and not (waiting and queue[first].seq < ready[0][0]):
            return ready[0][1]
        return queue[first] if waiting else None

    def advance(self, first: int) -> None:
        """The first attempts before index *first* have left: forget them once they are many."""
        queue = self.queue
        if first == len(queue):
            queue.clear()
            first = 0
        elif first > 32 and 2 * first > len(queue):
            del queue[:first]  # type: ignore[arg-type]  # a key's list: amortised O(1) per job
            first = 0
        self.first = first

    def push(self, job: Job) -> None:
        """A first attempt joins the back of the line."""
        self.queue.append(job)

    def take(self, job: Job) -> None:
        """Take *job*, the head, out of the line."""
        ready = self.retry_ready
        if ready and ready[0][1] is job:
            heappop(ready)
            return
        # advance(), written out for its common case (once per job of a key)
        first = self.first + 1
        end = len(self.queue)
        if first == end or (first > 32 and 2 * first > end):
            self.advance(first)  # the line is empty now, or mostly gone at its front
        else:
            self.first = first

    def requeue(self, job: Job) -> None:
        """*job* waits again: a retry whose backoff ended, or a refused reservation (its
        submission order puts it back ahead of the jobs that came later)."""
        ready = self.retry_ready
        if ready is _NO_RETRIES:
            ready = self.retry_ready = []
        heappush(ready, (job.seq, job))

    def rest_at(self) -> float:
        """From when the key's limits are as if fresh and its pause is over."""
        rest = self.paused_until
        for limit in self.limits:
            t = limit.rest_at()
            if t > rest:
                rest = t
        return rest

    def waiting(self) -> Iterator[Job]:
        """The jobs that wait to start (for kill())."""
        yield from (job for job in islice(self.queue, self.first, None) if job.state == QUEUED)
        yield from (job for _, job in self.retry_ready if job.state == QUEUED)

    def clear(self) -> None:
        """Forget the waiting jobs (kill())."""
        self.queue.clear()
        self.first = 0
        self.retry_ready.clear()


@final
class MainLane(Lane):
    """The lane of the jobs without a key: no limit of its own, never paused or held by itself
    (the pool's pause and hold are the pool's), and not among the keys.

    Its line is a deque (a map queues 100,000 jobs there: each is popped, and freed, in O(1);
    ``first`` stays 0), so its head and take are the deque's: the scheduler reads them once
    per job.
    """

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(None, ())
        # Narrowed: this lane's line is always a deque (the base's list | deque), never reassigned.
        self.queue: deque[Job] = deque()  # pyright: ignore[reportIncompatibleVariableOverride]
        # Its own from the start: the scheduler keeps this very list (it is never replaced).
        self.retry_ready = []

    def head(self) -> Job | None:
        queue = self.queue
        while queue and queue[0].state != QUEUED:
            queue.popleft()  # cancelled while queued: dropped here, in O(1)
        ready = self.retry_ready
        while ready and ready[0][1].state != QUEUED:
            heappop(ready)
        if ready and not (queue and queue[0].seq < ready[0][0]):
            return ready[0][1]
        return queue[0] if queue else None

    def take(self, job: Job) -> None:
        ready = self.retry_ready
        if ready and ready[0][1] is job:
            heappop(ready)
        else:
            self.queue.popleft()


def weight_step(key_weight: Callable[[Hashable], float], key: Hashable) -> float:
    """``1 / key_weight(key)``, the virtual time one attempt of *key* costs; a weight that is
    not a finite number > 0 (or whose inverse is 0 or infinite) raises, naming the key."""
    weight = cast("object", key_weight(key))  # checked at run time: a user's callable
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        raise TypeError(
            f"key_weight({reprlib.repr(key)}) must return a number > 0, "
            f"not {type(weight).__name__}: {reprlib.repr(weight)}"
        )
    try:
        step = 1.0 / weight if weight > 0 else _INF
    except (OverflowError, ZeroDivisionError):  # an int beyond a float; a subnormal's inverse
        step = 0.0
    if not 0.0 < step < _INF:  # also NaN, inf and a weight so small its inverse overflows
        raise ValueError(
            f"key_weight({reprlib.repr(key)}) must return a finite number > 0, got {weight!r}"
        )
    return step


@final
class Keys:
    """The lanes of the keys in use, and the head that goes next by the keys' fair share.

    :param make_limits: makes a new key's limit instances (the pool's ``per_key=`` values)
    :param tick: a wait shorter than this is no wait (the scheduler's ``TICK``)
    :param key_weight: a key's weight in the fair share of the pool-wide limits (the pool's
        ``key_weight=``; None: all keys weigh 1)
    :param fair: False for the pool's ``key_order="submitted"``: every step is 0, so every tag
        stays at 0 and the ready keys go by their heads' submission numbers alone (the oldest
        waiting job first, whatever its key; a key held by its own limits still holds up none)
    :param main: the lane of the jobs without a key (one more flow of the fair share)
    :param shared: the pool's limits, which every key's attempts take too
    """

    __slots__ = (
        "_clock",
        "_peak",
        "_ready",
        "_step",
        "_tick",
        "_tickets",
        "_vtime",
        "key_weight",
        "lanes",
        "main",
        "make_limits",
        "resting",
        "shared",
    )

    def __init__(
        self,
        make_limits: Callable[[], tuple[Limit, ...]],
        tick: float,
        key_weight: Callable[[Hashable], float] | None = None,
        fair: bool = True,
        main: Lane | None = None,
        shared: tuple[Limit, ...] = (),
    ) -> None:
        self.make_limits = make_limits
        self.main = MainLane() if main is None else main
        self.shared = shared
        self._tick = tick
        self.key_weight = key_weight
        #: The virtual time one attempt costs a flow of weight 1 (the jobs without a key, and
        #: every key unless key_weight says otherwise); 0 in submission order.
        self._step = 1.0 if fair else 0.0
        self.lanes: dict[Hashable, Lane] = {}
        #: The fair share's virtual time: the start tag of the last attempt admitted.
        self._vtime = 0.0
        # The finish tag of the jobs without a key (a flow of weight 1) is the main lane's.
        self.main.finish = 0.0
        # (head's start tag, head's seq, ticket, lane, head): the smallest tag, then the oldest
        # head (the ticket is unique: the lane and the head are never compared).
        self._ready: list[tuple[float, int, int, Lane, Job]] = []
        self._clock: list[tuple[float, int, Lane]] = []  # (from when, ticket, lane)
        #: The lanes with no pending job, as a heap by when their limits are at rest: (rest_at,
        #: ticket, lane). The scheduler calls :meth:`sweep` only when its first is due.
        self.resting: list[tuple[float, int, Lane]] = []
        self._tickets = 0
        self._peak = 0  # the most lanes at once since the dict was last rebuilt

    def lane(self, key: Hashable) -> Lane:
        """The lane of *key*, made on first use."""
        lane = self.lanes.get(key)
        if lane is None:
            lanes = self.lanes
            # The weight first: a key_weight that raises leaves no lane behind.
            key_weight = self.key_weight
            step = self._step if key_weight is None else weight_step(key_weight, key)
            lane = lanes[key] = Lane(key, self.make_limits(), step, self.shared)
            if len(lanes) > self._peak:
                self._peak = len(lanes)
        return lane

    def share(self, shared: tuple[Limit, ...]) -> None:
        """The pool's limits are *shared* from now on: every lane's attempts take them."""
        self.shared = shared
        for lane in self.lanes.values():
            lane.taken = shared + lane.limits

    def look_again(self, lane: Lane) -> None:
        """*lane*'s head changed or its limits freed up: it is a candidate again."""
        head = lane.head()
        self._tickets += 1
        lane.ticket = self._tickets
        if head is None:
            lane.where = IDLE
            return
        if lane.where != _READY:
            # The key becomes ready: it starts from now in virtual time, with no credit banked
            # while it had no job or waited for its own limits.
            lane.tag = lane.finish if lane.finish > self._vtime else self._vtime
            lane.where = _READY
        heappush(self._ready, (lane.tag, head.seq, lane.ticket, lane, head))

    def main_tag(self) -> float:
        """The start tag of the head of the jobs without a key (they are never held back by
        limits of their own, so the flow is ready whenever it has a head)."""
        finish = self.main.finish
        return finish if finish > self._vtime else self._vtime

    def pick(self, now: float, before: float = _INF, before_seq: int = 0) -> Job | None:
        """The head that goes next by the fair share, if its key lets it start now and it goes
        before the jobs without a key (their head's tag *before* and its submission number
        *before_seq*; ``inf``: none waits). The scheduler admits it, then calls :meth:`served`.

        Keys that hold their head back meanwhile move to the clock heap or wait for a release.
        """
        tick = self._tick
        clock = self._clock
        while clock and clock[0][0] <= now + tick:
            _, ticket, lane = heappop(clock)
            if ticket == lane.ticket:
                self.look_again(lane)
        ready = self._ready
        while ready:
            tag, seq, ticket, lane, head = ready[0]
            if ticket != lane.ticket:
                heappop(ready)  # an entry made stale by a later one
                continue
            if head.state != QUEUED or lane.tag != tag:
                # The head filed here started (its lane has a new tag, or the same one in
                # submission order) or was cancelled. While it waits and the entry is live, it
                # is still the lane's head: an older job that waits again (a retry, a refused
                # reservation) files the lane anew (look_again), under a new ticket.
                found = lane.head()
                if found is None:
                    heappop(ready)
                    lane.where = IDLE
                    continue
                head = found
                # File it under its new head (and tag).
                self._tickets += 1
                ticket = lane.ticket = self._tickets
                tag = lane.tag
                seq = head.seq
                entry = (tag, seq, ticket, lane, head)
                heapreplace(ready, entry)
                if ready[0] is not entry:
                    continue  # another key goes first now
                # Still first (as after each start of a lone busy key): its head is known.
            if tag > before or (tag == before and seq > before_seq):
                return None
            # From when the key's pause, remote hold and own limits let its head start.
            t = lane.paused_until
            if lane.held_until > t:
                t = lane.held_until
            for limit in lane.limits:
                t_limit = limit.earliest(head, now)
                if t_limit > t:
                    t = t_limit
            if t <= now + tick:
                return head
            heappop(ready)
            if t == _INF:
                lane.where = BLOCKED
            else:
                lane.where = _CLOCK
                heappush(clock, (t, ticket, lane))
        return None

    def served(self, lane: Lane) -> None:
        """The head :meth:`pick` gave (of *lane*, maybe the main one) was admitted: virtual time
        moves to its tag, and its flow's next head comes one step later."""
        if lane is self.main:
            tag = self.main_tag()
            lane.finish = tag + self._step
        else:
            tag = lane.tag
            lane.finish = lane.tag = tag + lane.step
        if tag > self._vtime:
            self._vtime = tag

    def unserved(self, lane: Lane) -> None:
        """An admission :meth:`served` counted was taken back (a remote limit refused, the job
        was paused or cancelled before it started): its flow gets that share back."""
        if lane is self.main:
            lane.finish -= self._step
        else:
            lane.finish = lane.tag = lane.finish - lane.step
            if lane.where == _READY:
                self.look_again(lane)  # filed under the earlier tag

    def next_wakeup(self) -> float:
        """When the first key waiting for the clock may start (``inf`` if none)."""
        clock = self._clock
        while clock and clock[0][1] != clock[0][2].ticket:
            heappop(clock)
        return clock[0][0] if clock else _INF

    def settled(self, lane: Lane) -> None:
        """A job of *lane* is settled: once none is pending, the lane rests until dropped."""
        lane.pending -= 1
        if lane.pending == 0:
            self.rest(lane)

    def rest(self, lane: Lane) -> None:
        """*lane* has no pending job: drop it once its limits are at rest (see :meth:`sweep`)."""
        self._tickets += 1
        heappush(self.resting, (lane.rest_at(), self._tickets, lane))

    def sweep(self, now: float) -> None:
        """Drop the lanes with no pending job whose limits are back at rest by *now*."""
        resting = self.resting
        while resting and resting[0][0] <= now:
            _, _, lane = heappop(resting)
            if lane.pending or self.lanes.get(lane.key) is not lane:
                continue  # in use again, or dropped already
            rest = lane.rest_at()
            if rest <= now:
                del self.lanes[lane.key]
                self._tickets += 1
                lane.ticket = self._tickets  # its entries in the heaps are stale now
            else:  # an attempt's limits moved it later (or a pause): look again then
                self._tickets += 1
                heappush(resting, (rest, self._tickets, lane))
        lanes = self.lanes
        if self._peak > 64 and 4 * len(lanes) < self._peak:
            # A dict never gives back the table it grew to: copy it once most keys left, so
            # that the keys dropped cost no memory (a burst of 100,000 keys, then a few).
            self.lanes = dict(lanes)
            self._peak = len(lanes)

    def waiting(self) -> Iterator[Job]:
        """Every job that waits to start in some key's lane."""
        for lane in self.lanes.values():
            yield from lane.waiting()

    def clear(self) -> None:
        """Forget the waiting jobs (kill()); the lanes rest and are dropped as usual."""
        for lane in self.lanes.values():
            lane.clear()
            lane.where = IDLE
        self._ready.clear()
        self._clock.clear()
