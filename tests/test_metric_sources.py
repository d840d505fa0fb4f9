"""The sources the exporters read: the pool protocol, groups, providers, and the reading cache's threads."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from sanaa_async_mem import AsyncPool, MemoryPool, ResourceManager
from sanaa_async_mem.errors import ConfigurationError
from sanaa_async_mem.integrations.readings import PoolSource, ReadingCache, SourceGroup, read_sources
from sanaa_async_mem.optimizer import MemoryOptimizer
from sanaa_async_mem.pools import MemoryPoolStats


def test_memory_pool_stats_is_get_stats_frozen_and_both_pools_are_pool_sources() -> None:
    pool: MemoryPool[str, bytearray] = MemoryPool(
        max_size=4, name="buffers", factories={"a": lambda: bytearray(8)}
    )
    obj = pool.get("a")
    pool.put("a", obj)
    pool.get("a")
    pool.put("b", bytearray(1))
    st = pool.stats()
    assert isinstance(st, MemoryPoolStats)
    d = pool.get_stats()
    assert st.as_dict() == d
    assert d["size_per_key"] == {"b": 1}  # the "a" object is checked out again
    assert isinstance(pool, PoolSource) and isinstance(AsyncPool(object), PoolSource)
    assert pool.trim_idle(older_than=3600) == 0
    assert pool.trim_idle() == 1 and pool.stats().size == 0


async def test_a_pool_behind_a_resource_is_read_once_under_the_resource_name() -> None:
    pool: AsyncPool[object] = AsyncPool(object, name="inner", max_size=2)
    manager = ResourceManager()
    manager.register_resource("db", pool)
    async with manager:
        async with manager.acquire("db"):
            pass
        r = read_sources([pool, manager])
    assert set(r.pools) == {"db"} and r.pools["db"].acquired == 1


async def test_groups_are_asked_at_every_read_and_providers_add_their_own_kinds() -> None:
    class Budget:
        def metric_readings(self) -> list[tuple[str, str, object]]:
            return [("budget", "pg", {"held": 3})]

    async with MemoryOptimizer(schedule_gc=False) as optimizer:
        assert isinstance(optimizer, SourceGroup)
        first = read_sources([optimizer, Budget()])
        late: AsyncPool[object] = AsyncPool(object, name="late")
        optimizer.add_pool(late)
        second = read_sources([optimizer])
    assert "late" not in first.pools and "late" in second.pools
    assert first.other["budget"]["pg"] == {"held": 3}
    assert first.memory is not None and first.loop_lag is not None and first.gc_scheduler is None


def test_a_duck_typed_pool_whose_stats_are_not_pool_stats_is_refused() -> None:
    class Odd:
        name = "odd"

        def stats(self) -> dict[str, int]:
            return {}

        def trim_idle(self, older_than: float | None = None) -> int:
            return 0

    with pytest.raises(ConfigurationError, match="not pool stats"):
        read_sources([Odd()])


async def test_cache_reads_inline_on_the_loop_and_once_for_many_threads() -> None:
    pool: AsyncPool[object] = AsyncPool(object, name="p")
    async with pool:
        cache = ReadingCache([pool], max_age=0.0, wait=5.0)
        cache.get()
        assert cache.reads == 1  # on the loop's thread: inline
        barrier = threading.Barrier(20)

        def ask() -> None:
            barrier.wait()
            cache.get()

        threads = [threading.Thread(target=ask) for _ in range(20)]
        for t in threads:
            t.start()
        # The loop is not running callbacks until we yield: all 20 askers queue behind one read.
        time.sleep(0.3)
        await asyncio.sleep(0.05)
        for t in threads:
            await asyncio.to_thread(t.join, 10)
        assert 2 <= cache.reads <= 4 and cache.stale == 0


def test_bad_cache_options_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="max_age"):
        ReadingCache([], max_age=-1)
    with pytest.raises(ConfigurationError, match="wait"):
        ReadingCache([], wait=10**400)
