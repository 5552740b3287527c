"""Admissions sent together: the ADMIT requests that come while one call is in flight go to the
server in the next call, as one script call (group commit).

Each admission used to be one ``EVALSHA``: one round trip, one request and reply through the
client library (most of an admission's client CPU), one script call in Redis. A pool asks for
up to ``pipeline`` admissions at once, so while one call is in flight the next ones wait anyway:
:class:`Admissions` gathers them and sends them in one call of the ADMIT script, which admits
them in the order they came, atomically (``lua/admit.lua``). A lone admission goes at once, as
before; only the ones that would have queued behind the connection share a call.

One task (:meth:`Admissions.run`, in the store's task group) does the sending, so no caller
does I/O for another: a caller cancelled while its call is in flight only stops waiting (the
credit its request may take is handled as for a single call: the shared limit registered the
attempt's leases before asking, and gives them back). A caller cancelled before its call went
out is taken out of the batch.

A pool with ``pipeline=1`` sends its admissions as links of a chain
(:class:`~werkpool._core._remote_limit.Chain`): they go in the order they came, and a link is
asked only as if it had waited for the answers before it. Within a call the script stops a
chain at its first link not granted; a link still waiting when an earlier one's answer says so
is not sent at all (answered :data:`NOT_ASKED_REPLY`).
"""

from __future__ import annotations

import copy
import math
from collections import deque
from typing import TYPE_CHECKING, Any, Final, Protocol, final

import anyio

from .._core._exceptions import SharedLimitError
from ._scripts import Unavailable, text

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from .._core._remote_limit import Chain

__all__ = ["NOT_ASKED_REPLY", "Admissions", "Sender"]

#: The most admissions in one call: bounds one script's run in Redis (every other client waits
#: for it) and the size of one request.
MOST: Final = 64

#: The ADMIT reply of an attempt not asked: an earlier one of its chain was not granted (the
#: shared limit answers the pool :data:`~werkpool._core._remote_limit.NOT_ASKED` for it).
NOT_ASKED_REPLY: Final = (2,)


class Sender(Protocol):
    """What :class:`Admissions` needs of its store: one script call."""

    async def call(self, script: str, keys: Sequence[str], args: Sequence[str | float]) -> Any:
        """Run *script* (raises :class:`~._scripts.Unavailable` if the server does not answer)."""
        ...


@final
class _Ask:
    """One admission: its keys and arguments, its chain and link (or None), then its reply."""

    __slots__ = ("args", "chain", "keys", "link", "reply")

    def __init__(
        self, keys: Sequence[str], args: Sequence[str | float], chain: Chain | None, link: int
    ) -> None:
        self.keys = keys
        self.args = args
        self.chain = chain
        self.link = link
        self.reply: Any = None


@final
class _Batch:
    """The admissions of one call, and what its callers wait for."""

    __slots__ = ("asks", "done", "error")

    def __init__(self) -> None:
        self.asks: list[_Ask] = []
        self.done = anyio.Event()
        #: What the call raised (each caller raises its own copy), or None.
        self.error: BaseException | None = None


def _copy(error: BaseException) -> BaseException:
    """*error* again, for one more caller: one exception object raised in several tasks would
    collect all their tracebacks (its cause is kept)."""
    fresh = copy.copy(error)
    fresh.__cause__ = error.__cause__
    fresh.__traceback__ = None
    return fresh


@final
class Admissions:
    """A store's ADMIT calls: concurrent admissions share one call, in the order they came."""

    __slots__ = (
        "_busy",
        "_clock",
        "_closed",
        "_flight",
        "_idle",
        "_queue",
        "_restart_key",
        "_sender",
        "arrived",
    )

    def __init__(
        self, sender: Sender, restart_key: str, clock: Callable[[], float] | None = None
    ) -> None:
        self._sender = sender
        self._restart_key = restart_key
        self._clock = clock
        #: When the replies of the last call came back (on *clock*): the time an admission's
        #: answer arrived, though its caller resumes later (after the sending task, and the
        #: other callers of the batch). A start granted for later counts from it, not from when
        #: its caller resumed: that delay, a millisecond or more on a busy loop, made starts late
        #: and let them bunch up where the server sees them. A caller that reads it after a later
        #: call came back gets a later time: late, never early.
        self.arrived = -math.inf
        #: The batches not sent yet, oldest first (the last one takes new admissions).
        self._queue: deque[_Batch] = deque()
        #: The batch whose call the sending task has in flight, or None.
        self._flight: _Batch | None = None
        #: A call is in flight (the sending task's, or a lone admission's from its own task).
        self._busy = False
        #: Set when an admission comes while the sending task waits for one.
        self._idle: anyio.Event | None = None
        #: The sending task ended (the store was left): no admission is taken any more.
        self._closed = False

    async def admit(
        self,
        keys: Sequence[str],
        args: Sequence[str | float],
        chain: Chain | None = None,
        link: int = 0,
    ) -> Any:
        """One attempt's ADMIT reply (see ``lua/admit.lua``): *keys* are its limits' keys,
        *args* its holder, lease, horizon and five per key; with a *chain*, the attempt is
        its *link* (:data:`NOT_ASKED_REPLY` if an earlier link was not granted).

        :raises Unavailable: the server did not answer (the whole call)
        :raises SharedLimitError: the server refused the request itself (a key of another
            type: only that attempt)
        """
        if self._closed:
            raise Unavailable("the store was closed")
        if chain is not None and not chain.asks(link):
            return NOT_ASKED_REPLY
        queue = self._queue
        ask = _Ask(keys, args, chain, link)
        if not self._busy and not queue:
            # Nothing in flight, nothing waiting: this admission goes at once, alone, from its
            # own task (no hand-over to the sending task: a lone admission costs what one call
            # costs). Cancelled, it is interrupted as any request is.
            self._busy = True
            try:
                (reply,) = await self._call([ask])
            finally:
                self._busy = False
                if queue:  # the ones that came meanwhile: the sending task takes them
                    self._wake()
        else:
            reply = await self._queued(ask)
        if int(reply[0]) == -1:
            raise SharedLimitError(text(reply[1]))
        return reply

    async def _queued(self, ask: _Ask) -> Any:
        """*ask*'s reply, sent by the sending task with the others that wait."""
        queue = self._queue
        if queue and len(queue[-1].asks) < MOST:
            batch = queue[-1]
        else:
            batch = _Batch()
            queue.append(batch)
        batch.asks.append(ask)
        if not self._busy:
            self._wake()
        try:
            await batch.done.wait()
        except BaseException:
            if batch is not self._flight and not batch.done.is_set():
                batch.asks.remove(ask)  # not sent: nothing taken for it
            raise
        if batch.error is not None and ask.reply is None:  # (not a link left out: not asked)
            raise _copy(batch.error)
        return ask.reply

    def _wake(self) -> None:
        """Wake the sending task if it waits."""
        idle = self._idle
        if idle is not None:
            self._idle = None
            idle.set()

    async def run(self) -> None:
        """Send the waiting batches, one call at a time (none while an admission sent from its
        own task is in flight), until cancelled: a task of the store's task group."""
        queue = self._queue
        try:
            while True:
                if not queue or self._busy:
                    idle = self._idle = anyio.Event()
                    await idle.wait()
                    continue
                batch = queue.popleft()
                if not batch.asks:  # all its callers were cancelled
                    batch.done.set()
                    continue
                self._busy = True
                self._flight = batch
                await self._send(batch)
                self._busy = False
                self._flight = None
                batch.done.set()
        finally:
            self._closed = True
            closed = Unavailable("the store was closed while an admission waited")
            for waiting in (self._flight, *queue):
                if waiting is not None and not waiting.done.is_set():
                    waiting.error = closed
                    waiting.done.set()
            queue.clear()
            self._flight = None

    async def _call(self, asks: list[_Ask]) -> list[Any]:
        """One ADMIT call for *asks*, in the script's batch form: their replies, in order.

        A chained ask that is not granted (or whose call fails) fails its chain here, before
        any later call goes out: a later link is then not asked.
        """
        keys: list[str] = []
        args: list[str | float] = [len(asks)]
        chained = False
        for ask in asks:
            keys += ask.keys
            args.append(len(ask.keys))
            if ask.chain is None:
                args.append("-")
            else:
                chained = True
                args.append(id(ask.chain))  # a name unique among the chains alive
            args += ask.args
        keys.append(self._restart_key)
        try:
            replies: list[Any] = await self._sender.call("admit", keys, args)
            if self._clock is not None:
                self.arrived = self._clock()
            if len(replies) != len(asks):
                raise SharedLimitError(
                    f"the admit script answered {len(replies)} replies for {len(asks)} "
                    "admissions (is another program's script loaded under its SHA?)"
                )
        except BaseException:
            if chained:
                for ask in asks:
                    if ask.chain is not None:
                        ask.chain.fail(ask.link)
            raise
        if chained:
            for ask, reply in zip(asks, replies, strict=True):
                if ask.chain is not None and int(reply[0]) != 1:
                    ask.chain.fail(ask.link)
        return replies

    async def _send(self, batch: _Batch) -> None:
        """The sending task's call for *batch*: each ask gets its reply, or the batch its
        error. A chained ask whose chain failed while it waited is not sent (not asked)."""
        asks = batch.asks
        left_out = False
        for ask in asks:
            if ask.chain is not None and not ask.chain.asks(ask.link):
                ask.reply = NOT_ASKED_REPLY
                left_out = True
        if left_out:
            asks = [ask for ask in asks if ask.reply is None]
            if not asks:
                return
        try:
            replies = await self._call(asks)
        except Exception as exc:  # each caller raises it (Unavailable, SharedLimitError, ...)
            batch.error = exc
            return
        for ask, reply in zip(asks, replies, strict=True):
            ask.reply = reply
