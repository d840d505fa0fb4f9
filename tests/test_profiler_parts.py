"""The profiler's parts: the fixed-memory snapshot ring, the tracing controller's evidence, and the sampling
cadence, including an idle process judged over ten simulated minutes at every supported interval."""

from __future__ import annotations

import asyncio
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from sanaa_async_mem.memory import profiler as profiler_module
from sanaa_async_mem.memory.profiler import MemoryProfiler
from sanaa_async_mem.memory.ring import SnapshotRing
from sanaa_async_mem.memory.snapshots import MemorySnapshot, TopConsumer, load_log
from sanaa_async_mem.memory.tracing import TracingController, relative_location


def snap(i: int, *, traced: bool = False) -> MemorySnapshot:
    return MemorySnapshot(
        timestamp=1.7e9 + i,
        monotonic=float(i),
        rss=10_000 + i,
        vms=20_000 + i,
        uss=None if i % 2 else 5 + i,
        system_total=8 << 30,
        system_available=4 << 30,
        system_percent=12.5,
        gc_counts=(i, 1, 0),
        traced=100 + i if traced else None,
        traced_peak=200 + i if traced else None,
        top=(TopConsumer("app.py:1", 10 * i, i),) if traced else (),
    )


# --- the ring --------------------------------------------------------------------------------------------


def test_ring_keeps_the_newest_snapshots_in_order_and_round_trips_every_field() -> None:
    ring = SnapshotRing(5, keep_top=2)
    for i in range(12):
        ring.append(snap(i, traced=i % 3 == 0))
    kept = ring.snapshots()
    assert [s.monotonic for s in kept] == [7.0, 8.0, 9.0, 10.0, 11.0]
    # Every field comes back, except the top consumers of all but the newest keep_top traced snapshots.
    assert kept[2] == snap(9, traced=True)
    assert kept[1] == snap(8)
    assert ring.last() == snap(11)
    assert ring.rss_summary() == (7.0, 11.0, 10_007, 10_011, 10_007, 10_011)


def test_ring_footprint_is_fixed_at_construction() -> None:
    ring = SnapshotRing(3600)
    before = _deep_size(ring)
    for i in range(10_000):
        ring.append(snap(i))
    assert _deep_size(ring) == before


def _deep_size(ring: SnapshotRing) -> int:
    cols = [*ring._float_cols.values(), *ring._int_cols.values(), ring._gc]
    return sum(sys.getsizeof(c) for c in cols)


# --- tracing ---------------------------------------------------------------------------------------------


def test_relative_location_names_project_and_site_packages_files(tmp_path: Path) -> None:
    here = Path(__file__)
    assert relative_location(str(here), 3) == f"{here.relative_to(Path.cwd())}:3"
    import pytest as module

    assert relative_location(module.__file__ or "", 7).startswith("site-packages/")
    assert relative_location("<frozen abc>", 1) == "<frozen abc>:1"


def _hoard(kept: list[bytes]) -> None:
    for _ in range(300):
        kept.append(b"e" * 5000)  # EVIDENCE-LINE


async def test_evidence_names_the_growing_line_with_its_text_and_rate_and_never_the_library() -> None:
    if tracemalloc.is_tracing():
        pytest.skip("the application already traces")
    tracing = TracingController(top_n=20)
    kept: list[bytes] = []
    await tracing.start("test")
    try:
        await tracing.rank()
        _hoard(kept)
        await asyncio.sleep(0.05)
        await tracing.rank()
        evidence = await tracing.evidence()
    finally:
        await tracing.stop()
    assert not tracemalloc.is_tracing()
    top = evidence[0]
    assert top.location.startswith("tests/test_profiler_parts.py:")
    assert "EVIDENCE-LINE" in top.text
    assert top.size_diff >= 1_000_000 and top.seconds > 0 and top.growth_per_minute > top.size_diff
    for c in evidence:
        assert "sanaa_async_mem/memory" not in c.location and not c.location.startswith("<frozen")
        assert "linecache" not in c.location and "tracemalloc" not in c.location


async def test_a_cancelled_start_leaves_tracing_on_and_owned() -> None:
    if tracemalloc.is_tracing():
        pytest.skip("the application already traces")
    tracing = TracingController()
    task = asyncio.ensure_future(tracing.start())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await tracing.wait_idle()
    assert tracemalloc.is_tracing() and tracing.owned
    await tracing.stop()
    assert not tracemalloc.is_tracing()


# --- cadence and simulated time --------------------------------------------------------------------------


class SimulatedClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _drive(p: MemoryProfiler, clock: SimulatedClock, seconds: float) -> None:
    """What the sampling task does, on a simulated clock: a cheap sample every sample_interval, a stored
    snapshot every interval."""
    end = clock.now + seconds
    next_snapshot = clock.now
    while clock.now < end:
        if clock.now >= next_snapshot:
            await p.take_snapshot()
            next_snapshot += p.interval
        else:
            p.sample()
        await p._after_sample()
        clock.now += p.sample_interval


@pytest.mark.parametrize("interval", [0.05, 0.2, 1.0, 5.0, 60.0])
async def test_an_idle_process_raises_no_alert_over_ten_simulated_minutes(
    interval: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = SimulatedClock()
    monkeypatch.setattr(profiler_module, "_monotonic", clock)
    p = MemoryProfiler(interval=interval, history=3600, auto_trace=False)
    alerts: list[Any] = []
    p.add_alert_callback(alerts.append)
    await _drive(p, clock, 600.0)
    verdict = p.analyze_memory_trends()
    assert [a.kind for a in alerts] == [], [a.message for a in alerts]
    assert not verdict.is_leak, verdict.reason
    assert p.samples >= 600


async def test_a_verdict_comes_within_two_minutes_whatever_the_snapshot_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = SimulatedClock()
    monkeypatch.setattr(profiler_module, "_monotonic", clock)
    p = MemoryProfiler(interval=60.0, auto_trace=False)
    assert p.sample_interval == 1.0
    await _drive(p, clock, 120.0)
    assert p.ticks == 2  # two stored snapshots ...
    assert p.samples >= 120  # ... but a sample every second, all judged
    assert p.analyze_memory_trends().status != "collecting"


async def test_the_store_gets_a_header_then_records_with_samples_and_verdicts(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    async with MemoryProfiler(interval=0.2, sample_interval=0.05, store=path, leak_threshold=4096) as p:
        while p.ticks < 3:
            await asyncio.sleep(0.05)
    log = load_log(path)
    [run] = log.runs
    assert run.header is not None and run.header.settings["leak_threshold"] == 4096
    assert run.header.settings["sample_interval"] == 0.05
    assert len(run.snapshots) >= 3
    # Samples between snapshots are kept, and the last record carries the final verdict.
    assert sum(len(s.samples) for s in run.snapshots) >= 6
    assert run.snapshots[-1].verdict is not None
    assert run.snapshots[-1].verdict["status"] == p.analyze_memory_trends().status
