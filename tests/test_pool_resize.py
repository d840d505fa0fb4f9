"""AsyncPool.resize(): growing serves waiters at once, shrinking retires surplus objects as they come back
(never one in use), under load and under cancellation; bad values are refused by name."""

from __future__ import annotations

import asyncio
import contextlib
import random

import pytest

from sanaa_async_mem import AsyncPool
from sanaa_async_mem.errors import ConfigurationError, PoolClosed


class Conn:
    count = 0

    def __init__(self) -> None:
        Conn.count += 1
        self.n = Conn.count
        self.in_use = False
        self.closed = False


class Tracked:
    """A pool whose close hook fails the test if it closes an object in use."""

    def __init__(self, **kw: object) -> None:
        self.closed_in_use: list[Conn] = []
        self.pool: AsyncPool[Conn] = AsyncPool(Conn, close=self._close, **kw)  # type: ignore[arg-type]

    def _close(self, conn: Conn) -> None:
        if conn.in_use:
            self.closed_in_use.append(conn)
        conn.closed = True


async def test_growing_serves_the_waiters_while_the_holder_still_holds() -> None:
    async with AsyncPool(Conn, max_size=1, timeout=60) as pool:
        release = asyncio.Event()
        holding = asyncio.Event()

        async def holder() -> None:
            async with pool.acquire():
                holding.set()
                await release.wait()

        async def waiter() -> Conn:
            async with pool.acquire() as conn:
                return conn

        h = asyncio.create_task(holder())
        await holding.wait()
        waiters = [asyncio.create_task(waiter()) for _ in range(5)]
        await asyncio.sleep(0.02)
        assert pool.stats().waiting == 5
        await pool.resize(max_size=6)
        async with asyncio.timeout(30):
            got = await asyncio.gather(*waiters)  # served although the first object is still held
        assert not h.done()
        assert pool.max_size == 6 and pool.stats().size <= 6 and len({c.n for c in got}) >= 1
        release.set()
        await h


async def test_shrinking_closes_idle_surplus_now_and_held_surplus_on_return() -> None:
    t = Tracked(max_size=5, timeout=60)
    async with t.pool as pool:
        conns = [await pool.get() for _ in range(5)]
        for conn in conns[:2]:
            await pool.put(conn)  # two idle, three held
        for conn in conns[2:]:
            conn.in_use = True
        await pool.resize(max_size=1)
        st = pool.stats()
        assert st.closed_by["resize"] == 2 and st.size == 3 and st.in_use == 3  # only the idle ones
        for conn in conns[2:]:
            conn.in_use = False
            await pool.put(conn)
        st = pool.stats()
        assert st.closed_by["resize"] == 4 and st.size == 1 and st.idle == 1
        # Back within the limit: the plain path again, and the one left is reused.
        async with pool.acquire() as conn:
            assert conn is conns[-1]
        assert pool.stats().closed_by["resize"] == 4
    assert t.closed_in_use == []


async def test_shrinking_hands_nothing_beyond_the_new_limit_to_waiters() -> None:
    async with AsyncPool(Conn, max_size=3, timeout=60) as pool:
        conns = [await pool.get() for _ in range(3)]
        in_use = 3
        peak_after = 0

        async def waiter() -> None:
            nonlocal in_use, peak_after
            async with pool.acquire():
                in_use += 1
                peak_after = max(peak_after, in_use)
                await asyncio.sleep(0.001)
                in_use -= 1

        waiters = [asyncio.create_task(waiter()) for _ in range(10)]
        await asyncio.sleep(0.01)
        await pool.resize(max_size=1)
        for conn in conns:
            in_use -= 1
            await pool.put(conn)
        async with asyncio.timeout(30):
            await asyncio.gather(*waiters)
        assert peak_after == 1
        assert pool.stats().size == 1


async def test_growing_min_size_makes_objects_in_the_background() -> None:
    async with AsyncPool(Conn, max_size=4) as pool:
        await pool.resize(min_size=3)
        async with asyncio.timeout(30):
            while pool.stats().idle < 3:
                await asyncio.sleep(0.01)
        assert pool.min_size == 3


async def test_resize_under_load_and_cancellation_loses_nothing() -> None:
    t = Tracked(max_size=8, timeout=60)
    rng = random.Random(7)
    async with t.pool as pool:
        stop = False
        owners: dict[int, int] = {}
        double = 0

        async def worker(i: int) -> None:
            nonlocal double
            while not stop:
                async with pool.acquire() as conn:
                    if id(conn) in owners:
                        double += 1
                    owners[id(conn)] = i
                    conn.in_use = True
                    try:
                        await asyncio.sleep(0)
                    finally:
                        conn.in_use = False
                        del owners[id(conn)]

        workers = [asyncio.create_task(worker(i)) for i in range(20)]
        for _ in range(60):
            await pool.resize(max_size=rng.randint(1, 10))
            await asyncio.sleep(0)
            victim = rng.choice(workers)
            if not victim.done():
                victim.cancel()  # mid-wait or mid-hold: either way nothing may be lost
                workers.append(asyncio.create_task(worker(len(workers))))
            await asyncio.sleep(0.002)
        await pool.resize(max_size=3)
        stop = True
        for w in workers:
            with contextlib.suppress(asyncio.CancelledError):
                await w
        st = pool.stats()
        assert double == 0
        assert st.in_use == 0 and st.waiting == 0
        assert st.size == st.idle <= 3
        assert st.created - st.closed == st.size
        assert st.cancelled >= 0 and st.closed_by["resize"] > 0
        # Everything left is usable at the new limit.
        async with pool.acquire(), pool.acquire(), pool.acquire():
            pass
    assert t.closed_in_use == []


async def test_bad_values_are_refused_by_name() -> None:
    pool: AsyncPool[Conn] = AsyncPool(Conn, min_size=1, max_size=4)
    async with pool:
        for kwargs, name in (
            ({"max_size": 0}, "max_size"),
            ({"min_size": -1}, "min_size"),
            ({"max_size": "3"}, "max_size"),
            ({"min_size": 5}, "min_size"),
            ({"max_size": 0.5}, "max_size"),
        ):
            with pytest.raises(ConfigurationError, match=name):
                await pool.resize(**kwargs)  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="max_size"):
            await pool.resize(min_size=1, max_size=0)
        assert (pool.min_size, pool.max_size) == (1, 4)  # unchanged
    with pytest.raises(PoolClosed):
        await pool.resize(max_size=2)


async def test_resize_before_open_is_used_by_open() -> None:
    pool: AsyncPool[Conn] = AsyncPool(Conn, max_size=2)
    await pool.resize(min_size=2, max_size=5)
    async with pool:
        assert pool.stats().size == 2 and pool.max_size == 5
