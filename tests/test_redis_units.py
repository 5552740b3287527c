"""Loop-free parts of werkpool.redis: the script arguments of each limit value and the local
shares of the degraded mode (no server needed; the server tests are in tests/contract)."""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING, Any

import coredis
import pytest

from werkpool import Concurrency, Rate, Window
from werkpool.redis import RedisStore
from werkpool.redis._degraded import scaled as _scaled
from werkpool.redis._scripts import SCRIPTS
from werkpool.redis._scripts import script_args as _args

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable

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

    async def evalsha(sha: str, keys: list[str], args: list[Any]) -> list[str | int]:
        sent.append(sha)
        return [1, "0.000000", "0.000000"]

    client: Any = coredis.Redis(host="127.0.0.1", port=1)  # never connected
    client.evalsha = evalsha
    store: Any = RedisStore(client)
    store._tg, store._unchecked, store._epoch = object(), False, "e"  # as if entered
    store._shas = {"admit": "admit", "release": "release"}

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
