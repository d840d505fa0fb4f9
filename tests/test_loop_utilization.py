"""LoopLagMonitor.utilization(): the loop's busy share, by timing select() on asyncio's loops and from the
lag on uvloop; exported as the sanaa_loop_utilization gauge and shown in /memory."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from sanaa_async_mem.errors import ConfigurationError
from sanaa_async_mem.loop_monitor import LoopLagMonitor

# Small windows and a fast tick so the moving average settles within a second, on any machine.
RESOLUTION = 0.01
WINDOW = 0.2


async def _idle_for(seconds: float) -> None:
    await asyncio.sleep(seconds)


async def _busy_for(seconds: float, block: float) -> None:
    # The loop runs callbacks (blocking `block` seconds each) back to back: it never waits in select.
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        spin = time.monotonic() + block
        while time.monotonic() < spin:
            pass
        await asyncio.sleep(0)


async def _measure(method: str) -> tuple[float, float]:
    monitor = LoopLagMonitor(RESOLUTION, window=WINDOW)
    assert monitor.utilization() is None and monitor.utilization_method is None
    async with monitor:
        assert monitor.utilization_method == method
        await _idle_for(1.0)
        idle = monitor.utilization()
        await _busy_for(1.5, 0.03)
        await asyncio.sleep(0)  # let the last late tick run
        await asyncio.sleep(RESOLUTION * 2)
        busy_samples = monitor.busy_seconds
        busy = monitor.utilization()
    assert idle is not None and busy is not None
    assert busy_samples > 0.3
    return idle, busy


def _run(factory: Callable[[], asyncio.AbstractEventLoop] | None, main: Coroutine[Any, Any, Any]) -> Any:
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def test_asyncio_loop_times_select() -> None:
    idle, busy = _run(None, _measure("selector"))
    assert idle < 0.3, idle
    assert busy > 0.6, busy


def test_uvloop_estimates_from_the_lag() -> None:
    uvloop = pytest.importorskip("uvloop")
    idle, busy = _run(uvloop.new_event_loop, _measure("lag"))
    assert idle < 0.3, idle
    # A lower bound: 30 ms blocks make every tick late by up to 30 ms of each ~30 ms interval.
    assert busy > 0.3, busy


async def test_stop_puts_the_selector_back() -> None:
    loop = asyncio.get_running_loop()
    selector = getattr(loop, "_selector", None)
    if selector is None:
        pytest.skip("this loop has no Python selector")
    assert "select" not in vars(selector)
    monitor = LoopLagMonitor(RESOLUTION)
    monitor.start()
    assert "select" in vars(selector)
    await asyncio.sleep(0.05)
    monitor.stop()
    assert "select" not in vars(selector)
    await asyncio.sleep(0.01)  # the loop still runs on the class's own select()
    assert monitor.utilization() is not None


def test_bad_window_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="window"):
        LoopLagMonitor(window=0)
    with pytest.raises(ConfigurationError, match="window"):
        LoopLagMonitor(window=-1.0)


async def test_exported_as_a_gauge() -> None:
    pytest.importorskip("prometheus_client")
    from prometheus_client import CollectorRegistry, generate_latest

    from sanaa_async_mem.integrations.prometheus import SanaaCollector

    async with LoopLagMonitor(RESOLUTION, window=WINDOW) as monitor:
        registry = CollectorRegistry()
        registry.register(SanaaCollector(monitor))
        assert b"sanaa_loop_utilization" not in generate_latest(registry)  # no tick yet: no figure
        await asyncio.sleep(0.1)
        registry = CollectorRegistry()  # a new collector: the first one caches its reading for 1 s
        registry.register(SanaaCollector(monitor))
        text = generate_latest(registry).decode()
    (line,) = [x for x in text.splitlines() if x.startswith("sanaa_loop_utilization ")]
    assert 0.0 <= float(line.split()[1]) <= 1.0


async def test_memory_status_has_the_utilization() -> None:
    from sanaa_async_mem.optimizer import MemoryOptimizer

    async with MemoryOptimizer(schedule_gc=False) as optimizer:
        await asyncio.sleep(0.1)
        lag = optimizer.get_memory_status()["loop_lag"]
    assert lag["utilization_method"] == "selector"
    assert lag["utilization"] is None or 0.0 <= lag["utilization"] <= 1.0
