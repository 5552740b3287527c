"""Issue #21, items 6 and 7: ``resume()`` and long pushbacks; a map's key and cost functions.

Item 6. ``resume()`` ends every pause and every pushback's hold: the rates a pushback filled are
usable at once (but hold what the real starts left, so the rate contract holds across the
resume), and a pushed-back job is retried at once instead of at the end of the pause it no
longer waits for. A pushback longer than ``max_retry_after`` (the pool's, the httpx transport's;
15 minutes by default) is clamped, and the ``"paused"`` event says so (``clamped_from``).

Item 7. A ``StopIteration`` raised by a map's ``key=`` or ``cost=`` function is an error of the
map, raised from its iteration as a :exc:`RuntimeError` (as :pep:`479` does), never the end of its
input: nothing after it is silently dropped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from support import echo

from werkpool import Concurrency, WorkerPool

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable, Iterator

# -- item 7: StopIteration from a map's key= or cost= ---------------------------------------------


def _source(kind: str, items: list[int]) -> Iterable[int] | AsyncIterator[int]:
    if kind == "list":
        return items

    def generator() -> Iterator[int]:
        yield from items

    async def async_generator() -> AsyncIterator[int]:
        for item in items:
            yield item

    return generator() if kind == "generator" else async_generator()


@pytest.mark.parametrize("which", ["key", "cost"])
@pytest.mark.parametrize("kind", ["list", "generator", "async"])
@pytest.mark.parametrize("options", [{"size": 2}, {"rate": 10}, {}], ids=["size", "rate", "none"])
async def test_stop_iteration_from_key_or_cost_raises_from_the_map(
    which: str, kind: str, options: dict[str, Any]
) -> None:
    """Item 3's ``key``/``cost`` raises StopIteration: items 0-2 are yielded, then the map
    raises a RuntimeError from it (naming the function), not a silent end."""

    def fn(item: int) -> Any:
        if item == 3:
            raise StopIteration("not the end")
        return "k" if which == "key" else {"u": 1}

    seen: list[object] = []
    async with WorkerPool(limits=[Concurrency(10, unit="u")], **options) as pool:
        results = pool.map(echo, _source(kind, list(range(8))), **{which: fn})
        with pytest.raises(RuntimeError, match=f"{which} function") as info:
            async for result in results:
                seen.append(result)  # noqa: PERF401  # the items before the error, one by one
    assert seen == [0, 1, 2]
    assert isinstance(info.value.__cause__, StopIteration)
    assert str(info.value.__cause__) == "not the end"


@pytest.mark.parametrize("which", ["key", "cost"])
async def test_stop_async_iteration_from_key_or_cost_raises_from_the_map(which: str) -> None:
    def fn(item: int) -> Any:
        raise StopAsyncIteration

    async with WorkerPool(size=2) as pool:
        with pytest.raises(RuntimeError, match=f"{which} function") as info:
            async for _ in pool.map(echo, [1, 2], **{which: fn}):
                pass
    assert isinstance(info.value.__cause__, StopAsyncIteration)
