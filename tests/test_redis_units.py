"""Parts of werkpool.redis that need no server: the script arguments of each limit value, the
local shares of the degraded mode, and how a store's admissions share calls (against a stand-in
for its script call); the server tests are in tests/contract."""

from __future__ import annotations

import contextlib
from importlib import resources
from typing import TYPE_CHECKING, Any

import anyio
import coredis
import pytest

from werkpool import Concurrency, Rate, Window
from werkpool.redis import RedisStore
from werkpool.redis._degraded import scaled as _scaled
from werkpool.redis._scripts import SCRIPTS
from werkpool.redis._scripts import script_args as _args

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Hashable

    from werkpool import Shared


class _Store:
    """A store that is never bound: the values only name it."""

    def bind(
        self,
        limits: tuple[Shared, ...],
        per_key: tuple[Shared, ...],
        wake: Callable[[Hashable | None], None],
    ) -> Any:  # pragma: no cover - never bound here
        raise AssertionError


def shared(limit: Rate | Window | Concurrency) -> Shared:
    return limit.shared(_Store(), "x")


def test_script_arguments_of_each_kind() -> None:
    assert _args(shared(Rate(200))) == ("r", 1 / 200, 1.0)
    assert _args(shared(Rate(90_000, per=60, burst=500, unit="tokens"))) == (
        "r",
        60 / 90_000,
        500.0,
    )
    assert _args(shared(Window(10, per=2))) == ("w", 2.0, 10.0)
    assert _args(shared(Concurrency(5))) == ("c", 5.0, 0.0)


@pytest.mark.parametrize(
    ("limit", "share", "expected"),
    [
        (Rate(100), 0.1, Rate(10)),
        (Rate(100, burst=10), 0.25, Rate(25, burst=2)),  # whole attempts: burst rounds down
        (Rate(1), 0.1, Rate(0.1)),  # burst never below 1 attempt
        (Rate(1000, unit="tokens", burst=1000), 0.5, Rate(500, unit="tokens", burst=500)),
        (Window(10, per=60), 0.25, Window(2, per=60)),
        (Window(1, per=60), 0.25, Window(1, per=60)),  # at least one attempt
        (Concurrency(20), 0.1, Concurrency(2)),
        (Concurrency(3), 0.1, Concurrency(1)),
        (Concurrency(16, unit="gb"), 0.25, Concurrency(4, unit="gb")),
    ],
)
def test_the_local_share_scales_the_budget(
    limit: Rate | Window | Concurrency, share: float, expected: Rate | Window | Concurrency
) -> None:
    assert _scaled(limit, share) == expected


def test_a_shared_value_is_a_hashable_value() -> None:
    store = _Store()
    a = Rate(5).shared(store, "api")
    assert a == Rate(5).shared(store, "api")
    assert len({a, Rate(5).shared(store, "api")}) == 1
    assert (a.kind, a.unit, a.capacity) == ("rate", None, 1.0)
    assert repr(a).startswith("Rate(5, per=1, burst=1).shared(")
    assert Window(3, 1).shared(store, "w").kind == "window"
    assert Concurrency(2, unit="x").shared(store, "c").kind == "concurrency"


def test_the_scripts_are_the_packages_lua_files() -> None:
    """The scripts are read from werkpool/redis/lua/*.lua as package resources (so a wheel
    without them fails here, not at a pool's first admission)."""
    lua = resources.files("werkpool.redis").joinpath("lua")
    names = sorted(p.name.removesuffix(".lua") for p in lua.iterdir() if p.name.endswith(".lua"))
    assert names == sorted(SCRIPTS) == ["admit", "reassert", "recover", "release", "renew"]
    for name, source in SCRIPTS.items():
        assert source == lua.joinpath(f"{name}.lua").read_text(encoding="utf-8")
        assert "redis.call" in source


async def test_only_an_attempt_holding_a_lease_is_given_back() -> None:
    """A rate's credit is never given back: such an attempt holds nothing (``holds`` is False,
    so the pool skips the shielded give-back). One under a shared Concurrency holds its lease
    until released, and the release reaches the server."""
    sent: list[str] = []

    async def evalsha(sha: str, keys: list[str], args: list[Any]) -> list[Any]:
        sent.append(sha)
        if sha == "admit":  # one grant per admission of the call
            return [[1, 0, 0] for _ in range(int(args[0]))]
        return [1]

    client: Any = coredis.Redis(host="127.0.0.1", port=1)  # never connected
    client.evalsha = evalsha
    store: Any = RedisStore(client)
    store._tg, store._unchecked, store._epoch = object(), False, "e"  # as if entered
    store._shas = {"admit": "admit", "release": "release"}
    async with anyio.create_task_group() as tg:
        tg.start_soon(store._admissions.run)  # the sending task the store starts as entered
        await _give_back_checks(store, sent)
        tg.cancel_scope.cancel()


async def _give_back_checks(store: Any, sent: list[str]) -> None:
    """The checks of the test above, on the store it entered by hand."""

    class _Job:
        key = None  # what SharedLimit reads of the job: its key= and its cost
        cost = None

    rated = store.bind((Rate(1e6).shared(store, "api"),), (), lambda key: None)
    job: Any = _Job()
    assert await rated.acquire(job) >= 0
    assert not rated.holds(job)
    await rated.release(job)
    assert sent == ["admit"]
    assert store.statistics().granted == 1

    limited = store.bind((Concurrency(2).shared(store, "conn"),), (), lambda key: None)
    assert await limited.acquire(job) >= 0
    assert limited.holds(job)
    assert store.statistics().leases == 1
    await limited.release(job)
    assert not limited.holds(job)
    assert sent == ["admit", "admit", "release"]
    assert store.statistics().leases == 0


# -- Admissions: concurrent ADMIT requests share one call -------------------------------------


class _HeldSender:
    """A store's script call that answers only when the test lets it: records each call's
    arguments; each admission is granted with its holder as the reply's start, or answered
    ``{-1, ...}`` if its holder is ``"bad"``, refused if it is ``"no"``; *error* makes the call
    raise instead."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], list[Any]]] = []
        self.go = anyio.Event()
        self.error: Exception | None = None

    async def call(self, script: str, keys: Any, args: Any) -> list[list[Any]]:
        assert script == "admit"
        self.calls.append((list(keys), list(args)))
        await self.go.wait()
        if self.error is not None:
            raise self.error
        replies: list[list[Any]] = []
        at = 1
        for _ in range(int(args[0])):
            n, holder = int(args[at]), args[at + 2]  # (its chain in between)
            if holder == "bad":
                replies.append([-1, b"the key k holds a list"])
            elif holder == "no":  # refused: a rate's wait of 0.1 s, the pool's limit
                replies.append([0, "0.1", 0, 1, "0"])
            else:
                replies.append([1, holder, 0])
            at += 5 + 5 * n
        return replies


def _ask(holder: str) -> tuple[list[str], list[Any]]:
    """One admission's keys and arguments: one rate key, holder *holder*."""
    return [f"k:{holder}"], [holder, 5.0, 0.01, "r", 0.01, 1.0, "1.0", "0"]


#: The holders in the order their admissions came (trio runs new tasks in random order).
_came: list[str] = []


async def _admit_all(admissions: Any, holders: list[str], into: dict[str, Any], tg: Any) -> None:
    """Start one admission per holder, each storing its reply or error; each holder is added
    to ``_came`` as its admission comes (nothing awaits in between)."""

    async def one(holder: str) -> None:
        try:
            _came.append(holder)
            into[holder] = await admissions.admit(*_ask(holder))
        except Exception as exc:
            into[holder] = exc

    for holder in holders:
        tg.start_soon(one, holder)
    await anyio.sleep(0.01)  # (virtual time) every one is waiting or in flight


@contextlib.asynccontextmanager
async def _sending() -> AsyncIterator[tuple[_HeldSender, Any, dict[str, Any], Any]]:
    """Admissions whose sending task runs over a held stand-in call, a dict for each
    admission's reply or error, and the task group to start admissions in (cancelled at the
    end)."""
    from werkpool.redis._batch import Admissions

    sender = _HeldSender()
    admissions = Admissions(sender, "restart")
    got: dict[str, Any] = {}
    async with anyio.create_task_group() as tg:
        tg.start_soon(admissions.run)
        yield sender, admissions, got, tg
        tg.cancel_scope.cancel()


async def test_admissions_that_come_during_a_call_share_the_next_one() -> None:
    """The first admission goes alone; the three that come while it is in flight go together in
    the next call, in the order they came, each getting its own reply."""
    async with _sending() as (sender, admissions, got, tg):
        await _admit_all(admissions, ["a"], got, tg)
        await _admit_all(admissions, ["b", "c", "d"], got, tg)
        assert len(sender.calls) == 1  # b, c, d wait for a's call to come back
        sender.go.set()
        await anyio.sleep(0.01)
    assert len(sender.calls) == 2
    (keys1, args1), (keys2, args2) = sender.calls
    assert keys1 == ["k:a", "restart"]
    assert args1[:4] == [1, 1, "-", "a"]  # one admission, one key, no chain, holder a
    came = _came[-3:]  # b, c and d, in the order their admissions came
    assert sorted(came) == ["b", "c", "d"]
    assert keys2 == [*(f"k:{h}" for h in came), "restart"]
    assert args2[0] == 3
    assert [args2[3], args2[13], args2[23]] == came
    assert {holder: reply[1] for holder, reply in got.items()} == {
        "a": "a",
        "b": "b",
        "c": "c",
        "d": "d",
    }


async def test_an_admission_cancelled_before_its_call_is_not_sent() -> None:
    """Cancelled while it waited for the call in flight: the next call does not carry it (it
    took nothing); the others of its batch still go."""
    async with _sending() as (sender, admissions, got, tg):
        await _admit_all(admissions, ["a"], got, tg)
        async with anyio.create_task_group() as inner:
            await _admit_all(admissions, ["b", "c"], got, inner)
            inner.cancel_scope.cancel()  # b and c, waiting behind a's call
        await _admit_all(admissions, ["d"], got, tg)
        sender.go.set()
        await anyio.sleep(0.01)
    assert [keys for keys, _ in sender.calls] == [["k:a", "restart"], ["k:d", "restart"]]
    assert set(got) == {"a", "d"}


async def test_a_failed_call_fails_each_of_its_admissions_with_its_own_error() -> None:
    """The call raised: every admission of it raises an error of the same type and message,
    each its own object (one object raised in several tasks would gather their tracebacks)."""
    from werkpool.redis._scripts import Unavailable

    async with _sending() as (sender, admissions, got, tg):
        await _admit_all(admissions, ["x"], got, tg)  # in flight, alone
        await _admit_all(admissions, ["a", "b"], got, tg)  # the next call, together
        try:
            raise OSError("connection reset")
        except OSError as cause:
            error = Unavailable("OSError: connection reset")
            error.__cause__ = cause
        sender.error = error
        sender.go.set()
        await anyio.sleep(0.01)
    assert [args[0] for _, args in sender.calls] == [1, 2]
    assert isinstance(got["x"], Unavailable)
    a, b = got["a"], got["b"]
    assert isinstance(a, Unavailable)
    assert isinstance(b, Unavailable)
    assert a is not b
    assert str(a) == str(b) == "OSError: connection reset"
    assert isinstance(a.__cause__, OSError)
    assert b.__cause__ is a.__cause__


async def test_a_key_of_the_wrong_type_fails_only_its_admission() -> None:
    """An answer ``{-1, message}`` is that admission's SharedLimitError; the others of the same
    call are granted."""
    from werkpool import SharedLimitError

    async with _sending() as (sender, admissions, got, tg):
        await _admit_all(admissions, ["x"], got, tg)  # in flight, alone
        await _admit_all(admissions, ["a", "bad", "c"], got, tg)  # the next call, together
        sender.go.set()
        await anyio.sleep(0.01)
    assert [args[0] for _, args in sender.calls] == [1, 3]
    assert isinstance(got["bad"], SharedLimitError)
    assert str(got["bad"]) == "the key k holds a list"
    assert got["a"][0] == 1
    assert got["c"][0] == 1


async def test_admissions_waiting_when_the_store_closes_fail_as_unavailable() -> None:
    """The sending task ends (the store is left): the admission waiting behind the call in
    flight raises Unavailable instead of waiting forever, and so does a new one, at once. (The
    one in flight went from its own task: its call goes on.)"""
    from werkpool.redis._batch import Admissions
    from werkpool.redis._scripts import Unavailable

    sender = _HeldSender()
    admissions = Admissions(sender, "restart")
    got: dict[str, Any] = {}
    async with anyio.create_task_group() as tg:
        async with anyio.create_task_group() as sending:
            sending.start_soon(admissions.run)
            await _admit_all(admissions, ["a"], got, tg)
            await _admit_all(admissions, ["b"], got, tg)
            sending.cancel_scope.cancel()
        await anyio.sleep(0.01)
        assert isinstance(got["b"], Unavailable)
        assert "a" not in got
        sender.go.set()
    assert got["a"][:2] == [1, "a"]
    with pytest.raises(Unavailable, match="closed"):
        await admissions.admit(*_ask("c"))


async def test_a_batch_holds_at_most_most_admissions() -> None:
    """More admissions than MOST waiting at once go in several calls, in order."""
    from werkpool.redis._batch import MOST

    holders = [f"h{i}" for i in range(2 * MOST + 1)]
    async with _sending() as (sender, admissions, got, tg):
        await _admit_all(admissions, ["first"], got, tg)
        await _admit_all(admissions, holders, got, tg)
        came = _came[-len(holders) :]
        sender.go.set()
        await anyio.sleep(0.01)
    sizes = [args[0] for _, args in sender.calls]
    assert sizes == [1, MOST, MOST, 1]
    sent = [key for keys, _ in sender.calls for key in keys if key != "restart"]
    assert sent == ["k:first", *(f"k:{h}" for h in came)]
    assert all(got[h][1] == h for h in holders)


async def test_a_chains_links_after_one_not_granted_are_not_sent() -> None:
    """A chain's first link goes alone and is refused; its next links, which waited for the next
    call meanwhile, are answered "not asked" without being sent (the chain failed at the
    refusal, before that call went out), while an admission of no chain in the same batch
    goes. A link of a chain that failed is not even queued."""
    from werkpool._core._remote_limit import Chain
    from werkpool.redis._batch import NOT_ASKED_REPLY

    chain = Chain()

    async def link(holder: str, index: int) -> None:
        got[holder] = await admissions.admit(*_ask(holder), chain, index)

    async with _sending() as (sender, admissions, got, tg):
        tg.start_soon(link, "no", 0)
        await anyio.sleep(0.01)  # the first link's call is in flight
        tg.start_soon(link, "x", 1)
        tg.start_soon(link, "y", 2)
        await _admit_all(admissions, ["free"], got, tg)
        sender.go.set()
        await anyio.sleep(0.01)
        assert await admissions.admit(*_ask("late"), chain, 3) == NOT_ASKED_REPLY
    assert chain.broken == 0
    assert int(got["no"][0]) == 0
    assert got["x"] == got["y"] == NOT_ASKED_REPLY
    assert got["free"][1] == "free"
    assert len(sender.calls) == 2
    assert sender.calls[0][1][:4] == [1, 1, id(chain), "no"]  # one link, one key, its chain
    assert sender.calls[1][0] == ["k:free", "restart"]  # only the admission of no chain
