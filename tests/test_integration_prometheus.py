"""Prometheus export: the custom collector on a fresh registry, and the multiprocess path with two worker
processes writing to one PROMETHEUS_MULTIPROC_DIR and a third reading it."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("prometheus_client")
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sanaa_async_mem import AsyncPool, MemoryPool
from sanaa_async_mem.integrations.prometheus import SanaaCollector
from sanaa_async_mem.optimizer import MemoryOptimizer

pytestmark = pytest.mark.usefixtures("gc_baseline")


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_collector_exports_pools_resources_gc_lag_and_trend() -> None:
    extra: AsyncPool[object] = AsyncPool(object, name="extra", max_size=3)
    keyed: MemoryPool[str, object] = MemoryPool(max_size=5, name="buffers")
    keyed.put("k", object())
    async with extra, MemoryOptimizer(snapshot_interval=0.02, pools=[extra, keyed]) as optimizer:
        optimizer.resource_manager.register_resource("db", factory=object, pool_options={"max_size": 2})
        for _ in range(3):
            async with optimizer.resource_manager.acquire("db", "query"):
                pass
        gc.collect()
        registry = CollectorRegistry()
        registry.register(SanaaCollector(optimizer))
        text = generate_latest(registry).decode()
    got = samples(text)
    assert got[("sanaa_pool_acquired_total", (("pool", "db"),))] == 3
    assert got[("sanaa_pool_max_size", (("pool", "db"),))] == 2
    assert got[("sanaa_pool_size", (("pool", "extra"),))] == 0
    assert got[("sanaa_pool_wait_seconds_count", (("pool", "db"),))] == 3
    assert got[("sanaa_pool_wait_seconds_bucket", (("le", "+Inf"), ("pool", "db")))] == 3
    assert got[("sanaa_resource_acquisitions_total", (("resource", "db"),))] == 3
    assert got[("sanaa_object_pool_idle", (("pool", "buffers"),))] == 1
    assert got[("sanaa_gc_pause_seconds_count", (("generation", "2"),))] >= 1
    assert ("sanaa_event_loop_lag_seconds_count", ()) in got
    assert ("sanaa_memory_trend_slope_bytes_per_second", ()) in got
    assert got[("sanaa_memory_leak_suspected", ())] in (0.0, 1.0)
    assert ("sanaa_memory_snapshots_total", ()) in got
    # Buckets are cumulative and never duplicate the default process_*/python_gc_* metrics.
    buckets = [
        v
        for (name, labels), v in got.items()
        if name == "sanaa_pool_use_seconds_bucket" and ("pool", "db") in labels
    ]
    assert max(buckets) == 3
    assert not any(name.startswith(("process_", "python_gc_")) for name, _ in got)


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


def test_multiprocess_mode_sums_counters_and_keeps_a_gauge_per_worker(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for n in ("3", "4"):
        subprocess.run([sys.executable, "-c", WORKER, n], env=env, check=True, timeout=60)
    out = subprocess.run(
        [sys.executable, "-c", READER], env=env, check=True, timeout=60, capture_output=True, text=True
    ).stdout
    got = samples(out)
    assert got[("sanaa_pool_acquired_total", (("pool", "db"),))] == 7
    max_sizes = [v for (name, _labels), v in got.items() if name == "sanaa_pool_max_size"]
    # liveall: one series per worker, labelled with its pid (these workers exited without being marked
    # dead, so both are still there; a server calls multiprocess.mark_process_dead on worker exit).
    assert len(max_sizes) == 2 and all(v == 2 for v in max_sizes)
    assert all("pid" in dict(labels) for (name, labels) in got if name == "sanaa_event_loop_lag_seconds_p99")
