"""LoopLagMonitor on asyncio and uvloop, and the coordinated-omission correction as a pure function.

A blocked loop is made with ``time.sleep`` (a block lasts *at least* that long, however loaded the
machine), so every assertion is a lower bound on what a block must produce: nothing asserts speed.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from sanaa_async_mem._stats import Histogram
from sanaa_async_mem.errors import ConfigurationError
from sanaa_async_mem.loop_monitor import LoopLagMonitor, record_lag


def counts_at_least(histogram: Histogram, value: float) -> int:
    """Samples in buckets whose upper bound is >= value (the histogram's resolution is ~19%)."""
    snap = histogram.snapshot()
    return sum(
        c for bound, c in zip((*snap.bounds, float("inf")), snap.counts, strict=True) if bound >= value
    )


# ------------------------------------------------------------------------------------ the correction


def test_a_short_lag_is_one_sample() -> None:
    h = Histogram()
    record_lag(h, 0.004, 0.01)
    assert h.count == 1
    assert h.max == pytest.approx(0.004)


def test_a_block_records_the_samples_it_hid() -> None:
    h = Histogram()
    record_lag(h, 0.300, 0.01)
    # 0.300 itself, then 0.290, 0.280, ... down to ~0.0: the 30 ticks that could not run.
    assert h.count == 1 + 30
    assert h.max == pytest.approx(0.300)
    assert h.sum == pytest.approx(sum(0.300 - k * 0.01 for k in range(31)), abs=1e-9)
    assert h.snapshot().p50 >= 0.12  # the median sample is half-way through the block, not ~0


def test_a_very_long_block_is_recorded_in_bounded_work_with_the_same_total() -> None:
    h = Histogram()
    record_lag(h, 100.0, 0.001)  # 100,000 hidden samples, recorded in at most 256 slices
    assert h.count == 1 + 100_000
    exact = 100.0 + sum(100.0 - k * 0.001 for k in range(1, 100_001))
    assert h.sum == pytest.approx(exact, rel=1e-6)
    assert h.snapshot().p50 == pytest.approx(50.0, rel=0.2)


def test_negative_lag_counts_as_zero() -> None:
    h = Histogram()
    record_lag(h, -0.5, 0.01)
    assert h.count == 1
    assert h.max == 0.0


@pytest.mark.parametrize("resolution", [0, -0.01, float("nan"), "10ms"])
def test_bad_resolution_is_a_configuration_error(resolution: object) -> None:
    with pytest.raises(ConfigurationError, match="resolution"):
        LoopLagMonitor(resolution)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ the monitor


async def wait_for_samples(monitor: LoopLagMonitor, n: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while monitor.histogram.count < n:
        assert time.monotonic() < deadline, f"fewer than {n} samples after {timeout} s"
        await asyncio.sleep(0.01)


@pytest.mark.both_loops
async def test_monitor_samples_an_idle_loop() -> None:
    async with LoopLagMonitor(0.005) as monitor:
        assert monitor.running
        await wait_for_samples(monitor, 5)
    stats = monitor.stats()
    assert stats["count"] >= 5
    assert set(stats) >= {"p50", "p90", "p99", "max"}
    assert not monitor.running


@pytest.mark.both_loops
async def test_a_blocked_loop_is_counted_as_all_the_samples_it_hid() -> None:
    async with LoopLagMonitor(0.01) as monitor:
        await wait_for_samples(monitor, 1)
        time.sleep(0.3)  # blocks the loop for at least 300 ms
        await wait_for_samples(monitor, monitor.histogram.count + 1)
    snap = monitor.snapshot()
    assert snap.max >= 0.28
    # A naive monitor would have one sample >= 100 ms; the corrected one has every tick the block hid
    # from 100 ms up to the block's length: at least 18 of them.
    assert counts_at_least(monitor.histogram, 0.1) >= 18


@pytest.mark.both_loops
async def test_stop_ends_sampling_and_keeps_the_histogram() -> None:
    monitor = LoopLagMonitor(0.005)
    monitor.start()
    monitor.start()  # a second start is a no-op, not a second timer chain
    await wait_for_samples(monitor, 3)
    monitor.stop()
    monitor.stop()
    count = monitor.histogram.count
    await asyncio.sleep(0.05)
    assert monitor.histogram.count == count
    monitor.reset()
    assert monitor.histogram.count == 0


@pytest.mark.both_loops
async def test_a_shared_histogram_can_be_passed_in() -> None:
    shared = Histogram()
    async with LoopLagMonitor(0.005, histogram=shared) as monitor:
        await wait_for_samples(monitor, 2)
    assert shared.count >= 2


def test_start_needs_a_running_loop() -> None:
    with pytest.raises(RuntimeError):
        LoopLagMonitor().start()
