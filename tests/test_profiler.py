"""MemoryProfiler in a real running loop: lifecycle, cancellation, failures, alerts, tracing, a real leak."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sanaa_async_mem._process import process as sanaa_process
from sanaa_async_mem.config import Settings
from sanaa_async_mem.errors import ConfigurationError
from sanaa_async_mem.memory.profiler import MemoryAlert, MemoryProfiler
from sanaa_async_mem.memory.snapshots import read_snapshots
from sanaa_async_mem.memory.trend import TrendAnalyzer


def profiler_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name() == "sanaa-memory-profiler" and not t.done()]


async def wait_for(predicate: Any, timeout: float = 30.0) -> None:
    """Poll until predicate() is true; the timeout is generous, only a hang should reach it."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


@pytest.fixture(autouse=True)
def _no_leftover_tracing() -> Any:
    was = tracemalloc.is_tracing()
    yield
    if tracemalloc.is_tracing() and not was:
        tracemalloc.stop()


# --- configuration ---


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"interval": 0}, "interval"),
        ({"interval": -1.0}, "interval"),
        ({"history": 1}, "history"),
        ({"leak_threshold": 0}, "leak_threshold"),
        ({"high_memory_bytes": 0}, "high_memory_bytes"),
        ({"persistence": 0}, "persistence"),
        ({"warmup": -5}, "warmup"),
        ({"analyzer": object()}, "analyzer"),
    ],
)
def test_bad_configuration_names_the_parameter(kwargs: dict[str, Any], param: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        MemoryProfiler(**kwargs)
    assert info.value.name == param


def test_interval_and_thresholds_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMORY_SNAPSHOT_INTERVAL", "2.5")
    monkeypatch.setenv("MEMORY_LEAK_THRESHOLD", "2000")
    p = MemoryProfiler()
    assert p.interval == 2.5
    assert p.leak_threshold == 2000.0
    assert p.high_memory_bytes == 500 * 1024 * 1024
    assert MemoryProfiler(interval=0.5).interval == 0.5
    assert MemoryProfiler(settings=Settings.from_env({})).interval == 60.0


# --- lifecycle ---


async def test_starting_twice_runs_one_task_and_stop_leaves_none() -> None:
    p = MemoryProfiler(interval=3600)
    await p.start_profiling()
    await p.start_profiling()
    assert len(profiler_tasks()) == 1 and p.is_running
    await p.stop_profiling()
    assert profiler_tasks() == [] and not p.is_running
    await p.stop_profiling()  # a no-op


async def test_stop_is_prompt_even_with_a_long_interval() -> None:
    async with MemoryProfiler(interval=3600) as p:
        assert p.is_running
    # Reaching here at all is the point: the one-hour sleep was cancelled.
    assert profiler_tasks() == []


async def test_snapshots_are_taken_periodically_into_a_bounded_history() -> None:
    async with MemoryProfiler(interval=0.01, history=8) as p:
        await wait_for(lambda: p.ticks >= 12)
    assert len(p.history) == 8
    times = [s.monotonic for s in p.history]
    assert times == sorted(times)


async def test_a_failing_snapshot_is_logged_and_counted_and_the_task_keeps_going(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    p = MemoryProfiler(interval=0.01)
    proc = sanaa_process()
    real = proc.memory_info
    calls = {"n": 0}

    def flaky() -> Any:
        calls["n"] += 1
        if calls["n"] <= 2:
            raise OSError("procfs unavailable")
        return real()

    monkeypatch.setattr(proc, "memory_info", flaky)
    with caplog.at_level(logging.WARNING, logger="sanaa.memory"):
        async with p:
            await wait_for(lambda: p.ticks >= 3)
    assert p.failures == 2
    assert sum("memory sample failed" in r.getMessage() for r in caplog.records) == 2
    assert p.get_memory_report()["sampler"]["failures"] == 2


async def test_take_snapshot_measures_process_system_and_gc() -> None:
    p = MemoryProfiler(include_uss=True)
    s = await p.take_snapshot()
    assert s.rss > 0 and s.vms >= s.rss
    assert s.uss is not None and 0 < s.uss <= s.rss
    assert s.system_total > s.system_available > 0
    assert len(s.gc_counts) >= 2
    assert s.traced is None and s.top == ()
    assert p.history == (s,)


async def test_report_is_plain_json_with_recommendations() -> None:
    p = MemoryProfiler(interval=3600)
    report = p.get_memory_report()
    assert report["trend"]["status"] == "collecting"
    for _ in range(3):
        await p.take_snapshot()
    report = p.get_memory_report()
    assert json.loads(json.dumps(report)) == report
    assert report["current"]["rss"] > 0 and report["history"]["snapshots"] == 3
    assert report["recommendations"] and isinstance(report["recommendations"][0], str)
    assert set(report) >= {"current", "history", "trend", "top_consumers", "recommendations", "alerts"}


async def test_snapshots_are_persisted_as_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "mem.jsonl"
    async with MemoryProfiler(interval=0.01, store=path) as p:
        await wait_for(lambda: p.ticks >= 5)
    records = await read_snapshots(path)
    assert len(records) == p.ticks
    assert [r.rss for r in records] == [s.rss for s in p.history][-len(records) :]


# --- cancellation ---


async def test_cancelling_stop_still_stops_the_task() -> None:
    p = MemoryProfiler(interval=0.01)
    await p.start_profiling()
    stopper = asyncio.ensure_future(p.stop_profiling())
    await asyncio.sleep(0)
    stopper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopper
    await wait_for(lambda: profiler_tasks() == [], timeout=10.0)
    assert not p.is_running


async def test_cancelling_start_leaves_no_task(tmp_path: Path) -> None:
    p = MemoryProfiler(interval=0.01, store=tmp_path / "s.jsonl")
    starter = asyncio.ensure_future(p.start_profiling())
    await asyncio.sleep(0)  # starter is now awaiting the store's open() in a worker thread
    starter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starter
    assert profiler_tasks() == [] and not p.is_running
    await p.stop_profiling()


async def test_a_cancelled_snapshot_records_nothing() -> None:
    p = MemoryProfiler(include_uss=True)
    taker = asyncio.ensure_future(p.take_snapshot())
    await asyncio.sleep(0)  # waiting for USS from the worker thread
    taker.cancel()
    with pytest.raises(asyncio.CancelledError):
        await taker
    assert p.history == () and p.ticks == 0


# --- alerts ---


async def test_high_memory_alerts_once_per_episode_to_sync_and_async_callbacks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen_sync: list[MemoryAlert] = []
    seen_async: list[MemoryAlert] = []

    async def on_alert(alert: MemoryAlert) -> None:
        await asyncio.sleep(0)
        seen_async.append(alert)

    def broken(alert: MemoryAlert) -> None:
        raise RuntimeError("a broken callback must not stop the profiler")

    p = MemoryProfiler(interval=0.01, high_memory_bytes=1)
    p.add_alert_callback(broken)
    p.add_alert_callback(seen_sync.append)
    p.add_alert_callback(on_alert)
    with caplog.at_level(logging.WARNING, logger="sanaa.memory"):
        async with p:
            await wait_for(lambda: p.ticks >= 10)
    assert [a.kind for a in seen_sync] == ["high_memory"]
    assert [a.kind for a in seen_async] == ["high_memory"]
    [record] = [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING and getattr(r, "sanaa_alert", "") == "high_memory"
    ]
    assert record.sanaa_threshold == 1.0  # type: ignore[attr-defined]
    assert p.get_memory_report()["alerts"]["high_memory_active"] is True


async def test_a_real_leak_in_a_coroutine_is_detected_traced_and_alerted_once() -> None:
    kept: list[bytes] = []

    async def leaky_handler() -> None:
        while True:
            kept.append(b"x" * 20_000)  # ~2 MB/s, kept forever: a real leak (LEAK-LINE)
            await asyncio.sleep(0.01)

    alerts: list[MemoryAlert] = []
    # 100 kB/s threshold and 20 Hz sampling so the whole test takes a few seconds.
    p = MemoryProfiler(
        interval=0.05, leak_threshold=100_000, history=400, evidence_snapshots=3, trace_interval=0.2
    )
    p.add_alert_callback(alerts.append)
    async with p:
        leaker = asyncio.create_task(leaky_handler())
        try:
            await wait_for(lambda: any(a.kind == "leak" for a in alerts), timeout=60.0)
            await wait_for(lambda: p._evidence != (), timeout=60.0)
            report = p.get_memory_report()
        finally:
            leaker.cancel()
    [leak] = [a for a in alerts if a.kind == "leak"]
    assert leak.verdict is not None and leak.verdict.is_leak
    # A leak is growth consistent with the threshold: its interval reaches it and its estimate is at least
    # half of it (a loaded machine runs the leaking coroutine less often than every 10 ms).
    assert leak.verdict.slope_high >= 100_000 and leak.verdict.slope >= 50_000
    assert leak.verdict.significant  # the one-sided bound is above zero (the two-sided one may not be)
    assert any("test_profiler.py" in c["location"] and c["size_diff"] > 0 for c in report["top_consumers"])
    assert not tracemalloc.is_tracing()  # automatic tracing stopped after capturing its evidence


async def test_a_quiet_coroutine_raises_no_leak_alert() -> None:
    alerts: list[MemoryAlert] = []

    async def quiet() -> None:
        while True:
            _ = [b"y" * 1000 for _ in range(100)]  # allocates and frees: churn, not a leak
            await asyncio.sleep(0.005)

    analyzer = TrendAnalyzer(threshold=100_000, min_samples=20)
    async with MemoryProfiler(interval=0.02, analyzer=analyzer, leak_threshold=100_000) as p:
        p.add_alert_callback(alerts.append)
        worker = asyncio.create_task(quiet())
        await wait_for(lambda: p.ticks >= 60)
        worker.cancel()
    assert [a for a in alerts if a.kind == "leak"] == []


# --- tracing ---


async def test_tracing_on_request_reports_top_consumers_with_diffs_and_stops_after() -> None:
    if tracemalloc.is_tracing():
        pytest.skip("the application already traces")
    hoard: list[bytes] = []
    async with MemoryProfiler(interval=3600, trace=True, auto_trace=False) as p:
        assert tracemalloc.is_tracing()
        await p.take_snapshot()
        hoard.extend(b"z" * 10_000 for _ in range(200))  # HOARD
        s = await p.take_snapshot()
        assert s.traced is not None and s.traced_peak is not None and s.traced_peak >= s.traced
        assert s.top and s.top[0].size_diff >= 1_000_000
        assert "test_profiler.py" in s.top[0].location
    assert not tracemalloc.is_tracing()


async def test_a_trace_the_application_started_is_left_running() -> None:
    if tracemalloc.is_tracing():
        pytest.skip("the application already traces")
    tracemalloc.start()
    try:
        async with MemoryProfiler(interval=3600, trace=True):
            pass
        assert tracemalloc.is_tracing()
    finally:
        tracemalloc.stop()


async def _agen() -> AsyncIterator[int]:  # pragma: no cover - keeps AsyncIterator imported for typing
    yield 1


def test_analysis_work_stays_bounded_however_long_the_series() -> None:
    p = MemoryProfiler(history=3600, interval=60.0)
    for i in range(5000):
        p._add_sample(float(i), 100_000_000 + 1000 * i, None)
    ts, _ = p._series.series(p.analyzer.min_samples)
    # The analysis sees the last hour of samples as 100 to 200 equal blocks (plus the block being filled).
    assert 100 <= len(ts) <= 201
    assert ts[0] >= 5000 - 3600 - 64 and ts[-1] > 4990.0
    verdict = p.analyze_memory_trends()
    assert verdict.is_leak and verdict.slope == pytest.approx(1000.0, rel=0.01)


async def test_a_snapshot_cancelled_while_being_stored_still_reaches_the_file(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    p = MemoryProfiler(interval=3600, store=path)
    await p.start_profiling()
    for _ in range(20):
        taker = asyncio.ensure_future(p.take_snapshot())
        for _ in range(3):  # the measurement is synchronous: it is in the history after a few steps
            await asyncio.sleep(0)
        taker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await taker
    await p.stop_profiling()
    records = await read_snapshots(path)
    # 20 taken here, plus the one the sampling task takes as it starts.
    assert len(records) == len(p.history) >= 20
    assert [r.monotonic for r in records] == [s.monotonic for s in p.history]
