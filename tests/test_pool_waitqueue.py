"""WaitQueue: FIFO hand-off, deadlines on the loop's clock, abandon after a hand-off, failing waiters."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sanaa_async_mem.pools.waitqueue import WaitQueue

pytestmark = pytest.mark.both_loops


class Expired(Exception):
    pass


def queue() -> WaitQueue[Any]:
    return WaitQueue(asyncio.get_running_loop(), Expired)


async def outcome(fut: asyncio.Future[Any]) -> Any:
    try:
        return await fut
    except Exception as exc:
        return type(exc).__name__


async def test_values_go_to_the_oldest_waiter_first() -> None:
    q = queue()
    now = asyncio.get_running_loop().time()
    futs = [q.park(now + 60) for _ in range(5)]
    assert len(q) == q.waiting == 5
    for i in range(5):
        assert q.hand(i)
    assert [f.result() for f in futs] == [0, 1, 2, 3, 4]
    assert q.waiting == 0 and not q.hand("nobody")


async def test_a_hand_off_belongs_to_the_waiter_before_it_resumes() -> None:
    q = queue()
    fut = q.park(asyncio.get_running_loop().time() + 60)
    assert q.hand("obj")
    # No await in between: the value is already the waiter's, a second hand goes nowhere.
    assert fut.result() == "obj" and not q.hand("other")


async def test_deadlines_expire_in_order_with_one_shared_timer() -> None:
    loop = asyncio.get_running_loop()
    q = queue()
    now = loop.time()
    futs = [q.park(now + 0.02 * (i + 1)) for i in range(4)]
    assert q._reaper is not None  # one timer serves the growing deadlines
    results = await asyncio.gather(*(outcome(f) for f in futs))
    assert results == ["Expired"] * 4
    assert q.waiting == 0
    # Each timed out no earlier than its deadline on the loop's clock.
    assert loop.time() >= now + 0.08


async def test_a_shorter_deadline_behind_a_longer_one_fires_first() -> None:
    loop = asyncio.get_running_loop()
    q = queue()
    now = loop.time()
    slow = q.park(now + 60)
    fast = q.park(now + 0.02)
    assert await outcome(fast) == "Expired"
    assert not slow.done() and q.waiting == 1
    assert q.hand("x") and slow.result() == "x"


async def test_deadline_due_when_the_timer_fires_needs_no_fudge() -> None:
    # Waiters whose deadlines are all due by the time the reaper runs expire together, whatever the clock
    # says a moment later: the timer's own deadline decides, not a re-read of the clock.
    loop = asyncio.get_running_loop()
    q = queue()
    now = loop.time()
    futs = [q.park(now + 0.01) for _ in range(10)]
    await asyncio.gather(*(outcome(f) for f in futs))
    assert all(isinstance(f.exception(), Expired) for f in futs)


async def test_cancelled_waiter_leaves_and_the_next_one_is_served() -> None:
    q = queue()
    now = asyncio.get_running_loop().time()
    first, second = q.park(now + 60), q.park(now + 60)
    first.cancel()
    assert q.abandon(first) is False  # nothing was handed to it
    assert q.waiting == 1
    assert q.hand("x") and second.result() == "x"


async def test_abandon_after_a_hand_off_reports_the_value_to_pass_on() -> None:
    q = queue()
    now = asyncio.get_running_loop().time()
    first, second = q.park(now + 60), q.park(now + 60)
    assert q.hand("obj")
    assert q.abandon(first) is True and first.result() == "obj"  # the caller passes it on
    assert q.hand(first.result()) and second.result() == "obj"


async def test_abandon_after_a_timeout_or_failure_hands_nothing_back() -> None:
    q = queue()
    now = asyncio.get_running_loop().time()
    a = q.park(now + 0.01)
    b = q.park(now + 60)
    assert await outcome(a) == "Expired"
    assert q.abandon(a) is False
    assert q.fail_one(RuntimeError("down"))
    assert q.abandon(b) is False and q.waiting == 0


async def test_fail_all_gives_each_waiter_its_own_error_and_stops_the_timer() -> None:
    q = queue()
    now = asyncio.get_running_loop().time()
    futs = [q.park(now + 0.05) for _ in range(3)]
    assert q.fail_all(lambda: RuntimeError("closed")) == 3
    errors = [f.exception() for f in futs]
    assert all(isinstance(e, RuntimeError) for e in errors) and len({id(e) for e in errors}) == 3
    assert q._reaper is None and q.waiting == 0


async def test_a_task_cancelled_while_waiting_is_not_served_and_loses_nothing() -> None:
    q = queue()
    now = asyncio.get_running_loop().time()

    async def waiter() -> Any:
        fut = q.park(now + 60)
        try:
            return await fut
        except BaseException:
            if q.abandon(fut):
                q.hand(fut.result())
            raise

    a = asyncio.create_task(waiter())
    b = asyncio.create_task(waiter())
    await asyncio.sleep(0)
    q.hand("obj")  # to a, whose task is cancelled before it resumes: it must pass the value to b
    a.cancel()
    results = await asyncio.gather(a, b, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError) and results[1] == "obj"
    assert q.waiting == 0


async def test_departed_waiters_are_compacted_away() -> None:
    q = queue()
    now = asyncio.get_running_loop().time()
    futs = [q.park(now + 60) for _ in range(1000)]
    for f in futs[:-1]:
        f.cancel()
        q.abandon(f)
    assert q.waiting == 1 and len(q._waiters) <= 2 * q.waiting + 64 + 1
    assert q.hand("x") and futs[-1].result() == "x"


async def test_a_deadline_beyond_any_timer_is_never_reaped_but_served() -> None:
    q = queue()
    far = q.park(asyncio.get_running_loop().time() + 1e300)  # e.g. a timeout of 1e300 seconds
    assert q._reaper is None
    assert q.hand("x") and far.result() == "x"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["park", "park_short", "hand", "cancel", "fail"]), max_size=60))
def test_waiting_counts_exactly_the_live_waiters(ops: list[str]) -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        q: WaitQueue[int] = WaitQueue(loop, Expired)
        futs: list[asyncio.Future[int]] = []
        for i, op in enumerate(ops):
            now = loop.time()
            if op == "park":
                futs.append(q.park(now + 60))
            elif op == "park_short":
                futs.append(q.park(now + 30))
            elif op == "hand":
                q.hand(i)
            elif op == "fail":
                q.fail_one(RuntimeError())
            elif futs:
                live = [f for f in futs if not f.done()]
                if live:
                    live[0].cancel()
                    q.abandon(live[0])
            assert q.waiting == sum(not f.done() for f in futs)
        handed = [f.result() for f in futs if f.done() and not f.cancelled() and f.exception() is None]
        assert handed == sorted(handed)  # FIFO: earlier waiters got earlier values
        q.fail_all(RuntimeError)
        for f in futs:
            if f.done() and not f.cancelled():
                f.exception()

    asyncio.run(run())
