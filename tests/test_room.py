"""The ``max_pending`` line (werkpool._runtime._room.Room), on asyncio and trio, against a fake
queue.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import pytest

from werkpool._runtime._room import EmptyQueue, Room

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

pytestmark = pytest.mark.anyio


class FakeQueue:
    """The scheduler as the room sees it: a count of jobs waiting to start, set by the test."""

    def __init__(self, queued: int = 0) -> None:
        self.queued = queued


def make_room(limit: int, queued: int = 0) -> tuple[Room, FakeQueue]:
    queue = FakeQueue(queued)
    return Room(limit, queue), queue


async def settle() -> None:
    """Let every other task run until it blocks."""
    await anyio.wait_all_tasks_blocked()


async def join_line(tg: TaskGroup, room: Room, served: list[str], name: str) -> anyio.CancelScope:
    """Start a producer that waits in line (then appends *name* to *served*); return its scope.

    Producers are started one at a time, each settled before the next, so the line's order is
    the order of the calls.
    """
    scope = anyio.CancelScope()

    async def producer() -> None:
        with scope:
            await room.wait()
            served.append(name)

    before = room.waiting
    tg.start_soon(producer)
    await settle()
    assert room.waiting == before + 1, f"{name} did not wait in line"
    assert not served or served[-1] != name
    return scope


# -- full() --------------------------------------------------------------------------------------


def test_full_is_false_with_room() -> None:
    """Below the limit, with nobody in line, a producer that cannot wait is accepted."""
    room, _ = make_room(3, queued=1)
    room.reserved = 1
    assert not room.full()


def test_full_at_the_limit_counts_queued_and_reserved() -> None:
    """full() once queued + reserved reaches the limit, whichever of the two fills it."""
    room, queue = make_room(3, queued=3)
    assert room.full()
    queue.queued = 2
    assert not room.full()
    room.reserved = 1
    assert room.full()
    queue.queued = 0
    room.reserved = 3
    assert room.full()
    queue.queued = 5  # over the limit (the limit is only enforced for waiters): still full
    room.reserved = 0
    assert room.full()


def test_empty_queue_has_room() -> None:
    """A room over the unbound pool's EmptyQueue counts nothing queued."""
    assert EmptyQueue().queued == 0
    assert not Room(1, EmptyQueue()).full()


async def test_full_while_someone_waits_even_if_room_appeared() -> None:
    """No overtaking: while a producer waits in line, full() stays true though room appeared."""
    room, queue = make_room(1, queued=1)
    served: list[str] = []
    with anyio.fail_after(60):  # fail, not hang, if a producer is stuck
        async with anyio.create_task_group() as tg:
            await join_line(tg, room, served, "a")
            queue.queued = 0  # room, but nobody called give() yet
            assert room.queue.queued + room.reserved < room.limit
            assert room.full()
            tg.cancel_scope.cancel()
    assert served == []


async def test_newcomer_queues_behind_the_line_though_room_appeared() -> None:
    """wait() does not take the fast path while someone waits: it joins the end of the line."""
    room, queue = make_room(1, queued=1)
    served: list[str] = []
    with anyio.fail_after(60):  # fail, not hang, if a producer is stuck
        async with anyio.create_task_group() as tg:
            await join_line(tg, room, served, "a")
            queue.queued = 0
            await join_line(tg, room, served, "b")  # asserts b waits rather than passing
            assert room.reserved == 0
            room.give()
            await settle()
            assert served == ["a"]
            tg.cancel_scope.cancel()


# -- wait(): the fast path -----------------------------------------------------------------------


async def test_wait_with_room_returns_at_once_and_reserves() -> None:
    """With room, wait() returns without waiting in line or for time, holding one reservation."""
    room, _ = make_room(2, queued=1)
    start = anyio.current_time()
    await room.wait()
    assert anyio.current_time() == start
    assert room.reserved == 1
    assert room.waiting == 0
    assert len(room._waiters) == 0
    assert room.full()  # the reservation counts: 1 queued + 1 reserved


async def test_wait_with_room_is_a_checkpoint() -> None:
    """wait() with room still checks for cancellation: a cancelled scope around it raises."""
    room, _ = make_room(5)
    reached = False
    with anyio.CancelScope() as scope:
        scope.cancel()
        await room.wait()
        reached = True
    assert scope.cancelled_caught
    assert not reached


async def test_fast_path_cancel_gives_the_reservation_back() -> None:
    """Cancelled at the fast path's checkpoint, the producer leaves no reservation behind."""
    room, _ = make_room(1)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await room.wait()
    assert scope.cancelled_caught
    assert room.reserved == 0
    assert not room.full()
    await room.wait()  # the room is free again
    assert room.reserved == 1


async def test_fast_path_cancel_hands_the_room_to_a_producer_behind() -> None:
    """A producer that queued behind a fast-path reservation gets it when that one is cancelled.

    Two producers are released in the same tick; the first one through (either, on trio) is
    cancelled at wait()'s checkpoint, after the second found the room reserved and queued.
    """
    room, _ = make_room(1)
    go = anyio.Event()
    served: list[str] = []
    cancelled: list[str] = []
    queued_behind: list[str] = []

    async def producer(name: str) -> None:
        with anyio.CancelScope() as scope:
            await go.wait()
            if room.reserved == 0 and room.waiting == 0:
                scope.cancel()  # first through: lands at wait()'s checkpoint
            else:
                queued_behind.append(name)
            await room.wait()
            served.append(name)
        if scope.cancelled_caught:
            cancelled.append(name)

    with anyio.fail_after(60):  # fail, not hang, if a producer is stuck
        async with anyio.create_task_group() as tg:
            tg.start_soon(producer, "a")
            tg.start_soon(producer, "b")
            await settle()
            go.set()
    assert len(cancelled) == 1
    assert queued_behind == served
    assert sorted(served + cancelled) == ["a", "b"]
    assert room.reserved == 1  # the survivor's
    assert room.waiting == 0


# -- claim() and forfeit() -----------------------------------------------------------------------


async def test_claim_turns_the_reservation_into_a_queued_job() -> None:
    """claim() drops the reservation (the queue counts the job now) and wakes nobody."""
    room, queue = make_room(1)
    served: list[str] = []
    with anyio.fail_after(60):  # fail, not hang, if a producer is stuck
        async with anyio.create_task_group() as tg:
            await room.wait()
            assert room.reserved == 1
            await join_line(tg, room, served, "b")
            queue.queued += 1  # the submission
            room.claim()
            assert room.reserved == 0
            assert room.full()
            await settle()
            assert served == []
            assert room.waiting == 1
            tg.cancel_scope.cancel()


async def test_forfeit_without_waiters_frees_the_room() -> None:
    """forfeit() with nobody in line drops the reservation: the room is free again."""
    room, _ = make_room(1)
    await room.wait()
    assert room.full()
    room.forfeit()
    assert room.reserved == 0
    assert not room.full()


async def test_forfeit_hands_the_room_to_the_next_waiter() -> None:
    """forfeit() gives the unused room to the first in line (the reservation becomes theirs)."""
    room, _ = make_room(1)
    served: list[str] = []
    with anyio.fail_after(60):  # fail, not hang, if a producer is stuck
        async with anyio.create_task_group() as tg:
            await room.wait()
            await join_line(tg, room, served, "b")
            await join_line(tg, room, served, "c")
            room.forfeit()
            assert room.reserved == 1
            assert room.waiting == 1
            await settle()
            assert served == ["b"]
            tg.cancel_scope.cancel()
    assert served == ["b"]


# -- give(): first come, first served ------------------------------------------------------------


async def test_waiters_are_served_first_come_first_served() -> None:
    """As room appears one job at a time, waiters get it in the order they asked."""
    room, queue = make_room(1, queued=1)
    served: list[str] = []
    names = ["a", "b", "c", "d"]
    with anyio.fail_after(60):  # fail, not hang, if a producer is stuck
        async with anyio.create_task_group() as tg:
            for name in names:
                await join_line(tg, room, served, name)
            for count, _ in enumerate(names, 1):
                queue.queued = 0  # the queued job started
                room.give()
                await settle()
                assert served == names[:count]
                queue.queued = 1  # the woken producer submitted
                room.claim()
    assert room.waiting == 0
    assert room.reserved == 0


async def test_give_wakes_only_as_many_as_there_is_room_for() -> None:
    """give() wakes waiters while queued + reserved < limit, and the rest keep waiting."""
    room, queue = make_room(3, queued=3)
    served: list[str] = []
    with anyio.fail_after(60):  # fail, not hang, if a producer is stuck
        async with anyio.create_task_group() as tg:
            for name in "abcde":
                await join_line(tg, room, served, name)
            room.give()  # no room: nobody
            await settle()
            assert served == []
            assert room.reserved == 0
            queue.queued = 1  # room for two
            room.give()
            assert room.reserved == 2
            assert room.waiting == 3
            await settle()
            assert sorted(served) == ["a", "b"]  # woken in the same tick: they run in any order
            queue.queued = 0  # one more
            room.give()
            await settle()
            assert served[2:] == ["c"]
            assert room.reserved == 3
            assert room.waiting == 2
            tg.cancel_scope.cancel()


async def test_same_tick_producers_cannot_overfill() -> None:
    """Producers passing wait() in the same tick reserve before yielding: never over the limit."""
    room, queue = make_room(2)
    go = anyio.Event()
    peak = 0
    submitted = 0

    async def producer() -> None:
        nonlocal peak, submitted
        await go.wait()
        await room.wait()
        queue.queued += 1  # submit...
        room.claim()  # ...and hand the reservation over to the queue
        submitted += 1
        peak = max(peak, queue.queued + room.reserved)

    with anyio.fail_after(60):  # fail, not hang, if a producer is stuck
        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(producer)
            await settle()
            go.set()
            await settle()
            assert submitted == 2
            assert queue.queued == 2
            assert room.reserved == 0
            assert room.waiting == 3
            tg.cancel_scope.cancel()
    assert peak == 2


# -- cancellation in line ------------------------------------------------------------------------


async def test_cancelled_waiter_leaves_the_count_at_once() -> None:
    """A producer cancelled in line stops counting as waiting at once; its event is abandoned."""
    room, _ = make_room(1, queued=1)
    served: list[str] = []
    with anyio.fail_after(60):  # fail, not hang, if a producer is stuck
        async with anyio.create_task_group() as tg:
            await join_line(tg, room, served, "a")
            b = await join_line(tg, room, served, "b")
            await join_line(tg, room, served, "c")
            b_event = room._waiters[1]
            b.cancel()
            await settle()
            assert b.cancelled_caught
            assert room.waiting == 2
            assert room._abandoned == {b_event}
            assert len(room._waiters) == 3  # left in place: skipped when reached
            assert not b_event.is_set()
            tg.cancel_scope.cancel()


async def test_cancelled_waiter_is_skipped_when_reached() -> None:
    """give() skips an abandoned waiter without waking it or spending room on it."""
    room, queue = make_room(1, queued=1)
    served: list[str] = []
    with anyio.fail_after(60):  # fail, not hang, if a producer is stuck
        async with anyio.create_task_group() as tg:
            await join_line(tg, room, served, "a")
            b = await join_line(tg, room, served, "b")
            await join_line(tg, room, served, "c")
            b_event = room._waiters[1]
            b.cancel()
            await settle()
            queue.queued = 0
            room.give()
            await settle()
            assert served == ["a"]
            room.claim()
            queue.queued = 1  # a submitted
            queue.queued = 0  # and its job started
            room.give()
            assert room.reserved == 1  # one room, for c: none spent on b
            await settle()
            assert served == ["a", "c"]
            assert not b_event.is_set()
            assert room.waiting == 0
            assert len(room._waiters) == 0
            assert not room._abandoned


async def test_last_waiter_leaving_empties_the_line() -> None:
    """When the last waiter is cancelled, the line keeps nothing: deque and abandoned set empty."""
    room, queue = make_room(1, queued=1)
    served: list[str] = []
    with anyio.fail_after(60):  # fail, not hang, if a producer is stuck
        async with anyio.create_task_group() as tg:
            a = await join_line(tg, room, served, "a")
            b = await join_line(tg, room, served, "b")
            a.cancel()
            await settle()
            assert room.waiting == 1
            assert len(room._abandoned) == 1
            b.cancel()
            await settle()
    assert a.cancelled_caught
    assert b.cancelled_caught
    assert room.waiting == 0
    assert len(room._waiters) == 0
    assert not room._abandoned
    queue.queued = 0
    assert not room.full()  # no stale waiter blocks the fast path


async def test_cancel_after_being_given_room_hands_it_on() -> None:
    """A waiter given room whose cancellation lands anyway passes the room to the next in line."""
    room, queue = make_room(1, queued=1)
    served: list[str] = []
    with anyio.fail_after(60):  # fail, not hang, if a producer is stuck
        async with anyio.create_task_group() as tg:
            a = await join_line(tg, room, served, "a")
            await join_line(tg, room, served, "b")
            a_event = room._waiters[0]
            queue.queued = 0
            a.cancel()  # delivered before a runs again...
            room.give()  # ...and a is given the room in the same tick
            assert a_event.is_set()
            assert room.reserved == 1
            await settle()
            assert a.cancelled_caught
            assert served == ["b"]
            assert room.reserved == 1  # b's now, not two
            assert room.waiting == 0
    assert served == ["b"]


# -- close() -------------------------------------------------------------------------------------


async def test_close_wakes_every_waiter_regardless_of_room() -> None:
    """close() marks the room closed and wakes the whole line, though it is full."""
    room, _ = make_room(1, queued=1)
    served: list[str] = []
    with anyio.fail_after(60):  # fail, not hang, if a producer is stuck
        async with anyio.create_task_group() as tg:
            for name in "abc":
                await join_line(tg, room, served, name)
            room.close()
            assert room.closed
            assert room.waiting == 0
            assert room.reserved == 3
            await settle()
            assert sorted(served) == ["a", "b", "c"]  # woken in the same tick: any order
    assert len(room._waiters) == 0


async def test_close_skips_abandoned_waiters() -> None:
    """close() wakes the waiters still in line, not the ones cancelled before."""
    room, _ = make_room(1, queued=1)
    served: list[str] = []
    with anyio.fail_after(60):  # fail, not hang, if a producer is stuck
        async with anyio.create_task_group() as tg:
            await join_line(tg, room, served, "a")
            b = await join_line(tg, room, served, "b")
            await join_line(tg, room, served, "c")
            b.cancel()
            await settle()
            room.close()
            assert room.reserved == 2
            await settle()
    assert sorted(served) == ["a", "c"]
    assert not room._abandoned


def test_close_without_waiters_only_marks_closed() -> None:
    """close() with an empty line sets closed and reserves nothing."""
    room, _ = make_room(1, queued=1)
    was_closed = room.closed
    room.close()
    assert not was_closed
    assert room.closed
    assert room.reserved == 0
    assert room.waiting == 0


async def test_wait_after_close_does_not_wait_in_line() -> None:
    """A producer that asks for room after close() is not kept waiting, room or not."""
    room, _ = make_room(1, queued=1)
    room.close()
    with anyio.move_on_after(10) as scope:
        await room.wait()
    assert not scope.cancelled_caught
    room.forfeit()  # the pool refuses it: the room it was given goes unused
    assert room.reserved == 0


async def test_the_line_keeps_no_abandoned_waiter_once_give_serves_the_last_one() -> None:
    """Waiters cancelled behind the last one served by give() are not kept."""
    room, queue = make_room(1, queued=1)
    async with anyio.create_task_group() as tg:
        scopes = []
        for _ in range(4):
            scope = anyio.CancelScope()
            scopes.append(scope)

            async def producer(scope: anyio.CancelScope = scope) -> None:
                with scope:
                    await room.wait()

            tg.start_soon(producer)
            await anyio.wait_all_tasks_blocked()
        for scope in scopes[1:]:
            scope.cancel()
        await anyio.wait_all_tasks_blocked()
        queue.queued = 0
        room.give()
    assert (room.waiting, room.reserved) == (0, 1)
    assert len(room._waiters) == 0
    assert not room._abandoned
