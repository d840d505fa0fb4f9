"""AsyncPool: every rule of the pool, on asyncio and on uvloop."""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import random
from collections.abc import Callable
from typing import Any

import pytest

from sanaa_async_mem.errors import (
    ConfigurationError,
    PoolClosed,
    PoolError,
    PoolExhausted,
    PoolTimeout,
)
from sanaa_async_mem.pools.pool import AsyncPool

pytestmark = pytest.mark.both_loops


class Conn:
    """A stand-in for an expensive object: numbered, with a closed flag."""

    _ids = itertools.count(1)

    def __init__(self) -> None:
        self.id = next(self._ids)
        self.closed = False
        self.resets = 0

    def __repr__(self) -> str:
        return f"Conn({self.id})"


class Factory:
    """Counts calls; can fail, be slow, or block until released."""

    def __init__(self, *, fail_rate: float = 0.0, delay: float = 0.0, seed: int = 0) -> None:
        self.made: list[Conn] = []
        self.calls = 0
        self.fail_rate = fail_rate
        self.delay = delay
        self.rng = random.Random(seed)
        self.gate: asyncio.Event | None = None

    async def __call__(self) -> Conn:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_rate and self.rng.random() < self.fail_rate:
            raise ConnectionRefusedError("backend down")
        conn = Conn()
        self.made.append(conn)
        return conn


def close_conn(conn: Conn) -> None:
    assert not conn.closed, f"{conn} closed twice"
    conn.closed = True


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    """Yield to the loop until ``cond()`` holds (event-driven tests, no fixed sleeps)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.001)


def assert_books_balance(pool: AsyncPool[Any]) -> None:
    s = pool.stats()
    assert s.created - s.closed == s.idle + s.in_use + s.returning, s
    assert s.size == s.idle + s.in_use + s.creating + s.returning <= s.max_size, s


# ---------------------------------------------------------------- basics


async def test_acquire_hands_out_and_takes_back() -> None:
    factory = Factory()
    async with AsyncPool(factory, max_size=2, close=close_conn) as pool:
        async with pool.acquire() as a:
            assert isinstance(a, Conn)
            assert pool.stats().in_use == 1
        async with pool.acquire() as b:
            assert b is a  # reused, not re-created
        assert factory.calls == 1
        s = pool.stats()
        assert (s.acquired, s.created, s.idle, s.in_use) == (2, 1, 1, 0)
        assert s.use.count == 2 and s.wait.count == 2
    assert a.closed
    assert pool.closed


async def test_get_and_put() -> None:
    async with AsyncPool(Factory(), max_size=1) as pool:
        obj = await pool.get()
        assert pool.stats().in_use == 1
        await pool.put(obj)
        assert pool.stats().idle == 1
        assert await pool.get() is obj
        await pool.put(obj)


async def test_sync_factory_and_hooks() -> None:
    closed: list[Conn] = []
    pool: AsyncPool[Conn] = AsyncPool(Conn, max_size=1, check=lambda c: True, close=closed.append)
    async with pool:
        async with pool.acquire() as conn:
            pool.mark_broken(conn)
        await until(lambda: closed == [conn])


async def test_min_size_is_prewarmed_on_open() -> None:
    factory = Factory()
    async with AsyncPool(factory, min_size=3, max_size=5) as pool:
        assert factory.calls == 3
        assert pool.stats().idle == 3


async def test_open_fails_fast_and_leaks_nothing_when_prewarm_fails() -> None:
    made: list[Conn] = []
    calls = itertools.count()

    async def factory() -> Conn:
        if next(calls) == 1:
            raise ConnectionRefusedError("down")
        conn = Conn()
        made.append(conn)
        return conn

    pool = AsyncPool(factory, min_size=3, max_size=3, close=close_conn)
    with pytest.raises(ConnectionRefusedError):
        await pool.open()
    assert pool.closed
    await until(lambda: all(c.closed for c in made))
    assert len(made) == 2


async def test_open_without_wait_refills_in_background_with_backoff() -> None:
    factory = Factory(fail_rate=1.0)
    pool = AsyncPool(factory, min_size=2, max_size=2, maintenance_interval=0.01)
    await pool.open(wait=False)
    try:
        # Each failure is booked by the creation task's done-callback, one loop step after the call.
        await until(lambda: pool.stats().errors >= 3)
        assert factory.calls >= 3
        factory.fail_rate = 0.0
        await until(lambda: pool.stats().idle == 2)
    finally:
        await pool.close()


async def test_async_with_reenters_an_open_pool_as_noop_and_refuses_reopen() -> None:
    pool = AsyncPool(Factory(), max_size=1)
    await pool.open()
    await pool.open()  # no-op
    await pool.close()
    await pool.close()  # idempotent
    with pytest.raises(PoolClosed):
        await pool.open()


# ---------------------------------------------------------------- fairness


async def test_waiters_are_served_in_arrival_order() -> None:
    async with AsyncPool(Factory(), max_size=1) as pool:
        holder = await pool.get()
        order: list[int] = []

        async def waiter(i: int) -> None:
            async with pool.acquire():
                order.append(i)

        tasks = []
        for i in range(10):
            tasks.append(asyncio.create_task(waiter(i)))
            await asyncio.sleep(0)  # let it enqueue before the next one
        await until(lambda: pool.stats().waiting == 10)
        await pool.put(holder)
        await asyncio.gather(*tasks)
        assert order == list(range(10))


async def test_releasing_task_cannot_barge_ahead_of_waiters() -> None:
    async with AsyncPool(Factory(), max_size=1) as pool:
        obj = await pool.get()
        got: list[str] = []

        async def waiter() -> None:
            async with pool.acquire():
                got.append("waiter")

        task = asyncio.create_task(waiter())
        await until(lambda: pool.stats().waiting == 1)
        await pool.put(obj)
        # Re-acquire at once, without yielding first: the object already belongs to the waiter.
        async with pool.acquire():
            got.append("releaser")
        await task
        assert got == ["waiter", "releaser"]


async def test_cancelled_waiter_hands_object_to_next_waiter() -> None:
    async with AsyncPool(Factory(), max_size=1) as pool:
        obj = await pool.get()
        results: dict[str, object] = {}

        async def waiter(name: str) -> None:
            async with pool.acquire() as o:
                results[name] = o

        first = asyncio.create_task(waiter("first"))
        await until(lambda: pool.stats().waiting == 1)
        second = asyncio.create_task(waiter("second"))
        await until(lambda: pool.stats().waiting == 2)
        # Hand the object to `first`, then cancel it before it can resume: it must pass the object on.
        await pool.put(obj)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        await second
        assert results == {"second": obj}
        assert_books_balance(pool)
        assert pool.stats().idle == 1


async def test_timed_out_waiter_gets_pool_timeout_and_leaves_no_trace() -> None:
    async with AsyncPool(Factory(), max_size=1, timeout=0.05) as pool:
        obj = await pool.get()
        with pytest.raises(PoolTimeout, match="no object became available"):
            await pool.get()
        with pytest.raises(PoolTimeout):
            async with pool.acquire(timeout=0.01):
                pass
        s = pool.stats()
        assert (s.timeouts, s.waiting) == (2, 0)
        await pool.put(obj)
        assert pool.stats().idle == 1


async def test_pool_timeout_is_a_timeout_error() -> None:
    async with AsyncPool(Factory(), max_size=1, timeout=0.01) as pool:
        held = await pool.get()
        with pytest.raises(TimeoutError):
            await pool.get()
        await pool.put(held)


async def test_shorter_per_call_timeout_behind_a_longer_one_fires_first() -> None:
    async with AsyncPool(Factory(), max_size=1, timeout=30) as pool:
        held = await pool.get()
        slow = asyncio.create_task(pool.get(timeout=30))
        await until(lambda: pool.stats().waiting == 1)
        with pytest.raises(PoolTimeout):
            await pool.get(timeout=0.02)
        assert not slow.done()
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        assert pool.stats().waiting == 0
        await pool.put(held)


async def test_waiters_with_default_timeout_all_time_out() -> None:
    async with AsyncPool(Factory(), max_size=1, timeout=0.05) as pool:
        held = await pool.get()
        results = await asyncio.gather(*(pool.get() for _ in range(20)), return_exceptions=True)
        assert all(isinstance(r, PoolTimeout) for r in results)
        assert pool.stats().timeouts == 20
        assert pool.stats().waiting == 0
        await pool.put(held)


async def test_max_waiting_refuses_at_once() -> None:
    async with AsyncPool(Factory(), max_size=1, max_waiting=2) as pool:
        held = await pool.get()
        waiters = [asyncio.create_task(pool.get()) for _ in range(2)]
        await until(lambda: pool.stats().waiting == 2)
        with pytest.raises(PoolExhausted, match="max_waiting=2"):
            await pool.get()
        assert pool.stats().exhausted == 1
        for w in waiters:
            w.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
        assert pool.stats().waiting == 0
        await pool.put(held)


# ---------------------------------------------------------------- cancellation


async def test_holder_cancelled_inside_block_returns_the_object() -> None:
    async with AsyncPool(Factory(), max_size=1) as pool:
        entered = asyncio.Event()

        async def holder() -> None:
            async with pool.acquire():
                entered.set()
                await asyncio.sleep(3600)

        task = asyncio.create_task(holder())
        await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pool.stats().idle == 1 and pool.stats().in_use == 0


async def test_cancel_during_reset_still_returns_the_object() -> None:
    reset_started = asyncio.Event()
    reset_may_finish = asyncio.Event()

    async def reset(conn: Conn) -> None:
        reset_started.set()
        await reset_may_finish.wait()
        conn.resets += 1

    async with AsyncPool(Factory(), max_size=1, reset=reset) as pool:

        async def holder() -> None:
            async with pool.acquire():
                pass

        task = asyncio.create_task(holder())
        await reset_started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pool.stats().returning == 1
        reset_may_finish.set()
        await until(lambda: pool.stats().idle == 1)
        async with pool.acquire() as conn:
            assert conn.resets == 1
        assert_books_balance(pool)


async def test_plain_reset_returns_the_object_without_a_task() -> None:
    seen: list[Conn] = []
    async with AsyncPool(Factory(), max_size=1, reset=seen.append) as pool:
        async with pool.acquire() as conn:
            pass
        # No await happened on the way back: the object is idle at once and no task was started.
        assert seen == [conn]
        assert pool.stats().idle == 1 and not [t for t in pool._tasks if not t.done()]


async def test_reset_returning_an_awaitable_is_awaited_shielded() -> None:
    done: list[Conn] = []

    def reset(conn: Conn) -> Any:
        async def rollback() -> None:
            await asyncio.sleep(0)
            done.append(conn)

        return rollback() if conn.id % 2 else None

    async with AsyncPool(Factory(), max_size=1, reset=reset) as pool:
        async with pool.acquire() as conn:
            pass
        await until(lambda: pool.stats().idle == 1)
        assert done == ([conn] if conn.id % 2 else [])
        assert_books_balance(pool)


async def test_failing_reset_discards_the_object() -> None:
    def reset(conn: Conn) -> None:
        raise RuntimeError("dirty")

    factory = Factory()
    async with AsyncPool(factory, max_size=1, reset=reset, close=close_conn) as pool:
        async with pool.acquire() as first:
            pass
        assert first.closed or await _eventually(lambda: first.closed)
        async with pool.acquire() as second:
            assert second is not first
        assert pool.stats().discarded == 2


async def _eventually(cond: Callable[[], bool]) -> bool:
    await until(cond)
    return True


async def test_cancel_during_check_discards_object_and_frees_slot() -> None:
    check_started = asyncio.Event()

    async def check(conn: Conn) -> bool:
        check_started.set()
        await asyncio.sleep(3600)
        return True

    factory = Factory()
    async with AsyncPool(factory, max_size=1, check=check, check_skip_within=0, close=close_conn) as pool:
        # Make an object, return it, then block in the check of the next acquire.
        obj = await pool.get()
        await pool.put(obj)
        task = asyncio.create_task(pool.get())
        await check_started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await until(lambda: obj.closed)
        s = pool.stats()
        assert (s.in_use, s.idle, s.size, s.discarded) == (0, 0, 0, 1)


async def test_cancel_while_factory_runs_keeps_the_new_object() -> None:
    factory = Factory()
    factory.gate = asyncio.Event()
    async with AsyncPool(factory, max_size=1) as pool:
        task = asyncio.create_task(pool.get())
        await until(lambda: factory.calls == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pool.stats().creating == 1
        factory.gate.set()
        await until(lambda: pool.stats().idle == 1)
        assert factory.calls == 1
        assert_books_balance(pool)


async def test_outer_wait_for_timeout_loses_nothing() -> None:
    async with AsyncPool(Factory(), max_size=2) as pool:
        held = [await pool.get(), await pool.get()]
        for _ in range(50):
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(pool.get(), 0.001)
        for obj in held:
            await pool.put(obj)
        assert pool.stats().idle == 2 and pool.stats().waiting == 0


async def test_cancellation_storm_loses_nothing() -> None:
    rng = random.Random(1234)
    factory = Factory(delay=0.0005, fail_rate=0.1, seed=7)
    pool = AsyncPool(factory, max_size=8, timeout=0.05, close=close_conn, reset=lambda c: None)
    held_now: set[int] = set()

    async def worker() -> None:
        for _ in range(5):
            try:
                async with pool.acquire() as conn:
                    assert conn.id not in held_now, "handed out twice"
                    held_now.add(conn.id)
                    try:
                        await asyncio.sleep(rng.random() * 0.002)
                    finally:
                        held_now.discard(conn.id)
            except (PoolTimeout, ConnectionRefusedError):
                pass

    async with pool:
        tasks = [asyncio.create_task(worker()) for _ in range(2000)]
        for _ in range(300):
            await asyncio.sleep(rng.random() * 0.002)
            for t in rng.sample(tasks, 8):
                t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await until(lambda: pool.stats().creating == 0 and pool.stats().returning == 0)
        assert_books_balance(pool)
        s = pool.stats()
        assert s.in_use == 0 and s.waiting == 0
        # Full capacity can be taken at once, with nothing extra created beyond max_size.
        everything = [await pool.get(timeout=5) for _ in range(pool.max_size)]
        assert len({id(o) for o in everything}) == pool.max_size
        for obj in everything:
            await pool.put(obj)
    alive = [c for c in factory.made if not c.closed]
    assert alive == []


# ---------------------------------------------------------------- creation failures


async def test_factory_error_reaches_the_caller_and_capacity_is_restored() -> None:
    factory = Factory(fail_rate=1.0)
    async with AsyncPool(factory, max_size=2) as pool:
        with pytest.raises(ConnectionRefusedError):
            await pool.get()
        s = pool.stats()
        assert (s.errors, s.size, s.creating) == (1, 0, 0)
        factory.fail_rate = 0.0
        a, b = await pool.get(), await pool.get()
        assert a is not b
        await pool.put(a)
        await pool.put(b)


async def test_thirty_percent_factory_failures() -> None:
    factory = Factory(fail_rate=0.3, seed=3)
    ok = failed = 0
    async with AsyncPool(factory, max_size=5, close=close_conn) as pool:

        async def worker() -> None:
            nonlocal ok, failed
            for _ in range(10):
                try:
                    async with pool.acquire() as conn:
                        pool.mark_broken(conn)  # force a new creation every time
                        await asyncio.sleep(0)
                    ok += 1
                except ConnectionRefusedError:
                    failed += 1

        await asyncio.gather(*(worker() for _ in range(20)))
        assert ok + failed == 200
        assert failed > 0 and ok > 0
        await until(lambda: pool.stats().creating == 0)
        assert_books_balance(pool)
        assert pool.stats().size == 0
        factory.fail_rate = 0.0
        full = [await pool.get() for _ in range(5)]
        assert len(set(map(id, full))) == 5
        for obj in full:
            await pool.put(obj)
    assert pool.stats().errors == failed


async def test_create_timeout_is_a_pool_timeout() -> None:
    factory = Factory()
    factory.gate = asyncio.Event()
    async with AsyncPool(factory, max_size=1, create_timeout=0.02) as pool:
        with pytest.raises(PoolTimeout, match="create_timeout"):
            await pool.get()
        assert pool.stats().size == 0


# ---------------------------------------------------------------- health: check, lifetime, idle


async def test_failing_check_discards_and_caller_gets_a_fresh_object() -> None:
    healthy: dict[int, bool] = {}

    def check(conn: Conn) -> bool:
        return healthy.get(conn.id, True)

    async with AsyncPool(Factory(), max_size=2, check=check, check_skip_within=0, close=close_conn) as pool:
        first = await pool.get()
        await pool.put(first)
        healthy[first.id] = False
        second = await pool.get()
        assert second is not first
        assert first.closed or await _eventually(lambda: first.closed)
        assert pool.stats().discarded == 1
        await pool.put(second)


async def test_check_is_skipped_for_recently_used_objects() -> None:
    calls = 0

    def check(conn: Conn) -> bool:
        nonlocal calls
        calls += 1
        return True

    async with AsyncPool(Factory(), max_size=1, check=check, check_skip_within=60) as pool:
        for _ in range(5):
            async with pool.acquire():
                pass
        assert calls == 0


async def test_check_raising_counts_as_failed() -> None:
    async def check(conn: Conn) -> bool:
        raise OSError("connection reset")

    factory = Factory()
    async with AsyncPool(factory, max_size=1, check=check, check_skip_within=0) as pool:
        obj = await pool.get()
        await pool.put(obj)
        fresh = await pool.get()  # the old one fails its check; a new one is made (not checked)
        assert fresh is not obj
        assert factory.calls == 2
        await pool.put(fresh)


async def test_max_lifetime_replaces_old_objects() -> None:
    async with AsyncPool(Factory(), max_size=1, max_lifetime=0.05, lifetime_jitter=0) as pool:
        first = await pool.get()
        await pool.put(first)
        await asyncio.sleep(0.08)
        second = await pool.get()
        assert second is not first
        assert pool.stats().expired == 1
        await pool.put(second)


async def test_expired_object_is_dropped_on_return() -> None:
    async with AsyncPool(Factory(), max_size=1, max_lifetime=0.03, lifetime_jitter=0) as pool:
        obj = await pool.get()
        await asyncio.sleep(0.05)
        await pool.put(obj)
        assert pool.stats().idle == 0 and pool.stats().expired == 1


async def test_lifetime_jitter_spreads_expiry() -> None:
    async with AsyncPool(Factory(), min_size=20, max_size=20, max_lifetime=100, lifetime_jitter=0.2) as pool:
        expiries = sorted(e.expires_at - e.created_at for e in pool._idle)
    assert 80 <= expiries[0] < expiries[-1] <= 100


async def test_max_idle_trims_down_to_min_size() -> None:
    factory = Factory()
    async with AsyncPool(
        factory, min_size=1, max_size=4, max_idle=0.05, maintenance_interval=0.01, close=close_conn
    ) as pool:
        objs = [await pool.get() for _ in range(4)]
        for o in objs:
            await pool.put(o)
        assert pool.stats().idle == 4
        await until(lambda: pool.stats().idle == 1)
        await until(lambda: sum(c.closed for c in objs) == 3)


async def test_trim_idle_closes_cold_objects_but_keeps_min_size() -> None:
    async with AsyncPool(Factory(), min_size=1, max_size=4, close=close_conn) as pool:
        objs = [await pool.get() for _ in range(4)]
        for o in objs:
            await pool.put(o)
        assert pool.trim_idle(older_than=3600) == 0  # none is that old
        assert pool.trim_idle() == 3  # min_size=1 keeps one
        await until(lambda: sum(c.closed for c in objs) == 3)
        assert pool.stats().idle == 1 and pool.stats().expired == 3
        held = await pool.get()  # checked-out objects are never trimmed, and count toward min_size
        await pool.put(await pool.get())
        assert pool.trim_idle() == 1
        assert not held.closed and pool.stats().in_use == 1
        await pool.put(held)
        with pytest.raises(ConfigurationError, match="older_than=-1"):
            pool.trim_idle(older_than=-1)


async def test_discarded_objects_are_refilled_to_min_size() -> None:
    factory = Factory()
    async with AsyncPool(factory, min_size=2, max_size=2) as pool:
        a = await pool.get()
        await pool.put(a, discard=True)
        await until(lambda: pool.stats().idle == 2)
        assert factory.calls == 3


async def test_drain_replaces_every_object() -> None:
    factory = Factory()
    async with AsyncPool(factory, min_size=2, max_size=3, close=close_conn) as pool:
        held = await pool.get()
        before = list(factory.made)
        await pool.drain()
        await until(lambda: pool.stats().idle >= 1)
        assert all(c.closed for c in before if c is not held)
        await pool.put(held)
        assert held.closed or await _eventually(lambda: held.closed)
        await until(lambda: pool.stats().idle == 2)
        assert all(not e.obj.closed for e in pool._idle)


async def test_discard_on_exception_types() -> None:
    async with AsyncPool(Factory(), max_size=1, discard_on=(ConnectionResetError,)) as pool:
        with pytest.raises(ConnectionResetError):
            async with pool.acquire():
                raise ConnectionResetError
        assert pool.stats().discarded == 1
        with pytest.raises(KeyError):
            async with pool.acquire():
                raise KeyError("app error, object is fine")
        assert pool.stats().idle == 1


# ---------------------------------------------------------------- closing


async def test_close_fails_waiters_closes_idle_and_returned_objects() -> None:
    factory = Factory()
    pool = AsyncPool(factory, max_size=3, close=close_conn)
    await pool.open()
    a, b, c = await pool.get(), await pool.get(), await pool.get()
    await pool.put(c)  # idle
    c_again = await pool.get()
    assert c_again is c
    got: list[Conn] = []
    give_back = asyncio.Event()

    async def waiter() -> None:
        obj = await pool.get()
        got.append(obj)
        await give_back.wait()
        await pool.put(obj)  # the task that took it gives it back

    waiters = [asyncio.create_task(waiter()) for _ in range(2)]
    await until(lambda: pool.stats().waiting == 2)
    await pool.put(c)  # goes to the first waiter, who keeps it
    closing = asyncio.create_task(pool.close(timeout=5))
    await until(waiters[1].done)
    assert got == [c]
    assert isinstance(waiters[1].exception(), PoolClosed)
    await asyncio.sleep(0.01)
    assert not closing.done()  # still waiting for a, b and c
    for obj in (a, b):
        await pool.put(obj)
    give_back.set()
    await closing
    await waiters[0]
    assert a.closed and b.closed and c.closed
    with pytest.raises(PoolClosed):
        await pool.get()
    with pytest.raises(PoolClosed):
        async with pool.acquire():
            pass


async def test_close_timeout_logs_objects_still_out(caplog: pytest.LogCaptureFixture) -> None:
    pool = AsyncPool(Factory(), max_size=1, close=close_conn, held_warning=60)
    await pool.open()
    obj = await pool.get()
    with caplog.at_level(logging.WARNING, logger="sanaa.pool"):
        await pool.close(timeout=0.05)
    record = next(r for r in caplog.records if getattr(r, "sanaa_event", "") == "close_timeout")
    assert "still held" in record.getMessage()
    assert "test_close_timeout_logs_objects_still_out" in record.getMessage()  # acquiring stack
    await pool.put(obj)  # coming back after close: closed, not pooled
    assert obj.closed or await _eventually(lambda: obj.closed)


async def test_held_too_long_warning_has_the_acquiring_stack(caplog: pytest.LogCaptureFixture) -> None:
    async with AsyncPool(Factory(), max_size=1, held_warning=0.02) as pool:
        with caplog.at_level(logging.WARNING, logger="sanaa.pool"):
            async with pool.acquire():
                await until(lambda: pool.stats().held_too_long == 1)
        record = next(r for r in caplog.records if getattr(r, "sanaa_event", "") == "held_too_long")
        assert "test_held_too_long_warning_has_the_acquiring_stack" in record.getMessage()
        assert record.sanaa_pool == pool.name


async def test_nested_acquire_times_out_with_a_hint() -> None:
    async with AsyncPool(Factory(), max_size=1, timeout=0.02, held_warning=60) as pool, pool.acquire():
        with pytest.raises(PoolTimeout, match="nested acquire"):
            async with pool.acquire():
                pass


# ---------------------------------------------------------------- misuse and bad input


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"max_size": 0}, "max_size"),
        ({"max_size": -1}, "max_size"),
        ({"min_size": 5, "max_size": 2}, "min_size"),
        ({"min_size": -1}, "min_size"),
        ({"timeout": -1}, "timeout"),
        ({"create_timeout": 0}, "create_timeout"),
        ({"hook_timeout": float("nan")}, "hook_timeout"),
        ({"max_lifetime": -5}, "max_lifetime"),
        ({"lifetime_jitter": 1.5}, "lifetime_jitter"),
        ({"max_idle": 0}, "max_idle"),
        ({"max_waiting": -1}, "max_waiting"),
        ({"max_creating": 0}, "max_creating"),
        ({"check": "yes"}, "check"),
        ({"reset": 3}, "reset"),
        ({"close": object()}, "close"),
        ({"discard_on": ValueError}, "discard_on"),
        ({"discard_on": (int,)}, "discard_on"),
        ({"held_warning": -1}, "held_warning"),
        ({"check_skip_within": -1}, "check_skip_within"),  # validated with or without a check hook
        ({"check_skip_within": -1, "check": bool}, "check_skip_within"),
        ({"maintenance_interval": 0}, "maintenance_interval"),
    ],
)
async def test_bad_configuration_names_the_parameter(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        AsyncPool(Conn, **kwargs)
    assert info.value.name == name
    assert isinstance(info.value, ValueError)


async def test_non_callable_factory() -> None:
    with pytest.raises(ConfigurationError, match="factory"):
        AsyncPool("not callable")  # type: ignore[arg-type]


async def test_negative_per_call_timeout() -> None:
    async with AsyncPool(Conn, max_size=1) as pool:
        with pytest.raises(ConfigurationError, match="timeout=-1"):
            pool.acquire(timeout=-1)
        with pytest.raises(ConfigurationError, match="timeout=-1"):
            await pool.get(timeout=-1)
        assert pool.stats().acquired == 0


async def test_put_of_foreign_or_returned_object_changes_nothing() -> None:
    async with AsyncPool(Conn, max_size=2) as pool:
        obj = await pool.get()
        before = pool.stats()
        with pytest.raises(PoolError, match="not checked out"):
            await pool.put(Conn())
        assert pool.stats() == before
        await pool.put(obj)
        before = pool.stats()
        with pytest.raises(PoolError, match="not checked out"):
            await pool.put(obj)
        assert pool.stats() == before
        with pytest.raises(PoolError, match="not checked out"):
            pool.mark_broken(obj)


async def test_put_inside_async_with_is_reported_at_exit() -> None:
    async with AsyncPool(Conn, max_size=1) as pool:
        with pytest.raises(PoolError, match="already returned"):
            async with pool.acquire() as obj:
                await pool.put(obj)
        assert pool.stats().idle == 1 and pool.stats().in_use == 0


async def test_stale_lease_cannot_return_an_object_someone_else_holds() -> None:
    async with AsyncPool(Conn, max_size=1) as pool:
        lease = pool.acquire()
        obj = await lease.__aenter__()
        await pool.put(obj)  # returned behind the lease's back
        again = await pool.get()  # now somebody else holds it
        assert again is obj
        with pytest.raises(PoolError, match="already returned"):
            await lease.__aexit__(None, None, None)
        assert pool.stats().in_use == 1  # the real holder keeps it
        await pool.put(again)


async def test_awaiting_acquire_fails_with_a_hint() -> None:
    async with AsyncPool(Conn, max_size=1) as pool:
        with pytest.raises(TypeError, match=r"async with pool\.acquire\(\)"):
            await pool.acquire()  # type: ignore[misc]
        assert pool.stats().acquired == 0 and pool.stats().in_use == 0


async def test_acquire_before_open() -> None:
    pool = AsyncPool(Conn)
    with pytest.raises(PoolError, match="not open"):
        await pool.get()
    with pytest.raises(PoolError, match="not open"):
        async with pool.acquire():
            pass


def test_pool_is_bound_to_its_loop() -> None:
    pool: AsyncPool[Conn] = AsyncPool(Conn, min_size=1, max_size=1)

    async def first() -> None:
        await pool.open()

    async def second() -> None:
        with pytest.raises(PoolError, match="another loop"):
            async with pool.acquire():
                pass
        with pytest.raises(PoolError, match="another loop"):
            await pool.get()

    asyncio.run(first())
    asyncio.run(second())


async def test_pop_stats_resets_counters_not_sizes() -> None:
    async with AsyncPool(Conn, max_size=2) as pool:
        async with pool.acquire():
            pass
        first = pool.pop_stats()
        assert first.acquired == 1 and first.created == 1
        second = pool.stats()
        assert second.acquired == 0 and second.created == 0 and second.idle == 1
        assert second.wait.count == 0


async def test_wait_and_use_times_are_all_counted_across_bulk_folds() -> None:
    from sanaa_async_mem.pools import pool as pool_module

    rounds = pool_module._FOLD_AT * 2 + 7  # crosses the bulk folding of samples twice, with some left over
    async with AsyncPool(Conn, max_size=2) as pool:

        async def user() -> None:
            for _ in range(rounds):
                async with pool.acquire():
                    await asyncio.sleep(0)

        await asyncio.gather(user(), user(), user())  # 3 users, 2 objects: some acquires wait
        stats = pool.stats()
    assert stats.acquired == 3 * rounds
    assert stats.use.count == 3 * rounds
    assert stats.wait.count == 3 * rounds  # waits, plus the immediate ones counted as 0 s
    assert 0 < stats.wait.max < 5.0 and stats.wait.p50 >= 0.0


async def test_a_waiters_wait_ends_when_the_object_is_handed_over() -> None:
    async with AsyncPool(Conn, max_size=1) as pool:
        holder = await pool.get()

        async def waiter() -> None:
            async with pool.acquire():
                pass

        task = asyncio.create_task(waiter())
        await asyncio.sleep(0.05)  # the waiter waits ~50 ms
        await pool.put(holder)  # hand-over to the waiter
        await task
        wait = pool.stats().wait
    assert wait.count == 2  # the immediate get() (0 s) and the waiter
    assert 0.04 <= wait.max < 5.0


async def test_stats_as_dict_is_plain_json() -> None:
    import json

    async with AsyncPool(Conn, max_size=2, name="db") as pool:
        async with pool.acquire():
            pass
        data = pool.stats().as_dict()
    assert data["name"] == "db"
    assert data["wait"]["count"] == 1
    json.dumps(data)


async def test_repr_mentions_name_and_sizes() -> None:
    async with AsyncPool(Conn, max_size=3, name="cache") as pool:
        assert "cache" in repr(pool) and "0/3" in repr(pool)


async def test_no_reference_cycles_keep_a_closed_pool_alive() -> None:
    import weakref

    pool = AsyncPool(Conn, min_size=1, max_size=2)
    async with pool, pool.acquire():
        pass
    ref = weakref.ref(pool)
    del pool
    gc.collect()
    assert ref() is None


# ---------------------------------------------------------------- issue-13 faults: leases, threads, close


async def test_alive_replaces_a_dead_idle_object_even_when_the_check_is_skipped() -> None:
    checks: list[Conn] = []
    factory = Factory()

    def check(conn: Conn) -> bool:
        checks.append(conn)
        return True

    def alive(conn: Conn) -> bool:
        return not conn.closed

    async with AsyncPool(
        factory, max_size=1, check=check, check_skip_within=60, alive=alive, close=close_conn
    ) as pool:
        async with pool.acquire() as first:
            pass
        first.closed = True  # e.g. the server closed the connection while it sat idle
        async with pool.acquire() as second:
            assert second is not first and not second.closed
        assert checks == []  # used a moment ago: the full check was skipped, the cheap test was not
        assert pool.stats().discarded == 1


async def test_alive_that_raises_counts_as_dead() -> None:
    def alive(conn: Conn) -> bool:
        raise RuntimeError("driver state unreadable")

    async with AsyncPool(Factory(), max_size=1, alive=alive) as pool:
        async with pool.acquire() as first:
            pass
        async with pool.acquire() as second:
            assert second is not first
        assert pool.stats().discarded == 1


async def test_a_stale_put_cannot_return_an_object_another_task_now_holds() -> None:
    async with AsyncPool(Factory(), max_size=1, timeout=0.05) as pool:
        a = await pool.get()
        await pool.put(a)
        b_taken = asyncio.Event()
        b_done = asyncio.Event()
        held: list[Conn] = []

        async def other_task() -> None:
            held.append(await pool.get())  # the same object, now held by this task
            b_taken.set()
            await b_done.wait()
            await pool.put(held[0])

        task = asyncio.create_task(other_task())
        await b_taken.wait()
        assert held == [a]
        with pytest.raises(PoolError, match="held by task"):
            await pool.put(a)  # stale: accepted before, handing b's object to the next caller
        # A third caller must not be handed the object its holder still uses.
        with pytest.raises(PoolTimeout):
            await pool.get()
        assert pool.stats().in_use == 1
        b_done.set()
        await task
        assert pool.stats().idle == 1


async def test_put_close_expire_all_and_friends_from_another_thread_are_refused() -> None:
    async with AsyncPool(Conn, max_size=2, timeout=30) as pool:
        obj, other = await pool.get(), await pool.get()

        async def wait_for_one() -> Conn:
            async with pool.acquire() as got:
                return got

        waiter = asyncio.create_task(wait_for_one())  # waits on the pool's loop; must not be touched
        await until(lambda: pool.stats().waiting == 1)
        outcomes: dict[str, BaseException | None] = {}

        def foreign() -> None:
            calls: dict[str, Callable[[], Any]] = {
                "put": lambda: asyncio.run(pool.put(obj)),
                "close": lambda: asyncio.run(pool.close()),
                "drain": lambda: asyncio.run(pool.drain()),
                "expire_all": pool.expire_all,
                "trim_idle": pool.trim_idle,
                "mark_broken": lambda: pool.mark_broken(obj),
            }
            for name, call in calls.items():
                try:
                    call()
                    outcomes[name] = None
                except BaseException as exc:
                    outcomes[name] = exc

        await asyncio.to_thread(foreign)
        assert len(outcomes) == 6
        for name, exc in outcomes.items():
            assert isinstance(exc, PoolError), (name, exc)
            assert "another thread" in str(exc), (name, exc)
        s = pool.stats()
        assert (s.in_use, s.waiting, s.expired, s.discarded, pool.state) == (2, 1, 0, 0, "open")
        await pool.put(obj)  # from the pool's own loop: the waiter gets it at once
        assert await asyncio.wait_for(waiter, 5) is obj
        await pool.put(other)
        assert pool.stats().idle == 2


def test_put_and_close_from_another_loop_in_the_same_thread_are_refused() -> None:
    pool: AsyncPool[Conn] = AsyncPool(Conn, max_size=1)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(pool.open())
    lease = pool.acquire()  # a lease, not get(): its exit may run in another task (the next run)
    obj = loop.run_until_complete(lease.__aenter__())
    try:
        with pytest.raises(PoolError, match="another event loop"):
            asyncio.run(pool.put(obj))
        with pytest.raises(PoolError, match="another event loop"):
            asyncio.run(pool.close())
        assert pool.state == "open" and pool.stats().in_use == 1
        loop.run_until_complete(lease.__aexit__(None, None, None))
        assert pool.stats().idle == 1
    finally:
        loop.run_until_complete(pool.close())
        loop.close()


async def test_close_timeout_does_not_cancel_close_hooks_already_running() -> None:
    closed: list[Conn] = []

    async def slow_close(conn: Conn) -> None:
        await asyncio.sleep(0.05)
        closed.append(conn)

    pool = AsyncPool(Factory(), min_size=10, max_size=10, close=slow_close)
    await pool.open()
    await pool.close(timeout=0.01)  # shorter than any close hook: they still finish
    assert len(closed) == 10 and pool.stats().closed == 10


async def test_concurrent_closes_all_wait_for_the_same_completion() -> None:
    closed: list[Conn] = []
    release = asyncio.Event()

    async def slow_close(conn: Conn) -> None:
        await asyncio.sleep(0.02)
        closed.append(conn)

    pool = AsyncPool(Factory(), min_size=2, max_size=3, close=slow_close)
    await pool.open()

    async def hold_then_return() -> None:
        held = await pool.get()
        await release.wait()
        await pool.put(held)

    holder = asyncio.create_task(hold_then_return())
    await until(lambda: pool.stats().in_use == 1)
    closes = [asyncio.create_task(pool.close(timeout=5)) for _ in range(3)]
    await asyncio.sleep(0.05)
    assert not any(c.done() for c in closes)  # every call waits for the object still out
    release.set()
    await asyncio.gather(holder, *closes)
    assert len(closed) == 2  # the idle one and the one that came back, each after its close hook
    await pool.close()  # a later call returns at once
    with pytest.raises(PoolClosed):
        await pool.get()


async def test_cancelled_close_still_finishes_and_a_later_close_waits_for_it() -> None:
    closed: list[Conn] = []

    async def slow_close(conn: Conn) -> None:
        await asyncio.sleep(0.05)
        closed.append(conn)

    pool = AsyncPool(Factory(), min_size=3, max_size=3, close=slow_close)
    await pool.open()
    first = asyncio.create_task(pool.close())
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    await pool.close()
    assert len(closed) == 3


async def test_outage_makes_one_connect_attempt_at_a_time_and_waiters_get_the_cause() -> None:
    factory = Factory(fail_rate=1.0)  # the backend is down: every connect is refused at once
    async with AsyncPool(factory, max_size=10, timeout=0.6) as pool:
        results = await asyncio.gather(*(pool.get() for _ in range(200)), return_exceptions=True)
        # Before the backend was known to be down, one connect per waiter could start (up to
        # max_creating = 10); after that one at a time, after a backoff: a handful in 0.6 s, not one per
        # waiter per failure.
        assert factory.calls <= 10 + 6, factory.calls
        assert pool.stats().errors == factory.calls
        for result in results:
            assert isinstance(result, ConnectionRefusedError | PoolTimeout), result
            if isinstance(result, PoolTimeout):
                assert isinstance(result.__cause__, ConnectionRefusedError)
                assert "creating new objects is failing" in str(result)
        assert any(isinstance(r, ConnectionRefusedError) for r in results)
        # The backend comes back: the next caller is served after the backoff, and the pool is healthy.
        factory.fail_rate = 0.0
        async with pool.acquire(timeout=15) as conn:
            assert isinstance(conn, Conn)
        a, b = await pool.get(), await pool.get()
        assert a is not b
        await pool.put(a)
        await pool.put(b)


async def test_factory_errors_keep_their_type_and_name_the_pool() -> None:
    async with AsyncPool(Factory(fail_rate=1.0), max_size=1, name="orders-db") as pool:
        with pytest.raises(ConnectionRefusedError) as info:
            await pool.get()
    notes = getattr(info.value, "__notes__", [])
    assert any("orders-db" in n and "creating a new object" in n for n in notes), notes


async def test_a_factorys_own_timeout_error_is_not_reported_as_create_timeout() -> None:
    async def factory() -> Conn:
        raise TimeoutError("connect timed out (the driver's own)")

    async with AsyncPool(factory, max_size=1, create_timeout=30) as pool:
        with pytest.raises(TimeoutError, match="the driver's own") as info:
            await pool.get()
        assert not isinstance(info.value, PoolTimeout)


async def test_acquire_timeout_bounds_a_slow_check() -> None:
    async def slow_check(conn: Conn) -> bool:
        await asyncio.sleep(0.5)
        return True

    factory = Factory()
    async with AsyncPool(
        factory, max_size=1, check=slow_check, check_skip_within=0, close=close_conn
    ) as pool:
        async with pool.acquire():
            pass
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(PoolTimeout, match="check"):
            async with pool.acquire(timeout=0.05):
                pass
        assert loop.time() - started < 0.4  # the check took 0.5 s; the timeout said 0.05 s
        assert pool.stats().timeouts == 1 and pool.stats().discarded == 1  # interrupted mid-check


async def test_nested_acquire_hint_without_held_warning() -> None:
    async with AsyncPool(Factory(), max_size=1, timeout=0.02) as pool, pool.acquire():
        with pytest.raises(PoolTimeout, match="nested acquire"):
            async with pool.acquire():
                pass


async def test_alive_must_be_callable() -> None:
    with pytest.raises(ConfigurationError) as info:
        AsyncPool(Conn, alive="yes")  # type: ignore[arg-type]
    assert info.value.name == "alive"


def test_pool_options_name_every_asyncpool_keyword() -> None:
    import inspect

    from sanaa_async_mem.pools.pool import PoolOptions, pool_options

    params = [p for p in inspect.signature(AsyncPool).parameters if p != "factory"]
    assert list(PoolOptions.__annotations__) == params or set(PoolOptions.__annotations__) == set(params)
    with pytest.raises(ConfigurationError) as info:
        pool_options({"timout": 1})
    assert info.value.name == "timout" and "timeout" in str(info.value)
