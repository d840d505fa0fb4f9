"""Prometheus export: the custom collector on a fresh registry (sources by protocol, the status state set,
exact buckets, scrapes from many threads against a live loop), and the multiprocess path with two worker
processes writing to one PROMETHEUS_MULTIPROC_DIR and a third reading it."""

from __future__ import annotations

import asyncio
import gc
import math
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("prometheus_client")
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sanaa_async_mem import AsyncPool, MemoryPool, MemoryProfiler, ResourceManager
from sanaa_async_mem._stats import Histogram as LibraryHistogram
from sanaa_async_mem.errors import ConfigurationError
from sanaa_async_mem.integrations.buckets import BUCKETS, bucket_counts, exported_bounds
from sanaa_async_mem.integrations.prometheus import (
    MetricsEndpoint,
    MultiprocessExporter,
    SanaaCollector,
    _BulkHistogram,
    families,
    prometheus_buckets,
)
from sanaa_async_mem.integrations.readings import STATUSES, MemoryReading, Readings
from sanaa_async_mem.optimizer import MemoryOptimizer

pytestmark = pytest.mark.usefixtures("gc_baseline")

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def status_of(got: Samples) -> str:
    on = [
        dict(labels)["status"]
        for (name, labels), v in got.items()
        if name == "sanaa_memory_trend_status" and v
    ]
    assert len(on) == 1, on
    return on[0]


def scrape(*sources: object) -> Samples:
    registry = CollectorRegistry()
    registry.register(SanaaCollector(*sources))
    return samples(generate_latest(registry).decode())


async def test_collector_exports_pools_resources_gc_lag_and_trend() -> None:
    extra: AsyncPool[object] = AsyncPool(object, name="extra", max_size=3)
    keyed: MemoryPool[str, object] = MemoryPool(max_size=5, name="buffers")
    keyed.put("k", object())
    async with extra, MemoryOptimizer(snapshot_interval=0.02, pools=[extra, keyed]) as optimizer:
        optimizer.resource_manager.register_resource("db", factory=object, pool_options={"max_size": 2})
        optimizer.resource_manager.register_resource("lock", object(), max_concurrent=1)
        for _ in range(3):
            async with optimizer.resource_manager.acquire("db", "query"):
                pass
        async with optimizer.resource_manager.acquire("lock"):
            pass
        gc.collect()
        got = scrape(optimizer)
    assert got[("sanaa_pool_acquired_total", (("pool", "db"),))] == 3
    assert got[("sanaa_pool_max_size", (("pool", "db"),))] == 2
    assert got[("sanaa_pool_size", (("pool", "extra"),))] == 0
    assert got[("sanaa_pool_wait_seconds_count", (("pool", "db"),))] == 3
    assert got[("sanaa_pool_wait_seconds_bucket", (("le", "+Inf"), ("pool", "db")))] == 3
    assert got[("sanaa_resource_acquisitions_total", (("resource", "db"),))] == 3
    # A pool resource's waits are its pool's: only the shared resource has resource histograms.
    assert ("sanaa_resource_wait_seconds_count", (("resource", "db"),)) not in got
    assert got[("sanaa_resource_hold_seconds_count", (("resource", "lock"),))] == 1
    assert got[("sanaa_object_pool_idle", (("pool", "buffers"),))] == 1
    assert got[("sanaa_gc_pause_seconds_count", (("generation", "2"),))] >= 1
    assert ("sanaa_event_loop_lag_seconds_count", ()) in got
    assert got[("sanaa_memory_leak_suspected", ())] in (0.0, 1.0)
    assert ("sanaa_memory_snapshots_total", ()) in got
    assert got[("sanaa_memory_leak_threshold_bytes_per_second", ())] == optimizer.profiler.leak_threshold
    # Whatever status a short run reaches, exactly one is set, and the slope is there only with a verdict.
    status = status_of(got)
    slope = [k for k in got if k[0] == "sanaa_memory_trend_slope_bytes_per_second"]
    assert (status not in ("collecting", "insufficient_data")) == bool(slope)
    # Buckets are cumulative, few, and never duplicate the default process_*/python_gc_* metrics.
    buckets = sorted(
        v
        for (name, labels), v in got.items()
        if name == "sanaa_pool_use_seconds_bucket" and ("pool", "db") in labels
    )
    assert buckets[-1] == 3 and len(buckets) <= 14
    assert not any(name.startswith(("process_", "python_gc_")) for name, _ in got)
    # The whole exposition stays small: few bucket lines (there were ~390 of them alone), and the rest
    # one sample per figure (the pools' close counters by reason add a few per pool).
    assert sum(1 for name, _ in got if name.endswith("_bucket")) < 150
    assert len(got) < 300


async def test_pools_and_memory_without_the_gc_tuner() -> None:
    thresholds = gc.get_threshold()
    pool: AsyncPool[object] = AsyncPool(object, name="cache", max_size=2)
    manager = ResourceManager()
    manager.register_resource("db", factory=object, pool_options={"max_size": 1})
    profiler = MemoryProfiler()
    async with pool, manager:
        async with pool.acquire(), manager.acquire("db"):
            pass
        got = scrape(pool, manager, profiler)
    assert got[("sanaa_pool_acquired_total", (("pool", "cache"),))] == 1
    assert got[("sanaa_pool_acquired_total", (("pool", "db"),))] == 1
    assert got[("sanaa_resource_acquisitions_total", (("resource", "db"),))] == 1
    # A profiler that never ran: no data yet, which is not the same as healthy; and no slope at all.
    assert status_of(got) in ("collecting", "insufficient_data")
    assert not [k for k in got if k[0] == "sanaa_memory_trend_slope_bytes_per_second"]
    assert not [k for k in got if k[0].startswith(("sanaa_gc_", "sanaa_event_loop"))]
    assert gc.get_threshold() == thresholds


def test_a_source_that_is_not_one_is_refused_by_name() -> None:
    with pytest.raises(ConfigurationError, match=r"sources\[1\]"):
        SanaaCollector(MemoryProfiler(), "not a pool")
    with pytest.raises(ConfigurationError, match=r"sources\[0\]"):
        MultiprocessExporter(42, registry=CollectorRegistry())


def _memory(status: str, slope: float | None, to_limit: float | None = None) -> Readings:
    reading = MemoryReading(
        status=status,
        label=status,
        is_leak=status == "leak",
        slope=slope,
        slope_low=None if slope is None else slope / 2,
        slope_high=None if slope is None else slope * 2,
        threshold=1000.0,
        limit=2.0**29,
        seconds_to_limit=to_limit,
        source="rss",
        samples=10,
        snapshots=1,
        failures=0,
        leak_alert_active=False,
    )
    empty = Readings.empty()
    return Readings(
        empty.taken_at,
        empty.pools,
        empty.object_pools,
        empty.resources,
        empty.gc_pauses,
        None,
        None,
        reading,
        empty.other,
    )


@pytest.mark.parametrize("status", STATUSES)
def test_status_state_set_has_every_status_and_the_slope_only_with_one(status: str) -> None:
    has_slope = status not in ("collecting", "insufficient_data")
    fams = {
        f.name: f
        for f in families(_memory(status, 1234.0 if has_slope else None, 60.0 if has_slope else None))
    }
    states = {labels[0]: v for labels, v in fams["sanaa_memory_trend_status"].samples}
    assert set(states) == set(STATUSES) and sum(states.values()) == 1 and states[status] == 1
    slope = fams["sanaa_memory_trend_slope_bytes_per_second"].samples
    assert slope == ((("rss",), 1234.0),) if has_slope else slope == ()
    assert bool(fams["sanaa_memory_seconds_to_limit"].samples) == has_slope
    assert fams["sanaa_memory_leak_suspected"].samples == (((), 1.0 if status == "leak" else 0.0),)


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.floats(min_value=0, max_value=5000, allow_nan=False), max_size=300),
    family=st.sampled_from(sorted(BUCKETS)),
)
def test_exported_buckets_are_exact(values: list[float], family: str) -> None:
    lib = LibraryHistogram()
    for v in values:
        lib.record(v)
    snap = lib.snapshot()
    pairs = prometheus_buckets(snap, family)
    assert pairs[-1] == ("+Inf", float(len(values)))
    les = [float(le) for le, _ in pairs[:-1]]
    assert les == sorted(les) and len(les) <= 13
    # Each exported bound is (to four digits) a library bound, so counts are exact: the samples at or
    # below that library bound, no more, no less.
    for (le, count), bound in zip(pairs[:-1], _library_bounds_for(les, snap.bounds), strict=True):
        assert count == sum(1 for v in values if v <= bound), (le, bound)


def _library_bounds_for(les: list[float], bounds: tuple[float, ...]) -> list[float]:
    out = []
    for le in les:
        (b,) = [b for b in bounds if abs(b - le) <= 5e-4 * b]
        out.append(b)
    return out


def test_bucket_choice_per_family_covers_what_alerts_need() -> None:
    latency = exported_bounds("latency")
    assert latency[0] < 2e-4 and latency[-1] >= 25
    assert any(0.09 < b < 0.11 for b in latency)  # the wait p99 alert's 100 ms
    assert exported_bounds("gc_pause")[-1] >= 2.5
    assert exported_bounds("loop_lag")[0] < 5e-4


async def test_scrape_storm_from_threads_never_fails_and_keeps_the_loop_running() -> None:
    """Scrapes from 16 threads (as start_http_server does, each pausing 5 ms between scrapes as a network
    round trip would) while tasks acquire and release on the loop: every scrape parses, counters never go
    backwards, buckets agree with counts, the loop keeps running its timers, and no sample is lost (each
    acquire is in the final counts exactly once). The interpreter switches threads every 10 us instead of
    every 5 ms, so that a read racing the loop (as reading pools from the scrape thread did: samples folded
    twice or lost) shows up within seconds instead of once in thousands of scrapes."""
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        await _storm()
    finally:
        sys.setswitchinterval(switch)


async def _storm() -> None:
    pool: AsyncPool[object] = AsyncPool(object, name="hot", max_size=4)
    async with pool, MemoryOptimizer(pools=[pool], snapshot_interval=0.05) as optimizer:
        registry = CollectorRegistry()
        collector = SanaaCollector(optimizer, max_age=0.0)  # every scrape asks the loop: the hardest case
        registry.register(collector)
        stop = threading.Event()
        errors: list[BaseException] = []
        scrapes = [0]

        def scraper() -> None:
            last = -1.0
            try:
                while not stop.is_set():
                    got = samples(generate_latest(registry).decode())
                    acquired = got[("sanaa_pool_acquired_total", (("pool", "hot"),))]
                    assert acquired >= last
                    last = acquired
                    for field in ("wait", "use"):
                        inf = got[(f"sanaa_pool_{field}_seconds_bucket", (("le", "+Inf"), ("pool", "hot")))]
                        assert inf == got[(f"sanaa_pool_{field}_seconds_count", (("pool", "hot"),))]
                    scrapes[0] += 1
                    stop.wait(0.005)
            except BaseException as exc:
                errors.append(exc)

        done = [0]

        async def worker() -> None:
            while not stop.is_set():
                async with pool.acquire():
                    await asyncio.sleep(0)
                done[0] += 1

        optimizer.lag_monitor.reset()
        threads = [threading.Thread(target=scraper, daemon=True) for _ in range(16)]
        for t in threads:
            t.start()
        workers = [asyncio.create_task(worker()) for _ in range(8)]
        # At least 3 s, and on until both sides did enough work to mean something (a loaded CI machine can
        # take far longer than 3 s for a hundred scrapes under a 10 us switch interval).
        started = time.monotonic()
        while time.monotonic() - started < 3.0 or (scrapes[0] <= 100 or done[0] <= 100):
            if time.monotonic() - started > 120.0:
                break
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.gather(*workers)
        lag = optimizer.lag_monitor.snapshot()
        for t in threads:
            await asyncio.to_thread(t.join, 30)
        assert not errors, errors[:3]
        assert scrapes[0] > 100 and done[0] > 100
        final = samples(generate_latest(registry).decode())
    assert final[("sanaa_pool_acquired_total", (("pool", "hot"),))] == done[0]
    assert final[("sanaa_pool_use_seconds_count", (("pool", "hot"),))] == done[0]
    assert final[("sanaa_pool_wait_seconds_count", (("pool", "hot"),))] == done[0]
    # The loop kept running its timers: bounds no loaded machine should miss and a starved loop would.
    assert lag.count > 20 and lag.p90 < 0.5, lag.as_dict()


async def test_a_blocked_loop_gets_older_figures_not_an_error() -> None:
    pool: AsyncPool[object] = AsyncPool(object, name="p", max_size=1)
    async with pool:
        collector = SanaaCollector(pool, max_age=0.0, wait=0.1)
        registry = CollectorRegistry()
        registry.register(collector)
        collector.readings()  # one read, inline, on the loop
        async with pool.acquire():
            pass
        result: list[Samples] = []
        thread = threading.Thread(target=lambda: result.append(samples(generate_latest(registry).decode())))
        thread.start()
        time.sleep(0.5)  # block the loop: the scraper cannot be answered
        thread.join(5)
        got = result[0]
        # The figures from before the block (no acquire yet), and the stale read counted.
        assert got[("sanaa_pool_acquired_total", (("pool", "p"),))] == 0
        assert got[("sanaa_metrics_stale_reads_total", ())] == 1
        await asyncio.sleep(0.05)  # the loop runs the pending read now
        fresh = await asyncio.to_thread(lambda: samples(generate_latest(registry).decode()))
        assert fresh[("sanaa_pool_acquired_total", (("pool", "p"),))] == 1


async def test_metrics_endpoint_renders_once_for_concurrent_scrapes() -> None:
    calls = [0]

    class Counting(CollectorRegistry):
        def collect(self):  # type: ignore[no-untyped-def]
            calls[0] += 1
            time.sleep(0.05)
            yield from super().collect()

    endpoint = MetricsEndpoint(Counting(), max_age=10.0)
    bodies = await asyncio.gather(*(endpoint.arender() for _ in range(20)))
    assert len(set(bodies)) == 1 and calls[0] == 1


def test_bulk_histogram_equals_observing_each_sample() -> None:
    registry = CollectorRegistry()
    values = [0.00005, 0.0002, 0.002, 0.002, 0.05, 0.7, 12.0, 99.0]
    lib = LibraryHistogram()
    for v in values:
        lib.record(v)
    layout, counts = bucket_counts(lib.snapshot(), "latency")
    bulk = _BulkHistogram("bulk_seconds", "bulk", buckets=layout.bounds, registry=registry)
    bulk.add_counts(counts, sum(values))
    ref = Histogram("ref_seconds", "ref", buckets=layout.bounds, registry=registry)
    for v in values:
        ref.observe(v)
    got = samples(generate_latest(registry).decode())
    for (name, labels), v in got.items():
        if name.startswith("bulk_seconds_") and not name.endswith("_created"):
            assert math.isclose(got[(name.replace("bulk", "ref"), labels)], v), name


WORKER = textwrap.dedent(
    """
    import asyncio, sys
    from prometheus_client import CollectorRegistry
    from sanaa_async_mem.integrations.prometheus import MultiprocessExporter
    from sanaa_async_mem.optimizer import MemoryOptimizer

    async def main() -> None:
        async with MemoryOptimizer(snapshot_interval=0.02) as optimizer:
            optimizer.resource_manager.register_resource("db", factory=object, pool_options={"max_size": 2})
            async with MultiprocessExporter(optimizer, interval=0.01, registry=CollectorRegistry()):
                for _ in range(int(sys.argv[1])):
                    async with optimizer.resource_manager.acquire("db"):
                        await asyncio.sleep(0)
                await asyncio.sleep(0.05)

    asyncio.run(main())
    """
)

READER = textwrap.dedent(
    """
    from prometheus_client import CollectorRegistry, generate_latest, multiprocess
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    print(generate_latest(registry).decode())
    """
)


def test_multiprocess_mode_sums_counters_and_histograms_and_keeps_a_gauge_per_worker(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for n in ("3", "4"):
        subprocess.run([sys.executable, "-c", WORKER, n], env=env, check=True, timeout=60)
    out = subprocess.run(
        [sys.executable, "-c", READER], env=env, check=True, timeout=60, capture_output=True, text=True
    ).stdout
    got = samples(out)
    assert got[("sanaa_pool_acquired_total", (("pool", "db"),))] == 7
    # Real histograms, summed over the workers: the count is every acquire, the buckets add up to it.
    assert got[("sanaa_pool_wait_seconds_count", (("pool", "db"),))] == 7
    assert got[("sanaa_pool_use_seconds_bucket", (("le", "+Inf"), ("pool", "db")))] == 7
    assert got[("sanaa_event_loop_lag_seconds_count", ())] > 0
    assert not [name for name, _ in got if name.endswith(("_p50", "_p99", "_max"))]
    max_sizes = [v for (name, _labels), v in got.items() if name == "sanaa_pool_max_size"]
    # liveall: one series per worker, labelled with its pid (these workers exited without being marked
    # dead, so both are still there; a server calls multiprocess.mark_process_dead on worker exit).
    assert len(max_sizes) == 2 and all(v == 2 for v in max_sizes)
    statuses = [labels for (name, labels), v in got.items() if name == "sanaa_memory_trend_status" and v == 1]
    assert len(statuses) == 2  # one current status per worker


def test_two_exporters_on_one_registry_are_refused_at_construction() -> None:
    registry = CollectorRegistry()
    profiler = MemoryProfiler()
    MultiprocessExporter(profiler, registry=registry)
    with pytest.raises(ValueError, match="Duplicated"):
        MultiprocessExporter(profiler, registry=registry)
