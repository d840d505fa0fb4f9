"""Cleanup callbacks (memory.cleanup): order, failures that do not stop the others, cancellation, bad input;
the GC optimizer's documented methods delegate to them."""

from __future__ import annotations

import asyncio
import logging

import pytest

from sanaa_async_mem.collector.optimizer import GarbageCollectionOptimizer
from sanaa_async_mem.config import Settings
from sanaa_async_mem.errors import ConfigurationError
from sanaa_async_mem.memory.cleanup import CleanupCallbacks, CleanupReport


async def test_callbacks_run_in_order_and_a_failure_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    callbacks = CleanupCallbacks()
    ran: list[str] = []

    async def later() -> None:
        await asyncio.sleep(0)
        ran.append("async")

    def broken() -> None:
        raise OSError("disk gone")

    callbacks.register(lambda: ran.append("first"))
    callbacks.register(broken)
    callbacks.register(later)
    with caplog.at_level(logging.ERROR, logger="sanaa.gc"):
        report = await callbacks.run("test")
    assert ran == ["first", "async"]
    assert report == CleanupReport(3, 1)
    assert report.as_dict() == {"ran": 3, "failed": 1}
    assert "disk gone" in caplog.text and "test" in caplog.text


async def test_cancellation_during_an_async_callback_propagates_and_skips_the_rest() -> None:
    callbacks = CleanupCallbacks()
    started = asyncio.Event()
    ran: list[str] = []

    async def slow() -> None:
        started.set()
        await asyncio.sleep(3600)

    callbacks.register(slow)
    callbacks.register(lambda: ran.append("after"))
    task = asyncio.create_task(callbacks.run())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ran == []
    assert len(callbacks) == 2  # nothing was unregistered by the cancellation


@pytest.mark.parametrize("bad", [None, 42, "cleanup"])
def test_a_non_callable_callback_is_a_configuration_error(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="callback"):
        CleanupCallbacks().register(bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="callback"):
        GarbageCollectionOptimizer(Settings()).register_cleanup_callback(bad)  # type: ignore[arg-type]


async def test_the_gc_optimizer_delegates_to_its_callbacks() -> None:
    optimizer = GarbageCollectionOptimizer(Settings())
    ran: list[str] = []
    unregister = optimizer.register_cleanup_callback(lambda: ran.append("x"))
    assert len(optimizer.cleanup) == 1
    assert await optimizer.run_cleanup_callbacks() == CleanupReport(1, 0)
    assert await optimizer.handle_memory_pressure() == CleanupReport(1, 0)
    unregister()
    assert len(optimizer.cleanup) == 0
    assert ran == ["x", "x"]
