"""GarbageCollectionOptimizer against the real collector: cycles freed, frozen objects left alone, settings
restored, GC-free sections counted across tasks and threads, callbacks, lifecycles and pause histograms."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
import weakref
from collections.abc import Iterator

import pytest

from sanaa_async_mem.collector.optimizer import (
    CollectorInfo,
    GarbageCollectionOptimizer,
    GCSettings,
    detect_collector,
    gc_disabled_sections,
)
from sanaa_async_mem.collector.state import INTERPRETER_FROZEN
from sanaa_async_mem.config import Settings
from sanaa_async_mem.errors import ConfigurationError, GCError


class Cyclic:
    """An object that keeps itself alive through a reference cycle (only the collector can free it)."""

    def __init__(self) -> None:
        self.me = self


class Plain:
    pass


@pytest.fixture(autouse=True)
def no_gc_free_section_left_open(gc_restored: None) -> Iterator[None]:
    """GC settings come back (see conftest), and no test may leave a GC-free section open."""
    yield
    assert gc_disabled_sections() == 0, "a test left a GC-free section open"


@pytest.fixture
def optimizer() -> Iterator[GarbageCollectionOptimizer]:
    opt = GarbageCollectionOptimizer(Settings())
    yield opt
    opt.restore_gc_settings()


def make_garbage_cycles(n: int) -> list[weakref.ref[Cyclic]]:
    refs = []
    for _ in range(n):
        obj = Cyclic()
        refs.append(weakref.ref(obj))
    return refs


# ------------------------------------------------------------------------------------------- settings


def test_optimize_gc_settings_reports_changes_and_restore_puts_back_exactly(
    optimizer: GarbageCollectionOptimizer,
) -> None:
    gc.set_threshold(500, 7, 9)
    before = GCSettings.capture()
    change = optimizer.optimize_gc_settings()
    assert change.applied
    assert change.before == before
    young = max(Settings().gc_collection_threshold, detect_collector().default_young_threshold)
    assert gc.get_threshold() == (young, 7, 9)
    assert change.changed == {"thresholds": ((500, 7, 9), (young, 7, 9))}
    assert optimizer.pauses.installed

    restored = optimizer.restore_gc_settings()
    assert restored == before
    assert GCSettings.capture() == before
    assert not optimizer.pauses.installed


def test_explicit_thresholds_are_validated(optimizer: GarbageCollectionOptimizer) -> None:
    with pytest.raises(ConfigurationError, match="thresholds"):
        optimizer.optimize_gc_settings(thresholds=(1, 2, 3, 4))
    with pytest.raises(ConfigurationError, match=r"thresholds\[1\]"):
        optimizer.optimize_gc_settings(thresholds=(100, -1, 10))
    change = optimizer.optimize_gc_settings(thresholds=(1234, 11, 12))
    assert gc.get_threshold() == (1234, 11, 12)
    assert change.after.thresholds == (1234, 11, 12)


def test_gc_optimization_disabled_by_environment_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GC_OPTIMIZATION_ENABLED", "false")
    opt = GarbageCollectionOptimizer()
    before = GCSettings.capture()
    change = opt.optimize_gc_settings(startup_complete=True)
    assert not change.applied
    assert "GC_OPTIMIZATION_ENABLED" in change.reason
    assert change.changed == {}
    assert GCSettings.capture() == before
    assert gc.get_freeze_count() == before.frozen_objects


def test_gc_collection_threshold_from_environment_raises_the_young_threshold(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GC_COLLECTION_THRESHOLD", "12345")
    opt = GarbageCollectionOptimizer()
    try:
        opt.optimize_gc_settings()
        assert gc.get_threshold()[0] == 12345
    finally:
        opt.restore_gc_settings()


def test_startup_freeze_keeps_frozen_objects_out_of_collections(
    optimizer: GarbageCollectionOptimizer,
) -> None:
    if gc.get_freeze_count() > INTERPRETER_FROZEN:
        pytest.skip("the permanent generation is not empty in this process")
    survivor = Cyclic()  # alive at freeze time, so it is frozen
    garbage_before_freeze = weakref.ref(Cyclic())  # garbage at freeze time: collected, not frozen
    marker = weakref.ref(survivor)

    change = optimizer.optimize_gc_settings(startup_complete=True)
    assert change.froze > 0
    assert change.after.frozen_objects >= change.froze
    assert garbage_before_freeze() is None
    # Not scanned: the frozen object is in no generation the collector examines...
    assert not any(o is survivor for o in gc.get_objects())
    # ...so once it becomes garbage, no collection frees it.
    del survivor
    gc.collect()
    assert marker() is not None

    optimizer.restore_gc_settings()
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert marker() is None


def test_restore_leaves_foreign_frozen_objects_frozen(
    optimizer: GarbageCollectionOptimizer, caplog: pytest.LogCaptureFixture
) -> None:
    if gc.get_freeze_count() > INTERPRETER_FROZEN:
        pytest.skip("the permanent generation is not empty in this process")
    gc.freeze()  # the application froze first
    optimizer.optimize_gc_settings(startup_complete=True)
    with caplog.at_level(logging.WARNING, logger="sanaa.gc"):
        optimizer.restore_gc_settings()
    assert gc.get_freeze_count() > 0
    assert "already frozen" in caplog.text or "frozen before" in caplog.text


# ----------------------------------------------------------------------------------- GC-free sections


def test_disable_gc_temporarily_with_and_nested(optimizer: GarbageCollectionOptimizer) -> None:
    gc.enable()
    section = optimizer.disable_gc_temporarily()
    with section:
        assert not gc.isenabled()
        with section:  # re-entrant: the same object nested
            assert not gc.isenabled()
            with optimizer.disable_gc_temporarily():
                assert gc_disabled_sections() == 3
        assert not gc.isenabled()
    assert gc.isenabled()
    assert gc_disabled_sections() == 0


def test_disable_gc_temporarily_leaves_gc_disabled_if_it_was(optimizer: GarbageCollectionOptimizer) -> None:
    gc.disable()
    with optimizer.disable_gc_temporarily():
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_disable_gc_temporarily_restores_on_exception(optimizer: GarbageCollectionOptimizer) -> None:
    gc.enable()
    with pytest.raises(RuntimeError), optimizer.disable_gc_temporarily():
        raise RuntimeError("boom")
    assert gc.isenabled()


@pytest.mark.both_loops
async def test_overlapping_tasks_cannot_reenable_gc_under_each_other(
    optimizer: GarbageCollectionOptimizer,
) -> None:
    gc.enable()
    section = optimizer.disable_gc_temporarily()  # one object shared by every task
    a_inside, b_inside, a_may_leave = asyncio.Event(), asyncio.Event(), asyncio.Event()
    seen_enabled_while_b_inside: list[bool] = []

    async def task_a() -> None:
        async with section:
            a_inside.set()
            await a_may_leave.wait()
        # A left first; B is still inside: GC must stay off.
        seen_enabled_while_b_inside.append(gc.isenabled())

    async def task_b() -> None:
        await a_inside.wait()
        async with section:
            b_inside.set()
            a_may_leave.set()
            while not seen_enabled_while_b_inside:
                await asyncio.sleep(0)

    await asyncio.gather(task_a(), task_b())
    assert seen_enabled_while_b_inside == [False]
    assert gc.isenabled()


def test_overlapping_threads_keep_gc_disabled_while_any_is_inside(
    optimizer: GarbageCollectionOptimizer,
) -> None:
    gc.enable()
    section = optimizer.disable_gc_temporarily()
    threads_n, rounds = 8, 200
    barrier = threading.Barrier(threads_n)
    violations: list[int] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            for i in range(rounds):
                with section:
                    if gc.isenabled():
                        violations.append(i)
                    if i % 3 == 0:
                        time.sleep(0)  # let other threads enter and leave meanwhile
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert violations == []
    assert gc.isenabled()
    assert gc_disabled_sections() == 0


def test_forgotten_section_is_closed_after_max_duration(
    optimizer: GarbageCollectionOptimizer, caplog: pytest.LogCaptureFixture
) -> None:
    gc.enable()
    section = optimizer.disable_gc_temporarily(max_duration=0.05)
    with caplog.at_level(logging.WARNING, logger="sanaa.gc"):
        section.__enter__()
        assert not gc.isenabled()
        deadline = time.monotonic() + 30.0  # generous: the watchdog only needs to get scheduled
        while not gc.isenabled() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert gc.isenabled(), "the watchdog did not re-enable GC"
        assert gc_disabled_sections() == 0
    assert "max" in caplog.text.lower() or "open for more than" in caplog.text
    with pytest.warns(RuntimeWarning, match="max_duration"):
        section.__exit__(None, None, None)
    assert gc.isenabled()


def test_expired_section_does_not_cut_a_live_one_short(optimizer: GarbageCollectionOptimizer) -> None:
    gc.enable()
    short = optimizer.disable_gc_temporarily(max_duration=0.05)
    long = optimizer.disable_gc_temporarily(max_duration=600)
    with long:
        short.__enter__()
        deadline = time.monotonic() + 30.0
        while gc_disabled_sections() > 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert gc_disabled_sections() == 1
        assert not gc.isenabled()  # the long section is still open
        with pytest.warns(RuntimeWarning):
            short.__exit__(None, None, None)
        assert not gc.isenabled()
    assert gc.isenabled()


def test_exit_from_a_thread_that_did_not_enter_is_an_error(optimizer: GarbageCollectionOptimizer) -> None:
    section = optimizer.disable_gc_temporarily()
    with pytest.raises(GCError):
        section.__exit__(None, None, None)


def test_bad_max_duration_is_a_configuration_error(optimizer: GarbageCollectionOptimizer) -> None:
    with pytest.raises(ConfigurationError, match="max_duration"):
        optimizer.disable_gc_temporarily(max_duration=0)
    with pytest.raises(ConfigurationError, match="max_disable_duration"):
        GarbageCollectionOptimizer(Settings(), max_disable_duration=-1)


# ---------------------------------------------------------------------------------- cleanup callbacks


@pytest.mark.both_loops
async def test_cleanup_callbacks_run_before_collection_and_a_failure_does_not_stop_others(
    optimizer: GarbageCollectionOptimizer, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []
    cache: dict[str, Cyclic] = {"k": Cyclic()}
    cached = weakref.ref(cache["k"])

    def sync_cb() -> None:
        calls.append("sync")
        cache.clear()  # drops the last strong reference to a cycle: this collection frees it

    async def async_cb() -> None:
        await asyncio.sleep(0)
        calls.append("async")

    def failing_cb() -> None:
        calls.append("failing")
        raise ValueError("cleanup broke")

    optimizer.register_cleanup_callback(failing_cb)
    optimizer.register_cleanup_callback(sync_cb)
    optimizer.register_cleanup_callback(async_cb)
    with caplog.at_level(logging.ERROR, logger="sanaa.gc"):
        result = await optimizer.perform_optimized_collection()
    assert calls == ["failing", "sync", "async"]
    assert (result.callbacks_run, result.callbacks_failed) == (3, 1)
    assert "cleanup broke" in caplog.text
    assert cached() is None

    calls.clear()
    report = await optimizer.handle_memory_pressure()
    assert calls == ["failing", "sync", "async"]
    assert (report.ran, report.failed) == (3, 1)


async def test_unregistered_callback_no_longer_runs(optimizer: GarbageCollectionOptimizer) -> None:
    calls: list[int] = []
    unregister = optimizer.register_cleanup_callback(lambda: calls.append(1))
    unregister()
    unregister()  # idempotent
    await optimizer.run_cleanup_callbacks()
    assert calls == []
    with pytest.raises(ConfigurationError, match="callback"):
        optimizer.register_cleanup_callback("not callable")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ collection


@pytest.mark.both_loops
async def test_perform_optimized_collection_frees_cycles_and_reports(
    optimizer: GarbageCollectionOptimizer,
) -> None:
    gc.collect()
    gc.disable()  # no automatic collection may free them first (the fixture re-enables GC)
    refs = make_garbage_cycles(2000)
    assert all(r() is not None for r in refs)  # only the collector can free them
    result = await optimizer.perform_optimized_collection(2)
    assert all(r() is None for r in refs)
    assert result.generation == 2
    assert result.collected >= 2000
    assert result.uncollectable == 0
    assert result.duration > 0
    assert result.memory_before > 0 and result.memory_after > 0
    assert result.memory_freed == result.memory_before - result.memory_after


async def test_young_collection_only_scans_the_young_generation(
    optimizer: GarbageCollectionOptimizer,
) -> None:
    gc.collect()
    old = Cyclic()
    old_ref = weakref.ref(old)
    gc.collect()  # `old` now lives in the oldest generation
    del old
    young = make_garbage_cycles(10)
    result = await optimizer.perform_optimized_collection(0)
    assert all(r() is None for r in young)
    assert old_ref() is not None  # a young collection does not look at the oldest generation
    assert result.generation == 0
    await optimizer.perform_optimized_collection(2)
    assert old_ref() is None


@pytest.mark.parametrize("generation", [-1, 3, True, 1.0])
async def test_bad_generation_is_a_configuration_error(
    optimizer: GarbageCollectionOptimizer, generation: object
) -> None:
    with pytest.raises(ConfigurationError, match="generation"):
        await optimizer.perform_optimized_collection(generation)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------- lifecycles


def test_monitor_object_lifecycle_records_refcount_and_cycle_deaths(
    optimizer: GarbageCollectionOptimizer,
) -> None:
    plain = Plain()
    ref = optimizer.monitor_object_lifecycle(plain, "plain")
    assert ref() is plain
    cyclic = Cyclic()
    optimizer.monitor_object_lifecycle(cyclic, "cyclic")
    stats = optimizer.lifecycle_stats()
    assert (stats["plain"].live, stats["plain"].collected) == (1, 0)

    del plain  # freed by its refcount
    stats = optimizer.lifecycle_stats()
    assert (stats["plain"].live, stats["plain"].collected) == (0, 1)
    assert stats["plain"].lifetimes.count == 1
    assert ref() is None

    del cyclic
    assert optimizer.lifecycle_stats()["cyclic"].live == 1  # a cycle waits for the collector
    gc.collect()
    stats = optimizer.lifecycle_stats()
    assert (stats["cyclic"].live, stats["cyclic"].collected) == (0, 1)
    assert stats["cyclic"].lifetimes.max >= 0.0


@pytest.mark.parametrize("obj", [1, "text", (1, 2), [1], {"a": 1}])
def test_objects_without_weak_references_get_a_clear_type_error(
    optimizer: GarbageCollectionOptimizer, obj: object
) -> None:
    with pytest.raises(TypeError, match="cannot be weakly referenced"):
        optimizer.monitor_object_lifecycle(obj, "x")


def test_lifecycle_name_must_be_a_string(optimizer: GarbageCollectionOptimizer) -> None:
    with pytest.raises(ConfigurationError, match="name"):
        optimizer.monitor_object_lifecycle(Plain(), "")


# ------------------------------------------------------------------------------------------- pauses


def test_pause_histograms_record_collections_per_generation(optimizer: GarbageCollectionOptimizer) -> None:
    optimizer.pauses.install()
    optimizer.pauses.install()  # idempotent: one callback
    assert sum(1 for cb in gc.callbacks if getattr(cb, "__self__", None) is optimizer.pauses) == 1
    gc.disable()
    make_garbage_cycles(100)
    gc.collect(0)
    gc.collect(2)
    snap = optimizer.pauses.snapshot()
    assert snap[0].count >= 1
    assert snap[2].count >= 1
    assert snap[2].max > 0
    assert optimizer.pauses.collected >= 100
    assert optimizer.pauses.total_seconds > 0
    assert optimizer.get_gc_stats()["pauses_seconds"][2]["count"] >= 1
    optimizer.pauses.uninstall()
    assert all(getattr(cb, "__self__", None) is not optimizer.pauses for cb in gc.callbacks)
    count = optimizer.pauses.snapshot()[2].count
    gc.collect()
    assert optimizer.pauses.snapshot()[2].count == count


# ---------------------------------------------------------------------------------------- collector


def test_detect_collector_on_this_interpreter() -> None:
    info = detect_collector()
    assert isinstance(info, CollectorInfo)
    import sys

    if sys.implementation.name == "cpython" and sys.version_info < (3, 14):
        assert info.kind == "generational"
        assert info.default_young_threshold == (2000 if sys.version_info >= (3, 13) else 700)


def test_detect_collector_knows_the_incremental_releases(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setattr(sys, "version_info", (3, 14, 2, "final", 0))
    assert detect_collector().kind == "incremental"
    monkeypatch.setattr(sys, "version_info", (3, 14, 5, "final", 0))
    assert detect_collector().kind == "generational"


# ---------------------------------------------------------------------------------- verbs and results


def test_optimizing_settings_already_in_force_says_unchanged(
    optimizer: GarbageCollectionOptimizer, caplog: pytest.LogCaptureFixture
) -> None:
    young = max(Settings().gc_collection_threshold, detect_collector().default_young_threshold)
    gc.set_threshold(young, 10, 10)
    with caplog.at_level(logging.INFO, logger="sanaa.gc"):
        change = optimizer.optimize_gc_settings()
    assert (change.applied, change.reason, change.changed, change.froze) == (False, "unchanged", {}, 0)
    assert "GC settings unchanged" in caplog.text
    assert "->" not in caplog.text
    assert optimizer.pauses.installed  # the policy is in force: pauses are recorded all the same
    gc.set_threshold(500, 10, 10)
    change = optimizer.optimize_gc_settings()  # now it does change something
    assert change.applied and change.reason == "applied"


@pytest.mark.parametrize("bad", [10**400, -(10**400), 2**31, -1, 1.0, "5"])
def test_huge_or_malformed_thresholds_are_configuration_errors(
    optimizer: GarbageCollectionOptimizer, bad: object
) -> None:
    with pytest.raises(ConfigurationError, match=r"thresholds\[0\]"):
        optimizer.optimize_gc_settings(thresholds=(bad, 10, 10))  # type: ignore[arg-type]
    assert gc.get_threshold() == GCSettings.capture().thresholds


def test_stats_is_a_frozen_snapshot_and_get_gc_stats_its_dict(optimizer: GarbageCollectionOptimizer) -> None:
    import dataclasses

    optimizer.optimize_gc_settings()
    stats = optimizer.stats()
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.enabled = False  # type: ignore[misc]
    assert stats.state.leases["thresholds"] >= 1
    as_dict = optimizer.get_gc_stats()
    assert set(as_dict) == set(stats.as_dict())
    assert as_dict["thresholds"] == stats.thresholds
    assert as_dict["leases"]["owners"] == ["thresholds:GarbageCollectionOptimizer"]


def test_two_optimizers_restored_in_either_order_put_back_the_original(
    optimizer: GarbageCollectionOptimizer,
) -> None:
    gc.set_threshold(500, 7, 9)
    other = GarbageCollectionOptimizer(Settings())
    optimizer.optimize_gc_settings(thresholds=(1111, 7, 9))
    other.optimize_gc_settings(thresholds=(2222, 8, 9))
    assert gc.get_threshold() == (2222, 8, 9)
    other.restore_gc_settings()  # the newer first...
    assert gc.get_threshold() == (1111, 7, 9)
    other.optimize_gc_settings(thresholds=(3333, 8, 9))
    optimizer.restore_gc_settings()  # ...or the older first: what the other asks for stays in force
    assert gc.get_threshold() == (3333, 8, 9)
    other.restore_gc_settings()
    assert gc.get_threshold() == (500, 7, 9)
