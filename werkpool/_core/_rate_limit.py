"""The rate limit: a GCRA leaky bucket for attempt starts, weighted, adaptive, settled.

One concept, the bucket's schedule (``tat``) and everything that moves it: admissions and
restamps, refunds, settlement of what an attempt really cost, a provider's pushback (with the
adaptive rate's control law, which halves and regrows the rate that fills the bucket), a
server's budget from its headers, and a change of limits carrying the units over. The
:class:`RateLimit` docstring gives the invariant and the bound the tests hold it to.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, final

from ._budget_hold import BudgetHold
from ._limit import Limit, cost_of
from ._statistics import LimitStatistics

if TYPE_CHECKING:
    from ._job import Job

__all__ = ["RateLimit"]

_INF = math.inf
_new = object.__new__

#: The dated records of a rate that is not adaptive: one empty dict for them all, never written
#: (only an adaptive rate writes :attr:`RateLimit._dated`), so that a new key makes one fewer.
_NO_DATES: dict[int, tuple[float, float, float]] = {}

#: An adaptive rate's last good rate, as a share of the rate that was refused: the rate regrows
#: at once to this after a pause-length of quiet (a multiplicative decrease of 10 %, as TCP
#: CUBIC's 0.7 but gentler: a lone jitter refusal costs little, a stricter provider is found in
#: a few refusals).
_GOOD_SHARE = 0.9

#: After a refusal that came soon after another, an adaptive rate probes upward this much
#: slower below the rate refused than above it: the server said no there twice (as TCP CUBIC's
#: plateau near its last window). Without it, a server stricter than the configured rate is
#: overrun again within a second of each recovery (benchmarks/control_law.py draws the law).
_GENTLE = 0.25


@final
class RateLimit(Limit):
    """
    A leaky bucket for attempt starts, in its GCRA form ("virtual scheduling", ITU-T I.371).

    With ``T = 1/rate`` and tolerance ``tau = (burst - 1) * T``, a start at time ``a`` conforms if
    ``a >= tat - tau``, and then ``tat = max(tat, a) + T``. Hence the k-th of any run of conforming
    starts is at least ``(k - burst) * T`` after the first, so a half-open window of length ``W``
    holds at most ``ceil(W * rate) + burst - 1`` starts. Credit never exceeds ``burst``: an idle or
    busy stretch only moves ``tat`` into the past, and ``max(tat, a)`` forgets it.

    Weighted (a *unit*): a start of cost ``c`` conforms if ``a >= tat - (burst - c) * T`` and
    moves ``tat`` by ``c * T``; the same argument bounds the units of any window. A job at the
    head whose cost does not fit yet waits, and the ones behind it wait too (FIFO).

    ``tat`` is kept as ``origin + units / rate`` rather than summed, so ten million starts do not
    accumulate rounding error into a drift.

    Adaptive: a pushback that is news (the refused attempt was admitted after the last decrease,
    and came after that decrease's pause) halves the rate (down to ``1/64`` of the configured
    one) and remembers ``0.9`` of the refused rate as the last good one. After one pause-length
    of quiet following the pause, the rate jumps back to that last good rate, then regrows
    linearly (by ``configured / (2 * per)`` per second) up to the configured rate, never above.
    A change of rate keeps the units in the bucket (not ``tat``, which would free or owe credit).

    Settlement: each running attempt's place in the schedule is kept (by job number), so that
    :meth:`take_back` gives back only what has not drained yet of its units (what has drained
    was spent as time; giving it back would let later starts come closer than the rate allows),
    and :meth:`charge` adds to it.

    Margin: every start also moves ``tat`` by *margin* seconds (``margin * rate`` units), so
    starts at burst 1 are ``T + margin`` apart: a cushion against the jitter between the
    client's clock and a strict server's. Counting attempts, the tolerance grows to match
    (``tau = (burst - 1) * (T + margin)``), so ``burst`` starts may still go back to back; with
    a unit, each start's margin counts against the burst. The bounds above hold all the more.
    """

    __slots__ = (
        "_ceiling",
        "_changed_at",
        "_dated",
        "_decreased_at",
        "_ends",
        "_good",
        "_hold",
        "_origin",
        "_pad",
        "_pause_end",
        "_pending",
        "_pending_cost",
        "_plain",
        "_recover_at",
        "_released_end",
        "_released_seq",
        "_room",
        "_shift",
        "_slack",
        "_step",
        "_unheld",
        "_units",
        "_warm_extra",
        "_warm_job",
        "_warmup",
        "adaptive",
        "burst",
        "configured",
        "margin",
        "per",
        "rate",
        "spec",
        "unit",
    )

    timed = True

    def __init__(
        self,
        rate: float,
        burst: float = 1,
        *,
        unit: str | None = None,
        adaptive: bool = False,
        per: float = 1.0,
        margin: float = 0.0,
        initial: float | None = None,
        spec: object = None,
    ) -> None:
        self.rate = rate
        self.configured = rate
        #: The units a fresh bucket holds already (``burst - initial``): its first start fills
        #: the bucket that far, then 0 (see :meth:`admit`).
        self._warmup = 0.0 if initial is None else burst - initial
        #: The job whose admission took the warm-up, and how much (restamp() keeps it on a
        #: restart); None once restamped, refunded or released: the hot path reads one slot.
        self._warm_job: Job | None = None
        self._warm_extra = 0.0
        self.margin = margin
        self.burst = burst
        self.unit = unit
        self._set_margin()
        self.adaptive = adaptive
        self.per = per
        self.spec = spec
        self._origin = -_INF
        self._units: float = 0
        self._changed_at = -_INF  # when an adaptive rate last changed
        self._pause_end = -_INF  # the end of the latest pushback's pause
        #: While a pushback's fill holds the bucket: the schedule the real starts left (its
        #: ``tat`` and rate) and the end of the hold, for :meth:`end_pushback`; else None.
        self._unheld: tuple[float, float, float] | None = None
        #: Adaptive control: when the rate last decreased, the last good rate it regrows to at
        #: once, and from when (``inf``: no jump pending).
        self._decreased_at = -_INF
        self._good = rate
        #: The rate of the last refusal that was news: probed up to gently (inf: none yet).
        self._ceiling = _INF
        self._recover_at = _INF
        #: Each running attempt's place in the schedule, by job number: the ``tat`` right after
        #: its units, plus :attr:`_shift` then in seconds (``end + shift / rate``: one float, so
        #: that the record costs one dict entry per admission; a later give-back then reads as
        #: ``record - _shift / rate``). An adaptive rate changes its rate, so it keeps the
        #: parts apart, with the admission time its pushback needs, in :attr:`_dated` instead.
        self._ends: dict[int, float] = {}
        self._dated: dict[int, tuple[float, float, float]] = {} if adaptive else _NO_DATES
        #: The job admitted last (not adaptive), whose record is not written yet: the schedule
        #: still ends with its units, so its record is the current ``tat`` until the schedule
        #: changes otherwise. Written down (:meth:`_flush`) before any other change, so that a
        #: start costs one record (not one at admit() and another at restamp()).
        self._pending: Job | None = None
        #: The record of the attempt released last, and its job number (its pushback or
        #: settlement comes right after the release); two slots, no tuple per release.
        self._released_seq = 0
        self._released_end: float | tuple[float, float, float] | None = None
        #: The units given back so far: a record's ``tat`` moved earlier by what was given back
        #: after it (an estimate that never gives back too much).
        self._shift = 0.0
        #: A server's budget read from its headers (:meth:`observe`), while it lasts.
        self._hold: BudgetHold | None = None
        #: What the pending admission added (its cost, and its margin): restamp() reads it.
        self._pending_cost = 0.0
        self._plain = False
        self._replain()

    def fresh(self) -> RateLimit:
        """A new limit of this one's value, as it was made: its settings copied, its state
        new. Each new key's own rate is made so (:func:`~werkpool._core._limits.maker`), from
        a limit that never admitted a start: in one call, without :meth:`__init__`'s keywords
        and derived settings."""
        new = _new(RateLimit)
        new.rate = new.configured = new._good = self.configured
        new._warmup = self._warmup
        new._warm_job = None
        new._warm_extra = 0.0
        new.margin = self.margin
        new.burst = self.burst
        new.unit = self.unit
        new._pad = self._pad
        new._slack = self._slack
        new._step = self._step
        new._room = self._room
        new.adaptive = self.adaptive
        new.per = self.per
        new.spec = self.spec
        new._origin = new._changed_at = new._pause_end = new._decreased_at = -_INF
        new._units = 0
        new._unheld = None
        new._ceiling = new._recover_at = _INF
        new._ends = {}
        new._dated = {} if self.adaptive else _NO_DATES
        new._pending = None
        new._released_seq = 0
        new._released_end = None
        new._shift = 0.0
        new._hold = None
        new._pending_cost = 0.0
        new._plain = self._plain
        return new

    def _replain(self) -> None:
        """Work out :attr:`_plain`: True while none of the rare cases applies (an adaptive
        rate, a server's hold, a warm-up to take or taken), so that the methods that run once
        per start skip their tests at the cost of one. Called wherever one of them changes."""
        self._plain = (
            not self.adaptive and self._hold is None and not self._warmup and self._warm_job is None
        )

    @property
    def tat(self) -> float:
        """The theoretical arrival time: when the bucket is empty again (``-inf`` when fresh)."""
        return self._origin + self._units / self.rate

    def earliest(self, job: Job | None, now: float) -> float:
        """The next conforming start of *job*: ``tat - (burst - cost) * T``."""
        if self._plain:
            # The common case written out (once per job and limit): no hold, not adaptive.
            unit = self.unit
            if unit is None:
                return self._origin + (self._units - self._room + 1) / self.rate
            costs = None if job is None else job.cost
            amount = 0 if costs is None else costs.get(unit, 0)
            if not amount and not self._pad:
                return -_INF  # it adds nothing to the bucket
            return self._origin + (self._units - self._room + amount) / self.rate
        if self.adaptive and self.rate < self.configured:
            self._regrow(now)
        unit = self.unit
        if unit is None:
            cost: float = 1
        else:
            # cost_of(job, unit), written out: this runs once per job and limit.
            costs = None if job is None else job.cost
            cost = 0 if costs is None else costs.get(unit, 0)
            if not cost and not self._pad:
                return -_INF  # it adds nothing to the bucket: not even a held one holds it
        at = self._origin + (self._units - self._room + cost) / self.rate
        hold = self._hold
        if hold is not None:
            if now < hold.until:
                return max(at, hold.earliest(cost, now))
            self._hold = None  # the server's window has reset: our own rule alone again
            self._replain()
        return at

    def admit(self, job: Job | None, at: float) -> None:
        """Count a start at *at*: ``tat = max(tat, at) + cost * T + margin``."""
        pending = self._pending
        if pending is not None:  # _flush(), written out: this runs once per start
            self._ends[pending.seq] = self._origin + (self._units + self._shift) / self.rate
        unit = self.unit
        if unit is None:
            cost = self._step
        else:  # cost_of(job, unit), written out
            costs = None if job is None else job.cost
            cost = (0 if costs is None else costs.get(unit, 0)) + self._pad
        if self._plain:
            # The common case written out (once per job and limit): no hold, no warm-up.
            if at > self._origin + self._units / self.rate:
                self._origin = at  # the bucket drained before `at`: restart the schedule there
                self._units = cost
            else:
                self._units += cost
            self._pending = job  # its record is the current tat, written down when it changes
            self._pending_cost = cost
            return
        if self._hold is not None:
            self._hold.take(cost - self._pad, at)
        if at > self._origin + self._units / self.rate:
            self._origin = at  # the bucket drained before `at`: restart the schedule there
            self._units = cost
            if self._warmup:
                self._warm(job)  # a fresh bucket's first start holds back initial=
        else:
            self._units += cost
        if not self.adaptive:
            self._pending = job  # its record is the current tat, written down when it changes
            self._pending_cost = cost
        elif job is not None:
            self._note(job, at)

    def _warm(self, job: Job | None) -> None:
        """The first start of a fresh bucket also fills it by ``burst - initial`` (once)."""
        extra = self._warmup
        self._warmup = 0.0
        self._units += extra
        self._warm_job = job
        self._warm_extra = extra
        self._replain()

    def _note(self, job: Job, at: float) -> None:
        """Keep the place of *job*'s attempt, admitted or re-dated last, at *at* (see _ends)."""
        if self.adaptive:
            self._dated[job.seq] = (at, self._origin + self._units / self.rate, self._shift)
        else:
            self._ends[job.seq] = self._origin + (self._units + self._shift) / self.rate

    def _flush(self) -> None:
        """Write down the pending admission's record: the schedule is about to change."""
        job = self._pending
        if job is not None:
            self._pending = None
            self._note(job, -_INF)

    def restamp(self, job: Job | None, at: float) -> None:
        # As if the latest admit() had been at `at`: the schedule before it ended at
        # tat - cost/rate; if that is before `at`, the bucket had drained by then and restarts.
        if self._pending is job and self._plain and job is not None:
            # The common case (the worker re-dates the start it was just given): the cost is
            # the one admit() added, and the record stays the current tat.
            cost = self._pending_cost
            if at > self._origin + (self._units - cost) / self.rate:
                self._origin = at
                self._units = cost
            return
        unit = self.unit
        if unit is None:
            cost = self._step
        else:  # cost_of(job, unit), written out
            costs = None if job is None else job.cost
            cost = (0 if costs is None else costs.get(unit, 0)) + self._pad
        if self._warm_job is not None and self._warm_job is job:
            cost += self._warm_extra  # the warm-up the admission added
            self._warm_job = None
            self._replain()
        if at > self._origin + (self._units - cost) / self.rate:
            self._origin = at
            self._units = cost
        if job is not None and self._pending is not job:
            self._note(job, at)  # adaptive (it keeps the time), or not admitted last

    def refund(self, job: Job | None) -> None:
        # One start fewer in the schedule. If admit() had restarted it (the bucket was empty),
        # the schedule now ends at that admission's time instead of before it: stricter than
        # before the admit by less than a slot, never looser.
        if self._pending is not None:
            if self._pending is job:
                self._pending = None  # taken back before its record was written
            else:
                self._flush()
        unit = self.unit
        cost = 1 if unit is None else cost_of(job, unit)
        self._units -= cost + self._pad
        if self._hold is not None:
            self._hold.give_back(cost)
        if self._warm_job is job:
            self._warm_job = None
            self._replain()
        if job is not None:
            if self.adaptive:
                self._dated.pop(job.seq, None)
            else:
                self._ends.pop(job.seq, None)

    def release(self, job: Job | None) -> None:
        if job is None:
            return
        seq = job.seq
        self._released_seq = seq
        if self._plain:
            # The common case written out (once per job and limit): not adaptive, no warm-up.
            if self._pending is job:
                self._pending = None  # admitted last: its record is the current tat
                self._released_end = self._origin + (self._units + self._shift) / self.rate
            else:
                self._released_end = self._ends.pop(seq, None)
            return
        if self.adaptive:
            self._released_end = self._dated.pop(seq, None)
        elif self._pending is job:
            # Admitted last: its record is the current tat, never written to _ends.
            self._pending = None
            self._released_end = self._origin + (self._units + self._shift) / self.rate
        else:
            self._released_end = self._ends.pop(seq, None)
        if self._warm_job is job:
            self._warm_job = None
            self._replain()

    # -- settlement -------------------------------------------------------------------------------

    def admission_mark(self, job: Job) -> float | None:
        """Where *job*'s running attempt stands in this bucket's schedule (None if it runs none
        here): the ``tat`` right after its units, which grows with each admission of a cost, so
        a later admission has a later mark even at the same time."""
        if self.adaptive:
            dated = self._dated.get(job.seq)
            return None if dated is None else dated[1]
        if self._pending is job:
            self._flush()
        # Plus the shift then: later admissions still have later marks (the shift only grows).
        return self._ends.get(job.seq)

    def _record(self, job: Job) -> tuple[float, float, float] | None:
        """*job*'s attempt in the schedule, running or the one released last: its admission
        time (``-inf`` if not kept), the ``tat`` right after its units and :attr:`_shift` then."""
        if self._pending is not None:
            self._flush()
        seq = job.seq
        found: float | tuple[float, float, float] | None
        found = self._dated.get(seq) if self.adaptive else self._ends.get(seq)
        if found is None and self._released_seq == seq:
            found = self._released_end
        if found is None or isinstance(found, tuple):
            return found
        return (-_INF, found - self._shift / self.rate, self._shift)

    def _store(self, job: Job, record: tuple[float, float, float]) -> None:
        seq = job.seq
        if self.adaptive:
            if seq in self._dated:
                self._dated[seq] = record
            else:
                self._released_end = record
            return
        end = record[1] + record[2] / self.rate
        if seq in self._ends:
            self._ends[seq] = end
        else:
            self._released_end = end

    def take_back(self, job: Job, amount: float, now: float) -> None:
        """Give back what is left in the bucket of the last *amount* units of *job*'s attempt."""
        record = self._record(job)
        if record is None or amount <= 0:
            return
        at, end, shift = record
        rate = self.rate
        end -= (self._shift - shift) / rate  # what was given back since moved it earlier
        back = min(amount, (end - now) * rate, self._level(now))
        if back <= 0:
            return  # its units drained already: spent as time, nothing to give back
        self._units -= back
        self._shift += back
        self._store(job, (at, end - back / rate, self._shift))

    def charge(self, job: Job, amount: float, now: float) -> None:
        """Add *amount* units to *job*'s attempt: the starts after it move later by as much."""
        if amount <= 0:
            return
        record = self._record(job)
        end = now if record is None else record[1] - (self._shift - record[2]) / self.rate
        level = max(self._level(now), 0.0)
        if end > now:
            level += amount  # its units still queue: everything after it moves later
        else:
            level = max(level, (end - now) * self.rate + amount)
        self._origin = now
        self._units = level
        if record is not None:
            self._store(job, (record[0], end + amount / self.rate, self._shift))

    # -- runtime changes --------------------------------------------------------------------------

    def _level(self, now: float) -> float:
        """The units in the bucket at *now* (what drains before the next start fits)."""
        return (self._origin - now) * self.rate + self._units

    def _set_level(self, now: float, level: float) -> None:
        """Put *level* units in the bucket at *now* (a bucket drained before stays as it was)."""
        if self._pending is not None:
            self._flush()
        if level > 0:
            self._origin = now
            self._units = level

    def _set_rate(self, rate: float, now: float) -> None:
        """Change the rate, keeping the units in the bucket: no credit appears or vanishes.

        (Keeping ``tat``, the time, would not: at half the rate the same time holds half the
        units, so a slow-down would hand out half a bucket at once.)
        """
        if self._pending is not None:
            self._flush()
        if self._origin > now:
            # A pushback's hold fills the bucket from its end on: it keeps its end, and the
            # units left then drain at the new rate.
            self.rate = rate
            self._set_margin()
            return
        level = self._level(now)
        tat = self.tat
        if level <= 0 and tat != -_INF:
            self._origin = tat  # drained: only later starts see the new rate
            self._units = 0
        self.rate = rate
        self._set_margin()
        self._set_level(now, level)

    def _set_margin(self) -> None:
        """Express the margin in units at the current rate (an adaptive rate changes)."""
        self._pad = self.margin * self.rate
        self._slack = (self.burst - 1) * self._pad if self.unit is None else 0.0
        #: What one attempt adds (counting attempts), and the room a start may fill: kept
        #: with the margin, so the hot path adds no margin terms of its own.
        self._step = 1 + self._pad
        self._room = self.burst + self._slack

    def carry_on_from(self, older: RateLimit, now: float) -> None:
        """Take over *older*'s units and pushback state (a new rate of the same unit replaces
        it): no banked credit appears, and an adaptive rate keeps its slow-down."""
        if self._pending is not None:
            self._flush()
        # At most a full bucket: a longer backlog of another period is not this limit's debt.
        level = min(older._level(now), self.burst)
        if level > self._level(now):
            self._set_level(now, level)
        self._pause_end = max(self._pause_end, older._pause_end)
        if self.adaptive and older.adaptive and older.rate < older.configured:
            self._changed_at = older._changed_at
            self.rate = self.configured * older.rate / older.configured
            self._set_margin()
            self._good = self.configured * older._good / older.configured
            self._ceiling = self.configured * older._ceiling / older.configured
            self._recover_at = older._recover_at
            self._decreased_at = older._decreased_at
        if self._hold is None:
            self._hold = older._hold  # the server's budget is the same server's
            self._replain()

    def observe(self, remaining: float, until: float, now: float, refill: float = 0.0) -> None:
        """A server said at *now* that only *remaining* more units fit before *until* (its
        rate-limit headers, #22 item 3), plus *refill* units per second for a budget that
        refills continuously.

        Two effects, each only ever stricter than the limit's own rule, and never past *until*:
        the bucket is filled so that at most *remaining* units fit at once (then the rate
        refills it, as it would after a burst), and a :class:`BudgetHold` lets at most
        *remaining* units start before *until*. The configured rate is not changed. A newer
        reading replaces an older hold (it counts what the server saw since).
        """
        room = self.burst - self._level(now)
        if remaining < room:
            self._set_level(now, self.burst - remaining)
        if until > now:
            self._hold = BudgetHold(remaining, until, refill, now)
            self._replain()

    def pushback(self, now: float, until: float, paused: bool, job: Job | None = None) -> None:
        """The provider refused, naming this limit (or its pool or key), and starts nothing
        before *until*.

        If *paused* (the pushback holds this limit's starts), the provider's bucket is empty, so
        ours holds no more credit either: after the pause one unit may start as soon as this
        limit allows it (at once, unless the units already admitted still fill the bucket: a
        pushback never lets a start come closer than the rate permits), the rest follow at the
        rate, never as a burst.

        An adaptive rate also decreases, once per episode: the refusal is news only if the
        refused attempt (*job*'s) was admitted after the last decrease and the pause of that
        decrease is over; the refusals of attempts already in flight are the same news. See the
        class docstring for the recovery.
        """
        if self._pending is not None:
            self._flush()
        if self.adaptive:
            record = None if job is None else self._record(job)
            admitted = now if record is None else record[0]
            if now >= self._pause_end and admitted >= self._decreased_at:
                if self.rate < self.configured:
                    self._regrow(now)
                floor = self.configured / 64
                self._good = max(self.rate * _GOOD_SHARE, floor)
                # A refusal soon after the last (within two periods, and the pause and quiet
                # of this one) says the server is stricter than this rate: probe gently below
                # it from now on. A lone one (a jitter 429) leaves the probe as fast as it was.
                repeated = now - self._decreased_at <= 2 * (self.per + until - now)
                self._ceiling = self.rate if repeated else _INF
                self._set_rate(max(self.rate / 2, floor), now)
                self._changed_at = now
                self._decreased_at = now
                self._recover_at = until + (until - now)  # one pause-length of quiet after it
            elif self._recover_at != _INF:
                # Stale news may lengthen the pause: the quiet to wait for starts after it.
                self._recover_at = max(self._recover_at, until + (until - now))
        if until > self._pause_end:
            self._pause_end = until
        start = max(now, until)
        # At the end of the pause, room for one start (the provider said so), then the rate.
        full = self.burst - 1
        if paused and self._level(start) < full:
            unheld = self._unheld
            if unheld is None or unheld[2] <= now:
                self._unheld = (self.tat, self.rate, start)  # resume() may take the fill back
            elif start > unheld[2]:
                self._unheld = (unheld[0], unheld[1], start)  # the same hold, longer
            self._origin = start
            self._units = full

    def end_pushback(self, now: float) -> None:
        """``resume()`` at *now* ended the pause of a pushback: take back the fill of
        :meth:`pushback`, so the bucket holds again only what the real starts left. The next
        start fits as soon as they allow it (at once if they are old enough), the rest follow at
        the rate: no credit beyond ``burst`` appears, and the rate contract holds across it.

        An adaptive rate keeps its slow-down, but a refusal after *now* is news again (it halves
        the rate once more).
        """
        if self._pending is not None:
            self._flush()
        if self._pause_end > now:
            self._pause_end = now
        unheld = self._unheld
        if unheld is None:
            return
        self._unheld = None
        tat, rate, end = unheld
        if end <= now:
            return  # the hold is over already: what the bucket holds is the rate's own schedule
        # The real starts' units at now, drained at the rate of the pushback's time: an adaptive
        # rate that regrew since drains faster, so this never gives more credit than they left.
        level = (tat - now) * rate
        if level <= 0:
            self._origin = now  # drained: a fresh schedule from now on
            self._units = 0
        elif level < self._level(now):
            self._set_level(now, level)

    def _regrow(self, now: float) -> None:
        """Grow the effective rate since the last change: linearly (gently below the rate last
        refused), at once to the last good rate when the quiet after a decrease is over, up to
        the configured rate."""
        recover_at = self._recover_at
        if recover_at <= now:
            self._recover_at = _INF
            grown = self._grown(max(0.0, recover_at - self._changed_at))
            if self._good > grown:
                grown = self._good
            self._set_rate(min(grown, self.configured), now)
            self._changed_at = max(recover_at, self._changed_at)
        elapsed = now - self._changed_at
        if elapsed > 0:
            self._set_rate(min(self._grown(elapsed), self.configured), now)
            self._changed_at = now

    def _grown(self, elapsed: float) -> float:
        """The rate after *elapsed* seconds of linear regrowth from the current one: by
        ``configured / (2 * per)`` per second, a quarter of that below the rate refused last if
        that refusal followed another soon (see :meth:`pushback`)."""
        slope = self.configured / (2 * self.per)
        rate = self.rate
        ceiling = self._ceiling
        if rate >= ceiling or ceiling == _INF:
            return rate + elapsed * slope
        gentle = slope * _GENTLE
        reach = (ceiling - rate) / gentle  # the seconds to the ceiling, gently
        if elapsed <= reach:
            return rate + elapsed * gentle
        return ceiling + (elapsed - reach) * slope

    # -- introspection ----------------------------------------------------------------------------

    def rest_at(self) -> float:
        """From when a fresh bucket would behave the same (the key may then be dropped)."""
        hold = self._hold
        return self.tat if hold is None else max(self.tat, hold.until)

    def snapshot(self, now: float) -> LimitStatistics:
        """This limit's :class:`LimitStatistics` at *now*."""
        if self.adaptive and self.rate < self.configured:
            self._regrow(now)  # the rate in use now, not at the last admission
        tat = self.tat
        return LimitStatistics(
            kind="rate",
            count=self.configured * self.per,
            per=self.per,
            burst=self.burst,
            unit=self.unit,
            # At most a full bucket: during a pushback's pause the bucket is full until it ends.
            in_use=min(max(0.0, (tat - now) * self.rate), self.burst),
            next_free=self._origin + (self._units - self.burst - self._slack + 1) / self.rate,
            effective_rate=self.rate,
        )
