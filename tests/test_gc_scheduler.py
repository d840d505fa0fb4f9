"""GCScheduler on asyncio and uvloop: full collections taken away from the interpreter, run when the loop is
idle, forced by the deadline and the memory cap on a saturated loop, and every setting restored on stop,
cancellation and failure. Waits are event-driven with generous limits: nothing here asserts speed."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import weakref
from collections.abc import Callable

import pytest

from sanaa_async_mem.collector.optimizer import CollectorInfo, GarbageCollectionOptimizer
from sanaa_async_mem.collector.scheduler import GCScheduler
from sanaa_async_mem.config import Settings
from sanaa_async_mem.errors import ConfigurationError, GCError

OUT_OF_REACH = 2**31 - 1


class Cyclic:
    def __init__(self) -> None:
        self.me = self


pytestmark = pytest.mark.usefixtures("gc_baseline")


async def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll the loop until ``predicate()``; fail after a generous ``timeout`` (slow machines are fine)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


def garbage_in_oldest_generation() -> weakref.ref[Cyclic]:
    """A cycle that reached the oldest generation before becoming garbage: only a full collection frees it.

    Collecting generation 1 promotes it; ten middle collections make a full one due for a scheduler that
    has not measured the heap's growth yet (the interpreter's own first criterion).
    """
    obj = Cyclic()
    ref = weakref.ref(obj)
    for _ in range(10):
        gc.collect(1)
    del obj
    return ref


def scheduler(**kwargs: object) -> GCScheduler:
    kwargs.setdefault("memory_cap_bytes", 0)
    kwargs.setdefault("check_interval", 0.01)
    return GCScheduler(settings=Settings(), **kwargs)  # type: ignore[arg-type]


def generational() -> CollectorInfo:
    return CollectorInfo("generational", 3, 700, "test")


# ------------------------------------------------------------------------------------------ lifecycle


@pytest.mark.both_loops
async def test_start_takes_full_collections_and_stop_restores_the_threshold() -> None:
    gc.set_threshold(900, 11, 12)
    sch = scheduler(collector=generational())
    async with sch:
        assert sch.mode == "deferred"
        assert sch.running
        assert gc.get_threshold() == (900, 11, OUT_OF_REACH)
    assert gc.get_threshold() == (900, 11, 12)
    assert not sch.running
    await sch.stop()  # idempotent
    assert gc.get_threshold() == (900, 11, 12)


@pytest.mark.both_loops
async def test_interpreter_starts_no_full_collection_while_deferred() -> None:
    full = []

    def count_full(phase: str, info: dict[str, int]) -> None:
        if phase == "stop" and info["generation"] == 2:
            full.append(1)

    gc.callbacks.append(count_full)
    # The task never looks (check_interval of an hour): only the interpreter could collect generation 2.
    async with scheduler(collector=generational(), check_interval=3600):
        keep = [[i] for i in range(300_000)]  # ~430 middle collections: dozens of full ones by default
        assert gc.get_count()[2] > 10
        assert full == []
    del keep
    gc.collect()
    assert full, "the callback sees full collections once they are allowed"


@pytest.mark.both_loops
async def test_cancelling_the_owner_restores_settings() -> None:
    started = asyncio.Event()

    async def service() -> None:
        async with scheduler(collector=generational()):
            started.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(service())
    await started.wait()
    assert gc.get_threshold()[2] == OUT_OF_REACH
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gc.get_threshold() == (700, 10, 10)


@pytest.mark.both_loops
async def test_cancelling_the_background_task_restores_settings() -> None:
    sch = scheduler(collector=generational())
    await sch.start()
    (task,) = [t for t in asyncio.all_tasks() if t.get_name() == "sanaa-gc-scheduler"]
    task.cancel()  # what loop shutdown does to leftover tasks
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gc.get_threshold() == (700, 10, 10)
    await sch.stop()
    assert gc.get_threshold() == (700, 10, 10)


async def test_starting_twice_is_an_error() -> None:
    async with scheduler(collector=generational()) as sch:
        with pytest.raises(GCError, match="already running"):
            await sch.start()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("deadline", 0),
        ("check_interval", -1.0),
        ("gc_budget", 0.0),
        ("gc_budget", 2.0),
        ("memory_cap_bytes", -5),
    ],
)
def test_bad_parameters_are_configuration_errors(name: str, value: object) -> None:
    with pytest.raises(ConfigurationError, match=name):
        GCScheduler(settings=Settings(), **{name: value})  # type: ignore[arg-type]


def test_memory_cap_defaults_to_the_high_memory_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMORY_HIGH_USAGE_BYTES", "123456789")
    assert GCScheduler().memory_cap_bytes == 123456789


# ----------------------------------------------------------------------------------------- collections


@pytest.mark.both_loops
async def test_idle_loop_gets_a_full_collection_without_any_integration() -> None:
    async with scheduler(collector=generational(), deadline=3600) as sch:
        ref = garbage_in_oldest_generation()
        await wait_until(lambda: sch.stats().full_collections["idle"] >= 1, "an idle full collection")
        stats = sch.stats()
        assert ref() is None
        assert stats.full_collections["deadline"] == 0
        assert stats.max_collection_seconds > 0


@pytest.mark.both_loops
async def test_a_request_in_flight_holds_back_idle_collections() -> None:
    async with scheduler(collector=generational(), deadline=3600) as sch:
        sch.request_started()
        ref = garbage_in_oldest_generation()
        await asyncio.sleep(0.3)  # dozens of ticks on an otherwise idle loop
        assert sch.stats().full_collections["idle"] == 0
        assert ref() is not None
        sch.request_finished()
        await wait_until(lambda: sch.stats().full_collections["idle"] >= 1, "an idle full collection")
        assert ref() is None


@pytest.mark.both_loops
async def test_deadline_forces_a_full_collection_on_a_saturated_loop() -> None:
    stop = False

    async def busy() -> None:
        # Always something ready: every loop iteration runs ~2 ms of work.
        while not stop:
            end = time.perf_counter() + 0.002
            while time.perf_counter() < end:
                pass
            await asyncio.sleep(0)

    async with scheduler(collector=generational(), deadline=0.2) as sch:
        with sch.request():  # a request is always in flight: the loop is never idle
            workers = [asyncio.create_task(busy()) for _ in range(3)]
            try:
                ref = garbage_in_oldest_generation()
                await wait_until(
                    lambda: sch.stats().full_collections["deadline"] >= 1, "a deadline collection"
                )
            finally:
                stop = True
                await asyncio.gather(*workers)
        assert ref() is None
        assert sch.stats().full_collections["idle"] == 0
    assert sch.in_flight == 0


@pytest.mark.both_loops
async def test_memory_cap_forces_a_collection_and_runs_cleanup_callbacks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cleaned: list[str] = []
    optimizer = GarbageCollectionOptimizer(Settings())

    async def drop_caches() -> None:
        cleaned.append("async")

    optimizer.register_cleanup_callback(drop_caches)
    sch = scheduler(
        collector=generational(),
        deadline=3600,
        memory_cap_bytes=1000,
        cap_min_interval=3600,
        rss_reader=lambda: 10**12,  # far above the cap
        optimizer=optimizer,
    )
    with caplog.at_level(logging.WARNING, logger="sanaa.gc"):
        async with sch:
            sch.request_started()  # busy: only the cap can collect
            ref = garbage_in_oldest_generation()
            await wait_until(lambda: sch.stats().full_collections["memory_cap"] >= 1, "a cap collection")
            sch.request_finished()
    assert ref() is None
    assert cleaned == ["async"]  # once: cap_min_interval holds back the next one
    assert sch.stats().full_collections["memory_cap"] == 1
    assert sch.stats().last_rss == 10**12
    assert "still above the memory cap" in caplog.text


@pytest.mark.both_loops
async def test_disabled_gc_is_respected_except_for_the_memory_cap() -> None:
    rss = [0]
    async with scheduler(
        collector=generational(),
        deadline=0.01,
        memory_cap_bytes=1000,
        cap_min_interval=0,
        rss_reader=lambda: rss[0],
    ) as sch:
        gc.disable()
        ref = garbage_in_oldest_generation()
        await asyncio.sleep(0.3)  # dozens of ticks on an idle loop, deadline long passed
        assert sch.stats().full_collections == {"idle": 0, "deadline": 0, "memory_cap": 0}
        assert ref() is not None
        rss[0] = 10**12
        await wait_until(lambda: sch.stats().full_collections["memory_cap"] >= 1, "a cap collection")
        assert ref() is None


@pytest.mark.both_loops
async def test_a_failing_tick_is_logged_and_the_scheduler_keeps_going(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = [0]

    def flaky_reader() -> int:
        calls[0] += 1
        if calls[0] == 1:
            raise OSError("cgroup file vanished")
        return 10**12

    with caplog.at_level(logging.ERROR, logger="sanaa.gc"):
        async with scheduler(
            collector=generational(), deadline=3600, memory_cap_bytes=1000, rss_reader=flaky_reader
        ) as sch:
            await wait_until(lambda: sch.stats().full_collections["memory_cap"] >= 1, "a cap collection")
            assert sch.running
    assert "tick failed" in caplog.text
    assert gc.get_threshold() == (700, 10, 10)


# ------------------------------------------------------------------------------------------- requests


def test_request_tracking_counts_and_never_goes_negative() -> None:
    sch = scheduler(collector=generational())
    sch.request_finished()
    assert sch.in_flight == 0
    with sch.request():
        sch.request_started()
        assert sch.in_flight == 2
        sch.request_finished()
    assert sch.in_flight == 0


async def test_request_scope_works_with_async_with_and_exceptions() -> None:
    sch = scheduler(collector=generational())
    with pytest.raises(ValueError):
        async with sch.request():
            assert sch.in_flight == 1
            raise ValueError
    assert sch.in_flight == 0


# ---------------------------------------------------------------------------------- other collectors


@pytest.mark.both_loops
@pytest.mark.parametrize("kind", ["incremental", "unknown"])
async def test_passive_mode_changes_nothing_and_only_enforces_the_cap(kind: str) -> None:
    rss = [0]
    info = CollectorInfo(kind, 2, 2000, "test")  # type: ignore[arg-type]
    async with scheduler(
        collector=info, deadline=0.01, memory_cap_bytes=1000, cap_min_interval=0, rss_reader=lambda: rss[0]
    ) as sch:
        assert sch.mode == "passive"
        assert gc.get_threshold() == (700, 10, 10)
        garbage_in_oldest_generation()
        await asyncio.sleep(0.2)
        assert sch.stats().full_collections == {"idle": 0, "deadline": 0, "memory_cap": 0}
        rss[0] = 10**12
        await wait_until(lambda: sch.stats().full_collections["memory_cap"] >= 1, "a cap collection")
    assert gc.get_threshold() == (700, 10, 10)


# -------------------------------------------------------------------------------------- the due rule


def test_parity_growth_is_the_interpreters_rule_without_a_frozen_heap_and_grows_with_its_savings() -> None:
    from sanaa_async_mem.collector.scheduler import parity_growth

    assert parity_growth(1e-7, 50_000, 1e-7, 0) == 0.25  # nothing frozen: CPython's own 25%
    assert parity_growth(1e-7, 50_000, 1e-7, 10**6) == pytest.approx(0.25)  # equal costs
    # Live objects twice as dear to re-scan as the frozen heap was: twice the growth per collection.
    assert parity_growth(2e-7, 50_000, 1e-7, 10**9) == pytest.approx(0.5, rel=1e-3)
    assert parity_growth(1e-6, 50_000, 1e-7, 10**9) == 1.0  # bounded: the pause grows with it
    assert parity_growth(1e-9, 50_000, 1e-7, 10**6) == 0.25  # never more often than the interpreter
    assert parity_growth(0.0, 0, 0.0, 0) == 0.25


def test_a_fixed_due_growth_is_used_as_given_and_validated() -> None:
    assert scheduler(collector=generational(), due_growth=0.6).due_ratio() == 0.6
    assert scheduler(collector=generational()).due_ratio() == 0.25  # nothing measured yet
    with pytest.raises(ConfigurationError, match="due_growth"):
        scheduler(due_growth=0)
    with pytest.raises(ConfigurationError, match="calibrate_every"):
        scheduler(calibrate_every=0)


@pytest.mark.both_loops
async def test_the_live_heap_rescan_is_measured_and_reported() -> None:
    async with scheduler(collector=generational(), deadline=3600) as sch:
        assert sch.stats().live_scan_seconds is None
        garbage_in_oldest_generation()
        await wait_until(lambda: sch.stats().full_collections["idle"] >= 1, "an idle full collection")
        stats = sch.stats()
        assert stats.live_scan_seconds is not None and stats.live_scan_seconds > 0
        assert stats.live_objects is not None and stats.live_objects > 0
        assert stats.as_dict()["due_growth"] == stats.due_growth
        assert 0.25 <= stats.due_growth <= 1.0
