"""MemoryOptimizer: one start and one stop for every capability, settings restored, status and
optimization as plain data; memory_efficient_context deferring full collections and nesting safely.
Nothing asserts speed."""

from __future__ import annotations

import asyncio
import gc
import json
import threading
import weakref
from pathlib import Path

import pytest

from sanaa_async_mem import AsyncPool, MemoryPool
from sanaa_async_mem.config import Settings
from sanaa_async_mem.errors import ConfigurationError
from sanaa_async_mem.optimizer import MemoryOptimizer, memory_efficient_context

OUT_OF_REACH = 2**31 - 1


class Cyclic:
    def __init__(self) -> None:
        self.me = self


pytestmark = pytest.mark.usefixtures("gc_baseline")


def make(**kwargs: object) -> MemoryOptimizer:
    kwargs.setdefault("snapshot_interval", 0.02)
    return MemoryOptimizer(**kwargs)  # type: ignore[arg-type]


def other_tasks() -> set[asyncio.Task[object]]:
    return asyncio.all_tasks() - {asyncio.current_task()}  # type: ignore[operator]


# ------------------------------------------------------------------------------------------- lifecycle


@pytest.mark.both_loops
async def test_start_then_stop_leaves_no_task_and_restores_gc_settings() -> None:
    before = (gc.get_threshold(), gc.isenabled(), len(gc.callbacks))
    optimizer = make()
    await optimizer.start_optimization()
    assert optimizer.running
    assert optimizer.gc_scheduler is not None and optimizer.gc_scheduler.running
    assert optimizer.profiler.is_running and optimizer.lag_monitor.running
    assert gc.get_threshold()[2] == OUT_OF_REACH  # full collections belong to the scheduler now
    await optimizer.stop_optimization()
    assert not optimizer.running
    assert other_tasks() == set()
    assert (gc.get_threshold(), gc.isenabled(), len(gc.callbacks)) == before


@pytest.mark.both_loops
async def test_starting_twice_is_a_no_op_and_never_a_second_task() -> None:
    optimizer = make()
    await optimizer.start_optimization()
    tasks = other_tasks()
    await optimizer.start_optimization()
    assert other_tasks() == tasks
    await optimizer.stop_optimization()
    await optimizer.stop_optimization()  # stopping a stopped optimizer: no-op
    assert other_tasks() == set()


async def test_stop_before_start_is_a_no_op_and_restart_works() -> None:
    optimizer = make()
    await optimizer.stop_optimization()
    for _ in range(2):
        await optimizer.start_optimization()
        await optimizer.stop_optimization()
    assert other_tasks() == set()
    assert gc.get_threshold() == (700, 10, 10)


async def test_async_with_starts_and_closes_the_resource_manager() -> None:
    closed: list[str] = []
    async with make() as optimizer:
        optimizer.resource_manager.register_resource("thing", object(), lambda _: closed.append("thing"))
        await asyncio.sleep(0.05)
        assert optimizer.profiler.ticks >= 1
    assert closed == ["thing"]
    assert other_tasks() == set()


@pytest.mark.both_loops
async def test_cancelled_stop_still_stops_everything_and_restores_gc() -> None:
    optimizer = make()
    await optimizer.start_optimization()
    stopper = asyncio.create_task(optimizer.stop_optimization())
    await asyncio.sleep(0)
    stopper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopper
    assert not optimizer.lag_monitor.running
    assert gc.get_threshold() == (700, 10, 10)
    # The profiler finishes its shielded clean-up on its own (generous limit: a loaded machine is fine).
    async with asyncio.timeout(30):
        while other_tasks():
            await asyncio.sleep(0.01)


async def test_cancelled_start_leaves_nothing_running() -> None:
    optimizer = make()
    starter = asyncio.create_task(optimizer.start_optimization())
    starter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starter
    assert not optimizer.running
    assert other_tasks() == set()
    assert gc.get_threshold() == (700, 10, 10)


async def test_a_failing_start_rolls_back(tmp_path: Path) -> None:
    # A snapshot store "inside" a regular file: the profiler cannot open it, after GC was already tuned.
    (tmp_path / "a-file").write_text("")
    optimizer = make(profiler_options={"store": tmp_path / "a-file" / "snapshots.jsonl"})
    with pytest.raises(OSError):
        await optimizer.start_optimization()
    assert not optimizer.running
    assert other_tasks() == set()
    assert gc.get_threshold() == (700, 10, 10)


def test_settings_come_from_env_with_explicit_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMORY_SNAPSHOT_INTERVAL", "7")
    monkeypatch.setenv("MEMORY_HIGH_USAGE_BYTES", "123456789")
    optimizer = MemoryOptimizer(snapshot_interval=3)
    assert optimizer.settings.snapshot_interval == 3
    assert optimizer.profiler.interval == 3
    assert optimizer.settings.high_memory_bytes == 123456789
    with pytest.raises(ConfigurationError):
        MemoryOptimizer(no_such_setting=1)
    with pytest.raises(ConfigurationError):
        MemoryOptimizer(settings=Settings(), snapshot_interval=-1)


async def test_gc_optimization_disabled_means_no_scheduler_and_no_threshold_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GC_OPTIMIZATION_ENABLED", "false")
    async with make() as optimizer:
        assert optimizer.gc_scheduler is None
        assert gc.get_threshold() == (700, 10, 10)
        assert optimizer.gc_optimizer.pauses.installed  # pauses are still measured
    assert gc.get_threshold() == (700, 10, 10)


# ------------------------------------------------------------------------------------ status, optimize


async def test_memory_status_is_json_with_the_spec_keys() -> None:
    pool: AsyncPool[object] = AsyncPool(object, name="objects", max_size=2)
    keyed: MemoryPool[tuple[int, int], object] = MemoryPool(max_size=10, name="buffers")
    keyed.put((1, 2), object())
    async with pool, make(pools=[pool, keyed]) as optimizer:
        async with pool.acquire():
            pass
        await asyncio.sleep(0.05)
        status = optimizer.get_memory_status()
    text = json.dumps(status, allow_nan=False)
    assert json.loads(text) == json.loads(text)
    assert 0.0 <= status["system_memory"]["percentage"] <= 100.0
    assert status["process_memory"]["rss"] > 0
    assert status["optimization_active"] is True
    assert status["pools"]["objects"]["acquired"] == 1
    assert status["pools"]["buffers"]["size"] == 1
    assert status["gc"]["scheduler"]["mode"] in {"deferred", "passive"}
    assert "status" in status["trend"] and "is_leak" in status["trend"]
    assert "p99" in status["loop_lag"]
    assert status["resources"]["state"] == "open"


async def test_optimize_memory_usage_runs_callbacks_trims_pools_and_collects() -> None:
    ran: list[str] = []

    async def async_cleanup() -> None:
        ran.append("async")

    keyed: MemoryPool[str, object] = MemoryPool(max_size=10, name="buffers")
    keyed.put("a", object())
    conns = AsyncPool(object, name="conns", min_size=1, max_size=3)
    async with make(pools=[keyed, conns]) as optimizer, conns:
        optimizer.resource_manager.register_resource("db", factory=object, pool_options={"max_size": 2})
        async with optimizer.resource_manager.acquire("db"):
            pass
        held = [await conns.get() for _ in range(3)]
        for obj in held:
            await conns.put(obj)
        optimizer.gc_optimizer.register_cleanup_callback(lambda: ran.append("sync"))
        optimizer.gc_optimizer.register_cleanup_callback(async_cleanup)
        garbage = Cyclic()
        ref = weakref.ref(garbage)
        del garbage
        freed = await optimizer.optimize_memory_usage(pool_idle_age=0)
    assert ran == ["sync", "async"]
    assert ref() is None
    assert freed["objects_collected"] >= 1
    # Idle AsyncPool objects go too, down to min_size; the manager's pool is trimmed by its name.
    assert freed["pool_objects_trimmed"] == {"buffers": 1, "conns": 2, "db": 1}
    assert freed["cleanup_callbacks"] == {"ran": 2, "failed": 0}
    assert freed["memory_freed"] == freed["memory_before"] - freed["memory_after"]
    json.dumps(freed, allow_nan=False)


# ---------------------------------------------------------------------------- memory_efficient_context


def test_context_defers_full_collections_and_collects_after() -> None:
    with memory_efficient_context() as outer:
        assert gc.get_threshold()[2] == OUT_OF_REACH
        garbage = Cyclic()
        ref = weakref.ref(garbage)
        del garbage
        with memory_efficient_context() as inner:
            assert gc.get_threshold()[2] == OUT_OF_REACH
        assert inner.result is not None and not inner.result.outermost
        assert inner.result.collected == 0  # nested: the outer block collects
        assert gc.get_threshold()[2] == OUT_OF_REACH
        assert ref() is not None
    assert gc.get_threshold() == (700, 10, 10)
    assert ref() is None
    result = outer.result
    assert result is not None and result.outermost and result.collected >= 1
    assert result.delta == result.rss_after - result.rss_before
    json.dumps(result.as_dict())


@pytest.mark.both_loops
async def test_async_context_tells_the_scheduler_a_request_is_in_flight() -> None:
    async with make() as optimizer:
        scheduler = optimizer.gc_scheduler
        assert scheduler is not None
        async with optimizer.memory_efficient_context() as block:
            assert scheduler.in_flight == 1
            # The scheduler already holds full collections off: the block leaves its threshold alone.
            assert gc.get_threshold()[2] == OUT_OF_REACH
        assert scheduler.in_flight == 0
        assert block.result is not None
        assert gc.get_threshold()[2] == OUT_OF_REACH
    assert gc.get_threshold() == (700, 10, 10)


async def test_overlapping_blocks_in_tasks_and_threads_restore_once_the_last_closes() -> None:
    first_in = asyncio.Event()
    release_first = asyncio.Event()

    async def first() -> None:
        async with memory_efficient_context():
            first_in.set()
            await release_first.wait()

    task = asyncio.create_task(first())
    await first_in.wait()
    done = threading.Event()

    def in_thread() -> None:
        with memory_efficient_context():
            pass
        done.set()

    await asyncio.to_thread(in_thread)
    assert done.is_set()
    assert gc.get_threshold()[2] == OUT_OF_REACH  # the task's block is still open
    release_first.set()
    await task
    assert gc.get_threshold() == (700, 10, 10)


def test_a_context_object_serves_one_block_at_a_time() -> None:
    block = memory_efficient_context(collect=False)
    with block, pytest.raises(RuntimeError), block:
        pass
    assert gc.get_threshold() == (700, 10, 10)
    with block:  # reusable once closed
        pass


async def test_start_stop_close_are_the_same_calls_as_the_original_names() -> None:
    optimizer = MemoryOptimizer(schedule_gc=False, snapshot_interval=3600)
    await optimizer.start()
    assert optimizer.running
    await optimizer.stop()
    assert not optimizer.running
    await optimizer.start_optimization()
    await optimizer.close()
    assert not optimizer.running and optimizer.resource_manager.get_stats().state == "closed"


async def test_a_pool_registered_as_a_resource_has_one_name_in_status_and_pool_stats() -> None:
    pool: AsyncPool[object] = AsyncPool(object, max_size=2, name="postgres")
    async with MemoryOptimizer(schedule_gc=False, snapshot_interval=3600) as optimizer:
        optimizer.resource_manager.register_resource("db", pool)
        async with optimizer.resource_manager.acquire("db", "load user"):
            pass
        status = optimizer.get_memory_status()
        assert list(status["pools"]) == ["db"]
        assert status["pools"]["db"]["acquired"] == 1 and status["pools"]["db"]["name"] == "db"
        assert list(optimizer.pool_stats()) == ["db"]
        # Also listed as an extra pool: still one entry, under the name it is acquired by.
        optimizer.add_pool(pool)
        assert list(optimizer.pool_stats()) == ["db"]
    json.dumps(status)
