"""The pool's run-time control: its limits, hooks and pauses, read and changed while it runs.

:class:`ControlFace` is the face of :class:`~werkpool.WorkerPool` that reads the limits as
configured (``size``, ``rate``, ``burst``, ``limits``, ``per_key``, ``max_retry_after``) and
changes them on a running pool (``pool.size = n``, ``pool.rate = r``, :meth:`set_limits`), adds
and removes hooks, and pauses the pool or a key (:meth:`pause`, :meth:`pause_for`,
:meth:`push_back`, :meth:`resume`, the budgets of :meth:`observe_headers`). Each call is checked
here and applied by the runtime's :class:`~werkpool._runtime._control.Control`; every one must
come from the pool's event loop, whose state is not thread-safe.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Final, cast

from .._core._ratelimit_headers import less_sent, parse_headers
from .._core._specs import check_limits, split_shared
from .._core._validate import check_burst, check_key, check_rate, check_seconds, check_size
from .._runtime._hooks import check_hook
from .._runtime._workers import running_in, running_worker

if TYPE_CHECKING:
    from collections.abc import Hashable, Iterable, Mapping

    from .._core._events import Hook
    from .._core._ratelimit_headers import Budget
    from .._core._specs import LimitSpec, Shared
    from .._runtime._lifecycle import Lifecycle

__all__ = ["ControlFace"]

_INF: Final = float("inf")


class ControlFace:
    """The run-time control of a :class:`~werkpool.WorkerPool` (its limits, hooks, pauses)."""

    __slots__ = ()

    #: The pool's lifecycle, which owns the limit set and the runtime's control (WorkerPool's
    #: slot).
    _life: Lifecycle

    @property
    def size(self) -> int | None:
        """The concurrency limit (``None``: unlimited): the smallest of ``size=`` and the
        unit-less :class:`Concurrency` values of ``limits=``.

        Settable on a running pool (from its event loop): a larger size starts waiting jobs at
        once; a smaller one lets the running attempts finish and starts none until fewer than
        the new size run. Setting it replaces the unit-less Concurrency values of the limits.

        .. versionchanged:: 0.3 settable
        """
        return self._life.size

    @size.setter
    def size(self, size: int | None) -> None:
        self._check_loop()
        self._life.control.set_size(check_size(size))

    @property
    def rate(self) -> float | None:
        """The ``rate=`` shorthand in attempt starts per second (``None``: none).

        Settable on a running pool: the new rate continues the old one's schedule, so it never
        hands out banked credit.

        .. versionchanged:: 0.3 settable
        """
        return self._life.rate

    @rate.setter
    def rate(self, rate: float | None) -> None:
        self._check_loop()
        life = self._life
        life.control.set_limits(check_rate(rate), life.limitset.burst, life.limitset.specs)

    @property
    def burst(self) -> int:
        """How many starts the ``rate=`` shorthand lets go back to back."""
        return self._life.limitset.burst

    @property
    def max_retry_after(self) -> float:
        """The longest pause a pushback may cause, in seconds (``max_retry_after=``)."""
        return self._life.max_retry_after

    @property
    def limits(self) -> tuple[LimitSpec | Shared, ...]:
        """The ``limits=`` values (without the ``size``/``rate`` shorthands): the local ones,
        then the shared ones.

        .. versionadded:: 0.3
        """
        return self._life.limitset.specs + self._life.limitset.shared

    @property
    def per_key(self) -> tuple[LimitSpec | Shared, ...]:
        """The ``per_key=`` values: each key has its own instances of them (or, shared, its own
        entry in the store).

        .. versionadded:: 0.3
        """
        return self._life.limitset.per_key + self._life.limitset.shared_per_key

    def set_limits(self, limits: Iterable[LimitSpec | Shared], **shorthands: Any) -> None:
        """
        Replace the pool's ``limits=`` values while it runs; ``rate=`` and ``burst=`` may be given
        too (else the shorthand rate stays as it is).

        Each new rate or window continues the schedule of the old one of the same unit, so no
        banked credit appears; concurrency limits count the attempts running now (running
        attempts above a smaller limit finish first). Per-key limits cannot change, nor can
        shared limits: *limits* must hold the pool's shared limits as they are, if any.

        :raises ValueError: if a job that waits has a cost the new limits could never admit, or
            the shared limits differ from the pool's (nothing is changed then)

        .. versionadded:: 0.3
        """
        self._check_loop()
        life = self._life
        unknown = set(shorthands) - {"rate", "burst"}
        if unknown:
            raise TypeError(f"set_limits() got unexpected keyword arguments: {sorted(unknown)}")
        specs, shared = split_shared(check_limits(limits, "limits"))
        if set(shared) != set(life.limitset.shared):
            raise ValueError(
                "set_limits() cannot change shared limits (they are fixed for the pool's life): "
                f"the pool has {list(life.limitset.shared)!r}, the call gave {list(shared)!r}"
            )
        new_rate = check_rate(shorthands["rate"]) if "rate" in shorthands else life.rate
        new_burst = (
            check_burst(shorthands["burst"]) if "burst" in shorthands else life.limitset.burst
        )
        life.control.set_limits(new_rate, new_burst, specs)

    # -- hooks ------------------------------------------------------------------------------------

    @property
    def hooks(self) -> tuple[Hook, ...]:
        """The pool's hooks, in the order they are called.

        .. versionadded:: 0.3
        """
        return self._life.hooks

    def add_hook(self, hook: Hook) -> None:
        """Call *hook* with a :class:`werkpool.JobEvent` at each transition from now on.

        A hook is called synchronously in the pool's event loop, after the pool's own counters
        changed: keep it quick and non-blocking. An :class:`Exception` it raises is logged once
        (logger ``werkpool``) and never reaches the pool or its jobs; a ``KeyboardInterrupt``,
        ``SystemExit`` or other :class:`BaseException` stops the pool as a job raising it would.
        A pool without hooks does no work for them. Adding a hook that the pool has already
        does nothing.

        .. versionadded:: 0.3
        """
        self._check_loop()
        check_hook(hook, "add_hook()")
        life = self._life
        if hook not in life.hooks:
            life.set_hooks((*life.hooks, hook))

    def remove_hook(self, hook: Hook) -> None:
        """Stop calling *hook*.

        :raises ValueError: if the pool does not have it

        .. versionadded:: 0.3
        """
        self._check_loop()
        life = self._life
        if hook not in life.hooks:
            raise ValueError(f"remove_hook(): {hook!r} is not a hook of this pool")
        life.set_hooks(tuple(h for h in life.hooks if h is not hook and h != hook))

    # -- pauses -----------------------------------------------------------------------------------

    def pause(self) -> None:
        """Start no attempt until :meth:`resume` (running attempts go on).

        .. versionadded:: 0.3
        """
        self._check_loop()
        self._life.control.pause(_INF)

    def pause_for(self, seconds: float, *, key: Hashable = None) -> None:
        """Start no attempt (of *key*, if given) for *seconds*; a longer pause is kept.

        .. versionadded:: 0.3
        """
        self._check_loop()
        delay = check_seconds(seconds)
        check_key(key)
        self._life.control.pause(self._life.now() + delay, key)

    def push_back(self, seconds: float, *, key: Hashable = None, scope: str | None = None) -> None:
        """The provider pushed back, outside any job's error: as when a job raises
        :exc:`werkpool.RetryAfter`, hold what *scope* names for *seconds* and slow its adaptive
        rates down — but no job fails.

        *scope*: ``"key"`` (the default with *key*) pauses *key* only and slows only its
        adaptive limits; ``"pool"`` (the default without) pauses the pool and slows the pool's
        adaptive limits; the ``name=`` of one of the pool's limits (or of *key*'s) holds that
        limit only. For a pushback seen in a result that is still used, such as the last 429
        that :class:`werkpool.httpx.PoolTransport` hands to its caller. A longer pause is kept;
        a delay beyond ``max_retry_after`` is clamped to it.

        :raises TypeError: if *scope* is not None or a str
        :raises ValueError: if *scope* is ``"key"`` without a *key*, or names no limit

        .. versionadded:: 0.3
        .. versionchanged:: 0.3 ``scope``; a key's pushback no longer slows the pool's rates
        """
        self._check_loop()
        delay = check_seconds(seconds)
        check_key(key)
        checked = cast("object", scope)
        if checked is not None and not isinstance(checked, str):
            raise TypeError(
                f"push_back: scope must be None, 'key', 'pool' or a limit's name, "
                f"not {type(checked).__name__}"
            )
        if scope == "key" and key is None:
            raise ValueError("push_back: scope='key' needs key= (the key the provider refused)")
        if scope not in (None, "key", "pool"):
            if self._life.binding is None:
                raise RuntimeError("push_back(scope=<a limit's name>) needs a running pool")
            self._life.sched.check_scope(scope, key)
        self._push_back(delay, key, None, scope)

    def _push_back(
        self,
        delay: float,
        key: Hashable,
        clamped_from: float | None = None,
        scope: str | None = None,
    ) -> None:
        """:meth:`push_back` with *delay* checked. *clamped_from*: the delay the provider asked
        for, if the caller clamped it already (the httpx transport, to its own cap)."""
        life = self._life
        if delay > life.max_retry_after:
            if clamped_from is None:
                clamped_from = delay
            delay = life.max_retry_after
        life.control.push_back(life.now() + delay, key, clamped_from, scope)

    def observe_headers(self, headers: Mapping[str, str], *, key: Hashable = None) -> int:
        """A server's rate-limit headers, from a response a job got: its stated budgets lower
        the pool's limits (or *key*'s, if given) until their reset. Returns how many budgets
        found a limit of theirs.

        Read: OpenAI's ``x-ratelimit-*-{requests,tokens}``, Anthropic's
        ``anthropic-ratelimit-*``, GitHub's ``x-ratelimit-*``, the IETF draft's ``RateLimit``
        and ``RateLimit-Policy`` and the older ``RateLimit-Limit/-Remaining/-Reset``. A budget
        of requests lowers a :class:`Rate` or :class:`Window` that counts attempts (no
        ``unit``), one of tokens those with ``unit="tokens"`` (``input-tokens`` matches
        ``unit="input_tokens"``...); among several of a unit, the one whose ``per`` is nearest
        the budget's window, else whose count is nearest its limit, else the first.

        "Only *R* of *L* more before *T*": at most *R* units start before the reset *T*, plus,
        for OpenAI's and Anthropic's budgets (which refill continuously, to full at *T*), the
        ``(L - R) / (T - now)`` units per second they regain; and a rate's bucket holds at most
        *R* at once. Never looser than the configured limit,
        and never for longer than the reset: the configured rate is not changed. A reset
        further than ``max_retry_after`` away is clamped to it. Other clients that share the
        provider's budget are caught this way.

        Scope: the budgets an API key's headers state are for everything that key sends, so
        they apply to the pool's limits, unless *key* names the job key whose ``per_key=``
        limits they describe (a pool whose keys are the API keys).

        Called from inside a job (with the response its attempt got), the attempts of the pool
        admitted after that one and still running are taken off each budget: the server had not
        counted them when it answered (as :class:`werkpool.httpx.PoolTransport` does it; the
        order comes from a :class:`Rate` without a unit).

        A malformed or hostile header is ignored (never raised); a response without such
        headers costs one scan of its names. Remote (Redis) limits are not lowered.

        :param headers: the response's headers (``httpx.Headers``, or any mapping of str)
        :param key: the key whose limits the budgets describe; None: the pool's
        :raises TypeError: if *headers* is not a mapping or *key* not hashable

        .. versionadded:: 0.3
        """
        self._check_loop()
        check_key(key)
        now = self._life.now()
        report = parse_headers(headers, now, time.time())
        budgets = report.budgets
        worker = running_worker.get()
        job = None if worker is None else worker.job
        if budgets and job is not None and running_in.get() is self._life.runner:
            # Called from a job of this pool with its response: the attempts admitted after it
            # and still running were sent after its request, and the server had not counted
            # them when it answered (as the httpx transport does it).
            later = self._life.control.sent_after(job)
            if later:
                budgets = tuple(less_sent(budget, later) for budget in budgets)
        return self._life.control.observe(budgets, key)

    def _observe(self, budgets: Iterable[Budget], key: Hashable) -> int:
        """:meth:`observe_headers` with the headers read (the httpx transport reads them once
        for its classify and statistics too)."""
        return self._life.control.observe(budgets, key)

    def resume(self) -> None:
        """End every pause: :meth:`pause`, :meth:`pause_for` and pushbacks, of the pool and its
        keys. A pushback's hold ends too: the jobs waiting out its pause are retried at once,
        and the rates it emptied may start again as soon as the starts before it allow (never
        closer than the rate permits: the pushback's own hold is dropped, not the real starts').

        .. versionadded:: 0.3
        """
        self._check_loop()
        self._life.control.resume()

    @property
    def paused(self) -> bool:
        """True while the pool starts nothing (paused, or a pushback's delay runs).

        .. versionadded:: 0.3
        """
        life = self._life
        until = life.control.paused_until()
        return until == _INF or (until != -_INF and until > life.now())

    def _check_loop(self) -> None:
        """Runtime control must come from the pool's event loop (its state is not thread-safe)."""
        binding = self._life.binding
        if binding is not None:
            binding.check()
